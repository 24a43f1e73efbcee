//! The auth service's REST API, as a client calls it.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use renet_netcode::ConnectToken;
use serde::Deserialize;

/// What a login (or refresh) returns.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub connect_token: String,
    pub connection_servers: Vec<SocketAddr>,
    /// The connection servers' WebSocket URLs (the same token is good on each).
    #[serde(default)]
    pub connection_ws_urls: Vec<String>,
    pub user_id: u64,
    pub session_id: String,
}

impl SessionTokens {
    pub fn netcode_token(&self) -> anyhow::Result<ConnectToken> {
        crate::decode_connect_token(&self.connect_token).context("decoding the connect token")
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// A blocking client of the auth service.
#[derive(Clone)]
pub struct AuthApi {
    pub base: String,
    http: reqwest::blocking::Client,
}

impl AuthApi {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    fn answer<T: for<'de> Deserialize<'de>>(
        resp: reqwest::blocking::Response,
    ) -> anyhow::Result<T> {
        let status = resp.status();
        if status.is_success() {
            return resp.json().context("reading the answer");
        }
        match resp.json::<ErrorBody>() {
            Ok(b) => bail!("{status}: {}: {}", b.error.code, b.error.message),
            Err(_) => bail!("{status}"),
        }
    }

    pub fn login(&self, username: &str, password: &str) -> anyhow::Result<SessionTokens> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/login", self.base))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .context("calling login")?;
        Self::answer(resp)
    }

    pub fn refresh(&self, refresh_token: &str) -> anyhow::Result<SessionTokens> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/refresh", self.base))
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .send()
            .context("calling refresh")?;
        Self::answer(resp)
    }

    pub fn logout(&self, access_token: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/auth/logout", self.base))
            .bearer_auth(access_token)
            .send()
            .context("calling logout")?;
        if !resp.status().is_success() {
            bail!("logout failed: {}", resp.status());
        }
        Ok(())
    }

    /// A fresh connect token for the connection server.
    pub fn connect_token(&self, access_token: &str) -> anyhow::Result<ConnectToken> {
        #[derive(Deserialize)]
        struct Fresh {
            connect_token: String,
        }
        let resp = self
            .http
            .post(format!("{}/v1/auth/connect-token", self.base))
            .bearer_auth(access_token)
            .send()
            .context("calling connect-token")?;
        let fresh: Fresh = Self::answer(resp)?;
        crate::decode_connect_token(&fresh.connect_token).context("decoding the connect token")
    }
}
