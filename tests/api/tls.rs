//! TLS on every hop, on real servers: authd reaches a TLS-only Postgres and a TLS-only Redis
//! with verification on, and refuses servers whose certificate another CA issued.

use tonic::Code;

use crate::common::{
    Backend, TestState, assert_status,
    tls::{TestCa, TlsPostgres, TlsRedis},
};

/// Register → Verify → Logout → Verify (revoked) on `app`.
async fn round_trip(app: &crate::common::TestApp) {
    let (_, user_id, token) = app.new_user().await;
    assert_eq!(app.verify(&token).await.expect("verify").user_id, user_id);
    app.logout(&token).await.expect("logout");
    assert_status(
        &app.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authd_reaches_a_tls_only_postgres_with_verify_full_and_refuses_another_ca() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "pg");
    let other = TestCa::new(pki.path(), "other");
    let postgres = tokio::task::spawn_blocking(move || {
        let server = TlsPostgres::start(&ca);
        (server, ca)
    })
    .await
    .unwrap();
    let (postgres, ca) = postgres;
    let state = TestState::new(Backend::Embedded).await;

    for mode in ["verify-full", "verify-ca", "require"] {
        let url = postgres.url(&format!(
            "sslmode={mode}&sslrootcert={}",
            ca.cert_file.display()
        ));
        let app = state.app().database_url(Some(&url)).start().await;
        round_trip(&app).await;
        app.stop().await;
    }

    // Plaintext is refused by the server (so the successes above were over TLS).
    let plaintext = postgres.url("sslmode=disable");
    let refused = state.app().database_url(Some(&plaintext)).try_start().await;
    assert!(refused.is_err(), "a plaintext connection was accepted");

    // A server certificate from another CA is refused.
    let wrong_ca = postgres.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.cert_file.display()
    ));
    let error = match state.app().database_url(Some(&wrong_ca)).try_start().await {
        Ok(_) => panic!("authd trusted a certificate another CA issued"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authd_reaches_a_tls_only_redis_with_its_ca_and_refuses_another_ca() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "redis");
    let other = TestCa::new(pki.path(), "other");
    let redis = TlsRedis::start(&ca, false);
    let state = TestState::new(Backend::Embedded).await;

    let app = state
        .app()
        .redis_url(Some(&redis.url()))
        .arg(format!("--redis-ca-file={}", ca.cert_file.display()))
        .start()
        .await;
    round_trip(&app).await;
    app.stop().await;

    let error = match state
        .app()
        .redis_url(Some(&redis.url()))
        .arg(format!("--redis-ca-file={}", other.cert_file.display()))
        .try_start()
        .await
    {
        Ok(_) => panic!("authd trusted a Redis certificate another CA issued"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );

    // Without a CA of its own, authd trusts the system's roots only: refused too.
    let refused = state.app().redis_url(Some(&redis.url())).try_start().await;
    assert!(
        refused.is_err(),
        "a private CA was trusted without AUTHD_REDIS_CA_FILE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authd_presents_its_client_certificate_to_a_redis_that_requires_one() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "redis");
    let redis = TlsRedis::start(&ca, true);
    let client = ca.client("authd");
    let state = TestState::new(Backend::Embedded).await;

    let app = state
        .app()
        .redis_url(Some(&redis.url()))
        .arg(format!("--redis-ca-file={}", ca.cert_file.display()))
        .arg(format!(
            "--redis-client-cert-file={}",
            client.cert.display()
        ))
        .arg(format!("--redis-client-key-file={}", client.key.display()))
        .start()
        .await;
    round_trip(&app).await;
    app.stop().await;

    let refused = state
        .app()
        .redis_url(Some(&redis.url()))
        .arg(format!("--redis-ca-file={}", ca.cert_file.display()))
        .try_start()
        .await;
    assert!(
        refused.is_err(),
        "Redis accepted authd without a client certificate"
    );
}
