//! TLS on every hop, on real servers: authd reaches a TLS-only Postgres and a TLS-only Redis
//! with verification on, and refuses servers whose certificate another CA issued; its own
//! listeners speak TLS only when configured, require client certificates with mutual TLS, and
//! serve a certificate rotated on disk to new connections without dropping open ones.

use tonic::Code;

use crate::common::{
    Backend, TestApp, TestState, assert_status,
    tls::{IdentityFiles, TestCa, TlsPostgres, TlsRedis, grpc_client_tls, https_get, https_h2_get},
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

/// A call that never reached authd's handlers: the connection was refused or closed (under TLS
/// 1.3 a refused client certificate shows only after the client's handshake). A handler's answer
/// to the invalid token would be UNAUTHENTICATED or INVALID_ARGUMENT.
fn assert_refused_by_transport(status: &tonic::Status, who: &str) {
    // A plaintext client may read the TLS alert as a malformed HTTP/2 frame.
    let protocol_error =
        status.code() == Code::Internal && status.message().contains("protocol error");
    assert!(
        protocol_error
            || matches!(
                status.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            ),
        "{who}: the call reached authd: {status:?}"
    );
}

/// The flags that turn TLS on with `identity`, and mTLS with `client_ca`.
fn tls_flags(identity: &IdentityFiles, client_ca: Option<&TestCa>) -> Vec<String> {
    let mut flags = vec![
        format!("--tls-cert-file={}", identity.cert.display()),
        format!("--tls-key-file={}", identity.key.display()),
    ];
    if let Some(ca) = client_ca {
        flags.push(format!("--tls-client-ca-file={}", ca.cert_file.display()));
    }
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_both_listeners_speak_tls_only() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let other = TestCa::new(pki.path(), "other");
    let state = TestState::new(Backend::Postgres).await;
    let app = state
        .app()
        .args(tls_flags(&ca.server("authd"), None))
        .client_tls(grpc_client_tls(&ca.cert_file, None))
        .start()
        .await;
    round_trip(&app).await;

    // gRPC: a plaintext client, or one that trusts another CA, gets nowhere.
    let plaintext = TestApp::try_connect_with(app.address, None).await;
    if let Ok(plaintext) = plaintext {
        let refused = plaintext.verify("x").await.unwrap_err();
        assert_refused_by_transport(&refused, "a plaintext client");
    }
    assert!(
        TestApp::try_connect_with(app.address, Some(grpc_client_tls(&other.cert_file, None)))
            .await
            .is_err(),
        "a client trusting another CA connected"
    );

    // HTTP: served over TLS (HTTP/1.1 here), and the discovery document says https.
    let http = app.http_address.unwrap();
    let healthz = https_get(http, &ca.cert_file, "/healthz").await.unwrap();
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let discovery = https_get(http, &ca.cert_file, "/.well-known/openid-configuration")
        .await
        .unwrap();
    assert!(
        discovery.contains(&format!("\"jwks_uri\":\"https://{http}/")),
        "{discovery}"
    );
    assert!(https_get(http, &other.cert_file, "/healthz").await.is_err());
    // HTTP/2 when ALPN says so.
    assert_eq!(
        https_h2_get(http, &ca.cert_file, "/healthz").await,
        (hyper::StatusCode::OK, hyper::Version::HTTP_2)
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    })
    .await
    .expect("a plaintext request is refused at once");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext HTTP was served: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_clients_with_a_certificate_from_the_client_ca_get_in() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let clients = TestCa::new(pki.path(), "clients");
    let strangers = TestCa::new(pki.path(), "strangers");
    let state = TestState::new(Backend::Embedded).await;
    let good = clients.client("gateway");
    let app = state
        .app()
        .args(tls_flags(&ca.server("authd"), Some(&clients)))
        .client_tls(grpc_client_tls(&ca.cert_file, Some(&good)))
        .start()
        .await;
    round_trip(&app).await;

    for (who, identity) in [
        ("without a certificate", None),
        (
            "with a certificate of another CA",
            Some(strangers.client("intruder")),
        ),
    ] {
        let connected = TestApp::try_connect_with(
            app.address,
            Some(grpc_client_tls(&ca.cert_file, identity.as_ref())),
        )
        .await;
        if let Ok(client) = connected {
            let refused = client.verify("x").await.unwrap_err();
            assert_refused_by_transport(&refused, who);
        }
    }
    // The HTTP listener asks for client certificates too.
    assert!(
        !matches!(
            https_get(app.http_address.unwrap(), &ca.cert_file, "/healthz").await,
            Ok(response) if response.contains(" 200 ")
        ),
        "HTTPS without a client certificate was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_served_to_new_connections_and_a_broken_one_is_not() {
    let pki = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(pki.path(), "old");
    let new_ca = TestCa::new(pki.path(), "new");
    let live = IdentityFiles {
        cert: pki.path().join("live.pem"),
        key: pki.path().join("live.key"),
    };
    let install = |identity: &IdentityFiles| {
        // As cert-manager does: new files moved into place.
        for (from, to) in [(&identity.cert, &live.cert), (&identity.key, &live.key)] {
            let staged = to.with_extension("new");
            std::fs::copy(from, &staged).unwrap();
            std::fs::rename(&staged, to).unwrap();
        }
    };
    install(&old_ca.server("first"));
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args(tls_flags(&live, None))
        .client_tls(grpc_client_tls(&old_ca.cert_file, None))
        .start()
        .await;
    let (_, user_id, token) = app.new_user().await;

    install(&new_ca.server("second"));
    let rotated = crate::common::eventually(std::time::Duration::from_secs(10), || async {
        TestApp::try_connect_with(app.address, Some(grpc_client_tls(&new_ca.cert_file, None)))
            .await
            .is_ok()
    })
    .await;
    assert!(
        rotated,
        "new connections did not get the rotated certificate"
    );
    assert!(
        TestApp::try_connect_with(app.address, Some(grpc_client_tls(&old_ca.cert_file, None)))
            .await
            .is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the rotation was not dropped.
    assert_eq!(app.verify(&token).await.expect("verify").user_id, user_id);

    // A broken file keeps the certificate in use.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let client =
        TestApp::try_connect_with(app.address, Some(grpc_client_tls(&new_ca.cert_file, None)))
            .await
            .expect("the previous certificate is still served");
    assert_eq!(
        client.verify(&token).await.expect("verify").user_id,
        user_id
    );

    // A FIFO in the key file's place (opening it would block until a writer came) and a file
    // larger than any PEM are refused like a broken file: handshakes go on with the certificate
    // in use, and the server still stops when told to.
    std::fs::remove_file(&live.key).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&live.key)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    std::fs::write(&live.cert, vec![b'A'; 2 << 20]).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    for _ in 0..3 {
        let client = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            TestApp::try_connect_with(app.address, Some(grpc_client_tls(&new_ca.cert_file, None))),
        )
        .await
        .expect("the TLS handshake hung while the key file was a FIFO")
        .expect("the previous certificate is still served");
        assert_eq!(
            client.verify(&token).await.expect("verify").user_id,
            user_id
        );
    }
    tokio::time::timeout(std::time::Duration::from_secs(15), app.stop())
        .await
        .expect("the server did not stop while the key file was a FIFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_health_check_speaks_tls_when_authd_does() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let identity = ca.server("authd");
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args(tls_flags(&identity, None))
        .client_tls(grpc_client_tls(&ca.cert_file, None))
        .start()
        .await;
    let check = |ca_file: Option<std::path::PathBuf>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd-healthcheck"));
        command
            .arg(app.address.to_string())
            .env("AUTHD_TLS_CERT_FILE", &identity.cert)
            .env_remove("AUTHD_HEALTHCHECK_CA_FILE");
        if let Some(ca_file) = ca_file {
            command.env("AUTHD_HEALTHCHECK_CA_FILE", ca_file);
        }
        // The check runs its own runtime and blocks: off this test's runtime threads.
        std::thread::scope(|scope| scope.spawn(|| command.output().unwrap()).join().unwrap())
    };
    let healthy = check(Some(ca.cert_file.clone()));
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let unconfigured = check(None);
    assert!(!unconfigured.status.success());
    assert!(
        String::from_utf8_lossy(&unconfigured.stderr).contains("AUTHD_HEALTHCHECK_CA_FILE"),
        "{}",
        String::from_utf8_lossy(&unconfigured.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authd_reaches_a_tls_only_redis_cluster_with_its_ca_and_refuses_another_ca() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "redis-cluster");
    let other = TestCa::new(pki.path(), "other");
    let (cluster, ca) = tokio::task::spawn_blocking(move || {
        let cluster = crate::common::cluster::RedisCluster::start_tls(&ca);
        (cluster, ca)
    })
    .await
    .unwrap();
    let state = TestState::new(Backend::Embedded).await;

    let app = state
        .app()
        .redis_url(Some(&cluster.url()))
        .arg(format!("--redis-ca-file={}", ca.cert_file.display()))
        .start()
        .await;
    for _ in 0..10 {
        round_trip(&app).await;
    }
    app.stop().await;
    // The revocations went to the cluster, over TLS, spread by slot.
    let pattern = format!("{}*", state.redis_prefix);
    let per_node = cluster.keys_per_node(&pattern);
    assert!(per_node.iter().sum::<usize>() >= 10, "{per_node:?}");

    let refused = state
        .app()
        .redis_url(Some(&cluster.url()))
        .arg(format!("--redis-ca-file={}", other.cert_file.display()))
        .try_start()
        .await;
    assert!(
        refused.is_err(),
        "authd trusted cluster nodes whose certificates another CA issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_mode_layer_works_against_a_mutual_tls_authd_with_its_ca_and_a_client_certificate()
{
    use authd_client::{LocalOptions, Rejection, Verifier};
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let service = ca.client("service");
    let state = TestState::new(Backend::Embedded).await;
    // No watch token: under mutual TLS the service's certificate is its credential.
    let app = state
        .app()
        .args(tls_flags(&ca.server("authd"), Some(&ca)))
        .client_tls(grpc_client_tls(&ca.cert_file, Some(&service)))
        .start()
        .await;
    let (_, user_id, token) = app.new_user().await;
    let ca_pem = std::fs::read(&ca.cert_file).unwrap();
    let options = |present_certificate_for_jwks: bool| {
        let grpc = format!("https://{}", app.address);
        let endpoint = tonic::transport::Endpoint::from_shared(grpc.clone())
            .unwrap()
            .tls_config(grpc_client_tls(&ca.cert_file, Some(&service)))
            .unwrap();
        let mut options = LocalOptions::new(grpc, format!("https://{}", app.http_address.unwrap()))
            .endpoint(endpoint)
            .jwks_ca_certificate(ca_pem.clone());
        if present_certificate_for_jwks {
            options = options.jwks_client_identity(
                std::fs::read(&service.cert).unwrap(),
                std::fs::read(&service.key).unwrap(),
            );
        }
        options
    };

    let verifier = Verifier::local(options(true)).unwrap();
    assert!(
        verifier
            .wait_until_current(std::time::Duration::from_secs(10))
            .await,
        "the JWKS and the revocation snapshot were not loaded over mutual TLS"
    );
    assert_eq!(verifier.verify(&token).await.unwrap().user_id(), user_id);
    app.logout(&token).await.unwrap();
    let revoked = crate::common::eventually(std::time::Duration::from_secs(5), || async {
        verifier.verify(&token).await == Err(Rejection::Revoked)
    })
    .await;
    assert!(
        revoked,
        "the Logout did not reach the layer over mutual TLS"
    );

    // Without a client certificate for the HTTP listener, the JWKS cannot be fetched: the layer
    // never becomes current and refuses with UNAVAILABLE, whatever the token.
    let (_, _, other) = app.new_user().await;
    let without = Verifier::local(options(false)).unwrap();
    assert!(
        !without
            .wait_until_current(std::time::Duration::from_secs(3))
            .await
    );
    assert!(
        matches!(without.verify(&other).await, Err(Rejection::Unavailable(_))),
        "{:?}",
        without.verify(&other).await
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_tls_settings_are_refused_when_the_verifier_is_built() {
    use authd_client::{BuildError, LocalOptions, Verifier};
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let service = ca.client("service");
    let other = ca.client("other");
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let https = || LocalOptions::new("https://127.0.0.1:1", "https://127.0.0.1:2");
    let bad_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
    let cases = [
        (
            "a CA that is not PEM",
            https().jwks_ca_certificate(b"garbage".to_vec()),
        ),
        ("an empty CA", https().jwks_ca_certificate(Vec::new())),
        (
            "a private key as the CA",
            https().jwks_ca_certificate(read(&service.key)),
        ),
        (
            "a CA of bad DER",
            https().jwks_ca_certificate(bad_der.clone()),
        ),
        (
            "a client certificate with another certificate's key",
            https().jwks_client_identity(read(&service.cert), read(&other.key)),
        ),
        (
            "a client identity that is not PEM",
            https().jwks_client_identity(b"garbage", b"garbage"),
        ),
        (
            "TLS settings for an http:// JWKS (keys in plaintext)",
            LocalOptions::new("https://127.0.0.1:1", "http://127.0.0.1:2")
                .jwks_ca_certificate(read(&ca.cert_file)),
        ),
    ];
    for (case, options) in cases {
        match Verifier::local(options) {
            Err(BuildError::Http(_) | BuildError::JwksTls(_)) => {}
            Err(other) => panic!("{case}: {other}"),
            Ok(_) => panic!("{case}: the verifier was built"),
        }
    }
    // The key-mismatch error says why, not only reqwest's "builder error".
    let Err(mismatch) =
        Verifier::local(https().jwks_client_identity(read(&service.cert), read(&other.key)))
    else {
        panic!("built")
    };
    assert!(
        mismatch.to_string().len() > "the JWKS HTTP client: builder error".len(),
        "{mismatch}"
    );
    // And the good settings build.
    assert!(
        Verifier::local(
            https()
                .jwks_ca_certificate(read(&ca.cert_file))
                .jwks_client_identity(read(&service.cert), read(&service.key))
        )
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_health_check_gives_up_on_a_peer_that_never_answers_the_tls_handshake() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "authd");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    // Accepts and holds every connection, never writing a byte.
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    for liveness in [false, true] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authd-healthcheck"));
        if liveness {
            command.arg("--liveness");
        }
        command
            .arg(address.to_string())
            .env("AUTHD_TLS_CERT_FILE", &ca.cert_file)
            .env("AUTHD_HEALTHCHECK_CA_FILE", &ca.cert_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let started = std::time::Instant::now();
        let mut child = command.spawn().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > std::time::Duration::from_secs(6) {
                let _ = child.kill();
                panic!("the health check hung on a silent TLS peer (liveness: {liveness})");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(
            !status.success(),
            "a silent peer passed (liveness: {liveness})"
        );
    }
    drop(held);
}
