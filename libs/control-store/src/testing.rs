//! Redis for tests in any crate: the server `CROFT_TEST_REDIS` names (default
//! `redis://127.0.0.1:6379`; `scripts/services` starts it), each caller under keys of its own.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ControlStore, RedisStore};

static NEXT: AtomicU64 = AtomicU64::new(0);

pub fn redis_url() -> String {
    std::env::var("CROFT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (in this or another process) uses: `{croft-test-LABEL-...}:`.
pub fn fresh_prefix(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{{croft-test-{label}-{}-{}-{nanos}}}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A handle on the test Redis under a fresh prefix, once it answers (a test without Redis
/// fails here, saying how to start it). Delete its keys with `ControlStore::clear`.
pub async fn redis(label: &str) -> RedisStore {
    let store = RedisStore::connect(&redis_url(), &fresh_prefix(label)).expect("redis url");
    ControlStore::Redis(store.clone())
        .ping()
        .await
        .expect("Redis must be running for these tests (scripts/services starts it)");
    store
}
