//! How every implementation under contract is built, fresh and isolated for one test, and cleaned
//! up after it; and `contract_suite!`, which runs each case of a suite against each of them.
//!
//! - Postgres: a new database (`TestDatabase`), dropped with the store.
//! - SQLite: a new file in a temporary directory, removed with the store.
//! - Redis: the shared server under a key prefix of its own, `authd-contract:<uuid>:`, whose keys
//!   are deleted (SCAN MATCH + DEL) when the store is dropped.
//! - The cached-mode mirror: over a Redis store with a fresh prefix, used only once it is current.
//! - The embedded default's resident revocations: loaded from a SQL store on a new SQLite file.
//! - Redis Cluster: a private cluster, started once per test function (it takes seconds) and
//!   shared by that test's cases, each on its own prefix; its servers are killed, and its data
//!   discarded, when it is dropped.

use std::{
    any::Any,
    ops::Deref,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use authd::{
    clock::{Clock as _, SystemClock},
    store::{
        ResidentRevocations, RevocationStore, UserStore,
        mirror::MirroredRevocations,
        redis::{RedisStore, RedisTopology},
        sql::{DatabaseLocation, SqlStore},
    },
};
use uuid::Uuid;

use crate::common::{TestDatabase, cluster::RedisCluster, redis_url};

/// Connections per SQL store (SQLite has its own fixed pool): more than the concurrent-insert case
/// runs at once, so that its inserts really race in the database rather than queue for a connection.
const MAX_CONNECTIONS: u32 = 10;
/// How long a new mirror may take to become current (it needs its own heartbeat back: ~0.5 s).
const MIRROR_CURRENT_WITHIN: Duration = Duration::from_secs(5);

/// A store built for one test, with what must outlive it (its database, directory or key prefix).
/// The store is dropped first, then what it lived in.
pub struct Fresh<S> {
    store: S,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl<S> Deref for Fresh<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.store
    }
}

/// A SQL store on a new Postgres database.
pub async fn postgres() -> Fresh<SqlStore> {
    let database = TestDatabase::create().await;
    let location: DatabaseLocation = database.url.parse().expect("the test database URL parses");
    let store = SqlStore::connect(&location, MAX_CONNECTIONS)
        .await
        .expect("connect to (and migrate) the test database");
    assert_eq!(UserStore::describe(&store), "postgres");
    Fresh {
        store,
        keep: vec![Box::new(database)],
    }
}

/// A SQL store on a new SQLite file in a temporary directory.
pub async fn sqlite() -> Fresh<SqlStore> {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = sqlite_at(&sqlite_file(&directory)).await;
    Fresh {
        store,
        keep: vec![Box::new(SqliteDirectory(directory))],
    }
}

/// The database file of a SQLite store in `directory`.
pub fn sqlite_file(directory: &tempfile::TempDir) -> std::path::PathBuf {
    directory.path().join("authd.sqlite3")
}

/// A SQL store on the SQLite file `path`, created (and migrated) if need be; another store on the
/// same file sees what this one wrote.
pub async fn sqlite_at(path: &std::path::Path) -> SqlStore {
    let store = SqlStore::connect(&DatabaseLocation::sqlite_file(path), MAX_CONNECTIONS)
        .await
        .expect("create (and migrate) the SQLite database");
    assert_eq!(UserStore::describe(&store), "sqlite");
    store
}

/// The embedded default's resident revocations, loaded from a SQL store on a new SQLite file.
pub async fn resident() -> Fresh<ResidentRevocations> {
    let Fresh { store, keep } = sqlite().await;
    let resident = ResidentRevocations::load(store, std::sync::Arc::new(SystemClock))
        .await
        .expect("load the resident revocations");
    assert_eq!(RevocationStore::describe(&resident), "sqlite (in memory)");
    Fresh {
        store: resident,
        keep,
    }
}

/// The temporary directory of a SQLite store.
struct SqliteDirectory(tempfile::TempDir);

impl Fresh<SqlStore> {
    /// Every cell of every row of `table`, as the database holds it: raw bytes (text as UTF-8,
    /// blobs and UUIDs as stored, integers in the driver's binary form), `None` for NULL. Read on
    /// a connection of its own, so that the store's code has no say in what is seen.
    pub async fn raw_cells(&self, table: &str) -> Vec<Option<Vec<u8>>> {
        use sqlx::Connection as _;
        // `table` is one of the tests' own constants.
        let select = || sqlx::AssertSqlSafe(format!("SELECT * FROM {table}"));
        fn cells<R: sqlx::Row>(rows: &[R]) -> Vec<Option<Vec<u8>>>
        where
            for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            rows.iter()
                .flat_map(|row| {
                    (0..row.len()).map(move |index| {
                        row.try_get_unchecked(index)
                            .unwrap_or_else(|error| panic!("cell {index}: {error}"))
                    })
                })
                .collect()
        }
        if let Some(database) = self.kept::<TestDatabase>() {
            let mut connection = sqlx::PgConnection::connect(&database.url)
                .await
                .expect("connect to the test database");
            cells(
                &sqlx::query(select())
                    .fetch_all(&mut connection)
                    .await
                    .expect("read the rows"),
            )
        } else {
            let directory = self
                .kept::<SqliteDirectory>()
                .expect("a SQL store keeps its database or its directory");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(sqlite_file(&directory.0))
                .read_only(true);
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .expect("open the SQLite file");
            cells(
                &sqlx::query(select())
                    .fetch_all(&mut connection)
                    .await
                    .expect("read the rows"),
            )
        }
    }
}

/// A Redis store on the shared server, under a new key prefix.
pub async fn redis() -> Fresh<RedisStore> {
    let prefix = RedisPrefix::new(redis_url());
    let store = RedisStore::connect(
        &RedisTopology::Single(redis_url()),
        &Default::default(),
        &prefix.prefix,
        false,
    )
    .await
    .expect("connect to Redis");
    assert_eq!(RevocationStore::describe(&store), "redis");
    Fresh {
        store,
        keep: vec![Box::new(prefix)],
    }
}

/// The cached-mode mirror over a Redis store with a new prefix, once it answers from memory.
pub async fn mirror() -> Fresh<MirroredRevocations> {
    let Fresh { store, keep } = redis().await;
    Fresh {
        store: current_mirror(store).await,
        keep,
    }
}

/// A cached-mode mirror over `redis` (which other mirrors may share), once it answers from memory.
pub async fn current_mirror(redis: RedisStore) -> MirroredRevocations {
    let mirror = MirroredRevocations::start(redis, Arc::new(SystemClock));
    let deadline = Instant::now() + MIRROR_CURRENT_WITHIN;
    while !mirror.is_current() {
        assert!(
            Instant::now() < deadline,
            "the mirror did not become current within {MIRROR_CURRENT_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mirror
}

/// Starts a private Redis Cluster (seconds), off the runtime's workers since it blocks.
pub async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("the Redis Cluster starts")
}

/// A Redis Cluster store on `cluster`, under a new key prefix. Its keys are not deleted one by
/// one: they go with the cluster.
pub async fn on_cluster(cluster: &RedisCluster) -> Fresh<RedisStore> {
    let nodes = cluster
        .ports
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let prefix = unique_prefix();
    let store = RedisStore::connect(
        &RedisTopology::Cluster(nodes),
        &Default::default(),
        &prefix,
        false,
    )
    .await
    .expect("connect to the Redis Cluster");
    assert_eq!(RevocationStore::describe(&store), "redis cluster");
    Fresh {
        store,
        keep: vec![Box::new(ClusterPrefix(prefix))],
    }
}

/// The key prefix of a store on a Redis Cluster (its keys go with the cluster).
struct ClusterPrefix(String);

fn unique_prefix() -> String {
    format!("authd-contract:{}:", Uuid::new_v4().simple())
}

/// A key prefix of one test on a shared Redis server; every key under it is deleted on drop.
struct RedisPrefix {
    prefix: String,
    url: String,
}

impl RedisPrefix {
    fn new(url: String) -> Self {
        Self {
            prefix: unique_prefix(),
            url,
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let url = self.url.clone();
        // The prefix is hex, dashes and colons: nothing a MATCH pattern would interpret.
        let pattern = format!("{}*", self.prefix);
        // Drop cannot await: blocking calls, on a thread of their own rather than a worker's.
        let deleted = std::thread::spawn(move || delete_keys(&url, &pattern))
            .join()
            .expect("the clean-up thread does not panic");
        if let Err(error) = deleted {
            eprintln!("could not delete the keys under {}: {error}", self.prefix);
        }
    }
}

/// Deletes every key matching `pattern`, a page of SCAN at a time.
fn delete_keys(url: &str, pattern: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cursor = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut connection)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut connection)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// What a case that panicked in its own task said.
pub fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned()),
        Err(error) => error.to_string(),
    }
}

/// Runs `futures` at once on this task, their results in order: `futures::future::join_all`,
/// which this crate does not depend on. The concurrency cases use it to race calls on one store:
/// each SQL call takes a pooled connection of its own, so the statements race in the database, and
/// the Redis calls are all in flight on the connection at once.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

/// Declares the tests of one suite, from its list of cases (each an `async fn(&dyn Trait)` in the
/// invoking module):
///
/// - `fresh: { module => builder, … }`: for each implementation, a module with one test per case,
///   each on a store of its own from `backends::builder()`;
/// - `cluster: test_name` (optional): one test that starts a Redis Cluster and runs every case on
///   it, each on a fresh key prefix and in a task of its own, then reports every case that failed.
macro_rules! contract_suite {
    (
        cases: $cases:tt,
        fresh: { $($module:ident => $builder:ident),* $(,)? }
        $(, cluster: $cluster_test:ident)?
        $(,)?
    ) => {
        $( $crate::contract::backends::contract_suite!(@fresh $module, $builder, $cases); )*
        $( $crate::contract::backends::contract_suite!(@cluster $cluster_test, $cases); )?
    };
    (@fresh $module:ident, $builder:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store = $crate::contract::backends::$builder().await;
                    super::$case(&*store).await;
                }
            )*
        }
    };
    (@cluster $test:ident, [$($case:ident),* $(,)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            // A local: the cluster's servers are killed when this test ends, pass or fail.
            let cluster = $crate::contract::backends::start_cluster().await;
            let mut failed: Vec<String> = Vec::new();
            $(
                let store = $crate::contract::backends::on_cluster(&cluster).await;
                // In a task of its own, so that a failing case is reported and the next still runs.
                let outcome = tokio::spawn(async move { $case(&*store).await }).await;
                if let Err(error) = outcome {
                    failed.push(format!(
                        "{}: {}",
                        stringify!($case),
                        $crate::contract::backends::panic_message(error)
                    ));
                }
            )*
            drop(cluster);
            assert!(
                failed.is_empty(),
                "{} case(s) failed on the Redis Cluster:\n{}",
                failed.len(),
                failed.join("\n")
            );
        }
    };
}
pub(crate) use contract_suite;

/// The harness itself: what a Redis-backed test writes under its prefix is gone after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_under_a_test_prefix_are_deleted_when_its_store_is_dropped() {
    use authd::{
        domain::{Jti, UserId},
        store::{Counter, Revocation, Revoked, ThrottleStore},
    };

    let store = redis().await;
    let now = SystemClock.now();
    let revocation = Revocation {
        user: UserId::generate(),
        what: Revoked::Token(Jti::generate()),
        until: now + 3600,
    };
    store.revoke(&[revocation], now).await.unwrap();
    let now_ms = SystemClock.now_millis();
    let counter = Counter {
        count: 1,
        until: now_ms,
        expires_at: now_ms + 60_000,
    };
    assert!(
        ThrottleStore::replace(&*store, "source:192.0.2.1", None, counter, now_ms)
            .await
            .unwrap(),
        "the counter is written"
    );
    let pattern = format!("{}*", store.redis_prefix());
    let mut connection = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let count = async |connection: &mut redis::aio::MultiplexedConnection| {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(connection)
            .await
            .unwrap();
        keys.len()
    };
    assert!(
        count(&mut connection).await >= 2,
        "the store wrote its keys"
    );
    drop(store);
    assert_eq!(count(&mut connection).await, 0, "no key is left behind");
}

impl<S> Fresh<S> {
    /// What this store keeps of type `T`, if anything.
    fn kept<T: 'static>(&self) -> Option<&T> {
        self.keep.iter().find_map(|kept| kept.downcast_ref::<T>())
    }
}

impl Fresh<RedisStore> {
    /// The key prefix of a Redis store, on the shared server or on a cluster.
    pub fn redis_prefix(&self) -> String {
        self.kept::<RedisPrefix>()
            .map(|prefix| prefix.prefix.clone())
            .or_else(|| self.kept::<ClusterPrefix>().map(|prefix| prefix.0.clone()))
            .expect("a Redis store keeps its prefix")
    }
}
