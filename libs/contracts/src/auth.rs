//! The auth service's REST API (what game clients and tools call) and its internal feed (the
//! revocations game servers poll).

pub mod v1 {
    use std::net::SocketAddr;

    use serde::{Deserialize, Serialize};

    use crate::UserId;

    /// `POST` [`LoginRequest`] -> [`SessionTokens`].
    pub const LOGIN: &str = "/v1/auth/login";
    /// `POST` [`RefreshRequest`] -> [`SessionTokens`] (the refresh token rotates).
    pub const REFRESH: &str = "/v1/auth/refresh";
    /// `POST` with the access token -> 204.
    pub const LOGOUT: &str = "/v1/auth/logout";
    /// `POST` with the access token -> [`ConnectTokenResponse`].
    pub const CONNECT_TOKEN: &str = "/v1/auth/connect-token";
    /// `POST` [`IntrospectRequest`] -> [`IntrospectResponse`].
    pub const INTROSPECT: &str = "/v1/auth/introspect";
    /// `GET` [`RevocationsQuery`] -> [`RevocationFeed`].
    pub const REVOCATIONS: &str = "/v1/auth/revocations";
    /// `GET` -> the JWKS (RFC 7517) of the access tokens' verification keys.
    pub const JWKS: &str = "/.well-known/jwks.json";
    /// `POST` [`CreateUserRequest`] with the admin credential -> 201 [`CreatedUser`].
    pub const ADMIN_USERS: &str = "/v1/admin/users";
    /// `GET` -> the OpenAPI 3 document of this API.
    pub const OPENAPI: &str = "/openapi.json";

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct LoginRequest {
        pub username: String,
        pub password: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct RefreshRequest {
        pub refresh_token: String,
    }

    /// What a login or a refresh answers.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct SessionTokens {
        pub token_type: String,
        pub access_token: String,
        /// Seconds until the access token expires.
        pub expires_in: u64,
        pub refresh_token: String,
        /// A netcode connect token (base64) for one of `connection_servers`.
        pub connect_token: String,
        #[cfg_attr(feature = "server", schema(value_type = Vec<String>, example = json!(["127.0.0.1:5100"])))]
        pub connection_servers: Vec<SocketAddr>,
        /// The connection servers' WebSocket URLs (web clients connect to one with the same
        /// token); empty when none accepts WebSocket clients.
        #[serde(default)]
        pub connection_ws_urls: Vec<String>,
        pub user_id: UserId,
        pub session_id: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct ConnectTokenResponse {
        pub connect_token: String,
        #[cfg_attr(feature = "server", schema(value_type = Vec<String>))]
        pub connection_servers: Vec<SocketAddr>,
        #[serde(default)]
        pub connection_ws_urls: Vec<String>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct IntrospectRequest {
        pub session_id: String,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct IntrospectResponse {
        /// The session exists and is neither revoked nor expired.
        pub active: bool,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct CreateUserRequest {
        pub username: String,
        pub password: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct CreatedUser {
        pub user_id: i64,
        pub username: String,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::IntoParams))]
    pub struct RevocationsQuery {
        /// Unix milliseconds; revocations at or after this time are listed.
        pub since: i64,
        /// Entries of the `since` millisecond to skip (the previous page's `next_skip`).
        #[serde(default)]
        pub skip: i64,
    }

    /// One page of the revocation feed.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct RevocationFeed {
        /// Revoked sessions, oldest first.
        pub revoked: Vec<RevokedTag>,
        /// Ask again from here, skipping `next_skip` entries of that millisecond (already listed).
        pub next_since: i64,
        #[serde(default)]
        pub next_skip: i64,
    }

    /// A revoked session, named by its tag: the first 16 bytes of the SHA-256 of the session
    /// id, what connect tokens carry (so the feed names no session and no user).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
    pub struct RevokedTag {
        /// The tag as 32 hex digits.
        pub tag: String,
        pub revoked_at: i64,
    }
}

#[cfg(feature = "client")]
pub use client::AuthFeedClient;

#[cfg(feature = "client")]
mod client {
    use super::v1::*;
    use crate::CallError;
    use crate::call::{self, trim_base};

    /// Reads the auth service's internal feeds (no credential: the internal listener is only
    /// reachable inside the cluster).
    #[derive(Clone)]
    pub struct AuthFeedClient {
        http: reqwest::Client,
        base: String,
    }

    impl AuthFeedClient {
        /// `base`: the auth service (or its internal listener), e.g. `http://127.0.0.1:7000`.
        pub fn new(http: reqwest::Client, base: &str) -> Self {
            Self {
                http,
                base: trim_base(base),
            }
        }

        pub async fn revocations(
            &self,
            query: &RevocationsQuery,
        ) -> Result<RevocationFeed, CallError> {
            let url = format!("{}{REVOCATIONS}", self.base);
            let what = format!("GET {url}");
            call::json(self.http.get(url).query(query), what).await
        }
    }
}
