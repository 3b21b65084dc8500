//! What the fuzz targets share: two fixed token authorities (EdDSA and HS256), the checks run on
//! every token, and the checks run on the API's own request parsing (`Registration::parse`,
//! `Credentials::parse`, the very functions the gRPC handlers call).
//!
//! Every function here panics only when authd breaks one of its own promises; libFuzzer reports
//! that panic as a crash.

use std::{fs, io, path::Path, sync::OnceLock, time::Duration};

use authd::{
    clock::UnixSeconds,
    domain::{
        AccessToken, Credentials, Email, FieldViolation, Password, Registration, UserId, Username,
    },
    pb,
    tokens::{MAX_TOKEN_BYTES, SigningKeyMaterial, TokenAuthority, TokenClaims, TokenError},
};
use secrecy::SecretString;

/// The "now" tokens are verified at; seed tokens are issued at this instant.
pub const NOW: UnixSeconds = 1_700_000_000;
/// authd's defaults.
pub const ISSUER: &str = "authd";
pub const AUDIENCE: &str = "authd";
pub const TTL_SECONDS: u64 = 900;
pub const LEEWAY_SECONDS: i64 = 5;
/// Fixed keys, so that seed tokens stay valid from one run to the next.
pub const ED25519_SEED: [u8; 32] = *b"authd-fuzz-fixed-ed25519-seed-01";
pub const HS256_SECRET: &str = "authd-fuzz-fixed-hs256-secret-0123456789";

/// The two authorities, built once per process.
pub struct Authorities {
    pub ed25519: TokenAuthority,
    pub hs256: TokenAuthority,
}

impl Authorities {
    /// Both, EdDSA first.
    pub fn both(&self) -> [&TokenAuthority; 2] {
        [&self.ed25519, &self.hs256]
    }
}

/// The authorities, built on first use.
pub fn authorities() -> &'static Authorities {
    static AUTHORITIES: OnceLock<Authorities> = OnceLock::new();
    AUTHORITIES.get_or_init(|| {
        let build = |key| {
            TokenAuthority::new(
                key,
                ISSUER,
                AUDIENCE,
                Duration::from_secs(TTL_SECONDS),
                Duration::from_secs(LEEWAY_SECONDS as u64),
            )
            .expect("the fixed authority configuration is valid")
        };
        Authorities {
            ed25519: build(SigningKeyMaterial::Ed25519(
                ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED),
            )),
            hs256: build(SigningKeyMaterial::Hs256(SecretString::from(HS256_SECRET))),
        }
    })
}

/// Current-time values worth checking a decoded token against: the fixed one and the extremes
/// (the time arithmetic must saturate, never overflow).
const EXTREME_NOWS: [UnixSeconds; 5] = [NOW, 0, -1, i64::MIN, i64::MAX];

/// `AccessToken::new` followed by `decode` and `verify` on both authorities, as Verify and Logout
/// do. Returns the claims of the authority that accepted it at `now`, if any.
pub fn check_token(raw: &str, now: UnixSeconds) -> Option<TokenClaims> {
    let token = check_access_token(raw)?;
    let authorities = authorities();
    let mut accepted_by = Vec::new();
    let mut verified = None;
    for authority in authorities.both() {
        let decoded = authority.decode(&token);
        let result = authority.verify(&token, now);
        if let Ok(decoded) = &decoded {
            accepted_by.push(authority.algorithm());
            assert!(
                token.expose().len() <= MAX_TOKEN_BYTES,
                "a token over MAX_TOKEN_BYTES was decoded"
            );
            assert!(
                decoded.claims.expires_at >= decoded.claims.issued_at,
                "decoded a token that expires before it was issued: {:?}",
                decoded.claims
            );
            // `verify` is exactly `decode` + `check_time`.
            let checked = authority.check_time(decoded, now).map(|()| decoded.claims);
            assert_eq!(result, checked, "verify disagrees with decode + check_time");
            for extreme in EXTREME_NOWS {
                let _ = authority.check_time(decoded, extreme);
                let _ = authority.is_expired(&decoded.claims, extreme);
            }
            let until = authority.accepted_until(&decoded.claims);
            assert!(until >= decoded.claims.expires_at);
        } else {
            assert_eq!(
                result,
                Err(TokenError::Invalid),
                "decode refused the token but verify said something else"
            );
        }
        if let Ok(claims) = result {
            assert!(claims.issued_at <= now.saturating_add(LEEWAY_SECONDS));
            assert!(now <= claims.expires_at.saturating_add(LEEWAY_SECONDS));
            verified = Some(claims);
        }
    }
    assert!(
        accepted_by.len() < 2,
        "one token was accepted by both the EdDSA and the HS256 authority"
    );
    verified
}

/// `AccessToken::new`: `None` exactly for blank input, otherwise the trimmed text.
pub fn check_access_token(raw: &str) -> Option<AccessToken> {
    let token = AccessToken::new(raw);
    match &token {
        None => assert!(raw.trim().is_empty(), "a non-blank token was refused"),
        Some(token) => {
            assert!(!token.expose().is_empty());
            assert_eq!(token.expose(), raw.trim());
        }
    }
    token
}

/// The API's Register parsing (`Registration::parse`, strength check included), checked against
/// the per-field parsers: a registration is accepted only if every field is, and each refusal
/// names a Register field. Returns whether the registration would reach the service.
pub fn check_register(request: &pb::RegisterRequest) -> bool {
    let email = check_email(&request.email);
    let password = check_new_password(&request.password);
    let username = check_username(&request.username);
    let fields_ok = email.is_ok() && password.is_ok() && username.is_ok();
    match Registration::parse(&request.email, &request.password, &request.username) {
        Ok(registration) => {
            assert!(fields_ok, "a registration with a refused field was accepted");
            assert_eq!(
                registration.email.normalized(),
                email.expect("accepted").normalized()
            );
            true
        }
        Err(violations) => {
            assert!(!violations.is_empty(), "a refusal names at least one field");
            for violation in &violations {
                assert!(
                    ["email", "password", "username"].contains(&violation.field),
                    "{violation}"
                );
            }
            false
        }
    }
}

/// The API's Login parsing (`Credentials::parse`): accepted exactly when both fields are.
pub fn check_login(request: &pb::LoginRequest) -> bool {
    let fields_ok = check_email(&request.email).is_ok()
        && check_offered_password(&request.password).is_ok();
    let accepted = Credentials::parse(&request.email, &request.password).is_ok();
    assert_eq!(accepted, fields_ok, "Credentials::parse disagrees with its fields");
    accepted
}

/// The API's Logout/Verify parsing of the message field, then verification.
pub fn check_token_field(access_token: &str) {
    check_token(access_token, NOW);
}

/// `Email::parse`, and what an accepted email promises.
pub fn check_email(raw: &str) -> Result<Email, FieldViolation> {
    let result = Email::parse(raw);
    match &result {
        Ok(email) => {
            assert_eq!(email.as_str(), raw.trim());
            // The identity's domain is in its ASCII (IDNA) form, and it fits the length limit.
            let (_, domain) = email.normalized().rsplit_once('@').expect("an identity has an @");
            assert!(domain.is_ascii(), "{:?}", email.normalized());
            assert!(email.normalized().chars().count() <= 254);
            assert!(!email.as_str().is_empty());
            assert!(email.as_str().chars().count() <= 254);
            assert!(!email.as_str().chars().any(char::is_control));
            let _ = format!("{email:?}");
        }
        Err(violation) => assert_eq!(violation.field, "email"),
    }
    result
}

/// `Password::parse_new`, and what an accepted new password promises.
pub fn check_new_password(raw: &str) -> Result<Password, FieldViolation> {
    let result = Password::parse_new(raw);
    match &result {
        Ok(password) => {
            let normalized = std::str::from_utf8(password.expose_bytes())
                .expect("a normalised password is UTF-8");
            let chars = normalized.chars().count();
            assert!((8..=128).contains(&chars), "accepted {chars} characters");
            assert!(!raw.chars().any(char::is_control));
            assert!(!normalized.chars().any(char::is_control));
            // A password that may be registered may also be offered at Login, as the same bytes.
            let offered = Password::parse_offered(raw).expect("a new password can be offered");
            assert_eq!(offered.expose_bytes(), password.expose_bytes());
            assert_eq!(format!("{password:?}"), "Password(<redacted>)");
        }
        Err(violation) => assert_eq!(violation.field, "password"),
    }
    result
}

/// `Password::parse_offered`.
pub fn check_offered_password(raw: &str) -> Result<Password, FieldViolation> {
    let result = Password::parse_offered(raw);
    match &result {
        Ok(password) => {
            let normalized = std::str::from_utf8(password.expose_bytes())
                .expect("a normalised password is UTF-8");
            let chars = normalized.chars().count();
            assert!((1..=128).contains(&chars), "accepted {chars} characters");
        }
        Err(violation) => assert_eq!(violation.field, "password"),
    }
    result
}

/// `Username::parse`.
pub fn check_username(raw: &str) -> Result<Option<Username>, FieldViolation> {
    let result = Username::parse(raw);
    match &result {
        Ok(None) => assert!(raw.trim().is_empty()),
        Ok(Some(name)) => {
            assert_eq!(name.as_str(), raw.trim());
            assert!(name.as_str().chars().count() <= 64);
            assert!(!name.as_str().chars().any(char::is_control));
        }
        Err(violation) => assert_eq!(violation.field, "username"),
    }
    result
}

/// Genuine tokens, issued at [`NOW`] by both authorities.
pub fn seed_tokens() -> Vec<(String, String)> {
    let mut seeds = Vec::new();
    for (name, authority) in [
        ("eddsa", &authorities().ed25519),
        ("hs256", &authorities().hs256),
    ] {
        for n in 1..=2 {
            let issued = authority
                .issue(UserId::generate(), NOW)
                .expect("the fixed authority issues tokens");
            assert_eq!(authority.verify(&issued.token, NOW), Ok(issued.claims));
            seeds.push((format!("{name}-{n}"), issued.token.expose().to_owned()));
        }
    }
    seeds
}

/// Writes [`seed_tokens`] into `dir`, one file each (run once; the files are committed).
pub fn write_token_seeds(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, token) in seed_tokens() {
        fs::write(dir.join(name), token)?;
    }
    Ok(())
}

/// Writes encoded requests of each type into `dir` (run once; the files are committed).
pub fn write_request_seeds(dir: &Path) -> io::Result<()> {
    use prost::Message as _;
    fs::create_dir_all(dir)?;
    let register = pb::RegisterRequest {
        email: "Ada.Lovelace@Example.com".to_owned(),
        password: "correct horse battery staple".to_owned(),
        username: "Ada".to_owned(),
    };
    let login = pb::LoginRequest {
        email: "ada.lovelace@example.com".to_owned(),
        password: "pässwörd-密码".to_owned(),
    };
    let token = seed_tokens().remove(0).1;
    let verify = pb::VerifyRequest {
        access_token: token,
    };
    fs::write(dir.join("register"), register.encode_to_vec())?;
    fs::write(dir.join("login"), login.encode_to_vec())?;
    fs::write(dir.join("verify"), verify.encode_to_vec())?;
    Ok(())
}
