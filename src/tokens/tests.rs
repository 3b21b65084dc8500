//! Unit tests of issuing and verifying: round trips, `kid`s, time and leeway, and every forged,
//! tampered or malformed token an attacker might try.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;

use super::*;
use crate::domain::SessionId;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{decode_header, jwk::Jwk};
use serde_json::{Value, json};

/// A fixed "now", in the past, so a time check against the real clock would show up.
const NOW: UnixSeconds = 1_700_000_000;
const TTL: i64 = 900;
const LEEWAY: i64 = 5;
const HS_SECRET: &str = "authd-unit-test-hs256-secret-0123456789";

/// An authority plus the key it signs with, to craft tokens that only differ in one detail.
struct Fixture {
    authority: TokenAuthority,
    key: EncodingKey,
}

impl Fixture {
    fn ed25519() -> Self {
        let key = random_ed25519_key();
        Self {
            key: ed25519_encoding_key(&key),
            authority: authority(SigningKeyMaterial::Ed25519(key)),
        }
    }

    fn hs256() -> Self {
        Self {
            key: EncodingKey::from_secret(HS_SECRET.as_bytes()),
            authority: authority(SigningKeyMaterial::Hs256(SecretString::from(HS_SECRET))),
        }
    }

    fn both() -> [Self; 2] {
        [Self::ed25519(), Self::hs256()]
    }

    /// The header the authority puts on its own tokens.
    fn header(&self) -> Header {
        header(self.authority.algorithm(), Some(&self.authority.key_id()))
    }

    /// Signs `claims` under `header` with the authority's own key.
    fn sign(&self, header: &Header, claims: &Value) -> AccessToken {
        sign(header, claims, &self.key)
    }

    fn verify(&self, token: &AccessToken) -> Result<TokenClaims, TokenError> {
        self.authority.verify(token, NOW)
    }

    /// Both `verify` and `decode` (the Logout path) must refuse the token as invalid.
    fn assert_invalid(&self, token: &AccessToken, case: &str) {
        let alg = self.authority.algorithm();
        assert_eq!(
            self.verify(token),
            Err(TokenError::Invalid),
            "{alg:?}: {case}"
        );
        assert!(
            matches!(self.authority.decode(token), Err(TokenError::Invalid)),
            "{alg:?}: decode accepted {case}"
        );
    }
}

fn authority(key: SigningKeyMaterial) -> TokenAuthority {
    let ttl = Duration::from_secs(TTL as u64);
    let leeway = Duration::from_secs(LEEWAY as u64);
    TokenAuthority::new(key, "authd", "authd", ttl, leeway).unwrap()
}

fn random_ed25519_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

fn ed25519_encoding_key(key: &SigningKey) -> EncodingKey {
    EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes())
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
    header.kid = kid.map(str::to_owned);
    header
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> AccessToken {
    token(jsonwebtoken::encode(header, claims, key).unwrap())
}

fn token(raw: impl Into<String>) -> AccessToken {
    AccessToken::new(raw).unwrap()
}

/// Claims exactly like the ones `issue` writes at `NOW`.
fn claims() -> Value {
    json!({
        "iss": "authd",
        "aud": "authd",
        "sub": UserId::generate().to_string(),
        "iat": NOW,
        "exp": NOW + TTL,
        "jti": Jti::generate().to_string(),
    })
}

fn claims_with(field: &str, value: Value) -> Value {
    let mut claims = claims();
    claims[field] = value;
    claims
}

fn claims_without(field: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(field);
    claims
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn assert_round_trip(fixture: &Fixture) {
    let user_id = UserId::generate();
    let issued = fixture
        .authority
        .issue(user_id, SessionId::generate(), NOW)
        .unwrap();
    assert_eq!(issued.claims.user_id, user_id);
    assert_eq!(issued.claims.issued_at, NOW);
    assert_eq!(issued.claims.expires_at, NOW + TTL);
    assert_eq!(fixture.verify(&issued.token), Ok(issued.claims));

    let header = decode_header(issued.token.expose()).unwrap();
    assert_eq!(header.alg, fixture.authority.algorithm());
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid, Some(fixture.authority.key_id()));

    let again = fixture
        .authority
        .issue(user_id, SessionId::generate(), NOW)
        .unwrap();
    assert_ne!(
        again.claims.jti, issued.claims.jti,
        "every token has its own jti"
    );
}

#[test]
fn eddsa_token_round_trips() {
    let fixture = Fixture::ed25519();
    assert_eq!(fixture.authority.algorithm(), Algorithm::EdDSA);
    assert_round_trip(&fixture);
}

#[test]
fn hs256_token_round_trips() {
    let fixture = Fixture::hs256();
    assert_eq!(fixture.authority.algorithm(), Algorithm::HS256);
    assert_round_trip(&fixture);
}

#[test]
fn crafted_token_with_our_key_and_header_is_accepted() {
    // The control for every forgery below: the crafting helpers alone do not break tokens.
    for fixture in Fixture::both() {
        let claims = claims();
        let verified = fixture.verify(&fixture.sign(&fixture.header(), &claims));
        let verified = verified.unwrap();
        assert_eq!(verified.user_id.to_string(), claims["sub"]);
        assert_eq!(verified.jti.to_string(), claims["jti"]);
    }
}

#[test]
fn ed25519_kid_is_the_rfc7638_thumbprint() {
    // RFC 8037 appendix A.1 (key) and A.3 (thumbprint).
    let d = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap();
    let key = SigningKey::from_bytes(&d.try_into().unwrap());
    assert_eq!(
        URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
    let authority = authority(SigningKeyMaterial::Ed25519(key));
    assert_eq!(
        authority.key_id(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn hs256_kid_names_the_secret_without_revealing_it() {
    let kid = Fixture::hs256().authority.key_id().to_owned();
    let other = authority(SigningKeyMaterial::Hs256(SecretString::from(
        "another-hs256-secret-of-32-bytes-or-more",
    )));
    assert_eq!(kid, Fixture::hs256().authority.key_id(), "stable");
    assert_ne!(kid, other.key_id());
    assert!(!kid.contains(HS_SECRET) && !kid.contains(&URL_SAFE_NO_PAD.encode(HS_SECRET)));
}

#[test]
fn token_is_accepted_up_to_exp_plus_leeway() {
    for fixture in Fixture::both() {
        let issued = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let last_second = NOW + TTL + LEEWAY;
        assert_eq!(
            fixture.authority.verify(&issued.token, last_second),
            Ok(issued.claims)
        );
        assert!(!fixture.authority.is_expired(&issued.claims, last_second));
    }
}

#[test]
fn token_past_exp_plus_leeway_is_expired() {
    for fixture in Fixture::both() {
        let issued = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let too_late = NOW + TTL + LEEWAY + 1;
        assert_eq!(
            fixture.authority.verify(&issued.token, too_late),
            Err(TokenError::Expired)
        );
        assert!(fixture.authority.is_expired(&issued.claims, too_late));
    }
}

#[test]
fn accepted_until_is_exp_plus_leeway() {
    let fixture = Fixture::ed25519();
    let issued = fixture
        .authority
        .issue(UserId::generate(), SessionId::generate(), NOW)
        .unwrap();
    assert_eq!(
        fixture.authority.accepted_until(&issued.claims),
        NOW + TTL + LEEWAY
    );
}

#[test]
fn decode_accepts_an_expired_token() {
    // Logout must be able to revoke a token whatever its age; NOW is long past, too.
    for fixture in Fixture::both() {
        let issued = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let much_later = NOW + 365 * 24 * 3600;
        assert_eq!(
            fixture.authority.verify(&issued.token, much_later),
            Err(TokenError::Expired)
        );
        let decoded = fixture.authority.decode(&issued.token).unwrap();
        assert_eq!(decoded.claims, issued.claims);
    }
}

#[test]
fn iat_in_the_future_beyond_leeway_is_invalid() {
    for fixture in Fixture::both() {
        let within =
            fixture
                .authority
                .issue(UserId::generate(), SessionId::generate(), NOW + LEEWAY);
        assert!(fixture.verify(&within.unwrap().token).is_ok());
        let beyond =
            fixture
                .authority
                .issue(UserId::generate(), SessionId::generate(), NOW + LEEWAY + 1);
        assert_eq!(
            fixture.verify(&beyond.unwrap().token),
            Err(TokenError::Invalid)
        );
    }
}

#[test]
fn nbf_in_the_future_beyond_leeway_is_invalid() {
    for fixture in Fixture::both() {
        let past = fixture.sign(&fixture.header(), &claims_with("nbf", json!(NOW - 60)));
        assert!(fixture.verify(&past).is_ok());
        let within = fixture.sign(&fixture.header(), &claims_with("nbf", json!(NOW + LEEWAY)));
        assert!(fixture.verify(&within).is_ok());
        let beyond = claims_with("nbf", json!(NOW + LEEWAY + 1));
        assert_eq!(
            fixture.verify(&fixture.sign(&fixture.header(), &beyond)),
            Err(TokenError::Invalid)
        );
    }
}

#[test]
fn exp_before_iat_is_invalid() {
    for fixture in Fixture::both() {
        let token = fixture.sign(&fixture.header(), &claims_with("exp", json!(NOW - 1)));
        fixture.assert_invalid(&token, "exp before iat");
    }
}

#[test]
fn a_lifetime_longer_than_the_ttl_plus_leeway_is_invalid_even_with_our_signature() {
    for fixture in Fixture::both() {
        let longest = fixture.sign(
            &fixture.header(),
            &claims_with("exp", json!(NOW + TTL + LEEWAY)),
        );
        fixture
            .verify(&longest)
            .expect("ttl + leeway is still plausible");
        for (iat, exp) in [
            (NOW, NOW + TTL + LEEWAY + 1),
            (NOW, 253_402_300_799), // 9999-12-31
            (NOW, i64::MAX),
            (0, i64::MAX),
            (i64::MIN, i64::MIN + 10),
            (-62_135_596_801, -62_135_596_800), // before 0001-01-01
        ] {
            let mut claims = claims_with("iat", json!(iat));
            claims["exp"] = json!(exp);
            let token = fixture.sign(&fixture.header(), &claims);
            fixture.assert_invalid(&token, &format!("iat {iat}, exp {exp}"));
        }
    }
}

#[test]
fn alg_none_is_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let genuine_signature = genuine.token.expose().rsplit('.').next().unwrap();
        let payload = b64_json(&claims());
        for alg in ["none", "None", "NONE"] {
            let header = b64_json(&json!({
                "alg": alg,
                "typ": ACCESS_TOKEN_TYP,
                "kid": fixture.authority.key_id(),
            }));
            for signature in ["", genuine_signature] {
                let forged = token(format!("{header}.{payload}.{signature}"));
                fixture.assert_invalid(&forged, &format!("alg {alg}, signature {signature:?}"));
            }
        }
    }
}

#[test]
fn hs256_token_signed_with_the_ed25519_public_key_is_refused() {
    let key = random_ed25519_key();
    let public = *key.verifying_key().as_bytes();
    let fixture = Fixture {
        key: ed25519_encoding_key(&key),
        authority: authority(SigningKeyMaterial::Ed25519(key)),
    };
    let hs_header = header(Algorithm::HS256, Some(&fixture.authority.key_id()));
    let public_b64 = URL_SAFE_NO_PAD.encode(public);
    for secret in [&public[..], public_b64.as_bytes()] {
        let forged = sign(&hs_header, &claims(), &EncodingKey::from_secret(secret));
        fixture.assert_invalid(&forged, "HS256 with the public key as secret");
    }
}

#[test]
fn hs256_token_with_an_empty_or_guessed_secret_is_refused() {
    for fixture in Fixture::both() {
        let kid = fixture.authority.key_id().to_owned();
        let hs_header = header(Algorithm::HS256, Some(&kid));
        for secret in ["", "secret", "authd", kid.as_str()] {
            let key = EncodingKey::from_secret(secret.as_bytes());
            let forged = sign(&hs_header, &claims(), &key);
            fixture.assert_invalid(&forged, &format!("HS256 secret {secret:?}"));
        }
    }
}

#[test]
fn eddsa_token_from_another_key_with_our_kid_is_refused() {
    for fixture in Fixture::both() {
        let other_key = ed25519_encoding_key(&random_ed25519_key());
        let ed_header = header(Algorithm::EdDSA, Some(&fixture.authority.key_id()));
        let forged = sign(&ed_header, &claims(), &other_key);
        fixture.assert_invalid(&forged, "EdDSA signature by another key");
    }
}

#[test]
fn hs256_token_from_another_secret_is_refused() {
    let fixture = Fixture::hs256();
    let other = EncodingKey::from_secret(b"another-hs256-secret-of-32-bytes-or-more");
    let forged = sign(&fixture.header(), &claims(), &other);
    fixture.assert_invalid(&forged, "HS256 signature by another secret");
}

#[test]
fn tampered_payload_is_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let parts: Vec<&str> = genuine.token.expose().split('.').collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = json!(UserId::generate().to_string());
        let forged = token(format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]));
        fixture.assert_invalid(&forged, "another sub under the genuine signature");
    }
}

#[test]
fn wrong_issuer_is_refused() {
    for fixture in Fixture::both() {
        for iss in [json!("evil"), json!("AUTHD"), json!(""), json!(["authd"])] {
            let token = fixture.sign(&fixture.header(), &claims_with("iss", iss.clone()));
            fixture.assert_invalid(&token, &format!("iss {iss}"));
        }
    }
}

#[test]
fn wrong_audience_is_refused() {
    for fixture in Fixture::both() {
        for aud in [json!("evil"), json!("AUTHD"), json!(""), json!(["evil"])] {
            let token = fixture.sign(&fixture.header(), &claims_with("aud", aud.clone()));
            fixture.assert_invalid(&token, &format!("aud {aud}"));
        }
    }
}

#[test]
fn wrong_or_missing_typ_is_refused() {
    for fixture in Fixture::both() {
        for typ in [Some("JWT"), Some("jwt"), Some("at+jwt2"), Some(""), None] {
            let mut header = fixture.header();
            header.typ = typ.map(str::to_owned);
            fixture.assert_invalid(&fixture.sign(&header, &claims()), &format!("typ {typ:?}"));
        }
    }
}

#[test]
fn typ_is_matched_case_insensitively_with_an_optional_application_prefix() {
    for fixture in Fixture::both() {
        for typ in ["AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
            let mut header = fixture.header();
            header.typ = Some(typ.to_owned());
            let token = fixture.sign(&header, &claims());
            assert!(fixture.verify(&token).is_ok(), "typ {typ}");
        }
    }
}

#[test]
fn wrong_or_missing_kid_is_refused() {
    for fixture in Fixture::both() {
        let other_kid = Fixture::ed25519().authority.key_id().to_owned();
        let upper_kid = fixture.authority.key_id().to_uppercase();
        for kid in [
            Some(other_kid.as_str()),
            Some(upper_kid.as_str()),
            Some(""),
            None,
        ] {
            let header = header(fixture.authority.algorithm(), kid);
            fixture.assert_invalid(&fixture.sign(&header, &claims()), &format!("kid {kid:?}"));
        }
    }
}

#[test]
fn missing_required_claims_are_refused() {
    for fixture in Fixture::both() {
        for field in ["exp", "sub", "jti", "iss", "aud", "iat"] {
            let token = fixture.sign(&fixture.header(), &claims_without(field));
            fixture.assert_invalid(&token, &format!("without {field}"));
        }
    }
}

#[test]
fn sub_that_is_not_a_uuid_is_refused() {
    for fixture in Fixture::both() {
        for sub in [json!("alice"), json!(""), json!(42)] {
            let token = fixture.sign(&fixture.header(), &claims_with("sub", sub.clone()));
            fixture.assert_invalid(&token, &format!("sub {sub}"));
        }
    }
}

#[test]
fn jti_that_is_not_a_uuid_is_refused() {
    for fixture in Fixture::both() {
        for jti in [json!("token-1"), json!(""), json!(42)] {
            let token = fixture.sign(&fixture.header(), &claims_with("jti", jti.clone()));
            fixture.assert_invalid(&token, &format!("jti {jti}"));
        }
    }
}

#[test]
fn exp_as_a_string_is_refused() {
    for fixture in Fixture::both() {
        let exp = json!((NOW + TTL).to_string());
        let token = fixture.sign(&fixture.header(), &claims_with("exp", exp));
        fixture.assert_invalid(&token, "exp as a string");
    }
}

#[test]
fn attacker_key_in_jwk_jku_or_x5u_header_is_refused() {
    let fixture = Fixture::ed25519();
    let attacker = random_ed25519_key();
    let attacker_jwk: Jwk = serde_json::from_value(json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(attacker.verifying_key().as_bytes()),
    }))
    .unwrap();
    let mut with_jwk = fixture.header();
    with_jwk.jwk = Some(attacker_jwk);
    let mut with_jku = fixture.header();
    with_jku.jku = Some("https://attacker.example/jwks.json".to_owned());
    let mut with_x5u = fixture.header();
    with_x5u.x5u = Some("https://attacker.example/cert.pem".to_owned());
    let attacker_key = ed25519_encoding_key(&attacker);
    for (case, header) in [("jwk", with_jwk), ("jku", with_jku), ("x5u", with_x5u)] {
        fixture.assert_invalid(&sign(&header, &claims(), &attacker_key), case);
    }
}

#[test]
fn truncated_token_is_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let raw = genuine.token.expose();
        let without_signature = &raw[..raw.rfind('.').unwrap()];
        let cases = [
            &raw[..raw.len() - 1],
            &raw[..raw.len() - 2],
            &raw[..raw.len() / 2],
            &raw[..=raw.rfind('.').unwrap()],
            without_signature,
            &raw[..raw.find('.').unwrap()],
        ];
        for case in cases {
            fixture.assert_invalid(&token(case), case);
        }
    }
}

#[test]
fn token_with_an_extra_segment_is_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let raw = genuine.token.expose();
        let (header, rest) = raw.split_once('.').unwrap();
        let cases = [
            format!("{raw}.AAAA"),
            format!("{raw}."),
            format!("{header}.{raw}"),
            format!("{header}.{header}.{rest}"),
        ];
        for case in &cases {
            fixture.assert_invalid(&token(case.as_str()), case);
        }
    }
}

#[test]
fn non_base64_characters_are_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        let raw = genuine.token.expose();
        let segment_starts = [0, raw.find('.').unwrap() + 1, raw.rfind('.').unwrap() + 1];
        for start in segment_starts {
            for bad in ["!", "*", "+", "/", " ", "é"] {
                let forged = format!("{}{bad}{}", &raw[..start], &raw[start + 1..]);
                fixture.assert_invalid(&token(forged.as_str()), &forged);
            }
        }
    }
}

#[test]
fn tokens_longer_than_max_token_bytes_are_refused() {
    for fixture in Fixture::both() {
        // Genuinely signed tokens padded to just under and just over the limit.
        let padded = |len: usize| {
            let claims = claims_with("pad", json!("x".repeat(len)));
            fixture.sign(&fixture.header(), &claims)
        };
        let mut len = (MAX_TOKEN_BYTES - padded(0).expose().len()) * 3 / 4 - 8;
        let mut longest_accepted = padded(len);
        assert!(longest_accepted.expose().len() < MAX_TOKEN_BYTES);
        let too_long = loop {
            let next = padded(len + 1);
            if next.expose().len() > MAX_TOKEN_BYTES {
                break next;
            }
            longest_accepted = next;
            len += 1;
        };
        assert!(longest_accepted.expose().len() >= MAX_TOKEN_BYTES - 1);
        assert!(fixture.verify(&longest_accepted).is_ok());
        fixture.assert_invalid(&too_long, "longer than MAX_TOKEN_BYTES");
    }
}

#[test]
fn crit_header_is_refused() {
    // We implement no JWS extension, so every `crit` names one we do not understand.
    for fixture in Fixture::both() {
        for crit in [vec!["exp"], vec!["unknown-ext"], vec![]] {
            let mut header = fixture.header();
            header.crit = Some(crit.iter().map(|s| (*s).to_owned()).collect());
            header.extras.insert("unknown-ext", true);
            fixture.assert_invalid(&fixture.sign(&header, &claims()), &format!("crit {crit:?}"));
        }
        // The control: the same extra header without `crit` is just ignored.
        let mut header = fixture.header();
        header.extras.insert("unknown-ext", true);
        assert!(fixture.verify(&fixture.sign(&header, &claims())).is_ok());
    }
}

#[test]
fn kid_with_path_traversal_or_sql_is_refused() {
    for fixture in Fixture::both() {
        let our_kid = fixture.authority.key_id().to_owned();
        for kid in [
            "../../etc/passwd".to_owned(),
            "/dev/null".to_owned(),
            format!("../../{our_kid}"),
            "' OR 1=1 --".to_owned(),
            format!("{our_kid}' OR '1'='1"),
            format!("{our_kid}\0"),
        ] {
            let header = header(fixture.authority.algorithm(), Some(&kid));
            fixture.assert_invalid(&fixture.sign(&header, &claims()), &format!("kid {kid:?}"));
        }
    }
}

#[test]
fn padded_base64_is_refused() {
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        assert!(fixture.verify(&genuine.token).is_ok());
        let parts: Vec<&str> = genuine.token.expose().split('.').collect();
        for segment in 0..3 {
            for padding in ["=", "=="] {
                let mut padded = parts.clone();
                let with_padding = format!("{}{padding}", parts[segment]);
                padded[segment] = &with_padding;
                let forged = padded.join(".");
                fixture.assert_invalid(&token(forged.as_str()), &forged);
            }
        }
    }
}

#[test]
fn non_canonical_base64_signature_is_refused() {
    use base64::{
        alphabet::URL_SAFE,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let lenient = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    for fixture in Fixture::both() {
        let genuine = fixture
            .authority
            .issue(UserId::generate(), SessionId::generate(), NOW)
            .unwrap();
        assert!(fixture.verify(&genuine.token).is_ok());
        let (signed, signature) = genuine.token.expose().rsplit_once('.').unwrap();
        // Ed25519 (86 characters) leaves 4 unused trailing bits, HS256 (43) leaves 2: the
        // lowest bit of the last character is unused in both.
        assert_ne!(signature.len() % 4, 0);
        let last = *signature.as_bytes().last().unwrap();
        let value = ALPHABET.iter().position(|&c| c == last).unwrap();
        let other = ALPHABET[value ^ 1] as char;
        let altered = format!("{}{other}", &signature[..signature.len() - 1]);
        // Only the unused bits differ: a lenient decoder sees the very same signature.
        assert_eq!(
            lenient.decode(&altered).unwrap(),
            URL_SAFE_NO_PAD.decode(signature).unwrap()
        );
        assert!(URL_SAFE_NO_PAD.decode(&altered).is_err());
        let forged = format!("{signed}.{altered}");
        fixture.assert_invalid(&token(forged.as_str()), "non-canonical signature");
    }
}

#[test]
fn es256_psychic_signature_is_refused() {
    // CVE-2022-21449: ECDSA with r = s = 0 "verifies" any message in a broken verifier. Raw
    // (JWS) and DER forms.
    let zero_raw = URL_SAFE_NO_PAD.encode([0u8; 64]);
    let zero_der = URL_SAFE_NO_PAD.encode([0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    for fixture in Fixture::both() {
        let header = b64_json(&json!({
            "alg": "ES256",
            "typ": ACCESS_TOKEN_TYP,
            "kid": fixture.authority.key_id(),
        }));
        let payload = b64_json(&claims());
        for signature in [&zero_raw, &zero_der] {
            let forged = token(format!("{header}.{payload}.{signature}"));
            fixture.assert_invalid(&forged, &format!("ES256 signature {signature}"));
        }
    }
}

fn scheduled(key: &SigningKey, starts_at: UnixSeconds) -> ScheduledKey {
    ScheduledKey {
        material: SigningKeyMaterial::Ed25519(key.clone()),
        starts_at,
    }
}

#[test]
fn the_key_that_signs_is_the_latest_started_and_every_key_verifies() {
    let (old, new) = (
        SigningKey::generate(&mut rand::rngs::OsRng),
        SigningKey::generate(&mut rand::rngs::OsRng),
    );
    let ttl = Duration::from_secs(TTL as u64);
    let leeway = Duration::from_secs(LEEWAY as u64);
    let keys = vec![scheduled(&new, 1_000), scheduled(&old, 0)];
    let authority = TokenAuthority::with_keys(keys, "authd", "authd", ttl, leeway).unwrap();
    let user = UserId::generate();
    let before = authority.issue(user, SessionId::generate(), 999).unwrap();
    let after = authority.issue(user, SessionId::generate(), 1_000).unwrap();
    let kid = |token: &IssuedToken| decode_header(token.token.expose()).unwrap().kid.unwrap();
    assert_eq!(kid(&before), authority.schedule()[0].0);
    assert_eq!(kid(&after), authority.schedule()[1].0);
    assert!(authority.decode(&before.token).is_ok());
    assert!(authority.decode(&after.token).is_ok());
}

#[test]
fn a_token_decoded_before_its_key_was_removed_is_not_current() {
    let (old, new) = (
        SigningKey::generate(&mut rand::rngs::OsRng),
        SigningKey::generate(&mut rand::rngs::OsRng),
    );
    let ttl = Duration::from_secs(TTL as u64);
    let leeway = Duration::from_secs(LEEWAY as u64);
    let authority = TokenAuthority::with_keys(
        vec![scheduled(&old, 0), scheduled(&new, 1_000)],
        "authd",
        "authd",
        ttl,
        leeway,
    )
    .unwrap();
    let token = authority
        .issue(UserId::generate(), SessionId::generate(), 10)
        .unwrap();
    let decoded = authority.decode(&token.token).unwrap();
    assert!(authority.decoded_with_current_keys(&decoded));
    // Adding a key keeps what was decoded current; removing one does not.
    let added = authority
        .replace_keys(vec![
            scheduled(&old, 0),
            scheduled(&new, 1_000),
            scheduled(&SigningKey::generate(&mut rand::rngs::OsRng), 2_000),
        ])
        .unwrap();
    assert!(added.changed && !added.lost_keys);
    assert!(authority.decoded_with_current_keys(&decoded));
    let removed = authority
        .replace_keys(vec![scheduled(&new, 1_000)])
        .unwrap();
    assert!(removed.lost_keys);
    assert!(!authority.decoded_with_current_keys(&decoded));
    assert!(matches!(
        authority.decode(&token.token),
        Err(TokenError::Invalid)
    ));
}
