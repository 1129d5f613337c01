//! Bytes on the wire: reading more of a stream with a deadline, writing header lines, and
//! relaying a body from one connection to another as its framing says, unchanged.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{ChunkedScanner, Framing};

/// Reads at least a little into `buf`: `Ok(0)` at the end of the stream.
pub async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limit: Option<Duration>,
) -> Result<usize, Failure> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    read_more_until(stream, buf, deadline).await
}

/// As `read_more`, by a deadline rather than a duration (no clock read per call).
pub async fn read_more_until(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Option<tokio::time::Instant>,
) -> Result<usize, Failure> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let read = stream.read_buf(buf);
    let result = match deadline {
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .map_err(|_| Failure::Timeout)?,
        None => read.await,
    };
    result.map_err(|_| Failure::Io)
}

/// Writes all of `bytes`, each write allowed `limit`.
pub async fn write_all(
    stream: &mut TcpStream,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), Failure> {
    // Mostly the socket takes it all at once: no timer (nor clock read) for that.
    let bytes = match stream.try_write(bytes) {
        Ok(n) if n == bytes.len() => return Ok(()),
        Ok(n) => &bytes[n..],
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => bytes,
        Err(_) => return Err(Failure::Io),
    };
    tokio::time::timeout(limit, stream.write_all(bytes))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|_| Failure::Io)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Io,
    Timeout,
}

/// `name: value\r\n`.
pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why a body could not be relayed whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// The sending side ended, failed or went quiet before the body's end.
    Source(Failure),
    /// The receiving side failed or stopped reading.
    Sink(Failure),
    /// More payload than `limit`.
    TooLarge,
    /// Chunked framing that does not parse.
    Malformed,
}

/// Where a relay reads and how patiently.
pub struct Source<'a> {
    pub stream: &'a mut TcpStream,
    /// Bytes already read from `stream` (the body's start, perhaps more); what follows the
    /// body stays here.
    pub pending: &'a mut BytesMut,
    pub idle: Option<Duration>,
}

/// Relays a body framed as `framing` from `from` to `to`, sending `head` first (in the same
/// write as the body's first bytes when they are at hand). Returns the payload bytes.
pub async fn relay(
    from: Source<'_>,
    to: &mut TcpStream,
    head: &mut Vec<u8>,
    framing: Framing,
    limit: Option<u64>,
    write_limit: Duration,
) -> Result<u64, RelayError> {
    let Source {
        stream,
        pending,
        idle,
    } = from;
    let too_large = |n: u64| limit.is_some_and(|l| n > l);
    let mut payload = 0u64;
    match framing {
        Framing::Empty => {
            flush_head(to, head, write_limit).await?;
        }
        Framing::Length(n) => {
            if too_large(n) {
                return Err(RelayError::TooLarge);
            }
            let mut left = n;
            while left > 0 {
                if pending.is_empty() {
                    flush_head(to, head, write_limit).await?;
                    match read_more(stream, pending, idle).await {
                        Ok(0) => return Err(RelayError::Source(Failure::Io)),
                        Ok(_) => {}
                        Err(f) => return Err(RelayError::Source(f)),
                    }
                }
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(pending.len());
                send(to, head, &pending[..take], write_limit).await?;
                pending.advance(take);
                left -= take as u64;
                payload += take as u64;
            }
            flush_head(to, head, write_limit).await?;
        }
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::new();
            loop {
                if pending.is_empty() {
                    flush_head(to, head, write_limit).await?;
                    match read_more(stream, pending, idle).await {
                        Ok(0) => return Err(RelayError::Source(Failure::Io)),
                        Ok(_) => {}
                        Err(f) => return Err(RelayError::Source(f)),
                    }
                }
                let scan = scanner.scan(pending).map_err(|_| RelayError::Malformed)?;
                payload += scan.data;
                if too_large(payload) {
                    return Err(RelayError::TooLarge);
                }
                send(to, head, &pending[..scan.consumed], write_limit).await?;
                pending.advance(scan.consumed);
                if scan.done {
                    break;
                }
            }
            flush_head(to, head, write_limit).await?;
        }
        Framing::UntilClose => loop {
            if pending.is_empty() {
                flush_head(to, head, write_limit).await?;
                match read_more(stream, pending, idle).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(f) => return Err(RelayError::Source(f)),
                }
            }
            payload += pending.len() as u64;
            if too_large(payload) {
                return Err(RelayError::TooLarge);
            }
            let len = pending.len();
            send(to, head, &pending[..len], write_limit).await?;
            pending.advance(len);
        },
    }
    Ok(payload)
}

/// Reads and throws away a body framed as `framing`, up to `limit` payload bytes.
pub async fn discard(from: Source<'_>, framing: Framing, limit: u64) -> Result<(), RelayError> {
    let Source {
        stream,
        pending,
        idle,
    } = from;
    let mut scanner = ChunkedScanner::new();
    let mut left = match framing {
        Framing::Empty => return Ok(()),
        Framing::Length(n) if n > limit => return Err(RelayError::TooLarge),
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
        Framing::UntilClose => return Err(RelayError::TooLarge),
    };
    let mut payload = 0u64;
    loop {
        if pending.is_empty() {
            match read_more(stream, pending, idle).await {
                Ok(0) => return Err(RelayError::Source(Failure::Io)),
                Ok(_) => {}
                Err(f) => return Err(RelayError::Source(f)),
            }
        }
        if framing == Framing::Chunked {
            let scan = scanner.scan(pending).map_err(|_| RelayError::Malformed)?;
            payload += scan.data;
            pending.advance(scan.consumed);
            if payload > limit {
                return Err(RelayError::TooLarge);
            }
            if scan.done {
                return Ok(());
            }
        } else {
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(pending.len());
            pending.advance(take);
            left -= take as u64;
            if left == 0 {
                return Ok(());
            }
        }
    }
}

/// Sends `head` (if any is waiting) and `body` in one write.
async fn send(
    to: &mut TcpStream,
    head: &mut Vec<u8>,
    body: &[u8],
    limit: Duration,
) -> Result<(), RelayError> {
    if head.is_empty() {
        return write_all(to, body, limit).await.map_err(RelayError::Sink);
    }
    head.extend_from_slice(body);
    let result = write_all(to, head, limit).await.map_err(RelayError::Sink);
    head.clear();
    result
}

async fn flush_head(
    to: &mut TcpStream,
    head: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), RelayError> {
    if head.is_empty() {
        return Ok(());
    }
    let result = write_all(to, head, limit).await.map_err(RelayError::Sink);
    head.clear();
    result
}
