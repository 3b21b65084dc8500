//! Background tasks that live as long as the server: the health reporter (probes the back ends
//! every second) and the purge of expired SQL revocations and throttle counts (once a minute).
//! Both stop when the `stopped` signal flips.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::service::AuthService;

/// How often back ends are probed for the health service.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired revocations are purged from SQL stores.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The gRPC name of the service, as health checks know it.
pub const SERVICE_NAME: &str = "auth.v1.AuthService";

/// Probes the back ends every second: SERVING while all answer, NOT_SERVING otherwise, for both
/// the overall ("") and the `auth.v1.AuthService` health entries; NOT_SERVING once stopping.
pub fn report_health(
    service: Arc<AuthService>,
    reporter: HealthReporter,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let status = match service.check_backends().await {
                Ok(()) => ServingStatus::Serving,
                Err(error) => {
                    if last != Some(ServingStatus::NotServing) {
                        tracing::warn!(
                            error = format!("{:#}", anyhow::Error::new(error)),
                            "health: NOT_SERVING"
                        );
                    }
                    ServingStatus::NotServing
                }
            };
            if last != Some(status) {
                set_status(&reporter, status).await;
                last = Some(status);
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
                _ = stopped.changed() => {
                    set_status(&reporter, ServingStatus::NotServing).await;
                    return;
                }
            }
        }
    })
}

async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

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
            error = format!("{:#}", anyhow::Error::new(error)),
            "purging {what} failed"
        ),
    }
}
