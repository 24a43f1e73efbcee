//! Bots on the client core (`croft-client`): match players, a simple legal playing policy, the
//! whole lobby flow and a driver; the bot binary, `croft up --bots` and the test suites use it.

pub use croft_client::{ClientError, Connection, IDLE_FLUSH_EVERY, TokenSource, api, transport};

pub mod dev;
pub mod lobby;
/// The playing policy lives in the client core now (game clients get it as a suggestion).
pub use croft_client::client::policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use croft_client::client::{MatchSession, MatchUpdate};
use renet_netcode::ConnectToken;
use shared_sim::GameData;
use shared_sim::protocol::ErrorCode;
use shared_sim::rules::{Action, MatchResult, Seat};
use shared_sim::view::MatchSnapshot;

/// A token source for players that do not reconnect inside a match (the lobby offers
/// `RejoinMatch` for clients that want to).
pub struct NoRejoin;

impl TokenSource for NoRejoin {
    fn instance_token(&self, _user_id: u64, _match_id: u64) -> anyhow::Result<ConnectToken> {
        anyhow::bail!("this bot does not rejoin matches")
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Delay before each move, measured from the event that made it possible.
    pub think: Duration,
    /// Fraction of `think` to vary it by, up and down.
    pub jitter: f64,
}

impl Pacing {
    /// The next delay: `think` varied by up to `jitter` either way, drawn from `rng` (a
    /// xorshift state, any non-zero start).
    pub fn delay(&self, rng: &mut u64) -> Duration {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let unit = (*rng % 10_000) as f64 / 10_000.0; // 0..1
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        self.think.mul_f64(factor.max(0.0))
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            think: Duration::from_millis(100),
            jitter: 0.2,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlayerState {
    Connecting,
    Playing,
    Finished(MatchResult),
    Failed(String),
}

/// Counters and latencies one player gathered.
#[derive(Debug, Clone, Default)]
pub struct PlayerStats {
    pub moves_sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub reconnects: u64,
    pub server_errors: u64,
    /// Move sent -> accepted or rejected, in microseconds.
    pub ack_latencies_us: Vec<u64>,
}

/// One player in one match, keeping its view current from server events.
pub struct MatchPlayer {
    pub user_id: u64,
    pub match_id: u64,
    pub seat: Option<Seat>,
    pub state: PlayerState,
    pub stats: PlayerStats,
    /// While true the player stays connected but makes no moves (load tests measure the idle
    /// cost of connected players this way).
    pub hold: bool,
    /// The match connection and the view kept from it (the client core's match session);
    /// `None` while dropped.
    session: Option<MatchSession>,
    data: Arc<GameData>,
    pacing: Pacing,
    in_flight: HashMap<u32, Instant>,
    next_move_at: Option<Instant>,
    last_rejected: bool,
    rng: u64,
    reconnects_left: u32,
    /// How this player connects (and reconnects): UDP, or the instance's WebSocket URL.
    route: croft_client::Route,
}

impl MatchPlayer {
    pub fn new(
        user_id: u64,
        match_id: u64,
        token: ConnectToken,
        data: Arc<GameData>,
        pacing: Pacing,
    ) -> Result<Self, ClientError> {
        Self::new_by(
            croft_client::Route::Udp,
            user_id,
            match_id,
            token,
            data,
            pacing,
        )
    }

    /// A player connecting by `route` (UDP, or the instance's WebSocket URL).
    pub fn new_by(
        route: croft_client::Route,
        user_id: u64,
        match_id: u64,
        token: ConnectToken,
        data: Arc<GameData>,
        pacing: Pacing,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            user_id,
            match_id,
            seat: None,
            state: PlayerState::Connecting,
            stats: PlayerStats::default(),
            hold: false,
            session: Some(MatchSession::connect_by(&route, match_id, token)?),
            data,
            pacing,
            in_flight: HashMap::new(),
            next_move_at: None,
            last_rejected: false,
            rng: user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ match_id,
            reconnects_left: 3,
            route,
        })
    }

    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            PlayerState::Finished(_) | PlayerState::Failed(_)
        )
    }

    /// Drops the connection as if the network failed (tests of reconnecting use this).
    pub fn drop_connection(&mut self) {
        if let Some(mut s) = self.session.take() {
            s.leave();
        }
    }

    /// The match as this player sees it (from the last snapshot and the events since).
    pub fn view(&self) -> Option<&MatchSnapshot> {
        self.session.as_ref().and_then(|s| s.view.as_ref())
    }

    fn schedule_move(&mut self, now: Instant) {
        self.next_move_at = Some(now + self.pacing.delay(&mut self.rng));
    }

    /// Advances this player: network in, decisions, network out.
    pub fn poll(&mut self, tokens: &dyn TokenSource) {
        if self.is_done() {
            return;
        }
        let now = Instant::now();
        let Some(session) = self.session.as_mut() else {
            self.reconnect(tokens);
            return;
        };
        // Updates that arrived before a disconnect (the match's end, then the close) count.
        let (updates, gone) = session.poll();
        for update in updates {
            self.handle(update, now);
        }
        if let Some(e) = gone {
            tracing::debug!(user = self.user_id, error = %e, "connection lost");
            self.session = None;
            return;
        }
        if self.is_done() {
            if let Some(s) = self.session.as_mut() {
                s.leave();
            }
            return;
        }
        // The session says when an accepted action's events are still to come (over
        // WebSocket they are a frame of their own): the view is not current until then.
        let current = self.session.as_ref().is_some_and(|s| !s.awaiting_events);
        if self.in_flight.is_empty()
            && current
            && !self.hold
            && let (Some(at), Some(view)) = (self.next_move_at, self.view())
            && now >= at
            && view.is_my_turn()
        {
            let action = if self.last_rejected {
                Action::EndTurn
            } else {
                policy::choose_action(&self.data, view)
            };
            self.send_action(action, now);
        }
    }

    pub fn send_action(&mut self, action: Action, now: Instant) {
        if let Some(session) = self.session.as_mut() {
            let seq = session.act(action);
            self.in_flight.insert(seq, now);
            self.stats.moves_sent += 1;
            self.next_move_at = None;
        }
    }

    /// Sends raw bytes on the match channel (abuse tests).
    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        if let Some(session) = self.session.as_mut() {
            session.send_raw(bytes);
        }
    }

    fn reconnect(&mut self, tokens: &dyn TokenSource) {
        if self.reconnects_left == 0 {
            self.state = PlayerState::Failed("connection lost and reconnects used up".into());
            return;
        }
        self.reconnects_left -= 1;
        self.stats.reconnects += 1;
        let session = tokens
            .instance_token(self.user_id, self.match_id)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                MatchSession::connect_by(&self.route, self.match_id, t).map_err(|e| e.to_string())
            });
        match session {
            Ok(s) => {
                self.session = Some(s);
                self.in_flight.clear();
                self.state = PlayerState::Connecting;
            }
            Err(e) => self.state = PlayerState::Failed(format!("reconnect failed: {e}")),
        }
    }

    /// The bot's side of what the match session read: pacing, stats and its state.
    fn handle(&mut self, update: MatchUpdate, now: Instant) {
        match update {
            MatchUpdate::Joined { seat, match_id } => {
                self.seat = Some(seat);
                self.match_id = match_id;
                self.state = PlayerState::Playing;
            }
            MatchUpdate::Snapshot => self.schedule_move(now),
            MatchUpdate::Events(events) => {
                let turn_began = events.iter().any(|e| {
                    matches!(e, shared_sim::rules::MatchEvent::TurnStarted { seat, .. }
                        if Some(*seat) == self.seat)
                });
                if turn_began {
                    self.last_rejected = false;
                    self.schedule_move(now);
                }
            }
            MatchUpdate::ActionResult { seq, error: None } => {
                if self.acked(seq, now) {
                    self.stats.accepted += 1;
                    self.schedule_move(now);
                }
                self.last_rejected = false;
            }
            MatchUpdate::ActionResult {
                seq,
                error: Some(reason),
            } => {
                tracing::debug!(user = self.user_id, ?reason, "action rejected");
                if self.acked(seq, now) {
                    self.stats.rejected += 1;
                    self.schedule_move(now);
                }
                self.last_rejected = true;
            }
            MatchUpdate::Ended(result) => self.state = PlayerState::Finished(result),
            MatchUpdate::OpponentLeft { .. } | MatchUpdate::OpponentReturned => {}
            MatchUpdate::Error { code, message } => {
                self.stats.server_errors += 1;
                tracing::debug!(user = self.user_id, ?code, message, "server error");
                if matches!(
                    code,
                    ErrorCode::BadToken | ErrorCode::UnknownMatch | ErrorCode::TooManyErrors
                ) {
                    self.state = PlayerState::Failed(format!("refused: {code:?}: {message}"));
                }
            }
        }
    }

    /// Records the answer to a move; false if it was not one of ours in flight.
    fn acked(&mut self, seq: u32, now: Instant) -> bool {
        let Some(sent) = self.in_flight.remove(&seq) else {
            return false;
        };
        self.stats
            .ack_latencies_us
            .push(now.duration_since(sent).as_micros() as u64);
        true
    }
}

/// Totals over many players.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub players: usize,
    pub finished: usize,
    pub failed: usize,
    pub wins: usize,
    pub losses: usize,
    pub draws: usize,
    pub moves: u64,
    pub rejected: u64,
    pub reconnects: u64,
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    pub failures: Vec<String>,
}

impl Summary {
    pub fn of(players: &[MatchPlayer]) -> Self {
        Self::of_refs(&players.iter().collect::<Vec<_>>())
    }

    pub fn of_refs(players: &[&MatchPlayer]) -> Self {
        let mut s = Summary {
            players: players.len(),
            ..Default::default()
        };
        let mut lat = Vec::new();
        for p in players {
            s.moves += p.stats.moves_sent;
            s.rejected += p.stats.rejected;
            s.reconnects += p.stats.reconnects;
            lat.extend_from_slice(&p.stats.ack_latencies_us);
            match &p.state {
                PlayerState::Finished(r) => {
                    s.finished += 1;
                    match r.winner {
                        None => s.draws += 1,
                        Some(w) if Some(w) == p.seat => s.wins += 1,
                        Some(_) => s.losses += 1,
                    }
                }
                PlayerState::Failed(why) => {
                    s.failed += 1;
                    s.failures.push(format!("user {}: {why}", p.user_id));
                }
                _ => {}
            }
        }
        lat.sort_unstable();
        s.ack_p50_us = percentile(&lat, 0.50);
        s.ack_p99_us = percentile(&lat, 0.99);
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "players {} finished {} failed {} | wins {} losses {} draws {} | moves {} rejected {} reconnects {} | ack p50 {:.2} ms p99 {:.2} ms",
            self.players,
            self.finished,
            self.failed,
            self.wins,
            self.losses,
            self.draws,
            self.moves,
            self.rejected,
            self.reconnects,
            self.ack_p50_us as f64 / 1000.0,
            self.ack_p99_us as f64 / 1000.0
        )
    }
}

pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Polls every player until all are done or `deadline` passes: the driver that runs one or
/// thousands of players from one thread.
pub fn run_until_done(
    players: &mut [MatchPlayer],
    tokens: &dyn TokenSource,
    deadline: Duration,
    poll_every: Duration,
) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        let mut all_done = true;
        for p in players.iter_mut() {
            p.poll(tokens);
            all_done &= p.is_done();
        }
        if all_done {
            return;
        }
        std::thread::sleep(poll_every);
    }
    for p in players.iter_mut() {
        if !p.is_done() {
            p.state = PlayerState::Failed("timed out before the match ended".into());
        }
    }
}
