//! The token service's netcode half: loading the 32-byte netcode private key from a secret and
//! minting connect tokens whose user data binds a user (and a match) to a server.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use renet_netcode::{ConnectToken, NETCODE_KEY_BYTES};
use shared_sim::protocol::{PROTOCOL_ID, TokenKind, TokenUserData};

pub mod jwt;
pub mod revocation;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the netcode key must be 32 bytes written as 64 hex characters")]
    Format,
    #[error(
        "the netcode key is all zeros or one repeated byte: generate a real one with `croft keygen`"
    )]
    Weak,
    #[error("no netcode key: set {env} or pass a key file")]
    Missing { env: &'static str },
    #[error("cannot get random bytes from the OS: {0}")]
    Random(String),
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The env var that may hold the hex netcode key directly.
pub const NETCODE_KEY_ENV: &str = "CROFT_NETCODE_KEY";

/// The secret shared by the token service and the game servers.
#[derive(Clone)]
pub struct NetcodeKey([u8; NETCODE_KEY_BYTES]);

impl std::fmt::Debug for NetcodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetcodeKey(..)")
    }
}

impl NetcodeKey {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != NETCODE_KEY_BYTES * 2 || !text.is_ascii() {
            return Err(KeyError::Format);
        }
        let mut key = [0u8; NETCODE_KEY_BYTES];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).map_err(|_| KeyError::Format)?;
        }
        if key.iter().all(|b| *b == key[0]) {
            return Err(KeyError::Weak);
        }
        Ok(Self(key))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new key from the OS random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; NETCODE_KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(key))
    }

    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_hex(&text)
    }

    /// Writes the key as hex, readable by the owner only.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::write(path, self.to_hex() + "\n").map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        Ok(())
    }

    /// The key from a file if given, else from [`NETCODE_KEY_ENV`].
    pub fn load(file: Option<&Path>) -> Result<Self, KeyError> {
        match file {
            Some(path) => Self::read_file(path),
            None => match std::env::var(NETCODE_KEY_ENV) {
                Ok(hex) => Self::from_hex(&hex),
                Err(_) => Err(KeyError::Missing {
                    env: NETCODE_KEY_ENV,
                }),
            },
        }
    }

    pub fn bytes(&self) -> &[u8; NETCODE_KEY_BYTES] {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no {what}: set {env} or pass its file")]
    Missing {
        what: &'static str,
        env: &'static str,
    },
    #[error("the {what} must be at least {min} characters")]
    Weak { what: &'static str, min: usize },
}

/// A text secret (service credential, admin credential) from a mounted file or an env var,
/// trimmed, refused when shorter than `min_len`.
pub fn load_secret(
    file: Option<&Path>,
    env: &'static str,
    what: &'static str,
    min_len: usize,
) -> Result<String, SecretError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?,
        None => std::env::var(env).map_err(|_| SecretError::Missing { what, env })?,
    };
    let text = text.trim().to_string();
    if text.len() < min_len {
        return Err(SecretError::Weak { what, min: min_len });
    }
    Ok(text)
}

/// Compares secrets in time that depends on the length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value is `Bearer <expected>` (constant-time compare).
pub fn bearer_matches(authorization: Option<&str>, expected: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// The service credential instance servers require on their control API.
pub const CONTROL_TOKEN_ENV: &str = "CROFT_CONTROL_TOKEN";
pub const MIN_CONTROL_TOKEN_LEN: usize = 24;

pub fn load_control_token(file: Option<&Path>) -> Result<String, SecretError> {
    load_secret(
        file,
        CONTROL_TOKEN_ENV,
        "control credential",
        MIN_CONTROL_TOKEN_LEN,
    )
}

/// A random credential of 32 bytes as 64 hex characters.
pub fn generate_secret() -> Result<String, KeyError> {
    Ok(NetcodeKey::generate()?.to_hex())
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot mint a connect token: {0}")]
    Netcode(String),
    #[error("a connect token needs between 1 and 32 server addresses")]
    Addresses,
}

/// Mints netcode connect tokens.
///
/// Servers use the same key to check tokens; only this crate creates them.
#[derive(Clone, Debug)]
pub struct ConnectTokenIssuer {
    key: NetcodeKey,
    /// How long a token may be used to start a connection.
    pub token_lifetime: Duration,
    /// Seconds without packets before either side drops the connection.
    pub timeout_seconds: i32,
}

impl ConnectTokenIssuer {
    pub fn new(key: NetcodeKey) -> Self {
        Self {
            key,
            token_lifetime: Duration::from_secs(60),
            timeout_seconds: 15,
        }
    }

    /// A token for `user_data.user_id` to connect to one of `servers`.
    pub fn mint(
        &self,
        servers: &[SocketAddr],
        user_data: TokenUserData,
    ) -> Result<ConnectToken, MintError> {
        self.mint_at(now(), servers, user_data)
    }

    /// As [`Self::mint`], with the clock given (tests mint already-expired tokens this way).
    pub fn mint_at(
        &self,
        now: Duration,
        servers: &[SocketAddr],
        user_data: TokenUserData,
    ) -> Result<ConnectToken, MintError> {
        if servers.is_empty() || servers.len() > 32 {
            return Err(MintError::Addresses);
        }
        ConnectToken::generate(
            now,
            PROTOCOL_ID,
            self.token_lifetime.as_secs().max(1),
            user_data.user_id,
            self.timeout_seconds,
            servers.to_vec(),
            Some(&user_data.to_bytes()),
            self.key.bytes(),
        )
        .map_err(|e| MintError::Netcode(e.to_string()))
    }

    /// A token for one seat in one match on an instance server.
    pub fn mint_instance(
        &self,
        server: SocketAddr,
        user_id: u64,
        match_id: u64,
    ) -> Result<ConnectToken, MintError> {
        self.mint_instance_for(server, user_id, match_id, [0; 16])
    }

    /// As [`Self::mint_instance`], carrying the tag of the player's session: the instance
    /// drops the player when the auth service revokes it (zeros: no session known).
    pub fn mint_instance_for(
        &self,
        server: SocketAddr,
        user_id: u64,
        match_id: u64,
        session_tag: [u8; 16],
    ) -> Result<ConnectToken, MintError> {
        self.mint(
            &[server],
            TokenUserData {
                kind: TokenKind::Instance,
                user_id,
                match_id,
                session_id: session_tag,
            },
        )
    }
}

impl ConnectTokenIssuer {
    /// A token for a place in common-area shard `hub_id` on the instance server at `server`.
    pub fn mint_hub(
        &self,
        server: SocketAddr,
        user_id: u64,
        hub_id: u32,
    ) -> Result<ConnectToken, MintError> {
        self.mint_hub_for(server, user_id, hub_id, [0; 16])
    }

    /// As [`Self::mint_hub`], carrying the tag of the player's session.
    pub fn mint_hub_for(
        &self,
        server: SocketAddr,
        user_id: u64,
        hub_id: u32,
        session_tag: [u8; 16],
    ) -> Result<ConnectToken, MintError> {
        self.mint(
            &[server],
            TokenUserData {
                kind: TokenKind::Hub,
                user_id,
                match_id: u64::from(hub_id),
                session_id: session_tag,
            },
        )
    }

    /// A token for `user_id`'s own farm on the instance server at `server`.
    pub fn mint_farm(&self, server: SocketAddr, user_id: u64) -> Result<ConnectToken, MintError> {
        self.mint_farm_for(server, user_id, [0; 16])
    }

    /// As [`Self::mint_farm`], carrying the tag of the player's session.
    pub fn mint_farm_for(
        &self,
        server: SocketAddr,
        user_id: u64,
        session_tag: [u8; 16],
    ) -> Result<ConnectToken, MintError> {
        self.mint(
            &[server],
            TokenUserData {
                kind: TokenKind::Farm,
                user_id,
                match_id: 0,
                session_id: session_tag,
            },
        )
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A connect token as clients receive it: the netcode token bytes (1172 for one IPv4 server
/// address) in standard base64.
pub fn encode_token(token: &ConnectToken) -> String {
    let mut bytes = Vec::with_capacity(2048);
    // Writing into a Vec cannot fail.
    let _ = token.write(&mut bytes);
    BASE64.encode(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum TokenDecodeError {
    #[error("connect token is not valid base64")]
    Base64,
    #[error("connect token bytes are malformed: {0}")]
    Token(String),
}

pub fn decode_token(text: &str) -> Result<ConnectToken, TokenDecodeError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| TokenDecodeError::Base64)?;
    ConnectToken::read(&mut bytes.as_slice()).map_err(|e| TokenDecodeError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing_rejects_bad_and_weak_keys() {
        let k = NetcodeKey::generate().unwrap();
        assert_eq!(
            NetcodeKey::from_hex(&k.to_hex()).unwrap().bytes(),
            k.bytes()
        );
        assert!(matches!(NetcodeKey::from_hex("abc"), Err(KeyError::Format)));
        assert!(matches!(
            NetcodeKey::from_hex(&"zz".repeat(32)),
            Err(KeyError::Format)
        ));
        assert!(matches!(
            NetcodeKey::from_hex(&"00".repeat(32)),
            Err(KeyError::Weak)
        ));
        assert_eq!(format!("{k:?}"), "NetcodeKey(..)");
    }

    #[test]
    fn token_round_trips_through_base64() {
        let issuer = ConnectTokenIssuer::new(NetcodeKey::generate().unwrap());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let t = issuer.mint_instance(addr, 7, 99).unwrap();
        assert_eq!(t.client_id, 7);
        assert_eq!(t.protocol_id, PROTOCOL_ID);
        let text = encode_token(&t);
        assert_eq!(decode_token(&text).unwrap(), t);
        assert!(matches!(decode_token("!!"), Err(TokenDecodeError::Base64)));
        assert!(decode_token("AAAA").is_err());
        assert!(matches!(
            issuer.mint(
                &[],
                TokenUserData {
                    kind: TokenKind::Instance,
                    user_id: 1,
                    match_id: 1,
                    session_id: [0; 16]
                }
            ),
            Err(MintError::Addresses)
        ));
    }
}
