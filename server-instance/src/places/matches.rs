//! Match seats as places: admitting players to their seats, reconnect grace and forfeits. The
//! matches themselves run in `shared_sim`'s `MatchPlugin`.

use std::collections::HashMap;
use std::time::Duration;

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use shared_sim::plugin::{
    CardMatch, CommandKind, MatchClock, MatchCommand, MatchId, MatchInbox, MatchIndex, MatchOutbox,
    MatchOutput, UserId,
};
use shared_sim::protocol::{ClientMessage, ErrorCode, ServerMessage};
use shared_sim::rules::Seat;

use super::{Place, Refusal};

/// How long a new match waits for a player beyond the reconnect grace: a connect token's lifetime.
pub const NO_SHOW_EXTRA: Duration = Duration::from_secs(60);

/// A player not connected to their running match.
#[derive(Debug, Clone, Copy)]
struct Away {
    /// Real time (since start) their grace ends.
    until: Duration,
    /// False until the player first joins: their arrival is not a "return".
    joined_before: bool,
}

/// Players not connected to their running match: dropped ones until their grace period ends,
/// and ones who have not joined yet until the grace plus a token's lifetime.
#[derive(Resource, Debug)]
pub struct Absences {
    away: HashMap<(MatchId, UserId), Away>,
    /// Time a dropped player has to come back.
    pub grace: Duration,
}

impl Absences {
    pub fn new(grace: Duration) -> Self {
        Self {
            away: HashMap::new(),
            grace,
        }
    }

    /// A new match's players have until the grace plus a token's lifetime from `now` to show
    /// up; the ones who do not forfeit like players who drop.
    pub fn expect(&mut self, match_id: MatchId, players: &[UserId], now: Duration) {
        let until = now + self.grace + NO_SHOW_EXTRA;
        for user in players {
            let away = Away {
                until,
                joined_before: false,
            };
            self.away.insert((match_id, *user), away);
        }
    }

    /// The match is over: nobody is waited for any more.
    pub fn forget(&mut self, match_id: MatchId, players: &[UserId]) {
        for user in players {
            self.away.remove(&(match_id, *user));
        }
    }

    pub fn is_away(&self, match_id: MatchId, user: UserId) -> bool {
        self.away.contains_key(&(match_id, user))
    }
}

/// The match side of [`super::Places`].
///
/// Match seats as places: admitting a player to their seat (welcome and snapshot), a dropped
/// player's grace period and the opponent's notices, snapshot requests, and forfeits when the
/// grace runs out (with [`Absences`] and [`expire_absences`]).
#[derive(SystemParam)]
pub struct MatchPlaces<'w, 's> {
    time: Res<'w, Time<Real>>,
    clock: Res<'w, MatchClock>,
    index: Res<'w, MatchIndex>,
    matches: Query<'w, 's, &'static CardMatch>,
    inbox: ResMut<'w, MatchInbox>,
    outbox: ResMut<'w, MatchOutbox>,
    absences: ResMut<'w, Absences>,
}

impl MatchPlaces<'_, '_> {
    fn find(&self, match_id: MatchId) -> Option<&CardMatch> {
        let entity = self.index.0.get(&match_id)?;
        self.matches.get(*entity).ok()
    }

    fn send(&mut self, match_id: MatchId, user_id: UserId, message: ServerMessage) {
        self.outbox.0.push(MatchOutput::ToPlayer {
            match_id,
            user_id,
            message,
        });
    }

    /// `user` takes their seat in `match_id`: they get a welcome and a snapshot, and the
    /// opponent hears of a return.
    pub fn admit(&mut self, match_id: MatchId, user: UserId) -> Result<Place, Refusal> {
        let Some(m) = self.find(match_id) else {
            return Err(Refusal::new(
                ErrorCode::UnknownMatch,
                format!("match {match_id} is not hosted here"),
                "unknown_match",
            ));
        };
        let Some(seat) = m.seat_of(user) else {
            return Err(Refusal::new(
                ErrorCode::UnknownMatch,
                "you are not a player of this match",
                "not_a_player",
            ));
        };
        let snapshot = m.snapshot_for(seat, &self.clock);
        let opponent = m.players[seat.other().index()];
        let returning = self
            .absences
            .away
            .remove(&(match_id, user))
            .is_some_and(|a| a.joined_before);
        tracing::info!(user_id = user, match_id, ?seat, returning, "player joined");
        let welcome = ServerMessage::Welcome {
            user_id: user,
            match_id,
            seat,
        };
        self.send(match_id, user, welcome);
        self.send(match_id, user, ServerMessage::Snapshot(Box::new(snapshot)));
        if returning {
            self.send(match_id, opponent, ServerMessage::OpponentReturned);
        }
        Ok(Place::Match { match_id, seat })
    }

    /// `user` dropped from their seat: the grace period starts and the opponent hears of it.
    pub fn left(&mut self, match_id: MatchId, seat: Seat, user: UserId) {
        let Some(m) = self.find(match_id) else {
            return;
        };
        if m.state.is_over() || m.seat_of(user) != Some(seat) {
            return;
        }
        let opponent = m.players[seat.other().index()];
        let away = Away {
            until: self.time.elapsed() + self.absences.grace,
            joined_before: true,
        };
        self.absences.away.insert((match_id, user), away);
        let grace_seconds = self.absences.grace.as_secs() as u32;
        self.send(
            match_id,
            opponent,
            ServerMessage::OpponentLeft { grace_seconds },
        );
    }

    /// `user` may not play on (their session was revoked): they forfeit now.
    pub fn forfeit(&mut self, match_id: MatchId, seat: Seat, user: UserId) {
        let Some(m) = self.find(match_id) else {
            return;
        };
        if m.state.is_over() || m.seat_of(user) != Some(seat) {
            return;
        }
        self.absences.away.remove(&(match_id, user));
        tracing::info!(match_id, user_id = user, "session revoked: forfeit");
        self.inbox.0.push(MatchCommand {
            match_id,
            user_id: user,
            kind: CommandKind::Forfeit,
        });
    }

    /// A match message from the player in `seat`: an action for the match's inbox, or a
    /// snapshot request answered at once.
    pub fn deliver(&mut self, match_id: MatchId, seat: Seat, user: UserId, msg: ClientMessage) {
        match msg {
            ClientMessage::MatchAction { seq, action } => self.inbox.0.push(MatchCommand {
                match_id,
                user_id: user,
                kind: CommandKind::Act { seq, action },
            }),
            ClientMessage::RequestSnapshot => {
                let snapshot = self
                    .find(match_id)
                    .filter(|m| m.seat_of(user) == Some(seat))
                    .map(|m| m.snapshot_for(seat, &self.clock));
                if let Some(snapshot) = snapshot {
                    self.send(match_id, user, ServerMessage::Snapshot(Box::new(snapshot)));
                }
            }
            other => tracing::warn!(?other, "not a match message"),
        }
    }
}

/// Every simulation tick, after the arrivals and before the matches: players whose grace ran
/// out forfeit.
pub fn expire_absences(
    time: Res<Time<Real>>,
    mut absences: ResMut<Absences>,
    mut inbox: ResMut<MatchInbox>,
) {
    let now = time.elapsed();
    let expired: Vec<(MatchId, UserId)> = absences
        .away
        .iter()
        .filter(|(_, away)| away.until <= now)
        .map(|(k, _)| *k)
        .collect();
    for (match_id, user_id) in expired {
        absences.away.remove(&(match_id, user_id));
        tracing::info!(match_id, user_id, "reconnect grace over: forfeit");
        inbox.0.push(MatchCommand {
            match_id,
            user_id,
            kind: CommandKind::Forfeit,
        });
    }
}
