//! Email identity: NFKC, Unicode case folding of the local part and IDNA for the domain, so that
//! one mailbox is one account however it is typed; and the one-time re-normalisation of emails an
//! older authd stored, which reports accounts that now collide without deleting anything.

use tonic::Code;

use crate::{
    backend_tests,
    common::{Backend, Fixture, PASSWORD, TestState, assert_status, spawn_app},
};

backend_tests!(
    full_width_and_ascii_spellings_are_one_account,
    unicode_and_punycode_domains_are_one_account,
);

async fn full_width_and_ascii_spellings_are_one_account(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let registered = app.register("ａｄａ@example.com", PASSWORD).await.unwrap();
    let status = app.register("ada@example.com", PASSWORD).await.unwrap_err();
    assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN"));
    for spelling in [
        "ada@example.com",
        "ADA@Example.com",
        "ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ",
    ] {
        let login = app.login(spelling, PASSWORD).await.unwrap();
        assert_eq!(login.user_id, registered.user_id, "{spelling}");
    }
}

async fn unicode_and_punycode_domains_are_one_account(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let registered = app.register("user@bücher.de", PASSWORD).await.unwrap();
    let status = app
        .register("user@xn--bcher-kva.de", PASSWORD)
        .await
        .unwrap_err();
    assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN"));
    let login = app.login("USER@BÜCHER.DE", PASSWORD).await.unwrap();
    assert_eq!(login.user_id, registered.user_id);
}

/// Runs `statements` on the embedded database of `state`.
async fn on_embedded_database(state: &TestState, statements: &[&str]) {
    let url = format!(
        "sqlite://{}",
        state.data_dir.path().join("authd.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_stored_by_an_older_authd_are_renormalised_once_and_collisions_kept() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let idn = app.register("user@bücher.de", PASSWORD).await.unwrap();
    let ascii = app.register("ada@example.com", PASSWORD).await.unwrap();
    app.stop().await;
    // What an older authd stored: only trimmed and lowercased; and a full-width twin of an
    // existing account, which it took for another email.
    on_embedded_database(
        &state,
        &[
            "UPDATE users SET email_normalized = 'user@bücher.de' WHERE email = 'user@bücher.de'",
            "INSERT INTO users (id, email, email_normalized, username, password_hash) \
             SELECT '00000000-0000-4000-8000-000000000001', 'ａｄａ@example.com', \
                    'ａｄａ@example.com', NULL, password_hash FROM users \
             WHERE email = 'ada@example.com'",
            "DELETE FROM maintenance",
        ],
    )
    .await;
    let app = state.app().start().await;
    // Re-normalised: the IDN account is found under its IDNA form.
    let login = app.login("user@xn--bcher-kva.de", PASSWORD).await.unwrap();
    assert_eq!(login.user_id, idn.user_id);
    // The collision is kept, not merged: the ASCII account signs in as before, and the twin row
    // is still there for an operator to resolve.
    let login = app.login("ada@example.com", PASSWORD).await.unwrap();
    assert_eq!(login.user_id, ascii.user_id);
    app.stop().await;
    let url = format!(
        "sqlite://{}",
        state.data_dir.path().join("authd.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let twins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE id = '00000000-0000-4000-8000-000000000001'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twins, 1, "nothing is deleted");
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM maintenance")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "the re-normalisation runs once");
}
