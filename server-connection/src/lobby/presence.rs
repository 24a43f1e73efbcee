//! Presence and friends: who counts whom as a friend, what each player's friends see of them
//! (here and on other connection servers, through the bus), and the friend list updates.

use std::collections::HashSet;
use std::time::Duration;

use bevy::prelude::*;

use shared_sim::protocol::{FriendEntry, FriendState, LobbyServerMessage, Presence};

use super::Lobby;
use crate::bridge::UserId;

pub fn presence_name(p: Presence) -> &'static str {
    match p {
        Presence::Online => "online",
        Presence::InQueue => "in_queue",
        Presence::InMatch => "in_match",
        Presence::Offline => "offline",
    }
}

fn presence_from(name: &str) -> Option<Presence> {
    Some(match name {
        "online" => Presence::Online,
        "in_queue" => Presence::InQueue,
        "in_match" => Presence::InMatch,
        "offline" => Presence::Offline,
        _ => return None,
    })
}

fn accepted(friends: &[store::Friend]) -> HashSet<UserId> {
    friends
        .iter()
        .filter(|f| f.state == store::FriendState::Accepted)
        .map(|f| f.user_id as u64)
        .collect()
}

/// How often a connection server says it is alive on the bus.
pub const BEAT: Duration = Duration::from_secs(2);
/// Silence after which another server's players are shown offline (the issue allows 10 s).
pub const PEER_SILENCE: Duration = Duration::from_secs(8);
/// How long the players of a silent server are kept, to show them again if it comes back.
const LOST_KEPT: Duration = Duration::from_secs(300);

/// Another connection server as its events tell: when it was last heard from, and its process.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    last: Duration,
    boot: Option<u64>,
    lost_at: Option<Duration>,
}

/// Sends this server's heartbeat and takes the players of silent servers offline.
pub fn keep_peers(time: Res<Time<Real>>, mut lobby: ResMut<Lobby>) {
    lobby.keep_peers(time.elapsed());
}

impl Lobby {
    fn keep_peers(&mut self, now: Duration) {
        if now >= self.next_beat
            && let Some(bus) = &self.bus
        {
            let server = bus.me.strip_prefix("connection:").unwrap_or(&bus.me);
            bus.emit(events::Event::ConnectionAlive {
                server: server.to_string(),
                boot: bus.boot,
                online: self.sessions.len() as u64,
            });
            self.next_beat = now + BEAT;
        }
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.lost_at.is_none() && now.saturating_sub(p.last) > PEER_SILENCE)
            .map(|(name, _)| name.clone())
            .collect();
        for name in silent {
            self.peer_silent(&name, now);
        }
        self.lost.retain(|name, _| {
            self.peers
                .get(name)
                .and_then(|p| p.lost_at)
                .is_some_and(|at| now.saturating_sub(at) < LOST_KEPT)
        });
    }

    /// Another server was heard from (`boot` when it was a heartbeat) at `at`.
    pub(super) fn heard_from(&mut self, producer: &str, boot: Option<u64>, at: Duration) {
        let peer = self.peers.entry(producer.to_string()).or_insert(Peer {
            last: at,
            boot,
            lost_at: None,
        });
        peer.last = peer.last.max(at);
        let restarted = boot.is_some() && peer.boot.is_some() && boot != peer.boot;
        if boot.is_some() {
            peer.boot = boot;
        }
        if restarted {
            // Its players from before the restart are gone; it announces the new ones.
            tracing::info!(server = producer, "connection server restarted");
            self.take_offline(producer);
            self.lost.remove(producer);
            if let Some(p) = self.peers.get_mut(producer) {
                p.lost_at = None;
            }
            return;
        }
        let Some(lost_at) = peer.lost_at else {
            return;
        };
        if at <= lost_at {
            return;
        }
        peer.lost_at = None;
        // The same process again (a partition healed): its players are back. A new process
        // announces its players itself.
        if let Some((was, users)) = self.lost.remove(producer)
            && !restarted
            && boot.is_none_or(|b| b == was)
        {
            tracing::info!(
                server = producer,
                players = users.len(),
                "connection server heard from again"
            );
            for (user, presence) in users {
                if !self.remote.contains_key(&user) {
                    self.on_remote_presence(user, presence_name(presence), producer.to_string());
                }
            }
        }
    }

    /// A server fell silent: its players are shown offline here.
    fn peer_silent(&mut self, name: &str, now: Duration) {
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        peer.lost_at = Some(now);
        let boot = peer.boot.unwrap_or(0);
        metrics::counter!("croft_connection_peers_lost_total").increment(1);
        let users = self.take_offline(name);
        tracing::warn!(
            server = name,
            players = users.len(),
            "connection server silent: its players are shown offline"
        );
        self.lost.insert(name.to_string(), (boot, users));
    }

    /// Forgets what server `name` reported and tells the players' friends here.
    fn take_offline(&mut self, name: &str) -> Vec<(UserId, Presence)> {
        let users: Vec<(UserId, Presence)> = self
            .remote
            .iter()
            .filter(|(_, (_, from))| from == name)
            .map(|(u, (p, _))| (*u, *p))
            .collect();
        for (user, _) in &users {
            let before = self.presence_of(*user);
            self.remote.remove(user);
            let after = self.presence_of(*user);
            if after != before && self.local_presence(*user) == Presence::Offline {
                let followers = self.followers.get(user).cloned().unwrap_or_default();
                self.tell_friends(*user, &followers, after);
            }
        }
        users
    }

    /// Replaces a session's accepted friends, keeping `followers` in step.
    fn set_friends(&mut self, user: UserId, friends: HashSet<UserId>) {
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        let old = std::mem::replace(&mut s.friends, friends.clone());
        self.unfollow(user, &old);
        for f in friends {
            self.followers.entry(f).or_default().insert(user);
        }
    }

    pub(super) fn unfollow(&mut self, user: UserId, friends: &HashSet<UserId>) {
        for f in friends {
            if let Some(set) = self.followers.get_mut(f) {
                set.remove(&user);
                if set.is_empty() {
                    self.followers.remove(f);
                }
            }
        }
    }

    pub(super) fn publish_presence(&self, user: UserId, presence: Presence) {
        if let Some(bus) = &self.bus {
            bus.emit(events::Event::PresenceChanged {
                user_id: user,
                presence: presence_name(presence).to_string(),
            });
        }
    }

    pub(super) fn tell_friends(
        &mut self,
        user: UserId,
        friends: &HashSet<UserId>,
        presence: Presence,
    ) {
        let bytes = shared_net::Bytes::from(
            LobbyServerMessage::FriendPresence {
                user_id: user,
                presence,
            }
            .encode(),
        );
        for &f in friends {
            self.send_encoded(f, bytes.clone());
        }
    }

    pub(super) fn set_presence(&mut self, user: UserId, presence: Presence) {
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        if s.presence == presence {
            return;
        }
        s.presence = presence;
        let friends = s.friends.clone();
        if s.loaded() {
            self.tell_friends(user, &friends, presence);
            self.publish_presence(user, presence);
        }
    }

    /// Presence here, else on another connection server (from the bus), else offline.
    pub(super) fn presence_of(&self, user: UserId) -> Presence {
        match self.sessions.get(&user) {
            Some(s) if s.loaded() => s.presence,
            _ => self
                .remote
                .get(&user)
                .map(|(p, _)| *p)
                .unwrap_or(Presence::Offline),
        }
    }

    /// Presence of a player on this server (not what the bus says).
    pub(super) fn local_presence(&self, user: UserId) -> Presence {
        match self.sessions.get(&user) {
            Some(s) if s.loaded() => s.presence,
            _ => Presence::Offline,
        }
    }

    fn friend_entries(&self, friends: &[store::Friend]) -> Vec<FriendEntry> {
        friends
            .iter()
            .map(|f| {
                let state = match f.state {
                    store::FriendState::Accepted => FriendState::Accepted,
                    store::FriendState::Incoming => FriendState::Incoming,
                    store::FriendState::Outgoing => FriendState::Outgoing,
                };
                let presence = if state == FriendState::Accepted {
                    self.presence_of(f.user_id as u64)
                } else {
                    Presence::Offline
                };
                FriendEntry {
                    user_id: f.user_id as u64,
                    username: f.username.clone(),
                    state,
                    presence,
                }
            })
            .collect()
    }

    /// The account loaded: the player is welcomed and their friends hear they are online.
    pub(super) fn on_loaded(&mut self, user: UserId, username: String, friends: &[store::Friend]) {
        let entries = self.friend_entries(friends);
        let accepted = accepted(friends);
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        s.username = Some(username.clone());
        self.set_friends(user, accepted.clone());
        self.just_loaded.push(user);
        tracing::info!(user, %username, friends = accepted.len(), "player online");
        self.send(
            user,
            &LobbyServerMessage::Welcome {
                user_id: user,
                username,
            },
        );
        self.send(user, &LobbyServerMessage::Friends(entries));
        self.tell_friends(user, &accepted, Presence::Online);
        self.publish_presence(user, Presence::Online);
    }

    /// A fresh friend list from the database.
    pub(super) fn on_friends(&mut self, user: UserId, friends: &[store::Friend]) {
        let entries = self.friend_entries(friends);
        if self.sessions.contains_key(&user) {
            self.set_friends(user, accepted(friends));
            self.send(user, &LobbyServerMessage::Friends(entries));
        }
    }

    /// Two players became friends (or stopped being friends): each is told, and new friends
    /// see each other's presence.
    pub(super) fn on_friendship(&mut self, users: [UserId; 2], accepted: bool) {
        let [a, b] = users;
        for (me, them) in [(a, b), (b, a)] {
            if let Some(mut friends) = self.sessions.get(&me).map(|s| s.friends.clone()) {
                if accepted {
                    friends.insert(them);
                } else {
                    friends.remove(&them);
                }
                self.set_friends(me, friends);
            }
            self.send(
                me,
                &LobbyServerMessage::FriendUpdate {
                    user_id: them,
                    accepted,
                },
            );
            if accepted {
                let presence = self.presence_of(them);
                self.send(
                    me,
                    &LobbyServerMessage::FriendPresence {
                        user_id: them,
                        presence,
                    },
                );
            }
        }
    }

    /// Another connection server reported a player's presence.
    pub(super) fn on_remote_presence(&mut self, user_id: UserId, presence: &str, producer: String) {
        let Some(presence) = presence_from(presence) else {
            tracing::warn!(%presence, "unknown presence on the bus");
            return;
        };
        let before = self.presence_of(user_id);
        if presence == Presence::Offline {
            // Only the server that reported the player online may take them offline (a player
            // who moved servers goes offline on the old one after the new one said online).
            if self
                .remote
                .get(&user_id)
                .is_some_and(|(_, from)| *from == producer)
            {
                self.remote.remove(&user_id);
            }
        } else {
            self.remote.insert(user_id, (presence, producer));
        }
        let after = self.presence_of(user_id);
        // A player on this server is reported by this server.
        if after != before && self.local_presence(user_id) == Presence::Offline {
            let followers = self.followers.get(&user_id).cloned().unwrap_or_default();
            self.tell_friends(user_id, &followers, after);
        }
    }
}
