//! Password (and client secret) hashing with Argon2id.
//!
//! Hashing is slow by design, so it runs on the blocking pool, and a semaphore bounds how
//! many run at once: each takes `memory_kib` of memory, and a burst of logins must not take
//! the machine's memory with it. Checking a login for an account that does not exist still
//! hashes, against a dummy, so the answer takes as long either way.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::settings::PasswordHashSettings;

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    dummy: Arc<String>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").finish_non_exhaustive()
    }
}

impl Passwords {
    pub fn new(settings: &PasswordHashSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("user.password_hash is not a valid Argon2 cost: {e}"))?;
        let dummy = hasher(&params)
            .hash_password(b"not a password anyone has")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self {
            params,
            dummy: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(cores * 2)),
        })
    }

    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            hasher(&params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("argon2: {e}"))
        })
        .await
        .context("hashing task")?
    }

    /// True if `password` matches `hash`; with no hash, checks against a dummy and fails.
    pub async fn verify(&self, password: String, hash: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.as_ref().clone());
        let params = self.params.clone();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).ok().is_some_and(|parsed| {
                hasher(&params)
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        known && matched
    }

    /// True if `hash` was made with other costs than the configured ones, so that a
    /// successful login should store a fresh hash.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        let Ok(current) = Params::try_from(&parsed) else {
            return true;
        };
        parsed.algorithm.as_str() != "argon2id"
            || current.m_cost() != self.params.m_cost()
            || current.t_cost() != self.params.t_cost()
            || current.p_cost() != self.params.p_cost()
    }
}

fn hasher(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light() -> PasswordHashSettings {
        PasswordHashSettings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_with_argon2id_and_verifies() {
        let p = Passwords::new(&light()).unwrap();
        let hash = p.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(p.verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!p.verify("wrong horse".into(), Some(hash.clone())).await);
        assert!(!p.verify("correct horse".into(), None).await);
        assert!(!p.needs_rehash(&hash));
        let stronger = Passwords::new(&PasswordHashSettings {
            memory_kib: 2048,
            ..light()
        })
        .unwrap();
        assert!(stronger.needs_rehash(&hash));
    }
}
