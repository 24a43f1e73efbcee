//! The lobby connection: a session on a connection server (presence, friends, chat, the queue,
//! farms, the common area, crafting and decks), with the lobby's slow ack cadence.

use renet_netcode::ConnectToken;
use shared_sim::protocol::{DecodeError, LOBBY_KEEPALIVE, LobbyClientMessage, LobbyServerMessage};

use crate::{ClientError, Connection, Route};

/// A connected lobby whose server was not heard from for this long (three of its keep-alives
/// and a margin) is lost: netcode alone would wait for the token's 15 s timeout.
pub const LOBBY_SILENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to a connection server.
pub struct Lobby {
    conn: Connection,
}

/// What one [`Lobby::poll`] read: the messages, in order (each decoded or why not), and whether
/// the connection is still there (messages that came with a disconnect, such as the server's
/// reason, are in `messages` too).
#[derive(Debug)]
pub struct LobbyPoll {
    pub messages: Vec<Result<LobbyServerMessage, DecodeError>>,
    pub gone: Option<ClientError>,
}

impl Lobby {
    /// Connects with a connect token of kind Connection (from the login answer).
    pub fn connect(token: ConnectToken) -> Result<Self, ClientError> {
        Self::connect_by(&Route::Udp, token)
    }

    /// Connects by `route` (UDP, or the WebSocket URL from the login answer).
    pub fn connect_by(route: &Route, token: ConnectToken) -> Result<Self, ClientError> {
        let mut conn = Connection::connect_by(route, token)?;
        conn.set_keepalive(LOBBY_KEEPALIVE);
        conn.set_silence_limit(LOBBY_SILENCE);
        Ok(Self { conn })
    }

    /// Sends a message now.
    pub fn send(&mut self, message: &LobbyClientMessage) {
        self.conn.send_raw(message.encode());
        let _ = self.conn.flush();
    }

    /// Reads what arrived; acknowledges it at once (the idle cadence is slow on lobby
    /// connections), else sends keep-alives when due. Never blocks.
    pub fn poll(&mut self) -> LobbyPoll {
        let updated = self.conn.update();
        let mut messages = Vec::new();
        while let Some(bytes) = self.conn.receive_raw() {
            messages.push(LobbyServerMessage::decode(&bytes));
        }
        let gone = match updated {
            Err(e) => Some(e),
            Ok(()) => {
                let sent = if messages.is_empty() {
                    self.conn.flush_if_due(false)
                } else {
                    self.conn.flush()
                };
                sent.err()
            }
        };
        LobbyPoll { messages, gone }
    }

    /// Sends whatever is queued, acks included.
    pub fn flush(&mut self) {
        let _ = self.conn.flush();
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// The server this connection is with (or trying).
    pub fn server_addr(&self) -> std::net::SocketAddr {
        self.conn.server_addr()
    }

    /// Says goodbye to the server (it frees the session at once).
    pub fn disconnect(&mut self) {
        let _ = self.conn.flush();
        self.conn.disconnect();
    }
}
