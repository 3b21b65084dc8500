//! Login throttling: per-account exponential back-off and a per-source cap, shared through the
//! throttle store, revealing nothing about which emails exist.

use std::{sync::Arc, time::Duration};

use authd::{clock::ManualClock, pb};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

use crate::{
    backend_tests,
    common::{Backend, PASSWORD, TestApp, TestState, assert_status},
};

backend_tests!(
    five_failures_make_an_account_back_off_exponentially_even_for_the_right_password,
    unknown_emails_are_throttled_exactly_like_registered_ones,
    a_success_resets_the_account_count,
    a_source_address_is_capped_across_accounts,
    x_forwarded_for_is_believed_only_from_trusted_proxies,
    the_source_is_the_rightmost_untrusted_hop_so_clients_cannot_rotate_or_frame,
    a_trusted_proxy_without_or_with_garbage_forwarded_for_is_its_own_source,
    sixty_concurrent_guesses_on_one_account_get_no_more_than_the_limit,
    an_attacker_source_failing_does_not_stop_the_victim_logging_in_from_elsewhere,
    failures_from_many_sources_hit_the_account_wide_limit,
    a_backed_off_source_cancelling_its_calls_takes_nothing_from_the_account,
);

/// An app on a fresh state with these flags, reading time from `clock`.
async fn start_with_clock(
    backend: Backend,
    extra: &[&str],
    clock: Arc<ManualClock>,
) -> (TestApp, TestState) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args(extra.iter().copied())
        .clock(clock)
        .start()
        .await;
    (app, state)
}

/// An app on a fresh state with these flags.
async fn start(backend: Backend, extra: &[&str]) -> (TestApp, TestState) {
    start_with_clock(backend, extra, Arc::new(ManualClock::starting_now())).await
}

fn retry_after(status: &Status) -> Duration {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

async fn five_failures_make_an_account_back_off_exponentially_even_for_the_right_password(
    backend: Backend,
) {
    let clock = Arc::new(ManualClock::starting_now());
    let (app, _state) =
        start_with_clock(backend, &["--login-backoff-base=400ms"], clock.clone()).await;
    let (email, _, _) = app.new_user().await;
    for _ in 0..5 {
        let status = app.login(&email, "wrong password!").await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    let first = retry_after(&status);
    assert_eq!(first, Duration::from_millis(400), "the clock has not moved");

    clock.advance(first - Duration::from_millis(1));
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    assert_eq!(retry_after(&status), Duration::from_millis(1));
    clock.advance(Duration::from_millis(1));
    // The sixth failure doubles the delay.
    let status = app.login(&email, "wrong password!").await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    let second = retry_after(&status);
    assert_eq!(second, Duration::from_millis(800));

    clock.advance(second);
    app.login(&email, PASSWORD)
        .await
        .expect("the right password works once the back-off is over");
}

async fn unknown_emails_are_throttled_exactly_like_registered_ones(backend: Backend) {
    let (app, _state) = start(backend, &["--login-backoff-base=10s"]).await;
    let (email, _, _) = app.new_user().await;
    let mut answers = Vec::new();
    for target in [email.as_str(), "nobody-here@example.com"] {
        for _ in 0..5 {
            let status = app.login(target, "wrong password!").await.unwrap_err();
            assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
        }
        let status = app.login(target, "wrong password!").await.unwrap_err();
        assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
        answers.push(status);
    }
    assert_eq!(answers[0].message(), answers[1].message());
}

async fn a_success_resets_the_account_count(backend: Backend) {
    let (app, _state) = start(backend, &["--login-backoff-base=10s"]).await;
    let (email, _, _) = app.new_user().await;
    for _ in 0..4 {
        app.login(&email, "wrong password!").await.unwrap_err();
    }
    app.login(&email, PASSWORD).await.unwrap();
    for _ in 0..4 {
        let status = app.login(&email, "wrong password!").await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    app.login(&email, PASSWORD)
        .await
        .expect("four failures after a success do not throttle");
}

async fn a_source_address_is_capped_across_accounts(backend: Backend) {
    let (app, _state) = start(backend, &["--source-max-failures=3"]).await;
    let (email, _, _) = app.new_user().await;
    for i in 0..3 {
        let status = app
            .login(&format!("stranger{i}@example.com"), "wrong password!")
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    let wait = retry_after(&status);
    assert!(
        wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60),
        "{wait:?}"
    );
}

async fn x_forwarded_for_is_believed_only_from_trusted_proxies(backend: Backend) {
    let (app, _state) = start(
        backend,
        &[
            "--source-max-failures=2",
            "--trusted-proxies=127.0.0.1,10.0.0.0/8",
        ],
    )
    .await;
    let login = |client: &'static str, email: String| {
        let mut grpc = app.client.clone();
        async move {
            let mut request = Request::new(pb::LoginRequest {
                email,
                password: "wrong password!".into(),
            });
            request
                .metadata_mut()
                .insert("x-forwarded-for", client.parse().unwrap());
            grpc.login(request).await.unwrap_err()
        }
    };
    for i in 0..2 {
        let status = login("198.51.100.1", format!("a{i}@example.com")).await;
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    let status = login("198.51.100.1", "a9@example.com".into()).await;
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    // Another client behind the same proxy is not affected.
    let status = login("198.51.100.2", "b0@example.com".into()).await;
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));

    // Without trust, the header is ignored: every "client" is the one peer, 127.0.0.1.
    let (app, _state) = start(backend, &["--source-max-failures=2"]).await;
    for (client, i) in [("198.51.100.1", 0), ("198.51.100.2", 1)] {
        let mut request = Request::new(pb::LoginRequest {
            email: format!("c{i}@example.com"),
            password: "wrong password!".into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        app.client.clone().login(request).await.unwrap_err();
    }
    let status = app
        .login("c9@example.com", "wrong password!")
        .await
        .unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
}

/// A login sent through a trusted proxy (the test's own address, 127.0.0.1) that forwards
/// `x-forwarded-for: <forwarded>` (`None`: no header at all).
async fn login_via_proxy(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded: Option<&str>,
) -> Result<pb::LoginResponse, Status> {
    let mut request = Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    if let Some(forwarded) = forwarded {
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
    }
    app.client
        .clone()
        .login(request)
        .await
        .map(|r| r.into_inner())
}

/// [`login_via_proxy`] for a client at `forwarded`.
async fn login_forwarded(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded: &str,
) -> Result<pb::LoginResponse, Status> {
    login_via_proxy(app, email, password, Some(forwarded)).await
}

/// A failed login through the proxy.
async fn failed_login_forwarded(app: &TestApp, email: &str, forwarded: Option<&str>) -> Status {
    login_via_proxy(app, email, "wrong password!", forwarded)
        .await
        .unwrap_err()
}

async fn the_source_is_the_rightmost_untrusted_hop_so_clients_cannot_rotate_or_frame(
    backend: Backend,
) {
    let (app, _state) = start(
        backend,
        &["--source-max-failures=3", "--trusted-proxies=127.0.0.1"],
    )
    .await;
    // The attacker (198.51.100.9, appended by the proxy) writes a new "client" each time on the
    // left: the rotation does not help, its own address is counted.
    for i in 0..3 {
        let forwarded = format!("192.0.2.{i}, 198.51.100.9");
        let status =
            failed_login_forwarded(&app, &format!("r{i}@example.com"), Some(&forwarded)).await;
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    let status =
        failed_login_forwarded(&app, "r9@example.com", Some("192.0.2.77, 198.51.100.9")).await;
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    // Naming a victim's address on the left did not fill the victim's bucket.
    for i in 0..3 {
        let forwarded = format!("203.0.113.50, 198.51.100.{}", 20 + i);
        failed_login_forwarded(&app, &format!("f{i}@example.com"), Some(&forwarded)).await;
    }
    let status = failed_login_forwarded(&app, "victim@example.com", Some("203.0.113.50")).await;
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
}

async fn a_trusted_proxy_without_or_with_garbage_forwarded_for_is_its_own_source(backend: Backend) {
    let (app, _state) = start(
        backend,
        &["--source-max-failures=3", "--trusted-proxies=127.0.0.1"],
    )
    .await;
    // No header, an unparseable one, and ip:port / [v6]:port forms that name the proxy itself:
    // all count against the proxy's own address, 127.0.0.1.
    let forwarded = [None, Some("unknown"), Some("127.0.0.1:50000")];
    for (i, forwarded) in forwarded.into_iter().enumerate() {
        let status = failed_login_forwarded(&app, &format!("g{i}@example.com"), forwarded).await;
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    let status = failed_login_forwarded(&app, "g9@example.com", Some("[::ffff:127.0.0.1]:1")).await;
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    // A client behind the proxy, named with its port, has its own bucket.
    let status = failed_login_forwarded(&app, "h0@example.com", Some("[2001:db8::5]:443")).await;
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
}

async fn sixty_concurrent_guesses_on_one_account_get_no_more_than_the_limit(backend: Backend) {
    let (app, _state) = start(
        backend,
        &[
            "--login-failures-before-backoff=5",
            "--source-max-failures=5",
        ],
    )
    .await;
    let (email, _, _) = app.new_user().await;
    let app = Arc::new(app);
    let guesses: Vec<_> = (0..60)
        .map(|i| {
            let (app, email) = (app.clone(), email.clone());
            tokio::spawn(async move { app.login(&email, &format!("wrong guess {i}")).await })
        })
        .collect();
    let mut checked = 0;
    for guess in guesses {
        let status = guess.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => {
                assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"))
            }
            other => panic!("{other:?}: {status:?}"),
        }
    }
    // Each attempt reserved its place before hashing: exactly the limit reached the password check.
    assert_eq!(checked, 5, "guesses that reached the password check");
}

async fn an_attacker_source_failing_does_not_stop_the_victim_logging_in_from_elsewhere(
    backend: Backend,
) {
    let (app, _state) = start(
        backend,
        &["--trusted-proxies=127.0.0.1", "--login-backoff-base=10m"],
    )
    .await;
    let (victim, _, _) = app.new_user().await;
    for _ in 0..20 {
        failed_login_forwarded(&app, &victim, Some("198.51.100.66")).await;
    }
    // The attacker's own source backs off ...
    let status = failed_login_forwarded(&app, &victim, Some("198.51.100.66")).await;
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    // ... while the victim, from their own address, logs in.
    login_forwarded(&app, &victim, PASSWORD, "203.0.113.50")
        .await
        .expect("the victim is not locked out by someone else's failures");
}

async fn failures_from_many_sources_hit_the_account_wide_limit(backend: Backend) {
    let (app, _state) = start(
        backend,
        &["--trusted-proxies=127.0.0.1", "--account-max-failures=10"],
    )
    .await;
    let (email, _, _) = app.new_user().await;
    for i in 0..10 {
        let status = failed_login_forwarded(&app, &email, Some(&format!("198.51.100.{i}"))).await;
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    // Distributed guessing stops at the account-wide limit, for every source.
    let status = failed_login_forwarded(&app, &email, Some("198.51.100.200")).await;
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    assert!(retry_after(&status) > Duration::from_secs(14 * 60));
}

async fn a_backed_off_source_cancelling_its_calls_takes_nothing_from_the_account(backend: Backend) {
    let (app, _state) = start(
        backend,
        &[
            "--trusted-proxies=127.0.0.1",
            "--account-max-failures=10",
            "--login-backoff-base=10m",
        ],
    )
    .await;
    let (victim, _, _) = app.new_user().await;
    for _ in 0..5 {
        failed_login_forwarded(&app, &victim, Some("198.51.100.66")).await;
    }
    // The attacker's pair is backing off now. It fires hundreds of calls and gives up on each at
    // once: refused attempts must leave the account window as it was.
    let app = Arc::new(app);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (app, victim) = (app.clone(), victim.clone());
            tokio::spawn(async move {
                let mut request = Request::new(pb::LoginRequest {
                    email: victim,
                    password: "wrong password!".into(),
                });
                request
                    .metadata_mut()
                    .insert("x-forwarded-for", "198.51.100.66".parse().unwrap());
                request.set_timeout(Duration::from_millis(1 + i % 5));
                let _ = app.client.clone().login(request).await;
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    // Give the server a moment to finish what the cancelled calls left running.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 5 real failures of 10 are counted; the victim, from elsewhere, is not refused.
    login_forwarded(&app, &victim, PASSWORD, "203.0.113.50")
        .await
        .expect("cancelled refused calls took no place in the account window");
}
