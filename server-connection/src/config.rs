use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionConfig {
    /// UDP address of the first netcode socket; more sockets (one per 1024 clients) take the
    /// following ports (port 0: ephemeral ports).
    #[arg(long, env = "CROFT_CONNECTION_UDP", default_value = "127.0.0.1:5100")]
    pub udp: SocketAddr,
    /// The IP clients reach this server on, when it differs from the bound one.
    #[arg(long, env = "CROFT_CONNECTION_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,
    /// A file holding that IP (e.g. one ConfigMap key per pod); --public-ip wins.
    #[arg(long, env = "CROFT_CONNECTION_PUBLIC_IP_FILE")]
    pub public_ip_file: Option<PathBuf>,
    /// Clients this server holds; it opens one netcode socket per 1024.
    #[arg(long, env = "CROFT_CONNECTION_MAX_CLIENTS", default_value_t = 1024)]
    pub max_clients: usize,
    /// Admin and metrics HTTP: `POST /v1/notifications`, `GET /v1/status`, `/metrics`, `/healthz`.
    #[arg(long, env = "CROFT_CONNECTION_HTTP", default_value = "127.0.0.1:7200")]
    pub http: SocketAddr,
    // The database: friends, names, items and decks.
    #[command(flatten)]
    pub db: store::DatabaseArgs,
    /// Folder with the card data RON files (recipes, deck rules, the starter kit).
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    pub cards: PathBuf,
    /// The auth service, for the revocation feed.
    #[arg(long, env = "CROFT_AUTH_URL", default_value = "http://127.0.0.1:7000")]
    pub auth_url: String,
    /// The matchmaking service's internal API.
    #[arg(
        long,
        env = "CROFT_MATCHMAKING_URL",
        default_value = "http://127.0.0.1:7002"
    )]
    pub matchmaking_url: String,
    /// The service credential for matchmaking and this server's admin API (else env
    /// CROFT_SERVICE_TOKEN).
    #[arg(long, env = "CROFT_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// The netcode private key (else env CROFT_NETCODE_KEY).
    #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
    pub netcode_key_file: Option<PathBuf>,
    /// This server's name in matchmaking (default: a random one).
    #[arg(long, env = "CROFT_CONNECTION_ID")]
    pub server_id: Option<String>,
    /// Frames per second of the server loop: how soon messages are answered (100 ms at 10).
    #[arg(long, env = "CROFT_CONNECTION_HZ", default_value_t = 10)]
    pub hz: u32,
    /// Milliseconds between the server's keep-alives to an idle client (netcode's own rate is
    /// 250 ms; idle lobby clients need far fewer).
    #[arg(long, env = "CROFT_CONNECTION_KEEPALIVE_MS",
          default_value_t = shared_sim::protocol::LOBBY_KEEPALIVE.as_millis() as u64)]
    pub keepalive_ms: u64,
    /// Chat messages a player may send per 10 seconds.
    #[arg(long, env = "CROFT_CHAT_PER_10S", default_value_t = 10)]
    pub chat_per_10s: u32,
    /// Messages of any kind a client may send per second.
    #[arg(
        long,
        env = "CROFT_CONNECTION_MAX_MESSAGES_PER_SECOND",
        default_value_t = 20
    )]
    pub max_messages_per_second: u32,
    /// Bad messages tolerated before a client is disconnected.
    #[arg(long, env = "CROFT_BAD_MESSAGE_BUDGET", default_value_t = 8)]
    pub bad_message_budget: u32,
    /// How often the revocation feed is polled, in milliseconds.
    #[arg(long, env = "CROFT_REVOCATION_POLL_MS", default_value_t = 1000)]
    pub revocation_poll_ms: u64,
    /// Kafka brokers (`host:port,...`): with several connection servers, presence, chat and
    /// notifications cross between them over the bus. Without, this server is on its own.
    #[arg(long, env = "CROFT_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// Prefix of every topic name (shared clusters).
    #[arg(long, env = "CROFT_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// WebSocket clients (web exports).
    #[command(flatten)]
    pub ws: shared_net::ws::WsArgs,
    /// Write the bound addresses here as JSON once ready.
    #[arg(long, env = "CROFT_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

impl ConnectionConfig {
    pub fn sockets(&self) -> usize {
        self.max_clients
            .div_ceil(shared_net::MAX_CLIENTS_PER_SOCKET)
            .max(1)
    }
}
