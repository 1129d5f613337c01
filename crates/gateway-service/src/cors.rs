//! CORS for browser clients, from `gateway.cors` (read at start). Preflights are answered
//! here, before authentication: a browser sends them without credentials.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::settings::CorsSettings;

/// The layer for `settings`; `None` when no origin is allowed (no CORS headers at all).
pub fn layer(settings: &CorsSettings) -> Result<Option<CorsLayer>, String> {
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
    let origin = if wildcard(&settings.allowed_origins) {
        AllowOrigin::any()
    } else {
        let patterns = settings
            .allowed_origins
            .iter()
            .map(|o| OriginPattern::parse(o))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin
                .to_str()
                .is_ok_and(|o| patterns.iter().any(|p| p.matches(o)))
        })
    };
    let methods = if wildcard(&settings.allowed_methods) {
        AllowMethods::any()
    } else {
        AllowMethods::list(
            settings
                .allowed_methods
                .iter()
                .map(|m| {
                    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("gateway.cors.allowed_methods: `{m}` is not a method"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let names = |list: &[String], setting: &str| {
        list.iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("gateway.cors.{setting}: `{h}` is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let headers = if wildcard(&settings.allowed_headers) {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(names(&settings.allowed_headers, "allowed_headers")?)
    };
    let exposed = if wildcard(&settings.exposed_headers) {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(names(&settings.exposed_headers, "exposed_headers")?)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(methods)
            .allow_headers(headers)
            .expose_headers(exposed)
            .allow_credentials(settings.allow_credentials)
            .max_age(Duration::from_secs(settings.max_age_secs)),
    ))
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
        assert!(layer(&s).unwrap().is_none());
        s.allowed_origins = vec!["*".into()];
        assert!(layer(&s).unwrap().is_some());
        s.allow_credentials = true;
        assert!(layer(&s).unwrap_err().contains("allow_credentials"));
    }
}
