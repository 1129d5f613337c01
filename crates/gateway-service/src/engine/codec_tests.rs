//! Unit tests for the HTTP/1.1 codec: request and response heads, and chunked bodies.

use super::*;
use bytes::{BufMut, BytesMut};
use http::Method;

const MAX: usize = 16 * 1024;

fn lossy(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

// ---------------------------------------------------------------------------------------
// Helpers: requests
// ---------------------------------------------------------------------------------------

fn request(s: &[u8]) -> Result<Option<Request>, RequestError> {
    parse_request(&mut BytesMut::from(s), MAX)
}

#[track_caller]
fn parsed(s: &[u8]) -> Request {
    match request(s) {
        Ok(Some(r)) => r,
        other => panic!("expected a request from {:?}, got {other:?}", lossy(s)),
    }
}

#[track_caller]
fn refused(s: &[u8]) -> RequestError {
    match request(s) {
        Err(e) => e,
        Ok(other) => panic!("expected {:?} to be refused, got {other:?}", lossy(s)),
    }
}

/// An HTTP/1.1 POST head with a Host field and `lines` (each ending in CRLF).
fn post_with(lines: &str) -> Vec<u8> {
    format!("POST /upload HTTP/1.1\r\nHost: example.com\r\n{lines}\r\n").into_bytes()
}

/// An HTTP/1.0 POST head (no Host) with `lines`.
fn post10_with(lines: &str) -> Vec<u8> {
    format!("POST /upload HTTP/1.0\r\n{lines}\r\n").into_bytes()
}

const MALFORMED: RequestError = RequestError::Invalid("the request head is malformed");
const CL_NOT_A_NUMBER: RequestError = RequestError::Invalid("Content-Length is not a number");
const CL_DIFFER: RequestError = RequestError::Invalid("Content-Length values differ");
const CL_TE: RequestError = RequestError::Invalid("Content-Length and Transfer-Encoding together");
const CHUNKED_NOT_LAST: RequestError =
    RequestError::Invalid("chunked must be the last transfer coding, once");
const ONLY_CHUNKED: RequestError =
    RequestError::NotImplemented("only the chunked transfer coding is accepted");
const NOT_ORIGIN_FORM: RequestError =
    RequestError::Invalid("the request target must be a path, or an http(s) URL");
const ONE_HOST: RequestError =
    RequestError::Invalid("an HTTP/1.1 request needs exactly one Host field");

// ---------------------------------------------------------------------------------------
// Helpers: responses
// ---------------------------------------------------------------------------------------

fn response(s: &[u8], method: &Method) -> Result<Option<Response>, ResponseError> {
    parse_response(&mut BytesMut::from(s), method, MAX)
}

#[track_caller]
fn answered(s: &[u8], method: &Method) -> Response {
    match response(s, method) {
        Ok(Some(r)) => r,
        other => panic!("expected a response from {:?}, got {other:?}", lossy(s)),
    }
}

#[track_caller]
fn answer_refused(s: &[u8]) -> ResponseError {
    match response(s, &Method::GET) {
        Err(e) => e,
        Ok(other) => panic!("expected {:?} to be refused, got {other:?}", lossy(s)),
    }
}

/// An HTTP/1.1 200 head with `lines`.
fn ok_with(lines: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\n{lines}\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------
// Helpers: chunked bodies
// ---------------------------------------------------------------------------------------

fn scan_at_once(input: &[u8]) -> Result<Scan, ChunkError> {
    ChunkedScanner::new().scan(input)
}

/// Feeds `input` one byte per call and adds the results up; stops after the end.
fn scan_bytewise(input: &[u8]) -> Result<Scan, ChunkError> {
    let mut scanner = ChunkedScanner::new();
    let mut total = Scan {
        consumed: 0,
        data: 0,
        done: false,
    };
    for (i, b) in input.iter().enumerate() {
        let s = scanner.scan(std::slice::from_ref(b))?;
        assert_eq!(
            s.consumed,
            1,
            "byte {i} of {:?} was not consumed",
            lossy(input)
        );
        assert!(s.data <= 1);
        total.consumed += s.consumed;
        total.data += s.data;
        total.done = s.done;
        if s.done {
            break;
        }
    }
    Ok(total)
}

/// `body` scans as one whole chunked body of `data` payload bytes, fed at once or bytewise.
fn assert_whole(body: &[u8], data: u64) {
    assert_eq!(
        scan_at_once(body).unwrap(),
        done(body.len(), data),
        "{:?}",
        lossy(body)
    );
    assert_eq!(scan_bytewise(body).unwrap(), done(body.len(), data));
}

/// Feeds `input` in two pieces split at `at`, as a relay would: the second call gets what
/// the first did not consume.
fn scan_split(input: &[u8], at: usize) -> Result<Scan, ChunkError> {
    let mut scanner = ChunkedScanner::new();
    let first = scanner.scan(&input[..at])?;
    let second = scanner.scan(&input[first.consumed..])?;
    Ok(Scan {
        consumed: first.consumed + second.consumed,
        data: first.data + second.data,
        done: second.done,
    })
}

/// The index of the byte at which byte-by-byte scanning fails, with the error.
#[track_caller]
fn error_at(input: &[u8]) -> (usize, ChunkError) {
    let mut scanner = ChunkedScanner::new();
    for (i, b) in input.iter().enumerate() {
        match scanner.scan(std::slice::from_ref(b)) {
            Ok(s) => assert!(!s.done, "{:?} ended at byte {i}", lossy(input)),
            Err(e) => return (i, e),
        }
    }
    panic!("{:?} was accepted", lossy(input));
}

#[track_caller]
fn chunk_refused(input: &[u8]) -> ChunkError {
    let at_once = scan_at_once(input).expect_err(&lossy(input));
    assert_eq!(
        scan_bytewise(input).unwrap_err(),
        at_once,
        "{:?}",
        lossy(input)
    );
    at_once
}

/// A chunked body of chunks of `sizes` (each filled with a letter), then the last chunk.
fn chunked_body(sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, n));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn done(consumed: usize, data: u64) -> Scan {
    Scan {
        consumed,
        data,
        done: true,
    }
}

// =======================================================================================
// Requests
// =======================================================================================

#[test]
fn simple_get_with_host() {
    let raw = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let r = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(r.method, Method::GET);
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.target(), "/a/b?x=1&y=2");
    assert_eq!(r.path(), "/a/b");
    assert_eq!(r.query(), Some("x=1&y=2"));
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive);
    assert!(!r.expect_continue);
    assert!(!r.upgrade);
    assert_eq!(&r.head()[..], &raw[..]);
    assert_eq!(r.header("host"), Some(&b"example.com"[..]));
    assert_eq!(r.header("HOST"), Some(&b"example.com"[..]));
    assert_eq!(r.header("accept"), Some(&b"*/*"[..]));
    assert_eq!(r.header("missing"), None);
    let all: Vec<_> = r.headers().collect();
    assert_eq!(
        all,
        vec![("Host", &b"example.com"[..]), ("Accept", &b"*/*"[..])]
    );
}

#[test]
fn path_without_query() {
    let r = parsed(b"GET /only/path HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.path(), "/only/path");
    assert_eq!(r.query(), None);
    let r = parsed(b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.path(), "/p");
    assert_eq!(r.query(), Some(""));
}

#[test]
fn headers_keep_order_duplicates_and_empty_values() {
    let r =
        parsed(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-Empty:\r\nX-Blank:   \r\n\r\n");
    let all: Vec<_> = r.headers().collect();
    assert_eq!(
        all,
        vec![
            ("Host", &b"a"[..]),
            ("X-A", &b"1"[..]),
            ("x-a", &b"2"[..]),
            ("X-Empty", &b""[..]),
            ("X-Blank", &b""[..]),
        ]
    );
    // `header` gives the first of several.
    assert_eq!(r.header("x-a"), Some(&b"1"[..]));
    assert_eq!(r.header("x-empty"), Some(&b""[..]));
}

#[test]
fn header_values_are_trimmed_of_optional_whitespace() {
    let r = parsed(b"GET / HTTP/1.1\r\nHost: \t example.com \t \r\nX: a  b\r\n\r\n");
    assert_eq!(r.header("host"), Some(&b"example.com"[..]));
    // Inner whitespace stays.
    assert_eq!(r.header("x"), Some(&b"a  b"[..]));
}

#[test]
fn opaque_header_values_are_kept_as_bytes() {
    let r = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Bin: caf\xc3\xa9 \xff\x80\r\n\r\n");
    assert_eq!(r.header("x-bin"), Some(&b"caf\xc3\xa9 \xff\x80"[..]));
}

#[test]
fn the_request_owns_its_head() {
    let raw = b"GET /owned HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nrest";
    let mut buf = BytesMut::from(&raw[..]);
    let r = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(&buf[..], b"rest");
    // Reusing the buffer does not disturb the parsed head.
    buf.clear();
    buf.put_slice(b"GARBAGE GARBAGE GARBAGE GARBAGE GARBAGE GARBAGE");
    assert_eq!(r.target(), "/owned");
    assert_eq!(r.header("x"), Some(&b"y"[..]));
    assert_eq!(&r.head()[..], &raw[..raw.len() - 4]);
}

#[test]
fn keep_alive_defaults_and_connection_tokens() {
    let cases: &[(&str, Option<&str>, bool)] = &[
        ("1.1", None, true),
        ("1.1", Some("close"), false),
        ("1.1", Some("Close"), false),
        ("1.1", Some("CLOSE"), false),
        ("1.1", Some("keep-alive"), true),
        ("1.1", Some("keep-alive, close"), false),
        ("1.1", Some("close, keep-alive"), false),
        ("1.1", Some("te,  close ,foo"), false),
        ("1.1", Some("closed"), true),
        ("1.1", Some("x-close"), true),
        ("1.0", None, false),
        ("1.0", Some("keep-alive"), true),
        ("1.0", Some("Keep-Alive"), true),
        ("1.0", Some("foo, keep-alive"), true),
        ("1.0", Some("keep-alive, close"), false),
        ("1.0", Some("close"), false),
        ("1.0", Some("keep-alive-ish"), false),
    ];
    for &(version, connection, expected) in cases {
        let line = connection.map_or(String::new(), |c| format!("Connection: {c}\r\n"));
        let raw = format!("GET / HTTP/{version}\r\nHost: a\r\n{line}\r\n");
        let r = parsed(raw.as_bytes());
        assert_eq!(r.keep_alive, expected, "{raw:?}");
        let want = if version == "1.1" {
            Version::Http11
        } else {
            Version::Http10
        };
        assert_eq!(r.version, want);
    }
    // Tokens spread over several Connection fields count too.
    let r =
        parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n");
    assert!(!r.keep_alive);
    let r = parsed(b"GET / HTTP/1.0\r\nConnection: foo\r\nConnection: keep-alive\r\n\r\n");
    assert!(r.keep_alive);
}

#[test]
fn every_prefix_of_a_head_is_incomplete() {
    let head: &[u8] = b"POST /submit?q=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\
        Connection: keep-alive\r\nX-Empty:\r\nExpect: 100-continue\r\n\r\n";
    let whole = parsed(head);
    for i in 0..head.len() {
        let mut buf = BytesMut::from(&head[..i]);
        let got = parse_request(&mut buf, MAX);
        assert_eq!(
            got.as_ref().map(Option::is_none),
            Ok(true),
            "prefix {i}: {:?} -> {got:?}",
            lossy(&head[..i])
        );
        assert_eq!(&buf[..], &head[..i], "an incomplete head was consumed");
    }
    // The same, as bytes arrive one at a time into one buffer, with body bytes behind.
    let mut wire = head.to_vec();
    wire.extend_from_slice(b"hello");
    let mut buf = BytesMut::new();
    let mut got = None;
    for (i, &b) in wire.iter().enumerate() {
        buf.put_u8(b);
        if let Some(r) = parse_request(&mut buf, MAX).unwrap() {
            assert_eq!(i + 1, head.len(), "parsed before the head was complete");
            got = Some(r);
            break;
        }
    }
    let r = got.expect("the complete head parses");
    assert!(buf.is_empty());
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.target(), whole.target());
    assert_eq!(r.framing, Framing::Length(5));
    assert_eq!(whole.framing, Framing::Length(5));
    assert!(r.keep_alive);
    assert!(r.expect_continue);
    assert_eq!(r.headers().count(), 5);
    assert_eq!(&r.head()[..], head);
}

#[test]
fn an_empty_buffer_is_incomplete() {
    assert!(matches!(parse_request(&mut BytesMut::new(), MAX), Ok(None)));
    assert!(matches!(
        parse_response(&mut BytesMut::new(), &Method::GET, MAX),
        Ok(None)
    ));
}

#[test]
fn pipelined_requests_are_left_in_the_buffer() {
    let first: &[u8] = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    let second: &[u8] = b"GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let mut buf = BytesMut::new();
    buf.put_slice(first);
    buf.put_slice(second);
    let r1 = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(r1.target(), "/one");
    assert!(r1.keep_alive);
    assert_eq!(&r1.head()[..], first);
    assert_eq!(&buf[..], second);
    let r2 = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(r2.target(), "/two");
    assert!(!r2.keep_alive);
    assert!(buf.is_empty());
    assert!(matches!(parse_request(&mut buf, MAX), Ok(None)));
}

#[test]
fn the_body_and_what_follows_stay_in_the_buffer() {
    let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let r = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(r.framing, Framing::Length(5));
    assert_eq!(&buf[..], b"helloGET / HTTP/1.1\r\n");
}

#[test]
fn leading_empty_lines_are_skipped() {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
    let raw = b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let r = parse_request(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(r.target(), "/x");
    assert_eq!(r.header("host"), Some(&b"a"[..]));
}

#[test]
fn a_head_larger_than_max_head_is_refused() {
    let head = b"GET /path HTTP/1.1\r\nHost: example.com\r\nX-Pad: 0123456789\r\n\r\n";
    let len = head.len();
    let with = |bytes: &[u8], max: usize| parse_request(&mut BytesMut::from(bytes), max);
    // Exactly at the limit is fine; one byte over is not, even when complete.
    assert!(with(head, len).unwrap().is_some());
    assert_eq!(with(head, len - 1).unwrap_err(), RequestError::HeadTooLarge);
    // An incomplete head that already fills the limit can never fit.
    assert_eq!(
        with(&head[..len - 1], len - 1).unwrap_err(),
        RequestError::HeadTooLarge
    );
    assert!(matches!(with(&head[..len - 2], len - 1), Ok(None)));
    // A flood of bytes with no end of head.
    let flood = vec![b'a'; 100];
    assert_eq!(with(&flood, 64).unwrap_err(), RequestError::HeadTooLarge);
    // Body bytes after the head do not count against the limit.
    let mut with_body = head.to_vec();
    with_body.extend(std::iter::repeat_n(b'x', 10 * len));
    let mut buf = BytesMut::from(&with_body[..]);
    assert!(parse_request(&mut buf, len).unwrap().is_some());
    assert_eq!(buf.len(), 10 * len);
}

#[test]
fn too_many_headers_are_refused() {
    let head_with = |extra: usize| {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..extra {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    let fits = head_with(MAX_HEADERS - 1);
    let r = parse_request(&mut BytesMut::from(&fits[..]), 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(r.headers().count(), MAX_HEADERS);
    let over = head_with(MAX_HEADERS);
    assert_eq!(
        parse_request(&mut BytesMut::from(&over[..]), 1 << 20).unwrap_err(),
        RequestError::TooManyHeaders
    );
    // Detected before the head is complete.
    let partial = &over[..over.len() - 2];
    assert_eq!(
        parse_request(&mut BytesMut::from(partial), 1 << 20).unwrap_err(),
        RequestError::TooManyHeaders
    );
}

#[test]
fn content_length_frames_the_body() {
    assert_eq!(
        parsed(&post_with("Content-Length: 5\r\n")).framing,
        Framing::Length(5)
    );
    assert_eq!(
        parsed(&post_with("content-length: 12\r\n")).framing,
        Framing::Length(12)
    );
    assert_eq!(
        parsed(&post_with("Content-Length: 0\r\n")).framing,
        Framing::Empty
    );
    assert_eq!(
        parsed(&post_with("Content-Length: 007\r\n")).framing,
        Framing::Length(7)
    );
    assert_eq!(
        parsed(&post_with("Content-Length: 18446744073709551615\r\n")).framing,
        Framing::Length(u64::MAX)
    );
    // No body fields at all: no body.
    assert_eq!(parsed(&post_with("")).framing, Framing::Empty);
    assert_eq!(
        parsed(&post10_with("Content-Length: 3\r\n")).framing,
        Framing::Length(3)
    );
}

#[test]
fn bad_content_length_values_are_refused() {
    // RFC 9112 §6.3 (5): an invalid Content-Length is an unrecoverable framing error.
    for v in [
        "+5", "-1", "0x5", "5a", "a5", "5 5", "5.0", "1e3", "", ",", "5,", ",5", "5,,5", "\"5\"",
    ] {
        let raw = post_with(&format!("Content-Length: {v}\r\n"));
        assert_eq!(refused(&raw), CL_NOT_A_NUMBER, "{v:?}");
    }
    // Not ASCII digits (obs-text, or full-width digits).
    assert_eq!(
        refused(&post_with("Content-Length: 5\u{ff15}\r\n")),
        CL_NOT_A_NUMBER
    );
    let mut raw = post_with("");
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(b"Content-Length: 5\xff\r\n\r\n");
    assert_eq!(refused(&raw), CL_NOT_A_NUMBER);
    // More than u64 holds.
    assert_eq!(
        refused(&post_with("Content-Length: 18446744073709551616\r\n")),
        RequestError::Invalid("Content-Length is too large")
    );
    assert_eq!(
        refused(&post_with("Content-Length: 99999999999999999999999999\r\n")),
        RequestError::Invalid("Content-Length is too large")
    );
}

#[test]
fn differing_content_lengths_are_refused_equal_ones_merge() {
    // RFC 9112 §6.3 (5) allows a list of identical values, processed as that one value;
    // anything else is unrecoverable.
    assert_eq!(refused(&post_with("Content-Length: 5, 6\r\n")), CL_DIFFER);
    assert_eq!(refused(&post_with("Content-Length: 5,6\r\n")), CL_DIFFER);
    assert_eq!(refused(&post_with("Content-Length: 0, 5\r\n")), CL_DIFFER);
    assert_eq!(
        refused(&post_with("Content-Length: 5\r\nContent-Length: 6\r\n")),
        CL_DIFFER
    );
    assert_eq!(
        refused(&post_with("Content-Length: 6\r\nContent-Length: 5\r\n")),
        CL_DIFFER
    );
    assert_eq!(
        refused(&post_with("Content-Length: 5\r\nContent-Length: 5, 7\r\n")),
        CL_DIFFER
    );
    // A bad value is refused even beside a good one.
    assert_eq!(
        refused(&post_with("Content-Length: 5\r\nContent-Length: +5\r\n")),
        CL_NOT_A_NUMBER
    );
    for same in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5,5\r\n",
        "Content-Length:5 ,\t5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\ncontent-length: 005\r\n",
    ] {
        assert_eq!(
            parsed(&post_with(same)).framing,
            Framing::Length(5),
            "{same:?}"
        );
    }
}

#[test]
fn transfer_encoding_chunked_frames_the_body() {
    for v in [
        "chunked",
        "Chunked",
        "CHUNKED",
        "chunked ",
        " chunked",
        "chunked\t",
        "\tchunked\t",
        "chunked,",
        ", chunked",
    ] {
        let raw = post_with(&format!("Transfer-Encoding: {v}\r\n"));
        assert_eq!(parsed(&raw).framing, Framing::Chunked, "{v:?}");
    }
    assert_eq!(
        parsed(&post_with("transfer-encoding: chunked\r\n")).framing,
        Framing::Chunked
    );
    // A GET may carry a chunked body too.
    let r = parsed(b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(r.framing, Framing::Chunked);
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    // RFC 9112 §6.1: the classic smuggling vector; refusing it is the safe choice.
    for lines in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 5\r\n",
    ] {
        assert_eq!(refused(&post_with(lines)), CL_TE, "{lines:?}");
    }
    // With a coding other than chunked, the combination is refused all the same.
    assert_eq!(
        refused(&post_with(
            "Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n"
        )),
        CL_TE
    );
}

#[test]
fn chunked_twice_or_not_last_is_refused() {
    for lines in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked,chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: gzip, chunked, chunked\r\n",
    ] {
        assert_eq!(refused(&post_with(lines)), CHUNKED_NOT_LAST, "{lines:?}");
    }
}

#[test]
fn transfer_codings_other_than_chunked_are_not_implemented() {
    for lines in [
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunkedx\r\n",
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        "Transfer-Encoding: chunked chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: deflate, chunked\r\n",
    ] {
        assert_eq!(refused(&post_with(lines)), ONLY_CHUNKED, "{lines:?}");
    }
}

#[test]
fn empty_transfer_encoding_is_refused() {
    for lines in [
        "Transfer-Encoding:\r\n",
        "Transfer-Encoding: \r\n",
        "Transfer-Encoding: ,\r\n",
        "Transfer-Encoding: , ,\t,\r\n",
    ] {
        assert_eq!(
            refused(&post_with(lines)),
            RequestError::Invalid("an empty Transfer-Encoding"),
            "{lines:?}"
        );
    }
}

#[test]
fn unreadable_transfer_encoding_is_refused() {
    let mut raw = post_with("");
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(b"Transfer-Encoding: chunked\xff\r\n\r\n");
    assert_eq!(
        refused(&raw),
        RequestError::Invalid("Transfer-Encoding is not readable")
    );
}

#[test]
fn transfer_encoding_in_http_1_0_is_refused() {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    let te10 = RequestError::Invalid("Transfer-Encoding is not allowed in HTTP/1.0");
    assert_eq!(
        refused(&post10_with("Transfer-Encoding: chunked\r\n")),
        te10
    );
    assert_eq!(
        refused(&post10_with(
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"
        )),
        te10
    );
    assert_eq!(refused(&post10_with("Transfer-Encoding: gzip\r\n")), te10);
    assert_eq!(
        refused(&post10_with("Host: a\r\nTransfer-Encoding: chunked\r\n")),
        te10
    );
}

#[test]
fn control_characters_in_header_values_are_refused() {
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\0\r\n\r\n",
    ] {
        assert_eq!(refused(raw), MALFORMED, "{:?}", lossy(raw));
    }
}

#[test]
fn a_bare_lf_ends_a_field_and_never_hides_one() {
    // RFC 9112 §2.2 lets a recipient take a lone LF as a line end. The gateway writes heads
    // anew with CRLF, so what it saw is what the upstream sees: a field after a bare LF is a
    // field of its own, and counts for framing.
    let r = parsed(b"POST / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(r.header("host"), Some(&b"a"[..]));
    assert_eq!(r.framing, Framing::Chunked);
    assert!(
        r.headers()
            .all(|(_, v)| !v.contains(&b'\n') && !v.contains(&b'\r'))
    );
    let r = parsed(b"GET / HTTP/1.1\nHost: a\n\n");
    assert_eq!(r.header("host"), Some(&b"a"[..]));
    // So smuggling Content-Length behind a bare LF still meets the CL + TE check.
    assert_eq!(
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nX: 1\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        CL_TE
    );
}

#[test]
fn obs_fold_is_refused() {
    // RFC 9112 §5.2: a server MUST reject obs-fold (or replace it); refusing is the choice.
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    ] {
        assert_eq!(refused(raw), MALFORMED, "{:?}", lossy(raw));
    }
}

#[test]
fn malformed_field_names_are_refused() {
    // RFC 9112 §5.1: whitespace between a field name and the colon MUST be rejected.
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX\0: 1\r\n\r\n",
    ] {
        assert_eq!(refused(raw), MALFORMED, "{:?}", lossy(raw));
    }
}

#[test]
fn host_is_required_once_in_http_1_1() {
    assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), ONE_HOST);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n"), ONE_HOST);
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        ONE_HOST
    );
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        ONE_HOST
    );
    // An empty Host is one Host field (RFC 9112 §3.2 allows it when there's no authority).
    assert_eq!(
        parsed(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").header("host"),
        Some(&b""[..])
    );
    // HTTP/1.0 may go without, but not with two.
    let r = parsed(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.version, Version::Http10);
    assert_eq!(r.header("host"), None);
    assert!(
        parsed(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
            .header("host")
            .is_some()
    );
    assert_eq!(
        refused(b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n"),
        RequestError::Invalid("more than one Host field")
    );
}

#[test]
fn absolute_form_is_served_and_its_authority_stands_in_for_host() {
    // A server must accept absolute-form (RFC 9112 §3.2.2) and take the host from it,
    // ignoring the Host field.
    let r = parsed(b"GET http://api.example.com/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(r.path(), "/a/b");
    assert_eq!(r.query(), Some("x=1"));
    assert_eq!(r.target(), "/a/b?x=1");
    assert_eq!(r.host(), Some(&b"api.example.com"[..]));
    assert_eq!(
        r.header("host"),
        Some(&b"other"[..]),
        "the field itself is kept as sent"
    );
    // Scheme in any case, a port, an empty path (`/`), a query on the root.
    let r = parsed(b"GET HTTPS://h:8443 HTTP/1.1\r\nHost: h:8443\r\n\r\n");
    assert_eq!((r.path(), r.query()), ("/", None));
    assert_eq!(r.target(), "/");
    assert_eq!(r.host(), Some(&b"h:8443"[..]));
    let r = parsed(b"GET http://h?q=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.path(), r.query()), ("/", Some("q=2")));
    assert_eq!(r.target(), "/?q=2");
    // Origin form: the host is the Host field.
    let r = parsed(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.host(), Some(&b"a"[..]));
    // HTTP/1.1 still needs its Host field; user information and an empty host are refused.
    assert_eq!(refused(b"GET http://h/ HTTP/1.1\r\n\r\n"), ONE_HOST);
    for raw in [
        &b"GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://?x HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(
            refused(raw),
            RequestError::Invalid("an absolute-form target needs a host and no user information"),
            "{:?}",
            lossy(raw)
        );
    }
}

#[test]
fn other_target_forms_are_refused() {
    // Asterisk form (§3.2.4), a bare authority, other schemes, a query with no path.
    for raw in [
        &b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http:/example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET ?q HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(refused(raw), NOT_ORIGIN_FORM, "{:?}", lossy(raw));
    }
    // OPTIONS with a path is an ordinary request.
    let r = parsed(b"OPTIONS /api HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.method, Method::OPTIONS);
    assert_eq!(r.path(), "/api");
}

#[test]
fn fragments_and_bad_bytes_in_the_target_are_refused() {
    for raw in [
        &b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            matches!(refused(raw), RequestError::Invalid(_)),
            "{:?}",
            lossy(raw)
        );
    }
}

#[test]
fn connect_is_not_served() {
    // CONNECT's target is authority-form (RFC 9110 §9.3.6), which is not origin form; and a
    // CONNECT in origin form must not reach an upstream either: a 2xx answer would turn the
    // upstream connection into a tunnel (RFC 9112 §6.3 (2)) that the response framing does
    // not model, so it could go back into the pool.
    let not_served = RequestError::NotImplemented("the CONNECT method is not served");
    assert_eq!(
        refused(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        not_served
    );
    assert_eq!(
        refused(b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"),
        not_served
    );
    assert_eq!(refused(b"CONNECT /x HTTP/1.0\r\n\r\n"), not_served);
}

#[test]
fn methods_are_tokens() {
    for m in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PURGE", "M-SEARCH",
    ] {
        let raw = format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(parsed(raw.as_bytes()).method.as_str(), m);
    }
    for raw in [
        &b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            matches!(refused(raw), RequestError::Invalid(_)),
            "{:?}",
            lossy(raw)
        );
    }
}

#[test]
fn the_request_line_is_strict() {
    for raw in [
        &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r\nHost: a\r\n\r\n",
    ] {
        assert!(request(raw).is_err(), "{:?}", lossy(raw));
    }
}

#[test]
fn only_http_1_0_and_1_1_are_served() {
    for v in [
        "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3", "http/1.1", "HTTX/1.1",
    ] {
        let raw = format!("GET / {v}\r\nHost: a\r\n\r\n");
        assert_eq!(refused(raw.as_bytes()), RequestError::Version, "{v}");
    }
}

#[test]
fn expect_100_continue_is_detected() {
    assert!(parsed(&post_with("Expect: 100-continue\r\nContent-Length: 5\r\n")).expect_continue);
    assert!(parsed(&post_with("Expect: 100-Continue\r\n")).expect_continue);
    assert!(parsed(&post_with("expect:  100-continue \r\n")).expect_continue);
    assert!(!parsed(&post_with("Content-Length: 5\r\n")).expect_continue);
    assert!(!parsed(&post_with("Expect: 200-ok\r\n")).expect_continue);
    assert!(!parsed(&post_with("Expect: 100-continuex\r\n")).expect_continue);
    assert!(!parsed(&post_with("X-Expect: 100-continue\r\n")).expect_continue);
}

#[test]
fn expect_100_continue_is_ignored_in_http_1_0() {
    // RFC 9110 §10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0
    // request, and §15.2: it MUST NOT send a 1xx response to an HTTP/1.0 client (which would
    // read `HTTP/1.1 100 Continue` as its answer).
    let r = parsed(&post10_with(
        "Expect: 100-continue\r\nContent-Length: 5\r\n",
    ));
    assert_eq!(r.version, Version::Http10);
    assert!(!r.expect_continue);
}

#[test]
fn upgrade_is_detected() {
    let r =
        parsed(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert!(r.upgrade);
    assert!(r.keep_alive);
    assert!(parsed(b"GET / HTTP/1.1\r\nHost: a\r\nupgrade: h2c\r\n\r\n").upgrade);
    // Only an Upgrade field counts, not the token in Connection.
    assert!(!parsed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").upgrade);
    assert!(!parsed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Upgrade: 1\r\n\r\n").upgrade);
}

#[test]
fn errors_read_well() {
    assert_eq!(
        RequestError::HeadTooLarge.to_string(),
        "the request head is too large"
    );
    assert_eq!(
        CL_TE.to_string(),
        "Content-Length and Transfer-Encoding together"
    );
    assert_eq!(
        RequestError::Version.to_string(),
        "only HTTP/1.0 and HTTP/1.1 are served"
    );
    assert_eq!(ChunkError("x").to_string(), "x");
}

// =======================================================================================
// Responses
// =======================================================================================

#[test]
fn a_simple_response() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: yes\r\n\r\nhello";
    let mut buf = BytesMut::from(&raw[..]);
    let r = parse_response(&mut buf, &Method::GET, MAX)
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..], b"hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.reason(), "OK");
    assert_eq!(r.framing, Framing::Length(5));
    assert!(r.keep_alive);
    assert_eq!(&r.head()[..], &raw[..raw.len() - 5]);
    assert_eq!(r.header("x-up"), Some(&b"yes"[..]));
    assert_eq!(r.header("content-length"), Some(&b"5"[..]));
    let all: Vec<_> = r.headers().collect();
    assert_eq!(
        all,
        vec![("Content-Length", &b"5"[..]), ("X-Up", &b"yes"[..])]
    );
}

#[test]
fn status_lines() {
    let r = answered(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        &Method::GET,
    );
    assert_eq!((r.status, r.reason()), (404, "Not Found"));
    let r = answered(
        b"HTTP/1.0 503 Service  Unavailable \t\r\nContent-Length: 0\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.version, Version::Http10);
    assert!(r.reason().starts_with("Service  Unavailable"));
    // An empty reason after the space.
    let r = answered(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", &Method::GET);
    assert_eq!((r.status, r.reason()), (200, ""));
    // A reason with obs-text is read as empty.
    let r = answered(
        b"HTTP/1.1 200 Caf\xe9\r\nContent-Length: 0\r\n\r\n",
        &Method::GET,
    );
    assert_eq!((r.status, r.reason()), (200, ""));
}

#[test]
fn a_status_line_without_reason_does_not_panic() {
    // httparse hands out a reason that does not point into the buffer here.
    let r = answered(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", &Method::GET);
    assert_eq!((r.status, r.reason()), (200, ""));
    assert_eq!(r.framing, Framing::Length(2));
    assert_eq!(r.header("content-length"), Some(&b"2"[..]));
    let r = answered(b"HTTP/1.1 204\r\n\r\n", &Method::GET);
    assert_eq!((r.status, r.reason()), (204, ""));
}

#[test]
fn the_status_must_be_in_range() {
    for raw in [
        &b"HTTP/1.1 600 Odd\r\n\r\n"[..],
        b"HTTP/1.1 099 Odd\r\n\r\n",
        b"HTTP/1.1 000 Odd\r\n\r\n",
        b"HTTP/1.1 999 Odd\r\n\r\n",
    ] {
        assert_eq!(
            answer_refused(raw),
            ResponseError::Invalid("the status is out of range"),
            "{:?}",
            lossy(raw)
        );
    }
    for raw in [
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
    ] {
        assert_eq!(
            answer_refused(raw),
            ResponseError::Invalid("the answer head is malformed"),
            "{:?}",
            lossy(raw)
        );
    }
    assert_eq!(
        answered(b"HTTP/1.1 599 X\r\n\r\n", &Method::GET).status,
        599
    );
}

#[test]
fn only_http_1_x_answers() {
    for raw in [
        &b"HTTP/2.0 200 OK\r\n\r\n"[..],
        b"HTTP/1.2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ] {
        assert!(
            matches!(answer_refused(raw), ResponseError::Invalid(_)),
            "{:?}",
            lossy(raw)
        );
    }
}

#[test]
fn answers_without_a_body() {
    // RFC 9112 §6.3 (1): HEAD, 1xx, 204 and 304 answers end with their head, whatever
    // their fields say.
    let lines = "Content-Length: 100\r\n";
    let r = answered(&ok_with(lines), &Method::HEAD);
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive);
    let r = answered(&ok_with("Transfer-Encoding: chunked\r\n"), &Method::HEAD);
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive);
    // A HEAD answer without length does not read until close either.
    let r = answered(&ok_with(""), &Method::HEAD);
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive);
    for status in [100u16, 101, 102, 103, 199, 204, 304] {
        for lines in [
            "",
            "Content-Length: 100\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            let raw = format!("HTTP/1.1 {status} X\r\n{lines}\r\nNEXT");
            let mut buf = BytesMut::from(raw.as_bytes());
            let r = parse_response(&mut buf, &Method::GET, MAX)
                .unwrap()
                .unwrap();
            assert_eq!(r.status, status);
            assert_eq!(r.framing, Framing::Empty, "{raw:?}");
            assert!(r.keep_alive, "{raw:?}");
            assert_eq!(&buf[..], b"NEXT");
        }
    }
    // 205 and others do have a body.
    let r = answered(
        b"HTTP/1.1 205 Reset\r\nContent-Length: 3\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::Length(3));
}

#[test]
fn an_interim_answer_leaves_the_final_one_in_the_buffer() {
    let interim: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let last: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let mut buf = BytesMut::new();
    buf.put_slice(interim);
    buf.put_slice(last);
    let r = parse_response(&mut buf, &Method::POST, MAX)
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 100);
    assert_eq!(&buf[..], last);
    let r = parse_response(&mut buf, &Method::POST, MAX)
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.reason()), (201, "Created"));
    assert_eq!(r.framing, Framing::Length(2));
    assert_eq!(&buf[..], b"ok");
}

#[test]
fn response_content_length() {
    assert_eq!(
        answered(&ok_with("Content-Length: 42\r\n"), &Method::GET).framing,
        Framing::Length(42)
    );
    let r = answered(&ok_with("Content-Length: 0\r\n"), &Method::GET);
    assert_eq!(r.framing, Framing::Empty);
    assert!(r.keep_alive);
    assert_eq!(
        answered(
            &ok_with("Content-Length: 7, 7\r\nContent-Length: 7\r\n"),
            &Method::POST
        )
        .framing,
        Framing::Length(7)
    );
    let r = answered(
        &ok_with("Content-Length: 3\r\nConnection: close\r\n"),
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::Length(3));
    assert!(!r.keep_alive);
}

#[test]
fn response_chunked() {
    let r = answered(&ok_with("Transfer-Encoding: chunked\r\n"), &Method::GET);
    assert_eq!(r.framing, Framing::Chunked);
    assert!(r.keep_alive);
    // Chunked last after another coding still delimits the body (relayed unchanged).
    let r = answered(
        &ok_with("Transfer-Encoding: gzip, chunked\r\n"),
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::Chunked);
}

#[test]
fn response_until_close() {
    // RFC 9112 §6.3 (8): no length on a response: read until the server closes.
    for lines in ["", "Connection: keep-alive\r\n", "Connection: close\r\n"] {
        let r = answered(&ok_with(lines), &Method::GET);
        assert_eq!(r.framing, Framing::UntilClose, "{lines:?}");
        assert!(!r.keep_alive, "{lines:?}");
    }
    let r = answered(
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::UntilClose);
    assert!(!r.keep_alive);
    // RFC 9112 §6.3 (4): chunked not last (or not there) means until close too.
    for te in ["gzip", "chunked, gzip", "chunked, chunked", "", "xchunked"] {
        let r = answered(
            &ok_with(&format!("Transfer-Encoding: {te}\r\n")),
            &Method::GET,
        );
        assert_eq!(r.framing, Framing::UntilClose, "{te:?}");
        assert!(!r.keep_alive, "{te:?}");
    }
    let r = answered(
        &ok_with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::UntilClose);
}

#[test]
fn response_keep_alive() {
    let r = answered(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        &Method::GET,
    );
    assert!(!r.keep_alive);
    let r = answered(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
        &Method::GET,
    );
    assert!(r.keep_alive);
    let r = answered(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, close\r\n\r\n",
        &Method::GET,
    );
    assert!(!r.keep_alive);
}

#[test]
fn response_content_length_with_transfer_encoding() {
    // RFC 9112 §6.3 (3): Transfer-Encoding overrides Content-Length, and the connection
    // MUST be closed after the answer.
    for lines in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let r = answered(&ok_with(lines), &Method::GET);
        assert_eq!(r.framing, Framing::Chunked, "{lines:?}");
        assert!(!r.keep_alive, "{lines:?}");
    }
    let r = answered(
        &ok_with("Content-Length: 5\r\nTransfer-Encoding: gzip\r\n"),
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::UntilClose);
    assert!(!r.keep_alive);
}

#[test]
fn response_transfer_encoding_in_http_1_0_closes() {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the
    // connection MUST be closed after it (what the sender kept back could be misread).
    let r = answered(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
        &Method::GET,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.keep_alive);
}

#[test]
fn bad_content_length_in_a_response_is_refused() {
    for lines in [
        "Content-Length: abc\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: +5\r\n",
        "Content-Length: 0x5\r\n",
        "Content-Length: \r\n",
        "Content-Length: 5,\r\n",
    ] {
        assert_eq!(
            answer_refused(&ok_with(lines)),
            ResponseError::Invalid("Content-Length is not a number"),
            "{lines:?}"
        );
    }
    for lines in [
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        assert_eq!(
            answer_refused(&ok_with(lines)),
            ResponseError::Invalid("Content-Length values differ"),
            "{lines:?}"
        );
    }
    assert_eq!(
        answer_refused(&ok_with("Content-Length: 18446744073709551616\r\n")),
        ResponseError::Invalid("Content-Length is too large")
    );
    // Even where the body is known empty, a broken field means a broken upstream.
    assert!(response(&ok_with("Content-Length: x\r\n"), &Method::HEAD).is_err());
}

#[test]
fn malformed_response_heads_are_refused() {
    let malformed = ResponseError::Invalid("the answer head is malformed");
    for raw in [
        &b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
    ] {
        assert_eq!(answer_refused(raw), malformed, "{:?}", lossy(raw));
    }
    // Too many fields.
    let mut raw = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert!(parse_response(&mut BytesMut::from(raw.as_bytes()), &Method::GET, 1 << 20).is_err());
}

#[test]
fn every_prefix_of_a_response_head_is_incomplete() {
    let head: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    for i in 0..head.len() {
        let mut buf = BytesMut::from(&head[..i]);
        let got = parse_response(&mut buf, &Method::GET, MAX);
        assert_eq!(
            got.as_ref().map(Option::is_none),
            Ok(true),
            "prefix {i}: {:?} -> {got:?}",
            lossy(&head[..i])
        );
        assert_eq!(buf.len(), i);
    }
    let r = answered(head, &Method::GET);
    assert_eq!(r.framing, Framing::Chunked);
}

#[test]
fn a_response_head_larger_than_max_head_is_refused() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: 0123456789\r\n\r\n";
    let len = head.len();
    let with =
        |bytes: &[u8], max: usize| parse_response(&mut BytesMut::from(bytes), &Method::GET, max);
    assert!(with(head, len).unwrap().is_some());
    assert_eq!(
        with(&head[..len - 1], len - 1).unwrap_err(),
        ResponseError::HeadTooLarge
    );
    assert!(matches!(with(&head[..len - 2], len - 1), Ok(None)));
    // Complete, but over the limit: refused however the bytes arrived.
    assert_eq!(
        with(head, len - 1).unwrap_err(),
        ResponseError::HeadTooLarge
    );
    // The body does not count.
    let mut with_body = head.to_vec();
    with_body.extend(std::iter::repeat_n(b'x', 10 * len));
    assert!(with(&with_body, len).unwrap().is_some());
}

// =======================================================================================
// Chunked bodies
// =======================================================================================

#[test]
fn a_single_chunk() {
    let body = b"5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(scan_at_once(body).unwrap(), done(body.len(), 5));
    assert_eq!(scan_bytewise(body).unwrap(), done(body.len(), 5));
}

#[test]
fn only_the_last_chunk() {
    let body = b"0\r\n\r\n";
    assert_eq!(scan_at_once(body).unwrap(), done(5, 0));
    assert_eq!(scan_at_once(b"000\r\n\r\n").unwrap(), done(7, 0));
}

#[test]
fn many_chunks() {
    let sizes = [1, 2, 15, 16, 17, 255, 256, 4096, 3, 70_000];
    let body = chunked_body(&sizes);
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    assert_eq!(scan_at_once(&body).unwrap(), done(body.len(), total));
    assert_eq!(scan_bytewise(&body).unwrap(), done(body.len(), total));
}

#[test]
fn hex_digits_in_either_case_and_leading_zeros() {
    let body = b"a\r\n0123456789\r\nA\r\n0123456789\r\n00010\r\n0123456789abcdef\r\n0\r\n\r\n";
    assert_eq!(scan_at_once(body).unwrap(), done(body.len(), 36));
    // Many leading zeros neither overflow nor count as a big size.
    let mut body = vec![b'0'; 100];
    body.extend_from_slice(b"3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(scan_at_once(&body).unwrap(), done(body.len(), 3));
}

#[test]
fn chunk_extensions_are_skipped() {
    for body in [
        &b"5;ext=1\r\nhello\r\n0\r\n\r\n"[..],
        b"5;a\r\nhello\r\n0;last\r\n\r\n",
        b"5;a=\"quoted; value\";b=2\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_whole(body, 5);
    }
}

#[test]
fn malformed_chunk_extensions_are_refused() {
    let ext = ChunkError("a chunk extension is malformed");
    assert_eq!(chunk_refused(b"5;ext\nhello\r\n0\r\n\r\n"), ext);
    assert_eq!(chunk_refused(b"5;e\0xt\r\nhello\r\n0\r\n\r\n"), ext);
    // A CR in an extension must end the line.
    assert_eq!(
        chunk_refused(b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        ChunkError("a chunk size line does not end with CRLF")
    );
}

#[test]
fn trailers() {
    for body in [
        &b"5\r\nhello\r\n0\r\nX-Sum: abc\r\n\r\n"[..],
        b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nX-Other:1\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-Empty:\r\n\r\n",
        b"5\r\nhello\r\n0;ext\r\nA: b: c\r\n\r\n",
    ] {
        assert_whole(body, 5);
    }
}

#[test]
fn malformed_trailers_are_refused() {
    let bad = ChunkError("a trailer line is malformed");
    for body in [
        // No colon.
        &b"0\r\nNoColon\r\n\r\n"[..],
        b"0\r\nX-Sum: 1\r\nNoColon\r\n\r\n",
        // obs-fold.
        b"0\r\nX: a\r\n b\r\n\r\n",
        b"0\r\n\tX: a\r\n\r\n",
        // Bare LF.
        b"0\r\nX: a\n\r\n",
        b"0\r\n\n",
        // Bare CR and NUL.
        b"0\r\nX: a\rb\r\n\r\n",
        b"0\r\nX: a\0\r\n\r\n",
    ] {
        assert_eq!(chunk_refused(body), bad, "{:?}", lossy(body));
    }
}

#[test]
fn the_final_crlf_is_required() {
    assert_eq!(
        chunk_refused(b"0\r\n\rX"),
        ChunkError("the chunked body does not end with CRLF")
    );
    assert_eq!(
        chunk_refused(b"0\r\nX: 1\r\n\rX"),
        ChunkError("the chunked body does not end with CRLF")
    );
}

#[test]
fn bytewise_and_split_feeding_match_feeding_at_once() {
    let bodies: Vec<Vec<u8>> = vec![
        b"5\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0;e\r\nT: v\r\nU: w\r\n\r\n"
            .to_vec(),
        chunked_body(&[3, 300, 1, 17]),
        b"0\r\n\r\n".to_vec(),
    ];
    for body in &bodies {
        let whole = scan_at_once(body).unwrap();
        assert!(whole.done);
        assert_eq!(whole.consumed, body.len());
        assert_eq!(scan_bytewise(body).unwrap(), whole);
        for at in 0..=body.len() {
            assert_eq!(scan_split(body, at).unwrap(), whole, "split at {at}");
        }
    }
}

#[test]
fn an_unfinished_body_is_consumed_and_not_done() {
    let body = b"5;x\r\nhello\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n";
    for i in 0..body.len() {
        let s = scan_at_once(&body[..i]).unwrap();
        assert!(!s.done, "done after {i} bytes");
        assert_eq!(s.consumed, i);
    }
    assert_eq!(
        scan_at_once(b"").unwrap(),
        Scan {
            consumed: 0,
            data: 0,
            done: false
        }
    );
}

#[test]
fn data_counts_only_payload() {
    let mut scanner = ChunkedScanner::new();
    let s = scanner.scan(b"a\r\n01234").unwrap();
    assert_eq!((s.consumed, s.data, s.done), (8, 5, false));
    let s = scanner.scan(b"56789\r\n").unwrap();
    assert_eq!((s.consumed, s.data, s.done), (7, 5, false));
    let s = scanner.scan(b"0\r\n\r\n").unwrap();
    assert_eq!((s.consumed, s.data, s.done), (5, 0, true));
}

#[test]
fn consumed_stops_at_the_end_of_the_body() {
    let body: &[u8] = b"5\r\nhello\r\n0\r\nT: v\r\n\r\n";
    let next: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut wire = body.to_vec();
    wire.extend_from_slice(next);
    let mut scanner = ChunkedScanner::new();
    let s = scanner.scan(&wire).unwrap();
    assert_eq!(s, done(body.len(), 5));
    assert_eq!(&wire[s.consumed..], next);
    // Once done, nothing more is taken.
    let again = scanner.scan(&wire[s.consumed..]).unwrap();
    assert_eq!(again, done(0, 0));
    // Also when the end arrives split, with the next request in the same read.
    for at in 0..body.len() {
        let mut scanner = ChunkedScanner::new();
        let first = scanner.scan(&wire[..at]).unwrap();
        assert_eq!(first.consumed, at);
        assert!(!first.done);
        let second = scanner.scan(&wire[at..]).unwrap();
        assert!(second.done);
        assert_eq!(at + second.consumed, body.len(), "split at {at}");
    }
    // The next bytes may even look like chunked framing.
    let mut wire = b"0\r\n\r\n".to_vec();
    wire.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(scan_at_once(&wire).unwrap(), done(5, 0));
}

#[test]
fn a_relay_loop_over_small_reads() {
    // As `wire::relay` does: scan what is pending, advance by `consumed`, read more.
    let body = chunked_body(&[10, 1000, 7]);
    let mut wire = body.clone();
    wire.extend_from_slice(b"NEXT");
    let mut scanner = ChunkedScanner::new();
    let mut pending = BytesMut::new();
    let mut relayed = Vec::new();
    let mut payload = 0u64;
    let mut reads = wire.chunks(7);
    loop {
        let s = scanner.scan(&pending).unwrap();
        payload += s.data;
        relayed.extend_from_slice(&pending.split_to(s.consumed));
        if s.done {
            break;
        }
        pending.put_slice(reads.next().expect("the body ends before the input"));
    }
    assert_eq!(relayed, body);
    assert_eq!(payload, 1017);
    let rest: Vec<u8> = pending
        .iter()
        .copied()
        .chain(reads.flatten().copied())
        .collect();
    assert_eq!(rest, b"NEXT");
}

#[test]
fn invalid_chunk_sizes_are_refused() {
    let not_hex = ChunkError("a chunk size is not hexadecimal");
    let malformed = ChunkError("a chunk size line is malformed");
    for body in [
        &b"g\r\n"[..],
        b"\r\n",
        b" 5\r\nhello\r\n",
        b"\t5\r\n",
        b";ext\r\n",
        b"-5\r\n",
        b"+5\r\n",
        b"\n",
    ] {
        assert_eq!(chunk_refused(body), not_hex, "{:?}", lossy(body));
    }
    for body in [
        &b"0x10\r\n"[..],
        b"5 \r\nhello\r\n",
        b"5\t\r\n",
        b"5 ;ext\r\n",
        b"5g\r\n",
        b"5\0\r\n",
        // Bare LF after the size.
        b"5\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(chunk_refused(body), malformed, "{:?}", lossy(body));
    }
    assert_eq!(
        chunk_refused(b"5\r\rhello"),
        ChunkError("a chunk size line does not end with CRLF")
    );
    // Caught at the offending byte, not later.
    assert_eq!(error_at(b"0x10\r\n").0, 1);
    assert_eq!(error_at(b"5 \r\n").0, 1);
}

#[test]
fn chunk_sizes_beyond_u64_are_refused() {
    let too_large = ChunkError("the chunk size is too large");
    // 2^64.
    assert_eq!(chunk_refused(b"10000000000000000\r\n"), too_large);
    assert_eq!(chunk_refused(b"fffffffffffffffff\r\n"), too_large);
    assert_eq!(error_at(b"10000000000000000\r\n").0, 16);
    // u64::MAX itself is a size, and data flows.
    let mut scanner = ChunkedScanner::new();
    let s = scanner.scan(b"ffffffffffffffff\r\nabc").unwrap();
    assert_eq!((s.consumed, s.data, s.done), (21, 3, false));
    let s = scanner.scan(&[b'x'; 1000]).unwrap();
    assert_eq!((s.consumed, s.data, s.done), (1000, 1000, false));
}

#[test]
fn chunk_data_must_be_followed_by_crlf() {
    let no_crlf = ChunkError("chunk data is not followed by CRLF");
    for body in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"5\r\nhello\rX0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"5\r\nhello!\r\n0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(chunk_refused(body), no_crlf, "{:?}", lossy(body));
    }
    // The data before the bad byte was counted: nothing is consumed past the error.
    assert_eq!(error_at(b"5\r\nhelloX").0, 8);
}

#[test]
fn an_overlong_size_line_is_refused() {
    let too_long = ChunkError("a chunk size line is too long");
    // The line's bytes up to and with its CR are counted.
    let line = |ext: usize| {
        let mut b = b"5;".to_vec();
        b.extend(std::iter::repeat_n(b'x', ext));
        b.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        b
    };
    let fits = line(MAX_SIZE_LINE - 3);
    assert_eq!(scan_at_once(&fits).unwrap(), done(fits.len(), 5));
    assert_eq!(chunk_refused(&line(MAX_SIZE_LINE - 2)), too_long);
    assert_eq!(chunk_refused(&line(100_000)), too_long);
    // Endless zeros are not a way around it.
    let zeros = vec![b'0'; MAX_SIZE_LINE + 1];
    assert_eq!(chunk_refused(&zeros), too_long);
    // The count starts over with each chunk.
    let mut many = Vec::new();
    for _ in 0..10 {
        many.extend_from_slice(b"1;");
        many.extend(std::iter::repeat_n(b'e', MAX_SIZE_LINE - 3));
        many.extend_from_slice(b"\r\nz\r\n");
    }
    many.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(scan_at_once(&many).unwrap(), done(many.len(), 10));
}

#[test]
fn oversized_trailers_are_refused() {
    let too_large = ChunkError("the trailers are too large");
    // Counted: every byte of the trailer section but the LFs.
    let with_trailer = |pad: usize| {
        let mut b = b"0\r\nX:".to_vec();
        b.extend(std::iter::repeat_n(b'v', pad));
        b.extend_from_slice(b"\r\n\r\n");
        b
    };
    let fits = with_trailer(MAX_TRAILERS - 4);
    assert_eq!(scan_at_once(&fits).unwrap(), done(fits.len(), 0));
    assert_eq!(chunk_refused(&with_trailer(MAX_TRAILERS - 3)), too_large);
    // Many small trailers add up.
    let mut many = b"0\r\n".to_vec();
    while many.len() < 2 * MAX_TRAILERS {
        many.extend_from_slice(b"A: b\r\n");
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(chunk_refused(&many), too_large);
}
