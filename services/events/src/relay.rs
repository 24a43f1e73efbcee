//! The outbox relay: publishes outbox rows to Kafka in order through an idempotent producer,
//! and marks rows sent only after the broker acknowledged them.

use std::time::Duration;

use crate::bus::DeliveryMetrics;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `host:port,...` of the Kafka cluster.
    pub brokers: String,
    /// Prepended to every topic name (shared clusters).
    pub topic_prefix: String,
    /// Rows read and published per batch.
    pub batch: i64,
    /// How long a batch may wait for acknowledgements before it counts as failed.
    pub delivery_timeout: Duration,
}

impl RelayConfig {
    pub fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            topic_prefix: String::new(),
            batch: 500,
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

/// An idempotent producer (`acks=all`, compression) for `brokers`; client errors are
/// counted and logged by [`DeliveryMetrics`].
pub fn producer(config: &RelayConfig) -> Result<FutureProducer<DeliveryMetrics>, RelayError> {
    Ok(
        crate::bus::producer_config(&config.brokers, config.delivery_timeout)
            .create_with_context(DeliveryMetrics)?,
    )
}

/// Publishes outbox rows to Kafka in order (one topic per event type, keyed by the event's key,
/// the event id in a header) and marks rows sent only after the broker acknowledged them.
///
/// A broker that is down leaves the rows waiting; they go out when it returns. A row
/// acknowledged but not yet marked (a crash in between) is published again, which is why
/// consumers de-duplicate by event id.
pub struct Relay {
    pub store: Store,
    pub producer: FutureProducer<DeliveryMetrics>,
    pub config: RelayConfig,
}

impl Relay {
    pub fn new(store: Store, config: RelayConfig) -> Result<Self, RelayError> {
        Ok(Self {
            store,
            producer: producer(&config)?,
            config,
        })
    }

    /// Publishes one batch of unsent rows; returns how many were acknowledged and marked.
    /// Rows after the first failure stay unsent (order is kept; they go again next time).
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let rows = self.store.unsent_events(self.config.batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let topics: Vec<String> = rows
            .iter()
            .map(|r| format!("{}{}", self.config.topic_prefix, r.event.event_type))
            .collect();
        // Queue them all (the producer keeps per-partition order), then await in order.
        let mut pending = Vec::with_capacity(rows.len());
        for (row, topic) in rows.iter().zip(&topics) {
            let headers = OwnedHeaders::new().insert(Header {
                key: "event_id",
                value: Some(row.event.event_id.as_bytes()),
            });
            let record = FutureRecord::to(topic)
                .key(row.event.key.as_bytes())
                .payload(row.event.payload.as_bytes())
                .headers(headers);
            pending.push(self.producer.send_result(record));
        }
        let mut acked = Vec::new();
        let mut failed = None;
        for ((row, topic), p) in rows.iter().zip(&topics).zip(pending) {
            match p {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) if failed.is_none() => {
                        metrics::counter!("croft_events_produced_total", "topic" => topic.clone())
                            .increment(1);
                        acked.push(row.id)
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        failed.get_or_insert(e.to_string());
                    }
                    Err(_) => {
                        failed.get_or_insert("delivery cancelled".to_string());
                    }
                },
                Err((e, _)) => {
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        if !acked.is_empty() {
            self.store.mark_sent(&acked).await?;
            metrics::counter!("croft_events_published_total").increment(acked.len() as u64);
        }
        if let Some(e) = failed {
            metrics::counter!("croft_events_publish_failures_total").increment(1);
            tracing::warn!(error = %e, published = acked.len(), "outbox relay: broker did not acknowledge; will retry");
        }
        Ok(acked.len())
    }

    /// Runs until the task is dropped: publishes whatever is unsent, backing off while the
    /// broker or the database is unavailable.
    pub async fn run(self, idle: Duration) {
        let mut backoff = idle;
        loop {
            match self.publish_batch().await {
                Ok(n) if n as i64 >= self.config.batch => {
                    backoff = idle;
                    continue;
                }
                Ok(n) if n > 0 => backoff = idle,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay error");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }
}
