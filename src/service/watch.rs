//! WatchRevocations: who may watch (the service credential), and what a watcher receives. The
//! revocation store's feed (`store::feed`) gives the snapshot and each change; this adds the
//! global cut-off that a lost revocation store raises (`data_loss.rs`), a heartbeat while the feed
//! is current, and the rules for ending a stream: at shutdown, when the watcher falls too far
//! behind, or when the feed has not been current for three heartbeats. A watcher that is cut off
//! reconnects and reloads the snapshot.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{broadcast, mpsc, watch};

use super::{AuthService, ServiceError};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{Jti, SessionId, UserId},
    store::{FeedChange, RevocationFeed, Revoked},
};

/// How often a watcher hears a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Revocations per snapshot chunk (each well under the 4 MiB message limit: about 60 bytes each).
pub const SNAPSHOT_CHUNK: usize = 4096;
/// How long a new watcher waits for this instance's feed to be current before giving up.
const FEED_WAIT: Duration = Duration::from_secs(10);
/// Heartbeats missed (feed not current) before the stream is ended, so that the watcher can go
/// to another instance.
const MISSED_HEARTBEATS_BEFORE_END: u32 = 3;
/// Events queued for a watcher before the stream waits for it.
const EVENTS_QUEUED: usize = 16;

/// Who may call WatchRevocations: the holder of AUTHD_WATCH_TOKEN, or, with mTLS on, any client
/// (the TLS handshake already verified its certificate).
#[derive(Clone)]
pub struct WatchAccess {
    /// SHA-256 of the token: compared in constant time, whatever the presented length.
    token_digest: Option<[u8; 32]>,
    client_certificates: bool,
}

impl std::fmt::Debug for WatchAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchAccess")
            .field("token", &self.token_digest.map(|_| "[redacted]"))
            .field("client_certificates", &self.client_certificates)
            .finish()
    }
}

impl WatchAccess {
    /// Access with `token` and/or client certificates.
    pub fn new(token: Option<&SecretString>, client_certificates: bool) -> Self {
        Self {
            token_digest: token
                .map(|token| Sha256::digest(token.expose_secret().as_bytes()).into()),
            client_certificates,
        }
    }

    /// Whether anybody may watch (a credential is configured); the feed is kept only then.
    pub fn enabled(&self) -> bool {
        self.token_digest.is_some() || self.client_certificates
    }

    /// Whether `bearer` (the call's bearer token, if any) may watch.
    fn check(&self, bearer: Option<&str>) -> Result<(), ServiceError> {
        if self.client_certificates {
            return Ok(());
        }
        let Some(expected) = &self.token_digest else {
            return Err(ServiceError::WatchingDisabled);
        };
        let presented = bearer.ok_or(ServiceError::WatchCredentialMissing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ServiceError::WatchCredentialWrong)
        }
    }
}

/// What a revocation refuses, as a watcher is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchedRevocation {
    /// One access token.
    Token(Jti),
    /// Every access token of a session.
    Session(SessionId),
    /// A user's access tokens issued before a second.
    UserCutoff(UserId, UnixSeconds),
    /// Every access token issued before a second.
    GlobalCutoff(UnixSeconds),
}

impl From<Revoked> for WatchedRevocation {
    fn from(revoked: Revoked) -> Self {
        match revoked {
            Revoked::Token(jti) => Self::Token(jti),
            Revoked::Session(session) => Self::Session(session),
            Revoked::IssuedBefore(user, before) => Self::UserCutoff(user, before),
        }
    }
}

/// A revocation and the last second it matters.
pub type WatchedEntry = (WatchedRevocation, UnixSeconds);

/// One message of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A chunk of the snapshot.
    Snapshot {
        /// Revocations in force.
        revocations: Vec<WatchedEntry>,
        /// When the snapshot was taken.
        server_time: UnixMillis,
        /// Whether this is the last chunk.
        complete: bool,
        /// The tokens' clock leeway (accepted until `exp` plus this).
        clock_leeway: Duration,
        /// The access-token lifetime (longer-lived tokens are refused).
        access_token_ttl: Duration,
    },
    /// A new revocation.
    Revoked(WatchedEntry),
    /// The stream is healthy.
    Heartbeat {
        /// Now.
        server_time: UnixMillis,
        /// How often heartbeats come.
        interval: Duration,
    },
}

/// The events of one watcher; ends with an error when the stream must be reloaded.
pub type RevocationWatch = mpsc::Receiver<Result<WatchEvent, ServiceError>>;

impl AuthService {
    /// Starts a watcher for the caller presenting `bearer`; its events end when `stopping`
    /// turns true (shutdown), with UNAVAILABLE.
    pub fn watch_revocations(
        self: &Arc<Self>,
        bearer: Option<&str>,
        stopping: watch::Receiver<bool>,
    ) -> Result<RevocationWatch, ServiceError> {
        self.parts.watchers.check(bearer)?;
        let feed = self.parts.revocations.feed().ok_or_else(|| {
            ServiceError::Unexpected(anyhow::anyhow!(
                "watchers are configured but the revocation store keeps no feed"
            ))
        })?;
        // Subscribed before the snapshot is read: nothing falls between the two.
        let changes = feed.subscribe();
        let (events, watch) = mpsc::channel(EVENTS_QUEUED);
        let service = self.clone();
        tokio::spawn(async move {
            metrics::gauge!(crate::metrics::REVOCATION_WATCHERS).increment(1.0);
            let ended = service
                .serve_watcher(&feed, changes, &events, stopping)
                .await;
            metrics::gauge!(crate::metrics::REVOCATION_WATCHERS).decrement(1.0);
            if let Err(error) = ended {
                let _ = events.send(Err(error)).await;
            }
        });
        Ok(watch)
    }

    /// The global cut-off as a watched revocation, while it matters at `now`.
    fn global_cutoff_entry(&self, now: UnixSeconds) -> Option<WatchedEntry> {
        let cutoff = self.revocation_cutoff();
        // A token issued before the cut-off is accepted at most until iat + TTL + leeway.
        let until = cutoff
            .saturating_add(self.parts.tokens.ttl_seconds())
            .saturating_add(self.parts.tokens.leeway_seconds());
        (cutoff > 0 && until >= now).then_some((WatchedRevocation::GlobalCutoff(cutoff), until))
    }

    /// Sends the snapshot, then changes and heartbeats, until the watcher leaves (`Ok`) or the
    /// stream must end (`Err`, sent to the watcher as its last event).
    async fn serve_watcher(
        &self,
        feed: &RevocationFeed,
        mut changes: broadcast::Receiver<FeedChange>,
        events: &mpsc::Sender<Result<WatchEvent, ServiceError>>,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<(), ServiceError> {
        let shutting_down = || ServiceError::Unavailable {
            backend: "authd",
            cause: anyhow::anyhow!("the server is shutting down"),
        };
        let feed_lost = || ServiceError::Unavailable {
            backend: "revocation feed",
            cause: anyhow::anyhow!("this instance's revocation feed is not current"),
        };
        let waited_until = tokio::time::Instant::now() + FEED_WAIT;
        while !feed.is_current() {
            if tokio::time::Instant::now() >= waited_until {
                return Err(feed_lost());
            }
            tokio::select! {
                () = until_true(&mut stopping) => return Err(shutting_down()),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = events.closed() => return Ok(()),
            }
        }

        let server_time = self.parts.clock.now_millis();
        let now = server_time.div_euclid(1000);
        let mut snapshot: Vec<WatchedEntry> = feed
            .live_entries(now)?
            .into_iter()
            .map(|(what, until)| (what.into(), until))
            .collect();
        let mut sent_cutoff = self.revocation_cutoff();
        snapshot.extend(self.global_cutoff_entry(now));
        let chunks = snapshot.len().div_ceil(SNAPSHOT_CHUNK).max(1);
        let mut entries = snapshot.into_iter();
        for chunk in 0..chunks {
            let revocations = entries.by_ref().take(SNAPSHOT_CHUNK).collect();
            let event = WatchEvent::Snapshot {
                revocations,
                server_time,
                complete: chunk + 1 == chunks,
                clock_leeway: Duration::from_secs(
                    u64::try_from(self.parts.tokens.leeway_seconds()).unwrap_or(0),
                ),
                access_token_ttl: Duration::from_secs(
                    u64::try_from(self.parts.tokens.ttl_seconds()).unwrap_or(0),
                ),
            };
            if events.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }

        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut missed = 0;
        loop {
            let event = tokio::select! {
                biased;
                () = until_true(&mut stopping) => return Err(shutting_down()),
                change = changes.recv() => match change {
                    Ok((what, until)) => WatchEvent::Revoked((what.into(), until)),
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        return Err(ServiceError::Unavailable {
                            backend: "revocation feed",
                            cause: anyhow::anyhow!(
                                "the watcher fell {skipped} revocations behind; reconnect"
                            ),
                        });
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(feed_lost()),
                },
                _ = heartbeat.tick() => {
                    let now = self.parts.clock.now();
                    if self.revocation_cutoff() > sent_cutoff
                        && let Some(entry) = self.global_cutoff_entry(now)
                    {
                        sent_cutoff = self.revocation_cutoff();
                        if events.send(Ok(WatchEvent::Revoked(entry))).await.is_err() {
                            return Ok(());
                        }
                    }
                    if feed.is_current() {
                        missed = 0;
                        WatchEvent::Heartbeat {
                            server_time: self.parts.clock.now_millis(),
                            interval: HEARTBEAT_INTERVAL,
                        }
                    } else {
                        missed += 1;
                        if missed >= MISSED_HEARTBEATS_BEFORE_END {
                            return Err(feed_lost());
                        }
                        continue;
                    }
                }
                () = events.closed() => return Ok(()),
            };
            if events.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Returns once `flag` is true (or its sender is gone).
async fn until_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: dropped here, not held across the select.
    let _ = flag.wait_for(|value| *value).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_credential_may_watch() {
        let token = SecretString::from("a".repeat(40));
        let access = WatchAccess::new(Some(&token), false);
        assert!(access.enabled());
        assert!(access.check(Some(&"a".repeat(40))).is_ok());
        assert!(matches!(
            access.check(Some(&"a".repeat(39))),
            Err(ServiceError::WatchCredentialWrong)
        ));
        assert!(matches!(
            access.check(None),
            Err(ServiceError::WatchCredentialMissing)
        ));
        let none = WatchAccess::new(None, false);
        assert!(!none.enabled());
        assert!(matches!(
            none.check(Some(&"a".repeat(40))),
            Err(ServiceError::WatchingDisabled)
        ));
        let mtls = WatchAccess::new(None, true);
        assert!(mtls.enabled() && mtls.check(None).is_ok());
        assert!(!format!("{access:?}").contains("aaaa"));
    }
}
