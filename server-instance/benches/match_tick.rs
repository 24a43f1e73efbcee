//! N concurrent matches ticking in one process on one core, driven by scripted players (no
//! sockets): the instance server's `FixedUpdate` plus encoding every outgoing message.
//! Prints tick p50/p99, moves/s, memory per match and matches per core at 20 Hz.
//!
//! cargo bench -p server-instance --bench match_tick -- [matches] [think_ms] [seconds] [events_per_sec]
//!
//! With `events_per_sec` > 0 the ticks are paced at 20 Hz in real time and the run is made
//! twice in one process: first without events, then with that many events per second going
//! through the instance server's own event path (`bus::EventBus`: emitted on the tick
//! thread, a bounded queue, the producer thread, an idempotent producer) into a Kafka-protocol
//! broker (librdkafka's mock cluster in this process, or `CROFT_BENCH_KAFKA=host:port`). It
//! prints events acknowledged per second and the tick p99 ratio against the baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::ecs::schedule::SingleThreadedExecutor;
use bevy::prelude::*;
use shared_sim::GameData;
use shared_sim::data::{CardKind, Keyword};
use shared_sim::plugin::{
    CardMatch, CommandKind, MatchCommand, MatchInbox, MatchOutbox, MatchOutput, MatchPlugin,
    MatchSpec, spawn_match,
};
use shared_sim::rules::{Action, MatchState, Seat, Target};

const TICK_HZ: u32 = 20;

// The same allocator as the server binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    telemetry::ProcessStats::read()
        .map(|s| s.resident_bytes)
        .unwrap_or(0)
}

/// A cheap scripted move read straight from the server state (the client's cost is not measured).
fn scripted_action(data: &GameData, s: &MatchState) -> Action {
    let seat = s.active;
    let me = s.player(seat);
    if me.board.len() < data.rules.board_limit
        && let Some(card) = me
            .hand
            .iter()
            .map(|c| data.card(*c))
            .find(|c| c.cost <= me.mana && matches!(c.kind, CardKind::Creature { .. }))
    {
        return Action::PlayCard {
            card: card.id.clone(),
            target: None,
        };
    }
    let enemy = s.player(seat.other());
    if let Some(a) = me.board.iter().find(|c| c.can_attack && c.attack > 0) {
        let target = enemy
            .board
            .iter()
            .find(|c| c.keywords.has(Keyword::Guard))
            .map(|c| Target::Creature(c.id))
            .unwrap_or(Target::Hero(seat.other()));
        return Action::Attack {
            attacker: a.id,
            target,
        };
    }
    Action::EndTurn
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let matches: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let think_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(30);
    let events_per_sec: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    assert!(
        matches > 0 && seconds > 0,
        "matches and seconds must be at least 1"
    );
    let think_ticks = (think_ms * u64::from(TICK_HZ) / 1000).max(1);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards");
    let data = Arc::new(GameData::load_dir(&dir).expect("card data"));
    let decks = [
        data.starter_decks[0].cards.clone(),
        data.starter_decks[1].cards.clone(),
    ];

    let mut app = App::new();
    app.add_plugins(MatchPlugin {
        tick_hz: TICK_HZ,
        linger_seconds: 1,
    });
    app.edit_schedule(FixedUpdate, |s| {
        s.set_executor(SingleThreadedExecutor::new());
    });
    app.finish();
    app.cleanup();

    let rss_before = rss_bytes();
    let mut next_id = 1u64;
    let spawn = |world: &mut World, next_id: &mut u64| {
        let id = *next_id;
        *next_id += 1;
        let spec = MatchSpec {
            match_id: id,
            players: [id * 2, id * 2 + 1],
            decks: decks.clone(),
            seed: id,
        };
        spawn_match(world, data.clone(), &spec).expect("match spawns");
    };
    for _ in 0..matches {
        spawn(app.world_mut(), &mut next_id);
    }
    let mut spawn_more = |world: &mut World| spawn(world, &mut next_id);
    // One tick so that every match is fully set up, then measure memory.
    app.world_mut().run_schedule(FixedUpdate);
    let rss_after = rss_bytes();

    if events_per_sec == 0 {
        let r = run_phase(&mut app, &mut spawn_more, seconds, think_ticks, None);
        r.print(matches, think_ms, seconds, "back to back");
        println!(
            "  memory {:.1} KiB per match (RSS {} -> {} MiB)",
            (rss_after.saturating_sub(rss_before)) as f64 / matches as f64 / 1024.0,
            rss_before >> 20,
            rss_after >> 20
        );
        let budget = Duration::from_secs(1) / TICK_HZ;
        let per_core = matches as f64 * budget.as_secs_f64() / r.mean().as_secs_f64();
        println!("  matches per core at 20 Hz (budget / mean tick): {per_core:.0}");
        assert!(r.moves > 0, "no move was made");
        return;
    }
    // The same run twice, paced at 20 Hz: without events, then with them.
    let metrics = telemetry::metrics_handle();
    let base = run_phase(&mut app, &mut spawn_more, seconds, think_ticks, Some(None));
    base.print(matches, think_ms, seconds, "paced, no events");
    let (embedded, brokers) = match std::env::var("CROFT_BENCH_KAFKA") {
        Ok(b) => (None, b),
        Err(_) => {
            let c = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
            let b = c.bootstrap_servers();
            (Some(c), b)
        }
    };
    let (bus, thread) = server_instance::bus::start(&brokers, "bench.", 65_536).expect("bus");
    let started = Instant::now();
    let with = run_phase(
        &mut app,
        &mut spawn_more,
        seconds,
        think_ticks,
        Some(Some((&bus, events_per_sec))),
    );
    drop(bus);
    thread.join().expect("producer thread");
    let wall = started.elapsed();
    with.print(matches, think_ms, seconds, "paced, with events");
    let text = metrics.render();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let acked = sum("croft_events_produced_total");
    let dropped = sum("croft_instance_events_dropped_total");
    let failed = sum("croft_events_produce_failures_total");
    println!(
        "  events: {} emitted, {acked:.0} acknowledged by the broker ({:.0}/s over {:.1} s incl. the final flush), {dropped:.0} dropped at the full queue, {failed:.0} failed",
        with.emitted,
        acked / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  tick with events / without: p50 {:.3}, p99 {:.3}, mean {:.3} (brokers {brokers}{})",
        ratio(with.pct(0.5), base.pct(0.5)),
        ratio(with.pct(0.99), base.pct(0.99)),
        ratio(with.mean(), base.mean()),
        if embedded.is_some() {
            ", in-process mock cluster"
        } else {
            ""
        }
    );
    assert!(base.moves > 0 && with.moves > 0, "no move was made");
    assert!(
        failed == 0.0 && dropped == 0.0 && acked >= with.emitted as f64,
        "events lost: {failed} failed, {dropped} dropped, {acked} of {} acknowledged",
        with.emitted
    );
}

struct Phase {
    tick_times: Vec<Duration>,
    moves: u64,
    bytes_out: u64,
    messages_out: u64,
    ended: u64,
    emitted: u64,
}

impl Phase {
    fn pct(&self, q: f64) -> Duration {
        self.tick_times[((self.tick_times.len() - 1) as f64 * q) as usize]
    }

    fn mean(&self) -> Duration {
        self.tick_times.iter().sum::<Duration>() / self.tick_times.len() as u32
    }

    fn print(&self, matches: u64, think_ms: u64, seconds: u64, how: &str) {
        let budget = Duration::from_secs(1) / TICK_HZ;
        println!(
            "match_tick: {matches} concurrent matches, 20 Hz, scripted move every {think_ms} ms per active player, {seconds} s simulated ({how})"
        );
        println!(
            "  tick p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms (budget {:.0} ms)",
            self.pct(0.50).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3,
            self.tick_times
                .last()
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(0.0),
            self.mean().as_secs_f64() * 1e3,
            budget.as_secs_f64() * 1e3
        );
        println!(
            "  moves {} ({:.0}/s of game time), messages out {}, bytes out {}, matches ended {}",
            self.moves,
            self.moves as f64 / seconds as f64,
            self.messages_out,
            self.bytes_out,
            self.ended
        );
    }
}

/// `paced`: None runs ticks back to back; Some(events) paces them at 20 Hz and emits
/// `rate` events per second through the bus, spread over the ticks, timed with the tick.
fn run_phase(
    app: &mut App,
    spawn: &mut dyn FnMut(&mut World),
    seconds: u64,
    think_ticks: u64,
    paced: Option<Option<(&server_instance::bus::EventBus, u64)>>,
) -> Phase {
    let total_ticks = seconds * u64::from(TICK_HZ);
    let mut tick_times = Vec::with_capacity(total_ticks as usize);
    let mut moves = 0u64;
    let mut bytes_out = 0u64;
    let mut messages_out = 0u64;
    let mut ended = 0u64;
    let mut emitted = 0u64;
    let mut buf = Vec::with_capacity(4096);
    let period = Duration::from_secs(1) / TICK_HZ;
    let mut next = Instant::now();
    for tick in 0..total_ticks {
        if paced.is_some() {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += period;
        }
        // Scripted players: each match's active player moves every `think_ticks` ticks
        // (staggered by match id so the load is spread like real traffic).
        {
            let world = app.world_mut();
            let mut commands = Vec::new();
            let mut q = world.query::<&CardMatch>();
            for m in q.iter(world) {
                if m.state.is_over() || (tick + m.id) % think_ticks != 0 {
                    continue;
                }
                let seat: Seat = m.state.active;
                commands.push(MatchCommand {
                    match_id: m.id,
                    user_id: m.players[seat.index()],
                    kind: CommandKind::Act {
                        seq: tick as u32,
                        action: scripted_action(&m.data, &m.state),
                    },
                });
            }
            moves += commands.len() as u64;
            world.resource_mut::<MatchInbox>().0.extend(commands);
        }
        let start = Instant::now();
        app.world_mut().run_schedule(FixedUpdate);
        let outputs: Vec<MatchOutput> = app
            .world_mut()
            .resource_mut::<MatchOutbox>()
            .0
            .drain(..)
            .collect();
        let mut finished = 0;
        for out in &outputs {
            match out {
                MatchOutput::ToPlayer { message, .. } => {
                    buf.clear();
                    buf.extend_from_slice(&message.encode());
                    bytes_out += buf.len() as u64;
                    messages_out += 1;
                }
                MatchOutput::Ended(_) => finished += 1,
            }
        }
        // Events leave on the tick thread, as in the server (`route_outbox` and friends).
        if let Some(Some((bus, rate))) = paced {
            let n = rate / u64::from(TICK_HZ);
            for i in 0..n {
                bus.emit(events::Event::GameEnded {
                    match_id: tick * n + i,
                    players: vec![1, 2],
                    winner: Some(1),
                    reason: "HeroDied".into(),
                    turns: 9,
                });
            }
            emitted += n;
        }
        tick_times.push(start.elapsed());
        // Keep N matches running: a finished match is replaced by a new one.
        ended += finished;
        for _ in 0..finished {
            spawn(app.world_mut());
        }
    }
    tick_times.sort_unstable();
    Phase {
        tick_times,
        moves,
        bytes_out,
        messages_out,
        ended,
        emitted,
    }
}
