//! The players' messages: decoded within the per-second budget, bad ones counted against the
//! bad-message budget, and each sent on to the part of the lobby (or the async side) it is for.

use std::time::Duration;

use bevy::prelude::*;
use shared_sim::protocol::{ErrorCode, LobbyClientMessage};

use super::Lobby;
use crate::bridge::{GameRequest, Job, UserId};

pub fn handle_messages(time: Res<Time<Real>>, mut lobby: ResMut<Lobby>) {
    let now = time.elapsed();
    let inbox = std::mem::take(&mut lobby.inbox);
    for (user, bytes) in inbox {
        let limits = lobby.limits;
        // Gone when an earlier message of this frame got the player disconnected.
        let Some(s) = lobby.sessions.get_mut(&user) else {
            continue;
        };
        let decoded =
            if s.msg_window
                .allow(limits.max_messages_per_second, Duration::from_secs(1), now)
            {
                LobbyClientMessage::decode(&bytes).map_err(|e| (e.code(), e.to_string()))
            } else {
                Err((
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages in a second",
                        limits.max_messages_per_second
                    ),
                ))
            };
        match decoded {
            Ok(msg) => lobby.handle(user, msg, now),
            Err((code, message)) => {
                metrics::counter!("croft_connection_bad_messages_total").increment(1);
                s.bad_messages += 1;
                if s.bad_messages > limits.bad_message_budget {
                    let shard = s.shard;
                    lobby.refuse(
                        shard,
                        user,
                        ErrorCode::TooManyErrors,
                        "too many bad messages".into(),
                    );
                    lobby.end_session(user);
                } else {
                    lobby.error(user, code, message);
                }
            }
        }
    }
}

impl Lobby {
    fn handle(&mut self, user: UserId, msg: LobbyClientMessage, now: Duration) {
        let game = |request| Job::Game { user, request };
        match msg {
            LobbyClientMessage::FindMatch => self.find_match(user),
            LobbyClientMessage::CancelMatch => self.job(Job::CancelMatch { user, quiet: false }),
            LobbyClientMessage::RejoinMatch => {
                let tag = self.tag_of(user);
                self.job(Job::Rejoin { user, tag })
            }
            LobbyClientMessage::Chat { to, text } => self.chat(user, to, text, now),
            LobbyClientMessage::FriendRequest { username } => {
                if username.trim().is_empty() || username.len() > 64 {
                    self.error(user, ErrorCode::UnknownUser, "no such user");
                } else {
                    self.job(Job::FriendRequest { user, username });
                }
            }
            LobbyClientMessage::FriendAccept { user_id } => self.job(Job::FriendAccept {
                user,
                other: user_id,
            }),
            LobbyClientMessage::FriendDecline { user_id } => self.job(Job::FriendDecline {
                user,
                other: user_id,
            }),
            LobbyClientMessage::FriendRemove { user_id } => self.job(Job::FriendRemove {
                user,
                other: user_id,
            }),
            LobbyClientMessage::FriendList => self.job(Job::Friends { user }),
            LobbyClientMessage::Inventory => self.job(game(GameRequest::Inventory)),
            LobbyClientMessage::EnterFarm => {
                let tag = self.tag_of(user);
                self.job(game(GameRequest::EnterFarm { tag }))
            }
            LobbyClientMessage::EnterHub => {
                let tag = self.tag_of(user);
                self.job(game(GameRequest::EnterHub { tag }))
            }
            LobbyClientMessage::Craft { recipe } => self.job(game(GameRequest::Craft(recipe))),
            LobbyClientMessage::Decks => self.job(game(GameRequest::Decks)),
            LobbyClientMessage::SaveDeck { slot, name, cards } => {
                self.job(game(GameRequest::SaveDeck { slot, name, cards }))
            }
            LobbyClientMessage::ChooseDeck { slot } => {
                self.job(game(GameRequest::ChooseDeck(slot)))
            }
        }
    }
}
