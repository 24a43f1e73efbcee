//! `croft`: the one command-line entry point of the stack.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cards;
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
    /// Run an instance server (the same as the `server-instance` binary).
    Instance(server_instance::InstanceConfig),
    /// Run the auth service (login, sessions, tokens) alone.
    Auth(auth::server::AuthConfig),
    /// Apply database migrations.
    Migrate(users::DatabaseArg),
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
    /// Development only: mint an instance-server connect token (base64) with the shared key.
    DevToken {
        #[arg(long, env = "CROFT_NETCODE_KEY_FILE")]
        netcode_key_file: Option<PathBuf>,
        /// The instance server's UDP address.
        #[arg(long)]
        server: std::net::SocketAddr,
        #[arg(long)]
        user: u64,
        #[arg(long = "match")]
        match_id: u64,
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
        Command::Instance(config) => server_instance::run(config),
        Command::Auth(config) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(auth::server::serve(config))),
        Command::Migrate(db) => users::migrate(db),
        Command::User { command } => users::run(command),
        Command::Cards {
            command: CardsCommand::Check { dir },
        } => cards::check(dir.unwrap_or_else(|| PathBuf::from("assets/cards"))),
        Command::Keygen { out } => token::NetcodeKey::generate()
            .and_then(|k| k.write_file(&out))
            .map(|_| println!("wrote {}", out.display()))
            .map_err(anyhow::Error::from),
        Command::DevToken {
            netcode_key_file,
            server,
            user,
            match_id,
        } => dev_token(netcode_key_file, server, user, match_id),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dev_token(
    key_file: Option<PathBuf>,
    server: std::net::SocketAddr,
    user: u64,
    match_id: u64,
) -> anyhow::Result<()> {
    let key = token::NetcodeKey::load(key_file.as_deref())?;
    let issuer = token::ConnectTokenIssuer::new(key);
    let t = issuer.mint_instance(server, user, match_id)?;
    println!("{}", token::encode_token(&t));
    Ok(())
}
