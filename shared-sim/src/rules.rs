//! The card match as plain data and pure functions: set-up from a seed, player actions, turn
//! timer, fatigue and the result. No IO and no Bevy; the plugin and the servers call into this.

use serde::{Deserialize, Serialize};

use crate::data::{CardIdx, CardKind, GameData, Keyword, SpellEffect, SpellTarget};
use crate::rng::MatchRng;

mod actions;
mod events;

pub use actions::*;
pub use events::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keywords(u8);

impl Keywords {
    fn bit(k: Keyword) -> u8 {
        match k {
            Keyword::Haste => 1,
            Keyword::Guard => 2,
            Keyword::Lifesteal => 4,
            Keyword::Shield => 8,
        }
    }

    pub fn from_list(list: &[Keyword]) -> Self {
        Keywords(list.iter().fold(0, |acc, k| acc | Self::bit(*k)))
    }

    pub fn has(self, k: Keyword) -> bool {
        self.0 & Self::bit(k) != 0
    }

    pub fn to_list(self) -> Vec<Keyword> {
        [
            Keyword::Haste,
            Keyword::Guard,
            Keyword::Lifesteal,
            Keyword::Shield,
        ]
        .into_iter()
        .filter(|k| self.has(*k))
        .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creature {
    pub id: CreatureId,
    pub card: CardIdx,
    pub attack: u8,
    pub health: i16,
    pub max_health: u8,
    pub keywords: Keywords,
    pub can_attack: bool,
    pub shield: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerState {
    pub life: i16,
    pub max_mana: u8,
    pub mana: u8,
    pub deck: Vec<CardIdx>,
    pub hand: Vec<CardIdx>,
    pub board: Vec<Creature>,
    pub fatigue: u8,
}

/// The state of one card match.
///
/// Every action is checked completely before anything changes, so an illegal action is a typed
/// [`ActionError`] and leaves the state exactly as it was. Everything random comes from the
/// match's own [`MatchRng`], so [`replay`] of the seed and the input log rebuilds the identical
/// state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchState {
    rng: MatchRng,
    pub players: [PlayerState; 2],
    pub active: Seat,
    /// Turns started so far (1 on the first player's first turn).
    pub turn: u32,
    /// The tick at which the active player's turn ends by itself.
    pub turn_deadline: u64,
    pub ticks_per_turn: u64,
    /// A hero heals up to its starting life.
    pub max_life: i16,
    next_creature_id: CreatureId,
    pub result: Option<MatchResult>,
}

/// How a match is set up; with the input log this is all a replay needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchSetup {
    pub seed: u64,
    pub decks: [Vec<CardIdx>; 2],
    pub ticks_per_turn: u64,
    pub start_tick: u64,
}

impl MatchState {
    /// Shuffles both decks with the seed, deals opening hands and starts the first player's turn.
    /// Decks must already be resolved against `data` (see [`GameData::resolve_deck`]).
    pub fn new(data: &GameData, setup: &MatchSetup) -> MatchState {
        let mut rng = MatchRng::new(setup.seed);
        let mut players = setup.decks.clone().map(|mut deck| {
            rng.shuffle(&mut deck);
            PlayerState {
                life: data.rules.starting_life,
                max_mana: 0,
                mana: 0,
                deck,
                hand: Vec::new(),
                board: Vec::new(),
                fatigue: 0,
            }
        });
        for seat in Seat::BOTH {
            let p = &mut players[seat.index()];
            for _ in 0..data.rules.opening_hand[seat.index()] {
                if let Some(card) = p.deck.pop() {
                    p.hand.push(card);
                }
            }
        }
        let mut state = MatchState {
            rng,
            players,
            active: Seat::First,
            turn: 0,
            turn_deadline: 0,
            ticks_per_turn: setup.ticks_per_turn.max(1),
            max_life: data.rules.starting_life,
            next_creature_id: 1,
            result: None,
        };
        let mut events = Vec::new();
        state.start_turn(data, Seat::First, setup.start_tick, &mut events);
        state
    }

    pub fn player(&self, seat: Seat) -> &PlayerState {
        &self.players[seat.index()]
    }

    pub fn is_over(&self) -> bool {
        self.result.is_some()
    }

    /// True when the active player's time is up at `tick`.
    pub fn turn_expired(&self, tick: u64) -> bool {
        !self.is_over() && tick >= self.turn_deadline
    }

    /// Applies one input at `tick`, appending what happened to `events`. On `Err` nothing changed
    /// and nothing was appended.
    pub fn apply(
        &mut self,
        data: &GameData,
        tick: u64,
        input: &Input,
        events: &mut Vec<MatchEvent>,
    ) -> Result<(), ActionError> {
        if let Input::Act(seat, action) = input {
            self.validate(data, *seat, action)?;
        }
        self.apply_validated(data, tick, input, events)
    }

    /// [`Self::apply`] for an input the caller has just checked with [`Self::validate`] against
    /// this very state (the tick validates every input once, and re-validates only those that
    /// follow another input of the same match).
    pub fn apply_validated(
        &mut self,
        data: &GameData,
        tick: u64,
        input: &Input,
        events: &mut Vec<MatchEvent>,
    ) -> Result<(), ActionError> {
        if self.is_over() {
            return Err(ActionError::MatchOver);
        }
        match input {
            Input::Act(seat, action) => {
                debug_assert_eq!(self.validate(data, *seat, action), Ok(()));
                self.act(data, tick, *seat, action, events)
            }
            Input::TurnTimeout => {
                self.end_turn(data, tick, true, events);
                Ok(())
            }
            Input::Forfeit(seat) => {
                self.finish(Some(seat.other()), EndReason::Forfeit, events);
                Ok(())
            }
            Input::Abort => {
                self.finish(None, EndReason::Aborted, events);
                Ok(())
            }
        }
    }

    /// Checks an action without changing anything.
    pub fn validate(
        &self,
        data: &GameData,
        seat: Seat,
        action: &Action,
    ) -> Result<(), ActionError> {
        if self.is_over() {
            return Err(ActionError::MatchOver);
        }
        if matches!(action, Action::Concede) {
            return Ok(());
        }
        if seat != self.active {
            return Err(ActionError::NotYourTurn);
        }
        let me = self.player(seat);
        match action {
            Action::PlayCard { card, target } => {
                let pos = self.hand_position(data, seat, card)?;
                let card = data.card(me.hand[pos]);
                if me.mana < card.cost {
                    return Err(ActionError::NotEnoughMana {
                        have: me.mana,
                        need: card.cost,
                    });
                }
                match &card.kind {
                    CardKind::Creature { .. } => {
                        if target.is_some() {
                            return Err(ActionError::TargetNotAllowed);
                        }
                        if me.board.len() >= data.rules.board_limit {
                            return Err(ActionError::BoardFull);
                        }
                    }
                    CardKind::Spell {
                        target: rule,
                        effects: _,
                    } => self.check_spell_target(seat, *rule, *target)?,
                }
                Ok(())
            }
            Action::Attack { attacker, target } => {
                let a = me
                    .board
                    .iter()
                    .find(|c| c.id == *attacker)
                    .ok_or(ActionError::UnknownCreature)?;
                if !a.can_attack || a.attack == 0 {
                    return Err(ActionError::CreatureCannotAttack);
                }
                let enemy = self.player(seat.other());
                let target_guard = match target {
                    Target::Hero(s) if *s == seat.other() => false,
                    Target::Hero(_) => return Err(ActionError::InvalidTarget),
                    Target::Creature(id) => enemy
                        .board
                        .iter()
                        .find(|c| c.id == *id)
                        .ok_or(ActionError::InvalidTarget)?
                        .keywords
                        .has(Keyword::Guard),
                };
                let enemy_has_guard = enemy.board.iter().any(|c| c.keywords.has(Keyword::Guard));
                if enemy_has_guard && !target_guard {
                    return Err(ActionError::MustAttackGuard);
                }
                Ok(())
            }
            Action::EndTurn | Action::Concede => Ok(()),
        }
    }

    fn hand_position(&self, data: &GameData, seat: Seat, card: &str) -> Result<usize, ActionError> {
        let idx = data.card_idx(card).ok_or(ActionError::CardNotInHand)?;
        self.player(seat)
            .hand
            .iter()
            .position(|c| *c == idx)
            .ok_or(ActionError::CardNotInHand)
    }

    fn creature_mut(&mut self, id: CreatureId) -> Option<&mut Creature> {
        self.players
            .iter_mut()
            .flat_map(|p| p.board.iter_mut())
            .find(|c| c.id == id)
    }

    fn creature_owner(&self, id: CreatureId) -> Option<Seat> {
        Seat::BOTH
            .into_iter()
            .find(|s| self.player(*s).board.iter().any(|c| c.id == id))
    }

    fn check_spell_target(
        &self,
        seat: Seat,
        rule: SpellTarget,
        target: Option<Target>,
    ) -> Result<(), ActionError> {
        let Some(target) = target else {
            return if rule == SpellTarget::None {
                Ok(())
            } else {
                Err(ActionError::TargetRequired)
            };
        };
        // Whose side the target is on, if it exists at all.
        let side = match target {
            Target::Hero(s) => Some(s),
            Target::Creature(id) => self.creature_owner(id),
        };
        let Some(side) = side else {
            return Err(ActionError::InvalidTarget);
        };
        let allowed = match rule {
            SpellTarget::None => return Err(ActionError::TargetNotAllowed),
            SpellTarget::AnyCharacter => true,
            SpellTarget::AnyCreature => matches!(target, Target::Creature(_)),
            SpellTarget::EnemyCharacter => side != seat,
            SpellTarget::FriendlyCharacter => side == seat,
        };
        if allowed {
            Ok(())
        } else {
            Err(ActionError::InvalidTarget)
        }
    }

    fn act(
        &mut self,
        data: &GameData,
        tick: u64,
        seat: Seat,
        action: &Action,
        events: &mut Vec<MatchEvent>,
    ) -> Result<(), ActionError> {
        match action {
            Action::PlayCard { card, target } => {
                let pos = self.hand_position(data, seat, card)?;
                self.play_card(data, seat, pos, *target, events)
            }
            Action::Attack { attacker, target } => self.attack(seat, *attacker, *target, events),
            Action::EndTurn => self.end_turn(data, tick, false, events),
            Action::Concede => self.finish(Some(seat.other()), EndReason::Concede, events),
        }
        Ok(())
    }

    fn play_card(
        &mut self,
        data: &GameData,
        seat: Seat,
        pos: usize,
        target: Option<Target>,
        events: &mut Vec<MatchEvent>,
    ) {
        let idx = self.players[seat.index()].hand.remove(pos);
        let card = data.card(idx);
        let me = &mut self.players[seat.index()];
        me.mana -= card.cost;
        events.push(MatchEvent::CardPlayed {
            seat,
            card: card.id.clone(),
            mana_left: me.mana,
            target,
        });
        match &card.kind {
            CardKind::Creature {
                attack,
                health,
                keywords,
            } => {
                let keywords = Keywords::from_list(keywords);
                let creature = Creature {
                    id: self.next_creature_id,
                    card: idx,
                    attack: *attack,
                    health: i16::from(*health),
                    max_health: *health,
                    keywords,
                    can_attack: keywords.has(Keyword::Haste),
                    shield: keywords.has(Keyword::Shield),
                };
                self.next_creature_id += 1;
                events.push(MatchEvent::CreatureSummoned {
                    seat,
                    creature: creature_view(data, &creature),
                });
                self.players[seat.index()].board.push(creature);
            }
            CardKind::Spell { effects, .. } => {
                for effect in effects {
                    match (*effect, target) {
                        (SpellEffect::Damage(n), Some(t)) => {
                            self.damage(t, n.clamp(0, 255) as u8, None, events);
                        }
                        (SpellEffect::Heal(n), Some(t)) => {
                            self.heal(t, n.clamp(0, 255) as u8, events);
                        }
                        (SpellEffect::Draw(n), _) => {
                            for _ in 0..n {
                                self.draw(data, seat, events);
                            }
                        }
                        // Validation guarantees a target for Damage and Heal.
                        (SpellEffect::Damage(_) | SpellEffect::Heal(_), None) => {}
                    }
                }
            }
        }
        self.settle(events);
    }

    fn attack(
        &mut self,
        seat: Seat,
        attacker: CreatureId,
        target: Target,
        events: &mut Vec<MatchEvent>,
    ) {
        let Some(a) = self.players[seat.index()]
            .board
            .iter_mut()
            .find(|c| c.id == attacker)
        else {
            return;
        };
        a.can_attack = false;
        let power = a.attack;
        events.push(MatchEvent::Attacked { attacker, target });
        self.damage(target, power, Some(attacker), events);
        if let Target::Creature(defender) = target {
            let counter = self
                .players
                .iter()
                .flat_map(|p| p.board.iter())
                .find(|c| c.id == defender)
                .map(|c| c.attack)
                .unwrap_or(0);
            if counter > 0 {
                self.damage(Target::Creature(attacker), counter, Some(defender), events);
            }
        }
        self.settle(events);
    }

    /// Deals damage; a Shield absorbs the whole hit once; a Lifesteal source heals its owner.
    fn damage(
        &mut self,
        target: Target,
        amount: u8,
        source: Option<CreatureId>,
        events: &mut Vec<MatchEvent>,
    ) {
        if amount == 0 {
            return;
        }
        let dealt = match target {
            Target::Hero(s) => {
                let p = &mut self.players[s.index()];
                p.life -= i16::from(amount);
                events.push(MatchEvent::Damaged {
                    target,
                    amount,
                    remaining: p.life,
                });
                amount
            }
            Target::Creature(id) => {
                let Some(c) = self.creature_mut(id) else {
                    return;
                };
                if c.shield {
                    c.shield = false;
                    events.push(MatchEvent::ShieldBroken { creature: id });
                    0
                } else {
                    c.health -= i16::from(amount);
                    events.push(MatchEvent::Damaged {
                        target,
                        amount,
                        remaining: c.health,
                    });
                    amount
                }
            }
        };
        if let Some(src) = source
            && dealt > 0
            && let Some(owner) = self.creature_owner(src)
        {
            let lifesteal = self
                .player(owner)
                .board
                .iter()
                .any(|c| c.id == src && c.keywords.has(Keyword::Lifesteal));
            if lifesteal {
                self.heal_hero(owner, dealt, events);
            }
        }
    }

    fn heal(&mut self, target: Target, amount: u8, events: &mut Vec<MatchEvent>) {
        match target {
            Target::Hero(s) => self.heal_hero(s, amount, events),
            Target::Creature(id) => {
                if let Some(c) = self.creature_mut(id) {
                    let before = c.health;
                    c.health = (c.health + i16::from(amount)).min(i16::from(c.max_health));
                    let healed = (c.health - before).max(0) as u8;
                    if healed > 0 {
                        events.push(MatchEvent::Healed {
                            target,
                            amount: healed,
                            remaining: c.health,
                        });
                    }
                }
            }
        }
    }

    fn heal_hero(&mut self, seat: Seat, amount: u8, events: &mut Vec<MatchEvent>) {
        let max = self.max_life;
        let p = &mut self.players[seat.index()];
        let before = p.life;
        p.life = (p.life + i16::from(amount)).min(max);
        let healed = (p.life - before).max(0) as u8;
        if healed > 0 {
            events.push(MatchEvent::Healed {
                target: Target::Hero(seat),
                amount: healed,
                remaining: p.life,
            });
        }
    }

    fn draw(&mut self, data: &GameData, seat: Seat, events: &mut Vec<MatchEvent>) {
        let p = &mut self.players[seat.index()];
        match p.deck.pop() {
            None => {
                p.fatigue = p.fatigue.saturating_add(1);
                let dmg = p.fatigue;
                events.push(MatchEvent::Fatigue { seat, damage: dmg });
                self.damage(Target::Hero(seat), dmg, None, events);
            }
            Some(card) if p.hand.len() >= data.rules.hand_limit => {
                events.push(MatchEvent::CardBurned {
                    seat,
                    card: data.card(card).id.clone(),
                });
            }
            Some(card) => {
                p.hand.push(card);
                events.push(MatchEvent::CardDrawn {
                    seat,
                    card: Some(data.card(card).id.clone()),
                });
            }
        }
    }

    /// Removes dead creatures and ends the match if a hero fell.
    fn settle(&mut self, events: &mut Vec<MatchEvent>) {
        for p in &mut self.players {
            p.board.retain(|c| {
                if c.health <= 0 {
                    events.push(MatchEvent::CreatureDied { creature: c.id });
                    false
                } else {
                    true
                }
            });
        }
        if self.is_over() {
            return;
        }
        let dead = [self.players[0].life <= 0, self.players[1].life <= 0];
        let winner = match dead {
            [true, true] => Some(None),
            [true, false] => Some(Some(Seat::Second)),
            [false, true] => Some(Some(Seat::First)),
            [false, false] => None,
        };
        if let Some(winner) = winner {
            self.finish(winner, EndReason::HeroDied, events);
        }
    }

    fn end_turn(
        &mut self,
        data: &GameData,
        tick: u64,
        timed_out: bool,
        events: &mut Vec<MatchEvent>,
    ) {
        events.push(MatchEvent::TurnEnded {
            seat: self.active,
            timed_out,
        });
        let next = self.active.other();
        self.start_turn(data, next, tick, events);
    }

    fn start_turn(&mut self, data: &GameData, seat: Seat, tick: u64, events: &mut Vec<MatchEvent>) {
        if self.turn >= data.rules.max_turns {
            self.finish(None, EndReason::TurnLimit, events);
            return;
        }
        self.turn += 1;
        self.active = seat;
        self.turn_deadline = tick + self.ticks_per_turn;
        let p = &mut self.players[seat.index()];
        p.max_mana = (p.max_mana + 1).min(data.rules.max_mana);
        p.mana = p.max_mana;
        for c in &mut p.board {
            c.can_attack = true;
        }
        events.push(MatchEvent::TurnStarted {
            seat,
            turn: self.turn,
            max_mana: p.max_mana,
            seconds: data.rules.turn_seconds,
        });
        self.draw(data, seat, events);
        self.settle(events);
    }

    fn finish(&mut self, winner: Option<Seat>, reason: EndReason, events: &mut Vec<MatchEvent>) {
        if self.result.is_some() {
            return;
        }
        let result = MatchResult { winner, reason };
        self.result = Some(result);
        events.push(MatchEvent::MatchEnded { result });
    }
}

pub fn creature_view(data: &GameData, c: &Creature) -> CreatureView {
    CreatureView {
        id: c.id,
        card: data.card(c.card).id.clone(),
        attack: c.attack,
        health: c.health,
        max_health: c.max_health,
        keywords: c.keywords.to_list(),
        can_attack: c.can_attack,
        shield: c.shield,
    }
}

/// Rebuilds a match from its setup and input log. Inputs that were rejected when they happened
/// are rejected again and change nothing, so the log may hold them.
pub fn replay(data: &GameData, setup: &MatchSetup, log: &[InputRecord]) -> MatchState {
    let mut state = MatchState::new(data, setup);
    let mut events = Vec::new();
    for record in log {
        let _ = state.apply(data, record.tick, &record.input, &mut events);
        events.clear();
    }
    state
}
