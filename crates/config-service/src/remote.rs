//! A remote git server mirrored into a bare repository at `path`: labels then resolve to
//! its branches as fetched (`refs/remotes/origin/*`) and its tags. A failed fetch keeps the
//! last fetched state served; readiness reports the error.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::settings::RemoteSettings;

pub struct Remote {
    pub uri: String,
    path: PathBuf,
    username: String,
    password: String,
    last_error: Mutex<Option<String>>,
    /// One fetch at a time (the interval and `/monitor` may ask together).
    fetching: Mutex<()>,
}

const REFSPECS: [&str; 2] = [
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
];

impl Remote {
    /// Makes `path` a bare repository if it is missing (the first fetch fills it).
    pub fn open(path: PathBuf, settings: &RemoteSettings) -> anyhow::Result<Self> {
        if !path.exists() {
            git2::Repository::init_bare(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the mirror {}: {}",
                    path.display(),
                    e.message()
                )
            })?;
        }
        Ok(Self {
            uri: settings.uri.clone(),
            path,
            username: settings.username.clone(),
            password: settings.password.clone(),
            last_error: Mutex::new(None),
            fetching: Mutex::new(()),
        })
    }

    fn error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches branches and tags, pruning what the remote deleted. Blocking.
    pub fn fetch(&self) -> Result<(), String> {
        let _one = self
            .fetching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = self.try_fetch();
        match &result {
            Ok(()) => *self.error() = None,
            Err(e) => {
                tracing::warn!(remote = %self.uri, error = %e, "fetching the configuration repository failed; serving what was fetched before");
                *self.error() = Some(e.clone());
            }
        }
        result
    }

    fn try_fetch(&self) -> Result<(), String> {
        let repo = git2::Repository::open(&self.path).map_err(|e| e.message().to_owned())?;
        let mut remote = repo
            .remote_anonymous(&self.uri)
            .map_err(|e| e.message().to_owned())?;
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut tries = 0;
        callbacks.credentials(|_url, _user, _allowed| {
            // libgit2 asks again after a refusal: give up rather than loop.
            tries += 1;
            if self.username.is_empty() || tries > 1 {
                return Err(git2::Error::from_str("the remote refused the credentials"));
            }
            git2::Cred::userpass_plaintext(&self.username, &self.password)
        });
        let mut options = git2::FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .prune(git2::FetchPrune::On)
            .download_tags(git2::AutotagOption::All);
        remote
            .fetch(&REFSPECS, Some(&mut options), Some("config-service fetch"))
            .map_err(|e| e.message().to_owned())
    }

    /// For readiness: the last fetch worked.
    pub fn check(&self) -> Result<(), String> {
        match &*self.error() {
            None => Ok(()),
            Some(e) => Err(format!("fetching {} failed: {e}", self.uri)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_a_known_transport() {
        let dir = tempfile::tempdir().unwrap();
        let remote = Remote::open(
            dir.path().join("m"),
            &RemoteSettings {
                uri: "https://127.0.0.1:9/none.git".into(),
                ..RemoteSettings::default()
            },
        )
        .unwrap();
        let error = remote.fetch().unwrap_err();
        assert!(!error.contains("unsupported URL protocol"), "{error}");
        assert!(
            remote.check().is_err(),
            "readiness reports the failed fetch"
        );
    }
}
