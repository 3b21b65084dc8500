//! Connections: sockets that never send the HTTP/2 preface are closed after
//! AUTHD_HANDSHAKE_TIMEOUT, connections with no call for AUTHD_IDLE_TIMEOUT are closed, busy ones
//! are not, and past AUTHD_MAX_CONNECTIONS new connections are closed at once.

use std::time::{Duration, Instant};

use tokio::{io::AsyncReadExt as _, net::TcpStream};

use crate::common::{Backend, TestApp, TestState};

/// Waits (at most `within`) for the server to close `socket`; how long that took.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout_at((started + within).into(), socket.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            // The server may write (SETTINGS) before it gives up: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_send_the_preface_are_closed() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--handshake-timeout=500ms").start().await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(app.address).await.unwrap());
    }
    for socket in &mut idle {
        let closed = closed_within(socket, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "an idle socket was still open after 5 s");
    }
    // Clients that speak HTTP/2 are unaffected.
    app.new_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--max-connections=3").start().await;
    // The test's own gRPC client holds one connection.
    app.new_user().await;
    let _held: Vec<_> = futures_connect(app.address, 2).await;
    let mut refused = TcpStream::connect(app.address).await.unwrap();
    let closed = closed_within(&mut refused, Duration::from_secs(2)).await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(1)),
        "a connection past AUTHD_MAX_CONNECTIONS must be closed at once: {closed:?}"
    );
    // The connections within the limit keep working.
    app.new_user().await;
}

async fn futures_connect(address: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..count {
        sockets.push(TcpStream::connect(address).await.unwrap());
    }
    // Let the server accept them before the next one arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_call_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--idle-timeout=1s").start().await;
    let (_, _, token) = app.new_user().await;
    // Busy: calls every 200 ms for 2.5 s on one connection, never refused.
    let busy = TestApp::connect(app.address).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        busy.verify(&token)
            .await
            .expect("a busy connection stays open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle: a raw HTTP/2 connection that sends the preface and then nothing.
    let mut idle = TcpStream::connect(app.address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut idle,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
    )
    .await
    .unwrap();
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|after| after >= Duration::from_millis(900)),
        "an idle connection is closed after the idle timeout, not before: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_keeps_its_connection_busy() {
    use tokio_stream::StreamExt as _;
    use tonic_health::pb::HealthCheckRequest;
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--idle-timeout=1s").start().await;
    let watcher = TestApp::connect(app.address).await;
    let mut updates = watcher
        .health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    // The first update arrives at once; then the stream stays open, with nothing to say, past
    // the idle timeout: it must not be cut.
    updates.next().await.unwrap().unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(2500), updates.next()).await;
    assert!(quiet.is_err(), "the stream ended or failed: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_more_than_its_share_of_connections() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .arg("--max-connections-per-source=2")
        .start()
        .await;
    app.new_user().await;
    let _held: Vec<_> = futures_connect(app.address, 1).await;
    let mut refused = TcpStream::connect(app.address).await.unwrap();
    let closed = closed_within(&mut refused, Duration::from_secs(2)).await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(1)),
        "a third connection from one address must be closed at once: {closed:?}"
    );
    app.new_user().await;
}
