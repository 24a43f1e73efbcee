//! The match rules against the shipped card data: unit cases, a property test over random
//! action sequences, and replay determinism.

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use shared_sim::data::{CardIdx, CardKind, GameData, Keyword};
use shared_sim::rules::{
    Action, ActionError, Creature, EndReason, Input, InputRecord, Keywords, MatchEvent, MatchSetup,
    MatchState, Seat, Target, replay,
};
use shared_sim::view::MatchSnapshot;

fn data() -> &'static GameData {
    static DATA: OnceLock<GameData> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
        GameData::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn setup(seed: u64) -> MatchSetup {
    let d = data();
    let deck = |i: usize| d.resolve_deck(&d.starter_decks[i].cards).unwrap();
    MatchSetup {
        seed,
        decks: [deck(0), deck(1)],
        ticks_per_turn: 600,
        start_tick: 0,
    }
}

fn card(id: &str) -> CardIdx {
    data()
        .card_idx(id)
        .unwrap_or_else(|| panic!("no card {id}"))
}

fn first_card_where(pred: impl Fn(&CardKind, u8) -> bool) -> String {
    data()
        .cards
        .iter()
        .find(|c| pred(&c.kind, c.cost))
        .map(|c| c.id.clone())
        .expect("a matching card")
}

fn creature(id: u32, attack: u8, health: i16, keywords: &[Keyword]) -> Creature {
    let k = Keywords::from_list(keywords);
    Creature {
        id,
        card: card("ember_fox"),
        attack,
        health,
        max_health: health.max(1) as u8,
        keywords: k,
        can_attack: true,
        shield: k.has(Keyword::Shield),
    }
}

fn apply(s: &mut MatchState, seat: Seat, action: Action) -> Result<Vec<MatchEvent>, ActionError> {
    let mut events = Vec::new();
    s.apply(data(), 1, &Input::Act(seat, action), &mut events)?;
    Ok(events)
}

fn rejected_unchanged(s: &mut MatchState, seat: Seat, action: Action) -> ActionError {
    let before = s.clone();
    let err = apply(s, seat, action).expect_err("action should be rejected");
    assert_eq!(*s, before, "a rejected action changed the state");
    err
}

#[test]
fn opening_hands_and_first_turn() {
    let s = MatchState::new(data(), &setup(1));
    let r = &data().rules;
    assert_eq!(s.player(Seat::First).hand.len(), r.opening_hand[0] + 1);
    assert_eq!(s.player(Seat::Second).hand.len(), r.opening_hand[1]);
    assert_eq!(s.player(Seat::First).mana, 1);
    assert_eq!(s.player(Seat::Second).mana, 0);
    assert_eq!(s.active, Seat::First);
    assert_eq!(s.turn, 1);
    assert_eq!(s.turn_deadline, 600);
    assert_eq!(
        s.player(Seat::First).deck.len() + s.player(Seat::First).hand.len(),
        r.deck_size
    );
}

#[test]
fn seeds_change_the_shuffle() {
    let a = MatchState::new(data(), &setup(1));
    let b = MatchState::new(data(), &setup(2));
    assert_ne!(a.player(Seat::First).deck, b.player(Seat::First).deck);
    assert_eq!(a, MatchState::new(data(), &setup(1)));
}

#[test]
fn out_of_turn_and_not_in_hand_and_mana_are_rejected() {
    let mut s = MatchState::new(data(), &setup(3));
    assert_eq!(
        rejected_unchanged(&mut s, Seat::Second, Action::EndTurn),
        ActionError::NotYourTurn
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: "no_such_card".into(),
                target: None
            }
        ),
        ActionError::CardNotInHand
    );
    let pricey = first_card_where(|k, cost| cost >= 5 && matches!(k, CardKind::Creature { .. }));
    s.players[0].hand.push(card(&pricey));
    assert!(matches!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: pricey,
                target: None
            }
        ),
        ActionError::NotEnoughMana { have: 1, .. }
    ));
    // A card the opponent holds is not in my hand either.
    let theirs = data().card(s.players[1].hand[0]).id.clone();
    s.players[0].hand.retain(|c| data().card(*c).id != theirs);
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: theirs,
                target: None
            }
        ),
        ActionError::CardNotInHand
    );
}

#[test]
fn creature_play_summoning_sickness_and_haste() {
    let mut s = MatchState::new(data(), &setup(4));
    s.players[0].hand = vec![card("ember_fox"), card("field_mouse")];
    s.players[0].mana = 2;
    let events = apply(
        &mut s,
        Seat::First,
        Action::PlayCard {
            card: "field_mouse".into(),
            target: None,
        },
    )
    .unwrap();
    assert!(matches!(events[1], MatchEvent::CreatureSummoned { .. }));
    let mouse = s.players[0].board[0].id;
    assert_eq!(s.players[0].mana, 1);
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: mouse,
                target: Target::Hero(Seat::Second)
            }
        ),
        ActionError::CreatureCannotAttack
    );
    apply(
        &mut s,
        Seat::First,
        Action::PlayCard {
            card: "ember_fox".into(),
            target: None,
        },
    )
    .unwrap();
    let fox = s.players[0].board[1].id;
    let life = s.players[1].life;
    apply(
        &mut s,
        Seat::First,
        Action::Attack {
            attacker: fox,
            target: Target::Hero(Seat::Second),
        },
    )
    .unwrap();
    assert_eq!(s.players[1].life, life - 1);
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: fox,
                target: Target::Hero(Seat::Second)
            }
        ),
        ActionError::CreatureCannotAttack
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: 999,
                target: Target::Hero(Seat::Second)
            }
        ),
        ActionError::UnknownCreature
    );
}

#[test]
fn guard_shield_lifesteal_and_combat() {
    let mut s = MatchState::new(data(), &setup(5));
    s.players[0].board = vec![creature(100, 3, 3, &[Keyword::Lifesteal])];
    s.players[0].life = 10;
    s.players[1].board = vec![
        creature(200, 1, 5, &[Keyword::Guard, Keyword::Shield]),
        creature(201, 2, 2, &[]),
    ];
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: 100,
                target: Target::Hero(Seat::Second)
            }
        ),
        ActionError::MustAttackGuard
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: 100,
                target: Target::Creature(201)
            }
        ),
        ActionError::MustAttackGuard
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::Attack {
                attacker: 100,
                target: Target::Hero(Seat::First)
            }
        ),
        ActionError::InvalidTarget
    );
    let events = apply(
        &mut s,
        Seat::First,
        Action::Attack {
            attacker: 100,
            target: Target::Creature(200),
        },
    )
    .unwrap();
    assert!(events.contains(&MatchEvent::ShieldBroken { creature: 200 }));
    // The shield took the hit: no lifesteal; the guard hits back for 1.
    assert_eq!(s.players[0].life, 10);
    assert_eq!(s.players[1].board[0].health, 5);
    assert_eq!(s.players[0].board[0].health, 2);
    s.players[0].board[0].can_attack = true;
    apply(
        &mut s,
        Seat::First,
        Action::Attack {
            attacker: 100,
            target: Target::Creature(200),
        },
    )
    .unwrap();
    assert_eq!(s.players[1].board[0].health, 2);
    assert_eq!(s.players[0].life, 13, "lifesteal heals by the damage dealt");
    assert_eq!(s.players[0].board[0].health, 1);
}

#[test]
fn spells_target_rules() {
    let mut s = MatchState::new(data(), &setup(6));
    let dmg = first_card_where(|k, _| {
        matches!(
            k,
            CardKind::Spell {
                target: shared_sim::data::SpellTarget::EnemyCharacter,
                ..
            }
        )
    });
    s.players[0].hand = vec![card(&dmg)];
    s.players[0].mana = 10;
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: dmg.clone(),
                target: None
            }
        ),
        ActionError::TargetRequired
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: dmg.clone(),
                target: Some(Target::Hero(Seat::First))
            }
        ),
        ActionError::InvalidTarget
    );
    assert_eq!(
        rejected_unchanged(
            &mut s,
            Seat::First,
            Action::PlayCard {
                card: dmg.clone(),
                target: Some(Target::Creature(77))
            }
        ),
        ActionError::InvalidTarget
    );
    let life = s.players[1].life;
    apply(
        &mut s,
        Seat::First,
        Action::PlayCard {
            card: dmg,
            target: Some(Target::Hero(Seat::Second)),
        },
    )
    .unwrap();
    assert!(s.players[1].life < life);
    assert!(s.players[0].hand.is_empty() || s.players[0].hand.len() <= data().rules.hand_limit);
}

#[test]
fn fatigue_grows_and_kills() {
    let mut s = MatchState::new(data(), &setup(7));
    s.players[0].deck.clear();
    s.players[1].deck.clear();
    s.players[0].life = 3;
    apply(&mut s, Seat::First, Action::EndTurn).unwrap(); // second draws: fatigue 1
    assert_eq!(s.players[1].life, data().rules.starting_life - 1);
    apply(&mut s, Seat::Second, Action::EndTurn).unwrap(); // first: fatigue 1 -> 2 life
    apply(&mut s, Seat::First, Action::EndTurn).unwrap(); // second: fatigue 2
    assert_eq!(s.players[1].life, data().rules.starting_life - 3);
    let events = apply(&mut s, Seat::Second, Action::EndTurn).unwrap(); // first: fatigue 2 -> 0 life
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MatchEvent::MatchEnded { .. }))
    );
    let result = s.result.expect("over");
    assert_eq!(result.winner, Some(Seat::Second));
    assert_eq!(result.reason, EndReason::HeroDied);
    assert_eq!(
        rejected_unchanged(&mut s, Seat::First, Action::EndTurn),
        ActionError::MatchOver
    );
}

#[test]
fn timer_concede_and_turn_limit() {
    let mut s = MatchState::new(data(), &setup(8));
    assert!(!s.turn_expired(599));
    assert!(s.turn_expired(600));
    let mut ev = Vec::new();
    s.apply(data(), 600, &Input::TurnTimeout, &mut ev).unwrap();
    assert_eq!(s.active, Seat::Second);
    assert!(ev.contains(&MatchEvent::TurnEnded {
        seat: Seat::First,
        timed_out: true
    }));
    assert_eq!(s.turn_deadline, 1200);

    // Conceding is allowed out of turn.
    apply(&mut s, Seat::First, Action::Concede).unwrap();
    assert_eq!(s.result.unwrap().winner, Some(Seat::Second));
    assert_eq!(s.result.unwrap().reason, EndReason::Concede);

    let mut s = MatchState::new(data(), &setup(9));
    for p in &mut s.players {
        p.deck.clear();
        p.life = i16::MAX / 2;
    }
    s.max_life = i16::MAX;
    let mut seat = Seat::First;
    while s.result.is_none() {
        apply(&mut s, seat, Action::EndTurn).unwrap();
        seat = seat.other();
    }
    assert_eq!(s.result.unwrap().reason, EndReason::TurnLimit);
    assert_eq!(s.result.unwrap().winner, None);
    assert_eq!(s.turn, data().rules.max_turns);
}

#[test]
fn full_hand_burns_the_draw() {
    let mut s = MatchState::new(data(), &setup(10));
    let limit = data().rules.hand_limit;
    s.players[1].hand = vec![card("field_mouse"); limit];
    let deck_before = s.players[1].deck.len();
    let events = apply(&mut s, Seat::First, Action::EndTurn).unwrap();
    assert_eq!(s.players[1].hand.len(), limit);
    assert_eq!(s.players[1].deck.len(), deck_before - 1);
    assert!(events.iter().any(|e| matches!(
        e,
        MatchEvent::CardBurned {
            seat: Seat::Second,
            ..
        }
    )));
}

// --------------------------------------------------------------------------------------------
// Property test: random sequences of mostly-legal and some illegal actions.
// --------------------------------------------------------------------------------------------

/// Turns raw random numbers into an action that is often legal (chosen from the state) and
/// sometimes deliberately wrong (wrong seat, bad ids).
fn pick_action(s: &MatchState, choice: (u8, u8, u8)) -> (Seat, Action) {
    let (kind, a, b) = choice;
    let seat = if kind.is_multiple_of(13) {
        s.active.other()
    } else {
        s.active
    };
    let me = s.player(seat);
    let enemy = s.player(seat.other());
    let target_of = |b: u8| -> Target {
        let all: Vec<Target> = [Target::Hero(Seat::First), Target::Hero(Seat::Second)]
            .into_iter()
            .chain(
                s.players
                    .iter()
                    .flat_map(|p| p.board.iter().map(|c| Target::Creature(c.id))),
            )
            .collect();
        if b.is_multiple_of(17) {
            Target::Creature(9999)
        } else {
            all[b as usize % all.len()]
        }
    };
    let action = match kind % 10 {
        0..=3 if !me.hand.is_empty() => {
            let c = data().card(me.hand[a as usize % me.hand.len()]);
            let target = match &c.kind {
                CardKind::Creature { .. } => (b.is_multiple_of(11)).then(|| target_of(b)),
                CardKind::Spell { .. } => (!b.is_multiple_of(7)).then(|| target_of(b)),
            };
            Action::PlayCard {
                card: c.id.clone(),
                target,
            }
        }
        4..=6 if !me.board.is_empty() => {
            let attacker = me.board[a as usize % me.board.len()].id;
            let target = if enemy.board.is_empty() || b.is_multiple_of(3) {
                Target::Hero(seat.other())
            } else {
                target_of(b)
            };
            Action::Attack { attacker, target }
        }
        7 if a == 0 && b < 4 => Action::Concede,
        8 => Action::PlayCard {
            card: "not_a_card".into(),
            target: None,
        },
        _ => Action::EndTurn,
    };
    (seat, action)
}

fn check_invariants(s: &MatchState) {
    let r = &data().rules;
    for p in &s.players {
        assert!(p.life <= s.max_life);
        assert!(p.hand.len() <= r.hand_limit, "hand {}", p.hand.len());
        assert!(p.mana <= p.max_mana && p.max_mana <= r.max_mana);
        assert!(p.board.len() <= r.board_limit);
        assert!(
            p.board.iter().all(|c| c.health > 0),
            "dead creature on board"
        );
    }
    if s.result.is_none() {
        assert!(
            s.players.iter().all(|p| p.life > 0),
            "a dead hero but no result"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_play_keeps_invariants_replays_and_views_agree(
        seed in any::<u64>(),
        choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..400),
        timeouts in prop::collection::vec(any::<bool>(), 400),
    ) {
        let setup = setup(seed);
        let mut s = MatchState::new(data(), &setup);
        let mut log: Vec<InputRecord> = Vec::new();
        let mut views = Seat::BOTH.map(|seat| MatchSnapshot::from_state(data(), &s, 1, seat, 0, 20));
        let mut results_seen = 0;
        for (i, choice) in choices.iter().enumerate() {
            let tick = i as u64 * 3;
            let input = if timeouts[i] && choice.0 % 29 == 1 {
                Input::TurnTimeout
            } else {
                let (seat, action) = pick_action(&s, *choice);
                Input::Act(seat, action)
            };
            let before = s.clone();
            let mut events = Vec::new();
            match s.apply(data(), tick, &input, &mut events) {
                Ok(()) => log.push(InputRecord { tick, input }),
                Err(_) => {
                    prop_assert_eq!(&s, &before, "rejected input changed state");
                    prop_assert!(events.is_empty());
                }
            }
            results_seen += events.iter().filter(|e| matches!(e, MatchEvent::MatchEnded { .. })).count();
            for seat in Seat::BOTH {
                for e in &events {
                    views[seat.index()].apply(&e.redacted_for(seat));
                }
            }
            check_invariants(&s);
            if before.result.is_some() {
                prop_assert_eq!(before.result, s.result, "result changed after the end");
            }
        }
        prop_assert!(results_seen <= 1, "more than one MatchEnded");
        prop_assert_eq!(results_seen == 1, s.result.is_some());
        // Replaying the log from the seed rebuilds the identical state.
        let replayed = replay(data(), &setup, &log);
        prop_assert_eq!(&replayed, &s);
        // Clients that applied the events see what a fresh snapshot shows (bar the timer).
        for seat in Seat::BOTH {
            let mut fresh = MatchSnapshot::from_state(data(), &s, 1, seat, 0, 20);
            fresh.seconds_left = 0;
            let mut v = views[seat.index()].clone();
            v.seconds_left = 0;
            prop_assert_eq!(v, fresh);
        }
    }
}

#[test]
fn replay_with_rejected_inputs_in_the_log_is_identical() {
    let setup = setup(99);
    let mut s = MatchState::new(data(), &setup);
    let mut log = Vec::new();
    for tick in 0..300u64 {
        let (seat, action) = pick_action(
            &s,
            (
                (tick * 7 % 256) as u8,
                (tick * 13 % 256) as u8,
                (tick * 31 % 256) as u8,
            ),
        );
        let input = Input::Act(seat, action);
        let mut ev = Vec::new();
        let _ = s.apply(data(), tick, &input, &mut ev);
        // Log everything, even rejected inputs: replay must reject them again.
        log.push(InputRecord { tick, input });
    }
    assert_eq!(replay(data(), &setup, &log), s);
    let mut other = setup.clone();
    other.seed += 1;
    assert_ne!(
        replay(data(), &other, &log),
        s,
        "a different seed must give a different match"
    );
}
