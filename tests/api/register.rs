//! Register: ids, tokens, stored hashes, field validation, uniqueness under races.

use std::sync::Arc;

use authd::pb;
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, PASSWORD, TestApp, TestState, assert_status, spawn_app, violated_fields,
    },
};

backend_tests!(
    register_returns_a_uuid_user_id_and_a_bearer_token,
    register_stores_only_an_argon2id_phc_hash_with_owasp_parameters,
    malformed_emails_are_invalid_argument_naming_email,
    taken_email_is_already_exists_after_trimming_and_case_folding,
    password_length_is_8_to_128_characters_of_any_kind,
    empty_fields_are_invalid_argument_naming_each_field,
    usernames_with_invisible_format_characters_are_refused,
    a_source_may_register_only_so_many_times_per_window,
    a_taken_email_is_answered_before_any_hashing,
    common_or_personal_passwords_are_refused_with_the_reason,
    thirty_two_concurrent_registrations_of_one_email_have_exactly_one_winner,
    a_login_rehashes_a_password_stored_with_other_parameters,
    hashing_parameters_below_the_owasp_minimum_stop_start_up,
    a_change_password_racing_a_rehash_succeeds,
);

async fn register_returns_a_uuid_user_id_and_a_bearer_token(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let response = app
        .client
        .clone()
        .register(pb::RegisterRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
            username: "Ada Lovelace".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let user_id = Uuid::parse_str(&response.user_id).expect("user_id is a UUID");
    let tokens = response.tokens.expect("tokens");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    let verified = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(verified.user_id, user_id.to_string());
}

async fn register_stores_only_an_argon2id_phc_hash_with_owasp_parameters(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    app.register("Hash.Check@Example.com", PASSWORD)
        .await
        .unwrap();
    let stored = stored_password_hash(&state, "hash.check@example.com").await;
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));
}

async fn malformed_emails_are_invalid_argument_naming_email(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    for email in [
        "plainaddress",
        "@example.com",
        "user@",
        "two@@example.com",
        "spa ce@example.com",
        "ctrl\u{1}char@example.com",
        "line\nbreak@example.com",
        too_long.as_str(),
    ] {
        let status = app.register(email, PASSWORD).await.unwrap_err();
        assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
        assert_eq!(violated_fields(&status), ["email"], "{email:?}");
    }
}

async fn taken_email_is_already_exists_after_trimming_and_case_folding(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    app.register("grace@example.com", PASSWORD).await.unwrap();
    for again in [
        "grace@example.com",
        "  GRACE@Example.COM  ",
        "Grace@example.com",
    ] {
        let status = app.register(again, "another password").await.unwrap_err();
        assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN"));
    }
}

async fn password_length_is_8_to_128_characters_of_any_kind(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let random_128: String = (0..4)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect();
    let accepted = [
        "Zq8#mL2p".to_owned(),
        random_128,
        "with spaces in it".to_owned(),
        "пароль-пароль".to_owned(),
        "ключ🔑замок🔒дверь".to_owned(),
    ];
    for (i, password) in accepted.iter().enumerate() {
        let email = format!("ok{i}@example.com");
        app.register(&email, password)
            .await
            .unwrap_or_else(|s| panic!("{password:?}: {s:?}"));
        app.login(&email, password)
            .await
            .expect("login with the same password");
    }
    for (i, password) in ["1234567".to_owned(), "x".repeat(129), "🔑".repeat(7)]
        .iter()
        .enumerate()
    {
        let status = app
            .register(&format!("bad{i}@example.com"), password)
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
        assert_eq!(violated_fields(&status), ["password"]);
    }
}

async fn common_or_personal_passwords_are_refused_with_the_reason(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    for (email, password) in [
        ("someone@example.com", "password123"),
        ("someone@example.com", "qwertyuiop"),
        ("jane.doe@example.com", "jane.doe1985"),
    ] {
        let status = app.register(email, password).await.unwrap_err();
        assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
        assert_eq!(violated_fields(&status), ["password"]);
        assert!(status.message().contains("too weak"), "{status:?}");
    }
    // The same email with a strong password is fine: the refusal was for the password.
    app.register("jane.doe@example.com", PASSWORD)
        .await
        .unwrap();
}

async fn empty_fields_are_invalid_argument_naming_each_field(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let status = app.register("", "").await.unwrap_err();
    assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
    assert_eq!(violated_fields(&status), ["email", "password"]);
    let status = app.register("someone@example.com", "").await.unwrap_err();
    assert_eq!(violated_fields(&status), ["password"]);
}

async fn thirty_two_concurrent_registrations_of_one_email_have_exactly_one_winner(
    backend: Backend,
) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let app = Arc::new(app);
    let attempts: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            // Vary the case: uniqueness is on the normalised email.
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            tokio::spawn(async move { app.register(email, PASSWORD).await })
        })
        .collect();
    let mut ok = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN")),
        }
    }
    assert_eq!(ok, 1);
}

async fn a_login_rehashes_a_password_stored_with_other_parameters(backend: Backend) {
    let state = TestState::new(backend).await;
    let old = state.app().arg("--password-iterations=3").start().await;
    old.register("Rehash@Example.com", PASSWORD).await.unwrap();
    let stored = stored_password_hash(&state, "rehash@example.com").await;
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"),
        "{stored}"
    );
    old.stop().await;

    let app = state.app().start().await;
    // A wrong password changes nothing.
    app.login("rehash@example.com", "not the password")
        .await
        .unwrap_err();
    assert_eq!(
        stored_password_hash(&state, "rehash@example.com").await,
        stored
    );
    app.login("rehash@example.com", PASSWORD).await.unwrap();
    let rehashed = crate::common::eventually(std::time::Duration::from_secs(5), || async {
        stored_password_hash(&state, "rehash@example.com")
            .await
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    })
    .await;
    assert!(rehashed, "the hash still has the old parameters");
    // The rehashed password still signs in, and is not rehashed again.
    let now = stored_password_hash(&state, "rehash@example.com").await;
    app.login("rehash@example.com", PASSWORD).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        stored_password_hash(&state, "rehash@example.com").await,
        now
    );
}

/// An outside attack found that a ChangePassword right after a Login whose rehash won the
/// compare-and-set answered "invalid email or password" for the right password.
async fn a_change_password_racing_a_rehash_succeeds(backend: Backend) {
    let state = TestState::new(backend).await;
    let old = state.app().arg("--password-iterations=3").start().await;
    let emails: Vec<String> = (0..3).map(|i| format!("race{i}@example.com")).collect();
    for email in &emails {
        old.register(email, PASSWORD).await.unwrap();
    }
    old.stop().await;
    let app = state.app().start().await;
    for (i, email) in emails.iter().enumerate() {
        let login = app.login(email, PASSWORD).await.unwrap();
        // The rehash runs on its own task now; the change comes at once, or a moment later.
        tokio::time::sleep(std::time::Duration::from_millis(20 * i as u64)).await;
        let mut client = app.client.clone();
        let changed = client
            .change_password(authd::pb::ChangePasswordRequest {
                access_token: login.tokens.unwrap().access_token,
                current_password: PASSWORD.into(),
                new_password: "an entirely new passphrase".into(),
            })
            .await;
        assert!(changed.is_ok(), "{email}: {changed:?}");
        app.login(email, "an entirely new passphrase")
            .await
            .unwrap();
    }
}

async fn hashing_parameters_below_the_owasp_minimum_stop_start_up(backend: Backend) {
    let state = TestState::new(backend).await;
    for (args, variable) in [
        (["--password-iterations=1"], "AUTHD_PASSWORD_MEMORY_KIB"),
        (["--password-memory-kib=8192"], "AUTHD_PASSWORD_MEMORY_KIB"),
        (["--password-iterations=9"], "AUTHD_PASSWORD_ITERATIONS"),
        (["--password-parallelism=0"], "AUTHD_PASSWORD_PARALLELISM"),
    ] {
        let error = state
            .app()
            .args(args)
            .try_start()
            .await
            .err()
            .expect("refused");
        assert!(
            format!("{error:#}").contains(variable),
            "{args:?}: {error:#}"
        );
    }
    // An OWASP equivalent is accepted: m=12288 (12 MiB) with t=3.
    state
        .app()
        .args(["--password-memory-kib=12288", "--password-iterations=3"])
        .start()
        .await
        .stop()
        .await;
}

/// Reads `users.password_hash` straight from the back end.
async fn stored_password_hash(state: &TestState, email_normalized: &str) -> String {
    let query = "SELECT password_hash FROM users WHERE email_normalized = $1";
    match state.backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&state.database.as_ref().unwrap().url)
                .await
                .unwrap();
            sqlx::query_scalar(query)
                .bind(email_normalized)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        Backend::Embedded => {
            let url = format!(
                "sqlite://{}",
                state.data_dir.path().join("authd.db").display()
            );
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query_scalar(query)
                .bind(email_normalized)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

#[tokio::test]
async fn requests_over_64_kib_are_refused_before_decoding() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let huge = "a".repeat(70 * 1024);
    let status = app
        .register(&format!("{huge}@example.com"), PASSWORD)
        .await
        .unwrap_err();
    // Refused by the frame's length prefix, before prost sees it.
    assert_status(&status, Code::ResourceExhausted, Some("REQUEST_TOO_LARGE"));
    // A request just under the limit reaches validation and is refused there, as INVALID_ARGUMENT.
    let big = "a".repeat(60 * 1024);
    let status = app
        .register(&format!("{big}@example.com"), PASSWORD)
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
}

async fn usernames_with_invisible_format_characters_are_refused(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    for (i, username) in ["Ada\u{202E}nimda", "Ad\u{200B}a"].iter().enumerate() {
        let status = app
            .client
            .clone()
            .register(pb::RegisterRequest {
                email: format!("cf{i}@example.com"),
                password: PASSWORD.into(),
                username: (*username).into(),
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
        assert_eq!(violated_fields(&status), ["username"]);
    }
}

/// A registration sent through a trusted proxy (the test's own address) for client `client`.
async fn register_from(
    app: &TestApp,
    email: &str,
    client: &str,
) -> Result<pb::RegisterResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::RegisterRequest {
        email: email.into(),
        password: PASSWORD.into(),
        username: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    app.client
        .clone()
        .register(request)
        .await
        .map(|r| r.into_inner())
}

async fn a_source_may_register_only_so_many_times_per_window(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args([
            "--source-max-registrations=3",
            "--trusted-proxies=127.0.0.1",
        ])
        .start()
        .await;
    register_from(&app, "one@example.com", "198.51.100.7")
        .await
        .unwrap();
    register_from(&app, "two@example.com", "198.51.100.7")
        .await
        .unwrap();
    // Re-registering a taken email counts too (it is the cheap way to flood).
    let status = register_from(&app, "one@example.com", "198.51.100.7")
        .await
        .unwrap_err();
    assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN"));
    let status = register_from(&app, "three@example.com", "198.51.100.7")
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::ResourceExhausted,
        Some("REGISTRATION_THROTTLED"),
    );
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo");
    assert!(retry > std::time::Duration::from_secs(14 * 60), "{retry:?}");
    // Another client behind the same proxy registers as usual.
    register_from(&app, "three@example.com", "203.0.113.8")
        .await
        .unwrap();
}

async fn a_taken_email_is_answered_before_any_hashing(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args([
            "--hash-concurrency=1",
            "--hash-queue=1",
            "--source-max-registrations=0",
        ])
        .start()
        .await;
    let (taken, _, _) = app.new_user().await;
    let app = Arc::new(app);
    // Keep the one hashing thread and its one-place queue full of new registrations ...
    let flood: Vec<_> = (0..24)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.register(&format!("flood{i}@example.com"), PASSWORD)
                    .await
            })
        })
        .collect();
    // ... a taken email still gets its answer, without waiting for argon2.
    for _ in 0..8 {
        let status = app.register(&taken, PASSWORD).await.unwrap_err();
        assert_status(&status, Code::AlreadyExists, Some("EMAIL_TAKEN"));
    }
    for registration in flood {
        if let Err(status) = registration.await.unwrap() {
            assert_status(&status, Code::ResourceExhausted, Some("OVERLOADED"));
        }
    }
}
