//! Access tokens: RFC 9068 JWTs (header `typ: at+jwt`, `kid`; claims `iss`, `aud`, `sub`, `iat`,
//! `exp`, `jti`), signed with Ed25519 (default) or HS256. Keys, the header and the `Validation`
//! are built once at start-up.
//!
//! Verification pins the one configured algorithm and checks everything jsonwebtoken leaves to the
//! caller: `typ`, `kid`, the presence and form of `sub`/`jti`/`iat`, and (here, against an explicit
//! `now`) `exp`, `nbf` and `iat` with the clock leeway. `jwk`/`jku`/`x5u` headers are ignored: the
//! key is never taken from the token.

use std::{fs, io::Write as _, path::Path, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    clock::UnixSeconds,
    domain::{AccessToken, Jti, UserId},
};

/// The JWT `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing; ours are about 400 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token is not acceptable; each maps to an ErrorInfo reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token in the request.
    #[error("no access token")]
    Missing,
    /// Malformed, forged, for another issuer/audience, or missing claims.
    #[error("access token is invalid")]
    Invalid,
    /// Past `exp` (plus leeway).
    #[error("access token has expired")]
    Expired,
    /// Revoked by a Logout.
    #[error("access token has been revoked")]
    Revoked,
}

/// How tokens are signed.
pub enum SigningKeyMaterial {
    /// An Ed25519 key pair.
    Ed25519(SigningKey),
    /// A shared HS256 secret.
    Hs256(SecretString),
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`: the user.
    pub user_id: UserId,
    /// `jti`: the token's unique id.
    pub jti: Jti,
    /// `iat`.
    pub issued_at: UnixSeconds,
    /// `exp`.
    pub expires_at: UnixSeconds,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: AccessToken,
    /// Its claims.
    pub claims: TokenClaims,
}

/// The claims as they travel in the JWT.
#[derive(Debug, Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    jti: String,
}

/// Issues and verifies access tokens with one key.
pub struct TokenAuthority {
    algorithm: Algorithm,
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    validation: Validation,
    header: Header,
    kid: String,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    leeway_seconds: i64,
}

impl TokenAuthority {
    /// Builds the keys, header and validation once.
    pub fn new(
        key: SigningKeyMaterial,
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Result<Self, anyhow::Error> {
        let (algorithm, encoding_key, decoding_key, kid) = match key {
            SigningKeyMaterial::Ed25519(signing_key) => {
                let der = signing_key.to_pkcs8_der()?;
                let public = signing_key.verifying_key();
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_der(der.as_bytes()),
                    DecodingKey::from_ed_der(public.as_bytes()),
                    ed25519_thumbprint(public.as_bytes()),
                )
            }
            SigningKeyMaterial::Hs256(secret) => {
                let bytes = secret.expose_secret().as_bytes();
                (
                    Algorithm::HS256,
                    EncodingKey::from_secret(bytes),
                    DecodingKey::from_secret(bytes),
                    hs256_key_id(bytes),
                )
            }
        };
        let mut header = Header::new(algorithm);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(kid.clone());

        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked in `check_time` against an explicit `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;

        Ok(Self {
            algorithm,
            encoding_key,
            decoding_key,
            validation,
            header,
            kid,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_seconds: i64::try_from(ttl.as_secs())?,
            leeway_seconds: i64::try_from(leeway.as_secs())?,
        })
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The `kid` of issued tokens.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The access token lifetime in seconds.
    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// The clock leeway in seconds.
    pub fn leeway_seconds(&self) -> i64 {
        self.leeway_seconds
    }

    /// Issues a token for `user_id`, valid from `now` for the configured lifetime.
    pub fn issue(&self, user_id: UserId, now: UnixSeconds) -> Result<IssuedToken, anyhow::Error> {
        let claims = TokenClaims {
            user_id,
            jti: Jti::generate(),
            issued_at: now,
            expires_at: now + self.ttl_seconds,
        };
        let wire = WireClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            iat: claims.issued_at,
            exp: claims.expires_at,
            nbf: None,
            jti: claims.jti.to_string(),
        };
        let jwt = jsonwebtoken::encode(&self.header, &wire, &self.encoding_key)?;
        let token = AccessToken::new(jwt)
            .ok_or_else(|| anyhow::anyhow!("jsonwebtoken produced an empty token"))?;
        Ok(IssuedToken { token, claims })
    }

    /// Verifies everything about a token: signature, header, claims and time.
    pub fn verify(&self, token: &AccessToken, now: UnixSeconds) -> Result<TokenClaims, TokenError> {
        let claims = self.decode(token)?;
        self.check_time(&claims, now)?;
        Ok(claims.claims)
    }

    /// Verifies signature, header and claims, but not time: Logout accepts expired tokens.
    pub fn decode(&self, token: &AccessToken) -> Result<DecodedToken, TokenError> {
        let raw = token.expose();
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<WireClaims>(raw, &self.decoding_key, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let typ_ok = data.header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok || data.header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        let wire = data.claims;
        let user_id = UserId::parse(&wire.sub).ok_or(TokenError::Invalid)?;
        let jti = Jti::parse(&wire.jti).ok_or(TokenError::Invalid)?;
        if wire.exp < wire.iat {
            return Err(TokenError::Invalid);
        }
        Ok(DecodedToken {
            claims: TokenClaims {
                user_id,
                jti,
                issued_at: wire.iat,
                expires_at: wire.exp,
            },
            not_before: wire.nbf,
        })
    }

    /// Checks `exp`, `nbf` and `iat` against `now`, allowing the leeway.
    pub fn check_time(&self, token: &DecodedToken, now: UnixSeconds) -> Result<(), TokenError> {
        if token.claims.issued_at > now.saturating_add(self.leeway_seconds) {
            return Err(TokenError::Invalid);
        }
        if token
            .not_before
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_seconds))
        {
            return Err(TokenError::Invalid);
        }
        if self.is_expired(&token.claims, now) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Whether a token is past `exp + leeway`.
    pub fn is_expired(&self, claims: &TokenClaims, now: UnixSeconds) -> bool {
        now > self.accepted_until(claims)
    }

    /// The last second at which the token is still accepted: `exp + leeway`. A revocation must
    /// live at least this long so that a revoked token cannot come back inside the leeway window.
    pub fn accepted_until(&self, claims: &TokenClaims) -> UnixSeconds {
        claims.expires_at.saturating_add(self.leeway_seconds)
    }
}

/// A token whose signature and claims are valid, before its time is checked.
#[derive(Debug, Clone, Copy)]
pub struct DecodedToken {
    /// Its claims.
    pub claims: TokenClaims,
    not_before: Option<UnixSeconds>,
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key: a stable `kid` that names the key.
fn ed25519_thumbprint(public_key: &[u8; 32]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public_key)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()))
}

/// A `kid` for an HS256 secret: a domain-separated hash prefix that names the secret without
/// revealing it.
fn hs256_key_id(secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"authd hs256 kid\0");
    hasher.update(secret);
    format!("hs256-{}", URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12]))
}

/// Loads the Ed25519 signing key from `path`, generating one (mode 0600) if the file is absent.
/// Generation is atomic (write a temporary file, then hard-link it into place), so instances
/// starting at once agree on one key.
pub fn load_or_generate_ed25519_key(path: &Path) -> Result<(SigningKey, bool), anyhow::Error> {
    match fs::read_to_string(path) {
        Ok(pem) => {
            warn_if_readable_by_others(path);
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key: {e}", path.display())
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key.to_pkcs8_pem(LineEnding::LF)?;
            write_new_private_file(path, pem.as_bytes())?;
            // Another instance may have won the race: use whatever is in place now.
            let (key, _) = load_or_generate_ed25519_key(path)?;
            Ok((key, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), anyhow::Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".signing-key.{}.tmp", uuid::Uuid::new_v4()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        match fs::hard_link(&temp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&temp);
    result.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the signing key file is readable by group or others; chmod 600 it"
            );
        }
    }
}
