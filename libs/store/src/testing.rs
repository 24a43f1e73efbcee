//! Real databases for tests in any crate: a fresh SQLite file and a fresh Postgres database on
//! the server named by `CROFT_TEST_POSTGRES`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{PoolSettings, Store};

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn sqlite() -> Store {
    let path = std::env::temp_dir().join(format!("{}.db", unique("croft_store_test")));
    let store = Store::connect(
        &format!("sqlite://{}", path.display()),
        &PoolSettings::default(),
    )
    .await
    .expect("sqlite opens");
    store.migrate().await.expect("sqlite migrates");
    store
}

fn postgres_admin_url() -> String {
    std::env::var("CROFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh Postgres database on the server named by `CROFT_TEST_POSTGRES` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`). `scripts/services` makes sure that server
/// runs.
pub async fn postgres() -> Store {
    let admin_url = postgres_admin_url();
    let admin = Store::connect(&admin_url, &PoolSettings::default())
        .await
        .expect("Postgres is reachable (set CROFT_TEST_POSTGRES)");
    drop_stale_test_databases(&admin).await;
    let db = unique("croft_test");
    // The name is ours (prefix, pid, counter), never user input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(admin.pool())
        .await
        .expect("create test database");
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin_url);
    let store = Store::connect(&format!("{base}/{db}"), &PoolSettings::default())
        .await
        .expect("test database opens");
    store.migrate().await.expect("postgres migrates");
    store
}

/// Test databases of earlier runs (other process ids) are dropped; ours stay until next time.
async fn drop_stale_test_databases(admin: &Store) {
    use sqlx::Row;
    let Ok(rows) = sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'croft_test_%'")
        .fetch_all(admin.pool())
        .await
    else {
        return;
    };
    let mine = format!("croft_test_{}_", std::process::id());
    for row in rows {
        let Ok(name) = row.try_get::<String, _>("datname") else {
            continue;
        };
        if !name.starts_with(&mine) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(admin.pool())
            .await;
        }
    }
}

pub async fn both() -> Vec<(&'static str, Store)> {
    vec![("sqlite", sqlite().await), ("postgres", postgres().await)]
}
