//! Password hashing with argon2id (OWASP parameters: m=19 MiB, t=2, p=1), on the
//! blocking pool and bounded, so hashing never stalls other calls.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use service_kit::ApiError;
use tokio::sync::Semaphore;

/// Hashes and checks passwords.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Checked when a login names an unknown email, so the answer takes as long as
    /// for a wrong password.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// `concurrency` hashes at once; 0 means one per CPU core.
    pub fn new(concurrency: usize) -> Result<Self, argon2::password_hash::Error> {
        let concurrency = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let dummy_hash = Argon2::default()
            .hash_password(b"agora dummy password")?
            .to_string();
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The PHC string of a fresh argon2id hash.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
        })
        .await?
        .map_err(ApiError::internal)
    }

    /// Whether `password` matches `phc`. Without a hash it checks a dummy one and
    /// answers false, taking the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        let dummy_hash = self.dummy_hash.clone();
        self.run(move || {
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), phc.as_deref().unwrap_or(&dummy_hash))
                .is_ok();
            matches && phc.is_some()
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(ApiError::internal)
    }
}
