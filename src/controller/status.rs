//! The FtpServer's status, computed from what was applied and observed (kstatus conventions).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::api::{FtpServer, FtpServerStatus, NodeKeepaliveStatus};
use crate::keepalive::KeepaliveInForce;

use super::build::selector_labels;
use super::health::{WorkloadSummary, workload_problem};
use super::observe::Observed;
use super::probe::results::{passive_reachable, sftp_reachable};
use super::sftp_host_keys::sftp_enabled;
use crate::api::conditions::{
    KEEPALIVE_CONFIGURED, LOAD_BALANCER_READY, PASSIVE_REACHABLE, READY, RECONCILING,
    SFTP_REACHABLE, STALLED,
};
use crate::process::errors::{ApplyError, Invalid};

/// What one reconcile did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The user (or the cluster's admin) must fix something; the message says what. Nothing
    /// more was applied.
    Stalled(Invalid),
    /// Applying failed in a way that may pass (a timeout, a conflict); retried with backoff.
    Failed(Invalid),
    Applied {
        public_address: Option<String>,
        passive_ports: String,
        /// The StatefulSet was just created or changed, so its cached status is stale.
        workload_changed: bool,
        /// The keepalive rendered into the config and the pod sysctls.
        keepalive: KeepaliveInForce,
        /// The node tuner's progress; None when the server needs no node sysctls.
        node_keepalive: Option<NodeKeepaliveStatus>,
    },
}

/// How a failed API call shows in status: a refusal a person must resolve (RBAC, a quota, an
/// admission policy, an invalid object) stalls with the apiserver's words; anything else
/// (timeouts, conflicts, an apiserver restarting) is retried.
pub fn api_failure(error: &ApplyError) -> Outcome {
    let ApplyError {
        verb,
        kind,
        name,
        source,
    } = error;
    match source {
        kube::Error::Api(status) if status.code == 403 => Outcome::Stalled(Invalid {
            reason: "Forbidden",
            message: format!(
                "the apiserver does not let the operator {verb} {kind} {name}: {}; grant the \
                 operator's ServiceAccount that access (the chart's RBAC) or lift the quota or \
                 policy it names (retried with backoff)",
                status.message
            ),
        }),
        kube::Error::Api(status) if matches!(status.code, 400 | 422) => Outcome::Stalled(Invalid {
            reason: "Rejected",
            message: format!(
                "the apiserver rejected {kind} {name}: {}; fix what it names (an admission \
                     policy, or a hand edit of the {kind} that conflicts with the operator's \
                     fields) (retried with backoff)",
                status.message
            ),
        }),
        // What the budget check (budgets.rs) reports before applying, when it could not run (a
        // namespaced install lists no Services cluster-wide): the apiserver answers 500.
        kube::Error::Api(status)
            if kind == "Service" && status.message.contains("failed to allocate a nodePort") =>
        {
            Outcome::Stalled(Invalid {
                reason: super::budgets::NODE_PORTS_EXHAUSTED,
                message: format!(
                    "the apiserver cannot allocate NodePorts for Service {name}: {}; shrink \
                     passivePorts, free NodePorts, or use a provider whose balancer needs none \
                     (allocateLoadBalancerNodePorts: false, loadBalancer.provider: aws) \
                     (retried with backoff)",
                    status.message
                ),
            })
        }
        other => Outcome::Failed(Invalid {
            reason: "ApiError",
            message: format!("cannot {verb} {kind} {name}: {other}"),
        }),
    }
}

/// How long the Service's balancer has been without an address, when it has none: since the
/// Service was created or since `LoadBalancerReady` last turned False, whichever is later.
pub fn balancer_waiting(server: &FtpServer, observed: &Observed, now: &Time) -> Option<Duration> {
    if observed.load_balancer_address().is_some() {
        return None;
    }
    let created = observed
        .service
        .as_ref()?
        .metadata
        .creation_timestamp
        .as_ref()?;
    let previous = server.status.as_ref();
    let lost = previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == LOAD_BALANCER_READY))
        .filter(|c| c.status == "False")
        .map(|c| &c.last_transition_time);
    let since = lost.map_or(created.0, |lost| lost.0.max(created.0));
    Some(
        now.0
            .duration_since(since)
            .unsigned_abs()
            .min(Duration::from_secs(365 * 86400)),
    )
}

pub fn desired_status(
    server: &FtpServer,
    outcome: &Outcome,
    observed: &Observed,
    now: Time,
    balancer_timeout: Duration,
) -> FtpServerStatus {
    let generation = server.metadata.generation;
    let previous = server.status.clone().unwrap_or_default();
    let workload = observed.workload();
    let ready_replicas = workload.as_ref().map_or(0, |w| w.ready);
    let balancer = observed.load_balancer_address();
    let balancer_overdue = balancer_waiting(server, observed, &now)
        .filter(|waited| *waited >= balancer_timeout)
        .map(|_| {
            format!(
                "the Service {} has had no load-balancer address for over {} s: check that the \
                 cluster runs a load-balancer controller (the cloud's, MetalLB) that serves this \
                 Service, and its events (kubectl describe service {})",
                server.name_any(),
                balancer_timeout.as_secs(),
                server.name_any()
            )
        });

    let mut status = FtpServerStatus {
        observed_generation: generation,
        public_address: previous.public_address.clone(),
        passive_ports: previous.passive_ports.clone(),
        ready_replicas: Some(ready_replicas),
        replicas: Some(workload.as_ref().map_or(0, |w| w.replicas)),
        selector: Some(
            selector_labels(server)
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        conditions: Vec::new(),
        node_keepalive: previous.node_keepalive.clone(),
    };

    let lb_condition = match (&balancer, &balancer_overdue) {
        (Some(address), _) => (
            true,
            "AddressAssigned",
            format!("load balancer at {address}"),
        ),
        (None, Some(overdue)) => (false, "AddressTimeout", overdue.clone()),
        (None, None) => (
            false,
            "Pending",
            "waiting for the Service's load balancer to get an address".to_owned(),
        ),
    };

    let keepalive_condition = match outcome {
        Outcome::Stalled(invalid) | Outcome::Failed(invalid) => (
            false,
            "NotApplied",
            format!("not applied: {}", invalid.message),
        ),
        Outcome::Applied {
            keepalive,
            node_keepalive,
            ..
        } => {
            status.node_keepalive = node_keepalive.clone();
            keepalive_configured(keepalive, node_keepalive.as_ref())
        }
    };

    let (stalled, reconciling, ready) = match outcome {
        Outcome::Stalled(invalid) => (
            (true, invalid.reason, invalid.message.clone()),
            (
                false,
                "Stalled",
                "cannot proceed until the spec is fixed".to_owned(),
            ),
            (false, invalid.reason, invalid.message.clone()),
        ),
        Outcome::Failed(failure) => (
            (false, "AsExpected", String::new()),
            (
                true,
                failure.reason,
                format!("retrying with backoff: {}", failure.message),
            ),
            (false, failure.reason, failure.message.clone()),
        ),
        Outcome::Applied {
            public_address,
            passive_ports,
            workload_changed,
            ..
        } => {
            status.public_address = public_address.clone();
            status.passive_ports = Some(passive_ports.clone());
            let waiting = waiting_for(
                server,
                workload.as_ref(),
                *workload_changed,
                balancer.is_some(),
                public_address.is_some(),
            );
            let pods: Vec<&Pod> = observed.pods.iter().map(AsRef::as_ref).collect();
            let problem = workload_problem(workload.as_ref(), &pods, server.spec.image.as_deref());
            let not_stalled = (false, "AsExpected", String::new());
            match (problem, waiting) {
                (Some(problem), _) if problem.stalled => (
                    (true, problem.reason, problem.message.clone()),
                    (
                        false,
                        "Stalled",
                        "cannot proceed until this is fixed".to_owned(),
                    ),
                    (false, problem.reason, problem.message),
                ),
                (Some(problem), _) => (
                    not_stalled,
                    (true, problem.reason, problem.message.clone()),
                    (false, problem.reason, problem.message),
                ),
                (None, Some(_)) if balancer.is_none() && balancer_overdue.is_some() => {
                    let message = balancer_overdue.clone().unwrap_or_default();
                    (
                        (true, "LoadBalancerAddressTimeout", message.clone()),
                        (
                            false,
                            "Stalled",
                            "cannot proceed until this is fixed".to_owned(),
                        ),
                        (false, "LoadBalancerAddressTimeout", message),
                    )
                }
                (None, Some(waiting)) => (
                    not_stalled,
                    (true, "Progressing", waiting.clone()),
                    (false, "Progressing", waiting),
                ),
                (None, None) => (
                    not_stalled,
                    (false, "Ready", String::new()),
                    (
                        true,
                        "Ready",
                        format!(
                            "{ready_replicas} replica(s) serving at {}",
                            public_address.as_deref().unwrap_or_default()
                        ),
                    ),
                ),
            }
        }
    };

    for (type_, (is_true, reason, message)) in [
        (READY, ready),
        (RECONCILING, reconciling),
        (STALLED, stalled),
        (LOAD_BALANCER_READY, lb_condition),
        (KEEPALIVE_CONFIGURED, keepalive_condition),
    ] {
        status.conditions.push(condition(
            &previous.conditions,
            type_,
            is_true,
            reason,
            message,
            generation,
            &now,
        ));
    }
    // Ready does not wait for it: the probe runs from inside the cluster and on its own
    // schedule, so it can neither vouch for the cloud's path nor hold up a rollout; it reports
    // what a client would meet (docs/probe.md).
    let pods: Vec<&Pod> = observed.pods.iter().map(AsRef::as_ref).collect();
    let ready_replicas = super::probe::ready_replicas(&pods);
    let address = status.public_address.as_deref();
    let mut reached = vec![(
        PASSIVE_REACHABLE,
        passive_reachable(&observed.probe, address, &ready_replicas),
    )];
    if sftp_enabled(server) {
        reached.push((
            SFTP_REACHABLE,
            sftp_reachable(&observed.probe, address, &ready_replicas),
        ));
    }
    for (type_, (reach_status, reason, message)) in reached {
        status.conditions.push(condition_with_status(
            &previous.conditions,
            type_,
            reach_status,
            reason,
            message,
            generation,
            &now,
        ));
    }
    status
}

/// `KeepaliveConfigured`: the values in force and their origin; with node sysctls, True only once
/// every node the pods may run on is tuned. Ready does not wait for it: the server's own socket
/// options already keep connections alive, whatever the nodes say.
fn keepalive_configured(
    keepalive: &KeepaliveInForce,
    nodes: Option<&NodeKeepaliveStatus>,
) -> (bool, &'static str, String) {
    let described = keepalive.describe();
    let Some(nodes) = nodes else {
        return (
            true,
            keepalive.origin.reason(),
            format!("{described}; set on the server's sockets and the pod's sysctls"),
        );
    };
    let mut message = format!(
        "{described}; node sysctls: {} tuned, {} pending, {} failed",
        nodes.tuned, nodes.pending, nodes.failed
    );
    if !nodes.failures.is_empty() {
        message.push_str(&format!(" ({})", nodes.failures.join("; ")));
    }
    if nodes.failed > 0 {
        (false, "NodeTuningFailed", message)
    } else if nodes.pending > 0 {
        (false, "NodeTuningPending", message)
    } else if nodes.tuned == 0 {
        message.push_str(": no node matches the server's node selector");
        (false, "NoMatchingNodes", message)
    } else {
        (true, keepalive.origin.reason(), message)
    }
}

/// The first thing the server still waits for, or None when it is ready.
fn waiting_for(
    server: &FtpServer,
    workload: Option<&WorkloadSummary>,
    workload_changed: bool,
    balancer_ready: bool,
    address_known: bool,
) -> Option<String> {
    let wanted = server.spec.replicas;
    let rolled_out = workload
        .filter(|_| !workload_changed)
        .is_some_and(|w| w.rolled_out && w.ready >= wanted);
    if !rolled_out {
        let ready = workload.map_or(0, |w| w.ready);
        return Some(format!(
            "waiting for the StatefulSet: {ready}/{wanted} pods ready and updated"
        ));
    }
    if !balancer_ready {
        return Some("waiting for the Service's load balancer to get an address".to_owned());
    }
    if !address_known {
        return Some("waiting for a public address".to_owned());
    }
    None
}

/// A condition, keeping the previous transition time when its status did not change.
pub(super) fn condition(
    previous: &[Condition],
    type_: &str,
    is_true: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if is_true { "True" } else { "False" };
    condition_with_status(previous, type_, status, reason, message, generation, now)
}

/// A condition of any status (`True`, `False`, `Unknown`), keeping the previous transition time
/// when its status did not change.
pub(super) fn condition_with_status(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_apiservers_full_node_port_range_stalls_with_the_fix() {
        let error = ApplyError::of::<k8s_openapi::api::core::v1::Service>(
            "big",
            kube::Error::Api(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure",
                    "code": 500,
                    "reason": "InternalError",
                    "message": "Internal error occurred: failed to allocate a nodePort: range is full",
                }))
                .unwrap(),
            ),
        );
        let Outcome::Stalled(invalid) = api_failure(&error) else {
            panic!("not stalled");
        };
        assert_eq!(invalid.reason, "NodePortsExhausted");
        assert!(
            invalid
                .message
                .contains("cannot allocate NodePorts for Service big")
                && invalid.message.contains("range is full")
                && invalid.message.contains("shrink passivePorts"),
            "{}",
            invalid.message
        );
    }
    use crate::controller::build::fixtures::{self, server};

    fn now() -> Time {
        Time("2026-01-01T00:00:00Z".parse().unwrap())
    }

    const BALANCER_TIMEOUT: Duration = Duration::from_secs(300);

    fn desired_status(
        server: &FtpServer,
        outcome: &Outcome,
        observed: &Observed,
        now: Time,
    ) -> FtpServerStatus {
        super::desired_status(server, outcome, observed, now, BALANCER_TIMEOUT)
    }

    fn condition_of<'a>(status: &'a FtpServerStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn observed(ready: i32, with_ingress: bool) -> Observed {
        let set: k8s_openapi::api::apps::v1::StatefulSet = serde_yaml::from_str(&format!(
            "metadata: {{name: minimal, generation: 2}}\n\
             spec: {{replicas: 1, selector: {{}}, template: {{}}}}\n\
             status: {{observedGeneration: 2, replicas: 1, updatedReplicas: 1, readyReplicas: {ready}, \
             currentRevision: r1, updateRevision: r1}}"
        ))
        .unwrap();
        let ingress = if with_ingress {
            "[{ip: 20.50.1.7}]"
        } else {
            "[]"
        };
        let service = serde_yaml::from_str(&format!(
            "metadata: {{name: minimal}}\nstatus: {{loadBalancer: {{ingress: {ingress}}}}}"
        ))
        .unwrap();
        Observed {
            stateful_set: Some(Arc::new(set)),
            service: Some(Arc::new(service)),
            ..Observed::default()
        }
    }

    fn derived_keepalive() -> KeepaliveInForce {
        crate::keepalive::keepalive_in_force(&server(fixtures::MINIMAL).spec).unwrap()
    }

    fn applied(address: Option<&str>) -> Outcome {
        Outcome::Applied {
            public_address: address.map(str::to_owned),
            passive_ports: "30000-30002".into(),
            workload_changed: false,
            keepalive: derived_keepalive(),
            node_keepalive: None,
        }
    }

    #[test]
    fn ready_when_pods_are_ready_and_the_balancer_has_an_address() {
        let server = server(fixtures::MINIMAL);
        let status = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            now(),
        );
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.public_address.as_deref(), Some("20.50.1.7"));
        assert_eq!(status.passive_ports.as_deref(), Some("30000-30002"));
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.replicas, Some(1));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=minimal,app.kubernetes.io/name=ftp-server")
        );
        assert_eq!(condition_of(&status, READY).status, "True");
        assert_eq!(condition_of(&status, RECONCILING).status, "False");
        assert_eq!(condition_of(&status, STALLED).status, "False");
        assert_eq!(condition_of(&status, LOAD_BALANCER_READY).status, "True");
    }

    #[test]
    fn sftp_reachable_only_on_a_server_with_sftp() {
        let mut server = server(fixtures::MINIMAL);
        let has =
            |status: &FtpServerStatus| status.conditions.iter().any(|c| c.type_ == SFTP_REACHABLE);
        let status = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            now(),
        );
        assert!(!has(&status), "no SFTP, no SftpReachable");
        server.spec.sftp = Some(crate::api::SftpSpec {
            enabled: true,
            port: 22,
        });
        let status = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            now(),
        );
        // The controller in these tests runs without a probe.
        let sftp = condition_of(&status, SFTP_REACHABLE);
        assert_eq!(
            (sftp.status.as_str(), sftp.reason.as_str()),
            ("Unknown", "ProbeDisabled")
        );
    }

    #[test]
    fn reconciling_while_pods_or_balancer_are_pending() {
        let server = server(fixtures::MINIMAL);
        let status = desired_status(&server, &applied(None), &observed(0, false), now());
        assert_eq!(condition_of(&status, READY).status, "False");
        let reconciling = condition_of(&status, RECONCILING);
        assert_eq!(reconciling.status, "True");
        assert!(
            reconciling.message.contains("0/1 pods"),
            "{}",
            reconciling.message
        );

        let status = desired_status(&server, &applied(None), &observed(1, false), now());
        assert!(
            condition_of(&status, RECONCILING)
                .message
                .contains("load balancer")
        );
        assert_eq!(condition_of(&status, LOAD_BALANCER_READY).status, "False");
    }

    #[test]
    fn a_just_changed_workload_is_not_ready_yet() {
        let server = server(fixtures::MINIMAL);
        let outcome = Outcome::Applied {
            public_address: Some("20.50.1.7".into()),
            passive_ports: "30000-30002".into(),
            workload_changed: true,
            keepalive: derived_keepalive(),
            node_keepalive: None,
        };
        let status = desired_status(&server, &outcome, &observed(1, true), now());
        assert_eq!(condition_of(&status, READY).status, "False");
    }

    #[test]
    fn stalled_carries_the_fix_and_keeps_the_last_applied_values() {
        let mut server = server(fixtures::MINIMAL);
        server.status = Some(FtpServerStatus {
            public_address: Some("20.50.1.7".into()),
            passive_ports: Some("30000-30002".into()),
            ..FtpServerStatus::default()
        });
        let invalid = Invalid {
            reason: "SecretMissing",
            message: "Secret ftp-users ... does not exist: create it".into(),
        };
        let status = desired_status(
            &server,
            &Outcome::Stalled(invalid),
            &observed(1, true),
            now(),
        );
        let stalled = condition_of(&status, STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "SecretMissing")
        );
        assert!(stalled.message.contains("create it"));
        assert_eq!(condition_of(&status, READY).status, "False");
        assert_eq!(condition_of(&status, RECONCILING).status, "False");
        assert_eq!(status.public_address.as_deref(), Some("20.50.1.7"));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_times_so_it_compares_equal() {
        let mut server = server(fixtures::MINIMAL);
        let first = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            now(),
        );
        server.status = Some(first.clone());
        let later = Time("2026-01-01T01:00:00Z".parse().unwrap());
        let second = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            later,
        );
        assert_eq!(first, second);
    }

    #[test]
    fn keepalive_configured_names_the_values_and_their_origin() {
        let server = server(fixtures::MINIMAL);
        let status = desired_status(
            &server,
            &applied(Some("20.50.1.7")),
            &observed(1, true),
            now(),
        );
        let keepalive = condition_of(&status, KEEPALIVE_CONFIGURED);
        assert_eq!(keepalive.status, "True");
        assert_eq!(keepalive.reason, "DerivedFromProviderDefault");
        assert!(
            keepalive.message.contains(
                "idle 450 s, interval 10 s, 6 probes (derived from provider generic default 900 s)"
            ),
            "{}",
            keepalive.message
        );
        assert_eq!(status.node_keepalive, None);
    }

    #[test]
    fn node_tuning_progress_shows_in_the_condition_and_the_summary() {
        let server = server(fixtures::MINIMAL);
        let with_nodes = |nodes: NodeKeepaliveStatus| Outcome::Applied {
            public_address: Some("20.50.1.7".into()),
            passive_ports: "30000-30002".into(),
            workload_changed: false,
            keepalive: derived_keepalive(),
            node_keepalive: Some(nodes),
        };
        let cases = [
            (
                (2, 0, 0),
                "True",
                "DerivedFromProviderDefault",
                "2 tuned, 0 pending, 0 failed",
            ),
            (
                (1, 1, 0),
                "False",
                "NodeTuningPending",
                "1 tuned, 1 pending",
            ),
            (
                (1, 0, 1),
                "False",
                "NodeTuningFailed",
                "(kwok-1: read-only file system)",
            ),
            ((0, 0, 0), "False", "NoMatchingNodes", "no node matches"),
        ];
        for ((tuned, pending, failed), state, reason, text) in cases {
            let nodes = NodeKeepaliveStatus {
                tuned,
                pending,
                failed,
                failures: (failed > 0)
                    .then(|| "kwok-1: read-only file system".to_owned())
                    .into_iter()
                    .collect(),
            };
            let status = desired_status(
                &server,
                &with_nodes(nodes.clone()),
                &observed(1, true),
                now(),
            );
            let keepalive = condition_of(&status, KEEPALIVE_CONFIGURED);
            assert_eq!(
                (keepalive.status.as_str(), keepalive.reason.as_str()),
                (state, reason)
            );
            assert!(keepalive.message.contains(text), "{}", keepalive.message);
            assert_eq!(status.node_keepalive, Some(nodes));
            // Ready does not wait for the nodes: the server's sockets keep connections alive.
            assert_eq!(condition_of(&status, READY).status, "True");
        }
    }
}
