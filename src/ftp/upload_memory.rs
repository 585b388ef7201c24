//! The server-wide budget of memory that uploads to object storage hold in part buffers
//! (sized by `memory.rs` from the memory limit). Each such upload reserves its share before the
//! server reads its data and keeps it until the upload is completed or aborted; one that cannot
//! get it within [`WAIT`] is refused with a retryable reply instead of the server outgrowing
//! its limit. Uploads to local disk hold no part buffers and never wait here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an upload waits for buffers before it is refused: long enough for another upload's
/// last part to be sent, short enough that the client (waiting for a reply to `STOR`, or to an
/// SFTP open) hears an answer before its own timeout.
pub const WAIT: Duration = Duration::from_secs(15);

/// The refusal's text, FTP's (`452`) and SFTP's alike.
pub const AT_CAPACITY: &str =
    "Server is at its upload capacity for its memory; try the upload again later.";

/// The semaphore counts KiB: a part may be 5 GiB, more than a `u32` of bytes.
const UNIT: u64 = 1024;

/// Upload buffers in use, waiting, and the budget.
#[derive(Debug)]
pub struct UploadMemory {
    permits: Arc<Semaphore>,
    /// The budget, in units.
    total: u32,
    waiting: AtomicUsize,
    refused: Counter,
}

/// Buffers held by one upload; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

/// No buffers came within [`WAIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCapacity;

impl std::fmt::Display for AtCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(AT_CAPACITY)
    }
}

impl UploadMemory {
    /// A budget of `bytes`; each refusal counts on `refused`.
    pub fn new(bytes: u64, refused: Counter) -> Arc<UploadMemory> {
        let total = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX);
        Arc::new(UploadMemory {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            waiting: AtomicUsize::new(0),
            refused,
        })
    }

    /// Reserves `bytes` for one upload, waiting at most `wait` (in turn: the earliest waiter is
    /// served first); `None` when the upload holds no buffers. An upload larger than the whole
    /// budget takes all of it, so it runs alone.
    pub async fn reserve(
        &self,
        bytes: u64,
        wait: Duration,
    ) -> Result<Option<Reservation>, AtCapacity> {
        if bytes == 0 {
            return Ok(None);
        }
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total.max(1));
        let acquired = {
            // Counted while waiting, even when the session goes away meanwhile.
            let _waiting = Waiting::count(&self.waiting);
            tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_many_owned(units)).await
        };
        match acquired {
            Ok(Ok(permit)) => Ok(Some(Reservation { _permit: permit })),
            // The semaphore is never closed; a timeout is the refusal.
            Ok(Err(_)) | Err(_) => {
                self.refused.inc();
                Err(AtCapacity)
            }
        }
    }

    /// The budget in bytes.
    pub fn budget_bytes(&self) -> u64 {
        u64::from(self.total) * UNIT
    }

    /// Bytes reserved by uploads now.
    pub fn in_use_bytes(&self) -> u64 {
        let free = u64::try_from(self.permits.available_permits()).unwrap_or(u64::MAX);
        u64::from(self.total).saturating_sub(free) * UNIT
    }

    /// Uploads waiting for buffers now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One upload counted in [`UploadMemory::waiting`] for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Waiting<'a> {
        waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    /// A wait the tests let run out.
    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn uploads_share_the_budget_wait_in_turn_and_are_refused_after_the_wait() {
        let refused = Counter::default();
        let budget = UploadMemory::new(36 * MIB, refused.clone());
        assert_eq!(budget.budget_bytes(), 36 * MIB);
        // Local disk: nothing to reserve, never waits.
        assert!(budget.reserve(0, WAIT).await.unwrap().is_none());
        let first = budget.reserve(18 * MIB, WAIT).await.unwrap();
        let second = budget.reserve(18 * MIB, WAIT).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 36 * MIB);
        // A third waits, and is refused when the wait is over.
        assert_eq!(
            budget.reserve(18 * MIB, SHORT).await.unwrap_err(),
            AtCapacity
        );
        assert_eq!(refused.get(), 1);
        assert_eq!(budget.waiting(), 0);
        // One finishing lets the next in.
        drop(first);
        let third = budget.reserve(18 * MIB, WAIT).await.unwrap();
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(budget.in_use_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_upload_gets_the_buffers_an_ending_one_gives_back() {
        let budget = UploadMemory::new(18 * MIB, Counter::default());
        let held = budget.reserve(18 * MIB, WAIT).await.unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve(18 * MIB, WAIT).await.map(|r| r.is_some()) })
        };
        while budget.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(true));
        assert_eq!(budget.waiting(), 0);
        // A waiter whose session goes away is no longer counted.
        let held = budget.reserve(18 * MIB, WAIT).await.unwrap();
        let gone = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.reserve(18 * MIB, WAIT).await.is_ok() })
        };
        while budget.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        assert_eq!(budget.waiting(), 0);
        drop(held);
    }

    #[tokio::test]
    async fn an_upload_larger_than_the_budget_runs_alone() {
        let budget = UploadMemory::new(18 * MIB, Counter::default());
        let alone = budget.reserve(5 * 1024 * MIB, WAIT).await.unwrap();
        assert_eq!(budget.in_use_bytes(), 18 * MIB);
        assert!(budget.reserve(MIB, SHORT).await.is_err());
        drop(alone);
        assert!(budget.reserve(MIB, WAIT).await.unwrap().is_some());
    }
}
