//! Interoperability with a Eureka client nobody here wrote: npm `eureka-js-client` 4.5.0,
//! driven by `tests/interop/client.js` in a Node.js child process against a discovery
//! server started in this process. The driver reports what the client does and sees as
//! JSON lines; the tests check the server through its HTTP API, as an operator would, and
//! check that PromptFlow's own client (`platform::discovery::Discovery`) and the js client
//! see each other's services.
//!
//! Node.js and npm are required: the tests fail, never skip, without them. `scripts/test`
//! installs the npm packages (`npm ci`); a test that finds them missing runs `npm ci` itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use discovery_service::Settings;
use platform::clock::now_ms;
use platform::discovery::{Discovery, DiscoverySettings, Mode, Status};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::path_segment as encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The application the js client registers, as it sends it (lower case).
const JS_APP: &str = "jsapp";
/// The js client's lease: renew every second, expire after three.
const LEASE_RENEWAL_SECS: u64 = 1;
const LEASE_DURATION_SECS: u64 = 3;
/// How long any one expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Node.js and the npm packages
// ---------------------------------------------------------------------------------------

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn installed_version(dir: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("node_modules/eureka-js-client/package.json")).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

fn tool_version(tool: &str) -> Result<String, String> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run `{tool}`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{tool} --version` failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Node.js is there and `eureka-js-client` 4.5.0 is installed (by `npm ci` if need be).
fn prepare() -> Result<PathBuf, String> {
    const NEEDS: &str = "the eureka-js-client interop tests need Node.js and npm \
         (scripts/test and .ci/run install them; on Debian/Ubuntu: apt-get install nodejs npm)";
    let dir = interop_dir();
    tool_version("node").map_err(|e| format!("{e}; {NEEDS}"))?;
    if installed_version(&dir).as_deref() != Some("4.5.0") {
        tool_version("npm").map_err(|e| format!("{e}; {NEEDS}"))?;
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run `npm ci`: {e}; {NEEDS}"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in {} failed ({}):\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        match installed_version(&dir) {
            Some(v) if v == "4.5.0" => {}
            other => {
                return Err(format!(
                    "after `npm ci`, eureka-js-client is {other:?}, not 4.5.0 (check package-lock.json)"
                ));
            }
        }
    }
    Ok(dir)
}

/// Prepared once for all the tests of this binary (they run in parallel).
fn node_project() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match READY.get_or_init(prepare) {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The discovery server
// ---------------------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    async fn start(self_preservation: bool) -> Server {
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            self_preservation,
            eviction_interval_ms: 500,
            renewal_window_ms: 2_000,
            ..Settings::default()
        };
        let shutdown = CancellationToken::new();
        let serving = discovery_service::start(
            settings,
            &platform::settings::Common::default(),
            shutdown.clone(),
        )
        .await
        .expect("the discovery service starts");
        Server {
            addr: serving.local_addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/eureka/{path}", self.addr)
    }

    /// A PromptFlow Eureka client of this server with second-long intervals.
    fn promptflow_client(&self) -> Discovery {
        Discovery::new(DiscoverySettings {
            mode: Mode::Eureka,
            eureka_urls: vec![format!("http://{}/eureka/", self.addr)],
            renewal_interval_secs: 1,
            lease_duration_secs: 3,
            fetch_interval_secs: 1,
            ..DiscoverySettings::default()
        })
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(path))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `GET` with no `Accept` header at all (reqwest always sends one), as some Eureka
    /// clients do: the status, the `content-type` and the body.
    async fn get_without_accept(&self, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the discovery server");
        let request = format!(
            "GET /eureka/{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("the answer comes within 5 s")
            .expect("read the answer");
        let raw = String::from_utf8(raw).expect("the answer is UTF-8");
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .expect("the answer has headers and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }

    /// The instance as the server holds it now (per-instance reads are live), or `None`
    /// when it answers 404.
    async fn instance(&self, app: &str, id: &str) -> Option<Value> {
        let (status, body) = self
            .get_json(&format!("apps/{}/{}", app.to_ascii_uppercase(), encode(id)))
            .await;
        match status {
            StatusCode::OK => Some(body["instance"].clone()),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET apps/{app}/{id} answered {other}: {body}"),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> StatusCode {
        self.http
            .request(method.clone(), self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
            .status()
    }
}

/// `application.instance` as a list, whether the server wrote an array or one object.
fn as_list(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    }
}

/// The instances of `app` in a `{"applications": ...}` listing.
fn listed(listing: &Value, app: &str) -> Vec<Value> {
    as_list(&listing["applications"]["application"])
        .iter()
        .filter(|a| a["name"] == app.to_ascii_uppercase())
        .flat_map(|a| as_list(&a["instance"]))
        .collect()
}

fn timestamp(instance: &Value, field: &str) -> i64 {
    instance["leaseInfo"][field]
        .as_i64()
        .unwrap_or_else(|| panic!("leaseInfo.{field} is a number in {instance}"))
}

/// Retries `probe` every 100 ms until it answers `Ok` or `within` has passed.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not so after {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The eureka-js-client driver
// ---------------------------------------------------------------------------------------

struct JsClient {
    child: Child,
    stdin: Option<ChildStdin>,
    events: UnboundedReceiver<Value>,
    /// Everything the driver reported so far, for the failure messages.
    seen: Vec<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    instance_id: String,
    port: u16,
}

impl Drop for JsClient {
    fn drop(&mut self) {
        // Never leave a node process behind, whatever happened.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl JsClient {
    /// Starts `node client.js`: registers `jsapp` claiming `port`, heartbeats and fetches
    /// every 500 ms, and reports the instances of `watch` after every fetch.
    fn start(server: &Server, port: u16, watch: &[&str]) -> JsClient {
        let dir = node_project();
        let mut child = Command::new("node")
            .arg("client.js")
            .current_dir(&dir)
            .env("EUREKA_HOST", server.addr.ip().to_string())
            .env("EUREKA_PORT", server.addr.port().to_string())
            .env("APP", JS_APP)
            .env("INSTANCE_PORT", port.to_string())
            .env("HEARTBEAT_MS", "500")
            .env("FETCH_MS", "500")
            .env("LEASE_RENEWAL_SECS", LEASE_RENEWAL_SECS.to_string())
            .env("LEASE_DURATION_SECS", LEASE_DURATION_SECS.to_string())
            .env("WATCH_APPS", watch.join(","))
            .env_remove("EUREKA_ENV")
            .env_remove("NODE_ENV")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node client.js` in {}: {e}", dir.display()));
        let stdout = child.stdout.take().expect("the driver's stdout");
        let (tx, events) = unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "unparsed", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("the driver's stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = text.find('\n') {
                    let line: String = text.drain(..=end).collect();
                    if let Ok(mut lines) = sink.lock() {
                        lines.push(line.trim_end().to_owned());
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        JsClient {
            child,
            stdin,
            events,
            seen: Vec::new(),
            stderr,
            instance_id: format!("127.0.0.1:{JS_APP}:{port}"),
            port,
        }
    }

    /// The last lines the driver reported and logged, to explain a failure.
    fn transcript(&self) -> String {
        let reported: Vec<String> = self
            .seen
            .iter()
            .rev()
            .take(15)
            .rev()
            .map(Value::to_string)
            .collect();
        let logged = self.stderr.lock().map(|l| l.clone()).unwrap_or_default();
        let logged: Vec<&String> = logged.iter().rev().take(15).rev().collect();
        format!(
            "\n--- last reports of client.js ---\n{}\n--- last log lines of eureka-js-client ---\n{}",
            reported.join("\n"),
            logged
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Waits for the next report that satisfies `check`; fails after `PATIENCE`.
    async fn expect(&mut self, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if event["event"] == "error" || event["event"] == "unparsed" {
                        panic!("client.js reported {event}{}", self.transcript());
                    }
                    if check(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!(
                    "client.js ended before {what} ({:?}){}",
                    self.child.try_wait(),
                    self.transcript()
                ),
                Err(_) => panic!("no {what} within {PATIENCE:?}{}", self.transcript()),
            }
        }
    }

    async fn expect_event(&mut self, name: &str) -> Value {
        self.expect(&format!("`{name}` from eureka-js-client"), |e| {
            e["event"] == name
        })
        .await
    }

    /// Waits until the client has registered and its start-up fetch is done.
    async fn started(&mut self) {
        self.expect_event("registered").await;
        let started = self.expect_event("started").await;
        assert_eq!(
            started["error"],
            Value::Null,
            "eureka-js-client failed to start{}",
            self.transcript()
        );
    }

    /// Waits for `n` more heartbeats the server answered 200.
    async fn heartbeats(&mut self, n: usize) {
        for _ in 0..n {
            self.expect_event("heartbeat").await;
        }
    }

    /// Waits for a registry fetch after which the client's cache satisfies `check`
    /// (`apps` holds the watched applications by upper-case name).
    async fn fetched(&mut self, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        self.expect(what, |e| {
            e["event"] == "fetched" && e["error"].is_null() && check(e)
        })
        .await
    }

    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the driver's stdin is open");
        writeln!(stdin, "{line}").expect("write a command to client.js");
        stdin.flush().expect("flush the command");
    }

    /// SIGKILL: the client gets no chance to deregister.
    fn kill(&mut self) {
        self.child.kill().expect("kill the node process");
        let status = self.child.wait().expect("reap the node process");
        assert!(!status.success(), "node was killed, not ended: {status}");
    }

    /// How many requests of `method` to `uri_suffix` the client has sent so far.
    fn requests(&mut self, method: &str, uri_suffix: &str) -> usize {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        self.seen
            .iter()
            .filter(|e| {
                e["event"] == "request"
                    && e["method"] == method
                    && e["uri"]
                        .as_str()
                        .is_some_and(|u| u.to_ascii_lowercase().ends_with(uri_suffix))
            })
            .count()
    }
}

/// The statuses of `app`'s instances in a `fetched` report.
fn statuses(fetched: &Value, app: &str) -> Vec<(String, String)> {
    as_list(&fetched["apps"][app.to_ascii_uppercase()])
        .iter()
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap_or_default().to_owned(),
                i["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// eureka-js-client registers (JSON and XML reads show it), renews (the live lease time
/// advances without a re-registration), is listed; its delta fetches pick up a PromptFlow
/// service registered after it started, and PromptFlow's client finds the js app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_registers_renews_and_sees_promptflow_services() {
    let server = Server::start(true).await;
    let mut js = JsClient::start(&server, 9101, &[JS_APP, "user-service"]);
    js.started().await;
    let id = js.instance_id.clone();

    // Registered: the application as JSON ...
    let (status, app) = server.get_json("apps/JSAPP").await;
    assert_eq!(status, StatusCode::OK, "GET apps/JSAPP: {app}");
    assert_eq!(app["application"]["name"], "JSAPP");
    let instances = as_list(&app["application"]["instance"]);
    assert_eq!(instances.len(), 1, "one jsapp instance: {app}");
    let mine = &instances[0];
    assert_eq!(mine["instanceId"], id.as_str());
    assert_eq!(mine["app"], "JSAPP");
    assert_eq!(mine["status"], "UP");
    assert_eq!(mine["hostName"], "127.0.0.1");
    assert_eq!(mine["ipAddr"], "127.0.0.1");
    assert_eq!(mine["port"]["$"], json!(js.port));
    assert_eq!(mine["port"]["@enabled"], "true");
    assert_eq!(mine["vipAddress"], JS_APP);
    assert_eq!(mine["dataCenterInfo"]["name"], "MyOwn");
    assert_eq!(
        mine["dataCenterInfo"]["@class"],
        "com.netflix.appinfo.InstanceInfo$MyDataCenterInfo"
    );
    assert_eq!(
        mine["leaseInfo"]["renewalIntervalInSecs"],
        json!(LEASE_RENEWAL_SECS)
    );
    assert_eq!(
        mine["leaseInfo"]["durationInSecs"],
        json!(LEASE_DURATION_SECS)
    );
    assert_eq!(mine["metadata"]["driver"], "eureka-js-client");
    assert_eq!(
        mine["healthCheckUrl"],
        format!("http://127.0.0.1:{}/health", js.port)
    );

    // ... and as XML to a reader that sends no Accept header.
    let (code, content_type, xml) = server.get_without_accept("apps/JSAPP").await;
    assert_eq!(code, 200, "GET apps/JSAPP without Accept: {xml}");
    assert!(
        content_type.contains("xml"),
        "XML without an Accept header, not {content_type}"
    );
    for part in [
        "<application>".to_owned(),
        "<name>JSAPP</name>".to_owned(),
        format!("<instanceId>{id}</instanceId>"),
        "<status>UP</status>".to_owned(),
        format!("<port enabled=\"true\">{}</port>", js.port),
        "<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$MyDataCenterInfo\">".to_owned(),
        "<driver>eureka-js-client</driver>".to_owned(),
    ] {
        assert!(xml.contains(&part), "{part} in the XML listing:\n{xml}");
    }

    // Renews: the live lease time advances with the client's heartbeats, and it never
    // had to register again (a heartbeat answered 404 would make it).
    let before = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    let registered_at = timestamp(&before, "registrationTimestamp");
    let renewed_at = timestamp(&before, "lastRenewalTimestamp");
    js.heartbeats(2).await;
    let after = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    assert!(
        timestamp(&after, "lastRenewalTimestamp") > renewed_at,
        "lastRenewalTimestamp advances with heartbeats: {before} then {after}"
    );
    assert_eq!(
        timestamp(&after, "registrationTimestamp"),
        registered_at,
        "renewals are not registrations"
    );
    assert!(js.requests("PUT", &format!("jsapp/{id}")) >= 2);
    assert_eq!(
        js.requests("POST", "jsapp"),
        1,
        "registered once{}",
        js.transcript()
    );

    // A PromptFlow service registers after the js client's full fetch: the js client
    // learns of it from a delta.
    let promptflow = server.promptflow_client();
    let user_addr = SocketAddr::from(([127, 0, 0, 1], 18_081));
    let instance = promptflow.describe(
        "user-service",
        user_addr,
        BTreeMap::from([("role".to_owned(), "api".to_owned())]),
    );
    let stop_registration = CancellationToken::new();
    let registration = promptflow.register(instance, stop_registration.clone());
    let user_id = registration.instance_id.clone();
    let seen = js
        .fetched("a delta fetch showing USER-SERVICE", |e| {
            e["delta"] == true
                && statuses(e, "user-service") == vec![(user_id.clone(), "UP".to_owned())]
        })
        .await;
    let user = &as_list(&seen["apps"]["USER-SERVICE"])[0];
    assert_eq!(user["port"], json!(18_081));
    assert_eq!(user["ipAddr"], "127.0.0.1");
    assert_eq!(user["metadata"]["role"], "api");
    assert!(
        js.requests("GET", "delta") >= 1,
        "the js client used deltas"
    );
    assert_eq!(
        statuses(&seen, JS_APP),
        vec![(id.clone(), "UP".to_owned())],
        "the js client sees itself"
    );

    // Listed, both of them, with the registry's hash code.
    let (status, all) = server.get_json("apps/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed(&all, JS_APP).len(), 1, "jsapp in {all}");
    assert_eq!(
        listed(&all, "user-service").len(),
        1,
        "user-service in {all}"
    );
    assert_eq!(all["applications"]["apps__hashcode"], "UP_2_");

    // PromptFlow's client finds the js app and would call it.
    let found = eventually("PromptFlow's client lists jsapp", PATIENCE, || {
        let promptflow = promptflow.clone();
        async move {
            promptflow.refresh().await?;
            let found = promptflow.instances(JS_APP);
            if found.is_empty() {
                Err(format!("applications: {:?}", promptflow.applications()))
            } else {
                Ok(found)
            }
        }
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].instance_id, id);
    assert_eq!(found[0].status, Status::Up);
    assert_eq!(found[0].port, js.port);
    assert_eq!(
        promptflow.applications(),
        vec!["JSAPP".to_owned(), "USER-SERVICE".to_owned()]
    );
    assert_eq!(
        promptflow.next_url(JS_APP).as_deref(),
        Some(format!("http://127.0.0.1:{}", js.port).as_str())
    );

    stop_registration.cancel();
    tokio::time::timeout(Duration::from_secs(5), registration.finished)
        .await
        .expect("PromptFlow's registration ends")
        .expect("PromptFlow's registration task");
    assert!(server.instance("user-service", &user_id).await.is_none());
    js.fetched("a delta removing USER-SERVICE", |e| {
        e["delta"] == true && statuses(e, "user-service").is_empty()
    })
    .await;
}

/// An operator's OUT_OF_SERVICE override holds through the client's heartbeats, reaches
/// the js client through a delta, hides the instance from PromptFlow's client, and is
/// undone by deleting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_service_override_holds_through_heartbeats_and_reaches_the_js_client() {
    let server = Server::start(true).await;
    let mut js = JsClient::start(&server, 9102, &[JS_APP]);
    js.started().await;
    let id = js.instance_id.clone();
    js.fetched("the js client sees itself UP", |e| {
        statuses(e, JS_APP) == vec![(id.clone(), "UP".to_owned())]
    })
    .await;

    let status_path = format!("apps/JSAPP/{}/status", encode(&id));
    assert_eq!(
        server
            .send(
                reqwest::Method::PUT,
                &format!("{status_path}?value=OUT_OF_SERVICE")
            )
            .await,
        StatusCode::OK
    );
    let held = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    assert_eq!(held["status"], "OUT_OF_SERVICE");
    assert_eq!(held["overriddenStatus"], "OUT_OF_SERVICE");

    // The client keeps renewing (as UP, it knows nothing else); the override holds.
    let renewed_at = timestamp(&held, "lastRenewalTimestamp");
    js.heartbeats(3).await;
    let held = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    assert!(timestamp(&held, "lastRenewalTimestamp") > renewed_at);
    assert_eq!(
        held["status"], "OUT_OF_SERVICE",
        "the override holds through heartbeats: {held}"
    );
    let (_, all) = server.get_json("apps/").await;
    assert_eq!(listed(&all, JS_APP)[0]["status"], "OUT_OF_SERVICE");
    assert_eq!(all["applications"]["apps__hashcode"], "OUT_OF_SERVICE_1_");
    let (_, status) = server.get_json("status").await;
    assert_eq!(status["instances"]["OUT_OF_SERVICE"], 1, "{status}");

    // The js client learns it from a delta.
    js.fetched("a delta showing jsapp OUT_OF_SERVICE", |e| {
        e["delta"] == true && statuses(e, JS_APP) == vec![(id.clone(), "OUT_OF_SERVICE".to_owned())]
    })
    .await;

    // PromptFlow's client no longer routes to it.
    let promptflow = server.promptflow_client();
    promptflow
        .refresh()
        .await
        .expect("PromptFlow's client fetches");
    assert_eq!(promptflow.applications(), vec!["JSAPP".to_owned()]);
    assert!(promptflow.instances(JS_APP).is_empty());
    assert_eq!(promptflow.next_url(JS_APP), None);

    // Deleting the override puts it back UP, and it stays UP.
    assert_eq!(
        server.send(reqwest::Method::DELETE, &status_path).await,
        StatusCode::OK
    );
    let back = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    assert_eq!(back["status"], "UP");
    assert_eq!(back["overriddenStatus"], "UNKNOWN");
    js.heartbeats(2).await;
    let back = server.instance(JS_APP, &id).await.expect("jsapp is listed");
    assert_eq!(back["status"], "UP", "UP through heartbeats: {back}");
    js.fetched("a delta showing jsapp UP again", |e| {
        e["delta"] == true && statuses(e, JS_APP) == vec![(id.clone(), "UP".to_owned())]
    })
    .await;
    let found = eventually("PromptFlow's client lists jsapp again", PATIENCE, || {
        let promptflow = promptflow.clone();
        async move {
            promptflow.refresh().await?;
            let found = promptflow.instances(JS_APP);
            if found.len() == 1 {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        }
    })
    .await;
    assert_eq!(found[0].instance_id, id);
    assert_eq!(
        js.requests("POST", "jsapp"),
        1,
        "registered once{}",
        js.transcript()
    );
}

/// A js client killed with SIGKILL cannot deregister: with self-preservation off its lease
/// runs out and the eviction task removes it, no sooner than the lease duration after its
/// last renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_js_client_is_evicted_after_its_lease() {
    let server = Server::start(false).await;
    let (_, status) = server.get_json("status").await;
    assert_eq!(status["selfPreservation"]["enabled"], false);
    let mut js = JsClient::start(&server, 9103, &[JS_APP]);
    js.started().await;
    js.heartbeats(1).await;
    let id = js.instance_id.clone();
    assert!(server.instance(JS_APP, &id).await.is_some());

    js.kill();
    let last = server
        .instance(JS_APP, &id)
        .await
        .expect("still listed right after the kill");
    let last_renewal = timestamp(&last, "lastRenewalTimestamp");

    let lease_ms = i64::try_from(LEASE_DURATION_SECS * 1000).expect("small");
    let gone_at = eventually(
        "the killed client is evicted",
        Duration::from_secs(LEASE_DURATION_SECS) + PATIENCE,
        || {
            let server = &server;
            let id = &id;
            async move {
                match server.instance(JS_APP, id).await {
                    None => Ok(now_ms()),
                    Some(i) => Err(i.to_string()),
                }
            }
        },
    )
    .await;
    assert!(
        gone_at - last_renewal >= lease_ms,
        "evicted {} ms after its last renewal, before its {lease_ms} ms lease ran out",
        gone_at - last_renewal
    );

    let (status, all) = server.get_json("apps/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(listed(&all, JS_APP).is_empty(), "jsapp gone from {all}");
    let (_, delta) = server.get_json("apps/delta").await;
    let deleted = listed(&delta, JS_APP);
    assert_eq!(deleted.len(), 1, "the eviction is in the delta: {delta}");
    assert_eq!(deleted[0]["actionType"], "DELETED");
    let (_, status) = server.get_json("status").await;
    assert_eq!(status["evicted"], 1, "{status}");
    assert_eq!(js.requests("DELETE", &format!("jsapp/{id}")), 0);

    let promptflow = server.promptflow_client();
    promptflow
        .refresh()
        .await
        .expect("PromptFlow's client fetches");
    assert!(promptflow.applications().is_empty());
}

/// `client.stop()` deregisters at once: the DELETE is answered 200 (the js client counts
/// nothing else as deregistered) and the instance is gone before its lease would run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_js_client_deregisters_at_once() {
    let server = Server::start(false).await;
    let mut js = JsClient::start(&server, 9104, &[JS_APP]);
    js.started().await;
    let id = js.instance_id.clone();
    assert!(server.instance(JS_APP, &id).await.is_some());

    let asked = now_ms();
    js.command("stop");
    js.expect_event("deregistered").await;
    let stopped = js.expect_event("stopped").await;
    assert_eq!(stopped["error"], Value::Null, "{}", js.transcript());
    assert_eq!(js.requests("DELETE", &format!("jsapp/{id}")), 1);
    assert!(
        server.instance(JS_APP, &id).await.is_none(),
        "gone as soon as the client stopped"
    );
    assert!(
        now_ms() - asked < i64::try_from(LEASE_DURATION_SECS * 1000).expect("small"),
        "deregistered, not expired"
    );
    let (_, delta) = server.get_json("apps/delta").await;
    let deleted = listed(&delta, JS_APP);
    assert_eq!(deleted.len(), 1, "the cancel is in the delta: {delta}");
    assert_eq!(deleted[0]["actionType"], "DELETED");
    let (_, status) = server.get_json("status").await;
    assert_eq!(status["evicted"], 0, "cancelled, not evicted: {status}");
    assert!(server.get_json("apps/JSAPP").await.0 == StatusCode::NOT_FOUND);
}
