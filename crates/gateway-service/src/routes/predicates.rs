//! Route predicates: Path, Method, Host, Header, Query, Cookie, RemoteAddr, After, Before,
//! Between, compiled once and tested on every request without compiling or (unless a pattern
//! captures, or a query value is percent-encoded and over 256 bytes) allocating.

use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, Utc};
use http::{HeaderMap, HeaderName, Method};
use regex::bytes::Regex as BytesRegex;

use super::Request;
use super::args::{self, Args, Shortcut, Spec};
use super::pattern::{Captured, SegPattern, host_without_port, regex_error};
use crate::settings::Definition;

/// Supported predicate names, for error messages.
pub(super) const NAMES: &[&str] = &[
    "After",
    "Before",
    "Between",
    "Cookie",
    "Header",
    "Host",
    "Method",
    "Path",
    "Query",
    "RemoteAddr",
];

const SPECS: &[Spec] = &[
    Spec {
        name: "Path",
        shortcut: Shortcut::ListTailFlag("patterns", "matchTrailingSlash"),
        args: &["patterns", "matchTrailingSlash"],
        key_prefix: None,
    },
    Spec {
        name: "Method",
        shortcut: Shortcut::List("methods"),
        args: &["methods"],
        key_prefix: None,
    },
    Spec {
        name: "Host",
        shortcut: Shortcut::List("patterns"),
        args: &["patterns"],
        key_prefix: None,
    },
    Spec {
        name: "Header",
        shortcut: Shortcut::Fields(&["header", "regexp"]),
        args: &["header", "regexp"],
        key_prefix: None,
    },
    Spec {
        name: "Query",
        shortcut: Shortcut::Fields(&["param", "regexp"]),
        args: &["param", "regexp"],
        key_prefix: None,
    },
    Spec {
        name: "Cookie",
        shortcut: Shortcut::Fields(&["name", "regexp"]),
        args: &["name", "regexp"],
        key_prefix: None,
    },
    Spec {
        name: "RemoteAddr",
        shortcut: Shortcut::List("sources"),
        args: &["sources"],
        key_prefix: None,
    },
    Spec {
        name: "After",
        shortcut: Shortcut::Fields(&["datetime"]),
        args: &["datetime"],
        key_prefix: None,
    },
    Spec {
        name: "Before",
        shortcut: Shortcut::Fields(&["datetime"]),
        args: &["datetime"],
        key_prefix: None,
    },
    Spec {
        name: "Between",
        shortcut: Shortcut::Fields(&["datetime1", "datetime2"]),
        args: &["datetime1", "datetime2"],
        key_prefix: None,
    },
];

#[derive(Debug, Clone)]
pub(super) struct Predicate {
    kind: Kind,
    /// Shortcut form, for `describe`.
    pub text: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Path {
        patterns: Vec<SegPattern>,
        trailing_slash: bool,
    },
    Method(Vec<Method>),
    Host(Vec<SegPattern>),
    Header {
        name: HeaderName,
        re: Option<BytesRegex>,
    },
    Query {
        param: String,
        re: Option<BytesRegex>,
    },
    Cookie {
        name: String,
        re: BytesRegex,
    },
    RemoteAddr(Vec<Cidr>),
    After(DateTime<Utc>),
    Before(DateTime<Utc>),
    Between(DateTime<Utc>, DateTime<Utc>),
}

impl Predicate {
    /// `route` is the start of every error (`route `users``).
    pub fn compile(def: &Definition, route: &str) -> Result<Predicate, String> {
        let (name, raw) = args::split(def);
        let ctx = format!("{route}: predicate `{}`", args::label(def));
        let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
            return Err(unknown(&ctx, name));
        };
        let a = Args::bind(ctx, spec, raw)?;
        let (kind, text) = match name {
            "Path" => {
                let written = a.opt_list("patterns")?.unwrap_or_default();
                if written.is_empty() {
                    return Err(a.err("needs at least one pattern"));
                }
                let patterns = written
                    .iter()
                    .map(|p| SegPattern::path(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| a.err(e))?;
                // Stricter than Spring (whose default is `true`): `/login/` is not `/login`.
                let trailing_slash = a.opt_bool("matchTrailingSlash")?.unwrap_or(false);
                let mut text = format!("Path={}", written.join(","));
                if trailing_slash {
                    text.push_str(",true");
                }
                (
                    Kind::Path {
                        patterns,
                        trailing_slash,
                    },
                    text,
                )
            }
            "Method" => {
                let written = a.opt_list("methods")?.unwrap_or_default();
                if written.is_empty() {
                    return Err(a.err("needs at least one method"));
                }
                let methods = written
                    .iter()
                    .map(|m| parse_method(m).map_err(|e| a.err(e)))
                    .collect::<Result<Vec<_>, _>>()?;
                let text = format!(
                    "Method={}",
                    methods
                        .iter()
                        .map(Method::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                (Kind::Method(methods), text)
            }
            "Host" => {
                let written = a.opt_list("patterns")?.unwrap_or_default();
                if written.is_empty() {
                    return Err(a.err("needs at least one pattern"));
                }
                let patterns = written
                    .iter()
                    .map(|p| SegPattern::host(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| a.err(e))?;
                (Kind::Host(patterns), format!("Host={}", written.join(",")))
            }
            "Header" => {
                let header = a.str("header")?;
                let name = HeaderName::from_bytes(header.trim().as_bytes())
                    .map_err(|_| a.err(format_args!("`{header}` is not a header name")))?;
                let (re, text) = optional_regex(&a, "Header", header.trim())?;
                (Kind::Header { name, re }, text)
            }
            "Query" => {
                let param = a.str("param")?;
                if param.is_empty() {
                    return Err(a.err("argument `param` is empty"));
                }
                let (re, text) = optional_regex(&a, "Query", &param)?;
                (Kind::Query { param, re }, text)
            }
            "Cookie" => {
                let name = a.str("name")?;
                if name.is_empty() {
                    return Err(a.err("argument `name` is empty"));
                }
                let regexp = a.str("regexp")?;
                let re = whole_match(&regexp).map_err(|e| a.err(e))?;
                let text = format!("Cookie={name}, {regexp}");
                (Kind::Cookie { name, re }, text)
            }
            "RemoteAddr" => {
                let written = a.opt_list("sources")?.unwrap_or_default();
                if written.is_empty() {
                    return Err(a.err("needs at least one address or CIDR range"));
                }
                let cidrs = written
                    .iter()
                    .map(|s| Cidr::parse(s).map_err(|e| a.err(e)))
                    .collect::<Result<Vec<_>, _>>()?;
                (
                    Kind::RemoteAddr(cidrs),
                    format!("RemoteAddr={}", written.join(",")),
                )
            }
            "After" | "Before" => {
                let written = a.str("datetime")?;
                let at = parse_datetime(&written).map_err(|e| a.err(e))?;
                let kind = if name == "After" {
                    Kind::After(at)
                } else {
                    Kind::Before(at)
                };
                (kind, format!("{name}={}", written.trim()))
            }
            "Between" => {
                let (w1, w2) = (a.str("datetime1")?, a.str("datetime2")?);
                let d1 = parse_datetime(&w1).map_err(|e| a.err(e))?;
                let d2 = parse_datetime(&w2).map_err(|e| a.err(e))?;
                if d1 >= d2 {
                    return Err(a.err("`datetime2` must be after `datetime1`"));
                }
                (
                    Kind::Between(d1, d2),
                    format!("Between={}, {}", w1.trim(), w2.trim()),
                )
            }
            _ => return Err(unknown(a.ctx(), name)),
        };
        Ok(Predicate { kind, text })
    }

    /// Variables every match of this predicate captures (what filters may rely on).
    pub fn sure_vars(&self) -> Vec<&str> {
        let patterns = match &self.kind {
            Kind::Path { patterns, .. } | Kind::Host(patterns) => patterns,
            _ => return Vec::new(),
        };
        let Some((first, others)) = patterns.split_first() else {
            return Vec::new();
        };
        first
            .vars
            .iter()
            .filter(|v| others.iter().all(|p| p.vars.contains(v)))
            .map(String::as_str)
            .collect()
    }

    /// Variables some match of this predicate may capture.
    pub fn any_vars(&self) -> Vec<&str> {
        match &self.kind {
            Kind::Path { patterns, .. } | Kind::Host(patterns) => {
                let mut vars: Vec<&str> = patterns
                    .iter()
                    .flat_map(|p| p.vars.iter().map(String::as_str))
                    .collect();
                vars.sort_unstable();
                vars.dedup();
                vars
            }
            _ => Vec::new(),
        }
    }

    /// Header and Cookie read the request's header fields.
    pub fn uses_headers(&self) -> bool {
        matches!(self.kind, Kind::Header { .. } | Kind::Cookie { .. })
    }

    pub fn uses_clock(&self) -> bool {
        matches!(
            self.kind,
            Kind::After(_) | Kind::Before(_) | Kind::Between(..)
        )
    }

    pub fn test<'p>(
        &'p self,
        req: &Request<'_>,
        now: DateTime<Utc>,
        caps: &mut Vec<Captured<'p>>,
    ) -> bool {
        match &self.kind {
            Kind::Path {
                patterns,
                trailing_slash,
            } => {
                let path = req.path;
                if !path.starts_with('/') {
                    return false;
                }
                if patterns.iter().any(|p| p.matches(path, 1, caps)) {
                    return true;
                }
                // matchTrailingSlash: `/red/1/` as `/red/1`.
                *trailing_slash
                    && path.len() > 1
                    && path.ends_with('/')
                    && patterns
                        .iter()
                        .any(|p| p.matches(&path[..path.len() - 1], 1, caps))
            }
            Kind::Method(methods) => methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(req.method.as_str())),
            Kind::Host(patterns) => {
                let Some(host) = req.host.map(host_without_port) else {
                    return false;
                };
                !host.is_empty() && patterns.iter().any(|p| p.matches(host, 0, caps))
            }
            Kind::Header { name, re } => header_matches(req.headers, name, re.as_ref()),
            Kind::Query { param, re } => req
                .query
                .is_some_and(|q| query_matches(q, param, re.as_ref())),
            Kind::Cookie { name, re } => cookie_matches(req.headers, name, re),
            Kind::RemoteAddr(cidrs) => cidrs.iter().any(|c| c.contains(req.remote)),
            Kind::After(t) => now > *t,
            Kind::Before(t) => now < *t,
            Kind::Between(a, b) => now > *a && now < *b,
        }
    }
}

fn unknown(ctx: &str, name: &str) -> String {
    if name == "Weight" {
        return format!(
            "{ctx}: `Weight` is not supported (no weighted routing between routes); \
             give the instances of one service their share through discovery instead"
        );
    }
    let hint = NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    format!(
        "{ctx}: unknown predicate `{name}`{hint}; supported: {}",
        NAMES.join(", ")
    )
}

fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{m}` is not an HTTP method"))
}

pub(super) fn methods(list: &[String]) -> Result<Vec<Method>, String> {
    let mut out: Vec<Method> = Vec::new();
    for m in list {
        let m = parse_method(m)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// A regex that must match a value wholly (Java's `String.matches`).
pub(super) fn whole_match(re: &str) -> Result<BytesRegex, String> {
    BytesRegex::new(&format!("\\A(?:{re})\\z"))
        .map_err(|e| format!("bad regex `{re}`: {}", regex_error(&e)))
}

/// Header's and Query's optional `regexp` (empty counts as absent, as in Spring).
fn optional_regex(
    a: &Args,
    name: &str,
    first: &str,
) -> Result<(Option<BytesRegex>, String), String> {
    match a.opt_str("regexp")?.filter(|r| !r.is_empty()) {
        Some(r) => Ok((
            Some(whole_match(&r).map_err(|e| a.err(e))?),
            format!("{name}={first}, {r}"),
        )),
        None => Ok((None, format!("{name}={first}"))),
    }
}

fn header_matches(headers: &HeaderMap, name: &HeaderName, re: Option<&BytesRegex>) -> bool {
    match re {
        None => headers.contains_key(name),
        Some(re) => headers
            .get_all(name)
            .iter()
            .any(|v| re.is_match(v.as_bytes())),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes (and, in a query, reads `+` as a space); a stray `%` stays as it is.
pub(super) fn decode_bytes(raw: &[u8], plus_is_space: bool) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        i += 1;
        if b == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i).copied().and_then(hex),
                raw.get(i + 1).copied().and_then(hex),
            )
        {
            i += 2;
            return Some(h << 4 | l);
        }
        Some(if plus_is_space && b == b'+' { b' ' } else { b })
    })
}

/// Runs `f` on the decoded query value, decoding on the stack when it is short.
fn with_decoded<R>(raw: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|b| *b == b'%' || *b == b'+') {
        return f(bytes);
    }
    let mut stack = [0u8; 256];
    if bytes.len() <= stack.len() {
        let mut n = 0;
        for b in decode_bytes(bytes, true) {
            stack[n] = b;
            n += 1;
        }
        f(&stack[..n])
    } else {
        f(&decode_bytes(bytes, true).collect::<Vec<u8>>())
    }
}

/// Spring's Query predicate over the raw query: `?green` has the parameter without a value
/// (no regexp matches it), `?green=` has it with an empty one.
fn query_matches(query: &str, param: &str, re: Option<&BytesRegex>) -> bool {
    query.split('&').filter(|p| !p.is_empty()).any(|pair| {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        if !decode_bytes(name.as_bytes(), true).eq(param.bytes()) {
            return false;
        }
        match (re, value) {
            (None, _) => true,
            (Some(re), Some(v)) => with_decoded(v, |d| re.is_match(d)),
            (Some(_), None) => false,
        }
    })
}

fn cookie_matches(headers: &HeaderMap, name: &str, re: &BytesRegex) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| {
                let value = pair[eq + 1..].trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
        .any(|value| re.is_match(value))
}

/// An address range; an IPv4-mapped IPv6 range is kept as the IPv4 range it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("`{text}` is not an IP address or CIDR range");
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        Ok(match net {
            IpAddr::V6(v6) if bits >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    net: IpAddr::V4(v4),
                    bits: bits - 96,
                },
                None => Cidr { net, bits },
            },
            _ => Cidr { net, bits },
        })
    }

    fn contains(&self, remote: IpAddr) -> bool {
        let remote = match remote {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(remote, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, remote) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), ip) => {
                let ip = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Java ZonedDateTime text (`2017-01-20T17:42:47.789-07:00[America/Denver]`: the bracketed zone
/// id is ignored, the offset counts), seconds optional, or epoch milliseconds (as Spring's
/// converter accepts).
pub(super) fn parse_datetime(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| format!("`{t}` is out of range as epoch milliseconds"));
    }
    let stamp = match t.find('[') {
        Some(i) if t.ends_with(']') => &t[..i],
        _ => t,
    };
    DateTime::parse_from_rfc3339(stamp)
        .or_else(|_| DateTime::<FixedOffset>::parse_from_str(stamp, "%Y-%m-%dT%H:%M%:z"))
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            format!("`{t}` is not a date-time like 2017-01-20T17:42:47.789-07:00[America/Denver]")
        })
}
