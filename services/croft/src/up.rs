//! `croft up`: the local stack on embedded defaults. Today that is an instance server (a child
//! process of this binary) and bots that play matches on it through the real protocol.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use headless_bot::Pacing;
use headless_bot::dev::{DevMatchmaker, play_matches};
use server_instance::ReadyInfo;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where keys, the match log and logs live; created if missing.
    #[arg(long, env = "CROFT_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[arg(long, env = "CROFT_CARDS", default_value = "assets/cards")]
    cards: PathBuf,
    /// Matches to play at once (two bots each).
    #[arg(long, default_value_t = 1)]
    matches: usize,
    /// Milliseconds a bot waits before each move.
    #[arg(long, default_value_t = 100)]
    think_ms: u64,
    /// Give up on the matches after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// UDP address of the instance server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    udp: std::net::SocketAddr,
    /// Control HTTP address of the instance server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    instance_http: std::net::SocketAddr,
}

/// Stops the instance child however `up` ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn secret_file(path: &Path, make: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let text = make()?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    telemetry::init_logging("croft-up", telemetry::LogTarget::Stderr);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key_file = args.data_dir.join("netcode.key");
    let control_file = args.data_dir.join("control.token");
    secret_file(&key_file, || Ok(token::NetcodeKey::generate()?.to_hex()))?;
    secret_file(&control_file, || Ok(token::generate_secret()?))?;
    let ready_file = args.data_dir.join("instance.ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let data =
        Arc::new(shared_sim::GameData::load_dir(&args.cards).map_err(|e| anyhow::anyhow!("{e}"))?);

    let exe = std::env::current_exe().context("locating the croft binary")?;
    let log_path = args.data_dir.join("instance.log");
    let instance_log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new(exe)
        .arg("instance")
        .arg("--udp")
        .arg(args.udp.to_string())
        .arg("--http")
        .arg(args.instance_http.to_string())
        .arg("--netcode-key-file")
        .arg(&key_file)
        .arg("--control-token-file")
        .arg(&control_file)
        .arg("--cards")
        .arg(&args.cards)
        .arg("--match-log")
        .arg(args.data_dir.join("matches.jsonl"))
        .arg("--ready-file")
        .arg(&ready_file)
        .stdout(instance_log)
        .spawn()
        .context("starting the instance server")?;
    let mut child = ChildGuard(child);
    let ready = wait_ready(&mut child.0, &ready_file, Duration::from_secs(30))?;
    println!(
        "instance server: control http://{} udp {:?}",
        ready.http, ready.udp
    );

    let control_url = format!("http://{}", ready.http);
    let control_token = token::load_control_token(Some(&control_file))?;
    let mm = DevMatchmaker::new(
        control_url.clone(),
        control_token.clone(),
        token::ConnectTokenIssuer::new(token::NetcodeKey::read_file(&key_file)?),
        1,
    )?;
    let pacing = Pacing {
        think: Duration::from_millis(args.think_ms),
        jitter: 0.2,
    };
    println!(
        "playing {} match(es) with {} bots",
        args.matches,
        args.matches * 2
    );
    let summary = play_matches(
        &mm,
        &data,
        args.matches,
        1_000,
        pacing,
        Duration::from_secs(args.timeout_secs),
    );

    // Drain: the instance finishes what runs and exits.
    let _ = reqwest::blocking::Client::new()
        .post(format!("{control_url}/v1/drain"))
        .bearer_auth(&control_token)
        .send();
    drop(child);
    let summary = summary?;
    println!("{summary}");
    println!(
        "match log: {}",
        args.data_dir.join("matches.jsonl").display()
    );
    for f in &summary.failures {
        eprintln!("failed: {f}");
    }
    if summary.failed > 0 || summary.finished != summary.players {
        bail!(
            "{} of {} bots did not finish their match",
            summary.players - summary.finished,
            summary.players
        );
    }
    Ok(())
}

fn wait_ready(child: &mut Child, file: &Path, timeout: Duration) -> anyhow::Result<ReadyInfo> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the instance server exited during start-up: {status}");
        }
        if let Ok(bytes) = std::fs::read(file)
            && let Ok(info) = serde_json::from_slice::<ReadyInfo>(&bytes)
        {
            return Ok(info);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the instance server did not become ready in {timeout:?}")
}
