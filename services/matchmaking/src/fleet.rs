//! [`FleetAllocator`]: instance servers that something else runs and restarts (service units,
//! `croft drill`), named by their control URLs. Every matchmaking replica uses the same list;
//! what runs where is asked of the instances themselves, so no replica owns them.

use std::collections::HashMap;
use std::time::Duration;

use contracts::instance::InstanceClient;
use contracts::instance::v1::CreateMatchRequest;
use tokio::sync::Mutex;

use crate::allocator::{
    AllocError, AllocEvent, Allocator, BoxFuture, Endpoint, Placed, Placement, first_answer,
    keep_hub_place_on, open_farm_on,
};
use crate::queue::UserId;

/// Consecutive failed polls before an instance's matches placed here are aborted.
const MAX_FAILED_POLLS: u32 = 3;

struct Member {
    control: String,
    /// Known from the last answer to a capacity poll.
    capacity: usize,
    running: usize,
    draining: bool,
    answered: bool,
    failed_polls: u32,
    /// The instance's run (`MatchesReport::boot`): a new one lost what the old one hosted.
    boot: String,
    placed: Placed,
}

pub struct FleetAllocator {
    instances: InstanceClient,
    state: Mutex<Fleet>,
}

struct Fleet {
    members: Vec<Member>,
    /// The instance each farm was last opened on.
    farm_homes: HashMap<UserId, String>,
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
                control: c.trim_end_matches('/').to_string(),
                capacity: 0,
                running: 0,
                draining: false,
                answered: false,
                failed_polls: 0,
                boot: String::new(),
                placed: Placed::default(),
            })
            .collect();
        Ok(Self {
            instances: InstanceClient::new(http, control_token),
            state: Mutex::new(Fleet {
                members,
                farm_homes: HashMap::new(),
            }),
        })
    }

    /// Serving instances for a farm or the common area, `prefer` first; every member when
    /// none has answered yet (just started).
    fn hosts(fleet: &Fleet, prefer: Option<&String>) -> Vec<(String, String)> {
        let any = fleet.members.iter().any(|m| m.answered && !m.draining);
        let mut hosts: Vec<(String, String)> = fleet
            .members
            .iter()
            .filter(|m| !any || (m.answered && !m.draining))
            .map(|m| (m.control.clone(), m.control.clone()))
            .collect();
        hosts.sort_by_key(|(c, _)| Some(c) != prefer);
        hosts
    }

    async fn poll_member(&self, m: &mut Member) -> Result<Vec<AllocEvent>, String> {
        let cap = self
            .instances
            .capacity(&m.control)
            .await
            .map_err(|e| e.to_string())?;
        let report = self
            .instances
            .matches(&m.control, m.placed.ended_after)
            .await
            .map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        if !m.boot.is_empty() && !report.boot.is_empty() && m.boot != report.boot {
            tracing::warn!(instance = %m.control, "instance restarted; its matches are aborted");
            events.extend(m.placed.abort_all(&m.control));
            m.placed.ended_after = 0;
            // The new run numbers its ended matches from 1: read them again.
            let again = self
                .instances
                .matches(&m.control, 0)
                .await
                .map_err(|e| e.to_string())?;
            let _ = m.placed.take_ended(again.ended);
        } else {
            events.extend(
                m.placed
                    .take_ended(report.ended)
                    .into_iter()
                    .map(AllocEvent::Ended),
            );
        }
        m.boot = report.boot;
        m.capacity = cap.max_matches;
        m.running = report.live.len();
        m.draining = report.draining || cap.draining;
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
                .filter(|&i| {
                    let m = &fleet.members[i];
                    m.answered && !m.draining && m.running < m.capacity
                })
                .collect();
            order.sort_by_key(|&i| std::cmp::Reverse(fleet.members[i].running));
            for i in order {
                let m = &mut fleet.members[i];
                match self.instances.create_match(&m.control, &request).await {
                    Ok(created) => {
                        m.running += 1;
                        m.placed.matches.insert(request.match_id, request.players);
                        return Ok(Placement {
                            instance: m.control.clone(),
                            server_addr: created.server_addr,
                            ws_url: created.ws_url,
                            control: Some(m.control.clone()),
                        });
                    }
                    Err(e) if e.is_unreachable() => {
                        return Err(AllocError::Unknown(e.to_string()));
                    }
                    Err(e) => {
                        // Full or draining: count it full until the next poll.
                        m.running = m.capacity;
                        tracing::warn!(instance = %m.control, error = %e, "placement refused");
                    }
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
                    Ok(e) => {
                        m.failed_polls = 0;
                        events.extend(e);
                    }
                    Err(e) => {
                        m.failed_polls += 1;
                        if m.failed_polls == MAX_FAILED_POLLS {
                            tracing::error!(instance = %m.control, error = %e, "instance lost; its matches are aborted");
                            m.answered = false;
                            events.extend(m.placed.abort_all(&m.control));
                        } else {
                            tracing::debug!(instance = %m.control, error = %e, "instance poll failed");
                        }
                    }
                }
            }
            let serving = fleet.members.iter().filter(|m| m.answered && !m.draining);
            let (count, running) = serving.fold((0, 0), |(c, r), m| (c + 1, r + m.running));
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
                    serde_json::json!({
                        "id": m.control, "control": m.control, "answered": m.answered,
                        "capacity": m.capacity, "running": m.running, "draining": m.draining,
                    })
                })
                .collect();
            serde_json::json!({ "allocator": "fleet", "instances": list })
        })
    }

    /// The instances are not this process's: they keep running.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn open_farm(&self, user: UserId) -> BoxFuture<'_, Result<Endpoint, AllocError>> {
        Box::pin(async move {
            let hosts = {
                let fleet = self.state.lock().await;
                Self::hosts(&fleet, fleet.farm_homes.get(&user))
            };
            let instances = &self.instances;
            // An instance holding the farm's lease answers; the others refuse it.
            let (host, addr) = first_answer(hosts, "farm", |control| async move {
                open_farm_on(instances, &control, user).await
            })
            .await?;
            self.state.lock().await.farm_homes.insert(user, host);
            Ok(addr)
        })
    }

    fn open_hub(
        &self,
        user: UserId,
        name: String,
    ) -> BoxFuture<'_, Result<(u32, Endpoint), AllocError>> {
        Box::pin(async move {
            // The common area lives on the first serving instance of the list, for everyone.
            let hosts = {
                let fleet = self.state.lock().await;
                Self::hosts(&fleet, None)
            };
            let instances = &self.instances;
            first_answer(hosts, "hub place", |control| {
                let name = name.clone();
                async move { keep_hub_place_on(instances, &control, user, &name).await }
            })
            .await
            .map(|(_, kept)| kept)
        })
    }
}
