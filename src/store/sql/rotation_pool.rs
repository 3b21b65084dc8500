//! The Postgres connections Refresh's rotation runs on, held by deadpool outside sqlx's pool.
//! sqlx 0.9 pings every connection it takes back (`Floating::return_to_pool`, one more round
//! trip per statement, not configurable), and the rotation, the hot path of Refresh, is one
//! statement. Here a connection is pinged only when taken after [`PING_WHEN_IDLE_FOR`] unused,
//! and thrown away when a call on it did not end with an answer (cancelled, timed out, or a
//! connection error) or when it is older than [`MAX_LIFETIME`]. Same connect options (TLS
//! included) as the main pool.

use std::{future::Future, pin::Pin, time::Duration};

use deadpool::{
    Runtime,
    managed::{self, Metrics, PoolError, RecycleError, RecycleResult},
};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, postgres::PgConnectOptions};

use super::dialect::{ACQUIRE_TIMEOUT, PING_WHEN_IDLE_FOR};

/// A connection older than this is replaced, as sqlx's pool does by default (a server moved
/// behind its DNS name is found within this long).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// One call on a borrowed connection.
pub type Call<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// Connections for the rotation; cheap to clone (a pool handle).
#[derive(Clone)]
pub struct RotationPool(managed::Pool<Connector>);

impl std::fmt::Debug for RotationPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.0.status();
        f.debug_struct("RotationPool")
            .field("max_size", &status.max_size)
            .field("size", &status.size)
            .finish()
    }
}

/// Opens connections with the main pool's options.
struct Connector {
    options: PgConnectOptions,
}

/// A connection, and whether the last call on it ended with an answer.
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
            return Err(RecycleError::message("its last call did not end"));
        }
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("past its lifetime"));
        }
        if metrics.last_used() > PING_WHEN_IDLE_FOR {
            connection.connection.ping().await?;
        }
        Ok(())
    }
}

impl RotationPool {
    /// At most `max_size` connections, opened when first needed.
    pub fn new(options: PgConnectOptions, max_size: usize) -> Self {
        let pool = managed::Pool::builder(Connector { options })
            .max_size(max_size)
            // The most recently used first: under light load one connection stays warm (no
            // ping) instead of every connection going idle in turn.
            .queue_mode(deadpool::managed::QueueMode::Lifo)
            .wait_timeout(Some(ACQUIRE_TIMEOUT))
            .create_timeout(Some(ACQUIRE_TIMEOUT))
            .recycle_timeout(Some(ACQUIRE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime and a timeout are both set");
        Self(pool)
    }

    /// Runs `call` on a connection of this pool. A connection whose call is dropped before it
    /// ends, or ends with an error, is not used again.
    pub async fn run<T>(
        &self,
        call: impl for<'c> FnOnce(&'c mut PgConnection) -> Call<'c, T>,
    ) -> Result<T, sqlx::Error> {
        let mut pooled = self.0.get().await.map_err(|error| match error {
            PoolError::Backend(error) => error,
            PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
            PoolError::Closed => sqlx::Error::PoolClosed,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })?;
        let RotationConnection {
            connection,
            settled,
        } = &mut *pooled;
        *settled = false;
        let result = call(connection).await;
        *settled = result.is_ok();
        result
    }
}
