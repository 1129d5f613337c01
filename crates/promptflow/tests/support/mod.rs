//! The binary as users run it: `promptflow serve <service>` processes, each told where the
//! others are, waited for until they listen, stopped (and their logs shown on failure)
//! when the test ends.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `promptflow` with a clean environment.
pub fn promptflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptflow"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads JSON log lines until one says a service is listening; returns its address.
pub fn wait_for_listening(child: &mut Child) -> String {
    wait_for_services(child, &[])
        .into_values()
        .next()
        .expect("a service listens")
}

/// Reads JSON log lines until each of `services` (or, with none named, any one service)
/// says it is listening; returns their addresses by service name.
pub fn wait_for_services(child: &mut Child, services: &[&str]) -> BTreeMap<String, String> {
    let logs = Arc::new(Mutex::new(VecDeque::new()));
    wait_logging(child, services, &logs)
}

fn wait_logging(
    child: &mut Child,
    services: &[&str],
    logs: &Arc<Mutex<VecDeque<String>>>,
) -> BTreeMap<String, String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = logs.clone();
    // Reads to the end, so a busy process never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send((
                    v["service"].as_str().unwrap_or_default().to_owned(),
                    v["local_addr"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            let mut logs = keep.lock().unwrap_or_else(|e| e.into_inner());
            if logs.len() >= 200 {
                logs.pop_front();
            }
            logs.push_back(line);
        }
    });
    if let Some(stderr) = child.stderr.take() {
        let keep = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(line);
            }
        });
    }
    let mut found = BTreeMap::new();
    while found.is_empty() || !services.iter().all(|s| found.contains_key(*s)) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((service, addr)) => {
                found.insert(service, addr);
            }
            Err(_) => {
                let tail: Vec<String> = logs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                panic!(
                    "promptflow did not say its services listen; its last output:\n{}",
                    tail.join("\n")
                );
            }
        }
    }
    found
}

pub fn sigterm(child: &Child) {
    signal(child, "TERM");
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running `promptflow serve <service>`; killed when dropped, its last log lines printed
/// if the test is failing.
pub struct Proc {
    pub name: String,
    pub addr: String,
    child: Option<Child>,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    /// `promptflow serve <service>` with `env` (and `--config <file>` when given); returns once it listens.
    pub fn serve(
        service: &str,
        data: &Path,
        config: Option<&Path>,
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = promptflow();
        cmd.args(["serve", service, "--data-dir"]).arg(data);
        if let Some(file) = config {
            cmd.arg("--config").arg(file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("promptflow starts");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let addr = wait_logging(&mut child, &[], &logs)
            .into_values()
            .next()
            .expect("an address");
        Proc {
            name: service.to_owned(),
            addr,
            child: Some(child),
            logs,
        }
    }

    /// `promptflow up` on ports chosen by the system, with `env`; returns once all five
    /// services listen, with their addresses by name (`addr` is the gateway's).
    pub fn up(data: &Path, env: &[(String, String)]) -> (Proc, BTreeMap<String, String>) {
        let mut cmd = promptflow();
        cmd.args(["up", "--data-dir"]).arg(data);
        for section in [
            "USER",
            "BUSINESS",
            "DISCOVERY_SERVICE",
            "GATEWAY",
            "CONFIG_SERVICE",
        ] {
            cmd.env(format!("PROMPTFLOW_{section}__LISTEN"), "127.0.0.1:0");
        }
        cmd.env("PROMPTFLOW_USER__PASSWORD_HASH__MEMORY_KIB", "4096");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("promptflow starts");
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let addrs = wait_logging(
            &mut child,
            &[
                "config-service",
                "discovery-service",
                "user-service",
                "business-service",
                "gateway-service",
            ],
            &logs,
        );
        let proc = Proc {
            name: "up".into(),
            addr: addrs["gateway-service"].clone(),
            child: Some(child),
            logs,
        };
        (proc, addrs)
    }

    /// The process id (None once it has been killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    pub fn child(&self) -> &Child {
        self.child.as_ref().expect("running")
    }

    /// The log lines kept so far (the last 200).
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// SIGKILL: gone at once, no deregistration, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "{} exited with {status}", self.name);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{} did not stop on SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- last output of {} ({}) ---", self.name, self.addr);
            for line in self.logs().iter().rev().take(60).rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

/// Environment pairs from `&str`s.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
