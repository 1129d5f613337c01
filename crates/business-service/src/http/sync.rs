//! Multi-device sync: `GET /api/business/sync/changes` (the library, then every change after
//! a cursor), `POST /api/business/sync/push` (a device's offline changes, each applied or
//! answered as a conflict), `GET /api/business/sync/stream` (server-sent events as changes
//! happen).
//!
//! A pushed change is applied through the same handlers as the REST calls, so it meets the
//! same checks; its base revision must still be the server's, or it is a conflict carrying
//! the server's version: nothing is overwritten silently. Each change's answer is kept by
//! its `change_id` (written in the change's own transaction), so a retried push is answered
//! again, not applied twice.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::events::contracts::DataSync;
use platform::extract::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::Result;
use super::views::{FolderView, PromptView};
use crate::storage::changes::{self, DELETE, FOLDER, PROMPT, TAG, UPSERT};
use crate::storage::sync::RECEIPT;

const PAGE_DEFAULT: u64 = 200;
const PAGE_MAX: u64 = 1000;
const PUSH_MAX: usize = 500;
const DEVICE_HEADER: &str = "x-device-id";

/// Where a device is in its sync. `l<seq>`: after that change-log entry. A first sync
/// reads the whole library in pages, `s<seq>.f[<folder id>]` then `s<seq>.p<prompt seq>`,
/// and then carries on from `l<seq>`, the log position when it began, so nothing written
/// meanwhile is missed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    Log(i64),
    Folders { log: i64, after: Option<Uuid> },
    Prompts { log: i64, after: i64 },
}

impl Cursor {
    fn parse(s: &str) -> Option<Cursor> {
        if let Some(n) = s.strip_prefix('l') {
            return n.parse().ok().filter(|n| *n >= 0).map(Cursor::Log);
        }
        let (log, rest) = s.strip_prefix('s')?.split_once('.')?;
        let log: i64 = log.parse().ok().filter(|n| *n >= 0)?;
        if let Some(after) = rest.strip_prefix('f') {
            let after = if after.is_empty() {
                None
            } else {
                Some(Uuid::parse_str(after).ok()?)
            };
            return Some(Cursor::Folders { log, after });
        }
        let after: i64 = rest.strip_prefix('p')?.parse().ok().filter(|n| *n >= 0)?;
        Some(Cursor::Prompts { log, after })
    }

    fn encode(&self) -> String {
        match self {
            Cursor::Log(n) => format!("l{n}"),
            Cursor::Folders { log, after: None } => format!("s{log}.f"),
            Cursor::Folders {
                log,
                after: Some(a),
            } => format!("s{log}.f{}", a.simple()),
            Cursor::Prompts { log, after } => format!("s{log}.p{after}"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub entity: String,
    pub op: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct ChangesPage {
    pub changes: Vec<ChangeView>,
    pub next_cursor: String,
    /// Pull again with `next_cursor` at once: there is more.
    pub has_more: bool,
}

fn tombstone(entity: &str, id: String) -> ChangeView {
    ChangeView {
        entity: entity.into(),
        op: DELETE.into(),
        id,
        revision: None,
        data: None,
    }
}

async fn prompt_views(
    state: &AppState,
    user: Uuid,
    records: Vec<crate::storage::prompts::Record>,
) -> Result<Vec<ChangeView>> {
    let ids: Vec<Uuid> = records.iter().map(|r| r.prompt.id).collect();
    let favorites = state.store.favorites_among(user, &ids).await?;
    Ok(records
        .into_iter()
        .map(|r| {
            let (id, revision) = (r.prompt.id, r.prompt.revision);
            let favorite = favorites.contains(&id);
            ChangeView {
                entity: PROMPT.into(),
                op: UPSERT.into(),
                id: id.to_string(),
                revision: Some(revision),
                data: serde_json::to_value(PromptView::new(r, favorite)).ok(),
            }
        })
        .collect())
}

fn folder_view(f: crate::storage::folders::Folder) -> ChangeView {
    ChangeView {
        entity: FOLDER.into(),
        op: UPSERT.into(),
        id: f.id.to_string(),
        revision: Some(f.revision),
        data: serde_json::to_value(FolderView::from(f)).ok(),
    }
}

pub async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<ChangesPage>> {
    caller.require(READ)?;
    let user = caller.user_id()?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(Problem::invalid_field("limit", format!("must be 1 to {PAGE_MAX}")).into());
    }
    let cursor = match q.since.as_deref() {
        None | Some("") => Cursor::Folders {
            log: state.store.sync_head(user).await?,
            after: None,
        },
        Some(s) => Cursor::parse(s).ok_or_else(|| {
            Problem::invalid_field("since", "is not a cursor this service gave out")
        })?,
    };
    let page = match cursor {
        Cursor::Folders { log, after } => {
            let mut folders = state.store.folders_after(user, after, limit + 1).await?;
            let more = folders.len() as u64 > limit;
            folders.truncate(limit as usize);
            let next = if more {
                Cursor::Folders {
                    log,
                    after: folders.last().map(|f| f.id),
                }
            } else {
                Cursor::Prompts { log, after: 0 }
            };
            ChangesPage {
                changes: folders.into_iter().map(folder_view).collect(),
                next_cursor: next.encode(),
                has_more: true,
            }
        }
        Cursor::Prompts { log, after } => {
            let mut records = state
                .store
                .live_prompts_after(user, after, limit + 1)
                .await?;
            let more = records.len() as u64 > limit;
            records.truncate(limit as usize);
            let next = match records.last() {
                Some(r) if more => Cursor::Prompts {
                    log,
                    after: r.prompt.seq,
                },
                _ => Cursor::Log(log),
            };
            let has_more = more || state.store.sync_head(user).await? > log;
            ChangesPage {
                changes: prompt_views(&state, user, records).await?,
                next_cursor: next.encode(),
                has_more,
            }
        }
        Cursor::Log(after) => log_page(&state, user, after, limit).await?,
    };
    Ok(Json(page))
}

/// The changes after log position `after`: each changed thing once, as it is now.
async fn log_page(state: &AppState, user: Uuid, after: i64, limit: u64) -> Result<ChangesPage> {
    let mut entries = state.store.sync_log_after(user, after, limit + 1).await?;
    let more = entries.len() as u64 > limit;
    entries.truncate(limit as usize);
    let next = entries.last().map_or(after, |e| e.seq);
    // The last entry of each thing wins; they are answered in the order of those entries.
    let mut last: HashMap<(String, String), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        last.insert((e.entity.clone(), e.entity_id.clone()), i);
    }
    let mut order: Vec<(usize, &str, &str)> = last
        .iter()
        .map(|((entity, id), i)| (*i, entity.as_str(), id.as_str()))
        .collect();
    order.sort_unstable();
    let prompt_ids: Vec<Uuid> = order
        .iter()
        .filter(|(_, e, _)| *e == PROMPT)
        .filter_map(|(_, _, id)| Uuid::parse_str(id).ok())
        .collect();
    let folder_ids: Vec<Uuid> = order
        .iter()
        .filter(|(_, e, _)| *e == FOLDER)
        .filter_map(|(_, _, id)| Uuid::parse_str(id).ok())
        .collect();
    let records = state.store.prompts_in_order(&prompt_ids).await?;
    let mut prompts: HashMap<String, ChangeView> = prompt_views(
        state,
        user,
        records
            .into_iter()
            .filter(|r| r.prompt.owner_id == user && r.prompt.deleted_at.is_none())
            .collect(),
    )
    .await?
    .into_iter()
    .map(|c| (c.id.clone(), c))
    .collect();
    let mut folders: HashMap<String, ChangeView> = state
        .store
        .folders_by_id(user, &folder_ids)
        .await?
        .into_iter()
        .map(|f| (f.id.to_string(), folder_view(f)))
        .collect();
    let changes = order
        .into_iter()
        .map(|(_, entity, id)| match entity {
            PROMPT => prompts
                .remove(id)
                .unwrap_or_else(|| tombstone(PROMPT, id.into())),
            FOLDER => folders
                .remove(id)
                .unwrap_or_else(|| tombstone(FOLDER, id.into())),
            _ => tombstone(TAG, id.into()),
        })
        .collect();
    Ok(ChangesPage {
        changes,
        next_cursor: Cursor::Log(next).encode(),
        has_more: more,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    #[serde(default)]
    device_id: Option<String>,
    changes: Vec<PushedChange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedChange {
    /// Unique per change on the device; a retried push sends the same ids.
    change_id: String,
    entity: String,
    op: String,
    id: Uuid,
    /// The revision the device's change was made on; none for a thing it created.
    #[serde(default)]
    base_revision: Option<i64>,
    /// For an upsert: the thing's fields, as in `POST` (prompts) or `POST` (folders).
    #[serde(default)]
    data: Option<Value>,
}

pub(super) fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<PushBody>,
) -> Result<Response> {
    caller.require(WRITE)?;
    let user = caller.user_id()?;
    let mut errors = Vec::new();
    if body.changes.len() > PUSH_MAX {
        errors.push(platform::FieldError::new(
            "changes",
            format!("at most {PUSH_MAX} changes per push"),
        ));
    }
    let device = body.device_id.clone().or_else(|| device_of(&headers));
    if device.as_deref().is_some_and(|d| !valid_token(d)) {
        errors.push(platform::FieldError::new(
            "device_id",
            "must be 1 to 128 letters, digits or - _ . :",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in body.changes.iter().enumerate() {
        if !valid_token(&c.change_id) {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].change_id"),
                "must be 1 to 128 letters, digits or - _ . :",
            ));
        } else if !seen.insert(c.change_id.as_str()) {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].change_id"),
                "appears twice in this push",
            ));
        }
        if c.entity != PROMPT && c.entity != FOLDER {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].entity"),
                "must be prompt or folder",
            ));
        }
        if c.op != UPSERT && c.op != DELETE {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].op"),
                "must be upsert or delete",
            ));
        }
        if c.op == UPSERT && !c.data.as_ref().is_some_and(Value::is_object) {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].data"),
                "an upsert needs the thing's fields as an object",
            ));
        }
        if c.op == DELETE && c.base_revision.is_none() {
            errors.push(platform::FieldError::new(
                format!("changes[{i}].base_revision"),
                "a delete needs the revision it was made on",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let mut results = Vec::with_capacity(body.changes.len());
    for change in body.changes {
        if let Some(mut earlier) = state.store.push_receipt(user, &change.change_id).await? {
            earlier["change_id"] = json!(change.change_id);
            earlier["replayed"] = json!(true);
            results.push(earlier);
            continue;
        }
        let change_id = change.change_id.clone();
        let applied = RECEIPT
            .scope(
                Some(change_id.clone()),
                changes::DEVICE.scope(device.clone(), apply(&state, &caller, change)),
            )
            .await?;
        state.store.save_receipt(user, &change_id, &applied).await?;
        let mut answer = applied;
        answer["change_id"] = json!(change_id);
        results.push(answer);
    }
    Ok(Json(json!({ "results": results })).into_response())
}

/// What a handler answered, as status and JSON body.
async fn answered(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

async fn respond(r: Result<impl IntoResponse>) -> (StatusCode, Value) {
    match r {
        Ok(ok) => answered(ok.into_response()).await,
        Err(e) => answered(e.into_response()).await,
    }
}

/// The server's version of a thing, for a conflict: its view, or that it is gone.
async fn server_version(state: &AppState, caller: &Caller, entity: &str, id: Uuid) -> Value {
    let user = caller.user.unwrap_or_default();
    if entity == PROMPT {
        match state.store.prompt(id).await {
            Ok(Some(r)) if r.prompt.owner_id == user && r.prompt.deleted_at.is_none() => {
                let revision = r.prompt.revision;
                let favorite = state
                    .store
                    .favorites_among(user, &[id])
                    .await
                    .is_ok_and(|f| f.contains(&id));
                json!({ "op": UPSERT, "revision": revision, "data": PromptView::new(r, favorite) })
            }
            _ => json!({ "op": DELETE }),
        }
    } else {
        match state.store.folder(user, id).await {
            Ok(Some(f)) => {
                json!({ "op": UPSERT, "revision": f.revision, "data": FolderView::from(f) })
            }
            _ => json!({ "op": DELETE }),
        }
    }
}

fn with_if_match(revision: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&super::views::etag(revision)) {
        h.insert(header::IF_MATCH, v);
    }
    h
}

async fn current_revision(
    state: &AppState,
    user: Uuid,
    entity: &str,
    id: Uuid,
) -> Result<Option<i64>> {
    Ok(if entity == PROMPT {
        state
            .store
            .prompt(id)
            .await?
            .filter(|r| r.prompt.owner_id == user && r.prompt.deleted_at.is_none())
            .map(|r| r.prompt.revision)
    } else {
        state.store.folder(user, id).await?.map(|f| f.revision)
    })
}

/// Applies one change; the answer is `applied` (with the new revision), `conflict` (with
/// the server's version) or `refused` (with the problem, as the REST call would give it).
async fn apply(state: &AppState, caller: &Caller, c: PushedChange) -> Result<Value> {
    let user = caller.user_id()?;
    let current = current_revision(state, user, &c.entity, c.id).await?;
    match (c.op.as_str(), c.base_revision, current) {
        // Created offline, but the id exists here.
        (UPSERT, None, Some(_)) => {
            return Ok(conflict(state, caller, &c, "it exists here already").await);
        }
        // Changed or deleted offline, but gone here.
        (_, Some(_), None) => return Ok(conflict(state, caller, &c, "it was deleted here").await),
        (_, Some(base), Some(now)) if base != now => {
            return Ok(conflict(state, caller, &c, CHANGED_HERE).await);
        }
        (DELETE, None, _) => {}
        _ => {}
    }
    let s = || State(state.clone());
    let (entity, id) = (c.entity.clone(), c.id);
    let (status, body) = match (c.entity.as_str(), c.op.as_str()) {
        (PROMPT, UPSERT) => {
            let mut data = c.data.unwrap_or_default();
            data["id"] = json!(c.id);
            let body = serde_json::from_value(data);
            match (body, c.base_revision) {
                (Err(e), _) => return Ok(refused_body(&e)),
                (Ok(b), None) => {
                    respond(super::prompts::create(s(), caller.clone(), Json(b)).await).await
                }
                (Ok(b), Some(base)) => {
                    respond(
                        super::prompts::replace(
                            s(),
                            caller.clone(),
                            Path(c.id),
                            with_if_match(base),
                            Json(b),
                        )
                        .await,
                    )
                    .await
                }
            }
        }
        (PROMPT, _) => {
            respond(
                super::prompts::delete(s(), caller.clone(), Path(c.id), Query(Default::default()))
                    .await,
            )
            .await
        }
        (_, UPSERT) => {
            let mut data = c.data.unwrap_or_default();
            match c.base_revision {
                None => {
                    data["id"] = json!(c.id);
                    match serde_json::from_value(data) {
                        Err(e) => return Ok(refused_body(&e)),
                        Ok(b) => {
                            respond(super::folders::create(s(), caller.clone(), Json(b)).await)
                                .await
                        }
                    }
                }
                Some(base) => match serde_json::from_value(data) {
                    Err(e) => return Ok(refused_body(&e)),
                    Ok(b) => {
                        respond(
                            super::folders::update_expecting(
                                s(),
                                caller.clone(),
                                Path(c.id),
                                Some(base),
                                Json(b),
                            )
                            .await,
                        )
                        .await
                    }
                },
            }
        }
        _ => {
            respond(
                super::folders::remove(
                    s(),
                    caller.clone(),
                    Path(c.id),
                    Query(super::folders::DeleteParams::move_to_parent()),
                )
                .await,
            )
            .await
        }
    };
    if status.is_success() {
        let revision = current_revision(state, user, &entity, id).await?;
        return Ok(json!({ "status": "applied", "revision": revision }));
    }
    if status == StatusCode::PRECONDITION_FAILED {
        let server = server_version(state, caller, &entity, id).await;
        return Ok(json!({ "status": "conflict", "reason": CHANGED_HERE, "server": server }));
    }
    Ok(json!({ "status": "refused", "problem": body }))
}

const CHANGED_HERE: &str = "it changed here since the device's version";

async fn conflict(state: &AppState, caller: &Caller, c: &PushedChange, why: &str) -> Value {
    let server = server_version(state, caller, &c.entity, c.id).await;
    json!({ "status": "conflict", "reason": why, "server": server })
}

fn refused_body(e: &serde_json::Error) -> Value {
    json!({
        "status": "refused",
        "problem": {
            "type": "https://promptflow.dev/problems/validation-failed",
            "title": "The change's data is not valid",
            "status": 422,
            "detail": e.to_string(),
        }
    })
}

fn device_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(DEVICE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// This device: its own changes are not echoed back to it.
    #[serde(default)]
    device_id: Option<String>,
}

/// `text/event-stream` of the caller's changes as they happen: `change` events carrying
/// the change-log cursor (pull `changes?since=` to get the things), and `resync` if this
/// stream fell behind and the device should pull.
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Response> {
    caller.require(READ)?;
    let user = caller.user_id()?;
    let device = q.device_id.or_else(|| device_of(&headers));
    if device.as_deref().is_some_and(|d| !valid_token(d)) {
        return Err(Problem::invalid_field(
            "device_id",
            "must be 1 to 128 letters, digits or - _ . :",
        )
        .into());
    }
    let head = state.store.sync_head(user).await?;
    let receiver = state.live.subscribe();
    let hello = Event::default()
        .event("ready")
        .id(format!("l{head}"))
        .data(json!({ "cursor": format!("l{head}") }).to_string());
    let first = futures_util::stream::once(async move { Ok::<Event, Infallible>(hello) });
    let rest = futures_util::stream::unfold(
        (receiver, user, device),
        |(mut receiver, user, device)| async move {
            loop {
                match receiver.recv().await {
                    Ok(change) if mine(&change, user, device.as_deref()) => {
                        let event = change_event(&change);
                        return Some((Ok(event), (receiver, user, device)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let event = Event::default()
                            .event("resync")
                            .data(r#"{"reason":"missed changes; pull from your cursor"}"#);
                        return Some((Ok(event), (receiver, user, device)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt;
    Ok(Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn mine(change: &DataSync, user: Uuid, device: Option<&str>) -> bool {
    change.user_id == user && (device.is_none() || change.device_id.as_deref() != device)
}

fn change_event(change: &DataSync) -> Event {
    let cursor = format!("l{}", change.cursor);
    Event::default().event("change").id(cursor.clone()).data(
        json!({
            "cursor": cursor,
            "entity": change.entity,
            "id": change.entity_id,
            "op": change.op,
        })
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let f = Uuid::now_v7();
        for c in [
            Cursor::Log(0),
            Cursor::Log(42),
            Cursor::Folders {
                log: 3,
                after: None,
            },
            Cursor::Folders {
                log: 3,
                after: Some(f),
            },
            Cursor::Prompts { log: 9, after: 77 },
        ] {
            assert_eq!(Cursor::parse(&c.encode()), Some(c));
        }
        for bad in [
            "",
            "l",
            "l-1",
            "x5",
            "s1",
            "s1.q",
            "s1.fnot-a-uuid",
            "s.p1",
            "l1e9999",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
