//! `headless-bot`: bots that log in through the auth API, connect to the connection server,
//! queue, play their matches over the real protocol, and print a summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use headless_bot::Pacing;
use headless_bot::api::AuthApi;

#[derive(Parser, Debug)]
#[command(
    name = "headless-bot",
    about = "croft headless bot: logs in, queues and plays matches over the real protocol"
)]
struct Args {
    /// The auth service's base URL.
    #[arg(long, env = "CROFT_AUTH_URL", default_value = "http://127.0.0.1:7000")]
    auth: String,
    /// Account names are this prefix and a number from 1.
    #[arg(long, default_value = "bot-")]
    prefix: String,
    /// The accounts' password, from a file (else env CROFT_BOT_PASSWORD).
    #[arg(long, default_value = "data/bots.password")]
    password_file: PathBuf,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    cards: PathBuf,
    /// Bots to run.
    #[arg(long, default_value_t = 2)]
    bots: usize,
    /// Matches each bot plays.
    #[arg(long, default_value_t = 1)]
    matches: usize,
    /// Milliseconds a bot waits before each move.
    #[arg(long, default_value_t = 100)]
    think_ms: u64,
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Runs `--bots` bots. Accounts are `PREFIX1` .. `PREFIXN`, all with one password (`croft up
/// --bots N` creates `bot-1` .. `bot-N` with the password in `data/bots.password`).
fn main() -> anyhow::Result<()> {
    telemetry::init_logging("headless-bot", telemetry::LogTarget::Stderr);
    let args = Args::parse();
    let password = match std::env::var("CROFT_BOT_PASSWORD") {
        Ok(p) => p,
        Err(_) => std::fs::read_to_string(&args.password_file)
            .with_context(|| format!("reading {}", args.password_file.display()))?
            .trim()
            .to_string(),
    };
    let data =
        Arc::new(shared_sim::GameData::load_dir(&args.cards).map_err(|e| anyhow::anyhow!("{e}"))?);
    let accounts: Vec<(String, String)> = (1..=args.bots)
        .map(|i| (format!("{}{i}", args.prefix), password.clone()))
        .collect();
    let api = AuthApi::new(&args.auth)?;
    let (summary, _) = headless_bot::lobby::play_through_lobby(
        &api,
        &accounts,
        args.matches,
        &data,
        Pacing {
            think: Duration::from_millis(args.think_ms),
            jitter: 0.2,
        },
        Duration::from_secs(args.timeout_secs),
    )?;
    println!("{summary}");
    for f in &summary.failures {
        eprintln!("failed: {f}");
    }
    if summary.failed > 0 || summary.finished != args.bots * args.matches {
        std::process::exit(1);
    }
    Ok(())
}
