//! Background work that lives as long as the server: the purge of expired SQL revocations and
//! forgotten throttle counts, once a minute, until the `stopped` signal flips. (The health
//! reporter, which feeds grpc.health.v1, lives at the gRPC edge: `api/health.rs`.)

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::service::AuthService;

/// How often expired revocations are purged from SQL stores.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Purges expired revocation entries and forgotten login-failure counts once a minute (a no-op
/// where Redis expires its own).
pub fn purge_expired(
    service: Arc<AuthService>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                _ = stopped.changed() => return,
            }
            log_purge(
                "expired revocations",
                service.purge_expired_revocations().await,
            );
            log_purge(
                "forgotten login-failure counts",
                service.purge_expired_throttle_counts().await,
            );
        }
    })
}

fn log_purge(what: &'static str, result: Result<u64, crate::service::ServiceError>) {
    match result {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "purged {what}"),
        Err(error) => tracing::warn!(
            error = crate::telemetry::error_chain(&error),
            "purging {what} failed"
        ),
    }
}
