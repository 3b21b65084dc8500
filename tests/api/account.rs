//! ChangePassword and DeleteAccount: the password checked like Login (same answer, same
//! throttle), every session of the user ended, and what is left afterwards.

use std::{sync::Arc, time::Duration};

use authd::{clock::ManualClock, pb};
use tonic::Code;

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, PASSWORD, TestApp, TestState, assert_status, spawn_app, unix_now,
        violated_fields,
    },
};

backend_tests!(
    change_password_with_a_wrong_current_password_is_refused_like_login,
    change_password_failures_count_towards_the_login_throttle,
    change_password_checks_the_new_password_like_register,
    change_password_ends_every_session_and_starts_a_new_one,
    delete_account_with_a_wrong_password_is_refused_like_login_and_throttled,
    delete_account_ends_every_token_and_frees_the_email,
    of_two_concurrent_password_changes_one_wins_and_its_new_session_works,
);

const NEW_PASSWORD: &str = "an entirely different passphrase 42";

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

async fn assert_session_works(app: &TestApp, tokens: &pb::AuthTokens) {
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
}

async fn change_password_with_a_wrong_current_password_is_refused_like_login(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, tokens) = app.new_session_user().await;
    let login = app.login(&email, "wrong password!").await.unwrap_err();
    let change = app
        .change_password(&tokens.access_token, "wrong password!", NEW_PASSWORD)
        .await
        .unwrap_err();
    assert_status(&change, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    assert_eq!(
        change.message(),
        login.message(),
        "the same answer as Login"
    );
    // Nothing changed.
    assert_session_works(&app, &tokens).await;
    app.login(&email, PASSWORD)
        .await
        .expect("the password is unchanged");
}

async fn change_password_failures_count_towards_the_login_throttle(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args([
            "--login-failures-before-backoff=3",
            "--login-backoff-base=10s",
        ])
        .start()
        .await;
    let (email, _, tokens) = app.new_session_user().await;
    app.login(&email, "wrong password!").await.unwrap_err();
    for _ in 0..2 {
        let status = app
            .change_password(&tokens.access_token, "wrong password!", NEW_PASSWORD)
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    // Three failures, one by Login and two by ChangePassword: the account backs off.
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    let status = app
        .change_password(&tokens.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    app.verify(&tokens.access_token).await.unwrap();
}

async fn change_password_checks_the_new_password_like_register(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, tokens) = app.new_session_user().await;
    let local_part = email.split('@').next().unwrap().to_owned();
    for weak in ["short", "password123", local_part.as_str(), ""] {
        let status = app
            .change_password(&tokens.access_token, PASSWORD, weak)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{weak:?}: {status:?}");
        assert_eq!(
            violated_fields(&status),
            ["new_password"],
            "{weak:?}: {status:?}"
        );
    }
    // Register says the same of the same password.
    let register = app
        .register("someone-else@example.com", "password123")
        .await
        .unwrap_err();
    let change = app
        .change_password(&tokens.access_token, PASSWORD, "password123")
        .await
        .unwrap_err();
    let descriptions = |status: &tonic::Status| {
        use tonic_types::StatusExt as _;
        status
            .get_error_details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| v.description.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(descriptions(&change), descriptions(&register));
    // Nothing changed.
    assert_session_works(&app, &tokens).await;
    app.login(&email, PASSWORD)
        .await
        .expect("the password is unchanged");
}

async fn change_password_ends_every_session_and_starts_a_new_one(backend: Backend) {
    // All in one second: sessions that existed before end, those after it do not.
    let clock = Arc::new(ManualClock::at(unix_now()));
    clock.advance(Duration::from_millis(200));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (email, user_id, first) = app.new_session_user().await;
    let second = app.new_session(&email).await;
    let refreshed = app
        .refresh(&second.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let (_, _, stranger) = app.new_session_user().await;

    let changed = app
        .change_password(&first.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    assert_eq!(changed.user_id, user_id);
    let fresh = changed.tokens.unwrap();
    assert!(![&first.session_id, &second.session_id].contains(&&fresh.session_id));
    assert_eq!(fresh.refresh_token.len(), 64);
    assert_eq!(
        app.verify(&fresh.access_token).await.unwrap().session_id,
        fresh.session_id
    );
    // Every earlier session, the caller's included.
    for access_token in [
        &first.access_token,
        &second.access_token,
        &refreshed.access_token,
    ] {
        assert_revoked(&app, access_token).await;
    }
    assert_refresh_invalid(&app, &first.refresh_token).await;
    assert_refresh_invalid(&app, &refreshed.refresh_token).await;
    // The old password no longer logs in; the new one does.
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    let login = app
        .login(&email, NEW_PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_session_works(&app, &login).await;
    assert_session_works(&app, &fresh).await;
    let listed = app.list_sessions(&login.access_token).await.unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = [fresh.session_id.as_str(), login.session_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_session_works(&app, &stranger).await;
}

async fn delete_account_with_a_wrong_password_is_refused_like_login_and_throttled(
    backend: Backend,
) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args([
            "--login-failures-before-backoff=3",
            "--login-backoff-base=10s",
        ])
        .start()
        .await;
    let (email, _, tokens) = app.new_session_user().await;
    let login = app.login(&email, "wrong password!").await.unwrap_err();
    for _ in 0..2 {
        let status = app
            .delete_account(&tokens.access_token, "wrong password!")
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
        assert_eq!(status.message(), login.message());
    }
    let status = app
        .delete_account(&tokens.access_token, PASSWORD)
        .await
        .unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
    // The account is intact.
    assert_session_works(&app, &tokens).await;
}

async fn delete_account_ends_every_token_and_frees_the_email(backend: Backend) {
    let clock = Arc::new(ManualClock::at(unix_now()));
    clock.advance(Duration::from_millis(200));
    let state = TestState::new(backend).await;
    let app = state.app().clock(clock.clone()).start().await;
    let (email, user_id, first) = app.new_session_user().await;
    let second = app.new_session(&email).await;
    let refreshed = app
        .refresh(&second.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let (_, _, stranger) = app.new_session_user().await;

    app.delete_account(&first.access_token, PASSWORD)
        .await
        .unwrap();
    for access_token in [
        &first.access_token,
        &second.access_token,
        &refreshed.access_token,
    ] {
        assert_revoked(&app, access_token).await;
    }
    assert_refresh_invalid(&app, &first.refresh_token).await;
    assert_refresh_invalid(&app, &refreshed.refresh_token).await;
    let status = app.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));

    // The email registers again, as a new user, in the same second.
    let again = app.register(&email, PASSWORD).await.unwrap();
    assert_ne!(again.user_id, user_id, "a new user id");
    let tokens = again.tokens.unwrap();
    assert_session_works(&app, &tokens).await;
    assert_eq!(
        app.login(&email, PASSWORD).await.unwrap().user_id,
        again.user_id
    );
    // The old tokens stay refused.
    assert_revoked(&app, &first.access_token).await;
    clock.advance(Duration::from_secs(5));
    assert_revoked(&app, &refreshed.access_token).await;
    assert_session_works(&app, &stranger).await;
}

async fn of_two_concurrent_password_changes_one_wins_and_its_new_session_works(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, tokens) = app.new_session_user().await;
    let passwords = [
        "first new passphrase of many words",
        "second new passphrase of many words",
    ];
    let calls: Vec<_> = passwords
        .iter()
        .map(|new| {
            let mut client = app.client.clone();
            let request = pb::ChangePasswordRequest {
                access_token: tokens.access_token.clone(),
                current_password: PASSWORD.into(),
                new_password: (*new).into(),
            };
            tokio::spawn(async move { client.change_password(request).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().map(|r| r.into_inner()));
    }
    let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one change wins: {results:?}");
    let winner = winners[0];
    let loser = results[1 - winner].as_ref().unwrap_err();
    assert_eq!(loser.code(), Code::Unauthenticated, "{loser:?}");
    // The winner's fresh session is not ended by the losing call.
    let fresh = results[winner].as_ref().unwrap().tokens.clone().unwrap();
    assert_session_works(&app, &fresh).await;
    app.login(&email, passwords[winner])
        .await
        .expect("the winning password logs in");
    for password in [PASSWORD, passwords[1 - winner]] {
        let status = app.login(&email, password).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
}
