//! Background work that lives as long as the server, until the `stopped` signal flips: re-reading
//! the signing keys directory (periodically and on SIGHUP), the purge
//! of expired SQL revocations, forgotten throttle counts and long-ended sessions (once a minute), and the watch for a
//! revocation store that lost its data (every second), and the metrics recorder's upkeep (every
//! few seconds: histogram samples are drained even when nobody scrapes `/metrics`), and the
//! listeners' TLS files (every 2 s: a rotated certificate is served to new connections). (The health
//! reporter, which feeds grpc.health.v1, lives at the gRPC edge: `api/health.rs`.)

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::service::AuthService;

/// How often expired revocations are purged from SQL stores.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// How often the revocation store's data marker and the global cut-off are checked.
pub const DATA_LOSS_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Watches the revocation store for a loss of its data, and picks up cut-offs other instances
/// raised, every second (`service/data_loss.rs`).
pub fn watch_revocation_store(
    service: Arc<AuthService>,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    every(DATA_LOSS_WATCH_INTERVAL, stopped, move || {
        let service = service.clone();
        async move {
            if let Err(error) = service.watch_revocation_store().await {
                // An unreachable back end is reported by health; the watch resumes with it.
                tracing::debug!(
                    error = crate::telemetry::error_chain(&error),
                    "watching the revocation store failed"
                );
            }
        }
    })
}

/// Purges expired revocation entries and forgotten login-failure counts once a minute (a no-op
/// where Redis expires its own).
pub fn purge_expired(service: Arc<AuthService>, stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    every(PURGE_INTERVAL, stopped, move || {
        let service = service.clone();
        async move {
            log_purge(
                "expired revocations",
                service.purge_expired_revocations().await,
            );
            log_purge(
                "forgotten login-failure counts",
                service.purge_expired_throttle_counts().await,
            );
            log_purge(
                "sessions ended or expired a day ago",
                service.purge_ended_sessions().await,
            );
        }
    })
}

/// Re-reads the signing keys directory every `interval` and on SIGHUP (a no-op without one).
pub fn reload_signing_keys(
    service: Arc<AuthService>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut failing = false;
        loop {
            let hung_up = async {
                #[cfg(unix)]
                if let Some(hangup) = hangup.as_mut() {
                    hangup.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = hung_up => tracing::info!("SIGHUP: reading the signing keys again"),
                _ = stopped.changed() => return,
            }
            match service.reload_signing_keys() {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::error!(
                        error = %format!("{error:#}"),
                        "cannot read the signing keys; keeping the ones in use"
                    );
                }
                Err(_) => {}
            }
        }
    })
}

/// Reopens AUTHD_AUDIT_LOG on each SIGHUP (logrotate moved it).
pub fn reopen_audit_log_on_hangup(
    service: Arc<AuthService>,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be handled: AUTHD_AUDIT_LOG is not reopened on it");
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => service.reopen_audit_log(),
                _ = stopped.changed() => return,
            }
        }
    })
}

/// How often the metrics recorder drains its histogram samples.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the metrics recorder's upkeep every [`METRICS_UPKEEP_INTERVAL`].
pub fn metrics_upkeep(stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    every(METRICS_UPKEEP_INTERVAL, stopped, || async {
        crate::metrics::handle().run_upkeep();
    })
}

/// Reads the listeners' TLS files again when they change.
pub fn reload_tls(
    listeners: Vec<Arc<crate::server::tls::ReloadingTls>>,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let listeners = Arc::new(listeners);
    every(
        crate::server::tls::TLS_RELOAD_INTERVAL,
        stopped,
        move || {
            let listeners = listeners.clone();
            async move {
                for listener in listeners.iter() {
                    listener.check_files().await;
                }
            }
        },
    )
}

/// Runs `work` every `interval` on a task of its own until `stopped` flips.
fn every<F, Fut>(interval: Duration, mut stopped: watch::Receiver<bool>, work: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopped.changed() => return,
            }
            work().await;
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
