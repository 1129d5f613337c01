//! `GET /api/business/export` and `POST /api/business/import`: a library (or a folder, or a
//! search) as JSON, YAML or a zip of Markdown files; imports of the same formats and of the
//! original Kotlin version's JSON, reported item by item.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use platform::Problem;
use platform::extract::{Json, RawBody};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::caller::{Caller, READ, WRITE};
use super::error::{Error, Result};
use super::list::ListParams;
use crate::domain::listing::{FolderFilter, Scope};
use crate::domain::portable::{self, Item, Library, PortableFolder, PortablePrompt};
use crate::domain::search_text;
use crate::domain::validation as v;
use crate::storage::WriteError;
use crate::storage::folders::{Folder, NewFolder};
use crate::storage::prompts::{Change, PromptInput, Record};

/// Folder id → its path from the root ("Work/Emails").
fn folder_paths(folders: &[Folder]) -> HashMap<Uuid, String> {
    let by_id: HashMap<Uuid, &Folder> = folders.iter().map(|f| (f.id, f)).collect();
    folders
        .iter()
        .map(|f| {
            let mut names = vec![f.name.clone()];
            let mut parent = f.parent_id;
            while let Some(p) = parent {
                let Some(pf) = by_id.get(&p) else { break };
                if names.len() > crate::storage::folders::MAX_DEPTH {
                    break;
                }
                names.push(pf.name.clone());
                parent = pf.parent_id;
            }
            names.reverse();
            (f.id, names.join("/"))
        })
        .collect()
}

pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    caller.require(READ)?;
    let mut format = "json".to_owned();
    // The list's own parameters, without `format` (the serializer is not Send: keep it
    // out of the awaits below).
    let list_query = {
        let mut rest = form_urlencoded::Serializer::new(String::new());
        let mut status_given = false;
        for (k, val) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
            if k == "format" {
                format = val.into_owned();
            } else {
                status_given |= k == "status";
                rest.append_pair(&k, &val);
            }
        }
        // A library export holds archived prompts too, unless asked otherwise.
        if !status_given {
            rest.append_pair("status", "all");
        }
        rest.finish()
    };
    let params = ListParams::parse(&list_query)?;
    let scope = params.scope(&caller)?;
    let Scope::Owner(owner) = scope else {
        return Err(Problem::forbidden(
            "export your own library (or, as an administrator, a user's by userId)",
        )
        .into());
    };
    let filter = params.filter(&caller);
    let records: Vec<Record> = match params.q.as_deref().map(search_text::parse_query) {
        Some(q) if !q.is_empty() => {
            let found = state
                .store
                .search_candidates(&scope, &filter, &q, portable::MAX_ITEMS as u32)
                .await?;
            let ids: Vec<Uuid> = found.iter().map(|r| r.id).collect();
            state.store.prompts_in_order(&ids).await?
        }
        _ => state.store.all_matching(&scope, &filter).await?,
    };
    let folders = state.store.folders(owner).await?;
    let paths = folder_paths(&folders);
    let ids: Vec<Uuid> = records.iter().map(|r| r.prompt.id).collect();
    let favorites = match caller.user {
        Some(u) => state.store.favorites_among(u, &ids).await?,
        None => Default::default(),
    };
    // A folder export carries that folder's own subtree of folders; a library export all.
    let keep_folder = |f: &Folder| match params.folder {
        Some(FolderFilter::In(root)) => paths
            .get(&f.id)
            .zip(paths.get(&root))
            .is_some_and(|(p, r)| p == r || p.starts_with(&format!("{r}/"))),
        Some(FolderFilter::None) => false,
        None => true,
    };
    let library = Library {
        format: "promptflow-library".into(),
        version: 1,
        exported_at: platform::clock::now(),
        folders: folders
            .iter()
            .filter(|f| keep_folder(f))
            .map(|f| PortableFolder {
                path: paths.get(&f.id).cloned().unwrap_or_else(|| f.name.clone()),
                color: f.color.clone(),
                icon: f.icon.clone(),
                position: f.position,
            })
            .collect(),
        prompts: records
            .into_iter()
            .map(|r| {
                let p = r.prompt;
                PortablePrompt {
                    id: Some(p.id.to_string()),
                    title: p.title,
                    content: p.content,
                    description: p.description,
                    tags: r.tags,
                    category: p.category,
                    folder: p.folder_id.and_then(|f| paths.get(&f).cloned()),
                    slug: p.slug,
                    visibility: p.visibility,
                    favorite: favorites.contains(&p.id),
                    status: p.status,
                    created_at: Some(p.created_at),
                    updated_at: Some(p.updated_at),
                    usage_count: u64::try_from(p.usage_count).unwrap_or(0),
                }
            })
            .collect(),
    };
    let date = library.exported_at.format("%Y-%m-%d");
    let (bytes, content_type, ext) = match format.as_str() {
        "json" => (portable::to_json(&library), "application/json", "json"),
        "yaml" | "yml" => (portable::to_yaml(&library), "application/yaml", "yaml"),
        "markdown" | "md" | "zip" => (
            portable::to_markdown_zip(&library),
            "application/zip",
            "zip",
        ),
        _ => {
            return Err(Problem::invalid_field("format", "must be json, yaml or markdown").into());
        }
    };
    let bytes = bytes.map_err(|e| Error::Internal(anyhow::anyhow!("export: {e}")))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"promptflow-library-{date}.{ext}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, bytes).into_response())
}

#[derive(Debug, Serialize)]
struct ItemReport {
    index: usize,
    title: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ImportReport {
    source: portable::Source,
    created: usize,
    updated: usize,
    refused: usize,
    items: Vec<ItemReport>,
}

/// Imports prompts; each item is created, updated (when it carries the id of one of the
/// caller's prompts) or refused with the reason, and a refused item changes nothing.
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<serde_json::Value>> {
    caller.require(WRITE)?;
    let owner = caller.user_id()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let parsed = portable::parse(&body, &content_type).map_err(|e| {
        Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "import-unreadable",
            "The upload cannot be imported",
        )
        .detail(e.to_string())
    })?;
    let mut folders = FolderCache::load(&state, owner).await?;
    for f in &parsed.folders {
        // A folder that cannot be made is reported with the first prompt that needs it.
        let _ = folders.ensure(&state, owner, &f.path, Some(f)).await;
    }
    let mut report = ImportReport {
        source: parsed.source,
        created: 0,
        updated: 0,
        refused: 0,
        items: Vec::new(),
    };
    for (position, item) in parsed.items.into_iter().enumerate() {
        let (index, title, outcome) = match item {
            Item::Refused {
                index,
                title,
                error,
            } => (index, title, Err(error)),
            Item::Prompt(p) => {
                let title = Some(p.title.clone());
                let outcome = import_one(&state, &caller, owner, &mut folders, p).await;
                (position, title, outcome)
            }
        };
        let entry = match outcome {
            Ok((id, created)) => {
                if created {
                    report.created += 1;
                } else {
                    report.updated += 1;
                }
                ItemReport {
                    index,
                    title,
                    status: if created { "created" } else { "updated" },
                    id: Some(id),
                    error: None,
                }
            }
            Err(error) => {
                report.refused += 1;
                ItemReport {
                    index,
                    title,
                    status: "refused",
                    id: None,
                    error: Some(error),
                }
            }
        };
        report.items.push(entry);
    }
    tracing::info!(
        user_id = %owner,
        created = report.created,
        updated = report.updated,
        refused = report.refused,
        "import"
    );
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// Imports one prompt; Err is the reason it was refused (internal failures included: the
/// item did not happen, and the report says so).
async fn import_one(
    state: &AppState,
    caller: &Caller,
    owner: Uuid,
    folders: &mut FolderCache,
    p: PortablePrompt,
) -> std::result::Result<(Uuid, bool), String> {
    let existing = match p.id.as_deref().and_then(|id| Uuid::parse_str(id).ok()) {
        Some(id) => state
            .store
            .prompt(id)
            .await
            .map_err(|e| internal(&e))?
            .filter(|r| r.prompt.owner_id == owner && r.prompt.deleted_at.is_none()),
        None => None,
    };
    let mut input = PromptInput {
        id: None,
        title: p.title.trim().to_owned(),
        content: p.content,
        description: p
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
        tags: p.tags,
        category: p
            .category
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty()),
        folder_id: None,
        visibility: p.visibility,
        status: p.status,
        slug: p.slug,
        variables: serde_json::json!([]),
    };
    if let Some(slug) = &input.slug
        && let Ok(Some(other)) = state.store.prompt_by_slug(owner, slug).await
        && existing.as_ref().is_none_or(|e| e.prompt.id != other.id)
    {
        return Err(format!(
            "slug: `{slug}` is taken by another of your prompts"
        ));
    }
    let root = existing.as_ref().map(|e| e.prompt.id);
    super::prompts::prepare(state, caller, owner, root, &mut input, None)
        .await
        .map_err(|e| describe(&e))?;
    // Only a prompt that passed every check gets its folder made.
    if let Some(path) = p.folder.as_deref().filter(|f| !f.trim().is_empty()) {
        input.folder_id = Some(folders.ensure(state, owner, path, None).await?);
    }
    let change = Change {
        message: Some("imported".into()),
        restored_from: None,
    };
    let result = match &existing {
        Some(current) => state
            .store
            .update_prompt(
                current.prompt.id,
                current.prompt.revision,
                owner,
                input,
                change,
            )
            .await
            .map(|r| (r.prompt.id, false)),
        None => state
            .store
            .create_prompt(owner, owner, input, change)
            .await
            .map(|r| (r.prompt.id, true)),
    };
    let (id, created) = result.map_err(|e| match e {
        WriteError::Db(e) => internal(&e),
        other => other.to_string(),
    })?;
    if p.favorite {
        state
            .store
            .set_favorite(owner, id, true)
            .await
            .map_err(|e| internal(&e))?;
    }
    Ok((id, created))
}

fn internal(e: &dyn std::fmt::Display) -> String {
    tracing::error!(error = %e, "import item failed");
    "the server failed to store this item; it was not imported".into()
}

fn describe(e: &Error) -> String {
    match e {
        Error::Problem(p) => p.to_string(),
        other => internal(other),
    }
}

/// The caller's folders by path, made on demand.
struct FolderCache {
    by_path: HashMap<String, Uuid>,
}

impl FolderCache {
    async fn load(state: &AppState, owner: Uuid) -> Result<Self> {
        let folders = state.store.folders(owner).await?;
        let paths = folder_paths(&folders);
        Ok(Self {
            by_path: paths
                .into_iter()
                .map(|(id, path)| (path.to_lowercase(), id))
                .collect(),
        })
    }

    /// The id of the folder at `path`, making missing folders on the way.
    async fn ensure(
        &mut self,
        state: &AppState,
        owner: Uuid,
        path: &str,
        style: Option<&PortableFolder>,
    ) -> std::result::Result<Uuid, String> {
        let segments: Vec<&str> = path
            .split('/')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if segments.is_empty() {
            return Err("folder: the path is empty".into());
        }
        if segments.len() > crate::storage::folders::MAX_DEPTH {
            return Err(format!(
                "folder: paths nest at most {} deep",
                crate::storage::folders::MAX_DEPTH
            ));
        }
        let mut parent: Option<Uuid> = None;
        let mut so_far = String::new();
        for (i, name) in segments.iter().enumerate() {
            v::name(name, v::FOLDER_NAME_MAX).map_err(|e| format!("folder `{name}` {e}"))?;
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(name);
            let last = i + 1 == segments.len();
            let known = self.by_path.get(&so_far.to_lowercase()).copied();
            let id = match known {
                Some(id) => id,
                None => {
                    let (color, icon, position) = match style.filter(|_| last) {
                        Some(s) => (
                            s.color.clone().filter(|c| v::color(c).is_ok()),
                            s.icon.clone().filter(|i| v::icon(i).is_ok()),
                            Some(s.position),
                        ),
                        None => (None, None, None),
                    };
                    let folder = state
                        .store
                        .create_folder(
                            owner,
                            NewFolder {
                                id: None,
                                name: (*name).to_owned(),
                                parent,
                                position,
                                color,
                                icon,
                            },
                        )
                        .await
                        .map_err(|e| format!("folder `{so_far}`: {e}"))?;
                    self.by_path.insert(so_far.to_lowercase(), folder.id);
                    folder.id
                }
            };
            parent = Some(id);
        }
        parent.ok_or_else(|| "folder: the path is empty".into())
    }
}
