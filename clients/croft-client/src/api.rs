//! The auth service's REST API, as a client calls it.

use anyhow::{Context, bail};
use contracts::ErrorBody;
use contracts::auth::v1::{
    CONNECT_TOKEN, ConnectTokenResponse, LOGIN, LOGOUT, LoginRequest, REFRESH, RefreshRequest,
};
use renet_netcode::ConnectToken;
use serde::Deserialize;

pub use contracts::auth::v1::SessionTokens;

/// The netcode connect token of a login or refresh answer.
pub fn netcode_token(session: &SessionTokens) -> anyhow::Result<ConnectToken> {
    crate::decode_connect_token(&session.connect_token).context("decoding the connect token")
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
            .post(format!("{}{LOGIN}", self.base))
            .json(&LoginRequest {
                username: username.to_string(),
                password: password.to_string(),
            })
            .send()
            .context("calling login")?;
        Self::answer(resp)
    }

    pub fn refresh(&self, refresh_token: &str) -> anyhow::Result<SessionTokens> {
        let resp = self
            .http
            .post(format!("{}{REFRESH}", self.base))
            .json(&RefreshRequest {
                refresh_token: refresh_token.to_string(),
            })
            .send()
            .context("calling refresh")?;
        Self::answer(resp)
    }

    pub fn logout(&self, access_token: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}{LOGOUT}", self.base))
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
        let resp = self
            .http
            .post(format!("{}{CONNECT_TOKEN}", self.base))
            .bearer_auth(access_token)
            .send()
            .context("calling connect-token")?;
        let fresh: ConnectTokenResponse = Self::answer(resp)?;
        crate::decode_connect_token(&fresh.connect_token).context("decoding the connect token")
    }
}
