//! A simple legal playing policy over what a client can see: play what is affordable, attack
//! what must be attacked, then end the turn.

use shared_sim::GameData;
use shared_sim::data::{CardKind, Keyword, SpellEffect, SpellTarget};
use shared_sim::rules::{Action, Target};
use shared_sim::view::MatchSnapshot;

/// The next action for the player whose turn it is in `view`.
///
/// Deterministic for a given view. The headless bot plays with it, and
/// [`crate::Client::suggest_action`] offers it to game clients.
pub fn choose_action(data: &GameData, view: &MatchSnapshot) -> Action {
    let me = view.me();
    let enemy = view.opponent();
    let my_hero = Target::Hero(view.you);
    let enemy_hero = Target::Hero(view.you.other());
    for card_id in &me.hand {
        let Some(card) = data.card_idx(card_id).map(|i| data.card(i)) else {
            continue;
        };
        if card.cost > me.mana {
            continue;
        }
        match &card.kind {
            CardKind::Creature { .. } => {
                if me.board.len() < data.rules.board_limit {
                    return Action::PlayCard {
                        card: card_id.clone(),
                        target: None,
                    };
                }
            }
            CardKind::Spell { target, effects } => {
                let heals = effects.iter().any(|e| matches!(e, SpellEffect::Heal(_)));
                let chosen = match target {
                    SpellTarget::None => Some(None),
                    SpellTarget::AnyCharacter | SpellTarget::EnemyCharacter if !heals => {
                        Some(Some(enemy_hero))
                    }
                    SpellTarget::AnyCharacter | SpellTarget::FriendlyCharacter => {
                        Some(Some(my_hero))
                    }
                    SpellTarget::EnemyCharacter => Some(Some(enemy_hero)),
                    SpellTarget::AnyCreature => {
                        let side = if heals { &me.board } else { &enemy.board };
                        side.first().map(|c| Some(Target::Creature(c.id)))
                    }
                };
                if let Some(target) = chosen {
                    return Action::PlayCard {
                        card: card_id.clone(),
                        target,
                    };
                }
            }
        }
    }
    let guard = enemy
        .board
        .iter()
        .find(|c| c.keywords.contains(&Keyword::Guard));
    if let Some(attacker) = me.board.iter().find(|c| c.can_attack && c.attack > 0) {
        let target = guard.map(|g| Target::Creature(g.id)).unwrap_or(enemy_hero);
        return Action::Attack {
            attacker: attacker.id,
            target,
        };
    }
    Action::EndTurn
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_sim::rules::{Input, MatchSetup, MatchState, Seat};
    use std::path::Path;

    /// Two policy players always finish a match with no rejected action.
    #[test]
    fn policy_plays_legal_moves_to_the_end() {
        let data =
            GameData::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards"))
                .unwrap();
        for seed in 0..40 {
            let decks = [0, 1].map(|i| data.resolve_deck(&data.starter_decks[i].cards).unwrap());
            let setup = MatchSetup {
                seed,
                decks,
                ticks_per_turn: 600,
                start_tick: 0,
            };
            let mut state = MatchState::new(&data, &setup);
            let mut moves = 0;
            while state.result.is_none() {
                let seat = state.active;
                let view = MatchSnapshot::from_state(&data, &state, 1, seat, 0, 20);
                let action = choose_action(&data, &view);
                let mut ev = Vec::new();
                state
                    .apply(&data, moves, &Input::Act(seat, action.clone()), &mut ev)
                    .unwrap_or_else(|e| {
                        panic!("seed {seed}: policy chose illegal {action:?}: {e}")
                    });
                moves += 1;
                assert!(moves < 5000, "match does not end");
            }
            assert!(matches!(
                state.result.unwrap().winner,
                Some(Seat::First | Seat::Second) | None
            ));
        }
    }
}
