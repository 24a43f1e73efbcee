//! Passwords: argon2id hashing and verification, off the async threads and bounded.
//!
//! Verification (every login) runs on a few threads of its own, one per hashing permit, each
//! reusing one argon2 block buffer: argon2's own `verify_password` allocates and zeroes its
//! 19 MiB of blocks on every call, which is about a tenth of a verification's time and lets the
//! kernel hand out fresh pages each time.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::phc::Output;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use tokio::sync::{Semaphore, oneshot};

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

/// The largest memory cost a stored hash may ask for (1 GiB): an imported hash with more is
/// refused rather than allocated.
const MAX_M_COST_KIB: u32 = 1 << 20;

thread_local! {
    /// This thread's argon2 blocks, kept between verifications (grown to the largest cost seen,
    /// up to the production cost; larger imported hashes use a buffer of their own).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

type Job = Box<dyn FnOnce() + Send>;

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
    /// The hashing threads' work queue (one thread per permit; they end with the last clone).
    jobs: mpsc::Sender<Job>,
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
        let threads = max_concurrent.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("croft-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A job answers through its own channel; a panic drops that channel
                        // (the caller gets an error) and the thread goes on.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
                .map_err(|e| PasswordError::Hash(format!("hashing thread: {e}")))?;
        }
        Ok(Self {
            hasher,
            dummy: dummy.into(),
            permits: Arc::new(Semaphore::new(threads)),
            queue: Arc::new(Semaphore::new(2 * threads)),
            jobs: tx,
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
        Ok(verify_reusing(password.as_bytes(), hash)? && known)
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

    /// Runs `work` on a hashing thread once admitted; `Busy` at once when the bound is full.
    async fn on_hashing_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self.admit().await?;
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = tx.send(work(&this));
        });
        self.jobs
            .send(job)
            .map_err(|_| PasswordError::Hash("hashing threads are gone".into()))?;
        rx.await
            .map_err(|_| PasswordError::Hash("a hashing job failed".into()))?
    }

    /// [`Self::hash_blocking`] on a hashing thread, refused with `Busy` when the bound is full.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.on_hashing_thread(move |p| p.hash_blocking(&password))
            .await
    }

    /// [`Self::verify_blocking`] on a hashing thread, refused with `Busy` when the bound is full.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.on_hashing_thread(move |p| p.verify_blocking(&password, stored.as_deref()))
            .await
    }
}

/// Whether `password` matches the PHC string `phc`, computed in this thread's reused blocks
/// (the same computation and constant-time comparison as argon2's `verify_password`).
fn verify_reusing(password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    let bad = |e: &dyn std::fmt::Display| PasswordError::BadHash(e.to_string());
    let hash = argon2::PasswordHash::new(phc).map_err(|e| bad(&e))?;
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err(PasswordError::BadHash("no salt or no hash".into()));
    };
    let algorithm = Algorithm::try_from(hash.algorithm.as_str()).map_err(|e| bad(&e))?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|e| bad(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&hash).map_err(|e| bad(&e))?;
    if params.m_cost() > MAX_M_COST_KIB {
        return Err(PasswordError::BadHash(format!(
            "memory cost {} KiB is over the limit of {MAX_M_COST_KIB} KiB",
            params.m_cost()
        )));
    }
    let blocks = params.block_count();
    let context = Argon2::new(algorithm, version, params);
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or_else(|| PasswordError::BadHash("hash too long".into()))?;
    let computed = if blocks <= M_COST_KIB as usize {
        BLOCKS.with_borrow_mut(|memory| {
            if memory.len() < blocks {
                memory.resize(blocks, Block::new());
            }
            context.hash_password_into_with_memory(password, salt, &mut *out, &mut memory[..blocks])
        })
    } else {
        context.hash_password_into(password, salt, &mut *out)
    };
    computed.map_err(|e| PasswordError::Hash(e.to_string()))?;
    let computed = Output::new(out).map_err(|e| bad(&e))?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
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

    #[test]
    fn reused_blocks_verify_exactly_as_argon2_does() {
        use argon2::PasswordVerifier;
        // Other algorithms, versions, lanes and costs than production's, in one thread, so the
        // reused buffer is larger than some hashes need and smaller than others.
        let cases = [
            (Algorithm::Argon2id, Version::V0x13, 64, 1, 1),
            (Algorithm::Argon2id, Version::V0x13, 256, 3, 2),
            (Algorithm::Argon2i, Version::V0x13, 32, 2, 1),
            (Algorithm::Argon2d, Version::V0x10, 128, 1, 4),
            (Algorithm::Argon2id, Version::V0x13, 8, 1, 1),
        ];
        for (algorithm, version, m, t, p) in cases {
            let hasher = Argon2::new(algorithm, version, Params::new(m, t, p, None).unwrap());
            let phc = hasher.hash_password(b"correct horse").unwrap().to_string();
            for (password, expected) in [("correct horse", true), ("correct horsf", false)] {
                let library = hasher
                    .verify_password(password.as_bytes(), phc.as_str())
                    .is_ok();
                assert_eq!(library, expected, "{phc}");
                assert_eq!(
                    verify_reusing(password.as_bytes(), &phc),
                    Ok(expected),
                    "{phc}"
                );
            }
            // The same password against a hash with one output byte changed.
            let parsed = argon2::PasswordHash::new(&phc).unwrap();
            let mut out = parsed.hash.unwrap().as_bytes().to_vec();
            out[0] ^= 1;
            let mut forged = parsed.clone();
            forged.hash = Some(Output::new(&out).unwrap());
            assert_eq!(
                verify_reusing(b"correct horse", &forged.to_string()),
                Ok(false)
            );
        }
        // A hash asking for more memory than any account would use is refused, not allocated.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();
        let huge = small.replace("m=64,", "m=4194304,");
        assert_ne!(huge, small);
        assert!(matches!(
            verify_reusing(b"correct horse", &huge),
            Err(PasswordError::BadHash(e)) if e.contains("over the limit")
        ));
        assert!(matches!(
            verify_reusing(b"x", "$argon2id$v=19$m=64,t=1,p=1"),
            Err(PasswordError::BadHash(_))
        ));
    }

    #[tokio::test]
    async fn hashing_threads_answer_many_callers() {
        let p = Passwords::with_params(2, 64, 1, 1).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        let mut calls = Vec::new();
        for i in 0..4 {
            let (p, h) = (p.clone(), h.clone());
            calls.push(tokio::spawn(async move {
                let password = if i % 2 == 0 {
                    "correct horse"
                } else {
                    "wrong horse"
                };
                p.verify(password.into(), Some(h)).await
            }));
        }
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        assert_eq!(answers, [Ok(true), Ok(false), Ok(true), Ok(false)]);
        assert_eq!(p.verify("correct horse".into(), None).await, Ok(false));
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
