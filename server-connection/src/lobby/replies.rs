//! Applies what the async side answered (database, matchmaking, auth, admin) and what the bus
//! carried from the other servers, at the start of the frame.

use std::time::Duration;

use bevy::prelude::*;
use shared_sim::protocol::{ErrorCode, LobbyServerMessage};

use super::Lobby;
use crate::bridge::{Job, Reply, UserId};

/// Revocations are remembered this long: connect tokens live one minute, so older ones cannot
/// be presented again.
const REVOKED_KEPT: Duration = Duration::from_secs(600);

pub fn apply_replies(time: Res<Time<Real>>, mut lobby: ResMut<Lobby>) {
    let now = time.elapsed();
    while let Ok(reply) = lobby.replies.try_recv() {
        lobby.apply(reply, now);
    }
}

impl Lobby {
    fn apply(&mut self, reply: Reply, now: Duration) {
        match reply {
            Reply::Loaded {
                user,
                username,
                friends,
            } => self.on_loaded(user, username, &friends),
            Reply::LoadFailed { user, tag, message } => {
                // Only the session it was loading for (not a newer one of the same account).
                let current = self.sessions.get(&user).filter(|s| s.tag == tag);
                if let Some(shard) = current.map(|s| s.shard) {
                    self.sessions.remove(&user);
                    self.refuse(shard, user, ErrorCode::Unavailable, message);
                }
            }
            Reply::Friends { user, friends } => self.on_friends(user, &friends),
            Reply::FriendsChanged { users } => self.reload_friends(&users),
            Reply::FriendRequestReceived {
                to,
                from,
                from_name,
            } => {
                self.publish_friend_change("requested", from, &from_name, to);
                self.on_friend_request(to, from, from_name);
            }
            Reply::FriendAccepted { users } => {
                self.publish_friend_change("accepted", users[0], "", users[1]);
                self.on_friendship(users, true);
            }
            Reply::FriendRemoved { users } => {
                self.publish_friend_change("removed", users[0], "", users[1]);
                self.on_friendship(users, false);
            }
            Reply::FriendDeclined { users } => {
                self.publish_friend_change("declined", users[0], "", users[1]);
                self.reload_friends(&users);
            }
            Reply::Queued { user } => self.on_queue(user, true),
            Reply::Cancelled { user } => self.on_queue(user, false),
            Reply::Matchmaking(update) => self.on_update(update),
            Reply::Failed {
                user,
                code,
                message,
            } => self.error(user, code, message),
            Reply::Send { user, message } => {
                self.send(user, &message);
            }
            Reply::Revoked(tags) => self.on_revoked(tags, now),
            Reply::Broadcast(text) => self.notify_all(text, None),
            Reply::Bus(env) => self.on_bus(env, now),
        }
    }

    /// Reloads the friend lists of those of `users` connected here.
    fn reload_friends(&mut self, users: &[UserId]) {
        for u in users {
            if self.sessions.contains_key(u) {
                self.job(Job::Friends { user: *u });
            }
        }
    }

    fn on_friend_request(&mut self, to: UserId, from: UserId, from_name: String) {
        self.send(
            to,
            &LobbyServerMessage::FriendRequestReceived {
                user_id: from,
                username: from_name,
            },
        );
    }

    /// Tells the other connection servers (their players may be the other party).
    fn publish_friend_change(&self, change: &str, from: UserId, from_name: &str, to: UserId) {
        if let Some(bus) = &self.bus {
            bus.emit(events::Event::FriendChanged {
                change: change.into(),
                from_user_id: from,
                from_name: from_name.into(),
                to_user_id: to,
            });
        }
    }

    /// Sessions the auth service revoked: their players are dropped and the tags refused.
    fn on_revoked(&mut self, tags: Vec<[u8; 16]>, now: Duration) {
        let hit: Vec<(UserId, usize)> = self
            .sessions
            .iter()
            .filter(|(_, s)| tags.contains(&s.tag))
            .map(|(u, s)| (*u, s.shard))
            .collect();
        self.revoked
            .retain(|_, at| now.saturating_sub(*at) < REVOKED_KEPT);
        self.revoked.extend(tags.into_iter().map(|t| (t, now)));
        for (user, shard) in hit {
            self.refuse(
                shard,
                user,
                ErrorCode::SessionRevoked,
                "this session has ended; log in again".into(),
            );
            self.end_session(user);
        }
    }

    /// An event from another server (or the outbox) arrived over the bus.
    fn on_bus(&mut self, env: events::Envelope, now: Duration) {
        let age_ms = store::now_ms() - env.occurred_at_ms;
        let sent = now.saturating_sub(Duration::from_millis(age_ms.max(0) as u64));
        match env.event {
            events::Event::PresenceChanged { user_id, presence } => {
                self.heard_from(&env.producer, None, sent);
                self.on_remote_presence(user_id, &presence, env.producer)
            }
            events::Event::FriendChanged {
                change,
                from_user_id,
                from_name,
                to_user_id,
            } => {
                let users = [from_user_id, to_user_id];
                match change.as_str() {
                    "requested" => self.on_friend_request(to_user_id, from_user_id, from_name),
                    "accepted" => self.on_friendship(users, true),
                    "removed" => self.on_friendship(users, false),
                    _ => {}
                }
                self.reload_friends(&users);
            }
            events::Event::ConnectionAlive { boot, .. } => {
                self.heard_from(&env.producer, Some(boot), sent)
            }
            events::Event::ChatMessage {
                from_user_id,
                from_name,
                to_user_id,
                text,
            } => self.on_remote_chat(from_user_id, from_name, to_user_id, text, age_ms),
            events::Event::Notification { text } => {
                self.notify_all(text, Some((env.producer, age_ms)))
            }
            _ => {}
        }
    }
}
