//! [`Places`] and the match seats driven in an `App` with `MatchPlugin`, `FarmPlugin` and
//! `HubPlugin`, manual time and no sockets: the test plays the network side, calling the
//! routing interface the way `net.rs` does and reading the places' outboxes.

use std::sync::Arc;
use std::time::Duration;

use bevy::ecs::system::RunSystemOnce;
use bevy::time::TimeUpdateStrategy;
use shared_sim::GameData;
use shared_sim::farm::FarmAction;
use shared_sim::plugin::{
    MatchInbox, MatchOutbox, MatchOutput, MatchPlugin, MatchSpec, MatchSystems, spawn_match,
};
use shared_sim::protocol::ServerMessage;
use shared_sim::rules::{Action, EndReason};

use super::matches::{Absences, expire_absences};
use super::*;
use crate::farm::{FarmPlugin, LoadedFarm};
use crate::hub::HubPlugin;

const FRAME: Duration = Duration::from_millis(50);
const GRACE: Duration = Duration::from_secs(2);
const MATCH: MatchId = 40;
const ANN: UserId = 1;
const BOB: UserId = 2;

fn data() -> Arc<GameData> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
    Arc::new(GameData::load_dir(&dir).expect("the shipped card data loads"))
}

fn token(kind: TokenKind, user_id: UserId, match_id: u64) -> TokenUserData {
    TokenUserData {
        kind,
        user_id,
        match_id,
        session_id: [0; 16],
    }
}

struct Harness {
    app: App,
    data: Arc<GameData>,
}

impl Harness {
    /// Ann and Bob's match, waiting for them.
    fn new() -> Self {
        let mut app = App::new();
        app.add_plugins((TaskPoolPlugin::default(), bevy::time::TimePlugin))
            .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME))
            .add_plugins((
                MatchPlugin {
                    tick_hz: 20,
                    linger_seconds: 1,
                },
                FarmPlugin,
                HubPlugin::default(),
            ))
            .insert_resource(Absences::new(GRACE))
            .add_systems(FixedUpdate, expire_absences.before(MatchSystems::Receive));
        app.update();
        let data = data();
        let spec = MatchSpec {
            match_id: MATCH,
            players: [ANN, BOB],
            decks: [
                data.starter_decks[0].cards.clone(),
                data.starter_decks[1].cards.clone(),
            ],
            seed: 9,
        };
        spawn_match(app.world_mut(), data.clone(), &spec).expect("the match spawns");
        let now = app.world().resource::<Time<Real>>().elapsed();
        app.world_mut()
            .resource_mut::<Absences>()
            .expect(MATCH, &spec.players, now);
        Self { app, data }
    }

    fn admit(&mut self, token: TokenUserData) -> Result<Place, Refusal> {
        self.app
            .world_mut()
            .run_system_once(move |mut places: Places| places.admit(&token))
            .expect("the system runs")
    }

    fn left(&mut self, user: UserId, place: Place) {
        self.app
            .world_mut()
            .run_system_once(move |mut places: Places| places.left(user, place))
            .expect("the system runs");
    }

    fn deliver(&mut self, user: UserId, place: Place, message: ClientMessage) {
        self.app
            .world_mut()
            .run_system_once(move |mut places: Places| places.deliver(user, place, message.clone()))
            .expect("the system runs");
    }

    fn wait(&mut self, d: Duration) {
        for _ in 0..d.as_millis().div_ceil(FRAME.as_millis()) {
            self.app.update();
        }
    }

    /// Match outputs since the last call: (player, message), and the ended records.
    fn outputs(&mut self) -> Vec<MatchOutput> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<MatchOutbox>().0)
    }
}

fn to(outputs: &[MatchOutput], user: UserId) -> Vec<ServerMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            MatchOutput::ToPlayer {
                match_id,
                user_id,
                message,
            } if *user_id == user => {
                assert_eq!(*match_id, MATCH);
                Some(message.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_player_is_seated_welcomed_and_sent_the_match() {
    let mut h = Harness::new();
    let place = h.admit(token(TokenKind::Instance, ANN, MATCH)).unwrap();
    let Place::Match { match_id, seat } = place else {
        panic!("a match token seats: {place:?}");
    };
    assert_eq!(match_id, MATCH);
    assert_eq!(place.token_kind(), TokenKind::Instance);
    let out = h.outputs();
    let ann = to(&out, ANN);
    assert_eq!(
        ann[0],
        ServerMessage::Welcome {
            user_id: ANN,
            match_id: MATCH,
            seat
        }
    );
    assert!(
        matches!(&ann[1], ServerMessage::Snapshot(_)),
        "{:?}",
        ann[1]
    );
    assert!(to(&out, BOB).is_empty(), "a first arrival is not a return");

    // A snapshot on request, and actions into the match inbox.
    h.deliver(ANN, place, ClientMessage::RequestSnapshot);
    assert!(matches!(
        &to(&h.outputs(), ANN)[..],
        [ServerMessage::Snapshot(_)]
    ));
    h.deliver(
        ANN,
        place,
        ClientMessage::MatchAction {
            seq: 5,
            action: Action::EndTurn,
        },
    );
    let inbox = &h.app.world().resource::<MatchInbox>().0;
    assert_eq!(inbox.len(), 1);
    assert_eq!((inbox[0].match_id, inbox[0].user_id), (MATCH, ANN));
}

#[test]
fn tokens_for_other_matches_players_or_servers_are_refused() {
    let mut h = Harness::new();
    let reason = |r: Result<Place, Refusal>| r.unwrap_err().reason;
    assert_eq!(
        reason(h.admit(token(TokenKind::Instance, ANN, MATCH + 1))),
        "unknown_match"
    );
    assert_eq!(
        reason(h.admit(token(TokenKind::Instance, 99, MATCH))),
        "not_a_player"
    );
    assert_eq!(
        reason(h.admit(token(TokenKind::Connection, ANN, 0))),
        "token_kind"
    );
    assert_eq!(
        reason(h.admit(token(TokenKind::Farm, ANN, 0))),
        "unknown_farm"
    );
    assert_eq!(
        reason(h.admit(token(TokenKind::Hub, ANN, 3))),
        "unknown_hub"
    );
    assert!(h.outputs().is_empty());
}

#[test]
fn a_dropped_player_can_return_within_the_grace_and_forfeits_after_it() {
    let mut h = Harness::new();
    let ann = h.admit(token(TokenKind::Instance, ANN, MATCH)).unwrap();
    h.admit(token(TokenKind::Instance, BOB, MATCH)).unwrap();
    h.outputs();

    h.left(ANN, ann);
    assert_eq!(
        to(&h.outputs(), BOB),
        vec![ServerMessage::OpponentLeft {
            grace_seconds: GRACE.as_secs() as u32
        }]
    );
    h.wait(GRACE / 2);
    h.outputs();
    assert!(h.app.world().resource::<Absences>().is_away(MATCH, ANN));
    h.admit(token(TokenKind::Instance, ANN, MATCH)).unwrap();
    assert_eq!(to(&h.outputs(), BOB), vec![ServerMessage::OpponentReturned]);
    assert!(!h.app.world().resource::<Absences>().is_away(MATCH, ANN));

    // Gone again, for longer than the grace: Bob wins.
    h.left(ANN, ann);
    h.wait(GRACE - FRAME * 2);
    assert!(
        !h.outputs()
            .iter()
            .any(|o| matches!(o, MatchOutput::Ended(_)))
    );
    h.wait(FRAME * 4);
    let ended = h
        .outputs()
        .into_iter()
        .find_map(|o| match o {
            MatchOutput::Ended(record) => Some(record),
            _ => None,
        })
        .expect("the match ended");
    assert_eq!(ended.result.reason, EndReason::Forfeit);
    let winner = ended.result.winner.map(|s| ended.players[s.index()]);
    assert_eq!(winner, Some(BOB));
}

#[test]
fn farm_and_hub_tokens_open_the_place_kept_for_them() {
    let mut h = Harness::new();
    let data = h.data.clone();
    h.app.world_mut().resource_mut::<Farms>().open(
        LoadedFarm {
            user: ANN,
            farm: shared_sim::farm::Farm::new(2, crate::farm::farm_tick_now()),
            version: 0,
            items: Default::default(),
            data,
            epoch: 1,
        },
        Duration::ZERO,
    );
    let farm = h.admit(token(TokenKind::Farm, ANN, 0)).unwrap();
    assert_eq!(farm, Place::Farm);
    h.deliver(
        ANN,
        farm,
        ClientMessage::FarmAction {
            seq: 3,
            action: FarmAction::Water { plot: 0 },
        },
    );
    let inbox = &h.app.world().resource::<FarmInbox>().0;
    assert!(matches!(inbox[0], FarmInput::Joined(ANN)));
    assert!(matches!(
        inbox[1],
        FarmInput::Action {
            user: ANN,
            seq: 3,
            ..
        }
    ));

    h.app
        .world_mut()
        .resource_mut::<Hubs>()
        .expect(3, BOB, "bob".into(), Duration::ZERO);
    let hub = h.admit(token(TokenKind::Hub, BOB, 3)).unwrap();
    assert_eq!(hub, Place::Hub(3));
    h.deliver(BOB, hub, ClientMessage::HubMove { x: 1, y: 2 });
    h.left(BOB, hub);
    let inbox = &h.app.world().resource::<HubInbox>().0;
    assert!(matches!(
        inbox[0],
        HubInput::Joined {
            hub_id: 3,
            user: BOB
        }
    ));
    assert!(matches!(
        inbox[1],
        HubInput::Move {
            hub_id: 3,
            user: BOB,
            to: (1, 2)
        }
    ));
    assert!(matches!(
        inbox[2],
        HubInput::Left {
            hub_id: 3,
            user: BOB
        }
    ));
}
