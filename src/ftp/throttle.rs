//! Bandwidth limits: token buckets that pace a transfer's bytes, one per session and one per user
//! (shared by the user's sessions), each direction on its own.
//!
//! A bucket keeps the moment its rate has been spent up to; moving `n` bytes reserves the next
//! `n / rate` seconds after that moment (never before now, so idle time earns no burst), and the
//! transfer waits until its reservation ends. Sessions sharing a bucket take turns through it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One rate, in bytes per second.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    bytes_per_second: u64,
    /// Everything reserved so far has moved by then.
    spent_until: Instant,
}

impl Bucket {
    pub fn new(bytes_per_second: u64) -> Bucket {
        Bucket {
            state: Mutex::new(BucketState {
                bytes_per_second: bytes_per_second.max(1),
                spent_until: Instant::now(),
            }),
        }
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.state.lock().map_or(1, |state| state.bytes_per_second)
    }

    /// A changed users file takes effect for the user's next bytes.
    pub fn set_rate(&self, bytes_per_second: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.bytes_per_second = bytes_per_second.max(1);
        }
    }

    /// Reserves the time `bytes` take, starting no earlier than `earliest`: (start, end).
    fn reserve(&self, bytes: usize, earliest: Instant) -> (Instant, Instant) {
        let Ok(mut state) = self.state.lock() else {
            return (earliest, earliest);
        };
        let start = state.spent_until.max(earliest);
        let took = Duration::from_secs_f64(bytes as f64 / state.bytes_per_second as f64);
        state.spent_until = start + took;
        (start, state.spent_until)
    }
}

/// The buckets one direction of one session's transfers passes: its own, then its user's.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    buckets: Vec<Arc<Bucket>>,
}

/// How long a paced piece takes at most: short enough that a transfer's rate is even when looked
/// at over a second, long enough that waking up costs nothing.
const PIECE: Duration = Duration::from_millis(50);

/// The smallest piece, so a very low rate does not mean a system call per byte.
const SMALLEST_PIECE: usize = 4 * 1024;

impl Throttle {
    /// No limit.
    pub fn unlimited() -> Throttle {
        Throttle::default()
    }

    pub fn new(buckets: impl IntoIterator<Item = Arc<Bucket>>) -> Throttle {
        Throttle {
            buckets: buckets.into_iter().collect(),
        }
    }

    pub fn is_limited(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// The most to move before pacing again: `largest`, or about [`PIECE`] at the slowest rate.
    pub fn piece(&self, largest: usize) -> usize {
        let slowest = self
            .buckets
            .iter()
            .map(|bucket| bucket.bytes_per_second())
            .min();
        match slowest {
            None => largest,
            Some(rate) => {
                let piece = (rate as f64 * PIECE.as_secs_f64()) as usize;
                piece.clamp(SMALLEST_PIECE.min(largest), largest)
            }
        }
    }

    /// Reserves `bytes` just moved in every bucket; how long to wait before moving more.
    pub fn wait_after(&self, bytes: usize) -> Duration {
        if bytes == 0 || self.buckets.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut earliest = now;
        let mut end = now;
        for bucket in &self.buckets {
            let (start, finished) = bucket.reserve(bytes, earliest);
            earliest = start;
            end = end.max(finished);
        }
        end.saturating_duration_since(now)
    }

    /// Paces `bytes` just moved, on the async runtime.
    pub async fn pace(&self, bytes: usize) {
        let wait = self.wait_after(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Paces `bytes` just moved, on a blocking thread.
    pub fn pace_blocking(&self, bytes: usize) {
        let wait = self.wait_after(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits a throttle asks for add up to the bytes divided by the rate.
    fn total_wait(throttle: &Throttle, pieces: usize, piece: usize) -> Duration {
        let started = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..pieces {
            last = throttle.wait_after(piece);
        }
        // Nothing slept: the last wait is how far ahead the reservations reach.
        started.elapsed() + last
    }

    #[test]
    fn a_bucket_paces_bytes_at_its_rate() {
        let throttle = Throttle::new([Arc::new(Bucket::new(1 << 20))]);
        let piece = throttle.piece(256 * 1024);
        assert_eq!(piece, 52428);
        let took = total_wait(&throttle, 40, piece);
        let expected = Duration::from_secs_f64(40.0 * piece as f64 / f64::from(1 << 20));
        assert!(
            took >= expected && took < expected + Duration::from_millis(100),
            "{took:?} for {expected:?}"
        );
    }

    #[test]
    fn sessions_sharing_a_user_bucket_share_its_rate() {
        let user = Arc::new(Bucket::new(1 << 20));
        let sessions: Vec<Throttle> = (0..4)
            .map(|_| Throttle::new([Arc::new(Bucket::new(1 << 20)), Arc::clone(&user)]))
            .collect();
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            for session in &sessions {
                last = last.max(session.wait_after(1 << 16));
            }
        }
        // 40 pieces of 64 KiB through one 1 MiB/s bucket: 2.5 s, whoever sent them.
        assert!(
            last >= Duration::from_millis(2400) && last < Duration::from_millis(2600),
            "{last:?}"
        );
    }

    #[test]
    fn the_slower_of_session_and_user_rate_governs() {
        let throttle = Throttle::new([
            Arc::new(Bucket::new(1 << 19)),
            Arc::new(Bucket::new(1 << 20)),
        ]);
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            last = throttle.wait_after(1 << 16);
        }
        assert!(
            last >= Duration::from_millis(950) && last < Duration::from_millis(1050),
            "{last:?}"
        );
        assert_eq!(Throttle::unlimited().wait_after(1 << 30), Duration::ZERO);
        assert_eq!(Throttle::unlimited().piece(1000), 1000);
    }
}
