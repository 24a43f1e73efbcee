//! The same behaviour against SQLite (a temporary file) and Postgres (a fresh database on the
//! server named by `CROFT_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::time::{Duration, Instant};

use store::{MatchResult, OutboxEvent, PoolSettings, Store, StoreError};

async fn both() -> Vec<(&'static str, Store)> {
    store::testing::both().await
}

#[tokio::test]
async fn users_are_unique_by_folded_name_and_found_again() {
    for (engine, store) in both().await {
        let u = store.create_user("Alice", "$argon2id$fake").await.unwrap();
        assert!(u.id > 0);
        let again = store.create_user("  alice ", "$argon2id$other").await;
        assert!(
            matches!(again, Err(StoreError::Conflict(_))),
            "{engine}: {again:?}"
        );
        let found = store.user_by_name("ALICE").await.unwrap().expect("found");
        assert_eq!(found, u, "{engine}");
        assert_eq!(store.user_by_id(u.id).await.unwrap(), Some(u.clone()));
        assert_eq!(store.user_by_name("bob").await.unwrap(), None);
        store.set_disabled(u.id, true).await.unwrap();
        assert!(
            store.user_by_id(u.id).await.unwrap().unwrap().disabled,
            "{engine}"
        );
        assert!(matches!(
            store.set_disabled(12345, true).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn outbox_rows_come_back_in_order_and_are_marked_sent() {
    for (engine, store) in both().await {
        let user = store
            .create_user_with_event("carol", "$argon2id$x", |u| OutboxEvent {
                event_id: format!("evt-{}", u.id),
                event_type: "user_created".into(),
                key: u.id.to_string(),
                payload: format!("{{\"user_id\":{}}}", u.id),
            })
            .await
            .unwrap();
        for i in 0..3 {
            store
                .insert_event(&OutboxEvent {
                    event_id: format!("e{i}"),
                    event_type: "user_login".into(),
                    key: user.id.to_string(),
                    payload: "{}".into(),
                })
                .await
                .unwrap();
        }
        let rows = store.unsent_events(10).await.unwrap();
        assert_eq!(rows.len(), 4, "{engine}");
        assert_eq!(rows[0].event.event_type, "user_created");
        assert!(
            rows.windows(2).all(|w| w[0].id < w[1].id),
            "{engine}: ordered"
        );
        store.mark_sent(&[rows[0].id, rows[1].id]).await.unwrap();
        assert_eq!(store.unsent_count().await.unwrap(), 2, "{engine}");
        let rest = store.unsent_events(10).await.unwrap();
        assert_eq!(
            rest.iter()
                .map(|r| r.event.event_id.clone())
                .collect::<Vec<_>>(),
            vec!["e1", "e2"]
        );
        // Event ids are unique: a duplicate is refused, not silently stored twice.
        let dup = store
            .insert_event(&OutboxEvent {
                event_id: "e1".into(),
                event_type: "x".into(),
                key: "k".into(),
                payload: "{}".into(),
            })
            .await;
        assert!(
            matches!(dup, Err(StoreError::Conflict(_))),
            "{engine}: {dup:?}"
        );
    }
}

#[tokio::test]
async fn outbox_reads_after_a_cursor_and_marks_thousands_of_ids_at_once() {
    for (engine, store) in both().await {
        let events: Vec<OutboxEvent> = (0..2_500)
            .map(|i| OutboxEvent {
                event_id: format!("bulk-{i}"),
                event_type: "user_login".into(),
                key: (i % 7).to_string(),
                payload: format!("{{\"n\":{i}}}"),
            })
            .collect();
        store.insert_events(&events).await.unwrap();
        let first = store.unsent_events(1_000).await.unwrap();
        assert_eq!(first.len(), 1_000, "{engine}");
        let cursor = first.last().unwrap().id;
        // The next batch starts after the cursor although the first is not marked yet.
        let second = store.unsent_events_after(cursor, 1_000).await.unwrap();
        assert_eq!(second.len(), 1_000, "{engine}");
        assert!(second.iter().all(|r| r.id > cursor), "{engine}");
        assert_eq!(second[0].event.event_id, "bulk-1000", "{engine}");
        assert_eq!(second[0].event.payload, "{\"n\":1000}", "{engine}");
        assert!(second.iter().all(|r| r.sent_at.is_none()), "{engine}");
        // 1,999 ids in one mark (the old statement took 500 at a time); one id left out.
        let mut ids: Vec<i64> = first.iter().chain(&second).map(|r| r.id).collect();
        let kept = ids.remove(1_500);
        store.mark_sent(&ids).await.unwrap();
        store.mark_sent(&[]).await.unwrap();
        assert_eq!(store.unsent_count().await.unwrap(), 501, "{engine}");
        let rest = store.unsent_events(10).await.unwrap();
        assert_eq!(rest[0].id, kept, "{engine}: only the given ids are marked");
        assert_eq!(rest[1].event.event_id, "bulk-2000", "{engine}");
        let sent = store.outbox(3).await.unwrap();
        assert!(sent.iter().all(|r| r.sent_at.is_some()), "{engine}");
        // Past the end: nothing.
        let last = store.unsent_events(1_000).await.unwrap().last().unwrap().id;
        assert!(
            store
                .unsent_events_after(last, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn a_failed_transaction_leaves_neither_user_nor_event() {
    for (engine, store) in both().await {
        store.create_user("dave", "$h").await.unwrap();
        let r = store
            .create_user_with_event("DAVE", "$h", |u| OutboxEvent {
                event_id: format!("evt-{}", u.id),
                event_type: "user_created".into(),
                key: "k".into(),
                payload: "{}".into(),
            })
            .await;
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{engine}");
        assert!(
            store.unsent_events(10).await.unwrap().is_empty(),
            "{engine}: event leaked"
        );
    }
}

fn result(match_id: i64, reason: &str) -> MatchResult {
    MatchResult {
        match_id,
        players: [1, 2],
        winner: (reason == "HeroDied").then_some(1),
        reason: reason.into(),
        turns: 12,
        data_version: "abc".into(),
        record: "{}".into(),
    }
}

fn ended_event(id: &str) -> OutboxEvent {
    OutboxEvent {
        event_id: id.into(),
        event_type: "game_ended".into(),
        key: "7".into(),
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn match_results_are_recorded_once() {
    for (engine, store) in both().await {
        store.record_match(&result(7, "HeroDied")).await.unwrap();
        let again = store.record_match(&result(7, "Aborted")).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{engine}");
        assert_eq!(store.match_count().await.unwrap(), 1);
    }
}

/// The instance's path: the result and its `game_ended` in one transaction, once however often
/// it is retried, and nothing of either when the match was recorded already.
#[tokio::test]
async fn a_result_and_its_event_are_written_together_once() {
    for (engine, store) in both().await {
        assert!(
            store
                .record_match_with_event(&result(8, "HeroDied"), &ended_event("e8"))
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            !store
                .record_match_with_event(&result(8, "HeroDied"), &ended_event("e8-retry"))
                .await
                .unwrap(),
            "{engine}"
        );
        let events = store.unsent_events(10).await.unwrap();
        assert_eq!(
            events
                .iter()
                .map(|e| &e.event.event_id[..])
                .collect::<Vec<_>>(),
            ["e8"],
            "{engine}"
        );
        // Recorded by someone else first (matchmaking's abort): no event from the instance.
        store.record_match(&result(9, "Aborted")).await.unwrap();
        assert!(
            !store
                .record_match_with_event(&result(9, "HeroDied"), &ended_event("e9"))
                .await
                .unwrap()
        );
        assert_eq!(store.unsent_events(10).await.unwrap().len(), 1, "{engine}");
        assert_eq!(
            store.match_reason(9).await.unwrap().as_deref(),
            Some("Aborted")
        );
        let mut found = store.recorded_matches(&[7, 8, 9, 10]).await.unwrap();
        found.sort();
        assert_eq!(
            found,
            vec![(8, "HeroDied".to_string()), (9, "Aborted".to_string())],
            "{engine}"
        );
        assert_eq!(store.recorded_matches(&[]).await.unwrap(), vec![]);
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    for (_, store) in both().await {
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
    }
}

#[tokio::test]
async fn a_database_that_is_down_fails_fast_with_unavailable() {
    // Nothing listens on port 1.
    let settings = PoolSettings {
        max_connections: 2,
        acquire_timeout: Duration::from_millis(500),
    };
    let start = Instant::now();
    let r = Store::connect("postgres://postgres@127.0.0.1:1/none", &settings).await;
    assert!(
        matches!(r, Err(StoreError::Unavailable(_))),
        "{:?}",
        r.err()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let r = Store::connect("mysql://x@127.0.0.1/db", &settings).await;
    assert!(matches!(r, Err(StoreError::Config(_))));
}

fn refresh(hash: &str, family: &str, ttl_ms: i64) -> store::NewRefresh {
    store::NewRefresh {
        token_hash: hash.into(),
        family_id: family.into(),
        expires_at: store::now_ms() + ttl_ms,
    }
}

fn login_event(n: u32) -> OutboxEvent {
    OutboxEvent {
        event_id: format!("login-{n}"),
        event_type: "user_login".into(),
        key: "k".into(),
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn refresh_rotation_reuse_detection_and_logout() {
    use store::RefreshOutcome;
    for (engine, store) in both().await {
        let u = store.create_user("erin", "$h").await.unwrap();
        store
            .open_session(u.id, "s1", &refresh("h1", "f1", 60_000), &login_event(1))
            .await
            .unwrap();
        assert_eq!(store.session_revoked("s1").await.unwrap(), Some(false));
        let r = store
            .rotate_refresh("h1", "h2", store::now_ms() + 60_000)
            .await
            .unwrap();
        assert_eq!(
            r,
            RefreshOutcome::Rotated {
                user_id: u.id,
                session_id: "s1".into()
            },
            "{engine}"
        );
        // Presenting h1 again: reuse, the family and the session are revoked.
        assert_eq!(
            store
                .rotate_refresh("h1", "h3", store::now_ms() + 60_000)
                .await
                .unwrap(),
            RefreshOutcome::ReuseDetected {
                session_id: "s1".into()
            }
        );
        assert_eq!(
            store
                .rotate_refresh("h2", "h4", store::now_ms() + 60_000)
                .await
                .unwrap(),
            RefreshOutcome::Revoked,
            "{engine}"
        );
        assert_eq!(store.session_revoked("s1").await.unwrap(), Some(true));
        assert_eq!(
            store.rotate_refresh("nope", "x", 0).await.unwrap(),
            RefreshOutcome::Unknown
        );

        store
            .open_session(u.id, "s2", &refresh("k1", "f2", -1), &login_event(2))
            .await
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh("k1", "k2", store::now_ms())
                .await
                .unwrap(),
            RefreshOutcome::Expired,
            "{engine}"
        );

        store
            .open_session(u.id, "s3", &refresh("m1", "f3", 60_000), &login_event(3))
            .await
            .unwrap();
        store.revoke_session("s3").await.unwrap();
        assert_eq!(
            store
                .rotate_refresh("m1", "m2", store::now_ms() + 60_000)
                .await
                .unwrap(),
            RefreshOutcome::Revoked
        );
        assert_eq!(store.session_revoked("zz").await.unwrap(), None);
        // The login events went out through the outbox with the sessions.
        let types: Vec<String> = store
            .unsent_events(10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.event_type)
            .collect();
        assert_eq!(types, vec!["user_login"; 3], "{engine}");
    }
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_cannot_both_win() {
    use store::RefreshOutcome;
    for (engine, store) in both().await {
        let u = store.create_user("frank", "$h").await.unwrap();
        store
            .open_session(u.id, "sx", &refresh("c1", "fx", 60_000), &login_event(9))
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            store.rotate_refresh("c1", "c2", store::now_ms() + 60_000),
            store.rotate_refresh("c1", "c3", store::now_ms() + 60_000)
        );
        let outcomes = [a, b];
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(RefreshOutcome::Rotated { .. })))
            .count();
        assert!(wins <= 1, "{engine}: {outcomes:?}");
    }
}

/// A `friend_request` outbox row as the connection server writes one (through the events crate).
fn friend_event(id: &str, from: i64) -> impl FnOnce(i64) -> OutboxEvent {
    let id = id.to_string();
    move |to| OutboxEvent {
        event_id: id,
        event_type: "friend_request".into(),
        key: to.to_string(),
        payload: format!("{{\"from_user_id\":{from},\"to_user_id\":{to}}}"),
    }
}

#[tokio::test]
async fn friend_requests_accept_decline_remove_and_list() {
    use store::{FriendError, FriendState, RequestOutcome};
    for (engine, store) in both().await {
        let a = store.create_user("ann", "$argon2id$x").await.unwrap();
        let b = store.create_user("ben", "$argon2id$x").await.unwrap();
        let c = store.create_user("cid", "$argon2id$x").await.unwrap();
        assert!(matches!(
            store
                .request_friend(a.id, "nobody", friend_event("e1", a.id))
                .await,
            Err(FriendError::UnknownUser(_))
        ));
        assert!(matches!(
            store
                .request_friend(a.id, "ANN", friend_event("e1", a.id))
                .await,
            Err(FriendError::Yourself)
        ));
        let out = store
            .request_friend(a.id, "Ben", friend_event("e2", a.id))
            .await
            .unwrap();
        assert_eq!(
            out,
            RequestOutcome::Requested {
                to: b.id,
                username: "ben".into()
            },
            "{engine}"
        );
        // Asking twice changes nothing and writes no second event.
        assert_eq!(
            store
                .request_friend(a.id, "ben", friend_event("e3", a.id))
                .await
                .unwrap(),
            RequestOutcome::Unchanged { with: b.id }
        );
        let listed = store.friends(b.id).await.unwrap();
        assert_eq!(listed.len(), 1, "{engine}");
        assert_eq!(listed[0].state, FriendState::Incoming);
        assert_eq!(
            store.friends(a.id).await.unwrap()[0].state,
            FriendState::Outgoing
        );
        // Only the addressee can accept.
        assert!(matches!(
            store.accept_friend(a.id, b.id).await,
            Err(FriendError::NoRequest(_))
        ));
        store.accept_friend(b.id, a.id).await.unwrap();
        for (me, them) in [(a.id, b.id), (b.id, a.id)] {
            let f = store.friends(me).await.unwrap();
            assert_eq!(f.len(), 1, "{engine}");
            assert_eq!((f[0].user_id, f[0].state), (them, FriendState::Accepted));
        }
        // A request crossing an existing one accepts it.
        store
            .request_friend(c.id, "ann", friend_event("e4", c.id))
            .await
            .unwrap();
        assert_eq!(
            store
                .request_friend(a.id, "cid", friend_event("e5", a.id))
                .await
                .unwrap(),
            RequestOutcome::Accepted {
                with: c.id,
                username: "cid".into()
            }
        );
        assert_eq!(store.friends(a.id).await.unwrap().len(), 2, "{engine}");
        // Decline and remove.
        store.remove_friend(a.id, c.id).await.unwrap();
        store
            .request_friend(c.id, "ben", friend_event("e6", c.id))
            .await
            .unwrap();
        store.decline_friend(b.id, c.id).await.unwrap();
        assert!(matches!(
            store.decline_friend(b.id, c.id).await,
            Err(FriendError::NoRequest(_))
        ));
        assert!(store.remove_friend(b.id, a.id).await.unwrap());
        assert!(!store.remove_friend(b.id, a.id).await.unwrap());
        assert!(store.friends(a.id).await.unwrap().is_empty(), "{engine}");
        let events = store.unsent_events(100).await.unwrap();
        let requests = events
            .iter()
            .filter(|e| e.event.event_type == "friend_request")
            .count();
        assert_eq!(requests, 3, "{engine}: one event per new request");
        assert_eq!(store.rating(a.id).await.unwrap(), 1000);
    }
}

#[tokio::test]
async fn the_revocation_feed_lists_revoked_sessions_since_a_time() {
    for (engine, store) in both().await {
        let u = store.create_user("rita", "$argon2id$x").await.unwrap();
        let before = store::now_ms();
        for s in ["s1", "s2"] {
            let refresh = store::NewRefresh {
                token_hash: format!("h-{s}"),
                family_id: format!("f-{s}"),
                expires_at: before + 60_000,
            };
            let event = OutboxEvent {
                event_id: format!("login-{s}"),
                event_type: "user_login".into(),
                key: u.id.to_string(),
                payload: "{}".into(),
            };
            store.open_session(u.id, s, &refresh, &event).await.unwrap();
        }
        assert!(store.revoked_since(before, 0, 10).await.unwrap().is_empty());
        store.revoke_session("s2").await.unwrap();
        let feed = store.revoked_since(before, 0, 10).await.unwrap();
        assert_eq!(feed.len(), 1, "{engine}");
        assert_eq!(feed[0].session_id, "s2");
        assert!(
            store
                .revoked_since(feed[0].revoked_at + 1, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Disabling revokes every session in one millisecond: pages of one still advance.
        store.set_disabled(u.id, true).await.unwrap();
        let mut since = feed[0].revoked_at;
        let mut skip = 0;
        let mut seen = Vec::new();
        loop {
            let page = store.revoked_since(since, skip, 1).await.unwrap();
            let Some(last) = page.last() else { break };
            skip = if last.revoked_at == since {
                skip + 1
            } else {
                1
            };
            since = last.revoked_at;
            seen.push(last.session_id.clone());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen, vec!["s1".to_string(), "s2".to_string()], "{engine}");
    }
}
