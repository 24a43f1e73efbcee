//! Where matches run. [`Allocator`] is the interface matchmaking uses; [`LocalAllocator`] is
//! the embedded default: a pool of `croft instance` child processes on this machine.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use contracts::CallError;
use contracts::instance::InstanceClient;
use contracts::instance::v1::{
    CreateMatchRequest, EndedMatch, HubRequest, MatchesReport, OpenFarmRequest, ReadyInfo,
};
use tokio::sync::Mutex;

use crate::queue::{MatchId, UserId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a match was placed (kept in the control store while the match runs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Placement {
    pub instance: String,
    /// The UDP address the players' connect tokens name.
    pub server_addr: SocketAddr,
    /// The instance's WebSocket URL, for web clients.
    pub ws_url: Option<String>,
    /// The instance's control API, where the leader checks that the match still runs there
    /// (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// Where a client connects: the UDP address its token names, and the same server's WebSocket
/// URL when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub server_addr: SocketAddr,
    pub ws_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("no instance has a free slot and no more can be started")]
    NoCapacity,
    #[error("instance refused the match: {0}")]
    Refused(String),
    #[error("cannot start an instance: {0}")]
    Start(String),
    /// The request may or may not have reached the instance: the match id must not be placed
    /// anywhere else.
    #[error("no answer from the instance: {0}")]
    Unknown(String),
}

/// What happened to placed matches since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocEvent {
    Ended(EndedMatch),
    /// The instance hosting it died or stopped answering: the match is lost.
    Aborted {
        match_id: MatchId,
        players: [UserId; 2],
        instance: String,
    },
}

impl From<CallError> for AllocError {
    /// No answer is `Unknown` (the instance may have acted on it); any other failure is
    /// `Refused`.
    fn from(e: CallError) -> Self {
        if e.is_unreachable() {
            AllocError::Unknown(e.to_string())
        } else {
            AllocError::Refused(e.to_string())
        }
    }
}

/// The matches an allocator placed on one instance, and how far it has read that instance's
/// feed of ended matches. Every allocator keeps one per instance.
#[derive(Debug, Default)]
pub(crate) struct Placed {
    pub matches: HashMap<MatchId, [UserId; 2]>,
    pub ended_after: u64,
}

impl Placed {
    /// The ended matches of a report that were placed here, each once. Only these: an
    /// instance restarted on the same address, or a stray report, must not free players of
    /// another match.
    pub fn take_ended(&mut self, ended: Vec<EndedMatch>) -> Vec<EndedMatch> {
        if let Some(last) = ended.last() {
            self.ended_after = last.seq;
        }
        ended
            .into_iter()
            .filter(|e| self.matches.remove(&e.match_id).is_some())
            .collect()
    }

    /// The instance is lost: every match placed there is aborted.
    pub fn abort_all(&mut self, instance: &str) -> Vec<AllocEvent> {
        metrics::counter!("croft_allocator_instances_lost_total").increment(1);
        self.matches
            .drain()
            .map(|(match_id, players)| AllocEvent::Aborted {
                match_id,
                players,
                instance: instance.to_string(),
            })
            .collect()
    }
}

/// An instance as an allocator tracks it: how to reach it, how full it is, what was placed there
/// and how far its feed of ended matches was read. Every allocator keeps one per instance.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub control: String,
    pub capacity: usize,
    pub running: usize,
    pub draining: bool,
    pub placed: Placed,
    pub failed_polls: u32,
    /// The instance's run as its last report named it (`MatchesReport::boot`).
    pub boot: String,
}

impl Tracked {
    pub fn new(control: String) -> Self {
        Self {
            control,
            capacity: 0,
            running: 0,
            draining: false,
            placed: Placed::default(),
            failed_polls: 0,
            boot: String::new(),
        }
    }

    /// Whether a match may be placed here now.
    pub fn has_room(&self) -> bool {
        !self.draining && self.running < self.capacity
    }

    /// Creates `request` on this instance (named `name` in the placement): counted and booked
    /// here; an instance that refuses (full, draining) counts as full until the next poll.
    pub async fn create(
        &mut self,
        instances: &InstanceClient,
        name: &str,
        request: &CreateMatchRequest,
    ) -> Result<Placement, AllocError> {
        match instances.create_match(&self.control, request).await {
            Ok(created) => {
                self.running += 1;
                self.placed
                    .matches
                    .insert(request.match_id, request.players);
                Ok(Placement {
                    instance: name.to_string(),
                    server_addr: created.server_addr,
                    ws_url: created.ws_url,
                    control: Some(self.control.clone()),
                })
            }
            Err(e) => {
                let e = AllocError::from(e);
                if matches!(e, AllocError::Refused(_)) {
                    self.running = self.capacity;
                }
                Err(e)
            }
        }
    }

    /// Takes one poll's report (asked with `placed.ended_after`): what runs, whether it drains,
    /// and the matches placed here that ended. A report from another run of the instance (a
    /// restart at the same address) means what was placed here is lost: aborted.
    pub fn report(&mut self, name: &str, report: MatchesReport) -> Vec<AllocEvent> {
        self.failed_polls = 0;
        self.running = report.live.len();
        let restarted =
            !self.boot.is_empty() && !report.boot.is_empty() && self.boot != report.boot;
        // Draining lasts for a run: a restarted instance serves again unless it says otherwise.
        self.draining = report.draining || (self.draining && !restarted);
        self.boot = report.boot;
        if restarted {
            tracing::warn!(instance = %name, "instance restarted; its matches are aborted");
            // The new run numbers its ended matches from 1.
            self.placed.ended_after = 0;
            return self.placed.abort_all(name);
        }
        self.placed
            .take_ended(report.ended)
            .into_iter()
            .map(AllocEvent::Ended)
            .collect()
    }

    /// The instance for operators (`status`).
    pub fn status(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "id": name, "control": self.control, "capacity": self.capacity,
            "running": self.running, "draining": self.draining,
        })
    }
}

/// Opens `user`'s farm on the first of `hosts` (name, control URL) that takes it (the one
/// holding the farm's lease, or any when none does): the host's name and the farm's address.
pub(crate) async fn open_farm_first(
    instances: &InstanceClient,
    hosts: Vec<(String, String)>,
    user: UserId,
) -> Result<(String, Endpoint), AllocError> {
    first_answer(hosts, "farm", |control| async move {
        open_farm_on(instances, &control, user).await
    })
    .await
}

/// Keeps a place for `user` (`name`) in the common area of the first of `hosts` that answers:
/// the host's name, and the hub shard and its address.
pub(crate) async fn keep_hub_place_first(
    instances: &InstanceClient,
    hosts: Vec<(String, String)>,
    user: UserId,
    name: &str,
) -> Result<(String, HubPlace), AllocError> {
    first_answer(hosts, "hub place", |control| async move {
        keep_hub_place_on(instances, &control, user, name).await
    })
    .await
}

/// A place in the common area: the hub shard and the address of its socket.
pub type HubPlace = (u32, Endpoint);

/// Where matches run: the interface matchmaking uses. [`LocalAllocator`] is the embedded
/// default; the Kubernetes allocator plugs into the same interface.
pub trait Allocator: Send + Sync {
    /// Places a match on an instance with a free slot, starting one if needed.
    fn allocate(&self, request: CreateMatchRequest)
    -> BoxFuture<'_, Result<Placement, AllocError>>;
    /// Collects ended and lost matches, and scales the pool.
    fn poll(&self) -> BoxFuture<'_, Vec<AllocEvent>>;
    /// A summary for operators.
    fn status(&self) -> BoxFuture<'_, serde_json::Value>;
    /// Drains every instance and waits for them to exit.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
    /// Opens `user`'s farm on an instance (`home` first: the one the control store says hosts
    /// it) and answers that instance's name and the UDP address the farm token must name.
    fn open_farm(
        &self,
        user: UserId,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, Endpoint), AllocError>>;
    /// Keeps a place for `user` (seen as `name`) in the common area (`home` first: the instance
    /// the control store says hosts it): that instance's name, the hub shard and the UDP
    /// address its hub token must name.
    fn open_hub(
        &self,
        user: UserId,
        name: String,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, HubPlace), AllocError>>;
}

/// Opens `user`'s farm on the instance at `control`: the address of the farm's socket.
pub(crate) async fn open_farm_on(
    instances: &InstanceClient,
    control: &str,
    user: UserId,
) -> Result<Endpoint, AllocError> {
    let r = instances
        .open_farm(control, &OpenFarmRequest { user_id: user })
        .await?;
    Ok(Endpoint {
        server_addr: r.server_addr,
        ws_url: r.ws_url,
    })
}

/// Keeps a place for `user` in the common area of the instance at `control`: the shard and the
/// address of its socket.
pub(crate) async fn keep_hub_place_on(
    instances: &InstanceClient,
    control: &str,
    user: UserId,
    name: &str,
) -> Result<(u32, Endpoint), AllocError> {
    let request = HubRequest {
        user_id: user,
        name: name.to_string(),
    };
    let r = instances.keep_hub_place(control, &request).await?;
    let endpoint = Endpoint {
        server_addr: r.server_addr,
        ws_url: r.ws_url,
    };
    Ok((r.hub_id, endpoint))
}

/// Tries the instances `hosts` (name, control URL) in order with `call`: the first that answers
/// wins, and its name comes back with the answer. No hosts: `NoCapacity`.
pub(crate) async fn first_answer<T, Fut>(
    hosts: Vec<(String, String)>,
    what: &str,
    call: impl Fn(String) -> Fut,
) -> Result<(String, T), AllocError>
where
    Fut: Future<Output = Result<T, AllocError>>,
{
    let mut last = AllocError::NoCapacity;
    for (name, control) in hosts {
        match call(control).await {
            Ok(v) => return Ok((name, v)),
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "{what}: refused");
                last = e;
            }
        }
    }
    Err(last)
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The program and leading arguments that start an instance server, e.g. `croft instance`.
    pub command: Vec<String>,
    /// Arguments added to every instance (card folder, key files, ...).
    pub extra_args: Vec<String>,
    /// The instances' control credential.
    pub control_token: String,
    /// Where ready files and instance logs go.
    pub work_dir: PathBuf,
    /// Instances kept running even when idle.
    pub warm: usize,
    pub max_instances: usize,
    /// Matches per instance.
    pub max_matches: usize,
    /// Start another instance when running/capacity reaches this.
    pub scale_up_at: f64,
    /// Stop an idle instance beyond the warm pool after this long without matches.
    pub idle_stop_after: Duration,
    /// Consecutive failed polls before an instance is declared dead.
    pub max_failed_polls: u32,
}

impl LocalConfig {
    pub fn new(command: Vec<String>, control_token: String, work_dir: PathBuf) -> Self {
        Self {
            command,
            extra_args: Vec::new(),
            control_token,
            work_dir,
            warm: 1,
            max_instances: 4,
            max_matches: 500,
            scale_up_at: 0.75,
            idle_stop_after: Duration::from_secs(60),
            max_failed_polls: 3,
        }
    }
}

struct Instance {
    id: String,
    child: tokio::process::Child,
    /// Its control URL, load and the matches placed here.
    t: Tracked,
    udp: Vec<SocketAddr>,
    /// Its WebSocket URL, when it has one.
    ws: Option<String>,
    idle_since: Option<Instant>,
}

pub struct LocalAllocator {
    config: LocalConfig,
    instances: InstanceClient,
    state: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    instances: Vec<Instance>,
    next_id: u64,
    /// Set by `shutdown`: nothing is placed or started after it.
    closed: bool,
}

impl LocalAllocator {
    /// Serving instances for a farm or the hub, `prefer` first, then the oldest (the warm
    /// pool outlives extras, and farms do not count as busy when the pool scales down);
    /// one is started if none serves.
    async fn farm_or_hub_hosts(
        &self,
        pool: &mut Pool,
        prefer: Option<&String>,
    ) -> Result<Vec<(String, String)>, AllocError> {
        if pool.closed {
            return Err(AllocError::NoCapacity);
        }
        if !pool.instances.iter().any(|s| !s.t.draining) {
            self.spawn(pool).await?;
        }
        let mut hosts: Vec<(String, String)> = pool
            .instances
            .iter()
            .filter(|s| !s.t.draining)
            .map(|s| (s.id.clone(), s.t.control.clone()))
            .collect();
        hosts.sort_by_key(|(id, _)| Some(id) != prefer);
        Ok(hosts)
    }

    /// Starts the warm pool.
    pub async fn start(config: LocalConfig) -> Result<Self, AllocError> {
        std::fs::create_dir_all(&config.work_dir)
            .map_err(|e| AllocError::Start(format!("{}: {e}", config.work_dir.display())))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AllocError::Start(e.to_string()))?;
        let instances = InstanceClient::new(http, config.control_token.clone());
        let this = Self {
            config,
            instances,
            state: Mutex::new(Pool::default()),
        };
        {
            let mut pool = this.state.lock().await;
            for _ in 0..this.config.warm {
                this.spawn(&mut pool).await?;
            }
        }
        Ok(this)
    }

    async fn spawn(&self, pool: &mut Pool) -> Result<usize, AllocError> {
        pool.next_id += 1;
        let id = format!("local-{}", pool.next_id);
        let ready = self.config.work_dir.join(format!("{id}.ready.json"));
        let log = self.config.work_dir.join(format!("{id}.log"));
        let _ = std::fs::remove_file(&ready);
        let (program, lead) = self
            .config
            .command
            .split_first()
            .ok_or_else(|| AllocError::Start("empty instance command".into()))?;
        let log_file = std::fs::File::create(&log)
            .map_err(|e| AllocError::Start(format!("{}: {e}", log.display())))?;
        let child = tokio::process::Command::new(program)
            .args(lead)
            .args(["--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--max-matches")
            .arg(self.config.max_matches.to_string())
            .arg("--ready-file")
            .arg(&ready)
            .arg("--match-log")
            .arg(self.config.work_dir.join(format!("{id}.matches.jsonl")))
            .args(&self.config.extra_args)
            .stdout(log_file)
            .stdin(std::process::Stdio::null())
            // Its own process group: Ctrl-C in a terminal reaches the parent, which drains
            // the instances in order, not every instance at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AllocError::Start(format!("{program}: {e}")))?;
        let mut instance = Instance {
            id: id.clone(),
            child,
            t: Tracked::new(String::new()),
            udp: Vec::new(),
            ws: None,
            idle_since: Some(Instant::now()),
        };
        let info = wait_ready(&mut instance.child, &ready, Duration::from_secs(30)).await?;
        instance.t.control = format!("http://{}", info.http);
        instance.udp = info.udp.clone();
        instance.ws = info.ws.clone();
        let cap = self
            .instances
            .capacity(&instance.t.control)
            .await
            .map_err(|e| AllocError::Start(format!("capacity of {id}: {e}")))?;
        instance.t.capacity = cap.max_matches;
        tracing::info!(instance = %id, control = %instance.t.control, udp = ?info.udp, capacity = cap.max_matches, "instance started");
        metrics::counter!("croft_allocator_instances_started_total").increment(1);
        pool.instances.push(instance);
        Ok(pool.instances.len() - 1)
    }

    async fn place(
        &self,
        instance: &mut Instance,
        request: &CreateMatchRequest,
    ) -> Result<Placement, AllocError> {
        let placement = instance
            .t
            .create(&self.instances, &instance.id, request)
            .await?;
        instance.idle_since = None;
        Ok(placement)
    }

    async fn poll_instance(&self, instance: &mut Instance) -> Result<Vec<AllocEvent>, String> {
        if let Ok(Some(status)) = instance.child.try_wait() {
            return Err(format!("exited: {status}"));
        }
        let report = self
            .instances
            .matches(&instance.t.control, instance.t.placed.ended_after)
            .await
            .map_err(|e| e.to_string())?;
        let events = instance.t.report(&instance.id, report);
        if instance.t.running == 0 {
            instance.idle_since.get_or_insert_with(Instant::now);
        } else {
            instance.idle_since = None;
        }
        Ok(events)
    }

    async fn drain(&self, instance: &mut Instance) {
        instance.t.draining = true;
        if let Err(e) = self.instances.drain(&instance.t.control).await {
            tracing::warn!(instance = %instance.id, error = %e, "drain request failed");
        }
    }
}

impl Allocator for LocalAllocator {
    fn allocate(
        &self,
        request: CreateMatchRequest,
    ) -> BoxFuture<'_, Result<Placement, AllocError>> {
        Box::pin(async move {
            let mut pool = self.state.lock().await;
            if pool.closed {
                return Err(AllocError::NoCapacity);
            }
            // Fullest first, so that idle instances empty out and can be stopped.
            let mut order: Vec<usize> = (0..pool.instances.len())
                .filter(|&i| pool.instances[i].t.has_room())
                .collect();
            order.sort_by_key(|&i| std::cmp::Reverse(pool.instances[i].t.running));
            for i in order {
                match self.place(&mut pool.instances[i], &request).await {
                    Ok(p) => return Ok(p),
                    Err(e @ AllocError::Unknown(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(instance = %pool.instances[i].id, error = %e, "placement refused")
                    }
                }
            }
            let live = pool.instances.iter().filter(|s| !s.t.draining).count();
            if live >= self.config.max_instances {
                metrics::counter!("croft_allocator_no_capacity_total").increment(1);
                return Err(AllocError::NoCapacity);
            }
            let i = self.spawn(&mut pool).await?;
            self.place(&mut pool.instances[i], &request).await
        })
    }

    fn open_hub(
        &self,
        user: UserId,
        name: String,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, HubPlace), AllocError>> {
        Box::pin(async move {
            let mut pool = self.state.lock().await;
            // The whole common area lives on its home, else the oldest serving instance, so
            // everyone meets there; the next one takes over if it stops answering.
            let hosts = self.farm_or_hub_hosts(&mut pool, home.as_ref()).await?;
            keep_hub_place_first(&self.instances, hosts, user, &name).await
        })
    }

    fn open_farm(
        &self,
        user: UserId,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, Endpoint), AllocError>> {
        Box::pin(async move {
            let mut pool = self.state.lock().await;
            let hosts = self.farm_or_hub_hosts(&mut pool, home.as_ref()).await?;
            open_farm_first(&self.instances, hosts, user).await
        })
    }

    fn poll(&self) -> BoxFuture<'_, Vec<AllocEvent>> {
        Box::pin(async move {
            let mut pool = self.state.lock().await;
            let mut events = Vec::new();
            if pool.closed {
                return events;
            }
            let mut dead = Vec::new();
            for (i, instance) in pool.instances.iter_mut().enumerate() {
                match self.poll_instance(instance).await {
                    Ok(e) => events.extend(e),
                    Err(e) => {
                        instance.t.failed_polls += 1;
                        let exited = matches!(instance.child.try_wait(), Ok(Some(_)));
                        if exited && instance.t.draining && instance.t.placed.matches.is_empty() {
                            tracing::info!(instance = %instance.id, "instance stopped after draining");
                            dead.push(i);
                        } else if exited || instance.t.failed_polls >= self.config.max_failed_polls
                        {
                            tracing::error!(instance = %instance.id, error = %e, "instance lost; its matches are aborted");
                            let _ = instance.child.start_kill();
                            events.extend(instance.t.placed.abort_all(&instance.id));
                            dead.push(i);
                        } else {
                            tracing::warn!(instance = %instance.id, error = %e, "instance poll failed");
                        }
                    }
                }
            }
            for i in dead.into_iter().rev() {
                let mut gone = pool.instances.remove(i);
                let _ = gone.child.wait().await;
            }
            // Scale: keep the warm pool, add one when busy, stop idle extras.
            let serving: Vec<usize> = (0..pool.instances.len())
                .filter(|&i| !pool.instances[i].t.draining)
                .collect();
            let capacity: usize = serving.iter().map(|&i| pool.instances[i].t.capacity).sum();
            let running: usize = serving.iter().map(|&i| pool.instances[i].t.running).sum();
            metrics::gauge!("croft_allocator_instances").set(serving.len() as f64);
            metrics::gauge!("croft_allocator_matches_running").set(running as f64);
            let busy = capacity == 0 || running as f64 >= self.config.scale_up_at * capacity as f64;
            if (serving.len() < self.config.warm || busy)
                && serving.len() < self.config.max_instances
            {
                if let Err(e) = self.spawn(&mut pool).await {
                    tracing::error!(error = %e, "cannot start an instance");
                }
            } else if serving.len() > self.config.warm && !busy {
                let idle = serving.into_iter().find(|&i| {
                    let s = &pool.instances[i];
                    s.t.running == 0
                        && s.idle_since
                            .is_some_and(|t| t.elapsed() >= self.config.idle_stop_after)
                });
                if let Some(i) = idle {
                    tracing::info!(instance = %pool.instances[i].id, "stopping an idle instance");
                    self.drain(&mut pool.instances[i]).await;
                }
            }
            events
        })
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let pool = self.state.lock().await;
            let list: Vec<serde_json::Value> = pool
                .instances
                .iter()
                .map(|s| {
                    let mut v = s.t.status(&s.id);
                    v["udp"] = serde_json::json!(s.udp);
                    v["ws"] = serde_json::json!(s.ws);
                    v["pid"] = serde_json::json!(s.child.id());
                    v
                })
                .collect();
            serde_json::json!({ "allocator": "local", "instances": list })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut pool = self.state.lock().await;
            pool.closed = true;
            for instance in pool.instances.iter_mut() {
                self.drain(instance).await;
            }
            for instance in pool.instances.iter_mut() {
                let waited =
                    tokio::time::timeout(Duration::from_secs(10), instance.child.wait()).await;
                if waited.is_err() {
                    let _ = instance.child.kill().await;
                }
            }
            pool.instances.clear();
        })
    }
}

async fn wait_ready(
    child: &mut tokio::process::Child,
    file: &Path,
    timeout: Duration,
) -> Result<ReadyInfo, AllocError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(AllocError::Start(format!(
                "the instance exited during start-up: {status}"
            )));
        }
        if let Ok(bytes) = tokio::fs::read(file).await
            && let Ok(info) = serde_json::from_slice::<ReadyInfo>(&bytes)
        {
            return Ok(info);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.start_kill();
    Err(AllocError::Start(format!(
        "the instance was not ready within {timeout:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(seq: u64, match_id: MatchId) -> EndedMatch {
        EndedMatch {
            seq,
            match_id,
            players: [1, 2],
            winner: Some(1),
            reason: "HeroDied".into(),
            turns: 5,
            data_version: 1,
        }
    }

    fn report(
        live: Vec<MatchId>,
        ended: Vec<EndedMatch>,
        draining: bool,
        boot: &str,
    ) -> MatchesReport {
        MatchesReport {
            live,
            ended,
            draining,
            boot: boot.into(),
        }
    }

    #[test]
    fn a_report_frees_what_ended_here_and_a_new_run_loses_the_rest() {
        let mut t = Tracked::new("http://i".into());
        t.placed.matches.insert(7, [1, 2]);
        t.placed.matches.insert(8, [3, 4]);
        t.placed.matches.insert(9, [5, 6]);
        // Match 7 ended; a stray report of a match placed elsewhere is ignored.
        let events = t.report(
            "i",
            report(vec![8, 9], vec![ended(1, 7), ended(2, 99)], true, "run-1"),
        );
        assert_eq!(events, vec![AllocEvent::Ended(ended(1, 7))]);
        assert_eq!((t.running, t.draining, t.placed.ended_after), (2, true, 2));
        // The same address answers from another run: 8 and 9 are gone with the old one, the
        // feed is read from its start, and the new run serves unless it drains too.
        let mut lost = t.report("i", report(vec![], vec![], false, "run-2"));
        lost.sort_by_key(|e| match e {
            AllocEvent::Aborted { match_id, .. } => *match_id,
            AllocEvent::Ended(e) => e.match_id,
        });
        assert_eq!(
            lost,
            [8, 9]
                .map(|m| AllocEvent::Aborted {
                    match_id: m,
                    players: if m == 8 { [3, 4] } else { [5, 6] },
                    instance: "i".into(),
                })
                .to_vec()
        );
        assert_eq!((t.placed.ended_after, t.draining), (0, false));
        assert!(t.placed.matches.is_empty());
    }
}
