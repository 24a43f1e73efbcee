//! A stand-in for the Agones SDK sidecar (the `sdkserver` container Agones adds to every game
//! server pod), served over gRPC on loopback for tests.

// tonic's generated service traits return `Result<_, tonic::Status>`; the helpers match them.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// The service code, generated from the `agones` crate's own `sdk.proto` and `beta.proto` (see
/// `build.rs`), so the real SDK client talks to the stand-in unchanged.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod sdk {
        tonic::include_proto!("agones.dev.sdk");
    }
    pub mod beta {
        tonic::include_proto!("agones.dev.sdk.beta");
    }
}

use proto::beta;
use proto::sdk::{self, GameServer, game_server};

/// One SDK call as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    GetGameServer,
    WatchGameServer,
    Ready,
    Allocate,
    Shutdown,
    SetLabel(String, String),
    SetAnnotation(String, String),
    Reserve(i64),
    GetCounter(String),
    UpdateCounter {
        name: String,
        count: Option<i64>,
        capacity: Option<i64>,
        diff: i64,
    },
}

/// What the `GameServer` record starts as.
#[derive(Debug, Clone)]
pub struct Setup {
    pub name: String,
    /// `status.address`: the node address clients are told.
    pub address: String,
    /// `status.ports`: (name, host port).
    pub ports: Vec<(String, u16)>,
    /// `status.counters`: (name, count, capacity).
    pub counters: Vec<(String, i64, i64)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            name: "instances-abcde-12345".into(),
            address: "127.0.0.1".into(),
            ports: vec![("netcode".into(), 7000)],
            counters: vec![("matches".into(), 0, 448)],
        }
    }
}

#[derive(Debug)]
struct State {
    gs: GameServer,
    calls: Vec<Call>,
    health_pings: u64,
}

type Shared = Arc<Mutex<State>>;

/// A running stand-in; stops when dropped.
///
/// It keeps one `GameServer` record and applies the SDK calls the way the sidecar does: `Ready`
/// moves the state to `Ready` (also from `Allocated`), `Allocate` to `Allocated`, `Shutdown` to
/// `Shutdown`; counters are bounded by their capacity; every call is recorded for assertions.
/// [`StandIn::allocate`] plays the part of a `GameServerAllocation` (state `Allocated`, counter
/// incremented), as the matchmaking allocator's request would.
pub struct StandIn {
    addr: SocketAddr,
    state: Shared,
    updates: watch::Sender<GameServer>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    /// Serves on 127.0.0.1 on an ephemeral port, on its own thread and runtime.
    pub fn start(setup: Setup) -> std::io::Result<StandIn> {
        let gs = GameServer {
            object_meta: Some(game_server::ObjectMeta {
                name: setup.name,
                namespace: "croft-games".into(),
                ..Default::default()
            }),
            spec: Some(game_server::Spec {
                health: Some(game_server::spec::Health {
                    disabled: false,
                    period_seconds: 5,
                    failure_threshold: 3,
                    initial_delay_seconds: 10,
                }),
            }),
            status: Some(game_server::Status {
                state: "Scheduled".into(),
                address: setup.address.clone(),
                addresses: vec![game_server::status::Address {
                    r#type: "InternalIP".into(),
                    address: setup.address,
                }],
                ports: setup
                    .ports
                    .into_iter()
                    .map(|(name, port)| game_server::status::Port {
                        name,
                        port: i32::from(port),
                    })
                    .collect(),
                players: None,
                counters: setup
                    .counters
                    .into_iter()
                    .map(|(name, count, capacity)| {
                        (name, game_server::status::CounterStatus { count, capacity })
                    })
                    .collect(),
                lists: HashMap::new(),
            }),
        };
        let (updates, _) = watch::channel(gs.clone());
        let state = Arc::new(Mutex::new(State {
            gs,
            calls: Vec::new(),
            health_pings: 0,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let service = Service {
            state: state.clone(),
            updates: updates.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("agones-standin".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("listener registers");
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(sdk::sdk_server::SdkServer::new(service.clone()))
                        .add_service(beta::sdk_server::SdkServer::new(service))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(StandIn {
            addr,
            state,
            updates,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn health_pings(&self) -> u64 {
        self.lock().health_pings
    }

    /// `status.state`: `Scheduled`, `Ready`, `Allocated`, `Shutdown`.
    pub fn state(&self) -> String {
        self.lock()
            .gs
            .status
            .as_ref()
            .map(|s| s.state.clone())
            .unwrap_or_default()
    }

    /// (count, capacity) of a counter.
    pub fn counter(&self, name: &str) -> Option<(i64, i64)> {
        self.lock()
            .gs
            .status
            .as_ref()
            .and_then(|s| s.counters.get(name))
            .map(|c| (c.count, c.capacity))
    }

    /// What a `GameServerAllocation` with a counter `Increment` action does: the server becomes
    /// `Allocated` and the counter grows by `amount` (refused when it has no room).
    pub fn allocate(&self, counter: &str, amount: i64) -> Result<(), String> {
        let mut state = self.lock();
        let status = state.gs.status.get_or_insert_with(Default::default);
        let c = status
            .counters
            .get_mut(counter)
            .ok_or_else(|| format!("no counter {counter}"))?;
        if c.count + amount > c.capacity {
            return Err(format!("counter {counter} is full"));
        }
        c.count += amount;
        status.state = "Allocated".into();
        let gs = state.gs.clone();
        drop(state);
        self.updates.send_replace(gs);
        Ok(())
    }

    /// Polls `check` every 20 ms until it holds or `timeout` passes; true if it held.
    pub fn wait_until(&self, timeout: Duration, mut check: impl FnMut(&StandIn) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Service {
    state: Shared,
    updates: watch::Sender<GameServer>,
}

impl Service {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    fn set_state(&self, call: Call, to: &str) -> Result<Response<sdk::Empty>, Status> {
        let mut state = self.lock();
        state.calls.push(call);
        let status = state.gs.status.get_or_insert_with(Default::default);
        if status.state == "Shutdown" && to != "Shutdown" {
            return Err(Status::failed_precondition(
                "the game server is shutting down",
            ));
        }
        status.state = to.into();
        let gs = state.gs.clone();
        drop(state);
        self.updates.send_replace(gs);
        Ok(Response::new(sdk::Empty {}))
    }

    fn counter(state: &State, name: &str) -> Result<beta::Counter, Status> {
        state
            .gs
            .status
            .as_ref()
            .and_then(|s| s.counters.get(name))
            .map(|c| beta::Counter {
                name: name.into(),
                count: c.count,
                capacity: c.capacity,
            })
            .ok_or_else(|| Status::not_found(format!("counter not found: {name}")))
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<GameServer, Status>> + Send>>;

#[tonic::async_trait]
impl sdk::sdk_server::Sdk for Service {
    async fn ready(&self, _: Request<sdk::Empty>) -> Result<Response<sdk::Empty>, Status> {
        self.set_state(Call::Ready, "Ready")
    }

    async fn allocate(&self, _: Request<sdk::Empty>) -> Result<Response<sdk::Empty>, Status> {
        self.set_state(Call::Allocate, "Allocated")
    }

    async fn shutdown(&self, _: Request<sdk::Empty>) -> Result<Response<sdk::Empty>, Status> {
        self.set_state(Call::Shutdown, "Shutdown")
    }

    async fn health(
        &self,
        request: Request<Streaming<sdk::Empty>>,
    ) -> Result<Response<sdk::Empty>, Status> {
        let mut stream = request.into_inner();
        while let Some(ping) = stream.next().await {
            ping?;
            self.lock().health_pings += 1;
        }
        Ok(Response::new(sdk::Empty {}))
    }

    async fn get_game_server(
        &self,
        _: Request<sdk::Empty>,
    ) -> Result<Response<GameServer>, Status> {
        let mut state = self.lock();
        state.calls.push(Call::GetGameServer);
        Ok(Response::new(state.gs.clone()))
    }

    type WatchGameServerStream = WatchStream;

    async fn watch_game_server(
        &self,
        _: Request<sdk::Empty>,
    ) -> Result<Response<WatchStream>, Status> {
        self.record(Call::WatchGameServer);
        let stream = tokio_stream::wrappers::WatchStream::new(self.updates.subscribe()).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_label(&self, r: Request<sdk::KeyValue>) -> Result<Response<sdk::Empty>, Status> {
        let kv = r.into_inner();
        let mut state = self.lock();
        state
            .calls
            .push(Call::SetLabel(kv.key.clone(), kv.value.clone()));
        if let Some(meta) = state.gs.object_meta.as_mut() {
            meta.labels
                .insert(format!("agones.dev/sdk-{}", kv.key), kv.value);
        }
        Ok(Response::new(sdk::Empty {}))
    }

    async fn set_annotation(
        &self,
        r: Request<sdk::KeyValue>,
    ) -> Result<Response<sdk::Empty>, Status> {
        let kv = r.into_inner();
        let mut state = self.lock();
        state
            .calls
            .push(Call::SetAnnotation(kv.key.clone(), kv.value.clone()));
        if let Some(meta) = state.gs.object_meta.as_mut() {
            meta.annotations
                .insert(format!("agones.dev/sdk-{}", kv.key), kv.value);
        }
        Ok(Response::new(sdk::Empty {}))
    }

    async fn reserve(&self, r: Request<sdk::Duration>) -> Result<Response<sdk::Empty>, Status> {
        let seconds = r.into_inner().seconds;
        let mut state = self.lock();
        state.calls.push(Call::Reserve(seconds));
        state.gs.status.get_or_insert_with(Default::default).state = "Reserved".into();
        Ok(Response::new(sdk::Empty {}))
    }
}

#[tonic::async_trait]
impl beta::sdk_server::Sdk for Service {
    async fn get_counter(
        &self,
        r: Request<beta::GetCounterRequest>,
    ) -> Result<Response<beta::Counter>, Status> {
        let name = r.into_inner().name;
        let mut state = self.lock();
        state.calls.push(Call::GetCounter(name.clone()));
        Self::counter(&state, &name).map(Response::new)
    }

    async fn update_counter(
        &self,
        r: Request<beta::UpdateCounterRequest>,
    ) -> Result<Response<beta::Counter>, Status> {
        let update = r
            .into_inner()
            .counter_update_request
            .ok_or_else(|| Status::invalid_argument("CounterUpdateRequest: missing"))?;
        let mut state = self.lock();
        state.calls.push(Call::UpdateCounter {
            name: update.name.clone(),
            count: update.count,
            capacity: update.capacity,
            diff: update.count_diff,
        });
        let status = state.gs.status.get_or_insert_with(Default::default);
        let c = status
            .counters
            .get_mut(&update.name)
            .ok_or_else(|| Status::not_found(format!("counter not found: {}", update.name)))?;
        // As the sidecar: capacity first, then the count, each checked against [0, capacity].
        if let Some(capacity) = update.capacity {
            if capacity < 0 {
                return Err(Status::out_of_range("capacity must be at least 0"));
            }
            c.capacity = capacity;
            c.count = c.count.min(capacity);
        }
        if let Some(count) = update.count {
            if !(0..=c.capacity).contains(&count) {
                return Err(Status::out_of_range(format!(
                    "count {count} out of range [0, {}]",
                    c.capacity
                )));
            }
            c.count = count;
        }
        if update.count_diff != 0 {
            let next = c.count + update.count_diff;
            if !(0..=c.capacity).contains(&next) {
                return Err(Status::out_of_range(format!(
                    "count {next} out of range [0, {}]",
                    c.capacity
                )));
            }
            c.count = next;
        }
        let counter = beta::Counter {
            name: update.name,
            count: c.count,
            capacity: c.capacity,
        };
        let gs = state.gs.clone();
        drop(state);
        self.updates.send_replace(gs);
        Ok(Response::new(counter))
    }

    async fn get_list(
        &self,
        _: Request<beta::GetListRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("lists are not used by croft"))
    }

    async fn update_list(
        &self,
        _: Request<beta::UpdateListRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("lists are not used by croft"))
    }

    async fn add_list_value(
        &self,
        _: Request<beta::AddListValueRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("lists are not used by croft"))
    }

    async fn remove_list_value(
        &self,
        _: Request<beta::RemoveListValueRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("lists are not used by croft"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real SDK client against the stand-in: the calls land and change the record.
    #[test]
    fn the_agones_sdk_client_drives_the_stand_in() {
        let standin = StandIn::start(Setup::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut sdk = agones::Sdk::new(Some(standin.port()), None).await.unwrap();
            let gs = sdk.get_gameserver().await.unwrap();
            let status = gs.status.unwrap();
            assert_eq!(status.state, "Scheduled");
            assert_eq!(status.ports[0].name, "netcode");
            sdk.ready().await.unwrap();
            let health = sdk.health_check();
            health.send(()).await.unwrap();
            health.send(()).await.unwrap();
            let mut beta = sdk.beta().clone();
            beta.set_counter_capacity("matches", 10).await.unwrap();
            beta.set_counter_count("matches", 3).await.unwrap();
            assert!(beta.set_counter_count("matches", 11).await.is_err());
            assert!(beta.get_counter_count("nope").await.is_err());
            assert_eq!(beta.get_counter_count("matches").await.unwrap(), 3);
            sdk.shutdown().await.unwrap();
        });
        assert!(standin.wait_until(Duration::from_secs(5), |s| s.health_pings() == 2));
        assert_eq!(standin.state(), "Shutdown");
        assert_eq!(standin.counter("matches"), Some((3, 10)));
        let calls = standin.calls();
        assert!(calls.contains(&Call::Ready));
        assert_eq!(calls.last(), Some(&Call::Shutdown));
    }

    #[test]
    fn an_allocation_needs_room_on_the_counter() {
        let standin = StandIn::start(Setup {
            counters: vec![("matches".into(), 0, 1)],
            ..Setup::default()
        })
        .unwrap();
        standin.allocate("matches", 1).unwrap();
        assert_eq!(standin.state(), "Allocated");
        assert!(standin.allocate("matches", 1).is_err());
        assert!(standin.allocate("other", 1).is_err());
        assert_eq!(standin.counter("matches"), Some((1, 1)));
    }
}
