//! authd-client against the real authd: `AuthLayer` in front of a tonic service (gRPC health)
//! and an axum router, in remote and local mode; revocations made on one instance honoured by a
//! local layer on another within 100 ms; a local layer failing closed while authd is gone or
//! stalled, and recovering when it returns.

use std::{net::SocketAddr, time::Duration};

use authd_client::{AuthClient, AuthLayer, Claims, LocalOptions, Rejection, StalePolicy, Verifier};
use axum::{Extension, Router, routing::get};
use http::{Method, StatusCode};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::watch::WATCH_TOKEN;
use crate::common::{
    Backend, Forger, TestApp, TestState, http::HttpClient, http::Protocol, proxy::Proxy, tampered,
};

/// A tonic service (gRPC health) and an axum router (`/whoami`), both behind one `AuthLayer`.
struct ProtectedServices {
    grpc: HealthClient<tonic::transport::Channel>,
    http: HttpClient,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProtectedServices {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn whoami(Extension(claims): Extension<Claims>) -> String {
    serde_json::to_string(&serde_json::json!({
        "user_id": claims.user_id(),
        "session_id": claims.session_id(),
        "jti": claims.jti(),
        "expires_at": claims.expires_at_unix(),
    }))
    .unwrap()
}

async fn protect(verifier: &Verifier) -> ProtectedServices {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_address = grpc_listener.local_addr().unwrap();
    let grpc_server = tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier.clone()))
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(grpc_listener));
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_address = http_listener.local_addr().unwrap();
    let router = Router::new()
        .route("/whoami", get(whoami))
        .layer(AuthLayer::new(verifier.clone()));
    let tasks = vec![
        tokio::spawn(async move { grpc_server.await.unwrap() }),
        tokio::spawn(async move { axum::serve(http_listener, router).await.unwrap() }),
    ];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_address}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    ProtectedServices {
        grpc: HealthClient::new(channel),
        http: HttpClient::new(http_address, Protocol::Http1),
        tasks,
    }
}

impl ProtectedServices {
    /// The gRPC health check with `token` as a bearer credential (`None`: no credential).
    async fn grpc_call(&self, token: Option<&str>) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.grpc.clone().check(request).await.map(drop)
    }

    /// `GET /whoami` with `token`: the status, `WWW-Authenticate`, and the JSON body if 200.
    async fn http_call(
        &self,
        token: Option<&str>,
    ) -> (StatusCode, Option<String>, Option<serde_json::Value>) {
        let header = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        let response = self.http.request(Method::GET, "/whoami", &headers).await;
        let challenge = response.header("www-authenticate").map(str::to_owned);
        let body = (response.status == StatusCode::OK).then(|| response.json());
        (response.status, challenge, body)
    }
}

fn local_options(app: &TestApp) -> LocalOptions {
    LocalOptions::new(
        format!("http://{}", app.address),
        format!("http://{}", app.http_address.expect("an HTTP listener")),
    )
    .watch_token(WATCH_TOKEN)
}

async fn local_verifier(options: LocalOptions) -> Verifier {
    let verifier = Verifier::local(options).unwrap();
    assert!(
        verifier.wait_until_current(Duration::from_secs(15)).await,
        "the local verifier loads the keys and the snapshot"
    );
    verifier
}

fn watching(state: &TestState) -> crate::common::AppBuilder<'_> {
    state.app().arg(format!("--watch-token={WATCH_TOKEN}"))
}

/// Polls `check` every 2 ms until it holds or `within` passes; says whether it held.
async fn soon(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What both modes must do: let a valid token through with its claims, refuse a missing,
/// forged, expired, wrongly addressed or revoked one, in the caller's protocol.
async fn accepts_valid_and_refuses_the_rest(verifier: Verifier, app: &TestApp, state: &TestState) {
    let services = protect(&verifier).await;
    let (_, user_id, token) = app.new_user().await;

    services
        .grpc_call(Some(&token))
        .await
        .expect("a valid token passes (gRPC)");
    let (status, _, body) = services.http_call(Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let body = body.unwrap();
    let claims = crate::common::jwt_claims(&token);
    assert_eq!(body["user_id"], user_id.as_str());
    assert_eq!(body["jti"], claims["jti"]);
    assert_eq!(body["session_id"], claims["sid"]);
    assert_eq!(body["expires_at"], claims["exp"]);

    let status = services.grpc_call(None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let (status, challenge, _) = services.http_call(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="authd""#));

    let forger = Forger::for_state(state);
    let expired = forger.sign(&forger.header(), &Forger::claims(&user_id, 2_000, 900));
    let mut for_another_audience = Forger::claims(&user_id, 0, 900);
    for_another_audience["aud"] = "somebody-else".into();
    let for_another_audience = forger.sign(&forger.header(), &for_another_audience);
    let mut unknown_key = forger.header();
    unknown_key.kid = Some("no-such-key".into());
    let unknown_key = forger.sign(&unknown_key, &Forger::claims(&user_id, 0, 900));
    for (name, bad, description) in [
        ("forged", tampered(&token), None),
        ("expired", expired, Some("expired")),
        ("for another audience", for_another_audience, None),
        ("naming an unknown key", unknown_key, None),
        ("not a JWT", "not-a-jwt".to_owned(), None),
    ] {
        let status = services.grpc_call(Some(&bad)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        let (status, challenge, _) = services.http_call(Some(&bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        let challenge = challenge.unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
        if let Some(description) = description {
            assert!(challenge.contains(description), "{name}: {challenge}");
        }
    }

    app.logout(&token).await.unwrap();
    let revoked = soon(Duration::from_secs(2), async || {
        services
            .grpc_call(Some(&token))
            .await
            .is_err_and(|s| s.code() == Code::Unauthenticated)
    })
    .await;
    assert!(revoked, "a logged-out token is refused");
    let (status, challenge, _) = services.http_call(Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("revoked"));
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        Rejection::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_lets_valid_tokens_through_and_refuses_the_rest() {
    let state = TestState::new(Backend::Postgres).await;
    let app = state.app().start().await;
    let verifier =
        Verifier::remote(format!("http://{}", app.address), Duration::from_secs(1)).unwrap();
    accepts_valid_and_refuses_the_rest(verifier, &app, &state).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_lets_valid_tokens_through_and_refuses_the_rest() {
    for backend in [Backend::Postgres, Backend::Embedded] {
        let state = TestState::new(backend).await;
        let app = watching(&state).start().await;
        let verifier = local_verifier(local_options(&app)).await;
        accepts_valid_and_refuses_the_rest(verifier, &app, &state).await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_sends_tokens_in_the_field_or_as_bearer_metadata() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let email = format!("client-{}@example.com", uuid::Uuid::new_v4().simple());
    let client = AuthClient::connect(format!("http://{}", app.address))
        .await
        .unwrap();
    let registered = client
        .register(&email, crate::common::PASSWORD, "")
        .await
        .unwrap();
    let login = client.login(&email, crate::common::PASSWORD).await.unwrap();
    let tokens = login.tokens.unwrap();
    for placement in [
        authd_client::TokenPlacement::Field,
        authd_client::TokenPlacement::Bearer,
    ] {
        let client = client.clone().with_token_placement(placement);
        let verified = client.verify(&tokens.access_token).await.unwrap();
        assert_eq!(verified.user_id, registered.user_id);
        let sessions = client.list_sessions(&tokens.access_token).await.unwrap();
        assert!(
            sessions
                .iter()
                .any(|s| s.session_id == tokens.session_id && s.current)
        );
    }
    let refreshed = client.refresh(&tokens.refresh_token).await.unwrap();
    let access = refreshed.tokens.unwrap().access_token;
    let ended = client.logout_all(&access).await.unwrap();
    assert!(ended.sessions_ended >= 2, "{ended:?}");
    let status = client.verify(&access).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    app.stop().await;
}

/// One way to revoke a token through instance A.
#[derive(Debug, Clone, Copy)]
enum Revocation {
    Logout,
    LogoutAll,
    RevokeSession,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_one_instance_reach_a_local_layer_on_another_within_100ms() {
    let state = TestState::new(Backend::Postgres).await;
    let a = watching(&state).start().await;
    let b = watching(&state).start().await;
    let verifier = local_verifier(local_options(&b)).await;
    let client_a = AuthClient::new(a.channel.clone());
    let (email, _, _) = a.new_user().await;

    let mut delays = Vec::new();
    for trial in 0..100 {
        let way = [
            Revocation::Logout,
            Revocation::LogoutAll,
            Revocation::RevokeSession,
        ][trial % 3];
        let tokens = client_a
            .login(&email, crate::common::PASSWORD)
            .await
            .unwrap()
            .tokens
            .unwrap();
        let token = tokens.access_token;
        verifier
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("trial {trial}: a fresh token passes: {e}"));
        // From before the revoking call: the delay includes the call itself (an upper bound).
        let mut revoked_at = std::time::Instant::now();
        match way {
            Revocation::Logout => client_a.logout(&token, "").await.unwrap(),
            Revocation::LogoutAll => drop(client_a.logout_all(&token).await.unwrap()),
            Revocation::RevokeSession => {
                // Another session of the same user revokes this one (and lives on until a
                // later LogoutAll).
                let other = client_a
                    .login(&email, crate::common::PASSWORD)
                    .await
                    .unwrap()
                    .tokens
                    .unwrap();
                revoked_at = std::time::Instant::now();
                client_a
                    .revoke_session(&other.access_token, &tokens.session_id)
                    .await
                    .unwrap();
            }
        }
        let honoured = soon(Duration::from_secs(5), async || {
            verifier.verify(&token).await == Err(Rejection::Revoked)
        })
        .await;
        assert!(
            honoured,
            "trial {trial} ({way:?}): the local layer on B honours it"
        );
        delays.push(revoked_at.elapsed());
    }
    delays.sort();
    let p50 = delays[49];
    let p99 = delays[98];
    println!(
        "revocation on A honoured by a local layer on B: p50 {p50:?}, p99 {p99:?}, max {:?} (100 trials)",
        delays[99]
    );
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?} over 100 ms");
    a.stop().await;
    b.stop().await;
}

/// Two free ports on loopback, for an app that must come back on the same addresses.
async fn free_addresses() -> (SocketAddr, SocketAddr) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (grpc.local_addr().unwrap(), http.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_layer_fails_closed_while_authd_is_gone_and_recovers_when_it_returns() {
    let state = TestState::new(Backend::Embedded).await;
    let (grpc, http) = free_addresses().await;
    let app = watching(&state).listen_on(grpc, http).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let services = protect(&verifier).await;
    let (_, _, token) = app.new_user().await;
    assert_eq!(services.http_call(Some(&token)).await.0, StatusCode::OK);
    let bound = verifier.staleness_bound();
    assert_eq!(bound, Duration::from_secs(3), "three heartbeats of 1 s");

    app.stop().await;
    let stopped = std::time::Instant::now();
    let closed = soon(bound + Duration::from_secs(2), async || {
        verifier
            .verify(&token)
            .await
            .is_err_and(|r| r.is_unavailable())
    })
    .await;
    assert!(
        closed,
        "fails closed once authd has been silent for the staleness bound"
    );
    // The bound counts from the last heartbeat, up to one interval before the stop.
    assert!(
        stopped.elapsed() + Duration::from_millis(1_100) >= bound,
        "not before the bound: {:?}",
        stopped.elapsed()
    );
    let (status, _, _) = services.http_call(Some(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let status = services.grpc_call(Some(&token)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // A forged token is still refused as such: signatures need no authd.
    let (status, _, _) = services.http_call(Some(&tampered(&token))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let app = watching(&state).listen_on(grpc, http).start().await;
    assert!(
        verifier.wait_until_current(Duration::from_secs(15)).await,
        "reconnects and reloads the snapshot"
    );
    assert_eq!(services.http_call(Some(&token)).await.0, StatusCode::OK);
    // And it is live again: a logout is honoured.
    app.logout(&token).await.unwrap();
    let revoked = soon(Duration::from_secs(2), async || {
        verifier.verify(&token).await == Err(Rejection::Revoked)
    })
    .await;
    assert!(revoked);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_authd_makes_a_local_layer_fail_closed_until_it_answers_again() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let proxy = Proxy::start(app.address).await;
    let options = LocalOptions::new(
        format!("http://{}", proxy.address),
        format!("http://{}", app.http_address.unwrap()),
    )
    .watch_token(WATCH_TOKEN);
    let verifier = local_verifier(options).await;
    let (_, _, token) = app.new_user().await;
    verifier.verify(&token).await.unwrap();

    proxy.stall();
    let closed = soon(
        verifier.staleness_bound() + Duration::from_secs(2),
        async || {
            verifier
                .verify(&token)
                .await
                .is_err_and(|r| r.is_unavailable())
        },
    )
    .await;
    assert!(closed, "no heartbeat for three intervals: fails closed");
    // A revocation made while the layer cannot hear authd...
    app.logout(&token).await.unwrap();
    proxy.restore();
    assert!(verifier.wait_until_current(Duration::from_secs(15)).await);
    // ...is in the snapshot it reloads.
    assert_eq!(verifier.verify(&token).await, Err(Rejection::Revoked));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_local_layer_can_fall_back_to_remote_verify() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    // A watch token authd does not know: the mirror never becomes current.
    let options = LocalOptions::new(
        format!("http://{}", app.address),
        format!("http://{}", app.http_address.unwrap()),
    )
    .watch_token("not-the-watch-token-0123456789abcdef")
    .stale_policy(StalePolicy::FallBackToRemote);
    let verifier = Verifier::local(options).unwrap();
    assert!(
        !verifier
            .wait_until_current(Duration::from_millis(1_500))
            .await
    );
    let (_, user_id, token) = app.new_user().await;
    let claims = verifier
        .verify(&token)
        .await
        .expect("Verify answers instead");
    assert_eq!(claims.user_id(), user_id);
    app.logout(&token).await.unwrap();
    assert_eq!(verifier.verify(&token).await, Err(Rejection::Revoked));

    // The default policy fails closed instead.
    let fail_closed = Verifier::local(
        LocalOptions::new(
            format!("http://{}", app.address),
            format!("http://{}", app.http_address.unwrap()),
        )
        .watch_token("not-the-watch-token-0123456789abcdef"),
    )
    .unwrap();
    let (_, _, token) = app.new_user().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fail_closed
            .verify(&token)
            .await
            .is_err_and(|r| r.is_unavailable())
    );
    app.stop().await;
}
