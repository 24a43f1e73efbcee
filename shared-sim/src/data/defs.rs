//! What the RON files contain, as designers write it (before validation).

use serde::{Deserialize, Serialize};

/// Match and deck-building rules (`rules.ron`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesDef {
    pub starting_life: i32,
    pub max_mana: i32,
    pub deck_size: i32,
    pub max_copies: i32,
    /// Cards drawn before the first turn by the first and the second player.
    pub opening_hand: (i32, i32),
    pub hand_limit: i32,
    pub board_limit: i32,
    /// Seconds a player has for one turn before it ends by itself.
    pub turn_seconds: i32,
    /// After this many turns in total the match is a draw.
    pub max_turns: i32,
    /// Plots on every player's farm.
    #[serde(default = "default_farm_plots")]
    pub farm_plots: i32,
    /// Decks a player can save.
    #[serde(default = "default_deck_slots")]
    pub deck_slots: i32,
    /// Items every new player starts with (item id, amount), besides the cards of their
    /// starter deck.
    #[serde(default)]
    pub starter_items: Vec<(String, i32)>,
}

fn default_farm_plots() -> i32 {
    6
}

fn default_deck_slots() -> i32 {
    8
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Keyword {
    /// Can attack the turn it is played.
    Haste,
    /// Enemies must attack a Guard creature before anything else.
    Guard,
    /// Damage this creature deals heals its owner's hero by the same amount.
    Lifesteal,
    /// The first damage this creature would take is prevented.
    Shield,
}

/// What a spell may be aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpellTarget {
    /// No target; effects apply to the caster (draw).
    None,
    /// Any hero or creature.
    AnyCharacter,
    /// Any creature on either board.
    AnyCreature,
    /// The enemy hero or an enemy creature.
    EnemyCharacter,
    /// The caster's hero or one of the caster's creatures.
    FriendlyCharacter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpellEffect {
    Damage(i32),
    Heal(i32),
    Draw(i32),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CardKindDef {
    Creature {
        attack: i32,
        health: i32,
        #[serde(default)]
        keywords: Vec<Keyword>,
    },
    Spell {
        target: SpellTarget,
        effects: Vec<SpellEffect>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardDef {
    pub id: String,
    pub name: String,
    pub cost: i32,
    pub kind: CardKindDef,
    #[serde(default)]
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemCategory {
    Seed,
    Produce,
    Material,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemDef {
    pub id: String,
    pub name: String,
    pub category: ItemCategory,
    #[serde(default = "default_stack")]
    pub max_stack: i32,
}

fn default_stack() -> i32 {
    99
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropDef {
    pub id: String,
    /// The item planted.
    pub seed: String,
    /// The item harvested.
    pub produce: String,
    /// Growth stages before the crop is ripe.
    pub stages: i32,
    /// Farm ticks each stage takes.
    pub ticks_per_stage: i32,
    /// Waterings needed per stage; a stage without them does not advance.
    pub water_per_stage: i32,
    /// Ticks a ripe or thirsty crop survives unattended before it withers.
    pub wither_ticks: i32,
    /// Produce items a harvest yields.
    pub yield_amount: i32,
}

/// What a recipe makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecipeOutput {
    Card(String),
    Item(String, i32),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeDef {
    pub id: String,
    pub inputs: Vec<(String, i32)>,
    pub output: RecipeOutput,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeckDef {
    pub id: String,
    pub name: String,
    pub cards: Vec<String>,
}
