//! grpc.health.v1 for authd: probes the back ends every second and reports SERVING while all
//! answer, NOT_SERVING otherwise (and once shutting down), for the overall ("") entry and each
//! service (`auth.v1.AuthService`, `envoy.service.auth.v3.Authorization`).

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::service::AuthService;

/// How often back ends are probed for the health service.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
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
                            error = crate::telemetry::error_chain(&error),
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
    reporter
        .set_service_status(super::ext_authz::SERVICE_NAME, status)
        .await;
}
