//! Logout: revocation shared by Verify, lasting exactly the token's remaining life, idempotent.

use tonic::{Code, Request};

use authd::pb;

use crate::{
    backend_tests,
    common::{Backend, Fixture, Forger, TestState, assert_status, redis_url, spawn_app, unix_now},
};

backend_tests!(
    logout_revokes_the_token_and_only_that_token,
    logout_reads_the_bearer_token_from_metadata,
    revocation_lives_until_the_token_expiry_plus_leeway,
    logout_is_idempotent_for_revoked_and_expired_tokens,
    logout_without_a_token_or_with_a_forged_one_is_unauthenticated,
);

async fn logout_revokes_the_token_and_only_that_token(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, token) = app.new_user().await;
    let second = app
        .login(&email, crate::common::PASSWORD)
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    app.verify(&token).await.unwrap();
    app.logout(&token).await.unwrap();
    let status = app.verify(&token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_REVOKED"));
    app.verify(&second)
        .await
        .expect("another token of the same user stays valid");
}

async fn logout_reads_the_bearer_token_from_metadata(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let mut request = Request::new(pb::LogoutRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    app.client.clone().logout(request).await.unwrap();
    let status = app.verify(&token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}

async fn revocation_lives_until_the_token_expiry_plus_leeway(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let verified = app.verify(&token).await.unwrap();
    let expires_at = verified.expires_at.unwrap().seconds;
    app.logout(&token).await.unwrap();
    let stored_until = revocation_expiry(&state, &verified.jti).await;
    // exp + 5 s leeway (Redis: the key expires one second after the last accepted second).
    let expected = expires_at + 5;
    assert!(
        (expected..=expected + 1).contains(&stored_until),
        "revocation until {stored_until}, token accepted until {expected}"
    );
    assert!(stored_until - unix_now() <= 906);
    if backend == Backend::Postgres {
        // The cached-mode index expires with its longest entry instead of living forever: here
        // the session's revocation, which outlives the jti's by a second or two (it covers an
        // access token issued by a Refresh racing the Logout).
        let client = redis::Client::open(redis_url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let index = format!("{}revoked-index", state.redis_prefix);
        let index_expiry: i64 = redis::cmd("EXPIRETIME")
            .arg(&index)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            (stored_until..=stored_until + 2).contains(&index_expiry),
            "index expires at {index_expiry}, the jti's revocation at {stored_until}"
        );
    }
}

async fn logout_is_idempotent_for_revoked_and_expired_tokens(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, token) = app.new_user().await;
    app.logout(&token).await.unwrap();
    app.logout(&token).await.expect("second logout is OK");
    let forger = Forger::for_state(&state);
    let expired = forger.sign(&forger.header(), &Forger::claims(&user_id, 1000, 900));
    app.logout(&expired)
        .await
        .expect("logout of an expired token is OK");
}

async fn logout_without_a_token_or_with_a_forged_one_is_unauthenticated(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let status = app.logout("").await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_MISSING"));
    let (_, _, token) = app.new_user().await;
    let forged = format!("{}x", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}y", &token[..token.len() - 1])
    } else {
        forged
    };
    let status = app.logout(&forged).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    app.verify(&token)
        .await
        .expect("a forged logout revokes nothing");
}

/// When the back end will forget the revocation of `jti` (Unix seconds).
async fn revocation_expiry(state: &TestState, jti: &str) -> i64 {
    match state.backend {
        Backend::Postgres => {
            let client = redis::Client::open(redis_url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let key = format!("{}revoked:{jti}", state.redis_prefix);
            redis::cmd("EXPIRETIME")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap()
        }
        Backend::Embedded => {
            let url = format!(
                "sqlite://{}",
                state.data_dir.path().join("authd.db").display()
            );
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT expires_at FROM revoked_tokens WHERE jti = ?1")
                .bind(jti)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}
