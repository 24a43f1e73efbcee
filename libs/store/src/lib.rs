//! The database layer: one schema with migrations for Postgres (production) and SQLite (the
//! embedded default), and the queries the services run, through sqlx's `Any` driver.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

pub mod game;
pub mod leases;
pub mod sessions;
pub mod social;
pub mod testing;

pub use game::{Craft, CraftError, CraftOutput, DeckRow, FarmWrite, ItemChange};
pub use leases::FarmLease;
pub use sessions::{NewRefresh, RefreshOutcome};
pub use social::{Friend, FriendError, FriendState, RequestOutcome, Revoked};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub type UserId = i64;

/// What went wrong, in terms a service can map to an answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retry later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken (HTTP 409).
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The URL or the configuration is wrong.
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything else; the text is for logs, not for clients.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Configuration(_) => StoreError::Config(e.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Pool limits: a database that is down makes calls fail within `acquire_timeout`.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: i64,
}

/// An event to publish, written in the same transaction as the change it describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub event_id: String,
    pub event_type: String,
    pub key: String,
    pub payload: String,
}

/// An outbox row read back for publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub event: OutboxEvent,
    pub created_at: i64,
    /// When the relay had it acknowledged by the broker.
    pub sent_at: Option<i64>,
}

/// A connection pool and the queries the services run.
///
/// The queries go through sqlx's `Any` driver so that both engines pass the same code and the
/// same tests. Every query uses `$N` placeholders in ascending order, which both engines accept.
/// Ids are chosen by the application (random positive `i64`), except the outbox's, which must
/// be ordered.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Usernames are unique without regard to case or surrounding space.
pub fn username_key(name: &str) -> String {
    name.trim().to_lowercase()
}

fn random_id() -> Result<i64, StoreError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| StoreError::Internal(format!("no OS randomness: {e}")))?;
    // 53 bits: ids travel in JSON, and JSON readers that use doubles (JavaScript, GDScript)
    // keep integers exact only up to 2^53.
    Ok((u64::from_le_bytes(b) >> 11).max(1) as i64)
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH`, created if missing).
    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL scheme in `{}` (use postgres:// or sqlite://)",
                redact(url)
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Config(e.to_string()))?;
        let max = match backend {
            // SQLite serialises writers; a few connections avoid lock churn.
            Backend::Sqlite => settings.max_connections.min(4),
            Backend::Postgres => settings.max_connections,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA journal_mode = WAL",
                            // WAL with NORMAL sync cannot corrupt the database; a power cut
                            // may lose the last commits, which the embedded default accepts.
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies pending migrations; a failure is an error, never silently skipped.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Checks that every migration this build embeds has been applied, without changing the
    /// schema: for services whose database role has no DDL rights (the migrations run as
    /// another role, e.g. `croft migrate` in a Kubernetes Job).
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        let rows = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| {
                StoreError::Migration(format!(
                    "the schema is not migrated (run `croft migrate`): {e}"
                ))
            })?;
        let applied: std::collections::HashSet<i64> = rows
            .iter()
            .filter_map(|r| r.try_get::<i64, _>("version").ok())
            .collect();
        let missing: Vec<String> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Migration(format!(
                "migrations not applied yet (run `croft migrate`): {}",
                missing.join(", ")
            )))
        }
    }

    /// Migrates, or with `skip` only checks that the schema is current ([`Self::check_migrated`]).
    pub async fn prepare(&self, skip: bool) -> Result<(), StoreError> {
        if skip {
            self.check_migrated().await
        } else {
            self.migrate().await
        }
    }

    /// Connects to `url` (creating a SQLite file's folder first) and prepares the schema
    /// ([`Self::prepare`]).
    pub async fn open(
        url: &str,
        settings: &PoolSettings,
        skip_migrations: bool,
    ) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://")
            && let Some(parent) =
                std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let store = Store::connect(url, settings).await?;
        store.prepare(skip_migrations).await?;
        Ok(store)
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ----------------------------------------------------------------------------------------
    // Users
    // ----------------------------------------------------------------------------------------

    /// Creates a user with an already-computed PHC password hash.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user_tx(&mut tx, username, password_hash).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, disabled, created_at FROM users WHERE username_key = $1",
        )
        .bind(username_key(username))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, password_hash, disabled, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// Disabling also ends every session of the user, in the same transaction.
    pub async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(i32::from(disabled))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Outbox
    // ----------------------------------------------------------------------------------------

    /// Writes an event alone (when there is no other change to share a transaction with).
    pub async fn insert_event(&self, event: &OutboxEvent) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_event_tx(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unsent events, oldest first.
    pub async fn unsent_events(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.unsent_events_after(0, limit).await
    }

    /// Unsent events with ids above `after` (0: from the oldest), oldest first: the relay reads
    /// its next batch while the broker acknowledges the one before.
    pub async fn unsent_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, event_type, event_key, payload, created_at, sent_at FROM outbox \
             WHERE sent_at IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        outbox_rows(rows)
    }

    /// Creates the database `name` on this server (Postgres; the name: lowercase letters,
    /// digits and `_`), for tools that set up a stack of their own.
    pub async fn create_database(&self, name: &str) -> Result<(), StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(StoreError::Config(format!("bad database name {name:?}")));
        }
        // Checked above: only [a-z0-9_] is formatted in.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many outbox rows wait for the relay.
    pub async fn unsent_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Every outbox row, sent or not, oldest first (tests and operators).
    pub async fn outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, event_type, event_key, payload, created_at, sent_at FROM outbox \
             ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        outbox_rows(rows)
    }

    /// Marks these events sent (by row id). Only the given ids: a row with a lower id committed
    /// later is still unsent. SQLite: one statement with the ids as a JSON array (`json_each`).
    /// Postgres: a statement per 500 ids in one transaction (measured: a 5,000-id batch costs
    /// about what updating its rows costs; `id = ANY(array)` and a join with `unnest` planned a
    /// scan of the whole table while it had no statistics yet, and one statement with the ids
    /// as one `BIGINT[]` parameter and `id BETWEEN min AND max` marked 5,000 rows in ~100 ms
    /// against ~80 ms this way: the array is searched row by row, not hashed).
    pub async fn mark_sent(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        match self.backend {
            Backend::Sqlite => {
                let mut list = String::with_capacity(ids.len() * 20 + 2);
                list.push('[');
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        list.push(',');
                    }
                    list.push_str(&id.to_string());
                }
                list.push(']');
                sqlx::query(
                    "UPDATE outbox SET sent_at = $1 WHERE id IN (SELECT value FROM json_each($2))",
                )
                .bind(now)
                .bind(list)
                .execute(&self.pool)
                .await?;
            }
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                for chunk in ids.chunks(500) {
                    let placeholders: Vec<String> =
                        (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                    let sql = format!(
                        "UPDATE outbox SET sent_at = $1 WHERE id IN ({})",
                        placeholders.join(", ")
                    );
                    // Only numbered placeholders are formatted in; the ids are bound.
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Writes many events in one transaction (imports, benchmarks).
    pub async fn insert_events(&self, events: &[OutboxEvent]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            insert_event_tx(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a user and its `user_created` event in one transaction.
    pub async fn create_user_with_event(
        &self,
        username: &str,
        password_hash: &str,
        event: impl FnOnce(&User) -> OutboxEvent,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user_tx(&mut tx, username, password_hash).await?;
        insert_event_tx(&mut tx, &event(&user)).await?;
        tx.commit().await?;
        Ok(user)
    }

    // ----------------------------------------------------------------------------------------
    // Match results
    // ----------------------------------------------------------------------------------------

    /// Records a finished match; recording the same match twice is a conflict.
    pub async fn record_match(&self, result: &MatchResult) -> Result<(), StoreError> {
        insert_match_result(&self.pool, result, false).await?;
        Ok(())
    }

    /// Records a finished match and its event in one transaction, once: `false` (and no
    /// event) when the match was recorded already.
    pub async fn record_match_with_event(
        &self,
        result: &MatchResult,
        event: &OutboxEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !insert_match_result(&mut *tx, result, true).await? {
            return Ok(false);
        }
        insert_event_tx(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Which of `match_ids` are recorded, with their end reasons.
    pub async fn recorded_matches(
        &self,
        match_ids: &[i64],
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in match_ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT match_id, reason FROM match_results WHERE match_id IN ({})",
                marks.join(", ")
            );
            // Only numbered placeholders are formatted in; the ids are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push((row.try_get("match_id")?, row.try_get("reason")?));
            }
        }
        Ok(out)
    }

    /// The recorded end reason of a match, if it was recorded.
    pub async fn match_reason(&self, match_id: i64) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT reason FROM match_results WHERE match_id = $1")
            .bind(match_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("reason")).transpose()?)
    }

    /// The ids of every recorded match, in order.
    pub async fn match_result_ids(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT match_id FROM match_results ORDER BY match_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("match_id").map_err(StoreError::from))
            .collect()
    }

    pub async fn match_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM match_results")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

/// A finished match as recorded in `match_results`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchResult {
    pub match_id: i64,
    pub players: [i64; 2],
    /// `None`: a draw or an aborted match.
    pub winner: Option<i64>,
    pub reason: String,
    pub turns: i32,
    pub data_version: String,
    /// The whole record as JSON.
    pub record: String,
}

/// Inserts a result: `Ok(false)` when it exists and `once` is set, a conflict otherwise.
async fn insert_match_result<'c, E>(
    executor: E,
    r: &MatchResult,
    once: bool,
) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = if once {
        "INSERT INTO match_results (match_id, player_a, player_b, winner, reason, turns, data_version, record, ended_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (match_id) DO NOTHING"
    } else {
        "INSERT INTO match_results (match_id, player_a, player_b, winner, reason, turns, data_version, record, ended_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    };
    let done = sqlx::query(sql)
        .bind(r.match_id)
        .bind(r.players[0])
        .bind(r.players[1])
        .bind(r.winner)
        .bind(&r.reason)
        .bind(r.turns)
        .bind(&r.data_version)
        .bind(&r.record)
        .bind(now_ms())
        .execute(executor)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn insert_user_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    username: &str,
    password_hash: &str,
) -> Result<User, StoreError> {
    let name = username.trim();
    if name.is_empty() {
        return Err(StoreError::Internal("empty username".into()));
    }
    let user = User {
        id: random_id()?,
        username: name.to_string(),
        password_hash: password_hash.to_string(),
        disabled: false,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO users (id, username, username_key, password_hash, disabled, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5)",
    )
    .bind(user.id)
    .bind(&user.username)
    .bind(username_key(name))
    .bind(&user.password_hash)
    .bind(user.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("user `{name}`")),
        other => other,
    })?;
    Ok(user)
}

/// Inserts an outbox row inside the caller's transaction.
pub async fn insert_event_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &OutboxEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, event_key, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.event_id)
    .bind(&event.event_type)
    .bind(&event.key)
    .bind(&event.payload)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User, StoreError> {
    let disabled: i32 = r.try_get("disabled")?;
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        disabled: disabled != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// The database flags of every part that keeps data (auth, matchmaking, connection servers,
/// `croft migrate`, `croft user`). The instance server's database is optional (without one it
/// hosts matches only) and has flags of its own.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `postgres://…` or `sqlite://PATH` (created if missing).
    #[arg(
        long,
        env = "CROFT_DATABASE_URL",
        default_value = "sqlite://data/croft.db"
    )]
    pub database: String,
    /// A file holding the database URL (a mounted secret); wins over --database.
    #[arg(long, env = "CROFT_DATABASE_URL_FILE")]
    pub database_url_file: Option<std::path::PathBuf>,
    /// Do not migrate at start-up; only check that the schema is current and stop if not
    /// (for a database role without DDL rights; `croft migrate` runs them as another role).
    #[arg(long, env = "CROFT_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,
}

impl DatabaseArgs {
    /// The URL to connect to: the file's content when `--database-url-file` is given.
    pub fn url(&self) -> Result<String, StoreError> {
        resolve_url(&self.database, self.database_url_file.as_deref())
    }

    /// Connects and migrates (or, with `--skip-migrations`, checks the schema).
    pub async fn open(&self, settings: &PoolSettings) -> Result<Store, StoreError> {
        Store::open(&self.url()?, settings, self.skip_migrations).await
    }
}

/// The database URL: the content of `file` (a mounted secret) when one is given, else `url`.
pub fn resolve_url(url: &str, file: Option<&std::path::Path>) -> Result<String, StoreError> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                StoreError::Config(format!(
                    "cannot read the database URL from {}: {e}",
                    path.display()
                ))
            }),
        None => Ok(url.to_string()),
    }
}

/// Outbox rows as the outbox queries select them (`id, event_id, event_type, event_key,
/// payload, created_at, sent_at`).
fn outbox_rows(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<OutboxRow>, StoreError> {
    rows.iter()
        .map(outbox_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

fn outbox_row(r: &sqlx::any::AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        event: OutboxEvent {
            event_id: r.try_get("event_id")?,
            event_type: r.try_get("event_type")?,
            key: r.try_get("event_key")?,
            payload: r.try_get("payload")?,
        },
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

/// A database URL with any password removed, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn username_keys_fold_case_and_space() {
        assert_eq!(username_key("  Alice "), "alice");
    }
}
