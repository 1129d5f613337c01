//! A predicate's or filter's arguments, read the same way from both of Spring's forms.
//!
//! Shortcut `Name=a, b`: values split on commas, trimmed, empty ones dropped (Spring's
//! `tokenizeToStringArray`), then mapped to argument names by the factory's shortcut order.
//! Full `{name, args}`: argument names bind relaxed, as Spring Boot's binder does
//! (`maxSize`, `max-size` and `max_size` are one argument).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::settings::Definition;

/// How a factory reads its shortcut values.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shortcut {
    /// No arguments (`PreserveHostHeader`).
    None,
    /// Values in this order; fewer is fine (the factory checks what it needs).
    Fields(&'static [&'static str]),
    /// Every value into one list.
    List(&'static str),
    /// Every value into one list, but a trailing `true`/`false` sets the flag (Spring's
    /// GATHER_LIST_TAIL_FLAG: `Path=/a,/b,false`).
    ListTailFlag(&'static str, &'static str),
}

/// What a factory accepts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    pub name: &'static str,
    pub shortcut: Shortcut,
    /// Every argument the full form accepts, as Spring spells it.
    pub args: &'static [&'static str],
    /// A prefix full-form argument names may carry (`redis-rate-limiter.`).
    pub key_prefix: Option<&'static str>,
}

/// The name of a definition and its arguments, not yet read.
pub(super) enum Raw<'d> {
    Shortcut(Vec<&'d str>),
    Full(&'d BTreeMap<String, Value>),
}

pub(super) fn split(def: &Definition) -> (&str, Raw<'_>) {
    match def {
        Definition::Shortcut(text) => match text.split_once('=') {
            Some((name, rest)) => (
                name.trim(),
                Raw::Shortcut(
                    rest.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect(),
                ),
            ),
            None => (text.trim(), Raw::Shortcut(Vec::new())),
        },
        Definition::Full(full) => (full.name.trim(), Raw::Full(&full.args)),
    }
}

/// How a definition is named in an error: the shortcut as written, or the full form's name.
pub(super) fn label(def: &Definition) -> String {
    match def {
        Definition::Shortcut(text) => text.trim().to_owned(),
        Definition::Full(full) => full.name.trim().to_owned(),
    }
}

/// `maxSize`, `max-size`, `max_size`, `MAXSIZE` → `maxsize`.
fn relaxed(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Arguments bound to the names in a [`Spec`]; read each with one of the getters.
#[derive(Debug)]
pub(super) struct Args {
    /// `route `x`: filter `StripPrefix=a``, the start of every error.
    ctx: String,
    values: Vec<(&'static str, Value)>,
}

impl Args {
    pub fn bind(ctx: String, spec: &Spec, raw: Raw<'_>) -> Result<Args, String> {
        let mut values: Vec<(&'static str, Value)> = Vec::new();
        match raw {
            Raw::Shortcut(parts) => match spec.shortcut {
                Shortcut::None => {
                    if !parts.is_empty() {
                        return Err(format!("{ctx}: takes no arguments"));
                    }
                }
                Shortcut::Fields(names) => {
                    if parts.len() > names.len() {
                        return Err(format!(
                            "{ctx}: takes at most {} value(s) in the shortcut form ({}), got {}; \
                             a value holding a comma needs the full form {{name, args}}",
                            names.len(),
                            names.join(", "),
                            parts.len()
                        ));
                    }
                    for (name, part) in names.iter().zip(parts) {
                        values.push((name, Value::String(part.to_owned())));
                    }
                }
                Shortcut::List(name) => {
                    if !parts.is_empty() {
                        values.push((name, list_value(&parts)));
                    }
                }
                Shortcut::ListTailFlag(name, flag) => {
                    let mut parts = parts;
                    if let Some(last) = parts.last()
                        && (last.eq_ignore_ascii_case("true") || last.eq_ignore_ascii_case("false"))
                    {
                        values.push((flag, Value::String(last.to_ascii_lowercase())));
                        parts.pop();
                    }
                    if !parts.is_empty() {
                        values.push((name, list_value(&parts)));
                    }
                }
            },
            Raw::Full(map) => {
                let prefix = spec.key_prefix.map(relaxed);
                for (key, value) in map {
                    let mut k = relaxed(key);
                    if let Some(p) = &prefix
                        && let Some(rest) = k.strip_prefix(p.as_str())
                    {
                        k = rest.to_owned();
                    }
                    let Some(name) = spec.args.iter().find(|a| relaxed(a) == k) else {
                        return Err(if spec.args.is_empty() {
                            format!("{ctx}: takes no arguments, got `{key}`")
                        } else {
                            format!(
                                "{ctx}: unknown argument `{key}`; accepted: {}",
                                spec.args.join(", ")
                            )
                        });
                    };
                    if values.iter().any(|(n, _)| n == name) {
                        return Err(format!("{ctx}: argument `{name}` is given twice"));
                    }
                    values.push((name, value.clone()));
                }
            }
        }
        Ok(Args { ctx, values })
    }

    pub fn ctx(&self) -> &str {
        &self.ctx
    }

    /// `ctx: message`.
    pub fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.ctx)
    }

    pub fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| *n == name)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn missing(&self, name: &str) -> String {
        self.err(format_args!("missing argument `{name}`"))
    }

    fn ill_typed(&self, name: &str, want: &str, got: &Value) -> String {
        let got = match got {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        self.err(format_args!(
            "argument `{name}`: expected {want}, got {got}"
        ))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => scalar_text(v)
                .map(Some)
                .ok_or_else(|| self.ill_typed(name, "a string", v)),
        }
    }

    pub fn str(&self, name: &str) -> Result<String, String> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    /// A list, or one string of comma-separated values (as Spring converts one).
    pub fn opt_list(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let items = match v {
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    scalar_text(i)
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| self.ill_typed(name, "a list of strings", v))
                })
                .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
                .collect::<Result<Vec<_>, _>>()?,
            other => scalar_text(other)
                .ok_or_else(|| self.ill_typed(name, "a list of strings", other))?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        Ok(Some(items))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(self.ill_typed(name, "true or false", v)),
        }
    }

    /// A whole number, written as a number or as digits.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
                self.err(format_args!(
                    "argument `{name}`: `{n}` is not a whole number"
                ))
            }),
            Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                self.err(format_args!(
                    "argument `{name}`: `{}` is not a whole number",
                    s.trim()
                ))
            }),
            Some(v) => Err(self.ill_typed(name, "a whole number", v)),
        }
    }

    /// A whole number in `min..=u32::MAX`.
    pub fn opt_u32(&self, name: &str, min: u32) -> Result<Option<u32>, String> {
        let Some(n) = self.opt_int(name)? else {
            return Ok(None);
        };
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= min)
            .map(Some)
            .ok_or_else(|| {
                self.err(format_args!(
                    "argument `{name}`: must be between {min} and {}, got {n}",
                    u32::MAX
                ))
            })
    }
}

fn list_value(parts: &[&str]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|p| Value::String((*p).to_owned()))
            .collect(),
    )
}

/// A string, or a number or boolean read as text (`value: 5` for a header).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
