//! Extractors whose every rejection is a problem+json: malformed JSON is a 400, a body of
//! the wrong shape a 422 naming the field, a body over the limit a 413, a wrong media type
//! a 415. Handlers use these instead of axum's own so no plain-text error ever escapes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem};

/// The body limit in force, put in the request extensions by the server layers so that a
/// 413 can say what the limit is.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body (request) or JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::unsupported_media_type(
                "send the body as application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A body of any media type, whole (bounded by the body limit; too large is a 413 problem).
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(RawBody)
    }
}

/// An optional JSON body: an empty body is `None`, anything else must be JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for MaybeJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let typed = req.headers().contains_key(header::CONTENT_TYPE);
        if typed && !is_json(req.headers()) {
            return Err(Problem::unsupported_media_type(
                "send the body as application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        if !typed {
            return Err(Problem::unsupported_media_type(
                "send the body as application/json",
            ));
        }
        parse_json(&bytes).map(|v| MaybeJson(Some(v)))
    }
}

/// A body sent either as JSON or as `application/x-www-form-urlencoded` (OAuth 2 token
/// requests come as forms, PromptFlow's own clients send JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOrForm<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let form = media_type(req.headers())
            .is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form && !is_json(req.headers()) {
            return Err(Problem::unsupported_media_type(
                "send the body as application/json or application/x-www-form-urlencoded",
            ));
        }
        let bytes = read_body(req, state).await?;
        if form {
            parse_form(&bytes).map(JsonOrForm)
        } else {
            parse_json(&bytes).map(JsonOrForm)
        }
    }
}

/// Parses JSON, telling syntax errors (400) from shape errors (422, with the field path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => field_problem(path, inner.to_string()),
                _ => Problem::malformed(format!("the body is not valid JSON: {inner}")),
            });
        }
    };
    de.end()
        .map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Parses `application/x-www-form-urlencoded` text (a form body or a query string); a bad
/// field is a 422 naming it.
fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de)
        .map_err(|e| field_problem(e.path().to_string(), e.inner().to_string()))
}

fn field_problem(path: String, message: String) -> Problem {
    // serde's messages end with " at line 1 column 20"; the field path says more.
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message,
    };
    let field = if path == "." { String::new() } else { path };
    Problem::validation(vec![FieldError::new(field, message)])
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(ref e)
                if matches!(
                    e,
                    axum::extract::rejection::FailedToBufferBody::LengthLimitError(_)
                ) =>
            {
                Problem::payload_too_large(limit)
            }
            other => Problem::malformed(other.body_text()),
        })
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| {
        let m = m.to_ascii_lowercase();
        m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
    })
}

/// Query-string parameters; a bad one is a 422 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_form(parts.uri.query().unwrap_or("").as_bytes()).map(Query)
    }
}

/// Path parameters; one that does not parse (say, an id that is not a UUID) is a 404, as
/// nothing can live at such a path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(Problem::not_found(
                format!("no such resource: {}", e.body_text()),
            )),
            Err(other) => Err(Problem::malformed(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        age: u8,
    }

    #[test]
    fn syntax_error_is_400_and_shape_error_is_422_naming_the_field() {
        let p = parse_json::<Login>(b"{\"username\": ").unwrap_err();
        assert_eq!(p.status().as_u16(), 400);
        let p = parse_json::<Login>(br#"{"username": "a", "age": "old"}"#).unwrap_err();
        assert_eq!(p.status().as_u16(), 422);
        assert!(p.to_string().contains("age"), "{p}");
        let p = parse_json::<Login>(br#"{"age": 3}"#).unwrap_err();
        assert!(p.to_string().contains("missing field `username`"), "{p}");
        let p = parse_json::<Login>(br#"{"username": "a", "age": 3} trailing"#).unwrap_err();
        assert_eq!(p.status().as_u16(), 400);
    }
}
