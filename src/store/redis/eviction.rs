//! Whether Redis may evict authd's keys. Revocations carry a TTL, so under any `maxmemory-policy`
//! but `noeviction` (the `allkeys-*` and `volatile-*` policies) a full Redis silently drops them
//! and revoked tokens verify again. authd reads the policy of every configured node at start-up
//! (refusing to start on an evicting one unless AUTHD_REDIS_ALLOW_EVICTION=true), and again after
//! a failed call (the next answer comes over a new connection) and every few seconds (the
//! connection manager also reconnects by itself): health is NOT_SERVING until it is safe again.

use std::sync::atomic::Ordering;

use redis::Client;

use super::{BACKEND, REDIS_TIMEOUT, RedisStore, redact_url, redis_error};
use crate::store::{StoreError, bounded};

/// The one policy under which Redis never drops a key on its own.
const SAFE_POLICY: &str = "noeviction";
/// How often the policy is read again even without a failed call (ms).
const RECHECK_EVERY_MS: u64 = 5_000;

/// What one node said about its `maxmemory-policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`.
    Safe,
    /// An evicting policy: revocations may vanish when Redis is full.
    Evicting {
        /// The node (URL without credentials).
        node: String,
        /// The policy it reported.
        policy: String,
    },
    /// The policy could not be read (managed Redis often refuses CONFIG).
    Unknown {
        /// The node (URL without credentials).
        node: String,
        /// Why.
        reason: String,
    },
}

impl RedisStore {
    /// The `maxmemory-policy` of every configured node: a single server over the store's own
    /// connection, each seed of a cluster over a connection of its own (a cluster connection
    /// would answer from whichever node it picks).
    pub async fn eviction_policies(&self) -> Vec<EvictionPolicy> {
        let mut policies = Vec::new();
        for url in self.nodes.iter() {
            let node = redact_url(url);
            let policy = if self.is_cluster() {
                match self.tls.client(url) {
                    Ok(client) => read_policy(client).await,
                    Err(error) => Err(error),
                }
            } else {
                self.query(REDIS_TIMEOUT, async |connection| {
                    config_get_policy().query_async(connection).await
                })
                .await
                .and_then(policy_from_reply)
            };
            policies.push(match policy {
                Ok(policy) if policy == SAFE_POLICY => EvictionPolicy::Safe,
                Ok(policy) => EvictionPolicy::Evicting { node, policy },
                Err(error) => EvictionPolicy::Unknown {
                    node,
                    reason: crate::telemetry::error_chain(&error),
                },
            });
        }
        policies
    }

    /// After a reconnect, reads the policies again: an evicting policy (unless allowed) keeps
    /// this store unhealthy until it is safe.
    pub(super) async fn recheck_eviction_after_reconnect(&self) -> Result<(), StoreError> {
        let now_ms = u64::try_from(self.eviction.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due = now_ms.saturating_sub(self.eviction.last_checked_ms.load(Ordering::Acquire))
            >= RECHECK_EVERY_MS;
        // Warnings once per reconnect, not at every periodic look.
        let reconnected = self.eviction.recheck.load(Ordering::Acquire);
        if !due && !reconnected {
            return Ok(());
        }
        self.eviction
            .last_checked_ms
            .store(now_ms, Ordering::Release);
        for policy in self.eviction_policies().await {
            match policy {
                EvictionPolicy::Evicting { node, policy } if !self.eviction.allowed => {
                    // Look again at every ping until it is safe: health stays NOT_SERVING.
                    self.eviction.recheck.store(true, Ordering::Release);
                    if !self.eviction.reported.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            %node,
                            policy,
                            "Redis now evicts keys (maxmemory-policy {policy}): revoked tokens \
                             could verify again; set maxmemory-policy noeviction"
                        );
                    }
                    return Err(StoreError::Unavailable {
                        backend: BACKEND,
                        cause: anyhow::anyhow!("maxmemory-policy {policy} on {node} evicts keys"),
                    });
                }
                EvictionPolicy::Evicting { node, policy } if reconnected => tracing::warn!(
                    %node,
                    policy,
                    "Redis evicts keys (AUTHD_REDIS_ALLOW_EVICTION=true): revoked tokens may \
                     verify again when it is full"
                ),
                EvictionPolicy::Unknown { node, reason } if reconnected => {
                    warn_unknown(&node, &reason)
                }
                _ => {}
            }
        }
        self.eviction.recheck.store(false, Ordering::Release);
        self.eviction.reported.store(false, Ordering::Release);
        Ok(())
    }
}

/// The warning for a node whose policy cannot be read.
pub fn warn_unknown(node: &str, reason: &str) {
    tracing::warn!(
        %node,
        reason,
        "cannot read Redis's maxmemory-policy: make sure it is noeviction (with an evicting \
         policy a full Redis drops revocations and revoked tokens verify again)"
    );
}

async fn read_policy(client: Client) -> Result<String, StoreError> {
    bounded(BACKEND, REDIS_TIMEOUT, async move {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(redis_error)?;
        let reply = config_get_policy()
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        policy_from_reply(reply)
    })
    .await
}

fn config_get_policy() -> redis::Cmd {
    let mut command = redis::cmd("CONFIG");
    command.arg("GET").arg("maxmemory-policy");
    command
}

fn policy_from_reply(reply: Vec<String>) -> Result<String, StoreError> {
    reply.get(1).cloned().ok_or_else(|| {
        StoreError::unexpected(anyhow::anyhow!(
            "CONFIG GET maxmemory-policy answered nothing"
        ))
    })
}
