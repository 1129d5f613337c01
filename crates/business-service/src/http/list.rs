//! `GET /api/business/prompts`: lists, filters and text search, with cursor pages.
//!
//! Without `q` the database filters, orders and pages. With `q` the search index finds the
//! newest matching prompts (at most `search_candidates`), and they are ranked here, the same
//! way whatever the backend: so SQLite and PostgreSQL answer alike, and a very common word
//! costs no more than a rare one.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use platform::Problem;
use platform::extract::Json;
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ};
use super::error::Result;
use super::views::{FieldSnippet, Page, PromptView, SearchInfo};
use crate::domain::listing::{
    Cursor, Filter, FolderFilter, Order, Scope, Sort, StatusFilter, relevance,
};
use crate::domain::search_text::{self, Query};
use crate::storage::prompts::{Ranked, Record, cursor_key};

pub const LIMIT_DEFAULT: u64 = 20;
pub const LIMIT_MAX: u64 = 100;
const SNIPPET_CHARS: usize = 160;
/// A snippet is looked for in this much of a long text.
const SNIPPET_SCAN_CHARS: usize = 20_000;

fn head(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(i, _)| &text[..i])
}
const QUERY_MAX_CHARS: usize = 200;

/// The parameters of a list, parsed from the query string (tags may repeat).
#[derive(Debug, Default)]
pub struct ListParams {
    pub q: Option<String>,
    pub tags: Vec<String>,
    pub tag_mode_all: bool,
    pub folder: Option<FolderFilter>,
    pub category: Option<String>,
    pub favorite: bool,
    pub visibility: Option<String>,
    pub owner: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub status: StatusFilter,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub sort: Option<Sort>,
    pub order: Option<Order>,
    pub cursor: Option<String>,
    pub limit: u64,
}

fn bad(field: &str, message: &str) -> Problem {
    Problem::invalid_field(field, message.to_owned())
}

fn time(field: &str, v: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(field, "must be an RFC 3339 time, like 2026-01-31T12:00:00Z"))
}

fn enum_value<T: serde::de::DeserializeOwned>(
    field: &str,
    v: &str,
    allowed: &str,
) -> Result<T, Problem> {
    serde_json::from_value(serde_json::Value::String(v.to_owned()))
        .map_err(|_| bad(field, &format!("must be one of {allowed}")))
}

impl ListParams {
    pub fn parse(query: &str) -> Result<Self, Problem> {
        let mut p = ListParams {
            limit: LIMIT_DEFAULT,
            ..Default::default()
        };
        for (k, raw) in form_urlencoded::parse(query.as_bytes()) {
            let v = raw.trim();
            match k.as_ref() {
                "q" | "search" => {
                    if raw.chars().count() > QUERY_MAX_CHARS {
                        return Err(bad(
                            "q",
                            &format!("must be at most {QUERY_MAX_CHARS} characters"),
                        ));
                    }
                    // Untrimmed: a trailing space says the last word is complete (no prefix).
                    p.q = Some(raw.clone().into_owned()).filter(|s| !s.trim().is_empty());
                }
                "tag" | "tags" => p.tags.push(v.to_owned()),
                "tag_mode" => {
                    p.tag_mode_all = match v {
                        "all" => true,
                        "any" => false,
                        _ => return Err(bad("tag_mode", "must be all or any")),
                    }
                }
                "folder" | "folder_id" | "folderId" => {
                    p.folder = Some(if v == "none" {
                        FolderFilter::None
                    } else {
                        FolderFilter::In(
                            Uuid::parse_str(v)
                                .map_err(|_| bad("folder", "must be a folder id or `none`"))?,
                        )
                    })
                }
                "category" => p.category = Some(v.to_owned()).filter(|s| !s.is_empty()),
                "favorite" | "favourite" | "isFavorite" => {
                    p.favorite = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("favorite", "must be true or false")),
                    }
                }
                "visibility" => {
                    crate::domain::validation::one_of(v, crate::domain::validation::VISIBILITIES)
                        .map_err(|e| bad("visibility", &e))?;
                    p.visibility = Some(v.to_owned());
                }
                "owner" => {
                    p.owner =
                        Some(Uuid::parse_str(v).map_err(|_| bad("owner", "must be a user id"))?)
                }
                "userId" | "user_id" => {
                    p.user_id =
                        Some(Uuid::parse_str(v).map_err(|_| bad("userId", "must be a user id"))?)
                }
                "status" => p.status = enum_value("status", v, "active, archived, deleted, all")?,
                "updated_after" => p.updated_after = Some(time("updated_after", v)?),
                "updated_before" => p.updated_before = Some(time("updated_before", v)?),
                "created_after" => p.created_after = Some(time("created_after", v)?),
                "created_before" => p.created_before = Some(time("created_before", v)?),
                "sort" => {
                    p.sort = Some(enum_value(
                        "sort",
                        v,
                        "relevance, updated, created, title, usage",
                    )?)
                }
                "order" => p.order = Some(enum_value("order", v, "asc, desc")?),
                "cursor" => p.cursor = Some(v.to_owned()).filter(|s| !s.is_empty()),
                "limit" | "size" => {
                    p.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=LIMIT_MAX).contains(n))
                        .ok_or_else(|| bad("limit", &format!("must be 1 to {LIMIT_MAX}")))?
                }
                // Spring-style paging parameters of the original client: accepted, unused.
                "page" => {}
                other => return Err(bad(other, "is not a parameter of this list")),
            }
        }
        if p.tags.len() > 20 {
            return Err(bad("tag", "at most 20 tags"));
        }
        Ok(p)
    }

    /// The list's owner scope, checked against what the caller may see.
    pub fn scope(&self, caller: &Caller) -> Result<Scope, Problem> {
        if let Some(uid) = self.user_id {
            // The seed's `?userId=`: one's own id, or anyone's for an administrator.
            if caller.user == Some(uid) || caller.reads_all() {
                return Ok(Scope::Owner(uid));
            }
            return Err(Problem::forbidden(
                "only administrators list other users' prompts by userId",
            ));
        }
        if let Some(owner) = self.owner {
            if caller.user == Some(owner) || caller.reads_all() {
                return Ok(Scope::Owner(owner));
            }
            return Ok(Scope::PublicOf(owner));
        }
        if self.visibility.as_deref() == Some("public") {
            return Ok(Scope::Public);
        }
        if self.favorite
            && let Some(me) = caller.user
        {
            return Ok(Scope::Favorites(me));
        }
        caller.user.map(Scope::Owner).ok_or_else(|| {
            Problem::invalid_field(
                "userId",
                "a service account must say whose prompts it lists",
            )
        })
    }

    pub fn filter(&self, caller: &Caller) -> Filter {
        Filter {
            tags: self.tags.clone(),
            all_tags: self.tag_mode_all,
            folder: self.folder,
            category: self.category.clone(),
            favorite_of: if self.favorite { caller.user } else { None },
            visibility: self.visibility.clone(),
            status: self.status,
            updated_after: self.updated_after,
            updated_before: self.updated_before,
            created_after: self.created_after,
            created_before: self.created_before,
        }
    }
}

pub async fn list_prompts(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Page<PromptView>>> {
    caller.require(READ)?;
    let params = ListParams::parse(query.as_deref().unwrap_or(""))?;
    let scope = params.scope(&caller)?;
    if params.status == StatusFilter::Deleted && !matches!(scope, Scope::Owner(_)) {
        return Err(Problem::forbidden("the trash is its owner's").into());
    }
    let filter = params.filter(&caller);
    let query = params
        .q
        .as_deref()
        .map(search_text::parse_query)
        .unwrap_or_default();
    let searching = !query.is_empty();
    let sort = params.sort.unwrap_or(if searching {
        Sort::Relevance
    } else {
        Sort::Updated
    });
    if sort == Sort::Relevance && !searching {
        return Err(Problem::invalid_field("sort", "relevance needs a text query `q`").into());
    }
    let order = params.order.unwrap_or_else(|| sort.default_order());
    let cursor = match &params.cursor {
        Some(c) => Some(
            Cursor::decode(c)
                .filter(|c| c.sort == sort && c.order == order)
                .ok_or_else(|| Problem::invalid_field("cursor", "is not a cursor of this list"))?,
        ),
        None => None,
    };
    let limit = params.limit;

    let (records, next_cursor, scores, info) = if searching {
        let candidates = state
            .store
            .search_candidates(&scope, &filter, &query, state.settings.search_candidates)
            .await?;
        let limited = candidates.len() >= state.settings.search_candidates as usize;
        let ranked = rank(candidates, &query, sort, order);
        let count = ranked.len();
        let start = match &cursor {
            Some(c) => ranked
                .iter()
                .position(|(p, score)| is_after(&cursor_key(sort, p, *score), p.id, c))
                .unwrap_or(count),
            None => 0,
        };
        let page: Vec<&(Ranked, i64)> = ranked.iter().skip(start).take(limit as usize).collect();
        let next = (start + page.len() < count)
            .then(|| page.last())
            .flatten()
            .map(|(p, score)| {
                Cursor {
                    sort,
                    order,
                    key: cursor_key(sort, p, *score),
                    id: p.id,
                }
                .encode()
            });
        let ids: Vec<Uuid> = page.iter().map(|(p, _)| p.id).collect();
        let scores: HashMap<Uuid, i64> = page.iter().map(|(p, s)| (p.id, *s)).collect();
        let records = state.store.prompts_in_order(&ids).await?;
        let info = SearchInfo {
            terms: query.terms.clone(),
            prefix: query.prefix.clone(),
            ranked: count,
            limited,
        };
        (records, next, scores, Some(info))
    } else {
        let mut rows = state
            .store
            .list_page(&scope, &filter, sort, order, cursor.as_ref(), limit + 1)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next = more.then(|| rows.last()).flatten().map(|p| {
            Cursor {
                sort,
                order,
                key: cursor_key(sort, &Ranked::from(p), 0),
                id: p.id,
            }
            .encode()
        });
        let ids: Vec<Uuid> = rows.iter().map(|p| p.id).collect();
        let records = state.store.prompts_in_order(&ids).await?;
        (records, next, HashMap::new(), None)
    };

    let items = views(&state, &caller, records, &query, &scores).await?;
    Ok(Json(Page {
        items,
        next_cursor,
        search: info,
    }))
}

/// Candidates in list order: by score (then newest) for relevance, else by the sort key;
/// the id breaks every tie, so the order is total and pages never overlap.
fn rank(candidates: Vec<Ranked>, query: &Query, sort: Sort, order: Order) -> Vec<(Ranked, i64)> {
    let mut scored: Vec<(Ranked, i64)> = candidates
        .into_iter()
        .map(|p| {
            let score = relevance(
                &query.terms,
                query.prefix.as_deref(),
                &p.search_title,
                &p.search_tags,
                &p.search_desc,
            );
            (p, score)
        })
        .collect();
    scored.sort_by(|(a, sa), (b, sb)| {
        let primary = match sort {
            Sort::Relevance => sa.cmp(sb).then(a.updated_at.cmp(&b.updated_at)),
            Sort::Updated => a.updated_at.cmp(&b.updated_at),
            Sort::Created => a.created_at.cmp(&b.created_at),
            Sort::Title => a.title_key.cmp(&b.title_key),
            Sort::Usage => a.usage_count.cmp(&b.usage_count),
        }
        .then(a.id.cmp(&b.id));
        match order {
            Order::Asc => primary,
            Order::Desc => primary.reverse(),
        }
    });
    scored
}

/// True when the item with `key` and `id` comes after the cursor in the list's order.
fn is_after(key: &crate::domain::listing::CursorKey, id: Uuid, c: &Cursor) -> bool {
    use crate::domain::listing::CursorKey::{Number, Text};
    let ord = match (key, &c.key) {
        (Number(a), Number(b)) => a.cmp(b),
        (Text(a), Text(b)) => a.cmp(b),
        _ => return false,
    }
    .then(id.cmp(&c.id));
    match c.order {
        Order::Asc => ord.is_gt(),
        Order::Desc => ord.is_lt(),
    }
}

async fn views(
    state: &AppState,
    caller: &Caller,
    records: Vec<Record>,
    query: &Query,
    scores: &HashMap<Uuid, i64>,
) -> Result<Vec<PromptView>> {
    let ids: Vec<Uuid> = records.iter().map(|r| r.prompt.id).collect();
    let favorites = match caller.user {
        Some(u) => state.store.favorites_among(u, &ids).await?,
        None => Default::default(),
    };
    Ok(records
        .into_iter()
        .map(|r| {
            let snippet = (!query.is_empty())
                .then(|| best_snippet(&r, query))
                .flatten();
            let id = r.prompt.id;
            let mut view = PromptView::new(r, favorites.contains(&id));
            view.score = scores.get(&id).copied();
            view.snippet = snippet;
            view
        })
        .collect())
}

/// The fragment that best shows why a prompt matched: its text, else its description, else
/// its title.
fn best_snippet(r: &Record, query: &Query) -> Option<FieldSnippet> {
    let p = &r.prompt;
    [
        ("content", Some(p.content.as_str())),
        ("description", p.description.as_deref()),
        ("title", Some(p.title.as_str())),
    ]
    .into_iter()
    .find_map(|(field, text)| {
        text.and_then(|t| search_text::snippet(head(t, SNIPPET_SCAN_CHARS), query, SNIPPET_CHARS))
            .map(|snippet| FieldSnippet { field, snippet })
    })
}
