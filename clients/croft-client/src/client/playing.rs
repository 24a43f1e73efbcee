//! The current match: connecting with the token matchmaking sent, rejoining after a drop,
//! playing (actions, targets as scripts write them, suggestions) and reporting what happened.

use std::time::{Duration, Instant};

use shared_sim::protocol::LobbyClientMessage;
use shared_sim::rules::{Action, Seat, Target};
use shared_sim::view::MatchSnapshot;

use super::{Client, ClientEvent, MatchOutcome, MatchSession, MatchUpdate, Value};

/// How often the client asks the lobby again for a rejoin token, and how many times.
pub(super) const REJOIN_EVERY: Duration = Duration::from_secs(5);
pub(super) const REJOIN_ATTEMPTS: u32 = 6;

pub(super) struct Rejoin {
    pub(super) match_id: u64,
    pub(super) attempts: u32,
    pub(super) asked_at: Instant,
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

impl Client {
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
    pub(super) fn match_lost(&mut self, match_id: u64, reason: String, attempts: u32) {
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

    pub(super) fn ask_rejoin(&mut self, match_id: u64, attempts: u32) {
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

    pub(super) fn target(&mut self, text: &str) -> Option<Option<Target>> {
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
            Some(data) => super::policy::choose_action(data, view),
            None => Action::EndTurn,
        })
    }

    /// Plays [`Client::suggest_action`]'s move; `None` when there is none (not our turn).
    pub fn play_suggested(&mut self) -> Option<u32> {
        let action = self.suggest_action()?;
        self.play(action)
    }

    /// [`Client::suggest_action`] as a dictionary ([`super::value::action_value`]); `Nil` when none.
    pub fn suggestion_value(&self) -> Value {
        let you = self
            .game
            .as_ref()
            .and_then(|g| g.seat)
            .unwrap_or(Seat::First);
        self.suggest_action()
            .map_or(Value::Nil, |a| super::value::action_value(&a, you))
    }

    /// The match view as a dictionary ([`super::value::snapshot_value`]); `Nil` before the first.
    pub fn match_state_value(&self) -> Value {
        self.match_view()
            .map_or(Value::Nil, super::value::snapshot_value)
    }

    /// The friends list as a list of dictionaries ([`super::value::friend_value`]).
    pub fn friends_value(&self) -> Value {
        Value::List(
            self.friends
                .iter()
                .map(super::value::friend_value)
                .collect(),
        )
    }

    /// A card of the client's card data as a dictionary ([`super::value::card_value`]); `Nil` for an
    /// unknown id.
    pub fn card_value(&self, id: &str) -> Value {
        self.data
            .as_deref()
            .and_then(|d| d.card_idx(id).map(|i| super::value::card_value(d.card(i))))
            .unwrap_or(Value::Nil)
    }

    pub(super) fn match_found(&mut self, match_id: u64, token: &[u8]) {
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
        let connected = super::read_token(token)
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

    pub(super) fn poll_match(&mut self) {
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

    pub(super) fn state_event(&self) -> Option<ClientEvent> {
        self.game
            .as_ref()
            .and_then(|g| g.view.clone())
            .map(|v| ClientEvent::MatchState(Box::new(v)))
    }

    pub(super) fn match_update(&mut self, match_id: u64, seat: Option<Seat>, u: MatchUpdate) {
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
}
