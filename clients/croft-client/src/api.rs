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

/// The connect token of `session` for a client that lost its connection server `lost`: the
/// same token with that server tried last (see [`crate::try_last`]).
pub fn reconnect_token(
    session: &SessionTokens,
    lost: Option<std::net::SocketAddr>,
) -> anyhow::Result<ConnectToken> {
    let mut token = netcode_token(session)?;
    if let Some(server) = lost {
        crate::try_last(&mut token, server);
    }
    Ok(token)
}

/// A blocking client of the auth service.
#[derive(Clone)]
pub struct AuthApi {
    pub base: String,
    /// Every replica's base URL, `base` first: a request that reaches none of the servers
    /// (refused, timed out) goes to the next.
    bases: Vec<String>,
    http: reqwest::blocking::Client,
}

impl AuthApi {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_replicas(&[base.to_string()])
    }

    /// A client of the auth replicas at `bases` (without a load balancer in front): each
    /// request goes to the first, and on to the next when one cannot be reached.
    pub fn with_replicas(bases: &[String]) -> anyhow::Result<Self> {
        let bases: Vec<String> = bases
            .iter()
            .map(|b| b.trim_end_matches('/').to_string())
            .collect();
        let base = bases
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no auth URL"))?;
        Ok(Self {
            base,
            bases,
            http: reqwest::blocking::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    /// Sends the request `build` makes for a base URL, to each replica in turn until one is
    /// reached.
    fn send(
        &self,
        build: impl Fn(&str) -> reqwest::blocking::RequestBuilder,
    ) -> reqwest::Result<reqwest::blocking::Response> {
        let mut last = None;
        for base in &self.bases {
            match build(base).send() {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() || e.is_timeout() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => build(&self.base).send(),
        }
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
        let request = LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        };
        let resp = self
            .send(|base| self.http.post(format!("{base}{LOGIN}")).json(&request))
            .context("calling login")?;
        Self::answer(resp)
    }

    pub fn refresh(&self, refresh_token: &str) -> anyhow::Result<SessionTokens> {
        let request = RefreshRequest {
            refresh_token: refresh_token.to_string(),
        };
        let resp = self
            .send(|base| self.http.post(format!("{base}{REFRESH}")).json(&request))
            .context("calling refresh")?;
        Self::answer(resp)
    }

    pub fn logout(&self, access_token: &str) -> anyhow::Result<()> {
        let resp = self
            .send(|base| {
                self.http
                    .post(format!("{base}{LOGOUT}"))
                    .bearer_auth(access_token)
            })
            .context("calling logout")?;
        if !resp.status().is_success() {
            bail!("logout failed: {}", resp.status());
        }
        Ok(())
    }

    /// A fresh connect token for the connection server.
    pub fn connect_token(&self, access_token: &str) -> anyhow::Result<ConnectToken> {
        let resp = self
            .send(|base| {
                self.http
                    .post(format!("{base}{CONNECT_TOKEN}"))
                    .bearer_auth(access_token)
            })
            .context("calling connect-token")?;
        let fresh: ConnectTokenResponse = Self::answer(resp)?;
        crate::decode_connect_token(&fresh.connect_token).context("decoding the connect token")
    }
}
