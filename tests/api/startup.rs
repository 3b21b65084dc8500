//! Start-up: what is created on a fresh machine, and what refuses to start.

use crate::common::{Backend, TestState};

#[tokio::test]
async fn first_start_generates_a_private_signing_key_and_the_database() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let key = state.signing_key_path();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "signing key mode {mode:o}");
    assert!(state.data_dir.path().join("authd.db").exists());
    let (_, _, token) = app.new_user().await;
    app.stop().await;
    // A restart reuses the key: old tokens stay valid.
    let app = state.app().start().await;
    app.verify(&token).await.unwrap();
}

#[tokio::test]
async fn unreachable_database_or_redis_stops_start_up_naming_the_setting() {
    let state = TestState::new(Backend::Embedded).await;
    // Port 1 on loopback: nothing listens there.
    let error = state
        .app()
        .database_url(Some("postgres://postgres@127.0.0.1:1/none"))
        .try_start()
        .await
        .err()
        .expect("start-up must fail");
    assert!(
        format!("{error:#}").contains("AUTHD_DATABASE_URL"),
        "{error:#}"
    );
    let error = state
        .app()
        .redis_url(Some("redis://127.0.0.1:1"))
        .try_start()
        .await
        .err()
        .expect("start-up must fail");
    assert!(
        format!("{error:#}").contains("AUTHD_REDIS_URL"),
        "{error:#}"
    );
}

#[tokio::test]
async fn bad_settings_stop_start_up_naming_the_setting() {
    let state = TestState::new(Backend::Embedded).await;
    let cases: [(&[&str], &str); 4] = [
        (
            &["--jwt-alg=HS256", "--jwt-secret=short"],
            "AUTHD_JWT_SECRET",
        ),
        (&["--access-token-ttl=soon"], "AUTHD_ACCESS_TOKEN_TTL"),
        (
            &["--database-url=mysql://root@localhost/test"],
            "AUTHD_DATABASE_URL",
        ),
        (
            &["--signing-key-file=/proc/version"],
            "AUTHD_SIGNING_KEY_FILE",
        ),
    ];
    for (extra, setting) in cases {
        let error = state
            .app()
            .args(extra.iter().copied())
            .try_start()
            .await
            .err()
            .expect("start-up must fail");
        assert!(
            format!("{error:#}").contains(setting),
            "{extra:?}: {error:#}"
        );
    }
}

#[tokio::test]
async fn hs256_tokens_work_end_to_end() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args([
            "--jwt-alg=HS256",
            "--jwt-secret=q8Zr2LkW9vXc4TnB7yHd1MfJ6sPa3GeU",
        ])
        .start()
        .await;
    let (_, user_id, token) = app.new_user().await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    assert_eq!(app.verify(&token).await.unwrap().user_id, user_id);
}

#[tokio::test]
async fn a_configured_signing_key_file_that_does_not_exist_stops_start_up_and_is_not_created() {
    let state = TestState::new(Backend::Embedded).await;
    let missing = state
        .data_dir
        .path()
        .join("secrets")
        .join("signing-key.pem");
    let error = state
        .app()
        .arg(format!("--signing-key-file={}", missing.display()))
        .try_start()
        .await
        .err()
        .expect("start-up must fail");
    let error = format!("{error:#}");
    assert!(error.contains("AUTHD_SIGNING_KEY_FILE"), "{error}");
    assert!(error.contains("does not exist"), "{error}");
    assert!(!missing.exists() && !missing.parent().unwrap().exists());
}
