//! Logs and metrics for every croft process: JSON-lines logs through `tracing`, the `metrics`
//! facade as Prometheus text on `/metrics`, `/proc` process metrics, `/healthz` and `/readyz`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Where a process writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Servers: stdout, collected by the platform.
    Stdout,
    /// Command-line tools whose stdout carries their own output.
    Stderr,
}

/// Installs the global log subscriber once; later calls do nothing. JSON lines, or
/// human-readable text when the target is a terminal. `RUST_LOG` filters (default `info`).
pub fn init_logging(service: &'static str, target: LogTarget) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let terminal = match target {
            LogTarget::Stdout => std::io::stdout().is_terminal(),
            LogTarget::Stderr => std::io::stderr().is_terminal(),
        };
        let writer = move || -> Box<dyn std::io::Write> {
            match target {
                LogTarget::Stdout => Box::new(std::io::stdout()),
                LogTarget::Stderr => Box::new(std::io::stderr()),
            }
        };
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer);
        let result = if terminal {
            builder.try_init()
        } else {
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        };
        if result.is_ok() {
            tracing::info!(service, "logging started");
        }
    });
}

/// Installs the Prometheus recorder for the `metrics` facade once per process and returns its
/// handle (the same handle on every call, so tests and embedded services can share a process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (a test harness): render ours unattached.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Whether the process should receive traffic; `/readyz` answers 503 while false.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(AtomicBool::new(ready)))
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct TelemetryState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

/// `/metrics`, `/healthz` and `/readyz`, to merge into a service's router (the last two are
/// for orchestrators).
pub fn router(readiness: Readiness) -> Router {
    let state = TelemetryState {
        handle: metrics_handle(),
        readiness,
    };
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics_text(State(state): State<TelemetryState>) -> Response {
    let mut text = state.handle.render();
    text.push_str(&process_metrics());
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn ready(State(state): State<TelemetryState>) -> Response {
    if state.readiness.is_ready() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// Counts every HTTP request and its latency by route and status:
/// `http_requests_total`, `http_request_duration_seconds`.
pub async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    // Standard methods only: an arbitrary method string must not create a new metric series.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Linux's fixed user-space clock tick for `/proc/<pid>/stat` times.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The standard Prometheus process metrics, read from `/proc/self` at scrape time.
pub fn process_metrics() -> String {
    let mut out = String::new();
    if let Some(stats) = ProcessStats::read() {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes as f64,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stats.virtual_bytes as f64,
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds as f64,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            stats.threads as f64,
        );
    }
    out
}

/// CPU, memory and descriptors of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessStats {
    /// `None` where `/proc` is not available.
    pub fn read() -> Option<Self> {
        Self::read_pid("self")
    }

    pub fn read_pid(pid: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name, which may itself contain spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the name.
        let cpu_seconds = (num(11)? + num(12)?) as f64 / CLOCK_TICKS_PER_SECOND;
        let threads = num(17)?;
        let virtual_bytes = num(20)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let resident_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(Self {
            cpu_seconds,
            resident_bytes: resident_kb * 1024,
            virtual_bytes,
            open_fds,
            threads,
        })
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read() {
        let s = ProcessStats::read().expect("/proc is available on Linux");
        assert!(s.resident_bytes > 0);
        assert!(s.open_fds > 0);
        assert!(s.threads >= 1);
        let text = process_metrics();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains("process_resident_memory_bytes "));
    }

    #[tokio::test]
    async fn endpoints_answer() {
        use axum::body::Body;
        use tower::ServiceExt;
        let readiness = Readiness::new(false);
        metrics_handle();
        metrics::counter!("telemetry_test_total").increment(3);
        let app = router(readiness.clone());
        let get = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        readiness.set(true);
        let r = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.clone().oneshot(get("/metrics")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("telemetry_test_total 3"), "{text}");
        assert!(text.contains("process_open_fds"));
    }
}
