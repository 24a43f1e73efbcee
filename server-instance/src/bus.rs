//! Game events (`game_started`, `game_ended`) leave the tick: with a database, through the
//! results writer into the outbox (with the result, in one transaction); without one, through a
//! bounded channel to a background thread that produces them to Kafka.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use bevy::prelude::Resource;
use events::bus::DeliveryMetrics;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The tick's side of the event channel.
///
/// The tick never waits: when the channel is full the event is dropped and counted
/// (`croft_instance_events_dropped_total`, an alert), never a stalled match.
#[derive(Resource, Default)]
pub struct EventBus {
    /// The event and when it happened; the envelope (id, JSON) is made on the producer
    /// thread, so the tick pays only for the queue.
    tx: Option<SyncSender<(events::Event, i64)>>,
    /// The results writer, when the instance has a database.
    results: Option<tokio::sync::mpsc::UnboundedSender<crate::results::ResultWrite>>,
}

impl EventBus {
    /// Game events go into the outbox through the results writer from now on.
    pub fn with_results(
        mut self,
        results: tokio::sync::mpsc::UnboundedSender<crate::results::ResultWrite>,
    ) -> Self {
        self.results = Some(results);
        self
    }

    /// A match started: its `game_started`.
    pub fn started(&self, event: events::Event) {
        match &self.results {
            Some(w) => {
                if w.send(crate::results::ResultWrite::Started(
                    event.outbox("instance"),
                ))
                .is_err()
                {
                    metrics::counter!("croft_instance_events_dropped_total").increment(1);
                }
            }
            None => self.emit(event),
        }
    }

    /// A match ended: its result and `game_ended`, and the ended-matches feed (after the
    /// result is written, when there is a database).
    pub fn ended(
        &self,
        ended: contracts::instance::v1::EndedMatch,
        event: events::Event,
        shared: &crate::control::ControlShared,
    ) {
        match &self.results {
            Some(w) => {
                let write = crate::results::ResultWrite::Ended {
                    ended,
                    event: event.outbox("instance"),
                };
                if let Err(e) = w.send(write) {
                    // The writer is gone (shutting down): the feed still hears of it.
                    metrics::counter!("croft_instance_events_dropped_total").increment(1);
                    if let crate::results::ResultWrite::Ended { ended, .. } = e.0 {
                        shared.push_ended(ended);
                    }
                }
            }
            None => {
                self.emit(event);
                shared.push_ended(ended);
            }
        }
    }

    /// Queues an event for the background producer; never blocks.
    pub fn emit(&self, event: events::Event) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send((event, events::now_ms())) {
            Ok(()) => {}
            Err(TrySendError::Full((event, _))) => {
                metrics::counter!("croft_instance_events_dropped_total").increment(1);
                tracing::warn!(
                    event_type = event.event_type(),
                    "event queue full: event dropped"
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::counter!("croft_instance_events_dropped_total").increment(1);
            }
        }
    }
}

/// Starts the producer thread; it ends (after flushing) when the [`EventBus`] is dropped.
pub fn start(
    brokers: &str,
    topic_prefix: &str,
    capacity: usize,
) -> Result<(EventBus, JoinHandle<()>), rdkafka::error::KafkaError> {
    // librdkafka retries for up to ten minutes (a broker that is down for minutes loses
    // nothing); deliveries and failures are counted by `DeliveryMetrics`.
    let producer: BaseProducer<DeliveryMetrics> =
        events::bus::producer_config(brokers, Duration::from_secs(600))
            .create_with_context(DeliveryMetrics)?;
    let (tx, rx) = sync_channel(capacity.max(1));
    let prefix = topic_prefix.to_string();
    let thread = std::thread::Builder::new()
        .name("event-producer".into())
        .spawn(move || produce_loop(producer, rx, prefix))
        .map_err(|e| rdkafka::error::KafkaError::ClientCreation(format!("event thread: {e}")))?;
    Ok((
        EventBus {
            tx: Some(tx),
            results: None,
        },
        thread,
    ))
}

fn produce_loop(
    producer: BaseProducer<DeliveryMetrics>,
    rx: Receiver<(events::Event, i64)>,
    prefix: String,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((event, at)) => {
                let env = event.into_envelope("instance", at);
                let topic = format!("{prefix}{}", env.event_type);
                let payload = env.to_json();
                let mut record = BaseRecord::to(&topic).key(&env.key).payload(&payload);
                // librdkafka's own queue full: serve callbacks and retry, a little later.
                loop {
                    match producer.send(record) {
                        Ok(()) => {
                            metrics::counter!("croft_instance_events_queued_total").increment(1);
                            break;
                        }
                        Err((e, r)) => {
                            if e.rdkafka_error_code()
                                != Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            {
                                metrics::counter!("croft_instance_events_dropped_total")
                                    .increment(1);
                                tracing::warn!(error = %e, "cannot produce an event");
                                break;
                            }
                            record = r;
                            producer.poll(Duration::from_millis(50));
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        producer.poll(Duration::ZERO);
    }
    if let Err(e) = producer.flush(Duration::from_secs(5)) {
        tracing::warn!(error = %e, "events not flushed at shutdown");
    }
}
