//! Throughput of a tonic service (gRPC health Check) with and without `authd_client::AuthLayer`,
//! in one run on one machine: unprotected, local mode, remote mode, then unprotected and local
//! again to show the drift between phases. Everything (authd, the services, the load) shares
//! this process's cores, as it would on a small node; the ratios are what to read.
//!
//! ```sh
//! cargo bench --bench protected_throughput            # 5 s phases
//! PHASE_SECONDS=10 cargo bench --bench protected_throughput
//! ```

#[path = "support/authd.rs"]
mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use authd_client::{AuthLayer, Verifier};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The server's allocator, so that allocation costs match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: usize = 64;
const CONNECTIONS: usize = 4;

/// A health service on a free port, behind the layer when `verifier` is given.
async fn serve(verifier: Option<&Verifier>) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    // Keep the reporter alive for the whole run.
    std::mem::forget(_reporter);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = TcpListenerStream::new(listener);
    match verifier {
        Some(verifier) => {
            let server = tonic::transport::Server::builder()
                .layer(AuthLayer::new(verifier.clone()))
                .add_service(health)
                .serve_with_incoming(incoming);
            tokio::spawn(server);
        }
        None => {
            let server = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming);
            tokio::spawn(server);
        }
    }
    address
}

/// Health checks per second against `address` with `token` for `duration`; panics on any error.
async fn drive(address: SocketAddr, token: &str, duration: Duration) -> f64 {
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        channels.push(channel);
    }
    let authorization: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let mut client = HealthClient::new(channels[worker % CONNECTIONS].clone());
        let authorization = authorization.clone();
        let done = done.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut request = tonic::Request::new(HealthCheckRequest::default());
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
                client.check(request).await.expect("the call succeeds");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A short warm-up, then the measured phase.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let calls = done.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    calls as f64 / elapsed.as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and expects no work.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let phase = Duration::from_secs(
        std::env::var("PHASE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let authd = support::Authd::start().await;
        let token = authd.token().await;
        let local = authd.local_verifier().await;
        let remote = Verifier::remote(authd.grpc_url(), Duration::from_secs(1)).unwrap();
        let unprotected = serve(None).await;
        let protected_local = serve(Some(&local)).await;
        let protected_remote = serve(Some(&remote)).await;
        println!(
            "gRPC health Check, {CONCURRENCY} in flight over {CONNECTIONS} connections, {phase:?} per phase, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let mut figures = Vec::new();
        for (name, address) in [
            ("unprotected", unprotected),
            ("local mode", protected_local),
            ("remote mode", protected_remote),
            ("unprotected (again)", unprotected),
            ("local mode (again)", protected_local),
        ] {
            let rate = drive(address, &token, phase).await;
            println!("{name:>22}: {rate:>9.0} calls/s");
            figures.push(rate);
        }
        let unprotected = (figures[0] + figures[3]) / 2.0;
        let local = (figures[1] + figures[4]) / 2.0;
        println!("local / unprotected:  {:.3}", local / unprotected);
        println!("remote / unprotected: {:.3}", figures[2] / unprotected);
    });
}
