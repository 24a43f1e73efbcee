//! The bus consumer and producer against librdkafka's built-in Kafka-protocol broker
//! (`MockCluster`): events arrive once (duplicates and this server's own events skipped,
//! malformed payloads skipped without stopping), and a restarted consumer in the same group
//! resumes after what it already delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::Event;
use events::bus::{BusProducer, ConsumerConfig, ConsumerCounters, consume};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::sync::atomic::Ordering;
use tokio::sync::mpsc::UnboundedReceiver;

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    rx: UnboundedReceiver<events::Envelope>,
    counters: Arc<ConsumerCounters>,
}

fn start(config: ConsumerConfig) -> Running {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let counters = Arc::new(ConsumerCounters::default());
    let c = counters.clone();
    let task = tokio::spawn(async move {
        consume(config, c, stop_rx, move |env| {
            let _ = tx.send(env);
        })
        .await
        .unwrap();
    });
    Running {
        stop,
        task,
        rx,
        counters,
    }
}

async fn collect(rx: &mut UnboundedReceiver<events::Envelope>, want: usize) -> Vec<Event> {
    collect_for(rx, want, Duration::from_secs(60)).await
}

/// Waits a little for anything more (there should be nothing).
async fn nothing_more(rx: &mut UnboundedReceiver<events::Envelope>) -> Vec<Event> {
    collect_for(rx, 1, Duration::from_secs(2)).await
}

async fn collect_for(
    rx: &mut UnboundedReceiver<events::Envelope>,
    want: usize,
    wait: Duration,
) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while got.len() < want && Instant::now() < deadline {
        if let Ok(Some(env)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            got.push(env.event);
        }
    }
    got
}

fn chat(n: u64) -> Event {
    Event::ChatMessage {
        from_user_id: 1,
        from_name: "ada".into(),
        to_user_id: Some(2),
        text: format!("message {n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_skip_duplicates_own_and_malformed_events_and_resume_after_a_restart() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("t.chat_message", 1, 1).unwrap();
    let producer = BusProducer::new(&brokers, "t.", Duration::from_secs(10)).unwrap();

    let mut config = ConsumerConfig::new(&brokers, "bus-test-server-b", &["chat_message"]);
    config.topic_prefix = "t.".into();
    config.skip_producer = Some("connection:b".into());
    let mut running = start(config.clone());

    // From server a: three messages, the second published twice (a producer retry that got
    // through twice, or the relay re-publishing after a crash).
    let first = chat(1).envelope("connection:a");
    let second = chat(2).envelope("connection:a");
    producer.emit(&first).unwrap();
    producer.emit(&second).unwrap();
    producer.emit(&second).unwrap();
    // Server b's own message comes back to it and is skipped.
    producer.emit(&chat(99).envelope("connection:b")).unwrap();
    // Garbage on the topic does not stop the consumer.
    let raw: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    raw.send(
        BaseRecord::to("t.chat_message")
            .key("x")
            .payload("{not json"),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    raw.flush(Duration::from_secs(10)).unwrap();
    producer.emit(&chat(3).envelope("connection:a")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();

    let got = collect(&mut running.rx, 3).await;
    assert_eq!(got, vec![chat(1), chat(2), chat(3)]);
    // Nothing more arrives.
    assert!(nothing_more(&mut running.rx).await.is_empty());
    let c = &running.counters;
    assert_eq!(c.delivered.load(Ordering::Relaxed), 3);
    assert_eq!(c.duplicates.load(Ordering::Relaxed), 1);
    assert_eq!(c.own.load(Ordering::Relaxed), 1);
    assert_eq!(c.malformed.load(Ordering::Relaxed), 1);

    // Restart: the consumer commits on the way out, and its successor in the same group
    // starts after what was delivered.
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
    producer.emit(&chat(4).envelope("connection:a")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let t = Instant::now();
    let mut again = start(config.clone());
    assert_eq!(collect(&mut again.rx, 1).await, vec![chat(4)]);
    eprintln!("a restarted consumer resumed in {:?}", t.elapsed());
    assert!(nothing_more(&mut again.rx).await.is_empty());
    assert_eq!(again.counters.delivered.load(Ordering::Relaxed), 1);

    // Another group (another server) reads everything from the start.
    let mut other = config.clone();
    other.group_id = "bus-test-server-c".into();
    other.skip_producer = Some("connection:c".into());
    let mut c = start(other);
    let got = collect(&mut c.rx, 5).await;
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.contains(&chat(99)));
    again.stop.send(true).unwrap();
    c.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_waits_out_a_broker_that_is_down() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("d.presence_changed", 1, 1).unwrap();
    let producer = BusProducer::new(&brokers, "d.", Duration::from_secs(60)).unwrap();
    let mut config = ConsumerConfig::new(&brokers, "bus-test-down", &["presence_changed"]);
    config.topic_prefix = "d.".into();
    let mut running = start(config);
    let event = |n| Event::PresenceChanged {
        user_id: n,
        presence: "online".into(),
    };
    producer.emit(&event(1).envelope("connection:a")).unwrap();
    assert_eq!(collect(&mut running.rx, 1).await, vec![event(1)]);

    cluster.broker_down(1).unwrap();
    for n in 2..=20 {
        producer.emit(&event(n).envelope("connection:a")).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        producer.in_flight() > 0,
        "events wait while the broker is down"
    );
    cluster.broker_up(1).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let got = collect(&mut running.rx, 19).await;
    assert_eq!(got, (2..=20).map(event).collect::<Vec<_>>());
    running.stop.send(true).unwrap();
}
