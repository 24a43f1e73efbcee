//! The WebSocket link (`docs/PROTOCOL.md` section 11): what web exports speak, here for native
//! clients behind networks without UDP and for testing the servers' WebSocket path.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use renet_netcode::ConnectToken;
use shared_sim::protocol::ws_subprotocol;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};

use crate::ClientError;

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// The read buffer per connection.
const BUFFER_BYTES: usize = 8 * 1024;

/// Largest message accepted from a server (a snapshot is a few KiB).
const MAX_SERVER_MESSAGE_BYTES: usize = 1 << 20;

/// A WebSocket connection to a croft server.
///
/// The subprotocol names the protocol version, the first frame is the connect token, then one
/// binary frame is one message; WebSocket is reliable and ordered, so there are no acks.
///
/// The connect (TCP, TLS, HTTP upgrade) blocks; after it the socket is non-blocking and
/// [`WsLink::update`] never waits.
pub struct WsLink {
    socket: Socket,
    peer: SocketAddr,
    inbox: VecDeque<Vec<u8>>,
    /// Why the connection ended (the server's close code and reason, or the error).
    closed: Option<String>,
    /// Messages written but not yet flushed to the socket.
    pending: bool,
}

/// The TLS settings of `wss://` connections: the web PKI's roots unless given.
pub fn tls_config(
    roots: Option<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let roots = roots.unwrap_or_else(|| {
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ws(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl WsLink {
    /// Connects to `url` (`ws://host:port/ws` or `wss://…`) and sends `token`. `tls` overrides
    /// the TLS settings of `wss://` URLs (see [`tls_config`]).
    pub fn connect(
        url: &str,
        token: &ConnectToken,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ClientError> {
        let ws_err = |e: tungstenite::Error| ClientError::Ws(e.to_string());
        let mut request = url.into_client_request().map_err(ws_err)?;
        let protocol = ws_subprotocol();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol
                .parse()
                .map_err(|_| ClientError::Ws("bad subprotocol".into()))?,
        );
        let uri = request.uri().clone();
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Ws(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let secure = uri.scheme_str() == Some("wss");
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let stream = connect_tcp(&host, port, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let peer = stream.peer_addr()?;
        let connector = if secure {
            Connector::Rustls(match tls {
                Some(c) => c,
                None => tls_config(None)?,
            })
        } else {
            Connector::Plain
        };
        // Small buffers: croft messages are small, and tungstenite's default 128 KiB read
        // buffer per connection dominated a client's memory (bots hold hundreds).
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(BUFFER_BYTES)
            .max_message_size(Some(MAX_SERVER_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_SERVER_MESSAGE_BYTES));
        let (mut socket, response) =
            tungstenite::client_tls_with_config(request, stream, Some(config), Some(connector))
                .map_err(|e| ClientError::Ws(format!("{url}: {e}")))?;
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if agreed != Some(protocol.as_str()) {
            return Err(ClientError::Ws(format!(
                "{url}: the server did not agree to {protocol}"
            )));
        }
        let mut bytes = Vec::with_capacity(1200);
        token
            .write(&mut bytes)
            .map_err(|e| ClientError::Netcode(e.to_string()))?;
        socket.send(Message::Binary(bytes.into())).map_err(ws_err)?;
        match socket.get_mut() {
            MaybeTlsStream::Plain(s) => s.set_nonblocking(true)?,
            MaybeTlsStream::Rustls(s) => s.get_mut().set_nonblocking(true)?,
            _ => {}
        }
        Ok(Self {
            socket,
            peer,
            inbox: VecDeque::new(),
            closed: None,
            pending: false,
        })
    }

    /// Reads every frame that arrived. Returns an error once the connection is gone (with the
    /// server's close code and reason); messages that came before stay readable.
    pub fn update(&mut self) -> Result<(), ClientError> {
        if let Some(reason) = &self.closed {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        loop {
            match self.socket.read() {
                Ok(Message::Binary(b)) => self.inbox.push_back(b.to_vec()),
                Ok(Message::Close(frame)) => {
                    self.closed = Some(describe(frame.as_ref()));
                    // tungstenite queued the close reply; the flush below sends it.
                    self.pending = true;
                    break;
                }
                // tungstenite queues the pong; the flush below sends it.
                Ok(Message::Ping(_)) => self.pending = true,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.closed = Some(e.to_string());
                    break;
                }
            }
        }
        let _ = self.flush();
        match &self.closed {
            Some(reason) => Err(ClientError::Disconnected(reason.clone())),
            None => Ok(()),
        }
    }

    /// Queues one message (sent by the next [`Self::flush`] or [`Self::update`]).
    pub fn send(&mut self, bytes: Vec<u8>) {
        if self.closed.is_some() {
            return;
        }
        match self.socket.write(Message::Binary(bytes.into())) {
            Ok(()) => self.pending = true,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                self.pending = true
            }
            Err(e) => self.closed = Some(e.to_string()),
        }
    }

    /// Writes what is queued, as far as the socket takes it now.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.pending {
            return match &self.closed {
                Some(reason) => Err(ClientError::Disconnected(reason.clone())),
                None => Ok(()),
            };
        }
        match self.socket.flush() {
            Ok(()) => {
                self.pending = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => Err(
                ClientError::Disconnected(self.closed.clone().unwrap_or_else(|| "closed".into())),
            ),
            Err(e) => {
                let reason = e.to_string();
                self.closed = Some(reason.clone());
                Err(ClientError::Disconnected(reason))
            }
        }
    }

    pub fn receive(&mut self) -> Option<Vec<u8>> {
        self.inbox.pop_front()
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Closes with the normal code (the server frees the session at once).
    pub fn close(&mut self) {
        if self.closed.is_none() {
            let _ = self.socket.close(None);
            self.pending = true;
            let _ = self.flush();
            self.closed = Some("closed by the client".into());
        }
    }
}

/// Connects to the first of `host`'s addresses that answers within `timeout` each.
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ClientError> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => ClientError::Io(e),
        None => ClientError::Ws(format!("{host}: no address")),
    })
}

fn describe(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
        None => "closed by the server".into(),
    }
}
