//! The one door between the sockets and what a connection is for: a match seat, a farm or a hub
//! shard, through [`Places`].

pub mod matches;
#[cfg(test)]
mod tests;

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use shared_sim::plugin::{MatchId, UserId};
use shared_sim::protocol::{ClientMessage, ErrorCode, TokenKind, TokenUserData};
use shared_sim::rules::Seat;

use crate::farm::{FarmInbox, FarmInput, Farms};
use crate::hub::{HubInbox, HubInput, Hubs};
use matches::MatchPlaces;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A seat in a match.
    Match { match_id: MatchId, seat: Seat },
    /// The player's own farm.
    Farm,
    /// A common-area shard.
    Hub(u32),
}

impl Place {
    /// The kind of connect token that opens this place (and whose messages it takes).
    pub fn token_kind(&self) -> TokenKind {
        match self {
            Place::Match { .. } => TokenKind::Instance,
            Place::Farm => TokenKind::Farm,
            Place::Hub(_) => TokenKind::Hub,
        }
    }

    pub fn match_id(&self) -> Option<MatchId> {
        match self {
            Place::Match { match_id, .. } => Some(*match_id),
            _ => None,
        }
    }
}

/// Why a connection is refused: the error the client gets, and the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub reason: &'static str,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>, reason: &'static str) -> Self {
        Self {
            code,
            message: message.into(),
            reason,
        }
    }
}

/// Every place a connection can be for, as the network side sees them.
///
/// It admits a connect token to a match seat, a farm or a hub shard, and hands departures and
/// verified messages to that place's inbox. `net.rs` knows the places only through it.
#[derive(SystemParam)]
pub struct Places<'w, 's> {
    matches: MatchPlaces<'w, 's>,
    farms: Res<'w, Farms>,
    farm_inbox: ResMut<'w, FarmInbox>,
    hubs: Res<'w, Hubs>,
    hub_inbox: ResMut<'w, HubInbox>,
}

impl Places<'_, '_> {
    /// A client connected with `token` (its user is the client): the place it is bound to now,
    /// or why not.
    pub fn admit(&mut self, token: &TokenUserData) -> Result<Place, Refusal> {
        let user = token.user_id;
        match token.kind {
            TokenKind::Instance => self.matches.admit(token.match_id, user),
            TokenKind::Farm => {
                if !self.farms.hosts(user) {
                    return Err(Refusal::new(
                        ErrorCode::UnknownMatch,
                        "your farm is not open on this server",
                        "unknown_farm",
                    ));
                }
                tracing::info!(user_id = user, "player on their farm");
                self.farm_inbox.0.push(FarmInput::Joined(user));
                Ok(Place::Farm)
            }
            TokenKind::Hub => {
                let hub_id = token.match_id as u32;
                if !self.hubs.expects(hub_id, user) {
                    return Err(Refusal::new(
                        ErrorCode::UnknownMatch,
                        "no place kept for you in this hub",
                        "unknown_hub",
                    ));
                }
                self.hub_inbox.0.push(HubInput::Joined { hub_id, user });
                Ok(Place::Hub(hub_id))
            }
            TokenKind::Connection => Err(Refusal::new(
                ErrorCode::BadToken,
                "this token is not for an instance server",
                "token_kind",
            )),
        }
    }

    /// The client bound to `place` is gone (left, timed out or was kicked).
    pub fn left(&mut self, user: UserId, place: Place) {
        match place {
            Place::Match { match_id, seat } => self.matches.left(match_id, seat, user),
            Place::Farm => self.farm_inbox.0.push(FarmInput::Left(user)),
            Place::Hub(hub_id) => self.hub_inbox.0.push(HubInput::Left { hub_id, user }),
        }
    }

    /// The client bound to `place` lost its login session (a logout or a ban): as
    /// [`Self::left`], except that a match is forfeited at once rather than after the grace.
    pub fn revoked(&mut self, user: UserId, place: Place) {
        match place {
            Place::Match { match_id, seat } => self.matches.forfeit(match_id, seat, user),
            other => self.left(user, other),
        }
    }

    /// A message from the client bound to `place`, checked with [`ClientMessage::verify`]
    /// against it (the caller refuses the ones that fail).
    pub fn deliver(&mut self, user: UserId, place: Place, message: ClientMessage) {
        match (place, message) {
            (Place::Match { match_id, seat }, message) => {
                self.matches.deliver(match_id, seat, user, message)
            }
            (Place::Farm, ClientMessage::FarmAction { seq, action }) => {
                self.farm_inbox
                    .0
                    .push(FarmInput::Action { user, seq, action });
            }
            (Place::Hub(hub_id), ClientMessage::HubMove { x, y }) => {
                self.hub_inbox.0.push(HubInput::Move {
                    hub_id,
                    user,
                    to: (x, y),
                });
            }
            (Place::Hub(hub_id), ClientMessage::HubChat { text }) => {
                self.hub_inbox.0.push(HubInput::Chat { hub_id, user, text });
            }
            (place, message) => {
                tracing::warn!(?place, ?message, "a message not verified for its place");
            }
        }
    }
}
