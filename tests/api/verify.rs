//! Verify: the claims of a good token; UNAUTHENTICATED with the right reason for every bad one.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Code, Request};
use uuid::Uuid;

use authd::pb;

use crate::{
    backend_tests,
    common::{Backend, Fixture, Forger, assert_status, spawn_app, unix_now},
};

backend_tests!(
    verify_returns_user_jti_and_times_of_a_valid_token,
    verify_reads_the_bearer_token_from_metadata_when_the_field_is_empty,
    verify_without_a_token_is_token_missing,
    verify_of_an_expired_token_is_token_expired,
    verify_of_malformed_or_tampered_tokens_is_token_invalid,
    verify_refuses_alg_none_and_hs256_forgeries,
    verify_refuses_wrong_issuer_audience_type_and_missing_claims,
);

async fn verify_returns_user_jti_and_times_of_a_valid_token(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let before = unix_now();
    let (_, user_id, token) = app.new_user().await;
    let verified = app.verify(&token).await.unwrap();
    assert_eq!(verified.user_id, user_id);
    Uuid::parse_str(&verified.jti).expect("jti is a UUID");
    let issued_at = verified.issued_at.unwrap().seconds;
    let expires_at = verified.expires_at.unwrap().seconds;
    assert!(issued_at >= before && issued_at <= unix_now());
    assert_eq!(expires_at - issued_at, 900);
}

async fn verify_reads_the_bearer_token_from_metadata_when_the_field_is_empty(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, user_id, token) = app.new_user().await;
    let mut request = Request::new(pb::VerifyRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let verified = app
        .client
        .clone()
        .verify(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.user_id, user_id);
    // Exactly one space after the scheme: any other form is not a bearer credential.
    for header in [format!("Bearer  {token}"), format!("Bearer\t{token}")] {
        let mut request = Request::new(pb::VerifyRequest::default());
        request
            .metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = app.client.clone().verify(request).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_MISSING"));
    }
}

async fn verify_without_a_token_is_token_missing(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let status = app.verify("").await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_MISSING"));
    let mut request = Request::new(pb::VerifyRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    let status = app.client.clone().verify(request).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_MISSING"));
}

async fn verify_of_an_expired_token_is_token_expired(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, _) = app.new_user().await;
    let forger = Forger::for_state(&state);
    // Expired 60 s ago: well past the 5 s leeway.
    let expired = forger.sign(&forger.header(), &Forger::claims(&user_id, 960, 900));
    let status = app.verify(&expired).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_EXPIRED"));
    // The same forger's fresh token is accepted: the expiry is what is refused.
    let fresh = forger.sign(&forger.header(), &Forger::claims(&user_id, 0, 900));
    assert_eq!(app.verify(&fresh).await.unwrap().user_id, user_id);
}

async fn verify_of_malformed_or_tampered_tokens_is_token_invalid(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, token) = app.new_user().await;
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let tampered_signature = format!("{signed}.{}", String::from_utf8(flipped).unwrap());
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"] = Uuid::new_v4().to_string().into();
    let other_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered_payload = format!("{header}.{other_payload}.{signature}");
    for bad in [
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        format!("{token}.extra"),
        token[..token.len() - 5].to_owned(),
        tampered_signature,
        tampered_payload,
        "x".repeat(10_000),
    ] {
        let status = app.verify(&bad).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
}

async fn verify_refuses_alg_none_and_hs256_forgeries(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, _) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let claims = Forger::claims(&user_id, 0, 900);
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let mut forgeries = Vec::new();
    for alg in ["none", "None", "NONE"] {
        let header = serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": forger.kid});
        forgeries.push(format!("{}.{}.", b64(&header), b64(&claims)));
    }
    // HS256 keyed with the public key (the classic algorithm-confusion attack), or guessed secrets.
    let public_key = authd::tokens::load_or_generate_ed25519_key(&state.signing_key_path())
        .unwrap()
        .0
        .verifying_key()
        .to_bytes();
    let mut header = forger.header();
    header.alg = jsonwebtoken::Algorithm::HS256;
    for secret in [&public_key[..], b"", b"secret", b"authd"] {
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        forgeries.push(jsonwebtoken::encode(&header, &claims, &key).unwrap());
    }
    for forged in forgeries {
        let status = app.verify(&forged).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
}

async fn verify_refuses_wrong_issuer_audience_type_and_missing_claims(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (_, user_id, _) = app.new_user().await;
    let forger = Forger::for_state(&state);
    let good = Forger::claims(&user_id, 0, 900);
    let with = |key: &str, value: serde_json::Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let without = |key: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(key);
        claims
    };
    let mut bad_claims = vec![
        with("iss", "someone-else".into()),
        with("aud", "another-service".into()),
        with("sub", "not-a-uuid".into()),
        with("jti", "not-a-uuid".into()),
        with("exp", "9999999999".into()),
    ];
    for claim in ["iss", "aud", "sub", "exp", "jti", "iat"] {
        bad_claims.push(without(claim));
    }
    for claims in &bad_claims {
        let token = forger.sign(&forger.header(), claims);
        let status = app.verify(&token).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
    let mut wrong_typ = forger.header();
    wrong_typ.typ = Some("JWT".into());
    let mut no_typ = forger.header();
    no_typ.typ = None;
    let mut wrong_kid = forger.header();
    wrong_kid.kid = Some("../../etc/passwd".into());
    for header in [wrong_typ, no_typ, wrong_kid] {
        let token = forger.sign(&header, &good);
        let status = app.verify(&token).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
    // The untouched claims with the real header pass: each refusal above is for its one change.
    assert!(
        app.verify(&forger.sign(&forger.header(), &good))
            .await
            .is_ok()
    );
}
