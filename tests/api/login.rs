//! Login: case-insensitive email, new tokens, and no enumeration of accounts.

use tonic::Code;

use crate::{
    backend_tests,
    common::{Backend, Fixture, PASSWORD, assert_status, spawn_app, violated_fields},
};

backend_tests!(
    login_with_the_right_password_returns_the_user_and_a_new_token,
    login_email_is_case_insensitive_and_trimmed,
    login_with_unknown_email_and_wrong_password_look_the_same,
    login_with_empty_fields_is_invalid_argument,
);

async fn login_with_the_right_password_returns_the_user_and_a_new_token(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, user_id, first_token) = app.new_user().await;
    let response = app.login(&email, crate::common::PASSWORD).await.unwrap();
    assert_eq!(response.user_id, user_id);
    let token = response.tokens.unwrap().access_token;
    assert_ne!(token, first_token);
    let verified = app.verify(&token).await.unwrap();
    assert_eq!(verified.user_id, user_id);
}

async fn login_email_is_case_insensitive_and_trimmed(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let registered = app
        .register("Mixed.Case@Example.org", PASSWORD)
        .await
        .unwrap();
    for email in [
        "mixed.case@example.org",
        "MIXED.CASE@EXAMPLE.ORG",
        " Mixed.Case@Example.org ",
    ] {
        let response = app.login(email, PASSWORD).await.unwrap();
        assert_eq!(response.user_id, registered.user_id);
    }
}

async fn login_with_unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, _) = app.new_user().await;
    let wrong_password = app.login(&email, "not the password").await.unwrap_err();
    let unknown_email = app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    for status in [&wrong_password, &unknown_email] {
        assert_status(status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
    }
    assert_eq!(wrong_password.message(), unknown_email.message());
    assert_eq!(wrong_password.details(), unknown_email.details());
}

async fn login_with_empty_fields_is_invalid_argument(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let status = app.login("", "").await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
    assert_eq!(violated_fields(&status), ["email", "password"]);
    let status = app.login("someone@example.com", "").await.unwrap_err();
    assert_eq!(violated_fields(&status), ["password"]);
    let status = app.login("", PASSWORD).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["email"]);
}
