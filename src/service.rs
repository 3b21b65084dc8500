//! The four use cases — register, login, logout, verify — as plain async functions over the
//! stores, the password hasher and the token authority. No I/O details, no tonic.

use std::{net::IpAddr, sync::Arc, time::Duration};

use crate::{
    clock::Clock,
    domain::{AccessToken, Email, Password, UserId, Username},
    password::{HashError, PasswordHasher},
    store::{NewUser, RevocationStore, StoreError, UserStore},
    throttle::{LoginThrottle, ThrottleError},
    token_cache::VerifiedTokenCache,
    tokens::{IssuedToken, TokenAuthority, TokenClaims, TokenError},
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
    /// Login: the account or source is backing off after failures.
    #[error("too many failed logins; retry later")]
    Throttled {
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
        /// Details for the logs.
        reason: String,
    },
    /// A bug or corrupt data; details go to the logs, not the client.
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => Self::EmailTaken,
            StoreError::Unavailable { backend, reason } => Self::Unavailable { backend, reason },
            StoreError::Unexpected(reason) => Self::Unexpected(anyhow::anyhow!(reason)),
        }
    }
}

impl From<ThrottleError> for ServiceError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Throttled(retry_after) => Self::Throttled { retry_after },
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

/// A registration request, already parsed.
#[derive(Debug)]
pub struct Registration {
    /// The login email.
    pub email: Email,
    /// The new password.
    pub password: Password,
    /// An optional display name.
    pub username: Option<Username>,
}

/// A signed-in user: who, and the token that proves it.
#[derive(Debug)]
pub struct Session {
    /// The user.
    pub user_id: UserId,
    /// Their new access token.
    pub token: IssuedToken,
    /// The token's lifetime in seconds.
    pub expires_in: i64,
}

/// The authentication use cases.
pub struct AuthService {
    users: Arc<dyn UserStore>,
    revocations: Arc<dyn RevocationStore>,
    throttle: LoginThrottle,
    hasher: PasswordHasher,
    tokens: TokenAuthority,
    verified_tokens: VerifiedTokenCache,
    clock: Arc<dyn Clock>,
}

/// The parts an `AuthService` is assembled from.
pub struct Parts {
    /// Where users live.
    pub users: Arc<dyn UserStore>,
    /// Where revocations live.
    pub revocations: Arc<dyn RevocationStore>,
    /// Login throttling.
    pub throttle: LoginThrottle,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Token issue and verification.
    pub tokens: TokenAuthority,
    /// Tokens whose signature was already checked.
    pub verified_tokens: VerifiedTokenCache,
    /// The time.
    pub clock: Arc<dyn Clock>,
}

impl AuthService {
    /// Assembles the service from its parts.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            users,
            revocations,
            throttle,
            hasher,
            tokens,
            verified_tokens,
            clock,
        } = parts;
        Self {
            users,
            revocations,
            throttle,
            hasher,
            tokens,
            verified_tokens,
            clock,
        }
    }

    /// Creates an account and signs it in. Two registrations of one email race on the unique
    /// index: exactly one wins, the other gets `EmailTaken`.
    pub async fn register(&self, registration: Registration) -> Result<Session, ServiceError> {
        let password_hash = self.hasher.hash(registration.password).await?;
        let user = NewUser {
            id: UserId::generate(),
            email: registration.email,
            username: registration.username,
            password_hash,
        };
        self.users.insert(&user).await?;
        tracing::info!(user_id = %user.id, "registered");
        self.start_session(user.id)
    }

    /// Checks an email and password and signs the user in. An unknown email costs the same
    /// argon2 verification as a wrong password and gets the same error. Accounts and sources
    /// that keep failing back off; a success resets the account.
    pub async fn login(
        &self,
        email: Email,
        password: Password,
        source: Option<IpAddr>,
    ) -> Result<Session, ServiceError> {
        let now = self.clock.now_millis();
        self.throttle.check(&email, source, now).await?;
        let stored = self.users.find_credentials(&email).await?;
        let user_id = stored.as_ref().map(|credentials| credentials.id);
        let matched = self
            .hasher
            .verify(
                password,
                stored.map(|credentials| credentials.password_hash),
            )
            .await?;
        match user_id {
            Some(user_id) if matched => {
                self.throttle.succeeded(&email).await?;
                tracing::info!(%user_id, "logged in");
                self.start_session(user_id)
            }
            _ => {
                self.throttle.failed(&email, source, now).await?;
                tracing::info!(?source, "login refused");
                Err(ServiceError::InvalidCredentials)
            }
        }
    }

    /// Revokes a token until it could no longer be accepted anyway. Idempotent: an expired or
    /// already revoked token is fine; a forged one is not.
    pub async fn logout(&self, token: Option<AccessToken>) -> Result<(), ServiceError> {
        let token = token.ok_or(TokenError::Missing)?;
        let decoded = self.tokens.decode(&token)?;
        let now = self.clock.now();
        match self.tokens.check_time(&decoded, now) {
            Ok(()) => {}
            Err(TokenError::Expired) => return Ok(()),
            Err(other) => return Err(other.into()),
        }
        let claims = decoded.claims;
        let until = self.tokens.accepted_until(&claims);
        self.revocations.revoke(claims.jti, until, now).await?;
        tracing::info!(user_id = %claims.user_id, jti = %claims.jti, "logged out");
        Ok(())
    }

    /// Answers "who is this token?": signature, claims and time, then revocation. Fails closed:
    /// if revocation cannot be checked, the answer is `Unavailable`, never success.
    pub async fn verify(&self, token: Option<AccessToken>) -> Result<TokenClaims, ServiceError> {
        let token = token.ok_or(TokenError::Missing)?;
        let now = self.clock.now();
        let decoded = self
            .verified_tokens
            .get_or_decode(&token, |token| self.tokens.decode(token))?;
        self.tokens.check_time(&decoded, now)?;
        let claims = decoded.claims;
        if self.revocations.is_revoked(claims.jti, now).await? {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }

    /// Whether every back end answers, for the health service.
    pub async fn check_backends(&self) -> Result<(), ServiceError> {
        self.users.ping().await?;
        self.revocations.ping().await?;
        Ok(())
    }

    /// Deletes revocation entries past their time (embedded/SQL stores; Redis expires its own).
    pub async fn purge_expired_revocations(&self) -> Result<u64, ServiceError> {
        Ok(self.revocations.purge_expired(self.clock.now()).await?)
    }

    /// Deletes forgotten login-failure counts (embedded/SQL stores; Redis expires its own).
    pub async fn purge_expired_throttle_counts(&self) -> Result<u64, ServiceError> {
        Ok(self.throttle.purge_expired(self.clock.now_millis()).await?)
    }

    fn start_session(&self, user_id: UserId) -> Result<Session, ServiceError> {
        let token = self
            .tokens
            .issue(user_id, self.clock.now())
            .map_err(ServiceError::Unexpected)?;
        Ok(Session {
            user_id,
            token,
            expires_in: self.tokens.ttl_seconds(),
        })
    }
}
