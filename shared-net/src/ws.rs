//! WebSocket clients (Godot web exports, browsers: no UDP there) on the same sessions as
//! netcode clients.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use renetcode::NETCODE_USER_DATA_BYTES;
use shared_sim::protocol::PROTOCOL_ID;
use tokio::sync::mpsc;

use crate::link::{ClientId, LinkServer};
use crate::ws_token::{TokenError, verify_connect_token};

pub use shared_sim::protocol::{WS_PATH, ws_close as close_code, ws_subprotocol as subprotocol};

/// Timing and size limits of WebSocket sessions.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Time from the upgrade to the token frame.
    pub hello_timeout: Duration,
    /// The server pings this often.
    pub ping_every: Duration,
    /// A client heard from (any frame, pongs included) less recently than this is closed:
    /// netcode's connection timeout.
    pub idle_timeout: Duration,
    /// Largest frame and message a client may send (client messages are at most 1 KiB; the
    /// token is 1,172 bytes).
    pub max_message_bytes: usize,
    /// Messages queued for a client before it counts as not reading and is closed.
    pub out_queue: usize,
    /// Frames a client may send in one second (above the servers' own per-message limits,
    /// which count against the bad-message budget): more closes the connection before the
    /// frames reach the game loop.
    pub max_frames_per_second: u32,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            ping_every: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            max_message_bytes: 4096,
            out_queue: 512,
            max_frames_per_second: 100,
        }
    }
}

/// From the async side to the Bevy side.
enum WsEvent {
    Open {
        conn: u64,
        client_id: ClientId,
        user_data: Box<[u8; NETCODE_USER_DATA_BYTES]>,
        out: mpsc::Sender<Out>,
    },
    /// One message (empty for a text frame, which then fails to decode as a bad message).
    Frame {
        conn: u64,
        client_id: ClientId,
        bytes: Bytes,
    },
    Closed {
        conn: u64,
        client_id: ClientId,
    },
}

/// From the Bevy side to one connection's task.
enum Out {
    Frame(Bytes),
    Close(u16, &'static str),
}

/// Creates both halves: the acceptor serves upgrades on the tokio runtime, the socket goes into
/// a [`crate::Shard`]. `public_addrs` are the UDP addresses of this server's netcode sockets: a
/// token must name one of them, exactly as netcode requires.
///
/// Each client becomes a *direct* link of its shard's link server ([`crate::Transport::Ws`],
/// [`LinkServer::add_direct`]): its frames are the messages the server reads, and the messages
/// the server sends are its frames, with no packets or acks between (the socket is reliable and
/// ordered). The servers' admission, decoding, rate limits and duplicate-user checks run
/// unchanged, and sessions index the WebSocket shard like a UDP one. The async side
/// ([`WsAcceptor`], on the server's tokio runtime) checks the token (the same checks netcode
/// makes, [`crate::ws_token`]; each token once), then passes frames to the Bevy side
/// ([`WsSocket`]) over a channel; each connection has a bounded outgoing queue, and a client that
/// does not read its messages is closed rather than buffered without limit.
pub fn ws_transport(
    private_key: [u8; 32],
    public_addrs: Vec<SocketAddr>,
    limits: WsLimits,
) -> (WsAcceptor, WsSocket) {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let acceptor = WsAcceptor(Arc::new(Inner {
        key: private_key,
        public_addrs,
        events: events_tx,
        used: Mutex::new((HashMap::new(), 0)),
        next_conn: AtomicU64::new(1),
        limits,
    }));
    let socket = WsSocket {
        events: events_rx,
        frames_sent: metrics::counter!("croft_ws_frames_sent_total"),
        conns: HashMap::new(),
        active: HashSet::new(),
        closing: HashSet::new(),
    };
    (acceptor, socket)
}

/// The async half: an axum router with the upgrade route.
///
/// Wire format (`docs/PROTOCOL.md` section 11): an HTTP upgrade on [`WS_PATH`] with the
/// subprotocol [`subprotocol`] (`croft.v{PROTOCOL_VERSION}`, so another protocol version fails
/// at the upgrade); the client's first frame is binary, the raw netcode connect token; then one
/// binary frame is one postcard message each way. WebSocket is reliable and ordered, so there
/// are no acks or channels.
#[derive(Clone)]
pub struct WsAcceptor(Arc<Inner>);

struct Inner {
    key: [u8; 32],
    public_addrs: Vec<SocketAddr>,
    events: mpsc::UnboundedSender<WsEvent>,
    /// Token MACs seen, with their expiry (each token admits one WebSocket session), and when
    /// expired ones were last dropped.
    used: Mutex<(HashMap<[u8; 16], u64>, u64)>,
    next_conn: AtomicU64,
    limits: WsLimits,
}

impl WsAcceptor {
    /// `GET /ws` (the upgrade); serve it on a listener of its own, plain or TLS.
    pub fn router(&self) -> Router {
        Router::new()
            .route(WS_PATH, get(upgrade))
            .with_state(self.clone())
    }

    async fn session(self, mut socket: WebSocket) {
        let inner = &self.0;
        let first = tokio::time::timeout(inner.limits.hello_timeout, socket.recv()).await;
        let bytes = match first {
            Ok(Some(Ok(Message::Binary(b)))) => b,
            Ok(Some(Ok(_))) => {
                return refuse(
                    socket,
                    close_code::BAD_TOKEN,
                    "the first frame must be the connect token (binary)",
                    "not_a_token",
                )
                .await;
            }
            Ok(_) => return,
            Err(_) => {
                return refuse(
                    socket,
                    close_code::TIMEOUT,
                    "no connect token in time",
                    "hello_timeout",
                )
                .await;
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let token =
            match verify_connect_token(&bytes, &inner.key, PROTOCOL_ID, now, &inner.public_addrs) {
                Ok(t) => t,
                Err(e) => {
                    let (code, reason, label) = match e {
                        TokenError::Expired => (
                            close_code::EXPIRED_TOKEN,
                            "connect token expired",
                            "expired",
                        ),
                        TokenError::WrongServer => (
                            close_code::WRONG_SERVER,
                            "connect token is for another server",
                            "wrong_server",
                        ),
                        TokenError::WrongProtocol => (
                            close_code::BAD_TOKEN,
                            "connect token is for another protocol version",
                            "wrong_protocol",
                        ),
                        TokenError::Format(_) | TokenError::Layout(_) | TokenError::Forged => {
                            (close_code::BAD_TOKEN, "invalid connect token", "bad_token")
                        }
                    };
                    tracing::info!(error = %e, "WebSocket client refused");
                    return refuse(socket, code, reason, label).await;
                }
            };
        let reused = {
            let mut guard = inner.used.lock().unwrap_or_else(|p| p.into_inner());
            let (used, pruned) = &mut *guard;
            // Expired tokens are refused anyway: forget them, at most once a second.
            if *pruned < now {
                used.retain(|_, expire| *expire > now);
                *pruned = now;
            }
            used.insert(token.mac, token.expire_timestamp).is_some()
        };
        if reused {
            return refuse(
                socket,
                close_code::BAD_TOKEN,
                "connect token already used",
                "reused",
            )
            .await;
        }
        let client_id = token.client_id;
        let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let (out_tx, mut out_rx) = mpsc::channel(inner.limits.out_queue.max(1));
        let open = WsEvent::Open {
            conn,
            client_id,
            user_data: Box::new(token.user_data),
            out: out_tx,
        };
        if inner.events.send(open).is_err() {
            return refuse(
                socket,
                close_code::GOING_AWAY,
                "the server is stopping",
                "stopping",
            )
            .await;
        }
        metrics::gauge!("croft_ws_sessions").increment(1.0);
        let (mut sink, mut stream) = socket.split();
        let limits = inner.limits;
        let mut ping = tokio::time::interval(limits.ping_every);
        ping.tick().await;
        let mut last_heard = Instant::now();
        // Frames in the current second.
        let (mut window, mut frames) = (Instant::now(), 0u32);
        // Every write has the idle time-out: a client that stops reading cannot hold its task
        // (and its session) by leaving the TCP window shut.
        let write_limit = limits.idle_timeout;
        // Registered once: `counter!` looks its key up in the registry on every call.
        let frames_received = metrics::counter!("croft_ws_frames_received_total");
        let close: Option<(u16, &'static str)> = loop {
            tokio::select! {
                incoming = stream.next() => {
                    let bytes = match incoming {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        // Counted as a bad message by the server (an empty message never decodes).
                        Some(Ok(Message::Text(_))) => Bytes::new(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_heard = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Close(_))) => break Some((1000, "")),
                        None => break None,
                        Some(Err(e)) => {
                            tracing::debug!(client_id, error = %e, "WebSocket read failed");
                            break None;
                        }
                    };
                    last_heard = Instant::now();
                    if window.elapsed() >= Duration::from_secs(1) {
                        (window, frames) = (Instant::now(), 0);
                    }
                    frames += 1;
                    if frames > limits.max_frames_per_second {
                        metrics::counter!("croft_ws_refused_total", "reason" => "flood").increment(1);
                        break Some((close_code::CLOSED_BY_SERVER, "too many messages"));
                    }
                    frames_received.increment(1);
                    if inner.events.send(WsEvent::Frame { conn, client_id, bytes }).is_err() {
                        break Some((close_code::GOING_AWAY, "the server is stopping"));
                    }
                }
                out = out_rx.recv() => match out {
                    Some(Out::Frame(bytes)) => {
                        // Everything queued goes out in one write: the messages of one tick
                        // (an answer and its events) arrive together, as in one UDP packet.
                        let mut close = None;
                        let write = async {
                            sink.feed(Message::Binary(bytes)).await?;
                            while let Ok(out) = out_rx.try_recv() {
                                match out {
                                    Out::Frame(bytes) => sink.feed(Message::Binary(bytes)).await?,
                                    Out::Close(code, reason) => {
                                        close = Some((code, reason));
                                        break;
                                    }
                                }
                            }
                            sink.flush().await
                        };
                        match tokio::time::timeout(write_limit, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break None,
                            Err(_) => break Some((close_code::TIMEOUT, "messages not read in time")),
                        }
                        if close.is_some() {
                            break close;
                        }
                    }
                    Some(Out::Close(code, reason)) => break Some((code, reason)),
                    // The server let go of this client: it did not read its messages in time.
                    None => break Some((close_code::TIMEOUT, "messages not read in time")),
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > limits.idle_timeout {
                        break Some((close_code::TIMEOUT, "nothing heard from the client"));
                    }
                    let sent = tokio::time::timeout(write_limit, sink.send(Message::Ping(Bytes::new()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break None;
                    }
                }
            }
        };
        let _ = inner.events.send(WsEvent::Closed { conn, client_id });
        metrics::gauge!("croft_ws_sessions").decrement(1.0);
        if let Some((code, reason)) = close {
            metrics::counter!("croft_ws_closed_total", "code" => code.to_string()).increment(1);
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let closing = async {
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        }
    }
}

async fn upgrade(State(acceptor): State<WsAcceptor>, ws: WebSocketUpgrade) -> Response {
    let protocol = subprotocol();
    let limit = acceptor.0.limits.max_message_bytes;
    // Small buffers: client messages are at most 1 KiB, and the default 128 KiB read buffer per
    // connection would dominate a WebSocket client's memory on the server.
    let ws = ws
        .protocols([protocol.clone()])
        .read_buffer_size(limit * 2)
        .max_message_size(limit)
        .max_frame_size(limit);
    if ws.selected_protocol().is_none() {
        metrics::counter!("croft_ws_refused_total", "reason" => "subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            format!("the WebSocket subprotocol {protocol} is required"),
        )
            .into_response();
    }
    ws.on_upgrade(move |socket| acceptor.session(socket))
}

async fn refuse(mut socket: WebSocket, code: u16, reason: &'static str, label: &'static str) {
    metrics::counter!("croft_ws_refused_total", "reason" => label).increment(1);
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The Bevy half: WebSocket clients as direct links of one link server.
pub struct WsSocket {
    events: mpsc::UnboundedReceiver<WsEvent>,
    /// `croft_ws_frames_sent_total`, registered once (it is bumped per client per tick).
    frames_sent: metrics::Counter,
    conns: HashMap<ClientId, WsConn>,
    active: HashSet<ClientId>,
    /// Closed by the client: removed at the next [`Self::flush`], after the server read the
    /// messages the client sent before closing.
    closing: HashSet<ClientId>,
}

struct WsConn {
    conn: u64,
    out: mpsc::Sender<Out>,
    user_data: [u8; NETCODE_USER_DATA_BYTES],
}

impl WsSocket {
    pub fn user_data(&self, client: ClientId) -> Option<[u8; NETCODE_USER_DATA_BYTES]> {
        self.conns.get(&client).map(|c| c.user_data)
    }

    /// Takes what the connections' tasks passed on: new sessions (the link server then reports
    /// them as connected), messages, closes.
    pub fn receive(&mut self, server: &mut LinkServer) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                WsEvent::Open {
                    conn,
                    client_id,
                    user_data,
                    out,
                } => {
                    // A newer connection of the same user replaces the older one (a client
                    // coming back over a half-dead socket is not locked out until it times out).
                    if self.conns.contains_key(&client_id) {
                        metrics::counter!("croft_ws_replaced_total").increment(1);
                        self.drop_conn(
                            server,
                            client_id,
                            close_code::ALREADY_CONNECTED,
                            "replaced by a newer connection",
                        );
                    }
                    server.add_direct(client_id);
                    self.conns.insert(
                        client_id,
                        WsConn {
                            conn,
                            out,
                            user_data: *user_data,
                        },
                    );
                }
                WsEvent::Frame {
                    conn,
                    client_id,
                    bytes,
                } => {
                    if self.conns.get(&client_id).is_some_and(|c| c.conn == conn) {
                        if server.push_direct(client_id, bytes) {
                            self.active.insert(client_id);
                        } else {
                            // Over the budget of unread messages: the link is disconnected,
                            // and `maintain` closes the socket.
                            self.active.remove(&client_id);
                        }
                    }
                }
                WsEvent::Closed { conn, client_id } => {
                    // What the client sent last is read before the close is.
                    if self.conns.get(&client_id).is_some_and(|c| c.conn == conn) {
                        self.closing.insert(client_id);
                    }
                }
            }
        }
    }

    /// The clients that sent messages since the last call.
    pub fn take_active(&mut self) -> HashSet<ClientId> {
        std::mem::take(&mut self.active)
    }

    /// Ends the sessions the server disconnected (kicks, refusals, clients over their budget),
    /// after the messages sent before.
    pub fn maintain(&mut self, server: &mut LinkServer) {
        for id in server.disconnections_id() {
            self.flush_client(server, id);
            self.drop_conn(
                server,
                id,
                close_code::CLOSED_BY_SERVER,
                "disconnected by the server",
            );
        }
    }

    /// Passes one client's queued messages to its connection now.
    pub fn flush_client(&mut self, server: &mut LinkServer, client: ClientId) {
        let Some(c) = self.conns.get_mut(&client) else {
            return;
        };
        let mut slow = false;
        let mut sent = 0;
        for message in server.take_direct(client) {
            if c.out.try_send(Out::Frame(message)).is_err() {
                slow = true;
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            self.frames_sent.increment(sent);
        }
        if slow && !self.closing.contains(&client) {
            metrics::counter!("croft_ws_slow_clients_total").increment(1);
            tracing::info!(
                client,
                "WebSocket client does not read its messages: closing"
            );
            // The queue is full, so the close cannot be queued: dropping its sender tells the
            // task to close with TIMEOUT.
            self.drop_conn(
                server,
                client,
                close_code::TIMEOUT,
                "messages not read in time",
            );
        }
    }

    /// Passes every client's messages on (there are no acks to pace over WebSocket), and
    /// ends the sessions their clients closed.
    pub fn flush(&mut self, server: &mut LinkServer) {
        for client in std::mem::take(&mut self.closing) {
            if self.conns.remove(&client).is_some() {
                self.active.remove(&client);
                server.remove_connection(client);
            }
        }
        let clients: Vec<ClientId> = self.conns.keys().copied().collect();
        for client in clients {
            self.flush_client(server, client);
        }
    }

    pub fn disconnect_all(&mut self, server: &mut LinkServer) {
        let clients: Vec<ClientId> = self.conns.keys().copied().collect();
        for client in clients {
            self.flush_client(server, client);
            self.drop_conn(
                server,
                client,
                close_code::GOING_AWAY,
                "the server is shutting down",
            );
        }
        self.active.clear();
    }

    fn drop_conn(
        &mut self,
        server: &mut LinkServer,
        client: ClientId,
        code: u16,
        reason: &'static str,
    ) {
        if let Some(c) = self.conns.remove(&client) {
            let _ = c.out.try_send(Out::Close(code, reason));
        }
        self.active.remove(&client);
        self.closing.remove(&client);
        server.remove_connection(client);
    }
}

/// The WebSocket listener's settings, shared by the instance and connection servers.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WsArgs {
    /// Also accept WebSocket clients (web exports) on this TCP address (path `/ws`), with the
    /// same connect tokens as the UDP sockets.
    #[arg(long = "ws", env = "CROFT_WS")]
    pub listen: Option<SocketAddr>,
    /// The URL clients are given for it (default: `ws://ADDR/ws`, or `wss://` with TLS; behind a
    /// load balancer or with a certificate for a DNS name, set it).
    #[arg(long = "ws-public-url", env = "CROFT_WS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve `wss://` with this certificate chain (PEM).
    #[arg(long = "ws-tls-cert", env = "CROFT_WS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long = "ws-tls-key", env = "CROFT_WS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

/// A started WebSocket listener: its shard (to add after the UDP ones) and the URL clients are
/// given.
pub struct WsListening {
    pub shard: crate::Shard,
    pub url: String,
    pub addr: SocketAddr,
}

/// Binds and serves the WebSocket listener on `runtime` when `args` asks for one. Tokens must
/// name one of `public_addrs` (the server's UDP addresses).
pub fn start(
    args: &WsArgs,
    runtime: &tokio::runtime::Runtime,
    private_key: [u8; 32],
    public_addrs: Vec<SocketAddr>,
    limits: WsLimits,
) -> anyhow::Result<Option<WsListening>> {
    use anyhow::Context;
    let Some(listen) = args.listen else {
        return Ok(None);
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(edge::tls::http1_only(&*edge::tls::server_config(
            cert, key,
        )?)),
        _ => None,
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding the WebSocket listener {listen}"))?;
    let addr = listener.local_addr()?;
    let url = match &args.public_url {
        Some(url) => url.clone(),
        None => {
            let mut shown = addr;
            if shown.ip().is_unspecified()
                && let Some(first) = public_addrs.first()
            {
                shown.set_ip(first.ip());
            }
            let scheme = if tls.is_some() { "wss" } else { "ws" };
            format!("{scheme}://{shown}{WS_PATH}")
        }
    };
    let (acceptor, socket) = ws_transport(private_key, public_addrs, limits);
    let router = acceptor.router();
    runtime.spawn(async move {
        // Header time-out and a cap on open connections before the upgrade; after it, the
        // session's own limits (token time-out, idle time-out, write time-outs).
        let limits = edge::tls::ServeLimits::default();
        let result =
            edge::tls::serve_with(listener, router, tls, limits, std::future::pending()).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "WebSocket listener failed");
        }
    });
    tracing::info!(%addr, %url, "accepting WebSocket clients");
    Ok(Some(WsListening {
        shard: crate::Shard::websocket(socket, addr),
        url,
        addr,
    }))
}
