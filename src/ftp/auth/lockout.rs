//! Failed logins, counted across connections within a window, for two subjects that are treated
//! differently, so that guessing is bounded without letting an attacker lock a user out:
//!
//! - the client's **network** (IPv4 address, IPv6 /64: the block one subscriber gets): failures
//!   lock it out, and its logins are refused until the lockout ends. This is what vsftpd's
//!   `max_login_fails`, ProFTPD's `mod_ban` per host and fail2ban do.
//! - the **user name**: failures from anywhere never refuse it (a per-user ban, as `mod_ban`'s
//!   `BanOnEvent ... user` can be set to, lets anyone lock anyone out). Past the threshold they
//!   throttle it instead: one verification at a time, and from a network that has failed logins
//!   of its own, one only after a backoff that doubles with each further failure. A right password
//!   from a clean network waits its turn but no backoff.
//!
//! Verifications running count against the threshold until they end, so parallel sessions cannot
//! all guess before the first failure is recorded; those beyond the threshold wait (bounded by the
//! login timeout) rather than being refused, so a burst of right passwords all get in. A login
//! never resets a count: only the window passing does, so an attacker's own good login buys no
//! more guesses.
//!
//! The table is bounded: when full it drops expired entries, then the least recently failed
//! unlocked ones, a tenth at a time, so a flood of addresses never wipes every lockout at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::ftp::metrics::SubjectLabel;

/// Entries the table holds at most (each is a few dozen bytes).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// What is counted: the client's network, or the user name it tried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Network(IpAddr),
    User(String),
}

impl Subject {
    /// The client's address as counted: IPv4 as is, IPv6 by its /64.
    pub fn network(address: IpAddr) -> Subject {
        Subject::Network(match address.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        })
    }

    /// What kind of subject this is, as a metric label: never the address or name itself, so
    /// the label takes two values however many clients there are.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Network(_) => "network",
            Subject::User(_) => "user",
        }
    }
}

/// Subjects held at one moment, by kind: networks locked out, user names throttled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockedNow {
    pub networks: u64,
    pub users: u64,
}

/// The limits in force (from the configuration, read at each login).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures within `window` that lock a network out and start throttling a user name; 0 turns
    /// both off.
    pub threshold: u32,
    pub window: Duration,
    pub lock_for: Duration,
}

/// The first backoff of a throttled user name, after its first failure past the threshold; each
/// further failure doubles it, up to [`USER_BACKOFF_MAX`].
const USER_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest backoff: one guess per 8 s per user name from networks that already failed, whatever
/// the number of sessions, while staying well inside any login timeout.
const USER_BACKOFF_MAX: Duration = Duration::from_secs(8);

#[derive(Debug)]
struct Failures {
    count: u32,
    /// Verifications running now: they count against the threshold until they end.
    in_flight: u32,
    window_start: Instant,
    last: Instant,
    /// Networks only: user names are throttled, never locked.
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    fn expired(&self, now: Instant, policy: &Policy) -> bool {
        !self.locked(now)
            && self.in_flight == 0
            && now.duration_since(self.window_start) >= policy.window
    }

    /// Starts a new window when the last one is over.
    fn roll_window(&mut self, now: Instant, policy: &Policy) {
        if now.duration_since(self.window_start) >= policy.window {
            self.count = 0;
            self.window_start = now;
        }
    }

    /// Whether a user name with these failures is throttled now.
    fn throttled(&self, now: Instant, policy: &Policy) -> bool {
        policy.threshold > 0
            && self.count >= policy.threshold
            && now.duration_since(self.window_start) < policy.window
    }

    /// When a throttled user name may next be tried from a network that has failed itself.
    fn next_try(&self, policy: &Policy) -> Instant {
        let excess = self.count.saturating_sub(policy.threshold).min(16);
        let backoff = USER_BACKOFF_FIRST
            .saturating_mul(1 << excess)
            .min(USER_BACKOFF_MAX);
        self.last + backoff
    }
}

/// Why a verification may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The network is locked out: refuse.
    Locked,
    /// Wait until another verification ends, or until the instant given.
    Wait(Option<Instant>),
}

/// What [`Lockout::admit`] decided.
pub enum Admission {
    /// The verification may run; finish the attempt with its result.
    Admitted(Attempt),
    /// The client's network is locked out after failed logins.
    Locked,
    /// The deadline passed while waiting for a turn (no login failed).
    TimedOut,
}

pub struct Lockout {
    table: Mutex<HashMap<Subject, Failures>>,
    capacity: usize,
    /// Wakes the logins waiting for a turn whenever a verification ends.
    turn: tokio::sync::Notify,
    /// The policy of the latest login, for [`Lockout::locked_now`] (which a scrape calls).
    policy: Mutex<Option<Policy>>,
    /// Lockouts and throttles started, by the kind of subject (`ftp_lockouts_total`).
    started: Family<SubjectLabel, Counter>,
}

/// Shows the size only: the table holds client addresses and the names they tried.
impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Lockout {
    pub fn with_capacity(capacity: usize) -> Lockout {
        Lockout::counting(capacity, Family::default())
    }

    /// A table that counts each lockout (network) and throttle (user name) it starts in
    /// `started`, labelled by the subject's kind (both kinds start at zero, so the series exist
    /// before the first one).
    pub fn counting(capacity: usize, started: Family<SubjectLabel, Counter>) -> Lockout {
        for kind in ["network", "user"] {
            let _ = started.get_or_create(&SubjectLabel::new(kind));
        }
        Lockout {
            table: Mutex::new(HashMap::new()),
            capacity: capacity.max(10),
            turn: tokio::sync::Notify::new(),
            policy: Mutex::new(None),
            started,
        }
    }

    /// How many networks are locked out and how many user names throttled now, under the
    /// policy of the latest login.
    pub fn locked_now(&self) -> LockedNow {
        let Some(policy) = self.policy.lock().ok().and_then(|policy| *policy) else {
            return LockedNow::default();
        };
        let policy = &policy;
        let Ok(table) = self.table.lock() else {
            return LockedNow::default();
        };
        let now = Instant::now();
        let mut held = LockedNow::default();
        for (subject, failures) in table.iter() {
            match subject {
                Subject::Network(_) if failures.locked(now) => held.networks += 1,
                Subject::User(_) if failures.throttled(now, policy) => held.users += 1,
                _ => {}
            }
        }
        held
    }

    /// Whether any of `subjects` is locked out now (only networks ever are).
    pub fn is_locked(&self, subjects: &[Subject]) -> bool {
        let Ok(table) = self.table.lock() else {
            return true;
        };
        let now = Instant::now();
        subjects
            .iter()
            .any(|subject| table.get(subject).is_some_and(|f| f.locked(now)))
    }

    /// Waits for the turn of a password verification for `subjects` (a network, then a user
    /// name), until `deadline`. Every [`Admission::Admitted`] attempt counts against the
    /// threshold until it is finished (or dropped, which counts as a failure).
    pub async fn admit(
        self: &std::sync::Arc<Self>,
        subjects: [Subject; 2],
        policy: Policy,
        deadline: tokio::time::Instant,
    ) -> Admission {
        self.remember(policy);
        loop {
            // Registered before the check, so a verification ending in between still wakes us.
            let turn = self.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let wait_until = match self.try_begin(&subjects, &policy, Instant::now()) {
                Ok(()) => {
                    return Admission::Admitted(Attempt {
                        lockout: std::sync::Arc::clone(self),
                        subjects,
                        policy,
                        done: false,
                    });
                }
                Err(Hold::Locked) => return Admission::Locked,
                Err(Hold::Wait(until)) => until.map(tokio::time::Instant::from_std),
            };
            let wake = wait_until.map_or(deadline, |until| until.min(deadline));
            tokio::select! {
                _ = &mut turn => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Admission::TimedOut;
            }
        }
    }

    fn remember(&self, policy: Policy) {
        if let Ok(mut latest) = self.policy.lock() {
            *latest = Some(policy);
        }
    }

    /// Starts a verification when `subjects` allow one now; nothing is counted otherwise.
    fn try_begin(&self, subjects: &[Subject], policy: &Policy, now: Instant) -> Result<(), Hold> {
        let Ok(mut table) = self.table.lock() else {
            return Err(Hold::Locked);
        };
        let network_failed = subjects.iter().any(|subject| {
            matches!(subject, Subject::Network(_))
                && table.get(subject).is_some_and(|f| {
                    f.count > 0 && now.duration_since(f.window_start) < policy.window
                })
        });
        for subject in subjects {
            let Some(failures) = table.get_mut(subject) else {
                continue;
            };
            if failures.locked(now) {
                return Err(Hold::Locked);
            }
            failures.roll_window(now, policy);
            if policy.threshold == 0 {
                continue;
            }
            let outstanding = failures.count + failures.in_flight;
            match subject {
                Subject::Network(_) if outstanding >= policy.threshold => {
                    return Err(Hold::Wait(None));
                }
                Subject::User(_) if failures.in_flight > 0 && outstanding >= policy.threshold => {
                    return Err(Hold::Wait(None));
                }
                Subject::User(_) if network_failed && failures.throttled(now, policy) => {
                    let next = failures.next_try(policy);
                    if now < next {
                        return Err(Hold::Wait(Some(next)));
                    }
                }
                _ => {}
            }
        }
        for subject in subjects {
            self.entry(&mut table, subject, now, policy).in_flight += 1;
        }
        Ok(())
    }

    /// Ends a verification [`Lockout::admit`] allowed; a failure is counted against each subject.
    /// Returns true when the network is locked out now.
    fn finish(&self, subjects: &[Subject], policy: &Policy, failed: bool) -> bool {
        let locked = {
            let Ok(mut table) = self.table.lock() else {
                return true;
            };
            let now = Instant::now();
            for subject in subjects {
                if let Some(failures) = table.get_mut(subject) {
                    failures.in_flight = failures.in_flight.saturating_sub(1);
                }
            }
            if failed {
                self.count_failure(&mut table, subjects, now, policy)
            } else {
                subjects
                    .iter()
                    .any(|subject| table.get(subject).is_some_and(|f| f.locked(now)))
            }
        };
        self.turn.notify_waiters();
        locked
    }

    fn entry<'t>(
        &self,
        table: &'t mut HashMap<Subject, Failures>,
        subject: &Subject,
        now: Instant,
        policy: &Policy,
    ) -> &'t mut Failures {
        if !table.contains_key(subject) && table.len() >= self.capacity {
            self.make_room(table, now, policy);
        }
        table.entry(subject.clone()).or_insert(Failures {
            count: 0,
            in_flight: 0,
            window_start: now,
            last: now,
            locked_until: None,
        })
    }

    /// Counts one failure against each subject (without a verification: tests, and callers that
    /// need no in-flight accounting); returns true when the network is now locked.
    pub fn record_failure(&self, subjects: &[Subject], policy: &Policy) -> bool {
        self.remember(*policy);
        let Ok(mut table) = self.table.lock() else {
            return true;
        };
        self.count_failure(&mut table, subjects, Instant::now(), policy)
    }

    fn count_failure(
        &self,
        table: &mut HashMap<Subject, Failures>,
        subjects: &[Subject],
        now: Instant,
        policy: &Policy,
    ) -> bool {
        let mut locked = false;
        for subject in subjects {
            let failures = self.entry(table, subject, now, policy);
            if failures.locked(now) {
                locked = true;
                continue;
            }
            failures.roll_window(now, policy);
            failures.count += 1;
            failures.last = now;
            if policy.threshold == 0 || failures.count != policy.threshold {
                continue;
            }
            match subject {
                Subject::Network(_) => {
                    failures.count = 0;
                    failures.window_start = now;
                    failures.locked_until = Some(now + policy.lock_for);
                    locked = true;
                }
                // A user name reaching the threshold starts being throttled; it keeps counting.
                Subject::User(_) => {}
            }
            self.started
                .get_or_create(&SubjectLabel::new(subject.kind()))
                .inc();
        }
        locked
    }

    fn make_room(&self, table: &mut HashMap<Subject, Failures>, now: Instant, policy: &Policy) {
        table.retain(|_, failures| !failures.expired(now, policy));
        if table.len() < self.capacity {
            return;
        }
        let mut unlocked: Vec<(Instant, Subject)> = table
            .iter()
            .filter(|(_, failures)| !failures.locked(now) && failures.in_flight == 0)
            .map(|(subject, failures)| (failures.last, subject.clone()))
            .collect();
        unlocked.sort_by_key(|(last, _)| *last);
        let drop = (self.capacity / 10).max(1);
        for (_, subject) in unlocked.into_iter().take(drop) {
            table.remove(&subject);
        }
        if table.len() >= self.capacity {
            // Every entry is a live lockout: the oldest one goes, never all of them.
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, failures)| failures.last)
                .map(|(subject, _)| subject.clone())
            {
                table.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.lock().map(|table| table.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A password verification the lockout counts while it runs. Dropped unfinished (the client went
/// away during the check) it counts as a failure.
pub struct Attempt {
    lockout: std::sync::Arc<Lockout>,
    subjects: [Subject; 2],
    policy: Policy,
    done: bool,
}

impl Attempt {
    /// Ends the attempt; returns whether the client's network is locked out now.
    pub fn finish(mut self, failed: bool) -> bool {
        self.done = true;
        self.lockout.finish(&self.subjects, &self.policy, failed)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.lockout.finish(&self.subjects, &self.policy, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const POLICY: Policy = Policy {
        threshold: 3,
        window: Duration::from_secs(600),
        lock_for: Duration::from_secs(60),
    };

    fn net(address: &str) -> Subject {
        Subject::network(address.parse().unwrap())
    }

    fn user(name: &str) -> Subject {
        Subject::User(name.into())
    }

    fn soon(millis: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(millis)
    }

    #[test]
    fn locks_out_a_network_after_the_threshold_but_never_a_user_name() {
        let lockout = Lockout::default();
        let subjects = [net("192.0.2.1"), user("alice")];
        assert!(!lockout.record_failure(&subjects, &POLICY));
        assert!(!lockout.record_failure(&subjects, &POLICY));
        assert!(!lockout.is_locked(&subjects));
        assert!(lockout.record_failure(&subjects, &POLICY));
        assert!(lockout.is_locked(&[net("192.0.2.1")]));
        assert!(!lockout.is_locked(&[user("alice")]));
        assert!(!lockout.is_locked(&[net("192.0.2.2"), user("alice")]));
    }

    #[test]
    fn counts_lockouts_and_throttles_started_and_held_by_kind() {
        let started = Family::<SubjectLabel, Counter>::default();
        let lockout = Lockout::counting(100, started.clone());
        let count = |kind| started.get_or_create(&SubjectLabel::new(kind)).get();
        assert_eq!((count("network"), count("user")), (0, 0));
        // Three names from one address: the address is locked, no name is throttled.
        for name in ["a", "b", "c"] {
            lockout.record_failure(&[net("192.0.2.1"), user(name)], &POLICY);
        }
        assert_eq!((count("network"), count("user")), (1, 0));
        // Failures while locked start no second lockout.
        lockout.record_failure(&[net("192.0.2.1")], &POLICY);
        assert_eq!(count("network"), 1);
        // One name from three addresses: the name is throttled.
        for address in ["192.0.2.7", "192.0.2.8", "192.0.2.9"] {
            lockout.record_failure(&[net(address), user("alice")], &POLICY);
        }
        assert_eq!((count("network"), count("user")), (1, 1));
        assert_eq!(
            lockout.locked_now(),
            LockedNow {
                networks: 1,
                users: 1
            }
        );
        let short = Policy {
            lock_for: Duration::from_millis(30),
            ..POLICY
        };
        for _ in 0..3 {
            lockout.record_failure(&[net("198.51.100.1")], &short);
        }
        assert_eq!(lockout.locked_now().networks, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            lockout.locked_now().networks,
            1,
            "an expired lockout is still counted"
        );
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(net("2001:db8:1:2:aaaa::1"), net("2001:db8:1:2:ffff::9"));
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:192.0.2.7"), net("192.0.2.7"));
        let lockout = Lockout::default();
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
            lockout.record_failure(&[net(host)], &POLICY);
        }
        assert!(lockout.is_locked(&[net("2001:db8::ffff")]));
        assert!(!lockout.is_locked(&[net("2001:db8:0:1::1")]));
    }

    #[tokio::test]
    async fn verifications_past_the_threshold_wait_and_are_never_counted_as_failures() {
        let lockout = Arc::new(Lockout::default());
        let subjects = || [net("192.0.2.1"), user("alice")];
        let mut running = Vec::new();
        for _ in 0..3 {
            match lockout.admit(subjects(), POLICY, soon(1000)).await {
                Admission::Admitted(attempt) => running.push(attempt),
                _ => panic!("one of the first three verifications did not start"),
            }
        }
        // Three are running: a fourth waits for a turn instead of being refused.
        assert!(matches!(
            lockout.admit(subjects(), POLICY, soon(50)).await,
            Admission::TimedOut
        ));
        assert!(!lockout.is_locked(&subjects()));
        // A right password ending gives its turn to a waiting one.
        let waiting = tokio::spawn({
            let lockout = Arc::clone(&lockout);
            async move {
                matches!(
                    lockout.admit(subjects(), POLICY, soon(5000)).await,
                    Admission::Admitted(_)
                )
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!running.pop().unwrap().finish(false));
        assert!(
            waiting.await.unwrap(),
            "the waiting login never got its turn"
        );
    }

    #[tokio::test]
    async fn guesses_in_parallel_get_no_more_than_the_threshold_verified() {
        let lockout = Arc::new(Lockout::default());
        let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let guesses = (0..20).map(|i| {
            let lockout = Arc::clone(&lockout);
            let started = Arc::clone(&started);
            tokio::spawn(async move {
                let subjects = [net("192.0.2.1"), user(&format!("u{i}"))];
                match lockout.admit(subjects, POLICY, soon(2000)).await {
                    Admission::Admitted(attempt) => {
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        attempt.finish(true);
                        "verified"
                    }
                    Admission::Locked => "locked",
                    Admission::TimedOut => "timed out",
                }
            })
        });
        let results = futures::future::join_all(guesses).await;
        let locked = results.iter().filter(|r| matches!(r, Ok("locked"))).count();
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(locked, 17);
    }

    #[tokio::test]
    async fn guesses_from_elsewhere_throttle_a_user_but_never_refuse_a_clean_network() {
        let lockout = Arc::new(Lockout::default());
        // Ten networks guess alice's password three times each: each is locked out.
        for host in 1..=10 {
            let address = format!("192.0.2.{host}");
            for _ in 0..3 {
                lockout.record_failure(&[net(&address), user("alice")], &POLICY);
            }
            assert!(lockout.is_locked(&[net(&address)]));
        }
        // alice is throttled, yet her right password from a clean network starts at once.
        assert_eq!(lockout.locked_now().users, 1);
        let started = tokio::time::Instant::now();
        let admitted = lockout
            .admit([net("198.51.100.7"), user("alice")], POLICY, soon(500))
            .await;
        let Admission::Admitted(attempt) = admitted else {
            panic!("alice's login from a clean network did not start");
        };
        assert!(started.elapsed() < Duration::from_millis(100));
        attempt.finish(false);
        // From a network that failed once itself, a further guess waits for the backoff.
        lockout.record_failure(&[net("198.51.100.9"), user("bob")], &POLICY);
        assert!(matches!(
            lockout
                .admit([net("198.51.100.9"), user("alice")], POLICY, soon(200))
                .await,
            Admission::TimedOut
        ));
    }

    #[tokio::test]
    async fn a_dropped_verification_counts_as_a_failure() {
        let lockout = Arc::new(Lockout::default());
        for _ in 0..3 {
            let Admission::Admitted(attempt) = lockout
                .admit([net("192.0.2.1"), user("alice")], POLICY, soon(100))
                .await
            else {
                panic!("the attempt did not start");
            };
            drop(attempt);
        }
        assert!(lockout.is_locked(&[net("192.0.2.1")]));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let policy = Policy {
            window: Duration::from_millis(50),
            ..POLICY
        };
        let lockout = Lockout::default();
        let subject = [net("192.0.2.1")];
        lockout.record_failure(&subject, &policy);
        lockout.record_failure(&subject, &policy);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!lockout.record_failure(&subject, &policy));
        assert!(!lockout.is_locked(&subject));
    }

    #[test]
    fn a_full_table_keeps_its_lockouts_and_most_of_its_counts() {
        let lockout = Lockout::with_capacity(100);
        let attacked = [net("192.0.2.1")];
        for _ in 0..3 {
            lockout.record_failure(&attacked, &POLICY);
        }
        lockout.record_failure(&[net("192.0.2.2")], &POLICY);
        lockout.record_failure(&[net("192.0.2.2")], &POLICY);
        for i in 0..1000u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            lockout.record_failure(&[Subject::network(address)], &POLICY);
            assert!(lockout.len() <= 100);
        }
        assert!(
            lockout.is_locked(&attacked),
            "a flood unlocked the attacked address"
        );
        // Evicting a tenth at a time: the last flood entries are all still counted.
        assert!(lockout.len() >= 90, "{}", lockout.len());
    }
}
