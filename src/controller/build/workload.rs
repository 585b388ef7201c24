//! The Deployment running the ftp-server container.
//!
//! The pod template depends only on what needs a restart. The public address, the users and the
//! TLS files reach running pods through their mounted volumes, which the server re-reads, so
//! changing them never rolls the pods and active sessions survive.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::ftp::config::{CONFIG_FILE_NAME, DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT};

use super::{
    CONFIG_DIR, DATA_DIR, TLS_DIR, USERS_DIR, config_map_name, desired_server_config, labels,
    owned_metadata, selector_labels,
};
use crate::controller::validate::Validated;

/// Pod annotation whose change rolls the pods: a digest of the settings the server reads only
/// at start (its listeners and passive range).
pub const RESTART_HASH_ANNOTATION: &str = "ftpoperator.dev/restart-hash";

/// An unprivileged user the image need not name; files on the data volume are group-owned by it.
const RUN_AS: i64 = 65532;

pub fn desired_deployment(
    server: &FtpServer,
    valid: &Validated,
    default_image: &str,
) -> Deployment {
    let spec = &server.spec;

    let mut pod_annotations: BTreeMap<String, String> = spec.pod_annotations.clone();
    pod_annotations.insert(
        RESTART_HASH_ANNOTATION.to_owned(),
        restart_hash(server, valid),
    );

    let keepalive = valid.keepalive;
    // Pods on the host network share the node's sysctls and may not set net.* ones.
    let sysctls = (!spec.host_network).then(|| {
        vec![
            sysctl("net.ipv4.tcp_keepalive_time", keepalive.idle_seconds),
            sysctl("net.ipv4.tcp_keepalive_intvl", keepalive.interval_seconds),
            sysctl("net.ipv4.tcp_keepalive_probes", keepalive.probes),
        ]
    });

    let mut ports = vec![
        container_port("ftp", DEFAULT_CONTROL_PORT),
        container_port("metrics", DEFAULT_METRICS_PORT),
    ];
    ports.extend(
        valid
            .passive
            .ports()
            .map(|port| container_port(&format!("pasv-{port}"), port)),
    );

    let (volumes, volume_mounts) = volumes(server);

    let container = Container {
        name: "ftp-server".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "ftp-server".to_owned(),
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE_NAME}"),
        ]),
        ports: Some(ports),
        resources: spec.resources.clone(),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let pod = PodSpec {
        containers: vec![container],
        // The server never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        host_network: Some(true).filter(|_| spec.host_network),
        dns_policy: spec
            .host_network
            .then(|| "ClusterFirstWithHostNet".to_owned()),
        node_selector: Some(spec.node_selector.clone()).filter(|s| !s.is_empty()),
        tolerations: Some(spec.tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: spec.affinity.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            sysctls,
            ..PodSecurityContext::default()
        }),
        // Room for the server's own shutdown grace, which lets transfers finish.
        termination_grace_period_seconds: Some(45),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    Deployment {
        metadata: owned_metadata(server, server.name_any()),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(server)),
                ..LabelSelector::default()
            },
            // On the host network two pods of one server cannot share a node's ports.
            strategy: spec.host_network.then(|| DeploymentStrategy {
                type_: Some("Recreate".to_owned()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(server)),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn volumes(server: &FtpServer) -> (Vec<Volume>, Vec<VolumeMount>) {
    let spec = &server.spec;
    let mut volumes = vec![Volume {
        name: "config".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(server),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![mount("config", CONFIG_DIR, true)];

    if let Some(users) = &spec.users {
        volumes.push(secret_volume("users", &users.secret_ref.name));
        mounts.push(mount("users", USERS_DIR, true));
    }
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume("tls", &tls.secret_ref.name));
        mounts.push(mount("tls", TLS_DIR, true));
    }

    let data = match spec.storage.as_ref() {
        Some(storage) if storage.persistent_volume_claim.is_some() => Volume {
            name: "data".to_owned(),
            persistent_volume_claim: storage.persistent_volume_claim.as_ref().map(|pvc| {
                PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.claim_name.clone(),
                    ..PersistentVolumeClaimVolumeSource::default()
                }
            }),
            ..Volume::default()
        },
        storage => Volume {
            name: "data".to_owned(),
            empty_dir: Some(
                storage
                    .and_then(|s| s.empty_dir.clone())
                    .unwrap_or_default(),
            ),
            ..Volume::default()
        },
    };
    volumes.push(data);
    mounts.push(mount("data", DATA_DIR, false));

    // The root filesystem is read-only; the server may still need scratch space.
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(mount("tmp", "/tmp", false));
    (volumes, mounts)
}

fn secret_volume(name: &str, secret_name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name.to_owned()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true).filter(|_| read_only),
        ..VolumeMount::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn sysctl(name: &str, value: u32) -> Sysctl {
    Sysctl {
        name: name.to_owned(),
        value: value.to_string(),
    }
}

fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        ..Probe::default()
    }
}

/// Digest of the configuration the server reads only when it starts. FNV-1a: stable across
/// Rust releases, unlike `DefaultHasher`, so an operator upgrade does not roll every server.
fn restart_hash(server: &FtpServer, valid: &Validated) -> String {
    let config = desired_server_config(server, valid, None);
    let restart_only = format!(
        "listen={} passive={} metrics={}",
        config.listen, config.passive_ports, config.metrics_listen
    );
    let digest = restart_only
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{digest:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server, validated};

    const DEFAULT_IMAGE: &str = "ghcr.io/ftp-operator/ftp-operator:0.1.0";

    fn build(yaml: &str) -> Deployment {
        let server = server(yaml);
        desired_deployment(&server, &validated(&server), DEFAULT_IMAGE)
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn template_annotations(deployment: &Deployment) -> &BTreeMap<String, String> {
        let template = &deployment.spec.as_ref().unwrap().template;
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
    }

    #[test]
    fn container_runs_the_server_with_the_mounted_config_and_default_image() {
        let deployment = build(fixtures::MINIMAL);
        let container = &pod(&deployment).containers[0];
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        assert_eq!(
            container.command.as_ref().unwrap(),
            &["ftp-server", "--config", "/etc/ftp-server/ftp-server.toml"]
        );
        let ports: Vec<_> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("ftp".into(), 2121),
                ("metrics".into(), 9100),
                ("pasv-30000".into(), 30000),
                ("pasv-30001".into(), 30001),
                ("pasv-30002".into(), 30002),
            ]
        );
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        let liveness = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
    }

    #[test]
    fn pod_is_locked_down() {
        let deployment = build(fixtures::MINIMAL);
        let pod = pod(&deployment);
        let security = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn keepalive_sysctls_follow_the_spec() {
        let deployment = build(fixtures::FULL);
        let sysctls: Vec<_> = pod(&deployment)
            .security_context
            .as_ref()
            .unwrap()
            .sysctls
            .as_ref()
            .unwrap()
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            sysctls,
            vec![
                ("net.ipv4.tcp_keepalive_time", "45"),
                ("net.ipv4.tcp_keepalive_intvl", "5"),
                ("net.ipv4.tcp_keepalive_probes", "4"),
            ]
        );
    }

    #[test]
    fn host_network_pods_set_no_sysctls_and_recreate() {
        let deployment = build(fixtures::HOST_NETWORK);
        let pod = pod(&deployment);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(pod.security_context.as_ref().unwrap().sysctls, None);
        let strategy = deployment.spec.as_ref().unwrap().strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
        let data = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert!(data.empty_dir.as_ref().unwrap().size_limit.is_some());
    }

    #[test]
    fn full_spec_mounts_config_secrets_and_claim_and_passes_pod_knobs() {
        let deployment = build(fixtures::FULL);
        let pod = pod(&deployment);
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/ftp-operator:1.2.3")
        );
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert!(container.resources.is_some());
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            vec![
                ("config", "/etc/ftp-server", Some(true)),
                ("users", "/etc/ftp-users", Some(true)),
                ("tls", "/etc/ftp-tls", Some(true)),
                ("data", "/srv/ftp", None),
                ("tmp", "/tmp", None),
            ]
        );
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            "contoso-config"
        );
        assert_eq!(
            volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("ftp-users")
        );
        assert_eq!(
            volumes[2].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("ftp-tls")
        );
        assert_eq!(
            volumes[3]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "ftp-data"
        );
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["kubernetes.io/os"],
            "linux"
        );
        assert_eq!(pod.tolerations.as_ref().unwrap().len(), 1);
        assert_eq!(
            template_annotations(&deployment)["example.com/scrape"],
            "true"
        );
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn address_users_and_tls_changes_do_not_touch_the_pod_template() {
        let before = server(fixtures::FULL);
        let mut after = before.clone();
        after.spec.public_address = Some("20.50.1.7".into());
        let template = |s: &FtpServer| {
            desired_deployment(s, &validated(s), DEFAULT_IMAGE)
                .spec
                .unwrap()
                .template
        };
        assert_eq!(template(&before), template(&after));
    }

    #[test]
    fn passive_range_change_changes_the_restart_hash() {
        let before = server(fixtures::MINIMAL);
        let mut after = before.clone();
        after.spec.passive_ports.max = 30005;
        let hash = |s: &FtpServer| {
            template_annotations(&desired_deployment(s, &validated(s), DEFAULT_IMAGE))
                [RESTART_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&before), hash(&after));
        assert_eq!(hash(&before), hash(&before.clone()));
    }
}
