//! CORS for browser clients, from `gateway.cors` (read at start). Preflights are answered
//! by the gateway, before authentication: a browser sends them without credentials.
//!
//! The gateway's engine writes its answers itself, so the rules are applied here as header
//! lines rather than through a tower layer.

use http::{HeaderName, Method};

use crate::settings::CorsSettings;

/// The compiled CORS rules.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<OriginPattern>,
    any_origin: bool,
    /// `Access-Control-Allow-Methods` as sent; `None`: mirror the request's.
    methods: Option<String>,
    /// `Access-Control-Allow-Headers` as sent; `None`: mirror the request's.
    headers: Option<String>,
    exposed: Option<String>,
    credentials: bool,
    max_age: String,
}

impl Cors {
    /// The rules of `settings`; `None` when no origin is allowed (no CORS headers at all).
    pub fn new(settings: &CorsSettings) -> Result<Option<Cors>, String> {
        if settings.allowed_origins.is_empty() {
            return Ok(None);
        }
        let wildcard = |list: &[String]| list.iter().any(|v| v.trim() == "*");
        if settings.allow_credentials
            && (wildcard(&settings.allowed_origins)
                || wildcard(&settings.allowed_headers)
                || wildcard(&settings.allowed_methods)
                || wildcard(&settings.exposed_headers))
        {
            return Err(
                "gateway.cors: `*` cannot be combined with allow_credentials (browsers refuse it); \
                 list the origins, methods and headers"
                    .into(),
            );
        }
        let any_origin = wildcard(&settings.allowed_origins);
        let origins = if any_origin {
            Vec::new()
        } else {
            settings
                .allowed_origins
                .iter()
                .map(|o| OriginPattern::parse(o))
                .collect::<Result<Vec<_>, _>>()?
        };
        let methods = if wildcard(&settings.allowed_methods) {
            None
        } else {
            let list = settings
                .allowed_methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                        .map(|m| m.to_string())
                        .map_err(|_| format!("gateway.cors.allowed_methods: `{m}` is not a method"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(list.join(","))
        };
        let names = |list: &[String], setting: &str| -> Result<Option<String>, String> {
            if wildcard(list) {
                return Ok(None);
            }
            let names = list
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.trim().as_bytes())
                        .map(|n| n.as_str().to_owned())
                        .map_err(|_| format!("gateway.cors.{setting}: `{h}` is not a header name"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(names.join(",")))
        };
        let headers = names(&settings.allowed_headers, "allowed_headers")?;
        let exposed = if wildcard(&settings.exposed_headers) {
            Some("*".to_owned())
        } else {
            names(&settings.exposed_headers, "exposed_headers")?.filter(|s| !s.is_empty())
        };
        Ok(Some(Cors {
            origins,
            any_origin,
            methods,
            headers,
            exposed,
            credentials: settings.allow_credentials,
            max_age: settings.max_age_secs.to_string(),
        }))
    }

    fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|p| p.matches(origin))
    }

    /// Header lines (`name: value\r\n`) for an answer to a request from `origin`.
    pub fn actual(&self, origin: &[u8], out: &mut Vec<u8>) {
        let Some(origin) = self.allowed(origin) else {
            return;
        };
        self.origin_lines(origin, out);
        if let Some(exposed) = &self.exposed {
            line(out, "access-control-expose-headers", exposed.as_bytes());
        }
    }

    /// Header lines for a preflight from `origin` asking for `method` and `headers`; none
    /// when the origin is not allowed (the browser then refuses the request itself).
    pub fn preflight(
        &self,
        origin: &[u8],
        method: Option<&[u8]>,
        headers: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        let Some(origin) = self.allowed(origin) else {
            line(
                out,
                "vary",
                b"origin, access-control-request-method, access-control-request-headers",
            );
            return;
        };
        self.origin_lines(origin, out);
        line(
            out,
            "vary",
            b"origin, access-control-request-method, access-control-request-headers",
        );
        match (&self.methods, method) {
            (Some(list), _) => line(out, "access-control-allow-methods", list.as_bytes()),
            (None, Some(asked)) if is_token_list(asked) => {
                line(out, "access-control-allow-methods", asked);
            }
            (None, _) => {}
        }
        match (&self.headers, headers) {
            (Some(list), _) => line(out, "access-control-allow-headers", list.as_bytes()),
            (None, Some(asked)) if is_token_list(asked) => {
                line(out, "access-control-allow-headers", asked);
            }
            (None, _) => {}
        }
        line(out, "access-control-max-age", self.max_age.as_bytes());
    }

    fn allowed<'o>(&self, origin: &'o [u8]) -> Option<&'o str> {
        std::str::from_utf8(origin)
            .ok()
            .filter(|o| o.bytes().all(|b| b.is_ascii_graphic()) && self.allows(o))
    }

    fn origin_lines(&self, origin: &str, out: &mut Vec<u8>) {
        if self.any_origin && !self.credentials {
            line(out, "access-control-allow-origin", b"*");
        } else {
            line(out, "access-control-allow-origin", origin.as_bytes());
            line(out, "vary", b"origin");
        }
        if self.credentials {
            line(out, "access-control-allow-credentials", b"true");
        }
    }
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Only tokens, commas and spaces may be mirrored back.
fn is_token_list(value: &[u8]) -> bool {
    value.len() <= 1024
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_., ".contains(b))
}

/// `https://app.example.com` exactly, or `https://*.example.com` for any subdomain.
#[derive(Debug, Clone)]
struct OriginPattern {
    scheme: String,
    /// `.example.com` for a wildcard, the whole host otherwise.
    host: String,
    wildcard: bool,
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, String> {
        let text = text.trim().trim_end_matches('/').to_ascii_lowercase();
        let bad = || {
            format!(
                "gateway.cors.allowed_origins: `{text}` is not an origin (`https://app.example.com` or `https://*.example.com`)"
            )
        };
        let (scheme, host) = text.split_once("://").ok_or_else(bad)?;
        if scheme.is_empty() || host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => OriginPattern {
                scheme: scheme.to_owned(),
                host: rest.to_owned(),
                wildcard: true,
            },
            Some(_) => return Err(bad()),
            None => OriginPattern {
                scheme: scheme.to_owned(),
                host: host.to_owned(),
                wildcard: false,
            },
        })
    }

    fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let Some((scheme, host)) = origin.split_once("://") else {
            return false;
        };
        scheme == self.scheme
            && if self.wildcard {
                host.len() > self.host.len()
                    && host.ends_with(&self.host)
                    && !host[..host.len() - self.host.len()].contains(':')
            } else {
                host == self.host
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let exact = OriginPattern::parse("https://app.example.com/").unwrap();
        assert!(exact.matches("https://app.example.com"));
        assert!(exact.matches("HTTPS://APP.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com.evil.net"));
        let sub = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        assert!(!sub.matches("https://a.example.com:8443"), "another origin");
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("https://evilexample.com"));
        for bad in [
            "example.com",
            "https://",
            "https://*example.com",
            "https://a/b",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_with_credentials_are_refused_and_no_origins_mean_no_cors() {
        let mut s = CorsSettings::default();
        assert!(Cors::new(&s).unwrap().is_none());
        s.allowed_origins = vec!["*".into()];
        assert!(Cors::new(&s).unwrap().is_some());
        s.allow_credentials = true;
        assert!(Cors::new(&s).unwrap_err().contains("allow_credentials"));
    }

    #[test]
    fn preflights_and_answers_carry_the_headers_for_allowed_origins_only() {
        let s = CorsSettings {
            allowed_origins: vec!["https://app.example.com".into()],
            allow_credentials: true,
            ..CorsSettings::default()
        };
        let cors = Cors::new(&s).unwrap().unwrap();
        let mut out = Vec::new();
        cors.preflight(b"https://app.example.com", Some(b"POST"), None, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("access-control-allow-origin: https://app.example.com\r\n"));
        assert!(text.contains("access-control-allow-credentials: true\r\n"));
        assert!(
            text.contains("access-control-allow-methods: GET,POST,PUT,PATCH,DELETE,OPTIONS\r\n")
        );
        assert!(text.contains("access-control-allow-headers: authorization,"));
        assert!(text.contains("access-control-max-age: 600\r\n"));
        let mut out = Vec::new();
        cors.preflight(b"https://evil.example.net", Some(b"POST"), None, &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("allow-origin"));
        let mut out = Vec::new();
        cors.actual(b"https://app.example.com", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("access-control-expose-headers: etag,location,retry-after,x-request-id")
        );
        let mut out = Vec::new();
        cors.actual(b"https://app.example.com\r\nx-evil: 1", &mut out);
        assert!(out.is_empty(), "a hostile origin is never echoed");
    }
}
