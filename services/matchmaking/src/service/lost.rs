//! What the leader finds lost when a process died with no one to report it: the queued players
//! of a connection server that stopped reading its mailbox, and the placed matches of an
//! instance that stopped answering or restarted.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use contracts::instance::InstanceClient;
use contracts::matchmaking::v1::UpdateKind;
use control_store::{Lease, MatchRecord};

use super::{MatchState, Matchmaking, body, now_ms};
use crate::allocator::AllocEvent;
use crate::queue::{MatchId, UserId};

/// A connection server that has not read its mailbox for this long is gone: its queued
/// players' tickets are dropped (a player who reconnected elsewhere moved theirs first). Long
/// polls read at least every 20 s.
pub const MAILBOX_SILENCE: Duration = Duration::from_secs(30);

/// A placed match whose instance does not answer for this long is aborted.
pub const INSTANCE_SILENCE: Duration = Duration::from_secs(6);

/// A placed match its instance answers without (and whose result is not recorded) for this
/// long is aborted: the instance restarted, or never had it. Long enough for an ended match's
/// result to reach a database that was away.
pub const MATCH_ABSENCE: Duration = Duration::from_secs(30);

/// How the leader watches the instances of placed matches: by their control API.
pub struct InstanceWatch {
    client: InstanceClient,
    state: Mutex<Watched>,
    /// [`INSTANCE_SILENCE`] and [`MATCH_ABSENCE`] (shorter in tests).
    silence: Duration,
    absence: Duration,
}

#[derive(Default)]
struct Watched {
    /// Each instance's run as it last answered (`MatchesReport::boot`).
    boots: HashMap<String, String>,
    /// Placed matches not seen running: since when, and whether their instance answered.
    missing: HashMap<MatchId, (Instant, bool)>,
}

impl InstanceWatch {
    pub fn new(client: InstanceClient) -> Self {
        Self::with_limits(client, INSTANCE_SILENCE, MATCH_ABSENCE)
    }

    fn with_limits(client: InstanceClient, silence: Duration, absence: Duration) -> Self {
        Self {
            client,
            state: Mutex::new(Watched::default()),
            silence,
            absence,
        }
    }

    fn state(&self) -> MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The matches of `open` (placed, result not recorded; with each one's instance control
    /// URL) that are lost.
    async fn lost(&self, open: &[(MatchId, String)]) -> Vec<MatchId> {
        let mut by_instance: HashMap<&str, Vec<MatchId>> = HashMap::new();
        for (m, control) in open {
            by_instance.entry(control.as_str()).or_default().push(*m);
        }
        // Every instance at once: one that does not answer costs its time-out, not each one's.
        let mut asks = tokio::task::JoinSet::new();
        for (control, matches) in by_instance {
            let (client, control) = (self.client.clone(), control.to_string());
            asks.spawn(async move {
                let report = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.matches(&control, u64::MAX),
                )
                .await;
                (control, matches, report.ok().and_then(|r| r.ok()))
            });
        }
        let answers = asks.join_all().await;
        let now = Instant::now();
        let mut st = self.state();
        let still: std::collections::HashSet<MatchId> = open.iter().map(|(m, _)| *m).collect();
        st.missing.retain(|m, _| still.contains(m));
        let mut lost = Vec::new();
        for (control, matches, report) in answers {
            let Some(report) = report else {
                for m in matches {
                    let (since, _) = *st.missing.entry(m).or_insert((now, false));
                    if now.duration_since(since) >= self.silence {
                        lost.push(m);
                    }
                }
                continue;
            };
            let restarted = st
                .boots
                .insert(control.clone(), report.boot.clone())
                .is_some_and(|b| b != report.boot && !report.boot.is_empty());
            for m in matches {
                if report.live.contains(&m) {
                    st.missing.remove(&m);
                    continue;
                }
                let entry = st.missing.entry(m).or_insert((now, true));
                if !entry.1 {
                    // It answers again: the absence counts from now.
                    *entry = (now, true);
                }
                if restarted || now.duration_since(entry.0) >= self.absence {
                    lost.push(m);
                }
            }
        }
        for m in &lost {
            st.missing.remove(m);
        }
        lost
    }
}

impl Matchmaking {
    /// Watches the instances of placed matches through `client` (their control credential):
    /// the leader aborts what a dead or restarted instance took with it.
    pub fn watch_instances(&self, client: InstanceClient) {
        let _ = self.watch.set(InstanceWatch::new(client));
    }

    /// Drops the tickets of connection servers that stopped reading their mailboxes.
    pub(super) async fn drop_silent_tickets(&self, lease: &Lease) {
        let seen = match self.control.mailboxes_seen().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the mailbox reads");
                return;
            }
        };
        let now = now_ms();
        let silent: std::collections::HashSet<String> = seen
            .into_iter()
            .filter(|(_, at)| now.saturating_sub(*at) >= MAILBOX_SILENCE.as_millis() as u64)
            .map(|(s, _)| s)
            .collect();
        if silent.is_empty() {
            return;
        }
        let tickets = match self.control.tickets().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue");
                return;
            }
        };
        let left = body(&UpdateKind::QueueLeft {
            reason: "connection_lost".into(),
        });
        for t in tickets.iter().filter(|t| silent.contains(&t.server)) {
            match self.control.expire(lease, t, &left).await {
                Ok(true) => {
                    metrics::counter!("croft_matchmaking_tickets_dropped_total", "why" => "connection_lost").increment(1);
                    tracing::info!(user = t.user_id, server = %t.server, "ticket dropped: its connection server is gone");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop a ticket");
                    return;
                }
            }
        }
    }

    /// Aborts the placed, unrecorded matches (`records`, less `recorded`) whose instance died
    /// or restarted: an aborted result is recorded (unless the instance's own lands first) and
    /// the players are freed.
    pub(super) async fn abort_lost(&self, records: &[MatchRecord], recorded: &[i64]) {
        let Some(watch) = self.watch.get() else {
            return;
        };
        let mut open = Vec::new();
        let mut players: HashMap<MatchId, ([UserId; 2], String)> = HashMap::new();
        for r in records {
            if recorded.contains(&(r.match_id as i64)) {
                continue;
            }
            let Ok(state) = serde_json::from_str::<MatchState>(&r.state) else {
                continue;
            };
            let Some(p) = state.placement else { continue };
            let (Some(control), [(a, _), (b, _)]) = (p.control, r.players.as_slice()) else {
                continue;
            };
            open.push((r.match_id, control));
            players.insert(r.match_id, ([*a, *b], p.instance));
        }
        for m in watch.lost(&open).await {
            let Some((players, instance)) = players.remove(&m) else {
                continue;
            };
            tracing::warn!(match_id = m, %instance, "the match's instance is gone; aborted");
            metrics::counter!("croft_matchmaking_matches_lost_total").increment(1);
            let event = AllocEvent::Aborted {
                match_id: m,
                players,
                instance,
            };
            if !self.close(&event).await {
                self.unclosed().push(event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use axum::{Json, Router};
    use contracts::instance::v1::MatchesReport;

    use super::*;

    /// What the stand-in instance answers: (live, boot), or an error.
    type Answer = Arc<Mutex<Option<(Vec<u64>, String)>>>;

    /// An instance's control API that answers what the test sets.
    async fn instance(answer: Answer) -> String {
        let app = Router::new().route(
            "/v1/matches",
            get(move || {
                let answer = answer.clone();
                async move {
                    match answer.lock().unwrap().clone() {
                        Some((live, boot)) => Ok(Json(MatchesReport {
                            live,
                            ended: vec![],
                            draining: false,
                            boot,
                        })),
                        None => Err(axum::http::StatusCode::SERVICE_UNAVAILABLE),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn watch(silence_ms: u64, absence_ms: u64) -> InstanceWatch {
        let client = InstanceClient::new(reqwest::Client::new(), "token".to_string());
        InstanceWatch::with_limits(
            client,
            Duration::from_millis(silence_ms),
            Duration::from_millis(absence_ms),
        )
    }

    #[tokio::test]
    async fn a_running_match_is_kept_and_an_absent_one_lost_after_the_absence() {
        let answer = Arc::new(Mutex::new(Some((vec![1, 2], "run-1".to_string()))));
        let url = instance(answer.clone()).await;
        let w = watch(60_000, 300);
        let open = [(1, url.clone()), (2, url.clone())];
        assert_eq!(w.lost(&open).await, Vec::<u64>::new());
        // Match 2 ended or vanished; its result is not recorded.
        *answer.lock().unwrap() = Some((vec![1], "run-1".to_string()));
        assert_eq!(w.lost(&open).await, Vec::<u64>::new(), "not at once");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(w.lost(&open).await, vec![2]);
    }

    #[tokio::test]
    async fn a_restarted_instance_loses_its_matches_at_once() {
        let answer = Arc::new(Mutex::new(Some((vec![7], "run-1".to_string()))));
        let url = instance(answer.clone()).await;
        let w = watch(60_000, 60_000);
        let open = [(7, url.clone())];
        assert_eq!(w.lost(&open).await, Vec::<u64>::new());
        *answer.lock().unwrap() = Some((vec![], "run-2".to_string()));
        assert_eq!(w.lost(&open).await, vec![7]);
    }

    #[tokio::test]
    async fn a_silent_instance_loses_its_matches_after_the_silence() {
        let answer = Arc::new(Mutex::new(None));
        let url = instance(answer.clone()).await;
        let w = watch(300, 60_000);
        let open = [(3, url.clone()), (4, "http://127.0.0.1:1".to_string())];
        assert_eq!(w.lost(&open).await, Vec::<u64>::new());
        tokio::time::sleep(Duration::from_millis(350)).await;
        let mut lost = w.lost(&open).await;
        lost.sort_unstable();
        assert_eq!(lost, vec![3, 4]);
        // Forgotten once reported.
        assert_eq!(w.lost(&[]).await, Vec::<u64>::new());
    }
}
