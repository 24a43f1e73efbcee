//! `croft auth`: the auth service on its own HTTP listener, with its secrets from files or env
//! vars; `--dev` generates throwaway keys instead and says so loudly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use token::jwt::{JwtKeys, SigningKeyPair};
use token::{ConnectTokenIssuer, NetcodeKey};

use crate::password::Passwords;
use crate::service::{AuthState, router};

#[derive(clap::Args, Debug, Clone)]
pub struct AuthConfig {
    /// HTTP listen address.
    #[arg(long, env = "CROFT_AUTH_HTTP", default_value = "127.0.0.1:7000")]
    pub http: SocketAddr,
    /// Redis shared by the auth replicas for the login backoff (`redis://host:port/db`), so N
    /// replicas allow what one would. Without it each process counts alone.
    #[arg(long, env = "CROFT_REDIS_URL")]
    pub redis: Option<String>,
    /// Prefix of auth's Redis keys.
    #[arg(long, env = "CROFT_AUTH_REDIS_PREFIX", default_value = "{croft}:auth:")]
    pub redis_prefix: String,
    #[command(flatten)]
    pub db: store::DatabaseArgs,
    /// The JWT signing key (64 hex characters, an Ed25519 seed).
    #[arg(long, env = "CROFT_JWT_KEY_FILE")]
    pub jwt_key_file: Option<PathBuf>,
    /// The previous signing key after a rotation: it keeps verifying its tokens until they expire.
    #[arg(long, env = "CROFT_JWT_PREVIOUS_KEY_FILE")]
    pub jwt_previous_key_file: Option<PathBuf>,
    /// The netcode private key shared with the game servers (else env CROFT_NETCODE_KEY).
    #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
    pub netcode_key_file: Option<PathBuf>,
    /// Connection servers that connect tokens name (comma-separated).
    #[arg(
        long,
        env = "CROFT_CONNECTION_SERVERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:5100"
    )]
    pub connection_server: Vec<SocketAddr>,
    /// The connection servers' WebSocket URLs, for web clients (the same connect token is
    /// good on each).
    #[arg(long, env = "CROFT_CONNECTION_WS_URLS", value_delimiter = ',')]
    pub connection_ws_url: Vec<String>,
    #[arg(long, env = "CROFT_JWT_ISSUER", default_value = "croft")]
    pub issuer: String,
    #[arg(long, env = "CROFT_ACCESS_TTL_SECONDS", default_value_t = 900)]
    pub access_ttl_seconds: u64,
    #[arg(long, env = "CROFT_REFRESH_TTL_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_seconds: u64,
    /// Password hashes computed at once (each holds ~19 MiB); more logins get 503.
    #[arg(long, env = "CROFT_MAX_CONCURRENT_HASHES", default_value_t = 4)]
    pub max_concurrent_hashes: usize,
    /// Development: generate missing keys under --data-dir instead of requiring secrets.
    #[arg(long, env = "CROFT_DEV")]
    pub dev: bool,
    #[arg(long, env = "CROFT_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "CROFT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for --tls-cert.
    #[arg(long, env = "CROFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating gateway only).
    #[arg(long, env = "CROFT_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,
    /// File holding the admin credential for `/v1/admin/*` (else env CROFT_ADMIN_TOKEN); without
    /// one the admin API is off.
    #[arg(long, env = "CROFT_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Origins allowed to call from browsers (comma-separated); empty allows any.
    #[arg(long, env = "CROFT_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Login attempts per minute per client address (burst of 10).
    #[arg(long, env = "CROFT_LOGIN_RATE_PER_MINUTE", default_value_t = 60)]
    pub login_rate_per_minute: u32,
    /// Internal listener for `/metrics`, `/healthz` and `/readyz` (kept off the public address).
    #[arg(long, env = "CROFT_AUTH_METRICS", default_value = "127.0.0.1:7001")]
    pub metrics: SocketAddr,
    /// Write the bound address here as JSON once ready.
    #[arg(long, env = "CROFT_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

fn dev_key_file(path: &Path, make: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, make()? + "\n").with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Builds the service state from the configuration, refusing missing or weak secrets.
pub async fn build_state(config: &AuthConfig) -> anyhow::Result<AuthState> {
    let mut config = config.clone();
    let database = config.db.url()?;
    if config.dev {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "DEV MODE: using throwaway keys generated under the data folder; never use this in production"
        );
        let jwt = config.data_dir.join("jwt.key");
        let netcode = config.data_dir.join("netcode.key");
        dev_key_file(&jwt, || Ok(SigningKeyPair::generate()?.to_hex()))?;
        dev_key_file(&netcode, || Ok(NetcodeKey::generate()?.to_hex()))?;
        config.jwt_key_file.get_or_insert(jwt);
        if config.netcode_key_file.is_none() && std::env::var(token::NETCODE_KEY_ENV).is_err() {
            config.netcode_key_file = Some(netcode);
        }
    }
    if config.tls_cert.is_none() && !config.http.ip().is_loopback() && !config.allow_plain_http {
        bail!(
            "refusing to serve plain HTTP on {}: bind to loopback, or pass --allow-plain-http behind a TLS gateway",
            config.http
        );
    }
    let jwt_file = config
        .jwt_key_file
        .as_deref()
        .context("no JWT signing key: pass --jwt-key-file (or --dev for throwaway keys)")?;
    let active = SigningKeyPair::read_file(jwt_file)?;
    let mut keys = JwtKeys::new(
        &config.issuer,
        active,
        Duration::from_secs(config.access_ttl_seconds),
    )?;
    if let Some(prev) = &config.jwt_previous_key_file {
        // Rotate "backwards": the previous key verifies, the configured one signs.
        let current = SigningKeyPair::read_file(jwt_file)?;
        keys = JwtKeys::new(
            &config.issuer,
            SigningKeyPair::read_file(prev)?,
            Duration::from_secs(config.access_ttl_seconds),
        )?;
        keys.rotate(current)?;
    }
    let netcode =
        NetcodeKey::load(config.netcode_key_file.as_deref()).context("loading the netcode key")?;
    let store = store::Store::open(
        &database,
        &store::PoolSettings::default(),
        config.db.skip_migrations,
    )
    .await
    .with_context(|| format!("opening the database {}", store::redact(&database)))?;
    let mut state = AuthState::new(
        store,
        Passwords::new(config.max_concurrent_hashes)?,
        keys,
        ConnectTokenIssuer::new(netcode),
        config.connection_server.clone(),
        Duration::from_secs(config.refresh_ttl_seconds),
    );
    state.admin_token = admin_token(&config)?;
    state.connection_ws_urls = config.connection_ws_url.clone();
    if let Some(url) = &config.redis {
        let control = control_store::RedisStore::connect(url, &config.redis_prefix)
            .context("the Redis URL (--redis)")?;
        if let Err(e) = control_store::ControlStore::Redis(control.clone())
            .ping()
            .await
        {
            tracing::warn!(error = %e, "Redis does not answer yet: logins are admitted meanwhile");
        }
        use crate::backoff::{ACCOUNT_FREE, ADDRESS_FREE, Backoff, MAX_WAIT, SharedBackoff};
        state.backoff = Arc::new(Backoff::Shared(Arc::new(SharedBackoff::new(
            &control,
            ACCOUNT_FREE,
            ADDRESS_FREE,
            MAX_WAIT,
        ))));
        state.shared_limits = Some(edge::Shared(Arc::new(crate::limits::RedisBuckets::new(
            &control,
        ))));
    }
    Ok(state)
}

/// The admin credential if one is configured; a weak one is refused.
fn admin_token(config: &AuthConfig) -> anyhow::Result<Option<Arc<str>>> {
    let configured =
        config.admin_token_file.is_some() || std::env::var("CROFT_ADMIN_TOKEN").is_ok();
    if !configured {
        return Ok(None);
    }
    let token = token::load_secret(
        config.admin_token_file.as_deref(),
        "CROFT_ADMIN_TOKEN",
        "admin credential",
        24,
    )?;
    Ok(Some(token.into()))
}

/// Serves until SIGTERM or Ctrl-C, then finishes in-flight requests.
pub async fn serve(config: AuthConfig) -> anyhow::Result<()> {
    telemetry::init_logging("auth", telemetry::LogTarget::Stdout);
    let state = build_state(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding {}", config.http))?;
    run(&config, state, listener, telemetry::shutdown_signal()).await
}

/// [`run`] with an owned configuration (for spawning).
pub async fn run_owned(
    config: AuthConfig,
    state: AuthState,
    listener: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_on(&config, state, listener, internal, shutdown).await
}

/// Serves `state` on `listener` (HTTPS when configured) with the edge middleware, and the
/// internal listener on `--metrics`, until `shutdown` completes.
pub async fn run(
    config: &AuthConfig,
    state: AuthState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let internal = tokio::net::TcpListener::bind(config.metrics)
        .await
        .with_context(|| format!("binding {}", config.metrics))?;
    run_on(config, state, listener, internal, shutdown).await
}

/// [`run`] on an internal listener the caller bound.
async fn run_on(
    config: &AuthConfig,
    state: AuthState,
    listener: tokio::net::TcpListener,
    internal: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let readiness = telemetry::Readiness::new(true);
    let edge_config = edge::EdgeConfig {
        shared: state.shared_limits.clone(),
        strict_rate: edge::Rate {
            burst: 10,
            per_second: f64::from(config.login_rate_per_minute.max(1)) / 60.0,
        },
        cors_origins: config.cors_origin.clone(),
        ..edge::EdgeConfig::default()
    };
    let internal_app = crate::service::internal_router(state.clone())
        .merge(telemetry::router(readiness.clone()))
        .layer(axum::middleware::from_fn(telemetry::http_metrics));
    let app = edge::wrap(router(state), &edge_config)
        .layer(axum::middleware::from_fn(telemetry::http_metrics));
    let addr = listener.local_addr()?;
    let metrics_addr = internal.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(internal, internal_app).await {
            tracing::error!(error = %e, "internal listener failed");
        }
    });
    if let Some(path) = &config.ready_file {
        std::fs::write(
            path,
            serde_json::json!({ "http": addr, "metrics": metrics_addr }).to_string(),
        )?;
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = edge::tls::server_config(cert, key)?;
            tracing::info!(%addr, "auth service listening (HTTPS)");
            edge::tls::serve(listener, app, tls, shutdown)
                .await
                .context("serving HTTPS")?;
        }
        _ => {
            tracing::info!(%addr, "auth service listening (plain HTTP)");
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        }
    }
    tracing::info!("auth service stopped");
    Ok(())
}
