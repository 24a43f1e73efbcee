//! An engine-free client facade for game engines: one [`Client`] holds the whole session (the
//! REST login, the lobby connection, the current match, the farm and the common area) behind
//! calls that never block and one [`Client::poll`] that returns what happened as
//! [`ClientEvent`]s. Engine bindings (the Godot `CroftClient` nodes) call `poll` once a frame
//! and turn the events into signals with [`ClientEvent::signals`].
//!
//! What it does by itself: the REST calls run on a thread; after login it connects to the
//! connection server; on `MatchFound` it connects to the instance server with the token; when
//! the match connection drops before the end it asks the lobby for `RejoinMatch` and connects
//! again with the fresh token; it reports `Disconnected` when the lobby connection is gone.

pub mod game;
pub mod policy;
pub mod value;

use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use renet_netcode::ConnectToken;
use shared_sim::GameData;
use shared_sim::farm::{FarmAction, FarmError, Plot};
use shared_sim::protocol::{
    ChatTarget, DeckEntry, ErrorCode, FriendEntry, FriendState, LobbyClientMessage,
    LobbyServerMessage, Presence, QueueEnd,
};
use shared_sim::rules::{Action, ActionError, EndReason, MatchEvent, MatchResult, Seat, Target};
use shared_sim::view::MatchSnapshot;

pub use game::{MatchSession, MatchUpdate};
pub use value::{SIGNALS, Value};

use crate::api::{AuthApi, SessionTokens};
use crate::{FarmEvent, FarmSession, HubEvent, HubSession, Lobby, LobbyPoll};

/// How a match ended for this player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOutcome {
    Won,
    Lost,
    Draw,
    /// The lobby closed the match before its end reached us (its server was lost, or our
    /// connection was).
    Unknown,
}

impl MatchOutcome {
    pub fn of(result: &MatchResult, seat: Option<Seat>) -> Self {
        match (result.winner, seat) {
            (None, _) => MatchOutcome::Draw,
            (Some(w), Some(s)) if w == s => MatchOutcome::Won,
            (Some(_), Some(_)) => MatchOutcome::Lost,
            (Some(_), None) => MatchOutcome::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MatchOutcome::Won => "won",
            MatchOutcome::Lost => "lost",
            MatchOutcome::Draw => "draw",
            MatchOutcome::Unknown => "unknown",
        }
    }
}

/// Everything a game shows, as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected to the connection server and welcomed.
    LoggedIn {
        user_id: u64,
        username: String,
    },
    /// The login (REST or the first lobby connection) failed.
    LoginFailed(String),
    /// [`Client::logout`] ended the session.
    LoggedOut,
    /// The lobby connection is gone (the match connection, if any, goes on).
    Disconnected(String),
    /// The whole friends list (after login, after `friend_list`, after any change).
    Friends(Vec<FriendEntry>),
    FriendPresence {
        user_id: u64,
        username: String,
        presence: Presence,
        /// What it was before (Offline when unknown).
        was: Presence,
    },
    FriendRequest {
        user_id: u64,
        username: String,
    },
    FriendUpdate {
        user_id: u64,
        accepted: bool,
    },
    ChatReceived {
        from: u64,
        from_name: String,
        to: ChatTarget,
        text: String,
    },
    Notification(String),
    Queued,
    QueueLeft {
        reason: QueueEnd,
    },
    /// A new match: the client connects to its instance server by itself.
    MatchFound {
        match_id: u64,
    },
    /// Admitted to the match (again, after a reconnect).
    MatchJoined {
        match_id: u64,
        seat: Seat,
    },
    /// The whole view, after a snapshot and after every batch of events.
    MatchState(Box<MatchSnapshot>),
    /// What happened (already applied to the view), in order: the animation cues. `you` is
    /// our seat (targets in [`ClientEvent::signals`] are relative to it).
    MatchEvents {
        you: Seat,
        events: Vec<MatchEvent>,
    },
    ActionResult {
        seq: u32,
        error: Option<ActionError>,
    },
    OpponentLeft {
        grace_seconds: u32,
    },
    OpponentReturned,
    /// The match connection dropped before the end; when `retrying`, the client is getting a
    /// fresh token from the lobby and connecting again.
    MatchConnectionLost {
        match_id: u64,
        reason: String,
        retrying: bool,
    },
    /// The match is over for this player (once per match).
    MatchEnded {
        match_id: u64,
        outcome: MatchOutcome,
        reason: Option<EndReason>,
    },
    /// The lobby closed the match: the player may queue again.
    MatchClosed {
        match_id: u64,
        aborted: bool,
    },
    Inventory {
        items: Vec<(String, u32)>,
        cards: Vec<(String, u32)>,
    },
    Crafted {
        recipe: String,
        output: String,
        quantity: u32,
    },
    Decks {
        decks: Vec<DeckEntry>,
        active: Option<u8>,
    },
    /// Connected to the farm; its state follows.
    FarmReady,
    FarmState {
        tick: u64,
        plots: Vec<Plot>,
        items: Vec<(String, u32)>,
    },
    FarmResult {
        seq: u32,
        error: Option<FarmError>,
    },
    FarmLeft(String),
    /// Connected to the common area; a `Hub(Welcome)` follows.
    HubReady,
    Hub(HubEvent),
    HubLeft(String),
    /// A refusal from a server (`code` set) or from this client (`None`: not logged in, no
    /// match, a bad argument ...).
    Error {
        code: Option<ErrorCode>,
        message: String,
    },
}

/// How often the client asks the lobby again for a rejoin token, and how many times.
const REJOIN_EVERY: Duration = Duration::from_secs(5);
const REJOIN_ATTEMPTS: u32 = 6;

struct Rejoin {
    match_id: u64,
    attempts: u32,
    asked_at: Instant,
}

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

/// A target as game scripts write it, relative to the player: `""` or `"none"` (no target),
/// `"me"` (own hero), `"enemy"` (the opponent's hero), or a creature id (`"17"`).
pub fn parse_target(text: &str, you: Seat) -> Result<Option<Target>, String> {
    match text.trim() {
        "" | "none" => Ok(None),
        "me" | "my_hero" => Ok(Some(Target::Hero(you))),
        "enemy" | "enemy_hero" => Ok(Some(Target::Hero(you.other()))),
        other => other
            .parse::<u32>()
            .map(|id| Some(Target::Creature(id)))
            .map_err(|_| {
                format!("bad target `{other}`: use \"\", \"me\", \"enemy\" or a creature id")
            }),
    }
}

/// The inverse of [`parse_target`].
pub fn target_text(target: Option<Target>, you: Seat) -> String {
    match target {
        None => String::new(),
        Some(Target::Hero(s)) if s == you => "me".into(),
        Some(Target::Hero(_)) => "enemy".into(),
        Some(Target::Creature(id)) => id.to_string(),
    }
}

/// The whole client session. Create one, call [`Client::login`], then [`Client::poll`] every
/// frame.
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
}

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

    /// Asks for a fresh token for the current match and connects with it when it comes (the
    /// client does this by itself after a drop).
    pub fn rejoin_match(&mut self) {
        let Some(match_id) = self
            .game
            .as_ref()
            .map(|g| g.match_id)
            .or(self.rejoin.as_ref().map(|r| r.match_id))
        else {
            return self.local_error("not in a match");
        };
        self.ask_rejoin(match_id, 0);
    }

    /// Drops the match connection as if the network failed (with a Disconnect packet, so the
    /// server frees the seat at once): the client then rejoins as after a real drop. Tests and
    /// demos of reconnecting use it.
    pub fn drop_match_connection(&mut self) {
        let Some(mut g) = self.game.take() else {
            return self.local_error("not in a match");
        };
        g.leave();
        if !g.is_ended() {
            self.match_lost(g.match_id, "dropped on purpose".into(), g.failed_rejoins);
        }
    }

    /// The match connection is gone before the end (after `attempts` reconnects that did not
    /// get in): say so, and ask the lobby for a fresh token while there is a lobby and
    /// attempts are left.
    fn match_lost(&mut self, match_id: u64, reason: String, attempts: u32) {
        let retrying = self.lobby.is_some() && attempts < REJOIN_ATTEMPTS;
        self.events.push(ClientEvent::MatchConnectionLost {
            match_id,
            reason,
            retrying,
        });
        if retrying {
            self.ask_rejoin(match_id, attempts);
        }
    }

    fn ask_rejoin(&mut self, match_id: u64, attempts: u32) {
        self.rejoin = Some(Rejoin {
            match_id,
            attempts,
            asked_at: Instant::now(),
        });
        if let Some(l) = self.lobby.as_mut() {
            l.send(&LobbyClientMessage::RejoinMatch);
        }
    }

    // ----- match calls -----

    /// Sends a match action; returns its `seq` (answered by `ActionResult`), or `None` when
    /// not in a match (an `Error` event says so).
    pub fn play(&mut self, action: Action) -> Option<u32> {
        match self.game.as_mut() {
            // Sent even while (re)connecting: renet keeps it until the connection is up.
            Some(g) if !g.is_ended() => Some(g.act(action)),
            Some(_) => {
                self.local_error("the match is over");
                None
            }
            None => {
                self.local_error("not in a match");
                None
            }
        }
    }

    /// Plays the card `card` (an id from the hand) at `target` ([`parse_target`]).
    pub fn play_card(&mut self, card: &str, target: &str) -> Option<u32> {
        let target = self.target(target)?;
        self.play(Action::PlayCard {
            card: card.to_string(),
            target,
        })
    }

    /// Attacks `target` ([`parse_target`]; `"enemy"` for the hero) with creature `attacker`.
    pub fn attack(&mut self, attacker: u32, target: &str) -> Option<u32> {
        match self.target(target)? {
            Some(target) => self.play(Action::Attack { attacker, target }),
            None => {
                self.local_error("an attack needs a target");
                None
            }
        }
    }

    pub fn end_turn(&mut self) -> Option<u32> {
        self.play(Action::EndTurn)
    }

    pub fn concede(&mut self) -> Option<u32> {
        self.play(Action::Concede)
    }

    pub fn request_snapshot(&mut self) {
        match self.game.as_mut() {
            Some(g) => g.request_snapshot(),
            None => self.local_error("not in a match"),
        }
    }

    fn target(&mut self, text: &str) -> Option<Option<Target>> {
        let you = self
            .game
            .as_ref()
            .and_then(|g| g.seat)
            .unwrap_or(Seat::First);
        match parse_target(text, you) {
            Ok(t) => Some(t),
            Err(e) => {
                self.local_error(e);
                None
            }
        }
    }

    /// The current match's view, once it arrived.
    pub fn match_view(&self) -> Option<&MatchSnapshot> {
        self.game.as_ref().and_then(|g| g.view.as_ref())
    }

    pub fn match_id(&self) -> Option<u64> {
        self.game.as_ref().map(|g| g.match_id)
    }

    /// Whether it is our turn, the match connection is up, no action of ours waits for its
    /// answer, and the match runs.
    pub fn can_act(&self) -> bool {
        self.game.as_ref().is_some_and(|g| {
            g.in_flight == 0
                && !g.is_ended()
                && !g.awaiting_events
                && g.is_connected()
                && g.view.as_ref().is_some_and(|v| v.is_my_turn())
        })
    }

    /// A legal move by the built-in policy (the headless bot's) when it is our turn: end the
    /// turn after a rejected action.
    pub fn suggest_action(&self) -> Option<Action> {
        let g = self.game.as_ref()?;
        let view = g.view.as_ref().filter(|v| v.is_my_turn())?;
        if g.last_rejected {
            return Some(Action::EndTurn);
        }
        Some(match self.data.as_deref() {
            Some(data) => policy::choose_action(data, view),
            None => Action::EndTurn,
        })
    }

    /// Plays [`Client::suggest_action`]'s move; `None` when there is none (not our turn).
    pub fn play_suggested(&mut self) -> Option<u32> {
        let action = self.suggest_action()?;
        self.play(action)
    }

    /// [`Client::suggest_action`] as a dictionary ([`value::action_value`]); `Nil` when none.
    pub fn suggestion_value(&self) -> Value {
        let you = self
            .game
            .as_ref()
            .and_then(|g| g.seat)
            .unwrap_or(Seat::First);
        self.suggest_action()
            .map_or(Value::Nil, |a| value::action_value(&a, you))
    }

    /// The match view as a dictionary ([`value::snapshot_value`]); `Nil` before the first.
    pub fn match_state_value(&self) -> Value {
        self.match_view().map_or(Value::Nil, value::snapshot_value)
    }

    /// The friends list as a list of dictionaries ([`value::friend_value`]).
    pub fn friends_value(&self) -> Value {
        Value::List(self.friends.iter().map(value::friend_value).collect())
    }

    /// A card of the client's card data as a dictionary ([`value::card_value`]); `Nil` for an
    /// unknown id.
    pub fn card_value(&self, id: &str) -> Value {
        self.data
            .as_deref()
            .and_then(|d| d.card_idx(id).map(|i| value::card_value(d.card(i))))
            .unwrap_or(Value::Nil)
    }

    // ----- farm and common area -----

    /// Opens the player's farm: `FarmReady`, then `FarmState`.
    pub fn enter_farm(&mut self) {
        self.send(LobbyClientMessage::EnterFarm);
    }

    /// A farm action; returns its `seq` (answered by `FarmResult`).
    pub fn farm_action(&mut self, action: FarmAction) -> Option<u32> {
        match self.farm.as_mut() {
            Some(f) => Some(f.act(action)),
            None => {
                self.local_error("not on the farm");
                None
            }
        }
    }

    pub fn leave_farm(&mut self) {
        if let Some(mut f) = self.farm.take() {
            f.leave();
            self.events.push(ClientEvent::FarmLeft("left".into()));
        }
    }

    pub fn farm(&self) -> Option<&FarmSession> {
        self.farm.as_ref()
    }

    pub fn enter_hub(&mut self) {
        self.send(LobbyClientMessage::EnterHub);
    }

    pub fn hub_walk(&mut self, x: i32, y: i32) {
        match self.hub.as_mut() {
            Some(h) => h.walk_to(x, y),
            None => self.local_error("not in the common area"),
        }
    }

    pub fn hub_say(&mut self, text: &str) {
        match self.hub.as_mut() {
            Some(h) => h.say(text),
            None => self.local_error("not in the common area"),
        }
    }

    pub fn leave_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            h.leave();
            self.events.push(ClientEvent::HubLeft("left".into()));
        }
    }

    pub fn hub(&self) -> Option<&HubSession> {
        self.hub.as_ref()
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
            Err(e) => return self.events.push(ClientEvent::LoginFailed(e)),
        };
        let lobby = crate::api::netcode_token(&session)
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
            if self.welcomed {
                self.events.push(ClientEvent::Disconnected(reason));
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

    fn match_found(&mut self, match_id: u64, token: &[u8]) {
        let rejoining = self.rejoin.as_ref().is_some_and(|r| r.match_id == match_id)
            || self.game.as_ref().is_some_and(|g| g.match_id == match_id);
        let attempts = match (self.rejoin.take(), self.game.take()) {
            (_, Some(mut old)) => {
                old.leave();
                old.failed_rejoins
            }
            (Some(r), None) => r.attempts,
            (None, None) => 0,
        };
        if !rejoining {
            self.events.push(ClientEvent::MatchFound { match_id });
        }
        let connected = read_token(token)
            .and_then(|t| MatchSession::connect(match_id, t).map_err(|e| e.to_string()));
        match connected {
            Ok(mut g) => {
                // Counted until the server lets us in (`Welcome`).
                g.failed_rejoins = if rejoining { attempts } else { 0 };
                self.game = Some(g);
            }
            Err(e) => self.match_lost(
                match_id,
                format!("cannot reach the match: {e}"),
                attempts + 1,
            ),
        }
    }

    fn poll_match(&mut self) {
        let Some(g) = self.game.as_mut() else {
            return;
        };
        let (updates, gone) = g.poll();
        let (match_id, seat) = (g.match_id, g.seat);
        for u in updates {
            self.match_update(match_id, seat, u);
        }
        let Some(e) = gone else {
            return;
        };
        let Some(mut g) = self.game.take() else {
            return;
        };
        g.leave();
        if g.is_ended() {
            // The server closes a finished match's connections by itself.
            return;
        }
        // The view goes with the dropped session; the rejoin brings a fresh snapshot. A
        // session the server never let in counts as a failed attempt.
        let attempts = g.failed_rejoins + u32::from(g.seat.is_none());
        self.match_lost(match_id, e.to_string(), attempts);
    }

    fn state_event(&self) -> Option<ClientEvent> {
        self.game
            .as_ref()
            .and_then(|g| g.view.clone())
            .map(|v| ClientEvent::MatchState(Box::new(v)))
    }

    fn match_update(&mut self, match_id: u64, seat: Option<Seat>, u: MatchUpdate) {
        match u {
            MatchUpdate::Joined { match_id, seat } => {
                self.rejoin = None;
                self.events
                    .push(ClientEvent::MatchJoined { match_id, seat });
            }
            MatchUpdate::Snapshot => {
                if let Some(v) = self.state_event() {
                    self.events.push(v);
                }
            }
            MatchUpdate::Events(events) => {
                let state = self.state_event();
                self.events.push(ClientEvent::MatchEvents {
                    you: seat.unwrap_or(Seat::First),
                    events,
                });
                if let Some(v) = state {
                    self.events.push(v);
                }
            }
            MatchUpdate::ActionResult { seq, error } => {
                self.events.push(ClientEvent::ActionResult { seq, error })
            }
            MatchUpdate::OpponentLeft { grace_seconds } => self
                .events
                .push(ClientEvent::OpponentLeft { grace_seconds }),
            MatchUpdate::OpponentReturned => self.events.push(ClientEvent::OpponentReturned),
            MatchUpdate::Ended(result) => {
                if !self.ended.contains(&match_id) {
                    self.ended.push(match_id);
                    self.events.push(ClientEvent::MatchEnded {
                        match_id,
                        outcome: MatchOutcome::of(&result, seat),
                        reason: Some(result.reason),
                    });
                }
            }
            MatchUpdate::Error { code, message } => self.events.push(ClientEvent::Error {
                code: Some(code),
                message,
            }),
        }
        // Keep the list of reported ends short: only recent matches can come back.
        if self.ended.len() > 16 {
            self.ended.remove(0);
        }
    }

    fn poll_farm(&mut self) {
        let Some(f) = self.farm.as_mut() else {
            return;
        };
        match f.poll() {
            Ok(events) => {
                for e in events {
                    let ev = match e {
                        FarmEvent::State => ClientEvent::FarmState {
                            tick: f.tick,
                            plots: f.plots.clone().unwrap_or_default(),
                            items: f.items.clone(),
                        },
                        FarmEvent::Result { seq, error } => ClientEvent::FarmResult { seq, error },
                        FarmEvent::Error { code, message } => ClientEvent::Error {
                            code: Some(code),
                            message,
                        },
                    };
                    self.events.push(ev);
                }
            }
            Err(e) => {
                self.farm = None;
                self.events.push(ClientEvent::FarmLeft(e.to_string()));
            }
        }
    }

    fn poll_hub(&mut self) {
        let Some(h) = self.hub.as_mut() else {
            return;
        };
        match h.poll() {
            Ok(events) => self.events.extend(events.into_iter().map(ClientEvent::Hub)),
            Err(e) => {
                self.hub = None;
                self.events.push(ClientEvent::HubLeft(e.to_string()));
            }
        }
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
