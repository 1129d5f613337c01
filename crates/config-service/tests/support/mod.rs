//! What the config-service tests share: git repositories made with the git command line.

use std::path::Path;
use std::process::Command;

/// Runs `git args` in `dir` (as a fixed user, new repositories on `main`); its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Writes `text` to `dir/file`, making folders as needed.
#[allow(dead_code)]
pub fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A running config-service and a client for it; stops when dropped.
#[allow(dead_code)]
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

/// Settings serving `dir` on a free loopback port.
#[allow(dead_code)]
pub fn settings(dir: &Path) -> config_service::Settings {
    config_service::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        path: Some(dir.to_path_buf()),
        ..config_service::Settings::default()
    }
}

#[allow(dead_code)]
pub async fn start(settings: config_service::Settings, common: &platform::settings::Common) -> App {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = config_service::start(settings, common, shutdown.clone())
        .await
        .expect("config-service starts");
    App {
        base: format!("http://{}", serving.local_addr),
        http: reqwest::Client::new(),
        _shutdown: shutdown.drop_guard(),
    }
}

#[allow(dead_code)]
impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`: the status and the body as JSON (`Null` when it is not JSON).
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Commits everything in `dir`; the new commit's id.
#[allow(dead_code)]
pub fn commit(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A new repository on `main` whose first commit holds `files`.
#[allow(dead_code)]
pub fn repository(files: &[(&str, &str)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    for (file, text) in files {
        write(repo.path(), file, text);
    }
    commit(repo.path(), "first");
    repo
}
