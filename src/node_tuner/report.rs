//! What the tuner records on its Node, and how the controller reads it back.
//!
//! Two annotations, both JSON: the node's original values (written before the first change, so
//! they survive agent restarts and reboots) and the last outcome (values in force, for which
//! servers, or the error).

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::api::{FtpServer, NodeKeepaliveStatus};

use super::selection::{NodeView, pods_may_run_on, server_key, tuner_may_run_on};
use super::sysctl::KeepaliveSysctls;

pub const ORIGINAL_ANNOTATION: &str = "ftpoperator.dev/keepalive-original";
pub const APPLIED_ANNOTATION: &str = "ftpoperator.dev/keepalive-applied";
/// Written by `ftp-operator node-tuner uninstall`: the uid of the install being removed. Its
/// agents then put the originals back and drop their record, whatever the servers want.
pub const RESTORE_ANNOTATION: &str = "ftpoperator.dev/keepalive-restore";

/// Failures listed by name in an FtpServer's status; the counts cover the rest.
const MAX_LISTED_FAILURES: usize = 5;

/// The tuner's last outcome on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The values the kernel holds for the servers below; absent on error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<KeepaliveSysctls>,
    /// `namespace/name` of the servers the node is tuned (or failed to be tuned) for.
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn annotation<T: for<'de> Deserialize<'de>>(node: &impl Resource, key: &str) -> Option<T> {
    serde_json::from_str(node.annotations().get(key)?).ok()
}

/// Whether `key` is one of the two annotations the tuner writes.
pub fn is_report_annotation(key: &str) -> bool {
    key == ORIGINAL_ANNOTATION || key == APPLIED_ANNOTATION
}

/// Whether an uninstall of the install `install_uid` asked this node's agent to restore.
pub fn restore_requested(node: &impl Resource, install_uid: &str) -> bool {
    node.annotations()
        .get(RESTORE_ANNOTATION)
        .map(String::as_str)
        == Some(install_uid)
}

pub fn original_of(node: &impl Resource) -> Option<KeepaliveSysctls> {
    annotation(node, ORIGINAL_ANNOTATION)
}

pub fn report_of(node: &impl Resource) -> Option<NodeReport> {
    annotation(node, APPLIED_ANNOTATION)
}

/// A merge patch setting both annotations; None removes one.
pub fn annotations_patch(
    original: Option<KeepaliveSysctls>,
    report: Option<&NodeReport>,
) -> serde_json::Value {
    let json = |value: Option<String>| value.map_or(serde_json::Value::Null, Into::into);
    let annotations = BTreeMap::from([
        (
            ORIGINAL_ANNOTATION,
            json(original.and_then(|o| serde_json::to_string(&o).ok())),
        ),
        (
            APPLIED_ANNOTATION,
            json(report.and_then(|r| serde_json::to_string(r).ok())),
        ),
    ]);
    serde_json::json!({"metadata": {"annotations": annotations}})
}

/// The controller's view of one server across the nodes its pods may run on: tuned when the
/// node's report names it without an error, failed when it names it with one, else pending —
/// unless no agent can run there (a Windows or virtual node), which is then not counted.
pub fn summarise<'a, N: NodeView + 'a>(
    server: &FtpServer,
    nodes: impl IntoIterator<Item = &'a N>,
) -> NodeKeepaliveStatus {
    let key = server_key(server);
    let mut status = NodeKeepaliveStatus::default();
    for node in nodes {
        if !pods_may_run_on(server, node) {
            continue;
        }
        match report_of(node).filter(|report| report.servers.contains(&key)) {
            None if !tuner_may_run_on(node) => {}
            None => status.pending += 1,
            Some(NodeReport {
                error: Some(error), ..
            }) => {
                status.failed += 1;
                if status.failures.len() < MAX_LISTED_FAILURES {
                    status
                        .failures
                        .push(format!("{}: {error}", node.name_any()));
                }
            }
            Some(_) => status.tuned += 1,
        }
    }
    status
}

/// Whether any node still reports tuning for this server: its finalizer waits until none does.
pub fn still_tuned_for<'a, N: Resource + 'a>(
    server: &FtpServer,
    nodes: impl IntoIterator<Item = &'a N>,
) -> Vec<String> {
    let key = server_key(server);
    nodes
        .into_iter()
        .filter(|node| report_of(*node).is_some_and(|r| r.servers.contains(&key)))
        .map(|node| node.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, labels: &str, report: Option<&NodeReport>) -> Node {
        let mut node: Node =
            serde_yaml::from_str(&format!("metadata: {{name: {name}, labels: {labels}}}")).unwrap();
        node.labels_mut()
            .entry("kubernetes.io/os".to_owned())
            .or_insert_with(|| "linux".to_owned());
        if let Some(report) = report {
            node.annotations_mut().insert(
                APPLIED_ANNOTATION.to_owned(),
                serde_json::to_string(report).unwrap(),
            );
        }
        node
    }

    #[test]
    fn nodes_are_tuned_pending_or_failed_and_unselected_nodes_do_not_count() {
        let server: FtpServer = serde_yaml::from_str(
            "metadata: {name: edge, namespace: ftp}\nspec: {passivePorts: {min: 20000, max: 20001}, hostNetwork: true, nodeSelector: {role: ftp}}",
        )
        .unwrap();
        let tuned = NodeReport {
            values: Some(KeepaliveSysctls::KERNEL_DEFAULTS),
            servers: vec!["ftp/edge".into()],
            error: None,
        };
        let failed = NodeReport {
            values: None,
            servers: vec!["ftp/edge".into()],
            error: Some(
                "cannot write 30 to /proc/sys/net/ipv4/tcp_keepalive_time: read-only".into(),
            ),
        };
        let other = NodeReport {
            servers: vec!["ftp/other".into()],
            ..tuned.clone()
        };
        let nodes = [
            node("a", "{role: ftp}", Some(&tuned)),
            node("b", "{role: ftp}", Some(&failed)),
            node("c", "{role: ftp}", Some(&other)),
            node("d", "{role: ftp}", None),
            node("e", "{role: web}", Some(&tuned)),
            node("windows", "{role: ftp, kubernetes.io/os: windows}", None),
            node("virtual", "{role: ftp, type: virtual-kubelet}", None),
        ];
        let status = summarise(&server, &nodes);
        assert_eq!((status.tuned, status.pending, status.failed), (1, 2, 1));
        assert_eq!(
            status.failures,
            vec!["b: cannot write 30 to /proc/sys/net/ipv4/tcp_keepalive_time: read-only"]
        );
        assert_eq!(still_tuned_for(&server, &nodes), vec!["a", "b", "e"]);
    }

    #[test]
    fn tainted_nodes_the_servers_pods_cannot_go_to_are_not_waited_for() {
        let server = |tolerations: &str| -> FtpServer {
            serde_yaml::from_str(&format!(
                "metadata: {{name: edge, namespace: ftp}}\nspec: {{passivePorts: {{min: 20000, max: 20001}}, hostNetwork: true, tolerations: {tolerations}}}"
            ))
            .unwrap()
        };
        let tainted = |name: &str, taint: &str| {
            let mut n = node(name, "{}", None);
            n.spec = Some(serde_yaml::from_str(&format!("taints: [{taint}]")).unwrap());
            n
        };
        let nodes = [
            node("plain", "{}", None),
            tainted(
                "control-plane",
                "{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}",
            ),
            tainted("gpu", "{key: gpu, value: 'true', effect: NoExecute}"),
            tainted("soft", "{key: spot, effect: PreferNoSchedule}"),
        ];
        // Untolerated NoSchedule/NoExecute taints keep the pods off: two nodes left, both pending.
        assert_eq!(summarise(&server("[]"), &nodes).pending, 2);
        let gpu = "[{key: gpu, operator: Equal, value: 'true'}]";
        assert_eq!(summarise(&server(gpu), &nodes).pending, 3);
        // The wrong value tolerates nothing; an empty key with Exists tolerates everything.
        let wrong = "[{key: gpu, operator: Equal, value: 'false', effect: NoExecute}]";
        assert_eq!(summarise(&server(wrong), &nodes).pending, 2);
        assert_eq!(
            summarise(&server("[{operator: Exists}]"), &nodes).pending,
            4
        );
    }

    #[test]
    fn annotations_round_trip_and_none_removes_them() {
        let report = NodeReport {
            values: Some(KeepaliveSysctls::KERNEL_DEFAULTS),
            servers: vec!["ftp/edge".into()],
            error: None,
        };
        let patch = annotations_patch(Some(KeepaliveSysctls::KERNEL_DEFAULTS), Some(&report));
        let mut node: Node = serde_json::from_value(patch).unwrap();
        node.metadata.name = Some("a".into());
        assert_eq!(original_of(&node), Some(KeepaliveSysctls::KERNEL_DEFAULTS));
        assert_eq!(report_of(&node), Some(report));
        let removed = annotations_patch(None, None);
        assert_eq!(
            removed["metadata"]["annotations"][ORIGINAL_ANNOTATION],
            serde_json::Value::Null
        );
    }
}
