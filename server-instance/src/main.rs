use clap::Parser;

fn main() -> anyhow::Result<()> {
    server_instance::run(server_instance::InstanceConfig::parse())
}
