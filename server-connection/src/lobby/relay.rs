//! The matchmaking relay: queue requests go to matchmaking, and its answers and updates (queued,
//! left the queue, match found, match ended) move the player's presence and reach the client.

use contracts::matchmaking::v1::{Update, UpdateKind};
use shared_sim::protocol::{ErrorCode, LobbyServerMessage, Presence, QueueEnd};

use super::Lobby;
use crate::bridge::{Job, UserId};

impl Lobby {
    pub(super) fn find_match(&mut self, user: UserId) {
        match self.presence_of(user) {
            Presence::InMatch => self.error(user, ErrorCode::NotAllowed, "already in a match"),
            _ => {
                let tag = self.tag_of(user);
                self.job(Job::FindMatch { user, tag })
            }
        }
    }

    /// Matchmaking took the ticket (`queued`) or withdrew it.
    pub(super) fn on_queue(&mut self, user: UserId, queued: bool) {
        let (from, to, msg) = if queued {
            (
                Presence::Online,
                Presence::InQueue,
                LobbyServerMessage::Queued,
            )
        } else {
            (
                Presence::InQueue,
                Presence::Online,
                LobbyServerMessage::QueueLeft {
                    reason: QueueEnd::Cancelled,
                },
            )
        };
        if self.presence_of(user) == from {
            self.set_presence(user, to);
        }
        self.send(user, &msg);
    }

    pub(super) fn on_update(&mut self, update: Update) {
        let user = update.user_id;
        match update.kind {
            UpdateKind::QueueLeft { reason } => {
                let reason = match reason.as_str() {
                    "timed_out" => QueueEnd::TimedOut,
                    "no_capacity" => QueueEnd::NoCapacity,
                    _ => QueueEnd::Cancelled,
                };
                if self.presence_of(user) == Presence::InQueue {
                    self.set_presence(user, Presence::Online);
                }
                self.send(user, &LobbyServerMessage::QueueLeft { reason });
            }
            UpdateKind::MatchFound {
                match_id,
                server_addr,
                connect_token,
                ws_url,
            } => {
                let Some(bytes) = crate::bridge::token_bytes(&connect_token) else {
                    tracing::error!(user, "matchmaking sent an undecodable token");
                    return;
                };
                if let Some(s) = self.sessions.get_mut(&user) {
                    s.match_id = Some(match_id);
                }
                self.set_presence(user, Presence::InMatch);
                self.send(
                    user,
                    &LobbyServerMessage::MatchFound {
                        match_id,
                        server_addr,
                        connect_token: bytes,
                        ws_url,
                    },
                );
            }
            UpdateKind::MatchEnded { match_id, aborted } => {
                // An older match's end must not free a player who is in a newer one.
                let current = self
                    .sessions
                    .get(&user)
                    .is_some_and(|s| s.match_id.is_none_or(|m| m == match_id));
                if current {
                    if let Some(s) = self.sessions.get_mut(&user) {
                        s.match_id = None;
                    }
                    if self.presence_of(user) == Presence::InMatch {
                        self.set_presence(user, Presence::Online);
                    }
                }
                self.send(user, &LobbyServerMessage::MatchEnded { match_id, aborted });
            }
        }
    }
}
