//! Structured tokens with a genuine signature, so that the fuzzer gets past the signature check
//! (which random bytes never do) and reaches everything authd checks after it: `typ`, `kid`, the
//! claims' presence, types and form, `exp`/`iat`/`nbf` against `now` with the leeway.
//!
//! The header and the payload are built field by field (each field absent, right, or any JSON
//! value; keys may repeat; extra fields), or are arbitrary JSON text or bytes; the signature is
//! genuine (the authority's key), made with the other authority's key, or arbitrary.
//!
//! The first variant of every choice is the right one, so zero bytes (which `arbitrary` reads as
//! first variants, zeros and empty lists) make a genuine, valid token: the seeds
//! `corpus/verify_signed_claims/valid-*` are zeros, and the fuzzer starts on the accepting path.
//!
//! Besides "never panics", whenever `verify` accepts a token this target re-reads the header and
//! payload it signed and checks that they really say what authd promised: the configured `alg`,
//! an RFC 9068 `typ`, our `kid`, no `crit`, our `iss` and `aud`, a UUID `sub` and `jti` equal to the returned
//! claims, `iat`/`exp` equal to the returned ones and within the leeway of `now`, and any `nbf`
//! already reached.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use authd::tokens::TokenAuthority;
use authd_fuzz::{AUDIENCE, ED25519_SEED, HS256_SECRET, ISSUER, LEEWAY_SECONDS, NOW};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Debug, Arbitrary)]
struct Input {
    hs256: bool,
    header: Part<HeaderSpec>,
    payload: Part<ClaimsSpec>,
    signature: Signature,
    now: Now,
    /// Blanks around the token (AccessToken::new trims them).
    padded: bool,
}

/// One part of the token before base64url.
#[derive(Debug, Arbitrary)]
enum Part<T> {
    Built(T),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Signature {
    Genuine,
    /// Signed with the other authority's key and algorithm.
    OtherKey,
    /// These bytes, base64url-encoded.
    Bytes(Vec<u8>),
    /// This text as it is.
    Text(String),
}

#[derive(Debug, Arbitrary)]
enum Now {
    Fixed,
    Offset(i32),
    Any(i64),
}

/// A field: set right, left out, or set to any JSON value.
#[derive(Debug, Arbitrary)]
enum Field<T> {
    Right(T),
    Absent,
    Any(Json),
}

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Strs(Vec<String>),
    Object(Vec<(String, String)>),
}

#[derive(Debug, Arbitrary)]
struct HeaderSpec {
    alg: Field<AlgChoice>,
    typ: Field<TypChoice>,
    kid: Field<()>,
    /// Fields after the others: repeats of the above, `jwk`/`jku`/`crit`…, anything.
    extra: Vec<(Key, Json)>,
}

#[derive(Debug, Arbitrary)]
enum AlgChoice {
    Configured,
    Other,
    None,
}

#[derive(Debug, Arbitrary)]
enum TypChoice {
    AtJwt,
    ApplicationAtJwt,
    Jwt,
    /// "at+jwt" with the letters whose bit is set upper-cased.
    Cased(u8),
}

#[derive(Debug, Arbitrary)]
struct ClaimsSpec {
    iss: Field<()>,
    aud: Field<AudChoice>,
    sub: Field<UuidText>,
    jti: Field<UuidText>,
    iat: Field<Time>,
    exp: Field<Time>,
    nbf: Field<Time>,
    extra: Vec<(Key, Json)>,
}

#[derive(Debug, Arbitrary)]
enum AudChoice {
    One,
    /// In a list, at this position among other strings.
    InList(u8, Vec<String>),
}

#[derive(Debug, Arbitrary)]
struct UuidText {
    bytes: [u8; 16],
    form: UuidForm,
}

#[derive(Debug, Arbitrary)]
enum UuidForm {
    Hyphenated,
    Simple,
    Urn,
    Braced,
    Upper,
}

#[derive(Debug, Arbitrary)]
enum Time {
    /// NOW plus this many seconds.
    NearNow(i16),
    Absolute(i64),
}

#[derive(Debug, Arbitrary)]
enum Key {
    Alg,
    Typ,
    Kid,
    Jwk,
    Jku,
    X5u,
    Crit,
    Iss,
    Aud,
    Sub,
    Jti,
    Iat,
    Exp,
    Nbf,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Alg => "alg",
            Key::Typ => "typ",
            Key::Kid => "kid",
            Key::Jwk => "jwk",
            Key::Jku => "jku",
            Key::X5u => "x5u",
            Key::Crit => "crit",
            Key::Iss => "iss",
            Key::Aud => "aud",
            Key::Sub => "sub",
            Key::Jti => "jti",
            Key::Iat => "iat",
            Key::Exp => "exp",
            Key::Nbf => "nbf",
            Key::Other(name) => name,
        }
    }
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::from(*b),
            Json::I64(n) => Value::from(*n),
            Json::U64(n) => Value::from(*n),
            Json::F64(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::from(s.as_str()),
            Json::Strs(v) => Value::from(v.clone()),
            Json::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        }
    }
}

impl Time {
    fn value(&self) -> Value {
        match self {
            Time::NearNow(offset) => Value::from(NOW + i64::from(*offset)),
            Time::Absolute(n) => Value::from(*n),
        }
    }
}

impl UuidText {
    fn value(&self) -> Value {
        let uuid = uuid::Uuid::from_bytes(self.bytes);
        Value::from(match self.form {
            UuidForm::Hyphenated => uuid.hyphenated().to_string(),
            UuidForm::Simple => uuid.simple().to_string(),
            UuidForm::Urn => uuid.urn().to_string(),
            UuidForm::Braced => uuid.braced().to_string(),
            UuidForm::Upper => uuid.hyphenated().to_string().to_uppercase(),
        })
    }
}

/// A JSON object as text, keys in order and possibly repeated (a map could not repeat them).
struct ObjectText(Vec<(String, Value)>);

impl ObjectText {
    fn field<T>(&mut self, key: &str, field: &Field<T>, right: impl FnOnce(&T) -> Value) {
        match field {
            Field::Absent => {}
            Field::Right(choice) => self.0.push((key.to_owned(), right(choice))),
            Field::Any(json) => self.0.push((key.to_owned(), json.value())),
        }
    }

    fn extra(&mut self, extra: &[(Key, Json)]) {
        for (key, json) in extra {
            self.0.push((key.name().to_owned(), json.value()));
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", fields.join(",")).into_bytes()
    }
}

struct Signer {
    authority: &'static TokenAuthority,
    algorithm: Algorithm,
    key: EncodingKey,
}

fn signers() -> &'static [Signer; 2] {
    static SIGNERS: OnceLock<[Signer; 2]> = OnceLock::new();
    SIGNERS.get_or_init(|| {
        let authorities = authd_fuzz::authorities();
        let der = ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED)
            .to_pkcs8_der()
            .expect("the fixed key encodes");
        [
            Signer {
                authority: &authorities.ed25519,
                algorithm: Algorithm::EdDSA,
                key: EncodingKey::from_ed_der(der.as_bytes()),
            },
            Signer {
                authority: &authorities.hs256,
                algorithm: Algorithm::HS256,
                key: EncodingKey::from_secret(HS256_SECRET.as_bytes()),
            },
        ]
    })
}

fn alg_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        _ => unreachable!("only EdDSA and HS256 are configured"),
    }
}

fn header_bytes(spec: &HeaderSpec, signer: &Signer, other: &Signer) -> Vec<u8> {
    let mut object = ObjectText(Vec::new());
    object.field("alg", &spec.alg, |choice| {
        Value::from(match choice {
            AlgChoice::Configured => alg_name(signer.algorithm),
            AlgChoice::Other => alg_name(other.algorithm),
            AlgChoice::None => "none",
        })
    });
    object.field("typ", &spec.typ, |choice| {
        Value::from(match choice {
            TypChoice::AtJwt => "at+jwt".to_owned(),
            TypChoice::ApplicationAtJwt => "application/at+jwt".to_owned(),
            TypChoice::Jwt => "JWT".to_owned(),
            TypChoice::Cased(bits) => "at+jwt"
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits & (1 << i) != 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        })
    });
    object.field("kid", &spec.kid, |()| {
        Value::from(signer.authority.key_id())
    });
    object.extra(&spec.extra);
    object.into_bytes()
}

fn payload_bytes(spec: &ClaimsSpec) -> Vec<u8> {
    let mut object = ObjectText(Vec::new());
    object.field("iss", &spec.iss, |()| Value::from(ISSUER));
    object.field("aud", &spec.aud, |choice| match choice {
        AudChoice::One => Value::from(AUDIENCE),
        AudChoice::InList(at, others) => {
            let mut list = others.clone();
            list.insert(usize::from(*at).min(list.len()), AUDIENCE.to_owned());
            Value::from(list)
        }
    });
    object.field("sub", &spec.sub, UuidText::value);
    object.field("jti", &spec.jti, UuidText::value);
    object.field("iat", &spec.iat, Time::value);
    object.field("exp", &spec.exp, Time::value);
    object.field("nbf", &spec.nbf, Time::value);
    object.extra(&spec.extra);
    object.into_bytes()
}

fn part_bytes<T>(part: &Part<T>, built: impl FnOnce(&T) -> Vec<u8>) -> Vec<u8> {
    match part {
        Part::Built(spec) => built(spec),
        Part::Text(text) => text.clone().into_bytes(),
        Part::Bytes(bytes) => bytes.clone(),
    }
}

/// The top-level members of a JSON object, in order, repeats kept; `None` if it is not one.
fn members(json: &[u8]) -> Option<Vec<(String, Value)>> {
    struct Members(Vec<(String, Value)>);
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Members, A::Error> {
                    let mut members = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        members.push(entry);
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    serde_json::from_slice::<Members>(json).ok().map(|m| m.0)
}

/// The one value of `key`; panics if the key is missing or repeated.
fn only<'a>(members: &'a [(String, Value)], key: &str, part: &str) -> &'a Value {
    let mut values = members.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
    let value = values
        .next()
        .unwrap_or_else(|| panic!("accepted a token whose {part} has no {key:?}"));
    assert!(
        values.next().is_none(),
        "accepted a token whose {part} repeats {key:?}"
    );
    value
}

fuzz_target!(
    init: {
        signers();
    },
    |input: Input| {
        let [ed25519, hs256] = signers();
        let (signer, other) = if input.hs256 {
            (hs256, ed25519)
        } else {
            (ed25519, hs256)
        };
        let header = part_bytes(&input.header, |spec| header_bytes(spec, signer, other));
        let payload = part_bytes(&input.payload, payload_bytes);
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(&payload)
        );
        let signature = match &input.signature {
            Signature::Genuine => jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key, signer.algorithm)
                .expect("the fixed key signs"),
            Signature::OtherKey => jsonwebtoken::crypto::sign(message.as_bytes(), &other.key, other.algorithm)
                .expect("the fixed key signs"),
            Signature::Bytes(bytes) => URL_SAFE_NO_PAD.encode(bytes),
            Signature::Text(text) => text.clone(),
        };
        let token = if input.padded {
            format!(" \t{message}.{signature}\r\n")
        } else {
            format!("{message}.{signature}")
        };
        let now = match input.now {
            Now::Fixed => NOW,
            Now::Offset(offset) => NOW + i64::from(offset),
            Now::Any(now) => now,
        };

        // Both authorities, with every consistency check of verify_token.
        let Some(claims) = authd_fuzz::check_token(&token, now) else {
            return;
        };

        // Accepted: the signed header and payload must say what authd promised.
        assert!(
            !matches!(input.signature, Signature::Bytes(_) | Signature::Text(_)),
            "accepted a token with a forged signature"
        );
        let signed_by = if matches!(input.signature, Signature::Genuine) { signer } else { other };
        let header = members(&header).expect("accepted a token whose header is not a JSON object");
        let payload = members(&payload).expect("accepted a token whose payload is not a JSON object");

        assert_eq!(only(&header, "alg", "header"), alg_name(signed_by.algorithm));
        let typ = only(&header, "typ", "header").as_str().expect("typ is a string");
        assert!(
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
            "accepted typ {typ:?}"
        );
        assert_eq!(only(&header, "kid", "header"), signed_by.authority.key_id());
        // No JWS extension is understood, so a `crit` must have been refused.
        assert!(
            header.iter().all(|(k, v)| k != "crit" || v.is_null()),
            "accepted a token with a crit header"
        );

        assert_eq!(only(&payload, "iss", "payload"), ISSUER);
        assert_eq!(only(&payload, "aud", "payload"), AUDIENCE);
        let sub = only(&payload, "sub", "payload").as_str().expect("sub is a string");
        assert_eq!(uuid::Uuid::try_parse(sub).ok(), Some(claims.user_id.as_uuid()));
        let jti = only(&payload, "jti", "payload").as_str().expect("jti is a string");
        assert_eq!(uuid::Uuid::try_parse(jti).ok(), Some(claims.jti.as_uuid()));
        assert_eq!(only(&payload, "iat", "payload").as_i64(), Some(claims.issued_at));
        assert_eq!(only(&payload, "exp", "payload").as_i64(), Some(claims.expires_at));
        assert!(claims.issued_at <= claims.expires_at);
        assert!(claims.issued_at <= now.saturating_add(LEEWAY_SECONDS));
        assert!(now <= claims.expires_at.saturating_add(LEEWAY_SECONDS));
        if payload.iter().any(|(k, _)| k == "nbf") {
            let nbf = only(&payload, "nbf", "payload");
            if !nbf.is_null() {
                let nbf = nbf.as_i64().expect("nbf is an integer");
                assert!(nbf <= now.saturating_add(LEEWAY_SECONDS), "accepted before nbf");
            }
        }
    }
);
