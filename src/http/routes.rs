//! The HTTP routes: the JWKS and OpenID discovery documents for local token verification,
//! forward-auth `/verify` for nginx `auth_request`, Traefik `forwardAuth` and Caddy
//! `forward_auth` (the [`Verdict`] as an HTTP answer), the probes `/healthz` and `/readyz`, and
//! Prometheus `/metrics`. Every request is counted by method, route and status.
//! GET and HEAD only, except `/verify`, which answers any method (some set-ups forward the
//! original one); another method is 405, an unknown path 404.

use std::sync::Arc;

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get},
};

use crate::{
    api::bearer,
    gateway::{ForwardedHeaders, Verdict},
    service::AuthService,
    tokens::TokenError,
};

/// Path of the JWKS document.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Path of the OpenID discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Every route, as the `path` label of the HTTP metrics knows it.
const ROUTES: [&str; 6] = [
    JWKS_PATH,
    DISCOVERY_PATH,
    "/verify",
    "/healthz",
    "/readyz",
    "/metrics",
];
/// `cache-control` of the JWKS and discovery documents: a new key is published at least this long
/// before it signs (key rotation's lead time).
pub const KEYS_CACHE_CONTROL: &str = "public, max-age=300";

/// What the routes answer from.
pub struct HttpState {
    /// The use cases.
    pub service: Arc<AuthService>,
    /// The headers an accepted token's claims travel in.
    pub headers: ForwardedHeaders,
    /// Where clients reach this listener, without a trailing slash.
    pub public_url: String,
}

/// The routes over `state`.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(JWKS_PATH, get(jwks))
        .route(DISCOVERY_PATH, get(discovery))
        .route("/verify", any(verify))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .layer(middleware::from_fn(count_request))
}

/// Counts a request under its route (`unmatched` for any other path) and status.
async fn count_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| ROUTES.iter().find(|route| **route == matched.as_str()))
        .copied()
        .unwrap_or("unmatched");
    let response = next.run(request).await;
    crate::metrics::record_http(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Every metric in the Prometheus text format.
async fn metrics_text(State(state): State<Arc<HttpState>>) -> Response {
    state.service.observe_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// Every published public key, as an RFC 7517 JWK Set.
async fn jwks(State(state): State<Arc<HttpState>>) -> Response {
    let keys = serde_json::json!({ "keys": state.service.published_keys() });
    json_document(keys)
}

/// What a token verifier needs: the issuer and where its keys are.
async fn discovery(State(state): State<Arc<HttpState>>) -> Response {
    let algorithms: Vec<String> = state
        .service
        .published_keys()
        .iter()
        .filter_map(|key| key.get("alg")?.as_str().map(str::to_owned))
        .collect();
    json_document(serde_json::json!({
        "issuer": state.service.issuer(),
        "jwks_uri": format!("{}{JWKS_PATH}", state.public_url),
        "id_token_signing_alg_values_supported": algorithms,
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "aud", "sub", "iat", "exp", "jti", "sid"],
    }))
}

fn json_document(document: serde_json::Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, KEYS_CACHE_CONTROL),
        ],
        document.to_string(),
    )
        .into_response()
}

/// Forward-auth: the `Authorization: Bearer` header checked exactly as Verify checks it.
async fn verify(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let verdict = match (values.next(), values.next()) {
        // A repeated header is refused, never read as "the first one".
        (Some(_), Some(_)) => Verdict::InvalidToken(TokenError::Invalid),
        (value, _) => {
            let token = value
                .and_then(|value| value.to_str().ok())
                .and_then(bearer::parse);
            Verdict::from_verify(state.service.verify(token).await)
        }
    };
    verdict_response(&verdict, &state.headers)
}

/// The verdict as an HTTP response: 200 with the forwarded headers, else the refusal.
fn verdict_response(verdict: &Verdict, forwarded: &ForwardedHeaders) -> Response {
    let status =
        StatusCode::from_u16(verdict.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = verdict.body().unwrap_or_default().into_response();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match verdict {
        Verdict::Allow(claims) => {
            headers.remove(header::CONTENT_TYPE);
            for (name, value) in forwarded.values(claims) {
                if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        refused => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(challenge) = refused
                .challenge()
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
            if let Some(seconds) = refused.retry_after() {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
        }
    }
    response
}

/// 200 while the process serves.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every back end answers; 503 naming the one that does not (the probe of
/// grpc.health.v1).
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    match state.service.check_backends().await {
        Ok(()) => "ready\n".into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        )
            .into_response(),
    }
}
