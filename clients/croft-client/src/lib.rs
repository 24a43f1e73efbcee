//! The croft client core, with no engine in it: the auth REST API, connections to connection
//! and instance servers carrying croft messages, and the token source for coming back after a drop.

pub mod api;
pub mod client;
pub use client::{Client, ClientEvent};
pub mod transport;
pub mod ws;

mod lobby;
mod places;
pub use lobby::{Lobby, LobbyPoll};
pub use places::{FarmEvent, FarmSession, HubEvent, HubSession};

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use renet::RenetClient;
use renet_netcode::{ClientAuthentication, ConnectToken};
use shared_sim::protocol::{Channel, ClientMessage, ServerMessage, connection_config};
use transport::ClientSocket;

/// A connect token as the REST API and matchmaking hand it out: standard base64 of the netcode
/// token bytes.
pub fn decode_connect_token(text: &str) -> anyhow::Result<ConnectToken> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
    Ok(ConnectToken::read(&mut bytes.as_slice())?)
}

/// Moves `server` to the end of the addresses `token` lists, so a client reconnecting after
/// losing `server` tries the others first (netcode tries them in order, each until the token's
/// timeout). The servers check only that their own address is in the token's private part,
/// so the public list's order is the client's to choose.
pub fn try_last(token: &mut ConnectToken, server: std::net::SocketAddr) {
    let listed: Vec<std::net::SocketAddr> =
        token.server_addresses.iter().flatten().copied().collect();
    if listed.len() < 2 || !listed.contains(&server) {
        return;
    }
    let reordered = listed
        .iter()
        .filter(|a| **a != server)
        .chain(std::iter::once(&server));
    for (slot, addr) in token.server_addresses.iter_mut().zip(reordered) {
        *slot = Some(*addr);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("netcode: {0}")]
    Netcode(String),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("disconnected: {0}")]
    Disconnected(String),
}

/// One connection to a croft server carrying croft messages: secure netcode over UDP (native
/// clients), or WebSocket (see [`ws`]) with the same token and messages.
pub struct Connection {
    link: Link,
}

enum Link {
    Udp(Box<UdpLink>),
    Ws(Box<ws::WsLink>),
}

struct UdpLink {
    client: RenetClient,
    transport: ClientSocket,
    last: Instant,
    last_flush: Instant,
    /// A connected server not heard from for this long is gone (`None`: netcode's own
    /// time-out, the token's, decides).
    silence_limit: Option<Duration>,
}

/// How often [`Connection::flush_if_due`] makes a full flush, with the ack packet when messages
/// arrived since the last one: acks go out on this cadence (like delayed acks), not with every
/// message. Must stay well below the server's resend time (600 ms).
pub const IDLE_FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Keep-alive interval of an idle UDP connection (netcode's own rate is 4 per second): the
/// servers time a client out after the token's 15 s and keep-alive at 1 s themselves
/// (instances) or slower (connection servers, [`set_keepalive`](Connection::set_keepalive)).
pub const MATCH_KEEPALIVE: Duration = Duration::from_secs(1);

/// Where and how to connect: the server's UDP address is in the token; WebSocket clients also
/// need the server's URL (`ws_url` in `MatchFound`, `FarmReady`, `HubReady` and the login
/// answer).
#[derive(Clone, Default)]
pub enum Route {
    #[default]
    Udp,
    Ws {
        url: String,
        /// TLS settings for `wss://` (default: the web PKI's roots).
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Udp => write!(f, "udp"),
            Route::Ws { url, .. } => write!(f, "{url}"),
        }
    }
}

impl Connection {
    /// Connects over UDP to the token's server.
    pub fn connect(token: ConnectToken) -> Result<Self, ClientError> {
        let bind = if token.server_addresses[0].is_some_and(|a| a.is_ipv6()) {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let socket = UdpSocket::bind(bind)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let transport = ClientSocket::new(
            now,
            ClientAuthentication::Secure {
                connect_token: token,
            },
            socket,
        )
        .map_err(|e| ClientError::Netcode(e.to_string()))?;
        Ok(Self {
            link: Link::Udp(Box::new(UdpLink {
                client: RenetClient::new(connection_config()),
                transport,
                last: Instant::now(),
                last_flush: Instant::now(),
                silence_limit: None,
            })),
        })
    }

    /// Connects over WebSocket to `url` with the same token (blocks for the handshake).
    pub fn connect_ws(
        url: &str,
        token: ConnectToken,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            link: Link::Ws(Box::new(ws::WsLink::connect(url, &token, tls)?)),
        })
    }

    /// Connects by `route`.
    pub fn connect_by(route: &Route, token: ConnectToken) -> Result<Self, ClientError> {
        match route {
            Route::Udp => Self::connect(token),
            Route::Ws { url, tls } => Self::connect_ws(url, token, tls.clone()),
        }
    }

    /// Sends idle keep-alives only this often (connection-server connections use
    /// [`shared_sim::protocol::LOBBY_KEEPALIVE`]; the default is [`MATCH_KEEPALIVE`]).
    ///
    /// An ack packet goes out only when messages arrived since the last one, at the next full
    /// flush ([`Self::flush`], or [`Self::flush_if_due`] every [`IDLE_FLUSH_EVERY`]), so an idle
    /// connection sends one keep-alive per interval and nothing else. (WebSocket: the server
    /// pings; nothing to set.)
    pub fn set_keepalive(&mut self, every: Duration) {
        if let Link::Udp(u) = &mut self.link {
            u.transport.keepalive_every = every;
        }
    }

    /// Counts a connected server that sent nothing (not even a keep-alive) for `limit` as gone,
    /// sooner than netcode's own time-out (the token's, 15 s) would: a server killed without a
    /// goodbye. Set it a few of the server's keep-alive intervals long. (WebSocket: the TCP
    /// connection reports a dead server by itself.)
    pub fn set_silence_limit(&mut self, limit: Duration) {
        if let Link::Udp(u) = &mut self.link {
            u.silence_limit = Some(limit);
        }
    }

    /// Reads the socket and advances timers. Returns an error once the connection is gone.
    pub fn update(&mut self) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Udp(u) => {
                let now = Instant::now();
                let dt = now - u.last;
                u.last = now;
                u.client.update(dt);
                u.transport
                    .update(dt, &mut u.client)
                    .map_err(|e| ClientError::Netcode(e.to_string()))?;
                match u.silence_limit {
                    Some(limit) if u.client.is_connected() && u.transport.silent_for() >= limit => {
                        Err(ClientError::Disconnected(format!(
                            "the server was silent for {} s",
                            limit.as_secs()
                        )))
                    }
                    _ => Ok(()),
                }
            }
            Link::Ws(w) => w.update(),
        }
    }

    pub fn send(&mut self, message: &ClientMessage) {
        self.send_raw(message.encode());
    }

    /// Sends raw bytes as a message (tests of the server's decoding use this).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        match &mut self.link {
            Link::Udp(u) => u.client.send_message(Channel::Reliable, bytes),
            Link::Ws(w) => w.send(bytes),
        }
    }

    /// Sends new messages now if `urgent`; an owed ack goes out every [`IDLE_FLUSH_EVERY`].
    pub fn flush_if_due(&mut self, urgent: bool) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Udp(u) if u.last_flush.elapsed() >= IDLE_FLUSH_EVERY => self.flush(),
            Link::Udp(u) if urgent => u
                .transport
                .send(&mut u.client, false)
                .map_err(|e| ClientError::Netcode(e.to_string())),
            Link::Udp(_) => Ok(()),
            Link::Ws(w) => w.flush(),
        }
    }

    /// Sends everything queued, acks included.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Udp(u) => {
                u.last_flush = Instant::now();
                u.transport
                    .send(&mut u.client, true)
                    .map_err(|e| ClientError::Netcode(e.to_string()))
            }
            Link::Ws(w) => w.flush(),
        }
    }

    pub fn receive(&mut self) -> Option<Result<ServerMessage, shared_sim::protocol::DecodeError>> {
        self.receive_raw()
            .map(|bytes| ServerMessage::decode(&bytes))
    }

    /// The next message's bytes, undecoded (for the connection server's message set).
    pub fn receive_raw(&mut self) -> Option<Vec<u8>> {
        match &mut self.link {
            Link::Udp(u) => u
                .client
                .receive_message(Channel::Reliable)
                .map(|b| b.to_vec()),
            Link::Ws(w) => w.receive(),
        }
    }

    /// The server address this connection uses.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        match &self.link {
            Link::Udp(u) => u.transport.server_addr(),
            Link::Ws(w) => w.peer_addr(),
        }
    }

    pub fn is_connected(&self) -> bool {
        match &self.link {
            Link::Udp(u) => u.client.is_connected(),
            Link::Ws(w) => w.is_open(),
        }
    }

    pub fn is_disconnected(&self) -> bool {
        match &self.link {
            Link::Udp(u) => u.client.is_disconnected(),
            Link::Ws(w) => !w.is_open(),
        }
    }

    pub fn disconnect(&mut self) {
        match &mut self.link {
            Link::Udp(u) => u.transport.disconnect(),
            Link::Ws(w) => w.close(),
        }
    }
}

/// Mints a fresh connect token for a player of a match (reconnects need one).
pub trait TokenSource {
    fn instance_token(&self, user_id: u64, match_id: u64) -> anyhow::Result<ConnectToken>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_tokens_decode_as_the_services_encode_them() {
        let issuer = token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap());
        let addr = "127.0.0.1:5100".parse().unwrap();
        let minted = issuer.mint_farm(addr, 42).unwrap();
        let text = token::encode_token(&minted);
        let decoded = decode_connect_token(&text).unwrap();
        assert_eq!(decoded.client_id, 42);
        assert_eq!(decoded.server_addresses[0], Some(addr));
        assert!(decode_connect_token("not base64!").is_err());
        assert!(
            decode_connect_token("AAAA").is_err(),
            "too short for a token"
        );
    }

    #[test]
    fn a_lost_server_is_tried_last() {
        let issuer = token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap());
        let [a, b, c]: [std::net::SocketAddr; 3] = [
            "127.0.0.1:5100".parse().unwrap(),
            "127.0.0.1:5108".parse().unwrap(),
            "127.0.0.1:5116".parse().unwrap(),
        ];
        let data = shared_sim::protocol::TokenUserData {
            kind: shared_sim::protocol::TokenKind::Connection,
            user_id: 7,
            match_id: 0,
            session_id: [0; 16],
        };
        let mut t = issuer.mint(&[a, b, c], data).unwrap();
        try_last(&mut t, a);
        assert_eq!(&t.server_addresses[..4], [Some(b), Some(c), Some(a), None]);
        // An address the token does not list changes nothing.
        try_last(&mut t, "10.0.0.1:1".parse().unwrap());
        assert_eq!(&t.server_addresses[..3], [Some(b), Some(c), Some(a)]);
        // The reordered token still connects: its bytes round-trip.
        let mut bytes = Vec::new();
        t.write(&mut bytes).unwrap();
        let back = ConnectToken::read(&mut bytes.as_slice()).unwrap();
        assert_eq!(back.server_addresses[..3], t.server_addresses[..3]);
    }
}
