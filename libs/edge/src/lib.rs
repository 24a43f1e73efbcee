//! The REST edge every croft HTTP service sits behind when it faces clients: rate limits,
//! request ids, body and time limits, CORS and JSON error bodies.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{Any, CorsLayer};
use tracing::Instrument;

pub mod tls;

/// A JSON error response in the shape every croft service uses.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// A token bucket per client address.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Requests a client may make in a burst.
    pub burst: u32,
    /// Requests per second refilled.
    pub per_second: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-IP buckets; idle entries are dropped so memory stays bounded by active clients.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; `Err(seconds)` tells when the next one is available.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 100_000 {
            let idle = Duration::from_secs_f64(
                f64::from(self.rate.burst) / self.rate.per_second.max(0.001),
            );
            buckets.retain(|_, b| now.duration_since(b.last) < idle);
        }
        let burst = f64::from(self.rate.burst.max(1));
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate.per_second).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate.per_second.max(0.001)).ceil() as u64)
        }
    }
}

/// What a shared take answers: taken, or the seconds to wait (`Ok(Err(_))`), or why the store
/// could not answer (`Err`).
pub type Take<'a> = Pin<Box<dyn Future<Output = Result<Result<(), u64>, String>> + Send + 'a>>;

/// Token buckets kept outside this process, which every replica of a service shares (so N
/// replicas do not allow N times the limit). `take` answers like [`RateLimiter::check`], or
/// `Err` when the store cannot answer: the edge then uses this replica's own buckets.
pub trait SharedBuckets: Send + Sync + 'static {
    /// Takes one token of `bucket` (`general` or `strict`) for `ip`.
    fn take(&self, bucket: &'static str, ip: IpAddr, rate: Rate) -> Take<'_>;
}

/// The shared buckets of an [`EdgeConfig`].
#[derive(Clone)]
pub struct Shared(pub Arc<dyn SharedBuckets>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Buckets shared by the replicas (`None`: this process's own).
    pub shared: Option<Shared>,
    pub rate: Rate,
    /// Paths with their own, usually stricter, limit (e.g. `/v1/auth/login`).
    pub strict_paths: Vec<String>,
    pub strict_rate: Rate,
    pub max_body_bytes: usize,
    pub timeout: Duration,
    /// Allowed CORS origins; empty allows any origin (tokens travel in headers, not cookies).
    pub cors_origins: Vec<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            shared: None,
            rate: Rate {
                burst: 200,
                per_second: 100.0,
            },
            strict_paths: vec!["/v1/auth/login".into()],
            strict_rate: Rate {
                burst: 10,
                per_second: 1.0,
            },
            max_body_bytes: 16 * 1024,
            timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct EdgeState {
    shared: Option<Shared>,
    general: Arc<RateLimiter>,
    strict: Arc<RateLimiter>,
    strict_paths: Arc<Vec<String>>,
    timeout: Duration,
}

/// Wraps a service router with the edge. Serve the result with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the limiter sees client addresses.
///
/// The edge: per-IP rate limits (a stricter one for chosen paths such as login), request ids
/// carried into the logs and the response, a body-size limit, a time limit, CORS for web
/// clients, and JSON error bodies with a stable code for everything the edge itself refuses.
pub fn wrap(router: Router, config: &EdgeConfig) -> Router {
    let state = EdgeState {
        shared: config.shared.clone(),
        general: Arc::new(RateLimiter::new(config.rate)),
        strict: Arc::new(RateLimiter::new(config.strict_rate)),
        strict_paths: Arc::new(config.strict_paths.clone()),
        timeout: config.timeout,
    };
    let cors = if config.cors_origins.is_empty() {
        CorsLayer::new().allow_origin(Any)
    } else {
        let origins: Vec<HeaderValue> = config
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect();
        CorsLayer::new().allow_origin(origins)
    }
    .allow_methods(Any)
    .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    router
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits))
        .layer(axum::middleware::from_fn(request_id))
        .layer(cors)
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| limit_key(addr.ip()))
}

/// The address a limit applies to: IPv4 as is, IPv6 by its /64 (one subscriber's allocation),
/// so that a client cannot get fresh buckets by walking its own prefix.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

async fn limits(State(state): State<EdgeState>, req: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&req) {
        let strict = state.strict_paths.iter().any(|p| p == req.uri().path());
        let limiter = if strict {
            &state.strict
        } else {
            &state.general
        };
        let taken = match &state.shared {
            Some(Shared(shared)) => {
                let bucket = if strict { "strict" } else { "general" };
                match shared.take(bucket, ip, limiter.rate).await {
                    Ok(taken) => taken,
                    Err(e) => {
                        // The shared store is away: this replica's own buckets still hold.
                        metrics::counter!("http_rate_limit_store_errors_total").increment(1);
                        tracing::debug!(error = %e, "shared rate limits unavailable");
                        limiter.check(ip)
                    }
                }
            }
            None => limiter.check(ip),
        };
        if let Err(wait) = taken {
            metrics::counter!("http_rate_limited_total", "strict" => strict.to_string())
                .increment(1);
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests",
            );
            if let Ok(v) = HeaderValue::from_str(&wait.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    match tokio::time::timeout(state.timeout, next.run(req)).await {
        Ok(response) => {
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE
                && response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_none_or(|v| v != "application/json")
            {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                );
            }
            response
        }
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long",
        ),
    }
}

/// Uses the caller's `x-request-id` or makes one, logs the request inside a span carrying it, and
/// returns it in the response.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.is_ascii())
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn new_request_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app(config: &EdgeConfig) -> Router {
        let inner = Router::new()
            .route("/v1/auth/login", post(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        wrap(inner, config)
    }

    fn req(path: &str, body: &str, ip: [u8; 4]) -> Request {
        let mut r = Request::builder()
            .method("POST")
            .uri(path)
            .body(Body::from(body.to_string()))
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 4000))));
        r
    }

    async fn error_code(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    /// Shared buckets as a test double: refuses every `strict` take after `allow`, or fails
    /// (the store is away) when `down`; counts the calls.
    struct Counted {
        allow: usize,
        down: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl SharedBuckets for Counted {
        fn take(&self, bucket: &'static str, _ip: IpAddr, _rate: Rate) -> Take<'_> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                if self.down.load(SeqCst) {
                    return Err("store away".into());
                }
                let n = self.calls.fetch_add(1, SeqCst);
                Ok(if bucket == "strict" && n >= self.allow {
                    Err(7)
                } else {
                    Ok(())
                })
            })
        }
    }

    #[tokio::test]
    async fn shared_buckets_decide_and_the_own_ones_stand_in_when_they_are_away() {
        use std::sync::atomic::Ordering::SeqCst;
        let shared = Arc::new(Counted {
            allow: 2,
            down: false.into(),
            calls: 0.into(),
        });
        let config = EdgeConfig {
            shared: Some(Shared(shared.clone())),
            strict_rate: Rate {
                burst: 1,
                per_second: 0.01,
            },
            ..EdgeConfig::default()
        };
        let app = app(&config);
        let login = || {
            app.clone()
                .oneshot(req("/v1/auth/login", "", [10, 0, 0, 9]))
        };
        // The shared store allows two (more than this replica's own burst of one), then says
        // wait 7 s.
        assert_eq!(login().await.unwrap().status(), 200);
        assert_eq!(login().await.unwrap().status(), 200);
        let r = login().await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(shared.calls.load(SeqCst), 3);
        // Away: this replica's own bucket (burst 1) decides.
        shared.down.store(true, SeqCst);
        assert_eq!(login().await.unwrap().status(), 200);
        assert_eq!(
            login().await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn login_is_limited_per_ip_with_429_and_retry_after() {
        let config = EdgeConfig {
            strict_rate: Rate {
                burst: 3,
                per_second: 0.5,
            },
            ..EdgeConfig::default()
        };
        let app = app(&config);
        for _ in 0..3 {
            assert_eq!(
                app.clone()
                    .oneshot(req("/v1/auth/login", "", [10, 0, 0, 1]))
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        let r = app
            .clone()
            .oneshot(req("/v1/auth/login", "", [10, 0, 0, 1]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(error_code(r).await, "rate_limited");
        // Another address is unaffected, and so are other paths for the same address.
        assert_eq!(
            app.clone()
                .oneshot(req("/v1/auth/login", "", [10, 0, 0, 2]))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            app.clone()
                .oneshot(req("/echo", "x", [10, 0, 0, 1]))
                .await
                .unwrap()
                .status(),
            200
        );
    }

    #[tokio::test]
    async fn oversized_bodies_get_413_json_and_ids_are_echoed() {
        let config = EdgeConfig {
            max_body_bytes: 16,
            ..EdgeConfig::default()
        };
        let app = app(&config);
        let r = app
            .clone()
            .oneshot(req("/echo", &"x".repeat(100), [10, 0, 0, 3]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(r).await, "payload_too_large");
        let mut with_id = req("/echo", "hi", [10, 0, 0, 3]);
        with_id
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_static("abc-123"));
        let r = app.clone().oneshot(with_id).await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "abc-123");
        let r = app
            .clone()
            .oneshot(req("/echo", "hi", [10, 0, 0, 3]))
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"].len(), 24);
    }

    #[tokio::test]
    async fn slow_requests_time_out_with_a_json_error() {
        let config = EdgeConfig {
            timeout: Duration::from_millis(100),
            ..EdgeConfig::default()
        };
        let r = app(&config)
            .oneshot(req("/slow", "", [10, 0, 0, 4]))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(r).await, "timeout");
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(limit_key(mapped), IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn buckets_refill() {
        let l = RateLimiter::new(Rate {
            burst: 1,
            per_second: 1000.0,
        });
        let ip: IpAddr = [1, 2, 3, 4].into();
        assert!(l.check(ip).is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.check(ip).is_ok());
    }
}
