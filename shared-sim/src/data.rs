//! Game data that designers edit: cards, items, crops, recipes, starter decks and match rules,
//! loaded from RON files and validated into a [`GameData`] the rules run against.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The files a data folder holds; each is required.
pub const RULES_FILE: &str = "rules.ron";
pub const CARDS_FILE: &str = "cards.ron";
pub const ITEMS_FILE: &str = "items.ron";
pub const CROPS_FILE: &str = "crops.ron";
pub const RECIPES_FILE: &str = "recipes.ron";
pub const DECKS_FILE: &str = "decks.ron";

/// Upper bounds that keep every number the rules use small enough for `u8`/`i16` arithmetic.
const MAX_COST: i32 = 10;
const MAX_STAT: i32 = 99;
const MAX_EFFECT_AMOUNT: i32 = 30;
const MAX_DRAW: i32 = 5;

mod defs;
mod errors;

pub use defs::*;
use errors::Collector;
pub use errors::{DataError, DataErrors};

// ---------------------------------------------------------------------------------------------
// The validated, compiled data the rules use.
// ---------------------------------------------------------------------------------------------

/// Index of a card in [`GameData::cards`]; stable for the life of one `GameData`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardIdx(pub u16);

#[derive(Clone, Debug, PartialEq)]
pub enum CardKind {
    Creature {
        attack: u8,
        health: u8,
        keywords: Vec<Keyword>,
    },
    Spell {
        target: SpellTarget,
        effects: Vec<SpellEffect>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub id: String,
    pub name: String,
    pub cost: u8,
    pub kind: CardKind,
    pub text: String,
}

/// Match rules in the units the simulation uses.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchRules {
    pub starting_life: i16,
    pub max_mana: u8,
    pub deck_size: usize,
    pub max_copies: usize,
    pub opening_hand: [usize; 2],
    pub hand_limit: usize,
    pub board_limit: usize,
    pub turn_seconds: u32,
    pub max_turns: u32,
    pub farm_plots: usize,
    pub deck_slots: usize,
    pub starter_items: Vec<(String, u32)>,
}

/// The game data a server runs with now: new matches, farms and requests take [`get`]; a
/// reload swaps it with [`set`] while what started with the old data keeps its `Arc`.
///
/// [`get`]: DataHandle::get
/// [`set`]: DataHandle::set
#[derive(Clone, Debug)]
pub struct DataHandle(std::sync::Arc<std::sync::RwLock<std::sync::Arc<GameData>>>);

impl DataHandle {
    pub fn new(data: GameData) -> DataHandle {
        Self::from_arc(std::sync::Arc::new(data))
    }

    pub fn from_arc(data: std::sync::Arc<GameData>) -> DataHandle {
        DataHandle(std::sync::Arc::new(std::sync::RwLock::new(data)))
    }

    pub fn get(&self) -> std::sync::Arc<GameData> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, data: std::sync::Arc<GameData>) {
        match self.0.write() {
            Ok(mut g) => *g = data,
            Err(poisoned) => *poisoned.into_inner() = data,
        }
    }
}

/// The content version of the data files in `dir` (the [`GameData::version`] they would load
/// as), without validating them.
pub fn content_version(dir: &Path) -> std::io::Result<u64> {
    let mut texts = Vec::with_capacity(6);
    for name in [
        RULES_FILE,
        CARDS_FILE,
        ITEMS_FILE,
        CROPS_FILE,
        RECIPES_FILE,
        DECKS_FILE,
    ] {
        texts.push(std::fs::read_to_string(dir.join(name))?);
    }
    Ok(fnv1a(texts.iter().flat_map(|s| s.bytes().chain([0u8]))))
}

/// All game data, validated. Shared read-only (`Arc<GameData>`) by every match that started
/// with it, so a reload never changes the rules under a running match.
#[derive(Clone, Debug, PartialEq)]
pub struct GameData {
    pub rules: MatchRules,
    pub cards: Vec<Card>,
    pub card_index: HashMap<String, CardIdx>,
    pub items: Vec<ItemDef>,
    pub crops: Vec<CropDef>,
    pub recipes: Vec<RecipeDef>,
    pub starter_decks: Vec<DeckDef>,
    /// A content hash of the source files: equal data, equal version.
    pub version: u64,
}

impl GameData {
    /// Loads and validates the six data files in `dir`, collecting every error.
    ///
    /// Every problem is reported as a [`DataError`] naming the file, the entry and the field, and
    /// all problems in a folder are collected at once so a designer fixes them in one pass.
    pub fn load_dir(dir: &Path) -> Result<GameData, DataErrors> {
        let read = |name: &str| -> Result<(PathBuf, String), DataError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.clone(), text))
                .map_err(|e| DataError {
                    file: path,
                    entry: None,
                    field: None,
                    message: format!("cannot read file: {e}"),
                })
        };
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        for name in [
            RULES_FILE,
            CARDS_FILE,
            ITEMS_FILE,
            CROPS_FILE,
            RECIPES_FILE,
            DECKS_FILE,
        ] {
            match read(name) {
                Ok(src) => sources.push(src),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(DataErrors(errors));
        }
        let src = |i: usize| (sources[i].0.as_path(), sources[i].1.as_str());
        GameData::from_sources(src(0), src(1), src(2), src(3), src(4), src(5))
    }

    /// Validates data given as `(path, text)` pairs; the paths only name files in errors.
    pub fn from_sources(
        rules: (&Path, &str),
        cards: (&Path, &str),
        items: (&Path, &str),
        crops: (&Path, &str),
        recipes: (&Path, &str),
        decks: (&Path, &str),
    ) -> Result<GameData, DataErrors> {
        let mut errors = Vec::new();
        let rules_def: Option<RulesDef> = parse(rules.0, rules.1, &mut errors);
        let card_defs: Option<Vec<CardDef>> = parse(cards.0, cards.1, &mut errors);
        let item_defs: Option<Vec<ItemDef>> = parse(items.0, items.1, &mut errors);
        let crop_defs: Option<Vec<CropDef>> = parse(crops.0, crops.1, &mut errors);
        let recipe_defs: Option<Vec<RecipeDef>> = parse(recipes.0, recipes.1, &mut errors);
        let deck_defs: Option<Vec<DeckDef>> = parse(decks.0, decks.1, &mut errors);
        let (
            Some(rules_def),
            Some(card_defs),
            Some(item_defs),
            Some(crop_defs),
            Some(recipe_defs),
            Some(deck_defs),
        ) = (
            rules_def,
            card_defs,
            item_defs,
            crop_defs,
            recipe_defs,
            deck_defs,
        )
        else {
            return Err(DataErrors(errors));
        };

        let match_rules = validate_rules(rules.0, &rules_def, &mut errors);
        let (cards_out, card_index) = validate_cards(cards.0, &card_defs, &mut errors);
        let item_ids = unique_ids(
            items.0,
            item_defs.iter().map(|i| i.id.as_str()),
            &mut errors,
        );
        validate_items(items.0, &item_defs, &mut errors);
        validate_crops(crops.0, &crop_defs, &item_ids, &mut errors);
        for (item, _) in &rules_def.starter_items {
            if !item_ids.contains(item) {
                Collector {
                    file: rules.0,
                    errors: &mut errors,
                }
                .push(
                    "rules",
                    Some("starter_items"),
                    format!("unknown item `{item}`"),
                );
            }
        }
        validate_recipes(recipes.0, &recipe_defs, &item_ids, &card_index, &mut errors);
        if let Some(rules) = &match_rules {
            validate_decks(decks.0, &deck_defs, &card_index, rules, &mut errors);
        }
        if !errors.is_empty() {
            return Err(DataErrors(errors));
        }
        let Some(match_rules) = match_rules else {
            return Err(DataErrors(errors));
        };
        let version = fnv1a(
            [rules.1, cards.1, items.1, crops.1, recipes.1, decks.1]
                .iter()
                .flat_map(|s| s.bytes().chain([0u8])),
        );
        Ok(GameData {
            rules: match_rules,
            cards: cards_out,
            card_index,
            items: item_defs,
            crops: crop_defs,
            recipes: recipe_defs,
            starter_decks: deck_defs,
            version,
        })
    }

    pub fn card(&self, idx: CardIdx) -> &Card {
        &self.cards[idx.0 as usize]
    }

    pub fn card_idx(&self, id: &str) -> Option<CardIdx> {
        self.card_index.get(id).copied()
    }

    pub fn starter_deck(&self, id: &str) -> Option<&DeckDef> {
        self.starter_decks.iter().find(|d| d.id == id)
    }

    /// The starter deck a player without a deck of their own plays (and is given): one of
    /// the starter decks, by user id.
    pub fn starter_deck_for(&self, user: u64) -> Option<&DeckDef> {
        let n = self.starter_decks.len() as u64;
        (n > 0).then(|| &self.starter_decks[(user % n) as usize])
    }

    pub fn item(&self, id: &str) -> Option<&ItemDef> {
        self.items.iter().find(|i| i.id == id)
    }

    pub fn recipe(&self, id: &str) -> Option<&RecipeDef> {
        self.recipes.iter().find(|r| r.id == id)
    }

    /// A deck the player builds: valid by the rules, and every copy owned (`owned` gives how
    /// many of a card the player's collection holds).
    pub fn check_owned_deck(
        &self,
        cards: &[String],
        owned: impl Fn(&str) -> u32,
    ) -> Result<(), DeckError> {
        self.resolve_deck(cards)?;
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for c in cards {
            *counts.entry(c.as_str()).or_default() += 1;
        }
        for (card, n) in counts {
            let have = owned(card);
            if have < n {
                return Err(DeckError::NotOwned {
                    card: card.to_string(),
                    need: n,
                    have,
                });
            }
        }
        Ok(())
    }

    /// Resolves and checks a deck (size, copies, known cards) against these rules.
    pub fn resolve_deck(&self, cards: &[String]) -> Result<Vec<CardIdx>, DeckError> {
        if cards.len() != self.rules.deck_size {
            return Err(DeckError::WrongSize {
                expected: self.rules.deck_size,
                got: cards.len(),
            });
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(cards.len());
        for id in cards {
            let idx = self
                .card_idx(id)
                .ok_or_else(|| DeckError::UnknownCard(id.clone()))?;
            let n = counts.entry(id.as_str()).or_default();
            *n += 1;
            if *n > self.rules.max_copies {
                return Err(DeckError::TooManyCopies {
                    card: id.clone(),
                    max: self.rules.max_copies,
                });
            }
            out.push(idx);
        }
        Ok(out)
    }
}

/// Why a deck cannot be played.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeckError {
    #[error("deck has {got} cards, the rules require {expected}")]
    WrongSize { expected: usize, got: usize },
    #[error("unknown card `{0}`")]
    UnknownCard(String),
    #[error("more than {max} copies of `{card}`")]
    TooManyCopies { card: String, max: usize },
    #[error("the deck has {need} of `{card}`, the collection {have}")]
    NotOwned { card: String, need: u32, have: u32 },
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Parses one file; on a syntax or shape error names the entry whose `id` precedes the error.
fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    errors: &mut Vec<DataError>,
) -> Option<T> {
    match ron::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e.span.start.line;
            let col = e.span.start.col;
            let entry = entry_before(text, line);
            let message = e.code.to_string();
            let field = field_in_message(&message);
            errors.push(DataError {
                file: path.to_path_buf(),
                entry,
                field,
                message: format!("{message} (line {line}, column {col})"),
            });
            None
        }
    }
}

/// The last `id: "..."` at or before `line` (1-based): the entry a parse error sits in.
fn entry_before(text: &str, line: usize) -> Option<String> {
    let mut found = None;
    for l in text.lines().take(line.max(1)) {
        if let Some(pos) = l.find("id:") {
            let rest = &l[pos + 3..];
            if let Some(start) = rest.find('"') {
                let rest = &rest[start + 1..];
                if let Some(end) = rest.find('"') {
                    found = Some(rest[..end].to_string());
                }
            }
        }
    }
    found
}

/// RON names the offending field between backticks ("missing field `cost`").
fn field_in_message(message: &str) -> Option<String> {
    if !(message.contains("field") || message.contains("Field")) {
        return None;
    }
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_string())
}

fn unique_ids<'a>(
    file: &Path,
    ids: impl Iterator<Item = &'a str>,
    errors: &mut Vec<DataError>,
) -> HashSet<String> {
    let mut c = Collector { file, errors };
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            c.push(id, Some("id"), "id is empty");
        } else if !seen.insert(id.to_string()) {
            c.push(id, Some("id"), "duplicate id");
        }
    }
    seen
}

fn validate_rules(file: &Path, r: &RulesDef, errors: &mut Vec<DataError>) -> Option<MatchRules> {
    let before = errors.len();
    let mut c = Collector { file, errors };
    c.range("rules", "starting_life", r.starting_life, 1, 999);
    c.range("rules", "max_mana", r.max_mana, 1, 20);
    c.range("rules", "deck_size", r.deck_size, 1, 100);
    c.range("rules", "max_copies", r.max_copies, 1, 100);
    c.range("rules", "opening_hand.0", r.opening_hand.0, 0, 10);
    c.range("rules", "opening_hand.1", r.opening_hand.1, 0, 10);
    c.range("rules", "hand_limit", r.hand_limit, 1, 20);
    c.range("rules", "board_limit", r.board_limit, 1, 12);
    c.range("rules", "turn_seconds", r.turn_seconds, 1, 600);
    c.range("rules", "max_turns", r.max_turns, 2, 1000);
    c.range("rules", "farm_plots", r.farm_plots, 1, 64);
    c.range("rules", "deck_slots", r.deck_slots, 1, 32);
    for (_, n) in &r.starter_items {
        c.range("rules", "starter_items", *n, 1, 9999);
    }
    if r.opening_hand.0.max(r.opening_hand.1) > r.hand_limit {
        c.push("rules", Some("opening_hand"), "larger than hand_limit");
    }
    if r.deck_size <= r.opening_hand.0.max(r.opening_hand.1) {
        c.push(
            "rules",
            Some("deck_size"),
            "must be larger than the opening hand",
        );
    }
    if errors.len() != before {
        return None;
    }
    Some(MatchRules {
        starting_life: r.starting_life as i16,
        max_mana: r.max_mana as u8,
        deck_size: r.deck_size as usize,
        max_copies: r.max_copies as usize,
        opening_hand: [r.opening_hand.0 as usize, r.opening_hand.1 as usize],
        hand_limit: r.hand_limit as usize,
        board_limit: r.board_limit as usize,
        turn_seconds: r.turn_seconds as u32,
        max_turns: r.max_turns as u32,
        farm_plots: r.farm_plots as usize,
        deck_slots: r.deck_slots as usize,
        starter_items: r
            .starter_items
            .iter()
            .map(|(id, n)| (id.clone(), *n as u32))
            .collect(),
    })
}

fn validate_cards(
    file: &Path,
    defs: &[CardDef],
    errors: &mut Vec<DataError>,
) -> (Vec<Card>, HashMap<String, CardIdx>) {
    let ids = unique_ids(file, defs.iter().map(|c| c.id.as_str()), errors);
    let _ = ids;
    let mut c = Collector { file, errors };
    let mut cards = Vec::with_capacity(defs.len());
    let mut index = HashMap::new();
    if defs.len() > usize::from(u16::MAX) {
        c.push("cards", None, "too many cards");
        return (cards, index);
    }
    for def in defs {
        let id = def.id.as_str();
        if def.name.trim().is_empty() {
            c.push(id, Some("name"), "name is empty");
        }
        c.range(id, "cost", def.cost, 0, MAX_COST);
        let kind = match &def.kind {
            CardKindDef::Creature {
                attack,
                health,
                keywords,
            } => {
                c.range(id, "attack", *attack, 0, MAX_STAT);
                c.range(id, "health", *health, 1, MAX_STAT);
                let mut seen = HashSet::new();
                for k in keywords {
                    if !seen.insert(*k) {
                        c.push(id, Some("keywords"), format!("{k:?} listed twice"));
                    }
                }
                CardKind::Creature {
                    attack: (*attack).clamp(0, MAX_STAT) as u8,
                    health: (*health).clamp(1, MAX_STAT) as u8,
                    keywords: keywords.clone(),
                }
            }
            CardKindDef::Spell { target, effects } => {
                if effects.is_empty() {
                    c.push(id, Some("effects"), "a spell needs at least one effect");
                }
                for e in effects {
                    match e {
                        SpellEffect::Damage(n) | SpellEffect::Heal(n) => {
                            c.range(id, "effects", *n, 1, MAX_EFFECT_AMOUNT);
                            if *target == SpellTarget::None {
                                c.push(
                                    id,
                                    Some("target"),
                                    "Damage and Heal need a target other than None",
                                );
                            }
                        }
                        SpellEffect::Draw(n) => c.range(id, "effects", *n, 1, MAX_DRAW),
                    }
                }
                CardKind::Spell {
                    target: *target,
                    effects: effects.clone(),
                }
            }
        };
        if !index.contains_key(id) {
            index.insert(id.to_string(), CardIdx(cards.len() as u16));
            cards.push(Card {
                id: def.id.clone(),
                name: def.name.clone(),
                cost: def.cost.clamp(0, MAX_COST) as u8,
                kind,
                text: def.text.clone(),
            });
        }
    }
    (cards, index)
}

fn validate_items(file: &Path, defs: &[ItemDef], errors: &mut Vec<DataError>) {
    let mut c = Collector { file, errors };
    for d in defs {
        if d.name.trim().is_empty() {
            c.push(&d.id, Some("name"), "name is empty");
        }
        c.range(&d.id, "max_stack", d.max_stack, 1, 9999);
    }
}

fn validate_crops(
    file: &Path,
    defs: &[CropDef],
    items: &HashSet<String>,
    errors: &mut Vec<DataError>,
) {
    unique_ids(file, defs.iter().map(|d| d.id.as_str()), errors);
    let mut c = Collector { file, errors };
    for d in defs {
        for (field, item) in [("seed", &d.seed), ("produce", &d.produce)] {
            if !items.contains(item) {
                c.push(&d.id, Some(field), format!("unknown item `{item}`"));
            }
        }
        c.range(&d.id, "stages", d.stages, 1, 20);
        c.range(&d.id, "ticks_per_stage", d.ticks_per_stage, 1, 1_000_000);
        c.range(&d.id, "water_per_stage", d.water_per_stage, 0, 10);
        c.range(&d.id, "wither_ticks", d.wither_ticks, 1, 10_000_000);
        c.range(&d.id, "yield_amount", d.yield_amount, 1, 99);
    }
}

fn validate_recipes(
    file: &Path,
    defs: &[RecipeDef],
    items: &HashSet<String>,
    cards: &HashMap<String, CardIdx>,
    errors: &mut Vec<DataError>,
) {
    unique_ids(file, defs.iter().map(|d| d.id.as_str()), errors);
    let mut c = Collector { file, errors };
    for d in defs {
        if d.inputs.is_empty() {
            c.push(&d.id, Some("inputs"), "a recipe needs at least one input");
        }
        for (item, n) in &d.inputs {
            if !items.contains(item) {
                c.push(&d.id, Some("inputs"), format!("unknown item `{item}`"));
            }
            c.range(&d.id, "inputs", *n, 1, 999);
        }
        match &d.output {
            RecipeOutput::Card(card) => {
                if !cards.contains_key(card) {
                    c.push(&d.id, Some("output"), format!("unknown card `{card}`"));
                }
            }
            RecipeOutput::Item(item, n) => {
                if !items.contains(item) {
                    c.push(&d.id, Some("output"), format!("unknown item `{item}`"));
                }
                c.range(&d.id, "output", *n, 1, 999);
            }
        }
    }
}

fn validate_decks(
    file: &Path,
    defs: &[DeckDef],
    cards: &HashMap<String, CardIdx>,
    rules: &MatchRules,
    errors: &mut Vec<DataError>,
) {
    unique_ids(file, defs.iter().map(|d| d.id.as_str()), errors);
    let mut c = Collector { file, errors };
    if defs.is_empty() {
        c.push("decks", None, "at least one starter deck is required");
    }
    for d in defs {
        if d.cards.len() != rules.deck_size {
            c.push(
                &d.id,
                Some("cards"),
                format!(
                    "deck has {} cards, rules.deck_size is {}",
                    d.cards.len(),
                    rules.deck_size
                ),
            );
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for card in &d.cards {
            if !cards.contains_key(card) {
                c.push(&d.id, Some("cards"), format!("unknown card `{card}`"));
            }
            *counts.entry(card.as_str()).or_default() += 1;
        }
        let mut over: Vec<_> = counts
            .into_iter()
            .filter(|(_, n)| *n > rules.max_copies)
            .collect();
        over.sort();
        for (card, n) in over {
            c.push(
                &d.id,
                Some("cards"),
                format!(
                    "{n} copies of `{card}`, rules.max_copies is {}",
                    rules.max_copies
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
