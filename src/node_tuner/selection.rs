//! Which FtpServers want node sysctls on a node, and what the node must hold for all of them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use kube::{Resource, ResourceExt};

use crate::api::FtpServer;
use crate::keepalive::{keepalive_in_force, needs_node_sysctls};

use super::sysctl::KeepaliveSysctls;

/// The well-known label every kubelet sets to its operating system.
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const LINUX: &str = "linux";

/// Labels that mark a node no DaemonSet pod really runs on, so no agent could tune it:
/// - `type=virtual-kubelet`: what virtual-kubelet registers its nodes with
///   (virtual-kubelet/virtual-kubelet, cmd/virtual-kubelet/commands/root/node.go), as do the
///   providers built on it (AKS virtual nodes on ACI, Admiralty, Liqo).
/// - `type=kwok`: kwok's simulated nodes (kwok.sigs.k8s.io, site/static/examples/node.yaml).
/// - `eks.amazonaws.com/compute-type=fargate`: EKS Fargate's per-pod nodes, where DaemonSets
///   do not run (EKS user guide, "AWS Fargate considerations").
pub const VIRTUAL_NODE_LABELS: [(&str, &[&str]); 2] = [
    ("type", &["virtual-kubelet", "kwok"]),
    ("eks.amazonaws.com/compute-type", &["fargate"]),
];

/// Whether the tuner DaemonSet may place an agent on the node by its labels: Linux and not
/// virtual (the DaemonSet's nodeSelector and affinity say the same). A node it cannot run on is
/// never tuned, so it is left out of a server's pending count.
pub fn tuner_may_run_on(node: &impl Resource) -> bool {
    let labels = node.labels();
    labels.get(OS_LABEL).map(String::as_str) == Some(LINUX)
        && VIRTUAL_NODE_LABELS.iter().all(|(key, values)| {
            labels
                .get(*key)
                .is_none_or(|value| !values.contains(&value.as_str()))
        })
}

/// `namespace/name`: how node reports name a server.
pub fn server_key(server: &FtpServer) -> String {
    format!(
        "{}/{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    )
}

/// What a node must hold, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub values: KeepaliveSysctls,
    /// Keys of the servers these values serve, sorted.
    pub servers: Vec<String>,
}

/// The keepalive sysctls a server asks of the nodes under its pods; None when it asks nothing
/// (no node sysctls, being deleted, or a spec the controller refuses anyway).
pub fn wanted_by(server: &FtpServer) -> Option<KeepaliveSysctls> {
    if server.metadata.deletion_timestamp.is_some() || !needs_node_sysctls(&server.spec) {
        return None;
    }
    let keepalive = keepalive_in_force(&server.spec).ok()?.keepalive;
    Some(KeepaliveSysctls {
        time: keepalive.idle_seconds,
        intvl: keepalive.interval_seconds,
        probes: keepalive.probes,
    })
}

/// Merges what every server whose pods may run on `node` wants: the smallest idle time (and the
/// smallest interval and probe count) wins, so every server's connections are kept alive.
pub fn wanted_on_node<'a>(
    servers: impl IntoIterator<Item = &'a FtpServer>,
    node: &impl NodeView,
) -> Option<Wanted> {
    let mut merged: Option<Wanted> = None;
    for server in servers {
        let Some(values) = wanted_by(server) else {
            continue;
        };
        if !pods_may_run_on(server, node) {
            continue;
        }
        let key = server_key(server);
        merged = Some(match merged {
            None => Wanted {
                values,
                servers: vec![key],
            },
            Some(mut wanted) => {
                wanted.values = wanted.values.min(values);
                wanted.servers.push(key);
                wanted
            }
        });
    }
    merged.map(|mut wanted| {
        wanted.servers.sort();
        wanted
    })
}

/// A Node as the selection reads it: labels and name, and its taints where the view has them.
pub trait NodeView: Resource {
    fn taints(&self) -> &[Taint];
}

impl NodeView for Node {
    fn taints(&self) -> &[Taint] {
        self.spec
            .as_ref()
            .and_then(|spec| spec.taints.as_deref())
            .unwrap_or_default()
    }
}

/// Whether the scheduler may place the server's pods on `node`: its nodeSelector, the required
/// node affinity (terms OR'd, expressions AND'd), and its tolerations against the node's
/// `NoSchedule` and `NoExecute` taints. A node the pods cannot go to is neither tuned for the
/// server nor waited for (a tainted control-plane or GPU node would otherwise stay pending).
pub fn pods_may_run_on(server: &FtpServer, node: &impl NodeView) -> bool {
    labels_admit(server, node) && tolerates(&server.spec.tolerations, node.taints())
}

/// Whether `tolerations` let a pod be scheduled and stay on a node with `taints`, by the
/// scheduler's rules: `PreferNoSchedule` never keeps a pod off; a toleration with an empty key
/// and `Exists` tolerates everything; an empty effect matches every effect.
pub fn tolerates(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|taint| taint.effect == "NoSchedule" || taint.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| toleration_matches(t, taint)))
}

fn toleration_matches(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

fn labels_admit(server: &FtpServer, node: &impl Resource) -> bool {
    let labels = node.labels();
    let selector_matches = server
        .spec
        .node_selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required_terms = server
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|selector| selector.node_selector_terms.as_slice());
    let affinity_matches = match required_terms {
        None => true,
        Some(terms) => terms
            .iter()
            .any(|term| term_matches(term, labels, &node.name_any())),
    };
    selector_matches && affinity_matches
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    let has_requirements = expressions.clone().next().is_some() || fields.clone().next().is_some();
    // An empty term matches no node, as in the scheduler.
    has_requirements
        && expressions
            .clone()
            .all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields.clone().all(|r| {
            let name = name.to_owned();
            requirement_matches(r, (r.key == "metadata.name").then_some(&name))
        })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(v), Some(limit)) if v > limit)
        }
        "Lt" => {
            matches!((value.and_then(|v| number(v)), values.first().and_then(|v| number(v))), (Some(v), Some(limit)) if v < limit)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn server(name: &str, spec: &str) -> FtpServer {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ftp}}\nspec:\n  passivePorts: {{min: 20000, max: 20001}}\n{spec}"
        ))
        .unwrap()
    }

    fn node(labels: &str) -> Node {
        serde_yaml::from_str(&format!("metadata: {{name: node-a, labels: {labels}}}")).unwrap()
    }

    #[test]
    fn only_servers_asking_for_node_sysctls_count_and_the_smallest_values_win() {
        let servers = [
            server("plain", "  keepalive: {idleSeconds: 20}"),
            server(
                "a",
                "  keepalive: {idleSeconds: 60, intervalSeconds: 5, probes: 9, nodeSysctls: true}",
            ),
            server(
                "b",
                "  hostNetwork: true\n  keepalive: {idleSeconds: 90, intervalSeconds: 10, probes: 3}",
            ),
        ];
        let wanted = wanted_on_node(&servers, &node("{}")).unwrap();
        assert_eq!(
            wanted.values,
            KeepaliveSysctls {
                time: 60,
                intvl: 5,
                probes: 3
            }
        );
        assert_eq!(wanted.servers, vec!["ftp/a", "ftp/b"]);
        assert_eq!(wanted_on_node(&servers[..1], &node("{}")), None);
    }

    #[test]
    fn derived_idle_times_are_used_when_the_spec_gives_none() {
        let servers = [server(
            "azure",
            "  keepalive: {nodeSysctls: true}\n  loadBalancer: {provider: azure}",
        )];
        assert_eq!(
            wanted_on_node(&servers, &node("{}")).unwrap().values,
            KeepaliveSysctls {
                time: 120,
                intvl: 10,
                probes: 6
            }
        );
    }

    #[test]
    fn servers_being_deleted_want_nothing() {
        let mut deleting = server("gone", "  hostNetwork: true");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert_eq!(wanted_on_node([&deleting], &node("{}")), None);
    }

    #[test]
    fn the_tuner_runs_on_linux_nodes_that_are_not_virtual() {
        assert!(tuner_may_run_on(&node("{kubernetes.io/os: linux}")));
        assert!(!tuner_may_run_on(&node("{kubernetes.io/os: windows}")));
        assert!(!tuner_may_run_on(&node("{}")));
        assert!(!tuner_may_run_on(&node(
            "{kubernetes.io/os: linux, type: virtual-kubelet}"
        )));
        assert!(!tuner_may_run_on(&node(
            "{kubernetes.io/os: linux, type: kwok}"
        )));
        assert!(!tuner_may_run_on(&node(
            "{kubernetes.io/os: linux, eks.amazonaws.com/compute-type: fargate}"
        )));
        assert!(tuner_may_run_on(&node(
            "{kubernetes.io/os: linux, eks.amazonaws.com/compute-type: ec2}"
        )));
    }

    #[test]
    fn node_selector_and_required_affinity_pick_the_nodes() {
        let selected = server("s", "  hostNetwork: true\n  nodeSelector: {role: ftp}");
        assert!(pods_may_run_on(&selected, &node("{role: ftp, zone: a}")));
        assert!(!pods_may_run_on(&selected, &node("{role: web}")));
        assert!(!pods_may_run_on(&selected, &node("{}")));

        let affine = server(
            "s",
            r#"  hostNetwork: true
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: zone, operator: In, values: [a, b]}, {key: spot, operator: DoesNotExist}]
        - matchFields: [{key: metadata.name, operator: In, values: [node-a]}]"#,
        );
        assert!(pods_may_run_on(&affine, &node("{zone: b}")));
        assert!(
            pods_may_run_on(&affine, &node("{zone: c}")),
            "second term: by name"
        );
        let other: Node =
            serde_yaml::from_str("metadata: {name: node-b, labels: {zone: a, spot: 'true'}}")
                .unwrap();
        assert!(!pods_may_run_on(&affine, &other));
    }
}
