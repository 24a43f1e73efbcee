//! What a match tells its players: events, the creatures they show, and the result.

use serde::{Deserialize, Serialize};

use super::{CreatureId, Seat, Target};
use crate::data::Keyword;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    HeroDied,
    Concede,
    /// Disconnected past the grace period.
    Forfeit,
    TurnLimit,
    Aborted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchResult {
    /// `None` is a draw (or an aborted match).
    pub winner: Option<Seat>,
    pub reason: EndReason,
}

/// A creature as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatureView {
    pub id: CreatureId,
    pub card: String,
    pub attack: u8,
    pub health: i16,
    pub max_health: u8,
    pub keywords: Vec<Keyword>,
    pub can_attack: bool,
    pub shield: bool,
}

/// What happened, in order. Servers send these to both players; [`MatchEvent::redacted_for`]
/// hides the opponent's drawn cards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchEvent {
    TurnStarted {
        seat: Seat,
        turn: u32,
        max_mana: u8,
        seconds: u32,
    },
    /// `card` is `None` when sent to the other player.
    CardDrawn {
        seat: Seat,
        card: Option<String>,
    },
    /// Drawn with a full hand: the card is destroyed, and both players see which.
    CardBurned {
        seat: Seat,
        card: String,
    },
    /// Drew from an empty deck; a `Damaged` event on the hero follows.
    Fatigue {
        seat: Seat,
        damage: u8,
    },
    CardPlayed {
        seat: Seat,
        card: String,
        mana_left: u8,
        target: Option<Target>,
    },
    CreatureSummoned {
        seat: Seat,
        creature: CreatureView,
    },
    Attacked {
        attacker: CreatureId,
        target: Target,
    },
    /// `remaining` is the hero's life or the creature's health afterwards.
    Damaged {
        target: Target,
        amount: u8,
        remaining: i16,
    },
    Healed {
        target: Target,
        amount: u8,
        remaining: i16,
    },
    ShieldBroken {
        creature: CreatureId,
    },
    CreatureDied {
        creature: CreatureId,
    },
    TurnEnded {
        seat: Seat,
        timed_out: bool,
    },
    MatchEnded {
        result: MatchResult,
    },
}

impl MatchEvent {
    /// The event as `viewer` may see it.
    pub fn redacted_for(&self, viewer: Seat) -> MatchEvent {
        match self {
            MatchEvent::CardDrawn { seat, .. } if *seat != viewer => MatchEvent::CardDrawn {
                seat: *seat,
                card: None,
            },
            other => other.clone(),
        }
    }
}
