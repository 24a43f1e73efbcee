//! An instance server's control API, which matchmaking (its allocators) and operators call with
//! the control credential, and the ready file a started instance writes.

pub mod v1 {
    use std::net::SocketAddr;

    use serde::{Deserialize, Serialize};

    use crate::{MatchId, UserId};

    /// `POST` [`CreateMatchRequest`] -> 201 [`CreateMatchResponse`]; `GET ?after=SEQ` ->
    /// [`MatchesReport`].
    pub const MATCHES: &str = "/v1/matches";
    /// `GET` -> [`Capacity`].
    pub const CAPACITY: &str = "/v1/capacity";
    /// `POST` -> 202: no new matches; the server stops once its matches have ended.
    pub const DRAIN: &str = "/v1/drain";
    /// `POST` [`OpenFarmRequest`] -> 201 (opened) or 200 (open already) [`OpenFarmResponse`].
    pub const FARMS: &str = "/v1/farms";
    /// `POST` [`HubRequest`] -> [`HubResponse`].
    pub const HUB: &str = "/v1/hub";

    /// Where a started instance listens; written to its `--ready-file` as JSON.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReadyInfo {
        pub http: SocketAddr,
        pub udp: Vec<SocketAddr>,
        /// The WebSocket URL, when `--ws` is set.
        #[serde(default)]
        pub ws: Option<String>,
    }

    /// A match to create. Decks are card id lists, or names of starter decks.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateMatchRequest {
        pub match_id: MatchId,
        pub players: [UserId; 2],
        #[serde(default)]
        pub decks: Option<[Vec<String>; 2]>,
        #[serde(default)]
        pub starter_decks: Option<[String; 2]>,
        #[serde(default)]
        pub seed: Option<u64>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CreateMatchResponse {
        pub match_id: MatchId,
        /// The UDP address the players' connect tokens must name.
        pub server_addr: SocketAddr,
        /// Where WebSocket clients connect with the same tokens (`--ws`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Capacity {
        pub max_matches: usize,
        pub running: usize,
        pub free: usize,
        pub draining: bool,
        pub clients_connected: usize,
    }

    /// The query of `GET /v1/matches`.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MatchesQuery {
        /// Only ended matches numbered above this.
        #[serde(default)]
        pub after: u64,
    }

    /// A match that ended, as the allocator collects it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct EndedMatch {
        /// Increases by one per ended match on this instance.
        pub seq: u64,
        pub match_id: MatchId,
        pub players: [UserId; 2],
        /// `None`: a draw or an aborted match.
        pub winner: Option<UserId>,
        /// `HeroDied`, `Concede`, `Forfeit`, `TurnLimit` or `Aborted`.
        pub reason: String,
        pub turns: u32,
        pub data_version: u64,
    }

    /// `GET /v1/matches?after=SEQ`: what runs, and what ended after `after`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MatchesReport {
        pub live: Vec<MatchId>,
        pub ended: Vec<EndedMatch>,
        pub draining: bool,
        /// This run of the instance (new at every start): a report under another `boot` from
        /// the same address is a restarted instance, which no longer hosts what it had.
        #[serde(default)]
        pub boot: String,
    }

    /// Host a player's farm here.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OpenFarmRequest {
        pub user_id: UserId,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct OpenFarmResponse {
        pub user_id: UserId,
        /// The UDP address the player's farm token must name.
        pub server_addr: SocketAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }

    /// Keep a place for a player in a common-area shard.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HubRequest {
        pub user_id: UserId,
        /// The name other players see.
        pub name: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct HubResponse {
        pub hub_id: u32,
        /// The UDP address the player's hub token must name.
        pub server_addr: SocketAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ws_url: Option<String>,
    }
}

#[cfg(feature = "client")]
pub use client::InstanceClient;

#[cfg(feature = "client")]
mod client {
    use std::sync::Arc;

    use super::v1::*;
    use crate::CallError;
    use crate::call::{self, trim_base};

    /// Calls the control APIs of instance servers: one client (connection pool, credential) for
    /// all of them, the instance named by its control URL (`http://HOST:PORT`) on each call.
    #[derive(Clone)]
    pub struct InstanceClient {
        http: reqwest::Client,
        token: Arc<str>,
    }

    impl InstanceClient {
        pub fn new(http: reqwest::Client, control_token: impl Into<Arc<str>>) -> Self {
            Self {
                http,
                token: control_token.into(),
            }
        }

        fn post(&self, control: &str, path: &str) -> (reqwest::RequestBuilder, String) {
            let url = format!("{}{path}", trim_base(control));
            let what = format!("POST {url}");
            (self.http.post(url).bearer_auth(&*self.token), what)
        }

        fn get(&self, control: &str, path: &str) -> (reqwest::RequestBuilder, String) {
            let url = format!("{}{path}", trim_base(control));
            let what = format!("GET {url}");
            (self.http.get(url).bearer_auth(&*self.token), what)
        }

        pub async fn create_match(
            &self,
            control: &str,
            request: &CreateMatchRequest,
        ) -> Result<CreateMatchResponse, CallError> {
            let (req, what) = self.post(control, MATCHES);
            call::json(req.json(request), what).await
        }

        pub async fn matches(&self, control: &str, after: u64) -> Result<MatchesReport, CallError> {
            let (req, what) = self.get(control, MATCHES);
            call::json(req.query(&MatchesQuery { after }), what).await
        }

        pub async fn capacity(&self, control: &str) -> Result<Capacity, CallError> {
            let (req, what) = self.get(control, CAPACITY);
            call::json(req, what).await
        }

        pub async fn drain(&self, control: &str) -> Result<(), CallError> {
            let (req, what) = self.post(control, DRAIN);
            call::empty(req, what).await
        }

        pub async fn open_farm(
            &self,
            control: &str,
            request: &OpenFarmRequest,
        ) -> Result<OpenFarmResponse, CallError> {
            let (req, what) = self.post(control, FARMS);
            call::json(req.json(request), what).await
        }

        pub async fn keep_hub_place(
            &self,
            control: &str,
            request: &HubRequest,
        ) -> Result<HubResponse, CallError> {
            let (req, what) = self.post(control, HUB);
            call::json(req.json(request), what).await
        }
    }
}
