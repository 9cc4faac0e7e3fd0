//! The accept loop: serves a [`Router`] on a TCP listener with the connection limits of
//! [`ConnLimits`], and shuts down gracefully. It replaces `axum::serve`, which sets no
//! header-read or idle timeout and accepts without bound.
//!
//! - At most `max_connections` connections are open: the loop takes a slot before it accepts,
//!   so past the cap new connections wait in the kernel's listen backlog (as Go's
//!   `netutil.LimitListener` does) instead of being accepted and closed.
//! - HTTP/1: hyper's `header_read_timeout` closes a connection whose request headers are not
//!   complete in time. hyper (1.12, locked here; hyperium/hyper#3185 and #3828) starts that
//!   timer whenever the connection waits for a request: when it opens and again after each
//!   response (`proto/h1/conn.rs`, `State::idle`), so it also bounds the wait between
//!   keep-alive requests; `tests/connections.rs` checks that this still holds.
//! - Every protocol: a connection with no request in flight for `idle_timeout` is shut down
//!   gracefully (HTTP/1: closed, or answered and closed if a request is arriving; HTTP/2:
//!   GOAWAY). This also covers what hyper's timer does not: the protocol detection of
//!   hyper-util's auto builder (a client that sends nothing, or half of the HTTP/2 preface)
//!   and idle HTTP/2 connections. A connection still open with nothing in flight
//!   `header_read_timeout` after that is dropped.
//!
//! Must not: know about routes or state; it serves whatever router it is given.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

pub use crate::config::ConnLimits;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, shuts every
/// connection down gracefully (requests in flight are answered) and returns once all closed.
/// Handlers can read the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let max = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then accept: past the cap the kernel queues new connections.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(Connection {
            builder: builder.clone(),
            tcp,
            peer,
            app: app.clone(),
            limits,
            stop: stop_rx.clone(),
            _slot: slot,
        }));
    }
    drop(listener);
    let open = max as usize - slots.available_permits();
    tracing::info!(open, "no longer accepting; closing connections gracefully");
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it has closed.
    let _all = slots.acquire_many(max).await;
    Ok(())
}

/// Errors of `accept` that concern one connection only, as `axum::serve` sorts them; others
/// (out of descriptors, say) are logged and the loop waits a moment before trying again.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    /// Released when the connection is done: the cap counts open connections.
    _slot: OwnedSemaphorePermit,
}

/// Drives one connection to its end, shutting it down when idle too long or on `stop`.
async fn serve_connection(c: Connection) {
    let Connection {
        builder,
        tcp,
        peer,
        app,
        limits,
        mut stop,
        _slot,
    } = c;
    let (activity, mut watch_activity) = watch::channel(Activity {
        in_flight: 0,
        since: Instant::now(),
    });
    let activity = Arc::new(activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(activity.clone());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(res.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut closing_since: Option<Instant> = None;
    loop {
        let Activity { in_flight, since } = *watch_activity.borrow_and_update();
        // With nothing in flight: shut down after the idle timeout, and drop a connection
        // that has not finished closing by the header-read timeout after that.
        let deadline = match closing_since {
            _ if in_flight > 0 => None,
            None => Some(since + limits.idle_timeout),
            Some(t) => Some(t.max(since) + limits.header_read_timeout),
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if closing_since.is_none() => {
                closing_since = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
            }
            () = expired => {
                if closing_since.is_some() {
                    tracing::debug!(%peer, "connection dropped: still open while closing idle");
                    return;
                }
                closing_since = Some(Instant::now());
                conn.as_mut().graceful_shutdown();
            }
            _ = watch_activity.changed() => {}
        }
    }
}

/// Requests in flight on one connection, and since when that number last changed.
#[derive(Debug, Clone, Copy)]
struct Activity {
    in_flight: usize,
    since: Instant,
}

/// One request in flight, from its headers until its response body has been sent or dropped.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn start(activity: Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.since = Instant::now();
        });
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            a.since = Instant::now();
        });
    }
}

/// A response body that holds its request's [`InFlight`] until hyper has sent or dropped it,
/// so a long download is not idle.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
