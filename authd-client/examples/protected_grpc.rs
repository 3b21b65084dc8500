//! A tonic server whose one service (grpc.health.v1, marked SERVING) only answers callers with a
//! valid authd access token: `AuthLayer` sits in front of every service on the server.
//!
//! ```sh
//! AUTHD_WATCH_TOKEN=dev-watch-token-0123456789abcdef cargo run -p authd-client --example protected_grpc
//! ```
//!
//! Configuration, all from the environment:
//! - `AUTHD_CLIENT_MODE`: `local` (default; JWKS plus revocations pushed by WatchRevocations) or
//!   `remote` (every request asks authd's Verify);
//! - `AUTHD_GRPC`: authd's gRPC address (default `http://127.0.0.1:50051`);
//! - `AUTHD_HTTP`: authd's HTTP base URL, where the JWKS is (default `http://127.0.0.1:8080`);
//! - `AUTHD_WATCH_TOKEN`: authd's watch credential (required in local mode);
//! - `PROTECTED_ADDR`: where this server listens (default `127.0.0.1:50061`).

use std::{env, error::Error, net::SocketAddr, time::Duration};

use authd_client::{AuthLayer, LocalOptions, Verifier};
use tonic_health::ServingStatus;

const DEFAULT_PROTECTED_ADDR: &str = "127.0.0.1:50061";
const DEFAULT_AUTHD_GRPC: &str = "http://127.0.0.1:50051";
const DEFAULT_AUTHD_HTTP: &str = "http://127.0.0.1:8080";
/// The deadline of each Verify call in remote mode.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long local mode may take to load the JWKS and the first revocation snapshot.
const CURRENT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let listen_addr: SocketAddr = env_or("PROTECTED_ADDR", DEFAULT_PROTECTED_ADDR)
        .parse()
        .map_err(|error| format!("PROTECTED_ADDR is not a socket address: {error}"))?;
    let verifier = verifier_from_env().await?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    print_how_to_call(listen_addr);

    tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier))
        .add_service(health_service)
        .serve_with_shutdown(listen_addr, ctrl_c())
        .await?;
    println!("stopped");
    Ok(())
}

/// The verifier `AUTHD_CLIENT_MODE` asks for; in local mode, waits until it can answer.
async fn verifier_from_env() -> Result<Verifier, Box<dyn Error>> {
    let authd_grpc = env_or("AUTHD_GRPC", DEFAULT_AUTHD_GRPC);
    match env_or("AUTHD_CLIENT_MODE", "local").as_str() {
        "remote" => {
            println!("remote mode: every request asks authd's Verify at {authd_grpc}");
            Ok(Verifier::remote(authd_grpc, REMOTE_TIMEOUT)?)
        }
        "local" => {
            let watch_token = env::var("AUTHD_WATCH_TOKEN").map_err(|_| {
                "local mode needs AUTHD_WATCH_TOKEN (the same value authd runs with), \
                 or set AUTHD_CLIENT_MODE=remote"
            })?;
            let authd_http = env_or("AUTHD_HTTP", DEFAULT_AUTHD_HTTP);
            let verifier = Verifier::local(
                LocalOptions::new(authd_grpc.as_str(), &authd_http).watch_token(watch_token),
            )?;
            if verifier.wait_until_current(CURRENT_WITHIN).await {
                println!(
                    "local mode: keys from {authd_http}, revocations from {authd_grpc}: current"
                );
            } else {
                println!(
                    "local mode: not current after {CURRENT_WITHIN:?} (is authd running at \
                     {authd_grpc} and {authd_http}, with this AUTHD_WATCH_TOKEN?); requests are \
                     refused with UNAVAILABLE until it is"
                );
            }
            Ok(verifier)
        }
        other => Err(format!("AUTHD_CLIENT_MODE must be local or remote, not {other:?}").into()),
    }
}

/// This server serves no reflection, so grpcurl takes the health service's descriptor from
/// authd's reflection first.
fn print_how_to_call(listen_addr: SocketAddr) {
    let authd_grpc = env_or("AUTHD_GRPC", DEFAULT_AUTHD_GRPC);
    let (plaintext, authd_host) = match authd_grpc.strip_prefix("https://") {
        Some(host) => ("", host),
        None => ("-plaintext ", authd_grpc.trim_start_matches("http://")),
    };
    println!("protected gRPC server on {listen_addr}; call it with an access token from authd:");
    println!(
        "  grpcurl {plaintext}-protoset-out health.protoset {authd_host} describe grpc.health.v1.Health"
    );
    println!(
        "  grpcurl -plaintext -protoset health.protoset -H \"authorization: Bearer $TOKEN\" \\\n    \
         {listen_addr} grpc.health.v1.Health/Check"
    );
    println!("  (without a valid token the answer is Code: Unauthenticated)");
}

/// The variable's value, or `default` when it is unset or not Unicode.
fn env_or(name: &str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Resolves at the first Ctrl-C (or at once if the handler cannot be installed).
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot listen for Ctrl-C ({error}); stopping");
    }
    println!("Ctrl-C: finishing calls in flight");
}
