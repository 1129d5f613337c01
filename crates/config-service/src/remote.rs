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

    /// Callbacks that answer the remote's question for credentials once.
    fn callbacks(&self) -> git2::RemoteCallbacks<'_> {
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut tries = 0;
        callbacks.credentials(move |_url, _user, _allowed| {
            // libgit2 asks again after a refusal: give up rather than loop.
            tries += 1;
            if self.username.is_empty() || tries > 1 {
                return Err(git2::Error::from_str("the remote refused the credentials"));
            }
            git2::Cred::userpass_plaintext(&self.username, &self.password)
        });
        callbacks
    }

    fn try_fetch(&self) -> Result<(), String> {
        let repo = git2::Repository::open(&self.path).map_err(|e| e.message().to_owned())?;
        let mut remote = repo
            .remote_anonymous(&self.uri)
            .map_err(|e| e.message().to_owned())?;
        let mut options = git2::FetchOptions::new();
        options
            .remote_callbacks(self.callbacks())
            .prune(git2::FetchPrune::On)
            .download_tags(git2::AutotagOption::All);
        remote
            .fetch(&REFSPECS, Some(&mut options), Some("config-service fetch"))
            .map_err(|e| e.message().to_owned())
    }

    /// Pushes `commit` to the remote's branch that `tracking` (`refs/remotes/origin/<b>`)
    /// mirrors, as a fast-forward only: if the branch moved there, it is refused (`Moved`).
    /// Then the mirror's ref follows, as git's own push does.
    /// Blocking; opens the mirror itself, so requests are not held up meanwhile.
    pub fn push(
        &self,
        commit: git2::Oid,
        tracking: &str,
    ) -> Result<(), crate::history::RollbackError> {
        use crate::history::RollbackError;
        let repo = git2::Repository::open(&self.path)?;
        let branch = crate::repo::label_of(tracking);
        // libgit2 pushes refs, not ids: a scratch ref names the commit.
        let scratch = "refs/config-service/rollback";
        repo.reference(scratch, commit, true, "rollback to push")?;
        let mut remote = repo.remote_anonymous(&self.uri)?;
        let mut refused = None;
        let mut callbacks = self.callbacks();
        callbacks.push_update_reference(|_name, status| {
            refused = status.map(str::to_owned);
            Ok(())
        });
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        let pushed = remote.push(
            &[format!("{scratch}:refs/heads/{branch}")],
            Some(&mut options),
        );
        drop(options);
        if let Ok(mut r) = repo.find_reference(scratch) {
            let _ = r.delete();
        }
        match pushed {
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                return Err(RollbackError::Moved);
            }
            Err(e) => return Err(RollbackError::Refused(e.message().to_owned())),
            Ok(()) => {}
        }
        if let Some(reason) = refused {
            return Err(RollbackError::Refused(reason));
        }
        repo.reference(tracking, commit, true, "rollback pushed")?;
        Ok(())
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
