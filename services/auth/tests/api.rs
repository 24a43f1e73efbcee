//! The auth HTTP API against SQLite and Postgres, through the real router.

use std::sync::Arc;
use std::time::Duration;

use auth::Passwords;
use auth::service::{AuthState, internal_router, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use contracts::auth::v1::SessionTokens;
use store::Store;
use token::jwt::{JwtKeys, SigningKeyPair};
use tower::ServiceExt;

fn state(store: Store) -> AuthState {
    let mut state = AuthState::new(
        store,
        // Cheap parameters keep the suite fast; production parameters are tested in password.rs.
        Passwords::with_params(4, 64, 1, 1).unwrap(),
        JwtKeys::new(
            "croft",
            SigningKeyPair::generate().unwrap(),
            Duration::from_secs(900),
        )
        .unwrap(),
        token::ConnectTokenIssuer::new(token::NetcodeKey::generate().unwrap()),
        vec!["127.0.0.1:5100".parse().unwrap()],
        Duration::from_secs(3600),
    );
    state.backoff = Arc::new(auth::backoff::Backoff::Local(
        auth::backoff::LoginBackoff::new(3, 100, Duration::from_secs(60)),
    ));
    state.admin_token = Some("admin-credential-for-tests-0123456789".into());
    state
}

/// The public router with the internal one behind it: what a test reaches when it may use
/// both listeners (the public answers first; what it does not route goes to the internal one).
fn both(st: AuthState) -> axum::Router {
    router(st.clone()).fallback_service(internal_router(st))
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

async fn login(app: &axum::Router, user: &str, password: &str) -> (StatusCode, serde_json::Value) {
    call(
        app,
        "POST",
        "/v1/auth/login",
        None,
        Some(serde_json::json!({"username": user, "password": password})),
    )
    .await
}

#[tokio::test]
async fn login_refresh_reuse_logout_and_tokens() {
    for (engine, store) in store::testing::both().await {
        let st = state(store.clone());
        let hash = st.passwords.hash_blocking("correct horse").unwrap();
        let alice = store.create_user("Alice", &hash).await.unwrap();
        let bob = store.create_user("bob", &hash).await.unwrap();
        store.set_disabled(bob.id, true).await.unwrap();
        let app = both(st.clone());

        // Wrong password and unknown user: the same 401.
        let (s1, e1) = login(&app, "alice", "wrong horse!").await;
        let (s2, e2) = login(&app, "nobody", "correct horse").await;
        assert_eq!(
            (s1, s2),
            (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED),
            "{engine}"
        );
        assert_eq!(e1, e2, "no username probing");
        let (s, e) = login(&app, "bob", "correct horse").await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(e["error"]["code"], "account_disabled");

        let (s, body) = login(&app, "ALICE", "correct horse").await;
        assert_eq!(s, StatusCode::OK, "{engine}: {body}");
        let tokens: SessionTokens = serde_json::from_value(body).unwrap();
        assert_eq!(tokens.user_id, alice.id as u64);
        assert!(tokens.expires_in > 800 && tokens.expires_in <= 900);
        // The connect token binds the user and the session for the connection server.
        let ct = token::decode_token(&tokens.connect_token).unwrap();
        assert_eq!(ct.client_id, alice.id as u64);
        assert_eq!(
            ct.server_addresses[0],
            Some("127.0.0.1:5100".parse().unwrap())
        );

        // JWKS verifies the access token on its own.
        let (s, jwks) = call(&app, "GET", "/.well-known/jwks.json", None, None).await;
        assert_eq!(s, StatusCode::OK);
        let verifier = JwtKeys::verifier_from_jwks("croft", &jwks).unwrap();
        assert_eq!(
            verifier.verify(&tokens.access_token).unwrap().user_id(),
            Some(alice.id)
        );

        // Fresh connect token with the access token.
        let (s, _) = call(
            &app,
            "POST",
            "/v1/auth/connect-token",
            Some(&tokens.access_token),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, e) = call(
            &app,
            "POST",
            "/v1/auth/connect-token",
            Some("not.a.jwt"),
            None,
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token"))
        );

        // Refresh rotates; the old refresh token is then reuse and revokes the family.
        let (s, body) = call(
            &app,
            "POST",
            "/v1/auth/refresh",
            None,
            Some(serde_json::json!({"refresh_token": tokens.refresh_token})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{engine}: {body}");
        let rotated: SessionTokens = serde_json::from_value(body).unwrap();
        assert_ne!(rotated.refresh_token, tokens.refresh_token);
        let (s, e) = call(
            &app,
            "POST",
            "/v1/auth/refresh",
            None,
            Some(serde_json::json!({"refresh_token": tokens.refresh_token})),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("token_reused"))
        );
        let (s, e) = call(
            &app,
            "POST",
            "/v1/auth/refresh",
            None,
            Some(serde_json::json!({"refresh_token": rotated.refresh_token})),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("session_revoked")),
            "{engine}"
        );
        // The revoked session's access token no longer works either.
        let (s, e) = call(
            &app,
            "POST",
            "/v1/auth/connect-token",
            Some(&rotated.access_token),
            None,
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("session_revoked"))
        );

        // Logout ends a session; introspection reports it.
        let (_, body) = login(&app, "alice", "correct horse").await;
        let t: SessionTokens = serde_json::from_value(body).unwrap();
        let (s, v) = call(
            &app,
            "POST",
            "/v1/auth/introspect",
            None,
            Some(serde_json::json!({"session_id": t.session_id})),
        )
        .await;
        assert_eq!((s, v["active"].as_bool()), (StatusCode::OK, Some(true)));
        let (s, _) = call(&app, "POST", "/v1/auth/logout", Some(&t.access_token), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (_, v) = call(
            &app,
            "POST",
            "/v1/auth/introspect",
            None,
            Some(serde_json::json!({"session_id": t.session_id})),
        )
        .await;
        assert_eq!(v["active"].as_bool(), Some(false));
        let (s, _) = call(&app, "POST", "/v1/auth/logout", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);

        // Every login wrote a user_login event in its transaction, the logout a user_logout.
        let events = store.unsent_events(100).await.unwrap();
        let count = |t: &str| events.iter().filter(|e| e.event.event_type == t).count();
        assert_eq!(count("user_login"), 2, "{engine}");
        assert_eq!(count("user_logout"), 1, "{engine}");
    }
}

#[tokio::test]
async fn tokens_signed_by_a_rotated_out_key_and_expired_tokens() {
    let store = store::testing::sqlite().await;
    let st = state(store.clone());
    let hash = st.passwords.hash_blocking("correct horse").unwrap();
    store.create_user("carol", &hash).await.unwrap();
    let app = router(st.clone());
    let (_, body) = login(&app, "carol", "correct horse").await;
    let t: SessionTokens = serde_json::from_value(body).unwrap();
    // Rotation keeps the old token valid ...
    st.jwt
        .write()
        .unwrap()
        .rotate(SigningKeyPair::generate().unwrap())
        .unwrap();
    let (s, _) = call(
        &app,
        "POST",
        "/v1/auth/connect-token",
        Some(&t.access_token),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // ... until the old key is pruned after its tokens' lifetime.
    st.jwt
        .write()
        .unwrap()
        .prune(token::jwt::unix_now() + 10_000);
    let (s, e) = call(
        &app,
        "POST",
        "/v1/auth/connect-token",
        Some(&t.access_token),
        None,
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    // An expired token says so.
    let (old, _) = st
        .jwt
        .read()
        .unwrap()
        .issue_at(1, &t.session_id, token::jwt::unix_now() - 3600)
        .unwrap();
    let (s, e) = call(&app, "POST", "/v1/auth/connect-token", Some(&old), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_error_and_a_dead_database_a_503() {
    let store = store::testing::sqlite().await;
    let app = router(state(store.clone()));
    let req = Request::builder()
        .method("POST")
        .uri("/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "bad_request");
    // The pool is closed: calls fail fast with 503 and Retry-After instead of hanging.
    store.close().await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"username":"a","password":"correct horse"}"#))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
}

#[tokio::test]
async fn repeated_failures_back_off_per_account() {
    let store = store::testing::sqlite().await;
    let st = state(store.clone());
    let hash = st.passwords.hash_blocking("correct horse").unwrap();
    store.create_user("hank", &hash).await.unwrap();
    let app = router(st);
    for _ in 0..3 {
        assert_eq!(
            login(&app, "hank", "wrong horse!").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The fourth failure starts the wait; even the right password waits now.
    assert_eq!(
        login(&app, "hank", "wrong horse!").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, e) = login(&app, "HANK", "correct horse").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_failures"))
    );
    // Unknown names are treated the same way (no probing through the backoff).
    for _ in 0..4 {
        login(&app, "ghost", "wrong horse!").await;
    }
    assert_eq!(
        login(&app, "ghost", "wrong horse!").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_get_no_more_tries_than_sequential_ones() {
    let store = store::testing::sqlite().await;
    let st = state(store.clone());
    let hash = st.passwords.hash_blocking("correct horse").unwrap();
    store.create_user("ivy", &hash).await.unwrap();
    let app = router(st);
    // Twelve guesses at once (the password check's 4 permits and 8 queue places hold them
    // all): in sequence the fourth failure starts the wait, so at most four may be tried.
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..12 {
        let app = app.clone();
        guesses.spawn(async move { login(&app, "ivy", &format!("wrong horse {i}")).await.0 });
    }
    let answers = guesses.join_all().await;
    let tried = answers
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let waited = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(tried <= 4, "{tried} guesses were tried: {answers:?}");
    assert_eq!(tried + waited, 12, "{answers:?}");
}

#[tokio::test]
async fn the_admin_endpoint_needs_its_credential() {
    for (engine, store) in store::testing::both().await {
        let app = both(state(store.clone()));
        let body = serde_json::json!({"username": "ivy", "password": "correct horse"});
        let (s, _) = call(&app, "POST", "/v1/admin/users", None, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{engine}");
        let (s, _) = call(
            &app,
            "POST",
            "/v1/admin/users",
            Some("wrong-credential-wrong-credential"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let admin = Some("admin-credential-for-tests-0123456789");
        let (s, v) = call(&app, "POST", "/v1/admin/users", admin, Some(body.clone())).await;
        assert_eq!(s, StatusCode::CREATED, "{engine}: {v}");
        assert!(store.user_by_name("IVY").await.unwrap().is_some());
        let (s, v) = call(&app, "POST", "/v1/admin/users", admin, Some(body)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("conflict"))
        );
        let (s, v) = call(
            &app,
            "POST",
            "/v1/admin/users",
            admin,
            Some(serde_json::json!({"username": "jo", "password": "short"})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("weak_password"))
        );
        assert_eq!(login(&app, "ivy", "correct horse").await.0, StatusCode::OK);
    }
    // Without a configured credential the admin API does not exist.
    let store = store::testing::sqlite().await;
    let mut st = state(store);
    st.admin_token = None;
    let (s, _) = call(
        &both(st),
        "POST",
        "/v1/admin/users",
        Some("anything-anything-anything"),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The routes only the internal listener serves.
const INTERNAL: &[&str] = &[
    "/v1/auth/introspect",
    "/v1/auth/revocations",
    "/v1/admin/users",
];

#[tokio::test]
async fn internal_endpoints_answer_only_on_the_internal_listener() {
    let store = store::testing::sqlite().await;
    let st = state(store);
    let public = router(st.clone());
    let internal = internal_router(st);
    let admin = Some("admin-credential-for-tests-0123456789");
    for path in INTERNAL {
        for method in ["GET", "POST"] {
            let (s, _) = call(&public, method, path, admin, Some(serde_json::json!({}))).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "public {method} {path}");
        }
    }
    // The internal listener serves them, and documents exactly them.
    let (s, _) = call(&internal, "GET", "/v1/auth/revocations?since=0", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, doc) = call(&internal, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    let mut expected = INTERNAL.to_vec();
    expected.sort_unstable();
    assert_eq!(documented, expected);
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_bodies() {
    let store = store::testing::sqlite().await;
    let st = state(store.clone());
    let hash = st.passwords.hash_blocking("correct horse").unwrap();
    store.create_user("kim", &hash).await.unwrap();
    let app = router(st);
    let (s, doc) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    // Every documented operation exists (not 404/405) ...
    for (method, path) in &documented {
        let (s, _) = call(&app, method, path, None, None).await;
        assert!(
            s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {s}"
        );
    }
    // ... and every public route is documented, and no internal one.
    for route in [
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/connect-token",
        "/.well-known/jwks.json",
    ] {
        assert!(paths.contains_key(route), "{route} is not in /openapi.json");
    }
    for route in INTERNAL {
        assert!(
            !paths.contains_key(*route),
            "{route} is in the public /openapi.json"
        );
    }
    // A real login answer has exactly the documented properties, all the required ones.
    let schema = &doc["components"]["schemas"]["SessionTokens"];
    let mut documented_props: Vec<String> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    documented_props.sort();
    let (_, body) = login(&app, "kim", "correct horse").await;
    let mut actual: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
    actual.sort();
    assert_eq!(actual, documented_props);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.iter().all(|r| body.get(*r).is_some()));
    // Error answers have the documented shape too.
    let (_, err) = login(&app, "kim", "wrong horse!").await;
    let detail = &doc["components"]["schemas"]["ErrorDetail"]["properties"];
    assert!(detail.get("code").is_some() && detail.get("message").is_some());
    assert!(err["error"]["code"].is_string() && err["error"]["message"].is_string());
}

#[tokio::test]
async fn disabling_an_account_ends_its_sessions_and_long_names_are_refused_early() {
    for (engine, store) in store::testing::both().await {
        let st = state(store.clone());
        let hash = st.passwords.hash_blocking("correct horse").unwrap();
        let lee = store.create_user("lee", &hash).await.unwrap();
        let app = router(st);
        let (_, body) = login(&app, "lee", "correct horse").await;
        let t: SessionTokens = serde_json::from_value(body).unwrap();
        store.set_disabled(lee.id, true).await.unwrap();
        let (s, e) = call(
            &app,
            "POST",
            "/v1/auth/refresh",
            None,
            Some(serde_json::json!({"refresh_token": t.refresh_token})),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("session_revoked")),
            "{engine}"
        );
        let (s, _) = call(
            &app,
            "POST",
            "/v1/auth/connect-token",
            Some(&t.access_token),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{engine}");
        let (s, _) = login(&app, &"x".repeat(10_000), "correct horse").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn connect_tokens_spread_logins_over_the_connection_servers_and_revocations_are_listed() {
    let store = store::testing::sqlite().await;
    let mut st = state(store.clone());
    let servers: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:5100".parse().unwrap(),
        "127.0.0.1:5101".parse().unwrap(),
        "127.0.0.1:5200".parse().unwrap(),
    ];
    st.connection_servers = servers.clone();
    let hash = st.passwords.hash("spread the load".into()).await.unwrap();
    store.create_user("sam", &hash).await.unwrap();
    let app = both(st);
    let mut firsts = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (status, body) = login(&app, "sam", "spread the load").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let t = token::decode_token(body["connect_token"].as_str().unwrap()).unwrap();
        let listed: Vec<std::net::SocketAddr> =
            t.server_addresses.iter().flatten().copied().collect();
        // Every server is in every token, in a rotated order.
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(sorted, servers);
        firsts.push(listed[0]);
        sessions.push(body["session_id"].as_str().unwrap().to_string());
    }
    firsts.sort();
    assert_eq!(
        firsts, servers,
        "three logins start on three different servers"
    );

    // The revocation feed names the logged-out session by its tag only.
    let since = store::now_ms() - 1000;
    store.revoke_session(&sessions[1]).await.unwrap();
    let (status, feed) = call(
        &app,
        "GET",
        &format!("/v1/auth/revocations?since={since}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let tags: Vec<&str> = feed["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap())
        .collect();
    let expected = token::revocation::tag_hex(&token::revocation::session_tag(&sessions[1]));
    assert_eq!(tags, vec![expected.as_str()]);
    assert!(!feed.to_string().contains(&sessions[1]));
    let (status, _) = call(&app, "GET", "/v1/auth/revocations", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
