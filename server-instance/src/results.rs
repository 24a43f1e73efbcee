//! Results and game events of hosted matches, written off the tick when the instance has a
//! database: `game_started` into the outbox, each result with its `game_ended` in one
//! transaction (once per match id), in order and retried until the database takes them; the
//! ended-matches feed hears of a match only once its result is durable.

use std::sync::Arc;
use std::time::Duration;

use contracts::instance::v1::EndedMatch;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::control::ControlShared;

/// One write for the results writer. The outbox row is made when the event happens, so a
/// retried write carries the same event id.
#[derive(Debug)]
pub enum ResultWrite {
    Started(store::OutboxEvent),
    Ended {
        ended: EndedMatch,
        event: store::OutboxEvent,
    },
}

pub fn channel() -> (UnboundedSender<ResultWrite>, UnboundedReceiver<ResultWrite>) {
    unbounded_channel()
}

/// The result row of an ended match (the record is the ended match as the feed reports it).
pub fn result_of(ended: &EndedMatch) -> store::MatchResult {
    store::MatchResult {
        match_id: ended.match_id as i64,
        players: [ended.players[0] as i64, ended.players[1] as i64],
        winner: ended.winner.map(|w| w as i64),
        reason: ended.reason.clone(),
        turns: ended.turns as i32,
        data_version: ended.data_version.to_string(),
        record: serde_json::to_string(ended).unwrap_or_default(),
    }
}

/// Writes what arrives, in order, until every sender is gone and the queue is empty.
pub async fn writer(
    store: store::Store,
    shared: Arc<ControlShared>,
    mut rx: UnboundedReceiver<ResultWrite>,
) {
    while let Some(write) = rx.recv().await {
        let mut delay = Duration::from_millis(100);
        loop {
            let done = match &write {
                ResultWrite::Started(event) => match store.insert_event(event).await {
                    // Written by an earlier try whose answer was lost.
                    Ok(()) | Err(store::StoreError::Conflict(_)) => Ok(()),
                    Err(e) => Err(e),
                },
                ResultWrite::Ended { ended, event } => store
                    .record_match_with_event(&result_of(ended), event)
                    .await
                    .map(|recorded| {
                        if !recorded {
                            tracing::info!(
                                match_id = ended.match_id,
                                "result was recorded already"
                            );
                        }
                    }),
            };
            match done {
                Ok(()) => break,
                Err(e) => {
                    metrics::counter!("croft_instance_result_write_retries_total").increment(1);
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot write a result or event; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics::counter!("croft_instance_result_writes_total").increment(1);
        if let ResultWrite::Ended { ended, .. } = write {
            shared.push_ended(ended);
        }
    }
}
