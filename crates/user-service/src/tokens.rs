//! Issuing tokens: the Ed25519 signing keys (kept in `user_db`, so every replica signs with
//! the same key), their rotation, the public JWKS, access tokens and opaque refresh tokens.
//!
//! Rotation never logs anyone out: the new key signs from the moment it is added, and the
//! old one stays in the JWKS until every token it signed has expired.

use std::sync::RwLock;

use anyhow::{Context, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey as Ed25519Key;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::Claims;
use sha2::{Digest, Sha256};

use crate::storage::Store;
use crate::storage::signing_keys::SigningKey;

/// How often every replica re-reads the keys (a rotation elsewhere reaches it this fast).
pub const RELOAD_INTERVAL: Duration = Duration::seconds(60);

pub struct Issuer {
    store: Store,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    keys: RwLock<Keys>,
}

#[derive(Default)]
struct Keys {
    signing: Option<Signing>,
    jwks: JwkSet,
}

struct Signing {
    kid: String,
    key: EncodingKey,
    created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A freshly issued access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub claims: Claims,
}

impl Issuer {
    /// Loads the keys, making the first one if there is none.
    pub async fn start(
        store: Store,
        issuer: String,
        audience: String,
        access_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let this = Self {
            store,
            issuer,
            audience,
            access_ttl,
            keys: RwLock::new(Keys::default()),
        };
        this.reload().await?;
        if this.signing_kid().is_none() {
            this.rotate().await?;
        }
        Ok(this)
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Re-reads the published keys from the database.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let rows = self.store.published_keys(platform::clock::now()).await?;
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut signing = None;
        for row in &rows {
            let jwk = match public_jwk(row) {
                Ok(jwk) => jwk,
                Err(e) => {
                    tracing::error!(kid = %row.kid, error = %e, "unreadable signing key skipped");
                    continue;
                }
            };
            jwks.keys.push(jwk);
            if signing.is_none() && row.retired_at.is_none() {
                let der = STANDARD
                    .decode(&row.private_key)
                    .with_context(|| format!("private key {} is not base64", row.kid))?;
                signing = Some(Signing {
                    kid: row.kid.clone(),
                    key: EncodingKey::from_ed_der(&der),
                    created_at: row.created_at,
                });
            }
        }
        let mut keys = self
            .keys
            .write()
            .map_err(|_| anyhow!("key lock poisoned"))?;
        *keys = Keys { signing, jwks };
        Ok(())
    }

    /// Adds a new signing key; the old ones stay published until their tokens expire.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| anyhow!("no randomness: {e}"))?;
        let key = Ed25519Key::from_bytes(&seed);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| anyhow!("encoding the key: {e}"))?;
        let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let kid = thumbprint(&x)?;
        let now = platform::clock::now();
        // Tokens signed by the old key live `access_ttl`; replicas may sign with it for up
        // to one reload interval more; then add the verifiers' leeway.
        let old_expire_at = now
            + self.access_ttl
            + RELOAD_INTERVAL * 2
            + Duration::seconds(platform::auth::LEEWAY_SECS as i64);
        self.store
            .add_signing_key(
                SigningKey {
                    kid: kid.clone(),
                    algorithm: "EdDSA".into(),
                    private_key: STANDARD.encode(der.as_bytes()),
                    public_key: x,
                    created_at: now,
                    retired_at: None,
                    expires_at: None,
                },
                old_expire_at,
            )
            .await?;
        self.reload().await?;
        tracing::info!(%kid, "new token signing key");
        Ok(kid)
    }

    /// Rotates when the signing key is older than `interval`.
    pub async fn rotate_if_due(&self, interval: Duration) -> anyhow::Result<()> {
        let due = self
            .keys
            .read()
            .map_err(|_| anyhow!("key lock poisoned"))?
            .signing
            .as_ref()
            .is_none_or(|s| platform::clock::now() - s.created_at >= interval);
        if due {
            self.rotate().await?;
        }
        Ok(())
    }

    pub fn signing_kid(&self) -> Option<String> {
        self.keys
            .read()
            .ok()?
            .signing
            .as_ref()
            .map(|s| s.kid.clone())
    }

    pub fn jwks(&self) -> JwkSet {
        self.keys
            .read()
            .map(|k| k.jwks.clone())
            .unwrap_or(JwkSet { keys: Vec::new() })
    }

    pub fn issue(
        &self,
        sub: String,
        sid: Option<String>,
        roles: Vec<String>,
        scope: String,
    ) -> anyhow::Result<AccessToken> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub,
            sid,
            roles,
            scope,
            exp: now + self.access_ttl.num_seconds(),
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let keys = self.keys.read().map_err(|_| anyhow!("key lock poisoned"))?;
        let signing = keys
            .signing
            .as_ref()
            .ok_or_else(|| anyhow!("no signing key"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signing.key)?;
        Ok(AccessToken { token, claims })
    }
}

fn public_jwk(row: &SigningKey) -> anyhow::Result<Jwk> {
    let bytes = URL_SAFE_NO_PAD.decode(&row.public_key)?;
    if bytes.len() != 32 {
        anyhow::bail!("public key is {} bytes, not 32", bytes.len());
    }
    Ok(Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: Some(row.kid.clone()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: row.public_key.clone(),
        }),
    })
}

/// The RFC 7638 thumbprint of an Ed25519 public key: a `kid` that names the key itself.
fn thumbprint(x: &str) -> anyhow::Result<String> {
    let jwk = Jwk {
        common: CommonParameters::default(),
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: x.to_owned(),
        }),
    };
    Ok(jwk.thumbprint(ThumbprintHash::SHA256)?)
}

/// A new opaque refresh token and the hash it is stored under.
pub fn new_refresh_token() -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    let token = format!("pfr_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new client secret for a service account.
pub fn new_client_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(format!("pfs_{}", URL_SAFE_NO_PAD.encode(bytes)))
}
