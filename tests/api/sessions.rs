//! Sessions: what Register and Login start, Logout of one session, LogoutAll (also across
//! instances), ListSessions, RevokeSession, legacy tokens without `sid`, the access-token check of
//! every token-taking RPC, and the embedded store's lock and resident revocations.

use std::{sync::Arc, time::Duration};

use authd::{clock::ManualClock, pb};
use tonic::{Code, Request, Status};
use uuid::Uuid;

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, Forger, PASSWORD, TestApp, TestState, assert_status, eventually,
        jwt_claims, reason, redis_url, spawn_app, tampered, unix_now, violated_fields,
    },
};

backend_tests!(
    register_and_login_start_sessions_with_a_refresh_token,
    logout_with_the_access_token_ends_that_session_only,
    logout_with_only_the_refresh_token_ends_that_session,
    logout_of_a_session_is_idempotent,
    legacy_tokens_without_a_session_verify_and_logout_revokes_them,
    logout_all_ends_every_session_of_the_user_and_no_other,
    a_login_in_the_same_second_as_logout_all_verifies_and_refreshes,
    list_sessions_shows_live_sessions_newest_first_with_their_client,
    revoke_session_ends_an_own_session,
    revoke_session_of_another_users_or_an_unknown_session_is_the_same_not_found,
    every_token_taking_rpc_checks_the_access_token_like_verify,
    list_sessions_records_the_source_the_throttle_sees_behind_a_trusted_proxy,
    session_revocations_and_cut_offs_expire_with_the_last_token_they_refuse,
    a_sign_in_past_the_per_user_session_limit_ends_the_oldest,
    logout_all_refuses_a_token_of_a_session_that_expired_earlier_in_the_same_second,
);

/// An outside attack found that LogoutAll skipped sessions past their end, so an access token a
/// session issued a moment before its end, in the LogoutAll's own second, survived.
async fn logout_all_refuses_a_token_of_a_session_that_expired_earlier_in_the_same_second(
    backend: Backend,
) {
    let state = TestState::new(backend).await;
    let clock = Arc::new(ManualClock::starting_now());
    let second = unix_now() + 10;
    clock.set_millis(second * 1000 - 500);
    let app = state
        .app()
        .clock(clock.clone())
        .arg("--session-max-age=1s")
        .start()
        .await;
    let (_, _, first) = app.new_session_user().await;
    clock.set_millis(second * 1000 + 200);
    let last = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    // The session ends at second + 0.5; the LogoutAll comes at second + 0.7.
    clock.set_millis(second * 1000 + 700);
    app.verify(&last.access_token).await.unwrap();
    let ended = app.logout_all(&last.access_token).await.unwrap();
    assert_eq!(ended.sessions_ended, 0, "the session had already expired");
    assert_revoked(&app, &last.access_token).await;
}

async fn a_sign_in_past_the_per_user_session_limit_ends_the_oldest(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state.app().arg("--max-sessions-per-user=2").start().await;
    let (email, _, first) = app.new_session_user().await;
    let second = app.new_session(&email).await;
    let first = assert_session_works(&app, &first).await;
    let third = app.new_session(&email).await;
    // The oldest ended, with its access tokens; the two newest live on.
    assert_refresh_invalid(&app, &first.refresh_token).await;
    assert_revoked(&app, &first.access_token).await;
    let listed = app.list_sessions(&third.access_token).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [third.session_id.as_str(), second.session_id.as_str()]);
    assert_session_works(&app, &second).await;
    assert_session_works(&app, &third).await;
    // Another user's sessions are not counted.
    let (_, _, other) = app.new_session_user().await;
    assert_session_works(&app, &other).await;
}

async fn assert_revoked(app: &TestApp, access_token: &str) {
    let status = app.verify(access_token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}

async fn assert_refresh_invalid(app: &TestApp, refresh_token: &str) {
    let status = app.refresh(refresh_token).await.unwrap_err();
    assert_status(
        &status,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
}

/// Asserts that a session works: its access token verifies and its refresh token rotates.
async fn assert_session_works(app: &TestApp, tokens: &pb::AuthTokens) -> pb::AuthTokens {
    app.verify(&tokens.access_token)
        .await
        .expect("the access token verifies");
    let next = app
        .refresh(&tokens.refresh_token)
        .await
        .expect("the refresh token rotates")
        .tokens
        .unwrap();
    app.verify(&next.access_token).await.unwrap();
    next
}

fn is_url_safe(token: &str) -> bool {
    token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn register_and_login_start_sessions_with_a_refresh_token(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, user_id, registered) = app.new_session_user().await;
    let logged_in = app.login(&email, PASSWORD).await.unwrap();
    assert_eq!(logged_in.user_id, user_id);
    let logged_in = logged_in.tokens.unwrap();
    for tokens in [&registered, &logged_in] {
        assert_eq!(tokens.token_type, "Bearer");
        assert_eq!(tokens.refresh_token.len(), 64, "{}", tokens.refresh_token);
        assert!(
            is_url_safe(&tokens.refresh_token),
            "{}",
            tokens.refresh_token
        );
        assert!(
            (30 * 86400 - 1..=30 * 86400).contains(&tokens.refresh_expires_in),
            "{}",
            tokens.refresh_expires_in
        );
        Uuid::parse_str(&tokens.session_id).expect("session_id is a UUID");
        assert_eq!(
            jwt_claims(&tokens.access_token)["sid"],
            tokens.session_id.as_str()
        );
        let verified = app.verify(&tokens.access_token).await.unwrap();
        assert_eq!(verified.session_id, tokens.session_id);
        assert_eq!(verified.user_id, user_id);
    }
    assert_ne!(
        registered.session_id, logged_in.session_id,
        "a session per sign-in"
    );
    assert_ne!(registered.refresh_token, logged_in.refresh_token);
}

async fn logout_with_the_access_token_ends_that_session_only(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let other = app.new_session(&email).await;
    let refreshed = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.logout(&first.access_token).await.unwrap();
    // Every access token of the session (also one issued by a later Refresh) and its refresh token.
    assert_revoked(&app, &first.access_token).await;
    assert_revoked(&app, &refreshed.access_token).await;
    assert_refresh_invalid(&app, &refreshed.refresh_token).await;
    assert_session_works(&app, &other).await;
}

async fn logout_with_only_the_refresh_token_ends_that_session(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let other = app.new_session(&email).await;
    let refreshed = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.logout_refresh(&refreshed.refresh_token).await.unwrap();
    assert_revoked(&app, &first.access_token).await;
    assert_revoked(&app, &refreshed.access_token).await;
    assert_refresh_invalid(&app, &refreshed.refresh_token).await;
    assert_session_works(&app, &other).await;
}

async fn logout_of_a_session_is_idempotent(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    app.logout(&first.access_token).await.unwrap();
    app.logout(&first.access_token)
        .await
        .expect("again by access token");
    app.logout_refresh(&first.refresh_token)
        .await
        .expect("again by refresh token");
    let second = app.new_session(&email).await;
    app.logout_refresh(&second.refresh_token).await.unwrap();
    app.logout_refresh(&second.refresh_token)
        .await
        .expect("again");
    app.logout(&second.access_token)
        .await
        .expect("again by access token");
    assert_revoked(&app, &second.access_token).await;
    assert_refresh_invalid(&app, &second.refresh_token).await;
}

async fn legacy_tokens_without_a_session_verify_and_logout_revokes_them(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, session) = app.new_session_user().await;
    let forger = Forger::for_state(&state);
    let claims = Forger::claims(&user_id, 10, 900);
    assert!(claims.get("sid").is_none());
    let legacy = forger.sign(&forger.header(), &claims);
    let verified = app
        .verify(&legacy)
        .await
        .expect("a token without sid verifies");
    assert_eq!(verified.user_id, user_id);
    assert_eq!(verified.session_id, "", "no session");
    app.logout(&legacy).await.unwrap();
    assert_revoked(&app, &legacy).await;
    assert_session_works(&app, &session).await;
}

async fn logout_all_ends_every_session_of_the_user_and_no_other(backend: Backend) {
    // One second throughout: the cut-off's second is where `iat` cannot tell before from after.
    let clock = Arc::new(ManualClock::at(unix_now()));
    clock.advance(Duration::from_millis(300));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (email, user_id, first) = app.new_session_user().await;
    let second = app.new_session(&email).await;
    let third = app.new_session(&email).await;
    let refreshed = app
        .refresh(&third.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let forger = Forger::for_state(&state);
    let legacy = forger.sign(&forger.header(), &Forger::claims(&user_id, 60, 900));
    app.verify(&legacy).await.unwrap();
    let (_, _, stranger) = app.new_session_user().await;

    let ended = app.logout_all(&second.access_token).await.unwrap();
    assert_eq!(ended.sessions_ended, 3);
    for access_token in [
        &first.access_token,
        &second.access_token,
        &third.access_token,
        &refreshed.access_token,
        &legacy,
    ] {
        assert_revoked(&app, access_token).await;
    }
    for refresh_token in [
        &first.refresh_token,
        &second.refresh_token,
        &refreshed.refresh_token,
    ] {
        assert_refresh_invalid(&app, refresh_token).await;
    }
    assert_session_works(&app, &stranger).await;
    // A minute later (nothing left to end but the caller's new session), a second LogoutAll
    // moves the cut-off forward: a legacy token issued between the two is refused too.
    let first_cutoff = authd::clock::Clock::now(clock.as_ref());
    clock.advance(Duration::from_secs(60));
    let between = legacy_token(&forger, &user_id, first_cutoff + 30);
    app.verify(&between)
        .await
        .expect("issued after the first cut-off");
    let fresh = app.new_session(&email).await;
    assert_eq!(
        app.logout_all(&fresh.access_token)
            .await
            .unwrap()
            .sessions_ended,
        1
    );
    assert_revoked(&app, &fresh.access_token).await;
    assert_revoked(&app, &between).await;
}

/// A token without `sid` (as issued before sessions) for `user_id`, issued at `iat`.
fn legacy_token(forger: &Forger, user_id: &str, iat: i64) -> String {
    let mut claims = Forger::claims(user_id, 0, 900);
    claims["iat"] = iat.into();
    claims["exp"] = (iat + 900).into();
    forger.sign(&forger.header(), &claims)
}

async fn a_login_in_the_same_second_as_logout_all_verifies_and_refreshes(backend: Backend) {
    let clock = Arc::new(ManualClock::at(unix_now()));
    clock.advance(Duration::from_millis(100));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (email, _, before) = app.new_session_user().await;
    app.logout_all(&before.access_token).await.unwrap();
    clock.advance(Duration::from_millis(500));
    let after = app.new_session(&email).await;
    let next = assert_session_works(&app, &after).await;
    app.verify(&after.access_token).await.unwrap();
    assert_revoked(&app, &before.access_token).await;
    let listed = app.list_sessions(&next.access_token).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [after.session_id.as_str()]);
    // And once the clock moves on.
    clock.advance(Duration::from_secs(2));
    assert_session_works(&app, &next).await;
}

async fn list_sessions_shows_live_sessions_newest_first_with_their_client(backend: Backend) {
    let clock = Arc::new(ManualClock::at(unix_now()));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (email, _, registered) = app.new_session_user().await;
    let started = authd::clock::Clock::now(clock.as_ref());
    let mut sessions = vec![registered];
    for agent in ["phone-app/1.0", "laptop-browser/2.0", "to-be-ended/3.0"] {
        clock.advance(Duration::from_secs(1));
        let tokens = app
            .login_as(&email, PASSWORD, agent)
            .await
            .unwrap()
            .tokens
            .unwrap();
        sessions.push(tokens);
    }
    clock.advance(Duration::from_secs(1));
    app.logout(&sessions[3].access_token).await.unwrap();
    let long_agent = "x".repeat(300);
    let long = app
        .login_as(&email, PASSWORD, &long_agent)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let (_, _, stranger) = app.new_session_user().await;

    let listed = app.list_sessions(&sessions[1].access_token).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            long.session_id.as_str(),
            sessions[2].session_id.as_str(),
            sessions[1].session_id.as_str(),
            sessions[0].session_id.as_str(),
        ],
        "live sessions, newest first; the ended one and other users' not listed"
    );
    assert!(!ids.contains(&stranger.session_id.as_str()));
    let current: Vec<bool> = listed.iter().map(|s| s.current).collect();
    assert_eq!(current, [false, false, true, false]);
    for session in &listed {
        assert_eq!(session.source_address, "127.0.0.1");
    }
    assert!(
        listed[2].user_agent.starts_with("phone-app/1.0"),
        "{}",
        listed[2].user_agent
    );
    assert!(listed[1].user_agent.starts_with("laptop-browser/2.0"));
    assert!(listed[0].user_agent.chars().count() <= 256);
    assert!(listed[0].user_agent.starts_with(&"x".repeat(200)));
    assert!(
        listed[3].user_agent.contains("tonic"),
        "{}",
        listed[3].user_agent
    );
    let created: Vec<i64> = listed
        .iter()
        .map(|s| s.created_at.unwrap().seconds)
        .collect();
    assert_eq!(created, [started + 4, started + 2, started + 1, started]);
    for session in &listed {
        let created_at = session.created_at.unwrap().seconds;
        assert_eq!(session.last_used_at.unwrap().seconds, created_at);
        assert_eq!(session.expires_at.unwrap().seconds, created_at + 30 * 86400);
    }
    // A Refresh moves last use and expiry on, and `current` follows the caller's token.
    clock.advance(Duration::from_secs(10));
    let refreshed = app
        .refresh(&sessions[0].refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let listed = app.list_sessions(&refreshed.access_token).await.unwrap();
    let oldest = listed.last().unwrap();
    assert_eq!(oldest.session_id, sessions[0].session_id);
    assert!(oldest.current);
    assert_eq!(listed.iter().filter(|s| s.current).count(), 1);
    assert_eq!(oldest.last_used_at.unwrap().seconds, started + 14);
    assert_eq!(
        oldest.expires_at.unwrap().seconds,
        started + 14 + 30 * 86400
    );
    assert_eq!(oldest.created_at.unwrap().seconds, started);
}

async fn revoke_session_ends_an_own_session(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let second = app.new_session(&email).await;
    app.revoke_session(&first.access_token, &second.session_id)
        .await
        .unwrap();
    assert_revoked(&app, &second.access_token).await;
    assert_refresh_invalid(&app, &second.refresh_token).await;
    let listed = app.list_sessions(&first.access_token).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [first.session_id.as_str()]);
    // Again: still OK.
    app.revoke_session(&first.access_token, &second.session_id)
        .await
        .expect("revoking an own ended session again is OK");
    let first = assert_session_works(&app, &first).await;
    // The caller's own current session.
    app.revoke_session(&first.access_token, &first.session_id)
        .await
        .unwrap();
    assert_revoked(&app, &first.access_token).await;
    assert_refresh_invalid(&app, &first.refresh_token).await;
}

async fn revoke_session_of_another_users_or_an_unknown_session_is_the_same_not_found(
    backend: Backend,
) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, mine) = app.new_session_user().await;
    let (_, _, theirs) = app.new_session_user().await;
    let others = app
        .revoke_session(&mine.access_token, &theirs.session_id)
        .await
        .unwrap_err();
    let unknown = app
        .revoke_session(&mine.access_token, &Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    for status in [&others, &unknown] {
        assert_status(status, Code::NotFound, Some("SESSION_NOT_FOUND"));
    }
    assert_eq!(others.message(), unknown.message(), "no oracle");
    assert_eq!(others.details(), unknown.details(), "no oracle");
    assert_session_works(&app, &theirs).await;
    for malformed in ["", "not-a-uuid", "12345"] {
        let status = app
            .revoke_session(&mine.access_token, malformed)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), ["session_id"]);
    }
    assert_session_works(&app, &mine).await;
}

/// The token-taking RPCs beside Verify.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    LogoutAll,
    ChangePassword,
    ListSessions,
    RevokeSession,
    DeleteAccount,
}

const RPCS: [Rpc; 5] = [
    Rpc::LogoutAll,
    Rpc::ChangePassword,
    Rpc::ListSessions,
    Rpc::RevokeSession,
    Rpc::DeleteAccount,
];

/// A request with `field` in the message's `access_token` and, if given, `bearer` as
/// `authorization: Bearer` metadata.
fn request<T>(message: T, bearer: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = bearer {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Calls `rpc` with otherwise valid arguments (`session_id` names a session to revoke).
async fn call(
    app: &TestApp,
    rpc: Rpc,
    field: &str,
    bearer: Option<&str>,
    session_id: &str,
) -> Result<(), Status> {
    let mut client = app.client.clone();
    let access_token = field.to_owned();
    match rpc {
        Rpc::LogoutAll => client
            .logout_all(request(pb::LogoutAllRequest { access_token }, bearer))
            .await
            .map(drop),
        Rpc::ChangePassword => client
            .change_password(request(
                pb::ChangePasswordRequest {
                    access_token,
                    current_password: PASSWORD.into(),
                    new_password: "an entirely different passphrase 42".into(),
                },
                bearer,
            ))
            .await
            .map(drop),
        Rpc::ListSessions => client
            .list_sessions(request(pb::ListSessionsRequest { access_token }, bearer))
            .await
            .map(drop),
        Rpc::RevokeSession => client
            .revoke_session(request(
                pb::RevokeSessionRequest {
                    access_token,
                    session_id: session_id.into(),
                },
                bearer,
            ))
            .await
            .map(drop),
        Rpc::DeleteAccount => client
            .delete_account(request(
                pb::DeleteAccountRequest {
                    access_token,
                    password: PASSWORD.into(),
                },
                bearer,
            ))
            .await
            .map(drop),
    }
}

async fn every_token_taking_rpc_checks_the_access_token_like_verify(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let forger = Forger::for_state(&state);
    let (_, user_id, victim) = app.new_session_user().await;
    let revoked = app.new_session_user().await.2;
    app.logout(&revoked.access_token).await.unwrap();
    let expired = forger.sign(&forger.header(), &Forger::claims(&user_id, 1000, 900));
    let forged = tampered(&victim.access_token);
    // (case, message field, bearer metadata, expected reason)
    let cases: [(&str, &str, Option<&str>, &str); 7] = [
        ("missing", "", None, "TOKEN_MISSING"),
        ("forged", &forged, None, "TOKEN_INVALID"),
        ("forged bearer", "", Some(&forged), "TOKEN_INVALID"),
        ("garbage", "not.a.jwt", None, "TOKEN_INVALID"),
        ("expired", &expired, None, "TOKEN_EXPIRED"),
        ("revoked", &revoked.access_token, None, "TOKEN_REVOKED"),
        (
            "revoked bearer",
            "",
            Some(&revoked.access_token),
            "TOKEN_REVOKED",
        ),
    ];
    for (case, field, bearer, expected) in cases {
        let verify = app
            .client
            .clone()
            .verify(request(
                pb::VerifyRequest {
                    access_token: field.into(),
                },
                bearer,
            ))
            .await
            .unwrap_err();
        assert_status(&verify, Code::Unauthenticated, Some(expected));
        for rpc in RPCS {
            let status = call(&app, rpc, field, bearer, &victim.session_id)
                .await
                .expect_err(&format!("{rpc:?} with a {case} token"));
            assert_eq!(
                (status.code(), reason(&status), status.message()),
                (verify.code(), reason(&verify), verify.message()),
                "{rpc:?} with a {case} token answers like Verify"
            );
        }
    }
    // Nothing above touched the victim.
    assert_session_works(&app, &victim).await;
    // Every RPC takes a good token from `authorization: Bearer` metadata.
    for rpc in RPCS {
        let (_, _, tokens) = app.new_session_user().await;
        call(
            &app,
            rpc,
            "",
            Some(&tokens.access_token),
            &tokens.session_id,
        )
        .await
        .unwrap_or_else(|status| panic!("{rpc:?} with a bearer token: {status:?}"));
        match rpc {
            Rpc::ListSessions => app.verify(&tokens.access_token).await.map(drop).unwrap(),
            _ => assert_revoked(&app, &tokens.access_token).await,
        }
    }
}

/// Asserts that `b` refuses `token` as revoked (at once when `strict`, else within 2 s).
async fn assert_revoked_on(b: &TestApp, token: &str, strict: bool) {
    if !strict {
        let seen = eventually(Duration::from_secs(2), || async {
            matches!(b.verify(token).await, Err(s) if s.code() == Code::Unauthenticated)
        })
        .await;
        assert!(seen, "the cached mirror learns the revocation");
    }
    assert_revoked(b, token).await;
}

/// Two instances on one state; LogoutAll and DeleteAccount on A are seen on B.
async fn logout_all_on_a_reaches_b(state: &TestState, a: &TestApp, b: &TestApp, strict: bool) {
    let forger = Forger::for_state(state);
    let (email, user_id, on_a) = a.new_session_user().await;
    let on_b = b.new_session(&email).await;
    let on_b = b
        .refresh(&on_b.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    // Refused by the user's cut-off alone.
    let legacy = legacy_token(&forger, &user_id, unix_now() - 10);
    b.verify(&on_a.access_token).await.unwrap();
    b.verify(&legacy).await.unwrap();
    let (_, _, stranger) = b.new_session_user().await;
    assert_eq!(
        a.logout_all(&on_a.access_token)
            .await
            .unwrap()
            .sessions_ended,
        2
    );
    for token in [&on_a.access_token, &on_b.access_token, &legacy] {
        assert_revoked_on(b, token, strict).await;
    }
    assert_refresh_invalid(b, &on_b.refresh_token).await;
    assert_session_works(b, &stranger).await;
    // A Login on B right after works there and on A.
    let fresh = b.new_session(&email).await;
    a.verify(&fresh.access_token).await.unwrap();
    assert_session_works(b, &fresh).await;

    // DeleteAccount on A: every token of the user, on B too.
    let (_, _, doomed) = a.new_session_user().await;
    let doomed_on_b = b
        .refresh(&doomed.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    b.verify(&doomed_on_b.access_token).await.unwrap();
    a.delete_account(&doomed.access_token, PASSWORD)
        .await
        .unwrap();
    for token in [&doomed.access_token, &doomed_on_b.access_token] {
        assert_revoked_on(b, token, strict).await;
    }
    assert_refresh_invalid(b, &doomed_on_b.refresh_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_on_one_instance_revokes_on_another_in_strict_mode() {
    let state = TestState::new(Backend::Postgres).await;
    let a = state.app().start().await;
    let b = state.app().start().await;
    logout_all_on_a_reaches_b(&state, &a, &b, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_on_one_instance_reaches_the_mirror_of_another_in_cached_mode() {
    let state = TestState::new(Backend::Postgres).await;
    fn cached(state: &TestState) -> crate::common::AppBuilder<'_> {
        state
            .app()
            .redis_url(Some(&redis_url()))
            .arg("--revocation-mode=cached")
    }
    let a = cached(&state).start().await;
    let b = cached(&state).start().await;
    logout_all_on_a_reaches_b(&state, &a, &b, false).await;
    // A session ended on A (by its id: another access token of it, issued by a Refresh on B).
    let (_, _, first) = a.new_session_user().await;
    let refreshed = b
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    b.verify(&refreshed.access_token).await.unwrap();
    a.logout(&first.access_token).await.unwrap();
    let seen = eventually(Duration::from_secs(2), || async {
        b.verify(&refreshed.access_token).await.is_err()
    })
    .await;
    assert!(seen, "the session's revocation reaches the mirror of B");
    assert_revoked(&b, &refreshed.access_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mirror_loads_session_revocations_and_cut_offs_made_before_it_started() {
    let state = TestState::new(Backend::Postgres).await;
    let strict = state.app().start().await;
    let forger = Forger::for_state(&state);
    let (email, user_id, everywhere) = strict.new_session_user().await;
    let other = strict.new_session(&email).await;
    let legacy = legacy_token(&forger, &user_id, unix_now() - 10);
    strict.logout_all(&everywhere.access_token).await.unwrap();
    let (_, _, ended) = strict.new_session_user().await;
    let refreshed = strict
        .refresh(&ended.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    strict.logout(&ended.access_token).await.unwrap();
    let (_, _, kept) = strict.new_session_user().await;

    let cached = state.app().arg("--revocation-mode=cached").start().await;
    // At once: the mirror is loaded before the instance serves.
    for token in [
        &everywhere.access_token,
        &other.access_token,
        &legacy,
        &refreshed.access_token,
    ] {
        assert_revoked(&cached, token).await;
    }
    cached.verify(&kept.access_token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_two_instances_share_session_revocations_through_postgres() {
    let state = TestState::new(Backend::Postgres).await;
    let a = state.app().redis_url(None).start().await;
    let b = state.app().redis_url(None).start().await;
    logout_all_on_a_reaches_b(&state, &a, &b, true).await;
    // Logout of one session on A, by another access token of it issued on B.
    let (_, _, first) = a.new_session_user().await;
    let refreshed = b
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    a.logout(&first.access_token).await.unwrap();
    assert_revoked(&b, &refreshed.access_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_app_on_an_embedded_data_dir_in_use_refuses_to_start() {
    let state = TestState::new(Backend::Embedded).await;
    let first = state.app().start().await;
    let (email, user_id, _) = first.new_session_user().await;
    let error = match state.app().try_start().await {
        Ok(_) => panic!("a second app started on a data directory in use"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("another authd process is using the embedded database"),
        "{error}"
    );
    // Naming the same file another way changes nothing: a symlink, a hard link, a directory
    // whose name looks like an in-memory database URL.
    let db = state.data_dir.path().join("authd.db");
    let symlink = state.data_dir.path().join("alias.db");
    std::os::unix::fs::symlink(&db, &symlink).unwrap();
    let hard_link = state.data_dir.path().join("hard.db");
    std::fs::hard_link(&db, &hard_link).unwrap();
    for other in [&symlink, &hard_link] {
        let url = format!("sqlite://{}", other.display());
        let error = match state.app().database_url(Some(&url)).try_start().await {
            Ok(_) => panic!("a second app started on {url}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains("another authd process"), "{url}: {error}");
    }
    // The first is unaffected, and once it stops a new one starts.
    first.new_session(&email).await;
    first.stop().await;
    let second = state.app().start().await;
    assert_eq!(
        second.login(&email, PASSWORD).await.unwrap().user_id,
        user_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_revocations_of_every_kind_survive_a_restart() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let forger = Forger::for_state(&state);
    // A session ended by Logout, a user logged out everywhere, a legacy token revoked by jti.
    let (email, user_id, ended) = app.new_session_user().await;
    let kept = app.new_session(&email).await;
    app.logout(&ended.access_token).await.unwrap();
    let (_, everywhere_user, everywhere) = app.new_session_user().await;
    let cut_off = legacy_token(&forger, &everywhere_user, unix_now() - 10);
    app.logout_all(&everywhere.access_token).await.unwrap();
    let legacy = forger.sign(&forger.header(), &Forger::claims(&user_id, 10, 900));
    app.logout(&legacy).await.unwrap();
    let (_, _, spent) = app.new_session_user().await;
    app.refresh(&spent.refresh_token).await.unwrap();
    app.stop().await;

    let app = state.app().start().await;
    for token in [
        &ended.access_token,
        &everywhere.access_token,
        &legacy,
        &cut_off,
    ] {
        assert_revoked(&app, token).await;
    }
    assert_refresh_invalid(&app, &ended.refresh_token).await;
    assert_refresh_invalid(&app, &everywhere.refresh_token).await;
    // A spent refresh token is still recognised as reuse.
    let status = app.refresh(&spent.refresh_token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("REFRESH_TOKEN_REUSED"));
    assert_revoked(&app, &spent.access_token).await;
    assert_session_works(&app, &kept).await;
}

async fn list_sessions_records_the_source_the_throttle_sees_behind_a_trusted_proxy(
    backend: Backend,
) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--trusted-proxies=127.0.0.1/32")
        .start()
        .await;
    let (email, _, direct) = app.new_session_user().await;
    let mut login = Request::new(pb::LoginRequest {
        email: email.clone(),
        password: PASSWORD.into(),
    });
    login
        .metadata_mut()
        .insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    let proxied = app.client.clone().login(login).await.unwrap().into_inner();
    let proxied = proxied.tokens.unwrap();
    let listed = app.list_sessions(&direct.access_token).await.unwrap();
    let source_of = |id: &str| {
        listed
            .iter()
            .find(|s| s.session_id == id)
            .map(|s| s.source_address.clone())
            .unwrap()
    };
    assert_eq!(source_of(&proxied.session_id), "203.0.113.7");
    assert_eq!(source_of(&direct.session_id), "127.0.0.1");
}

/// When the back end forgets (Unix seconds) the revocation of `session_id` and the cut-off of
/// `user_id`.
async fn revocation_expiries(state: &TestState, user_id: &str, session_id: &str) -> (i64, i64) {
    match state.backend {
        Backend::Postgres => {
            let client = redis::Client::open(redis_url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let keys = format!("{}{{u:{user_id}}}:", state.redis_prefix);
            let mut expiries = Vec::new();
            for key in [format!("{keys}sid:{session_id}"), format!("{keys}cutoff")] {
                let expiry: i64 = redis::cmd("EXPIRETIME")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                expiries.push(expiry);
            }
            let (session, cut_off) = (expiries[0], expiries[1]);
            (session, cut_off)
        }
        Backend::Embedded => {
            let pool = sqlx::SqlitePool::connect(&state.embedded_database_url())
                .await
                .unwrap();
            let session =
                sqlx::query_scalar("SELECT expires_at FROM revoked_sessions WHERE session_id = ?1")
                    .bind(session_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let cut_off =
                sqlx::query_scalar("SELECT expires_at FROM user_cutoffs WHERE user_id = ?1")
                    .bind(user_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (session, cut_off)
        }
    }
}

async fn session_revocations_and_cut_offs_expire_with_the_last_token_they_refuse(backend: Backend) {
    let now = unix_now();
    let clock = Arc::new(ManualClock::at(now));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (_, user_id, tokens) = app.new_session_user().await;
    app.logout_all(&tokens.access_token).await.unwrap();
    let (session, cut_off) = revocation_expiries(&state, &user_id, &tokens.session_id).await;
    // The last token refused was issued at most now, lives 900 s, and is accepted 5 s longer.
    for (what, expiry) in [("session", session), ("cut-off", cut_off)] {
        assert!(
            (now + 905..=now + 910).contains(&expiry),
            "{what} revocation kept until {expiry}, now {now}"
        );
    }
}
