//! [`HubPlugin`] driven in an `App` with manual time and no sockets: the test plays the
//! network side (inbox in, outbox out) and the control API (kept places).

use bevy::time::TimeUpdateStrategy;
use shared_sim::hub::{MoveError, SPAWN};

use super::*;

const FRAME: Duration = Duration::from_millis(50);
const HUB: u32 = 1;

struct Harness {
    app: App,
}

impl Harness {
    fn new() -> Self {
        Self::with(HubPlugin::default())
    }

    fn with(plugin: HubPlugin) -> Self {
        let mut app = App::new();
        app.add_plugins((TaskPoolPlugin::default(), bevy::time::TimePlugin))
            .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME))
            .insert_resource(Time::<Fixed>::from_duration(FRAME))
            .add_plugins(plugin);
        app.update();
        Self { app }
    }

    fn now(&self) -> Duration {
        self.app.world().resource::<Time<Real>>().elapsed()
    }

    fn keep(&mut self, user: UserId, name: &str) {
        let now = self.now();
        let mut hubs = self.app.world_mut().resource_mut::<Hubs>();
        hubs.expect(HUB, user, name.into(), now);
    }

    fn input(&mut self, input: HubInput) {
        self.app
            .world_mut()
            .resource_mut::<HubInbox>()
            .0
            .push(input);
        self.app.update();
    }

    fn join(&mut self, user: UserId, name: &str) {
        self.keep(user, name);
        self.input(HubInput::Joined { hub_id: HUB, user });
    }

    fn wait(&mut self, d: Duration) {
        for _ in 0..d.as_millis().div_ceil(FRAME.as_millis()) {
            self.app.update();
        }
    }

    fn outputs(&mut self) -> Vec<HubOutput> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<HubOutbox>().0)
    }

    /// What `user` got since the last call, broadcasts included.
    fn received(outputs: &[HubOutput], user: UserId) -> Vec<ServerMessage> {
        outputs
            .iter()
            .filter_map(|o| match o {
                HubOutput::ToPlayer { user: u, message } if *u == user => Some(message.clone()),
                HubOutput::ToPlayers { users, message } if users.contains(&user) => {
                    Some(message.clone())
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn players_see_each_other_arrive_walk_and_leave() {
    let mut h = Harness::new();
    h.join(1, "ann");
    let out = h.outputs();
    let HubWelcomeOf { you, players } = welcome(&Harness::received(&out, 1));
    assert_eq!(
        (you.user_id, you.name.as_str(), (you.x, you.y)),
        (1, "ann", SPAWN)
    );
    assert!(players.is_empty());
    assert!(out.contains(&HubOutput::Arrived(1)));

    h.join(2, "bob");
    let out = h.outputs();
    let HubWelcomeOf { players, .. } = welcome(&Harness::received(&out, 2));
    assert_eq!(players.len(), 1);
    assert_eq!(players[0].name, "ann");
    let bob = Harness::received(&out, 1);
    assert!(
        matches!(&bob[..], [ServerMessage::HubJoined(p)] if p.user_id == 2 && p.name == "bob"),
        "{bob:?}"
    );

    // Two moves in one tick reach everyone as one batch with the last position.
    h.wait(Duration::from_millis(200));
    h.outputs();
    let to = (SPAWN.0 + 100, SPAWN.1 + 50);
    h.app.world_mut().resource_mut::<HubInbox>().0.extend([
        HubInput::Move {
            hub_id: HUB,
            user: 2,
            to: (SPAWN.0 + 50, SPAWN.1),
        },
        HubInput::Move {
            hub_id: HUB,
            user: 2,
            to,
        },
    ]);
    h.app.update();
    let out = h.outputs();
    for user in [1, 2] {
        assert_eq!(
            Harness::received(&out, user),
            vec![ServerMessage::HubMoves(vec![(2, to.0, to.1)])]
        );
    }

    h.input(HubInput::Left {
        hub_id: HUB,
        user: 1,
    });
    let out = h.outputs();
    assert_eq!(
        Harness::received(&out, 2),
        vec![ServerMessage::HubLeft { user_id: 1 }]
    );
    assert!(out.contains(&HubOutput::Released(1)));
    assert_eq!(h.app.world().resource::<Hubs>().players(), 1);
}

struct HubWelcomeOf {
    you: HubPlayer,
    players: Vec<HubPlayer>,
}

fn welcome(messages: &[ServerMessage]) -> HubWelcomeOf {
    match messages {
        [
            ServerMessage::HubWelcome {
                hub_id,
                you,
                players,
            },
        ] if *hub_id == HUB => HubWelcomeOf {
            you: you.clone(),
            players: players.clone(),
        },
        other => panic!("expected one HubWelcome, got {other:?}"),
    }
}

#[test]
fn a_move_faster_than_walking_is_refused_with_the_position_the_server_keeps() {
    let mut h = Harness::new();
    h.join(1, "ann");
    h.wait(Duration::from_secs(1));
    h.outputs();
    // One second of walking is MAX_SPEED units (and a quarter more of slack), not twice that.
    let far = (SPAWN.0 + 2 * hub::MAX_SPEED, SPAWN.1);
    h.input(HubInput::Move {
        hub_id: HUB,
        user: 1,
        to: far,
    });
    assert_eq!(
        Harness::received(&h.outputs(), 1),
        vec![ServerMessage::HubMoveRejected {
            error: MoveError::TooFast,
            x: SPAWN.0,
            y: SPAWN.1
        }]
    );
    // After the time it takes, the same walk is fine.
    h.wait(Duration::from_secs(2));
    h.input(HubInput::Move {
        hub_id: HUB,
        user: 1,
        to: far,
    });
    assert_eq!(
        Harness::received(&h.outputs(), 1),
        vec![ServerMessage::HubMoves(vec![(1, far.0, far.1)])]
    );
    h.input(HubInput::Move {
        hub_id: HUB,
        user: 1,
        to: (-1, 0),
    });
    assert!(matches!(
        &Harness::received(&h.outputs(), 1)[..],
        [ServerMessage::HubMoveRejected {
            error: MoveError::OutOfBounds,
            ..
        }]
    ));
}

#[test]
fn chat_reaches_only_the_players_nearby_and_bad_chat_is_refused() {
    let mut h = Harness::new();
    for (user, name) in [(1, "ann"), (2, "bob"), (3, "cy")] {
        h.join(user, name);
    }
    // Cy walks out of earshot, a little at a time.
    let mut x = SPAWN.0;
    while x < SPAWN.0 + hub::CHAT_RADIUS + 1_000 {
        h.wait(Duration::from_secs(1));
        x += hub::MAX_SPEED;
        h.input(HubInput::Move {
            hub_id: HUB,
            user: 3,
            to: (x, SPAWN.1),
        });
    }
    h.outputs();
    h.input(HubInput::Chat {
        hub_id: HUB,
        user: 1,
        text: "hello".into(),
    });
    let out = h.outputs();
    let said = ServerMessage::HubChat {
        from: 1,
        name: "ann".into(),
        text: "hello".into(),
    };
    assert_eq!(Harness::received(&out, 1), vec![said.clone()]);
    assert_eq!(Harness::received(&out, 2), vec![said]);
    assert!(Harness::received(&out, 3).is_empty());

    for text in [
        String::new(),
        "bell\u{7}".into(),
        "x".repeat(MAX_CHAT_CHARS + 1),
    ] {
        h.input(HubInput::Chat {
            hub_id: HUB,
            user: 2,
            text,
        });
        let out = h.outputs();
        assert!(matches!(
            &Harness::received(&out, 2)[..],
            [ServerMessage::Error {
                code: ErrorCode::BadChat,
                ..
            }]
        ));
        assert!(Harness::received(&out, 1).is_empty());
    }
}

#[test]
fn only_a_kept_place_can_be_taken_and_it_is_not_kept_forever() {
    let mut h = Harness::new();
    // Nobody kept a place for user 9: joining does nothing.
    h.input(HubInput::Joined {
        hub_id: HUB,
        user: 9,
    });
    assert!(h.outputs().is_empty());
    assert_eq!(h.app.world().resource::<Hubs>().players(), 0);

    h.keep(5, "eve");
    assert!(h.app.world().resource::<Hubs>().expects(HUB, 5));
    assert!(!h.app.world().resource::<Hubs>().expects(HUB + 1, 5));
    h.wait(KEEP_FOR + FRAME * 2);
    assert!(!h.app.world().resource::<Hubs>().expects(HUB, 5));
    h.input(HubInput::Joined {
        hub_id: HUB,
        user: 5,
    });
    assert!(h.outputs().is_empty());
}

#[test]
fn moves_sent_together_share_one_interval_of_walking() {
    let mut h = Harness::new();
    h.join(1, "ann");
    h.wait(Duration::from_secs(1));
    let step = |x: i32| HubInput::Move {
        hub_id: HUB,
        user: 1,
        to: (SPAWN.0 + x, SPAWN.1),
    };
    h.input(step(300));
    h.outputs();
    // Five steps of 300 units in one tick: 1,500 units in 50 ms, 10 times walking speed. The
    // tick's interval (at least the 100 ms jitter allowance) covers one of them.
    h.app
        .world_mut()
        .resource_mut::<HubInbox>()
        .0
        .extend([600, 900, 1200, 1500, 1800].map(step));
    h.app.update();
    let ann = Harness::received(&h.outputs(), 1);
    let refused = ann
        .iter()
        .filter(|m| matches!(m, ServerMessage::HubMoveRejected { .. }))
        .count();
    assert_eq!(refused, 4, "{ann:?}");
    assert!(
        ann.contains(&ServerMessage::HubMoves(vec![(1, SPAWN.0 + 600, SPAWN.1)])),
        "{ann:?}"
    );
    // Walking on at speed is fine again.
    for x in [900, 1200, 1500] {
        h.wait(Duration::from_millis(100));
        h.input(step(x));
        assert_eq!(
            Harness::received(&h.outputs(), 1),
            vec![ServerMessage::HubMoves(vec![(1, SPAWN.0 + x, SPAWN.1)])]
        );
    }
}

#[test]
fn chat_in_the_common_area_is_rate_limited_per_player() {
    let mut h = Harness::new();
    h.join(1, "ann");
    h.join(2, "bob");
    h.outputs();
    let say = |user: UserId| HubInput::Chat {
        hub_id: HUB,
        user,
        text: "spam".into(),
    };
    let limit = DEFAULT_CHAT_PER_10S as usize;
    for _ in 0..limit + 2 {
        h.input(say(1));
    }
    let out = h.outputs();
    let heard = Harness::received(&out, 2)
        .iter()
        .filter(|m| matches!(m, ServerMessage::HubChat { .. }))
        .count();
    assert_eq!(heard, limit, "bob hears the first {limit} only");
    let limited = Harness::received(&out, 1)
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    assert_eq!(limited, 2);
    // Another player's chat is not limited by ann's, and ann may talk again 10 s later.
    h.input(say(2));
    assert!(
        Harness::received(&h.outputs(), 1)
            .iter()
            .any(|m| matches!(m, ServerMessage::HubChat { from: 2, .. }))
    );
    h.wait(Duration::from_secs(10));
    h.input(say(1));
    assert!(
        Harness::received(&h.outputs(), 2)
            .iter()
            .any(|m| matches!(m, ServerMessage::HubChat { from: 1, .. }))
    );
}

#[test]
fn at_a_faster_tick_moves_go_out_at_the_common_areas_own_rate() {
    assert_eq!(HubPlugin::moves_every_ticks_at(20), 1);
    assert_eq!(HubPlugin::moves_every_ticks_at(40), 2);
    assert_eq!(HubPlugin::moves_every_ticks_at(60), 3);
    assert_eq!(HubPlugin::moves_every_ticks_at(10), 1);
    let mut h = Harness::with(HubPlugin {
        moves_every_ticks: 2,
        ..HubPlugin::default()
    });
    h.join(1, "ann");
    h.join(2, "bob");
    h.wait(Duration::from_millis(200));
    h.outputs();
    let batches = |out: &[HubOutput]| {
        Harness::received(out, 1)
            .into_iter()
            .filter(|m| matches!(m, ServerMessage::HubMoves(_)))
            .collect::<Vec<_>>()
    };
    // A move every tick for 6 ticks: 3 batches, each with the last position of its two ticks.
    let mut seen = Vec::new();
    for step in 1..=6 {
        let to = (SPAWN.0 + 10 * step, SPAWN.1);
        h.input(HubInput::Move {
            hub_id: HUB,
            user: 2,
            to,
        });
        seen.extend(batches(&h.outputs()));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for batch in &seen {
        let ServerMessage::HubMoves(moves) = batch else {
            unreachable!()
        };
        assert_eq!(moves.len(), 1);
        // Positions 20, 40, 60 or 10, 30, 50 past the spawn, depending on the phase.
        assert!(moves[0].1 - SPAWN.0 >= 10, "{moves:?}");
    }
    let ServerMessage::HubMoves(last) = &seen[2] else {
        unreachable!()
    };
    let ServerMessage::HubMoves(first) = &seen[0] else {
        unreachable!()
    };
    assert_eq!(
        last[0].1 - first[0].1,
        40,
        "two ticks of 10 between batches"
    );
}
