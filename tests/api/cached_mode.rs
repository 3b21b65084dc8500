//! AUTHD_REVOCATION_MODE=cached: Verify answers from an in-memory mirror fed by Redis pub/sub,
//! reloaded on every reconnect, and falls back to Redis (failing closed) while not current.

use std::{sync::Arc, time::Duration};

use authd::{clock::ManualClock, store::mirror::STALE_AFTER};
use tonic::Code;

use crate::common::{
    AppBuilder, Backend, Proxy, TestApp, TestState, assert_status, eventually, host_port, redis_url,
};

/// An instance in cached mode on `state`, talking to Redis at `redis`.
fn cached<'a>(state: &'a TestState, redis: &str) -> AppBuilder<'a> {
    state
        .app()
        .redis_url(Some(redis))
        .arg("--revocation-mode=cached")
}

async fn is_revoked(app: &TestApp, token: &str) -> bool {
    matches!(app.verify(token).await, Err(status) if status.code() == Code::Unauthenticated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_reaches_the_mirror_of_another() {
    let state = TestState::new(Backend::Postgres).await;
    let a = cached(&state, &redis_url()).start().await;
    let b = cached(&state, &redis_url()).start().await;
    let (_, _, token) = a.new_user().await;
    b.verify(&token).await.unwrap();
    a.logout(&token).await.unwrap();
    // Seen at once where it was made …
    assert_status(
        &a.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    // … and shortly after elsewhere.
    assert!(eventually(Duration::from_secs(1), || is_revoked(&b, &token)).await);
    assert_status(
        &b.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mirror_loads_the_revocations_made_before_it_started() {
    let state = TestState::new(Backend::Postgres).await;
    let strict = state.app().start().await;
    let (_, _, token) = strict.new_user().await;
    let (_, _, kept) = strict.new_user().await;
    strict.logout(&token).await.unwrap();
    let cached = cached(&state, &redis_url()).start().await;
    assert_status(
        &cached.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    cached.verify(&kept).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_cut_off_from_redis_fails_closed_then_resynchronises() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let clock = Arc::new(ManualClock::starting_now());
    let cached = cached(&state, &proxy.url(&redis_url()))
        .clock(clock.clone())
        .start()
        .await;
    let strict = state.app().start().await;
    let (_, _, token) = strict.new_user().await;
    cached.verify(&token).await.unwrap();

    proxy.cut();
    // The revocation happens while the mirror cannot hear it.
    strict.logout(&token).await.unwrap();
    // Once the mirror is stale (no heartbeat for STALE_AFTER), Verify asks Redis, which is
    // unreachable: UNAVAILABLE, never OK.
    clock.advance(STALE_AFTER + Duration::from_millis(500));
    assert_status(
        &cached.verify(&token).await.unwrap_err(),
        Code::Unavailable,
        Some("BACKEND_UNAVAILABLE"),
    );

    proxy.restore();
    let resynced = eventually(Duration::from_secs(10), || async {
        matches!(cached.verify(&token).await, Err(s) if s.code() == Code::Unauthenticated)
    })
    .await;
    assert!(
        resynced,
        "after reconnecting, the mirror must know the revocation it missed"
    );
    assert_status(
        &cached.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[test]
fn cached_mode_without_redis_is_refused() {
    use clap::Parser as _;
    let config = authd::Config::try_parse_from(["authd", "--revocation-mode=cached"]).unwrap();
    assert_eq!(
        config.settings().unwrap_err().setting,
        "AUTHD_REVOCATION_MODE"
    );
}
