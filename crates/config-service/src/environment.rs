//! The Spring Cloud Config environment, without I/O: files are parsed into flattened
//! property sources (`a.b`, `list[0]`) and ordered as Spring orders them: the first source
//! wins; profile-specific before default, the last listed profile first, `{application}`
//! before `application`, `.properties` before `.yml` before `.yaml`, a later YAML document
//! before an earlier one.

use serde::Serialize;
use serde_json::{Map, Value};
use serde_norway::Value as Yaml;

use crate::cipher::{self, Cipher};

/// One property source of an answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PropertySource {
    pub name: String,
    pub source: Map<String, Value>,
}

/// The answer to `/{application}/{profiles}[/{label}]`.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub name: String,
    pub profiles: Vec<String>,
    pub label: Option<String>,
    pub version: Option<String>,
    pub state: Option<String>,
    #[serde(rename = "propertySources")]
    pub property_sources: Vec<PropertySource>,
}

/// A file could not be parsed; the answer names it.
#[derive(Debug)]
pub struct ParseError {
    pub file: String,
    pub reason: String,
}

pub const EXTENSIONS: [&str; 3] = ["properties", "yml", "yaml"];

/// Spring's JSON for `env`; `v2` (its v2 media type) wraps each value as
/// `{"value", "origin"}`, the origin being the source's name.
pub fn to_json(env: &Environment, v2: bool) -> String {
    let Ok(mut body) = serde_json::to_value(env) else {
        return String::from("{}");
    };
    if v2 && let Some(sources) = body["propertySources"].as_array_mut() {
        for source in sources {
            let name = source["name"].clone();
            if let Some(map) = source["source"].as_object_mut() {
                for value in map.values_mut() {
                    *value = serde_json::json!({ "value": value.take(), "origin": name });
                }
            }
        }
    }
    body.to_string()
}

/// The file names searched for `applications` and `profiles`, highest precedence first.
pub fn candidates(applications: &[String], profiles: &[String]) -> Vec<String> {
    let mut names = vec!["application".to_owned()];
    for app in applications {
        if !names.contains(app) {
            names.push(app.clone());
        }
    }
    let mut out = Vec::new();
    for profile in profiles.iter().rev() {
        for name in names.iter().rev() {
            for ext in EXTENSIONS {
                out.push(format!("{name}-{profile}.{ext}"));
            }
        }
    }
    for name in names.iter().rev() {
        for ext in EXTENSIONS {
            out.push(format!("{name}.{ext}"));
        }
    }
    out
}

/// Parses one file into its sources, highest precedence first. `display` names them.
pub fn parse_file(
    display: &str,
    file_name: &str,
    bytes: &[u8],
    profiles: &[String],
) -> Result<Vec<PropertySource>, ParseError> {
    let fail = |reason: String| ParseError {
        file: display.to_owned(),
        reason,
    };
    if file_name.ends_with(".properties") {
        let map = java_properties::read(bytes).map_err(|e| fail(e.to_string()))?;
        let mut keys: Vec<_> = map.into_iter().collect();
        keys.sort();
        let source = keys
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(vec![PropertySource {
            name: display.to_owned(),
            source,
        }]);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
    let mut documents = Vec::new();
    for (n, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value =
            <Yaml as serde::Deserialize>::deserialize(doc).map_err(|e| fail(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let mut source = Map::new();
        flatten("", &value, &mut source);
        if !active(&source, profiles) {
            continue;
        }
        let name = if n == 0 {
            display.to_owned()
        } else {
            format!("{display} (document #{n})")
        };
        documents.push(PropertySource { name, source });
    }
    documents.reverse();
    Ok(documents)
}

/// Whether a YAML document applies: `spring.config.activate.on-profile` (or the older
/// `spring.profiles`) names profiles, `!p` for "not p"; any one matching activates it.
fn active(source: &Map<String, Value>, profiles: &[String]) -> bool {
    let Some(Value::String(expr)) = source
        .get("spring.config.activate.on-profile")
        .or_else(|| source.get("spring.profiles"))
    else {
        return true;
    };
    expr.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| match p.strip_prefix('!') {
            Some(not) => !profiles.iter().any(|q| q == not),
            None => profiles.iter().any(|q| q == p),
        })
}

fn scalar_key(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Null => String::new(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Spring's `YamlProcessor` flattening: `a.b`, `list[0]`, a `[bracketed]` key kept whole;
/// null and empty collections become `""`.
fn flatten(path: &str, value: &Yaml, out: &mut Map<String, Value>) {
    match value {
        Yaml::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = scalar_key(k);
                let child = if path.is_empty() {
                    key
                } else if key.starts_with('[') {
                    format!("{path}{key}")
                } else {
                    format!("{path}.{key}")
                };
                flatten(&child, v, out);
            }
        }
        Yaml::Sequence(list) if !list.is_empty() => {
            for (i, v) in list.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        Yaml::Tagged(tagged) => flatten(path, &tagged.value, out),
        Yaml::Bool(b) => {
            out.insert(path.to_owned(), Value::Bool(*b));
        }
        Yaml::Number(n) => {
            let v = if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(|| Value::String(n.to_string()), Value::Number)
            };
            out.insert(path.to_owned(), v);
        }
        Yaml::String(s) => {
            out.insert(path.to_owned(), Value::String(s.clone()));
        }
        _ => {
            out.insert(path.to_owned(), Value::String(String::new()));
        }
    }
}

/// Decrypts `{cipher}` values in place. One that cannot be opened (or with no key) is
/// replaced by `invalid.<key>` = `<n/a>`, as Spring does; without a key the values are
/// passed on for the client to open.
pub fn decrypt(sources: &mut [PropertySource], cipher: Option<&Cipher>) {
    let Some(cipher) = cipher else { return };
    for source in sources {
        let mut fixed = Map::new();
        for (key, value) in std::mem::take(&mut source.source) {
            match value.as_str().and_then(|s| s.strip_prefix(cipher::PREFIX)) {
                Some(hex) => match cipher.decrypt(hex) {
                    Ok(plain) => {
                        fixed.insert(key, Value::String(plain));
                    }
                    Err(_) => {
                        tracing::warn!(property = %key, source = %source.name, "a {{cipher}} value does not open with this key");
                        fixed.insert(format!("invalid.{key}"), Value::String("<n/a>".into()));
                    }
                },
                None => {
                    fixed.insert(key, value);
                }
            }
        }
        source.source = fixed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::strings as s;

    #[test]
    fn yaml_is_flattened_as_spring_does() {
        let yaml = "a:\n  b: 1\n  c: [x, {d: true}]\n  '[x.y]': z\n  n: ~\n  e: []\nf: 1.5\n";
        let got = parse_file("r/foo.yml", "foo.yml", yaml.as_bytes(), &[]).unwrap();
        let src = &got[0].source;
        assert_eq!(src["a.b"], 1);
        assert_eq!(src["a.c[0]"], "x");
        assert_eq!(src["a.c[1].d"], true);
        assert_eq!(src["a[x.y]"], "z");
        assert_eq!(src["a.n"], "");
        assert_eq!(src["a.e"], "");
        assert_eq!(src["f"], 1.5);
    }

    #[test]
    fn documents_follow_their_profiles_and_later_ones_win() {
        let yaml = "a: base\n---\nspring:\n  config:\n    activate:\n      on-profile: dev\na: dev\n---\nspring.profiles: '!dev'\na: notdev\n";
        let dev = parse_file(
            "r/application.yml",
            "application.yml",
            yaml.as_bytes(),
            &s(&["dev"]),
        )
        .unwrap();
        let names: Vec<_> = dev.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["r/application.yml (document #1)", "r/application.yml"]
        );
        let prod = parse_file(
            "r/application.yml",
            "application.yml",
            yaml.as_bytes(),
            &s(&["prod"]),
        )
        .unwrap();
        assert_eq!(prod[0].source["a"], "notdev");
    }

    #[test]
    fn candidates_are_in_springs_order() {
        let c: Vec<String> = candidates(&s(&["foo"]), &s(&["dev", "db"]))
            .into_iter()
            .filter(|n| n.ends_with(".yml"))
            .collect();
        assert_eq!(
            c,
            [
                "foo-db.yml",
                "application-db.yml",
                "foo-dev.yml",
                "application-dev.yml",
                "foo.yml",
                "application.yml"
            ]
        );
    }

    #[test]
    fn properties_files_and_bad_files() {
        let p = "# c\na.b = one\\\n  two\nc:\\u4e2d\n";
        let got = parse_file("r/foo.properties", "foo.properties", p.as_bytes(), &[]).unwrap();
        assert_eq!(got[0].source["a.b"], "onetwo");
        assert_eq!(got[0].source["c"], "中");
        let err = parse_file("r/foo.yml", "foo.yml", b"a: [unclosed", &[]).unwrap_err();
        assert_eq!(err.file, "r/foo.yml");
    }

    #[test]
    fn cipher_values_open_or_are_marked_invalid() {
        let cipher = Cipher::new("k", "deadbeef").unwrap();
        let mut sources = vec![PropertySource {
            name: "x".into(),
            source: [
                (
                    "good".to_owned(),
                    Value::String(format!("{{cipher}}{}", cipher.encrypt("p"))),
                ),
                ("bad".to_owned(), Value::String("{cipher}abcd".into())),
                ("plain".to_owned(), Value::from(3)),
            ]
            .into_iter()
            .collect(),
        }];
        decrypt(&mut sources, Some(&cipher));
        let src = &sources[0].source;
        assert_eq!(src["good"], "p");
        assert_eq!(src["invalid.bad"], "<n/a>");
        assert!(!src.contains_key("bad"));
        assert_eq!(src["plain"], 3);
    }
}

/// The merged view of an environment (`/{application}-{profiles}.yml` and the like): every
/// key once, the first source's value winning, `${key}` / `${key:default}` resolved from the
/// merged keys when `resolve`.
pub fn merged(env: &Environment, resolve: bool) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for source in env.property_sources.iter().rev() {
        for (k, v) in &source.source {
            out.insert(k.clone(), v.clone());
        }
    }
    if resolve {
        let lookup = out.clone();
        for value in out.values_mut() {
            if let Value::String(s) = value {
                *s = placeholders(s, &lookup, 0);
            }
        }
    }
    out
}

/// A value as text: strings as they are, numbers and booleans as JSON writes them.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` (a plain file) with its `${...}` placeholders resolved from `lookup` (a merged
/// view).
pub fn resolve_text(text: &str, lookup: &std::collections::BTreeMap<String, Value>) -> String {
    placeholders(text, lookup, 0)
}

/// Spring's placeholder syntax, nested defaults included; an unknown key with no default
/// stays as written, and a cycle stops after a few rounds.
fn placeholders(
    text: &str,
    lookup: &std::collections::BTreeMap<String, Value>,
    depth: u8,
) -> String {
    if depth > 8 || !text.contains("${") {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let body = &rest[start + 2..];
        // The matching `}`, counting nested `${`.
        let (mut level, mut end) = (1usize, None);
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
                level += 1;
                i += 1;
            } else if bytes[i] == b'}' {
                level -= 1;
                if level == 0 {
                    end = Some(i);
                    break;
                }
            }
            i += 1;
        }
        let Some(end) = end else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &body[..end];
        let (key, default) = match inner.find(':') {
            Some(c) => (&inner[..c], Some(&inner[c + 1..])),
            None => (inner, None),
        };
        let key = placeholders(key, lookup, depth + 1);
        match (lookup.get(&key), default) {
            (Some(v), _) => out.push_str(&placeholders(&as_text(v), lookup, depth + 1)),
            (None, Some(d)) => out.push_str(&placeholders(d, lookup, depth + 1)),
            (None, None) => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Flat keys back into a tree, for the YAML and JSON views (one rule for config-service
/// and its clients).
pub use platform::config_client::unflatten as tree;

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn placeholders_and_trees() {
        let mut flat = std::collections::BTreeMap::new();
        flat.insert("host".to_owned(), Value::from("db"));
        flat.insert(
            "url".to_owned(),
            Value::from("pg://${host}:${port:5432}/${missing}"),
        );
        flat.insert("loop".to_owned(), Value::from("${loop}"));
        flat.insert("l[1].n".to_owned(), Value::from(2));
        flat.insert("l[0]".to_owned(), Value::from("a"));
        let lookup = flat.clone();
        assert_eq!(
            placeholders("pg://${host}:${port:5432}/${missing}", &lookup, 0),
            "pg://db:5432/${missing}"
        );
        assert_eq!(placeholders("${loop}", &lookup, 0), "${loop}");
        assert_eq!(placeholders("${nope:${host}}", &lookup, 0), "db");
        let t = tree(&flat);
        assert_eq!(t["l"][0], "a");
        assert_eq!(t["l"][1]["n"], 2);
        assert_eq!(t["host"], "db");
    }
}
