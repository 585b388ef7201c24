//! `spec.limits`: the server's session limits, timeouts and login lockout.
//!
//! Every field is optional: absent, the server's own default applies (the `Limits` of the
//! server's config format), so defaults live in one place and the CRD pins none of them. The
//! literals in the rules below are those defaults; a test keeps them in step.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Session limits, timeouts and the login lockout of every server pod. Each pod enforces them on
/// its own, so with several replicas the totals are per replica. Changes reach new sessions within
/// seconds, without a restart; running sessions keep the values they started with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.maxSessionsPerAddress) || self.maxSessionsPerAddress <= (has(self.maxSessions) ? self.maxSessions : 2000)")
        .message(kube::core::cel::Message::Expression(
            "'limits.maxSessionsPerAddress %d exceeds limits.maxSessions %d: one address cannot have more sessions than the server, so lower maxSessionsPerAddress or raise maxSessions (default 2000)'.format([self.maxSessionsPerAddress, has(self.maxSessions) ? self.maxSessions : 2000])".into()))
        .field_path(".maxSessionsPerAddress"),
)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Sessions one pod serves at a time; one more gets `421`. Default 2000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("limits.maxSessions must be between 1 and 100000"))]
    pub max_sessions: Option<i32>,

    /// Sessions one client address may hold on one pod; one more gets `421`. Behind a balancer
    /// that masquerades, every client has the balancer's address. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("limits.maxSessionsPerAddress must be between 1 and 100000"))]
    pub max_sessions_per_address: Option<i32>,

    /// A session with no command for this long is closed, never during a transfer; a data
    /// connection that makes no progress for this long is dropped. Default 900.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("limits.idleTimeoutSeconds must be between 1 and 86400 (one day)"))]
    pub idle_timeout_seconds: Option<i32>,

    /// A connection not logged in this long after it connected is closed. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("limits.loginTimeoutSeconds must be between 1 and 3600 (one hour)"))]
    pub login_timeout_seconds: Option<i32>,

    /// How long a passive listener waits for the client's data connection. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("limits.dataConnectTimeoutSeconds must be between 1 and 3600 (one hour)"))]
    pub data_connect_timeout_seconds: Option<i32>,

    /// Failed logins from one client address (IPv6: one /64), or for one user name, within
    /// `loginFailureWindowSeconds` that lock it out; 0 turns the lockout off. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("limits.loginFailuresBeforeLockout must be between 0 (no lockout) and 1000"))]
    pub login_failures_before_lockout: Option<i32>,

    /// The window failed logins are counted in. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("limits.loginFailureWindowSeconds must be between 1 and 86400 (one day)"))]
    pub login_failure_window_seconds: Option<i32>,

    /// How long a locked-out address or user name gets `421`. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("limits.lockoutSeconds must be between 1 and 86400 (one day)"))]
    pub lockout_seconds: Option<i32>,

    /// Every failed login is answered this long after its `PASS`, whatever the verification
    /// cost, which slows guessing. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 30000").message("limits.loginFailureDelayMillis must be between 0 and 30000 (30 s)"))]
    pub login_failure_delay_millis: Option<i32>,
}

#[cfg(test)]
mod tests {
    use crate::api::FtpServer;
    use crate::ftp::config::Limits;

    fn with_limits(limits: &str) -> FtpServer {
        serde_yaml::from_str(&format!(
            "metadata: {{name: x}}\nspec: {{passivePorts: {{min: 30000, max: 30009}}, limits: {limits}}}\n"
        ))
        .unwrap()
    }

    /// The messages of the rules `limits` breaks; empty when it is valid.
    fn broken_rules(limits: &str) -> String {
        match with_limits(limits).validate_cel() {
            Ok(()) => String::new(),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn every_limit_within_its_range_passes() {
        assert_eq!(broken_rules("{}"), "");
        assert_eq!(
            broken_rules(
                "{maxSessions: 100, maxSessionsPerAddress: 100, idleTimeoutSeconds: 1, \
                 loginTimeoutSeconds: 3600, dataConnectTimeoutSeconds: 1, \
                 loginFailuresBeforeLockout: 0, loginFailureWindowSeconds: 86400, \
                 lockoutSeconds: 1, loginFailureDelayMillis: 0}"
            ),
            ""
        );
    }

    #[test]
    fn each_limit_out_of_range_is_rejected_with_its_name() {
        for (limits, message) in [
            (
                "{maxSessions: 0}",
                "limits.maxSessions must be between 1 and 100000",
            ),
            (
                "{maxSessions: 100001}",
                "limits.maxSessions must be between 1",
            ),
            (
                "{maxSessionsPerAddress: 0}",
                "limits.maxSessionsPerAddress must be between 1",
            ),
            (
                "{idleTimeoutSeconds: 0}",
                "limits.idleTimeoutSeconds must be between 1 and 86400",
            ),
            (
                "{loginTimeoutSeconds: 0}",
                "limits.loginTimeoutSeconds must be between 1 and 3600",
            ),
            (
                "{dataConnectTimeoutSeconds: 0}",
                "limits.dataConnectTimeoutSeconds must be between 1",
            ),
            (
                "{dataConnectTimeoutSeconds: 3601}",
                "limits.dataConnectTimeoutSeconds must be between 1",
            ),
            (
                "{loginFailuresBeforeLockout: -1}",
                "limits.loginFailuresBeforeLockout must be between 0",
            ),
            (
                "{loginFailureWindowSeconds: 0}",
                "limits.loginFailureWindowSeconds must be between 1",
            ),
            (
                "{lockoutSeconds: 0}",
                "limits.lockoutSeconds must be between 1 and 86400",
            ),
            (
                "{loginFailureDelayMillis: 30001}",
                "limits.loginFailureDelayMillis must be between 0 and 30000",
            ),
        ] {
            let errors = broken_rules(limits);
            assert!(
                errors.contains(message),
                "{limits}: expected {message:?}, got {errors:?}"
            );
        }
    }

    #[test]
    fn per_address_above_the_total_is_rejected_against_the_total_in_force() {
        let errors = broken_rules("{maxSessions: 10, maxSessionsPerAddress: 11}");
        assert!(
            errors.contains("limits.maxSessionsPerAddress 11 exceeds limits.maxSessions 10"),
            "{errors}"
        );
        // Without maxSessions the server's default total is what it must fit under.
        let errors = broken_rules("{maxSessionsPerAddress: 2001}");
        assert!(
            errors.contains("limits.maxSessionsPerAddress 2001 exceeds limits.maxSessions 2000"),
            "{errors}"
        );
        assert_eq!(broken_rules("{maxSessionsPerAddress: 2000}"), "");
        // A total below the default per-address limit is fine: the total caps them both.
        assert_eq!(broken_rules("{maxSessions: 10}"), "");
    }

    #[test]
    fn the_rules_default_total_is_the_servers() {
        assert_eq!(Limits::default().max_sessions, 2000);
    }
}
