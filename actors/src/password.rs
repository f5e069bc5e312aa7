//! Customer passwords: argon2id (19 MiB, t=2, p=1 — OWASP's minimum), hashed and verified on the
//! blocking pool, never on the async worker threads, and at most one per core at once.

use crate::secret::Secret;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;
/// Longest password accepted; longer input is refused before hashing (hashing cost is bounded).
pub const PASSWORD_MAX_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be 1 to {PASSWORD_MAX_BYTES} bytes")]
    BadLength,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the blocking pool is gone")]
    Pool,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), synchronously. Prefer [`hash`].
pub fn hash_blocking(password: &Secret<String>) -> Result<String, PasswordError> {
    let bytes = password.expose().as_bytes();
    if bytes.is_empty() || bytes.len() > PASSWORD_MAX_BYTES {
        return Err(PasswordError::BadLength);
    }
    let salt_bytes = crate::ids::os_random::<16>();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2()
        .hash_password(bytes, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `phc`, synchronously. A malformed stored hash never matches.
pub fn verify_blocking(password: &Secret<String>, phc: &str) -> bool {
    let bytes = password.expose().as_bytes();
    if bytes.is_empty() || bytes.len() > PASSWORD_MAX_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(bytes, &parsed).is_ok(),
        Err(_) => false,
    }
}

pub async fn hash(password: Secret<String>) -> Result<String, PasswordError> {
    bounded(move || hash_blocking(&password))
        .await
        .ok_or(PasswordError::Pool)?
}

pub async fn verify(password: Secret<String>, phc: String) -> bool {
    bounded(move || verify_blocking(&password, &phc))
        .await
        .unwrap_or(false)
}

/// Runs `work` (a hash or a verification) on the blocking pool, at most one per core at once.
/// Each holds 19 MiB: a flood of logins waits here rather than holding gigabytes on the blocking
/// pool's 512 threads, and the ones running do not evict each other from the caches.
/// `None` if the blocking pool is gone.
pub async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let slot = slots().clone().acquire_owned().await.ok()?;
    run_in(slot, work).await
}

/// The wait for a hashing slot outlasted its bound: the work was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every password hashing slot stayed busy")]
pub struct SlotsBusy;

/// As [`bounded`], waiting at most `wait` for a slot. A sign-in behind a flood of others is then
/// answered "busy" rather than hashed minutes later, for a page that stopped waiting.
pub async fn bounded_within<T: Send + 'static>(
    wait: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, SlotsBusy> {
    let slot = tokio::time::timeout(wait, slots().clone().acquire_owned())
        .await
        .map_err(|_| SlotsBusy)?;
    Ok(match slot {
        Ok(slot) => run_in(slot, work).await,
        Err(_closed) => None,
    })
}

/// One slot per core.
fn slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
    })
}

async fn run_in<T: Send + 'static>(
    slot: tokio::sync::OwnedSemaphorePermit,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
    .ok()
}

/// A hash of a password nobody knows, verified when the identity is unknown so that an unknown
/// identity costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random = hex::encode(crate::ids::os_random::<16>());
        hash_blocking(&Secret::new(random)).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_argon2id_parameters_and_verifies() {
        let pw = Secret::new("correct horse".to_string());
        let phc = hash_blocking(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking(&pw, &phc));
        assert!(!verify_blocking(&Secret::new("wrong".into()), &phc));
        assert!(!verify_blocking(&pw, "not a hash"));
        assert!(hash_blocking(&Secret::new(String::new())).is_err());
    }
}
