//! Change announcements (`config.refresh` on the bus): a watcher that notices moved refs
//! (a commit, a fetch) and `/monitor`, Spring's endpoint for a git host's push webhook.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use hmac::{KeyInit, Mac};
use platform::Problem;
use platform::events::contracts::{self, ConfigRefresh};
use platform::events::{Envelope, EventBus, Foreign, Transport};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// The applications that changed files concern, as Spring's monitor guesses them: a stem
/// `application*` concerns all (`*`); `foo-dev.yml` concerns `foo` and `foo-dev` (the name
/// could be either); a file in a search folder named after an application concerns it.
pub fn touched(paths: &[String], search_paths: &[String]) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for path in paths {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        if stem == "application" || stem.starts_with("application-") {
            return vec!["*".to_owned()];
        }
        let mut cut = 0;
        for part in stem.split('-') {
            cut += part.len();
            // `foo--dev` names `foo` and `foo--dev`, not `foo-`.
            if !part.is_empty() {
                out.insert(stem[..cut].to_owned());
            }
            cut += 1;
        }
        for pattern in search_paths {
            if let Some(app) = folder_app(pattern.trim_matches('/'), dir) {
                out.insert(app.to_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// The application a search folder pattern (`config/{application}`) names for `dir`.
fn folder_app<'d>(pattern: &str, dir: &'d str) -> Option<&'d str> {
    let (before, after) = pattern.split_once("{application}")?;
    let app = dir.strip_prefix(before)?.strip_suffix(after)?;
    (!app.is_empty() && !app.contains('/')).then_some(app)
}

/// Announces a change, to PromptFlow's services and (over RabbitMQ, when set) to Spring
/// Cloud Bus listeners; a bus failure is logged (clients poll as well).
pub async fn publish(config: &Config, refresh: ConfigRefresh) {
    let data = match serde_json::to_value(&refresh) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a config.refresh event");
            return;
        }
    };
    let event = Envelope::new(crate::NAME, contracts::CONFIG_REFRESH, None, data);
    for result in config.events.publish(&[event]).await {
        match result {
            Ok(_) => {
                tracing::info!(destination = ?refresh.destination, label = ?refresh.label, version = ?refresh.version, "announced a configuration change");
            }
            Err(e) => tracing::warn!(error = %e, "could not announce a configuration change"),
        }
    }
    if config.spring_cloud_bus && config.events.transport() == Transport::Rabbitmq {
        spring_bus(&config.events, &refresh).await;
    }
}

/// One `RefreshRemoteApplicationEvent` per destination (`name:**`, or `**` for all).
async fn spring_bus(events: &EventBus, refresh: &ConfigRefresh) {
    let origin = format!("{}:{}", crate::NAME, std::process::id());
    for destination in &refresh.destination {
        let destination = match destination.as_str() {
            "*" | "**" => "**".to_owned(),
            name => format!("{name}:**"),
        };
        let body = contracts::spring_refresh_event(&origin, &destination).to_string();
        let message = Foreign {
            exchange: contracts::SPRING_CLOUD_BUS,
            routing_key: contracts::SPRING_CLOUD_BUS,
            content_type: "application/json",
            body: body.as_bytes(),
        };
        if let Err(e) = events.publish_foreign(&message).await {
            tracing::warn!(error = %e, %destination, "could not tell Spring Cloud Bus");
        }
    }
}

/// Reads the refs every `interval` (or when `wake` is notified, after a fetch) and
/// announces each moved one. The first read is the baseline: nothing is announced for it.
pub async fn watch(
    config: Arc<Config>,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut seen: Option<BTreeMap<String, git2::Oid>> = None;
    loop {
        let c = config.clone();
        let old = seen.clone();
        let round = tokio::task::spawn_blocking(move || moved(&c, old.as_ref())).await;
        match round {
            Ok(Ok((refs, changes))) => {
                seen = Some(refs);
                for change in changes {
                    publish(&config, change).await;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "cannot read the configuration repository's refs")
            }
            Err(e) => tracing::error!(error = %e, "the ref watcher failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The refs now, and an announcement for each that moved since `old`. A new ref is diffed
/// against nothing; a deleted one is not announced (nothing can be served from it).
fn moved(
    config: &Config,
    old: Option<&BTreeMap<String, git2::Oid>>,
) -> Result<(BTreeMap<String, git2::Oid>, Vec<ConfigRefresh>), crate::repo::Error> {
    let Some(git) = config.backend.as_git() else {
        return Ok((BTreeMap::new(), Vec::new()));
    };
    let refs = git.refs()?;
    let mut changes = Vec::new();
    let Some(old) = old else {
        return Ok((refs, changes));
    };
    for (name, oid) in &refs {
        let before = old.get(name).copied();
        if before == Some(*oid) {
            continue;
        }
        let paths = git.changed(before, *oid)?;
        let destination = touched(&paths, &config.search_paths);
        if destination.is_empty() {
            continue;
        }
        changes.push(ConfigRefresh {
            destination,
            label: Some(crate::repo::label_of(name).to_owned()),
            version: Some(oid.to_string()),
            paths,
        });
    }
    Ok((refs, changes))
}

/// What a push webhook (or a `path=` form) says changed.
#[derive(Debug, Default, PartialEq)]
pub struct Push {
    pub paths: Vec<String>,
    /// The branch pushed (`ref: refs/heads/x`), when the body says.
    pub label: Option<String>,
    /// The commit pushed (`after`), when the body says.
    pub version: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Host {
    /// GitHub, Gitea and Gogs: signed with `X-Hub-Signature-256`.
    Signed,
    /// GitLab: the secret in `X-Gitlab-Token`.
    GitLab,
    /// A plain form `path=...`.
    Form,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    commits: Vec<BodyCommit>,
}

#[derive(Deserialize)]
struct BodyCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

fn header_is(headers: &HeaderMap, name: &str, value: &str) -> Option<bool> {
    headers
        .get(name)
        .map(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case(value)))
}

/// Reads a `/monitor` request. `Ok(None)`: a hook event that is not a push (GitHub's
/// `ping`, say), answered with no applications.
pub fn parse(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<Option<Push>, Problem> {
    let (host, push) = if let Some(push) = header_is(headers, "x-github-event", "push")
        .or_else(|| header_is(headers, "x-gitea-event", "push"))
        .or_else(|| header_is(headers, "x-gogs-event", "push"))
    {
        (Host::Signed, push)
    } else if let Some(push) = header_is(headers, "x-gitlab-event", "push hook") {
        (Host::GitLab, push)
    } else {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(Problem::unsupported_media_type(
                "send a git host's push webhook (X-Github-Event, X-Gitlab-Event, X-Gitea-Event) or a form with path=<file>",
            ));
        }
        (Host::Form, true)
    };
    verify(host, headers, body, secret)?;
    if !push {
        return Ok(None);
    }
    if host == Host::Form {
        let paths = form_urlencoded::parse(body)
            .filter(|(k, _)| k == "path")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
            .collect();
        return Ok(Some(Push {
            paths,
            ..Push::default()
        }));
    }
    let body: Body = platform::extract::parse_json(body)?;
    let mut paths: Vec<String> = body
        .commits
        .into_iter()
        .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
        .collect();
    paths.sort();
    paths.dedup();
    Ok(Some(Push {
        paths,
        label: body
            .reference
            .and_then(|r| r.strip_prefix("refs/heads/").map(str::to_owned)),
        version: body.after.filter(|a| a.bytes().any(|b| b != b'0')),
    }))
}

/// With a secret, a request must prove it knows it: an HMAC-SHA256 of the body
/// (`X-Hub-Signature-256: sha256=<hex>`) or GitLab's token; both compared in constant time.
fn verify(host: Host, headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), Problem> {
    if secret.is_empty() {
        return Ok(());
    }
    let refused = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication is required",
        )
        .detail("the webhook's signature or token does not match config_service.monitor_secret")
    };
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match host {
        Host::GitLab => {
            let token = value("x-gitlab-token").ok_or_else(refused)?;
            if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
                Ok(())
            } else {
                Err(refused())
            }
        }
        Host::Signed | Host::Form => {
            let signature = value("x-hub-signature-256")
                .and_then(|s| s.strip_prefix("sha256="))
                .and_then(|s| hex::decode(s).ok())
                .ok_or_else(refused)?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|_| refused())?;
            mac.update(body);
            mac.verify_slice(&signature).map_err(|_| refused())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::strings as s;

    #[test]
    fn touched_applications_follow_springs_guess() {
        assert_eq!(touched(&s(&["foo-dev.yml"]), &[]), ["foo", "foo-dev"]);
        assert_eq!(touched(&s(&["foo--dev.yml"]), &[]), ["foo", "foo--dev"]);
        assert_eq!(
            touched(&s(&["a/application-db.yml", "foo.yml"]), &[]),
            ["*"]
        );
        assert_eq!(
            touched(&s(&["cfg/bar/x.yml"]), &s(&["cfg/{application}"])),
            ["bar", "x"]
        );
        assert!(touched(&[], &[]).is_empty());
    }

    #[test]
    fn signatures_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-event", "push".parse().unwrap());
        let body = br#"{"ref":"refs/heads/main","commits":[{"added":["foo.yml"],"modified":[],"removed":["bar.yml"]}]}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(parse(&headers, body, "s").is_err(), "unsigned");
        headers.insert("x-hub-signature-256", good.parse().unwrap());
        let push = parse(&headers, body, "s").unwrap().unwrap();
        assert_eq!(push.paths, ["bar.yml", "foo.yml"]);
        assert_eq!(push.label.as_deref(), Some("main"));
        assert!(parse(&headers, body, "other").is_err());
        let mut gitlab = HeaderMap::new();
        gitlab.insert("x-gitlab-event", "Push Hook".parse().unwrap());
        gitlab.insert("x-gitlab-token", "s".parse().unwrap());
        assert!(parse(&gitlab, body, "s").is_ok());
        assert!(parse(&gitlab, body, "t").is_err());
    }
}
