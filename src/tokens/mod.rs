//! Access tokens: RFC 9068 JWTs (header `typ: at+jwt`, `kid`; claims `iss`, `aud`, `sub`, `iat`,
//! `exp`, `jti`, `sid`), signed with Ed25519 (default) or HS256.
//!
//! - `keys.rs`: a signing key — loading, generating (0600, atomically), permissions, `kid`s.
//! - `directory.rs`: the keys directory — which keys exist and when each starts signing; rotate,
//!   prune, list.
//! - `ring.rs`: the key ring — which key signs at a given second, which verify; no file I/O.
//! - `jwt.rs`: `TokenAuthority`, which issues and verifies with the ring; no file I/O.
//! - `cache.rs`: the verified-token cache that lets most Verify calls skip the signature check.

mod cache;
pub mod directory;
mod jwt;
mod keys;
mod ring;
#[cfg(test)]
mod tests;

pub use cache::{DEFAULT_CAPACITY as DEFAULT_VERIFY_CACHE_ENTRIES, VerifiedTokenCache};
pub use jwt::{ACCESS_TOKEN_TYP, DecodedToken, KeysReplaced, MAX_TOKEN_BYTES, TokenAuthority};
pub use keys::{
    SigningKeyMaterial, create_private_dir, load_ed25519_key, load_or_generate_ed25519_key,
};
pub use ring::ScheduledKey;

use crate::{
    clock::UnixSeconds,
    domain::{AccessToken, Jti, SessionId, UserId},
};

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
    /// Revoked: by a Logout, or its session or user ended it.
    #[error("access token has been revoked")]
    Revoked,
}

impl TokenError {
    /// The reason every front end reports (gRPC ErrorInfo, the gateways' JSON bodies).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "TOKEN_MISSING",
            Self::Invalid => "TOKEN_INVALID",
            Self::Expired => "TOKEN_EXPIRED",
            Self::Revoked => "TOKEN_REVOKED",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`: the user.
    pub user_id: UserId,
    /// `jti`: the token's unique id.
    pub jti: Jti,
    /// `sid`: the session it was issued in; `None` for tokens issued before sessions existed.
    pub session_id: Option<SessionId>,
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
