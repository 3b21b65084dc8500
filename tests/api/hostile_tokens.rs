//! Hostile tokens: `crit` headers, `kid` path traversal and SQL, attacker keys in `jwk`/`jku`/`x5u`,
//! the ES256 "psychic signature", padded and non-canonical base64, oversized tokens. Verify and
//! Logout both answer UNAUTHENTICATED `TOKEN_INVALID` (a request over the message limit:
//! RESOURCE_EXHAUSTED `REQUEST_TOO_LARGE`) within a second, and genuine tokens keep verifying.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::{
    backend_tests,
    common::{Backend, Fixture, Forger, TestApp, assert_status, spawn_app},
};

backend_tests!(
    kid_with_path_traversal_or_sql_is_token_invalid,
    a_token_signed_with_our_key_but_living_for_ever_is_token_invalid,
);

/// Every hostile call must be answered within this.
const QUICK: Duration = Duration::from_secs(1);

/// Awaits one call, failing if it takes `QUICK` or longer.
async fn quickly<T>(case: &str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{case}: no answer within 10 s"));
    let elapsed = started.elapsed();
    assert!(elapsed < QUICK, "{case}: answered in {elapsed:?}");
    answer
}

/// Verify and Logout both refuse `token` with `code` and ErrorInfo `reason`, quickly.
async fn assert_refused(app: &TestApp, token: &str, code: Code, reason: &str, case: &str) {
    let verify: Result<_, Status> = quickly(case, app.verify(token)).await;
    let status = verify.expect_err(&format!("Verify accepted {case}"));
    assert_eq!(status.code(), code, "Verify, {case}: {status:?}");
    assert_status(&status, code, Some(reason));
    let logout: Result<_, Status> = quickly(case, app.logout(token)).await;
    let status = logout.expect_err(&format!("Logout accepted {case}"));
    assert_eq!(status.code(), code, "Logout, {case}: {status:?}");
    assert_status(&status, code, Some(reason));
}

async fn assert_token_invalid(app: &TestApp, token: &str, case: &str) {
    assert_refused(app, token, Code::Unauthenticated, "TOKEN_INVALID", case).await;
}

/// The server is fine after the hostile calls: a genuine token still verifies, quickly.
async fn assert_genuine_token_verifies(app: &TestApp, token: &str, user_id: &str) {
    let verified = quickly("genuine token", app.verify(token)).await;
    assert_eq!(verified.expect("genuine token verifies").user_id, user_id);
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A compact JWS of `header` and `claims` as given, signed by `key` with Ed25519.
fn sign_ed25519(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = key.sign(signing_input.as_bytes()).to_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The `kid` authd would give `key`: a forger's best guess at a key id we would accept.
fn kid_of(key: &SigningKey) -> String {
    authd::tokens::TokenAuthority::new(
        authd::tokens::SigningKeyMaterial::Ed25519(key.clone()),
        "authd",
        "authd",
        Duration::from_secs(900),
        Duration::from_secs(5),
    )
    .unwrap()
    .key_id()
    .to_owned()
}

#[tokio::test]
async fn crit_header_is_token_invalid() {
    let Fixture { app, state } = spawn_app(Backend::Embedded).await;
    let (_, user_id, genuine) = app.new_user().await;
    let forger = Forger::for_state(&state);
    for crit in [vec!["exp"], vec!["unknown-ext"]] {
        let mut header = forger.header();
        header.crit = Some(crit.iter().map(|s| (*s).to_owned()).collect());
        header.extras.insert("unknown-ext", true);
        let token = forger.sign(&header, &Forger::claims(&user_id, 0, 900));
        assert_token_invalid(&app, &token, &format!("crit {crit:?}")).await;
    }
    // Signed with the real key, valid claims: `crit` alone is what is refused.
    let control = forger.sign(&forger.header(), &Forger::claims(&user_id, 0, 900));
    assert_genuine_token_verifies(&app, &control, &user_id).await;
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}

async fn kid_with_path_traversal_or_sql_is_token_invalid(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, genuine) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let kids = [
        "../../etc/passwd".to_owned(),
        "../../../../../../dev/null".to_owned(),
        format!("../{}", forger.kid),
        "' OR 1=1 --".to_owned(),
        format!("{}' OR '1'='1", forger.kid),
        "x'; DROP TABLE users; --".to_owned(),
    ];
    for kid in &kids {
        let mut header = forger.header();
        header.kid = Some(kid.clone());
        let token = forger.sign(&header, &Forger::claims(&user_id, 0, 900));
        assert_token_invalid(&app, &token, &format!("kid {kid:?}")).await;
    }
    // The stores are untouched: the genuine token still verifies and a new user can register.
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
    app.new_user().await;
}

#[tokio::test]
async fn attacker_key_in_jwk_jku_or_x5u_header_is_token_invalid() {
    let Fixture { app, state } = spawn_app(Backend::Embedded).await;
    let (_, user_id, genuine) = app.new_user().await;
    let our_kid = Forger::for_state(&state).kid;
    let attacker = SigningKey::generate(&mut rand::rngs::OsRng);
    let attacker_kid = kid_of(&attacker);
    let attacker_jwk = json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(attacker.verifying_key().as_bytes()),
    });
    // A listener standing in for the attacker's key server: authd must never call it.
    let key_server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key_server_url = format!("http://{}", key_server.local_addr().unwrap());
    let claims = Forger::claims(&user_id, 0, 900);
    for kid in [&our_kid, &attacker_kid] {
        let headers = [
            (
                "jwk",
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jwk": attacker_jwk}),
            ),
            (
                "jku",
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid,
                       "jku": format!("{key_server_url}/jwks.json")}),
            ),
            (
                "x5u",
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid,
                       "x5u": format!("{key_server_url}/cert.pem")}),
            ),
        ];
        for (case, header) in headers {
            let token = sign_ed25519(&attacker, &header, &claims);
            let which = if kid == &our_kid {
                "our"
            } else {
                "the attacker's"
            };
            assert_token_invalid(&app, &token, &format!("{case} with {which} kid")).await;
        }
    }
    let fetched = tokio::time::timeout(Duration::from_millis(200), key_server.accept()).await;
    assert!(fetched.is_err(), "authd connected to the jku/x5u URL");
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}

#[tokio::test]
async fn es256_psychic_signature_is_token_invalid() {
    let Fixture { app, state } = spawn_app(Backend::Embedded).await;
    let (_, user_id, genuine) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let header = b64_json(&json!({"alg": "ES256", "typ": "at+jwt", "kid": forger.kid}));
    let payload = b64_json(&Forger::claims(&user_id, 0, 900));
    // CVE-2022-21449: r = s = 0, in the JWS (raw) form and in DER.
    let raw = URL_SAFE_NO_PAD.encode([0u8; 64]);
    let der = URL_SAFE_NO_PAD.encode([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    for (case, signature) in [("raw r=s=0", raw), ("DER r=s=0", der)] {
        let token = format!("{header}.{payload}.{signature}");
        assert_token_invalid(&app, &token, &format!("ES256 {case}")).await;
    }
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}

#[tokio::test]
async fn padded_or_non_canonical_base64_is_token_invalid() {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let (_, user_id, genuine) = app.new_user().await;
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
    let parts: Vec<&str> = genuine.split('.').collect();
    assert_eq!(parts.len(), 3);
    for (segment, name) in ["header", "payload", "signature"].into_iter().enumerate() {
        for padding in ["=", "=="] {
            let mut padded: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
            padded[segment].push_str(padding);
            let case = format!("{name} + {padding:?}");
            assert_token_invalid(&app, &padded.join("."), &case).await;
        }
    }
    // The Ed25519 signature is 86 characters, whose last one carries 4 unused bits: flipping the
    // lowest changes the text but not the decoded signature.
    let signature = parts[2];
    assert_eq!(signature.len(), 86);
    let last = *signature.as_bytes().last().unwrap();
    let value = ALPHABET.iter().position(|&c| c == last).unwrap();
    assert_eq!(
        value & 0b1111,
        0,
        "a canonical encoding leaves the unused bits zero"
    );
    let altered = format!(
        "{}.{}.{}{}",
        parts[0],
        parts[1],
        &signature[..signature.len() - 1],
        ALPHABET[value ^ 1] as char
    );
    assert_token_invalid(&app, &altered, "non-canonical signature").await;
    // The unmodified token is still good: the refusals were for the encoding alone.
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}

#[tokio::test]
async fn oversized_tokens_are_refused_quickly() {
    let Fixture { app, state } = spawn_app(Backend::Embedded).await;
    let (_, user_id, genuine) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let target = 60 * 1024;

    // Genuinely signed by our key, with valid claims, but 60 KiB long.
    let mut claims = Forger::claims(&user_id, 0, 900);
    claims["pad"] = "x".repeat(target * 3 / 4 - 600).into();
    let signed = forger.sign(&forger.header(), &claims);
    // A header segment that is one deeply nested JSON array (a parser recursion bomb).
    let nested = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode("[".repeat((target - 600) * 3 / 4)),
        b64_json(&Forger::claims(&user_id, 0, 900)),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let cases = [
        ("signed 60 KiB JWT", signed),
        ("60 KiB nested-array header", nested),
        ("60 KiB of one character", "a".repeat(target)),
        ("60 KiB of dots", ".".repeat(target)),
    ];
    for (case, token) in &cases {
        assert!(
            (target - 1024..=target).contains(&token.len()),
            "{case}: {} bytes",
            token.len()
        );
        assert_token_invalid(&app, token, case).await;
    }

    // Over the 64 KiB message limit: refused before decoding (documented behaviour).
    let huge = "a".repeat(1024 * 1024);
    assert_refused(
        &app,
        &huge,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
        "1 MB token",
    )
    .await;
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}

async fn a_token_signed_with_our_key_but_living_for_ever_is_token_invalid(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, genuine) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let now = crate::common::unix_now();
    for (case, iat, exp) in [
        ("exp in year 9999", now, 253_402_300_799),
        ("exp = i64::MAX", now, i64::MAX),
        ("iat = 0, exp = i64::MAX", 0, i64::MAX),
        (
            "one second longer than ttl + leeway",
            now,
            now + 900 + 5 + 1,
        ),
    ] {
        let mut claims = Forger::claims(&user_id, 0, 900);
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        let token = forger.sign(&forger.header(), &claims);
        assert_token_invalid(&app, &token, case).await;
    }
    // The longest lifetime authd could have issued (ttl + leeway) still verifies, with
    // timestamps a protobuf Timestamp can hold.
    let mut claims = Forger::claims(&user_id, 0, 900);
    claims["exp"] = json!(now + 905);
    let token = forger.sign(&forger.header(), &claims);
    let verified = app.verify(&token).await.expect("ttl + leeway verifies");
    assert_eq!(verified.expires_at.unwrap().seconds, now + 905);
    assert_genuine_token_verifies(&app, &genuine, &user_id).await;
}
