//! What players do: seats, targets, actions, the inputs a match logs, and why an action is refused.

use serde::{Deserialize, Serialize};

/// One of the two players of a match. On the wire: 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Seat {
    First,
    Second,
}

impl Seat {
    pub const BOTH: [Seat; 2] = [Seat::First, Seat::Second];

    pub fn index(self) -> usize {
        match self {
            Seat::First => 0,
            Seat::Second => 1,
        }
    }

    pub fn other(self) -> Seat {
        match self {
            Seat::First => Seat::Second,
            Seat::Second => Seat::First,
        }
    }
}

/// Creature ids are unique within a match and never reused.
pub type CreatureId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Hero(Seat),
    Creature(CreatureId),
}

/// What a player asks to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Play the card with this id from the hand (the first copy if there are several).
    PlayCard {
        card: String,
        target: Option<Target>,
    },
    Attack {
        attacker: CreatureId,
        target: Target,
    },
    EndTurn,
    Concede,
}

/// Everything that can change a match, in the order it happened; the input log is a list of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    Act(Seat, Action),
    /// The active player's turn timer ran out.
    TurnTimeout,
    /// The player left and did not come back within the grace period.
    Forfeit(Seat),
    /// The server stopped the match (shutdown deadline, operator).
    Abort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub tick: u64,
    pub input: Input,
}

/// Why an action was refused. The state is unchanged whenever one of these is returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ActionError {
    #[error("the match is over")]
    MatchOver,
    #[error("it is not your turn")]
    NotYourTurn,
    #[error("that card is not in your hand")]
    CardNotInHand,
    #[error("not enough mana: have {have}, need {need}")]
    NotEnoughMana { have: u8, need: u8 },
    #[error("your board is full")]
    BoardFull,
    #[error("this card needs a target")]
    TargetRequired,
    #[error("this card takes no target")]
    TargetNotAllowed,
    #[error("that target is not allowed")]
    InvalidTarget,
    #[error("no such creature of yours")]
    UnknownCreature,
    #[error("that creature cannot attack now")]
    CreatureCannotAttack,
    #[error("a creature with Guard must be attacked first")]
    MustAttackGuard,
}
