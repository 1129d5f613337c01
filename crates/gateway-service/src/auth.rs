//! Authentication at the edge: access tokens verified against user-service's JWKS, and
//! remembered once verified. A token is immutable and signed: once its signature checked
//! out, it stays good until it expires (user-service keeps a rotated key published until
//! every token it signed has expired), so a cache hit is as strong as a fresh check and
//! spares the ~50 µs Ed25519 verification on every request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use platform::auth::{Claims, LEEWAY_SECS, TokenError, TokenVerifier};

type Cache = HashMap<Box<str>, Arc<Claims>, foldhash::fast::RandomState>;

pub struct EdgeAuth {
    /// Tells this instance's entries in a thread's own cache from another's.
    id: u64,
    verifier: TokenVerifier,
    cache: RwLock<Cache>,
    capacity: usize,
}

/// Each thread's own copy of the tokens it has seen. A hit takes no lock and touches no
/// memory another thread writes (a shared lock or reference count would bounce its cache
/// line between the cores on every request).
struct Local {
    owner: u64,
    tokens: Cache,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local { owner: 0, tokens: Cache::default() });
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Seconds since the Unix epoch, all an expiry check needs.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl EdgeAuth {
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            verifier,
            cache: RwLock::new(HashMap::default()),
            capacity,
        }
    }

    fn local_get(&self, token: &str) -> Option<Arc<Claims>> {
        LOCAL
            .try_with(|l| {
                let l = l.try_borrow().ok()?;
                if l.owner != self.id {
                    return None;
                }
                l.tokens.get(token).cloned()
            })
            .ok()
            .flatten()
    }

    /// Keeps a copy of `claims` of this thread's own (not the shared `Arc`).
    fn local_put(&self, token: &str, claims: &Claims) -> Arc<Claims> {
        let own = Arc::new(claims.clone());
        let _ = LOCAL.try_with(|l| {
            let Ok(mut l) = l.try_borrow_mut() else {
                return;
            };
            if l.owner != self.id || l.tokens.len() >= self.capacity {
                l.owner = self.id;
                l.tokens.clear();
            }
            l.tokens.insert(token.into(), own.clone());
        });
        own
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The token's claims, from the cache or verified now.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = unix_now();
        if let Some(claims) = self.local_get(token) {
            if expired(&claims, now) {
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some(claims) = cached {
            // An expired one stays until the next purge: a client retrying it is answered
            // without another signature check.
            if expired(&claims, now) {
                return Err(TokenError::Expired);
            }
            return Ok(self.local_put(token, &claims));
        }
        let claims = Arc::new(self.verifier.verify(token).await?);
        if self.capacity > 0 {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= self.capacity {
                cache.retain(|_, c| !expired(c, now));
                // Still full of live tokens: forget half of them (they are verified again
                // when next seen), rather than growing without bound.
                if cache.len() >= self.capacity {
                    let mut keep = false;
                    cache.retain(|_, _| {
                        keep = !keep;
                        keep
                    });
                }
            }
            cache.insert(token.into(), claims.clone());
            drop(cache);
            return Ok(self.local_put(token, &claims));
        }
        Ok(claims)
    }

    /// Forgets expired tokens (run now and then, so idle ones do not linger).
    pub fn purge(&self) -> usize {
        let now = unix_now();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, c| !expired(c, now));
        cache.len()
    }
}

/// As the verifier judges it: past `exp` by more than the tolerated clock skew.
fn expired(claims: &Claims, now: i64) -> bool {
    claims.exp.saturating_add(LEEWAY_SECS as i64) < now
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType,
    };
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    struct Issuer {
        key: EncodingKey,
        set: JwkSet,
    }

    fn issuer() -> Issuer {
        use base64::Engine;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let der = signing.to_pkcs8_der().unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing.verifying_key().as_bytes());
        let jwk = Jwk {
            common: CommonParameters {
                key_id: Some("k1".into()),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            }),
        };
        Issuer {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            set: JwkSet { keys: vec![jwk] },
        }
    }

    fn token(issuer: &Issuer, exp: i64, sub: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let claims = Claims {
            iss: "promptflow".into(),
            aud: "promptflow".into(),
            sub: sub.into(),
            sid: None,
            roles: vec!["user".into()],
            scope: "prompts:read".into(),
            exp,
            iat: exp - 900,
            jti: sub.into(),
        };
        jsonwebtoken::encode(&header, &claims, &issuer.key).unwrap()
    }

    fn edge(issuer: &Issuer, fetches: Arc<AtomicUsize>, capacity: usize) -> EdgeAuth {
        let set = issuer.set.clone();
        let verifier = TokenVerifier::new(
            "promptflow",
            "promptflow",
            Arc::new(move || {
                let set = set.clone();
                fetches.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move { Ok(set) })
            }),
        );
        EdgeAuth::new(verifier, capacity)
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_and_a_tampered_one_is_not() {
        let issuer = issuer();
        let edge = edge(&issuer, Arc::default(), 10);
        let now = platform::clock::now().timestamp();
        let good = token(&issuer, now + 600, "alice");
        assert_eq!(edge.verify(&good).await.unwrap().sub, "alice");
        assert_eq!(edge.verify(&good).await.unwrap().sub, "alice");
        assert_eq!(edge.purge(), 1, "one token remembered");

        // The same signature over other claims.
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let other = token(&issuer, now + 600, "mallory");
        let forged_body = other.split('.').nth(1).unwrap();
        let forged = format!("{head}.{forged_body}.{sig}");
        assert_eq!(
            edge.verify(&forged).await.unwrap_err(),
            TokenError::Signature
        );
        assert_eq!(edge.purge(), 1, "refused tokens are not remembered");
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let issuer = issuer();
        let edge = edge(&issuer, Arc::default(), 10);
        let now = platform::clock::now().timestamp();
        let token = token(&issuer, now + 1, "alice");
        edge.verify(&token).await.unwrap();
        // Age the remembered claims past expiry and the leeway.
        // (in the shared cache and in this thread's copy).
        {
            let mut cache = edge.cache.write().unwrap();
            let claims = cache.get_mut(token.as_str()).unwrap();
            Arc::make_mut(claims).exp = now - LEEWAY_SECS as i64 - 1;
        }
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            let claims = l.tokens.get_mut(token.as_str()).unwrap();
            Arc::make_mut(claims).exp = now - LEEWAY_SECS as i64 - 1;
        });
        assert_eq!(edge.verify(&token).await.unwrap_err(), TokenError::Expired);
        assert_eq!(edge.purge(), 0);
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_capacity() {
        let issuer = issuer();
        let edge = edge(&issuer, Arc::default(), 8);
        let now = platform::clock::now().timestamp();
        for i in 0..50 {
            let t = token(&issuer, now + 600, &format!("user{i}"));
            edge.verify(&t).await.unwrap();
            assert!(edge.purge() <= 8);
        }
    }
}
