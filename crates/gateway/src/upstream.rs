//! Upstream HTTP/1 connections, pooled per endpoint and driven by the task
//! of the request that uses them.
//!
//! Why not hyper-util's pooled `Client`: it runs every connection as a task
//! of its own and hands requests, responses and body chunks across tasks
//! through channels, and checks connections out of one keyed pool; on a
//! proxy that does nothing else that was most of the gateway's own CPU time
//! per request. Here a request takes an idle connection from its endpoint's
//! pool (or dials one), and the request's own task polls the connection
//! future alongside the response, and then alongside the response body (see
//! [`UpstreamBody`]). When the body has ended cleanly the connection goes
//! back to the pool; when the body is dropped early (the client went away)
//! the connection is closed, which cancels the request upstream.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Io = TokioIo<TcpStream>;

/// Idle connections kept per endpoint at most.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

/// One HTTP/1 connection to an endpoint.
pub(crate) struct UpstreamConn {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<Io, Full<Bytes>>,
    /// The connection future has finished: the connection is closed.
    closed: bool,
}

impl UpstreamConn {
    /// Drives the connection (reads, writes, keep-alive bookkeeping).
    /// Returns an error only if the connection failed.
    fn drive(&mut self, cx: &mut Context<'_>) -> Result<(), hyper::Error> {
        if self.closed {
            return Ok(());
        }
        match Pin::new(&mut self.conn).poll(cx) {
            Poll::Ready(result) => {
                self.closed = true;
                result
            }
            Poll::Pending => Ok(()),
        }
    }
}

/// An endpoint's idle connections, each tagged with the thread that made
/// it. A socket belongs to the I/O driver of the runtime that opened it; on
/// a single-threaded runtime (one of several, as `neocloud gateway --threads
/// N` runs) a request only takes connections its own thread opened, so
/// their readiness never has to cross threads. A multi-threaded runtime
/// shares one driver: any connection will do.
#[derive(Default)]
pub(crate) struct ConnPool {
    idle: Mutex<Vec<(ThreadId, UpstreamConn)>>,
}

impl ConnPool {
    fn take(&self) -> Option<UpstreamConn> {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        let shared_driver = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread);
        let here = std::thread::current().id();
        let position = idle
            .iter()
            .rposition(|(thread, _)| shared_driver || *thread == here)?;
        Some(idle.swap_remove(position).1)
    }

    fn put(&self, conn: UpstreamConn) {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((std::thread::current().id(), conn));
        }
    }
}

/// Why a request got no response head from an endpoint.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect to {addr}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("the HTTP exchange failed")]
    Http(#[from] hyper::Error),
    #[error("the connection closed before an answer")]
    Closed,
}

/// Sends the request that `build` makes to `addr` and waits for the
/// response head. A pooled connection that turns out to be dead (closed by
/// the upstream while idle) is not the endpoint's fault: the request is
/// then sent once more on a fresh connection.
pub(crate) async fn send(
    pool: &ConnPool,
    addr: SocketAddr,
    connect_timeout: Duration,
    build: impl Fn() -> http::Request<Full<Bytes>>,
) -> Result<(http::Response<Incoming>, UpstreamConn), UpstreamError> {
    while let Some(mut conn) = pool.take() {
        if !ready(&mut conn).await {
            continue;
        }
        match exchange(conn, build()).await {
            Ok(answer) => return Ok(answer),
            Err(e) => {
                tracing::debug!(%addr, "a pooled connection failed ({e}); dialling a fresh one");
                break;
            }
        }
    }
    let conn = dial(addr, connect_timeout).await?;
    exchange(conn, build()).await
}

/// Whether an idle connection can take a request now (without waiting).
async fn ready(conn: &mut UpstreamConn) -> bool {
    poll_fn(|cx| {
        if conn.drive(cx).is_err() || conn.closed {
            return Poll::Ready(false);
        }
        Poll::Ready(matches!(conn.sender.poll_ready(cx), Poll::Ready(Ok(()))))
    })
    .await
}

async fn dial(addr: SocketAddr, timeout: Duration) -> Result<UpstreamConn, UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
        Err(_) => return Err(UpstreamError::ConnectTimeout { addr }),
    };
    // Small requests and answers: never wait to coalesce them.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    Ok(UpstreamConn {
        sender,
        conn,
        closed: false,
    })
}

/// Sends one request on `conn`, driving the connection until the response
/// head arrives.
async fn exchange(
    mut conn: UpstreamConn,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::Response<Incoming>, UpstreamConn), UpstreamError> {
    let mut response = std::pin::pin!(conn.sender.send_request(request));
    let response = poll_fn(|cx| {
        // The connection first: it writes the request and reads the
        // answer, which then makes the response future ready at once.
        conn.drive(cx)?;
        match response.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result.map_err(UpstreamError::Http)),
            // A connection that ended without answering never will (it
            // found the socket closed before taking the request).
            Poll::Pending if conn.closed => Poll::Ready(Err(UpstreamError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await?;
    Ok((response, conn))
}

/// A response body from upstream, read on the client's task: each poll
/// drives the connection, then takes the next frame. Once the body has
/// ended the connection returns to `pool`.
pub(crate) struct UpstreamBody<G> {
    body: Incoming,
    conn: Option<UpstreamConn>,
    pool: G,
}

/// Where a finished connection goes (the endpoint's pool, reached through
/// whatever keeps the endpoint alive).
pub(crate) trait PoolRef {
    fn pool(&self) -> &ConnPool;
}

impl<G: PoolRef + Unpin> UpstreamBody<G> {
    pub fn new(body: Incoming, conn: UpstreamConn, pool: G) -> Self {
        UpstreamBody {
            body,
            conn: Some(conn),
            pool,
        }
    }

    /// The body has ended: let the connection settle into keep-alive and
    /// pool it if it did.
    fn finish(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take()
            && conn.drive(cx).is_ok()
            && !conn.closed
            && !conn.sender.is_closed()
        {
            self.pool.pool().put(conn);
        }
    }

    /// For a body that is already complete (no bytes, e.g. 204), which a
    /// server may never poll: pools the connection now.
    pub async fn settle_if_empty(&mut self) {
        if self.body.is_end_stream() {
            poll_fn(|cx| {
                self.finish(cx);
                Poll::Ready(())
            })
            .await
        }
    }
}

impl<G: PoolRef + Unpin> Body for UpstreamBody<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            if let Err(e) = conn.drive(cx) {
                this.conn = None;
                return Poll::Ready(Some(Err(e)));
            }
            if conn.closed {
                // Dropping the finished connection ends the body's channel,
                // so a body cut short reports it instead of hanging.
                this.conn = None;
            }
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.finish(cx),
            Some(Ok(_)) if this.body.is_end_stream() => this.finish(cx),
            Some(Err(_)) => this.conn = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
