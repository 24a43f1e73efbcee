//! A match as one player may see it: built by the server from the state, and kept current by a
//! client from the events it receives. Both paths must agree; a property test checks they do.

use serde::{Deserialize, Serialize};

use crate::data::GameData;
use crate::rules::{
    CreatureView, MatchEvent, MatchResult, MatchState, Seat, Target, creature_view,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerView {
    pub life: i16,
    pub max_mana: u8,
    pub mana: u8,
    pub deck_count: u16,
    /// Card ids in hand; empty for the opponent, whose hand is only counted.
    pub hand: Vec<String>,
    pub hand_count: u16,
    pub board: Vec<CreatureView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchSnapshot {
    pub match_id: u64,
    pub you: Seat,
    pub turn: u32,
    pub active: Seat,
    /// Seconds left in the active player's turn when the snapshot was taken.
    pub seconds_left: u32,
    /// Indexed by seat: `players[0]` is the first player.
    pub players: [PlayerView; 2],
    pub result: Option<MatchResult>,
}

impl MatchSnapshot {
    pub fn from_state(
        data: &GameData,
        state: &MatchState,
        match_id: u64,
        you: Seat,
        tick: u64,
        tick_hz: u32,
    ) -> Self {
        let view = |seat: Seat| {
            let p = state.player(seat);
            PlayerView {
                life: p.life,
                max_mana: p.max_mana,
                mana: p.mana,
                deck_count: p.deck.len() as u16,
                hand: if seat == you {
                    p.hand.iter().map(|c| data.card(*c).id.clone()).collect()
                } else {
                    Vec::new()
                },
                hand_count: p.hand.len() as u16,
                board: p.board.iter().map(|c| creature_view(data, c)).collect(),
            }
        };
        let ticks_left = state.turn_deadline.saturating_sub(tick);
        MatchSnapshot {
            match_id,
            you,
            turn: state.turn,
            active: state.active,
            seconds_left: ticks_left.div_ceil(u64::from(tick_hz.max(1))) as u32,
            players: [view(Seat::First), view(Seat::Second)],
            result: state.result,
        }
    }

    pub fn me(&self) -> &PlayerView {
        &self.players[self.you.index()]
    }

    pub fn opponent(&self) -> &PlayerView {
        &self.players[self.you.other().index()]
    }

    pub fn is_my_turn(&self) -> bool {
        self.result.is_none() && self.active == self.you
    }

    fn creature_mut(&mut self, id: u32) -> Option<&mut CreatureView> {
        self.players
            .iter_mut()
            .flat_map(|p| p.board.iter_mut())
            .find(|c| c.id == id)
    }

    fn set_remaining(&mut self, target: Target, remaining: i16) {
        match target {
            Target::Hero(s) => self.players[s.index()].life = remaining,
            Target::Creature(id) => {
                if let Some(c) = self.creature_mut(id) {
                    c.health = remaining;
                }
            }
        }
    }

    /// Applies one event received from the server.
    pub fn apply(&mut self, event: &MatchEvent) {
        match event {
            MatchEvent::TurnStarted {
                seat,
                turn,
                max_mana,
                seconds,
            } => {
                self.active = *seat;
                self.turn = *turn;
                self.seconds_left = *seconds;
                let p = &mut self.players[seat.index()];
                p.max_mana = *max_mana;
                p.mana = *max_mana;
                for c in &mut p.board {
                    c.can_attack = true;
                }
            }
            MatchEvent::CardDrawn { seat, card } => {
                let p = &mut self.players[seat.index()];
                p.deck_count = p.deck_count.saturating_sub(1);
                p.hand_count += 1;
                if let Some(card) = card {
                    p.hand.push(card.clone());
                }
            }
            MatchEvent::CardBurned { seat, .. } => {
                let p = &mut self.players[seat.index()];
                p.deck_count = p.deck_count.saturating_sub(1);
            }
            MatchEvent::Fatigue { .. } => {}
            MatchEvent::CardPlayed {
                seat,
                card,
                mana_left,
                ..
            } => {
                let p = &mut self.players[seat.index()];
                p.mana = *mana_left;
                p.hand_count = p.hand_count.saturating_sub(1);
                if let Some(pos) = p.hand.iter().position(|c| c == card) {
                    p.hand.remove(pos);
                }
            }
            MatchEvent::CreatureSummoned { seat, creature } => {
                self.players[seat.index()].board.push(creature.clone());
            }
            MatchEvent::Attacked { attacker, .. } => {
                if let Some(c) = self.creature_mut(*attacker) {
                    c.can_attack = false;
                }
            }
            MatchEvent::Damaged {
                target, remaining, ..
            }
            | MatchEvent::Healed {
                target, remaining, ..
            } => self.set_remaining(*target, *remaining),
            MatchEvent::ShieldBroken { creature } => {
                if let Some(c) = self.creature_mut(*creature) {
                    c.shield = false;
                }
            }
            MatchEvent::CreatureDied { creature } => {
                for p in &mut self.players {
                    p.board.retain(|c| c.id != *creature);
                }
            }
            MatchEvent::TurnEnded { .. } => {}
            MatchEvent::MatchEnded { result } => self.result = Some(*result),
        }
    }
}
