//! Back ends that go away: fail closed with UNAVAILABLE, report NOT_SERVING, recover by themselves.
//! Outages are injected with a TCP proxy between authd and the shared Postgres/Redis.

use std::{sync::Arc, time::Duration};

use authd::clock::ManualClock;

use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::common::{
    Backend, PASSWORD, Proxy, TestApp, TestState, admin_database_url, assert_status, eventually,
    host_port, redis_server::PrivateRedis, redis_url,
};

async fn health_of(app: &TestApp) -> Option<ServingStatus> {
    let request = HealthCheckRequest {
        service: "auth.v1.AuthService".into(),
    };
    app.health
        .clone()
        .check(request)
        .await
        .ok()
        .map(|r| r.get_ref().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_verify_and_logout_closed_and_recovers_by_itself() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let app = state
        .app()
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let (email, _, token) = app.new_user().await;
    let (_, _, other_token) = app.new_user().await;
    app.verify(&token).await.unwrap();

    proxy.cut();
    let status = app.verify(&token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    let status = app.logout(&other_token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    // Login throttling lives in Redis too: without it, Login fails closed.
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    let not_serving = eventually(Duration::from_secs(5), || async {
        health_of(&app).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(
        not_serving,
        "health must report NOT_SERVING while Redis is down"
    );

    proxy.restore();
    let recovered = eventually(Duration::from_secs(10), || async {
        app.verify(&token).await.is_ok()
    })
    .await;
    assert!(recovered, "Verify must recover without a restart");
    let serving = eventually(Duration::from_secs(5), || async {
        health_of(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving);
    // The logout refused during the outage was not applied; a new one is.
    app.verify(&other_token).await.unwrap();
    app.logout(&other_token).await.unwrap();
    assert_status(
        &app.verify(&other_token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_register_and_login_but_verify_keeps_serving() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&admin_database_url())).await;
    let database_url = proxy.url(&state.database_url());
    let app = state.app().database_url(Some(&database_url)).start().await;
    let (email, _, token) = app.new_user().await;

    proxy.cut();
    let started = std::time::Instant::now();
    let status = app.register("new@example.com", PASSWORD).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "outage answers must be bounded"
    );
    app.verify(&token)
        .await
        .expect("Verify does not need Postgres");

    proxy.restore();
    let recovered = eventually(Duration::from_secs(10), || async {
        app.login(&email, PASSWORD).await.is_ok()
    })
    .await;
    assert!(recovered, "Login must recover without a restart");
    app.register("new@example.com", PASSWORD)
        .await
        .expect("register after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_back_end_keeps_users_and_revocations_across_a_restart() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let (email, user_id, token) = app.new_user().await;
    let (_, _, kept_token) = app.new_user().await;
    app.logout(&token).await.unwrap();
    app.stop().await;

    let app = state.app().start().await;
    assert_eq!(app.login(&email, PASSWORD).await.unwrap().user_id, user_id);
    assert_status(
        &app.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    app.verify(&kept_token)
        .await
        .expect("tokens signed before the restart stay valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_back_end_without_redis_keeps_revocations_in_postgres() {
    let state = TestState::new(Backend::Postgres).await;
    let app = state.app().redis_url(None).start().await;
    let (_, _, token) = app.new_user().await;
    app.logout(&token).await.unwrap();
    // A second instance on the same database sees the revocation.
    let other = state.app().redis_url(None).start().await;
    assert_status(
        &other.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_back_ends_answer_unavailable_within_bounded_time() {
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
    let (email, _, token) = app.new_user().await;

    redis_proxy.stall();
    postgres_proxy.stall();
    let started = std::time::Instant::now();
    let status = app.verify(&token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Verify took {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let status = app
        .register("hung@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Register took {:?}",
        started.elapsed()
    );

    redis_proxy.restore();
    postgres_proxy.restore();
    let recovered = eventually(Duration::from_secs(15), || async {
        app.login(&email, PASSWORD).await.is_ok() && app.verify(&token).await.is_ok()
    })
    .await;
    assert!(recovered, "service must resume by itself after a hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_refuses_writes_login_is_unavailable_before_the_password_is_checked() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    let app = state.app().redis_url(Some(&redis.url())).start().await;
    let (email, _, _) = app.new_user().await;
    // Full: every write is refused (OOM), reads still work.
    assert!(
        redis
            .cli(&["config", "set", "maxmemory", "1"])
            .contains("OK")
    );
    for password in [PASSWORD, "wrong password!"] {
        let status = app.login(&email, password).await.unwrap_err();
        // The right password gets the same answer as a wrong one: no oracle without a throttle.
        assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    }
    assert!(
        redis
            .cli(&["config", "set", "maxmemory", "0"])
            .contains("OK")
    );
    app.login(&email, PASSWORD)
        .await
        .expect("login works again once Redis takes writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_evicts_keys_stops_start_up_unless_allowed() {
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl"] {
        let redis = PrivateRedis::start(&["--maxmemory-policy", policy]);
        let state = TestState::new(Backend::Postgres).await;
        let error = state
            .app()
            .redis_url(Some(&redis.url()))
            .try_start()
            .await
            .err()
            .expect("an evicting Redis must stop start-up");
        let error = format!("{error:#}");
        assert!(error.contains("AUTHD_REDIS_URL"), "{error}");
        assert!(
            error.contains(&format!("maxmemory-policy {policy}")),
            "{error}"
        );
        assert!(error.contains("AUTHD_REDIS_ALLOW_EVICTION"), "{error}");
        let app = state
            .app()
            .redis_url(Some(&redis.url()))
            .arg("--redis-allow-eviction=true")
            .start()
            .await;
        app.new_user().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hides_config_starts_with_a_warning() {
    // Managed Redis services often refuse CONFIG: authd cannot check, so it warns and starts.
    let redis = PrivateRedis::start(&["--rename-command", "CONFIG", ""]);
    let state = TestState::new(Backend::Postgres).await;
    let app = state.app().redis_url(Some(&redis.url())).start().await;
    let (_, _, token) = app.new_user().await;
    app.verify(&token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_evicting_after_a_reconnect_is_not_serving() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    let app = state.app().redis_url(Some(&redis.url())).start().await;
    let serving = eventually(Duration::from_secs(5), || async {
        health_of(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving);
    // The server is reconfigured and authd's connections are dropped: it reconnects ...
    assert!(
        redis
            .cli(&["config", "set", "maxmemory-policy", "allkeys-lru"])
            .contains("OK")
    );
    redis.cli(&["client", "kill", "type", "normal"]);
    // ... notices the policy on reconnecting (or at its next periodic look), and says
    // NOT_SERVING.
    let not_serving = eventually(Duration::from_secs(15), || async {
        health_of(&app).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(
        not_serving,
        "an evicting Redis after a reconnect must be NOT_SERVING"
    );
    assert!(
        redis
            .cli(&["config", "set", "maxmemory-policy", "noeviction"])
            .contains("OK")
    );
    let serving = eventually(Duration::from_secs(10), || async {
        health_of(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving, "SERVING again once the policy is safe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_store_that_lost_its_data_brings_no_revoked_token_back() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    // JWT times have one-second resolution: the instances share a clock the test can step past
    // the second of the logout.
    let clock = Arc::new(ManualClock::starting_now());
    let a = state
        .app()
        .redis_url(Some(&redis.url()))
        .clock(clock.clone())
        .start()
        .await;
    let b = state
        .app()
        .redis_url(Some(&redis.url()))
        .arg("--revocation-mode=cached")
        .clock(clock.clone())
        .start()
        .await;
    let (email, _, token) = a.new_user().await;
    a.logout(&token).await.unwrap();
    clock.advance(Duration::from_secs(2));
    // Redis forgets everything (a restart without persistence looks the same).
    assert!(redis.cli(&["flushall"]).contains("OK"));
    for app in [&a, &b] {
        let refused = eventually(Duration::from_secs(10), || async {
            matches!(app.verify(&token).await, Err(s) if s.code() == Code::Unauthenticated)
        })
        .await;
        assert!(
            refused,
            "the revoked token must stay refused on every instance"
        );
        assert_status(
            &app.verify(&token).await.unwrap_err(),
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    // Signing in again works, on both instances.
    let login = a.login(&email, PASSWORD).await.unwrap();
    let fresh = login.tokens.unwrap().access_token;
    a.verify(&fresh).await.unwrap();
    b.verify(&fresh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_two_redis_prefixes_of_one_database_do_not_see_each_other_as_a_loss() {
    let state = TestState::new(Backend::Postgres).await;
    let a = state.app().start().await;
    let b = state
        .app()
        .redis_prefix(format!("{}other:", state.redis_prefix))
        .start()
        .await;
    let (_, _, token) = a.new_user().await;
    // Several watch rounds later, nobody has cut every token off.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.verify(&token).await.expect("no cut-off on A");
    b.verify(&token).await.expect("no cut-off on B");
}

/// The container health check, `--liveness` or not, against `app`: whether it exited 0.
fn container_health_check(app: &TestApp, liveness: bool) -> bool {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd-healthcheck"));
    if liveness {
        command.arg("--liveness");
    }
    command
        .arg(app.address.to_string())
        .env_remove("AUTHD_TLS_CERT_FILE");
    // The check runs its own runtime and blocks: off this test's runtime threads.
    std::thread::scope(|scope| scope.spawn(|| command.output().unwrap()).join().unwrap())
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_liveness_check_passes_through_a_redis_outage_and_the_readiness_check_does_not() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let app = state
        .app()
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let serving = eventually(Duration::from_secs(5), || async {
        health_of(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving);
    assert!(container_health_check(&app, false), "not ready");
    assert!(container_health_check(&app, true), "not live");

    proxy.cut();
    let not_serving = eventually(Duration::from_secs(5), || async {
        health_of(&app).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(not_serving);
    assert!(
        !container_health_check(&app, false),
        "ready while Redis is down"
    );
    assert!(
        container_health_check(&app, true),
        "a live authd would be restarted for Redis' outage"
    );

    proxy.restore();
    let serving = eventually(Duration::from_secs(10), || async {
        health_of(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    assert!(serving);
    assert!(container_health_check(&app, false));
    let address = app.address;
    app.stop().await;
    // Nothing listening: neither check passes.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd-healthcheck"));
    command.args(["--liveness", &address.to_string()]);
    let gone =
        std::thread::scope(|scope| scope.spawn(|| command.output().unwrap()).join().unwrap());
    assert!(!gone.status.success(), "live with nothing listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_through_a_hung_then_cut_postgres_is_unavailable_and_the_token_is_not_spent() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&admin_database_url())).await;
    let database_url = proxy.url(&state.database_url());
    let app = state.app().database_url(Some(&database_url)).start().await;
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let first = app.register(&email, PASSWORD).await.expect("register");
    // One rotation first, so that a connection for rotations is open when the database hangs.
    let token = app
        .refresh(&first.tokens.unwrap().refresh_token)
        .await
        .expect("refresh")
        .tokens
        .unwrap()
        .refresh_token;

    proxy.stall();
    let started = std::time::Instant::now();
    let status = app.refresh(&token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Refresh took {:?}",
        started.elapsed()
    );
    proxy.cut();
    let status = app.refresh(&token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));

    proxy.restore();
    // Neither failed call reached the database: the token is still the current one, and the
    // connections they left behind are not used again.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let refreshed = loop {
        match app.refresh(&token).await {
            Ok(refreshed) => break refreshed,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "Refresh must recover without a restart"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut tokens = refreshed.tokens.unwrap();
    for _ in 0..3 {
        app.verify(&tokens.access_token)
            .await
            .expect("the new access token verifies");
        tokens = app
            .refresh(&tokens.refresh_token)
            .await
            .expect("rotation keeps working")
            .tokens
            .unwrap();
    }
}
