//! A connection server's admin API (`croft notify`, `croft status`), behind the service
//! credential.

pub mod v1 {
    use serde::{Deserialize, Serialize};

    /// `POST` [`Notification`] -> 202: a message to every player on this server.
    pub const NOTIFICATIONS: &str = "/v1/notifications";
    /// `GET` -> [`Status`].
    pub const STATUS: &str = "/v1/status";

    /// Most characters of a notification.
    pub const NOTIFICATION_MAX_CHARS: usize = 1024;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Notification {
        pub text: String,
    }

    /// What a connection server reports about itself (refreshed about once a second).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Status {
        pub connected: usize,
        pub sessions: usize,
        /// The public addresses of its netcode sockets.
        pub sockets: Vec<String>,
        /// Players the bus reports online on other connection servers.
        pub remote_players: usize,
        /// The bus's counters, when it has a bus.
        pub bus: serde_json::Value,
    }
}

#[cfg(feature = "client")]
pub use client::ConnectionAdminClient;

#[cfg(feature = "client")]
mod client {
    use std::sync::Arc;

    use super::v1::*;
    use crate::CallError;
    use crate::call::{self, trim_base};

    /// Calls a connection server's admin API with the service credential.
    #[derive(Clone)]
    pub struct ConnectionAdminClient {
        http: reqwest::Client,
        base: String,
        token: Arc<str>,
    }

    impl ConnectionAdminClient {
        /// `base`: the server's admin API, e.g. `http://127.0.0.1:7200`.
        pub fn new(http: reqwest::Client, base: &str, service_token: impl Into<Arc<str>>) -> Self {
            Self {
                http,
                base: trim_base(base),
                token: service_token.into(),
            }
        }

        pub async fn notify(&self, text: &str) -> Result<(), CallError> {
            let url = format!("{}{NOTIFICATIONS}", self.base);
            let what = format!("POST {url}");
            let body = Notification {
                text: text.to_string(),
            };
            call::empty(
                self.http.post(url).bearer_auth(&*self.token).json(&body),
                what,
            )
            .await
        }

        pub async fn status(&self) -> Result<Status, CallError> {
            let url = format!("{}{STATUS}", self.base);
            let what = format!("GET {url}");
            call::json(self.http.get(url).bearer_auth(&*self.token), what).await
        }
    }
}
