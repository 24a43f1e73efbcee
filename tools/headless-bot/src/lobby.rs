//! The whole player flow: log in, connect to the connection server, queue, follow `MatchFound`
//! to the instance server, play, and queue again until the bot has played its matches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use renet_netcode::ConnectToken;
use shared_sim::GameData;
use shared_sim::protocol::{ErrorCode, LobbyClientMessage, LobbyServerMessage, QueueEnd};

use crate::api::{AuthApi, SessionTokens};
use crate::{MatchPlayer, NoRejoin, Pacing, PlayerState};

mod visits;

#[derive(Debug, Clone, PartialEq)]
pub enum BotState {
    /// Connecting to the connection server.
    Connecting,
    /// On the farm: clearing, planting, watering and harvesting what it can.
    Farming,
    /// Crafting and building a deck before the first queue.
    Tending,
    /// Walking in the common area before the first queue.
    Walking,
    /// Waiting for the previous match to be closed before queueing again.
    Idle,
    Queued,
    Playing,
    Done,
    Failed(String),
}

/// One bot: a lobby connection and, while it plays, a [`MatchPlayer`].
///
/// It logs in through the auth API, connects to the connection server with the connect token
/// it returned, farms, crafts, builds a deck, walks in the common area, queues, follows
/// `MatchFound` to the instance server, plays, and queues again until it has played its matches.
pub struct LobbyBot {
    pub username: String,
    pub session: SessionTokens,
    pub state: BotState,
    /// Matches still to play.
    pub matches_left: usize,
    /// Finished match players (their results and stats).
    pub played: Vec<MatchPlayer>,
    /// Every lobby message received, in order (tests read it).
    pub inbox: Vec<LobbyServerMessage>,
    /// Time from FindMatch to MatchFound, per match.
    pub queue_waits: Vec<Duration>,
    /// When the login request was sent.
    pub login_at: Instant,
    /// Login request -> seated in the first match (instance `Welcome`).
    pub login_to_match: Option<Duration>,
    conn: Option<croft_client::Lobby>,
    player: Option<MatchPlayer>,
    data: Arc<GameData>,
    pacing: Pacing,
    queued_at: Option<Instant>,
    /// Set while a `NoCapacity`/`TimedOut` answer waits for a retry.
    retry_at: Option<Instant>,
    /// The lobby closed the current match before the match client saw its end.
    closed_match: Option<u64>,
    /// Crafts the bot still tries before it builds its deck.
    crafts_left: usize,
    /// Recipes crafted, in order.
    pub crafted: Vec<String>,
    /// The deck the bot saved and chose, if it built one.
    pub deck: Option<Vec<String>>,
    /// Farm actions the server accepted, in order.
    pub farmed: Vec<shared_sim::farm::FarmAction>,
    farm: Option<FarmVisit>,
    /// Moves made in the common area (less the ones it refused), and players seen there on
    /// arrival.
    pub hub_steps: usize,
    pub hub_seen: usize,
    hub: Option<HubVisit>,
    /// Connect over WebSocket (as web clients do) instead of UDP, everywhere.
    pub websocket: bool,
    /// The auth API the bot logged in through: a lost lobby connection is replaced with a
    /// fresh session from it.
    api: Option<AuthApi>,
    /// While the lobby connection is lost: when it was lost, the server it was on, and when
    /// to try again.
    lost: Option<LostLobby>,
    /// Set once the bot should stop (when): it plays out a match it is in or about to get,
    /// leaves the queue if no match comes, and queues no more.
    winding_down: Option<Instant>,
    /// Whether it asked to leave the queue while winding down.
    cancel_sent: bool,
    /// Since when the bot waits (idle) for its match to be closed.
    idle_since: Option<Instant>,
    /// Each time the bot lost its lobby or its match to a failure, and how long it took to
    /// be back (welcomed by a connection server, or seated in its next match).
    pub disruptions: Vec<Disruption>,
    /// After every this many matches, the bot farms, crafts and walks again before it queues
    /// (`None`: only before its first match).
    pub tend_every: Option<usize>,
    /// The number of matches played when it last went back to its farm.
    tended_at: usize,
}

/// A lost lobby connection or match, and how long until the bot was playing again.
#[derive(Debug, Clone)]
pub struct Disruption {
    pub what: DisruptionKind,
    pub at: Instant,
    pub back_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisruptionKind {
    /// The connection server went away: back when another one welcomes the bot.
    Lobby,
    /// The match failed (its instance went away): back when seated in the next match.
    Match,
}

struct LostLobby {
    server: Option<std::net::SocketAddr>,
    retry_at: Instant,
    tries: u32,
}

/// How long a bot that winds down while queued waits for its match before it cancels.
pub const WIND_DOWN_QUEUE: Duration = Duration::from_secs(10);

/// After a match ends, how long the bot waits for the lobby to close it before it tries to
/// queue anyway (the close may have gone to a connection server that died).
const IDLE_FALLBACK: Duration = Duration::from_secs(5);

/// The bot's common-area connection while it walks.
struct HubVisit {
    session: croft_client::HubSession,
    /// Where the bot is heading, once welcomed.
    pos: Option<(i32, i32)>,
    steps_sent: usize,
    last_step: Instant,
    started: Instant,
}

/// Steps a bot takes in the common area (250 units each, 150 ms apart: within walking speed).
const BOT_HUB_STEPS: usize = 4;

/// The bot's farm connection while it farms.
struct FarmVisit {
    session: croft_client::FarmSession,
    /// The action waiting for its result.
    awaiting: Option<(u32, shared_sim::farm::FarmAction)>,
    /// Actions sent this visit.
    sent: u32,
    started: Instant,
}

/// Farm actions a bot makes per visit at most.
const BOT_FARM_ACTIONS: u32 = 12;

/// Crafts a bot tries before it builds its deck.
const BOT_CRAFTS: usize = 4;

impl LobbyBot {
    /// Logs in and starts connecting to the connection server.
    pub fn login(
        api: &AuthApi,
        username: &str,
        password: &str,
        matches: usize,
        data: Arc<GameData>,
        pacing: Pacing,
    ) -> anyhow::Result<Self> {
        Self::login_by(api, username, password, matches, data, pacing, false)
    }

    /// [`Self::login`], over WebSocket everywhere when `websocket` (the first of the connection
    /// servers' WebSocket URLs from the login answer, then each place's `ws_url`).
    pub fn login_by(
        api: &AuthApi,
        username: &str,
        password: &str,
        matches: usize,
        data: Arc<GameData>,
        pacing: Pacing,
        websocket: bool,
    ) -> anyhow::Result<Self> {
        let login_at = Instant::now();
        let session = api.login(username, password)?;
        let route = if websocket {
            let url = session.connection_ws_urls.first().ok_or_else(|| {
                anyhow::anyhow!("the login answer names no WebSocket URL for the connection server")
            })?;
            croft_client::Route::Ws {
                url: url.clone(),
                tls: None,
            }
        } else {
            croft_client::Route::Udp
        };
        let conn = croft_client::Lobby::connect_by(&route, crate::api::netcode_token(&session)?)?;
        Ok(Self {
            username: username.to_string(),
            session,
            state: BotState::Connecting,
            matches_left: matches,
            played: Vec::new(),
            inbox: Vec::new(),
            queue_waits: Vec::new(),
            login_at,
            login_to_match: None,
            conn: Some(conn),
            player: None,
            data,
            pacing,
            queued_at: None,
            retry_at: None,
            closed_match: None,
            crafts_left: BOT_CRAFTS,
            crafted: Vec::new(),
            deck: None,
            farmed: Vec::new(),
            farm: None,
            hub_steps: 0,
            hub_seen: 0,
            hub: None,
            websocket,
            api: Some(api.clone()),
            lost: None,
            winding_down: None,
            cancel_sent: false,
            idle_since: None,
            disruptions: Vec::new(),
            tend_every: None,
            tended_at: 0,
        })
    }

    /// Stops after what is under way: a match in progress is played out, a queued bot plays
    /// the match it gets (or leaves the queue when none comes within [`WIND_DOWN_QUEUE`]), and
    /// nothing new is started.
    pub fn wind_down(&mut self) {
        if self.winding_down.is_some() || self.is_done() {
            return;
        }
        self.winding_down = Some(Instant::now());
        match self.state {
            BotState::Playing | BotState::Queued => self.matches_left = self.matches_left.min(1),
            _ => self.matches_left = 0,
        }
    }

    fn disrupted(&mut self, what: DisruptionKind) {
        self.disruptions.push(Disruption {
            what,
            at: Instant::now(),
            back_after: None,
        });
    }

    fn back(&mut self, what: DisruptionKind) {
        for d in self.disruptions.iter_mut().rev() {
            if d.what == what && d.back_after.is_none() {
                d.back_after = Some(d.at.elapsed());
            }
        }
    }

    /// Tries to replace the lost lobby connection: a fresh session (refresh) and its connect
    /// token, with the server that was lost tried last.
    fn reconnect(&mut self) {
        let Some(lost) = self.lost.as_mut() else {
            return;
        };
        if Instant::now() < lost.retry_at {
            return;
        }
        lost.tries += 1;
        // 0.5 s, 1 s, 2 s, then every 2 s.
        lost.retry_at = Instant::now() + Duration::from_millis(500 << lost.tries.min(3)) / 2;
        let server = lost.server;
        let Some(api) = self.api.clone() else {
            return self.fail("lobby connection lost".into());
        };
        let session = match api.refresh(&self.session.refresh_token) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(bot = %self.username, error = %e, "refresh failed; retrying");
                return;
            }
        };
        let route = if self.websocket {
            // The next WebSocket URL after the one that was in use.
            let urls = &session.connection_ws_urls;
            let tries = self.lost.as_ref().map_or(0, |l| l.tries) as usize;
            match urls.get(tries % urls.len().max(1)) {
                Some(url) => croft_client::Route::Ws {
                    url: url.clone(),
                    tls: None,
                },
                None => return self.fail("no WebSocket URL to reconnect to".into()),
            }
        } else {
            croft_client::Route::Udp
        };
        let token = match crate::api::reconnect_token(&session, server) {
            Ok(t) => t,
            Err(e) => return self.fail(format!("bad connect token: {e}")),
        };
        self.session = session;
        match croft_client::Lobby::connect_by(&route, token) {
            Ok(conn) => {
                tracing::info!(bot = %self.username, "lobby reconnecting");
                self.conn = Some(conn);
            }
            Err(e) => tracing::debug!(bot = %self.username, error = %e, "reconnect failed"),
        }
    }

    /// Welcomed again after a lost lobby: picks up where the bot was.
    fn resume(&mut self) {
        self.lost = None;
        self.back(DisruptionKind::Lobby);
        match self.state {
            // Queue again through this server: the ticket (and its wait) is kept and its
            // updates come here from now on.
            BotState::Queued => self.find_match(),
            BotState::Idle => self.find_match(),
            BotState::Playing => {}
            BotState::Farming | BotState::Walking if self.farm.is_some() || self.hub.is_some() => {}
            // An answer it waited for went with the old server: go on to the queue.
            BotState::Farming | BotState::Tending | BotState::Walking | BotState::Connecting => {
                self.find_match()
            }
            BotState::Done | BotState::Failed(_) => {}
        }
    }

    pub fn user_id(&self) -> u64 {
        self.session.user_id
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, BotState::Done | BotState::Failed(_))
    }

    /// Sends a lobby message (chat, friends ...).
    pub fn send(&mut self, msg: &LobbyClientMessage) {
        if let Some(c) = self.conn.as_mut() {
            c.send(msg);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.is_connected())
    }

    /// Connects to a place (farm, common area) with its token bytes, by [`Self::route`].
    fn open<T>(
        &self,
        token: &[u8],
        ws_url: Option<String>,
        connect: impl FnOnce(&croft_client::Route, ConnectToken) -> Result<T, croft_client::ClientError>,
    ) -> Result<T, String> {
        let route = self.route(ws_url)?;
        let token = ConnectToken::read(&mut &token[..]).map_err(|e| e.to_string())?;
        connect(&route, token).map_err(|e| e.to_string())
    }

    /// How to reach a place: over UDP, or at its WebSocket URL when this bot uses WebSocket.
    fn route(&self, ws_url: Option<String>) -> Result<croft_client::Route, String> {
        if !self.websocket {
            return Ok(croft_client::Route::Udp);
        }
        let url = ws_url.ok_or("the server has no WebSocket URL")?;
        Ok(croft_client::Route::Ws { url, tls: None })
    }

    fn fail(&mut self, why: String) {
        tracing::warn!(bot = %self.username, %why, "bot failed");
        self.state = BotState::Failed(why);
    }

    fn find_match(&mut self) {
        self.idle_since = None;
        if self.matches_left == 0 {
            self.state = BotState::Done;
            if let Some(mut c) = self.conn.take() {
                c.disconnect();
            }
            return;
        }
        let played = self.played.len();
        if self.winding_down.is_none()
            && played > self.tended_at
            && self
                .tend_every
                .is_some_and(|n| n > 0 && played.is_multiple_of(n))
        {
            // Back to the farm, the crafting bench and the common area, then the queue.
            self.tended_at = played;
            self.crafts_left = BOT_CRAFTS;
            self.state = BotState::Farming;
            self.send(&LobbyClientMessage::EnterFarm);
            return;
        }
        self.send(&LobbyClientMessage::FindMatch);
        self.queued_at = Some(Instant::now());
        self.state = BotState::Queued;
    }

    /// Advances the bot: lobby in, match, lobby out.
    pub fn poll(&mut self) {
        if self.is_done() {
            return;
        }
        if self.conn.is_none() {
            if self.lost.is_none() {
                return self.fail("lobby connection lost".into());
            }
            self.reconnect();
        }
        let Some(conn) = self.conn.as_mut() else {
            // The match, farm and common area go on without the lobby.
            return self.poll_places();
        };
        // Messages that came with a disconnect (the server's reason) are read first.
        let croft_client::LobbyPoll { messages, gone } = conn.poll();
        if let Some(e) = gone {
            let server = conn.server_addr();
            let was_welcomed = self.lost.is_none();
            self.conn = None;
            for m in messages.into_iter().flatten() {
                if self.is_done() {
                    return;
                }
                self.handle(m);
            }
            if self.is_done() {
                return;
            }
            // Lost (the server died or is unreachable): reconnect through auth, to the next
            // server first. A server's own refusal (replaced, revoked) failed the bot above.
            tracing::info!(bot = %self.username, error = %e, "lobby connection lost; reconnecting");
            if was_welcomed || self.lost.is_none() {
                self.disrupted(DisruptionKind::Lobby);
                self.lost = Some(LostLobby {
                    server: Some(server),
                    retry_at: Instant::now() + Duration::from_millis(250),
                    tries: 0,
                });
            }
            return self.poll_places();
        }
        for m in messages {
            if self.is_done() {
                return;
            }
            match m {
                Ok(m) => self.handle(m),
                Err(e) => return self.fail(format!("undecodable lobby message: {e}")),
            }
        }
        if self.state == BotState::Queued
            && !self.cancel_sent
            && self
                .winding_down
                .is_some_and(|t| t.elapsed() >= WIND_DOWN_QUEUE)
        {
            self.cancel_sent = true;
            self.send(&LobbyClientMessage::CancelMatch);
        }
        self.poll_places();
    }

    /// The farm, the common area and the match: they go on while the lobby reconnects.
    fn poll_places(&mut self) {
        if self.farm.is_some() {
            self.poll_farm();
        }
        if self.hub.is_some() {
            self.poll_hub();
        }
        if let Some(p) = self.player.as_mut() {
            p.poll(&NoRejoin);
            let seated = p.seat.is_some();
            if seated && self.login_to_match.is_none() {
                self.login_to_match = Some(self.login_at.elapsed());
            }
            if seated {
                self.back(DisruptionKind::Match);
            }
            if self.player.as_ref().is_some_and(|p| p.is_done()) {
                let p = self.player.take();
                if let Some(mut p) = p {
                    if let PlayerState::Failed(why) = &p.state {
                        tracing::warn!(bot = %self.username, %why, "match failed");
                        self.disrupted(DisruptionKind::Match);
                    }
                    // Its results and stats stay; its socket goes (a bot plays many matches).
                    p.drop_connection();
                    self.played.push(p);
                }
                self.matches_left = self.matches_left.saturating_sub(1);
                // Queue again once the lobby says the match is closed.
                self.state = BotState::Idle;
                self.idle_since = Some(Instant::now());
                if self.closed_match.take().is_some() {
                    self.find_match();
                }
            }
        }
        // The close went to a server that died, or was lost: queue anyway (a match not
        // closed yet answers NotAllowed, and the bot tries again).
        if self.state == BotState::Idle
            && self.conn.is_some()
            && self.lost.is_none()
            && self
                .idle_since
                .is_some_and(|t| t.elapsed() >= IDLE_FALLBACK)
        {
            self.find_match();
        }
        if self.retry_at.is_some_and(|t| Instant::now() >= t) {
            self.retry_at = None;
            // Only while still waiting to queue (a match may have come meanwhile).
            if self.state == BotState::Queued {
                self.find_match();
            }
        }
    }

    fn handle(&mut self, msg: LobbyServerMessage) {
        self.inbox.push(msg.clone());
        if self.is_done() {
            return;
        }
        match msg {
            LobbyServerMessage::Welcome { .. } if self.lost.is_some() => self.resume(),
            LobbyServerMessage::Welcome { .. } if self.state == BotState::Connecting => {
                // Farm, craft what the inventory allows, build a deck with it, then queue.
                self.state = BotState::Farming;
                self.send(&LobbyClientMessage::EnterFarm);
            }
            LobbyServerMessage::FarmReady {
                connect_token,
                ws_url,
                ..
            } if self.state == BotState::Farming => {
                let session = self.open(
                    &connect_token,
                    ws_url,
                    croft_client::FarmSession::connect_by,
                );
                match session {
                    Ok(session) => {
                        self.farm = Some(FarmVisit {
                            session,
                            awaiting: None,
                            sent: 0,
                            started: Instant::now(),
                        })
                    }
                    Err(e) => {
                        tracing::warn!(bot = %self.username, error = %e, "farm unreachable");
                        self.leave_farm();
                    }
                }
            }
            LobbyServerMessage::Error { code, message } if self.state == BotState::Farming => {
                tracing::debug!(bot = %self.username, ?code, %message, "no farm");
                self.leave_farm();
            }
            LobbyServerMessage::Inventory { items, cards } if self.state == BotState::Tending => {
                self.tend(&items, &cards);
            }
            LobbyServerMessage::Crafted { recipe, .. } => self.crafted.push(recipe),
            LobbyServerMessage::Decks {
                active: Some(_), ..
            } if self.state == BotState::Tending => self.go_to_hub(),
            LobbyServerMessage::HubReady {
                connect_token,
                ws_url,
                ..
            } if self.state == BotState::Walking => {
                let session =
                    self.open(&connect_token, ws_url, croft_client::HubSession::connect_by);
                match session {
                    Ok(session) => {
                        self.hub = Some(HubVisit {
                            session,
                            pos: None,
                            steps_sent: 0,
                            last_step: Instant::now(),
                            started: Instant::now(),
                        })
                    }
                    Err(e) => {
                        tracing::warn!(bot = %self.username, error = %e, "common area unreachable");
                        self.leave_hub();
                    }
                }
            }
            LobbyServerMessage::Error { code, message } if self.state == BotState::Walking => {
                tracing::debug!(bot = %self.username, ?code, %message, "no common area");
                self.leave_hub();
            }
            LobbyServerMessage::MatchFound {
                match_id,
                connect_token,
                ws_url,
                ..
            } => {
                self.retry_at = None;
                if let Some(t) = self.queued_at.take() {
                    self.queue_waits.push(t.elapsed());
                }
                let token = match ConnectToken::read(&mut connect_token.as_slice()) {
                    Ok(t) => t,
                    Err(e) => return self.fail(format!("bad match token: {e}")),
                };
                let route = match self.route(ws_url) {
                    Ok(r) => r,
                    Err(e) => return self.fail(e),
                };
                match MatchPlayer::new_by(
                    route,
                    self.session.user_id,
                    match_id,
                    token,
                    self.data.clone(),
                    self.pacing,
                ) {
                    Ok(p) => {
                        self.player = Some(p);
                        self.state = BotState::Playing;
                    }
                    Err(e) => self.fail(format!("cannot reach the instance: {e}")),
                }
            }
            LobbyServerMessage::MatchEnded { match_id, .. } => {
                if self.player.is_none() && self.state == BotState::Idle {
                    self.find_match();
                } else {
                    // Closed before our client saw the end: queue as soon as it does.
                    self.closed_match = Some(match_id);
                }
            }
            LobbyServerMessage::QueueLeft { .. }
                if self.state == BotState::Queued && self.winding_down.is_some() =>
            {
                self.matches_left = 0;
                self.find_match();
            }
            LobbyServerMessage::QueueLeft {
                reason: QueueEnd::NoCapacity | QueueEnd::TimedOut,
            } if self.state == BotState::Queued => {
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            LobbyServerMessage::Error { code, message } if self.state == BotState::Tending => {
                tracing::debug!(bot = %self.username, ?code, %message, "refused while tending");
                match code {
                    // A craft that did not go through: look again (the budget bounds this).
                    ErrorCode::NotEnoughItems | ErrorCode::InventoryFull | ErrorCode::UnknownId => {
                        self.send(&LobbyClientMessage::Inventory)
                    }
                    // The deck was refused or the service is down: play the starter deck.
                    _ => self.find_match(),
                }
            }
            LobbyServerMessage::Error { code, message } => {
                tracing::debug!(bot = %self.username, ?code, %message, "lobby error");
                // A refused or failed FindMatch (matchmaking busy, previous match not closed
                // yet): try again shortly.
                if self.state == BotState::Queued
                    && matches!(code, ErrorCode::Unavailable | ErrorCode::NotAllowed)
                {
                    self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
                if matches!(
                    code,
                    ErrorCode::BadToken | ErrorCode::SessionRevoked | ErrorCode::Replaced
                ) {
                    self.fail(format!(
                        "refused by the connection server: {code:?}: {message}"
                    ));
                }
            }
            _ => {}
        }
    }
}

/// Logs `accounts` in, plays `matches_each` matches with each, and summarises the matches.
pub fn play_through_lobby(
    api: &AuthApi,
    accounts: &[(String, String)],
    matches_each: usize,
    data: &Arc<GameData>,
    pacing: Pacing,
    timeout: Duration,
) -> anyhow::Result<(crate::Summary, Vec<LobbyBot>)> {
    play_until(
        api,
        accounts,
        matches_each,
        data,
        pacing,
        timeout,
        &std::sync::atomic::AtomicBool::new(false),
        0,
    )
}

/// As [`play_through_lobby`], also ending (without failing the bots) when `stop` is set; the
/// first `websocket_bots` accounts connect over WebSocket everywhere (as web clients do).
#[allow(clippy::too_many_arguments)]
pub fn play_until(
    api: &AuthApi,
    accounts: &[(String, String)],
    matches_each: usize,
    data: &Arc<GameData>,
    pacing: Pacing,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
    websocket_bots: usize,
) -> anyhow::Result<(crate::Summary, Vec<LobbyBot>)> {
    let mut bots = Vec::with_capacity(accounts.len());
    for (i, (name, password)) in accounts.iter().enumerate() {
        bots.push(LobbyBot::login_by(
            api,
            name,
            password,
            matches_each,
            data.clone(),
            pacing,
            i < websocket_bots,
        )?);
    }
    let start = Instant::now();
    while start.elapsed() < timeout
        && !bots.iter().all(|b| b.is_done())
        && !stop.load(std::sync::atomic::Ordering::Relaxed)
    {
        for b in bots.iter_mut() {
            b.poll();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let stopped = stop.load(std::sync::atomic::Ordering::Relaxed);
    for b in bots.iter_mut() {
        if !b.is_done() && !stopped {
            let state = b.state.clone();
            b.fail(format!("timed out in state {state:?}"));
        }
    }
    let players: Vec<&MatchPlayer> = bots.iter().flat_map(|b| b.played.iter()).collect();
    let mut summary = crate::Summary::of_refs(&players);
    for b in &bots {
        if let BotState::Failed(why) = &b.state {
            summary.failed += 1;
            summary.failures.push(format!("{}: {why}", b.username));
        }
    }
    Ok((summary, bots))
}
