//! Matchmaking's internal API, which connection servers (and `croft status`) call with the
//! service credential.

/// Tickets, rejoins, farm and common-area places, and each connection server's mailbox of
/// updates for its players.
pub mod v1 {
    use std::net::SocketAddr;

    use serde::{Deserialize, Serialize};

    use crate::{MatchId, UserId};

    /// `POST` [`TicketRequest`] -> [`TicketResponse`]; 409 `in_match` or `forming`.
    pub const TICKETS: &str = "/v1/matchmaking/tickets";
    /// `DELETE` -> 204; 404 `not_queued`; 409 `forming` (too late to cancel).
    pub fn ticket(user: UserId) -> String {
        format!("{TICKETS}/{user}")
    }
    /// `GET` [`UpdatesQuery`] -> [`UpdatesResponse`] (a long poll).
    pub const UPDATES: &str = "/v1/matchmaking/updates";
    /// `POST` [`RejoinRequest`] -> [`RejoinResponse`]; 404 `not_in_match`.
    pub const REJOIN: &str = "/v1/matchmaking/rejoin";
    /// `POST` [`FarmRequest`] -> [`FarmResponse`].
    pub const FARMS: &str = "/v1/matchmaking/farms";
    /// `POST` [`HubPlaceRequest`] -> [`HubPlaceResponse`].
    pub const HUB: &str = "/v1/matchmaking/hub";
    /// `GET` -> [`Status`].
    pub const STATUS: &str = "/v1/matchmaking/status";

    /// What a connection server learns about one of its players.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum UpdateKind {
        QueueLeft {
            /// `timed_out`, `no_capacity` or `connection_lost` (the player's connection server
            /// stopped reading its mailbox).
            reason: String,
        },
        MatchFound {
            match_id: MatchId,
            server_addr: SocketAddr,
            /// The netcode connect token for this player, base64.
            connect_token: String,
            /// The instance's WebSocket URL, for web clients.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            ws_url: Option<String>,
        },
        MatchEnded {
            match_id: MatchId,
            aborted: bool,
        },
    }

    /// One entry of a connection server's mailbox.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Update {
        pub seq: u64,
        pub user_id: UserId,
        #[serde(flatten)]
        pub kind: UpdateKind,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TicketRequest {
        pub user_id: UserId,
        /// The connection server that relays this player's updates.
        pub server: String,
        /// The tag of the player's session (hex), carried into the instance's connect token so
        /// that a revoked session is dropped there too. Absent: no session known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub session_tag: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TicketResponse {
        /// `queued` or `already_queued`.
        pub status: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdatesQuery {
        pub server: String,
        #[serde(default)]
        pub after: u64,
        /// Hold the request up to this long while there is nothing new.
        #[serde(default)]
        pub wait_ms: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UpdatesResponse {
        pub updates: Vec<Update>,
        /// The highest sequence number issued to this server so far.
        pub last_seq: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RejoinRequest {
        pub user_id: UserId,
        /// The connection server the player is on now (it gets the match's `MatchEnded`).
        pub server: String,
        /// The tag of the player's session (hex), carried into the instance's connect token so
        /// that a revoked session is dropped there too. Absent: no session known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub session_tag: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RejoinResponse {
        pub match_id: MatchId,
        pub server_addr: SocketAddr,
        pub connect_token: String,
        /// The server's WebSocket URL (web clients connect there with the same token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }

    /// Open a player's farm on an instance server.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FarmRequest {
        pub user_id: UserId,
        /// The tag of the player's session (hex), carried into the instance's connect token so
        /// that a revoked session is dropped there too. Absent: no session known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub session_tag: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct FarmResponse {
        pub server_addr: SocketAddr,
        /// A farm connect token (standard base64 of the netcode token bytes).
        pub connect_token: String,
        /// The server's WebSocket URL (web clients connect there with the same token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }

    /// A place in the common area.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HubPlaceRequest {
        pub user_id: UserId,
        pub name: String,
        /// The tag of the player's session (hex), carried into the instance's connect token so
        /// that a revoked session is dropped there too. Absent: no session known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub session_tag: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HubPlaceResponse {
        pub hub_id: u32,
        pub server_addr: SocketAddr,
        /// A hub connect token (standard base64 of the netcode token bytes).
        pub connect_token: String,
        /// The server's WebSocket URL (web clients connect there with the same token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }

    /// What matchmaking runs: the queue, the matches, and its allocator's own report (its
    /// shape depends on the allocator: `allocator` names it, `instances` lists what it runs).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Status {
        pub queued: usize,
        pub matches_running: usize,
        pub allocator: serde_json::Value,
    }
}

#[cfg(feature = "client")]
pub use client::MatchmakingClient;

#[cfg(feature = "client")]
mod client {
    use std::sync::Arc;
    use std::time::Duration;

    use super::v1::*;
    use crate::call::{self, trim_base};
    use crate::{CallError, UserId};

    /// Calls matchmaking's internal API with the service credential.
    #[derive(Clone)]
    pub struct MatchmakingClient {
        http: reqwest::Client,
        base: String,
        token: Arc<str>,
    }

    impl MatchmakingClient {
        /// `base`: matchmaking's internal API, e.g. `http://127.0.0.1:7002`.
        pub fn new(http: reqwest::Client, base: &str, service_token: impl Into<Arc<str>>) -> Self {
            Self {
                http,
                base: trim_base(base),
                token: service_token.into(),
            }
        }

        pub fn base(&self) -> &str {
            &self.base
        }

        fn request(
            &self,
            method: reqwest::Method,
            path: &str,
        ) -> (reqwest::RequestBuilder, String) {
            let url = format!("{}{path}", self.base);
            let what = format!("{method} {url}");
            (
                self.http.request(method, url).bearer_auth(&*self.token),
                what,
            )
        }

        pub async fn create_ticket(
            &self,
            request: &TicketRequest,
        ) -> Result<TicketResponse, CallError> {
            let (req, what) = self.request(reqwest::Method::POST, TICKETS);
            call::json(req.json(request), what).await
        }

        pub async fn cancel_ticket(&self, user: UserId) -> Result<(), CallError> {
            let (req, what) = self.request(reqwest::Method::DELETE, &ticket(user));
            call::empty(req, what).await
        }

        /// A long poll: answers at once when there are updates after `query.after`, else
        /// after up to `query.wait_ms`; `timeout` bounds the whole call.
        pub async fn updates(
            &self,
            query: &UpdatesQuery,
            timeout: Duration,
        ) -> Result<UpdatesResponse, CallError> {
            let (req, what) = self.request(reqwest::Method::GET, UPDATES);
            call::json(req.query(query).timeout(timeout), what).await
        }

        pub async fn rejoin(&self, request: &RejoinRequest) -> Result<RejoinResponse, CallError> {
            let (req, what) = self.request(reqwest::Method::POST, REJOIN);
            call::json(req.json(request), what).await
        }

        pub async fn open_farm(&self, request: &FarmRequest) -> Result<FarmResponse, CallError> {
            let (req, what) = self.request(reqwest::Method::POST, FARMS);
            call::json(req.json(request), what).await
        }

        pub async fn open_hub(
            &self,
            request: &HubPlaceRequest,
        ) -> Result<HubPlaceResponse, CallError> {
            let (req, what) = self.request(reqwest::Method::POST, HUB);
            call::json(req.json(request), what).await
        }

        pub async fn status(&self) -> Result<Status, CallError> {
            let (req, what) = self.request(reqwest::Method::GET, STATUS);
            call::json(req, what).await
        }
    }
}
