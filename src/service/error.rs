//! `ServiceError`: everything a use case can answer besides success. `api::status` maps each
//! variant to a gRPC status; the lower layers' errors convert into it here, keeping their causes.

use std::time::Duration;

use crate::{
    domain::FieldViolation, hashing::HashError, store::StoreError, throttle::ThrottleError,
    tokens::TokenError,
};

/// Everything a use case can answer besides success; `api::status` maps each to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Register: the normalised email is taken.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Login: unknown email or wrong password — deliberately indistinguishable.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Logout/Verify: the token is not acceptable.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Refresh/Logout: the refresh token is malformed, unknown, or of an ended session.
    #[error("refresh token is invalid")]
    RefreshTokenInvalid,
    /// Refresh: unused for too long, or the session reached its maximum age.
    #[error("refresh token has expired")]
    RefreshTokenExpired,
    /// Refresh: a spent refresh token was presented again; the session has ended.
    #[error("refresh token was already used; the session has ended")]
    RefreshTokenReused,
    /// RevokeSession: no such session of the caller.
    #[error("no such session")]
    SessionNotFound,
    /// WatchRevocations: no service credential was presented.
    #[error("WatchRevocations needs the service credential (authorization: Bearer)")]
    WatchCredentialMissing,
    /// WatchRevocations: the credential presented is not the service one.
    #[error("this credential may not watch revocations")]
    WatchCredentialWrong,
    /// WatchRevocations: no credential is configured (AUTHD_WATCH_TOKEN, or mTLS).
    #[error("WatchRevocations is not enabled on this server (AUTHD_WATCH_TOKEN is not set)")]
    WatchingDisabled,
    /// A field checked only once the user is known (ChangePassword's new password strength).
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    /// Login: the account or source is backing off after failures.
    #[error("too many failed logins; retry later")]
    Throttled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Register: this source has registered too many accounts in its window.
    #[error("too many registrations from this address; retry later")]
    RegistrationsThrottled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Password hashing is saturated; retry later.
    #[error("the server is busy hashing passwords; retry later")]
    Overloaded,
    /// A back end cannot be reached.
    #[error("{backend} is unavailable")]
    Unavailable {
        /// Which back end.
        backend: &'static str,
        /// What happened, for the logs.
        #[source]
        cause: anyhow::Error,
    },
    /// A bug or corrupt data; details go to the logs, not the client.
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Unavailable { backend, cause } => {
                metrics::counter!(crate::metrics::BACKEND_ERRORS, "backend" => backend)
                    .increment(1);
                Self::Unavailable { backend, cause }
            }
            unexpected @ StoreError::Unexpected(_) => Self::Unexpected(unexpected.into()),
        }
    }
}

impl From<ThrottleError> for ServiceError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Throttled(retry_after) => Self::Throttled { retry_after },
            ThrottleError::RegistrationsThrottled(retry_after) => {
                Self::RegistrationsThrottled { retry_after }
            }
            ThrottleError::Store(error) => error.into(),
        }
    }
}

impl From<HashError> for ServiceError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Overloaded => Self::Overloaded,
            other => Self::Unexpected(other.into()),
        }
    }
}
