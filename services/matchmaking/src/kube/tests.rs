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
use contracts::instance::v1::{
    CreateMatchResponse, EndedMatch, HubRequest, HubResponse, MatchesReport, OpenFarmRequest,
    OpenFarmResponse,
};
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
                move |headers: axum::http::HeaderMap, Json(req): Json<OpenFarmRequest>| {
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
                            Json(OpenFarmResponse {
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
            post(|Json(req): Json<HubRequest>| async move {
                Json(HubResponse {
                    hub_id: if req.name == "ann" { 1 } else { 2 },
                    server_addr: "10.1.2.3:7777".parse().unwrap(),
                    ws_url: Some(STUB_WS.into()),
                })
            }),
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
                        boot: "test".into(),
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
    config.pod_list_ttl = Duration::ZERO;
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
    // Each call lists the pods afresh, so tests can change them between calls.
    config.pod_list_ttl = Duration::ZERO;
    config
}

/// [`plain`] with the pod list kept for the default time.
fn plain_cached() -> KubeConfig {
    let mut config = plain();
    config.pod_list_ttl = KubeConfig::new("x", config.mode.clone(), String::new()).pod_list_ttl;
    assert!(config.pod_list_ttl >= Duration::from_secs(1));
    config
}

#[tokio::test]
async fn plain_mode_opens_farms_on_their_home_pod_and_keeps_the_hub_on_one_pod() {
    let stub = stub_instance().await;
    let (client, mut handle) = mock_client();
    let alloc = Arc::new(KubeAllocator::new(client, plain()).unwrap());
    // Only pod 1 is ready: the farm opens there, which makes it the farm's home.
    let a = alloc.clone();
    let opened = tokio::spawn(async move { a.open_farm(7, None).await });
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
    let (home, endpoint) = opened.await.unwrap().unwrap();
    assert_eq!(
        (home.as_str(), endpoint),
        ("croft-instance-1", stub_endpoint())
    );
    // Both ready now: pod 0 sorts first, but the farm goes to its home, pod 1.
    let a = alloc.clone();
    let opened = tokio::spawn(async move { a.open_farm(7, Some(home)).await });
    let (_, _, _, _, send) = next(&mut handle).await;
    answer(
        send,
        200,
        pod_list(vec![
            pod("croft-instance-0", "127.0.0.1", true, stub.port),
            pod("croft-instance-1", "127.0.0.2", true, stub.port),
        ]),
    );
    assert_eq!(opened.await.unwrap().unwrap().0, "croft-instance-1");
    // Another player's farm goes to the first pod by name.
    let a = alloc.clone();
    let opened = tokio::spawn(async move { a.open_farm(8, None).await });
    let (_, _, _, _, send) = next(&mut handle).await;
    answer(
        send,
        200,
        pod_list(vec![
            pod("croft-instance-1", "127.0.0.2", true, stub.port),
            pod("croft-instance-0", "127.0.0.1", true, stub.port),
        ]),
    );
    assert_eq!(opened.await.unwrap().unwrap().0, "croft-instance-0");
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
    let kept = tokio::spawn(async move { a.open_hub(7, "ann".into(), None).await });
    let (_, _, _, _, send) = next(&mut handle).await;
    answer(
        send,
        200,
        pod_list(vec![pod("croft-instance-0", "127.0.0.1", true, stub.port)]),
    );
    assert_eq!(
        kept.await.unwrap().unwrap(),
        ("croft-instance-0".to_string(), (1, stub_endpoint()))
    );
    // No ready pod: no farm, and a clear answer rather than a hang.
    let a = alloc.clone();
    let opened = tokio::spawn(async move { a.open_farm(9, None).await });
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
    let opened = tokio::spawn(async move { a.open_farm(7, None).await });
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
    assert_eq!(
        opened.await.unwrap().unwrap(),
        ("instances-abc".to_string(), stub_endpoint())
    );
    // Known now: the next farm goes there without another allocation.
    alloc.open_farm(8, None).await.unwrap();
    assert_eq!(stub.farms.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn fifty_farm_and_hub_requests_at_once_list_the_pods_once() {
    let stub = stub_instance().await;
    let (client, mut handle) = mock_client();
    let alloc = Arc::new(KubeAllocator::new(client, plain_cached()).unwrap());
    let mut calls = tokio::task::JoinSet::new();
    for user in 1..=50u64 {
        let a = alloc.clone();
        calls.spawn(async move {
            if user % 2 == 0 {
                a.open_farm(user, None).await.map(|_| ())
            } else {
                a.open_hub(user, "ann".into(), None).await.map(|_| ())
            }
        });
    }
    let (method, path, _, _, send) = next(&mut handle).await;
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("GET", "/api/v1/namespaces/croft-games/pods")
    );
    answer(
        send,
        200,
        pod_list(vec![pod("croft-instance-0", "127.0.0.1", true, stub.port)]),
    );
    // No second list while the first is fresh, however many requests came at once.
    let again = tokio::time::timeout(Duration::from_millis(500), handle.next_request()).await;
    assert!(again.is_err(), "the pods were listed again");
    for result in calls.join_all().await {
        result.unwrap();
    }
    assert_eq!(stub.farms.lock().unwrap().len(), 25);
}
