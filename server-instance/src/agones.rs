//! Running under Agones: the game server's side of the GameServer lifecycle, through the SDK
//! sidecar (crate `agones`, gRPC on `localhost:$AGONES_SDK_GRPC_PORT`), only with `--agones`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agones::Sdk;
use bevy::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::control::ControlShared;

/// How often the tick pings Agones' health check (Agones' default period is 5 s).
pub const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// How often the lifecycle task compares the running matches with the counter.
const SYNC_EVERY: Duration = Duration::from_millis(500);

/// The counter is written again this often even when nothing changed here, so an increment
/// by an allocation whose match never arrived is undone.
const RESYNC_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct AgonesSettings {
    /// How long to wait for the sidecar and for the GameServer to have an address.
    pub connect_timeout: Duration,
    /// The GameServer port (`spec.ports[].name`) the netcode socket is published on.
    pub port_name: String,
    /// The Agones counter that holds the running matches.
    pub counter: String,
    /// An Allocated server idle this long returns to Ready (`None`: never).
    pub idle_ready: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgonesError {
    #[error(
        "the Agones SDK sidecar did not answer within {0:?} (AGONES_SDK_GRPC_HOST/PORT: {1}); \
         --agones is only for pods that Agones runs"
    )]
    Unreachable(Duration, String),
    #[error("Agones SDK {call}: {detail}")]
    Sdk { call: &'static str, detail: String },
    #[error("the GameServer has no port named `{name}` (its ports: {ports:?})")]
    NoPort { name: String, ports: Vec<String> },
    #[error("the GameServer's port {0} is not a UDP port number")]
    BadPort(i32),
    #[error("the GameServer's address `{0}` does not resolve")]
    Address(String),
    #[error("the GameServer got no address within {0:?}")]
    NoAddress(Duration),
}

fn sdk_error(call: &'static str, e: agones::errors::Error) -> AgonesError {
    let detail = match &e {
        agones::errors::Error::Rpc(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        agones::errors::Error::Transport(t) => format!("transport: {t:?}"),
        other => other.to_string(),
    };
    metrics::counter!("croft_instance_agones_errors_total", "call" => call).increment(1);
    AgonesError::Sdk { call, detail }
}

/// The address clients reach `port_name` at: `status.address` (an IP, or a name that resolves)
/// and that port's host port.
pub fn public_addr(gs: &agones::GameServer, port_name: &str) -> Result<SocketAddr, AgonesError> {
    let status = gs.status.clone().unwrap_or_default();
    let port = status
        .ports
        .iter()
        .find(|p| p.name == port_name)
        .ok_or_else(|| AgonesError::NoPort {
            name: port_name.to_string(),
            ports: status.ports.iter().map(|p| p.name.clone()).collect(),
        })?;
    let port = u16::try_from(port.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(AgonesError::BadPort(port.port))?;
    if let Ok(ip) = status.address.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (status.address.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(AgonesError::Address(status.address))
}

/// A connected SDK and the public address the GameServer was given.
pub struct Link {
    sdk: Sdk,
    pub public: SocketAddr,
    pub name: String,
}

/// Connects to the sidecar and waits until the GameServer has an address and the named port.
///
/// Only with `--agones`; without it nothing in this module runs and no connection is attempted
/// (the SDK's connect blocks for 30 s when no sidecar is there).
///
/// Called before the sockets bind: the GameServer's `status.address` and the host port of the
/// port named `--agones-port-name` become the address connect tokens name (under `portPolicy:
/// Dynamic` the host port differs from the container port the socket binds).
pub async fn connect(settings: &AgonesSettings) -> Result<Link, AgonesError> {
    let target = format!(
        "{}:{}",
        std::env::var("AGONES_SDK_GRPC_HOST").unwrap_or_else(|_| "localhost".into()),
        std::env::var("AGONES_SDK_GRPC_PORT").unwrap_or_else(|_| "9357".into())
    );
    let deadline = Instant::now() + settings.connect_timeout;
    let mut sdk = match tokio::time::timeout(
        settings.connect_timeout,
        Sdk::new_with_host(None, None, None),
    )
    .await
    {
        Ok(Ok(sdk)) => sdk,
        Ok(Err(agones::errors::Error::TimedOut(_))) | Err(_) => {
            return Err(AgonesError::Unreachable(settings.connect_timeout, target));
        }
        Ok(Err(e)) => return Err(sdk_error("connect", e)),
    };
    loop {
        let gs = sdk
            .get_gameserver()
            .await
            .map_err(|e| sdk_error("GetGameServer", e))?;
        let has_address = gs.status.as_ref().is_some_and(|s| !s.address.is_empty());
        if has_address {
            let public = public_addr(&gs, &settings.port_name)?;
            let name = gs.object_meta.map(|m| m.name).unwrap_or_default();
            return Ok(Link { sdk, public, name });
        }
        if Instant::now() >= deadline {
            return Err(AgonesError::NoAddress(settings.connect_timeout));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tick's side of the health check.
#[derive(Resource)]
pub struct AgonesHealth {
    tx: mpsc::Sender<()>,
    last: Option<Instant>,
}

/// Runs on every simulation tick: pings at most every [`HEALTH_EVERY`].
pub fn health_ping(health: Option<ResMut<AgonesHealth>>) {
    let Some(mut health) = health else {
        return;
    };
    let now = Instant::now();
    if health.last.is_some_and(|t| now - t < HEALTH_EVERY) {
        return;
    }
    health.last = Some(now);
    // Full: the sidecar is slow and pings are queued already; one more changes nothing.
    let _ = health.tx.try_send(());
}

/// The lifecycle task; [`Lifecycle::finish`] sends `Shutdown` once the server has drained.
///
/// The GameServer lifecycle, after [`connect`] has found the public address:
/// - Once serving: the counter `--agones-counter` gets this server's match capacity, then `Ready`.
/// - Health: the simulation tick sends a ping every [`HEALTH_EVERY`]; a stuck tick stops the
///   pings and Agones replaces the server.
/// - The counter follows the running matches (matchmaking's `GameServerAllocation` increments
///   it when it places a match; the server sets it back to what really runs, so a placement
///   that never arrived does not hold a slot forever).
/// - An `Allocated` server with no match for `--agones-idle-ready-seconds` goes back to `Ready`,
///   so the fleet autoscaler can reclaim it.
/// - Draining sets the counter capacity to 0 (no allocation selects it any more); once the last
///   match has ended, `Shutdown`, and Agones deletes the pod.
pub struct Lifecycle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Lifecycle {
    /// Marks the server Ready and starts following its matches. Returns the resource the tick
    /// pings health through.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        link: Link,
        shared: Arc<ControlShared>,
        settings: AgonesSettings,
    ) -> (Lifecycle, AgonesHealth) {
        let health = AgonesHealth {
            tx: {
                let _guard = runtime.enter();
                link.sdk.health_check()
            },
            last: None,
        };
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(run(link.sdk, shared, settings, stopped));
        (
            Lifecycle {
                stop: Some(stop),
                task,
            },
            health,
        )
    }

    /// After the app has exited: `Shutdown` (waits up to `timeout`).
    pub fn finish(mut self, runtime: &tokio::runtime::Runtime, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task;
        let _ = runtime.block_on(async { tokio::time::timeout(timeout, task).await });
    }
}

async fn run(
    mut sdk: Sdk,
    shared: Arc<ControlShared>,
    settings: AgonesSettings,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut beta = sdk.beta().clone();
    let counter = settings.counter.as_str();
    let capacity = shared.capacity() as i64;
    // A fleet without the counter still works: allocations then cannot pack by it.
    let counting = match beta.set_counter_capacity(counter, capacity).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %sdk_error("UpdateCounter", e), counter, "Agones counter not usable; match counts are not reported");
            false
        }
    };
    // Ready must get through, or Agones never allocates this server.
    loop {
        match sdk.ready().await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(error = %sdk_error("Ready", e), "Agones Ready failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut stopped => { shutdown(&mut sdk).await; return; }
                }
            }
        }
    }
    tracing::info!(capacity, counting, "Agones: Ready");
    let mut reported: Option<usize> = None;
    let mut last_write = Instant::now();
    let mut closed = false;
    let mut allocated_idle: Option<Instant> = None;
    let mut last_state_check = Instant::now();
    let mut tick = tokio::time::interval(SYNC_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => break,
        }
        let running = shared.running();
        let draining = shared.draining.load(Ordering::SeqCst);
        if counting && draining && !closed {
            match beta.set_counter_capacity(counter, 0).await {
                Ok(()) => {
                    closed = true;
                    tracing::info!("Agones: draining, counter capacity 0");
                }
                Err(e) => {
                    tracing::warn!(error = %sdk_error("UpdateCounter", e), "Agones: closing the counter failed")
                }
            }
        }
        if counting
            && !closed
            && (reported != Some(running) || last_write.elapsed() >= RESYNC_EVERY)
        {
            match beta.set_counter_count(counter, running as i64).await {
                Ok(()) => {
                    reported = Some(running);
                    last_write = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(error = %sdk_error("UpdateCounter", e), running, "Agones: counter update failed")
                }
            }
        }
        if running > 0 || draining {
            allocated_idle = None;
            continue;
        }
        let Some(idle_ready) = settings.idle_ready else {
            continue;
        };
        if last_state_check.elapsed() < RESYNC_EVERY.min(idle_ready) {
            continue;
        }
        last_state_check = Instant::now();
        match sdk.get_gameserver().await {
            Ok(gs) if gs.status.as_ref().is_some_and(|s| s.state == "Allocated") => {
                // Idle since it was first seen Allocated and empty, so a match that is on its
                // way from a fresh allocation has time to arrive.
                let since = *allocated_idle.get_or_insert_with(Instant::now);
                if since.elapsed() >= idle_ready && shared.running() == 0 {
                    allocated_idle = None;
                    match sdk.ready().await {
                        Ok(()) => tracing::info!("Agones: idle, back to Ready"),
                        Err(e) => {
                            tracing::warn!(error = %sdk_error("Ready", e), "Agones: return to Ready failed")
                        }
                    }
                }
            }
            Ok(_) => allocated_idle = None,
            Err(e) => {
                tracing::warn!(error = %sdk_error("GetGameServer", e), "Agones: state check failed")
            }
        }
    }
    if counting
        && !closed
        && let Err(e) = beta.set_counter_capacity(counter, 0).await
    {
        tracing::warn!(error = %sdk_error("UpdateCounter", e), "Agones: closing the counter failed");
    }
    shutdown(&mut sdk).await;
}

async fn shutdown(sdk: &mut Sdk) {
    match sdk.shutdown().await {
        Ok(()) => tracing::info!("Agones: Shutdown"),
        Err(e) => tracing::error!(error = %sdk_error("Shutdown", e), "Agones Shutdown failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gs(address: &str, ports: &[(&str, i32)]) -> agones::GameServer {
        agones::GameServer {
            status: Some(agones::Status {
                state: "Scheduled".into(),
                address: address.into(),
                ports: ports
                    .iter()
                    .map(|(n, p)| agones::Port {
                        name: (*n).into(),
                        port: *p,
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_public_address_is_the_node_address_and_the_named_host_port() {
        let g = gs("203.0.113.7", &[("control", 7100), ("netcode", 7531)]);
        assert_eq!(
            public_addr(&g, "netcode").unwrap(),
            "203.0.113.7:7531".parse().unwrap()
        );
        assert_eq!(
            public_addr(&gs("::1", &[("netcode", 9)]), "netcode").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            public_addr(&gs("localhost", &[("netcode", 9)]), "netcode")
                .unwrap()
                .port(),
            9
        );
    }

    #[test]
    fn a_missing_port_or_a_bad_address_is_a_clear_error() {
        let e = public_addr(&gs("203.0.113.7", &[("control", 7100)]), "netcode").unwrap_err();
        assert!(e.to_string().contains("no port named `netcode`"), "{e}");
        assert!(e.to_string().contains("control"), "{e}");
        assert!(matches!(
            public_addr(&gs("203.0.113.7", &[("netcode", 70000)]), "netcode"),
            Err(AgonesError::BadPort(70000))
        ));
        assert!(matches!(
            public_addr(&gs("no such host.invalid", &[("netcode", 1)]), "netcode"),
            Err(AgonesError::Address(_))
        ));
    }
}
