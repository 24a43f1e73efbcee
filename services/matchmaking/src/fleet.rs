//! [`FleetAllocator`]: instance servers that something else runs and restarts (service units,
//! `croft drill`), named by their control URLs. Every matchmaking replica uses the same list;
//! what runs where is asked of the instances themselves, so no replica owns them.

use std::time::Duration;

use contracts::instance::InstanceClient;
use contracts::instance::v1::CreateMatchRequest;
use tokio::sync::Mutex;

use crate::allocator::{
    AllocError, AllocEvent, Allocator, BoxFuture, Endpoint, HubPlace, Placement, Tracked,
    keep_hub_place_first, open_farm_first,
};
use crate::queue::UserId;

/// Consecutive failed polls before an instance's matches placed here are aborted.
const MAX_FAILED_POLLS: u32 = 3;

struct Member {
    /// Named by its control URL.
    t: Tracked,
    /// It answered its last polls (a member that stops answering stays on the list).
    answered: bool,
}

pub struct FleetAllocator {
    instances: InstanceClient,
    state: Mutex<Fleet>,
}

struct Fleet {
    members: Vec<Member>,
}

impl FleetAllocator {
    /// Instances at `controls` (their control API base URLs), with `control_token`.
    pub fn new(controls: &[String], control_token: String) -> Result<Self, AllocError> {
        if controls.is_empty() {
            return Err(AllocError::Start(
                "the fleet allocator needs instance control URLs (--instances)".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AllocError::Start(e.to_string()))?;
        let members = controls
            .iter()
            .map(|c| Member {
                t: Tracked::new(c.trim_end_matches('/').to_string()),
                answered: false,
            })
            .collect();
        Ok(Self {
            instances: InstanceClient::new(http, control_token),
            state: Mutex::new(Fleet { members }),
        })
    }

    /// Serving instances for a farm or the common area (name and control URL: both the URL),
    /// `prefer` first; every member when none has answered yet (just started).
    fn hosts(fleet: &Fleet, prefer: Option<&String>) -> Vec<(String, String)> {
        let serving = |m: &&Member| m.answered && !m.t.draining;
        let any = fleet.members.iter().any(|m| serving(&m));
        let mut hosts: Vec<(String, String)> = fleet
            .members
            .iter()
            .filter(|m| !any || serving(m))
            .map(|m| (m.t.control.clone(), m.t.control.clone()))
            .collect();
        hosts.sort_by_key(|(c, _)| Some(c) != prefer);
        hosts
    }

    async fn poll_member(&self, m: &mut Member) -> Result<Vec<AllocEvent>, String> {
        let cap = self
            .instances
            .capacity(&m.t.control)
            .await
            .map_err(|e| e.to_string())?;
        let report = self
            .instances
            .matches(&m.t.control, m.t.placed.ended_after)
            .await
            .map_err(|e| e.to_string())?;
        let control = m.t.control.clone();
        let events = m.t.report(&control, report);
        m.t.capacity = cap.max_matches;
        m.t.draining |= cap.draining;
        m.answered = true;
        Ok(events)
    }
}

impl Allocator for FleetAllocator {
    fn allocate(
        &self,
        request: CreateMatchRequest,
    ) -> BoxFuture<'_, Result<Placement, AllocError>> {
        Box::pin(async move {
            let mut fleet = self.state.lock().await;
            // Fullest first, so that the others stay free to drain.
            let mut order: Vec<usize> = (0..fleet.members.len())
                .filter(|&i| fleet.members[i].answered && fleet.members[i].t.has_room())
                .collect();
            order.sort_by_key(|&i| std::cmp::Reverse(fleet.members[i].t.running));
            for i in order {
                let t = &mut fleet.members[i].t;
                let name = t.control.clone();
                match t.create(&self.instances, &name, &request).await {
                    Ok(p) => return Ok(p),
                    Err(e @ AllocError::Unknown(_)) => return Err(e),
                    Err(e) => tracing::warn!(instance = %name, error = %e, "placement refused"),
                }
            }
            metrics::counter!("croft_allocator_no_capacity_total").increment(1);
            Err(AllocError::NoCapacity)
        })
    }

    fn poll(&self) -> BoxFuture<'_, Vec<AllocEvent>> {
        Box::pin(async move {
            let mut fleet = self.state.lock().await;
            let mut events = Vec::new();
            for m in fleet.members.iter_mut() {
                match self.poll_member(m).await {
                    Ok(e) => events.extend(e),
                    Err(e) => {
                        m.t.failed_polls += 1;
                        if m.t.failed_polls == MAX_FAILED_POLLS {
                            tracing::error!(instance = %m.t.control, error = %e, "instance lost; its matches are aborted");
                            m.answered = false;
                            let control = m.t.control.clone();
                            events.extend(m.t.placed.abort_all(&control));
                        } else {
                            tracing::debug!(instance = %m.t.control, error = %e, "instance poll failed");
                        }
                    }
                }
            }
            let serving = fleet.members.iter().filter(|m| m.answered && !m.t.draining);
            let (count, running) = serving.fold((0, 0), |(c, r), m| (c + 1, r + m.t.running));
            metrics::gauge!("croft_allocator_instances").set(count as f64);
            metrics::gauge!("croft_allocator_matches_running").set(running as f64);
            events
        })
    }

    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let fleet = self.state.lock().await;
            let list: Vec<serde_json::Value> = fleet
                .members
                .iter()
                .map(|m| {
                    let mut v = m.t.status(&m.t.control);
                    v["answered"] = serde_json::json!(m.answered);
                    v
                })
                .collect();
            serde_json::json!({ "allocator": "fleet", "instances": list })
        })
    }

    /// The instances are not this process's: they keep running.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn open_farm(
        &self,
        user: UserId,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, Endpoint), AllocError>> {
        Box::pin(async move {
            let hosts = Self::hosts(&*self.state.lock().await, home.as_ref());
            // An instance holding the farm's lease answers; the others refuse it.
            open_farm_first(&self.instances, hosts, user).await
        })
    }

    fn open_hub(
        &self,
        user: UserId,
        name: String,
        home: Option<String>,
    ) -> BoxFuture<'_, Result<(String, HubPlace), AllocError>> {
        Box::pin(async move {
            // The common area lives on its home, else the first serving instance of the list,
            // for everyone.
            let hosts = Self::hosts(&*self.state.lock().await, home.as_ref());
            keep_hub_place_first(&self.instances, hosts, user, &name).await
        })
    }
}
