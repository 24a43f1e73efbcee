//! Configuration of the instance server: every flag has an env var, secrets come from files or
//! env vars, and the defaults run on one machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "server-instance",
    about = "croft instance server: hosts card matches over secure netcode"
)]
pub struct InstanceConfig {
    /// UDP address of the first netcode socket; further shards use the following ports (port 0:
    /// every shard gets an ephemeral port).
    #[arg(long, env = "CROFT_INSTANCE_UDP", default_value = "127.0.0.1:5000")]
    pub udp: SocketAddr,

    /// The address clients are told to connect to, when it differs from `--udp` (NAT, pods).
    #[arg(long, env = "CROFT_INSTANCE_PUBLIC_IP")]
    pub public_ip: Option<std::net::IpAddr>,

    /// Netcode sockets to open; each holds at most 1024 clients (448 matches, keeping headroom for closing connections).
    #[arg(long, env = "CROFT_INSTANCE_SHARDS", default_value_t = 1)]
    pub shards: usize,

    /// Control, metrics and health HTTP address.
    #[arg(long, env = "CROFT_INSTANCE_HTTP", default_value = "127.0.0.1:7100")]
    pub http: SocketAddr,

    /// File holding the netcode private key as 64 hex characters (else env CROFT_NETCODE_KEY).
    #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
    pub netcode_key_file: Option<PathBuf>,

    /// File holding the service credential for the control API (else env CROFT_CONTROL_TOKEN).
    #[arg(long, env = "CROFT_CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,

    /// Folder with the card data RON files.
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    pub cards: PathBuf,

    /// Matches this process hosts at most.
    #[arg(long, env = "CROFT_INSTANCE_MAX_MATCHES", default_value_t = 500)]
    pub max_matches: usize,

    /// Simulation ticks per second. A move is answered on the tick after it arrives, so this
    /// sets the answer's latency: 40 Hz answers a move in 19.5 ms at the median (p99 42 ms)
    /// with 1,000 matches, at the CPU per move of 20 Hz (`BENCHMARKS.md`). The common area
    /// still sends its batches of moves at 20 Hz.
    #[arg(long, env = "CROFT_TICK_HZ", default_value_t = 40)]
    pub tick_hz: u32,

    /// Times per second the sockets are drained (at least the tick rate). Packets are only sent
    /// on simulation ticks, so this costs receive calls, not extra packets; draining often keeps
    /// the kernel's UDP buffer from overflowing under load.
    #[arg(long, env = "CROFT_NET_HZ", default_value_t = 100)]
    pub net_hz: u32,

    /// A client with nothing new is flushed (acks, keep-alive) at most this often, in ms.
    #[arg(long, env = "CROFT_IDLE_FLUSH_MS", default_value_t = 250)]
    pub idle_flush_ms: u32,

    /// Milliseconds between the server's keep-alives to a client it has sent nothing else
    /// (netcode's own rate is 250 ms; the client's time-out is the token's 15 s). Each
    /// client's netcode upkeep (time-out check, keep-alive) runs this often.
    #[arg(long, env = "CROFT_INSTANCE_KEEPALIVE_MS", default_value_t = 1000)]
    pub keepalive_ms: u32,

    /// Seconds a disconnected player has to come back before forfeiting.
    #[arg(long, env = "CROFT_RECONNECT_GRACE_SECONDS", default_value_t = 30)]
    pub grace_seconds: u32,

    /// On SIGTERM, seconds running matches may take to finish before they are aborted.
    #[arg(long, env = "CROFT_DRAIN_SECONDS", default_value_t = 60)]
    pub drain_seconds: u32,

    /// Bad messages a client may send before it is disconnected.
    #[arg(long, env = "CROFT_BAD_MESSAGE_BUDGET", default_value_t = 8)]
    pub bad_message_budget: u32,

    /// Messages a client may send per second; the excess is refused and counts as bad.
    #[arg(long, env = "CROFT_MAX_MESSAGES_PER_SECOND", default_value_t = 40)]
    pub max_messages_per_second: u32,

    /// Where finished matches (setup, input log, result) are appended as JSON lines.
    #[arg(long, env = "CROFT_MATCH_LOG", default_value = "data/matches.jsonl")]
    pub match_log: PathBuf,

    /// Kafka brokers for `game_started` / `game_ended` (none: events are log lines only).
    #[arg(long, env = "CROFT_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// Prefix of every topic name.
    #[arg(long, env = "CROFT_KAFKA_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Events queued for the producer before new ones are dropped (and counted).
    #[arg(long, env = "CROFT_EVENT_QUEUE", default_value_t = 10_000)]
    pub event_queue: usize,
    /// Write the bound addresses here as JSON once the server is ready (for scripts and tests).
    #[arg(long, env = "CROFT_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// The auth service's internal listener, for its feed of revoked sessions: players whose
    /// login session was revoked (a logout, a ban) are dropped (a match forfeited at once).
    /// Without it no session is ever dropped here.
    #[arg(long, env = "CROFT_AUTH_URL")]
    pub auth_url: Option<String>,
    /// How often the revocation feed is polled, in milliseconds.
    #[arg(long, env = "CROFT_REVOCATION_POLL_MS", default_value_t = 1000)]
    pub revocation_poll_ms: u64,

    /// The database farms are loaded from and saved to (`postgres://…` or `sqlite://PATH`);
    /// without one this server hosts matches only.
    #[arg(long, env = "CROFT_DATABASE_URL")]
    pub database: Option<String>,
    #[arg(long, env = "CROFT_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Players one common-area shard holds; more open another shard.
    #[arg(long, env = "CROFT_HUB_CAPACITY", default_value_t = shared_sim::hub::DEFAULT_CAPACITY)]
    pub hub_capacity: usize,
    /// Chat messages a player may send in the common area per 10 seconds.
    #[arg(long, env = "CROFT_HUB_CHAT_PER_10S", default_value_t = crate::hub::DEFAULT_CHAT_PER_10S)]
    pub hub_chat_per_10s: u32,
    /// Milliseconds a farm's lease lasts unless renewed (every third of it): how long a farm
    /// stays closed to other instances after this one stopped without giving it up.
    #[arg(long, env = "CROFT_FARM_LEASE_MS", default_value_t = 15_000)]
    pub farm_lease_ms: u64,
    /// Farms this process hosts at most.
    #[arg(long, env = "CROFT_INSTANCE_MAX_FARMS", default_value_t = 100)]
    pub max_farms: usize,

    /// WebSocket clients (web exports).
    #[command(flatten)]
    pub ws: shared_net::ws::WsArgs,

    /// Run under Agones: take the public address from the GameServer, mark it Ready, ping its
    /// health from the tick, keep its match counter, and call Shutdown once drained. Needs the
    /// Agones SDK sidecar (AGONES_SDK_GRPC_PORT); without this flag none of it happens.
    #[arg(long, env = "CROFT_AGONES")]
    pub agones: bool,
    /// The GameServer port the netcode socket is published on.
    #[arg(long, env = "CROFT_AGONES_PORT_NAME", default_value = "netcode")]
    pub agones_port_name: String,
    /// The Agones counter that holds the running matches.
    #[arg(long, env = "CROFT_AGONES_COUNTER", default_value = "matches")]
    pub agones_counter: String,
    /// Seconds to wait for the SDK sidecar and the GameServer's address before giving up.
    #[arg(long, env = "CROFT_AGONES_CONNECT_SECONDS", default_value_t = 30)]
    pub agones_connect_seconds: u32,
    /// An Allocated server without matches for this long returns to Ready, so the fleet can
    /// scale it down (0: stays Allocated).
    #[arg(long, env = "CROFT_AGONES_IDLE_READY_SECONDS", default_value_t = 60)]
    pub agones_idle_ready_seconds: u32,
}

impl InstanceConfig {
    pub fn agones_settings(&self) -> crate::agones::AgonesSettings {
        crate::agones::AgonesSettings {
            connect_timeout: std::time::Duration::from_secs(u64::from(
                self.agones_connect_seconds.max(1),
            )),
            port_name: self.agones_port_name.clone(),
            counter: self.agones_counter.clone(),
            idle_ready: (self.agones_idle_ready_seconds > 0)
                .then(|| std::time::Duration::from_secs(u64::from(self.agones_idle_ready_seconds))),
        }
    }
}
