//! [`FarmPlugin`] driven in an `App` with manual time and no sockets or store: the test plays
//! the network side (inbox in, outbox out) and the writer task (writes out, answers in).

use std::time::Duration;

use bevy::time::TimeUpdateStrategy;
use shared_sim::farm::Plot;
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

const FRAME: Duration = Duration::from_millis(50);
const USER: UserId = 7;

struct Harness {
    app: App,
    writes: UnboundedReceiver<FarmWrite>,
    done: std::sync::mpsc::Sender<WriteDone>,
}

fn data() -> Arc<GameData> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
    Arc::new(GameData::load_dir(&dir).expect("the shipped card data loads"))
}

impl Harness {
    /// A farm for [`USER`] with `seeds` wheat seeds, opened, its player on it.
    fn new(seeds: u32, with_writer: bool) -> Self {
        let (wt, writes, done, dr) = Farms::channels();
        let farms = Farms::new(with_writer.then_some(wt), dr);
        let mut app = App::new();
        app.add_plugins((TaskPoolPlugin::default(), bevy::time::TimePlugin))
            .insert_resource(TimeUpdateStrategy::ManualDuration(FRAME))
            .insert_resource(Time::<Fixed>::from_duration(FRAME))
            .insert_resource(farms)
            .add_plugins(FarmPlugin);
        // The first frame only starts the clocks.
        app.update();
        let data = data();
        let loaded = LoadedFarm {
            user: USER,
            farm: Farm::new(data.rules.farm_plots, farm_tick_now()),
            version: 3,
            items: HashMap::from([("wheat_seed".to_string(), seeds)]),
            data,
            epoch: 1,
        };
        app.world_mut()
            .resource_mut::<Farms>()
            .open(loaded, Duration::ZERO);
        let mut h = Self { app, writes, done };
        h.input(FarmInput::Joined(USER));
        h
    }

    fn input(&mut self, input: FarmInput) {
        self.app
            .world_mut()
            .resource_mut::<FarmInbox>()
            .0
            .push(input);
        self.app.update();
    }

    /// The writer finished the action `seq` with `outcome`.
    fn answer(&mut self, seq: u32, outcome: Result<bool, String>) {
        let done = WriteDone::Action {
            user: USER,
            seq,
            outcome,
        };
        self.done.send(done).unwrap();
        self.app.update();
    }

    fn act(&mut self, seq: u32, action: FarmAction) {
        self.input(FarmInput::Action {
            user: USER,
            seq,
            action,
        });
    }

    fn wait(&mut self, d: Duration) {
        for _ in 0..d.as_millis().div_ceil(FRAME.as_millis()) {
            self.app.update();
        }
    }

    /// Everything the farms sent since the last call.
    fn outputs(&mut self) -> Vec<FarmOutput> {
        std::mem::take(&mut self.app.world_mut().resource_mut::<FarmOutbox>().0)
    }

    fn messages(&mut self) -> Vec<ServerMessage> {
        self.outputs()
            .into_iter()
            .filter_map(|o| match o {
                FarmOutput::ToPlayer { user, message } => {
                    assert_eq!(user, USER);
                    Some(message)
                }
                FarmOutput::Closed(_) | FarmOutput::Lost(_) => None,
            })
            .collect()
    }

    fn results(&mut self) -> Vec<(u32, Option<FarmError>)> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::FarmActionResult { seq, error } => Some((seq, error)),
                _ => None,
            })
            .collect()
    }
}

fn last_state(messages: &[ServerMessage]) -> (Vec<Plot>, Vec<(String, u32)>) {
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMessage::FarmState { plots, items, .. } => Some((plots.clone(), items.clone())),
            _ => None,
        })
        .expect("a farm state was sent")
}

fn plant(plot: u8) -> FarmAction {
    FarmAction::Plant {
        plot,
        seed: "wheat_seed".into(),
    }
}

#[test]
fn a_planting_is_answered_only_once_the_store_committed_it() {
    let mut h = Harness::new(2, true);
    let (plots, items) = last_state(&h.messages());
    assert!(plots.iter().all(|p| *p == Plot::Empty));
    assert_eq!(items, vec![("wheat_seed".to_string(), 2)]);

    h.act(1, plant(0));
    let Ok(FarmWrite::Action {
        user,
        seq,
        changes,
        version,
        farm,
        epoch: 1,
    }) = h.writes.try_recv()
    else {
        panic!("the planting went to the writer");
    };
    assert_eq!((user, seq, version), (USER, 1, 4));
    assert_eq!(changes, vec![ItemChange::Take("wheat_seed".into(), 1)]);
    assert!(matches!(farm.plots[0], Plot::Growing { .. }));
    assert!(h.results().is_empty(), "no answer before the commit");

    // One action at a time: the next waits for the store.
    h.act(2, FarmAction::Water { plot: 0 });
    assert_eq!(h.results(), vec![(2, Some(FarmError::Busy))]);

    h.answer(1, Ok(true));
    let messages = h.messages();
    assert!(messages.contains(&ServerMessage::FarmActionResult {
        seq: 1,
        error: None
    }));
    let (plots, items) = last_state(&messages);
    assert!(matches!(plots[0], Plot::Growing { .. }));
    assert_eq!(items, vec![("wheat_seed".to_string(), 1)]);
}

#[test]
fn a_write_the_store_refused_leaves_the_farm_as_it_was() {
    let mut h = Harness::new(1, true);
    h.messages();
    // A store that is down: `Unavailable`, the farm and the seed as they were.
    h.act(1, plant(0));
    assert!(h.writes.try_recv().is_ok());
    h.answer(1, Err("connection refused".into()));
    let messages = h.messages();
    assert!(messages.contains(&ServerMessage::FarmActionResult {
        seq: 1,
        error: Some(FarmError::Unavailable)
    }));
    let (plots, items) = last_state(&messages);
    assert_eq!(plots[0], Plot::Empty);
    assert_eq!(items, vec![("wheat_seed".to_string(), 1)]);

    // The seed was used up elsewhere (a craft) before the write landed.
    h.act(2, plant(0));
    assert!(
        h.writes.try_recv().is_ok(),
        "the farm takes the next action"
    );
    h.answer(2, Ok(false));
    let messages = h.messages();
    assert!(messages.contains(&ServerMessage::FarmActionResult {
        seq: 2,
        error: Some(FarmError::MissingSeed)
    }));
    let (plots, items) = last_state(&messages);
    assert_eq!(plots[0], Plot::Empty);
    assert!(items.is_empty(), "the seed is taken as gone: {items:?}");
}

#[test]
fn without_a_store_an_action_that_needs_one_is_unavailable() {
    let mut h = Harness::new(1, false);
    h.messages();
    h.act(1, plant(0));
    assert_eq!(h.results(), vec![(1, Some(FarmError::Unavailable))]);
    // Nothing is left pending: the next action is not `Busy`.
    h.act(2, FarmAction::Harvest { plot: 0 });
    assert_eq!(h.results(), vec![(2, Some(FarmError::NotRipe))]);
}

#[test]
fn watering_is_saved_within_a_second_and_a_farm_left_alone_closes() {
    let mut h = Harness::new(1, true);
    h.act(1, plant(0));
    let _ = h.writes.try_recv();
    h.answer(1, Ok(true));
    h.messages();

    // Watering changes no items: answered at once, written later with the farm.
    h.act(2, FarmAction::Water { plot: 0 });
    assert_eq!(h.results(), vec![(2, None)]);
    assert!(h.writes.try_recv().is_err(), "not written at once");
    h.wait(SAVE_EVERY + FRAME);
    let Ok(FarmWrite::Snapshot { user, version, .. }) = h.writes.try_recv() else {
        panic!("unsaved watering is written within {SAVE_EVERY:?}");
    };
    assert_eq!((user, version), (USER, 5));

    h.input(FarmInput::Left(USER));
    // Not closed while the snapshot is in flight, however long that takes.
    h.wait(CLOSE_AFTER + FRAME);
    assert!(!h.outputs().contains(&FarmOutput::Closed(USER)));
    assert!(!h.app.world().resource::<Farms>().all_saved());
    h.done
        .send(WriteDone::Snapshot {
            user: USER,
            ok: true,
        })
        .unwrap();
    h.app.update();
    assert_eq!(h.outputs(), vec![FarmOutput::Closed(USER)]);
    // Its lease is given up after the last write, in the writer's order.
    assert!(matches!(
        h.writes.try_recv(),
        Ok(FarmWrite::Release {
            user: USER,
            epoch: 1
        })
    ));
    let farms = h.app.world().resource::<Farms>();
    assert!(!farms.hosts(USER));
    assert!(farms.all_saved());
}

#[test]
fn a_farm_closes_only_after_its_player_was_gone_for_a_while() {
    let mut h = Harness::new(0, true);
    h.input(FarmInput::Left(USER));
    h.wait(CLOSE_AFTER / 2);
    // Back before it closed: it stays open.
    h.input(FarmInput::Joined(USER));
    h.wait(CLOSE_AFTER);
    assert!(!h.outputs().contains(&FarmOutput::Closed(USER)));
    h.input(FarmInput::Left(USER));
    h.wait(CLOSE_AFTER - FRAME * 2);
    assert!(!h.outputs().contains(&FarmOutput::Closed(USER)));
    h.wait(FRAME * 3);
    assert!(h.outputs().contains(&FarmOutput::Closed(USER)));
}

#[test]
fn a_write_fenced_by_a_newer_lease_gives_the_farm_up() {
    let mut h = Harness::new(1, true);
    h.messages();
    h.act(1, plant(0));
    assert!(h.writes.try_recv().is_ok());
    // Another instance took the farm: the store refused the write for its epoch.
    h.done
        .send(WriteDone::Lost {
            user: USER,
            seq: Some(1),
        })
        .unwrap();
    h.app.update();
    let out = h.outputs();
    assert!(out.contains(&FarmOutput::ToPlayer {
        user: USER,
        message: ServerMessage::FarmActionResult {
            seq: 1,
            error: Some(FarmError::Unavailable)
        }
    }));
    assert!(out.contains(&FarmOutput::Lost(USER)));
    let farms = h.app.world().resource::<Farms>();
    assert!(!farms.hosts(USER));
    assert!(farms.all_saved(), "nothing of a lost farm is waited for");
    // No release: the lease is not ours any more.
    assert!(h.writes.try_recv().is_err());
}
