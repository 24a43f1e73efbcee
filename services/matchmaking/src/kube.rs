//! The Kubernetes allocator: the same [`Allocator`] interface as the local pool, for instance
//! servers that Kubernetes runs, either as an Agones Fleet or as plain pods of a Deployment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use contracts::instance::InstanceClient;
use contracts::instance::v1::{Capacity, CreateMatchRequest};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use tokio::sync::Mutex;

use crate::allocator::{
    AllocError, AllocEvent, Allocator, BoxFuture, Endpoint, HubPlace, Placement, Tracked,
    keep_hub_place_first, open_farm_first,
};

/// Where instance servers come from.
///
/// - **Agones** ([`KubeMode::Agones`]): each match is a `GameServerAllocation` on the Fleet,
///   preferring game servers that already host matches (counter `matches` with room, fewest
///   free slots first), else a Ready one with room (a draining server has set its counter's
///   capacity to 0, see `server-instance`'s `agones` module); the match is then created on the
///   allocated pod's control API. Contention (409) and throttling (429) or server errors (5xx)
///   are retried a few times with a short backoff.
/// - **Plain** ([`KubeMode::Plain`]): ready pods with the instance label are found by listing
///   the pods (the control port comes from the pod annotation `croft.dev/control-port`, else
///   the configured one); their capacity is read from their control API; the match goes to
///   the fullest pod with room. When none has room the Deployment's scale is raised by one (up
///   to a maximum) and the match is refused for now (`NoCapacity`; the players queue again).
#[derive(Debug, Clone)]
pub enum KubeMode {
    Agones {
        fleet: String,
    },
    Plain {
        /// Label selector of the instance pods, e.g. `app.kubernetes.io/name=croft-instance`.
        selector: String,
        /// The Deployment to scale when every pod is full.
        deployment: String,
        max_replicas: i32,
    },
}

#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub namespace: String,
    pub mode: KubeMode,
    /// The instances' control API port (pods may override it with `croft.dev/control-port`).
    pub control_port: u16,
    pub control_token: String,
    pub max_failed_polls: u32,
    /// Attempts for an API call answered 409, 429 or 5xx.
    pub attempts: u32,
    pub backoff: Duration,
    /// How long a list of ready pods is reused (plain mode): farm, hub and match requests that
    /// arrive together share one list instead of each asking the API server.
    pub pod_list_ttl: Duration,
}

impl KubeConfig {
    pub fn new(namespace: &str, mode: KubeMode, control_token: String) -> Self {
        Self {
            namespace: namespace.to_string(),
            mode,
            control_port: 7100,
            control_token,
            max_failed_polls: 3,
            attempts: 3,
            backoff: Duration::from_millis(200),
            pod_list_ttl: Duration::from_secs(2),
        }
    }
}

/// Ready pods (name, control URL) and when they were listed.
type PodList = (std::time::Instant, Vec<(String, String)>);

/// The annotation that names a pod's control port.
pub const CONTROL_PORT_ANNOTATION: &str = "croft.dev/control-port";

#[derive(Default)]
struct State {
    /// By game server or pod name.
    instances: HashMap<String, Tracked>,
    closed: bool,
}

/// The [`Allocator`] for instance servers that Kubernetes runs, in either [`KubeMode`].
///
/// Both modes poll every known instance's `GET /v1/matches?after=` for ended matches, and
/// declare an instance lost (its matches aborted) after failed polls, like the local allocator.
pub struct KubeAllocator {
    client: kube::Client,
    config: KubeConfig,
    instances: InstanceClient,
    state: Mutex<State>,
    /// The last list of ready pods and when it was taken; locked while a list is in flight, so
    /// concurrent callers wait for that one.
    pods: Mutex<Option<PodList>>,
}

fn gsa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("allocation.agones.dev", "v1", "GameServerAllocation"),
        "gameserverallocations",
    )
}

fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        // Connection trouble: the request may not have arrived.
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl KubeAllocator {
    /// With a client for the cluster (in a pod: `kube::Client::try_default()`).
    pub fn new(client: kube::Client, config: KubeConfig) -> Result<Self, AllocError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AllocError::Start(e.to_string()))?;
        let instances = InstanceClient::new(http, config.control_token.clone());
        Ok(Self {
            client,
            config,
            instances,
            state: Mutex::new(State::default()),
            pods: Mutex::new(None),
        })
    }

    /// Runs `call` until it succeeds, fails for good, or the attempts are used up.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt < self.config.attempts.max(1) => {
                    metrics::counter!("croft_allocator_kube_retries_total").increment(1);
                    tracing::warn!(error = %e, attempt, "{what}: retrying");
                    tokio::time::sleep(self.config.backoff * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One `GameServerAllocation`: the game server's name and its control URL, or None when
    /// the Fleet has no server to give.
    async fn allocate_game_server(
        &self,
        fleet: &str,
    ) -> Result<Option<(String, String)>, AllocError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.config.namespace, &gsa_resource());
        // Both need a free slot on the counter: a draining server sets its capacity to 0.
        let selector = |state: &str| {
            serde_json::json!({
                "matchLabels": { "agones.dev/fleet": fleet },
                "gameServerState": state,
                "counters": { "matches": { "minAvailable": 1 } },
            })
        };
        let body: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "allocation.agones.dev/v1",
            "kind": "GameServerAllocation",
            "metadata": { "generateName": "croft-match-" },
            "spec": {
                // Pack: a server already hosting matches with a free slot first, fullest first.
                "selectors": [
                    selector("Allocated"),
                    selector("Ready"),
                ],
                "priorities": [{ "type": "Counter", "key": "matches", "order": "Ascending" }],
                "counters": { "matches": { "action": "Increment", "amount": 1 } },
            },
        }))
        .map_err(|e| AllocError::Refused(e.to_string()))?;
        let pp = PostParams::default();
        let created = self
            .with_retries("game server allocation", || api.create(&pp, &body))
            .await
            .map_err(|e| AllocError::Refused(format!("GameServerAllocation: {e}")))?;
        let status = created.data.get("status").cloned().unwrap_or_default();
        match status.get("state").and_then(|s| s.as_str()) {
            Some("Allocated") => {}
            Some("UnAllocated") => return Ok(None),
            other => {
                return Err(AllocError::Refused(format!(
                    "GameServerAllocation answered state {other:?}"
                )));
            }
        }
        let name = status["gameServerName"]
            .as_str()
            .ok_or_else(|| AllocError::Refused("allocation without gameServerName".into()))?
            .to_string();
        // The pod's own IP for the control API (Agones lists it as type PodIP).
        let pod_ip = status["addresses"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["type"] == "PodIP")
                    .and_then(|x| x["address"].as_str())
            })
            .ok_or_else(|| {
                AllocError::Refused(format!("game server {name} has no PodIP address"))
            })?;
        Ok(Some((
            name,
            format!(
                "http://{}",
                join_host_port(pod_ip, self.config.control_port)
            ),
        )))
    }

    /// Instances a farm or the common area can go to, `prefer` first: ready pods, or under
    /// Agones the game servers this allocator placed matches on (allocating one if it has
    /// none). (name, control URL). Takes the state lock only to read and record instances,
    /// never across a call to the API server or an instance.
    async fn hosts(&self, prefer: Option<&String>) -> Result<Vec<(String, String)>, AllocError> {
        let mut hosts = match self.config.mode.clone() {
            KubeMode::Plain { selector, .. } => self.ready_pods(&selector).await?,
            KubeMode::Agones { fleet } => {
                let mut known: Vec<(String, String)> = self
                    .state
                    .lock()
                    .await
                    .instances
                    .iter()
                    .filter(|(_, t)| !t.draining && !t.control.is_empty())
                    .map(|(n, t)| (n.clone(), t.control.clone()))
                    .collect();
                if known.is_empty() {
                    let Some((name, control)) = self.allocate_game_server(&fleet).await? else {
                        return Err(AllocError::NoCapacity);
                    };
                    self.state
                        .lock()
                        .await
                        .instances
                        .entry(name.clone())
                        .or_insert_with(|| Tracked::new(String::new()))
                        .control = control.clone();
                    known.push((name, control));
                }
                known
            }
        };
        hosts.sort();
        hosts.sort_by_key(|(name, _)| Some(name) != prefer);
        Ok(hosts)
    }

    /// Ready instance pods: (name, control URL), from a list at most `pod_list_ttl` old.
    async fn ready_pods(&self, selector: &str) -> Result<Vec<(String, String)>, AllocError> {
        let mut cache = self.pods.lock().await;
        if let Some((at, pods)) = &*cache
            && at.elapsed() < self.config.pod_list_ttl
        {
            return Ok(pods.clone());
        }
        let pods = self.list_ready_pods(selector).await?;
        *cache = Some((std::time::Instant::now(), pods.clone()));
        Ok(pods)
    }

    async fn list_ready_pods(&self, selector: &str) -> Result<Vec<(String, String)>, AllocError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let lp = ListParams::default().labels(selector);
        let list = self
            .with_retries("listing instance pods", || api.list(&lp))
            .await
            .map_err(|e| AllocError::Refused(format!("listing pods: {e}")))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let status = p.status.as_ref()?;
                let ready = status
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let ip = status.pod_ip.as_ref()?;
                let port = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CONTROL_PORT_ANNOTATION))
                    .and_then(|v| v.parse::<u16>().ok())
                    .unwrap_or(self.config.control_port);
                let name = p.metadata.name.clone()?;
                ready.then(|| (name, format!("http://{}", join_host_port(ip, port))))
            })
            .collect())
    }

    async fn capacity(&self, control: &str) -> Result<Capacity, String> {
        self.instances
            .capacity(control)
            .await
            .map_err(|e| e.to_string())
    }

    /// Raises the Deployment's replicas by one, up to `max`. Returns whether it did.
    async fn scale_up(&self, deployment: &str, max: i32) -> Result<bool, AllocError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.config.namespace);
        let scale = self
            .with_retries("reading the scale", || api.get_scale(deployment))
            .await
            .map_err(|e| AllocError::Refused(format!("scale of {deployment}: {e}")))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        if replicas >= max {
            return Ok(false);
        }
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas + 1 } }));
        let pp = PatchParams::default();
        self.with_retries("scaling up", || api.patch_scale(deployment, &pp, &patch))
            .await
            .map_err(|e| AllocError::Refused(format!("scaling {deployment}: {e}")))?;
        tracing::info!(
            deployment,
            replicas = replicas + 1,
            "instance deployment scaled up"
        );
        metrics::counter!("croft_allocator_instances_started_total").increment(1);
        Ok(true)
    }

    async fn place_on(
        &self,
        state: &mut State,
        name: &str,
        request: &CreateMatchRequest,
    ) -> Result<Placement, AllocError> {
        state
            .instances
            .entry(name.to_string())
            .or_insert_with(|| Tracked::new(String::new()))
            .create(&self.instances, name, request)
            .await
    }

    async fn allocate_plain(
        &self,
        state: &mut State,
        selector: &str,
        deployment: &str,
        max_replicas: i32,
        request: &CreateMatchRequest,
    ) -> Result<Placement, AllocError> {
        let pods = self.ready_pods(selector).await?;
        for (name, control) in &pods {
            if !state.instances.contains_key(name) {
                match self.capacity(control).await {
                    Ok(cap) => {
                        let mut t = Tracked::new(control.clone());
                        t.capacity = cap.max_matches;
                        t.running = cap.running;
                        t.draining = cap.draining;
                        state.instances.insert(name.clone(), t);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %name, error = %e, "instance capacity unavailable")
                    }
                }
            }
        }
        let mut order: Vec<(String, usize)> = pods
            .iter()
            .filter_map(|(name, _)| {
                let t = state.instances.get(name)?;
                t.has_room().then(|| (name.clone(), t.running))
            })
            .collect();
        // Fullest first, so that idle pods empty out and the autoscaler can remove them.
        order.sort_by_key(|(_, running)| std::cmp::Reverse(*running));
        for (name, _) in order {
            match self.place_on(state, &name, request).await {
                Ok(p) => return Ok(p),
                Err(e @ AllocError::Unknown(_)) => return Err(e),
                Err(e) => tracing::warn!(pod = %name, error = %e, "placement refused"),
            }
        }
        self.scale_up(deployment, max_replicas).await?;
        metrics::counter!("croft_allocator_no_capacity_total").increment(1);
        Err(AllocError::NoCapacity)
    }
}

/// `host:port`, with brackets for IPv6.
fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

impl Allocator for KubeAllocator {
    fn allocate(
        &self,
        request: CreateMatchRequest,
    ) -> BoxFuture<'_, Result<Placement, AllocError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.closed {
                return Err(AllocError::NoCapacity);
            }
            match self.config.mode.clone() {
                KubeMode::Agones { fleet } => {
                    let Some((name, control)) = self.allocate_game_server(&fleet).await? else {
                        metrics::counter!("croft_allocator_no_capacity_total").increment(1);
                        return Err(AllocError::NoCapacity);
                    };
                    state
                        .instances
                        .entry(name.clone())
                        .or_insert_with(|| Tracked::new(String::new()))
                        .control = control;
                    self.place_on(&mut state, &name, &request).await
                }
                KubeMode::Plain {
                    selector,
                    deployment,
                    max_replicas,
                } => {
                    self.allocate_plain(&mut state, &selector, &deployment, max_replicas, &request)
                        .await
                }
            }
        })
    }

    fn poll(&self) -> BoxFuture<'_, Vec<AllocEvent>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            let mut events = Vec::new();
            let mut lost = Vec::new();
            for (name, t) in state.instances.iter_mut() {
                match self
                    .instances
                    .matches(&t.control, t.placed.ended_after)
                    .await
                {
                    Ok(report) => events.extend(t.report(name, report)),
                    Err(e) => {
                        t.failed_polls += 1;
                        if t.failed_polls >= self.config.max_failed_polls {
                            tracing::error!(instance = %name, error = %e, "instance lost; its matches are aborted");
                            events.extend(t.placed.abort_all(name));
                            lost.push(name.clone());
                        }
                    }
                }
            }
            for name in lost {
                state.instances.remove(&name);
            }
            let running: usize = state.instances.values().map(|t| t.running).sum();
            metrics::gauge!("croft_allocator_instances").set(state.instances.len() as f64);
            metrics::gauge!("croft_allocator_matches_running").set(running as f64);
            events
        })
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let state = self.state.lock().await;
            let list: Vec<serde_json::Value> = state
                .instances
                .iter()
                .map(|(name, t)| t.status(name))
                .collect();
            let mode = match &self.config.mode {
                KubeMode::Agones { .. } => "agones",
                KubeMode::Plain { .. } => "kubernetes",
            };
            serde_json::json!({ "allocator": mode, "namespace": self.config.namespace, "instances": list })
        })
    }

    fn open_farm(
        &self,
        user: u64,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, Endpoint), AllocError>> {
        Box::pin(async move {
            if self.state.lock().await.closed {
                return Err(AllocError::NoCapacity);
            }
            let hosts = self.hosts(home.as_ref()).await?;
            open_farm_first(&self.instances, hosts, user).await
        })
    }

    fn open_hub(
        &self,
        user: u64,
        name: String,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, HubPlace), AllocError>> {
        Box::pin(async move {
            // Everyone meets on one instance: the one that hosts the hub, while it answers.
            if self.state.lock().await.closed {
                return Err(AllocError::NoCapacity);
            }
            let hosts = self.hosts(home.as_ref()).await?;
            keep_hub_place_first(&self.instances, hosts, user, &name).await
        })
    }

    /// Kubernetes owns the instances (their own SIGTERM drains them); this only stops placing.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.state.lock().await.closed = true;
        })
    }
}

#[cfg(test)]
mod tests;
