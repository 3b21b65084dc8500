//! The use cases as plain async functions over the stores, the password hasher and the token
//! authority; no I/O details, no tonic. By concern: `accounts.rs` (register, login, change
//! password, delete account), `verify.rs` (verify and the checks every token-bearing call shares),
//! `sessions.rs` (refresh, logout, logout everywhere, listing and revoking sessions),
//! `data_loss.rs` (noticing a revocation store that lost its data), `watch.rs`
//! (WatchRevocations: who may watch, what a watcher receives), `maintenance.rs` (one-time steps at
//! start-up); `error.rs` is what they can answer besides success.

mod accounts;
mod data_loss;
mod error;
mod maintenance;
mod sessions;
mod verify;
mod watch;

pub use error::ServiceError;
pub use maintenance::NormalizationReport;
pub use sessions::{Client, SessionPolicy};
pub use watch::{
    HEARTBEAT_INTERVAL as WATCH_HEARTBEAT_INTERVAL, RevocationWatch, SNAPSHOT_CHUNK, WatchAccess,
    WatchEvent, WatchedEntry, WatchedRevocation,
};

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64},
};

use crate::{
    audit::{AuditEvent, AuditLog},
    clock::Clock,
    domain::{RefreshToken, SessionId, UserId},
    hashing::PasswordHasher,
    store::{RevocationStore, SessionStore, UserStore},
    throttle::LoginThrottle,
    tokens::{IssuedToken, TokenAuthority, VerifiedTokenCache},
};

/// A signed-in session's tokens: who, which session, and the two tokens.
#[derive(Debug)]
pub struct Session {
    /// The user.
    pub user_id: UserId,
    /// The session.
    pub session_id: SessionId,
    /// A new access token.
    pub token: IssuedToken,
    /// The access token's lifetime in seconds.
    pub expires_in: i64,
    /// The session's current refresh token.
    pub refresh_token: RefreshToken,
    /// Seconds until the refresh token expires unused.
    pub refresh_expires_in: i64,
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
    /// Where sessions live.
    pub sessions: Arc<dyn SessionStore>,
    /// Session lifetimes and the reuse grace.
    pub session_policy: SessionPolicy,
    /// Where revocations live.
    pub revocations: Arc<dyn RevocationStore>,
    /// Login throttling.
    pub throttle: LoginThrottle,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Token issue and verification.
    pub tokens: TokenAuthority,
    /// The keys directory the tokens' keys come from, re-read by [`AuthService::reload_signing_keys`];
    /// `None` for a single key file or an HS256 secret.
    pub signing_keys: Option<crate::tokens::directory::KeyDirectory>,
    /// Tokens whose signature was already checked.
    pub verified_tokens: VerifiedTokenCache,
    /// Where security-relevant actions are recorded.
    pub audit: AuditLog,
    /// Who may call WatchRevocations.
    pub watchers: WatchAccess,
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

    /// Records `event` in the audit log, at the service's time.
    pub(super) fn audit(&self, event: AuditEvent) {
        self.parts
            .audit
            .record(event, self.parts.clock.now_millis());
    }

    /// Closes and reopens AUTHD_AUDIT_LOG (SIGHUP, after logrotate moved it).
    pub fn reopen_audit_log(&self) {
        self.parts.audit.reopen();
    }

    /// Waits at most `deadline` for the audit events so far to reach AUTHD_AUDIT_LOG.
    pub fn flush_audit_log(&self, deadline: std::time::Duration) -> bool {
        self.parts.audit.flush(deadline)
    }

    /// Writes `revocations` to the revocation store, counting them by kind.
    pub(super) async fn write_revocations(
        &self,
        revocations: &[crate::store::Revocation],
        now: crate::clock::UnixSeconds,
    ) -> Result<(), crate::store::StoreError> {
        self.parts.revocations.revoke(revocations, now).await?;
        for revocation in revocations {
            let kind = match revocation.what {
                crate::store::Revoked::Token(_) => "token",
                crate::store::Revoked::Session(_) => "session",
                crate::store::Revoked::IssuedBefore(..) => "cutoff",
            };
            metrics::counter!(crate::metrics::REVOCATIONS_WRITTEN, "kind" => kind).increment(1);
        }
        Ok(())
    }

    /// Sets the gauges that are read rather than counted (hashing queue, in-memory revocations),
    /// just before the metrics are rendered.
    pub fn observe_gauges(&self) {
        metrics::gauge!(crate::metrics::HASHING_QUEUE_DEPTH).set(self.parts.hasher.queued() as f64);
        if let Some(memory) = self.parts.revocations.in_memory() {
            metrics::gauge!(crate::metrics::MIRROR_ENTRIES).set(memory.entries as f64);
            if let Some(silent) = memory.feed_silent_seconds {
                metrics::gauge!(crate::metrics::MIRROR_STALENESS).set(silent);
            }
        }
    }

    /// Reads the keys directory again and, if it changed, signs and verifies with its keys from
    /// now on; tokens remembered as verified are forgotten when a key was removed (a key taken
    /// out after a compromise stops verifying at once). A directory that cannot be read, or
    /// holds no key or a broken one, leaves the keys as they were (the error says why).
    pub fn reload_signing_keys(&self) -> Result<bool, anyhow::Error> {
        let Some(directory) = &self.parts.signing_keys else {
            return Ok(false);
        };
        let keys = directory.load()?;
        if keys.is_empty() {
            anyhow::bail!("{} holds no key", directory.path().display());
        }
        let replaced = self
            .parts
            .tokens
            .replace_keys(crate::tokens::directory::scheduled(keys))?;
        if replaced.lost_keys {
            self.parts.verified_tokens.clear();
        }
        if replaced.changed {
            tracing::info!(keys = ?self.parts.tokens.schedule(), "signing keys changed");
        }
        Ok(replaced.changed)
    }

    /// The public keys that verify authd's tokens (RFC 7517 JWKs), for the JWKS document.
    pub fn published_keys(&self) -> Vec<serde_json::Value> {
        self.parts.tokens.published_keys()
    }

    /// The `iss` of authd's tokens, for the discovery document.
    pub fn issuer(&self) -> &str {
        self.parts.tokens.issuer()
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
}
