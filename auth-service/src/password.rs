//! Password hashing with argon2id (OWASP parameters: m=19 MiB, t=2, p=1), on
//! threads of its own at a lower priority, with admission control and a flat
//! memory footprint.
//!
//! At most `concurrency` hashes run and at most `queue` more wait; a call beyond
//! that, or one whose deadline would pass before its hash is done, is refused at
//! once (RESOURCE_EXHAUSTED, `PASSWORD_HASHING_BUSY`, with a time to retry).
//! Each running hash borrows one of at most `concurrency` working buffers of
//! 19 MiB, kept for reuse: allocating them afresh for every hash left hundreds of
//! megabytes in the allocator's per-thread arenas after a burst of logins.
//!
//! Passwords are hashed in Unicode normalisation form NFKC ([`normalize`]), so
//! that one password typed on different keyboards or input methods is one
//! password. Each stored hash says which form it was made from
//! ([`Normalization`]): hashes made before normalisation keep verifying.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agora_proto::errors::ErrorReason;
use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        self,
        phc::{Output, ParamsString, PasswordHash, Salt},
    },
};
use service_kit::{ApiError, deadline::Deadline};

use crate::hashing_threads::HashingThreads;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unicode_normalization::{UnicodeNormalization as _, is_nfkc};

/// The blocks of one working buffer: what a hash with our parameters needs.
const BUFFER_BLOCKS: usize = Params::DEFAULT.block_count();
/// The least a refusal asks a client to wait, so retries do not return at once.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);
/// The weight of each new measurement in the recent hash duration.
const SMOOTHING: f64 = 0.2;

/// The form a password is hashed in: NFKC, as NIST SP 800-63B (5.1.1.2) advises
/// (NFKC or NFKD). NFKC rather than NFC because it also makes compatibility
/// variants one character: full-width letters from East Asian input methods,
/// ligatures and the like that one keyboard or autofill produces and another does
/// not. What it costs, a few look-alikes counted as one, is tiny beside a
/// password's length, and NIST accepts it. NFKC rather than NFKD because composed
/// text is what most input is already in, so most passwords need no change.
pub fn normalize(password: &str) -> Cow<'_, str> {
    if is_nfkc(password) {
        Cow::Borrowed(password)
    } else {
        Cow::Owned(password.nfkc().collect())
    }
}

/// The form of the password a stored hash was made from, kept beside the hash
/// (`auth.users.password_normalization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// As typed: every hash stored before passwords were normalised.
    None,
    /// [`normalize`]d: every hash made now.
    Nfkc,
}

impl Normalization {
    /// The form new hashes are made from.
    pub const CURRENT: Self = Self::Nfkc;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Nfkc => "nfkc",
        }
    }

    /// The stored name; the database allows only these two.
    pub fn from_stored(name: &str) -> Self {
        match name {
            "nfkc" => Self::Nfkc,
            _ => Self::None,
        }
    }
}

/// Hashes and checks passwords.
#[derive(Clone)]
pub struct Passwords(Arc<Hasher>);

struct Hasher {
    concurrency: usize,
    threads: HashingThreads,
    /// Hashes running or waiting: `concurrency` plus the queue.
    capacity: usize,
    places: Arc<Semaphore>,
    running: Arc<Semaphore>,
    /// Working buffers not in use; never more than `concurrency` exist.
    buffers: Mutex<Vec<Vec<Block>>>,
    /// How long a hash has taken lately (an exponentially weighted average).
    recent: Mutex<Duration>,
    /// Checked when a login names an unknown email, so the answer takes as long as
    /// for a wrong password.
    dummy_hash: String,
}

/// A place among the hashes running or waiting, taken before any other work, so
/// a refused call costs nothing. Dropping it (a caller that gave up) frees it.
pub struct Admission {
    hasher: Arc<Hasher>,
    place: OwnedSemaphorePermit,
}

impl Passwords {
    /// `concurrency` hashes at once (0 means one per CPU core) and at most `queue`
    /// waiting.
    pub fn new(
        concurrency: usize,
        queue: usize,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut hasher = Hasher {
            concurrency,
            threads: HashingThreads::start(concurrency)?,
            capacity: concurrency + queue,
            places: Arc::new(Semaphore::new(concurrency + queue)),
            running: Arc::new(Semaphore::new(concurrency)),
            buffers: Mutex::new(Vec::with_capacity(concurrency)),
            recent: Mutex::new(Duration::ZERO),
            dummy_hash: String::new(),
        };
        // Timing the dummy hash seeds the estimate of how long a hash takes.
        let started = Instant::now();
        hasher.dummy_hash = hasher.hash(b"agora dummy password")?;
        *hasher.recent.get_mut().expect("not shared yet") = started.elapsed();
        Ok(Self(Arc::new(hasher)))
    }

    /// A place for one hash, or RESOURCE_EXHAUSTED at once if the queue is full
    /// or the hash could not be done before `deadline`.
    pub fn admit(&self, deadline: Deadline) -> Result<Admission, ApiError> {
        let hasher = &self.0;
        let recent = *hasher.recent.lock().expect("hash duration lock poisoned");
        // Counted without a lock: an estimate is all that is needed.
        let admitted = hasher.capacity - hasher.places.available_permits();
        let hashing = hasher.concurrency - hasher.running.available_permits();
        let ahead = admitted.saturating_sub(hashing);
        let turn_in = recent.mul_f64(ahead as f64 / hasher.concurrency as f64);
        let busy = |message: &str| ApiError::Throttled {
            reason: ErrorReason::PasswordHashingBusy,
            message: format!("{message}; try again later"),
            retry_after: turn_in.max(MIN_RETRY_AFTER),
        };
        if deadline
            .remaining()
            .is_some_and(|left| left < turn_in + recent)
        {
            return Err(busy(
                "the server is too busy hashing passwords to answer before the deadline",
            ));
        }
        let place = hasher.places.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("password_hashes_refused_total").increment(1);
            busy("the server is busy hashing passwords")
        })?;
        // Hashes running or waiting, this one among them.
        metrics::gauge!("password_hashes_admitted").set((admitted + 1) as f64);
        Ok(Admission {
            hasher: hasher.clone(),
            place,
        })
    }
}

impl Admission {
    /// Waits for this call's turn to hash. Cancel-safe: a caller that gives up
    /// while waiting frees its place.
    pub async fn turn(self) -> Result<Turn, ApiError> {
        let waiting = std::time::Instant::now();
        let running = self
            .hasher
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        metrics::histogram!("password_hash_wait_seconds").record(waiting.elapsed().as_secs_f64());
        Ok(Turn {
            hasher: self.hasher,
            permits: (self.place, running),
        })
    }

    /// The PHC string of a fresh argon2id hash, in its turn.
    pub async fn hash(self, password: String) -> Result<String, ApiError> {
        self.turn().await?.hash(password).await
    }

    /// [`Turn::verify`], in its turn.
    pub async fn verify(self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        self.turn().await?.verify(password, phc).await
    }
}

/// A call's turn to hash: what it needs for its hash (a stored one, say) is best
/// fetched now, so that a burst of logins reads the database one hash at a time
/// rather than all at once.
pub struct Turn {
    hasher: Arc<Hasher>,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Turn {
    /// The PHC string of a fresh argon2id hash.
    pub async fn hash(self, password: String) -> Result<String, ApiError> {
        self.run(move |hasher| hasher.hash(password.as_bytes()))
            .await?
            .map_err(ApiError::internal)
    }

    /// Whether `password` matches `phc`. Without a hash it checks a dummy one and
    /// answers false, taking the same time.
    pub async fn verify(self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        self.run(move |hasher| {
            let stored = phc.as_deref().unwrap_or(&hasher.dummy_hash);
            // An unreadable stored hash matches nothing, as before.
            let matches = matches!(hasher.verify(password.as_bytes(), stored), Ok(true));
            matches && phc.is_some()
        })
        .await
    }

    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let Self { hasher, permits } = self;
        let span = tracing::Span::current();
        // The permits go with the work: a hash whose caller has gone still runs to
        // the end, holding its buffer, so it must still count.
        let threads = hasher.clone();
        threads
            .threads
            .run(move || {
                let _permits = permits;
                let started = Instant::now();
                let result = span.in_scope(|| work(&hasher));
                let took = started.elapsed();
                hasher.record(took);
                metrics::histogram!("password_hash_seconds").record(took.as_secs_f64());
                // Running or waiting, this one no longer among them.
                let admitted = hasher.capacity - hasher.places.available_permits();
                metrics::gauge!("password_hashes_admitted").set(admitted.saturating_sub(1) as f64);
                result
            })
            .await
            .ok_or_else(|| ApiError::internal("a password hash failed"))
    }
}

impl Hasher {
    /// A fresh argon2id hash with our parameters and a random salt, as a PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
    fn hash(&self, password: &[u8]) -> Result<String, password_hash::Error> {
        let (algorithm, version, params) = (Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
        let salt = password_hash::try_generate_salt()?;
        let mut output = [0; Params::DEFAULT_OUTPUT_LEN];
        self.hash_into(algorithm, version, &params, password, &salt, &mut output)?;
        let phc = PasswordHash {
            algorithm: algorithm.ident(),
            version: Some(version.into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(Salt::new(&salt)?),
            hash: Some(Output::new(&output)?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` hashes to `phc` with the algorithm, version, parameters
    /// and salt `phc` names, so hashes made with other parameters keep verifying.
    fn verify(&self, password: &[u8], phc: &str) -> Result<bool, password_hash::Error> {
        let phc = PasswordHash::new(phc)?;
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(phc.algorithm.as_str())?;
        let version = phc
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&phc)?;
        let mut output = vec![0; expected.len()];
        self.hash_into(algorithm, version, &params, password, salt, &mut output)?;
        // `Output` compares in constant time.
        Ok(Output::new(&output)? == *expected)
    }

    /// argon2 into `out`, in a pooled working buffer when the parameters fit one.
    fn hash_into(
        &self,
        algorithm: Algorithm,
        version: Version,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let argon2 = Argon2::new(algorithm, version, params.clone());
        if params.block_count() > BUFFER_BLOCKS {
            // Only a hash stored with more memory than ours; allocated for this call.
            return argon2.hash_password_into(password, salt, out);
        }
        // A running hash holds a `running` permit, so at most `concurrency`
        // buffers are ever made.
        let mut buffer = self
            .buffers
            .lock()
            .expect("buffer pool lock poisoned")
            .pop()
            .unwrap_or_else(|| vec![Block::new(); BUFFER_BLOCKS]);
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut buffer);
        self.buffers
            .lock()
            .expect("buffer pool lock poisoned")
            .push(buffer);
        result
    }

    fn record(&self, took: Duration) {
        let mut recent = self.recent.lock().expect("hash duration lock poisoned");
        *recent = recent.mul_f64(1.0 - SMOOTHING) + took.mul_f64(SMOOTHING);
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher as _;

    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(1, 0).expect("hashing is set up")
    }

    #[tokio::test]
    async fn a_hash_is_a_standard_argon2id_phc_string_that_verifies() {
        let passwords = passwords();

        let hash = passwords
            .admit(Deadline::none())
            .unwrap()
            .hash("correct horse".to_owned())
            .await
            .unwrap();

        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let verify = |password: &str| {
            passwords
                .admit(Deadline::none())
                .unwrap()
                .verify(password.to_owned(), Some(hash.clone()))
        };
        assert!(verify("correct horse").await.unwrap());
        assert!(!verify("wrong horse").await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_itself_still_verify() {
        let passwords = passwords();
        let old = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let weaker = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();

        for stored in [old, weaker] {
            let verify = |password: &str| {
                passwords
                    .admit(Deadline::none())
                    .unwrap()
                    .verify(password.to_owned(), Some(stored.clone()))
            };
            assert!(verify("correct horse").await.unwrap(), "{stored}");
            assert!(!verify("wrong horse").await.unwrap(), "{stored}");
        }
    }

    #[test]
    fn passwords_are_normalized_to_nfkc() {
        for (typed, normalized) in [
            ("correct horse", "correct horse"),
            ("cre\u{300}me", "cr\u{e8}me"),
            ("\u{ff33}\u{ff25}\u{ff23} \u{2460}", "SEC 1"),
            ("\u{fb03}", "ffi"),
        ] {
            assert_eq!(normalize(typed), normalized, "{typed:?}");
        }
        assert!(
            matches!(normalize("cr\u{e8}me"), Cow::Borrowed(_)),
            "text already in NFKC is not copied"
        );
    }

    #[tokio::test]
    async fn no_stored_hash_and_garbage_never_match() {
        let passwords = passwords();
        for stored in [None, Some("not a hash".to_owned())] {
            let matches = passwords
                .admit(Deadline::none())
                .unwrap()
                .verify("agora dummy password".to_owned(), stored)
                .await
                .unwrap();
            assert!(!matches);
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_freed_place_admits_again() {
        let passwords = passwords();
        let held = passwords.admit(Deadline::none()).expect("one place");

        let Err(ApiError::Throttled {
            reason,
            retry_after,
            ..
        }) = passwords.admit(Deadline::none())
        else {
            panic!("a second call is refused while the only place is taken");
        };
        assert_eq!(reason, ErrorReason::PasswordHashingBusy);
        assert!(retry_after >= MIN_RETRY_AFTER);

        drop(held);
        passwords
            .admit(Deadline::none())
            .expect("a caller that gives up frees its place");
    }

    #[test]
    fn a_deadline_shorter_than_a_hash_is_refused_without_hashing() {
        let passwords = passwords();

        let refused = passwords.admit(Deadline::from_grpc_timeout(Some("1m"), None));

        assert!(
            matches!(
                refused,
                Err(ApiError::Throttled {
                    reason: ErrorReason::PasswordHashingBusy,
                    ..
                })
            ),
            "1 ms is far less than one hash"
        );
        passwords
            .admit(Deadline::from_grpc_timeout(Some("10S"), None))
            .expect("10 s is plenty when nothing waits");
    }
}
