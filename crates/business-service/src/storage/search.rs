//! The text-search index, one structure per backend fed the same tokens:
//! SQLite: the FTS5 table `prompt_fts(scope, doc)`; PostgreSQL: `prompt_search(seq, tsv)`
//! holding both, told apart by case: scope tokens are upper case (`ZZO…`) and stored as
//! given, words are lower case (`to_tsvector` folds them). No weights: a query with weights
//! makes PostgreSQL re-read every candidate's tsvector to check them.
//!
//! `scope` holds tokens for who may see a prompt and how it is filed (owner, visibility,
//! status, folder, category, tags), so the index alone answers "this user's archived
//! prompts in folder X tagged Y containing these words", newest first, without reading the
//! prompts table.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use uuid::Uuid;

use crate::domain::search_text::Query;

/// One scope token: a letter-only prefix and hex digits, so both engines keep it whole;
/// upper case, which no word has after folding (FTS5 folds both alike, and keeps scope in
/// a column of its own).
fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02X}")).collect()
}

pub fn owner_token(owner: Uuid) -> String {
    format!("ZZO{}", hex(owner.as_bytes()))
}

pub fn visibility_token(visibility: &str) -> String {
    format!("ZZV{}", visibility.to_uppercase())
}

pub fn status_token(status: &str) -> String {
    format!("ZZS{}", status.to_uppercase())
}

pub fn folder_token(folder: Option<Uuid>) -> String {
    match folder {
        Some(f) => format!("ZZF{}", hex(f.as_bytes())),
        None => "ZZFNONE".into(),
    }
}

pub fn category_token(category_key: Option<&str>) -> String {
    match category_key {
        Some(c) => format!("ZZC{}", hex(c.as_bytes())),
        None => "ZZCNONE".into(),
    }
}

pub fn tag_token(tag_key: &str) -> String {
    format!("ZZT{}", hex(tag_key.as_bytes()))
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
                 $2::tsvector || strip(to_tsvector('simple', $3))) \
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
                    "(${}, ${}::tsvector || strip(to_tsvector('simple', ${})))",
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
pub async fn candidates(
    db: &DatabaseConnection,
    scope: &ScopeQuery,
    query: &Query,
    limit: u32,
) -> Result<Vec<i64>, DbErr> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        return pg_candidates(db, scope, query, limit).await;
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            "SELECT rowid FROM prompt_fts WHERE prompt_fts MATCH ? ORDER BY rowid LIMIT ?",
            [
                Value::from(fts5_query(scope, query)),
                Value::from(i64::from(limit)),
            ],
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<i64>(0).map(|k| index_key(backend, k)))
        .collect()
}

/// How many of the newest prompts a prefix query walks first, and then, if that found some
/// matches but not enough, how many more, before choosing how to find the rest.
const FIRST_WINDOW: i64 = 2_000;
const SECOND_WINDOW: i64 = 20_000;

/// PostgreSQL picks between walking the index newest-first (fast when matches are many)
/// and collecting every match from the GIN index (fast when they are few) by its estimate
/// of how many match; for a prefix (`wri:*`) it has none and may walk a whole large library
/// for a rare word, or collect a third of it for a common one. So a prefix query walks the
/// newest prompts itself, which also measures how dense the matches are, then finds the
/// rest the way that density favours: walking on costs about `limit / density` rows,
/// collecting about `rows × density`, so it walks on when density ≥ √(limit / rows); either
/// way at most about √(limit × rows) rows. No match at all among the first window means a
/// rare word: collect at once.
async fn pg_candidates(
    db: &DatabaseConnection,
    scope: &ScopeQuery,
    query: &Query,
    limit: u32,
) -> Result<Vec<i64>, DbErr> {
    let (scope_q, words_q) = pg_tsquery(scope, query);
    let limit = i64::from(limit);
    // Statements are prepared and cached; a cached generic plan would be chosen without
    // the query's words and kept whatever the settings below. Plan each search afresh.
    let txn = db.begin().await?;
    txn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
        .await?;
    let search = PgSearch {
        txn: &txn,
        scope_q,
        words_q,
    };
    if query.prefix.is_none() {
        let found = search.rest(i64::MAX, limit).await?;
        txn.commit().await?;
        return Ok(found);
    }
    let (mut found, mut below) = search.window(i64::MAX, FIRST_WINDOW, limit).await?;
    let mut walked = FIRST_WINDOW;
    if (found.len() as i64) < limit
        && !found.is_empty()
        && let Some(b) = below
    {
        let (more, next) = search
            .window(b, SECOND_WINDOW, limit - found.len() as i64)
            .await?;
        found.extend(more);
        below = next;
        walked += SECOND_WINDOW;
    }
    let Some(below) = below.filter(|_| (found.len() as i64) < limit) else {
        txn.commit().await?;
        return Ok(found);
    };
    let newest = search.newest().await?;
    let density = found.len() as f64 / walked as f64;
    let walk = density >= (limit as f64 / newest.max(1) as f64).sqrt();
    txn.execute_unprepared(if walk {
        "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"
    } else {
        "SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = off"
    })
    .await?;
    let rest = search.rest(below, limit - found.len() as i64).await?;
    txn.commit().await?;
    found.extend(rest);
    Ok(found)
}

struct PgSearch<'a> {
    txn: &'a sea_orm::DatabaseTransaction,
    scope_q: String,
    words_q: String,
}

const PG_MATCH: &str = "tsv @@ ($1::tsquery && to_tsquery('simple', $2))";

impl PgSearch<'_> {
    async fn seqs(&self, sql: String, mut values: Vec<Value>) -> Result<Vec<i64>, DbErr> {
        let mut all = vec![
            Value::from(self.scope_q.clone()),
            Value::from(self.words_q.clone()),
        ];
        all.append(&mut values);
        let rows = self
            .txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                all,
            ))
            .await?;
        rows.iter().map(|r| r.try_get_by_index::<i64>(0)).collect()
    }

    /// Matches among the `size` newest prompts below `below`, and the oldest `seq` of that
    /// window (None when the window reached the oldest prompt).
    async fn window(
        &self,
        below: i64,
        size: i64,
        limit: i64,
    ) -> Result<(Vec<i64>, Option<i64>), DbErr> {
        let found = self
            .seqs(
                format!(
                    "SELECT seq FROM (SELECT seq, tsv FROM prompt_search WHERE seq < $3 \
                     ORDER BY seq DESC LIMIT $4) newest WHERE {PG_MATCH} ORDER BY seq DESC LIMIT $5"
                ),
                vec![below.into(), size.into(), limit.into()],
            )
            .await?;
        let edge = self
            .txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT seq FROM prompt_search WHERE seq < $1 ORDER BY seq DESC OFFSET $2 LIMIT 1",
                [below.into(), (size - 1).into()],
            ))
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?;
        Ok((found, edge))
    }

    /// Matches below `below`, newest first, by whatever plan the settings allow.
    async fn rest(&self, below: i64, limit: i64) -> Result<Vec<i64>, DbErr> {
        self.seqs(
            format!(
                "SELECT seq FROM prompt_search WHERE {PG_MATCH} AND seq < $3 \
                 ORDER BY seq DESC LIMIT $4"
            ),
            vec![below.into(), limit.into()],
        )
        .await
    }

    async fn newest(&self) -> Result<i64, DbErr> {
        Ok(self
            .txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT MAX(seq) FROM prompt_search",
            ))
            .await?
            .map(|r| r.try_get_by_index::<Option<i64>>(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }
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

/// The scope part, for a `::tsquery` cast (kept as written: upper case), and the words
/// part, for `to_tsquery('simple', …)` (folded and split as `to_tsvector` did the text).
fn pg_tsquery(scope: &ScopeQuery, query: &Query) -> (String, String) {
    let scope_q: Vec<String> = scope
        .all_of
        .iter()
        .map(|group| {
            let any: Vec<String> = group.iter().map(|t| format!("'{t}'")).collect();
            format!("({})", any.join(" | "))
        })
        .collect();
    let mut words: Vec<String> = query.terms.iter().map(|t| format!("'{t}'")).collect();
    if let Some(p) = &query.prefix {
        let last = words.pop().map(|t| format!("{t} | ")).unwrap_or_default();
        words.push(format!("({last}'{p}':*)"));
    }
    (scope_q.join(" & "), words.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_query_languages_say_the_same_thing() {
        let mut scope = ScopeQuery::default();
        scope
            .require_any(vec!["ZZOABC".into(), "ZZVPUBLIC".into()])
            .require_any(vec!["ZZSACTIVE".into()]);
        let query = Query {
            terms: vec!["prompt".into(), "提示".into()],
            prefix: Some("wri".into()),
        };
        assert_eq!(
            fts5_query(&scope, &query),
            "scope : (\"ZZOABC\" OR \"ZZVPUBLIC\") AND scope : (\"ZZSACTIVE\") AND doc : (\"prompt\" AND (\"提示\" OR \"wri\" *))"
        );
        assert_eq!(
            pg_tsquery(&scope, &query),
            (
                "('ZZOABC' | 'ZZVPUBLIC') & ('ZZSACTIVE')".to_owned(),
                "'prompt' & ('提示' | 'wri':*)".to_owned()
            )
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
