//! `/api/auth/*`: register, login, refresh, logout, and client-credentials tokens.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Duration;
use platform::Problem;
use platform::auth::bearer;
use platform::extract::{Json, JsonOrForm, MaybeJson};
use platform::server::ClientIp;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{
    Result, account_deleting, account_disabled, account_pending, email_taken, invalid_client,
    invalid_credentials, invalid_refresh_token, login_throttled, refresh_token_reused,
    registration_closed, registration_failed, username_taken,
};
use super::views::{TokenPair, UserView};
use crate::domain::device::DeviceInfo;
use crate::domain::roles::{Role, scopes_for};
use crate::domain::throttle::Policy;
use crate::domain::validation::{self as v, Checks};
use crate::storage::sessions::{NewSession, Refreshed, Session};
use crate::storage::users::{CreateUserError, DELETING, NewUser, PENDING, User};
use crate::tokens::{hash_refresh_token, new_refresh_token};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterRequest>,
) -> Result<Response> {
    if !state
        .live
        .feature(platform::live::features::REGISTRATION, true)
    {
        return Err(registration_closed().into());
    }
    let username = body.username.trim().to_owned();
    let email = body.email.trim().to_owned();
    let mut checks = Checks::new();
    checks
        .check("username", v::username(&username))
        .check("email", v::email(&email))
        .check("password", v::password(&body.password));
    if let Some(name) = &body.display_name {
        checks.check("display_name", v::display_name(name));
    }
    checks.finish()?;

    if state.store.user_by_username(&username).await?.is_some() {
        return Err(username_taken().into());
    }
    let password_hash = state.passwords.hash(body.password).await?;
    let deadline = state.settings.provision_library.then(|| {
        platform::clock::now() + chrono::Duration::seconds(state.settings.saga_timeout_secs as i64)
    });
    let user = state
        .store
        .register(
            NewUser {
                username,
                email,
                password_hash,
                display_name: body.display_name.map(|n| n.trim().to_owned()),
                roles: vec![Role::User],
            },
            deadline,
        )
        .await
        .map_err(|e| match e {
            CreateUserError::UsernameTaken => username_taken().into(),
            CreateUserError::EmailTaken => email_taken().into(),
            CreateUserError::Db(e) => super::error::Error::Db(e),
        })?;
    tracing::info!(user_id = %user.id, "account registered");
    state.relay.wake();
    let mut user = user;
    if user.status == PENDING {
        // Give the registration saga a moment: usually the library is ready at once.
        let watch = state.waiters.watch(user.id);
        let waited = std::time::Duration::from_millis(state.settings.saga_wait_ms);
        let started = std::time::Instant::now();
        loop {
            match state.store.user_by_id(user.id).await? {
                Some(now) if now.status == PENDING && started.elapsed() < waited => {
                    watch.wait(waited.saturating_sub(started.elapsed())).await;
                }
                Some(now) => {
                    user = now;
                    break;
                }
                None => return Err(registration_failed().into()),
            }
        }
        if user.status == PENDING {
            return Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, HeaderValue::from_static("/api/users/me"))],
                Json(UserView::from(user)),
            )
                .into_response());
        }
    }
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, HeaderValue::from_static("/api/users/me"))],
        Json(UserView::from(user)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// Username or email, for clients with one login field.
    #[serde(default)]
    login: Option<String>,
    password: String,
    #[serde(default)]
    device: Option<DeviceInfo>,
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<Response> {
    let identifier = body
        .login
        .or(body.username)
        .or(body.email)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Problem::invalid_field("username", "give a username or an email address"))?;
    if identifier.chars().count() > v::EMAIL_MAX {
        return Err(invalid_credentials().into());
    }
    if body.password.chars().count() > v::PASSWORD_MAX {
        return Err(invalid_credentials().into());
    }
    let device = body.device.unwrap_or_default();
    let mut checks = Checks::new();
    if let Some(id) = &device.id {
        checks.check("device.id", v::device_field(id));
    }
    if let Some(name) = &device.name {
        checks.check("device.name", v::device_field(name));
    }
    checks.finish()?;

    let throttle = Throttle::new(&state, &identifier, ip);
    throttle.check(&state).await?;

    let user = state.store.user_by_login(&identifier).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    if !state.passwords.verify(body.password.clone(), hash).await {
        throttle.failed(&state).await?;
        return Err(invalid_credentials().into());
    }
    let Some(user) = user else {
        return Err(invalid_credentials().into());
    };
    // Only now, with the right password, may the caller learn the account's state.
    match user.status.as_str() {
        PENDING => return Err(account_pending().into()),
        DELETING => return Err(account_deleting().into()),
        _ if !user.is_active() => return Err(account_disabled().into()),
        _ => {}
    }
    throttle.succeeded(&state).await?;
    if state.passwords.needs_rehash(&user.password_hash) {
        let fresh = state.passwords.hash(body.password).await?;
        state.store.set_password_hash(user.id, fresh, None).await?;
    }

    let (refresh, refresh_hash) = new_refresh_token()?;
    let session = state
        .store
        .create_session(
            NewSession {
                user_id: user.id,
                device_id: device
                    .id
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                device_type: device.device_type,
                device_name: device.name,
                user_agent: user_agent(&headers),
                ip: Some(ip.to_string()),
            },
            refresh_hash,
            refresh_ttl(&state),
        )
        .await?;
    tracing::info!(user_id = %user.id, session_id = %session.id, "logged in");
    Ok(Json(token_pair(&state, user, &session, refresh)?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<RefreshRequest>,
) -> Result<Response> {
    let presented = hash_refresh_token(body.refresh_token.trim());
    let (refresh, refresh_hash) = new_refresh_token()?;
    let outcome = state
        .store
        .rotate_refresh(
            &presented,
            refresh_hash,
            refresh_ttl(&state),
            Some(ip.to_string()),
        )
        .await?;
    match outcome {
        Refreshed::Rotated(rotated) => {
            let (session, user) = *rotated;
            Ok(Json(token_pair(&state, user, &session, refresh)?).into_response())
        }
        Refreshed::Reused => {
            tracing::warn!(%ip, "a used refresh token was presented again; session revoked");
            Err(refresh_token_reused().into())
        }
        Refreshed::Refused(why) => Err(invalid_refresh_token(why).into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Ends the session of the access token, or of the refresh token in the body.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    MaybeJson(body): MaybeJson<LogoutRequest>,
) -> Result<Response> {
    let mut ended = false;
    if let Some(token) = bearer(&headers)
        && let Ok(claims) = state.verifier.verify(token).await
        && let (Ok(user_id), Some(Ok(sid))) = (
            uuid::Uuid::parse_str(&claims.sub),
            claims.sid.as_deref().map(uuid::Uuid::parse_str),
        )
    {
        state
            .store
            .revoke_user_session(user_id, sid, "logout")
            .await?;
        ended = true;
    }
    if let Some(token) = body.and_then(|b| b.refresh_token) {
        let hash = hash_refresh_token(token.trim());
        if let Some(session) = state.store.session_of_refresh(&hash).await? {
            state
                .store
                .revoke_user_session(session.user_id, session.id, "logout")
                .await?;
            ended = true;
        }
    }
    if !ended {
        return Err(Problem::unauthorized(
            "send the session's access token or refresh token to log out",
        )
        .into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    grant_type: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Serialize)]
struct ClientToken {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
}

/// OAuth 2 client credentials (RFC 6749 §4.4): the id and secret in HTTP Basic or in the body.
pub async fn client_credentials(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonOrForm(body): JsonOrForm<TokenRequest>,
) -> Result<Response> {
    if body.grant_type != "client_credentials" {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "unsupported-grant-type",
            "Unsupported grant type",
        )
        .detail("this endpoint issues tokens for grant_type=client_credentials only")
        .with("error", "unsupported_grant_type")
        .into());
    }
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(pair) => pair,
        None => (
            body.client_id.unwrap_or_default(),
            body.client_secret.unwrap_or_default(),
        ),
    };
    if client_id.is_empty() || secret.is_empty() || client_id.len() > 64 || secret.len() > 256 {
        return Err(invalid_client().into());
    }
    let throttle = Throttle::new(&state, &format!("client:{client_id}"), ip);
    throttle.check(&state).await?;
    let account = state.store.service_account(&client_id).await?;
    let hash = account.as_ref().map(|a| a.secret_hash.clone());
    if !state.passwords.verify(secret, hash).await {
        throttle.failed(&state).await?;
        return Err(invalid_client().into());
    }
    let Some(account) = account.filter(|a| a.disabled_at.is_none()) else {
        return Err(invalid_client().into());
    };
    throttle.succeeded(&state).await?;
    let granted: Vec<&str> = account.scopes.split_whitespace().collect();
    let scope = match body
        .scope
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => granted.join(" "),
        Some(asked) => {
            let asked: Vec<&str> = asked.split_whitespace().collect();
            if let Some(bad) = asked.iter().find(|s| !granted.contains(s)) {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-scope",
                    "Scope not granted",
                )
                .detail(format!("this client may not ask for `{bad}`"))
                .with("error", "invalid_scope")
                .into());
            }
            asked.join(" ")
        }
    };
    let token = state.issuer.issue(
        format!("service:{}", account.client_id),
        None,
        vec!["service".into()],
        scope.clone(),
    )?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(ClientToken {
            access_token: token.token,
            token_type: "Bearer",
            expires_in: state.issuer.access_ttl().num_seconds(),
            scope,
        }),
    )
        .into_response())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
    let decode = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((decode(id)?, decode(secret)?))
}

fn refresh_ttl(state: &AppState) -> Duration {
    Duration::seconds(i64::try_from(state.settings.refresh_token_ttl_secs).unwrap_or(i64::MAX / 2))
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    let ua = headers.get(header::USER_AGENT)?.to_str().ok()?;
    Some(ua.chars().filter(|c| !c.is_control()).take(512).collect())
}

fn token_pair(
    state: &AppState,
    user: User,
    session: &Session,
    refresh_token: String,
) -> anyhow::Result<TokenPair> {
    let roles = user.role_list();
    let scope = scopes_for(&roles);
    let access = state.issuer.issue(
        user.id.to_string(),
        Some(session.id.to_string()),
        roles.iter().map(|r| r.as_str().to_owned()).collect(),
        scope.clone(),
    )?;
    Ok(TokenPair {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: state.issuer.access_ttl().num_seconds(),
        refresh_token,
        refresh_expires_in: (session.expires_at - platform::clock::now()).num_seconds(),
        scope,
        session_id: session.id,
        user: UserView::from(user),
    })
}

/// Failed-attempt counting for one login: by the account name tried and by the address.
pub(super) struct Throttle {
    account: String,
    address: String,
    account_policy: Policy,
    address_policy: Policy,
}

impl Throttle {
    pub(super) fn new(state: &AppState, identifier: &str, ip: std::net::IpAddr) -> Self {
        let s = &state.settings.login_throttle;
        let window = Duration::seconds(i64::try_from(s.window_secs).unwrap_or(900));
        let max_block = Duration::seconds(i64::try_from(s.max_block_secs).unwrap_or(900));
        Self {
            account: format!("account:{}", v::key(identifier)),
            address: format!("address:{ip}"),
            account_policy: Policy {
                free_failures: s.account_free_failures,
                window,
                max_block,
            },
            address_policy: Policy {
                free_failures: s.address_free_failures,
                window,
                max_block,
            },
        }
    }

    /// Refuses with 429 while either key is blocked.
    pub(super) async fn check(&self, state: &AppState) -> Result<()> {
        let now = platform::clock::now();
        let mut wait = Duration::zero();
        for (key, policy) in [
            (&self.account, &self.account_policy),
            (&self.address, &self.address_policy),
        ] {
            if let Some(f) = state.store.login_failures(key).await?
                && let Some(left) = policy.blocked_for(&f, now)
            {
                wait = wait.max(left);
            }
        }
        if wait > Duration::zero() {
            let secs = u64::try_from(wait.num_seconds() + 1).unwrap_or(1);
            return Err(login_throttled(secs).into());
        }
        Ok(())
    }

    pub(super) async fn failed(&self, state: &AppState) -> Result<()> {
        let now = platform::clock::now();
        state
            .store
            .record_login_failure(&self.account, &self.account_policy, now)
            .await?;
        state
            .store
            .record_login_failure(&self.address, &self.address_policy, now)
            .await?;
        metrics::counter!("user_login_failures_total").increment(1);
        Ok(())
    }

    /// A success clears the account's count (not the address's: one good login from an
    /// address must not reset a guessing run against other accounts from it).
    pub(super) async fn succeeded(&self, state: &AppState) -> Result<()> {
        state.store.clear_login_failures(&self.account).await?;
        Ok(())
    }
}
