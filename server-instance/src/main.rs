use clap::Parser;

// mimalloc: the tick allocates many small, short-lived buffers (events, messages); the
// system allocator spent ~20% of the tick benchmark in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    server_instance::run(server_instance::InstanceConfig::parse())
}
