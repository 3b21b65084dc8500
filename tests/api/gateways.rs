//! Real gateways in front of real authd instances, run from the configurations in `deploy/`:
//! nginx (`auth_request` to `/verify`, and `grpc_pass` load-balancing two instances) and Caddy
//! (`forward_auth`). A protected location refuses a request without a token (401 with the bare
//! challenge), passes one with a valid token with authd's identity headers (and never the
//! client's own), refuses it after Logout (401 `invalid_token`), and answers 503 with Retry-After
//! when revocation cannot be checked.

use std::time::Duration;

use hyper::{Method, StatusCode};
use tonic::Code;

use crate::common::{
    Backend, Proxy, TestApp, TestState, assert_status,
    gateway::{Gateway, Kind, Upstream},
    host_port,
    http::{HttpClient, HttpResponse, Protocol},
    jwt_claims, redis_url,
};

/// The addresses the configurations in `deploy/` use, which the tests replace.
const AUTHD_HTTP_A: &str = "127.0.0.1:8080";
const AUTHD_HTTP_B: &str = "127.0.0.1:8081";
const AUTHD_GRPC_A: &str = "127.0.0.1:50051";
const AUTHD_GRPC_B: &str = "127.0.0.1:50052";
const APP: &str = "127.0.0.1:3000";
const PROTECTED: &str = "127.0.0.1:8000";
const GRPC_FRONT: &str = "127.0.0.1:50050";

/// Two authd instances on one Postgres and one Redis, reached through `redis` (a proxy the test
/// can cut, or Redis itself).
async fn two_instances(state: &TestState, redis: &str) -> (TestApp, TestApp) {
    let a = state.app().redis_url(Some(redis)).start().await;
    let b = state.app().redis_url(Some(redis)).start().await;
    (a, b)
}

/// The replacements of `deploy/`'s addresses with the instances' and the upstream's.
fn targets(a: &TestApp, b: &TestApp, upstream: &Upstream) -> Vec<(&'static str, String)> {
    vec![
        (AUTHD_HTTP_A, a.http_address.unwrap().to_string()),
        (AUTHD_HTTP_B, b.http_address.unwrap().to_string()),
        (APP, upstream.address.to_string()),
    ]
}

fn start_nginx(a: &TestApp, b: &TestApp, upstream: &Upstream) -> Option<Gateway> {
    let binary = Kind::Nginx.binary_or_skip()?;
    let mut targets = targets(a, b, upstream);
    targets.push((AUTHD_GRPC_A, a.address.to_string()));
    targets.push((AUTHD_GRPC_B, b.address.to_string()));
    Some(Gateway::start(
        Kind::Nginx,
        &binary,
        "nginx/nginx.conf",
        &targets,
        &[PROTECTED, GRPC_FRONT],
    ))
}

fn start_caddy(a: &TestApp, b: &TestApp, upstream: &Upstream) -> Option<Gateway> {
    let binary = Kind::Caddy.binary_or_skip()?;
    Some(Gateway::start(
        Kind::Caddy,
        &binary,
        "caddy/Caddyfile",
        &targets(a, b, upstream),
        &[PROTECTED],
    ))
}

/// `GET /some/page` through the gateway's protected site with `headers`.
async fn get(gateway: &Gateway, headers: &[(&str, &str)]) -> HttpResponse {
    HttpClient::new(gateway.listening[0], Protocol::Http1)
        .request(Method::GET, "/some/page?x=1", headers)
        .await
}

/// The headers the upstream received, from its echo.
fn seen_by_upstream(response: &HttpResponse) -> serde_json::Value {
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    response.json()
}

/// What every forward-auth gateway must do, on instances `a` and `b` behind `gateway`.
async fn forward_auth_protects_the_upstream(gateway: &Gateway, a: &TestApp, b: &TestApp) {
    // No token: 401 with the bare challenge, and the upstream is not reached.
    let refused = get(gateway, &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="authd""#),
        "{refused:?}"
    );

    // A valid token: the upstream sees authd's headers, never the client's of the same names.
    let (_, user_id, token) = a.new_user().await;
    let claims = jwt_claims(&token);
    let bearer = format!("Bearer {token}");
    let spoofed = [
        ("authorization", bearer.as_str()),
        ("x-authd-user-id", "someone-else"),
        ("x-authd-session-id", "a-session-of-someone-else"),
        ("x-authd-jti", "a-jti-of-someone-else"),
    ];
    for _ in 0..4 {
        // Several times, so that both instances answer.
        let seen = seen_by_upstream(&get(gateway, &spoofed).await);
        assert_eq!(
            seen["x-authd-user-id"],
            serde_json::json!([user_id]),
            "{seen}"
        );
        assert_eq!(
            seen["x-authd-jti"],
            serde_json::json!([claims["jti"]]),
            "{seen}"
        );
        match claims.get("sid") {
            Some(sid) => assert_eq!(
                seen["x-authd-session-id"],
                serde_json::json!([sid]),
                "{seen}"
            ),
            None => assert!(seen.get("x-authd-session-id").is_none(), "{seen}"),
        }
    }

    // A token that is not one: 401 invalid_token.
    let forged = get(gateway, &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{forged:?}");
    assert!(
        forged
            .header("www-authenticate")
            .is_some_and(|challenge| challenge.contains(r#"error="invalid_token""#)),
        "{forged:?}"
    );

    // Logout on the other instance: the very next request is refused, on either instance.
    b.logout(&token).await.expect("logout");
    for _ in 0..4 {
        let revoked = get(gateway, &[("authorization", &bearer)]).await;
        assert_eq!(revoked.status, StatusCode::UNAUTHORIZED, "{revoked:?}");
        let challenge = revoked.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(r#"error="invalid_token""#) && challenge.contains("revoked"),
            "{revoked:?}"
        );
    }
}

/// With the revocation store cut, a valid token is refused with 503 and a Retry-After.
async fn forward_auth_fails_closed(gateway: &Gateway, proxy: &Proxy, token: &str) {
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(gateway, &[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
    proxy.cut();
    let refused = get(gateway, &[("authorization", &bearer)]).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}\n{}",
        gateway.log()
    );
    let retry_after: u32 = refused
        .header("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {refused:?}"))
        .parse()
        .expect("retry-after in whole seconds");
    assert!(retry_after >= 1);
    assert!(!refused.body.contains("x-authd-user-id"), "{refused:?}");
    proxy.restore();
    let recovered = crate::common::eventually(Duration::from_secs(10), || async {
        get(gateway, &[("authorization", &bearer)]).await.status == StatusCode::OK
    })
    .await;
    assert!(
        recovered,
        "the gateway lets requests through again once Redis is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_protects_a_location() {
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &redis_url()).await;
    let upstream = Upstream::start().await;
    let Some(nginx) = start_nginx(&a, &b, &upstream) else {
        return;
    };
    forward_auth_protects_the_upstream(&nginx, &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_503_with_retry_after_when_revocation_cannot_be_checked() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let (a, b) = two_instances(&state, &proxy.url(&redis_url())).await;
    let upstream = Upstream::start().await;
    let Some(nginx) = start_nginx(&a, &b, &upstream) else {
        return;
    };
    let (_, _, token) = a.new_user().await;
    forward_auth_fails_closed(&nginx, &proxy, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_503_when_no_authd_instance_answers() {
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &redis_url()).await;
    let upstream = Upstream::start().await;
    let Some(nginx) = start_nginx(&a, &b, &upstream) else {
        return;
    };
    let (_, _, token) = a.new_user().await;
    let bearer = format!("Bearer {token}");
    a.stop().await;
    b.stop().await;
    let refused = get(&nginx, &[("authorization", &bearer)]).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{refused:?}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_through_nginx_to_two_instances_registers_verifies_and_logs_out() {
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &redis_url()).await;
    let upstream = Upstream::start().await;
    let Some(nginx) = start_nginx(&a, &b, &upstream) else {
        return;
    };
    let front = TestApp::connect(nginx.listening[1]).await;
    let (_, user_id, token) = front.new_user().await;
    for _ in 0..4 {
        // Round-robin: both instances answer, and both know the token.
        assert_eq!(front.verify(&token).await.expect("verify").user_id, user_id);
    }
    front.logout(&token).await.expect("logout");
    for _ in 0..4 {
        assert_status(
            &front.verify(&token).await.unwrap_err(),
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    // With one instance gone, nginx sends every call to the other.
    let (_, other_user, other_token) = front.new_user().await;
    a.stop().await;
    for _ in 0..4 {
        assert_eq!(
            front.verify(&other_token).await.expect("verify").user_id,
            other_user
        );
        assert_status(
            &front.verify(&token).await.unwrap_err(),
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_protects_a_site() {
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &redis_url()).await;
    let upstream = Upstream::start().await;
    let Some(caddy) = start_caddy(&a, &b, &upstream) else {
        return;
    };
    forward_auth_protects_the_upstream(&caddy, &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_answers_503_with_retry_after_when_revocation_cannot_be_checked() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let (a, b) = two_instances(&state, &proxy.url(&redis_url())).await;
    let upstream = Upstream::start().await;
    let Some(caddy) = start_caddy(&a, &b, &upstream) else {
        return;
    };
    let (_, _, token) = a.new_user().await;
    forward_auth_fails_closed(&caddy, &proxy, &token).await;
}
