//! One conformance suite for both control stores: every case runs in-process and against the
//! real Redis (CROFT_TEST_REDIS, default redis://127.0.0.1:6379; `scripts/services` starts it),
//! each Redis case under its own key prefix.

use std::time::Duration;

use control_store::{
    Cancelled, ControlError, ControlStore, Enqueued, Group, Home, Lease, Seat, Ticket, UserId,
};

use control_store::testing::redis_url;

/// A second handle on the same state: another replica.
fn replica(store: &ControlStore, prefix: &str) -> ControlStore {
    match store {
        ControlStore::Local(_) => store.clone(),
        ControlStore::Redis(_) => ControlStore::redis(&redis_url(), prefix).expect("redis url"),
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(control_store::ControlStore::local(), "").await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let redis = control_store::testing::redis("conformance").await;
                    let prefix = redis.prefix().to_string();
                    let store = control_store::ControlStore::Redis(redis);
                    super::$case(store.clone(), &prefix).await;
                    store.clear().await.expect("clearing the test keys");
                }
            )*
        }
    };
}

conformance!(
    queue_rules,
    the_lease_has_one_holder_and_a_growing_epoch,
    the_lease_expires,
    one_holder_among_racing_replicas,
    a_match_is_formed_placed_and_closed_once,
    forming_takes_all_tickets_or_none,
    many_matches_form_in_one_step_each_all_or_none,
    a_release_frees_the_players,
    fenced_steps_change_nothing,
    expiry_takes_only_the_ticket_it_saw,
    expiry_leaves_a_ticket_that_moved_server,
    mailbox_reads_are_seen,
    mailboxes_keep_order_acknowledge_and_trim,
    a_mail_watch_wakes_on_new_mail,
    replicas_share_the_state,
    concurrent_enqueues_are_each_answered_once,
    homes_are_shared_replaced_and_expire,
);

fn ticket(user_id: UserId, rating: i32, enqueued_ms: u64, server: &str) -> Ticket {
    Ticket {
        user_id,
        rating,
        enqueued_ms,
        server: server.into(),
        tag: format!("tag-{user_id}-{server}"),
    }
}

async fn leader(store: &ControlStore, holder: &str) -> Lease {
    store
        .lead(holder, Duration::from_secs(30))
        .await
        .expect("lead")
        .expect("the lease is free")
}

async fn queue_rules(store: ControlStore, _: &str) {
    assert_eq!(
        store.enqueue(&ticket(2, 1000, 20, "s1")).await.unwrap(),
        Enqueued::New
    );
    assert_eq!(
        store.enqueue(&ticket(1, 1200, 10, "s1")).await.unwrap(),
        Enqueued::New
    );
    // Queuing again keeps the ticket and its time, and follows the player to their new server.
    assert_eq!(
        store.enqueue(&ticket(2, 900, 99, "s2")).await.unwrap(),
        Enqueued::Existing
    );
    let tickets = store.tickets().await.unwrap();
    assert_eq!(
        tickets,
        vec![ticket(1, 1200, 10, "s1"), ticket(2, 1000, 20, "s2")]
    );
    assert_eq!(store.counts().await.unwrap(), (2, 0));
    assert_eq!(store.cancel(1).await.unwrap(), Cancelled::Cancelled);
    assert_eq!(store.cancel(1).await.unwrap(), Cancelled::NotQueued);
    assert_eq!(store.tickets().await.unwrap().len(), 1);
    assert_eq!(store.seat(2).await.unwrap(), None);
}

async fn the_lease_has_one_holder_and_a_growing_epoch(store: ControlStore, _: &str) {
    let a = leader(&store, "a").await;
    assert_eq!(
        store.lead("b", Duration::from_secs(30)).await.unwrap(),
        None
    );
    // Renewing keeps the epoch.
    assert_eq!(leader(&store, "a").await, a);
    store.resign("b").await.unwrap();
    assert_eq!(leader(&store, "a").await, a, "only the holder can resign");
    store.resign("a").await.unwrap();
    let b = leader(&store, "b").await;
    assert!(b.epoch > a.epoch, "{b:?} after {a:?}");
    assert_eq!(
        store.lead("a", Duration::from_secs(30)).await.unwrap(),
        None
    );
}

async fn the_lease_expires(store: ControlStore, _: &str) {
    let a = store
        .lead("a", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = leader(&store, "b").await;
    assert!(b.epoch > a.epoch);
    store.enqueue(&ticket(1, 1000, 1, "s")).await.unwrap();
    store.enqueue(&ticket(2, 1000, 1, "s")).await.unwrap();
    assert!(matches!(
        store.form(&a, 7, &[1, 2], "formed").await,
        Err(ControlError::Fenced)
    ));
}

async fn one_holder_among_racing_replicas(store: ControlStore, prefix: &str) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = replica(&store, prefix);
        tasks.push(tokio::spawn(async move {
            s.lead(&format!("r{i}"), Duration::from_secs(30)).await
        }));
    }
    let mut holders = 0;
    for t in tasks {
        if t.await.unwrap().unwrap().is_some() {
            holders += 1;
        }
    }
    assert_eq!(holders, 1);
}

async fn a_match_is_formed_placed_and_closed_once(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    store.enqueue(&ticket(2, 1010, 2, "s2")).await.unwrap();
    assert!(store.form(&lease, 42, &[1, 2], "forming").await.unwrap());
    assert_eq!(store.seat(1).await.unwrap(), Some(Seat::Forming(42)));
    assert_eq!(store.tickets().await.unwrap(), vec![]);
    assert_eq!(
        store.enqueue(&ticket(1, 1000, 5, "s1")).await.unwrap(),
        Enqueued::Forming(42)
    );
    assert_eq!(store.cancel(2).await.unwrap(), Cancelled::Forming);
    assert_eq!(store.rejoin(1, "s1").await.unwrap(), None, "not placed yet");
    let m = store.matches().await.unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].state, "forming");
    assert_eq!(m[0].players, vec![(1, "s1".into()), (2, "s2".into())]);

    let mails = vec![(1, "go|1".to_string()), (2, "go 2".to_string())];
    assert!(store.place(&lease, 42, "placed", &mails).await.unwrap());
    assert_eq!(store.seat(2).await.unwrap(), Some(Seat::InMatch(42)));
    assert_eq!(
        store.enqueue(&ticket(2, 1000, 5, "s2")).await.unwrap(),
        Enqueued::InMatch(42)
    );
    let (s1, last) = store.mail_after("s1", 0, 1).await.unwrap();
    assert_eq!(s1.len(), 1);
    assert_eq!((s1[0].user_id, s1[0].body.as_str(), last), (1, "go|1", 1));
    let (s2, _) = store.mail_after("s2", 0, 1).await.unwrap();
    assert_eq!((s2[0].user_id, s2[0].body.as_str()), (2, "go 2"));

    // Player 1 reconnects through s3: the end of the match reaches them there.
    assert_eq!(
        store.rejoin(1, "s3").await.unwrap(),
        Some((42, "placed".to_string()))
    );
    assert!(store.close(42, "ended").await.unwrap());
    assert!(!store.close(42, "ended").await.unwrap(), "closed once");
    let (s3, _) = store.mail_after("s3", 0, 1).await.unwrap();
    assert_eq!(s3.iter().map(|m| m.user_id).collect::<Vec<_>>(), vec![1]);
    let (s2, _) = store.mail_after("s2", 1, 1).await.unwrap();
    assert_eq!(
        s2.iter().map(|m| &m.body[..]).collect::<Vec<_>>(),
        ["ended"]
    );
    assert_eq!(store.seat(1).await.unwrap(), None);
    assert_eq!(store.counts().await.unwrap(), (0, 0));
    assert_eq!(
        store.enqueue(&ticket(1, 1000, 9, "s1")).await.unwrap(),
        Enqueued::New
    );
}

async fn forming_takes_all_tickets_or_none(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    for u in 1..=3 {
        store.enqueue(&ticket(u, 1000, u, "s")).await.unwrap();
    }
    store.cancel(3).await.unwrap();
    assert!(!store.form(&lease, 1, &[1, 3], "forming").await.unwrap());
    assert_eq!(store.tickets().await.unwrap().len(), 2);
    assert_eq!(store.seat(1).await.unwrap(), None);
    assert!(matches!(
        store.form(&lease, 1, &[1, 1], "forming").await,
        Err(ControlError::Invalid(_))
    ));
    assert!(store.form(&lease, 1, &[1, 2], "forming").await.unwrap());
    // A match id is used once.
    store.enqueue(&ticket(3, 1000, 3, "s")).await.unwrap();
    store.enqueue(&ticket(4, 1000, 4, "s")).await.unwrap();
    assert!(!store.form(&lease, 1, &[3, 4], "forming").await.unwrap());
    assert_eq!(store.tickets().await.unwrap().len(), 2);
}

async fn many_matches_form_in_one_step_each_all_or_none(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    for u in 1..=6 {
        store.enqueue(&ticket(u, 1000, u, "s")).await.unwrap();
    }
    store.cancel(4).await.unwrap();
    let groups = [
        Group {
            match_id: 10,
            users: &[1, 2],
            state: "f10",
        },
        Group {
            match_id: 11,
            users: &[3, 4],
            state: "f11",
        },
        Group {
            match_id: 12,
            users: &[5, 6],
            state: "f12",
        },
    ];
    assert_eq!(
        store.form_many(&lease, &groups).await.unwrap(),
        vec![true, false, true]
    );
    assert_eq!(
        store.seat(3).await.unwrap(),
        None,
        "the refused group took nothing"
    );
    assert_eq!(store.seat(6).await.unwrap(), Some(Seat::Forming(12)));
    let states: Vec<String> = store
        .matches()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.state)
        .collect();
    assert_eq!(states, ["f10", "f12"]);
    assert_eq!(store.form_many(&lease, &[]).await.unwrap(), vec![]);
    store.resign("a").await.unwrap();
    store.enqueue(&ticket(4, 1000, 9, "s")).await.unwrap();
    assert!(matches!(
        store
            .form_many(
                &lease,
                &[Group {
                    match_id: 13,
                    users: &[3, 4],
                    state: "x"
                }]
            )
            .await,
        Err(ControlError::Fenced)
    ));
    assert_eq!(store.tickets().await.unwrap().len(), 2);
}

async fn a_release_frees_the_players(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    store.enqueue(&ticket(2, 1000, 2, "s1")).await.unwrap();
    assert!(store.form(&lease, 5, &[1, 2], "forming").await.unwrap());
    assert!(store.release(&lease, 5, "no_capacity").await.unwrap());
    assert!(!store.release(&lease, 5, "no_capacity").await.unwrap());
    let (mail, _) = store.mail_after("s1", 0, 1).await.unwrap();
    assert_eq!(mail.len(), 2);
    assert!(mail.iter().all(|m| m.body == "no_capacity"));
    assert_eq!(store.seat(1).await.unwrap(), None);
    assert_eq!(
        store.enqueue(&ticket(1, 1000, 3, "s1")).await.unwrap(),
        Enqueued::New
    );
}

async fn fenced_steps_change_nothing(store: ControlStore, _: &str) {
    let old = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    store.enqueue(&ticket(2, 1000, 2, "s1")).await.unwrap();
    assert!(store.form(&old, 5, &[1, 2], "forming").await.unwrap());
    store.resign("a").await.unwrap();
    let new = leader(&store, "b").await;
    let mails = vec![(1, "go".to_string())];
    assert!(matches!(
        store.place(&old, 5, "placed", &mails).await,
        Err(ControlError::Fenced)
    ));
    assert!(matches!(
        store.release(&old, 5, "x").await,
        Err(ControlError::Fenced)
    ));
    assert_eq!(store.seat(1).await.unwrap(), Some(Seat::Forming(5)));
    assert_eq!(store.mail_after("s1", 0, 1).await.unwrap().0, vec![]);
    // The new leader finishes the placement the old one started.
    assert_eq!(store.matches().await.unwrap()[0].state, "forming");
    assert!(store.place(&new, 5, "placed", &mails).await.unwrap());
    assert_eq!(store.mail_after("s1", 0, 1).await.unwrap().0.len(), 1);
}

async fn expiry_takes_only_the_ticket_it_saw(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    let seen = store.tickets().await.unwrap()[0].clone();
    // The player cancels and queues again before the expiry lands.
    store.cancel(1).await.unwrap();
    store.enqueue(&ticket(1, 1000, 50, "s1")).await.unwrap();
    assert!(!store.expire(&lease, &seen, "timed_out").await.unwrap());
    assert_eq!(store.tickets().await.unwrap().len(), 1);
    let now = store.tickets().await.unwrap()[0].clone();
    assert!(store.expire(&lease, &now, "timed_out").await.unwrap());
    assert_eq!(store.tickets().await.unwrap(), vec![]);
    let (mail, _) = store.mail_after("s1", 0, 1).await.unwrap();
    assert_eq!(
        mail.iter()
            .map(|m| (m.user_id, &m.body[..]))
            .collect::<Vec<_>>(),
        [(1, "timed_out")]
    );
}

async fn expiry_leaves_a_ticket_that_moved_server(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    let seen = store.tickets().await.unwrap()[0].clone();
    // The player reconnected through s2 and queued again: the same ticket, now relayed by s2.
    assert_eq!(
        store.enqueue(&ticket(1, 1000, 1, "s2")).await.unwrap(),
        Enqueued::Existing
    );
    assert!(!store.expire(&lease, &seen, "gone").await.unwrap());
    let now = store.tickets().await.unwrap();
    assert_eq!((now.len(), &now[0].server[..]), (1, "s2"));
    assert_eq!(store.mail_after("s1", 0, 1).await.unwrap().0, vec![]);
}

async fn mailbox_reads_are_seen(store: ControlStore, _: &str) {
    assert_eq!(store.mailboxes_seen().await.unwrap(), vec![]);
    store.mail_after("s1", 0, 1_000).await.unwrap();
    store.mail_after("s2", 0, 2_000).await.unwrap();
    store.mail_after("s1", 0, 3_000).await.unwrap();
    assert_eq!(
        store.mailboxes_seen().await.unwrap(),
        vec![("s1".to_string(), 3_000), ("s2".to_string(), 2_000)]
    );
}

async fn mailboxes_keep_order_acknowledge_and_trim(store: ControlStore, _: &str) {
    let store = store.with_mailbox_limit(3);
    let lease = leader(&store, "a").await;
    for u in 1..=5u64 {
        store.enqueue(&ticket(u, 1000, u, "s1")).await.unwrap();
        let t = store.tickets().await.unwrap();
        let t = t.iter().find(|t| t.user_id == u).unwrap();
        assert!(store.expire(&lease, t, &format!("m{u}")).await.unwrap());
    }
    // The oldest two went past the limit.
    let (mail, last) = store.mail_after("s1", 0, 1).await.unwrap();
    assert_eq!(last, 5);
    assert_eq!(
        mail.iter()
            .map(|m| (m.seq, &m.body[..]))
            .collect::<Vec<_>>(),
        [(3, "m3"), (4, "m4"), (5, "m5")]
    );
    let (mail, last) = store.mail_after("s1", 4, 1).await.unwrap();
    assert_eq!((mail.len(), mail[0].seq, last), (1, 5, 5));
    // Acknowledged mail is gone for good.
    assert_eq!(store.mail_after("s1", 0, 1).await.unwrap().0.len(), 1);
    assert_eq!(store.mail_after("nobody", 0, 1).await.unwrap(), (vec![], 0));
}

async fn a_mail_watch_wakes_on_new_mail(store: ControlStore, _: &str) {
    let lease = leader(&store, "a").await;
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    let t = store.tickets().await.unwrap()[0].clone();
    let mut watch = store.mail_watch();
    // Mail written after the watch was taken and before the wait is not missed.
    assert!(store.expire(&lease, &t, "timed_out").await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), watch.wait(Duration::from_secs(60)))
        .await
        .expect("the watch wakes on the mail");
    assert_eq!(store.mail_after("s1", 0, 1).await.unwrap().0.len(), 1);
}

async fn replicas_share_the_state(store: ControlStore, prefix: &str) {
    let other = replica(&store, prefix);
    store.enqueue(&ticket(1, 1000, 1, "s1")).await.unwrap();
    assert_eq!(
        other.enqueue(&ticket(1, 1000, 2, "s2")).await.unwrap(),
        Enqueued::Existing
    );
    let lease = leader(&other, "b").await;
    assert_eq!(
        store.lead("a", Duration::from_secs(30)).await.unwrap(),
        None
    );
    other.enqueue(&ticket(2, 1000, 3, "s2")).await.unwrap();
    assert!(other.form(&lease, 9, &[1, 2], "forming").await.unwrap());
    assert_eq!(store.seat(1).await.unwrap(), Some(Seat::Forming(9)));
    assert!(
        other
            .place(&lease, 9, "placed", &[(1, "go".into())])
            .await
            .unwrap()
    );
    assert_eq!(store.mail_after("s2", 0, 1).await.unwrap().0.len(), 1);
}

/// Many enqueues at once (over Redis they share script calls): every one is answered, each
/// player is queued once, and a second enqueue of the same player says so.
async fn concurrent_enqueues_are_each_answered_once(store: ControlStore, prefix: &str) {
    let other = replica(&store, prefix);
    let mut tasks = Vec::new();
    for round in 0..2u64 {
        for user in 1..=300u64 {
            let s = if (user + round) % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                s.enqueue(&ticket(user, 1000, round, "s")).await
            }));
        }
    }
    let (mut new, mut existing) = (0, 0);
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Enqueued::New => new += 1,
            Enqueued::Existing => existing += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((new, existing), (300, 300));
    assert_eq!(store.tickets().await.unwrap().len(), 300);
}

/// A farm's or the common area's home, set by one replica, is what the others read; a newer
/// host replaces it, each home is its own, and a home not set again expires.
async fn homes_are_shared_replaced_and_expire(store: ControlStore, prefix: &str) {
    let other = replica(&store, prefix);
    assert_eq!(store.home(Home::Farm(7)).await.unwrap(), None);
    store.set_home(Home::Farm(7), "instance-a").await.unwrap();
    other.set_home(Home::Hub, "instance-b").await.unwrap();
    assert_eq!(
        other.home(Home::Farm(7)).await.unwrap().as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        store.home(Home::Hub).await.unwrap().as_deref(),
        Some("instance-b")
    );
    assert_eq!(store.home(Home::Farm(8)).await.unwrap(), None);
    other.set_home(Home::Farm(7), "instance-c").await.unwrap();
    assert_eq!(
        store.home(Home::Farm(7)).await.unwrap().as_deref(),
        Some("instance-c")
    );
    assert!(matches!(
        store.set_home(Home::Farm(9), "").await,
        Err(ControlError::Invalid(_))
    ));
    store
        .set_home_for(Home::Farm(9), "instance-a", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(other.home(Home::Farm(9)).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other.home(Home::Farm(9)).await.unwrap(), None);
    assert!(store.home(Home::Farm(7)).await.unwrap().is_some());
}

/// Redis that does not answer: a clear error, soon, not a hang or a panic.
#[tokio::test]
async fn redis_down_is_unavailable() {
    let store = ControlStore::redis("redis://127.0.0.1:1", "{down}:").unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        store.enqueue(&ticket(1, 1000, 1, "s")),
    )
    .await
    .expect("an answer, not a hang");
    assert!(matches!(got, Err(ControlError::Unavailable(_))), "{got:?}");
    assert!(matches!(
        ControlStore::redis("not a url", "x"),
        Err(ControlError::Invalid(_))
    ));
}
