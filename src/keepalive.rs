//! The keepalive an FtpServer runs with, and where it came from.
//!
//! When `keepalive.idleSeconds` or `keepalive.intervalSeconds` is absent it is derived from the
//! balancer's idle timeout `T` (`loadBalancer.idleTimeoutSeconds`, else the provider's documented
//! default):
//!
//! ```text
//! interval = min(10, max(1, T / 6))
//! idle     = max(1, min(T / 2, T - 2 * interval))
//! ```
//!
//! Why: the balancer must see a packet before `T` runs out. Half of `T` leaves room for clock
//! skew between the balancer's and the kernel's timers and for a probe in flight; `T - 2 *
//! interval` makes sure that, when the first probe and its first retry are lost, the second retry
//! still reaches the balancer in time. An answered probe counts as traffic, so the next probe
//! comes `idle` seconds later again, well inside `T`. The interval is the kernel's usual 10 s
//! for any timeout of a minute or more (every provider's default), and shorter below that: with
//! 10 s between retries, a 6 s balancer forgets a connection whose first probe is lost, which an
//! upload saturating the client's uplink makes likely. Values given in the spec are checked
//! instead: one lost probe must still be retried before `T` (`idle + interval < T`). The
//! kernel's maximum (32767) caps the results.

use crate::api::{FtpServerSpec, Provider};
use crate::ftp::config::Keepalive;
use crate::lb;

/// The kernel's upper bound for `tcp_keepalive_time` and `tcp_keepalive_intvl`.
pub const MAX_SECONDS: u32 = 32767;
/// The kernel's upper bound for `tcp_keepalive_probes`.
pub const MAX_PROBES: u32 = 127;

/// Where the idle time in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveOrigin {
    /// `keepalive.idleSeconds` was given.
    SetInSpec,
    /// Derived from `loadBalancer.idleTimeoutSeconds`.
    DerivedFromLoadBalancer { timeout_seconds: i32 },
    /// Derived from the provider's documented default idle timeout.
    ProviderDefault {
        provider: Provider,
        timeout_seconds: i32,
    },
}

impl KeepaliveOrigin {
    /// A `KeepaliveConfigured` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            KeepaliveOrigin::SetInSpec => "SetInSpec",
            KeepaliveOrigin::DerivedFromLoadBalancer { .. } => "DerivedFromLoadBalancer",
            KeepaliveOrigin::ProviderDefault { .. } => "DerivedFromProviderDefault",
        }
    }
}

impl std::fmt::Display for KeepaliveOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepaliveOrigin::SetInSpec => write!(f, "set in spec"),
            KeepaliveOrigin::DerivedFromLoadBalancer { timeout_seconds } => write!(
                f,
                "derived from loadBalancer.idleTimeoutSeconds={timeout_seconds}"
            ),
            KeepaliveOrigin::ProviderDefault {
                provider,
                timeout_seconds,
            } => write!(
                f,
                "derived from provider {} default {timeout_seconds} s",
                provider_name(*provider)
            ),
        }
    }
}

pub fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Generic => "generic",
        Provider::Azure => "azure",
        Provider::Aws => "aws",
        Provider::Gcp => "gcp",
        Provider::Metallb => "metallb",
    }
}

/// The keepalive in force and its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveInForce {
    pub keepalive: Keepalive,
    pub origin: KeepaliveOrigin,
    /// The balancer's idle timeout the values were checked against.
    pub balancer_timeout_seconds: i32,
}

impl KeepaliveInForce {
    /// One line for status: values, origin, and the timeout they beat.
    pub fn describe(&self) -> String {
        let k = self.keepalive;
        format!(
            "idle {} s, interval {} s, {} probes ({}); the balancer forgets idle flows after {} s",
            k.idle_seconds,
            k.interval_seconds,
            k.probes,
            self.origin,
            self.balancer_timeout_seconds
        )
    }
}

/// Why the spec's keepalive cannot be used; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeepaliveError(pub String);

/// The probe interval for a balancer timeout when the spec gives none (see the module docs).
pub fn derived_interval_seconds(timeout_seconds: i32) -> u32 {
    u32::try_from((timeout_seconds / 6).clamp(1, 10)).unwrap_or(1)
}

/// The derivation rule (see the module docs) for a balancer timeout and probe interval.
pub fn derived_idle_seconds(timeout_seconds: i32, interval_seconds: u32) -> u32 {
    let timeout = i64::from(timeout_seconds);
    let idle = (timeout / 2).min(timeout - 2 * i64::from(interval_seconds));
    u32::try_from(idle.clamp(1, i64::from(MAX_SECONDS))).unwrap_or(1)
}

/// The keepalive an FtpServer runs with: the spec's values where given, the idle time derived
/// from the balancer otherwise. Fails when the idle time would not beat the balancer.
pub fn keepalive_in_force(spec: &FtpServerSpec) -> Result<KeepaliveInForce, KeepaliveError> {
    let given = spec.keepalive.unwrap_or_default();
    let provider = spec.load_balancer.provider;
    let timeout_seconds = lb::idle_timeout_seconds(spec);
    let interval = given
        .interval_seconds
        .map(u32::try_from)
        .unwrap_or(Ok(derived_interval_seconds(timeout_seconds)));
    let (Ok(interval_seconds @ 1..=MAX_SECONDS), Ok(probes @ 1..=MAX_PROBES)) =
        (interval, u32::try_from(given.probes))
    else {
        return Err(KeepaliveError(format!(
            "keepalive needs intervalSeconds in 1-{MAX_SECONDS} and probes in 1-{MAX_PROBES}"
        )));
    };
    let balancer = match spec.load_balancer.idle_timeout_seconds {
        Some(_) => format!("loadBalancer.idleTimeoutSeconds {timeout_seconds}"),
        None => format!(
            "the {} default idle timeout of {timeout_seconds} s",
            provider_name(provider)
        ),
    };
    let (idle_seconds, origin) = match given.idle_seconds {
        Some(idle) => {
            let idle = u32::try_from(idle)
                .ok()
                .filter(|idle| (1..=MAX_SECONDS).contains(idle))
                .ok_or_else(|| {
                    KeepaliveError(format!(
                        "keepalive.idleSeconds {idle} must be between 1 and {MAX_SECONDS}"
                    ))
                })?;
            (idle, KeepaliveOrigin::SetInSpec)
        }
        None => {
            let origin = match spec.load_balancer.idle_timeout_seconds {
                Some(timeout_seconds) => {
                    KeepaliveOrigin::DerivedFromLoadBalancer { timeout_seconds }
                }
                None => KeepaliveOrigin::ProviderDefault {
                    provider,
                    timeout_seconds,
                },
            };
            (
                derived_idle_seconds(timeout_seconds, interval_seconds),
                origin,
            )
        }
    };
    if i64::from(idle_seconds) >= i64::from(timeout_seconds) {
        let fix = match origin {
            KeepaliveOrigin::SetInSpec => {
                "lower keepalive.idleSeconds, or remove it to derive it from the balancer"
            }
            _ => "raise loadBalancer.idleTimeoutSeconds",
        };
        return Err(KeepaliveError(format!(
            "keepalive.idleSeconds {idle_seconds} is not below {balancer}, so the balancer would \
             forget idle control connections: {fix}"
        )));
    }
    // One lost probe (or its answer) is retried `interval` later: that retry must still come
    // before the balancer forgets the connection.
    let retried_after = i64::from(idle_seconds) + i64::from(interval_seconds);
    if retried_after >= i64::from(timeout_seconds) {
        let fix = match (given.interval_seconds, given.idle_seconds) {
            (Some(_), _) => format!(
                "lower keepalive.intervalSeconds below {}, or remove it to derive it from the \
                 balancer",
                (i64::from(timeout_seconds) - i64::from(idle_seconds)).max(1)
            ),
            (None, Some(_)) => "lower keepalive.idleSeconds".to_owned(),
            (None, None) => "raise loadBalancer.idleTimeoutSeconds".to_owned(),
        };
        return Err(KeepaliveError(format!(
            "keepalive.intervalSeconds {interval_seconds} after keepalive.idleSeconds \
             {idle_seconds} retries a lost probe {retried_after} s after the connection went \
             quiet, not below {balancer}, so one lost probe would let the balancer forget the \
             connection: {fix}"
        )));
    }
    Ok(KeepaliveInForce {
        keepalive: Keepalive {
            idle_seconds,
            interval_seconds,
            probes,
        },
        origin,
        balancer_timeout_seconds: timeout_seconds,
    })
}

/// Whether the nodes under this server's pods need their keepalive sysctls tuned: asked for, or
/// implied by the host network (such pods cannot set `net.*` sysctls of their own).
pub fn needs_node_sysctls(spec: &FtpServerSpec) -> bool {
    spec.host_network || spec.keepalive.is_some_and(|k| k.node_sysctls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> FtpServerSpec {
        serde_yaml::from_str(&format!("passivePorts: {{min: 20000, max: 20001}}\n{yaml}")).unwrap()
    }

    fn idle(yaml: &str) -> u32 {
        keepalive_in_force(&spec(yaml))
            .unwrap()
            .keepalive
            .idle_seconds
    }

    #[test]
    fn timeouts_of_a_minute_or_more_keep_the_ten_second_interval() {
        for yaml in [
            "loadBalancer: {provider: azure}",
            "loadBalancer: {provider: aws}",
            "loadBalancer: {provider: gcp}",
            "loadBalancer: {idleTimeoutSeconds: 60}",
            "",
        ] {
            assert_eq!(interval(yaml), 10, "{yaml}");
        }
        // From 3 s up (at 2 s even probes every second cannot be retried in time).
        for timeout in 3..2000 {
            let derived = keepalive_in_force(&spec(&format!(
                "loadBalancer: {{idleTimeoutSeconds: {timeout}}}"
            )))
            .unwrap()
            .keepalive;
            assert!(
                derived.idle_seconds + derived.interval_seconds < timeout as u32,
                "{timeout}: {derived:?}"
            );
        }
    }

    #[test]
    fn an_interval_that_outlasts_the_balancer_after_one_lost_probe_is_refused_with_the_fix() {
        // Idle derived as 1 s; a lost probe retried 11 s after the connection went quiet.
        let err = keepalive_in_force(&spec(
            "loadBalancer: {idleTimeoutSeconds: 6}\nkeepalive: {intervalSeconds: 10}",
        ))
        .unwrap_err();
        assert!(err.0.contains("retries a lost probe 11 s after"), "{err}");
        assert!(
            err.0.contains("lower keepalive.intervalSeconds below 5"),
            "{err}"
        );
        let err = keepalive_in_force(&spec(
            "loadBalancer: {idleTimeoutSeconds: 6}\nkeepalive: {idleSeconds: 5}",
        ))
        .unwrap_err();
        assert!(err.0.contains("lower keepalive.idleSeconds"), "{err}");
        // Retried inside the timeout: accepted.
        assert_eq!(
            interval(
                "loadBalancer: {idleTimeoutSeconds: 6}\nkeepalive: {idleSeconds: 2, intervalSeconds: 1}"
            ),
            1
        );
    }

    #[test]
    fn provider_defaults_give_half_the_timeout() {
        assert_eq!(idle("loadBalancer: {provider: azure}"), 120);
        assert_eq!(idle("loadBalancer: {provider: aws}"), 175);
        assert_eq!(idle("loadBalancer: {provider: gcp}"), 300);
        assert_eq!(idle("loadBalancer: {provider: metallb}"), 450);
        assert_eq!(idle(""), 450);
    }

    fn interval(yaml: &str) -> u32 {
        keepalive_in_force(&spec(yaml))
            .unwrap()
            .keepalive
            .interval_seconds
    }

    #[test]
    fn short_timeouts_leave_room_for_two_retries_and_never_reach_zero() {
        // Interval 30/6 = 5; T/2 = 15, T - 2*5 = 20.
        assert_eq!(interval("loadBalancer: {idleTimeoutSeconds: 30}"), 5);
        assert_eq!(idle("loadBalancer: {idleTimeoutSeconds: 30}"), 15);
        // A given interval: T/2 = 15, T - 2*10 = 10.
        assert_eq!(
            idle("loadBalancer: {idleTimeoutSeconds: 30}\nkeepalive: {intervalSeconds: 10}"),
            10
        );
        // A 6 s balancer: probes every second, the first after 3 s, so the second retry of a
        // lost probe still comes after 5 s.
        assert_eq!(interval("loadBalancer: {idleTimeoutSeconds: 6}"), 1);
        assert_eq!(idle("loadBalancer: {idleTimeoutSeconds: 6}"), 3);
        assert_eq!(idle("loadBalancer: {idleTimeoutSeconds: 5}"), 2);
        assert_eq!(derived_idle_seconds(100_000, 10), MAX_SECONDS);
        for timeout in 2..2000 {
            for interval in [1, 5, 10, 75] {
                let idle = derived_idle_seconds(timeout, interval);
                assert!(
                    idle >= 1 && i64::from(idle) < i64::from(timeout),
                    "{timeout}"
                );
            }
        }
    }

    #[test]
    fn the_origin_says_where_the_value_came_from() {
        let derived = keepalive_in_force(&spec(
            "loadBalancer: {provider: azure, idleTimeoutSeconds: 240}",
        ))
        .unwrap();
        assert_eq!(derived.keepalive.idle_seconds, 120);
        assert_eq!(derived.origin.reason(), "DerivedFromLoadBalancer");
        assert!(
            derived
                .describe()
                .contains("derived from loadBalancer.idleTimeoutSeconds=240"),
            "{}",
            derived.describe()
        );

        let default = keepalive_in_force(&spec("loadBalancer: {provider: azure}")).unwrap();
        assert_eq!(default.origin.reason(), "DerivedFromProviderDefault");
        assert!(
            default
                .describe()
                .contains("derived from provider azure default 240 s")
        );

        let given = keepalive_in_force(&spec(
            "keepalive: {idleSeconds: 45, intervalSeconds: 5, probes: 4}",
        ))
        .unwrap();
        assert_eq!(
            given.keepalive,
            Keepalive {
                idle_seconds: 45,
                interval_seconds: 5,
                probes: 4
            }
        );
        assert_eq!(given.origin, KeepaliveOrigin::SetInSpec);
        assert!(given.describe().contains("set in spec"));
    }

    #[test]
    fn an_idle_time_the_balancer_would_beat_is_refused_with_the_fix() {
        let err = keepalive_in_force(&spec(
            "keepalive: {idleSeconds: 300}\nloadBalancer: {provider: azure}",
        ))
        .unwrap_err();
        assert!(
            err.0
                .contains("not below the azure default idle timeout of 240 s"),
            "{err}"
        );
        assert!(err.0.contains("lower keepalive.idleSeconds"), "{err}");

        let err = keepalive_in_force(&spec("loadBalancer: {idleTimeoutSeconds: 1}")).unwrap_err();
        assert!(
            err.0.contains("raise loadBalancer.idleTimeoutSeconds"),
            "{err}"
        );

        let err = keepalive_in_force(&spec("keepalive: {probes: 200}")).unwrap_err();
        assert!(err.0.contains("probes in 1-127"), "{err}");
    }

    #[test]
    fn host_network_or_the_flag_needs_node_sysctls() {
        assert!(!needs_node_sysctls(&spec("")));
        assert!(needs_node_sysctls(&spec("hostNetwork: true")));
        assert!(needs_node_sysctls(&spec("keepalive: {nodeSysctls: true}")));
    }
}
