//! The outbox relay against librdkafka's built-in Kafka-protocol broker (`MockCluster`): rows
//! go out in order with their keys and event ids, are marked sent only when acknowledged, and
//! wait while the broker is down.

use std::time::{Duration, Instant};

use events::Event;
use events::relay::{Relay, RelayConfig};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

fn consume(brokers: &str, topic: &str, want: usize) -> Vec<(String, String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "relay-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Every partition of the topic (keys spread over them; order holds per key).
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    // Until `want` distinct event ids arrived (a retried row may come twice).
    let mut out = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while distinct.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let payload: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            distinct.insert(id.clone());
            out.push((key, id, payload));
        }
    }
    out
}

#[tokio::test]
async fn rows_are_published_in_order_marked_sent_and_wait_while_the_broker_is_down() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let store = store::testing::sqlite().await;
    for user_id in 1..=5 {
        store
            .insert_event(&Event::UserLogin { user_id }.outbox("auth"))
            .await
            .unwrap();
    }
    let mut config = RelayConfig::new(&brokers);
    config.topic_prefix = "test.".into();
    config.delivery_timeout = Duration::from_secs(2);
    let relay = Relay::new(store.clone(), config).unwrap();
    assert_eq!(relay.publish_batch().await.unwrap(), 5);
    assert!(store.unsent_events(10).await.unwrap().is_empty());
    let got = tokio::task::spawn_blocking({
        let brokers = brokers.clone();
        move || consume(&brokers, "test.user_login", 5)
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 5);
    let mut users: Vec<i64> = got
        .iter()
        .map(|(key, id, payload)| {
            // Keyed by the user; the event id rides in a header and in the envelope.
            assert_eq!(payload["event_id"].as_str(), Some(id.as_str()));
            assert_eq!(payload["payload"]["user_id"].to_string(), *key);
            key.parse().unwrap()
        })
        .collect();
    users.sort();
    assert_eq!(users, vec![1, 2, 3, 4, 5]);

    // The broker goes down: nothing is marked sent, nothing is lost.
    cluster.broker_down(1).unwrap();
    store
        .insert_event(&Event::UserLogout { user_id: 9 }.outbox("auth"))
        .await
        .unwrap();
    let published = relay.publish_batch().await;
    assert!(
        matches!(
            published,
            Err(events::relay::RelayError::NotAcknowledged(_))
        ),
        "{published:?}"
    );
    assert_eq!(store.unsent_events(10).await.unwrap().len(), 1);
    // Back up: the waiting row goes out.
    cluster.broker_up(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.unsent_events(10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the row never went out");
        let _ = relay.publish_batch().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = tokio::task::spawn_blocking(move || consume(&brokers, "test.user_logout", 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "9");
}

#[tokio::test]
async fn publish_all_overlaps_batches_and_loses_nothing_across_an_outage() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    for store in [
        store::testing::sqlite().await,
        store::testing::postgres().await,
    ] {
        let engine = format!("{:?}", store.backend());
        let prefix = format!("all{}.", engine.to_lowercase());
        let first: Vec<_> = (0..1_234)
            .map(|i| Event::UserLogin { user_id: 1_000 + i }.outbox("auth"))
            .collect();
        store.insert_events(&first).await.unwrap();
        let mut config = RelayConfig::new(&brokers);
        config.topic_prefix = prefix.clone();
        config.batch = 100;
        config.delivery_timeout = Duration::from_secs(2);
        let relay = Relay::new(store.clone(), config).unwrap();
        // Thirteen batches, the last one short: every row acknowledged, marked, counted once.
        assert_eq!(relay.publish_all().await.unwrap(), 1_234, "{engine}");
        assert_eq!(store.unsent_count().await.unwrap(), 0, "{engine}");
        assert_eq!(relay.publish_all().await.unwrap(), 0, "{engine}");

        // The broker goes down with rows waiting: an error, nothing marked.
        cluster.broker_down(1).unwrap();
        let more: Vec<_> = (0..250)
            .map(|i| Event::UserLogout { user_id: 5_000 + i }.outbox("auth"))
            .collect();
        store.insert_events(&more).await.unwrap();
        let down = relay.publish_all().await;
        assert!(
            matches!(down, Err(events::relay::RelayError::NotAcknowledged(_))),
            "{engine}: {down:?}"
        );
        assert_eq!(store.unsent_count().await.unwrap(), 250, "{engine}");
        cluster.broker_up(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut published = 0;
        while store.unsent_count().await.unwrap() > 0 {
            assert!(
                Instant::now() < deadline,
                "{engine}: the rows never went out"
            );
            published += relay.publish_all().await.unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(published <= 250, "{engine}: {published}");
        // Every event reached the broker (at least once; consumers de-duplicate by id).
        let logins = {
            let (brokers, topic) = (brokers.clone(), format!("{prefix}user_login"));
            tokio::task::spawn_blocking(move || consume(&brokers, &topic, 1_234))
                .await
                .unwrap()
        };
        let mut ids: Vec<&str> = logins.iter().map(|(_, id, _)| id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1_234, "{engine}");
        let logouts = {
            let (brokers, topic) = (brokers.clone(), format!("{prefix}user_logout"));
            tokio::task::spawn_blocking(move || consume(&brokers, &topic, 250))
                .await
                .unwrap()
        };
        let mut users: Vec<String> = logouts.iter().map(|(key, _, _)| key.clone()).collect();
        users.sort();
        users.dedup();
        assert_eq!(users.len(), 250, "{engine}");
    }
}
