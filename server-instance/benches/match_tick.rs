//! N concurrent matches ticking in one process on one core, driven by scripted players (no
//! sockets): the instance server's `FixedUpdate` plus encoding every outgoing message.
//! Prints tick p50/p99, moves/s, memory per match and matches per core at 20 Hz.
//!
//! cargo bench -p server-instance --bench match_tick -- [matches] [think_ms] [seconds]

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
    // One tick so that every match is fully set up, then measure memory.
    app.world_mut().run_schedule(FixedUpdate);
    let rss_after = rss_bytes();

    let total_ticks = seconds * u64::from(TICK_HZ);
    let mut tick_times = Vec::with_capacity(total_ticks as usize);
    let mut moves = 0u64;
    let mut bytes_out = 0u64;
    let mut messages_out = 0u64;
    let mut ended = 0u64;
    let mut buf = Vec::with_capacity(4096);
    for tick in 0..total_ticks {
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
        tick_times.push(start.elapsed());
        // Keep N matches running: a finished match is replaced by a new one.
        ended += finished;
        for _ in 0..finished {
            spawn(app.world_mut(), &mut next_id);
        }
    }
    tick_times.sort_unstable();
    let pct = |q: f64| tick_times[((tick_times.len() - 1) as f64 * q) as usize];
    let mean: Duration = tick_times.iter().sum::<Duration>() / tick_times.len() as u32;
    let budget = Duration::from_secs(1) / TICK_HZ;
    let per_core = matches as f64 * budget.as_secs_f64() / mean.as_secs_f64();
    println!(
        "match_tick: {matches} concurrent matches, 20 Hz, scripted move every {think_ms} ms per active player, {seconds} s simulated"
    );
    println!(
        "  tick p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms (budget {:.0} ms)",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        tick_times
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0),
        mean.as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3
    );
    println!(
        "  moves {moves} ({:.0}/s of game time), messages out {messages_out}, bytes out {bytes_out}, matches ended {ended}",
        moves as f64 / seconds as f64
    );
    println!(
        "  memory {:.1} KiB per match (RSS {} -> {} MiB)",
        (rss_after.saturating_sub(rss_before)) as f64 / matches as f64 / 1024.0,
        rss_before >> 20,
        rss_after >> 20
    );
    println!("  matches per core at 20 Hz (budget / mean tick): {per_core:.0}");
}
