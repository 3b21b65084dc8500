//! The HTTP listener (`AUTHD_HTTP_LISTEN_ADDR`): HTTP/1.1 and h2c (prior knowledge) on one port,
//! serving `routes.rs`, with bounded headers, slow-client timeouts, a connection cap, and the
//! gRPC side's graceful shutdown (stop accepting, let requests in flight finish, then close).
//! Like the gRPC side, a connection with no request in flight for AUTHD_IDLE_TIMEOUT is closed
//! (an HTTP/2 connection that opens no stream would otherwise hold its slot for ever), and so is
//! one whose peer has read nothing of its responses for 10 s.

mod routes;

use std::{sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tower::ServiceExt;

pub use routes::{HttpState, router};

use crate::server::{
    connections::{Activity, ConnectionLimits, Guarded, PerSource},
    tls::{ReloadingTls, Transport},
};

/// Time a client has to send a request's headers (HTTP/1.1, and the wait for the next request
/// on a kept-alive connection); then the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (HTTP/1.1 read buffer; HTTP/2 header list). A bearer token
/// fits many times over.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// HTTP/2 streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 PING interval on idle connections, and how long to wait for the answer.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `state`'s routes on `listener` until `shutdown` completes; then stops accepting and
/// waits (at most [`SHUTDOWN_GRACE`]) for requests in flight. At most `limits.max_connections`
/// at once, and `limits.max_connections_per_source` from one address; past either, new
/// connections are closed as soon as accepted. A connection that has not sent enough to tell
/// HTTP/1.1 from HTTP/2 within [`HEADER_READ_TIMEOUT`] is closed, and so is one with no request
/// in flight for `limits.idle_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    state: Arc<HttpState>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max_connections = limits.max_connections;
    let per_source = PerSource::default();
    let app = router(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(Duration::from_secs(10));
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "HTTP: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(source_slot) = per_source.take(peer.ip(), limits.max_connections_per_source)
        else {
            tracing::debug!(%peer, "HTTP: connection refused, at the per-source limit");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = max_connections, "HTTP: connection refused, at the limit");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let (stream, builder) = match tls {
                // hyper's timers start once it parses; until it can tell the protocol, this one.
                None => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, protocol_known(&stream)).await {
                        Ok(Ok(true)) => (Transport::Plain(stream), builder),
                        _ => return,
                    }
                }
                // With TLS the handshake has the gRPC port's deadline (AUTHD_HANDSHAKE_TIMEOUT),
                // and ALPN names the protocol, so hyper does not wait to read it.
                Some(acceptor) => {
                    let deadline = limits.handshake_timeout;
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let stream = Transport::Tls(Box::new(stream));
                            let builder = if stream.negotiated_h2() {
                                builder.http2_only()
                            } else {
                                builder.http1_only()
                            };
                            (stream, builder)
                        }
                        _ => return,
                    }
                }
            };
            let activity = Arc::new(Activity::new());
            let stream = Guarded::new(stream, activity.clone(), limits.idle_timeout);
            let service = tower::service_fn(move |request| {
                let in_flight = activity.call_started();
                let response = app.clone().oneshot(request);
                async move {
                    let response = response.await;
                    drop(in_flight);
                    response
                }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %error, "HTTP: connection ended with an error");
            }
            drop((slot, source_slot));
        });
    }
    drop(listener);
    drop(app);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP: requests still in flight after the shutdown grace; closing");
    }
}

/// Waits until `stream` has sent enough to tell HTTP/2's preface from an HTTP/1.1 request line
/// (without consuming it); false if it closed first.
async fn protocol_known(stream: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buffer = [0u8; PREFACE.len()];
    loop {
        let read = stream.peek(&mut buffer).await?;
        if read == 0 {
            return Ok(false);
        }
        if read == PREFACE.len() || buffer[..read] != PREFACE[..read] {
            return Ok(true);
        }
        // A partial preface: wait for the rest (peek does not wait for more than it has).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
