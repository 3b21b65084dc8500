//! Noticing that the revocation store lost its data. Redis restarted without persistence, or
//! flushed, forgets every revocation, and revoked tokens would verify again, silently. So the
//! store holds a marker (a key without TTL) that the user database remembers; when the two
//! disagree, every access token issued before that moment is refused from then on (a global
//! cut-off kept in the user database, which every instance reads every second), the loss is
//! logged as an error and counted. Users recover by signing in again.

use std::sync::atomic::Ordering;

use super::{AuthService, ServiceError};
use crate::clock::UnixSeconds;

/// The marker last seen in the revocation store (followed by the store's scope).
const MARKER_FACT: &str = "revocation-store-marker";
/// Every access token issued before this second is refused.
const CUTOFF_FACT: &str = "revocation-cutoff";
/// Compare-and-set rounds for raising the cut-off.
const CUTOFF_ROUNDS: usize = 16;

impl AuthService {
    /// Compares the revocation store's marker with the one the user database remembers (a
    /// loss raises the cut-off), then loads the cut-off. Run at start-up and every second.
    pub async fn watch_revocation_store(&self) -> Result<(), ServiceError> {
        let users = &self.parts.users;
        // One recorded marker per revocation store (a Redis key prefix is a store of its own),
        // so that instances on two prefixes do not take each other's marker for a loss.
        let marker_fact = format!(
            "{MARKER_FACT}:{}",
            self.parts.revocations.data_marker_scope()
        );
        let recorded = users.fact(&marker_fact).await?;
        let current = self.parts.revocations.data_marker().await?;
        match (recorded, current) {
            (Some(recorded), Some(current)) if recorded == current => {}
            (None, current) => {
                // The first start on this user database: remember the store's marker.
                let placed = match current {
                    Some(current) => current,
                    None => {
                        self.parts
                            .revocations
                            .place_data_marker(&new_marker())
                            .await?
                    }
                };
                users.replace_fact(&marker_fact, None, &placed).await?;
            }
            (Some(recorded), _) => {
                self.revocation_store_lost_its_data(&marker_fact, &recorded)
                    .await?
            }
        }
        self.load_revocation_cutoff().await
    }

    /// The global cut-off: access tokens issued before it are revoked (0: none).
    pub fn revocation_cutoff(&self) -> UnixSeconds {
        self.revocation_cutoff.load(Ordering::Acquire)
    }

    /// How many times this instance saw the revocation store lose its data.
    pub fn revocation_store_losses(&self) -> u64 {
        self.revocation_store_losses.load(Ordering::Relaxed)
    }

    async fn revocation_store_lost_its_data(
        &self,
        marker_fact: &str,
        recorded: &str,
    ) -> Result<(), ServiceError> {
        // JWT times are whole seconds: a token issued (and revoked) earlier in this very second
        // must fall before the cut-off too, so it is the next second. Tokens issued from now on
        // carry the cut-off as `iat` (`start_session`).
        let cutoff = self.parts.clock.now().saturating_add(1);
        // The cut-off first: there is never a moment with a new marker and no cut-off.
        self.raise_revocation_cutoff(cutoff).await?;
        self.load_revocation_cutoff().await?;
        let placed = self
            .parts
            .revocations
            .place_data_marker(&new_marker())
            .await?;
        if self
            .parts
            .users
            .replace_fact(marker_fact, Some(recorded), &placed)
            .await?
        {
            self.revocation_store_losses.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                cutoff,
                "the revocation store lost its data (Redis restarted without persistence, or was \
                 flushed): every access token issued before the cut-off is refused from now on; \
                 users sign in again"
            );
            self.audit(crate::audit::AuditEvent::new(
                crate::audit::Action::RevocationsLost,
            ));
        }
        Ok(())
    }

    async fn raise_revocation_cutoff(&self, to: UnixSeconds) -> Result<(), ServiceError> {
        let users = &self.parts.users;
        for _ in 0..CUTOFF_ROUNDS {
            let current = users.fact(CUTOFF_FACT).await?;
            let value = current
                .as_deref()
                .and_then(|v| v.parse::<UnixSeconds>().ok());
            if value.is_some_and(|value| value >= to) {
                return Ok(());
            }
            if users
                .replace_fact(CUTOFF_FACT, current.as_deref(), &to.to_string())
                .await?
            {
                return Ok(());
            }
        }
        Err(ServiceError::Unexpected(anyhow::anyhow!(
            "could not raise the revocation cut-off: the fact kept changing"
        )))
    }

    async fn load_revocation_cutoff(&self) -> Result<(), ServiceError> {
        let stored = self.parts.users.fact(CUTOFF_FACT).await?;
        if let Some(cutoff) = stored.and_then(|v| v.parse::<UnixSeconds>().ok()) {
            self.revocation_cutoff.fetch_max(cutoff, Ordering::AcqRel);
        }
        Ok(())
    }
}

fn new_marker() -> String {
    uuid::Uuid::new_v4().to_string()
}
