//! The task that keeps the mirror current: `WatchRevocations` on authd, the snapshot (in chunks)
//! swapped in whole, then each revocation as it comes and each heartbeat noted. A stream that
//! ends, fails or falls silent for the staleness bound is dropped and opened again with
//! exponential back-off (100 ms to 5 s, with jitter); the next snapshot replaces the mirror.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rand::Rng as _;

use super::mirror::{AuthdTerms, RevocationMirror, RevocationSet};
use crate::{AuthClient, pb::revocation_event::Event};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// authd waits up to 10 s for its own feed before the snapshot; allow that and a margin.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(15);
/// A stream that stayed healthy this long resets the back-off.
const HEALTHY_FOR: Duration = Duration::from_secs(10);

pub(crate) struct Watcher {
    pub(crate) client: AuthClient,
    /// Where a fresh connection comes from after one fell silent.
    pub(crate) endpoint: tonic::transport::Endpoint,
    pub(crate) watch_token: Option<String>,
    pub(crate) mirror: Arc<RevocationMirror>,
    pub(crate) leeway_seconds: i64,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("authd refused or failed the stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("authd ended the stream")]
    Closed,
    #[error("no message from authd within {0:?}")]
    Silent(Duration),
}

impl Watcher {
    /// Watches until the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let end = self.watch_once().await;
            if started.elapsed() >= HEALTHY_FOR {
                backoff = FIRST_BACKOFF;
            }
            let pause = jittered(backoff);
            if lost_revocations(&end) {
                self.mirror.invalidate();
            }
            if let StreamEnd::Silent(_) = &end {
                // The connection may be dead without knowing it: the next stream gets a new one.
                self.client = AuthClient::new(self.endpoint.connect_lazy());
            }
            match &end {
                StreamEnd::Status(status)
                    if status.code() == tonic::Code::PermissionDenied
                        || status.code() == tonic::Code::Unauthenticated =>
                {
                    tracing::error!(error = %end, "authd-client: authd refused WatchRevocations (check the watch token); retrying in {pause:?}");
                }
                _ => {
                    tracing::warn!(error = %end, "authd-client: revocation stream ended; reconnecting in {pause:?}")
                }
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One stream, from the request to its end.
    async fn watch_once(&self) -> StreamEnd {
        let opened = tokio::time::timeout(
            SNAPSHOT_WAIT,
            self.client.watch_revocations(self.watch_token.as_deref()),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return status.into(),
            Err(_) => return StreamEnd::Silent(SNAPSHOT_WAIT),
        };
        let mut pending = Some(RevocationSet::default());
        loop {
            let wait = if pending.is_some() {
                SNAPSHOT_WAIT
            } else {
                self.mirror.staleness_bound()
            };
            let event = match tokio::time::timeout(wait, stream.message()).await {
                Err(_) => return StreamEnd::Silent(wait),
                Ok(Err(status)) => return status.into(),
                Ok(Ok(None)) => return StreamEnd::Closed,
                Ok(Ok(Some(message))) => message.event,
            };
            match (event, &mut pending) {
                (Some(Event::Snapshot(chunk)), Some(set)) => {
                    for revocation in &chunk.revocations {
                        set.apply(revocation);
                    }
                    if chunk.complete {
                        let mut set = pending.take().unwrap_or_default();
                        let now = unix_now();
                        set.purge(now, self.leeway_seconds);
                        tracing::debug!(
                            entries = set.len(),
                            "authd-client: revocation snapshot loaded"
                        );
                        let terms = AuthdTerms {
                            clock_leeway: chunk.clock_leeway.map(|d| d.seconds),
                            token_ttl: chunk.access_token_ttl.map(|d| d.seconds),
                        };
                        let server_time = chunk.server_time.map(|t| t.seconds);
                        self.mirror.replace(set, terms, server_time, now);
                    }
                }
                (Some(Event::Revoked(revocation)), Some(set)) => {
                    set.apply(&revocation);
                }
                (Some(Event::Revoked(revocation)), None) => self.mirror.apply(&revocation),
                (Some(Event::Heartbeat(heartbeat)), pending) => {
                    if let Some(interval) =
                        heartbeat.interval.and_then(|d| Duration::try_from(d).ok())
                    {
                        self.mirror.set_heartbeat(interval);
                    }
                    if pending.is_none() {
                        self.mirror
                            .heard(heartbeat.server_time.map(|t| t.seconds), unix_now());
                    }
                }
                // A snapshot chunk after the snapshot completed is a protocol break: start over.
                (Some(Event::Snapshot(_)), None) => {
                    return tonic::Status::internal("snapshot chunk after the snapshot").into();
                }
                // An event this client does not know: ignored.
                (None, _) => {}
            }
        }
    }
}

/// Whether authd ended the stream because revocations may have been lost on it (the watcher fell
/// behind, or the instance's own feed went stale), rather than because it is going away.
fn lost_revocations(end: &StreamEnd) -> bool {
    use tonic_types::StatusExt as _;
    let StreamEnd::Status(status) = end else {
        return false;
    };
    status.code() == tonic::Code::Unavailable
        && status.get_details_error_info().is_some_and(|info| {
            info.metadata
                .get("backend")
                .is_some_and(|backend| backend == "revocation feed")
        })
}

fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
