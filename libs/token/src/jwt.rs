//! Access tokens: JWTs signed with Ed25519 (EdDSA), a `kid` in every header, a JWKS document of
//! the public keys, and key rotation that logs nobody out. Servers verify with the public keys.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token is not valid: {0}")]
    Invalid(String),
    #[error("signing key: {0}")]
    Key(String),
}

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id, as a decimal string (JWT convention).
    pub sub: String,
    /// The session the token belongs to (revocation is per session).
    pub sid: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

impl AccessClaims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

/// One Ed25519 key pair with its key id.
#[derive(Clone)]
pub struct SigningKeyPair {
    pub kid: String,
    signing: SigningKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeyPair({})", self.kid)
    }
}

impl SigningKeyPair {
    pub fn generate() -> Result<Self, JwtError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        // The key id is derived from the public key, so it is stable for a given key.
        let public = signing.verifying_key().to_bytes();
        let kid = B64URL.encode(&public[..9]);
        Self { kid, signing }
    }

    /// The 32-byte seed as 64 hex characters: the key file format.
    pub fn to_hex(&self) -> String {
        self.signing
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn from_hex(text: &str) -> Result<Self, JwtError> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(JwtError::Key(
                "a signing key file holds 64 hex characters".into(),
            ));
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16)
                .map_err(|_| JwtError::Key("not hex".into()))?;
        }
        if seed.iter().all(|b| *b == seed[0]) {
            return Err(JwtError::Key(
                "the signing key is one repeated byte: generate a real one".into(),
            ));
        }
        Ok(Self::from_seed(seed))
    }

    pub fn read_file(path: &Path) -> Result<Self, JwtError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| JwtError::Key(format!("{}: {e}", path.display())))?;
        Self::from_hex(&text)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    fn encoding_key(&self) -> Result<EncodingKey, JwtError> {
        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(EncodingKey::from_ed_der(der.as_bytes()))
    }
}

/// A public key that verifies tokens, with an optional end of validity (for retired keys).
#[derive(Clone, Debug)]
pub struct VerificationKey {
    pub kid: String,
    pub public: [u8; 32],
    /// Unix seconds after which tokens signed by this key can no longer be valid.
    pub valid_until: Option<u64>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs access tokens with the active key and verifies with every current and retired key.
///
/// Key rotation logs nobody out: retired keys keep verifying until the tokens they signed have
/// expired. Servers verify with the public keys alone ([`JwtVerifier`]).
#[derive(Clone)]
pub struct JwtKeys {
    issuer: String,
    active: SigningKeyPair,
    encoding: EncodingKey,
    verification: Vec<VerificationKey>,
    decoding: HashMap<String, (DecodingKey, Option<u64>)>,
    pub access_ttl: Duration,
}

impl JwtKeys {
    pub fn new(
        issuer: &str,
        active: SigningKeyPair,
        access_ttl: Duration,
    ) -> Result<Self, JwtError> {
        let encoding = active.encoding_key()?;
        let mut keys = Self {
            issuer: issuer.to_string(),
            encoding,
            verification: Vec::new(),
            decoding: HashMap::new(),
            active: active.clone(),
            access_ttl,
        };
        keys.add_verification_key(VerificationKey {
            kid: active.kid.clone(),
            public: active.public_key(),
            valid_until: None,
        });
        Ok(keys)
    }

    fn add_verification_key(&mut self, key: VerificationKey) {
        let x = B64URL.encode(key.public);
        if let Ok(decoding) = DecodingKey::from_ed_components(&x) {
            self.decoding
                .insert(key.kid.clone(), (decoding, key.valid_until));
            self.verification.retain(|k| k.kid != key.kid);
            self.verification.push(key);
        }
    }

    /// Makes `next` the signing key; the old one keeps verifying for one access-token lifetime.
    pub fn rotate(&mut self, next: SigningKeyPair) -> Result<(), JwtError> {
        let retired = VerificationKey {
            kid: self.active.kid.clone(),
            public: self.active.public_key(),
            valid_until: Some(unix_now() + self.access_ttl.as_secs()),
        };
        self.encoding = next.encoding_key()?;
        self.add_verification_key(retired);
        self.add_verification_key(VerificationKey {
            kid: next.kid.clone(),
            public: next.public_key(),
            valid_until: None,
        });
        self.active = next;
        Ok(())
    }

    /// Drops retired keys whose tokens have all expired.
    pub fn prune(&mut self, now: u64) {
        let expired: Vec<String> = self
            .verification
            .iter()
            .filter(|k| k.valid_until.is_some_and(|t| t < now))
            .map(|k| k.kid.clone())
            .collect();
        for kid in expired {
            self.decoding.remove(&kid);
            self.verification.retain(|k| k.kid != kid);
        }
    }

    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// A signed access token for a user's session; returns it with its expiry (unix seconds).
    pub fn issue(&self, user_id: i64, session_id: &str) -> Result<(String, u64), JwtError> {
        self.issue_at(user_id, session_id, unix_now())
    }

    pub fn issue_at(
        &self,
        user_id: i64,
        session_id: &str,
        now: u64,
    ) -> Result<(String, u64), JwtError> {
        let exp = now + self.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iss: self.issuer.clone(),
            iat: now,
            exp,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.active.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok((token, exp))
    }

    /// Checks signature, `kid`, issuer and expiry (no leeway beyond 5 s of clock skew).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        verify_with(&self.issuer, &self.decoding, token)
    }

    /// The JWKS document (RFC 7517) of every key that can still verify a token.
    pub fn jwks(&self) -> serde_json::Value {
        let now = unix_now();
        let keys: Vec<serde_json::Value> = self
            .verification
            .iter()
            .filter(|k| k.valid_until.is_none_or(|t| t >= now))
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": k.kid,
                    "x": B64URL.encode(k.public),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Verification keys from a JWKS document (what a game server loads from the token service).
    pub fn verifier_from_jwks(
        issuer: &str,
        jwks: &serde_json::Value,
    ) -> Result<JwtVerifier, JwtError> {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| JwtError::Key(format!("bad JWKS: {e}")))?;
        let mut decoding = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::Key(e.to_string()))?;
            decoding.insert(kid, (key, None));
        }
        Ok(JwtVerifier {
            issuer: issuer.to_string(),
            decoding,
        })
    }
}

/// Verification only, from public keys: what the connection and instance servers hold.
#[derive(Clone)]
pub struct JwtVerifier {
    issuer: String,
    decoding: HashMap<String, (DecodingKey, Option<u64>)>,
}

impl JwtVerifier {
    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        verify_with(&self.issuer, &self.decoding, token)
    }
}

/// Verifies with the key named by `kid`; a retired key past its `valid_until` verifies nothing.
fn verify_with(
    issuer: &str,
    keys: &HashMap<String, (DecodingKey, Option<u64>)>,
    token: &str,
) -> Result<AccessClaims, JwtError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
    if header.alg != Algorithm::EdDSA {
        return Err(JwtError::Invalid(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| JwtError::Invalid("no kid".into()))?;
    let (key, valid_until) = keys.get(&kid).ok_or(JwtError::UnknownKey)?;
    if valid_until.is_some_and(|t| unix_now() > t) {
        return Err(JwtError::UnknownKey);
    }
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
            _ => JwtError::Invalid(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            "croft-test",
            SigningKeyPair::generate().unwrap(),
            Duration::from_secs(900),
        )
        .unwrap()
    }

    #[test]
    fn issue_and_verify_with_kid() {
        let k = keys();
        let (token, exp) = k.issue(42, "s1").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(k.active_kid()));
        let claims = k.verify(&token).unwrap();
        assert_eq!(claims.user_id(), Some(42));
        assert_eq!(claims.sid, "s1");
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn expired_forged_and_tampered_tokens_are_refused() {
        let k = keys();
        let (old, _) = k.issue_at(1, "s", unix_now() - 3600).unwrap();
        assert_eq!(k.verify(&old), Err(JwtError::Expired));
        // Signed by a key this service never had.
        let other = keys();
        let (forged, _) = other.issue(1, "s").unwrap();
        assert_eq!(k.verify(&forged), Err(JwtError::UnknownKey));
        // Same kid, different key: the signature fails.
        let mut impostor = JwtKeys::new(
            "croft-test",
            SigningKeyPair::generate().unwrap(),
            Duration::from_secs(900),
        )
        .unwrap();
        impostor.active.kid = k.active_kid().to_string();
        let (forged, _) = impostor.issue(1, "s").unwrap();
        assert!(matches!(k.verify(&forged), Err(JwtError::Invalid(_))));
        // A payload edited after signing.
        let (token, _) = k.issue(1, "s").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let evil =
            B64URL.encode(br#"{"sub":"2","sid":"s","iss":"croft-test","iat":1,"exp":99999999999}"#);
        let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert!(matches!(k.verify(&tampered), Err(JwtError::Invalid(_))));
        assert!(matches!(k.verify("garbage"), Err(JwtError::Invalid(_))));
        // Another issuer's token (same key) is refused.
        let foreign =
            JwtKeys::new("someone-else", k.active.clone(), Duration::from_secs(900)).unwrap();
        let (t, _) = foreign.issue(1, "s").unwrap();
        assert!(matches!(k.verify(&t), Err(JwtError::Invalid(_))));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_pruned() {
        let mut k = keys();
        let (before, _) = k.issue(7, "s").unwrap();
        let old_kid = k.active_kid().to_string();
        k.rotate(SigningKeyPair::generate().unwrap()).unwrap();
        assert_ne!(k.active_kid(), old_kid);
        let (after, _) = k.issue(7, "s").unwrap();
        assert!(
            k.verify(&before).is_ok(),
            "rotating must not log anyone out"
        );
        assert!(k.verify(&after).is_ok());
        assert_eq!(k.jwks()["keys"].as_array().unwrap().len(), 2);
        // A retired key past its validity verifies nothing, pruned or not.
        let mut expired_rotation = keys();
        let (old_token, _) = expired_rotation.issue(7, "s").unwrap();
        let old = expired_rotation.active_kid().to_string();
        expired_rotation
            .rotate(SigningKeyPair::generate().unwrap())
            .unwrap();
        let mut retired = expired_rotation
            .verification
            .iter()
            .find(|k| k.kid == old)
            .cloned()
            .unwrap();
        retired.valid_until = Some(unix_now() - 1);
        expired_rotation.add_verification_key(retired);
        assert_eq!(
            expired_rotation.verify(&old_token),
            Err(JwtError::UnknownKey)
        );
        assert_eq!(expired_rotation.jwks()["keys"].as_array().unwrap().len(), 1);
        // Once the old key's tokens can no longer be valid, it leaves the set.
        k.prune(unix_now() + 10_000);
        assert_eq!(k.verify(&before), Err(JwtError::UnknownKey));
        assert!(k.verify(&after).is_ok());
        assert_eq!(k.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn servers_verify_from_the_jwks_alone() {
        let k = keys();
        let (token, _) = k.issue(9, "s9").unwrap();
        let jwks = serde_json::to_string(&k.jwks()).unwrap();
        let verifier =
            JwtKeys::verifier_from_jwks("croft-test", &serde_json::from_str(&jwks).unwrap())
                .unwrap();
        assert_eq!(verifier.verify(&token).unwrap().user_id(), Some(9));
        let (forged, _) = keys().issue(9, "s9").unwrap();
        assert_eq!(verifier.verify(&forged), Err(JwtError::UnknownKey));
    }

    #[test]
    fn key_files_round_trip() {
        let k = SigningKeyPair::generate().unwrap();
        let again = SigningKeyPair::from_hex(&k.to_hex()).unwrap();
        assert_eq!(again.kid, k.kid);
        assert_eq!(again.public_key(), k.public_key());
        assert!(SigningKeyPair::from_hex("zz").is_err());
        assert!(
            SigningKeyPair::from_hex(&"00".repeat(32)).is_err(),
            "weak keys are refused"
        );
    }
}
