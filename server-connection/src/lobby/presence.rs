//! Presence and friends: who counts whom as a friend, what each player's friends see of them
//! (here and on other connection servers, through the bus), and the friend list updates.

use std::collections::HashSet;

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

impl Lobby {
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
        let bytes = renet::Bytes::from(
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
