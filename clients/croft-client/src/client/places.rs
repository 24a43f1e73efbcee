//! The player's farm and the common area, as the client facade drives them.

use shared_sim::farm::FarmAction;
use shared_sim::protocol::LobbyClientMessage;

use super::{Client, ClientEvent};
use crate::{FarmEvent, FarmSession, HubSession};

impl Client {
    /// Opens the player's farm: `FarmReady`, then `FarmState`.
    pub fn enter_farm(&mut self) {
        self.send(LobbyClientMessage::EnterFarm);
    }

    /// A farm action; returns its `seq` (answered by `FarmResult`).
    pub fn farm_action(&mut self, action: FarmAction) -> Option<u32> {
        match self.farm.as_mut() {
            Some(f) => Some(f.act(action)),
            None => {
                self.local_error("not on the farm");
                None
            }
        }
    }

    pub fn leave_farm(&mut self) {
        if let Some(mut f) = self.farm.take() {
            f.leave();
            self.events.push(ClientEvent::FarmLeft("left".into()));
        }
    }

    pub fn farm(&self) -> Option<&FarmSession> {
        self.farm.as_ref()
    }

    pub fn enter_hub(&mut self) {
        self.send(LobbyClientMessage::EnterHub);
    }

    pub fn hub_walk(&mut self, x: i32, y: i32) {
        match self.hub.as_mut() {
            Some(h) => h.walk_to(x, y),
            None => self.local_error("not in the common area"),
        }
    }

    pub fn hub_say(&mut self, text: &str) {
        match self.hub.as_mut() {
            Some(h) => h.say(text),
            None => self.local_error("not in the common area"),
        }
    }

    pub fn leave_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            h.leave();
            self.events.push(ClientEvent::HubLeft("left".into()));
        }
    }

    pub fn hub(&self) -> Option<&HubSession> {
        self.hub.as_ref()
    }

    pub(super) fn poll_farm(&mut self) {
        let Some(f) = self.farm.as_mut() else {
            return;
        };
        match f.poll() {
            Ok(events) => {
                for e in events {
                    let ev = match e {
                        FarmEvent::State => ClientEvent::FarmState {
                            tick: f.tick,
                            plots: f.plots.clone().unwrap_or_default(),
                            items: f.items.clone(),
                        },
                        FarmEvent::Result { seq, error } => ClientEvent::FarmResult { seq, error },
                        FarmEvent::Error { code, message } => ClientEvent::Error {
                            code: Some(code),
                            message,
                        },
                    };
                    self.events.push(ev);
                }
            }
            Err(e) => {
                self.farm = None;
                self.events.push(ClientEvent::FarmLeft(e.to_string()));
            }
        }
    }

    pub(super) fn poll_hub(&mut self) {
        let Some(h) = self.hub.as_mut() else {
            return;
        };
        match h.poll() {
            Ok(events) => self.events.extend(events.into_iter().map(ClientEvent::Hub)),
            Err(e) => {
                self.hub = None;
                self.events.push(ClientEvent::HubLeft(e.to_string()));
            }
        }
    }
}
