//! What `authd_client::AuthLayer` costs a service per request: the layer around a service that
//! answers at once, in local mode with a token already verified (the steady state: a cache
//! lookup, the clock, the revocation mirror), against the same service without the layer; and,
//! for scale, remote mode (a Verify round trip on loopback).
//!
//! ```sh
//! cargo bench --bench client_layer
//! ```

#[path = "support/authd.rs"]
mod support;

use std::{convert::Infallible, hint::black_box, time::Duration};

use authd_client::{AuthLayer, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Layer as _, Service as _, ServiceExt as _, service_fn};

/// The server's allocator, so that allocation costs match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn request(authorization: &str) -> Request<()> {
    Request::builder()
        .uri("/whoami")
        .header("content-type", "application/grpc")
        .header("authorization", authorization)
        .body(())
        .unwrap()
}

async fn answer(request: Request<()>) -> Result<Response<()>, Infallible> {
    black_box(&request);
    Ok(Response::new(()))
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (authd, token, local, remote) = runtime.block_on(async {
        let authd = support::Authd::start().await;
        let token = authd.token().await;
        let local = authd.local_verifier().await;
        let remote = Verifier::remote(authd.grpc_url(), Duration::from_secs(1)).unwrap();
        (authd, token, local, remote)
    });
    let authorization = format!("Bearer {token}");
    let mut group = c.benchmark_group("layer");
    group.bench_function("no layer (baseline)", |b| {
        let service = service_fn(answer);
        b.to_async(&runtime).iter(|| {
            let mut service = service;
            let request = request(&authorization);
            async move { service.ready().await.unwrap().call(request).await.unwrap() }
        })
    });
    for (name, verifier) in [
        ("local, verified token", &local),
        ("remote (Verify on loopback)", &remote),
    ] {
        let protected = AuthLayer::new(verifier.clone()).layer(service_fn(answer));
        runtime.block_on(async {
            let response = protected
                .clone()
                .oneshot(request(&authorization))
                .await
                .unwrap();
            assert!(
                response.headers().get("grpc-status").is_none(),
                "{name}: the token passes"
            );
        });
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                let mut service = protected.clone();
                let request = request(&authorization);
                async move { service.ready().await.unwrap().call(request).await.unwrap() }
            })
        });
    }
    group.finish();
    drop((local, remote));
    runtime.block_on(async { drop(authd) });
}

criterion_group!(benches, layer);
criterion_main!(benches);
