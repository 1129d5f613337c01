//! What business-service answers with: the JSON shapes of its resources.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::search_text::Snippet;
use crate::storage::folders::Folder;
use crate::storage::prompts::{Record, Version};

pub fn etag(revision: i64) -> String {
    format!("\"r{revision}\"")
}

/// Reads an `If-Match` value back into a revision (`*` matches any).
pub fn parse_etag(value: &str) -> Option<Option<i64>> {
    let v = value.trim();
    if v == "*" {
        return Some(None);
    }
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.strip_prefix("\"r")
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|r| r.parse().ok())
        .map(Some)
}

#[derive(Debug, Serialize)]
pub struct PromptView {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub slug: Option<String>,
    pub content: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub folder_id: Option<Uuid>,
    pub visibility: String,
    pub status: String,
    /// The caller's favourite.
    pub favorite: bool,
    pub usage_count: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub etag: String,
    pub variables: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<FieldSnippet>,
}

#[derive(Debug, Serialize)]
pub struct FieldSnippet {
    pub field: &'static str,
    #[serde(flatten)]
    pub snippet: Snippet,
}

impl PromptView {
    pub fn new(r: Record, favorite: bool) -> Self {
        let p = r.prompt;
        Self {
            etag: etag(p.revision),
            id: p.id,
            owner_id: p.owner_id,
            title: p.title,
            slug: p.slug,
            content: p.content,
            description: p.description,
            tags: r.tags,
            category: p.category,
            folder_id: p.folder_id,
            visibility: p.visibility,
            status: p.status,
            favorite,
            usage_count: p.usage_count,
            last_used_at: p.last_used_at,
            version: p.version,
            variables: p.variables,
            created_at: p.created_at,
            updated_at: p.updated_at,
            deleted_at: p.deleted_at,
            score: None,
            snippet: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersionSummary {
    pub number: i32,
    pub title: String,
    pub author_id: Uuid,
    pub message: Option<String>,
    pub restored_from: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl From<&Version> for VersionSummary {
    fn from(v: &Version) -> Self {
        Self {
            number: v.number,
            title: v.title.clone(),
            author_id: v.author_id,
            message: v.message.clone(),
            restored_from: v.restored_from,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub summary: VersionSummary,
    pub prompt_id: Uuid,
    pub content: String,
    pub description: Option<String>,
}

impl From<Version> for VersionView {
    fn from(v: Version) -> Self {
        Self {
            summary: VersionSummary::from(&v),
            prompt_id: v.prompt_id,
            content: v.content,
            description: v.description,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FolderView {
    pub id: Uuid,
    /// Bumped by every change; what a device's offline edit is based on.
    pub revision: i64,
    pub parent_id: Option<Uuid>,
    pub name: String,
    pub position: i32,
    pub color: Option<String>,
    pub icon: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<FolderView>>,
}

impl From<Folder> for FolderView {
    fn from(f: Folder) -> Self {
        Self {
            id: f.id,
            revision: f.revision,
            parent_id: f.parent_id,
            name: f.name,
            position: f.position,
            color: f.color,
            icon: f.icon,
            created_at: f.created_at,
            updated_at: f.updated_at,
            children: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchInfo>,
}

#[derive(Debug, Serialize)]
pub struct SearchInfo {
    pub terms: Vec<String>,
    pub prefix: Option<String>,
    /// How many matches were ranked.
    pub ranked: usize,
    /// True when there were more matches than are ranked: the newest ones were.
    pub limited: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag(&etag(42)), Some(Some(42)));
        assert_eq!(parse_etag("W/\"r7\""), Some(Some(7)));
        assert_eq!(parse_etag("*"), Some(None));
        assert_eq!(parse_etag("\"abc\""), None);
    }
}
