//! The Postgres connections Refresh's rotation runs on, held by deadpool outside sqlx's pool.
//! sqlx 0.9 pings every connection it takes back (`Floating::return_to_pool`, one more round
//! trip per statement, not configurable), and the rotation, the hot path of Refresh, is one
//! statement. Here a connection is pinged only when taken after [`PING_WHEN_IDLE_FOR`] unused.
//!
//! Taking a connection (opening one if need be) and running the statement happen on a task of
//! their own, which goes on when the call that started it is cancelled (a client's deadline, the
//! store's time limit): a connection keeps its slot until Postgres has answered, and a connect
//! is not abandoned half-way, so cancelled calls neither leave back ends working beyond the
//! connection limit nor make authd reconnect. A call given up before it had a connection runs
//! no statement. A connection is thrown away when a statement on it fails or runs past
//! [`ABANDON_AFTER`], when it is older than [`MAX_LIFETIME`], or when it has been idle for
//! [`IDLE_TIMEOUT`] (idle ones are also closed in the background after that long, as sqlx's pool
//! does). At most [`PENDING_PER_CONNECTION`] rotations per connection are under way or waiting
//! at once. Same connect options, TLS included, as the main pool.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use deadpool::{
    Runtime,
    managed::{self, Metrics, PoolError, QueueMode, RecycleError, RecycleResult},
};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{Semaphore, oneshot};

use super::dialect::{ACQUIRE_TIMEOUT, PING_WHEN_IDLE_FOR};

/// A connection older than this is replaced, as sqlx's pool does by default (a server moved
/// behind its DNS name is found within this long).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// A connection unused for this long is closed (sqlx's default idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A statement still running after this long is given up and its connection closed.
pub const ABANDON_AFTER: Duration = Duration::from_secs(30);

/// Rotations that may be under way or waiting for a connection at once, per connection; past
/// that, a rotation is refused at once (UNAVAILABLE) instead of queueing work that cancelled
/// calls would no longer bound.
pub const PENDING_PER_CONNECTION: usize = 64;

/// One statement on a borrowed connection.
pub type Call<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Connections for the rotation; cheap to clone (a pool handle).
#[derive(Clone)]
pub struct RotationPool {
    pool: managed::Pool<Connector>,
    /// One permit per rotation under way or waiting, held by its task.
    pending: Arc<Semaphore>,
}

impl std::fmt::Debug for RotationPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("RotationPool")
            .field("max_size", &status.max_size)
            .field("size", &status.size)
            .field("pending", &self.pending.available_permits())
            .finish()
    }
}

/// Opens connections with the main pool's options.
struct Connector {
    options: PgConnectOptions,
}

/// A connection, and whether the last statement on it ended in a state fit for the next.
pub struct RotationConnection {
    connection: PgConnection,
    settled: bool,
}

impl managed::Manager for Connector {
    type Type = RotationConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<RotationConnection, sqlx::Error> {
        Ok(RotationConnection {
            connection: self.options.connect().await?,
            settled: true,
        })
    }

    async fn recycle(
        &self,
        connection: &mut RotationConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if !connection.settled {
            return Err(RecycleError::message("its last statement did not end well"));
        }
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        if metrics.last_used() > IDLE_TIMEOUT {
            return Err(RecycleError::message("idle too long"));
        }
        if metrics.last_used() > PING_WHEN_IDLE_FOR {
            connection.connection.ping().await?;
        }
        Ok(())
    }
}

impl RotationPool {
    /// At most `max_size` connections, opened when first needed. Starts the task that closes
    /// idle ones (it ends with the pool).
    pub fn new(options: PgConnectOptions, max_size: usize) -> Self {
        let pool = managed::Pool::builder(Connector { options })
            .max_size(max_size)
            // The most recently used first: under light load one connection stays warm (no
            // ping) instead of every connection going idle in turn.
            .queue_mode(QueueMode::Lifo)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .recycle_timeout(Some(ACQUIRE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime and a timeout are both set");
        let weak = pool.weak();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(IDLE_TIMEOUT / 10);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                pool.retain(|_, metrics| metrics.last_used() < IDLE_TIMEOUT);
            }
        });
        Self {
            pool,
            pending: Arc::new(Semaphore::new(max_size * PENDING_PER_CONNECTION)),
        }
    }

    /// Runs `call` on a connection of this pool, on a task of its own: taking the connection
    /// (opening one if need be) and the statement go on to their end (or [`ABANDON_AFTER`])
    /// whether or not this call is still awaited.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl for<'c> FnOnce(&'c mut PgConnection) -> Call<'c, T> + Send + 'static,
    ) -> Result<T, sqlx::Error> {
        let pending = Arc::clone(&self.pending)
            .try_acquire_owned()
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let pool = self.pool.clone();
        let (answer, answered) = oneshot::channel();
        tokio::spawn(async move {
            let _pending = pending;
            let outcome = match pool.get().await {
                Err(PoolError::Backend(error)) => Err(error),
                Err(PoolError::Timeout(_)) => Err(sqlx::Error::PoolTimedOut),
                Err(PoolError::Closed) => Err(sqlx::Error::PoolClosed),
                Err(other) => Err(sqlx::Error::Configuration(other.to_string().into())),
                Ok(mut pooled) => {
                    // The caller gave up while waiting: nobody would receive what the statement
                    // changes (a rotation would spend a token whose successor nobody holds).
                    if answer.is_closed() {
                        return;
                    }
                    let RotationConnection {
                        connection,
                        settled,
                    } = &mut *pooled;
                    *settled = false;
                    let result = tokio::time::timeout(ABANDON_AFTER, call(connection))
                        .await
                        .unwrap_or_else(|_| {
                            Err(sqlx::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no answer within {} s", ABANDON_AFTER.as_secs()),
                            )))
                        });
                    // Only a statement that answered leaves the connection known to be fit
                    // (after an error, it may be read-only after a failover, or shutting down).
                    *settled = result.is_ok();
                    result
                }
            };
            let _ = answer.send(outcome);
        });
        answered
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::WorkerCrashed))
    }
}
