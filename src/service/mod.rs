//! The use cases as plain async functions over the stores, the password hasher and the token
//! authority; no I/O details, no tonic. By concern: `accounts.rs` (register, login), `verify.rs`
//! (verify, logout), `data_loss.rs` (noticing a revocation store that lost its data),
//! `maintenance.rs` (one-time steps at start-up); `error.rs` is what they can answer besides
//! success.

mod accounts;
mod data_loss;
mod error;
mod maintenance;
mod verify;

pub use error::ServiceError;
pub use maintenance::NormalizationReport;

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64},
};

use crate::{
    clock::Clock,
    domain::UserId,
    hashing::PasswordHasher,
    store::{RevocationStore, UserStore},
    throttle::LoginThrottle,
    tokens::{IssuedToken, TokenAuthority, VerifiedTokenCache},
};

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

/// The authentication use cases, assembled from their [`Parts`].
pub struct AuthService {
    parts: Parts,
    /// Access tokens issued before this second are revoked (`data_loss.rs`).
    revocation_cutoff: AtomicI64,
    /// Losses of the revocation store this instance noticed.
    revocation_store_losses: AtomicU64,
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
        Self {
            parts,
            revocation_cutoff: AtomicI64::new(0),
            revocation_store_losses: AtomicU64::new(0),
        }
    }

    /// Whether every back end answers, for the health service.
    pub async fn check_backends(&self) -> Result<(), ServiceError> {
        self.parts.users.ping().await?;
        self.parts.revocations.ping().await?;
        Ok(())
    }

    /// Deletes revocation entries past their time (embedded/SQL stores; Redis expires its own).
    pub async fn purge_expired_revocations(&self) -> Result<u64, ServiceError> {
        Ok(self
            .parts
            .revocations
            .purge_expired(self.parts.clock.now())
            .await?)
    }

    /// Deletes forgotten login-failure counts (embedded/SQL stores; Redis expires its own).
    pub async fn purge_expired_throttle_counts(&self) -> Result<u64, ServiceError> {
        Ok(self
            .parts
            .throttle
            .purge_expired(self.parts.clock.now_millis())
            .await?)
    }

    /// Issues an access token for `user_id`, now.
    fn start_session(&self, user_id: UserId) -> Result<Session, ServiceError> {
        // Never issue a token the revocation cut-off would refuse: within the cut-off's own
        // second (JWT times are whole seconds), `iat` is the cut-off, a fraction of a second
        // ahead, well inside the clock leeway.
        let issued_at = self.parts.clock.now().max(self.revocation_cutoff());
        let token = self
            .parts
            .tokens
            .issue(user_id, issued_at)
            .map_err(ServiceError::Unexpected)?;
        Ok(Session {
            user_id,
            token,
            expires_in: self.parts.tokens.ttl_seconds(),
        })
    }
}
