//! npm `cloud-config-client` 1.6.2, a client nobody here wrote, reads merged configuration
//! for an application, two profiles and a branch label from config-service.
//! `scripts/test` installs the package (tests/interop/package-lock.json).

use std::process::Command;

use config_service::Settings;
use platform::settings::Common;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod support;
use support::git;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_config_client_reads_two_profiles_on_a_branch() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    std::fs::write(
        dir.join("application.yml"),
        "db:\n  url: base\nshared: true\n",
    )
    .unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "main"]);
    git(dir, &["checkout", "-qb", "release/2"]);
    std::fs::write(dir.join("foo.yml"), "list: [one, two]\nwho: foo\n").unwrap();
    std::fs::write(dir.join("foo-dev.yml"), "who: foo-dev\ndb:\n  url: dev\n").unwrap();
    std::fs::write(dir.join("foo-db.properties"), "db.url=from-db-profile\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-qm", "release"]);
    git(dir, &["checkout", "-q", "main"]);

    let shutdown = CancellationToken::new();
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        path: Some(dir.to_path_buf()),
        ..Settings::default()
    };
    let serving = config_service::start(settings, &Common::default(), shutdown.clone())
        .await
        .unwrap();
    let endpoint = format!("http://{}", serving.local_addr);
    let interop = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("client.js")
            .args([endpoint.as_str(), "foo", "dev,db", "release/2"])
            .current_dir(interop)
            .output()
            .expect("node runs (scripts/test installs Node.js and the npm package)")
    })
    .await
    .unwrap();
    shutdown.cancel();
    assert!(
        out.status.success(),
        "cloud-config-client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("the client printed JSON");
    assert_eq!(got["db"], "from-db-profile", "the last profile wins: {got}");
    assert_eq!(got["properties"]["who"], "foo-dev");
    assert_eq!(got["first"], "one");
    assert_eq!(got["properties"]["shared"], true);
}
