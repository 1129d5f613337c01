//! Idle upstream connections, kept per worker thread: a connection is only ever used by the
//! thread that opened it, so taking and returning one needs no lock.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::balancer::Endpoint;

/// A connection to an upstream instance, with what was read from it and not used yet.
pub struct Upstream {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Came from the pool (it may have been closed by the other side meanwhile).
    pub reused: bool,
}

struct Idle {
    stream: TcpStream,
    buf: BytesMut,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<foldhash::HashMap<Arc<str>, Vec<Idle>>> = RefCell::new(foldhash::HashMap::default());
}

/// An idle connection to `endpoint` that still looks open, if any.
pub fn take(endpoint: &Endpoint, idle_timeout: Duration) -> Option<Upstream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&*endpoint.id)?;
        while let Some(conn) = list.pop() {
            if conn.since.elapsed() < idle_timeout && still_open(&conn.stream) {
                return Some(Upstream {
                    stream: conn.stream,
                    buf: conn.buf,
                    reused: true,
                });
            }
        }
        None
    })
}

/// Keeps `upstream` for the next request to `endpoint` (at most `max_idle` per endpoint).
pub fn put(endpoint: &Endpoint, upstream: Upstream, max_idle: usize) {
    if !upstream.buf.is_empty() {
        // Bytes nobody asked for: the connection's state is unknown.
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        // Looked up first: cloning the shared id each time would bounce its count between
        // the worker threads.
        if !idle.contains_key(&*endpoint.id) {
            idle.insert(endpoint.id.clone(), Vec::new());
        }
        let Some(list) = idle.get_mut(&*endpoint.id) else {
            return;
        };
        if list.len() < max_idle {
            list.push(Idle {
                stream: upstream.stream,
                buf: upstream.buf,
                since: Instant::now(),
            });
        }
    });
}

/// Opens a connection to `endpoint` within `timeout`.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> std::io::Result<Upstream> {
    let addr = endpoint.authority.as_str();
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Upstream {
        stream,
        buf: BytesMut::with_capacity(16 * 1024),
        reused: false,
    })
}

/// Closes this thread's connections idle longer than `idle_timeout`, and those of instances
/// no longer known.
pub fn purge(idle_timeout: Duration, known: &dyn Fn(&str) -> bool) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|id, list| {
            list.retain(|c| c.since.elapsed() < idle_timeout);
            !list.is_empty() && known(id)
        });
    });
}

/// An idle connection the reactor saw become readable has been closed by the other side
/// (or sent something unasked); either way it is not reused. Asking costs no system call
/// unless the reactor reported readiness, and then one non-blocking read.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}
