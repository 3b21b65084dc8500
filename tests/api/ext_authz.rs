//! Envoy ext_authz (`envoy.service.auth.v3.Authorization/Check`) on the gRPC port: every outcome is
//! a `CheckResponse` (never a gRPC error): OK with identity headers that overwrite the client's,
//! UNAUTHENTICATED with an RFC 6750 401, UNAVAILABLE with a 503 and `retry-after` when the
//! revocation store cannot be asked. Listed by reflection and by grpc.health.v1.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use authd::clock::ManualClock;
use envoy_types::pb::envoy::{
    config::core::v3::{
        HeaderMap, HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
    },
    service::auth::v3::{
        AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
        attribute_context::{HttpRequest, Request},
        authorization_client::AuthorizationClient,
        check_response::HttpResponse,
    },
};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, Proxy, TestApp, TestState, eventually, host_port, jwt_claims, redis_url,
        spawn_app, tampered,
    },
};

/// The gRPC name Envoy calls, health checks and reflection list.
const ENVOY_SERVICE: &str = "envoy.service.auth.v3.Authorization";
/// The challenge of a request that sent no bearer token (RFC 6750 §3.1: no error code).
const BARE_CHALLENGE: &str = r#"Bearer realm="authd""#;

backend_tests!(
    check_of_a_valid_token_is_ok_with_headers_that_overwrite_the_clients,
    check_reads_the_bearer_scheme_in_any_case,
    check_reads_raw_headers_from_the_header_map,
    check_without_a_bearer_token_is_a_401_with_a_bare_challenge,
    check_of_an_invalid_token_is_a_401_invalid_token_with_a_json_reason,
    check_of_a_token_revoked_by_logout_is_a_401_token_revoked,
    check_of_an_expired_token_is_a_401_token_expired,
    check_of_a_repeated_authorization_header_never_verifies,
    check_forwards_headers_under_a_configured_prefix,
    check_has_envoy_strip_the_authorization_header_when_configured,
    the_envoy_service_is_listed_by_reflection,
    the_envoy_service_is_serving_in_grpc_health,
);

/// A request Envoy holds, with these (lower-case) `headers`.
fn request_with_headers(headers: &[(&str, &str)]) -> CheckRequest {
    request_with(HttpRequest {
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..Default::default()
    })
}

/// A request Envoy holds, as `encode_raw_headers: true` sends it: `header_map` only.
fn request_with_header_map(headers: Vec<HeaderValue>) -> CheckRequest {
    request_with(HttpRequest {
        header_map: Some(HeaderMap { headers }),
        ..Default::default()
    })
}

fn request_with(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "1".into(),
                    method: "GET".into(),
                    path: "/api/orders".into(),
                    host: "shop.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..http
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Envoy's answer to `request`: always a `CheckResponse`.
async fn check(app: &TestApp, request: CheckRequest) -> CheckResponse {
    AuthorizationClient::new(app.channel.clone())
        .check(request)
        .await
        .expect("a CheckResponse, never a gRPC error")
        .into_inner()
}

/// The OK response of an accepted request; panics on anything else.
fn allowed(response: &CheckResponse) -> &OkHttpResponse {
    let status = response.status.as_ref().expect("a status");
    assert_eq!(status.code, Code::Ok as i32, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected an ok_response, got {other:?}"),
    }
}

/// The denial of a refused request with gRPC `code`; panics on anything else.
fn denied(response: &CheckResponse, code: Code) -> &DeniedHttpResponse {
    let status = response.status.as_ref().expect("a status");
    assert_eq!(status.code, code as i32, "{response:?}");
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("expected a denied_response, got {other:?}"),
    }
}

/// Header name (lower case) → value; panics on a name given twice.
fn header_map(headers: &[HeaderValueOption]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for option in headers {
        let header = option.header.as_ref().expect("a header");
        let previous = map.insert(header.key.to_ascii_lowercase(), header.value.clone());
        assert!(
            previous.is_none(),
            "{} given twice: {headers:?}",
            header.key
        );
    }
    map
}

/// Asserts the headers set upstream are exactly `expected`, each replacing a client's header of
/// the same name.
fn assert_forwarded(ok: &OkHttpResponse, expected: &[(&str, &str)]) {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    assert_eq!(header_map(&ok.headers), expected);
    for option in &ok.headers {
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            "{option:?}"
        );
        // The deprecated `append`, if set, would take precedence over `append_action` in Envoy.
        #[allow(deprecated)]
        let append = option.append;
        assert_eq!(append, None, "{option:?}");
    }
}

/// The three identity headers of `token` under `prefix`.
fn identity(prefix: &str, token: &str) -> Vec<(String, String)> {
    let claims = jwt_claims(token);
    let claim = |name: &str| claims[name].as_str().expect("a string claim").to_owned();
    vec![
        (format!("{prefix}user-id"), claim("sub")),
        (format!("{prefix}session-id"), claim("sid")),
        (format!("{prefix}jti"), claim("jti")),
    ]
}

fn as_pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// Asserts a 401 for a token that was sent and refused for `reason`, described as `description`.
fn assert_invalid_token(response: &CheckResponse, reason: &str, description: &str) {
    let denial = denied(response, Code::Unauthenticated);
    assert_eq!(denial.status.as_ref().map(|s| s.code), Some(401));
    let headers = header_map(&denial.headers);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some(
            format!(
                r#"Bearer realm="authd", error="invalid_token", error_description="{description}""#
            )
            .as_str()
        ),
        "{denial:?}"
    );
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&denial.body).expect("a JSON body");
    assert_eq!(
        body,
        serde_json::json!({ "error": "invalid_token", "reason": reason })
    );
}

/// Asserts a 401 for a request that carried no bearer token.
fn assert_no_token(response: &CheckResponse) {
    let denial = denied(response, Code::Unauthenticated);
    assert_eq!(denial.status.as_ref().map(|s| s.code), Some(401));
    let headers = header_map(&denial.headers);
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some(BARE_CHALLENGE),
        "{denial:?}"
    );
    assert_eq!(headers.get("retry-after"), None);
    let body: serde_json::Value = serde_json::from_str(&denial.body).expect("a JSON body");
    assert_eq!(body["reason"], "TOKEN_MISSING", "{body}");
    assert_ne!(body["error"], "invalid_token", "{body}");
}

async fn check_of_a_valid_token_is_ok_with_headers_that_overwrite_the_clients(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, user_id, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let verified = app.verify(&token).await.unwrap();
    // The client tries to pass itself off as someone else.
    let authorization = bearer(&token);
    let request = request_with_headers(&[
        ("authorization", &authorization),
        ("x-authd-user-id", "00000000-0000-0000-0000-000000000000"),
        ("x-authd-session-id", "forged"),
        ("x-authd-jti", "forged"),
    ]);
    let response = check(&app, request).await;
    let ok = allowed(&response);
    assert_forwarded(
        ok,
        &[
            ("x-authd-user-id", &user_id),
            ("x-authd-session-id", &verified.session_id),
            ("x-authd-jti", &verified.jti),
        ],
    );
    assert!(!verified.session_id.is_empty());
    // The authorization header goes upstream unless stripping is configured (off by default).
    assert_eq!(ok.headers_to_remove, Vec::<String>::new());
}

async fn check_reads_the_bearer_scheme_in_any_case(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let expected = identity("x-authd-", &token);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let authorization = format!("{scheme} {token}");
        let response = check(
            &app,
            request_with_headers(&[("authorization", &authorization)]),
        )
        .await;
        assert_forwarded(allowed(&response), &as_pairs(&expected));
    }
}

async fn check_reads_raw_headers_from_the_header_map(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let expected = identity("x-authd-", &token);
    let other = HeaderValue {
        key: ":path".into(),
        raw_value: b"/api/orders".to_vec(),
        ..Default::default()
    };
    // Envoy's raw form (bytes in `raw_value`), the older string form, and a key not lower-cased.
    let forms = [
        HeaderValue {
            key: "authorization".into(),
            raw_value: bearer(&token).into_bytes(),
            ..Default::default()
        },
        HeaderValue {
            key: "authorization".into(),
            value: bearer(&token),
            ..Default::default()
        },
        HeaderValue {
            key: "Authorization".into(),
            raw_value: format!("bearer {token}").into_bytes(),
            ..Default::default()
        },
    ];
    for authorization in forms {
        let request = request_with_header_map(vec![other.clone(), authorization.clone()]);
        let response = check(&app, request).await;
        assert_forwarded(allowed(&response), &as_pairs(&expected));
    }
    // The raw form is checked like the other: a tampered token is refused, no header is no token.
    let request = request_with_header_map(vec![HeaderValue {
        key: "authorization".into(),
        raw_value: bearer(&tampered(&token)).into_bytes(),
        ..Default::default()
    }]);
    assert_invalid_token(
        &check(&app, request).await,
        "TOKEN_INVALID",
        "access token is invalid",
    );
    assert_no_token(&check(&app, request_with_header_map(vec![other])).await);
}

async fn check_without_a_bearer_token_is_a_401_with_a_bare_challenge(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let two_spaces = format!("Bearer  {token}");
    let requests = [
        CheckRequest::default(),
        request_with_headers(&[]),
        request_with_headers(&[("x-authd-user-id", "00000000-0000-0000-0000-000000000000")]),
        request_with_headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
        request_with_headers(&[("authorization", "Bearer ")]),
        request_with_headers(&[("authorization", "Bearer")]),
        // Exactly one space after the scheme, as Verify reads it.
        request_with_headers(&[("authorization", &two_spaces)]),
        // The token must be in the authorization header, not elsewhere.
        request_with_headers(&[("x-access-token", &token)]),
    ];
    for request in requests {
        let response = check(&app, request.clone()).await;
        assert_no_token(&response);
    }
}

async fn check_of_an_invalid_token_is_a_401_invalid_token_with_a_json_reason(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    for bad in [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        tampered(&token),
        format!("{token}.extra"),
    ] {
        let authorization = bearer(&bad);
        let response = check(
            &app,
            request_with_headers(&[("authorization", &authorization)]),
        )
        .await;
        assert_invalid_token(&response, "TOKEN_INVALID", "access token is invalid");
    }
}

async fn check_of_a_token_revoked_by_logout_is_a_401_token_revoked(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let authorization = bearer(&token);
    let request = request_with_headers(&[("authorization", &authorization)]);
    allowed(&check(&app, request.clone()).await);
    app.logout(&token).await.unwrap();
    assert_invalid_token(
        &check(&app, request).await,
        "TOKEN_REVOKED",
        "access token has been revoked",
    );
}

async fn check_of_an_expired_token_is_a_401_token_expired(backend: Backend) {
    let state = TestState::new(backend).await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = state
        .app()
        .arg("--access-token-ttl=1s")
        .clock(clock.clone())
        .start()
        .await;
    let (_, _, token) = app.new_user().await;
    let authorization = bearer(&token);
    let request = request_with_headers(&[("authorization", &authorization)]);
    allowed(&check(&app, request.clone()).await);
    // Past the 1 s lifetime and the 5 s default leeway.
    clock.advance(Duration::from_secs(10));
    assert_invalid_token(
        &check(&app, request).await,
        "TOKEN_EXPIRED",
        "access token has expired",
    );
}

async fn check_of_a_repeated_authorization_header_never_verifies(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let (_, _, other) = app.new_user().await;
    // Two authorization headers, both valid alone: neither one is picked.
    let request = request_with_header_map(vec![
        HeaderValue {
            key: "authorization".into(),
            raw_value: bearer(&token).into_bytes(),
            ..Default::default()
        },
        HeaderValue {
            key: "authorization".into(),
            raw_value: bearer(&other).into_bytes(),
            ..Default::default()
        },
    ]);
    let response = check(&app, request).await;
    assert_invalid_token(&response, "TOKEN_INVALID", "access token is invalid");
}

async fn check_forwards_headers_under_a_configured_prefix(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--forward-header-prefix=x-auth-")
        .start()
        .await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let authorization = bearer(&token);
    let response = check(
        &app,
        request_with_headers(&[("authorization", &authorization)]),
    )
    .await;
    let expected = identity("x-auth-", &token);
    // Exactly these three: nothing under the default prefix.
    assert_forwarded(allowed(&response), &as_pairs(&expected));
}

async fn check_has_envoy_strip_the_authorization_header_when_configured(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--extauthz-strip-authorization=true")
        .start()
        .await;
    let (_, _, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let authorization = bearer(&token);
    let response = check(
        &app,
        request_with_headers(&[("authorization", &authorization)]),
    )
    .await;
    let ok = allowed(&response);
    assert_eq!(ok.headers_to_remove, vec!["authorization".to_owned()]);
    assert_forwarded(ok, &as_pairs(&identity("x-authd-", &token)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_when_redis_is_cut_is_unavailable_with_a_503_and_retry_after() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let app = state
        .app()
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let (_, _, token) = app.new_user().await;
    let authorization = bearer(&token);
    let request = request_with_headers(&[("authorization", &authorization)]);
    allowed(&check(&app, request.clone()).await);

    proxy.cut();
    let response = check(&app, request.clone()).await;
    let denial = denied(&response, Code::Unavailable);
    assert_eq!(denial.status.as_ref().map(|s| s.code), Some(503));
    let headers = header_map(&denial.headers);
    let retry_after: u32 = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after in {denial:?}"))
        .parse()
        .expect("retry-after in whole seconds");
    assert!(retry_after >= 1, "retry-after: {retry_after}");
    // Not a verdict on the token: no challenge.
    assert_eq!(headers.get("www-authenticate"), None, "{denial:?}");
    let not_serving = eventually(Duration::from_secs(5), || async {
        envoy_health(&app).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(
        not_serving,
        "{ENVOY_SERVICE} must be NOT_SERVING while Redis is down"
    );

    proxy.restore();
    let recovered = eventually(Duration::from_secs(10), || {
        let request = request.clone();
        let app = &app;
        async move {
            let response = check(app, request).await;
            response.status.map(|s| s.code) == Some(Code::Ok as i32)
        }
    })
    .await;
    assert!(recovered, "Check must recover without a restart");
}

async fn envoy_health(app: &TestApp) -> Option<ServingStatus> {
    let request = HealthCheckRequest {
        service: ENVOY_SERVICE.into(),
    };
    app.health
        .clone()
        .check(request)
        .await
        .ok()
        .map(|r| r.get_ref().status())
}

async fn the_envoy_service_is_serving_in_grpc_health(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let serving = eventually(Duration::from_secs(5), || async {
        envoy_health(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving, "{ENVOY_SERVICE} is not SERVING");
}

async fn the_envoy_service_is_listed_by_reflection(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let requests = [
        MessageRequest::ListServices(String::new()),
        // What grpcurl asks before it can call the service.
        MessageRequest::FileContainingSymbol(ENVOY_SERVICE.into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        ENVOY_SERVICE,
        "auth.v1.AuthService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("no descriptor for {ENVOY_SERVICE}: {response:?}");
    };
    let declares_check = files.file_descriptor_proto.iter().any(|bytes| {
        let file = <prost_types::FileDescriptorProto as prost::Message>::decode(&bytes[..])
            .expect("a FileDescriptorProto");
        file.package() == "envoy.service.auth.v3"
            && file.service.iter().any(|service| {
                service.name() == "Authorization"
                    && service.method.iter().any(|method| method.name() == "Check")
            })
    });
    assert!(
        declares_check,
        "no Authorization/Check among the descriptors"
    );
}
