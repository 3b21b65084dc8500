//! The second outside attack on authd-client, kept as tests (each named `attack2_*`): dead
//! connections in remote mode and on a caller's endpoint, refusals never a 2xx, a key replaced
//! under its kid, every revocation kind, a lowered token lifetime, made-up kids during a
//! rotation, time edges as authd reads them, snapshots under load, restarts and flushes.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use authd_client::{LocalOptions, Rejection, StalePolicy, Verifier};
use axum::{Router, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;

use super::client_attacks::{
    Blackhole, RawSigner, claims, local_options, local_verifier, protect, soon, watching,
};
use crate::common::{Backend, PASSWORD, TestState, jwt_claims, unix_now};

// ---------------------------------------------------------------------------------------------
// A. Remote mode over a connection that died silently
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_remote_mode_recovers_after_a_silent_dead_connection() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let hole = Blackhole::start(app.address).await;
    let verifier =
        Verifier::remote(format!("http://{}", hole.address), Duration::from_secs(1)).unwrap();
    let (_, _, token) = app.new_user().await;
    verifier
        .verify(&token)
        .await
        .expect("accepted through the proxy");
    hole.silence_open_connections();
    let silenced = Instant::now();
    let mut verdicts = Vec::new();
    let back = soon(Duration::from_secs(30), async || {
        let verdict = verifier.verify(&token).await;
        let ok = verdict.is_ok();
        verdicts.push(verdict);
        ok
    })
    .await;
    eprintln!(
        "back={back} after {:?}; {} refusals, first {:?}",
        silenced.elapsed(),
        verdicts.len(),
        verdicts.first()
    );
    assert!(
        back && silenced.elapsed() < Duration::from_secs(8),
        "remote mode still refuses every request {:?} after its connection died silently \
         (authd answers new connections at once): {} refusals, e.g. {:?}",
        silenced.elapsed(),
        verdicts.len(),
        verdicts.last()
    );
    drop(hole);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// B. An HTTP router answers a refused request 200 when the caller says content-type grpc
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_a_refused_http_request_is_never_answered_2xx() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let verifier =
        Verifier::remote(format!("http://{}", app.address), Duration::from_secs(2)).unwrap();
    let services = protect(&verifier).await;
    let mut failures = Vec::new();
    for content_type in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
        "application/grpcanything",
    ] {
        for auth in [None, Some("Bearer junk")] {
            let mut headers = vec![("content-type", content_type)];
            if let Some(auth) = auth {
                headers.push(("authorization", auth));
            }
            let response = services
                .http
                .request(Method::GET, "/whoami", &headers)
                .await;
            // authd's own forward-auth, for comparison.
            let authd = app.http().request(Method::GET, "/verify", &headers).await;
            eprintln!(
                "{content_type} {auth:?}: layer {} {:?} / authd /verify {}",
                response.status, response.headers, authd.status
            );
            if response.status.is_success() {
                failures.push(format!(
                    "HTTP/1.1 GET /whoami, content-type {content_type}, authorization {auth:?}: \
                     {} (grpc-status {:?})",
                    response.status,
                    response.headers.get("grpc-status")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "refused plain-HTTP requests answered with a success status: {failures:#?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// C. A JWKS that replaces the key material under the same kid
// ---------------------------------------------------------------------------------------------

fn jwk(key: &SigningKey, kid: &str) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    })
}

async fn serve_jwks(set: Arc<Mutex<Value>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/jwks.json",
        get(move || {
            let set = set.clone();
            async move { set.lock().unwrap().to_string() }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_a_key_replaced_under_the_same_kid_stops_verifying_cached_tokens() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let first = RawSigner {
        key: SigningKey::generate(&mut rand::rngs::OsRng),
        kid: "k1".into(),
    };
    let second = SigningKey::generate(&mut rand::rngs::OsRng);
    let set = Arc::new(Mutex::new(json!({"keys": [jwk(&first.key, "k1")]})));
    let jwks = serve_jwks(set.clone()).await;
    let verifier = local_verifier(
        local_options(&app)
            .jwks_url(format!("http://{jwks}/jwks.json"))
            .jwks_refresh_every(Duration::from_secs(1))
            .jwks_min_refresh(Duration::from_millis(100)),
    )
    .await;
    let user = uuid::Uuid::new_v4().to_string();
    let cached = first.sign(&first.header(), &claims(&user, 0, 900));
    verifier.verify(&cached).await.expect("k1 verifies");
    verifier
        .verify(&cached)
        .await
        .expect("k1 verifies (cached)");
    // The JWKS now holds other key material under "k1": the first key is gone.
    *set.lock().unwrap() = json!({"keys": [jwk(&second, "k1")]});
    let replaced = soon(Duration::from_secs(5), async || {
        let fresh = first.sign(&first.header(), &claims(&user, 0, 900));
        verifier.verify(&fresh).await == Err(Rejection::Invalid)
    })
    .await;
    assert!(replaced, "the layer loads the new set");
    let verdict = verifier.verify(&cached).await;
    assert_eq!(
        verdict.map(|c| c.user_id().to_owned()),
        Err(Rejection::Invalid),
        "a token signed by a key no longer in the JWKS (same kid, other material) still \
         verifies because it was cached"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// D. Every kind of revocation, made through authd, honoured locally; a Login right after
//    LogoutAll (same second) accepted
// ---------------------------------------------------------------------------------------------

async fn revocation_kinds(backend: Backend) {
    revocation_kinds_with(backend, true).await;
}

async fn revocation_kinds_with(backend: Backend, with_redis: bool) {
    let state = TestState::new(backend).await;
    let mut builder = watching(&state);
    if !with_redis {
        builder = builder.redis_url(None);
    }
    let app = builder.start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let accepted = async |token: &str| verifier.verify(token).await.is_ok();
    let refused = async |token: &str| {
        soon(Duration::from_millis(500), async || {
            verifier.verify(token).await == Err(Rejection::Revoked)
        })
        .await
    };
    let mut failures = Vec::new();
    for round in 0..5 {
        let (email, _, tokens) = app.new_session_user().await;
        let before = tokens.access_token;
        let other = app.new_session(&email).await.access_token;
        assert!(accepted(&before).await && accepted(&other).await);
        // LogoutAll, then at once a new Login: same second most of the time.
        app.logout_all(&before).await.unwrap();
        let after = app.new_session(&email).await.access_token;
        let same_second = jwt_claims(&before)["iat"].as_i64() == jwt_claims(&after)["iat"].as_i64();
        eprintln!("round {round}: Login in the LogoutAll's second: {same_second}");
        if !refused(&before).await {
            failures.push(format!("round {round}: LogoutAll's token passes"));
        }
        if !refused(&other).await {
            failures.push(format!("round {round}: LogoutAll's other session passes"));
        }
        app.verify(&after)
            .await
            .expect("authd accepts the new Login");
        for _ in 0..20 {
            if let Err(e) = verifier.verify(&after).await {
                failures.push(format!(
                    "round {round} (same second: {same_second}): Login after LogoutAll refused {e:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ChangePassword: every other session ends, the new one is accepted.
        let other2 = app.new_session(&email).await.access_token;
        let changed = app
            .change_password(&after, PASSWORD, "another correct horse battery staple")
            .await
            .unwrap()
            .tokens
            .unwrap()
            .access_token;
        if !refused(&after).await || !refused(&other2).await {
            failures.push(format!("round {round}: ChangePassword's old sessions pass"));
        }
        app.verify(&changed)
            .await
            .expect("authd accepts the new session");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = verifier.verify(&changed).await {
            failures.push(format!(
                "round {round}: ChangePassword's new session refused {e:?}"
            ));
        }
        // RevokeSession of another session.
        let third = app
            .login(&email, "another correct horse battery staple")
            .await
            .unwrap()
            .tokens
            .unwrap()
            .access_token;
        let sid = jwt_claims(&third)["sid"].as_str().unwrap().to_owned();
        assert!(accepted(&third).await);
        app.revoke_session(&changed, &sid).await.unwrap();
        if !refused(&third).await {
            failures.push(format!("round {round}: RevokeSession's token passes"));
        }
        // DeleteAccount: every token of the user.
        app.delete_account(&changed, "another correct horse battery staple")
            .await
            .unwrap();
        if !refused(&changed).await {
            failures.push(format!("round {round}: DeleteAccount's token passes"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_every_revocation_kind_is_honoured_locally_embedded() {
    revocation_kinds(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_every_revocation_kind_is_honoured_locally_postgres_without_redis() {
    revocation_kinds_with(Backend::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_every_revocation_kind_is_honoured_locally_postgres() {
    revocation_kinds(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// E. FallBackToRemote with authd gone: fail closed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_fall_back_to_remote_with_authd_down_fails_closed() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier =
        local_verifier(local_options(&app).stale_policy(StalePolicy::FallBackToRemote)).await;
    let services = protect(&verifier).await;
    let (_, _, token) = app.new_user().await;
    verifier.verify(&token).await.unwrap();
    app.stop().await;
    let stopped = Instant::now();
    let bearer = format!("Bearer {token}");
    let mut accepted_late = Vec::new();
    while stopped.elapsed() < Duration::from_secs(8) {
        let at = stopped.elapsed();
        let verdict = verifier.verify(&token).await;
        if at > Duration::from_millis(3_500) {
            if !matches!(verdict, Err(Rejection::Unavailable(_))) {
                accepted_late.push(format!("{at:?}: {verdict:?}"));
            }
            let http = services.http_call(&[&bearer]).await;
            if http != StatusCode::SERVICE_UNAVAILABLE {
                accepted_late.push(format!("{at:?}: HTTP {http}"));
            }
            match services.grpc_call(&[&bearer]).await {
                Err(status) if status.code() == Code::Unavailable => {}
                other => accepted_late.push(format!("{at:?}: gRPC {other:?}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted_late.is_empty(), "{accepted_late:#?}");
}

// ---------------------------------------------------------------------------------------------
// F. Hostile authorization headers: the layer reads them as authd's /verify does
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_hostile_authorization_headers_are_read_as_authd_reads_them() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let services = protect(&verifier).await;
    let (_, _, token) = app.new_user().await;
    let (_, _, other) = app.new_user().await;
    let cases = vec![
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BeArEr {token}"),
        format!("Bearer  {token}"),
        format!("Bearer\t{token}"),
        format!("Bearer {token} "),
        format!("Bearer {token}\t"),
        format!("Bearer {token},Bearer {other}"),
        format!("Bearer {token}, Bearer {other}"),
        format!("Bearer {token} {other}"),
        format!("Bearer={token}"),
        format!("Bearer:{token}"),
        format!("Token {token}"),
        format!("Basic {token}"),
        format!("Bearer {token}.AAAA"),
        format!("Bearer \"{token}\""),
        format!("Bearer {}", token.replacen('.', "..", 1)),
        "Bearer".into(),
        "Bearer ".into(),
        "".into(),
        format!("Bearer {}", "A".repeat(8_000)),
    ];
    let mut differences = Vec::new();
    for value in &cases {
        let headers = [("authorization", value.as_str())];
        let layer = services
            .http
            .request(Method::GET, "/whoami", &headers)
            .await;
        let authd = app.http().request(Method::GET, "/verify", &headers).await;
        let show = if value.len() > 60 {
            &value[..60]
        } else {
            value
        };
        if layer.status.is_success() != authd.status.is_success()
            || layer.header("www-authenticate") != authd.header("www-authenticate")
        {
            differences.push(format!(
                "{show:?}: layer {} {:?}, authd {} {:?}",
                layer.status,
                layer.header("www-authenticate"),
                authd.status,
                authd.header("www-authenticate")
            ));
        }
    }
    eprintln!("{differences:#?}");
    assert!(
        differences
            .iter()
            .all(|d| !d.contains("layer 200") || d.contains("authd 200")),
        "the layer lets through what authd refuses: {differences:#?}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// G. authd's TTL lowered: tokens authd now refuses as implausible pass the local layer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_tokens_authd_refuses_after_a_ttl_change_are_refused_locally() {
    let state = TestState::new(Backend::Embedded).await;
    let long = watching(&state).arg("--access-token-ttl=1h").start().await;
    let (_, _, token) = long.new_user().await;
    long.stop().await;
    let short = watching(&state).arg("--access-token-ttl=60s").start().await;
    let status = short
        .verify(&token)
        .await
        .expect_err("authd refuses it now");
    eprintln!("authd: {status:?}");
    // It cannot be logged out either.
    let logout = short.logout(&token).await;
    eprintln!("logout: {logout:?}");
    let verifier = local_verifier(local_options(&short)).await;
    let verdict = verifier.verify(&token).await;
    assert!(
        verdict.is_err(),
        "authd refuses the token ({:?}) but the local layer accepts it: {verdict:?}",
        status.code()
    );
    short.stop().await;
}

// ---------------------------------------------------------------------------------------------
// I. Exact time edges: local agrees with authd's Verify
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_time_edges_agree_with_authd() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let verifier = local_verifier(local_options(&app)).await;
    let (_, user_id, _) = app.new_user().await;
    let ours = RawSigner::for_state(&state);
    let mut differences = Vec::new();
    for attempt in 0..3 {
        // Start just after a second begins.
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
            > 100
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let now = unix_now();
        let mut cases: Vec<(String, Value)> = Vec::new();
        for k in 3..=7 {
            let mut c = claims(&user_id, 0, 900);
            c["iat"] = (now - 900 - k).into();
            c["exp"] = (now - k).into();
            cases.push((format!("exp now-{k}"), c));
        }
        for k in 3..=7 {
            let mut c = claims(&user_id, 0, 900);
            c["iat"] = (now + k).into();
            c["exp"] = (now + k + 900).into();
            cases.push((format!("iat now+{k}"), c));
        }
        for k in 3..=7 {
            let mut c = claims(&user_id, 0, 900);
            c["nbf"] = (now + k).into();
            cases.push((format!("nbf now+{k}"), c));
        }
        let mut c = claims(&user_id, 0, 900);
        c["nbf"] = json!((now - 10) as f64 + 0.5);
        cases.push(("nbf float in the past".into(), c));
        let mut c = claims(&user_id, 0, 900);
        c["nbf"] = json!(null);
        cases.push(("nbf null".into(), c));
        let mut c = claims(&user_id, 0, 900);
        c["nbf"] = json!(-1);
        cases.push(("nbf -1".into(), c));
        for (case, c) in cases {
            let token = ours.sign(&ours.header(), &c);
            let authd = app.verify(&token).await.is_ok();
            let local = verifier.verify(&token).await;
            if unix_now() != now {
                continue;
            }
            if authd != local.is_ok() {
                differences.push(format!(
                    "attempt {attempt}, {case}: authd {authd}, local {local:?}"
                ));
            }
        }
    }
    eprintln!("{differences:#?}");
    assert!(
        !differences
            .iter()
            .any(|d| d.contains("authd false") && d.contains("Ok(")),
        "local accepts what authd refuses: {differences:#?}"
    );
    app.stop().await;
}

// G2. The same, after a LogoutAll made with a new token: the user's cut-off lives only for the
//     new TTL, so the layer forgets it while the old, longer-lived token is still unexpired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_a_logout_all_keeps_refusing_old_long_lived_tokens_locally() {
    let state = TestState::new(Backend::Embedded).await;
    let long = watching(&state).arg("--access-token-ttl=1h").start().await;
    let (email, _, old) = long.new_user().await;
    long.stop().await;
    let short = watching(&state).arg("--access-token-ttl=2s").start().await;
    let verifier = local_verifier(local_options(&short)).await;
    let fresh = short.new_session(&email).await.access_token;
    short.logout_all(&fresh).await.unwrap();
    // Refused at once, as longer-lived than authd now issues (authd refuses it too).
    let refused = soon(Duration::from_secs(1), async || {
        verifier.verify(&old).await.is_err()
    })
    .await;
    assert!(refused, "the old token is refused at first");
    let started = Instant::now();
    // The cut-off is forgotten some 8 s on (the new TTL plus leeway); the mirror purges every
    // 30 s: past both, the old token must still be refused.
    let back = soon(Duration::from_secs(35), async || {
        verifier.verify(&old).await.is_ok()
    })
    .await;
    // And a layer that starts now, from a fresh snapshot.
    let late = local_verifier(local_options(&short)).await;
    let late_verdict = late.verify(&old).await;
    eprintln!(
        "old token accepted again by the running layer: {back} after {:?}; by a new layer: {late_verdict:?}",
        started.elapsed()
    );
    assert!(
        !back && late_verdict.is_err(),
        "after LogoutAll, the user's older token (exp {}) is accepted again locally",
        jwt_claims(&old)["exp"]
    );
    short.stop().await;
}

// ---------------------------------------------------------------------------------------------
// J. A snapshot of several chunks while revocations keep arriving
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_revocations_during_a_multi_chunk_snapshot_are_all_honoured() {
    use authd::{
        domain::Jti,
        domain::UserId,
        store::{RedisStore, RedisTopology, Revocation, RevocationStore as _, Revoked},
    };
    let state = TestState::new(Backend::Postgres).await;
    let store = RedisStore::connect(
        &RedisTopology::Single(crate::common::redis_url()),
        &Default::default(),
        &state.redis_prefix,
        false,
    )
    .await
    .unwrap();
    let user = UserId::generate();
    let now = unix_now();
    let preloaded: Vec<Revocation> = (0..12_000)
        .map(|_| Revocation {
            user,
            what: Revoked::Token(Jti::generate()),
            until: now + 600,
        })
        .collect();
    store.revoke(&preloaded, now).await.unwrap();
    let app = Arc::new(watching(&state).start().await);
    let ours = Arc::new(RawSigner::for_state(&state));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revoked = Arc::new(Mutex::new(Vec::<String>::new()));
    let user_id = user.to_string();
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (app, ours, stop, revoked, user_id) = (
                app.clone(),
                ours.clone(),
                stop.clone(),
                revoked.clone(),
                user_id.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let token = ours.sign(&ours.header(), &claims(&user_id, 0, 900));
                    app.logout(&token).await.unwrap();
                    revoked.lock().unwrap().push(token);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Several layers start while the writers run.
    let mut verifiers = Vec::new();
    for _ in 0..4 {
        verifiers.push(local_verifier(local_options(&app)).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let revoked = std::mem::take(&mut *revoked.lock().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut passed = Vec::new();
    for (n, verifier) in verifiers.iter().enumerate() {
        for (index, token) in revoked.iter().enumerate() {
            let verdict = verifier.verify(token).await;
            if verdict != Err(Rejection::Revoked) {
                passed.push((n, index, verdict));
            }
        }
    }
    eprintln!("{} revoked during the snapshots", revoked.len());
    assert!(passed.is_empty(), "{passed:?}");
    Arc::try_unwrap(app).ok().unwrap().stop().await;
}

// ---------------------------------------------------------------------------------------------
// K. authd restarts while a layer is connected, a revocation made on another instance meanwhile,
//    and many concurrent requests during the reconnect
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_a_restart_with_a_revocation_elsewhere_never_lets_it_through_after_reconnect() {
    let state = TestState::new(Backend::Postgres).await;
    let grpc = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let http_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = watching(&state).listen_on(grpc, http_addr).start().await;
    let b = watching(&state).start().await;
    let verifier = local_verifier(local_options(&a)).await;
    let (_, _, before) = a.new_user().await;
    let (_, _, during) = a.new_user().await;
    a.logout(&before).await.unwrap();
    verifier.verify(&during).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let floods: Vec<_> = (0..8)
        .map(|_| {
            let (verifier, stop, phase, bad, before, during) = (
                verifier.clone(),
                stop.clone(),
                phase.clone(),
                bad.clone(),
                before.clone(),
                during.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(c) = verifier.verify(&before).await {
                        bad.lock()
                            .unwrap()
                            .push(format!("revoked-before token accepted {c:?}"));
                    }
                    let p = phase.load(std::sync::atomic::Ordering::Relaxed);
                    if p == 2
                        && let Ok(c) = verifier.verify(&during).await
                    {
                        bad.lock().unwrap().push(format!(
                            "revoked-during-downtime token accepted after reconnect {c:?}"
                        ));
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.stop().await;
    phase.store(1, std::sync::atomic::Ordering::Relaxed);
    b.logout(&during).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = watching(&state).listen_on(grpc, http_addr).start().await;
    let current = soon(Duration::from_secs(15), async || {
        verifier.is_current() && verifier.verify(&during).await == Err(Rejection::Revoked)
    })
    .await;
    assert!(current, "the layer reconnects");
    phase.store(2, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flood in floods {
        flood.await.unwrap();
    }
    let bad = std::mem::take(&mut *bad.lock().unwrap());
    assert!(
        bad.is_empty(),
        "{} bad verdicts, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// L. Redis flushed while authd is down; the layer reconnects to the restarted authd
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_a_redis_flushed_while_authd_was_down_refuses_earlier_tokens_after_reconnect() {
    let redis =
        crate::common::redis_server::PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let http_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = watching(&state)
        .redis_url(Some(&redis.url()))
        .listen_on(grpc, http_addr)
        .start()
        .await;
    let verifier = local_verifier(local_options(&app)).await;
    let (_, _, revoked) = app.new_user().await;
    let (_, _, live) = app.new_user().await;
    app.logout(&revoked).await.unwrap();
    assert!(
        soon(Duration::from_secs(1), async || verifier
            .verify(&revoked)
            .await
            == Err(Rejection::Revoked))
        .await
    );
    app.stop().await;
    assert!(redis.cli(&["flushall"]).contains("OK"));
    // The old mirror goes stale first, so that whatever is accepted below comes from the
    // restarted authd's snapshot.
    assert!(soon(Duration::from_secs(6), async || !verifier.is_current()).await);
    let restarted = Instant::now();
    let app = watching(&state)
        .redis_url(Some(&redis.url()))
        .listen_on(grpc, http_addr)
        .start()
        .await;
    let mut bad = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Ok(c) = verifier.verify(&revoked).await {
            bad.push(format!("revoked token accepted: {c:?}"));
        }
        if verifier.is_current()
            && let Ok(c) = verifier.verify(&live).await
        {
            bad.push(format!(
                "{:?} after restart: pre-flush token accepted while current: {c:?}",
                restarted.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "authd: revoked {:?}, live {:?}",
        app.verify(&revoked).await.map(drop),
        app.verify(&live).await.map(drop)
    );
    assert!(verifier.is_current());
    assert!(bad.is_empty(), "{} bad: {:#?}", bad.len(), bad);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// M. The typed AuthClient with the token in metadata
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_the_typed_client_sends_tokens_in_metadata_for_every_call() {
    use authd_client::{AuthClient, TokenPlacement};
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let client = AuthClient::connect(format!("http://{}", app.address))
        .await
        .unwrap()
        .with_token_placement(TokenPlacement::Bearer);
    let (email, user_id, tokens) = app.new_session_user().await;
    let token = tokens.access_token;
    let verified = client.verify(&token).await.expect("verify via metadata");
    assert_eq!(verified.user_id, user_id);
    let sessions = client
        .list_sessions(&token)
        .await
        .expect("list via metadata");
    assert_eq!(sessions.len(), 1);
    let second = app.new_session(&email).await;
    let sid = jwt_claims(&second.access_token)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .revoke_session(&token, &sid)
        .await
        .expect("revoke via metadata");
    assert!(app.verify(&second.access_token).await.is_err());
    let changed = client
        .change_password(&token, PASSWORD, "another correct horse battery staple")
        .await
        .expect("change password via metadata");
    let new_token = changed.tokens.unwrap().access_token;
    assert!(app.verify(&token).await.is_err());
    // Hostile tokens: not a header value, with spaces, empty.
    for bad in ["", " ", "a\nb", "é", " leading", "tok en"] {
        let verdict = client.verify(bad).await;
        eprintln!(
            "{bad:?}: {:?}",
            verdict
                .as_ref()
                .map_err(|s| (s.code(), s.message().to_owned()))
        );
        assert!(verdict.is_err(), "{bad:?} accepted");
    }
    client
        .logout_all(&new_token)
        .await
        .expect("logout all via metadata");
    assert!(app.verify(&new_token).await.is_err());
    let fourth = app
        .login(&email, "another correct horse battery staple")
        .await
        .unwrap()
        .tokens
        .unwrap();
    client
        .logout(&fourth.access_token, "")
        .await
        .expect("logout via metadata");
    assert!(app.verify(&fourth.access_token).await.is_err());
    let fifth = app
        .login(&email, "another correct horse battery staple")
        .await
        .unwrap()
        .tokens
        .unwrap();
    client
        .delete_account(&fifth.access_token, "another correct horse battery staple")
        .await
        .expect("delete via metadata");
    assert!(app.verify(&fifth.access_token).await.is_err());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// N. Local mode over a caller-built channel (as mTLS requires) whose connection dies silently
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack2_local_mode_over_a_callers_endpoint_recovers_after_a_silent_dead_connection() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let hole = Blackhole::start(app.address).await;
    // What a caller would build for TLS: an endpoint with no keepalive settings of its own.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", hole.address)).unwrap();
    let options = LocalOptions::new(
        format!("http://{}", hole.address),
        format!("http://{}", app.http_address.unwrap()),
    )
    .watch_token(super::watch::WATCH_TOKEN)
    .endpoint(endpoint);
    let verifier = local_verifier(options).await;
    let (_, _, token) = app.new_user().await;
    verifier.verify(&token).await.unwrap();
    hole.silence_open_connections();
    let silenced = Instant::now();
    assert!(soon(Duration::from_secs(10), async || !verifier.is_current()).await);
    let back = soon(Duration::from_secs(30), async || verifier.is_current()).await;
    assert!(
        back && silenced.elapsed() < Duration::from_secs(15),
        "still stale (every request 503) {:?} after the connection died silently",
        silenced.elapsed()
    );
    drop(hole);
    app.stop().await;
}
