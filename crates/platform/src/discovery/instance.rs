//! Eureka's `InstanceInfo` and `Applications`, as real Eureka clients write and read them
//! (see `interop/eureka.md`). One model serves the discovery server and PromptFlow's own
//! client; the server's XML form is the same tree written in XML.
//!
//! Reading is lenient where clients differ (`"$"` as a number or a string, `"@enabled"` as a
//! bool or a string, `overriddenstatus` in lower case, the Amazon instance id), and strict
//! where a wrong value would break other clients (metadata keys must be XML names).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

pub const DEFAULT_DATA_CENTER_CLASS: &str =
    "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";
const AMAZON_DATA_CENTER_CLASS: &str = "com.netflix.appinfo.AmazonInfo";
const EMPTY_MAP_CLASS: &str = "java.util.Collections$EmptyMap";

/// Longest text accepted in any field; Eureka has no limit, a registry in memory needs one.
const MAX_FIELD: usize = 2048;
const MAX_METADATA: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Up,
        Status::Down,
        Status::Starting,
        Status::OutOfService,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Case-insensitive, as Java's `InstanceStatus.toEnum`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionType {
    Added,
    Modified,
    Deleted,
}

impl ActionType {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Added => "ADDED",
            ActionType::Modified => "MODIFIED",
            ActionType::Deleted => "DELETED",
        }
    }

    pub fn parse(text: &str) -> Option<ActionType> {
        match text.trim().to_ascii_uppercase().as_str() {
            "ADDED" => Some(ActionType::Added),
            "MODIFIED" => Some(ActionType::Modified),
            "DELETED" => Some(ActionType::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCenterInfo {
    pub class: String,
    pub name: String,
    /// Amazon's metadata (`instance-id`, `availability-zone`, ...), empty elsewhere.
    pub metadata: BTreeMap<String, String>,
}

impl Default for DataCenterInfo {
    fn default() -> Self {
        Self {
            class: DEFAULT_DATA_CENTER_CLASS.to_owned(),
            name: "MyOwn".to_owned(),
            metadata: BTreeMap::new(),
        }
    }
}

/// Times are milliseconds since the Unix epoch, as in Java.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub renewal_interval_secs: u32,
    pub duration_secs: u32,
    pub registration_ts: i64,
    pub last_renewal_ts: i64,
    pub eviction_ts: i64,
    pub service_up_ts: i64,
}

impl Default for LeaseInfo {
    fn default() -> Self {
        Self {
            renewal_interval_secs: 30,
            duration_secs: 90,
            registration_ts: 0,
            last_renewal_ts: 0,
            eviction_ts: 0,
            service_up_ts: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub host_name: String,
    /// Upper case, as the registry compares names.
    pub app: String,
    pub ip_addr: String,
    pub status: Status,
    pub overridden_status: Status,
    pub port: u16,
    pub port_enabled: bool,
    pub secure_port: u16,
    pub secure_port_enabled: bool,
    pub country_id: i64,
    pub data_center: DataCenterInfo,
    pub lease: LeaseInfo,
    pub metadata: BTreeMap<String, String>,
    pub home_page_url: Option<String>,
    pub status_page_url: Option<String>,
    pub health_check_url: Option<String>,
    pub secure_health_check_url: Option<String>,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    pub app_group_name: Option<String>,
    pub asg_name: Option<String>,
    pub is_coordinating_discovery_server: bool,
    pub last_updated_ts: i64,
    pub last_dirty_ts: i64,
    pub action_type: Option<ActionType>,
}

impl Instance {
    /// A minimal UP instance of `app` at `host:port`, as PromptFlow's services describe
    /// themselves.
    pub fn new(app: &str, instance_id: &str, host: &str, ip: &str, port: u16) -> Instance {
        let base = format!("http://{host}:{port}");
        Instance {
            instance_id: instance_id.to_owned(),
            host_name: host.to_owned(),
            app: app.to_ascii_uppercase(),
            ip_addr: ip.to_owned(),
            status: Status::Up,
            overridden_status: Status::Unknown,
            port,
            port_enabled: true,
            secure_port: 443,
            secure_port_enabled: false,
            country_id: 1,
            data_center: DataCenterInfo::default(),
            lease: LeaseInfo::default(),
            metadata: BTreeMap::new(),
            home_page_url: Some(format!("{base}/")),
            status_page_url: Some(format!("{base}/health")),
            health_check_url: Some(format!("{base}/health")),
            secure_health_check_url: None,
            vip_address: Some(app.to_ascii_lowercase()),
            secure_vip_address: Some(app.to_ascii_lowercase()),
            app_group_name: None,
            asg_name: None,
            is_coordinating_discovery_server: false,
            last_updated_ts: 0,
            last_dirty_ts: 0,
            action_type: None,
        }
    }

    /// Reads `{"instance": {...}}` or the bare object, and checks what Eureka checks on
    /// registration. The error is the plain reason a 400 carries.
    pub fn from_json(value: &Value) -> Result<Instance, String> {
        let obj = value
            .get("instance")
            .unwrap_or(value)
            .as_object()
            .ok_or("the body is not an instance")?;
        let data_center = read_data_center(obj.get("dataCenterInfo"))?;
        let instance_id = text(obj, "instanceId")?
            .or_else(|| data_center.metadata.get("instance-id").cloned())
            .or(text(obj, "hostName")?)
            .filter(|s| !s.is_empty())
            .ok_or("Missing instanceId")?;
        let host_name = required(obj, "hostName", "Missing hostname")?;
        let app = required(obj, "app", "Missing appName")?.to_ascii_uppercase();
        let ip_addr = required(obj, "ipAddr", "Missing ip address")?;
        if data_center.name.is_empty() {
            return Err("Missing dataCenterInfo Name".into());
        }
        let status = status_field(obj, "status")?.unwrap_or(Status::Up);
        let overridden_status = match status_field(obj, "overriddenStatus")? {
            Some(s) => s,
            None => status_field(obj, "overriddenstatus")?.unwrap_or(Status::Unknown),
        };
        let (port, port_enabled) = read_port(obj.get("port"), 7001, true)?;
        let (secure_port, secure_port_enabled) = read_port(obj.get("securePort"), 7002, false)?;
        let lease = read_lease(obj.get("leaseInfo"))?;
        Ok(Instance {
            instance_id,
            host_name,
            app,
            ip_addr,
            status,
            overridden_status,
            port,
            port_enabled,
            secure_port,
            secure_port_enabled,
            country_id: number(obj, "countryId")?.unwrap_or(1),
            data_center,
            lease,
            metadata: read_metadata(obj.get("metadata"))?,
            home_page_url: text(obj, "homePageUrl")?,
            status_page_url: text(obj, "statusPageUrl")?,
            health_check_url: text(obj, "healthCheckUrl")?,
            secure_health_check_url: text(obj, "secureHealthCheckUrl")?,
            vip_address: text(obj, "vipAddress")?,
            secure_vip_address: text(obj, "secureVipAddress")?,
            app_group_name: text(obj, "appGroupName")?,
            asg_name: text(obj, "asgName")?,
            is_coordinating_discovery_server: boolean(obj, "isCoordinatingDiscoveryServer")?
                .unwrap_or(false),
            last_updated_ts: number(obj, "lastUpdatedTimestamp")?.unwrap_or(0),
            last_dirty_ts: number(obj, "lastDirtyTimestamp")?.unwrap_or(0),
            action_type: text(obj, "actionType")?.and_then(|a| ActionType::parse(&a)),
        })
    }

    /// The JSON object Eureka writes for an instance (without the `instance` wrapper).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("instanceId".into(), self.instance_id.clone().into());
        o.insert("hostName".into(), self.host_name.clone().into());
        o.insert("app".into(), self.app.clone().into());
        o.insert("ipAddr".into(), self.ip_addr.clone().into());
        o.insert("status".into(), self.status.as_str().into());
        o.insert(
            "overriddenStatus".into(),
            self.overridden_status.as_str().into(),
        );
        o.insert(
            "port".into(),
            json!({"$": self.port, "@enabled": self.port_enabled.to_string()}),
        );
        o.insert(
            "securePort".into(),
            json!({"$": self.secure_port, "@enabled": self.secure_port_enabled.to_string()}),
        );
        o.insert("countryId".into(), self.country_id.into());
        let mut dc = Map::new();
        dc.insert("@class".into(), self.data_center.class.clone().into());
        dc.insert("name".into(), self.data_center.name.clone().into());
        if !self.data_center.metadata.is_empty() {
            dc.insert("metadata".into(), string_map(&self.data_center.metadata));
        }
        o.insert("dataCenterInfo".into(), Value::Object(dc));
        let l = &self.lease;
        o.insert(
            "leaseInfo".into(),
            json!({
                "renewalIntervalInSecs": l.renewal_interval_secs,
                "durationInSecs": l.duration_secs,
                "registrationTimestamp": l.registration_ts,
                "lastRenewalTimestamp": l.last_renewal_ts,
                "evictionTimestamp": l.eviction_ts,
                "serviceUpTimestamp": l.service_up_ts,
            }),
        );
        o.insert(
            "metadata".into(),
            if self.metadata.is_empty() {
                json!({"@class": EMPTY_MAP_CLASS})
            } else {
                string_map(&self.metadata)
            },
        );
        for (key, value) in [
            ("homePageUrl", &self.home_page_url),
            ("statusPageUrl", &self.status_page_url),
            ("healthCheckUrl", &self.health_check_url),
            ("secureHealthCheckUrl", &self.secure_health_check_url),
            ("vipAddress", &self.vip_address),
            ("secureVipAddress", &self.secure_vip_address),
            ("appGroupName", &self.app_group_name),
            ("asgName", &self.asg_name),
        ] {
            if let Some(v) = value {
                o.insert(key.into(), v.clone().into());
            }
        }
        o.insert(
            "isCoordinatingDiscoveryServer".into(),
            self.is_coordinating_discovery_server.to_string().into(),
        );
        o.insert(
            "lastUpdatedTimestamp".into(),
            self.last_updated_ts.to_string().into(),
        );
        o.insert(
            "lastDirtyTimestamp".into(),
            self.last_dirty_ts.to_string().into(),
        );
        if let Some(action) = self.action_type {
            o.insert("actionType".into(), action.as_str().into());
        }
        Value::Object(o)
    }

    /// The base URL to call this instance on (plain port preferred, as Eureka clients do).
    pub fn base_url(&self, prefer_ip: bool) -> String {
        let host = if prefer_ip {
            &self.ip_addr
        } else {
            &self.host_name
        };
        if self.secure_port_enabled && !self.port_enabled {
            format!("https://{host}:{}", self.secure_port)
        } else {
            format!("http://{host}:{}", self.port)
        }
    }
}

/// An application and its instances, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Application {
    pub name: String,
    pub instances: Vec<Instance>,
}

/// A registry listing: the whole registry, or a delta.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applications {
    pub versions_delta: String,
    pub hashcode: String,
    pub applications: Vec<Application>,
}

impl Applications {
    /// Reads `{"applications": {...}}`; `application` and `instance` may be arrays or single
    /// objects, as Jackson writes a one-element list either way.
    pub fn from_json(value: &Value) -> Result<Applications, String> {
        let obj = value
            .get("applications")
            .unwrap_or(value)
            .as_object()
            .ok_or("the body is not a registry listing")?;
        let mut out = Applications {
            versions_delta: text(obj, "versions__delta")?.unwrap_or_default(),
            hashcode: text(obj, "apps__hashcode")?.unwrap_or_default(),
            applications: Vec::new(),
        };
        for app in one_or_many(obj.get("application")) {
            let name = app
                .get("name")
                .and_then(Value::as_str)
                .ok_or("an application without a name")?
                .to_ascii_uppercase();
            let instances = one_or_many(app.get("instance"))
                .into_iter()
                .map(Instance::from_json)
                .collect::<Result<Vec<_>, _>>()?;
            out.applications.push(Application { name, instances });
        }
        Ok(out)
    }

    pub fn to_json(&self) -> Value {
        let apps: Vec<Value> = self
            .applications
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "instance": a.instances.iter().map(Instance::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({"applications": {
            "versions__delta": self.versions_delta,
            "apps__hashcode": self.hashcode,
            "application": apps,
        }})
    }
}

/// Eureka's reconcile hash code: `STATUS_count_` for every status present, in name order.
pub fn hashcode(statuses: impl IntoIterator<Item = Status>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(s, n)| format!("{s}_{n}_"))
        .collect()
}

/// Metadata keys become XML element names, so only XML names are taken.
pub fn valid_metadata_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && key.len() <= 128
        && !key.to_ascii_lowercase().starts_with("xml")
}

fn one_or_many(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A text field; numbers and booleans are read as their text.
fn text(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    let s = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => return Err(format!("{key} must be text")),
    };
    if s.len() > MAX_FIELD {
        return Err(format!("{key} is longer than {MAX_FIELD} bytes"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!("{key} contains control characters"));
    }
    Ok(Some(s))
}

fn required(obj: &Map<String, Value>, key: &str, missing: &str) -> Result<String, String> {
    text(obj, key)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| missing.to_owned())
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{key} must be an integer")),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} must be an integer")),
        Some(_) => Err(format!("{key} must be an integer")),
    }
}

fn boolean(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" | "" => Ok(Some(false)),
            _ => Err(format!("{key} must be true or false")),
        },
        Some(_) => Err(format!("{key} must be true or false")),
    }
}

fn status_field(obj: &Map<String, Value>, key: &str) -> Result<Option<Status>, String> {
    match text(obj, key)? {
        None => Ok(None),
        Some(s) => Status::parse(&s)
            .map(Some)
            .ok_or_else(|| format!("{key} is not a known status")),
    }
}

fn read_port(value: Option<&Value>, default: u16, enabled: bool) -> Result<(u16, bool), String> {
    let (number_value, enabled_value) = match value {
        None | Some(Value::Null) => return Ok((default, enabled)),
        Some(Value::Object(o)) => (o.get("$"), o.get("@enabled")),
        Some(other) => (Some(other), None),
    };
    let port = match number_value {
        None | Some(Value::Null) => default,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("port must be 0 to 65535")?,
        Some(Value::String(s)) => s.trim().parse().map_err(|_| "port must be 0 to 65535")?,
        Some(_) => return Err("port must be 0 to 65535".into()),
    };
    let enabled = match enabled_value {
        None | Some(Value::Null) => enabled,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        Some(_) => return Err("@enabled must be true or false".into()),
    };
    Ok((port, enabled))
}

fn read_data_center(value: Option<&Value>) -> Result<DataCenterInfo, String> {
    let Some(Value::Object(o)) = value else {
        return Err("Missing dataCenterInfo Name".into());
    };
    let class = text(o, "@class")?.unwrap_or_else(|| DEFAULT_DATA_CENTER_CLASS.to_owned());
    let name = text(o, "name")?.unwrap_or_default();
    let metadata = match o.get("metadata") {
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| !k.starts_with('@'))
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    if class == AMAZON_DATA_CENTER_CLASS && name.is_empty() {
        return Ok(DataCenterInfo {
            class,
            name: "Amazon".into(),
            metadata,
        });
    }
    for (k, v) in &metadata {
        if !valid_metadata_key(k) || v.len() > MAX_FIELD {
            return Err(format!("dataCenterInfo metadata `{k}` is not acceptable"));
        }
    }
    Ok(DataCenterInfo {
        class,
        name,
        metadata,
    })
}

fn read_lease(value: Option<&Value>) -> Result<LeaseInfo, String> {
    let mut lease = LeaseInfo::default();
    let Some(Value::Object(o)) = value else {
        return Ok(lease);
    };
    let positive = |key: &str, default: u32| -> Result<u32, String> {
        match number(o, key)? {
            None => Ok(default),
            Some(n) if n > 0 => u32::try_from(n).map_err(|_| format!("{key} is too large")),
            Some(_) => Ok(default),
        }
    };
    lease.renewal_interval_secs = positive("renewalIntervalInSecs", 30)?;
    lease.duration_secs = positive("durationInSecs", 90)?;
    lease.registration_ts = number(o, "registrationTimestamp")?.unwrap_or(0);
    lease.last_renewal_ts = number(o, "lastRenewalTimestamp")?.unwrap_or(0);
    lease.eviction_ts = number(o, "evictionTimestamp")?.unwrap_or(0);
    lease.service_up_ts = number(o, "serviceUpTimestamp")?.unwrap_or(0);
    Ok(lease)
}

fn read_metadata(value: Option<&Value>) -> Result<BTreeMap<String, String>, String> {
    let Some(Value::Object(o)) = value else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for (k, v) in o {
        if k.starts_with('@') {
            continue;
        }
        if !valid_metadata_key(k) {
            return Err(format!(
                "metadata key `{}` is not an XML name",
                k.chars().take(64).collect::<String>()
            ));
        }
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => return Err(format!("metadata `{k}` must be text")),
        };
        if v.len() > MAX_FIELD || v.chars().any(|c| c.is_control()) {
            return Err(format!("metadata `{k}` is not acceptable text"));
        }
        out.insert(k.clone(), v);
    }
    if out.len() > MAX_METADATA {
        return Err(format!("more than {MAX_METADATA} metadata entries"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js_client_body() -> Value {
        // What eureka-js-client 4.5 sends (app name in lower case, `$` as a number).
        json!({"instance": {
            "instanceId": "127.0.0.1:jsapp:3000",
            "app": "jsapp",
            "hostName": "localhost",
            "ipAddr": "127.0.0.1",
            "statusPageUrl": "http://localhost:3000/info",
            "port": {"$": 3000, "@enabled": "true"},
            "vipAddress": "jsapp",
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "name": "MyOwn"
            }
        }})
    }

    #[test]
    fn reads_what_clients_send_and_writes_what_they_read() {
        let instance = Instance::from_json(&js_client_body()).unwrap();
        assert_eq!(instance.app, "JSAPP");
        assert_eq!(instance.port, 3000);
        assert!(instance.port_enabled);
        assert_eq!(instance.status, Status::Up);
        assert_eq!(instance.lease.duration_secs, 90);
        let written = instance.to_json();
        assert_eq!(written["port"], json!({"$": 3000, "@enabled": "true"}));
        assert_eq!(written["lastDirtyTimestamp"], json!("0"));
        assert_eq!(written["isCoordinatingDiscoveryServer"], json!("false"));
        assert_eq!(
            written["metadata"],
            json!({"@class": "java.util.Collections$EmptyMap"})
        );
        assert!(
            written.get("secureHealthCheckUrl").is_none(),
            "nulls left out"
        );
        assert_eq!(Instance::from_json(&written).unwrap(), instance);
    }

    #[test]
    fn lenient_where_clients_differ() {
        let mut body = js_client_body();
        let i = &mut body["instance"];
        i["port"] = json!({"$": "8080", "@enabled": true});
        i["overriddenstatus"] = json!("out_of_service");
        i["countryId"] = json!("1");
        i.as_object_mut().unwrap().remove("instanceId");
        let instance = Instance::from_json(&body).unwrap();
        assert_eq!(instance.port, 8080);
        assert_eq!(instance.overridden_status, Status::OutOfService);
        assert_eq!(
            instance.instance_id, "localhost",
            "falls back to the host name"
        );

        let mut amazon = js_client_body();
        amazon["instance"]
            .as_object_mut()
            .unwrap()
            .remove("instanceId");
        amazon["instance"]["dataCenterInfo"] = json!({
            "@class": "com.netflix.appinfo.AmazonInfo", "name": "Amazon",
            "metadata": {"instance-id": "i-123", "availability-zone": "us-east-1a"}
        });
        assert_eq!(Instance::from_json(&amazon).unwrap().instance_id, "i-123");
    }

    #[test]
    fn refuses_what_eureka_refuses_with_its_reasons() {
        for (field, reason) in [
            ("hostName", "Missing hostname"),
            ("ipAddr", "Missing ip address"),
            ("app", "Missing appName"),
        ] {
            let mut body = js_client_body();
            body["instance"].as_object_mut().unwrap().remove(field);
            assert_eq!(Instance::from_json(&body).unwrap_err(), reason);
        }
        let mut body = js_client_body();
        body["instance"]["dataCenterInfo"] = json!({"@class": DEFAULT_DATA_CENTER_CLASS});
        assert_eq!(
            Instance::from_json(&body).unwrap_err(),
            "Missing dataCenterInfo Name"
        );
        let mut body = js_client_body();
        body["instance"]["metadata"] = json!({"a><b": "x"});
        assert!(Instance::from_json(&body).is_err(), "not an XML name");
        let mut body = js_client_body();
        body["instance"]["port"] = json!({"$": 70000});
        assert!(Instance::from_json(&body).is_err());
        assert!(Instance::from_json(&json!([1, 2])).is_err());
    }

    #[test]
    fn hashcode_counts_statuses_in_name_order() {
        assert_eq!(
            hashcode([Status::Up, Status::Down, Status::Up]),
            "DOWN_1_UP_2_"
        );
        assert_eq!(hashcode([]), "");
    }

    #[test]
    fn listings_take_one_object_or_a_list() {
        let one = json!({"applications": {"versions__delta": "1", "apps__hashcode": "UP_1_",
            "application": {"name": "jsapp", "instance": js_client_body()["instance"].clone()}}});
        let apps = Applications::from_json(&one).unwrap();
        assert_eq!(apps.applications[0].name, "JSAPP");
        assert_eq!(apps.applications[0].instances.len(), 1);
        let again = Applications::from_json(&apps.to_json()).unwrap();
        assert_eq!(again, apps);
    }
}
