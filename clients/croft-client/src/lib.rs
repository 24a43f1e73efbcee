//! The croft client core, with no engine in it: the auth REST API (login, refresh, logout,
//! connect tokens), secure netcode connections to connection and instance servers carrying
//! croft messages, and the token source a client uses to come back after a drop. The headless
//! bot is built on it, and engine bindings (Godot) wrap it.

pub mod api;
pub mod transport;

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

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("netcode: {0}")]
    Netcode(String),
}

/// One secure netcode connection carrying croft messages.
pub struct Connection {
    client: RenetClient,
    transport: ClientSocket,
    last: Instant,
    last_flush: Instant,
    /// Full flushes (acks included) when idle: [`IDLE_FLUSH_EVERY`] by default.
    idle_flush: Duration,
}

/// How often a connection flushes its acks: renet repeats pending acks on every flush, so acks
/// go out on this cadence (like delayed acks) and not with every message. Must stay well below
/// the reliable channel's resend time.
pub const IDLE_FLUSH_EVERY: Duration = Duration::from_millis(250);

impl Connection {
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
            client: RenetClient::new(connection_config()),
            transport,
            last: Instant::now(),
            last_flush: Instant::now(),
            idle_flush: IDLE_FLUSH_EVERY,
        })
    }

    /// Sends idle keep-alives only this often (connection-server connections use
    /// [`shared_sim::protocol::LOBBY_KEEPALIVE`]).
    ///
    /// Idle acks then also go out at this interval (renet acknowledges ack packets, so the
    /// ack cadence is the idle packet rate); the keep-alive is set a quarter later, so an idle
    /// connection's periodic ack packet makes it unnecessary. Flush right after receiving
    /// messages ([`Self::flush`]) so the peer is not left to resend them.
    pub fn set_keepalive(&mut self, every: Duration) {
        self.idle_flush = every;
        self.transport.keepalive_every = every + every / 4;
    }

    /// Reads the socket and advances timers. Returns an error once the connection is gone.
    pub fn update(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let dt = now - self.last;
        self.last = now;
        self.client.update(dt);
        self.transport
            .update(dt, &mut self.client)
            .map_err(|e| ClientError::Netcode(e.to_string()))
    }

    pub fn send(&mut self, message: &ClientMessage) {
        self.client
            .send_message(Channel::Reliable, message.encode());
    }

    /// Sends raw bytes as a message (tests of the server's decoding use this).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        self.client.send_message(Channel::Reliable, bytes);
    }

    /// Sends new messages now if `urgent`; acks go out every [`IDLE_FLUSH_EVERY`].
    pub fn flush_if_due(&mut self, urgent: bool) -> Result<(), ClientError> {
        if self.last_flush.elapsed() >= self.idle_flush {
            self.flush()
        } else if urgent {
            self.transport
                .send(&mut self.client, false)
                .map_err(|e| ClientError::Netcode(e.to_string()))
        } else {
            Ok(())
        }
    }

    /// Sends everything queued, acks included.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.last_flush = Instant::now();
        self.transport
            .send(&mut self.client, true)
            .map_err(|e| ClientError::Netcode(e.to_string()))
    }

    pub fn receive(&mut self) -> Option<Result<ServerMessage, shared_sim::protocol::DecodeError>> {
        self.client
            .receive_message(Channel::Reliable)
            .map(|bytes| ServerMessage::decode(&bytes))
    }

    /// The next message's bytes, undecoded (for the connection server's message set).
    pub fn receive_raw(&mut self) -> Option<Vec<u8>> {
        self.client
            .receive_message(Channel::Reliable)
            .map(|b| b.to_vec())
    }

    /// The server address this connection uses.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        self.transport.server_addr()
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    pub fn is_disconnected(&self) -> bool {
        self.client.is_disconnected()
    }

    pub fn disconnect(&mut self) {
        self.transport.disconnect();
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
}
