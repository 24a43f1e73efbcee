//! Operator commands: `croft status` (what runs where, from the services' own endpoints) and
//! `croft drain INSTANCE` (no new matches there; it stops once its matches have ended).

use std::path::PathBuf;

use anyhow::{Context, bail};
use contracts::connection::ConnectionAdminClient;
use contracts::instance::InstanceClient;
use contracts::matchmaking::MatchmakingClient;
use contracts::matchmaking::v1::Status;

/// Where matchmaking's internal API is, and the credential it takes.
#[derive(clap::Args, Debug)]
pub struct MatchmakingApi {
    /// Matchmaking's internal API.
    #[arg(
        long,
        env = "CROFT_MATCHMAKING_URL",
        default_value = "http://127.0.0.1:7002"
    )]
    pub matchmaking: String,
    #[arg(long, env = "CROFT_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
}

impl MatchmakingApi {
    /// Matchmaking's status: queue, matches, the allocator and its instances.
    pub fn status(&self) -> anyhow::Result<Status> {
        let token = server_connection::load_service_token(self.service_token_file.as_deref())?;
        let client = MatchmakingClient::new(http()?, &self.matchmaking, token);
        Ok(block_on(client.status())??)
    }
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    api: MatchmakingApi,
    /// Connection servers' admin APIs (repeat or comma-separate).
    #[arg(
        long = "connection",
        env = "CROFT_CONNECTION_ADMIN_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7200"
    )]
    connections: Vec<String>,
    /// Print the raw JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The instance id, as `croft status` lists it.
    instance: String,
    #[command(flatten)]
    api: MatchmakingApi,
    /// The instances' control credential (else env CROFT_CONTROL_TOKEN).
    #[arg(long, env = "CROFT_CONTROL_TOKEN_FILE")]
    control_token_file: Option<PathBuf>,
}

/// The operator commands' HTTP client: short time-outs, an unreachable part is reported.
fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?)
}

/// Runs one call of the async clients from these blocking commands.
pub(crate) fn block_on<F: std::future::Future>(call: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    Ok(runtime.block_on(call))
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let token = server_connection::load_service_token(args.api.service_token_file.as_deref())?;
    let mm = args.api.status();
    let http = http()?;
    let connections: Vec<(String, anyhow::Result<contracts::connection::v1::Status>)> = args
        .connections
        .iter()
        .map(|c| {
            let client = ConnectionAdminClient::new(http.clone(), c, token.as_str());
            let status = block_on(client.status()).and_then(|s| Ok(s?));
            (c.clone(), status)
        })
        .collect();
    if args.json {
        let as_json = |s: &anyhow::Result<_>| match s {
            Ok(v) => serde_json::to_value(v).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        let out = serde_json::json!({
            "matchmaking": match &mm { Ok(v) => serde_json::to_value(v)?, Err(e) => serde_json::json!({ "error": format!("{e:#}") }) },
            "connections": connections.iter().map(|(url, s)| serde_json::json!({
                "url": url,
                "status": as_json(s),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match &mm {
            Ok(v) => {
                println!(
                    "matchmaking {}: {} queued, {} matches running, allocator {}",
                    args.api.matchmaking,
                    v.queued,
                    v.matches_running,
                    v.allocator["allocator"].as_str().unwrap_or("?")
                );
                println!(
                    "  {:<24} {:>9} {:>9} {:>9}  control",
                    "instance", "running", "capacity", "draining"
                );
                for i in v.allocator["instances"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<24} {:>9} {:>9} {:>9}  {}",
                        i["id"].as_str().unwrap_or("?"),
                        i["running"],
                        i["capacity"],
                        i["draining"],
                        i["control"].as_str().unwrap_or("?")
                    );
                }
            }
            Err(e) => println!("matchmaking {}: unreachable: {e:#}", args.api.matchmaking),
        }
        for (url, s) in &connections {
            match s {
                Ok(v) => println!(
                    "connection {url}: {} connected, {} sessions, {} players on other servers, sockets {}, bus {}",
                    v.connected,
                    v.sessions,
                    v.remote_players,
                    serde_json::json!(v.sockets),
                    v.bus
                ),
                Err(e) => println!("connection {url}: unreachable: {e:#}"),
            }
        }
    }
    // An operator's script can tell a healthy stack from one with unreachable parts.
    if mm.is_err() || connections.iter().any(|(_, s)| s.is_err()) {
        bail!("some parts did not answer");
    }
    Ok(())
}

pub fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let control_token = token::load_control_token(args.control_token_file.as_deref())?;
    let status = args.api.status()?;
    let instances = status.allocator["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(instance) = instances.iter().find(|i| i["id"] == args.instance.as_str()) else {
        let known: Vec<&str> = instances.iter().filter_map(|i| i["id"].as_str()).collect();
        bail!(
            "no instance `{}` (known: {})",
            args.instance,
            known.join(", ")
        );
    };
    let control = instance["control"]
        .as_str()
        .context("the instance has no control address")?;
    let instances = InstanceClient::new(http()?, control_token);
    block_on(instances.drain(control))??;
    println!(
        "draining {}: no new matches; {} running finish first, then it stops",
        args.instance, instance["running"]
    );
    Ok(())
}
