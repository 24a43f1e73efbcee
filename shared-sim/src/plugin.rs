//! The Bevy side of the match rules: every match is an entity with a [`CardMatch`], and one
//! [`MatchPlugin`] runs them all in `FixedUpdate` as receive -> validate -> apply -> broadcast.

use std::sync::Arc;

use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DeckError, GameData};
use crate::protocol::{ErrorCode, ServerMessage};
use crate::rules::{
    Action, Input, InputRecord, MatchEvent, MatchResult, MatchSetup, MatchState, Seat,
};
use crate::view::MatchSnapshot;

pub use crate::{MatchId, UserId};

/// The ordered steps of one match tick.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchSystems {
    /// Route inbox commands to their matches.
    Receive,
    /// Check sender and rules; reject what is illegal.
    Validate,
    /// Apply legal inputs and turn timers, logging every input.
    Apply,
    /// Turn what happened into per-player messages in the outbox.
    Broadcast,
}

/// Runs every match in `FixedUpdate` at `tick_hz`, in the order of [`MatchSystems`].
///
/// The plugin knows nothing of sockets. A server pushes decoded client commands into
/// [`MatchInbox`] before `FixedUpdate` and drains [`MatchOutbox`] after it.
pub struct MatchPlugin {
    pub tick_hz: u32,
    /// Seconds an ended match stays addressable (late messages get `MatchOver`) before it is removed.
    pub linger_seconds: u32,
}

impl Default for MatchPlugin {
    fn default() -> Self {
        Self {
            tick_hz: 20,
            linger_seconds: 10,
        }
    }
}

impl Plugin for MatchPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(Time::<Fixed>::from_hz(f64::from(self.tick_hz.max(1))))
            .insert_resource(MatchClock {
                tick: 0,
                tick_hz: self.tick_hz.max(1),
                linger_ticks: u64::from(self.linger_seconds) * u64::from(self.tick_hz.max(1)),
            })
            .init_resource::<MatchIndex>()
            .init_resource::<EndedMatches>()
            .init_resource::<MatchInbox>()
            .init_resource::<MatchOutbox>()
            .configure_sets(
                FixedUpdate,
                (
                    MatchSystems::Receive,
                    MatchSystems::Validate,
                    MatchSystems::Apply,
                    MatchSystems::Broadcast,
                )
                    .chain(),
            )
            .add_systems(
                FixedUpdate,
                (
                    receive_commands.in_set(MatchSystems::Receive),
                    validate_commands.in_set(MatchSystems::Validate),
                    apply_inputs.in_set(MatchSystems::Apply),
                    (broadcast_outcomes, remove_finished)
                        .chain()
                        .in_set(MatchSystems::Broadcast),
                ),
            );
    }
}

/// The simulation's own clock: one tick per `FixedUpdate` run.
#[derive(Resource, Debug, Clone)]
pub struct MatchClock {
    pub tick: u64,
    pub tick_hz: u32,
    pub linger_ticks: u64,
}

#[derive(Resource, Default, Debug)]
pub struct MatchIndex(pub HashMap<MatchId, Entity>);

/// Matches that ended, oldest first: (tick it ended, entity, id).
#[derive(Resource, Default, Debug)]
pub struct EndedMatches(pub std::collections::VecDeque<(u64, Entity, MatchId)>);

/// A decoded, authenticated request from a player (or from the server about a player).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchCommand {
    pub match_id: MatchId,
    pub user_id: UserId,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    Act {
        seq: u32,
        action: Action,
    },
    /// The player left for longer than the grace period.
    Forfeit,
    /// The server is stopping this match.
    Abort,
}

#[derive(Resource, Default, Debug)]
pub struct MatchInbox(pub Vec<MatchCommand>);

/// Everything needed to audit a match: with the same game data, [`crate::rules::replay`] of
/// `setup` and `log` gives the same final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRecord {
    pub match_id: MatchId,
    pub players: [UserId; 2],
    pub data_version: u64,
    pub setup: MatchSetup,
    pub log: Vec<InputRecord>,
    pub result: MatchResult,
    pub turns: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutput {
    /// A message for one player about one match; a server delivers it only if that player's
    /// connection is bound to that match.
    ToPlayer {
        match_id: MatchId,
        user_id: UserId,
        message: ServerMessage,
    },
    Ended(Box<MatchRecord>),
}

#[derive(Resource, Default, Debug)]
pub struct MatchOutbox(pub Vec<MatchOutput>);

/// What a server needs to start a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchSpec {
    pub match_id: MatchId,
    pub players: [UserId; 2],
    /// Card ids, one deck per seat.
    pub decks: [Vec<String>; 2],
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateMatchError {
    #[error("match {0} already exists")]
    Exists(MatchId),
    #[error("both seats belong to the same user")]
    SamePlayer,
    #[error("user id 0 is not a user")]
    NoUser,
    #[error("deck of seat {seat}: {error}")]
    Deck { seat: usize, error: DeckError },
}

#[derive(Component, Debug)]
pub struct CardMatch {
    pub id: MatchId,
    pub players: [UserId; 2],
    pub data: Arc<GameData>,
    pub setup: MatchSetup,
    pub state: MatchState,
    pub log: Vec<InputRecord>,
    pending: Vec<(Seat, Option<u32>, Input)>,
    events: Vec<MatchEvent>,
    replies: Vec<(Seat, ServerMessage)>,
    ended_at: Option<u64>,
}

impl CardMatch {
    /// Resolves decks and deals the opening hands; the match's first turn starts at `tick`.
    pub fn new(
        data: Arc<GameData>,
        spec: &MatchSpec,
        tick: u64,
        tick_hz: u32,
    ) -> Result<Self, CreateMatchError> {
        if spec.players[0] == 0 || spec.players[1] == 0 {
            return Err(CreateMatchError::NoUser);
        }
        if spec.players[0] == spec.players[1] {
            return Err(CreateMatchError::SamePlayer);
        }
        let resolve = |seat: usize| {
            data.resolve_deck(&spec.decks[seat])
                .map_err(|error| CreateMatchError::Deck { seat, error })
        };
        let setup = MatchSetup {
            seed: spec.seed,
            decks: [resolve(0)?, resolve(1)?],
            ticks_per_turn: u64::from(data.rules.turn_seconds) * u64::from(tick_hz),
            start_tick: tick,
        };
        let state = MatchState::new(&data, &setup);
        Ok(Self {
            id: spec.match_id,
            players: spec.players,
            data,
            setup,
            state,
            log: Vec::new(),
            pending: Vec::new(),
            events: Vec::new(),
            replies: Vec::new(),
            ended_at: None,
        })
    }

    pub fn seat_of(&self, user: UserId) -> Option<Seat> {
        Seat::BOTH
            .into_iter()
            .find(|s| self.players[s.index()] == user)
    }

    pub fn snapshot_for(&self, seat: Seat, clock: &MatchClock) -> MatchSnapshot {
        MatchSnapshot::from_state(
            &self.data,
            &self.state,
            self.id,
            seat,
            clock.tick,
            clock.tick_hz,
        )
    }

    pub fn record(&self) -> Option<MatchRecord> {
        Some(MatchRecord {
            match_id: self.id,
            players: self.players,
            data_version: self.data.version,
            setup: self.setup.clone(),
            log: self.log.clone(),
            result: self.state.result?,
            turns: self.state.turn,
        })
    }
}

/// Spawns a match and indexes it. Use from an exclusive system or a command closure.
pub fn spawn_match(
    world: &mut World,
    data: Arc<GameData>,
    spec: &MatchSpec,
) -> Result<Entity, CreateMatchError> {
    if world
        .resource::<MatchIndex>()
        .0
        .contains_key(&spec.match_id)
    {
        return Err(CreateMatchError::Exists(spec.match_id));
    }
    let clock = world.resource::<MatchClock>().clone();
    let m = CardMatch::new(data, spec, clock.tick, clock.tick_hz)?;
    let entity = world.spawn(m).id();
    world
        .resource_mut::<MatchIndex>()
        .0
        .insert(spec.match_id, entity);
    Ok(entity)
}

fn receive_commands(
    mut clock: ResMut<MatchClock>,
    mut inbox: ResMut<MatchInbox>,
    index: Res<MatchIndex>,
    mut matches: Query<&mut CardMatch>,
    mut outbox: ResMut<MatchOutbox>,
) {
    clock.tick += 1;
    for cmd in inbox.0.drain(..) {
        let found = index
            .0
            .get(&cmd.match_id)
            .and_then(|e| matches.get_mut(*e).ok());
        let Some(mut m) = found else {
            reply_unknown(&mut outbox, &cmd);
            continue;
        };
        let Some(seat) = m.seat_of(cmd.user_id) else {
            reply_unknown(&mut outbox, &cmd);
            continue;
        };
        let entry = match cmd.kind {
            CommandKind::Act { seq, action } => (seat, Some(seq), Input::Act(seat, action)),
            CommandKind::Forfeit => (seat, None, Input::Forfeit(seat)),
            CommandKind::Abort => (seat, None, Input::Abort),
        };
        m.pending.push(entry);
    }
}

fn reply_unknown(outbox: &mut MatchOutbox, cmd: &MatchCommand) {
    if let CommandKind::Act { .. } = cmd.kind {
        outbox.0.push(MatchOutput::ToPlayer {
            match_id: cmd.match_id,
            user_id: cmd.user_id,
            message: ServerMessage::Error {
                code: ErrorCode::UnknownMatch,
                message: format!("you are not a player of match {}", cmd.match_id),
            },
        });
    }
}

fn validate_commands(mut matches: Query<&mut CardMatch>) {
    for mut m in &mut matches {
        if m.pending.is_empty() {
            continue;
        }
        let m = &mut *m;
        let (state, data) = (&m.state, &m.data);
        let replies = &mut m.replies;
        m.pending.retain(|(seat, seq, input)| match (input, seq) {
            (Input::Act(_, action), Some(seq)) => match state.validate(data, *seat, action) {
                Ok(()) => true,
                Err(reason) => {
                    replies.push((*seat, ServerMessage::ActionRejected { seq: *seq, reason }));
                    false
                }
            },
            _ => true,
        });
    }
}

fn apply_inputs(clock: Res<MatchClock>, mut matches: Query<&mut CardMatch>) {
    let tick = clock.tick;
    for mut m in &mut matches {
        let due = m.state.turn_expired(tick);
        if m.pending.is_empty() && !due {
            continue;
        }
        let m = &mut *m;
        for (i, (seat, seq, input)) in m.pending.drain(..).enumerate() {
            // The first input was validated against this state in `Validate`; later ones are
            // re-checked, since an earlier input this tick may have changed what is legal.
            let applied = if i == 0 {
                m.state
                    .apply_validated(&m.data, tick, &input, &mut m.events)
            } else {
                m.state.apply(&m.data, tick, &input, &mut m.events)
            };
            match applied {
                Ok(()) => {
                    m.log.push(InputRecord { tick, input });
                    if let Some(seq) = seq {
                        m.replies
                            .push((seat, ServerMessage::ActionAccepted { seq }));
                    }
                }
                Err(reason) => {
                    if let Some(seq) = seq {
                        m.replies
                            .push((seat, ServerMessage::ActionRejected { seq, reason }));
                    }
                }
            }
        }
        if m.state.turn_expired(tick) {
            let input = Input::TurnTimeout;
            if m.state.apply(&m.data, tick, &input, &mut m.events).is_ok() {
                m.log.push(InputRecord { tick, input });
            }
        }
    }
}

fn broadcast_outcomes(
    clock: Res<MatchClock>,
    mut matches: Query<(Entity, &mut CardMatch)>,
    mut outbox: ResMut<MatchOutbox>,
    mut ended: ResMut<EndedMatches>,
) {
    for (entity, mut m) in &mut matches {
        if m.replies.is_empty()
            && m.events.is_empty()
            && (m.ended_at.is_some() || !m.state.is_over())
        {
            continue;
        }
        let m = &mut *m;
        for (seat, message) in m.replies.drain(..) {
            outbox.0.push(MatchOutput::ToPlayer {
                match_id: m.id,
                user_id: m.players[seat.index()],
                message,
            });
        }
        if !m.events.is_empty() {
            // The first seat gets a redacted copy, the second the (redacted in place) original:
            // one copy per tick instead of two.
            let first: Vec<MatchEvent> = m
                .events
                .iter()
                .map(|e| e.redacted_for(Seat::First))
                .collect();
            let mut second = std::mem::take(&mut m.events);
            for e in &mut second {
                if let MatchEvent::CardDrawn {
                    seat: Seat::First,
                    card,
                } = e
                {
                    *card = None;
                }
            }
            for (seat, events) in [(Seat::First, first), (Seat::Second, second)] {
                outbox.0.push(MatchOutput::ToPlayer {
                    match_id: m.id,
                    user_id: m.players[seat.index()],
                    message: ServerMessage::Events(events),
                });
            }
        }
        if m.ended_at.is_none() && m.state.is_over() {
            m.ended_at = Some(clock.tick);
            ended.0.push_back((clock.tick, entity, m.id));
            if let Some(record) = m.record() {
                outbox.0.push(MatchOutput::Ended(Box::new(record)));
            }
        }
    }
}

fn remove_finished(
    mut commands: Commands,
    clock: Res<MatchClock>,
    mut index: ResMut<MatchIndex>,
    mut ended: ResMut<EndedMatches>,
) {
    // Ended matches queue up in the order they ended, so only the due ones are touched; a
    // sweep over every match would cost a spike on the tick that runs it.
    while let Some((at, _, _)) = ended.0.front()
        && clock.tick >= at + clock.linger_ticks
    {
        let Some((_, entity, id)) = ended.0.pop_front() else {
            break;
        };
        if index.0.get(&id) == Some(&entity) {
            index.0.remove(&id);
        }
        if let Ok(mut e) = commands.get_entity(entity) {
            e.despawn();
        }
    }
}
