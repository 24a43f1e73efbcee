//! An engine-free client facade for game engines: one [`Client`] holds the whole session behind
//! calls that never block, and [`Client::poll`] returns what happened as [`ClientEvent`]s.

mod events;
pub mod game;
mod places;
mod playing;
pub mod policy;
pub mod value;

use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use renet_netcode::ConnectToken;
use shared_sim::GameData;
use shared_sim::protocol::{
    ChatTarget, ErrorCode, FriendEntry, FriendState, LobbyClientMessage, LobbyServerMessage,
    Presence,
};
use shared_sim::rules::EndReason;

pub use events::{ClientEvent, MatchOutcome};
pub use game::{MatchSession, MatchUpdate};
use playing::{REJOIN_ATTEMPTS, REJOIN_EVERY, Rejoin};
pub use playing::{parse_target, target_text};
pub use value::{SIGNALS, Value};

use crate::api::{AuthApi, SessionTokens};
use crate::{FarmSession, HubSession, Lobby, LobbyPoll};

type LoginAnswer = Result<(AuthApi, SessionTokens), String>;

/// The card data shipped with the client (`assets/cards`), for [`Client::suggest_action`] and
/// card descriptions. The server's data may be newer; the server decides what is legal.
pub fn embedded_game_data() -> Option<Arc<GameData>> {
    static DATA: OnceLock<Option<Arc<GameData>>> = OnceLock::new();
    DATA.get_or_init(|| {
        use std::path::Path;
        let f = |name: &'static str| Path::new(name);
        GameData::from_sources(
            (
                f("rules.ron"),
                include_str!("../../../assets/cards/rules.ron"),
            ),
            (
                f("cards.ron"),
                include_str!("../../../assets/cards/cards.ron"),
            ),
            (
                f("items.ron"),
                include_str!("../../../assets/cards/items.ron"),
            ),
            (
                f("crops.ron"),
                include_str!("../../../assets/cards/crops.ron"),
            ),
            (
                f("recipes.ron"),
                include_str!("../../../assets/cards/recipes.ron"),
            ),
            (
                f("decks.ron"),
                include_str!("../../../assets/cards/decks.ron"),
            ),
        )
        .ok()
        .map(Arc::new)
    })
    .clone()
}

/// The whole client session. Create one, call [`Client::login`], then [`Client::poll`] every
/// frame.
///
/// It holds the REST login, the lobby connection, the current match, the farm and the common
/// area behind calls that never block and one [`Client::poll`] that returns what happened as
/// [`ClientEvent`]s. Engine bindings (the Godot `CroftClient` nodes) call `poll` once a frame
/// and turn the events into signals with [`ClientEvent::signals`].
///
/// What it does by itself: the REST calls run on a thread; after login it connects to the
/// connection server; on `MatchFound` it connects to the instance server with the token; when
/// the match connection drops before the end it asks the lobby for `RejoinMatch` and connects
/// again with the fresh token; it reports `Disconnected` when the lobby connection is gone,
/// and, unless the server refused the session, reconnects by itself (a fresh session from the
/// refresh token, the lost server tried last) until welcomed again (`LoggedIn`).
pub struct Client {
    data: Option<Arc<GameData>>,
    api: Option<AuthApi>,
    session: Option<SessionTokens>,
    login_rx: Option<mpsc::Receiver<LoginAnswer>>,
    logout_rx: Option<mpsc::Receiver<Result<(), String>>>,
    lobby: Option<Lobby>,
    welcomed: bool,
    user_id: Option<u64>,
    username: Option<String>,
    friends: Vec<FriendEntry>,
    game: Option<MatchSession>,
    /// Matches whose end was reported (so the lobby's close does not report it again).
    ended: Vec<u64>,
    rejoin: Option<Rejoin>,
    farm: Option<FarmSession>,
    hub: Option<HubSession>,
    events: Vec<ClientEvent>,
    /// After a lost lobby connection (not a server's refusal): the server that was lost and
    /// when to try again, for the automatic reconnect.
    lost: Option<LostLobby>,
    /// The connection server refused the session (replaced, revoked, bad token): no
    /// automatic reconnect.
    refused: bool,
}

struct LostLobby {
    server: std::net::SocketAddr,
    retry_at: Instant,
    tries: u32,
}

/// Automatic reconnects after a lost lobby connection before the client gives up (each a
/// fresh session from the refresh token, the lost server tried last): 0.5 s, 1 s, 2 s, then
/// every 4 s.
const AUTO_RECONNECTS: u32 = 10;

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with the card data it ships with.
    pub fn new() -> Self {
        Self::with_game_data(embedded_game_data())
    }

    pub fn with_game_data(data: Option<Arc<GameData>>) -> Self {
        Self {
            data,
            api: None,
            session: None,
            login_rx: None,
            logout_rx: None,
            lobby: None,
            welcomed: false,
            user_id: None,
            username: None,
            friends: Vec::new(),
            game: None,
            ended: Vec::new(),
            rejoin: None,
            farm: None,
            hub: None,
            events: Vec::new(),
            lost: None,
            refused: false,
        }
    }

    /// Reports a client-side error as an `Error` event with no code (bindings use it for bad
    /// arguments, such as a negative id).
    pub fn push_error(&mut self, message: impl Into<String>) {
        self.local_error(message);
    }

    fn local_error(&mut self, message: impl Into<String>) {
        self.events.push(ClientEvent::Error {
            code: None,
            message: message.into(),
        });
    }

    // ----- session -----

    /// Logs in over REST on a thread: `LoggedIn` (once the connection server welcomed us) or
    /// `LoginFailed` follows.
    pub fn login(&mut self, base_url: &str, username: &str, password: &str) {
        if self.login_rx.is_some() {
            return self.local_error("a login is already under way");
        }
        self.close_connections();
        self.lost = None;
        self.refused = false;
        let (base, user, pass) = (
            base_url.to_string(),
            username.to_string(),
            password.to_string(),
        );
        self.start_session("croft-login", move || {
            AuthApi::new(&base)
                .and_then(|api| api.login(&user, &pass).map(|s| (api, s)))
                .map_err(|e| format!("{e:#}"))
        });
    }

    /// Runs a login or refresh on a thread; its answer is read by `poll`.
    fn start_session(&mut self, name: &str, call: impl FnOnce() -> LoginAnswer + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = tx.send(call());
            });
        match spawned {
            Ok(_) => self.login_rx = Some(rx),
            Err(e) => self
                .events
                .push(ClientEvent::LoginFailed(format!("no {name} thread: {e}"))),
        }
    }

    /// Connects to the connection server again after `Disconnected`, with a fresh session
    /// from the refresh token (on a thread; `LoggedIn` or `LoginFailed` follows).
    pub fn reconnect(&mut self) {
        if self.login_rx.is_some() {
            return self.local_error("a login is already under way");
        }
        let (Some(api), Some(session)) = (self.api.clone(), self.session.as_ref()) else {
            return self.local_error("not logged in");
        };
        if let Some(mut l) = self.lobby.take() {
            l.disconnect();
        }
        self.welcomed = false;
        let refresh = session.refresh_token.clone();
        self.start_session("croft-refresh", move || {
            api.refresh(&refresh)
                .map(|s| (api, s))
                .map_err(|e| format!("{e:#}"))
        });
    }

    /// Ends the session: every connection closes now, and the session is revoked over REST on
    /// a thread (a failure comes as an `Error`).
    pub fn logout(&mut self) {
        self.close_connections();
        self.lost = None;
        self.login_rx = None;
        if let (Some(api), Some(session)) = (self.api.take(), self.session.take()) {
            let (tx, rx) = mpsc::channel();
            let access = session.access_token;
            let spawned = std::thread::Builder::new()
                .name("croft-logout".into())
                .spawn(move || {
                    let _ = tx.send(api.logout(&access).map_err(|e| format!("{e:#}")));
                });
            if spawned.is_ok() {
                self.logout_rx = Some(rx);
            }
        }
        self.user_id = None;
        self.username = None;
        self.friends.clear();
        self.events.push(ClientEvent::LoggedOut);
    }

    fn close_connections(&mut self) {
        if let Some(mut g) = self.game.take() {
            g.leave();
        }
        if let Some(mut f) = self.farm.take() {
            f.leave();
        }
        if let Some(mut h) = self.hub.take() {
            h.leave();
        }
        if let Some(mut l) = self.lobby.take() {
            l.disconnect();
        }
        self.rejoin = None;
        self.welcomed = false;
    }

    pub fn is_logged_in(&self) -> bool {
        self.welcomed && self.lobby.is_some()
    }

    pub fn user_id(&self) -> Option<u64> {
        self.user_id
    }

    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The REST session (access and refresh tokens), once logged in.
    pub fn session(&self) -> Option<&SessionTokens> {
        self.session.as_ref()
    }

    pub fn friends(&self) -> &[FriendEntry] {
        &self.friends
    }

    pub fn game_data(&self) -> Option<&Arc<GameData>> {
        self.data.as_ref()
    }

    // ----- lobby calls -----

    fn send(&mut self, msg: LobbyClientMessage) {
        // The server refuses larger messages (and counts them against the session's
        // bad-message budget): say so here instead.
        let size = msg.encode().len();
        if size > shared_sim::protocol::MAX_CLIENT_MESSAGE_BYTES {
            return self.local_error(format!(
                "message of {size} bytes is over the {} byte limit",
                shared_sim::protocol::MAX_CLIENT_MESSAGE_BYTES
            ));
        }
        match self.lobby.as_mut() {
            Some(l) => l.send(&msg),
            None => self.local_error("not connected to the lobby"),
        }
    }

    pub fn find_match(&mut self) {
        self.send(LobbyClientMessage::FindMatch);
    }

    pub fn cancel_match(&mut self) {
        self.send(LobbyClientMessage::CancelMatch);
    }

    /// A direct message to `to`, or to the common channel with `None`.
    pub fn chat(&mut self, to: Option<u64>, text: &str) {
        let to = to.map_or(ChatTarget::Common, ChatTarget::User);
        self.send(LobbyClientMessage::Chat {
            to,
            text: text.to_string(),
        });
    }

    pub fn friend_request(&mut self, username: &str) {
        self.send(LobbyClientMessage::FriendRequest {
            username: username.to_string(),
        });
    }

    pub fn friend_accept(&mut self, user_id: u64) {
        self.send(LobbyClientMessage::FriendAccept { user_id });
    }

    pub fn friend_decline(&mut self, user_id: u64) {
        self.send(LobbyClientMessage::FriendDecline { user_id });
    }

    pub fn friend_remove(&mut self, user_id: u64) {
        self.send(LobbyClientMessage::FriendRemove { user_id });
    }

    pub fn friend_list(&mut self) {
        self.send(LobbyClientMessage::FriendList);
    }

    pub fn inventory(&mut self) {
        self.send(LobbyClientMessage::Inventory);
    }

    pub fn craft(&mut self, recipe: &str) {
        self.send(LobbyClientMessage::Craft {
            recipe: recipe.to_string(),
        });
    }

    pub fn decks(&mut self) {
        self.send(LobbyClientMessage::Decks);
    }

    pub fn save_deck(&mut self, slot: u8, name: &str, cards: Vec<String>) {
        self.send(LobbyClientMessage::SaveDeck {
            slot,
            name: name.to_string(),
            cards,
        });
    }

    /// Queue with the deck in `slot` from now on (`None`: the starter deck).
    pub fn choose_deck(&mut self, slot: Option<u8>) {
        self.send(LobbyClientMessage::ChooseDeck { slot });
    }

    // ----- polling -----

    /// Drives every connection (never blocks) and returns what happened since the last call.
    pub fn poll(&mut self) -> Vec<ClientEvent> {
        self.poll_login();
        self.poll_lobby();
        self.poll_match();
        self.poll_farm();
        self.poll_hub();
        std::mem::take(&mut self.events)
    }

    fn poll_login(&mut self) {
        if self.lobby.is_none()
            && self.login_rx.is_none()
            && self
                .lost
                .as_ref()
                .is_some_and(|l| Instant::now() >= l.retry_at)
        {
            self.reconnect();
        }
        if let Some(rx) = &self.logout_rx {
            match rx.try_recv() {
                Ok(Ok(())) | Err(mpsc::TryRecvError::Disconnected) => self.logout_rx = None,
                Ok(Err(e)) => {
                    self.logout_rx = None;
                    self.local_error(format!("logout: {e}"));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        let Some(rx) = &self.login_rx else {
            return;
        };
        let answer = match rx.try_recv() {
            Ok(a) => a,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err("the login thread ended".into()),
        };
        self.login_rx = None;
        let (api, session) = match answer {
            Ok(a) => a,
            Err(e) => {
                // An automatic reconnect tries again later (auth may be restarting too).
                if let Some(l) = self.lost.as_mut() {
                    l.tries += 1;
                    l.retry_at = Instant::now() + Duration::from_millis(500u64 << l.tries.min(3));
                    if l.tries > AUTO_RECONNECTS {
                        self.lost = None;
                    }
                }
                return self.events.push(ClientEvent::LoginFailed(e));
            }
        };
        let lost = self.lost.as_ref().map(|l| l.server);
        let lobby = crate::api::reconnect_token(&session, lost)
            .map_err(|e| format!("{e:#}"))
            .and_then(|t| Lobby::connect(t).map_err(|e| e.to_string()));
        match lobby {
            Ok(l) => {
                self.lobby = Some(l);
                self.user_id = Some(session.user_id);
                self.api = Some(api);
                self.session = Some(session);
                self.welcomed = false;
            }
            Err(e) => self.events.push(ClientEvent::LoginFailed(format!(
                "cannot reach the connection server: {e}"
            ))),
        }
    }

    fn poll_lobby(&mut self) {
        let Some(lobby) = self.lobby.as_mut() else {
            return;
        };
        let LobbyPoll { messages, gone } = lobby.poll();
        let server = lobby.server_addr();
        for m in messages {
            match m {
                Ok(m) => self.handle_lobby(m),
                Err(e) => self.events.push(ClientEvent::Error {
                    code: Some(e.code()),
                    message: format!("undecodable lobby message: {e}"),
                }),
            }
        }
        if let Some(e) = gone {
            self.lobby = None;
            let reason = e.to_string();
            if self.welcomed || self.lost.is_some() {
                if self.welcomed {
                    self.events.push(ClientEvent::Disconnected(reason));
                }
                // The server went away (not a refusal): reconnect by itself, elsewhere first.
                if !self.refused {
                    let tries = self.lost.as_ref().map_or(0, |l| l.tries);
                    self.lost = (tries < AUTO_RECONNECTS).then(|| LostLobby {
                        server,
                        retry_at: Instant::now() + Duration::from_millis(500u64 << tries.min(3)),
                        tries: tries + 1,
                    });
                }
            } else {
                self.events.push(ClientEvent::LoginFailed(format!(
                    "the connection server did not let us in: {reason}"
                )));
            }
            self.welcomed = false;
        }
        if let Some(r) = &self.rejoin
            && self.game.is_none()
            && r.asked_at.elapsed() >= REJOIN_EVERY
        {
            let (match_id, attempts) = (r.match_id, r.attempts + 1);
            if attempts >= REJOIN_ATTEMPTS || self.lobby.is_none() {
                self.rejoin = None;
                self.events.push(ClientEvent::MatchConnectionLost {
                    match_id,
                    reason: "no rejoin token from the lobby".into(),
                    retrying: false,
                });
            } else {
                self.ask_rejoin(match_id, attempts);
            }
        }
    }

    /// Turns one lobby message into events (and connections).
    fn handle_lobby(&mut self, msg: LobbyServerMessage) {
        use LobbyServerMessage as L;
        let ev = match msg {
            L::Welcome { user_id, username } => {
                self.welcomed = true;
                self.lost = None;
                self.user_id = Some(user_id);
                self.username = Some(username.clone());
                ClientEvent::LoggedIn { user_id, username }
            }
            L::Friends(list) => {
                self.friends = list.clone();
                ClientEvent::Friends(list)
            }
            L::FriendPresence { user_id, presence } => {
                let entry = self.friends.iter_mut().find(|f| f.user_id == user_id);
                let (username, was) = match entry {
                    Some(f) => {
                        let was = f.presence;
                        f.presence = presence;
                        (f.username.clone(), was)
                    }
                    None => (String::new(), Presence::Offline),
                };
                ClientEvent::FriendPresence {
                    user_id,
                    username,
                    presence,
                    was,
                }
            }
            L::FriendRequestReceived { user_id, username } => {
                ClientEvent::FriendRequest { user_id, username }
            }
            L::FriendUpdate { user_id, accepted } => {
                ClientEvent::FriendUpdate { user_id, accepted }
            }
            L::Queued => ClientEvent::Queued,
            L::QueueLeft { reason } => ClientEvent::QueueLeft { reason },
            L::MatchFound {
                match_id,
                connect_token,
                ..
            } => return self.match_found(match_id, &connect_token),
            L::MatchEnded { match_id, aborted } => {
                if !self.ended.contains(&match_id) {
                    self.ended.push(match_id);
                    self.events.push(ClientEvent::MatchEnded {
                        match_id,
                        outcome: MatchOutcome::Unknown,
                        reason: aborted.then_some(EndReason::Aborted),
                    });
                }
                if self.game.as_ref().is_some_and(|g| g.match_id == match_id)
                    && let Some(mut g) = self.game.take()
                {
                    g.leave();
                }
                if self.rejoin.as_ref().is_some_and(|r| r.match_id == match_id) {
                    self.rejoin = None;
                }
                ClientEvent::MatchClosed { match_id, aborted }
            }
            L::Chat {
                from,
                from_name,
                to,
                text,
            } => ClientEvent::ChatReceived {
                from,
                from_name,
                to,
                text,
            },
            L::Notification { text } => ClientEvent::Notification(text),
            L::Error { code, message } => {
                if matches!(
                    code,
                    ErrorCode::Replaced | ErrorCode::SessionRevoked | ErrorCode::BadToken
                ) {
                    self.refused = true;
                }
                // A rejoin the lobby cannot serve (the match is gone): stop asking.
                if self.game.is_none()
                    && code == ErrorCode::NotAllowed
                    && let Some(r) = self.rejoin.take()
                {
                    self.events.push(ClientEvent::MatchConnectionLost {
                        match_id: r.match_id,
                        reason: format!("no rejoin: {message}"),
                        retrying: false,
                    });
                }
                ClientEvent::Error {
                    code: Some(code),
                    message,
                }
            }
            L::Inventory { items, cards } => ClientEvent::Inventory { items, cards },
            L::Crafted {
                recipe,
                output,
                quantity,
            } => ClientEvent::Crafted {
                recipe,
                output,
                quantity,
            },
            L::FarmReady { connect_token, .. } => {
                let session = read_token(&connect_token)
                    .and_then(|t| FarmSession::connect(t).map_err(|e| e.to_string()));
                match session {
                    Ok(s) => {
                        if let Some(mut old) = self.farm.replace(s) {
                            old.leave();
                        }
                        ClientEvent::FarmReady
                    }
                    Err(e) => ClientEvent::Error {
                        code: None,
                        message: format!("cannot reach the farm: {e}"),
                    },
                }
            }
            L::HubReady { connect_token, .. } => {
                let session = read_token(&connect_token)
                    .and_then(|t| HubSession::connect(t).map_err(|e| e.to_string()));
                match session {
                    Ok(s) => {
                        if let Some(mut old) = self.hub.replace(s) {
                            old.leave();
                        }
                        ClientEvent::HubReady
                    }
                    Err(e) => ClientEvent::Error {
                        code: None,
                        message: format!("cannot reach the common area: {e}"),
                    },
                }
            }
            L::Decks { decks, active } => ClientEvent::Decks { decks, active },
        };
        self.events.push(ev);
    }
}

fn read_token(bytes: &[u8]) -> Result<ConnectToken, String> {
    ConnectToken::read(&mut &bytes[..]).map_err(|e| format!("bad connect token: {e}"))
}

/// Friends whose presence is not Offline (accepted friends only).
pub fn online_friends(friends: &[FriendEntry]) -> impl Iterator<Item = &FriendEntry> {
    friends
        .iter()
        .filter(|f| f.state == FriendState::Accepted && f.presence != Presence::Offline)
}

#[cfg(test)]
mod tests;
