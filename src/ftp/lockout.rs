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

#[derive(Debug)]
pub struct Lockout {
    table: Mutex<HashMap<Subject, Failures>>,
    capacity: usize,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Lockout {
    pub fn with_capacity(capacity: usize) -> Lockout {
        Lockout {
            table: Mutex::new(HashMap::new()),
            capacity: capacity.max(10),
        }
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
