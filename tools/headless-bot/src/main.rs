//! `headless-bot`: plays whole matches against an instance server through the dev flow
//! (control API + connect tokens minted with the shared key) and prints a summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use headless_bot::dev::DevMatchmaker;
use headless_bot::{Pacing, Summary};

#[derive(Parser, Debug)]
#[command(
    name = "headless-bot",
    about = "croft headless bot: plays matches over the real protocol"
)]
struct Args {
    /// Instance server control URL.
    #[arg(
        long,
        env = "CROFT_INSTANCE_CONTROL",
        default_value = "http://127.0.0.1:7100"
    )]
    control: String,
    #[arg(long, env = "CROFT_CONTROL_TOKEN_FILE")]
    control_token_file: Option<PathBuf>,
    #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
    netcode_key_file: Option<PathBuf>,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    cards: PathBuf,
    /// Matches to play at the same time (two bots each).
    #[arg(long, default_value_t = 1)]
    matches: usize,
    /// Milliseconds a bot waits before each move.
    #[arg(long, default_value_t = 100)]
    think_ms: u64,
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    #[arg(long, default_value_t = 1_000)]
    first_user_id: u64,
    #[arg(long, default_value_t = 1)]
    first_match_id: u64,
}

fn main() -> anyhow::Result<()> {
    telemetry::init_logging("headless-bot", telemetry::LogTarget::Stderr);
    let args = Args::parse();
    let summary = play(&args)?;
    println!("{summary}");
    for f in &summary.failures {
        eprintln!("failed: {f}");
    }
    if summary.failed > 0 || summary.finished != summary.players {
        std::process::exit(1);
    }
    Ok(())
}

fn play(args: &Args) -> anyhow::Result<Summary> {
    let data =
        Arc::new(shared_sim::GameData::load_dir(&args.cards).map_err(|e| anyhow::anyhow!("{e}"))?);
    let key = token::NetcodeKey::load(args.netcode_key_file.as_deref()).context("netcode key")?;
    let control_token = token::load_control_token(args.control_token_file.as_deref())?;
    let mm = DevMatchmaker::new(
        args.control.clone(),
        control_token,
        token::ConnectTokenIssuer::new(key),
        args.first_match_id,
    )?;
    let pacing = Pacing {
        think: Duration::from_millis(args.think_ms),
        jitter: 0.2,
    };
    headless_bot::dev::play_matches(
        &mm,
        &data,
        args.matches,
        args.first_user_id,
        pacing,
        Duration::from_secs(args.timeout_secs),
    )
}
