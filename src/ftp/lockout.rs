//! Failed logins, counted across connections per client address (IPv6 per /64, the block one
//! subscriber gets) and per user name, within a window. A login never resets a count: the only
//! way out is the window passing, so an attacker's own good login buys no more guesses.
//!
//! The table is bounded: when full it drops expired entries, then the least recently failed
//! unlocked ones, a tenth at a time, so a flood of addresses never wipes every lockout at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::metrics::SubjectLabel;

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

/// Subjects locked out at one moment, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockedNow {
    pub networks: u64,
    pub users: u64,
}

/// The limits in force (from the configuration, read at each login).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures within `window` that lock the subject out; 0 turns the lockout off.
    pub threshold: u32,
    pub window: Duration,
    pub lock_for: Duration,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    /// Verifications running now: they count against the threshold until they end, so parallel
    /// sessions cannot all guess at once before the first failure is recorded.
    in_flight: u32,
    window_start: Instant,
    last: Instant,
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
}

pub struct Lockout {
    table: Mutex<HashMap<Subject, Failures>>,
    capacity: usize,
    /// Lockouts started, by the kind of subject (`ftp_lockouts_total`).
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

    /// A table that counts each lockout it starts in `started`, labelled by the subject's kind
    /// (both kinds start at zero, so the series exist before the first lockout).
    pub fn counting(capacity: usize, started: Family<SubjectLabel, Counter>) -> Lockout {
        for kind in ["network", "user"] {
            let _ = started.get_or_create(&SubjectLabel::new(kind));
        }
        Lockout {
            table: Mutex::new(HashMap::new()),
            capacity: capacity.max(10),
            started,
        }
    }

    /// How many networks and user names are locked out now.
    pub fn locked_now(&self) -> LockedNow {
        let Ok(table) = self.table.lock() else {
            return LockedNow::default();
        };
        let now = Instant::now();
        let mut locked = LockedNow::default();
        for (subject, failures) in table.iter() {
            if failures.locked(now) {
                match subject {
                    Subject::Network(_) => locked.networks += 1,
                    Subject::User(_) => locked.users += 1,
                }
            }
        }
        locked
    }

    /// Whether any of `subjects` is locked out now.
    pub fn is_locked(&self, subjects: &[Subject]) -> bool {
        let Ok(table) = self.table.lock() else {
            return true;
        };
        let now = Instant::now();
        subjects
            .iter()
            .any(|subject| table.get(subject).is_some_and(|f| f.locked(now)))
    }

    /// Starts a password verification for `subjects`; false (and nothing counted) when they are
    /// locked, or when failures plus verifications already running reach the threshold. Every
    /// `true` must be followed by one [`Lockout::finish`].
    pub fn begin(&self, subjects: &[Subject], policy: &Policy) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return false;
        };
        let now = Instant::now();
        for subject in subjects {
            if let Some(failures) = table.get_mut(subject) {
                if failures.locked(now) {
                    return false;
                }
                if now.duration_since(failures.window_start) >= policy.window {
                    failures.count = 0;
                    failures.window_start = now;
                }
                if policy.threshold > 0 && failures.count + failures.in_flight >= policy.threshold {
                    return false;
                }
            }
        }
        for subject in subjects {
            self.entry(&mut table, subject, now, policy).in_flight += 1;
        }
        true
    }

    /// Ends a verification [`Lockout::begin`] allowed; a failure is counted against each subject.
    /// Returns true when one of them is locked now.
    pub fn finish(&self, subjects: &[Subject], policy: &Policy, failed: bool) -> bool {
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
    /// need no in-flight accounting); returns true when one of them is now locked.
    pub fn record_failure(&self, subjects: &[Subject], policy: &Policy) -> bool {
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
            if now.duration_since(failures.window_start) >= policy.window {
                failures.count = 0;
                failures.window_start = now;
            }
            failures.count += 1;
            failures.last = now;
            if policy.threshold > 0 && failures.count >= policy.threshold {
                failures.count = 0;
                failures.window_start = now;
                failures.locked_until = Some(now + policy.lock_for);
                locked = true;
                self.started
                    .get_or_create(&SubjectLabel::new(subject.kind()))
                    .inc();
            }
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
            .filter(|(_, failures)| !failures.locked(now))
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

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        threshold: 3,
        window: Duration::from_secs(600),
        lock_for: Duration::from_secs(60),
    };

    fn net(address: &str) -> Subject {
        Subject::network(address.parse().unwrap())
    }

    #[test]
    fn locks_out_after_the_threshold() {
        let lockout = Lockout::default();
        let subjects = [net("192.0.2.1"), Subject::User("alice".into())];
        assert!(!lockout.record_failure(&subjects, &POLICY));
        assert!(!lockout.record_failure(&subjects, &POLICY));
        assert!(!lockout.is_locked(&subjects));
        assert!(lockout.record_failure(&subjects, &POLICY));
        assert!(lockout.is_locked(&[net("192.0.2.1")]));
        assert!(lockout.is_locked(&[Subject::User("alice".into())]));
        assert!(!lockout.is_locked(&[net("192.0.2.2"), Subject::User("bob".into())]));
    }

    #[test]
    fn counts_lockouts_started_and_held_by_kind() {
        let started = Family::<SubjectLabel, Counter>::default();
        let lockout = Lockout::counting(100, started.clone());
        let count = |kind| started.get_or_create(&SubjectLabel::new(kind)).get();
        assert_eq!((count("network"), count("user")), (0, 0));
        // Three names from one address: the address is locked, no name is.
        for name in ["a", "b", "c"] {
            lockout.record_failure(&[net("192.0.2.1"), Subject::User(name.into())], &POLICY);
        }
        assert_eq!((count("network"), count("user")), (1, 0));
        // Failures while locked start no second lockout.
        lockout.record_failure(&[net("192.0.2.1")], &POLICY);
        assert_eq!(count("network"), 1);
        // One name from three addresses: the name is locked.
        for address in ["192.0.2.7", "192.0.2.8", "192.0.2.9"] {
            lockout.record_failure(&[net(address), Subject::User("alice".into())], &POLICY);
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
    fn counts_a_user_name_across_addresses_and_an_address_across_names() {
        let lockout = Lockout::default();
        let alice = Subject::User("alice".into());
        assert!(!lockout.record_failure(&[net("192.0.2.1"), alice.clone()], &POLICY));
        assert!(!lockout.record_failure(&[net("192.0.2.2"), alice.clone()], &POLICY));
        assert!(lockout.record_failure(&[net("192.0.2.3"), alice.clone()], &POLICY));
        assert!(lockout.is_locked(&[alice]));
        for name in ["a", "b", "c"] {
            lockout.record_failure(&[net("198.51.100.1"), Subject::User(name.into())], &POLICY);
        }
        assert!(lockout.is_locked(&[net("198.51.100.1")]));
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

    #[test]
    fn parallel_verifications_count_before_they_end() {
        let lockout = Lockout::default();
        let subjects = [net("192.0.2.1"), Subject::User("alice".into())];
        assert!(lockout.begin(&subjects, &POLICY));
        assert!(lockout.begin(&subjects, &POLICY));
        assert!(lockout.begin(&subjects, &POLICY));
        // Three guesses are running: a fourth may not start, though none has failed yet.
        assert!(!lockout.begin(&subjects, &POLICY));
        assert!(!lockout.finish(&subjects, &POLICY, true));
        assert!(!lockout.finish(&subjects, &POLICY, true));
        assert!(lockout.finish(&subjects, &POLICY, true));
        assert!(lockout.is_locked(&subjects));
        // A good login ends its own attempt and resets nothing.
        let other = [net("192.0.2.9"), Subject::User("bob".into())];
        lockout.record_failure(&other, &POLICY);
        assert!(lockout.begin(&other, &POLICY));
        assert!(!lockout.finish(&other, &POLICY, false));
        lockout.record_failure(&other, &POLICY);
        assert!(lockout.record_failure(&other, &POLICY));
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
