//! What a gateway is told about a request it protects (Envoy ext_authz `Check` and the HTTP
//! forward-auth `/verify`): the outcome of Verify's checks as an HTTP answer. Accepted: the
//! headers that go upstream. Refused: 401 with an RFC 6750 challenge. Undecidable (the revocation
//! store cannot be asked): 503 with `retry-after`, a refusal, never a pass. The two front ends
//! only translate this into their own wire format.

use crate::{
    service::ServiceError,
    tokens::{TokenClaims, TokenError},
};

/// The realm of authd's `WWW-Authenticate` challenges.
pub const REALM: &str = "authd";
/// Seconds a gateway's client should wait after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The outcome for one request.
#[derive(Debug)]
pub enum Verdict {
    /// The token verified: forward the request with these claims.
    Allow(TokenClaims),
    /// No bearer token was sent (RFC 6750 §3.1: the challenge carries no error code).
    NoToken,
    /// A token was sent and refused.
    InvalidToken(TokenError),
    /// The revocation store could not be asked: refused, retry later.
    Unavailable,
    /// A bug or corrupt data (details in the logs): refused.
    Failed,
}

impl Verdict {
    /// The verdict for Verify's answer.
    pub fn from_verify(result: Result<TokenClaims, ServiceError>) -> Self {
        match result {
            Ok(claims) => Self::Allow(claims),
            Err(ServiceError::Token(TokenError::Missing)) => Self::NoToken,
            Err(ServiceError::Token(error)) => Self::InvalidToken(error),
            Err(ServiceError::Unavailable { backend, cause }) => {
                tracing::warn!(
                    backend,
                    error = crate::telemetry::error_chain(cause.as_ref()),
                    "gateway check refused: back end unavailable"
                );
                Self::Unavailable
            }
            Err(error) => {
                tracing::error!(
                    error = crate::telemetry::error_chain(&error),
                    "gateway check failed"
                );
                Self::Failed
            }
        }
    }

    /// The HTTP status of the answer (200 for an accepted token).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Allow(_) => 200,
            Self::NoToken | Self::InvalidToken(_) => 401,
            Self::Unavailable => 503,
            Self::Failed => 500,
        }
    }

    /// The `www-authenticate` challenge of a 401.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Self::NoToken => Some(format!("Bearer realm=\"{REALM}\"")),
            Self::InvalidToken(error) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{error}\""
            )),
            _ => None,
        }
    }

    /// The `retry-after` of a 503, in seconds.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::Unavailable).then_some(RETRY_AFTER_SECONDS)
    }

    /// The JSON body of a refusal (`application/json`); `None` for an accepted token.
    pub fn body(&self) -> Option<String> {
        let (error, reason) = match self {
            Self::Allow(_) => return None,
            Self::NoToken => ("unauthorized", "TOKEN_MISSING"),
            Self::InvalidToken(error) => ("invalid_token", error.reason()),
            Self::Unavailable => ("temporarily_unavailable", "BACKEND_UNAVAILABLE"),
            Self::Failed => ("server_error", "INTERNAL"),
        };
        Some(serde_json::json!({ "error": error, "reason": reason }).to_string())
    }
}

/// The names of the headers that carry an accepted token's claims upstream.
#[derive(Debug, Clone)]
pub struct ForwardedHeaders {
    /// `<prefix>user-id`.
    pub user_id: http::HeaderName,
    /// `<prefix>session-id`.
    pub session_id: http::HeaderName,
    /// `<prefix>jti`.
    pub jti: http::HeaderName,
}

impl ForwardedHeaders {
    /// The names under `prefix` (checked by the configuration to make valid names).
    pub fn new(prefix: &str) -> Result<Self, http::header::InvalidHeaderName> {
        let name =
            |suffix: &str| http::HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes());
        Ok(Self {
            user_id: name("user-id")?,
            session_id: name("session-id")?,
            jti: name("jti")?,
        })
    }

    /// Each forwarded header with its value for `claims`: `None` where the token has no such
    /// claim (a token from before sessions has no session id), so that the gateway removes any
    /// header of that name the client sent.
    pub fn values(&self, claims: &TokenClaims) -> [(&http::HeaderName, Option<String>); 3] {
        [
            (&self.user_id, Some(claims.user_id.to_string())),
            (&self.session_id, claims.session_id.map(|id| id.to_string())),
            (&self.jti, Some(claims.jti.to_string())),
        ]
    }
}
