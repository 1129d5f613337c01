//! Eureka's XML form is its JSON form written as XML: `"@name"` keys are attributes, `"$"`
//! is an element's text beside attributes, arrays are repeated elements. So one model,
//! two syntaxes: `write` turns the JSON tree into XML and `read` turns XML into the tree
//! the JSON reader takes.

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Deeper documents are refused (no Eureka document is more than five levels deep).
const MAX_DEPTH: usize = 32;

/// Writes `value` as the element `name`, with an XML declaration.
pub fn write(name: &str, value: &Value) -> String {
    format!("{DECLARATION}{}", fragment(name, value))
}

/// What every document written here starts with.
pub const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>";

/// Writes `value` as the element `name`, to be put inside a document.
pub fn fragment(name: &str, value: &Value) -> String {
    let mut out = String::with_capacity(1024);
    element(&mut out, name, value);
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                element(out, name, item);
            }
        }
        Value::Object(fields) => {
            out.push('<');
            out.push_str(name);
            for (k, v) in fields {
                if let Some(attr) = k.strip_prefix('@') {
                    out.push(' ');
                    out.push_str(attr);
                    out.push_str("=\"");
                    escape_into(out, &scalar(v));
                    out.push('"');
                }
            }
            let children: Vec<(&String, &Value)> =
                fields.iter().filter(|(k, _)| !k.starts_with('@')).collect();
            if children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            for (k, v) in children {
                if k == "$" {
                    escape_into(out, &scalar(v));
                } else {
                    element(out, k, v);
                }
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        scalar_value => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            escape_into(out, &scalar(scalar_value));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn escape_into(out: &mut String, text: &str) {
    text.chars()
        .for_each(|c| platform::text::push_escaped(out, c));
}

/// An element being read: attributes and children so far, and its text.
struct Open {
    name: String,
    fields: Map<String, Value>,
    text: String,
}

/// Reads an XML document into the JSON tree: `{"<root>": ...}`.
pub fn read(bytes: &[u8]) -> Result<Value, String> {
    let mut reader = Reader::from_reader(bytes);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML: {e}"))?;
        let is_empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                if root.is_some() {
                    return Err("malformed XML: content after the root element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err("XML nested too deeply".into());
                }
                let name = start.name().as_ref().to_owned();
                let mut fields = Map::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| format!("malformed XML attribute: {e}"))?;
                    let key = attr.key.as_ref().to_owned();
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| format!("malformed XML attribute: {e}"))?;
                    fields.insert(format!("@{key}"), Value::String(value.into_owned()));
                }
                let open = Open {
                    name,
                    fields,
                    text: String::new(),
                };
                if is_empty {
                    close(open, &mut stack, &mut root);
                } else {
                    stack.push(open);
                }
            }
            Event::End(_) => {
                let open = stack.pop().ok_or("malformed XML: unbalanced end tag")?;
                close(open, &mut stack, &mut root);
            }
            Event::Text(text) => {
                let text = text.xml10_content();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .map_err(|e| format!("malformed XML: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => match &*reference {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        other => {
                            return Err(format!(
                                "malformed XML: unknown entity &{};",
                                other.chars().take(32).collect::<String>()
                            ));
                        }
                    },
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::CData(data) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&data.xml10_content());
                }
            }
            Event::DocType(_) => return Err("XML document types are not accepted".into()),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err("malformed XML: unclosed element".into());
    }
    let (name, value) = root.ok_or("no XML element")?;
    let mut doc = Map::new();
    doc.insert(name, value);
    Ok(Value::Object(doc))
}

fn close(open: Open, stack: &mut [Open], root: &mut Option<(String, Value)>) {
    let Open {
        name,
        mut fields,
        text,
    } = open;
    // Whitespace between child elements, or around a value, is not content.
    let text = text.trim().to_owned();
    let value = if fields.is_empty() {
        Value::String(text)
    } else {
        if !text.is_empty() {
            fields.insert("$".into(), Value::String(text));
        }
        Value::Object(fields)
    };
    match stack.last_mut() {
        None => *root = Some((name, value)),
        Some(parent) => match parent.fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                parent.fields.insert(name, value);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::discovery::{Applications, Instance};
    use serde_json::json;

    #[test]
    fn writes_eureka_xml() {
        let mut i = Instance::new("svc", "h:svc:8080", "h", "10.0.0.5", 8080);
        i.metadata.insert("zone".into(), "a&b".into());
        let xml = write("instance", &i.to_json());
        assert!(xml.contains("<port enabled=\"true\">8080</port>"), "{xml}");
        assert!(xml.contains(
            "<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"><name>MyOwn</name></dataCenterInfo>"
        ));
        assert!(xml.contains("<metadata><zone>a&amp;b</zone></metadata>"));
        i.metadata.clear();
        let xml = write("instance", &i.to_json());
        assert!(xml.contains("<metadata class=\"java.util.Collections$EmptyMap\"/>"));
    }

    #[test]
    fn reads_back_what_it_writes() {
        let mut i = Instance::new("svc", "h:svc:8080", "h", "10.0.0.5", 8080);
        i.metadata.insert("version".into(), "1.2 <beta>".into());
        let back = Instance::from_json(&read(write("instance", &i.to_json()).as_bytes()).unwrap())
            .unwrap();
        assert_eq!(back, i);
        let apps = Applications {
            versions_delta: "3".into(),
            hashcode: "UP_2_".into(),
            applications: vec![platform::discovery::Application {
                name: "SVC".into(),
                instances: vec![i.clone(), {
                    let mut j = i.clone();
                    j.instance_id = "other".into();
                    j
                }],
            }],
        };
        let tree = read(write("applications", &apps.to_json()["applications"]).as_bytes()).unwrap();
        assert_eq!(Applications::from_json(&tree).unwrap(), apps);
    }

    #[test]
    fn reads_what_java_clients_send() {
        let xml = r#"<instance><instanceId>h:app:1</instanceId><hostName>h</hostName>
            <app>APP</app><ipAddr>1.2.3.4</ipAddr><status>UP</status>
            <overriddenstatus>UNKNOWN</overriddenstatus>
            <port enabled="true">8080</port><securePort enabled="false">443</securePort>
            <countryId>1</countryId>
            <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
            <leaseInfo><renewalIntervalInSecs>5</renewalIntervalInSecs><durationInSecs>15</durationInSecs></leaseInfo>
            <metadata><management.port>8080</management.port></metadata>
            <vipAddress>app</vipAddress><isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>
            <lastDirtyTimestamp>1700000000000</lastDirtyTimestamp></instance>"#;
        let i = Instance::from_json(&read(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(i.port, 8080);
        assert_eq!(i.lease.renewal_interval_secs, 5);
        assert_eq!(i.metadata["management.port"], "8080");
        assert_eq!(i.last_dirty_ts, 1_700_000_000_000);
    }

    #[test]
    fn refuses_hostile_xml() {
        for bad in [
            "<a><b></a>",
            "<a>",
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><a>&e;</a>",
            "<a>&e;</a>",
            "",
            "<a/><b/>",
        ] {
            assert!(read(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(read(deep.as_bytes()).is_err());
        assert_eq!(
            read(b"<a>x &amp; &#65;</a>").unwrap(),
            json!({"a": "x & A"})
        );
    }
}
