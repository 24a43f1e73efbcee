//! `croft broker`: a Kafka-protocol broker for development and tests, in its own process:
//! librdkafka's built-in broker (the same one `croft up` embeds), with every croft topic created.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// Prefix of the topic names to create.
    #[arg(long, env = "CROFT_KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Write `{"brokers": "host:port"}` here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Runs the broker with every croft topic created up front. It keeps what it was sent in
/// memory until it exits.
///
/// Signals take it down and bring it back without losing its data, for outage drills: SIGUSR1
/// (connections refused and dropped), SIGUSR2 (serving again). SIGTERM or Ctrl-C stop it.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cluster = rdkafka::mocking::MockCluster::new(1)
            .map_err(|e| anyhow::anyhow!("starting the broker: {e}"))?;
        for t in events::EVENT_TYPES {
            let topic = format!("{}{t}", args.topic_prefix);
            cluster
                .create_topic(&topic, args.partitions, 1)
                .map_err(|e| anyhow::anyhow!("creating topic {topic}: {e}"))?;
        }
        let brokers = cluster.bootstrap_servers();
        let mut down = signal(SignalKind::user_defined1())?;
        let mut up = signal(SignalKind::user_defined2())?;
        if let Some(path) = &args.ready_file {
            std::fs::write(path, serde_json::json!({ "brokers": brokers }).to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!("kafka broker listening on {brokers} (SIGUSR1: down, SIGUSR2: up)");
        let stop = telemetry::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = down.recv() => {
                    cluster.broker_down(1).map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("broker down");
                }
                _ = up.recv() => {
                    cluster.broker_up(1).map_err(|e| anyhow::anyhow!("{e}"))?;
                    println!("broker up");
                }
            }
        }
        Ok(())
    })
}
