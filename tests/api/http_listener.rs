//! The HTTP listener: the JWKS and OpenID discovery documents (enough for a standard JWT library
//! to verify authd's tokens alone), forward-auth `/verify` (Verify's checks as an HTTP answer),
//! the probes `/healthz` and `/readyz`, 405/404 for anything else; HTTP/1.1 and h2c.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use authd::clock::ManualClock;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hyper::{Method, StatusCode, Version};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use uuid::Uuid;

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, Forger, Proxy, TestApp, TestState, admin_database_url, host_port,
        http::{HttpResponse, Protocol},
        jwt_claims, redis_url, spawn_app, tampered,
    },
};

const JWKS: &str = "/.well-known/jwks.json";
const DISCOVERY: &str = "/.well-known/openid-configuration";
/// The challenge of a request that sent no bearer token (RFC 6750 §3.1: no error code).
const BARE_CHALLENGE: &str = r#"Bearer realm="authd""#;

backend_tests!(
    verify_accepts_a_valid_bearer_token_with_identity_headers,
    verify_answers_any_method,
    verify_works_over_h2c,
    verify_without_a_bearer_token_is_a_401_with_a_bare_challenge,
    verify_of_an_invalid_token_is_a_401_invalid_token_with_a_json_reason,
    verify_of_a_token_revoked_by_logout_is_a_401_token_revoked,
    verify_of_an_expired_token_is_a_401_token_expired,
    verify_of_a_repeated_authorization_header_never_verifies,
    verify_forwards_headers_under_a_configured_prefix,
    healthz_and_readyz_are_200_when_the_back_ends_answer,
);

async fn verify_with(app: &TestApp, authorization: &str) -> HttpResponse {
    app.http()
        .request(Method::GET, "/verify", &[("authorization", authorization)])
        .await
}

/// The three identity headers of `token` under `prefix`, as (name, value).
fn identity(prefix: &str, token: &str) -> [(String, String); 3] {
    let claims = jwt_claims(token);
    let claim = |name: &str| claims[name].as_str().expect("a string claim").to_owned();
    [
        (format!("{prefix}user-id"), claim("sub")),
        (format!("{prefix}session-id"), claim("sid")),
        (format!("{prefix}jti"), claim("jti")),
    ]
}

/// Asserts a 200 carrying exactly `token`'s identity under `prefix`.
fn assert_accepted(response: &HttpResponse, prefix: &str, token: &str) {
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    for (name, value) in identity(prefix, token) {
        assert_eq!(response.header(&name), Some(value.as_str()), "{name}");
    }
    assert_eq!(response.header("www-authenticate"), None);
}

/// Asserts a 401 for a token that was sent and refused for `reason`, described as `description`.
fn assert_invalid_token(response: &HttpResponse, reason: &str, description: &str) {
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(
            format!(
                r#"Bearer realm="authd", error="invalid_token", error_description="{description}""#
            )
            .as_str()
        )
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.json(),
        serde_json::json!({ "error": "invalid_token", "reason": reason })
    );
    assert_eq!(response.header("x-authd-user-id"), None);
}

/// Asserts a 401 for a request that carried no bearer token.
fn assert_no_token(response: &HttpResponse) {
    assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{response:?}");
    assert_eq!(response.header("www-authenticate"), Some(BARE_CHALLENGE));
    assert_eq!(response.header("retry-after"), None);
    let body = response.json();
    assert_eq!(body["reason"], "TOKEN_MISSING", "{body}");
    assert_ne!(body["error"], "invalid_token", "{body}");
}

async fn verify_accepts_a_valid_bearer_token_with_identity_headers(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, user_id, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let verified = app.verify(&token).await.unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = app
            .http()
            .request(
                Method::GET,
                "/verify",
                &[
                    ("authorization", &format!("{scheme} {token}")),
                    // What the client claims about itself is not what authd answers.
                    ("x-authd-user-id", "00000000-0000-0000-0000-000000000000"),
                ],
            )
            .await;
        assert_accepted(&response, "x-authd-", &token);
        // Header names are case-insensitive: the same headers as X-Authd-*.
        assert_eq!(response.header("X-Authd-User-Id"), Some(user_id.as_str()));
        assert_eq!(
            response.header("X-Authd-Session-Id"),
            Some(verified.session_id.as_str())
        );
        assert_eq!(response.header("X-Authd-Jti"), Some(verified.jti.as_str()));
    }
}

async fn verify_answers_any_method(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let authorization = format!("Bearer {token}");
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
    ];
    for method in methods {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let accepted = app
            .http()
            .request(
                method.clone(),
                "/verify",
                &[("authorization", &authorization)],
            )
            .await;
        assert_accepted(&accepted, "x-authd-", &token);
        let refused = app.http().request(method.clone(), "/verify", &[]).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some(BARE_CHALLENGE),
            "{method}"
        );
    }
}

async fn verify_works_over_h2c(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let h2c = app.h2c();
    let accepted = h2c
        .request(
            Method::GET,
            "/verify",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(accepted.version, Version::HTTP_2);
    assert_accepted(&accepted, "x-authd-", &token);
    let refused = h2c
        .request(
            Method::POST,
            "/verify",
            &[("authorization", &format!("Bearer {}", tampered(&token)))],
        )
        .await;
    assert_eq!(refused.version, Version::HTTP_2);
    assert_invalid_token(&refused, "TOKEN_INVALID", "access token is invalid");
}

async fn verify_without_a_bearer_token_is_a_401_with_a_bare_challenge(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    assert_no_token(&app.http().get("/verify").await);
    for authorization in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer ".to_owned(),
        "Bearer".to_owned(),
        // Exactly one space after the scheme, as Verify reads it.
        format!("Bearer  {token}"),
        format!("Bearer\t{token}"),
    ] {
        assert_no_token(&verify_with(&app, &authorization).await);
    }
}

async fn verify_of_an_invalid_token_is_a_401_invalid_token_with_a_json_reason(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    for bad in [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        tampered(&token),
        format!("{token}.extra"),
    ] {
        let response = verify_with(&app, &format!("Bearer {bad}")).await;
        assert_invalid_token(&response, "TOKEN_INVALID", "access token is invalid");
    }
}

async fn verify_of_a_token_revoked_by_logout_is_a_401_token_revoked(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let authorization = format!("Bearer {token}");
    assert_eq!(
        verify_with(&app, &authorization).await.status,
        StatusCode::OK
    );
    app.logout(&token).await.unwrap();
    assert_invalid_token(
        &verify_with(&app, &authorization).await,
        "TOKEN_REVOKED",
        "access token has been revoked",
    );
}

async fn verify_of_an_expired_token_is_a_401_token_expired(backend: Backend) {
    let state = TestState::new(backend).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = state
        .app()
        .arg("--access-token-ttl=1s")
        .clock(clock.clone())
        .start()
        .await;
    let (_, _, token) = app.new_user().await;
    let authorization = format!("Bearer {token}");
    assert_eq!(
        verify_with(&app, &authorization).await.status,
        StatusCode::OK
    );
    // Past the 1 s lifetime and the 5 s default leeway.
    clock.advance(Duration::from_secs(10));
    assert_invalid_token(
        &verify_with(&app, &authorization).await,
        "TOKEN_EXPIRED",
        "access token has expired",
    );
}

async fn verify_of_a_repeated_authorization_header_never_verifies(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let (_, _, other) = app.new_user().await;
    let response = app
        .http()
        .request(
            Method::GET,
            "/verify",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("authorization", &format!("Bearer {other}")),
            ],
        )
        .await;
    assert_invalid_token(&response, "TOKEN_INVALID", "access token is invalid");
}

async fn verify_forwards_headers_under_a_configured_prefix(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--forward-header-prefix=x-auth-")
        .start()
        .await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let response = verify_with(&app, &format!("Bearer {token}")).await;
    assert_accepted(&response, "x-auth-", &token);
    for name in ["x-authd-user-id", "x-authd-session-id", "x-authd-jti"] {
        assert_eq!(
            response.header(name),
            None,
            "{name} under the default prefix"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_when_redis_is_cut_is_a_503_with_retry_after() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let app = state
        .app()
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let (_, _, token) = app.new_user().await;
    let authorization = format!("Bearer {token}");
    assert_eq!(
        verify_with(&app, &authorization).await.status,
        StatusCode::OK
    );

    proxy.cut();
    let response = verify_with(&app, &authorization).await;
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{response:?}"
    );
    let retry_after: u32 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {response:?}"))
        .parse()
        .expect("retry-after in whole seconds");
    assert!(retry_after >= 1, "retry-after: {retry_after}");
    assert_eq!(response.header("www-authenticate"), None);
    assert_eq!(response.header("x-authd-user-id"), None);

    proxy.restore();
    let recovered = crate::common::eventually(Duration::from_secs(10), || async {
        verify_with(&app, &authorization).await.status == StatusCode::OK
    })
    .await;
    assert!(recovered, "/verify must recover without a restart");
}

async fn healthz_and_readyz_are_200_when_the_back_ends_answer(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    for protocol in [Protocol::Http1, Protocol::H2c] {
        let client = app.http_client(protocol);
        assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
        let ready = client.get("/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_the_back_end_that_does_not_answer() {
    let state = TestState::new(Backend::Postgres).await;
    let redis_proxy = Proxy::start(host_port(&redis_url())).await;
    let postgres_proxy = Proxy::start(host_port(&admin_database_url())).await;
    let database_url = postgres_proxy.url(&state.database_url());
    let app = state
        .app()
        .database_url(Some(&database_url))
        .redis_url(Some(&redis_proxy.url(&redis_url())))
        .start()
        .await;
    assert_eq!(app.http().get("/readyz").await.status, StatusCode::OK);

    redis_proxy.cut();
    let ready = app.http().get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert!(
        ready.body.contains("redis") && !ready.body.contains("database"),
        "{:?}",
        ready.body
    );
    // The process still serves: liveness is not readiness.
    assert_eq!(app.http().get("/healthz").await.status, StatusCode::OK);
    redis_proxy.restore();
    let ready_again = crate::common::eventually(Duration::from_secs(10), || async {
        app.http().get("/readyz").await.status == StatusCode::OK
    })
    .await;
    assert!(ready_again, "/readyz must recover once Redis is back");

    postgres_proxy.cut();
    let ready = app.http().get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert!(
        ready.body.contains("database") && !ready.body.contains("redis"),
        "{:?}",
        ready.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_200() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let response = app.http().get("/healthz").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_the_ed25519_public_key_as_an_rfc_8037_jwk() {
    let Fixture { app, state } = spawn_app(Backend::Embedded).await;
    let response = app.http().get(JWKS).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=300")
    );
    let document = response.json();
    let keys = document["keys"].as_array().expect("a `keys` array");
    assert_eq!(keys.len(), 1, "{document}");
    let key = &keys[0];
    let members: BTreeSet<&str> = key
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Public members only: never `d`, the private key.
    assert_eq!(
        members,
        BTreeSet::from(["alg", "crv", "kid", "kty", "use", "x"]),
        "{key}"
    );
    let public_key = authd::tokens::load_or_generate_ed25519_key(&state.signing_key_path())
        .unwrap()
        .0
        .verifying_key()
        .to_bytes();
    assert_eq!(
        key,
        &serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(public_key),
            "kid": Forger::for_state(&state).kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    );
    // The kid is the one issued tokens name.
    let (_, _, token) = app.new_user().await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_of_an_hs256_app_is_empty() {
    let state = TestState::new(Backend::Embedded).await;
    // 32 random bytes, base64url: long enough, and with enough distinct bytes.
    let random = [*Uuid::new_v4().as_bytes(), *Uuid::new_v4().as_bytes()].concat();
    let secret = URL_SAFE_NO_PAD.encode(random);
    let app = state
        .app()
        .args([
            "--jwt-alg=HS256".to_owned(),
            format!("--jwt-secret={secret}"),
        ])
        .start()
        .await;
    let response = app.http().get(JWKS).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=300")
    );
    assert_eq!(response.json(), serde_json::json!({ "keys": [] }));
    assert!(!response.body.contains(&secret));
    // The app does run on HS256: its tokens verify.
    let (_, _, token) = app.new_user().await;
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::HS256
    );
    app.verify(&token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_the_issuer_and_a_jwks_uri_on_the_listener() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let response = app.http().get(DISCOVERY).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let document = response.json();
    assert_eq!(document["issuer"], "authd");
    let http_address = app.http_address.unwrap();
    assert_eq!(
        document["jwks_uri"],
        format!("http://{http_address}/.well-known/jwks.json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_builds_the_jwks_uri_from_the_public_url() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args([
            "--jwt-issuer=https://auth.example.com",
            "--public-url=https://auth.example.com/gateway/",
        ])
        .start()
        .await;
    let document = app.http().get(DISCOVERY).await.json();
    assert_eq!(document["issuer"], "https://auth.example.com");
    assert_eq!(
        document["jwks_uri"],
        "https://auth.example.com/gateway/.well-known/jwks.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_jwt_library_verifies_an_authd_token_from_discovery_and_jwks_alone() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .arg("--jwt-issuer=https://auth.example.com")
        .start()
        .await;
    let (_, user_id, token) = app.new_user().await;
    let verified = app.verify(&token).await.unwrap();

    // What a relying party does, knowing only the listener and its own audience.
    let http = app.http();
    let discovery = http.get(DISCOVERY).await.json();
    let issuer = discovery["issuer"].as_str().expect("an issuer");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("a jwks_uri");
    let jwks: JwkSet = serde_json::from_str(&http.get_url(jwks_uri).await.body).expect("a JWK Set");
    let verify = |token: &str| {
        let header = jsonwebtoken::decode_header(token)?;
        let jwk = jwks
            .find(header.kid.as_deref().expect("a kid"))
            .expect("the token's key is published");
        let algorithm = Algorithm::try_from(jwk.common.key_algorithm.expect("an alg"))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&["authd"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)
    };
    let claims = verify(&token).expect("authd's token verifies").claims;
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["jti"], verified.jti.as_str());
    // The published key is what decides: a tampered token does not verify with it.
    assert!(verify(&tampered(&token)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_and_unknown_paths_404() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    for protocol in [Protocol::Http1, Protocol::H2c] {
        let client = app.http_client(protocol);
        for path in [JWKS, DISCOVERY, "/healthz", "/readyz"] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                let response = client.request(method.clone(), path, &[]).await;
                assert_eq!(
                    response.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} over {protocol:?}"
                );
            }
        }
        for path in [
            "/",
            "/nope",
            "/verify/extra",
            "/.well-known/other",
            "/.well-known/jwks.json/x",
            "/healthz/x",
        ] {
            for method in [Method::GET, Method::POST] {
                let response = client.request(method.clone(), path, &[]).await;
                assert_eq!(
                    response.status,
                    StatusCode::NOT_FOUND,
                    "{method} {path} over {protocol:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_are_served_over_h2c() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let h2c = app.h2c();
    for path in [JWKS, DISCOVERY, "/healthz"] {
        let over_h2 = h2c.get(path).await;
        assert_eq!(over_h2.version, Version::HTTP_2, "{path}");
        assert_eq!(over_h2.status, StatusCode::OK, "{path}");
        let over_h1 = app.http().get(path).await;
        assert_eq!(over_h1.version, Version::HTTP_11, "{path}");
        assert_eq!(over_h2.body, over_h1.body, "{path}");
    }
}

/// Reads until the server closes the connection; how long that took (panics after `within`).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Duration {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_or_half_a_preface_is_closed_and_frees_its_slot() {
    use tokio::io::AsyncWriteExt as _;
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .arg("--max-connections=3")
        .arg("--max-connections-per-source=3")
        .start()
        .await;
    let address = app.http_address.unwrap();
    let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut half_preface = tokio::net::TcpStream::connect(address).await.unwrap();
    half_preface.write_all(b"PRI * HT").await.unwrap();
    let mut third = tokio::net::TcpStream::connect(address).await.unwrap();
    // At the cap (3), a fourth is closed at once, and a request cannot get through.
    let mut fourth = tokio::net::TcpStream::connect(address).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await < Duration::from_secs(2));
    // Within the header timeout (10 s) the silent ones are closed, and requests get through.
    for stream in [&mut silent, &mut half_preface, &mut third] {
        let waited = closed_within(stream, Duration::from_secs(15)).await;
        assert!(waited <= Duration::from_secs(12), "closed after {waited:?}");
    }
    assert_eq!(app.http().get("/healthz").await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_listener_keeps_the_per_source_connection_limit() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .arg("--max-connections-per-source=2")
        .start()
        .await;
    let address = app.http_address.unwrap();
    let _first = tokio::net::TcpStream::connect(address).await.unwrap();
    let _second = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(address).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(2)).await < Duration::from_secs(2));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_request_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--idle-timeout=1s").start().await;
    let address = app.http_address.unwrap();
    // Busy: an HTTP/1.1 request every 200 ms for 2.5 s on one kept-alive connection.
    let mut busy = tokio::net::TcpStream::connect(address).await.unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        busy.write_all(b"GET /healthz HTTP/1.1\r\nhost: authd\r\n\r\n")
            .await
            .unwrap();
        let mut response = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(2), busy.read(&mut response))
            .await
            .expect("an answer within 2 s")
            .unwrap();
        assert!(
            response[..read].starts_with(b"HTTP/1.1 200"),
            "a busy connection stays open: {:?}",
            String::from_utf8_lossy(&response[..read])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle: an HTTP/2 connection that sends the preface and its SETTINGS, then opens no stream.
    let mut idle = tokio::net::TcpStream::connect(address).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let waited = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the idle timeout: {waited:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_responses_is_disconnected() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let address = app.http_address.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    const REQUESTS: usize = 400;
    let pipelined = "GET /metrics HTTP/1.1\r\nhost: authd\r\n\r\n".repeat(REQUESTS);
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    // Read nothing for longer than the write-stall timeout (10 s): the server gives up on us.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the connection was closed");
    let answered = String::from_utf8_lossy(&received)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answered < REQUESTS,
        "every response was delivered ({answered}): the stalled connection was kept"
    );
    assert_eq!(app.http().get("/healthz").await.status, StatusCode::OK);
}
