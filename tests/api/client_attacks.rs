//! Attacks on authd-client's `AuthLayer` / `Verifier` and on the server side of WatchRevocations:
//! header spoofing, JWT header tricks, tokens signed with authd's own key that authd refuses,
//! leeway edges, key removal while tokens are cached, revocations racing a snapshot, a flushed
//! Redis, multi-chunk snapshots, a stalled watcher at shutdown.
//!
//! A test marked `// Was a defect (fixed):` failed before its fix.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use authd::{
    domain::{Jti, SessionId, UserId},
    pb,
    store::{RedisStore, RedisTopology, Revocation, RevocationStore as _, Revoked},
    tokens::directory::KeyDirectory,
};
use authd_client::{AuthLayer, LocalOptions, Rejection, StalePolicy, Verifier};
use axum::{Extension, Router, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::watch::WATCH_TOKEN;
use crate::common::{
    Backend, Forger, TestApp, TestState, http::HttpClient, http::Protocol, jwt_claims,
    proxy::Proxy, redis_server::PrivateRedis, redis_url, unix_now,
};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

pub(crate) fn watching(state: &TestState) -> crate::common::AppBuilder<'_> {
    state.app().arg(format!("--watch-token={WATCH_TOKEN}"))
}

pub(crate) fn local_options(app: &TestApp) -> LocalOptions {
    LocalOptions::new(
        format!("http://{}", app.address),
        format!("http://{}", app.http_address.expect("an HTTP listener")),
    )
    .watch_token(WATCH_TOKEN)
}

pub(crate) async fn local_verifier(options: LocalOptions) -> Verifier {
    let verifier = Verifier::local(options).unwrap();
    assert!(
        verifier.wait_until_current(Duration::from_secs(15)).await,
        "the local verifier loads the keys and the snapshot"
    );
    verifier
}

/// Polls `check` every 5 ms until it holds or `within` passes; says whether it held.
pub(crate) async fn soon(within: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A tonic service (gRPC health) and an axum router (`/whoami`) behind one `AuthLayer`.
pub(crate) struct Protected {
    pub(crate) grpc: HealthClient<tonic::transport::Channel>,
    pub(crate) http: HttpClient,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

impl Drop for Protected {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(crate) async fn protect(verifier: &Verifier) -> Protected {
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
        .route(
            "/whoami",
            get(
                |Extension(claims): Extension<authd_client::Claims>| async move {
                    claims.user_id().to_owned()
                },
            ),
        )
        .layer(AuthLayer::new(verifier.clone()));
    let tasks = vec![
        tokio::spawn(async move { grpc_server.await.unwrap() }),
        tokio::spawn(async move { axum::serve(http_listener, router).await.unwrap() }),
    ];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc_address}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Protected {
        grpc: HealthClient::new(channel),
        http: HttpClient::new(http_address, Protocol::Http1),
        tasks,
    }
}

impl Protected {
    /// The gRPC health check with each of `authorizations` as an `authorization` entry.
    pub(crate) async fn grpc_call(&self, authorizations: &[&str]) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        for value in authorizations {
            request
                .metadata_mut()
                .append("authorization", MetadataValue::try_from(*value).unwrap());
        }
        self.grpc.clone().check(request).await.map(drop)
    }

    /// `GET /whoami` with each of `authorizations` as an `authorization` header.
    pub(crate) async fn http_call(&self, authorizations: &[&str]) -> StatusCode {
        let headers: Vec<(&str, &str)> = authorizations
            .iter()
            .map(|value| ("authorization", *value))
            .collect();
        self.http
            .request(Method::GET, "/whoami", &headers)
            .await
            .status
    }
}

/// Signs any header and claims (raw JSON, so anything at all) with an Ed25519 key.
pub(crate) struct RawSigner {
    pub(crate) key: SigningKey,
    pub(crate) kid: String,
}

impl RawSigner {
    /// The app's own (initial) signing key, with its real `kid`.
    pub(crate) fn for_state(state: &TestState) -> Self {
        let kid = Forger::for_state(state).kid;
        let (key, _) =
            authd::tokens::load_or_generate_ed25519_key(&state.signing_key_path()).unwrap();
        Self { key, kid }
    }

    /// A key of the attacker's, under `kid`.
    pub(crate) fn attacker(kid: &str) -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
            kid: kid.to_owned(),
        }
    }

    pub(crate) fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    pub(crate) fn sign_text(&self, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_text(&header.to_string(), &claims.to_string())
    }

    /// The attacker's public key as a JWK.
    pub(crate) fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        })
    }
}

/// Valid claims for `user_id` with a session, issued `age` seconds ago, living `ttl` seconds.
pub(crate) fn claims(user_id: &str, age: i64, ttl: i64) -> Value {
    let mut claims = Forger::claims(user_id, age, ttl);
    claims["sid"] = SessionId::generate().to_string().into();
    claims
}

// ---------------------------------------------------------------------------------------------
// Header spoofing
// ---------------------------------------------------------------------------------------------

// Was a defect (fixed): the layer reads only the first `authorization` header (layer.rs: `headers().get`), so a
// request carrying a valid bearer token *and* a second credential is let through; authd's own
// forward-auth (/verify) refuses any repeated `authorization` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_authorization_header_is_refused_as_authd_refuses_it() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let verifier =
        Verifier::remote(format!("http://{}", app.address), Duration::from_secs(2)).unwrap();
    let services = protect(&verifier).await;
    let (_, _, token) = app.new_user().await;
    let valid = format!("Bearer {token}");
    let (_, _, other_token) = app.new_user().await;
    let other = format!("Bearer {other_token}");

    assert_eq!(services.http_call(&[&valid]).await, StatusCode::OK);
    // authd's forward-auth: a repeated header is refused, never read as "the first one".
    let authd = app
        .http()
        .request(
            Method::GET,
            "/verify",
            &[("authorization", &valid), ("authorization", "Bearer junk")],
        )
        .await;
    assert_eq!(authd.status, StatusCode::UNAUTHORIZED, "authd's own answer");

    let mut failures = Vec::new();
    for (case, headers) in [
        ("valid then junk", [valid.as_str(), "Bearer junk"]),
        (
            "valid then another user's",
            [valid.as_str(), other.as_str()],
        ),
        ("valid twice", [valid.as_str(), valid.as_str()]),
    ] {
        let status = services.http_call(&headers).await;
        if status != StatusCode::UNAUTHORIZED {
            failures.push(format!("HTTP, {case}: {status}"));
        }
        match services.grpc_call(&headers).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => failures.push(format!("gRPC, {case}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "a repeated authorization header got through: {failures:#?}"
    );
    app.stop().await;
}

// Was a defect (fixed): remote mode turns authd's RESOURCE_EXHAUSTED (REQUEST_TOO_LARGE, a Verify request over
// 64 KiB) into `Rejection::Unavailable` (remote.rs `rejection_of`), so any caller sending a big
// junk bearer token gets 503 + Retry-After ("retry, authd is down") instead of 401
// invalid_token; hyper accepts such a header (up to ~400 KB on HTTP/1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_token_is_invalid_not_unavailable_in_remote_mode() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let verifier =
        Verifier::remote(format!("http://{}", app.address), Duration::from_secs(2)).unwrap();
    let services = protect(&verifier).await;
    let junk = format!("eyJhbGciOiJFZERTQSJ9.{}.AAAA", "A".repeat(70_000));
    let bearer = format!("Bearer {junk}");
    assert_eq!(
        services.http_call(&[&bearer]).await,
        StatusCode::UNAUTHORIZED,
        "an HTTP caller with a junk token"
    );
    assert_eq!(verifier.verify(&junk).await, Err(Rejection::Invalid));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT header tricks (regression: all refused)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jwt_headers_and_claims_are_refused_locally() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let (_, user_id, genuine) = app.new_user().await;
    let ours = RawSigner::for_state(&state);
    let jwks = app.http().get("/.well-known/jwks.json").await.body;
    let x = serde_json::from_str::<Value>(&jwks).unwrap()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let good = claims(&user_id, 0, 900);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let hs256 = |secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(ours.kid.clone());
        jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut header = ours.header();
        edit(&mut header);
        ours.sign(&header, &good)
    };
    let claims_with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        edit(&mut claims);
        ours.sign(&ours.header(), &claims)
    };
    let attacker = RawSigner::attacker("attacker-key");
    let attacker_as_ours = RawSigner {
        key: attacker.key.clone(),
        kid: ours.kid.clone(),
    };
    let now = unix_now();

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt", "kid": ours.kid})),
                b64(&good)
            ),
        ),
        (
            "alg None, signature kept",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "None", "typ": "at+jwt", "kid": ours.kid})),
                b64(&good),
                genuine.rsplit('.').next().unwrap()
            ),
        ),
        ("HS256 keyed with the raw public key", hs256(&public_raw)),
        ("HS256 keyed with the public x", hs256(x.as_bytes())),
        ("HS256 keyed with the JWKS", hs256(jwks.as_bytes())),
        ("crit", with(&|h| h["crit"] = json!(["exp"]))),
        ("empty crit", with(&|h| h["crit"] = json!([]))),
        ("typ JWT", with(&|h| h["typ"] = "JWT".into())),
        ("typ missing", with(&|h| drop(h.as_object_mut().unwrap().remove("typ")))),
        ("typ at+jwt with a space", with(&|h| h["typ"] = "at+jwt ".into())),
        ("typ application/jwt", with(&|h| h["typ"] = "application/jwt".into())),
        ("kid missing", with(&|h| drop(h.as_object_mut().unwrap().remove("kid")))),
        ("kid empty", with(&|h| h["kid"] = "".into())),
        ("kid traversal", with(&|h| h["kid"] = "../../../../dev/null".into())),
        (
            "kid with a NUL",
            with(&|h| h["kid"] = format!("{}\u{0}", h["kid"].as_str().unwrap()).into()),
        ),
        ("kid as a number", with(&|h| h["kid"] = 1.into())),
        (
            "attacker key in jwk, attacker kid",
            attacker.sign(
                &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid, "jwk": attacker.public_jwk()}),
                &good,
            ),
        ),
        (
            "attacker key in jwk, our kid",
            attacker_as_ours.sign(
                &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ours.kid, "jwk": attacker_as_ours.public_jwk()}),
                &good,
            ),
        ),
        (
            "attacker jku",
            attacker.sign(
                &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": attacker.kid,
                        "jku": format!("http://{}/.well-known/jwks.json", app.http_address.unwrap())}),
                &good,
            ),
        ),
        (
            "duplicate alg",
            ours.sign_text(
                &format!(r#"{{"alg":"EdDSA","alg":"HS256","typ":"at+jwt","kid":"{}"}}"#, ours.kid),
                &good.to_string(),
            ),
        ),
        (
            "duplicate sub",
            ours.sign_text(
                &ours.header().to_string(),
                &good.to_string().replacen('{', r#"{"sub":"someone-else","#, 1),
            ),
        ),
        ("wrong issuer", claims_with(&|c| c["iss"] = "evil".into())),
        ("no exp", claims_with(&|c| drop(c.as_object_mut().unwrap().remove("exp")))),
        ("no sub", claims_with(&|c| drop(c.as_object_mut().unwrap().remove("sub")))),
        ("no jti", claims_with(&|c| drop(c.as_object_mut().unwrap().remove("jti")))),
        ("no iat", claims_with(&|c| drop(c.as_object_mut().unwrap().remove("iat")))),
        ("no aud", claims_with(&|c| drop(c.as_object_mut().unwrap().remove("aud")))),
        ("exp as a string", claims_with(&|c| c["exp"] = (now + 900).to_string().into())),
        ("exp before iat", claims_with(&|c| c["exp"] = (now - 1).into())),
        ("iat past the leeway", claims_with(&|c| c["iat"] = (now + 30).into())),
        ("nbf past the leeway", claims_with(&|c| c["nbf"] = (now + 30).into())),
        ("signature of another token", {
            let other = ours.sign(&ours.header(), &claims(&user_id, 0, 900));
            let mine = claims_with(&|_| {});
            let (head, _) = mine.rsplit_once('.').unwrap();
            format!("{head}.{}", other.rsplit('.').next().unwrap())
        }),
        ("four segments", format!("{genuine}.AAAA")),
        ("huge garbage", format!("{}.{}.AAAA", b64(&ours.header()), "A".repeat(200_000))),
    ];
    let mut failures = Vec::new();
    for (case, token) in &cases {
        let started = std::time::Instant::now();
        let verdict = tokio::time::timeout(Duration::from_secs(5), verifier.verify(token)).await;
        match verdict {
            Ok(Err(Rejection::Invalid)) if started.elapsed() < Duration::from_secs(1) => {}
            other => failures.push(format!("{case}: {other:?} in {:?}", started.elapsed())),
        }
    }
    // Expired beyond the leeway: EXPIRED, not accepted.
    let expired = ours.sign(&ours.header(), &claims(&user_id, 920, 900));
    assert_eq!(verifier.verify(&expired).await, Err(Rejection::Expired));
    assert!(
        failures.is_empty(),
        "accepted or mis-answered: {failures:#?}"
    );
    // And the genuine token still passes.
    assert_eq!(
        verifier.verify(&genuine).await.unwrap().user_id(),
        user_id.as_str()
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tokens signed with authd's key that authd's Verify refuses
// ---------------------------------------------------------------------------------------------

// Was a defect (fixed): the local verifier checks less than authd's Verify (local/mod.rs `decode`): it accepts
// tokens signed with authd's key that authd refuses as TOKEN_INVALID: a lifetime longer than
// any authd issues, `aud`/`iss` arrays, `sub`/`jti`/`sid` that are not UUIDs, tokens over 4096
// bytes. "A mirror built from this stream refuses what Verify refuses" does not hold for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authd_refuses_as_invalid_are_refused_locally_too() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let (_, user_id, _) = app.new_user().await;
    let ours = RawSigner::for_state(&state);
    let token = |edit: &dyn Fn(&mut Value)| {
        let mut claims = claims(&user_id, 0, 900);
        edit(&mut claims);
        ours.sign(&ours.header(), &claims)
    };
    let cases = [
        (
            "lives ten years",
            token(&|c| c["exp"] = (unix_now() + 10 * 365 * 86_400).into()),
        ),
        (
            "aud array",
            token(&|c| c["aud"] = json!(["somebody-else", "authd"])),
        ),
        ("iss array", token(&|c| c["iss"] = json!(["evil", "authd"]))),
        ("sub not a UUID", token(&|c| c["sub"] = "admin".into())),
        ("jti not a UUID", token(&|c| c["jti"] = "1".into())),
        ("sid not a UUID", token(&|c| c["sid"] = "s".into())),
        ("sid empty", token(&|c| c["sid"] = "".into())),
        (
            "over 4096 bytes",
            token(&|c| c["pad"] = "x".repeat(5_000).into()),
        ),
    ];
    let mut failures = Vec::new();
    for (case, token) in &cases {
        let status = app.verify(token).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "authd, {case}");
        if let Ok(claims) = verifier.verify(token).await {
            failures.push(format!("{case}: accepted as {claims:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the local layer accepts what authd refuses: {failures:#?}"
    );
    app.stop().await;
}

// Was a defect (fixed): the revocation mirror compares ids as strings (local/mirror.rs `refuses`), while authd
// parses them as UUIDs (any case, hyphens or not, braces, urn:uuid:). A token signed with authd's
// key whose `sid`/`sub`/`jti` is spelled differently from authd's canonical form is refused by
// authd's Verify once revoked, but keeps passing the local layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_honoured_whatever_the_spelling_of_the_ids() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let ours = RawSigner::for_state(&state);
    let (_, user_id, token) = app.new_user().await;
    let session = jwt_claims(&token)["sid"].as_str().unwrap().to_owned();
    let uuid = |s: &str| uuid::Uuid::parse_str(s).unwrap();

    // The session spelled upper-case, without hyphens, braced.
    let mut cases: Vec<(String, String)> = [
        session.to_uppercase(),
        uuid(&session).simple().to_string(),
        uuid(&session).braced().to_string(),
    ]
    .into_iter()
    .map(|sid| {
        let mut claims = claims(&user_id, 0, 900);
        claims["sid"] = sid.clone().into();
        (format!("sid {sid}"), ours.sign(&ours.header(), &claims))
    })
    .collect();
    // A jti spelled upper-case (the token itself logged out through authd; no session).
    let jti = Jti::generate().to_string().to_uppercase();
    let mut by_jti = Forger::claims(&UserId::generate().to_string(), 0, 900);
    by_jti["jti"] = jti.clone().into();
    let by_jti = ours.sign(&ours.header(), &by_jti);
    cases.push((format!("jti {jti}"), by_jti.clone()));
    // The user spelled upper-case (no session), issued before a LogoutAll's cut-off.
    let by_user = Forger::claims(&user_id.to_uppercase(), 10, 900);
    cases.push((
        format!("sub {}", user_id.to_uppercase()),
        ours.sign(&ours.header(), &by_user),
    ));
    for (case, forged) in &cases {
        app.verify(forged)
            .await
            .unwrap_or_else(|e| panic!("authd accepts {case} before: {e:?}"));
        verifier
            .verify(forged)
            .await
            .unwrap_or_else(|e| panic!("local accepts {case} before: {e:?}"));
    }

    // LogoutAll: the session's revocation and the user's cut-off; Logout of the jti token.
    app.logout_all(&token).await.unwrap();
    app.logout(&by_jti).await.unwrap();
    let mut failures = Vec::new();
    for (case, forged) in &cases {
        let status = app.verify(forged).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "authd refuses {case}");
        let refused = soon(Duration::from_secs(1), async || {
            verifier.verify(forged).await == Err(Rejection::Revoked)
        })
        .await;
        if !refused {
            failures.push(format!("{case}: {:?}", verifier.verify(forged).await));
        }
    }
    assert!(
        failures.is_empty(),
        "revoked tokens pass the local layer: {failures:#?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Leeway
// ---------------------------------------------------------------------------------------------

// Was a defect (fixed): authd forgets a revocation at its own `exp + leeway` (the snapshot holds only entries
// whose `until` has not passed, on authd's clock), but a local layer accepts a token until
// `exp + its own leeway`. When the layer's leeway is larger than authd's (or its clock is
// behind), a logged-out token passes a layer that starts, or reconnects, after authd forgot
// the revocation: here a revoked token is let through for seconds after a fresh start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_within_the_layers_leeway_is_not_let_through_after_a_fresh_snapshot() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state)
        .args(["--access-token-ttl=2s", "--clock-leeway=0s"])
        .start()
        .await;
    let (_, _, token) = app.new_user().await;
    let exp = jwt_claims(&token)["exp"].as_i64().unwrap();
    app.logout(&token).await.unwrap();
    // authd's session revocation lives until now + ttl + leeway + 1: wait until that has passed.
    while unix_now() <= exp + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.verify(&token).await.is_err(), "authd refuses it");
    // The layer's default leeway (5 s) still covers the token: it is not expired for it.
    let verifier = local_verifier(local_options(&app)).await;
    assert!(unix_now() <= exp + 5, "the test ran too slowly to show it");
    let verdict = verifier.verify(&token).await;
    assert!(
        verdict.is_err(),
        "a logged-out token passes the local layer: {verdict:?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Stale policy
// ---------------------------------------------------------------------------------------------

// Was a defect (fixed): `Verifier::local` documents "until both [keys and snapshot] are loaded, requests are
// refused with UNAVAILABLE (or sent to Verify, as the stale policy says)", but with
// `FallBackToRemote` and a JWKS that cannot be fetched every request is refused UNAVAILABLE
// (local/mod.rs `verify`, KidLookup::Unavailable) instead of being sent to Verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fall_back_to_remote_also_covers_signing_keys_that_cannot_be_fetched() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    // A port nobody listens on, for the JWKS.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let options = LocalOptions::new(
        format!("http://{}", app.address),
        format!("http://{closed_address}"),
    )
    .watch_token(WATCH_TOKEN)
    .stale_policy(StalePolicy::FallBackToRemote);
    let verifier = Verifier::local(options).unwrap();
    assert!(!verifier.wait_until_current(Duration::from_secs(1)).await);
    let (_, user_id, token) = app.new_user().await;
    let verdict = verifier.verify(&token).await;
    assert_eq!(
        verdict.as_ref().map(|claims| claims.user_id().to_owned()),
        Ok(user_id),
        "the stale policy says: ask Verify"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Key removal while tokens are cached
// ---------------------------------------------------------------------------------------------

/// An app on a keys directory it re-reads every 100 ms, a second key signing now beside the
/// initial one (both published), and a local verifier refetching the JWKS every 100 ms.
struct Rotated {
    state: TestState,
    app: TestApp,
    verifier: Verifier,
    old: Arc<RawSigner>,
    user_id: String,
}

async fn rotated() -> Rotated {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state)
        .arg("--signing-keys-reload-interval=100ms")
        .start()
        .await;
    let old = Arc::new(RawSigner::for_state(&state));
    let directory = KeyDirectory::new(state.data_dir.path().join("keys"));
    let next = directory.rotate(unix_now(), Duration::ZERO).unwrap();
    let published = soon(Duration::from_secs(5), async || {
        let jwks = app.http().get("/.well-known/jwks.json").await.body;
        jwks.contains(&next.kid) && jwks.contains(&old.kid)
    })
    .await;
    assert!(published, "both keys published");
    let verifier = local_verifier(
        local_options(&app)
            .jwks_refresh_every(Duration::from_millis(100))
            .jwks_min_refresh(Duration::from_millis(100)),
    )
    .await;
    let (_, user_id, _) = app.new_user().await;
    Rotated {
        state,
        app,
        verifier,
        old,
        user_id,
    }
}

impl Rotated {
    /// Removes the initial key (as `prune` does once its last token has expired).
    fn remove_old_key(&self) {
        let directory = KeyDirectory::new(self.state.data_dir.path().join("keys"));
        let removed = directory
            .prune(unix_now() + 100_000, Duration::from_secs(905))
            .unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].kid, self.old.kid);
    }

    /// Waits until a never-seen token of the old key is refused: the layer has the new set.
    async fn wait_for_removal(&self) {
        let removed = soon(Duration::from_secs(5), async || {
            let fresh = self
                .old
                .sign(&self.old.header(), &claims(&self.user_id, 0, 900));
            self.verifier.verify(&fresh).await == Err(Rejection::Invalid)
        })
        .await;
        assert!(removed, "the layer drops the removed key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_stops_verifying_tokens_cached_with_it() {
    let rotated = rotated().await;
    let cached = rotated
        .old
        .sign(&rotated.old.header(), &claims(&rotated.user_id, 0, 900));
    rotated.verifier.verify(&cached).await.unwrap();
    rotated.verifier.verify(&cached).await.unwrap();
    rotated.remove_old_key();
    rotated.wait_for_removal().await;
    assert_eq!(
        rotated.verifier.verify(&cached).await,
        Err(Rejection::Invalid),
        "a token verified (and remembered) before its key went away"
    );
    assert!(rotated.app.verify(&cached).await.is_err());
    rotated.app.stop().await;
}

// Was a defect (fixed): a token whose signature check started with the old key set is put in the verified-token
// cache after the key set was replaced and the cache cleared (local/mod.rs `check`: `decode`
// reads `keys.current()`, then `verified.insert` runs unconditionally; `maintain` does
// `reload()` then `verified.clear()`): such a token, signed with a key authd removed, keeps
// verifying for as long as it stays in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verified_while_their_key_is_removed_do_not_outlive_the_removal() {
    let rotated = Arc::new(rotated().await);
    let directory = KeyDirectory::new(rotated.state.data_dir.path().join("keys"));
    let base = unix_now();
    let mut old = rotated.old.clone();
    let mut survivors = 0;
    let mut total = 0;
    for round in 1..=ROUNDS {
        let next = directory
            .rotate(base + round * 10_000, Duration::ZERO)
            .unwrap();
        let published = soon(Duration::from_secs(5), async || {
            let jwks = rotated.app.http().get("/.well-known/jwks.json").await.body;
            jwks.contains(&next.kid)
        })
        .await;
        assert!(published);
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
        // Signed beforehand, so that the flood spends its time verifying.
        let batches: Vec<Vec<String>> = (0..3)
            .map(|_| {
                (0..700)
                    .map(|_| old.sign(&old.header(), &claims(&rotated.user_id, 0, 900)))
                    .collect()
            })
            .collect();
        let floods: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let (rotated, stop, accepted, old) =
                    (rotated.clone(), stop.clone(), accepted.clone(), old.clone());
                tokio::spawn(async move {
                    let mut batch = batch.into_iter();
                    while !stop.load(Ordering::Relaxed) {
                        let token = batch.next().unwrap_or_else(|| {
                            old.sign(&old.header(), &claims(&rotated.user_id, 0, 900))
                        });
                        if rotated.verifier.verify(&token).await.is_ok() {
                            accepted.lock().unwrap().push(token);
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(80)).await;
        let removed = directory
            .prune(base + round * 10_000 + 5_000, Duration::from_secs(905))
            .unwrap();
        assert!(removed.iter().any(|k| k.kid == old.kid));
        let gone = soon(Duration::from_secs(5), async || {
            let fresh = old.sign(&old.header(), &claims(&rotated.user_id, 0, 900));
            rotated.verifier.verify(&fresh).await == Err(Rejection::Invalid)
        })
        .await;
        assert!(gone, "round {round}: the layer drops the removed key");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.store(true, Ordering::Relaxed);
        for flood in floods {
            flood.await.unwrap();
        }
        let accepted = std::mem::take(&mut *accepted.lock().unwrap());
        total += accepted.len();
        for token in &accepted {
            if rotated.verifier.verify(token).await.is_ok() {
                survivors += 1;
            }
        }
        old = Arc::new(RawSigner {
            key: authd::tokens::load_or_generate_ed25519_key(&next.path)
                .unwrap()
                .0,
            kid: next.kid.clone(),
        });
    }
    eprintln!("{survivors} survivors of {total}");
    assert_eq!(
        survivors, 0,
        "{survivors} of {total} tokens of removed keys still verify after the removal"
    );
    let rotated = Arc::try_unwrap(rotated).ok().unwrap();
    rotated.app.stop().await;
}

const ROUNDS: i64 = 8;

// ---------------------------------------------------------------------------------------------
// Revocations racing the snapshot; a snapshot in chunks; a flushed Redis
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_made_while_a_layer_loads_its_snapshot_are_all_honoured() {
    let state = TestState::new(Backend::Postgres).await;
    let app = Arc::new(watching(&state).start().await);
    let (_, user_id, _) = app.new_user().await;
    let ours = Arc::new(RawSigner::for_state(&state));
    let stop = Arc::new(AtomicBool::new(false));
    let revoked = Arc::new(Mutex::new(Vec::<String>::new()));
    let logouts: Vec<_> = (0..2)
        .map(|_| {
            let (app, ours, stop, revoked, user_id) = (
                app.clone(),
                ours.clone(),
                stop.clone(),
                revoked.clone(),
                user_id.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let token = ours.sign(&ours.header(), &claims(&user_id, 0, 900));
                    app.logout(&token).await.unwrap();
                    revoked.lock().unwrap().push(token);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let verifier = local_verifier(local_options(&app)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for logout in logouts {
        logout.await.unwrap();
    }
    let revoked = std::mem::take(&mut *revoked.lock().unwrap());
    assert!(revoked.len() > 20, "{} logouts", revoked.len());
    // Everything logged out is refused within the propagation delay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut passed = Vec::new();
    for (index, token) in revoked.iter().enumerate() {
        let verdict = verifier.verify(token).await;
        if verdict != Err(Rejection::Revoked) {
            passed.push((index, verdict));
        }
    }
    assert!(
        passed.is_empty(),
        "of {} logged-out tokens, these pass: {passed:?}",
        revoked.len()
    );
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_loads_a_snapshot_of_several_chunks_whole() {
    let state = TestState::new(Backend::Postgres).await;
    let store = RedisStore::connect(
        &RedisTopology::Single(redis_url()),
        &Default::default(),
        &state.redis_prefix,
        false,
    )
    .await
    .unwrap();
    let ours = RawSigner::for_state(&state);
    let user = UserId::generate();
    let now = unix_now();
    let jtis: Vec<Jti> = (0..9_000).map(|_| Jti::generate()).collect();
    let revocations: Vec<Revocation> = jtis
        .iter()
        .map(|jti| Revocation {
            user,
            what: Revoked::Token(*jti),
            until: now + 600,
        })
        .collect();
    store.revoke(&revocations, now).await.unwrap();
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let token_of = |jti: &Jti| {
        let mut claims = claims(&user.to_string(), 0, 900);
        claims["jti"] = jti.to_string().into();
        ours.sign(&ours.header(), &claims)
    };
    let mut passed = 0;
    for jti in jtis.iter().step_by(97) {
        if verifier.verify(&token_of(jti)).await != Err(Rejection::Revoked) {
            passed += 1;
        }
    }
    assert_eq!(passed, 0, "revocations of the snapshot were not loaded");
    verifier
        .verify(&token_of(&Jti::generate()))
        .await
        .expect("a token not revoked passes");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_makes_a_local_layer_refuse_every_earlier_token() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    let app = watching(&state).redis_url(Some(&redis.url())).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let (email, _, before) = app.new_user().await;
    verifier.verify(&before).await.unwrap();
    assert!(redis.cli(&["flushall"]).contains("OK"));
    let refused = soon(Duration::from_secs(5), async || {
        verifier.verify(&before).await == Err(Rejection::Revoked)
    })
    .await;
    assert!(refused, "the global cut-off reaches the layer");
    assert!(app.verify(&before).await.is_err());
    // A token issued after the cut-off passes.
    let after = app
        .login(&email, crate::common::PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    app.verify(&after)
        .await
        .expect("authd accepts the new token");
    verifier
        .verify(&after)
        .await
        .expect("the layer accepts the new token");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Server side: a stalled watcher
// ---------------------------------------------------------------------------------------------

// Was a defect (fixed): graceful shutdown has no deadline (src/server/mod.rs `serve_with_incoming_shutdown`):
// a watcher (or any client) whose connection is stalled holds `App::run_until_stopped` for about
// 38 s, until the HTTP/2 keepalive (30 s + 10 s) gives up on it; the watch stream itself was
// ended at once. Past a typical 30 s termination grace period the process is killed mid-drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_stalled_watcher() {
    let state = TestState::new(Backend::Embedded).await;
    // Draining waits at most the request timeout (no call lasts longer) before dropping the
    // connections still open.
    let app = watching(&state).arg("--request-timeout=2s").start().await;
    let proxy = Proxy::start(app.address).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::WatchRevocationsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {WATCH_TOKEN}").parse().unwrap(),
    );
    let mut stream = client
        .watch_revocations(request)
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::revocation_event::Event::Snapshot(_))
    ));
    proxy.stall();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops within 10 s with a stalled watcher (it takes about 38 s)");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    drop(stream);
}

/// A TCP proxy that can silently drop the traffic of the connections it holds (they stay open,
/// as to a peer that died behind a NAT or a failed-over load balancer) while it forwards every
/// new connection normally.
pub(crate) struct Blackhole {
    pub(crate) address: std::net::SocketAddr,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Blackhole {
    pub(crate) async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (generation, watch) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                let born = *watch.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                        _ = watch.wait_for(|now| *now > born) => {}
                    }
                    // Forward nothing more, but keep both sockets open.
                    let _ = watch.wait_for(|now| *now == u64::MAX).await;
                    drop((inbound, outbound));
                });
            }
        });
        Self {
            address,
            generation,
        }
    }

    /// Every connection open now goes silent; later ones work.
    pub(crate) fn silence_open_connections(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.generation.send_replace(u64::MAX);
    }
}

// Was a defect (fixed): when the stream falls silent (a peer that died without a FIN/RST, a NAT entry or a
// load balancer gone), the watcher drops the stream after the staleness bound but opens the next
// one on the same dead HTTP/2 connection (watcher.rs `watch_once` reuses `self.client`'s
// channel): it waits SNAPSHOT_WAIT (15 s) or the channel's keepalive (10 s + 5 s) before a new
// connection is made, so the layer fails closed for ~15 s though authd answers new connections
// at once. (Remote fallback uses the same dead channel meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_connection_died_silently_reconnects_promptly() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let hole = Blackhole::start(app.address).await;
    let options = LocalOptions::new(
        format!("http://{}", hole.address),
        format!("http://{}", app.http_address.unwrap()),
    )
    .watch_token(WATCH_TOKEN);
    let verifier = local_verifier(options).await;
    hole.silence_open_connections();
    let silenced = std::time::Instant::now();
    assert!(soon(Duration::from_secs(10), async || !verifier.is_current()).await);
    let stale_after = silenced.elapsed();
    // The bound, a back-off of at most 5 s, a connect and a snapshot.
    let back = soon(Duration::from_secs(6), async || verifier.is_current()).await;
    assert!(
        back,
        "stale after {stale_after:?}, still not current {:?} after the connection died",
        silenced.elapsed()
    );
    drop(hole);
    app.stop().await;
}
