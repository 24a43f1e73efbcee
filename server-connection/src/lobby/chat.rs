//! Chat and notifications: direct and common chat with its rate limit, and what other servers
//! and operators send everyone over the bus or the admin API.

use std::time::Duration;

use shared_sim::protocol::{ChatTarget, ErrorCode, LobbyServerMessage, MAX_CHAT_CHARS, Presence};

use super::Lobby;
use crate::bridge::UserId;

/// Chat and notifications older than this when they arrive over the bus are not delivered
/// (a server that joins late reads the topics from their start to rebuild presence).
pub(super) const BUS_STALE_MS: i64 = 30_000;

impl Lobby {
    pub(super) fn chat(&mut self, user: UserId, to: ChatTarget, text: String, now: Duration) {
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_CHAT_CHARS || text.chars().any(|c| c.is_control() && c != '\n')
        {
            return self.error(
                user,
                ErrorCode::BadChat,
                format!("a chat message has 1 to {MAX_CHAT_CHARS} characters and no control codes"),
            );
        }
        let limit = self.limits.chat_per_10s;
        let Some(s) = self.sessions.get_mut(&user) else {
            return;
        };
        if !s.chat_window.allow(limit, Duration::from_secs(10), now) {
            metrics::counter!("croft_connection_chat_rate_limited_total").increment(1);
            return self.error(
                user,
                ErrorCode::RateLimited,
                format!("at most {limit} chat messages per 10 seconds"),
            );
        }
        let from_name = s.username.clone().unwrap_or_default();
        let crossing = events::Event::ChatMessage {
            from_user_id: user,
            from_name: from_name.clone(),
            to_user_id: match to {
                ChatTarget::User(t) => Some(t),
                ChatTarget::Common => None,
            },
            text: text.clone(),
        };
        let msg = LobbyServerMessage::Chat {
            from: user,
            from_name,
            to: to.clone(),
            text,
        };
        match to {
            ChatTarget::User(target) => {
                // Friends, or opponents in the same match; anyone else gets the answer an
                // offline or unknown user gets, so direct chat is no presence oracle.
                let allowed = target != user && self.may_message(user, target);
                let sent = allowed
                    && (self.send(target, &msg)
                        || (self.remote.contains_key(&target) && self.bus.is_some()));
                if !sent {
                    self.error(
                        user,
                        ErrorCode::UnknownUser,
                        format!("user {target} is not online or not your friend"),
                    );
                    return;
                }
                metrics::counter!("croft_connection_chat_total", "channel" => "direct")
                    .increment(1);
                // Online on another connection server: the bus carries it there.
                if self.local_presence(target) == Presence::Offline
                    && let Some(bus) = &self.bus
                {
                    bus.emit(crossing);
                }
            }
            ChatTarget::Common => {
                metrics::counter!("croft_connection_chat_total", "channel" => "common")
                    .increment(1);
                self.broadcast(&msg);
                if let Some(bus) = &self.bus {
                    bus.emit(crossing);
                }
            }
        }
    }

    /// Whether `user` may send `target` direct messages: they are friends, or both are in the
    /// same match on this server.
    fn may_message(&self, user: UserId, target: UserId) -> bool {
        let Some(s) = self.sessions.get(&user) else {
            return false;
        };
        s.friends.contains(&target)
            || s.match_id.is_some_and(|m| {
                self.sessions
                    .get(&target)
                    .is_some_and(|t| t.match_id == Some(m))
            })
    }

    /// Chat another connection server relayed (`age_ms` since it was sent).
    pub(super) fn on_remote_chat(
        &mut self,
        from: UserId,
        from_name: String,
        to: Option<UserId>,
        text: String,
        age_ms: i64,
    ) {
        if age_ms > BUS_STALE_MS {
            metrics::counter!("croft_connection_bus_stale_total").increment(1);
            return;
        }
        let msg = LobbyServerMessage::Chat {
            from,
            from_name,
            to: to.map_or(ChatTarget::Common, ChatTarget::User),
            text,
        };
        match to {
            Some(to) => {
                self.send(to, &msg);
            }
            None => {
                self.broadcast(&msg);
            }
        }
    }

    /// A notification for everyone: from an operator here (`from` is `None`; the other
    /// servers get it over the bus), or from another server (its name and the event's age).
    pub(super) fn notify_all(&mut self, text: String, from: Option<(String, i64)>) {
        if let Some((producer, age_ms)) = &from {
            if *age_ms > BUS_STALE_MS {
                metrics::counter!("croft_connection_bus_stale_total").increment(1);
                return;
            }
            tracing::info!(from = %producer, "a notification from the bus");
        } else if let Some(bus) = &self.bus {
            bus.emit(events::Event::Notification { text: text.clone() });
        }
        metrics::counter!("croft_connection_notifications_total").increment(1);
        let recipients = self.broadcast(&LobbyServerMessage::Notification { text });
        tracing::info!(recipients, "broadcast a notification");
    }
}
