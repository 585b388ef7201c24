//! The node keepalive tuner's DaemonSet: one agent per node, in the operator's namespace,
//! existing only while some FtpServer needs node sysctls.
//!
//! Where it runs: Linux nodes only (`kubernetes.io/os=linux`), never a virtual node (see
//! [`crate::node_tuner::selection::tuner_may_run_on`]), and only on nodes whose taints it tolerates:
//! no toleration but the ones the install gives (`nodeTuning.tolerations`), so control-plane
//! and other dedicated nodes are left alone unless the administrator says otherwise.
//!
//! Least privilege that can still write the node's `net.ipv4.tcp_keepalive_*`:
//! - `hostNetwork: true`: net sysctls belong to a network namespace; only a process in the
//!   node's namespace changes the node's values.
//! - The container runtime mounts `/proc/sys` read-only, so `/proc/sys/net/ipv4` alone comes in
//!   read-write through a hostPath mount (nothing else of the host's `/proc`).
//! - `runAsUser: 0` and every capability dropped. The sysctl files belong to root (0644), and the
//!   kernel lets root of the namespace's owner write them without any capability (only a
//!   non-root user would need `NET_ADMIN`, and Kubernetes cannot hand a capability to a non-root
//!   process without file capabilities on the binary). The namespace test
//!   `tuner_with_the_daemon_sets_privileges_only` proves this with an empty capability set. No
//!   `privileged`, no privilege escalation, a read-only root filesystem, RuntimeDefault seccomp.
//!
//! The namespace must admit this under Pod Security (hostNetwork and hostPath need the
//! `privileged` level), as any node agent does.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EnvVar, EnvVarSource, HostPathVolumeSource, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::node_tuner::selection::{LINUX, OS_LABEL, VIRTUAL_NODE_LABELS};
use crate::process::MANAGER;

/// The DaemonSet's name and its pods' ServiceAccount (which the Helm chart creates).
pub const NODE_TUNER_NAME: &str = "ftp-operator-node-tuner";
pub const NODE_TUNER_SERVICE_ACCOUNT: &str = "ftp-operator-node-tuner";
/// Where the host's `/proc/sys/net/ipv4` appears in the container.
pub const HOST_SYSCTL_ROOT: &str = "/host/proc/sys";
/// The agents' environment variable holding the install's identity (the owner ConfigMap's
/// uid): an uninstall's restore request on a Node names it, so a later install's agents
/// ignore a request left over from an earlier one.
pub const INSTALL_UID_ENV: &str = "FTP_OPERATOR_INSTALL_UID";

/// What the DaemonSet is made from besides constants.
#[derive(Debug, Clone)]
pub struct TunerInputs {
    pub namespace: String,
    pub image: String,
    /// Taints the agents tolerate; none by default.
    pub tolerations: Vec<Toleration>,
    /// The install-owned object the DaemonSet belongs to: when Helm deletes it, the garbage
    /// collector deletes the DaemonSet.
    pub owner: OwnerReference,
}

fn node_tuner_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            NODE_TUNER_NAME.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "node-tuner".to_owned(),
        ),
    ])
}

pub fn desired_node_tuner_daemon_set(inputs: &TunerInputs) -> DaemonSet {
    let TunerInputs {
        namespace,
        image,
        tolerations,
        owner,
    } = inputs;
    let selector = node_tuner_labels();
    let mut labels = selector.clone();
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    let container = Container {
        name: "node-tuner".to_owned(),
        image: Some(image.to_owned()),
        command: Some(
            [
                "ftp-operator",
                "node-tuner",
                "run",
                "--sysctl-root",
                HOST_SYSCTL_ROOT,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(vec![
            EnvVar {
                name: "NODE_NAME".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: INSTALL_UID_ENV.to_owned(),
                value: Some(owner.uid.clone()),
                ..EnvVar::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("5m".to_owned())),
                ("memory".to_owned(), Quantity("16Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("64Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "host-net-ipv4".to_owned(),
            mount_path: format!("{HOST_SYSCTL_ROOT}/net/ipv4"),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        service_account_name: Some(NODE_TUNER_SERVICE_ACCOUNT.to_owned()),
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        node_selector: Some(BTreeMap::from([(OS_LABEL.to_owned(), LINUX.to_owned())])),
        affinity: Some(not_on_virtual_nodes()),
        tolerations: (!tolerations.is_empty()).then(|| tolerations.clone()),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(10),
        volumes: Some(vec![Volume {
            name: "host-net-ipv4".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: "/proc/sys/net/ipv4".to_owned(),
                type_: Some("Directory".to_owned()),
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(NODE_TUNER_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// A required node affinity: no node carrying one of the virtual-node labels.
fn not_on_virtual_nodes() -> Affinity {
    let expressions = VIRTUAL_NODE_LABELS
        .iter()
        .map(|(key, values)| NodeSelectorRequirement {
            key: (*key).to_owned(),
            operator: "NotIn".to_owned(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        })
        .collect();
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(expressions),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(tolerations: Vec<Toleration>) -> TunerInputs {
        TunerInputs {
            namespace: "ftp-system".to_owned(),
            image: "img:1".to_owned(),
            tolerations,
            owner: OwnerReference {
                api_version: "v1".to_owned(),
                kind: "ConfigMap".to_owned(),
                name: NODE_TUNER_NAME.to_owned(),
                uid: "uid-1".to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    fn pod(ds: &DaemonSet) -> &PodSpec {
        ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn runs_the_agent_on_the_host_network_with_its_node_name() {
        let ds = desired_node_tuner_daemon_set(&inputs(vec![]));
        assert_eq!(ds.metadata.namespace.as_deref(), Some("ftp-system"));
        assert_eq!(ds.metadata.name.as_deref(), Some(NODE_TUNER_NAME));
        assert_eq!(
            ds.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "ftp-operator"
        );
        let pod = pod(&ds);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(NODE_TUNER_SERVICE_ACCOUNT)
        );
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("img:1"));
        assert_eq!(
            container.command.as_ref().unwrap()[..3],
            ["ftp-operator", "node-tuner", "run"]
        );
        let env = &container.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "NODE_NAME");
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
    }

    #[test]
    fn only_net_ipv4_is_writable_and_no_capability_is_kept() {
        let ds = desired_node_tuner_daemon_set(&inputs(vec![]));
        let pod = pod(&ds);
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        assert_eq!(
            volumes[0].host_path.as_ref().unwrap().path,
            "/proc/sys/net/ipv4"
        );
        let container = &pod.containers[0];
        let mount = &container.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.mount_path, "/host/proc/sys/net/ipv4");
        assert_eq!(mount.read_only, None);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.privileged, Some(false));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let capabilities = security.capabilities.as_ref().unwrap();
        assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(capabilities.add, None);
        assert_eq!(security.run_as_user, Some(0));
        let args = container.command.as_ref().unwrap();
        assert_eq!(args[3..], ["--sysctl-root", "/host/proc/sys"]);
    }

    #[test]
    fn honours_taints_unless_told_and_skips_non_linux_and_virtual_nodes() {
        let ds = desired_node_tuner_daemon_set(&inputs(vec![]));
        let spec = pod(&ds);
        assert_eq!(
            spec.tolerations, None,
            "no toleration unless the install gives one"
        );
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["kubernetes.io/os"],
            "linux"
        );
        let terms = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        let not_in: Vec<_> = terms[0]
            .match_expressions
            .as_ref()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.key.as_str(),
                    r.operator.as_str(),
                    r.values.clone().unwrap(),
                )
            })
            .collect();
        assert!(not_in.contains(&(
            "type",
            "NotIn",
            vec!["virtual-kubelet".to_owned(), "kwok".to_owned()]
        )));
        let control_plane = Toleration {
            key: Some("node-role.kubernetes.io/control-plane".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        };
        let ds = desired_node_tuner_daemon_set(&inputs(vec![control_plane.clone()]));
        assert_eq!(pod(&ds).tolerations, Some(vec![control_plane]));
    }

    #[test]
    fn belongs_to_the_install_and_tells_the_agents_its_uid() {
        let ds = desired_node_tuner_daemon_set(&inputs(vec![]));
        let owners = ds.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("ConfigMap", "uid-1")
        );
        let env = pod(&ds).containers[0].env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == INSTALL_UID_ENV && e.value.as_deref() == Some("uid-1"))
        );
    }
}
