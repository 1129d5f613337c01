//! Access-token verification, shared by every service.
//!
//! Tokens are EdDSA-signed JWTs issued by user-service. A verifier keeps the public keys of
//! the issuer's JWKS in memory, by `kid`; a token signed with a `kid` it does not know makes
//! it fetch the set again (at most once per `REFETCH_INTERVAL`, shared by every caller
//! waiting), so a rotated key is picked up at once while a flood of made-up `kid`s cannot
//! turn into a flood of fetches. Only EdDSA
//! is accepted: `alg: none`, HMAC tricks and other algorithms fail before any key is used.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use futures_util::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::problem::Problem;

const REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Clock skew tolerated between the issuer and a verifier, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The claims of a PromptFlow access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user's id, or `service:<client_id>` for a service account.
    pub sub: String,
    /// The session (device) the token belongs to; absent for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated scopes (RFC 8693 §4.2).
    #[serde(default)]
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not meant for this service")]
    Audience,
    #[error("the token was not issued by the expected issuer")]
    Issuer,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        Problem::unauthorized(e.to_string())
    }
}

/// Fetches the issuer's current key set (over HTTP from another service, or from the key
/// store in user-service itself).
pub type JwksFetcher = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<JwkSet>> + Send + Sync>;

#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    fetch: JwksFetcher,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(issuer: &str, audience: &str, fetch: JwksFetcher) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        Self {
            inner: Arc::new(Inner {
                validation,
                keys: RwLock::new(HashMap::new()),
                fetch,
                last_fetch: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Fetches the key set now and replaces the cached keys with it.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let mut last = self.inner.last_fetch.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) -> anyhow::Result<()> {
        *last = Some(Instant::now());
        let set = (self.inner.fetch)().await?;
        let keys = decoding_keys(&set);
        if let Ok(mut cached) = self.inner.keys.write() {
            *cached = keys;
        }
        Ok(())
    }

    /// Makes sure the keys were fetched after `asked_at`, so that a key added before the
    /// token arrived is known. Fetches at most once per `REFETCH_INTERVAL` and once for a
    /// whole burst of callers: a flood of made-up `kid`s waits instead of fetching.
    async fn refetch_for_unknown_kid(&self, asked_at: Instant) {
        let mut last = self.inner.last_fetch.lock().await;
        if last.is_some_and(|t| t >= asked_at) {
            return;
        }
        if let Some(t) = *last {
            let since = t.elapsed();
            if since < REFETCH_INTERVAL {
                tokio::time::sleep(REFETCH_INTERVAL - since).await;
            }
        }
        if let Err(e) = self.fetch_locked(&mut last).await {
            tracing::warn!(error = %e, "fetching the signing keys failed");
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.inner.keys.read().ok()?.get(kid).cloned()
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refetch_for_unknown_kid(Instant::now()).await;
                self.key(&kid).ok_or(TokenError::UnknownKey)?
            }
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => TokenError::Expired,
                    K::InvalidAudience => TokenError::Audience,
                    K::InvalidIssuer => TokenError::Issuer,
                    K::InvalidSignature => TokenError::Signature,
                    K::InvalidAlgorithm => TokenError::Algorithm,
                    K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
                        TokenError::Malformed
                    }
                    other => TokenError::Invalid(format!("{other:?}")),
                }
            })?;
        Ok(data.claims)
    }
}

/// Fetches the issuer's JWKS over HTTP (how every service but user-service gets the keys).
pub fn remote_jwks(url: String) -> JwksFetcher {
    remote_jwks_via(url, crate::discovery::Discovery::default())
}

/// As `remote_jwks`; an `lb://service/path` URL is resolved through `discovery` on each
/// fetch, taking turns between the service's UP instances.
pub fn remote_jwks_via(url: String, discovery: crate::discovery::Discovery) -> JwksFetcher {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    Arc::new(move || {
        let client = client.clone();
        let url = discovery.resolve(&url);
        Box::pin(async move {
            let url = url.map_err(anyhow::Error::msg)?;
            let response = client.get(&url).send().await?.error_for_status()?;
            Ok(response.json::<JwkSet>().await?)
        })
    })
}

/// The Ed25519 keys of a set, by `kid`; keys of other kinds are skipped.
pub fn decoding_keys(set: &JwkSet) -> HashMap<String, DecodingKey> {
    set.keys
        .iter()
        .filter(|jwk| {
            matches!(
                jwk.common.key_algorithm,
                None | Some(KeyAlgorithm::EdDSA)
            ) && matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519)
        })
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            DecodingKey::from_jwk(jwk).ok().map(|k| (kid, k))
        })
        .collect()
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// A verified caller: handlers that take it are reachable only with a valid access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            Problem::unauthorized("send an access token as `Authorization: Bearer <token>`")
        })?;
        let verifier = TokenVerifier::from_ref(state);
        let claims = verifier.verify(token).await?;
        Ok(Authenticated(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn verifier(fetches: Arc<AtomicUsize>) -> TokenVerifier {
        TokenVerifier::new(
            "iss",
            "aud",
            Arc::new(move || {
                let fetches = fetches.clone();
                Box::pin(async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Ok(JwkSet { keys: Vec::new() })
                })
            }),
        )
    }

    fn token_with_kid(kid: &str) -> String {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.{}",
            b64(serde_json::json!({ "alg": "EdDSA", "kid": kid })),
            b64(serde_json::json!({ "sub": "x" })),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64])
        )
    }

    #[tokio::test]
    async fn a_burst_of_unknown_kids_makes_one_fetch_per_interval() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let v = verifier(fetches.clone());
        v.refresh().await.unwrap();
        let started = Instant::now();
        let results = futures_util::future::join_all((0..50).map(|i| {
            let v = v.clone();
            async move { v.verify(&token_with_kid(&format!("kid-{i}"))).await }
        }))
        .await;
        assert!(results.iter().all(|r| *r == Err(TokenError::UnknownKey)));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "the start, then one for the burst"
        );
        assert!(started.elapsed() >= REFETCH_INTERVAL / 2);
    }

    #[tokio::test]
    async fn algorithms_other_than_eddsa_are_refused_before_any_key_lookup() {
        use base64::Engine;
        let fetches = Arc::new(AtomicUsize::new(0));
        let v = verifier(fetches.clone());
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        for alg in ["none", "HS256", "RS256"] {
            let token = format!(
                "{}.{}.",
                b64(serde_json::json!({ "alg": alg, "kid": "k" })),
                b64(serde_json::json!({}))
            );
            let err = v.verify(&token).await.unwrap_err();
            assert!(
                matches!(err, TokenError::Algorithm | TokenError::Malformed),
                "{alg}: {err:?}"
            );
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 0);
    }
}
