//! Producing and consuming on the bus directly (not through the outbox), for what is not a
//! database change: presence and chat between connection servers, game events from instances.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;

use crate::Envelope;

/// The settings every producer of the bus shares: idempotent (no duplicates from retries,
/// per-partition order kept), `acks=all`, lz4, and a delivery timeout long enough to ride out
/// a broker that is down for minutes.
pub fn producer_config(brokers: &str, delivery_timeout: Duration) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().max(1).to_string(),
        );
    c
}

/// A producer context that turns delivery reports into metrics and logs.
///
/// Every producer of this module reports deliveries through it
/// (`croft_events_produced_total{topic}` once the broker acknowledged,
/// `croft_events_produce_failures_total{topic}` plus a warning when librdkafka gave up after
/// its own retries).
#[derive(Clone, Default)]
pub struct DeliveryMetrics;

impl ClientContext for DeliveryMetrics {
    fn error(&self, error: KafkaError, reason: &str) {
        // Broker connections come and go; librdkafka reconnects by itself.
        metrics::counter!("croft_events_client_errors_total").increment(1);
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ProducerContext for DeliveryMetrics {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                metrics::counter!("croft_events_produced_total", "topic" => m.topic().to_string())
                    .increment(1);
                tracing::trace!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    key = %String::from_utf8_lossy(m.key().unwrap_or_default()),
                    "event delivered"
                );
            }
            Err((e, m)) => {
                metrics::counter!("croft_events_produce_failures_total", "topic" => m.topic().to_string())
                    .increment(1);
                tracing::warn!(error = %e, topic = m.topic(), "an event was not delivered");
            }
        }
    }
}

/// Why an event was not queued.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("the producer's queue is full")]
    QueueFull,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// A producer with its own polling thread: [`BusProducer::emit`] never blocks.
pub struct BusProducer {
    producer: ThreadedProducer<DeliveryMetrics>,
    topic_prefix: String,
}

impl BusProducer {
    pub fn new(
        brokers: &str,
        topic_prefix: &str,
        delivery_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer_config(brokers, delivery_timeout)
                .create_with_context(DeliveryMetrics)?,
            topic_prefix: topic_prefix.to_string(),
        })
    }

    /// Queues an event (topic: prefix + type, keyed by the event's key, the event id in a
    /// header). Never waits; a full queue is an error the caller counts.
    pub fn emit(&self, env: &Envelope) -> Result<(), EmitError> {
        let topic = format!("{}{}", self.topic_prefix, env.event_type);
        let payload = env.to_json();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "event_id",
            value: Some(env.event_id.as_bytes()),
        });
        let record = BaseRecord::to(&topic)
            .key(&env.key)
            .payload(&payload)
            .headers(headers);
        self.producer.send(record).map_err(|(e, _)| {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                EmitError::QueueFull
            } else {
                EmitError::Kafka(e)
            }
        })
    }

    /// Waits up to `timeout` for queued events to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Events queued and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// A consumer context that exports lag per partition from librdkafka's statistics.
#[derive(Clone, Default)]
pub struct LagMetrics;

impl ClientContext for LagMetrics {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of -1 is unknown.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "croft_events_consumer_lag",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(p.consumer_lag as f64);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!("croft_events_client_errors_total").increment(1);
        tracing::warn!(%error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for LagMetrics {}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic_prefix: String,
    /// The consumer group: one per delivering server (each connection server sees every
    /// event), stable across restarts so that a restarted server resumes from its offsets.
    pub group_id: String,
    /// Event types to follow (topic = prefix + type).
    pub event_types: Vec<String>,
    /// Events from this producer are skipped: the server delivered them itself.
    pub skip_producer: Option<String>,
    /// Event ids remembered for de-duplication.
    pub dedup_window: usize,
}

impl ConsumerConfig {
    pub fn new(brokers: &str, group_id: &str, event_types: &[&str]) -> Self {
        Self {
            brokers: brokers.to_string(),
            topic_prefix: String::new(),
            group_id: group_id.to_string(),
            event_types: event_types.iter().map(|s| s.to_string()).collect(),
            skip_producer: None,
            dedup_window: 100_000,
        }
    }
}

/// What a consumer has done since it started (also exported as metrics).
#[derive(Debug, Default)]
pub struct ConsumerCounters {
    /// Events handed on.
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub malformed: AtomicU64,
    /// Events of this server's own producer, skipped.
    pub own: AtomicU64,
}

impl ConsumerCounters {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "delivered": self.delivered.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "malformed": self.malformed.load(Ordering::Relaxed),
            "own": self.own.load(Ordering::Relaxed),
        })
    }
}

/// Event ids seen lately, forgetting the oldest past `capacity`.
pub struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True when `id` is new (and remembers it).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

/// A consumer of the bus in the consumer group `config.group_id`.
pub fn consumer(config: &ConsumerConfig) -> Result<StreamConsumer<LagMetrics>, KafkaError> {
    let consumer: StreamConsumer<LagMetrics> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        // A new group reads what the topics hold (presence is rebuilt from it; deliverers
        // drop stale chat by age); an existing group resumes from its committed offsets.
        .set("auto.offset.reset", "earliest")
        // Offsets are stored only once an event was handed on, and committed every second
        // and on the way out.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // Each server is its group's only member: a restarted one takes its partitions back
        // within seconds rather than after the broker's default session time-out.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("allow.auto.create.topics", "true")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("statistics.interval.ms", "5000")
        .create_with_context(LagMetrics)?;
    let topics: Vec<String> = config
        .event_types
        .iter()
        .map(|t| format!("{}{t}", config.topic_prefix))
        .collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}

/// Consumes until `stop` turns true: hands every new event to `sink` in partition order,
/// skipping duplicates, malformed payloads (counted, logged) and this server's own events.
/// Commits the stored offsets before returning.
///
/// Consumers join a consumer group, de-duplicate by event id, store an offset only after the
/// event was handed on, commit on the way out, and export their lag per partition
/// (`croft_events_consumer_lag{topic,partition}`).
pub async fn consume(
    config: ConsumerConfig,
    counters: Arc<ConsumerCounters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut sink: impl FnMut(Envelope),
) -> Result<(), KafkaError> {
    let consumer = consumer(&config)?;
    let mut recent = RecentIds::new(config.dedup_window);
    loop {
        if *stop.borrow() {
            break;
        }
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.changed() => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                // Unknown topics before the first event, a broker that is away: transient.
                metrics::counter!("croft_events_consume_errors_total").increment(1);
                tracing::debug!(error = %e, "kafka consume error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let parsed = message
            .payload()
            .ok_or_else(|| "no payload".to_string())
            .and_then(|p| serde_json::from_slice::<Envelope>(p).map_err(|e| e.to_string()));
        match parsed {
            Err(e) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("croft_events_consumed_total", "outcome" => "malformed")
                    .increment(1);
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    "skipping a malformed event"
                );
            }
            Ok(env) if !recent.insert(&env.event_id) => {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("croft_events_consumed_total", "outcome" => "duplicate")
                    .increment(1);
            }
            Ok(env) if config.skip_producer.as_deref() == Some(env.producer.as_str()) => {
                counters.own.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("croft_events_consumed_total", "outcome" => "own").increment(1);
            }
            Ok(env) => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("croft_events_consumed_total", "outcome" => "delivered")
                    .increment(1);
                sink(env);
            }
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "cannot store a consumer offset");
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing consumed since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "cannot commit consumer offsets"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        // "a" fell out of the window; "b" and "c" are still known.
        assert!(r.insert("a"));
        assert!(!r.insert("c"));
    }
}
