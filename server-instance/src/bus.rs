//! Game events (`game_started`, `game_ended`) leave the tick through a bounded channel to a
//! background thread that produces them to Kafka.

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
}

impl EventBus {
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
    Ok((EventBus { tx: Some(tx) }, thread))
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
