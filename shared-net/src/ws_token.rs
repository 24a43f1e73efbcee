//! Checking a netcode connect token without the netcode handshake, for clients that cannot
//! speak UDP (web exports over WebSocket).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chacha20poly1305::{AeadInPlace, Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use renetcode::ConnectToken;

pub(crate) const VERSION_INFO: &[u8; 13] = b"NETCODE 1.02\0";
const MAC_BYTES: usize = 16;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// From the authenticated private part (the public copy is not trusted).
    pub client_id: u64,
    pub timeout_seconds: i32,
    pub server_addresses: Vec<SocketAddr>,
    pub user_data: [u8; 256],
    pub expire_timestamp: u64,
    /// The token's authentication tag: the same token used twice has the same one.
    pub mac: [u8; MAC_BYTES],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a connect token: {0}")]
    Format(String),
    #[error("the token is for another protocol")]
    WrongProtocol,
    #[error("the token has expired")]
    Expired,
    #[error("the token does not authenticate (forged, altered, or for another key)")]
    Forged,
    #[error("the token's private part is malformed: {0}")]
    Layout(&'static str),
    #[error("the token does not name this server")]
    WrongServer,
}

/// Checks `bytes` (a connect token as `ConnectToken::write` wrote it) against this server's
/// `key`, `protocol_id` and public addresses, at `now_secs` (Unix seconds).
///
/// The same tokens, the same key, the same checks a netcode server makes when a connection
/// request arrives (version, protocol id, expiry, the private part decrypted and authenticated,
/// this server among the token's addresses).
///
/// renetcode keeps its private-token decoder to itself, so this follows its layout
/// (renetcode 2.0.0, `token.rs`): the private part is XChaCha20-Poly1305 with the token's
/// nonce and additional data `"NETCODE 1.02\0" ‖ protocol id (LE) ‖ expire timestamp (LE)`,
/// holding `client id u64 | timeout i32 | address count u32 | addresses (type u8: 1 IPv4 +
/// 4 bytes, 2 IPv6 + 16 bytes; then port u16) | client-to-server key 32 | server-to-client key
/// 32 | user data 256`, all little-endian. The tests mint tokens with renetcode itself, so a
/// change of that layout fails them.
pub fn verify_connect_token(
    bytes: &[u8],
    key: &[u8; 32],
    protocol_id: u64,
    now_secs: u64,
    public_addrs: &[SocketAddr],
) -> Result<VerifiedToken, TokenError> {
    let token =
        ConnectToken::read(&mut &bytes[..]).map_err(|e| TokenError::Format(e.to_string()))?;
    if token.protocol_id != protocol_id {
        return Err(TokenError::WrongProtocol);
    }
    if now_secs >= token.expire_timestamp {
        return Err(TokenError::Expired);
    }
    let private = open_private(
        &token.private_data,
        &token.xnonce,
        token.protocol_id,
        token.expire_timestamp,
        key,
    )?;
    if !private
        .server_addresses
        .iter()
        .any(|a| public_addrs.contains(a))
    {
        return Err(TokenError::WrongServer);
    }
    Ok(VerifiedToken {
        client_id: private.client_id,
        timeout_seconds: private.timeout_seconds,
        server_addresses: private.server_addresses,
        user_data: private.user_data,
        expire_timestamp: token.expire_timestamp,
        mac: private.mac,
    })
}

/// The private part of a connect token, decrypted and authenticated.
#[derive(Debug, Clone)]
pub(crate) struct PrivateToken {
    pub client_id: u64,
    pub timeout_seconds: i32,
    pub server_addresses: Vec<SocketAddr>,
    pub client_to_server_key: [u8; 32],
    pub server_to_client_key: [u8; 32],
    pub user_data: [u8; 256],
    /// The authentication tag: the same token used twice has the same one.
    pub mac: [u8; MAC_BYTES],
}

/// Decrypts and reads a token's private part (1024 bytes, the last 16 the tag) with its
/// nonce, protocol id and expiry (the additional data), under `key`.
pub(crate) fn open_private(
    private_data: &[u8; 1024],
    xnonce: &[u8; 24],
    protocol_id: u64,
    expire_timestamp: u64,
    key: &[u8; 32],
) -> Result<PrivateToken, TokenError> {
    let mut aad = [0u8; 29];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21..29].copy_from_slice(&expire_timestamp.to_le_bytes());
    let mut private = *private_data;
    let split = private.len() - MAC_BYTES;
    let mut mac = [0u8; MAC_BYTES];
    mac.copy_from_slice(&private[split..]);
    let (plain, tag) = private.split_at_mut(split);
    XChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt_in_place_detached(
            XNonce::from_slice(xnonce),
            &aad,
            plain,
            Tag::from_slice(tag),
        )
        .map_err(|_| TokenError::Forged)?;
    let mut r = Reader { buf: plain, at: 0 };
    let client_id = u64::from_le_bytes(r.take::<8>()?);
    let timeout_seconds = i32::from_le_bytes(r.take::<4>()?);
    let count = u32::from_le_bytes(r.take::<4>()?);
    if count == 0 || count > 32 {
        return Err(TokenError::Layout("server address count"));
    }
    let mut server_addresses = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let ip = match r.take::<1>()?[0] {
            1 => IpAddr::V4(Ipv4Addr::from(r.take::<4>()?)),
            2 => IpAddr::V6(Ipv6Addr::from(r.take::<16>()?)),
            _ => return Err(TokenError::Layout("address type")),
        };
        let port = u16::from_le_bytes(r.take::<2>()?);
        server_addresses.push(SocketAddr::new(ip, port));
    }
    Ok(PrivateToken {
        client_id,
        timeout_seconds,
        server_addresses,
        client_to_server_key: r.take::<32>()?,
        server_to_client_key: r.take::<32>()?,
        user_data: r.take::<256>()?,
        mac,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let end = self.at + N;
        let bytes = self
            .buf
            .get(self.at..end)
            .ok_or(TokenError::Layout("too short"))?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PROTOCOL: u64 = 0x6372_6f66_7400_0001;
    const KEY: [u8; 32] = [7; 32];

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn server() -> SocketAddr {
        "127.0.0.1:5100".parse().unwrap()
    }

    fn mint(client_id: u64, servers: Vec<SocketAddr>, user_data: [u8; 256]) -> Vec<u8> {
        let token = ConnectToken::generate(
            Duration::from_secs(now()),
            PROTOCOL,
            300,
            client_id,
            15,
            servers,
            Some(&user_data),
            &KEY,
        )
        .unwrap();
        let mut out = Vec::new();
        token.write(&mut out).unwrap();
        out
    }

    #[test]
    fn a_token_from_renetcode_verifies_with_its_private_fields() {
        let mut user = [0u8; 256];
        user[..4].copy_from_slice(b"user");
        let v6: SocketAddr = "[::1]:5101".parse().unwrap();
        let bytes = mint(42, vec![v6, server()], user);
        let t = verify_connect_token(&bytes, &KEY, PROTOCOL, now(), &[server()]).unwrap();
        assert_eq!(t.client_id, 42);
        assert_eq!(t.timeout_seconds, 15);
        assert_eq!(t.server_addresses, vec![v6, server()]);
        assert_eq!(t.user_data, user);
        assert!(t.expire_timestamp > now());
    }

    #[test]
    fn altered_forged_expired_or_misdirected_tokens_are_refused() {
        let bytes = mint(42, vec![server()], [0; 256]);
        let check = |b: &[u8], key: &[u8; 32], protocol: u64, at: u64, addrs: &[SocketAddr]| {
            verify_connect_token(b, key, protocol, at, addrs)
        };
        // Another key, another protocol, later than the expiry, another server.
        assert_eq!(
            check(&bytes, &[8; 32], PROTOCOL, now(), &[server()]),
            Err(TokenError::Forged)
        );
        assert_eq!(
            check(&bytes, &KEY, PROTOCOL + 1, now(), &[server()]),
            Err(TokenError::WrongProtocol)
        );
        assert_eq!(
            check(&bytes, &KEY, PROTOCOL, now() + 301, &[server()]),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(
                &bytes,
                &KEY,
                PROTOCOL,
                now(),
                &["127.0.0.1:5200".parse().unwrap()]
            ),
            Err(TokenError::WrongServer)
        );
        // Any flipped byte of the private part, or a later expiry written into the public
        // part, breaks the authentication.
        let private_at = 8 + 13 + 8 + 8 + 8 + 24;
        for offset in [0, 100, 1007, 1008, 1023] {
            let mut b = bytes.clone();
            b[private_at + offset] ^= 1;
            assert_eq!(
                check(&b, &KEY, PROTOCOL, now(), &[server()]),
                Err(TokenError::Forged),
                "offset {offset}"
            );
        }
        let mut b = bytes.clone();
        let expire_at = 8 + 13 + 8 + 8;
        let later = u64::from_le_bytes(b[expire_at..expire_at + 8].try_into().unwrap()) + 3600;
        b[expire_at..expire_at + 8].copy_from_slice(&later.to_le_bytes());
        assert_eq!(
            check(&b, &KEY, PROTOCOL, now(), &[server()]),
            Err(TokenError::Forged)
        );
        // Not a token at all.
        assert!(matches!(
            check(b"hello", &KEY, PROTOCOL, now(), &[server()]),
            Err(TokenError::Format(_))
        ));
        assert!(matches!(
            check(&bytes[..600], &KEY, PROTOCOL, now(), &[server()]),
            Err(TokenError::Format(_))
        ));
    }

    #[test]
    fn the_same_token_twice_has_the_same_mac_and_two_tokens_differ() {
        let a = mint(42, vec![server()], [0; 256]);
        let b = mint(42, vec![server()], [0; 256]);
        let ta = verify_connect_token(&a, &KEY, PROTOCOL, now(), &[server()]).unwrap();
        let ta2 = verify_connect_token(&a, &KEY, PROTOCOL, now(), &[server()]).unwrap();
        let tb = verify_connect_token(&b, &KEY, PROTOCOL, now(), &[server()]).unwrap();
        assert_eq!(ta.mac, ta2.mac);
        assert_ne!(ta.mac, tb.mac);
    }
}
