//! Header handling at the edge: what never crosses a proxy (hop-by-hop headers), what a
//! client may not claim (identity headers), what the gateway adds (`X-Forwarded-*`,
//! `X-Request-Id`, W3C `traceparent`).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// RFC 9110 §7.6.1: headers meaningful only for one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Transfer-Encoding` goes too: hyper frames each side's body itself.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers a message has, rather than a lookup per name.
    let hop = |k: &HeaderName| HOP_BY_HOP.contains(k) || k == header::TRANSFER_ENCODING;
    if !headers.keys().any(hop) {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION).cloned()
        && let Ok(listed) = listed.to_str()
    {
        for name in listed.split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// The identity headers a client may not send: exact names and `prefix*` patterns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityHeaders {
    exact: Vec<HeaderName>,
    prefixes: Vec<String>,
}

impl IdentityHeaders {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut this = Self::default();
        for p in patterns {
            let p = p.trim().to_ascii_lowercase();
            if let Some(prefix) = p.strip_suffix('*') {
                if prefix.is_empty() || HeaderName::from_bytes(prefix.as_bytes()).is_err() {
                    return Err(format!(
                        "gateway.identity_headers: `{p}` is not a header name or prefix"
                    ));
                }
                this.prefixes.push(prefix.to_owned());
            } else {
                let name = HeaderName::from_bytes(p.as_bytes())
                    .map_err(|_| format!("gateway.identity_headers: `{p}` is not a header name"))?;
                this.exact.push(name);
            }
        }
        Ok(this)
    }

    /// Whether a field of this name is an identity header.
    pub fn matches(&self, name: &str) -> bool {
        self.exact
            .iter()
            .any(|n| n.as_str().eq_ignore_ascii_case(name))
            || self.prefixes.iter().any(|p| {
                name.len() >= p.len()
                    && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            })
    }

    /// Removes every identity header from `headers`.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let exact = |k: &HeaderName| self.exact.contains(k);
        let prefixed = |k: &HeaderName| self.prefixes.iter().any(|p| k.as_str().starts_with(p));
        if !headers.keys().any(|k| exact(k) || prefixed(k)) {
            return;
        }
        for name in &self.exact {
            headers.remove(name);
        }
        if self.prefixes.is_empty() {
            return;
        }
        // Names are lower case in a HeaderMap; collect first, then remove.
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.prefixes.iter().any(|p| k.as_str().starts_with(p)))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// Adds the client's address to `X-Forwarded-For` and says how and where it came in.
/// A client's own `X-Forwarded-Proto`/`-Host` are believed only from a trusted proxy.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    host: Option<&HeaderValue>,
    stripped_prefix: Option<&str>,
) {
    let peer_text = peer.to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(existing)) if peer_trusted && !existing.trim().is_empty() => {
            format!("{existing}, {peer_text}")
        }
        _ => peer_text,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    match stripped_prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        Some(p) => {
            headers.insert(X_FORWARDED_PREFIX, p);
        }
        None => {
            headers.remove(&X_FORWARDED_PREFIX);
        }
    }
}

/// The client's `X-Request-Id` when it is a sane token, or a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    request_id_from(headers.get(&REQUEST_ID).map(HeaderValue::as_bytes))
}

/// As `request_id`, from the field's raw value.
pub fn request_id_from(given: Option<&[u8]>) -> HeaderValue {
    given
        .filter(|b| {
            !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=".contains(c))
        })
        .and_then(|b| HeaderValue::from_bytes(b).ok())
        .unwrap_or_else(|| {
            // A UUIDv7 as other services make them, its random bits from a fast per-thread
            // generator rather than a system call per request.
            let millis = u64::try_from(platform::clock::now_ms()).unwrap_or(0);
            let random = fastrand::u128(..).to_le_bytes();
            let mut random_bytes = [0u8; 10];
            random_bytes.copy_from_slice(&random[..10]);
            let id = uuid::Builder::from_unix_timestamp_millis(millis, &random_bytes).into_uuid();
            let mut buf = uuid::Uuid::encode_buffer();
            let text = id.hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// The `traceparent` to send upstream, from the client's field: its trace continued with a
/// new span id (the gateway is a hop of its own), or a new trace when it sent none or a
/// broken one. On the stack: the engine writes it straight out.
pub fn traceparent_text(given: Option<&[u8]>) -> [u8; 55] {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match given.filter(|v| std::str::from_utf8(v).is_ok_and(valid_traceparent)) {
        Some(tp) => {
            text[3..35].copy_from_slice(&tp[3..35]);
            text[53..55].copy_from_slice(&tp[53..55]);
        }
        None => hex(fastrand::u128(1..), &mut text[3..35]),
    }
    hex(u128::from(fastrand::u64(1..)), &mut text[36..52]);
    text
}

/// Writes the low `out.len()` hex digits of `value` into `out` (lower case).
fn hex(mut value: u128, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// W3C Trace Context version 00: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`,
/// ids not all zero.
fn valid_traceparent(tp: &str) -> bool {
    let b = tp.as_bytes();
    // Lower case only (W3C Trace Context §3.2.2).
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    b.len() == 55
        && &b[0..3] == b"00-"
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && b[3..35].iter().any(|&c| c != b'0')
        && b[36..52].iter().any(|&c| c != b'0')
}

/// A value that can go into a header field as it is (visible ASCII and spaces).
pub fn safe_value(value: &str) -> bool {
    value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

/// Does this raw path try to step out of where it appears to be? Dot segments and encoded
/// separators could let a request match one route's predicates and mean another path to a
/// service that normalises paths.
pub fn suspicious_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return true;
    }
    let b = path.as_bytes();
    // Most paths hold none of the bytes the checks below look for.
    if memchr::memchr3(b'%', b'\\', b'.', b).is_none() {
        return false;
    }
    let encoded_separator = b.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'2', b'e')
            )
    });
    encoded_separator || b.contains(&b'\\') || path.split('/').any(|seg| seg == "." || seg == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn identity_headers_are_stripped_by_name_and_prefix() {
        let id = IdentityHeaders::new(&["x-user-*".into(), "Remote-User".into()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user-id", "admin".parse().unwrap());
        h.append("x-user-roles", "admin".parse().unwrap());
        h.insert("remote-user", "root".parse().unwrap());
        h.insert("x-username-hint", "kept: not x-user-".parse().unwrap());
        h.insert("x-request-id", "kept".parse().unwrap());
        id.strip(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-request-id"));
        assert!(h.contains_key("x-username-hint"));
        assert!(IdentityHeaders::new(&["bad header*".into()]).is_err());
        assert!(IdentityHeaders::new(&["*".into()]).is_err());
    }

    #[test]
    fn forwarded_for_is_replaced_for_untrusted_peers_and_extended_for_trusted_ones() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let host = HeaderValue::from_static("api.example.com");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "6.6.6.6".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        add_forwarded(&mut h, peer, false, Some(&host), Some("/api"));
        assert_eq!(
            h[&X_FORWARDED_FOR], "203.0.113.9",
            "a client cannot plant hops"
        );
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example.com");
        assert_eq!(h[&X_FORWARDED_PREFIX], "/api");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "198.51.100.1".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), true, None, None);
        assert_eq!(h[&X_FORWARDED_FOR], "198.51.100.1, 127.0.0.1");
        assert_eq!(
            h[&X_FORWARDED_PROTO], "https",
            "a trusted proxy's scheme stays"
        );
        assert!(!h.contains_key(&X_FORWARDED_PREFIX));
    }

    fn traceparent(h: &HeaderMap) -> String {
        let text = traceparent_text(h.get(&TRACEPARENT).map(HeaderValue::as_bytes));
        String::from_utf8(text.to_vec()).unwrap()
    }

    #[test]
    fn traceparent_continues_the_callers_trace_with_a_new_span() {
        let mut h = HeaderMap::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, incoming.parse().unwrap());
        let out = traceparent(&h);
        assert!(valid_traceparent(&out), "{out}");
        assert_eq!(&out[..36], &incoming[..36], "same trace");
        assert_ne!(&out[36..52], &incoming[36..52], "a span of its own");
        assert!(out.ends_with("-01"));

        for broken in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            h.insert(TRACEPARENT, broken.parse().unwrap());
            let fresh = traceparent(&h);
            assert!(valid_traceparent(&fresh), "{fresh}");
            assert_ne!(&fresh[3..35], &incoming[3..35]);
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, "bad id with spaces".parse().unwrap());
        let made = request_id(&h);
        let parsed = uuid::Uuid::parse_str(made.to_str().unwrap()).unwrap();
        assert_eq!(
            parsed.get_version_num(),
            7,
            "a UUIDv7, as the services make"
        );
        assert_ne!(made, request_id(&h), "each new one differs");
    }

    #[test]
    fn paths_stepping_out_are_suspicious() {
        for p in [
            "/api/auth/login/../../users/me",
            "/api/business/./x",
            "/api/auth%2f..%2fusers",
            "/api/%2e%2e/eureka",
            "/a\\b",
            "relative",
        ] {
            assert!(suspicious_path(p), "{p}");
        }
        for p in [
            "/",
            "/api/business/prompts",
            "/api/business/prompts/a..b",
            "/x/%E4%BD%A0",
        ] {
            assert!(!suspicious_path(p), "{p}");
        }
    }
}
