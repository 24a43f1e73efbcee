//! The outbox relay: publishes outbox rows to Kafka in order through an idempotent producer,
//! and marks rows sent only after the broker acknowledged them.

use std::time::Duration;

use crate::bus::DeliveryMetrics;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use store::{OutboxRow, Store};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The broker did not acknowledge a row; it and the rows after it stay unsent.
    #[error("the broker did not acknowledge: {0}")]
    NotAcknowledged(String),
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
            batch: 5_000,
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

    /// Publishes one batch of unsent rows, oldest first; returns how many were acknowledged
    /// and marked. Rows after the first failure stay unsent (order is kept; they go again next
    /// time).
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let rows = self.store.unsent_events(self.config.batch).await?;
        let (acked, failed) = self.deliver(&rows).await;
        if !acked.is_empty() {
            self.store.mark_sent(&acked).await?;
            metrics::counter!("croft_events_published_total").increment(acked.len() as u64);
        }
        match failed {
            Some(e) => Err(self.failed(e, acked.len())),
            None => Ok(acked.len()),
        }
    }

    /// Publishes every unsent row until none is left, the stages overlapped: while the broker
    /// acknowledges one batch, the next is read (after the last id handed to the producer) and
    /// the one before is marked sent. Once a read comes back short, the relay reads again from
    /// the oldest unsent row (marks landed first), which picks up rows committed late with
    /// lower ids. Returns how many rows were acknowledged and marked.
    pub async fn publish_all(&self) -> Result<usize, RelayError> {
        let batch = self.config.batch.max(1);
        let mut total = 0usize;
        let mut after = 0i64;
        let mut next: Option<Vec<OutboxRow>> = None;
        let mut marking: Option<tokio::task::JoinHandle<Result<usize, store::StoreError>>> = None;
        loop {
            let rows = match next.take() {
                Some(rows) => rows,
                None => {
                    if after == 0 {
                        total += finish(marking.take()).await?;
                    }
                    self.store.unsent_events_after(after, batch).await?
                }
            };
            if rows.is_empty() {
                if after == 0 {
                    return Ok(total + finish(marking.take()).await?);
                }
                after = 0;
                continue;
            }
            let full = rows.len() as i64 >= batch;
            let last = rows.last().map_or(0, |r| r.id);
            let read_next = async {
                if full {
                    Some(self.store.unsent_events_after(last, batch).await)
                } else {
                    None
                }
            };
            let ((acked, failed), read, marked) =
                tokio::join!(self.deliver(&rows), read_next, finish(marking.take()));
            total += marked?;
            if !acked.is_empty() {
                let store = self.store.clone();
                marking = Some(tokio::spawn(async move {
                    store.mark_sent(&acked).await?;
                    metrics::counter!("croft_events_published_total").increment(acked.len() as u64);
                    Ok(acked.len())
                }));
            }
            if let Some(e) = failed {
                let marked = finish(marking.take()).await?;
                return Err(self.failed(e, marked));
            }
            match read {
                Some(read) => {
                    after = last;
                    next = Some(read?);
                }
                None => after = 0,
            }
        }
    }

    /// Queues `rows` on the producer (per-partition order kept) and awaits every delivery in
    /// order: the ids acknowledged before the first failure, and that failure.
    async fn deliver(&self, rows: &[OutboxRow]) -> (Vec<i64>, Option<String>) {
        let topics: Vec<String> = rows
            .iter()
            .map(|r| format!("{}{}", self.config.topic_prefix, r.event.event_type))
            .collect();
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
        let mut acked = Vec::with_capacity(rows.len());
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
        (acked, failed)
    }

    fn failed(&self, error: String, published: usize) -> RelayError {
        metrics::counter!("croft_events_publish_failures_total").increment(1);
        tracing::warn!(error = %error, published, "outbox relay: broker did not acknowledge; will retry");
        RelayError::NotAcknowledged(error)
    }

    /// Runs until the task is dropped: publishes whatever is unsent, backing off while the
    /// broker or the database is unavailable.
    pub async fn run(self, idle: Duration) {
        let mut backoff = idle;
        loop {
            match self.publish_all().await {
                Ok(_) => backoff = idle,
                Err(RelayError::NotAcknowledged(_)) => {
                    backoff = (backoff * 2).min(Duration::from_secs(2))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay error");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Awaits a batch's marking, if one is running: how many rows it marked.
async fn finish(
    marking: Option<tokio::task::JoinHandle<Result<usize, store::StoreError>>>,
) -> Result<usize, store::StoreError> {
    match marking {
        Some(task) => task
            .await
            .map_err(|e| store::StoreError::Internal(format!("marking task: {e}")))?,
        None => Ok(0),
    }
}
