//! Password verification in memory allocated once. Each argon2 verification needs its hash's
//! `m` KiB of working memory (19 MiB for `ftp-server hash-password`'s defaults). Allocated per
//! verification on whichever blocking thread runs it, that memory stays with the thread's malloc
//! arena after it is freed, so a server's RSS grew by ~19 MiB for every thread that ever checked a
//! password. Here a fixed number of slots each own their memory for the life of the process; a
//! verification borrows one, and those beyond the slots wait for one (until the login's deadline)
//! in a bounded queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Logins that may wait for a slot, per slot; past that a login is answered "busy" at once.
/// Each session has at most one login pending, so this only matters for bursts of thousands.
const QUEUED_PER_SLOT: usize = 256;

/// Why a verification did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("too many logins are waiting for verification")]
    QueueFull,
    #[error("no verification slot came free before the login timeout")]
    TimedOut,
}

pub struct Verifier {
    permits: Arc<Semaphore>,
    /// The slots not in use; each holds the memory of its verifications.
    idle: Mutex<Vec<Vec<Block>>>,
    slots: usize,
    queued: AtomicUsize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("slots", &self.slots)
            .field("queued", &self.queued())
            .finish()
    }
}

impl Verifier {
    /// A verifier running at most `slots` verifications at once (at least one).
    pub fn new(slots: usize) -> Arc<Verifier> {
        let slots = slots.max(1);
        Arc::new(Verifier {
            permits: Arc::new(Semaphore::new(slots)),
            idle: Mutex::new((0..slots).map(|_| Vec::new()).collect()),
            slots,
            queued: AtomicUsize::new(0),
        })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Logins waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Bytes the slots hold now (each grows once, to the largest `m` it has verified).
    pub fn memory_bytes(&self) -> usize {
        let idle = self.idle.lock().map_or(0, |idle| {
            idle.iter().map(|slot| slot.capacity()).sum::<usize>()
        });
        idle * Block::SIZE
    }

    /// Whether `password` matches the argon2id PHC string `hash`, computed on a blocking thread in
    /// a slot's memory. Waits for a slot until `deadline`.
    pub async fn verify(
        self: &Arc<Self>,
        hash: String,
        password: String,
        deadline: tokio::time::Instant,
    ) -> Result<bool, Busy> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::SeqCst) >= self.slots * QUEUED_PER_SLOT {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(Busy::QueueFull);
                }
                let waited =
                    tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
                        .await;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                match waited {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Busy::TimedOut),
                }
            }
        };
        let verifier = Arc::clone(self);
        // The permit and the slot go with the blocking task: a client that disconnects meanwhile
        // drops this future, not the slot.
        let matched = tokio::task::spawn_blocking(move || {
            let mut slot = verifier
                .idle
                .lock()
                .ok()
                .and_then(|mut idle| idle.pop())
                .unwrap_or_default();
            let matched = verify_in(&hash, password.as_bytes(), &mut slot);
            if let Ok(mut idle) = verifier.idle.lock() {
                idle.push(slot);
            }
            drop(permit);
            matched
        })
        .await;
        Ok(matched.unwrap_or(false))
    }
}

/// Verifies `password` against `hash` using (and growing, once, to the hash's cost) `memory`.
fn verify_in(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    let (Ok(params), Some(expected), Some(salt)) =
        (Params::try_from(&parsed), parsed.hash, parsed.salt)
    else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        // Exactly what this cost needs, so a slot never holds more than the strongest hash.
        memory.reserve_exact(blocks - memory.len());
        memory.resize(blocks, Block::default());
    }
    let mut computed = [0u8; Output::MAX_LENGTH];
    let computed = &mut computed[..expected.len()];
    Argon2::new(Algorithm::Argon2id, version, params)
        .hash_password_into_with_memory(password, salt, &mut *computed, &mut memory[..blocks])
        .is_ok()
        && Output::new(computed).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later(millis: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(millis)
    }

    #[tokio::test]
    async fn verifies_in_memory_it_keeps() {
        let hash = super::super::hash_password("s3cret").unwrap();
        let verifier = Verifier::new(2);
        let right = verifier
            .verify(hash.clone(), "s3cret".into(), later(10_000))
            .await;
        let wrong = verifier
            .verify(hash.clone(), "wrong".into(), later(10_000))
            .await;
        assert_eq!((right, wrong), (Ok(true), Ok(false)));
        // One slot did both (the second found the first's memory idle): 19 MiB kept, not 38.
        let m = Params::default().block_count() * Block::SIZE;
        assert_eq!(verifier.memory_bytes(), m);
        for _ in 0..4 {
            let (a, b) = tokio::join!(
                verifier.verify(hash.clone(), "s3cret".into(), later(10_000)),
                verifier.verify(hash.clone(), "s3cret".into(), later(10_000)),
            );
            assert_eq!((a, b), (Ok(true), Ok(true)));
        }
        assert_eq!(
            verifier.memory_bytes(),
            2 * m,
            "memory beyond the two slots"
        );
    }

    #[tokio::test]
    async fn logins_beyond_the_slots_wait_until_their_deadline() {
        let hash = super::super::hash_password("s3cret").unwrap();
        let verifier = Verifier::new(1);
        let permit = Arc::clone(&verifier.permits).acquire_owned().await.unwrap();
        let waited = verifier
            .verify(hash.clone(), "s3cret".into(), later(50))
            .await;
        assert_eq!(waited, Err(Busy::TimedOut));
        let queued = tokio::spawn({
            let verifier = Arc::clone(&verifier);
            let hash = hash.clone();
            async move { verifier.verify(hash, "s3cret".into(), later(10_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(verifier.queued(), 1);
        drop(permit);
        assert_eq!(queued.await.unwrap(), Ok(true));
    }

    #[test]
    fn refuses_what_is_not_argon2id() {
        let mut memory = Vec::new();
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ";
        assert!(!verify_in(argon2i, b"password", &mut memory));
        assert!(!verify_in("plain", b"plain", &mut memory));
        assert!(memory.is_empty());
    }
}
