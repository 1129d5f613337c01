//! HTTP/1.1 message heads and body framing (RFC 9112), parsed by `httparse` and checked
//! strictly: the gateway stands in front of other servers, so anything two parsers could
//! read differently (request smuggling) is refused rather than guessed at.

use bytes::{Bytes, BytesMut};
use http::Method;

pub const MAX_HEADERS: usize = 128;

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A header field: byte ranges of its name and value within the head.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    name: (u32, u32),
    value: (u32, u32),
}

/// A request head, owning its bytes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub version: Version,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
    head: Bytes,
    /// The path and query (origin form; of an absolute-form target, what follows the
    /// authority). Empty, or starting with `?`: the path is `/`.
    target: (u32, u32),
    /// Where `?` is in the target, if anywhere.
    query_at: Option<u32>,
    /// The authority of an absolute-form target (`GET http://host/path`): it stands in for
    /// the Host field (RFC 9112 §3.2.2).
    authority: Option<(u32, u32)>,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub version: Version,
    pub framing: Framing,
    pub keep_alive: bool,
    head: Bytes,
    reason: (u32, u32),
    fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request head is too large")]
    HeadTooLarge,
    #[error("the request has too many header fields")]
    TooManyHeaders,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("only HTTP/1.0 and HTTP/1.1 are served")]
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the upstream's answer head is too large")]
    HeadTooLarge,
    #[error("{0}")]
    Invalid(&'static str),
}

fn text(head: &Bytes, (a, b): (u32, u32)) -> &str {
    let bytes = &head[a as usize..b as usize];
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: every range given here was taken (by `range`) from a `&str` httparse handed
    // out over this same, immutable `head`, or split from one at an ASCII `?`, so it
    // starts and ends on character boundaries of valid UTF-8. Checked again on every
    // header name of every request, it was a percent of the gateway's CPU.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

fn bytes_of(head: &Bytes, (a, b): (u32, u32)) -> &[u8] {
    &head[a as usize..b as usize]
}

fn find<'h>(head: &'h Bytes, fields: &[Field], name: &str) -> Option<&'h [u8]> {
    fields
        .iter()
        .find(|f| bytes_of(head, f.name).eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| bytes_of(head, f.value))
}

impl Request {
    pub fn head(&self) -> &Bytes {
        &self.head
    }
    /// The path and query as sent upstream (`/` for an absolute-form target with neither).
    pub fn target(&self) -> std::borrow::Cow<'_, str> {
        match text(&self.head, self.target) {
            "" => "/".into(),
            t if t.starts_with('?') => format!("/{t}").into(),
            t => t.into(),
        }
    }
    pub fn path(&self) -> &str {
        let path = match self.query_at {
            Some(q) => text(&self.head, (self.target.0, q)),
            None => text(&self.head, self.target),
        };
        if path.is_empty() { "/" } else { path }
    }
    /// Who the request is for: an absolute-form target's authority, else the Host field.
    pub fn host(&self) -> Option<&[u8]> {
        match self.authority {
            Some(a) => Some(bytes_of(&self.head, a)),
            None => self.header("host"),
        }
    }
    pub fn query(&self) -> Option<&str> {
        self.query_at
            .map(|q| text(&self.head, (q + 1, self.target.1)))
    }
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find(&self.head, &self.fields, name)
    }
    pub fn headers(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|f| (text(&self.head, f.name), bytes_of(&self.head, f.value)))
    }
}

impl Response {
    pub fn head(&self) -> &Bytes {
        &self.head
    }
    pub fn reason(&self) -> &str {
        text(&self.head, self.reason)
    }
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find(&self.head, &self.fields, name)
    }
    pub fn headers(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|f| (text(&self.head, f.name), bytes_of(&self.head, f.value)))
    }
}

fn offset(base: &[u8], part: &[u8]) -> u32 {
    (part.as_ptr() as usize - base.as_ptr() as usize) as u32
}

fn range(base: &[u8], part: &[u8]) -> (u32, u32) {
    let a = offset(base, part);
    (a, a + part.len() as u32)
}

/// What the header fields say about framing and the connection.
#[derive(Default)]
struct Facts {
    content_length: Option<u64>,
    chunked_last: bool,
    transfer_encoding: bool,
    other_coding: bool,
    chunked_not_last: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    hosts: u32,
}

fn facts(headers: &[httparse::Header<'_>]) -> Result<Facts, &'static str> {
    let mut f = Facts::default();
    for h in headers {
        // httparse already refuses these; checked again (cheaply) as the last word on framing.
        if memchr::memchr3(0, b'\r', b'\n', h.value).is_some() {
            return Err("a header value holds a control character");
        }
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "Content-Length is not a number")?;
            for part in v.split(',') {
                let part = part.trim_matches(|c| c == ' ' || c == '\t');
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("Content-Length is not a number");
                }
                let n: u64 = part.parse().map_err(|_| "Content-Length is too large")?;
                if f.content_length.is_some_and(|m| m != n) {
                    return Err("Content-Length values differ");
                }
                f.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            let v =
                std::str::from_utf8(h.value).map_err(|_| "Transfer-Encoding is not readable")?;
            for coding in v.split(',') {
                let coding = coding.trim_matches(|c| c == ' ' || c == '\t');
                if coding.is_empty() {
                    continue;
                }
                if f.chunked_last {
                    // Something after chunked (or chunked twice).
                    f.chunked_not_last = true;
                }
                if coding.eq_ignore_ascii_case("chunked") {
                    f.chunked_last = true;
                } else {
                    f.chunked_last = false;
                    f.other_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value);
            for token in v.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    f.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            f.expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("upgrade") {
            f.upgrade = true;
        } else if name.eq_ignore_ascii_case("host") {
            f.hosts += 1;
        }
    }
    Ok(f)
}

fn version(v: Option<u8>) -> Option<Version> {
    match v {
        Some(0) => Some(Version::Http10),
        Some(1) => Some(Version::Http11),
        _ => None,
    }
}

fn fields(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| Field {
            name: range(base, h.name.as_bytes()),
            value: range(base, h.value),
        })
        .collect()
}

/// Parses a request head at the start of `buf`; on success its bytes are split off.
pub fn parse_request(buf: &mut BytesMut, max_head: usize) -> Result<Option<Request>, RequestError> {
    // Uninitialised: filling 128 empty fields for every head costs more than parsing it.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_head {
                Err(RequestError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(RequestError::Version),
        Err(_) => return Err(RequestError::Invalid("the request head is malformed")),
    };
    if len > max_head {
        return Err(RequestError::HeadTooLarge);
    }
    let version = version(req.version).ok_or(RequestError::Version)?;
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| RequestError::Invalid("the method is not a token"))?;
    // A 2xx answer to CONNECT turns the upstream connection into a tunnel.
    if method == Method::CONNECT {
        return Err(RequestError::NotImplemented(
            "the CONNECT method is not served",
        ));
    }
    let whole = req.path.unwrap_or("");
    if whole.bytes().any(|b| b <= b' ' || b == b'#' || b == 0x7f) {
        return Err(RequestError::Invalid(
            "the request target holds a character it may not",
        ));
    }
    let (authority, target) = split_target(whole)?;
    let f = facts(req.headers).map_err(RequestError::Invalid)?;
    if version == Version::Http11 && f.hosts != 1 {
        return Err(RequestError::Invalid(
            "an HTTP/1.1 request needs exactly one Host field",
        ));
    }
    if f.hosts > 1 {
        return Err(RequestError::Invalid("more than one Host field"));
    }
    let framing = if f.transfer_encoding {
        if version == Version::Http10 {
            return Err(RequestError::Invalid(
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ));
        }
        if f.content_length.is_some() {
            return Err(RequestError::Invalid(
                "Content-Length and Transfer-Encoding together",
            ));
        }
        if f.chunked_not_last {
            return Err(RequestError::Invalid(
                "chunked must be the last transfer coding, once",
            ));
        }
        if f.other_coding {
            return Err(RequestError::NotImplemented(
                "only the chunked transfer coding is accepted",
            ));
        }
        if !f.chunked_last {
            return Err(RequestError::Invalid("an empty Transfer-Encoding"));
        }
        Framing::Chunked
    } else {
        match f.content_length {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !f.close,
        Version::Http10 => f.keep_alive && !f.close,
    };
    let base = &buf[..];
    let target_range = range(base, target.as_bytes());
    let query_at = memchr::memchr(b'?', target.as_bytes()).map(|i| target_range.0 + i as u32);
    let authority = authority.map(|a| range(base, a.as_bytes()));
    let fields = fields(base, req.headers);
    let head = buf.split_to(len).freeze();
    Ok(Some(Request {
        method,
        version,
        framing,
        keep_alive,
        // HTTP/1.0 clients get no 1xx answers (RFC 9110 §10.1.1, §15.2).
        expect_continue: f.expect_continue && version == Version::Http11,
        upgrade: f.upgrade,
        head,
        target: target_range,
        query_at,
        authority,
        fields,
    }))
}

/// The origin form (`/path?query`) as it is; the absolute form (`http://host/path?query`,
/// which a server must accept: RFC 9112 §3.2.2) as its authority and what follows it.
/// Anything else (`*`, authority form, other schemes) is refused.
fn split_target(target: &str) -> Result<(Option<&str>, &str), RequestError> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    });
    let Some(rest) = rest else {
        return Err(RequestError::Invalid(
            "the request target must be a path, or an http(s) URL",
        ));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(RequestError::Invalid(
            "an absolute-form target needs a host and no user information",
        ));
    }
    Ok((Some(authority), path))
}

/// Parses an upstream's answer head to a request of `method`; on success its bytes are
/// split off `buf`.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max_head: usize,
) -> Result<Option<Response>, ResponseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_head {
                Err(ResponseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err(ResponseError::Invalid("the answer head is malformed")),
    };
    if len > max_head {
        return Err(ResponseError::HeadTooLarge);
    }
    let version = version(resp.version).ok_or(ResponseError::Invalid("not HTTP/1.x"))?;
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Invalid("the status is out of range"));
    }
    let f = facts(resp.headers).map_err(ResponseError::Invalid)?;
    let mut keep_alive = match version {
        Version::Http11 => !f.close,
        Version::Http10 => f.keep_alive && !f.close,
    };
    let framing = if *method == Method::HEAD
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else if f.transfer_encoding {
        // RFC 9112 §6.1, §6.3 (3): the connection ends after such an answer.
        if f.content_length.is_some() || version == Version::Http10 {
            keep_alive = false;
        }
        if f.chunked_last && !f.chunked_not_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match f.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let base = &buf[..];
    // An empty reason may not point into `buf` (httparse hands out a literal `""`).
    let reason = match resp.reason {
        Some(r) if !r.is_empty() => range(base, r.as_bytes()),
        _ => (0, 0),
    };
    let fields = fields(base, resp.headers);
    let head = buf.split_to(len).freeze();
    Ok(Some(Response {
        status,
        version,
        framing,
        keep_alive,
        head,
        reason,
        fields,
    }))
}

/// Follows a chunked body through the bytes that carry it, so they can be relayed
/// unchanged while the end and the payload size are known.
#[derive(Debug, Default)]
pub struct ChunkedScanner {
    state: State,
    /// Payload bytes left in the current chunk.
    left: u64,
    /// Bytes of the current size line or trailer section so far (bounded).
    line: usize,
    trailers: usize,
    digits: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    Trailer {
        colon: bool,
    },
    TrailerLf {
        colon: bool,
    },
    FinalLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub consumed: usize,
    pub data: u64,
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChunkError(pub &'static str);

const MAX_SIZE_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

impl ChunkedScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans the next bytes of a chunked body.
    pub fn scan(&mut self, input: &[u8]) -> Result<Scan, ChunkError> {
        let mut i = 0;
        let mut data = 0u64;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data => {
                    let take = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    i += take;
                    data += take as u64;
                    self.left -= take as u64;
                    if self.left == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size => {
                    self.line += 1;
                    if let Some(d) = (b as char).to_digit(16) {
                        self.digits += 1;
                        self.left = self
                            .left
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(u64::from(d)))
                            .ok_or(ChunkError("the chunk size is too large"))?;
                    } else if self.digits == 0 {
                        return Err(ChunkError("a chunk size is not hexadecimal"));
                    } else if b == b';' {
                        self.state = State::Extension;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err(ChunkError("a chunk size line is malformed"));
                    }
                }
                State::Extension => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || b == 0 {
                        return Err(ChunkError("a chunk extension is malformed"));
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("a chunk size line does not end with CRLF"));
                    }
                    self.line = 0;
                    self.digits = 0;
                    self.state = if self.left == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data is not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data is not followed by CRLF"));
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.trailers += 1;
                    if b == b'\r' {
                        self.state = State::FinalLf;
                    } else if b == b'\n' || b == b' ' || b == b'\t' {
                        return Err(ChunkError("a trailer line is malformed"));
                    } else {
                        self.state = State::Trailer { colon: b == b':' };
                    }
                }
                State::Trailer { colon } => {
                    self.trailers += 1;
                    if b == b'\r' {
                        self.state = State::TrailerLf { colon };
                    } else if b == b'\n' || b == 0 {
                        return Err(ChunkError("a trailer line is malformed"));
                    } else {
                        self.state = State::Trailer {
                            colon: colon || b == b':',
                        };
                    }
                }
                State::TrailerLf { colon } => {
                    if b != b'\n' || !colon {
                        return Err(ChunkError("a trailer line is malformed"));
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError("the chunked body does not end with CRLF"));
                    }
                    self.state = State::Done;
                    i += 1;
                    break;
                }
            }
            if self.line > MAX_SIZE_LINE {
                return Err(ChunkError("a chunk size line is too long"));
            }
            if self.trailers > MAX_TRAILERS {
                return Err(ChunkError("the trailers are too large"));
            }
            i += 1;
        }
        Ok(Scan {
            consumed: i,
            data,
            done: self.state == State::Done,
        })
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
