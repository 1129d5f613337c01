//! Route filters: the path filters (StripPrefix, PrefixPath, RewritePath, SetPath), the header
//! filters (Add/Set/Remove Request/Response Header), and the ones that only set something on
//! the route (PreserveHostHeader, RequestSize, RequestRateLimiter, Retry).

use http::{HeaderMap, HeaderName, HeaderValue};
use regex::{Captures, Regex, Replacer};

use super::RetryOverride;
use super::args::{self, Args, Shortcut, Spec};
use super::pattern::{Captured, encode_path_literal, is_var_name, regex_error};
use super::predicates::{decode_bytes, methods};
use crate::settings::{Definition, KeyResolver, LimitSpec};

/// Supported filter names, for error messages.
pub(super) const NAMES: &[&str] = &[
    "AddRequestHeader",
    "AddResponseHeader",
    "PrefixPath",
    "PreserveHostHeader",
    "RemoveRequestHeader",
    "RemoveResponseHeader",
    "RequestRateLimiter",
    "RequestSize",
    "Retry",
    "RewritePath",
    "SetPath",
    "SetRequestHeader",
    "SetResponseHeader",
    "StripPrefix",
];

const NAME_VALUE: Shortcut = Shortcut::Fields(&["name", "value"]);
const RATE_ARGS: &[&str] = &[
    "replenishRate",
    "burstCapacity",
    "requestedTokens",
    "key-resolver",
];
/// Spring Retry arguments this gateway does not take (it retries only failed connections).
const RETRY_UNSUPPORTED: &[&str] = &["statuses", "series", "exceptions", "backoff"];

const fn spec(name: &'static str, shortcut: Shortcut, args: &'static [&'static str]) -> Spec {
    Spec {
        name,
        shortcut,
        args,
        key_prefix: None,
    }
}

const SPECS: &[Spec] = &[
    spec("StripPrefix", Shortcut::Fields(&["parts"]), &["parts"]),
    spec("PrefixPath", Shortcut::Fields(&["prefix"]), &["prefix"]),
    spec(
        "RewritePath",
        Shortcut::Fields(&["regexp", "replacement"]),
        &["regexp", "replacement"],
    ),
    spec("SetPath", Shortcut::Fields(&["template"]), &["template"]),
    spec("AddRequestHeader", NAME_VALUE, &["name", "value"]),
    spec("SetRequestHeader", NAME_VALUE, &["name", "value"]),
    spec(
        "RemoveRequestHeader",
        Shortcut::Fields(&["name"]),
        &["name"],
    ),
    spec("AddResponseHeader", NAME_VALUE, &["name", "value"]),
    spec("SetResponseHeader", NAME_VALUE, &["name", "value"]),
    spec(
        "RemoveResponseHeader",
        Shortcut::Fields(&["name"]),
        &["name"],
    ),
    spec("PreserveHostHeader", Shortcut::None, &[]),
    spec("RequestSize", Shortcut::Fields(&["maxSize"]), &["maxSize"]),
    Spec {
        name: "RequestRateLimiter",
        shortcut: Shortcut::Fields(RATE_ARGS),
        args: RATE_ARGS,
        key_prefix: Some("redis-rate-limiter."),
    },
    spec(
        "Retry",
        // Spring's shortcut order; only `retries` is taken.
        Shortcut::Fields(&["retries", "statuses", "methods"]),
        &[
            "retries",
            "methods",
            "statuses",
            "series",
            "exceptions",
            "backoff",
        ],
    ),
];

/// Headers no filter may touch: the proxy owns message framing and hop-by-hop headers.
const OWNED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Clone)]
pub(super) struct Filter {
    pub kind: FilterKind,
    /// Shortcut form, for `describe`.
    pub text: String,
    /// Variables the filter reads (SetPath, header values).
    pub uses: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) enum FilterKind {
    Path(PathOp),
    RequestHeader(HeaderOp),
    ResponseHeader(HeaderOp),
    PreserveHost,
    RequestSize(u64),
    RateLimit(LimitSpec),
    Retry(RetryOverride),
}

impl Filter {
    /// `ctx` is the start of every error (`route `users`: filter `StripPrefix=x``).
    pub fn compile(
        def: &Definition,
        ctx: String,
        default_limit: &LimitSpec,
    ) -> Result<Filter, String> {
        let (name, raw) = args::split(def);
        let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
            return Err(unknown(&ctx, name));
        };
        let a = Args::bind(ctx, spec, raw)?;
        let mut uses = Vec::new();
        let (kind, text) = match name {
            "StripPrefix" => {
                // Spring's default is 1.
                let parts = a.opt_int("parts")?.unwrap_or(1);
                let parts = usize::try_from(parts).map_err(|_| {
                    a.err(format_args!(
                        "argument `parts`: must be 0 or more, got {parts}"
                    ))
                })?;
                (
                    FilterKind::Path(PathOp::Strip(parts)),
                    format!("StripPrefix={parts}"),
                )
            }
            "PrefixPath" => {
                let prefix = a.str("prefix")?;
                if !prefix.starts_with('/') {
                    return Err(a.err("the prefix must start with `/`"));
                }
                if prefix.len() > 1 && prefix.ends_with('/') {
                    return Err(a.err(
                        "the prefix must not end with `/` (it is joined to the path, which starts with one)",
                    ));
                }
                let encoded = encode_path_literal(&prefix).map_err(|c| a.err(no_query(c)))?;
                let encoded = if encoded == "/" {
                    String::new()
                } else {
                    encoded
                };
                (
                    FilterKind::Path(PathOp::Prefix(encoded)),
                    format!("PrefixPath={prefix}"),
                )
            }
            "RewritePath" => {
                let regexp = a.str("regexp")?;
                let replacement = a.str("replacement")?;
                let re = Regex::new(&regexp).map_err(|e| {
                    a.err(format_args!("bad regex `{regexp}`: {}", regex_error(&e)))
                })?;
                let repl = Replacement::parse(&replacement, &re)
                    .map_err(|e| a.err(format_args!("replacement `{replacement}`: {e}")))?;
                (
                    FilterKind::Path(PathOp::Rewrite { re, repl }),
                    format!("RewritePath={regexp}, {replacement}"),
                )
            }
            "SetPath" => {
                let template = a.str("template")?;
                let parts = parse_template(&template).map_err(|e| a.err(e))?;
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    out.push(match p {
                        TPart::Lit(l) => {
                            TPart::Lit(encode_path_literal(&l).map_err(|c| a.err(no_query(c)))?)
                        }
                        TPart::Var(v) => {
                            uses.push(v.clone());
                            TPart::Var(v)
                        }
                    });
                }
                (
                    FilterKind::Path(PathOp::Set(out)),
                    format!("SetPath={template}"),
                )
            }
            "AddRequestHeader"
            | "SetRequestHeader"
            | "AddResponseHeader"
            | "SetResponseHeader"
            | "RemoveRequestHeader"
            | "RemoveResponseHeader" => {
                let header = a.str("name")?;
                let hname = HeaderName::from_bytes(header.trim().as_bytes())
                    .map_err(|_| a.err(format_args!("`{header}` is not a header name")))?;
                if OWNED_HEADERS.contains(&hname.as_str()) {
                    return Err(a.err(format_args!(
                        "`{hname}` is managed by the proxy itself and cannot be changed by a filter"
                    )));
                }
                let (action, text) = if name.starts_with("Remove") {
                    (HeaderAction::Remove, format!("{name}={}", header.trim()))
                } else {
                    let value = a.str("value")?;
                    let tpl = ValueTemplate::parse(&value)
                        .map_err(|e| a.err(format_args!("value `{value}`: {e}")))?;
                    uses.extend(tpl.vars().map(str::to_owned));
                    let action = if name.starts_with("Add") {
                        HeaderAction::Add(tpl)
                    } else {
                        HeaderAction::Set(tpl)
                    };
                    (action, format!("{name}={}, {value}", header.trim()))
                };
                let op = HeaderOp {
                    name: hname,
                    action,
                };
                let kind = if name.ends_with("RequestHeader") {
                    FilterKind::RequestHeader(op)
                } else {
                    FilterKind::ResponseHeader(op)
                };
                (kind, text)
            }
            "PreserveHostHeader" => (FilterKind::PreserveHost, "PreserveHostHeader".to_owned()),
            "RequestSize" => {
                // Spring's default is 5000000 bytes.
                let size = match a.opt_str("maxSize")? {
                    None => 5_000_000,
                    Some(s) => parse_data_size(&s)
                        .map_err(|e| a.err(format_args!("argument `maxSize`: {e}")))?,
                };
                (FilterKind::RequestSize(size), format!("RequestSize={size}"))
            }
            "RequestRateLimiter" => {
                let spec = rate_limit(&a, default_limit)?;
                let key = match spec.key {
                    KeyResolver::User => "user",
                    KeyResolver::Address => "address",
                    KeyResolver::Route => "route",
                };
                let text = format!(
                    "RequestRateLimiter={}, {}, {}, {key}",
                    spec.replenish_rate, spec.burst_capacity, spec.requested_tokens
                );
                (FilterKind::RateLimit(spec), text)
            }
            "Retry" => {
                if let Some(arg) = RETRY_UNSUPPORTED.iter().find(|n| a.has(n)) {
                    return Err(a.err(format_args!(
                        "argument `{arg}` is not supported: this gateway retries only when a \
                         connection to an instance fails, on another instance; remove it"
                    )));
                }
                // Spring's default is 3.
                let retries = a.opt_int("retries")?.unwrap_or(3);
                let retries = u32::try_from(retries).map_err(|_| {
                    a.err(format_args!(
                        "argument `retries`: must be 0 or more, got {retries}"
                    ))
                })?;
                let methods = match a.opt_list("methods")? {
                    None => None,
                    Some(list) => Some(methods(&list).map_err(|e| a.err(e))?),
                };
                let text = match &methods {
                    None => format!("Retry={retries}"),
                    Some(m) => format!(
                        "Retry={retries}, methods={}",
                        m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
                    ),
                };
                (FilterKind::Retry(RetryOverride { retries, methods }), text)
            }
            _ => return Err(unknown(a.ctx(), name)),
        };
        Ok(Filter { kind, text, uses })
    }
}

fn unknown(ctx: &str, name: &str) -> String {
    let hint = NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    format!(
        "{ctx}: unsupported filter `{name}`{hint}; supported: {}",
        NAMES.join(", ")
    )
}

fn no_query(c: char) -> String {
    format!("`{c}` cannot be part of a path (a path filter cannot add a query or a fragment)")
}

fn rate_limit(a: &Args, default: &LimitSpec) -> Result<LimitSpec, String> {
    let mut spec = default.clone();
    for (name, slot) in [
        ("replenishRate", &mut spec.replenish_rate),
        ("burstCapacity", &mut spec.burst_capacity),
        ("requestedTokens", &mut spec.requested_tokens),
    ] {
        match a.opt_u32(name, 1)? {
            Some(v) => *slot = v,
            None if *slot == 0 => {
                return Err(a.err(format_args!(
                    "argument `{name}` is not given, and the default rate limit's is 0"
                )));
            }
            None => {}
        }
    }
    if let Some(key) = a.opt_str("key-resolver")? {
        spec.key = match key.trim() {
            k if k.eq_ignore_ascii_case("user") => KeyResolver::User,
            k if k.eq_ignore_ascii_case("address") => KeyResolver::Address,
            k if k.eq_ignore_ascii_case("route") => KeyResolver::Route,
            "#{@userKeyResolver}" => KeyResolver::User,
            "#{@remoteAddrKeyResolver}" | "#{@ipKeyResolver}" => KeyResolver::Address,
            other => {
                return Err(a.err(format_args!(
                    "unknown key resolver `{other}`; use user, address, route, \
                     #{{@userKeyResolver}}, #{{@remoteAddrKeyResolver}} or #{{@ipKeyResolver}}"
                )));
            }
        };
    }
    if spec.requested_tokens > spec.burst_capacity {
        return Err(a.err(format_args!(
            "`requestedTokens` ({}) must not exceed `burstCapacity` ({}): no request could ever pass",
            spec.requested_tokens, spec.burst_capacity
        )));
    }
    Ok(spec)
}

/// Spring's DataSize: `5000000`, `100B`, `512KB`, `5MB`, `1GB`, `1TB` (1KB = 1024 bytes).
pub(super) fn parse_data_size(text: &str) -> Result<u64, String> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '+')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad = || format!("`{text}` is not a size like 5000000, 512KB, 5MB or 1GB");
    if t.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    let n: u64 = num.trim_start_matches('+').parse().map_err(|_| bad())?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return Err(bad()),
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if size == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(size)
}

/// A part of a SetPath template or a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TPart {
    Lit(String),
    Var(String),
}

/// `{name}` is a variable; a lone `}` is text.
fn parse_template(s: &str) -> Result<Vec<TPart>, String> {
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TPart::Lit(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "a `{` without its `}`".to_owned())?;
        let name = &after[..close];
        if !is_var_name(name) {
            return Err(format!(
                "`{{{name}}}` is not a variable; write one as `{{name}}`, a name the route's Path or Host predicate captures"
            ));
        }
        parts.push(TPart::Var(name.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TPart::Lit(rest.to_owned()));
    }
    Ok(parts)
}

fn lookup<'a>(vars: &'a [Captured<'_>], name: &str) -> &'a str {
    vars.iter()
        .rev()
        .find(|v| v.name == name)
        .map_or("", |v| v.raw.as_str())
}

#[derive(Debug, Clone)]
pub(super) enum PathOp {
    Strip(usize),
    /// Empty for `PrefixPath=/`.
    Prefix(String),
    Rewrite {
        re: Regex,
        repl: Replacement,
    },
    /// Literals percent-encoded; variables go in as the client sent them.
    Set(Vec<TPart>),
}

impl PathOp {
    /// The path after this filter; what StripPrefix drops is added to `stripped`.
    pub fn apply(&self, path: &str, vars: &[Captured<'_>], stripped: &mut String) -> String {
        match self {
            PathOp::Strip(0) => path.to_owned(),
            // Spring: drop `n` non-empty segments, keep a trailing `/`.
            PathOp::Strip(n) => {
                let mut out = String::with_capacity(path.len());
                for (i, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
                    let to = if i < *n { &mut *stripped } else { &mut out };
                    to.push('/');
                    to.push_str(seg);
                }
                if out.is_empty() || path.ends_with('/') {
                    out.push('/');
                }
                out
            }
            PathOp::Prefix(p) => format!("{p}{path}"),
            PathOp::Rewrite { re, repl } => re.replace_all(path, repl).into_owned(),
            PathOp::Set(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        TPart::Lit(l) => out.push_str(l),
                        TPart::Var(v) => out.push_str(lookup(vars, v)),
                    }
                }
                out
            }
        }
    }
}

/// A RewritePath replacement in Java's syntax: `$1`, `${name}`, `\` escapes the next
/// character. Spring's YAML spelling `$\{name}` is read as `${name}`.
#[derive(Debug, Clone)]
pub(super) struct Replacement(Vec<RPart>);

#[derive(Debug, Clone)]
enum RPart {
    Lit(String),
    Group(usize),
    Named(String),
}

impl Replacement {
    fn parse(text: &str, re: &Regex) -> Result<Replacement, String> {
        let text = text.replace("$\\", "$");
        let groups = re.captures_len() - 1;
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => lit.push(chars.next().ok_or("ends with a lone `\\`")?),
                '$' => {
                    if !lit.is_empty() {
                        parts.push(RPart::Lit(std::mem::take(&mut lit)));
                    }
                    match chars.peek().copied() {
                        Some('{') => {
                            chars.next();
                            let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                            if !re.capture_names().any(|n| n == Some(name.as_str())) {
                                return Err(format!("the regex has no group named `{name}`"));
                            }
                            parts.push(RPart::Named(name));
                        }
                        Some(d) if d.is_ascii_digit() => {
                            chars.next();
                            // Java: further digits count while they name an existing group.
                            let mut n = d as usize - '0' as usize;
                            if n > groups {
                                return Err(format!("the regex has no group {n}"));
                            }
                            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                                let m = n * 10 + d as usize;
                                if m > groups {
                                    break;
                                }
                                n = m;
                                chars.next();
                            }
                            parts.push(RPart::Group(n));
                        }
                        _ => {
                            return Err(
                                "`$` must start `$1` or `${name}`; write `\\$` for a dollar sign"
                                    .into(),
                            );
                        }
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(RPart::Lit(lit));
        }
        for p in &mut parts {
            if let RPart::Lit(l) = p {
                *l = encode_path_literal(l).map_err(no_query)?;
            }
        }
        Ok(Replacement(parts))
    }
}

impl Replacer for &Replacement {
    fn replace_append(&mut self, caps: &Captures<'_>, dst: &mut String) {
        for p in &self.0 {
            match p {
                RPart::Lit(l) => dst.push_str(l),
                RPart::Group(i) => dst.push_str(caps.get(*i).map_or("", |m| m.as_str())),
                RPart::Named(n) => dst.push_str(caps.name(n).map_or("", |m| m.as_str())),
            }
        }
    }
}

/// A header value, fixed or with `{name}` variables.
#[derive(Debug, Clone)]
pub(super) enum ValueTemplate {
    Fixed(HeaderValue),
    Vars(Vec<TPart>),
}

impl ValueTemplate {
    fn parse(text: &str) -> Result<ValueTemplate, String> {
        let parts = parse_template(text)?;
        for p in &parts {
            if let TPart::Lit(l) = p {
                HeaderValue::from_bytes(l.as_bytes())
                    .map_err(|_| "holds characters a header value cannot hold".to_owned())?;
            }
        }
        if parts.iter().all(|p| matches!(p, TPart::Lit(_))) {
            let v = HeaderValue::from_bytes(text.as_bytes())
                .map_err(|_| "holds characters a header value cannot hold".to_owned())?;
            return Ok(ValueTemplate::Fixed(v));
        }
        Ok(ValueTemplate::Vars(parts))
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        let parts = match self {
            ValueTemplate::Fixed(_) => &[][..],
            ValueTemplate::Vars(p) => p.as_slice(),
        };
        parts.iter().filter_map(|p| match p {
            TPart::Var(v) => Some(v.as_str()),
            TPart::Lit(_) => None,
        })
    }

    /// Variables go in percent-decoded; if a decoded one cannot be in a header (a control
    /// character), every variable goes in as the client sent it.
    fn render(&self, vars: &[Captured<'_>]) -> Option<HeaderValue> {
        let parts = match self {
            ValueTemplate::Fixed(v) => return Some(v.clone()),
            ValueTemplate::Vars(p) => p,
        };
        let build = |decode: bool| {
            let mut out = Vec::new();
            for p in parts {
                match p {
                    TPart::Lit(l) => out.extend_from_slice(l.as_bytes()),
                    TPart::Var(v) if decode => {
                        out.extend(decode_bytes(lookup(vars, v).as_bytes(), false));
                    }
                    TPart::Var(v) => out.extend_from_slice(lookup(vars, v).as_bytes()),
                }
            }
            HeaderValue::from_bytes(&out).ok()
        };
        build(true).or_else(|| build(false))
    }
}

#[derive(Debug, Clone)]
enum HeaderAction {
    Add(ValueTemplate),
    Set(ValueTemplate),
    Remove,
}

#[derive(Debug, Clone)]
pub(super) struct HeaderOp {
    name: HeaderName,
    action: HeaderAction,
}

impl HeaderOp {
    pub fn apply(&self, headers: &mut HeaderMap, vars: &[Captured<'_>]) {
        match &self.action {
            HeaderAction::Add(t) => {
                if let Some(v) = t.render(vars) {
                    headers.append(self.name.clone(), v);
                }
            }
            HeaderAction::Set(t) => {
                if let Some(v) = t.render(vars) {
                    headers.insert(self.name.clone(), v);
                }
            }
            HeaderAction::Remove => {
                headers.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sizes_are_binary_as_in_spring() {
        assert_eq!(parse_data_size("5000000"), Ok(5_000_000));
        assert_eq!(parse_data_size("100B"), Ok(100));
        assert_eq!(parse_data_size("512KB"), Ok(512 * 1024));
        assert_eq!(parse_data_size("5MB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_data_size("5mb"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_data_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_data_size(" 2 TB "), Ok(2 << 40));
        assert!(parse_data_size("5 megabytes").is_err());
        assert!(parse_data_size("-5MB").unwrap_err().contains("negative"));
        assert!(
            parse_data_size("0")
                .unwrap_err()
                .contains("at least 1 byte")
        );
        assert!(
            parse_data_size("99999999999TB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_data_size("").is_err());
    }

    fn rewrite(re: &str, repl: &str, path: &str) -> Result<String, String> {
        let re = Regex::new(re).map_err(|e| e.to_string())?;
        let repl = Replacement::parse(repl, &re)?;
        Ok(PathOp::Rewrite { re, repl }.apply(path, &[], &mut String::new()))
    }

    #[test]
    fn java_replacement_syntax() {
        assert_eq!(
            rewrite("/red/?(?<segment>.*)", "/$\\{segment}", "/red/blue").as_deref(),
            Ok("/blue")
        );
        assert_eq!(
            rewrite("/red/?(?<segment>.*)", "/${segment}", "/red/blue").as_deref(),
            Ok("/blue")
        );
        assert_eq!(
            rewrite("/a/(\\w+)/(\\w+)", "/$2/$1", "/a/x/y").as_deref(),
            Ok("/y/x")
        );
        // `$12` with one group: group 1, then a literal 2 (Java's rule).
        assert_eq!(rewrite("/a/(\\w+)", "/$12", "/a/x").as_deref(), Ok("/x2"));
        assert_eq!(rewrite("/a", "/\\$b", "/a").as_deref(), Ok("/$b"));
        assert_eq!(rewrite("/a", "/文", "/a").as_deref(), Ok("/%E6%96%87"));
        assert!(rewrite("/a", "/$b", "/a").unwrap_err().contains("`\\$`"));
        assert!(
            rewrite("/(a)", "/$2", "/a")
                .unwrap_err()
                .contains("no group 2")
        );
        assert!(
            rewrite("/(a)", "/${x}", "/a")
                .unwrap_err()
                .contains("no group named `x`")
        );
        assert!(rewrite("/a", "/b?c=1", "/a").unwrap_err().contains("`?`"));
        assert!(rewrite("/a", "/b\\", "/a").unwrap_err().contains("lone"));
    }

    #[test]
    fn strip_prefix_like_spring() {
        let strip = |n, p: &str| {
            let mut s = String::new();
            let out = PathOp::Strip(n).apply(p, &[], &mut s);
            (out, s)
        };
        assert_eq!(
            strip(2, "/name/blue/red"),
            ("/red".into(), "/name/blue".into())
        );
        assert_eq!(strip(1, "/a/b/"), ("/b/".into(), "/a".into()));
        assert_eq!(strip(1, "/a"), ("/".into(), "/a".into()));
        assert_eq!(strip(1, "/a/"), ("/".into(), "/a".into()));
        assert_eq!(strip(3, "/a/b"), ("/".into(), "/a/b".into()));
        assert_eq!(strip(1, "//a//b"), ("/b".into(), "/a".into()));
        assert_eq!(strip(0, "/a//b"), ("/a//b".into(), String::new()));
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("/x/{seg}-{id}").unwrap(),
            vec![
                TPart::Lit("/x/".into()),
                TPart::Var("seg".into()),
                TPart::Lit("-".into()),
                TPart::Var("id".into())
            ]
        );
        assert!(
            parse_template("/{a")
                .unwrap_err()
                .contains("without its `}`")
        );
        assert!(
            parse_template("/{a b}")
                .unwrap_err()
                .contains("not a variable")
        );
        assert_eq!(
            parse_template("a}b").unwrap(),
            vec![TPart::Lit("a}b".into())]
        );
    }

    #[test]
    fn header_values_fall_back_to_raw_when_decoding_breaks_them() {
        let t = ValueTemplate::parse("v={x}").unwrap();
        let vars = [Captured {
            name: "x",
            raw: "a%0Ab".into(),
        }];
        assert_eq!(t.render(&vars).unwrap(), "v=a%0Ab");
        let vars = [Captured {
            name: "x",
            raw: "a%20b".into(),
        }];
        assert_eq!(t.render(&vars).unwrap(), "v=a b");
    }
}
