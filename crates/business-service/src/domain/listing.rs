//! What a prompt list asks for: whose prompts, which filters, which order, which page.
//! Parsing and cursors only; the storage layer turns this into queries.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Whose prompts a list covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every prompt of one owner (the caller's own, or anyone's for an admin).
    Owner(Uuid),
    /// One owner's public prompts (another user's library, as others see it).
    PublicOf(Uuid),
    /// Every public prompt.
    Public,
    /// The user's favourites that they may still read: their own, and others' public or
    /// unlisted ones.
    Favorites(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    #[default]
    Active,
    Archived,
    /// The trash.
    Deleted,
    /// Active and archived.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    Relevance,
    Updated,
    Created,
    Title,
    Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

impl Sort {
    /// The natural direction: newest, most used, best first; titles A to Z.
    pub fn default_order(self) -> Order {
        match self {
            Sort::Title => Order::Asc,
            _ => Order::Desc,
        }
    }
}

/// `folder=<id>` or `folder=none` (prompts in no folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderFilter {
    In(Uuid),
    None,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tags: Vec<String>,
    /// All given tags (true) or any of them (false).
    pub all_tags: bool,
    pub folder: Option<FolderFilter>,
    pub category: Option<String>,
    /// Only the caller's favourites.
    pub favorite_of: Option<Uuid>,
    pub visibility: Option<String>,
    pub status: StatusFilter,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// The sort value of the last item of a page, and its id: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub sort: Sort,
    pub order: Order,
    /// The last item's sort key: a timestamp (RFC 3339), a title key, a count or a score.
    pub key: CursorKey,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorKey {
    Number(i64),
    Text(String),
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Relevance of one prompt to a query, the same on every backend: per term, 8 when in the
/// title, 4 in the tags, 2 in the description, and 1 when found only in the text.
/// `fields` are the space-padded token strings stored with the prompt.
pub fn relevance(
    terms: &[String],
    prefix: Option<&str>,
    title: &str,
    tags: &str,
    desc: &str,
) -> i64 {
    let weigh = |matches: &dyn Fn(&str) -> bool| {
        (8 * i64::from(matches(title))
            + 4 * i64::from(matches(tags))
            + 2 * i64::from(matches(desc)))
        .max(1)
    };
    // With a prefix, the last term is the word being typed: it scores as the better of the
    // whole term and the prefix.
    let (whole, last) = match (prefix, terms.split_last()) {
        (Some(_), Some((last, rest))) => (rest, Some(last)),
        _ => (terms, None),
    };
    let mut score: i64 = whole
        .iter()
        .map(|t| weigh(&|f: &str| f.contains(&format!(" {t} "))))
        .sum();
    if let Some(p) = prefix {
        let by_prefix = weigh(&|f: &str| f.contains(&format!(" {p}")));
        let by_term = last.map_or(0, |t| weigh(&|f: &str| f.contains(&format!(" {t} "))));
        score += by_prefix.max(by_term);
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            sort: Sort::Title,
            order: Order::Asc,
            key: CursorKey::Text("提示".into()),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("%%%"), None);
        assert_eq!(Cursor::decode("e30"), None, "{{}} is not a cursor");
    }

    #[test]
    fn title_beats_tags_beats_description_beats_text() {
        let t = |s: &str| vec![s.to_owned()];
        let title = " prompt writer ";
        assert_eq!(relevance(&t("prompt"), None, title, " ", " "), 8);
        assert_eq!(relevance(&t("prompt"), None, " ", " prompt ", " "), 4);
        assert_eq!(relevance(&t("prompt"), None, " ", " ", " a prompt "), 2);
        assert_eq!(relevance(&t("prompt"), None, " ", " ", " "), 1);
        assert_eq!(
            relevance(&t("writ"), None, title, " ", " "),
            1,
            "whole tokens only"
        );
        assert_eq!(
            relevance(&[], Some("writ"), title, " ", " "),
            8,
            "a prefix may match part"
        );
    }
}
