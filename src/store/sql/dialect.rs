//! What differs between the two SQL databases, and nothing else: how each connects and migrates,
//! how a UUID travels (Postgres `uuid`; SQLite hyphenated `TEXT`), and which error codes mean
//! "unavailable". The statements themselves are shared (`$n` placeholders work on both).

use std::{fmt, str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// How long a request may wait for a pooled connection before UNAVAILABLE.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled Postgres connection idle for longer than this is pinged before use (a dead one is
/// replaced instead of failing a request). sqlx's default pings before every use, an extra round
/// trip per query; a connection in steady use was just seen alive.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// SQLite connections: one writer at a time anyway; a few readers beside it.
const SQLITE_MAX_CONNECTIONS: u32 = 8;
/// How long SQLite waits on a lock held by another connection before reporting BUSY.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the user database is, parsed by sqlx itself from `AUTHD_DATABASE_URL`.
#[derive(Clone)]
pub enum DatabaseLocation {
    /// `postgres://…` or `postgresql://…`.
    Postgres(PgConnectOptions),
    /// `sqlite:…`, or the embedded default in the data directory.
    Sqlite(SqliteConnectOptions),
}

impl DatabaseLocation {
    /// The embedded default: a SQLite file at `path`.
    pub fn sqlite_file(path: &std::path::Path) -> Self {
        Self::Sqlite(SqliteConnectOptions::new().filename(path))
    }

    /// Where authd before 2026-12 kept the embedded database for `path`, when that is elsewhere:
    /// it opened `sqlite://{path}`, which percent-decodes (`x%41` became `xA`) and cuts at `?`.
    pub fn legacy_sqlite_file(path: &std::path::Path) -> Option<std::path::PathBuf> {
        let legacy: SqliteConnectOptions = format!("sqlite://{}", path.display()).parse().ok()?;
        let legacy = legacy.get_filename().to_path_buf();
        (legacy != path).then_some(legacy)
    }

    /// The SQLite database file whose lock keeps a second process off it (the embedded store
    /// serves one process); `None` for Postgres and in-memory SQLite.
    pub fn lock_target(&self) -> Option<std::path::PathBuf> {
        let Self::Sqlite(options) = self else {
            return None;
        };
        let file = options.get_filename();
        let name = file.to_string_lossy();
        if name.is_empty() || name == ":memory:" || name.starts_with("file::memory:") {
            return None;
        }
        Some(file.to_path_buf())
    }

    /// Whether this is the embedded (single-process) database.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Sqlite(_))
    }
}

impl FromStr for DatabaseLocation {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let refused = |e: sqlx::Error| format!("cannot parse the URL: {e}");
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(url.parse().map_err(refused)?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(url.parse().map_err(refused)?))
        } else {
            Err("must start with postgres://, postgresql:// or sqlite:".into())
        }
    }
}

/// Never prints the connection options: a Postgres URL may carry a password.
impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(_) => f.write_str("DatabaseLocation::Postgres(<redacted>)"),
            Self::Sqlite(options) => write!(
                f,
                "DatabaseLocation::Sqlite({})",
                options.get_filename().display()
            ),
        }
    }
}

/// A pool of connections to whichever database holds the users.
#[derive(Debug, Clone)]
pub enum Pool {
    /// Postgres.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl Pool {
    /// Connects (Postgres: at most `max_connections` at once) and runs the dialect's migrations.
    /// Postgres migrations run under sqlx's advisory lock, so instances starting at once are safe.
    pub async fn connect(
        location: &DatabaseLocation,
        max_connections: u32,
    ) -> Result<Self, sqlx::Error> {
        match location {
            DatabaseLocation::Postgres(options) => {
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(false)
                    .before_acquire(|connection, meta| {
                        Box::pin(async move {
                            if meta.idle_for > PING_WHEN_IDLE_FOR {
                                sqlx::Connection::ping(connection).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(options.clone())
                    .await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                Ok(Self::Postgres(pool))
            }
            DatabaseLocation::Sqlite(options) => {
                let options = options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // WAL + NORMAL is durable across application crashes; FULL also across power
                    // loss. Revocations must survive, so FULL.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(SQLITE_MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// The OpenTelemetry `db.system` of this database.
    pub fn db_system(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgresql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// A short name for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

/// Postgres stores UUIDs as `uuid`.
pub mod postgres {
    /// A UUID as Postgres binds and returns it.
    pub type Uuid = uuid::Uuid;

    /// The bind value for `id`.
    pub fn uuid(id: uuid::Uuid) -> Uuid {
        id
    }

    /// The UUID in a returned value.
    pub fn from_db(value: Uuid) -> uuid::Uuid {
        value
    }
}

/// SQLite stores UUIDs as hyphenated text.
pub mod sqlite {
    /// A UUID as SQLite binds and returns it.
    pub type Uuid = uuid::fmt::Hyphenated;

    /// The bind value for `id`.
    pub fn uuid(id: uuid::Uuid) -> Uuid {
        id.hyphenated()
    }

    /// The UUID in a returned value.
    pub fn from_db(value: Uuid) -> uuid::Uuid {
        value.into_uuid()
    }
}

/// Whether a Postgres SQLSTATE means the server cannot serve now (rather than a bug): class 08
/// (connection exception), 57P (operator intervention: shutdown), 53 (insufficient resources:
/// disk full, out of memory, too many connections).
pub fn postgres_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || sqlstate.starts_with("57P") || sqlstate.starts_with("53")
}

/// Whether a SQLite result code (primary or extended) means the database cannot serve now:
/// BUSY, LOCKED, READONLY, IOERR, FULL (disk full), CANTOPEN.
pub fn sqlite_unavailable(code: &str) -> bool {
    const BUSY: i64 = 5;
    const LOCKED: i64 = 6;
    const READONLY: i64 = 8;
    const IOERR: i64 = 10;
    const FULL: i64 = 13;
    const CANTOPEN: i64 = 14;
    code.parse::<i64>()
        .is_ok_and(|code| [BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN].contains(&(code & 0xff)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_and_full_disks_are_unavailable_bugs_are_not() {
        for code in ["5", "6", "8", "10", "13", "14", "266", "517", "3850"] {
            assert!(sqlite_unavailable(code), "SQLite {code}");
        }
        for code in ["1", "19", "2067", "1555", "garbage"] {
            assert!(!sqlite_unavailable(code), "SQLite {code}");
        }
        for sqlstate in ["08006", "57P01", "53100", "53300"] {
            assert!(postgres_unavailable(sqlstate), "Postgres {sqlstate}");
        }
        for sqlstate in ["23505", "42P01", "22P02"] {
            assert!(!postgres_unavailable(sqlstate), "Postgres {sqlstate}");
        }
    }
}
