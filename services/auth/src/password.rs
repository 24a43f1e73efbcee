//! Passwords: argon2id hashing and verification, off the async threads and bounded.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// Shorter passwords are refused when accounts are created.
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("too many password checks in progress")]
    Busy,
    #[error("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")]
    Length,
    #[error("stored password hash is not a valid PHC string: {0}")]
    BadHash(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords with argon2id, a bounded number at once.
///
/// Hashing costs ~20 MiB and tens of milliseconds by design, so concurrent hashes are capped;
/// when the cap is reached callers get [`PasswordError::Busy`] at once (an HTTP 503 with
/// `Retry-After`) rather than a queue whose latency grows without limit. An unknown user is
/// verified against a dummy hash so that it costs the same time as a known one.
#[derive(Clone)]
pub struct Passwords {
    hasher: Argon2<'static>,
    /// A real hash of a random password, verified for unknown users.
    dummy: Arc<str>,
    /// Hashes running at once.
    permits: Arc<Semaphore>,
    /// Requests allowed to wait for a permit; beyond them callers get `Busy` at once, so the
    /// wait (and the p99) is bounded by `queue / permits` hash times.
    queue: Arc<Semaphore>,
}

impl Passwords {
    /// `max_concurrent` hashes at once (each holds ~19 MiB while it runs).
    pub fn new(max_concurrent: usize) -> Result<Self, PasswordError> {
        Self::with_params(max_concurrent, M_COST_KIB, T_COST, P_COST)
    }

    /// Other costs, for tests only: production uses [`Passwords::new`].
    pub fn with_params(
        max_concurrent: usize,
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
    ) -> Result<Self, PasswordError> {
        let params = Params::new(m_cost, t_cost, p_cost, None)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = hasher
            .hash_password(b"croft-dummy-password-for-unknown-users")
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        Ok(Self {
            hasher,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            queue: Arc::new(Semaphore::new(2 * max_concurrent.max(1))),
        })
    }

    /// A PHC string for `password` with a fresh random salt (blocking: call off async threads).
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.chars().count()) {
            return Err(PasswordError::Length);
        }
        self.hasher
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// Whether `password` matches `stored`; `None` (unknown user) costs the same and is false.
    pub fn verify_blocking(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let (hash, known) = match stored {
            Some(h) => (h, true),
            None => (&*self.dummy, false),
        };
        // Too long to have been set: spend the same time on the dummy and say no.
        let (hash, known) = if password.chars().count() > MAX_PASSWORD_LEN {
            (&*self.dummy, false)
        } else {
            (hash, known)
        };
        match self.hasher.verify_password(password.as_bytes(), hash) {
            Ok(()) => Ok(known),
            Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
            Err(e) => Err(PasswordError::BadHash(e.to_string())),
        }
    }

    /// Checks that a PHC string from elsewhere (an import) is an argon2 hash this service can verify.
    pub fn check_phc(phc: &str) -> Result<(), PasswordError> {
        let parsed =
            argon2::PasswordHash::new(phc).map_err(|e| PasswordError::BadHash(e.to_string()))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(PasswordError::BadHash(format!(
                "algorithm {} is not argon2",
                parsed.algorithm
            )));
        }
        Ok(())
    }

    /// Waits for a hashing permit if the queue has room; `Busy` at once if it has none.
    async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PasswordError> {
        let _waiting = self
            .queue
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Busy)
    }

    /// [`Self::hash_blocking`] on the blocking pool, refused with `Busy` when the bound is full.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let permit = self.admit().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.hash_blocking(&password)
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    /// [`Self::verify_blocking`] on the blocking pool, refused with `Busy` when the bound is full.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let permit = self.admit().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.verify_blocking(&password, stored.as_deref())
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        // Minimal cost so unit tests stay fast; the OWASP parameters are checked separately.
        Passwords::with_params(2, 8, 1, 1).unwrap()
    }

    #[test]
    fn hash_and_verify() {
        let p = cheap();
        let h = p.hash_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(p.verify_blocking("correct horse", Some(&h)).unwrap());
        assert!(!p.verify_blocking("wrong horse", Some(&h)).unwrap());
        assert!(
            !p.verify_blocking("correct horse", None).unwrap(),
            "unknown users never verify"
        );
        assert_ne!(h, p.hash_blocking("correct horse").unwrap(), "salts differ");
        assert_eq!(p.hash_blocking("short"), Err(PasswordError::Length));
        assert!(matches!(
            p.verify_blocking("x", Some("not-a-phc")),
            Err(PasswordError::BadHash(_))
        ));
    }

    #[test]
    fn production_parameters_are_owasp() {
        let p = Passwords::new(1).unwrap();
        let h = p.hash_blocking("correct horse battery").unwrap();
        assert!(h.contains("m=19456,t=2,p=1"), "{h}");
        assert!(Passwords::check_phc(&h).is_ok());
        assert!(Passwords::check_phc("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }

    #[tokio::test]
    async fn a_full_admission_bound_answers_busy() {
        let p = Passwords::new(1).unwrap();
        // The one permit and both queue places are taken: the next caller is refused at once.
        let held = p.permits.clone().try_acquire_owned().unwrap();
        let queued = p.queue.clone().try_acquire_many_owned(2).unwrap();
        assert_eq!(
            p.hash("correct horse".into()).await,
            Err(PasswordError::Busy)
        );
        drop((held, queued));
        assert!(p.hash("correct horse".into()).await.is_ok());
    }
}
