//! `croft`: the one command-line entry point of the stack.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod broker;
mod cards;
mod drill;
mod ops;
mod top;
mod up;
mod users;

// The same allocator as the `server-instance` binary, since `croft instance` runs the same server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "croft",
    version,
    about = "croft: an authoritative game backend for card games with farming and crafting"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole stack locally on embedded defaults and play matches with bots.
    Up(up::UpArgs),
    /// Kill and restart each kind of process of a multi-process stack under load, stop the
    /// broker and the database, and check that nothing was lost (`--soak`: no faults, memory of
    /// every process sampled and checked flat).
    Drill(drill::DrillArgs),
    /// Run an instance server (the same as the `server-instance` binary).
    Instance(server_instance::InstanceConfig),
    /// Run the auth service (login, sessions, tokens) alone.
    Auth(auth::server::AuthConfig),
    /// Run a connection server (presence, friends, chat, matchmaking relay).
    Connection(server_connection::ConnectionConfig),
    /// Run matchmaking with its local instance allocator.
    Matchmaking(matchmaking::server::MatchmakingConfig),
    /// A Kafka-protocol broker in its own process (librdkafka's built-in broker), for
    /// development and outage drills.
    Broker(broker::BrokerArgs),
    /// What runs where: queue, matches, instances, connection servers.
    Status(ops::StatusArgs),
    /// Stop placing matches on an instance; it stops once its matches have ended.
    Drain(ops::DrainArgs),
    /// A live view of a running stack from its /metrics endpoints (q quits).
    Top(top::TopArgs),
    /// Broadcast a notification to every player on a connection server.
    Notify {
        /// The connection server's admin HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7200")]
        connection: String,
        #[arg(long, env = "CROFT_SERVICE_TOKEN_FILE")]
        service_token_file: Option<PathBuf>,
        text: String,
    },
    /// Apply database migrations.
    Migrate(store::DatabaseArgs),
    /// Account administration.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Card data tools.
    Cards {
        #[command(subcommand)]
        command: CardsCommand,
    },
    /// Write a new random netcode private key (64 hex characters) to a file.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CardsCommand {
    /// Validate the RON data in DIR (default assets/cards); exits non-zero on any error.
    Check { dir: Option<PathBuf> },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Drill(args) => drill::run(args),
        Command::Broker(args) => broker::run(args),
        Command::Status(args) => ops::status(args),
        Command::Drain(args) => ops::drain(args),
        Command::Top(args) => top::run(args),
        Command::Instance(config) => server_instance::run(config),
        Command::Auth(config) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(auth::server::serve(config))),
        Command::Connection(config) => server_connection::run(config),
        Command::Matchmaking(config) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(matchmaking::server::serve(config))),
        Command::Notify {
            connection,
            service_token_file,
            text,
        } => notify(&connection, service_token_file.as_deref(), &text),
        Command::Migrate(db) => users::migrate(db),
        Command::User { command } => users::run(command),
        Command::Cards {
            command: CardsCommand::Check { dir },
        } => cards::check(dir.unwrap_or_else(|| PathBuf::from("assets/cards"))),
        Command::Keygen { out } => token::NetcodeKey::generate()
            .and_then(|k| k.write_file(&out))
            .map(|_| println!("wrote {}", out.display()))
            .map_err(anyhow::Error::from),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn notify(
    connection: &str,
    token_file: Option<&std::path::Path>,
    text: &str,
) -> anyhow::Result<()> {
    let token = server_connection::load_service_token(token_file)?;
    let client = contracts::connection::ConnectionAdminClient::new(
        reqwest::Client::new(),
        connection,
        token,
    );
    ops::block_on(client.notify(text))??;
    println!("sent");
    Ok(())
}
