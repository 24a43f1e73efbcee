//! Operator commands: `croft status` (what runs where, from the services' own endpoints) and
//! `croft drain INSTANCE` (no new matches there; it stops once its matches have ended).

use std::path::PathBuf;

use anyhow::{Context, bail};

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
    /// `GET /v1/matchmaking/status`: queue, matches, the allocator and its instances.
    pub fn status(&self, http: &reqwest::blocking::Client) -> anyhow::Result<serde_json::Value> {
        let token = server_connection::load_service_token(self.service_token_file.as_deref())?;
        get_json(
            http,
            &format!(
                "{}/v1/matchmaking/status",
                self.matchmaking.trim_end_matches('/')
            ),
            &token,
        )
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

fn get_json(
    http: &reqwest::blocking::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let resp = http
        .get(url)
        .bearer_auth(token)
        .send()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", resp.text().unwrap_or_default());
    }
    resp.json().with_context(|| format!("GET {url}: not JSON"))
}

fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?)
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let token = server_connection::load_service_token(args.api.service_token_file.as_deref())?;
    let http = client()?;
    let mm = args.api.status(&http);
    let connections: Vec<(String, anyhow::Result<serde_json::Value>)> = args
        .connections
        .iter()
        .map(|c| {
            let url = format!("{}/v1/status", c.trim_end_matches('/'));
            (c.clone(), get_json(&http, &url, &token))
        })
        .collect();
    if args.json {
        let err = |e: &anyhow::Error| serde_json::json!({ "error": format!("{e:#}") });
        let out = serde_json::json!({
            "matchmaking": match &mm { Ok(v) => v.clone(), Err(e) => err(e) },
            "connections": connections.iter().map(|(url, s)| serde_json::json!({
                "url": url,
                "status": match s { Ok(v) => v.clone(), Err(e) => err(e) },
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match &mm {
            Ok(v) => {
                println!(
                    "matchmaking {}: {} queued, {} matches running, allocator {}",
                    args.api.matchmaking,
                    v["queued"],
                    v["matches_running"],
                    v["allocator"]["allocator"].as_str().unwrap_or("?")
                );
                println!(
                    "  {:<24} {:>9} {:>9} {:>9}  control",
                    "instance", "running", "capacity", "draining"
                );
                for i in v["allocator"]["instances"].as_array().into_iter().flatten() {
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
                    v["connected"], v["sessions"], v["remote_players"], v["sockets"], v["bus"]
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
    let http = client()?;
    let status = args.api.status(&http)?;
    let instances = status["allocator"]["instances"]
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
    let url = format!("{}/v1/drain", control.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .bearer_auth(control_token)
        .send()
        .with_context(|| format!("POST {url}"))?;
    let code = resp.status();
    if !code.is_success() {
        bail!("POST {url}: {code}: {}", resp.text().unwrap_or_default());
    }
    println!(
        "draining {}: no new matches; {} running finish first, then it stops",
        args.instance, instance["running"]
    );
    Ok(())
}
