//! An axum router whose one route, `GET /whoami`, only answers requests with a valid authd access
//! token, and answers with who the token speaks for: `AuthLayer` verifies the token and puts its
//! `Claims` in the request's extensions.
//!
//! ```sh
//! AUTHD_WATCH_TOKEN=dev-watch-token-0123456789abcdef cargo run -p authd-client --example protected_http
//! curl -i -H "authorization: Bearer $TOKEN" http://127.0.0.1:8081/whoami
//! ```
//!
//! Configuration, all from the environment:
//! - `AUTHD_CLIENT_MODE`: `local` (default; JWKS plus revocations pushed by WatchRevocations) or
//!   `remote` (every request asks authd's Verify);
//! - `AUTHD_GRPC`: authd's gRPC address (default `http://127.0.0.1:50051`);
//! - `AUTHD_HTTP`: authd's HTTP base URL, where the JWKS is (default `http://127.0.0.1:8080`);
//! - `AUTHD_WATCH_TOKEN`: authd's watch credential (required in local mode);
//! - `PROTECTED_ADDR`: where this server listens (default `127.0.0.1:8081`).

use std::{env, error::Error, time::Duration};

use authd_client::{AuthLayer, Claims, LocalOptions, Verifier};
use axum::{
    Extension, Router,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::get,
};

const DEFAULT_PROTECTED_ADDR: &str = "127.0.0.1:8081";
const DEFAULT_AUTHD_GRPC: &str = "http://127.0.0.1:50051";
const DEFAULT_AUTHD_HTTP: &str = "http://127.0.0.1:8080";
/// The deadline of each Verify call in remote mode.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long local mode may take to load the JWKS and the first revocation snapshot.
const CURRENT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let listen_addr = env_or("PROTECTED_ADDR", DEFAULT_PROTECTED_ADDR);
    let verifier = verifier_from_env().await?;

    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(verifier));

    let listener = tokio::net::TcpListener::bind(&listen_addr)
        .await
        .map_err(|error| format!("cannot listen on {listen_addr} (PROTECTED_ADDR): {error}"))?;
    let local_addr = listener.local_addr()?;
    println!("protected HTTP server on {local_addr}; call it with an access token from authd:");
    println!("  curl -i -H \"authorization: Bearer $TOKEN\" http://{local_addr}/whoami");
    println!("  (without a valid token the answer is 401 with WWW-Authenticate: Bearer)");

    axum::serve(listener, app)
        .with_graceful_shutdown(ctrl_c())
        .await?;
    println!("stopped");
    Ok(())
}

/// The answer of `/whoami`.
#[derive(serde::Serialize)]
struct WhoAmI<'a> {
    user_id: &'a str,
    session_id: Option<&'a str>,
    jti: &'a str,
    expires_at_unix: i64,
}

/// Who the caller is, as JSON: the claims `AuthLayer` put in the request.
async fn whoami(Extension(claims): Extension<Claims>) -> Result<impl IntoResponse, StatusCode> {
    let who = WhoAmI {
        user_id: claims.user_id(),
        session_id: claims.session_id(),
        jti: claims.jti(),
        expires_at_unix: claims.expires_at_unix(),
    };
    let body = serde_json::to_string(&who).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body + "\n",
    ))
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
                     refused with 503 until it is"
                );
            }
            Ok(verifier)
        }
        other => Err(format!("AUTHD_CLIENT_MODE must be local or remote, not {other:?}").into()),
    }
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
    println!("Ctrl-C: finishing requests in flight");
}
