//! `/api/business/prompts/{id}`: create, read, replace (with `If-Match`), patch, delete to
//! the trash and restore, archive, favourite, usage, and rendering.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::extract::{Json, MaybeJson, Path, Query};
use platform::{FieldError, Problem};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::{Error, Result, precondition_required, stale};
use super::includes;
use super::views::{PromptView, etag, parse_etag};
use crate::domain::template::{self, RenderError};
use crate::domain::validation::{self as v};
use crate::storage::WriteError;
use crate::storage::prompts::{Change, PromptInput, Record};

fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    /// For a new prompt only: its id, chosen by the client (offline devices do).
    #[serde(default)]
    id: Option<Uuid>,
    title: String,
    content: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    folder_id: Option<Uuid>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    favorite: Option<bool>,
    /// Recorded with the version this change makes.
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    folder_id: Option<Option<Uuid>>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    slug: Option<Option<String>>,
    #[serde(default)]
    favorite: Option<bool>,
    #[serde(default)]
    message: Option<String>,
}

fn trimmed(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl PromptBody {
    fn into_input(self) -> (PromptInput, Option<bool>, Option<String>) {
        (
            PromptInput {
                id: self.id,
                title: self.title.trim().to_owned(),
                content: self.content,
                description: trimmed(self.description),
                tags: self.tags,
                category: trimmed(self.category),
                folder_id: self.folder_id,
                visibility: self.visibility.unwrap_or_else(|| "private".into()),
                status: self.status.unwrap_or_else(|| "active".into()),
                slug: trimmed(self.slug),
                variables: json!([]),
            },
            self.favorite,
            self.message,
        )
    }
}

/// Checks every field, parses the template, lists its variables and follows its includes.
/// Every bad field is reported at once.
pub(super) async fn prepare(
    state: &AppState,
    caller: &Caller,
    owner: Uuid,
    root: Option<Uuid>,
    input: &mut PromptInput,
    message: Option<&str>,
) -> Result<()> {
    let mut errors = Vec::new();
    let mut check = |field: &str, r: std::result::Result<(), String>| {
        if let Err(m) = r {
            errors.push(FieldError::new(field, m));
        }
    };
    check("title", v::title(&input.title));
    check(
        "content",
        v::content(&input.content, state.settings.max_content_chars),
    );
    if let Some(d) = &input.description {
        check("description", v::description(d));
    }
    match v::tags(&input.tags) {
        Ok(t) => input.tags = t,
        Err(e) => check("tags", Err(e)),
    }
    if let Some(c) = &input.category {
        check("category", v::name(c, v::CATEGORY_MAX));
    }
    check("visibility", v::one_of(&input.visibility, v::VISIBILITIES));
    check("status", v::one_of(&input.status, v::STATUSES));
    if let Some(s) = &input.slug {
        check("slug", v::slug(s));
    }
    if let Some(m) = message {
        check("message", v::message(m));
    }
    let parsed = template::parse(&input.content);
    if let Err(e) = &parsed {
        check("content", Err(format!("is not a valid template: {e}")));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let Ok(parsed) = parsed else {
        return Err(Problem::invalid_field("content", "is not a valid template").into());
    };
    input.variables = serde_json::to_value(parsed.variables()).unwrap_or_else(|_| json!([]));
    includes::resolve(state, caller, owner, root, &parsed).await?;
    Ok(())
}

pub(super) fn with_etag(status: StatusCode, view: PromptView, location: bool) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&view.etag) {
        headers.insert(header::ETAG, v);
    }
    if location && let Ok(v) = HeaderValue::from_str(&format!("/api/business/prompts/{}", view.id))
    {
        headers.insert(header::LOCATION, v);
    }
    (status, headers, Json(view)).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<PromptBody>,
) -> Result<Response> {
    caller.require(WRITE)?;
    let owner = caller.user_id()?;
    let (mut input, favorite, message) = body.into_input();
    prepare(&state, &caller, owner, None, &mut input, message.as_deref()).await?;
    let record = state
        .store
        .create_prompt(
            owner,
            owner,
            input,
            Change {
                message: message.or_else(|| Some("created".into())),
                restored_from: None,
            },
        )
        .await?;
    if favorite == Some(true) {
        state
            .store
            .set_favorite(owner, record.prompt.id, true)
            .await?;
    }
    metrics::counter!("business_prompts_created_total").increment(1);
    Ok(with_etag(
        StatusCode::CREATED,
        PromptView::new(record, favorite == Some(true)),
        true,
    ))
}

/// The prompt at `id` if the caller may read it; otherwise 404, never 403, so private
/// prompts do not even show they exist.
pub(super) async fn readable(state: &AppState, caller: &Caller, id: Uuid) -> Result<Record> {
    caller.require(READ)?;
    state
        .store
        .prompt(id)
        .await?
        .filter(|r| caller.can_read(&r.prompt))
        .ok_or_else(|| Problem::not_found("no prompt with this id is visible to you").into())
}

/// The prompt at `id` if the caller may change it (its owner).
pub(super) async fn writable(state: &AppState, caller: &Caller, id: Uuid) -> Result<Record> {
    caller.require(WRITE)?;
    let record = readable(state, caller, id).await?;
    if !caller.owns(&record.prompt) {
        return Err(Problem::forbidden("only the owner may change this prompt").into());
    }
    Ok(record)
}

pub(super) async fn favorite_flag(state: &AppState, caller: &Caller, id: Uuid) -> Result<bool> {
    Ok(match caller.user {
        Some(u) => state.store.favorites_among(u, &[id]).await?.contains(&id),
        None => false,
    })
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let record = readable(&state, &caller, id).await?;
    let tag = etag(record.prompt.revision);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            response.headers_mut().insert(header::ETAG, v);
        }
        return Ok(response);
    }
    let favorite = favorite_flag(&state, &caller, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        PromptView::new(record, favorite),
        false,
    ))
}

/// The revision `If-Match` asks for: `Ok(None)` without the header or with `*`.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| stale(0))?;
    // A list of ETags: the first that names a revision counts.
    for part in text.split(',') {
        if let Some(r) = parse_etag(part) {
            return Ok(r);
        }
    }
    Err(stale(0))
}

/// `PUT`: the whole prompt, only with `If-Match` on the current ETag.
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<PromptBody>,
) -> Result<Response> {
    if !headers.contains_key(header::IF_MATCH) {
        return Err(precondition_required().into());
    }
    let expected = if_match(&headers)?;
    let current = writable(&state, &caller, id).await?;
    if current.prompt.deleted_at.is_some() {
        return Err(in_trash().into());
    }
    let expected = expected.unwrap_or(current.prompt.revision);
    if expected != current.prompt.revision {
        return Err(stale(current.prompt.revision).into());
    }
    let (mut input, favorite, message) = body.into_input();
    if input.id.is_some_and(|given| given != id) {
        return Err(Problem::invalid_field("id", "a prompt's id cannot change").into());
    }
    prepare(
        &state,
        &caller,
        current.prompt.owner_id,
        Some(id),
        &mut input,
        message.as_deref(),
    )
    .await?;
    let author = caller.user_id()?;
    let record = state
        .store
        .update_prompt(
            id,
            expected,
            author,
            input,
            Change {
                message,
                restored_from: None,
            },
        )
        .await?;
    if let Some(f) = favorite {
        state.store.set_favorite(author, id, f).await?;
    }
    let favorite = favorite_flag(&state, &caller, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        PromptView::new(record, favorite),
        false,
    ))
}

pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<PatchBody>,
) -> Result<Response> {
    let expected = if_match(&headers)?;
    // Without If-Match a patch applies to whatever is current; a concurrent write makes it
    // read again and reapply, a few times.
    for _ in 0..3 {
        let current = writable(&state, &caller, id).await?;
        if current.prompt.deleted_at.is_some() {
            return Err(in_trash().into());
        }
        if let Some(e) = expected
            && e != current.prompt.revision
        {
            return Err(stale(current.prompt.revision).into());
        }
        let revision = current.prompt.revision;
        let mut input = PromptInput::of(&current);
        apply_patch(&mut input, &body);
        prepare(
            &state,
            &caller,
            current.prompt.owner_id,
            Some(id),
            &mut input,
            body.message.as_deref(),
        )
        .await?;
        let author = caller.user_id()?;
        match state
            .store
            .update_prompt(
                id,
                revision,
                author,
                input,
                Change {
                    message: body.message.clone(),
                    restored_from: None,
                },
            )
            .await
        {
            Ok(record) => {
                if let Some(f) = body.favorite {
                    state.store.set_favorite(author, id, f).await?;
                }
                let favorite = favorite_flag(&state, &caller, id).await?;
                return Ok(with_etag(
                    StatusCode::OK,
                    PromptView::new(record, favorite),
                    false,
                ));
            }
            Err(WriteError::Stale(now)) if expected.is_some() => return Err(stale(now).into()),
            Err(WriteError::Stale(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(
        Problem::new(StatusCode::CONFLICT, "busy", "The prompt keeps changing")
            .detail("others changed this prompt while your change was applied; try again")
            .into(),
    )
}

fn apply_patch(input: &mut PromptInput, body: &PatchBody) {
    if let Some(t) = &body.title {
        input.title = t.trim().to_owned();
    }
    if let Some(c) = &body.content {
        input.content = c.clone();
    }
    if let Some(d) = &body.description {
        input.description = trimmed(d.clone());
    }
    if let Some(t) = &body.tags {
        input.tags = t.clone();
    }
    if let Some(c) = &body.category {
        input.category = trimmed(c.clone());
    }
    if let Some(f) = body.folder_id {
        input.folder_id = f;
    }
    if let Some(v) = &body.visibility {
        input.visibility = v.clone();
    }
    if let Some(s) = &body.status {
        input.status = s.clone();
    }
    if let Some(s) = &body.slug {
        input.slug = trimmed(s.clone());
    }
}

fn in_trash() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "in-trash",
        "The prompt is in the trash",
    )
    .detail("restore it (POST …/restore) before changing it")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(default)]
    permanent: bool,
}

/// Moves a prompt to the trash (its owner, or an administrator); `?permanent=true` on a
/// prompt already in the trash deletes it for good.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode> {
    caller.require(WRITE)?;
    let record = readable(&state, &caller, id).await?;
    if !caller.owns(&record.prompt) && !caller.admin {
        return Err(Problem::forbidden("only the owner may delete this prompt").into());
    }
    if params.permanent {
        if record.prompt.deleted_at.is_none() {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "not-in-trash",
                "The prompt is not in the trash",
            )
            .detail("delete it first; only prompts in the trash are deleted for good")
            .into());
        }
        state.store.purge_prompt(id).await?;
    } else if record.prompt.deleted_at.is_none() {
        state.store.set_deleted(id, true).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a prompt back out of the trash.
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let record = writable(&state, &caller, id).await?;
    if record.prompt.deleted_at.is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-in-trash",
            "The prompt is not in the trash",
        )
        .detail("only a deleted prompt can be restored")
        .into());
    }
    let record = state.store.set_deleted(id, false).await?;
    let favorite = favorite_flag(&state, &caller, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        PromptView::new(record, favorite),
        false,
    ))
}

async fn set_status(state: &AppState, caller: &Caller, id: Uuid, status: &str) -> Result<Response> {
    let current = writable(state, caller, id).await?;
    if current.prompt.deleted_at.is_some() {
        return Err(in_trash().into());
    }
    let mut input = PromptInput::of(&current);
    input.status = status.to_owned();
    let record = state
        .store
        .update_prompt(
            id,
            current.prompt.revision,
            caller.user_id()?,
            input,
            Change::default(),
        )
        .await?;
    let favorite = favorite_flag(state, caller, id).await?;
    Ok(with_etag(
        StatusCode::OK,
        PromptView::new(record, favorite),
        false,
    ))
}

pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    set_status(&state, &caller, id, "archived").await
}

pub async fn unarchive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    set_status(&state, &caller, id, "active").await
}

pub async fn favorite(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let user = caller.user_id()?;
    let record = readable(&state, &caller, id).await?;
    if record.prompt.deleted_at.is_some() {
        return Err(in_trash().into());
    }
    state.store.set_favorite(user, id, true).await?;
    Ok(Json(json!({ "favorite": true })))
}

pub async fn unfavorite(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let user = caller.user_id()?;
    readable(&state, &caller, id).await?;
    state.store.set_favorite(user, id, false).await?;
    Ok(Json(json!({ "favorite": false })))
}

/// Counts one use of a prompt (anyone who may read it).
pub async fn record_use(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>> {
    let record = readable(&state, &caller, id).await?;
    if record.prompt.deleted_at.is_some() {
        return Err(in_trash().into());
    }
    let prompt = state
        .store
        .record_use(id)
        .await?
        .ok_or_else(|| Problem::not_found("no prompt with this id is visible to you"))?;
    Ok(Json(
        json!({ "usage_count": prompt.usage_count, "last_used_at": prompt.last_used_at }),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RenderBody {
    #[serde(default)]
    values: HashMap<String, Value>,
}

/// Fills the template's variables (and included prompts) with `values`.
pub async fn render(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    MaybeJson(body): MaybeJson<RenderBody>,
) -> Result<Json<Value>> {
    let record = readable(&state, &caller, id).await?;
    let body = body.unwrap_or_default();
    let mut values = HashMap::new();
    let mut errors = Vec::new();
    for (name, value) in body.values {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                errors.push(FieldError::new(
                    format!("values.{name}"),
                    "must be a string, number or boolean",
                ));
                continue;
            }
        };
        values.insert(name, text);
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors).into());
    }
    let parsed = template::parse(&record.prompt.content).map_err(|e| {
        Problem::invalid_field("content", format!("the stored template is not valid: {e}"))
    })?;
    let resolved =
        includes::resolve(&state, &caller, record.prompt.owner_id, Some(id), &parsed).await?;
    let mut resolver = resolved.resolver();
    let text = template::render(&parsed, &id.to_string(), &values, &mut resolver)
        .map_err(render_problem)?;
    Ok(Json(
        json!({ "text": text, "variables": record.prompt.variables }),
    ))
}

fn render_problem(e: RenderError) -> Error {
    match e {
        RenderError::Missing(names) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-variables",
            "Values are missing",
        )
        .detail(format!("give a value for {}", names.join(", ")))
        .with("missing", names)
        .into(),
        other => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "render-failed",
            "The template cannot be rendered",
        )
        .detail(other.to_string())
        .into(),
    }
}
