//! The `server-connection` binary (the same server as `croft connection`).

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "server-connection",
    version,
    about = "croft Global Connection Server"
)]
struct Cli {
    #[command(flatten)]
    config: server_connection::ConnectionConfig,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = server_connection::run(cli.config) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
