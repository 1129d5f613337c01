//! The text-search index, one structure per backend fed the same tokens:
//! SQLite: the FTS5 table `prompt_fts(scope, doc)`; PostgreSQL: `prompt_search(seq, tsv)`
//! where scope tokens carry weight A and words weight D.
//!
//! `scope` holds tokens for who may see a prompt and how it is filed (owner, visibility,
//! status, folder, category, tags), so the index alone answers "this user's archived
//! prompts in folder X tagged Y containing these words", newest first, without reading the
//! prompts table.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use uuid::Uuid;

use crate::domain::search_text::Query;

/// One scope token: a letter-only prefix and hex digits, so both engines keep it whole.
fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn owner_token(owner: Uuid) -> String {
    format!("zzo{}", owner.simple())
}

pub fn visibility_token(visibility: &str) -> String {
    format!("zzv{visibility}")
}

pub fn status_token(status: &str) -> String {
    format!("zzs{status}")
}

pub fn folder_token(folder: Option<Uuid>) -> String {
    match folder {
        Some(f) => format!("zzf{}", f.simple()),
        None => "zzfnone".into(),
    }
}

pub fn category_token(category_key: Option<&str>) -> String {
    match category_key {
        Some(c) => format!("zzc{}", hex(c.as_bytes())),
        None => "zzcnone".into(),
    }
}

pub fn tag_token(tag_key: &str) -> String {
    format!("zzt{}", hex(tag_key.as_bytes()))
}

/// The scope tokens of one prompt.
pub struct ScopeOf<'a> {
    pub owner: Uuid,
    pub visibility: &'a str,
    pub status: &'a str,
    pub folder: Option<Uuid>,
    pub category_key: Option<&'a str>,
    pub tag_keys: &'a [String],
}

impl ScopeOf<'_> {
    pub fn tokens(&self) -> String {
        let mut t = vec![
            owner_token(self.owner),
            visibility_token(self.visibility),
            status_token(self.status),
            folder_token(self.folder),
            category_token(self.category_key),
        ];
        t.extend(self.tag_keys.iter().map(|k| tag_token(k)));
        t.join(" ")
    }
}

/// A condition on scope tokens: every group must hold; a group holds when any of its tokens
/// is present.
#[derive(Debug, Default, Clone)]
pub struct ScopeQuery {
    pub all_of: Vec<Vec<String>>,
}

impl ScopeQuery {
    pub fn require_any(&mut self, tokens: Vec<String>) -> &mut Self {
        if !tokens.is_empty() {
            self.all_of.push(tokens);
        }
        self
    }
}

/// FTS5 walks a match list quickly only forwards (backwards it cannot skip ahead), so on
/// SQLite a prompt is filed under `i64::MAX - seq`: the newest prompt has the lowest rowid,
/// and "newest first" is the fast direction. The mapping is its own inverse.
fn index_key(backend: DbBackend, seq: i64) -> i64 {
    match backend {
        DbBackend::Postgres => seq,
        _ => i64::MAX - seq,
    }
}

/// Puts a prompt into the index, replacing what was there.
pub async fn index<C: ConnectionTrait>(
    db: &C,
    seq: i64,
    scope: &str,
    doc: &str,
) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO prompt_search (seq, tsv) VALUES ($1, \
                 setweight(to_tsvector('simple', $2), 'A') || setweight(to_tsvector('simple', $3), 'D')) \
                 ON CONFLICT (seq) DO UPDATE SET tsv = EXCLUDED.tsv",
                [seq.into(), scope.into(), doc.into()],
            ))
            .await?;
        }
        _ => {
            unindex(db, seq).await?;
            db.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO prompt_fts (rowid, scope, doc) VALUES (?, ?, ?)",
                [
                    index_key(DbBackend::Sqlite, seq).into(),
                    scope.into(),
                    doc.into(),
                ],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Puts many new prompts into the index at once.
pub async fn index_many<C: ConnectionTrait>(
    db: &C,
    entries: &[(i64, String, String)],
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for chunk in entries.chunks(500) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, (seq, scope, doc)) in chunk.iter().enumerate() {
            let n = i * 3;
            rows.push(match backend {
                DbBackend::Postgres => format!(
                    "(${}, setweight(to_tsvector('simple', ${}), 'A') || setweight(to_tsvector('simple', ${}), 'D'))",
                    n + 1,
                    n + 2,
                    n + 3
                ),
                _ => "(?, ?, ?)".to_owned(),
            });
            values.extend([
                Value::from(index_key(backend, *seq)),
                Value::from(scope.clone()),
                Value::from(doc.clone()),
            ]);
        }
        let sql = match backend {
            DbBackend::Postgres => format!(
                "INSERT INTO prompt_search (seq, tsv) VALUES {}",
                rows.join(", ")
            ),
            _ => format!(
                "INSERT INTO prompt_fts (rowid, scope, doc) VALUES {}",
                rows.join(", ")
            ),
        };
        db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

pub async fn unindex<C: ConnectionTrait>(db: &C, seq: i64) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "DELETE FROM prompt_search WHERE seq = $1",
        _ => "DELETE FROM prompt_fts WHERE rowid = ?",
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [index_key(backend, seq).into()],
    ))
    .await?;
    Ok(())
}

/// The `seq`s of the newest prompts (at most `limit`) whose scope matches `scope` and whose
/// words contain every query term (the last one possibly as a prefix).
pub async fn candidates<C: ConnectionTrait>(
    db: &C,
    scope: &ScopeQuery,
    query: &Query,
    limit: u32,
) -> Result<Vec<i64>, DbErr> {
    let backend = db.get_database_backend();
    let (sql, expr) = match backend {
        DbBackend::Postgres => (
            "SELECT seq FROM prompt_search WHERE tsv @@ to_tsquery('simple', $1) ORDER BY seq DESC LIMIT $2",
            tsquery(scope, query),
        ),
        _ => (
            "SELECT rowid FROM prompt_fts WHERE prompt_fts MATCH ? ORDER BY rowid LIMIT ?",
            fts5_query(scope, query),
        ),
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(expr), Value::from(i64::from(limit))],
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<i64>(0).map(|k| index_key(backend, k)))
        .collect()
}

// Every token is letters and digits only (see `search_text`), so quoting cannot be broken
// out of; the query still travels as a bound parameter.

fn fts5_query(scope: &ScopeQuery, query: &Query) -> String {
    let mut parts: Vec<String> = scope
        .all_of
        .iter()
        .map(|group| {
            let any: Vec<String> = group.iter().map(|t| format!("\"{t}\"")).collect();
            format!("scope : ({})", any.join(" OR "))
        })
        .collect();
    let mut words: Vec<String> = query.terms.iter().map(|t| format!("\"{t}\"")).collect();
    // The prefix is the last word still being typed: it stands in for that word's term.
    if let Some(p) = &query.prefix {
        let last = words.pop().map(|t| format!("{t} OR ")).unwrap_or_default();
        words.push(format!("({last}\"{p}\" *)"));
    }
    if !words.is_empty() {
        parts.push(format!("doc : ({})", words.join(" AND ")));
    }
    parts.join(" AND ")
}

fn tsquery(scope: &ScopeQuery, query: &Query) -> String {
    let mut parts: Vec<String> = scope
        .all_of
        .iter()
        .map(|group| {
            let any: Vec<String> = group.iter().map(|t| format!("'{t}':A")).collect();
            format!("({})", any.join(" | "))
        })
        .collect();
    let mut words: Vec<String> = query.terms.iter().map(|t| format!("'{t}':D")).collect();
    if let Some(p) = &query.prefix {
        let last = words.pop().map(|t| format!("{t} | ")).unwrap_or_default();
        words.push(format!("({last}'{p}':*D)"));
    }
    parts.extend(words);
    parts.join(" & ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_query_languages_say_the_same_thing() {
        let mut scope = ScopeQuery::default();
        scope
            .require_any(vec!["zzoabc".into(), "zzvpublic".into()])
            .require_any(vec!["zzsactive".into()]);
        let query = Query {
            terms: vec!["prompt".into(), "提示".into()],
            prefix: Some("wri".into()),
        };
        assert_eq!(
            fts5_query(&scope, &query),
            "scope : (\"zzoabc\" OR \"zzvpublic\") AND scope : (\"zzsactive\") AND doc : (\"prompt\" AND (\"提示\" OR \"wri\" *))"
        );
        assert_eq!(
            tsquery(&scope, &query),
            "('zzoabc':A | 'zzvpublic':A) & ('zzsactive':A) & 'prompt':D & ('提示':D | 'wri':*D)"
        );
    }

    #[test]
    fn scope_tokens_are_alphanumeric() {
        let tokens = ScopeOf {
            owner: Uuid::now_v7(),
            visibility: "public",
            status: "active",
            folder: None,
            category_key: Some("写作"),
            tag_keys: &["gpt-4".into(), "a b".into()],
        }
        .tokens();
        assert!(
            tokens
                .split(' ')
                .all(|t| t.chars().all(|c| c.is_ascii_alphanumeric())),
            "{tokens}"
        );
    }
}
