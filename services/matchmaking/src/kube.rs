//! The Kubernetes allocator: the same [`Allocator`] interface as the local pool, for instance
//! servers that Kubernetes runs.
//!
//! - **Agones** ([`KubeMode::Agones`]): each match is a `GameServerAllocation` on the Fleet,
//!   preferring game servers that already host matches (counter `matches` with room, fewest
//!   free slots first), else a Ready one with room (a draining server has set its counter's
//!   capacity to 0, see `server-instance`'s `agones` module); the match is then created on the allocated pod's
//!   control API. Contention (409) and throttling (429) or server errors (5xx) are retried a few
//!   times with a short backoff.
//! - **Plain** ([`KubeMode::Plain`]): ready pods with the instance label are found by listing
//!   the pods (the control port comes from the pod annotation `croft.dev/control-port`, else
//!   the configured one); their capacity is read from their control API; the match goes to
//!   the fullest pod with room. When none has room the Deployment's scale is raised by one (up
//!   to a maximum) and the match is refused for now (`NoCapacity`; the players queue again).
//!
//! Both poll every known instance's `GET /v1/matches?after=` for ended matches, and declare an
//! instance lost (its matches aborted) after failed polls, like the local allocator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use server_instance::control::{Capacity, CreateMatchRequest, MatchesReport};
use tokio::sync::Mutex;

use crate::allocator::{
    AllocError, AllocEvent, Allocator, BoxFuture, Endpoint, Placed, Placement, control_get,
    create_match, first_answer, keep_hub_place_on, open_farm_on,
};

/// Where instance servers come from.
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
        }
    }
}

/// The annotation that names a pod's control port.
pub const CONTROL_PORT_ANNOTATION: &str = "croft.dev/control-port";

struct Tracked {
    control: String,
    capacity: usize,
    running: usize,
    draining: bool,
    placed: Placed,
    failed_polls: u32,
}

impl Tracked {
    fn new(control: String) -> Self {
        Self {
            control,
            capacity: 0,
            running: 0,
            draining: false,
            placed: Placed::default(),
            failed_polls: 0,
        }
    }
}

#[derive(Default)]
struct State {
    /// By game server or pod name.
    instances: HashMap<String, Tracked>,
    /// The instance each farm was last opened on.
    farm_homes: HashMap<u64, String>,
    /// The instance that hosts the common area.
    hub_home: Option<String>,
    closed: bool,
}

pub struct KubeAllocator {
    client: kube::Client,
    config: KubeConfig,
    http: reqwest::Client,
    state: Mutex<State>,
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
        Ok(Self {
            client,
            config,
            http,
            state: Mutex::new(State::default()),
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
    /// none). (name, control URL).
    async fn hosts(
        &self,
        state: &mut State,
        prefer: Option<&String>,
    ) -> Result<Vec<(String, String)>, AllocError> {
        let mut hosts = match self.config.mode.clone() {
            KubeMode::Plain { selector, .. } => self.ready_pods(&selector).await?,
            KubeMode::Agones { fleet } => {
                let mut known: Vec<(String, String)> = state
                    .instances
                    .iter()
                    .filter(|(_, t)| !t.draining && !t.control.is_empty())
                    .map(|(n, t)| (n.clone(), t.control.clone()))
                    .collect();
                if known.is_empty() {
                    let Some((name, control)) = self.allocate_game_server(&fleet).await? else {
                        return Err(AllocError::NoCapacity);
                    };
                    state
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

    /// Ready instance pods: (name, control URL).
    async fn ready_pods(&self, selector: &str) -> Result<Vec<(String, String)>, AllocError> {
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
        control_get(
            &self.http,
            &self.config.control_token,
            format!("{control}/v1/capacity"),
        )
        .await
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
        let tracked = state
            .instances
            .entry(name.to_string())
            .or_insert_with(|| Tracked::new(String::new()));
        let created = create_match(
            &self.http,
            &self.config.control_token,
            &tracked.control,
            request,
        )
        .await;
        match created {
            Ok(c) => {
                tracked.running += 1;
                tracked
                    .placed
                    .matches
                    .insert(request.match_id, request.players);
                Ok(Placement {
                    instance: name.to_string(),
                    server_addr: c.server_addr,
                    ws_url: c.ws_url,
                })
            }
            Err(e) => {
                if matches!(e, AllocError::Refused(_)) {
                    // Full or draining: count it full until the next poll.
                    tracked.running = tracked.capacity;
                }
                Err(e)
            }
        }
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
                (!t.draining && t.running < t.capacity).then(|| (name.clone(), t.running))
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
                let url = format!("{}/v1/matches?after={}", t.control, t.placed.ended_after);
                match control_get::<MatchesReport>(&self.http, &self.config.control_token, url)
                    .await
                {
                    Ok(report) => {
                        t.failed_polls = 0;
                        t.running = report.live.len();
                        t.draining |= report.draining;
                        let ended = t.placed.take_ended(report.ended);
                        events.extend(ended.into_iter().map(AllocEvent::Ended));
                    }
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
                .map(|(name, t)| {
                    serde_json::json!({
                        "id": name, "control": t.control, "capacity": t.capacity,
                        "running": t.running, "draining": t.draining,
                    })
                })
                .collect();
            let mode = match &self.config.mode {
                KubeMode::Agones { .. } => "agones",
                KubeMode::Plain { .. } => "kubernetes",
            };
            serde_json::json!({ "allocator": mode, "namespace": self.config.namespace, "instances": list })
        })
    }

    /// Kubernetes owns the instances (their own SIGTERM drains them); this only stops placing.
    fn open_farm(&self, user: u64) -> BoxFuture<'_, Result<Endpoint, AllocError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.closed {
                return Err(AllocError::NoCapacity);
            }
            let home = state.farm_homes.get(&user).cloned();
            let hosts = self.hosts(&mut state, home.as_ref()).await?;
            let (http, token) = (&self.http, self.config.control_token.as_str());
            let (name, addr) = first_answer(hosts, "farm", |control| async move {
                open_farm_on(http, token, &control, user).await
            })
            .await?;
            state.farm_homes.insert(user, name);
            Ok(addr)
        })
    }

    fn open_hub(
        &self,
        user: u64,
        name: String,
    ) -> BoxFuture<'_, Result<(u32, Endpoint), AllocError>> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.closed {
                return Err(AllocError::NoCapacity);
            }
            // Everyone meets on one instance: the one that hosts the hub, while it answers.
            let home = state.hub_home.clone();
            let hosts = self.hosts(&mut state, home.as_ref()).await?;
            let (http, token) = (&self.http, self.config.control_token.as_str());
            let (instance, kept) = first_answer(hosts, "hub place", |control| {
                let name = name.clone();
                async move { keep_hub_place_on(http, token, &control, user, &name).await }
            })
            .await?;
            state.hub_home = Some(instance);
            Ok(kept)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.state.lock().await.closed = true;
        })
    }
}

#[cfg(test)]
mod tests {
    //! Request-level tests: the kube client runs over `tower_test::mock::pair`, and each test
    //! plays the API server, asserting the exact requests (method, path, query, body) and
    //! answering them, errors included. The instance's control API is a small stub server.

    use super::*;

    /// What the instance stub answers for its WebSocket endpoint.
    const STUB_WS: &str = "ws://10.1.2.3:7300/ws";

    fn stub_endpoint() -> Endpoint {
        Endpoint {
            server_addr: "10.1.2.3:7777".parse().unwrap(),
            ws_url: Some(STUB_WS.into()),
        }
    }
    use axum::Json;
    use axum::routing::{get, post};
    use server_instance::control::{CreateMatchResponse, EndedMatch, MatchesReport};
    use std::sync::Arc;
    use tower_test::mock::{Handle, SendResponse};

    type Req = http::Request<kube::client::Body>;
    type Resp = http::Response<kube::client::Body>;

    fn mock_client() -> (kube::Client, Handle<Req, Resp>) {
        let (svc, handle) = tower_test::mock::pair::<Req, Resp>();
        (kube::Client::new(svc, "croft-games"), handle)
    }

    /// The next request: method, path, query and JSON body (Null when empty).
    async fn next(
        handle: &mut Handle<Req, Resp>,
    ) -> (
        String,
        String,
        String,
        serde_json::Value,
        SendResponse<Resp>,
    ) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("a request to the API server")
            .expect("the client is alive");
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (method, path, query, body, send)
    }

    fn answer(send: SendResponse<Resp>, status: u16, body: serde_json::Value) {
        send.send_response(
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn api_error(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("test: {reason}"), "reason": reason, "code": code,
        })
    }

    struct StubInstance {
        port: u16,
        created: Arc<std::sync::Mutex<Vec<CreateMatchRequest>>>,
        /// Farms opened: (the Host the request went to, user).
        farms: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
        capacity: Arc<std::sync::Mutex<Capacity>>,
        ended: Arc<std::sync::Mutex<Vec<EndedMatch>>>,
    }

    /// A control API that accepts matches and reports what the test sets.
    async fn stub_instance() -> StubInstance {
        let created = Arc::new(std::sync::Mutex::new(Vec::new()));
        let capacity = Arc::new(std::sync::Mutex::new(Capacity {
            max_matches: 10,
            running: 0,
            free: 10,
            draining: false,
            clients_connected: 0,
        }));
        let ended = Arc::new(std::sync::Mutex::new(Vec::<EndedMatch>::new()));
        let (c, cap, e) = (created.clone(), capacity.clone(), ended.clone());
        let farms = Arc::new(std::sync::Mutex::new(Vec::new()));
        let f = farms.clone();
        let app = axum::Router::new()
            .route(
                "/v1/farms",
                post(
                    move |headers: axum::http::HeaderMap,
                          Json(req): Json<server_instance::control::OpenFarmRequest>| {
                        let f = f.clone();
                        async move {
                            let host = headers
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            f.lock().unwrap().push((host, req.user_id));
                            (
                                axum::http::StatusCode::CREATED,
                                Json(server_instance::control::OpenFarmResponse {
                                    user_id: req.user_id,
                                    server_addr: "10.1.2.3:7777".parse().unwrap(),
                                    ws_url: Some(STUB_WS.into()),
                                }),
                            )
                        }
                    },
                ),
            )
            .route(
                "/v1/hub",
                post(
                    |Json(req): Json<server_instance::control::HubRequest>| async move {
                        Json(server_instance::control::HubResponse {
                            hub_id: if req.name == "ann" { 1 } else { 2 },
                            server_addr: "10.1.2.3:7777".parse().unwrap(),
                            ws_url: Some(STUB_WS.into()),
                        })
                    },
                ),
            )
            .route(
                "/v1/matches",
                post(move |Json(req): Json<CreateMatchRequest>| {
                    let c = c.clone();
                    async move {
                        let id = req.match_id;
                        c.lock().unwrap().push(req);
                        (
                            axum::http::StatusCode::CREATED,
                            Json(CreateMatchResponse {
                                match_id: id,
                                server_addr: "10.1.2.3:7777".parse().unwrap(),
                                ws_url: Some(STUB_WS.into()),
                            }),
                        )
                    }
                })
                .get(move || {
                    let e = e.clone();
                    async move {
                        Json(MatchesReport {
                            live: vec![],
                            ended: e.lock().unwrap().clone(),
                            draining: false,
                        })
                    }
                }),
            )
            .route(
                "/v1/capacity",
                get(move || {
                    let cap = cap.clone();
                    async move { Json(cap.lock().unwrap().clone()) }
                }),
            );
        // Every loopback address, so that tests can tell pods apart by IP (127.0.0.x).
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StubInstance {
            port,
            created,
            farms,
            capacity,
            ended,
        }
    }

    fn request(match_id: u64) -> CreateMatchRequest {
        CreateMatchRequest {
            match_id,
            players: [match_id * 10, match_id * 10 + 1],
            decks: None,
            starter_decks: None,
            seed: Some(1),
        }
    }

    fn allocated(name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "allocation.agones.dev/v1", "kind": "GameServerAllocation",
            "metadata": { "name": "croft-match-x", "namespace": "croft-games" },
            "spec": {},
            "status": {
                "state": "Allocated", "gameServerName": name, "address": "203.0.113.9",
                "addresses": [
                    { "type": "ExternalIP", "address": "203.0.113.9" },
                    { "type": "PodIP", "address": "127.0.0.1" },
                ],
                "ports": [{ "name": "netcode", "port": 7777 }],
            },
        })
    }

    fn agones(port: u16) -> KubeConfig {
        let mut c = KubeConfig::new(
            "croft-games",
            KubeMode::Agones {
                fleet: "instances".into(),
            },
            "control-token".into(),
        );
        c.control_port = port;
        c.backoff = Duration::from_millis(1);
        c
    }

    #[tokio::test]
    async fn agones_allocation_request_is_exact_and_the_match_goes_to_the_allocated_server() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let alloc = Arc::new(KubeAllocator::new(client, agones(stub.port)).unwrap());
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(7)).await });
        let (method, path, _, body, send) = next(&mut handle).await;
        assert_eq!(method, "POST");
        assert_eq!(
            path,
            "/apis/allocation.agones.dev/v1/namespaces/croft-games/gameserverallocations"
        );
        assert_eq!(body["kind"], "GameServerAllocation");
        let spec = &body["spec"];
        assert_eq!(
            spec["selectors"],
            serde_json::json!([
                { "matchLabels": { "agones.dev/fleet": "instances" }, "gameServerState": "Allocated",
                  "counters": { "matches": { "minAvailable": 1 } } },
                { "matchLabels": { "agones.dev/fleet": "instances" }, "gameServerState": "Ready",
                  "counters": { "matches": { "minAvailable": 1 } } },
            ])
        );
        assert_eq!(
            spec["priorities"],
            serde_json::json!([{ "type": "Counter", "key": "matches", "order": "Ascending" }])
        );
        assert_eq!(
            spec["counters"],
            serde_json::json!({ "matches": { "action": "Increment", "amount": 1 } })
        );
        answer(send, 201, allocated("instances-abc12"));
        let placement = placed.await.unwrap().unwrap();
        assert_eq!(placement.instance, "instances-abc12");
        assert_eq!(placement.server_addr, "10.1.2.3:7777".parse().unwrap());
        assert_eq!(placement.ws_url.as_deref(), Some(STUB_WS));
        assert_eq!(stub.created.lock().unwrap()[0].match_id, 7);

        // The match ends on that server: poll reports it (no API server call needed).
        stub.ended.lock().unwrap().push(EndedMatch {
            seq: 1,
            match_id: 7,
            players: [70, 71],
            winner: Some(70),
            reason: "HeroDied".into(),
            turns: 9,
            data_version: 1,
        });
        let events = alloc.poll().await;
        assert!(
            matches!(&events[..], [AllocEvent::Ended(e)] if e.match_id == 7),
            "{events:?}"
        );
        assert!(alloc.poll().await.is_empty(), "reported once");
    }

    #[tokio::test]
    async fn agones_unallocated_is_no_capacity_and_throttling_and_contention_are_retried() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let alloc = Arc::new(KubeAllocator::new(client, agones(stub.port)).unwrap());

        // UnAllocated: the fleet is full.
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(1)).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            201,
            serde_json::json!({
                "apiVersion": "allocation.agones.dev/v1", "kind": "GameServerAllocation",
                "metadata": {}, "status": { "state": "UnAllocated" },
            }),
        );
        assert!(matches!(placed.await.unwrap(), Err(AllocError::NoCapacity)));

        // 429, then 409 (contention), then success: three identical requests.
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(2)).await });
        let (m1, p1, _, b1, send) = next(&mut handle).await;
        answer(send, 429, api_error(429, "TooManyRequests"));
        let (m2, p2, _, b2, send) = next(&mut handle).await;
        answer(send, 409, api_error(409, "Conflict"));
        let (m3, p3, _, b3, send) = next(&mut handle).await;
        assert_eq!((&m1, &p1, &b1), (&m2, &p2, &b2));
        assert_eq!((&m2, &p2, &b2), (&m3, &p3, &b3));
        answer(send, 201, allocated("instances-def34"));
        assert_eq!(placed.await.unwrap().unwrap().instance, "instances-def34");

        // 5xx every time: given up after the configured attempts, as a refusal.
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(3)).await });
        for _ in 0..3 {
            let (_, _, _, _, send) = next(&mut handle).await;
            answer(send, 503, api_error(503, "ServiceUnavailable"));
        }
        let err = placed.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, AllocError::Refused(m) if m.contains("GameServerAllocation")),
            "{err}"
        );
        // A 403 (RBAC) is not retried.
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(4)).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(send, 403, api_error(403, "Forbidden"));
        assert!(matches!(placed.await.unwrap(), Err(AllocError::Refused(_))));
        assert_eq!(stub.created.lock().unwrap().len(), 1);
    }

    fn pod(name: &str, ip: &str, ready: bool, port: u16) -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": name, "namespace": "croft-games",
                          "annotations": { CONTROL_PORT_ANNOTATION: port.to_string() } },
            "status": {
                "podIP": ip,
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
            },
        })
    }

    fn pod_list(items: Vec<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items })
    }

    #[tokio::test]
    async fn plain_mode_places_on_a_ready_pod_and_scales_the_deployment_when_all_are_full() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let mut config = KubeConfig::new(
            "croft-games",
            KubeMode::Plain {
                selector: "app.kubernetes.io/name=croft-instance".into(),
                deployment: "croft-instance".into(),
                max_replicas: 4,
            },
            "control-token".into(),
        );
        config.backoff = Duration::from_millis(1);
        let alloc = Arc::new(KubeAllocator::new(client, config).unwrap());

        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(5)).await });
        let (method, path, query, _, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("GET", "/api/v1/namespaces/croft-games/pods")
        );
        assert_eq!(
            query,
            "&labelSelector=app.kubernetes.io%2Fname%3Dcroft-instance"
        );
        // One pod not ready (skipped), one ready with the stub's control port.
        answer(
            send,
            200,
            pod_list(vec![
                pod("croft-instance-0", "127.0.0.2", false, stub.port),
                pod("croft-instance-1", "127.0.0.1", true, stub.port),
            ]),
        );
        let p = placed.await.unwrap().unwrap();
        assert_eq!(p.instance, "croft-instance-1");
        assert_eq!(stub.created.lock().unwrap().len(), 1);

        // Full now: the Deployment's scale is read and raised by one; the match waits.
        stub.capacity.lock().unwrap().running = 10;
        // The tracked pod learns it is full from its reports; make a fresh allocator see it.
        let (client, mut handle) = mock_client();
        let mut config = alloc.config.clone();
        config.control_port = stub.port;
        let full = Arc::new(KubeAllocator::new(client, config).unwrap());
        let a = full.clone();
        let placed = tokio::spawn(async move { a.allocate(request(6)).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            200,
            pod_list(vec![pod("croft-instance-1", "127.0.0.1", true, stub.port)]),
        );
        let (method, path, _, _, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "GET",
                "/apis/apps/v1/namespaces/croft-games/deployments/croft-instance/scale"
            )
        );
        let scale = |replicas: i32| {
            serde_json::json!({
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": { "name": "croft-instance", "namespace": "croft-games" },
                "spec": { "replicas": replicas }, "status": { "replicas": replicas },
            })
        };
        answer(send, 200, scale(2));
        let (method, path, _, body, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/croft-games/deployments/croft-instance/scale"
            )
        );
        assert_eq!(body, serde_json::json!({ "spec": { "replicas": 3 } }));
        // A conflict on the patch is retried.
        answer(send, 409, api_error(409, "Conflict"));
        let (method, _, _, body, send) = next(&mut handle).await;
        assert_eq!(method, "PATCH");
        assert_eq!(body, serde_json::json!({ "spec": { "replicas": 3 } }));
        answer(send, 200, scale(3));
        assert!(matches!(placed.await.unwrap(), Err(AllocError::NoCapacity)));
        assert_eq!(
            stub.created.lock().unwrap().len(),
            1,
            "nothing placed on a full pod"
        );

        // At the maximum, no patch: only the read.
        let a = full.clone();
        let placed = tokio::spawn(async move { a.allocate(request(7)).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            200,
            pod_list(vec![pod("croft-instance-1", "127.0.0.1", true, stub.port)]),
        );
        let (method, _, _, _, send) = next(&mut handle).await;
        assert_eq!(method, "GET");
        answer(send, 200, scale(4));
        assert!(matches!(placed.await.unwrap(), Err(AllocError::NoCapacity)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request())
                .await
                .is_err(),
            "no scale patch past the maximum"
        );
    }

    #[tokio::test]
    async fn an_instance_that_stops_answering_has_its_matches_aborted() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let mut config = agones(stub.port);
        config.max_failed_polls = 2;
        let alloc = Arc::new(KubeAllocator::new(client, config).unwrap());
        let a = alloc.clone();
        let placed = tokio::spawn(async move { a.allocate(request(9)).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(send, 201, allocated("instances-gone"));
        placed.await.unwrap().unwrap();
        // The pod goes away: point its control URL at a closed port.
        alloc
            .state
            .lock()
            .await
            .instances
            .get_mut("instances-gone")
            .unwrap()
            .control = "http://127.0.0.1:1".into();
        assert!(
            alloc.poll().await.is_empty(),
            "one failed poll is not enough"
        );
        let events = alloc.poll().await;
        assert!(
            matches!(
                &events[..],
                [AllocEvent::Aborted {
                    match_id: 9,
                    players: [90, 91],
                    ..
                }]
            ),
            "{events:?}"
        );
        assert_eq!(alloc.status().await["instances"], serde_json::json!([]));
    }

    fn plain() -> KubeConfig {
        let mut config = KubeConfig::new(
            "croft-games",
            KubeMode::Plain {
                selector: "app.kubernetes.io/name=croft-instance".into(),
                deployment: "croft-instance".into(),
                max_replicas: 4,
            },
            "control-token".into(),
        );
        config.backoff = Duration::from_millis(1);
        config
    }

    #[tokio::test]
    async fn plain_mode_opens_farms_on_their_home_pod_and_keeps_the_hub_on_one_pod() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let alloc = Arc::new(KubeAllocator::new(client, plain()).unwrap());
        // Only pod 1 is ready: the farm opens there, which makes it the farm's home.
        let a = alloc.clone();
        let opened = tokio::spawn(async move { a.open_farm(7).await });
        let (method, path, _, _, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("GET", "/api/v1/namespaces/croft-games/pods")
        );
        answer(
            send,
            200,
            pod_list(vec![pod("croft-instance-1", "127.0.0.2", true, stub.port)]),
        );
        assert_eq!(opened.await.unwrap().unwrap(), stub_endpoint());
        // Both ready now: pod 0 sorts first, but the farm goes home to pod 1.
        let a = alloc.clone();
        let opened = tokio::spawn(async move { a.open_farm(7).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            200,
            pod_list(vec![
                pod("croft-instance-0", "127.0.0.1", true, stub.port),
                pod("croft-instance-1", "127.0.0.2", true, stub.port),
            ]),
        );
        opened.await.unwrap().unwrap();
        // Another player's farm goes to the first pod by name.
        let a = alloc.clone();
        let opened = tokio::spawn(async move { a.open_farm(8).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            200,
            pod_list(vec![
                pod("croft-instance-1", "127.0.0.2", true, stub.port),
                pod("croft-instance-0", "127.0.0.1", true, stub.port),
            ]),
        );
        opened.await.unwrap().unwrap();
        let port = stub.port;
        assert_eq!(
            *stub.farms.lock().unwrap(),
            vec![
                (format!("127.0.0.2:{port}"), 7),
                (format!("127.0.0.2:{port}"), 7),
                (format!("127.0.0.1:{port}"), 8)
            ]
        );
        // The common area: a place through the pod's control API.
        let a = alloc.clone();
        let kept = tokio::spawn(async move { a.open_hub(7, "ann".into()).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            200,
            pod_list(vec![pod("croft-instance-0", "127.0.0.1", true, stub.port)]),
        );
        assert_eq!(kept.await.unwrap().unwrap(), (1, stub_endpoint()));
        // No ready pod: no farm, and a clear answer rather than a hang.
        let a = alloc.clone();
        let opened = tokio::spawn(async move { a.open_farm(9).await });
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(send, 200, pod_list(vec![]));
        assert!(matches!(opened.await.unwrap(), Err(AllocError::NoCapacity)));
    }

    #[tokio::test]
    async fn under_agones_a_farm_opens_on_an_allocated_game_server() {
        let stub = stub_instance().await;
        let (client, mut handle) = mock_client();
        let alloc = Arc::new(KubeAllocator::new(client, agones(stub.port)).unwrap());
        let a = alloc.clone();
        let opened = tokio::spawn(async move { a.open_farm(7).await });
        // No game server known yet: one is allocated from the Fleet.
        let (method, path, _, body, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "POST",
                "/apis/allocation.agones.dev/v1/namespaces/croft-games/gameserverallocations"
            )
        );
        assert_eq!(body["kind"], "GameServerAllocation");
        answer(send, 201, allocated("instances-abc"));
        assert_eq!(opened.await.unwrap().unwrap(), stub_endpoint());
        // Known now: the next farm goes there without another allocation.
        alloc.open_farm(8).await.unwrap();
        assert_eq!(stub.farms.lock().unwrap().len(), 2);
    }
}
