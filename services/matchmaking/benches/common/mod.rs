//! What the matchmaking benches share: their positional arguments, percentiles and runtime.

/// The bench's positional arguments (cargo's own `--bench` flag and the like left out).
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// The `q` quantile of sorted samples (0 for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The benches' runtime: two workers, as many as this machine has cores.
#[allow(dead_code)] // the queue bench runs no async code
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Whether a Redis that does not answer fails the bench (`CROFT_BENCH_REQUIRE_REDIS=1`, as the
/// smoke runs set) instead of skipping its Redis half.
#[allow(dead_code)] // the queue bench uses no Redis
pub fn redis_required() -> bool {
    std::env::var("CROFT_BENCH_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}
