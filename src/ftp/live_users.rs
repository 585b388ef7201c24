//! What the sessions of one user on this server process share: how many are open (for
//! `max_sessions`), the user's bandwidth buckets, and the bytes and files of its uploads in flight
//! or committed since another upload began (for the quota). A [`UserSession`] is one logged-in
//! session's share, given back when it drops.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::policy::UserPolicy;
use super::throttle::{Bucket, Throttle};

/// Every user with a session open now or since start, by name (bounded by the users file: only
/// users who logged in are here).
#[derive(Debug, Default)]
pub struct LiveUsers {
    users: Mutex<HashMap<String, Arc<LiveUser>>>,
    /// Users with series of their own in the metrics (see [`UserPolicy::metered`]).
    metered: Mutex<BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct LiveUser {
    sessions: Mutex<u32>,
    upload: Mutex<Option<Arc<Bucket>>>,
    download: Mutex<Option<Arc<Bucket>>>,
    ledger: Mutex<QuotaLedger>,
}

/// The user's storage changes this process knows of that a walk of the home may not show yet.
#[derive(Debug, Default, Clone, Copy)]
struct QuotaLedger {
    /// Bytes written by uploads not yet committed (invisible in the home until then).
    in_flight_bytes: u64,
    /// New files being uploaded.
    in_flight_files: u64,
    /// Sums of what each committed upload changed, since the server started.
    committed_bytes: i64,
    committed_files: i64,
    /// The last walk of the home, reused by later uploads while it is recent.
    walk: Option<Walk>,
}

/// What a walk of the user's home found, and the ledger when it began.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    pub at: Instant,
    pub mark: LedgerMark,
    pub bytes: u64,
    pub files: u64,
}

/// A further session of the user would pass its `max_sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the user already has its {max_sessions} sessions open")]
pub struct TooManySessions {
    pub max_sessions: u32,
}

impl LiveUsers {
    /// Takes a session of `name` under `policy`'s `max_sessions`; the user's buckets take the
    /// policy's rates (a reloaded users file's rates apply from its next login on).
    pub fn open_session(
        &self,
        name: &str,
        policy: &UserPolicy,
    ) -> Result<UserSession, TooManySessions> {
        let user = {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(users.entry(name.to_owned()).or_default())
        };
        {
            let mut sessions = user.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(max_sessions) = policy.max_sessions
                && *sessions >= max_sessions
            {
                return Err(TooManySessions { max_sessions });
            }
            *sessions += 1;
        }
        let bandwidth = policy.bandwidth;
        let user_upload = shared_bucket(&user.upload, bandwidth.upload_bytes_per_second);
        let user_download = shared_bucket(&user.download, bandwidth.download_bytes_per_second);
        let own = |rate: Option<u64>| rate.map(|rate| Arc::new(Bucket::new(rate)));
        let throttle = |own: Option<Arc<Bucket>>, shared: Option<Arc<Bucket>>| {
            Throttle::new(own.into_iter().chain(shared))
        };
        Ok(UserSession {
            name: name.to_owned(),
            metered: policy.metered,
            upload: throttle(own(bandwidth.session_upload_bytes_per_second), user_upload),
            download: throttle(
                own(bandwidth.session_download_bytes_per_second),
                user_download,
            ),
            user,
        })
    }

    /// Sessions of `name` open now.
    pub fn sessions(&self, name: &str) -> u32 {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(name).map_or(0, |user| {
            *user.sessions.lock().unwrap_or_else(|e| e.into_inner())
        })
    }

    /// The users with series of their own in the metrics, from the users file in effect.
    pub fn set_metered(&self, names: impl IntoIterator<Item = String>) {
        let mut metered = self.metered.lock().unwrap_or_else(|e| e.into_inner());
        metered.extend(names);
    }

    /// Every user that has had metrics series since start (a series, once there, stays, as
    /// Prometheus expects of a counter).
    pub fn metered(&self) -> Vec<String> {
        let metered = self.metered.lock().unwrap_or_else(|e| e.into_inner());
        metered.iter().cloned().collect()
    }
}

/// The user's shared bucket at `rate`, made on first use; none without a rate.
fn shared_bucket(slot: &Mutex<Option<Arc<Bucket>>>, rate: Option<u64>) -> Option<Arc<Bucket>> {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    match rate {
        None => {
            *slot = None;
            None
        }
        Some(rate) => {
            let bucket = slot.get_or_insert_with(|| Arc::new(Bucket::new(rate)));
            bucket.set_rate(rate);
            Some(Arc::clone(bucket))
        }
    }
}

/// One logged-in session's share of its user.
#[derive(Debug)]
pub struct UserSession {
    name: String,
    metered: bool,
    upload: Throttle,
    download: Throttle,
    user: Arc<LiveUser>,
}

impl Drop for UserSession {
    fn drop(&mut self) {
        let mut sessions = self.user.sessions.lock().unwrap_or_else(|e| e.into_inner());
        *sessions = sessions.saturating_sub(1);
    }
}

/// What the quota check of one upload reads from the ledger when it starts.
#[derive(Debug, Clone, Copy)]
pub struct LedgerMark {
    committed_bytes: i64,
    committed_files: i64,
}

/// Changes known to this process but perhaps not to a walk that began after `mark`: uploads in
/// flight, and commits since the mark (counted twice at worst, when a walk already saw them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unseen {
    pub bytes: i64,
    pub files: i64,
}

impl UserSession {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metered(&self) -> bool {
        self.metered
    }

    pub fn upload_throttle(&self) -> Throttle {
        self.upload.clone()
    }

    pub fn download_throttle(&self) -> Throttle {
        self.download.clone()
    }

    /// The user's upload ledger, for an upload's quota check.
    pub fn ledger(&self) -> UploadLedger {
        UploadLedger {
            user: Arc::clone(&self.user),
        }
    }
}

/// The uploads of one user on this process, as the quota sees them.
#[derive(Debug, Clone)]
pub struct UploadLedger {
    user: Arc<LiveUser>,
}

impl UploadLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, QuotaLedger> {
        self.user.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken before the home is walked for an upload's quota check.
    pub fn mark(&self) -> LedgerMark {
        let ledger = self.lock();
        LedgerMark {
            committed_bytes: ledger.committed_bytes,
            committed_files: ledger.committed_files,
        }
    }

    /// What the user's uploads add that a walk begun at `mark` did not see.
    pub fn unseen(&self, mark: LedgerMark) -> Unseen {
        let ledger = self.lock();
        Unseen {
            bytes: ledger.in_flight_bytes as i64 + ledger.committed_bytes - mark.committed_bytes,
            files: ledger.in_flight_files as i64 + ledger.committed_files - mark.committed_files,
        }
    }

    /// The last walk, if it began less than `max_age` ago and nothing this process did since
    /// (a delete, a rename) made it wrong in a way the ledger does not track.
    pub fn recent_walk(&self, max_age: Duration) -> Option<Walk> {
        self.lock().walk.filter(|walk| walk.at.elapsed() < max_age)
    }

    /// Keeps a walk for [`Self::recent_walk`].
    pub fn record_walk(&self, walk: Walk) {
        self.lock().walk = Some(walk);
    }

    /// A delete or rename changed the home: the next upload walks it again.
    pub fn forget_walk(&self) {
        self.lock().walk = None;
    }

    /// An upload begins: a new file (or not) counts as one of the user's files from now on.
    pub fn begin_upload(&self, new_file: bool) {
        self.lock().in_flight_files += u64::from(new_file);
    }

    /// The upload wrote `bytes` more.
    pub fn wrote(&self, bytes: u64) {
        self.lock().in_flight_bytes += bytes;
    }

    /// The upload that wrote `written` ended; committed, it changed the stored bytes by
    /// `committed_change`.
    pub fn end_upload(&self, new_file: bool, written: u64, committed_change: Option<i64>) {
        let mut ledger = self.lock();
        ledger.in_flight_bytes = ledger.in_flight_bytes.saturating_sub(written);
        ledger.in_flight_files = ledger.in_flight_files.saturating_sub(u64::from(new_file));
        if let Some(change) = committed_change {
            ledger.committed_bytes += change;
            ledger.committed_files += i64::from(new_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_sessions_counts_the_users_open_sessions_only() {
        let live = LiveUsers::default();
        let policy = UserPolicy {
            max_sessions: Some(2),
            ..UserPolicy::default()
        };
        let first = live.open_session("acme", &policy).unwrap();
        let _second = live.open_session("acme", &policy).unwrap();
        assert_eq!(
            live.open_session("acme", &policy).unwrap_err(),
            TooManySessions { max_sessions: 2 }
        );
        let _other = live.open_session("bob", &policy).unwrap();
        drop(first);
        assert_eq!(live.sessions("acme"), 1);
        assert!(live.open_session("acme", &policy).is_ok());
    }

    #[test]
    fn a_users_sessions_share_one_bucket_per_direction() {
        let live = LiveUsers::default();
        let mut policy = UserPolicy::default();
        policy.bandwidth.upload_bytes_per_second = Some(1000);
        let a = live.open_session("acme", &policy).unwrap();
        let b = live.open_session("acme", &policy).unwrap();
        assert!(a.upload_throttle().is_limited());
        assert!(!a.download_throttle().is_limited());
        let first = a.upload_throttle().wait_after(1000);
        let second = b.upload_throttle().wait_after(1000);
        assert!(second > first + std::time::Duration::from_millis(900));
    }

    #[test]
    fn the_ledger_shows_uploads_in_flight_and_commits_since_the_mark() {
        let live = LiveUsers::default();
        let policy = UserPolicy::default();
        let a = live.open_session("acme", &policy).unwrap();
        let b = live.open_session("acme", &policy).unwrap();
        let (a, b) = (a.ledger(), b.ledger());
        let mark = b.mark();
        a.begin_upload(true);
        a.wrote(300);
        assert_eq!(
            b.unseen(mark),
            Unseen {
                bytes: 300,
                files: 1
            }
        );
        a.end_upload(true, 300, Some(300));
        assert_eq!(
            b.unseen(mark),
            Unseen {
                bytes: 300,
                files: 1
            }
        );
        assert_eq!(b.unseen(b.mark()), Unseen { bytes: 0, files: 0 });
        a.begin_upload(false);
        a.wrote(50);
        a.end_upload(false, 50, None);
        assert_eq!(b.unseen(b.mark()), Unseen { bytes: 0, files: 0 });
    }
}
