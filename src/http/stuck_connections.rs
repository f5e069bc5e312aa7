//! Closes HTTPS connections stuck in a request's head. actix-http times the head of a
//! connection's first request only (`client_request_timeout`) and an idle keep-alive connection
//! (`keep_alive`): once a connection has served a request, a client that sends the first bytes
//! of the next one and then nothing holds its slot for ever, and enough of them hold every slot.
//!
//! Each connection is watched from its handshake (`on_connect`). The requests it serves mark it
//! busy while they run and their answer's body is written (`request_started`, [`BodyUnderWay`]).
//! A connection is stuck when it has served no request for `idle_max` (a quiet one was closed by
//! the keep-alive timer before), or when it is busy and its request neither ends nor writes a
//! piece of its answer for `busy_max` (a client that stopped reading a long answer). A stuck
//! connection's socket is shut down, which ends actix's dispatcher. The watch holds a duplicate
//! of the socket's descriptor, closed with the connection: its number is never another socket's.

use actix_tls::accept::openssl::TlsStream;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use std::any::Any;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The watch of one connection, kept in its connection data; dropped with the connection.
pub struct ConnectionWatch(Arc<Watched>);

/// A request under way on a watched connection; its end is the connection's latest activity.
pub struct RequestUnderWay(Arc<Watched>);

/// An answer's body that keeps its request under way until it is written (or dropped).
/// Handed out in pieces of at most [`PIECE_MAX_BYTES`]: actix takes the next only once the
/// client has read most of the last, so each piece taken is the client's progress.
pub struct BodyUnderWay {
    body: BoxBody,
    /// What is left of the body's last chunk.
    rest: actix_web::web::Bytes,
    request: RequestUnderWay,
}

/// The largest piece of an answer's body handed to actix at once.
pub const PIECE_MAX_BYTES: usize = 64 * 1024;

impl BodyUnderWay {
    pub fn boxed(body: BoxBody, request: RequestUnderWay) -> BoxBody {
        BoxBody::new(Self {
            body,
            rest: actix_web::web::Bytes::new(),
            request,
        })
    }

    /// The next piece of `rest`, its taking counted as the client's progress.
    fn piece(&mut self) -> actix_web::web::Bytes {
        self.request.0.lock().last_activity = Instant::now();
        let len = self.rest.len().min(PIECE_MAX_BYTES);
        self.rest.split_to(len)
    }
}

impl MessageBody for BodyUnderWay {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.rest = chunk,
                other => return other,
            }
        }
        Poll::Ready(Some(Ok(this.piece())))
    }
}

struct Watched {
    state: Mutex<State>,
}

struct State {
    /// The duplicate descriptor, until the connection ends.
    socket: Option<std::net::TcpStream>,
    requests_under_way: u32,
    last_activity: Instant,
}

/// How long a connection may go without progress before it is stuck.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// With no request under way.
    pub idle_max: Duration,
    /// With a request under way: longer than the request deadline.
    pub busy_max: Duration,
}

/// `HttpServer::on_connect`: starts watching a TLS connection.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions, limits: Limits) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let socket = match tls.get_ref().as_fd().try_clone_to_owned() {
        Ok(fd) => std::net::TcpStream::from(fd),
        Err(e) => {
            // Out of descriptors: the connection goes unwatched, as before this module.
            tracing::warn!(error = %e, "cannot watch an HTTPS connection");
            return;
        }
    };
    let watched = Arc::new(Watched {
        state: Mutex::new(State {
            socket: Some(socket),
            requests_under_way: 0,
            last_activity: Instant::now(),
        }),
    });
    actix_web::rt::spawn(watch(Arc::clone(&watched), limits));
    data.insert(ConnectionWatch(watched));
}

impl ConnectionWatch {
    pub fn request_started(&self) -> RequestUnderWay {
        let mut state = self.0.lock();
        state.requests_under_way += 1;
        state.last_activity = Instant::now();
        RequestUnderWay(Arc::clone(&self.0))
    }
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        // Closes the duplicate with the connection; the watch then ends.
        self.0.lock().socket = None;
    }
}

impl Drop for RequestUnderWay {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.requests_under_way = state.requests_under_way.saturating_sub(1);
        state.last_activity = Instant::now();
    }
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays whole whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Until the connection ends or is found stuck.
async fn watch(watched: Arc<Watched>, limits: Limits) {
    let mut due = Instant::now() + limits.idle_max;
    loop {
        tokio::time::sleep_until(due).await;
        let state = watched.lock();
        let Some(socket) = &state.socket else {
            return;
        };
        let (limit, what) = if state.requests_under_way > 0 {
            (limits.busy_max, "an answer it does not read")
        } else {
            (limits.idle_max, "a request's head")
        };
        let stuck_at = state.last_activity + limit;
        if Instant::now() >= stuck_at {
            tracing::info!(
                limit_ms = limit.as_millis(),
                "closing an HTTPS connection stuck in {what}"
            );
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return;
        }
        due = stuck_at;
    }
}
