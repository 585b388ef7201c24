//! The StatefulSet running the ftp-server containers: one pod per replica, each with a stable
//! ordinal that picks its slice of the passive range.
//!
//! Why a StatefulSet: its pods have fixed identities (`<server>-0`, `-1`, …) that outlive
//! replacement, so a slice and the Service or EndpointSlice routing it stay with one replica; its
//! rolling update replaces one pod at a time and creates the replacement only after the old pod
//! has exited, so two pods never hold one slice (a Deployment's surge pod would, and could not
//! attach a ReadWriteOnce claim either); and `volumeClaimTemplates` give each replica a claim of
//! its own. Its update strategy is always `RollingUpdate`, also on the host network (a replaced
//! pod is gone before its successor starts, so they never compete for the node's ports), so no
//! strategy switch can leave an apiserver-defaulted `rollingUpdate` behind to wedge an apply.
//!
//! The pod template depends only on what needs a restart. The public address, the users and the
//! TLS files reach running pods through their mounted volumes, which the server re-reads, so
//! changing them never rolls the pods and active sessions survive.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Sysctl, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::{FtpServer, RESERVED_POD_LABELS};
use crate::controller::sftp_host_keys::{host_keys_secret_name, sftp_enabled};
use crate::ftp::config::{
    CONFIG_FILE_NAME, DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT, POD_SFTP_PORT,
};

use super::{
    CONFIG_DIR, DATA_DIR, SFTP_HOST_KEYS_DIR, TLS_DIR, USERS_DIR, config_map_name,
    desired_server_config, labels, owned_metadata, selector_labels, users_secret_name,
};
use crate::controller::validate::Validated;

/// Pod annotation whose change rolls the pods: a digest of the settings the server reads only
/// at start (its listeners and passive range).
pub const RESTART_HASH_ANNOTATION: &str = "ftpoperator.dev/restart-hash";

/// An unprivileged user the image need not name; files on the data volume are group-owned by it.
const RUN_AS: i64 = 65532;

/// The label the StatefulSet controller puts on each pod with its ordinal (GA since 1.32).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label the StatefulSet controller puts on each pod with its name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The environment variable carrying the ordinal into `--replica-index`.
pub const REPLICA_INDEX_ENV: &str = "FTP_SERVER_REPLICA_INDEX";
/// Name of the per-replica claims' template: claims are `data-<server>-<ordinal>`.
pub const DATA_VOLUME: &str = "data";

/// Beyond `drainSeconds`, time for the server to close what is left and exit before the kubelet
/// kills it: the server's own grace ends first, so the exit is always the clean one.
const EXIT_MARGIN_SECONDS: i64 = 15;

/// The name of the StatefulSet and the stem of its pods' names.
pub fn workload_name(server: &FtpServer) -> String {
    server.name_any()
}

/// The name of replica `index`'s pod.
pub fn replica_pod_name(server: &FtpServer, index: i32) -> String {
    format!("{}-{index}", workload_name(server))
}

/// How many replica slices are in use: the desired replicas, or more while pods of a larger
/// count still run (a scaled-away replica drains, and its sessions still need its slice).
pub fn slices_in_use(server: &FtpServer, pods: &[&Pod]) -> i32 {
    let stem = format!("{}-", workload_name(server));
    pods.iter()
        .filter_map(|pod| pod.name_any().strip_prefix(&stem)?.parse::<i32>().ok())
        .map(|ordinal| ordinal.saturating_add(1))
        .fold(server.spec.replicas.max(0), i32::max)
}

/// `image` is the one to run: the spec's, or the operator's default as [`super::image_in_force`]
/// hands it out, so an operator upgrade never replaces every server at once.
pub fn desired_stateful_set(server: &FtpServer, valid: &Validated, image: &str) -> StatefulSet {
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
    if sftp_enabled(server) {
        ports.push(container_port("sftp", POD_SFTP_PORT));
    }

    let (volumes, volume_mounts) = volumes(server);
    let object_storage = spec
        .storage
        .as_ref()
        .is_some_and(crate::api::StorageSpec::is_object_storage);

    let container = Container {
        name: "ftp-server".to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec![
            "ftp-server".to_owned(),
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE_NAME}"),
            // The kubelet expands $(VAR) from the container's environment.
            "--replica-index".to_owned(),
            format!("$({REPLICA_INDEX_ENV})"),
        ]),
        // The ordinal, from the label the StatefulSet controller sets, through the downward API.
        env: Some(
            [EnvVar {
                name: REPLICA_INDEX_ENV.to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.labels['{POD_INDEX_LABEL}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            }]
            .into_iter()
            .chain(object_storage_credentials(spec.storage.as_ref()))
            .collect(),
        ),
        // A server that cannot use its bucket exits naming it; its log's tail becomes the
        // container's termination message, which the status reports. Only there, so existing
        // servers' pods do not change.
        termination_message_policy: object_storage.then(|| "FallbackToLogsOnError".to_owned()),
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
        // The server never talks to the Kubernetes API, whichever account it runs as.
        automount_service_account_token: Some(false),
        service_account_name: spec.service_account_name.clone(),
        image_pull_secrets: Some(spec.image_pull_secrets.clone()).filter(|s| !s.is_empty()),
        priority_class_name: spec.priority_class_name.clone(),
        host_network: Some(true).filter(|_| spec.host_network),
        dns_policy: spec
            .host_network
            .then(|| "ClusterFirstWithHostNet".to_owned()),
        node_selector: Some(spec.node_selector.clone()).filter(|s| !s.is_empty()),
        tolerations: Some(spec.tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: spec.affinity.clone(),
        // Replicas on different nodes where there are several: a node drain or failure takes
        // one slice, not all. A preference, so a one-node cluster still runs every replica.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(server)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]),
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
        // On SIGTERM the server turns readiness off (the control port's endpoints drop it: no
        // new sessions) and lets running transfers finish for drainSeconds; then it exits.
        termination_grace_period_seconds: Some(i64::from(spec.drain_seconds) + EXIT_MARGIN_SECONDS),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    StatefulSet {
        metadata: owned_metadata(server, workload_name(server)),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(server)),
                ..LabelSelector::default()
            },
            // Scaling starts and stops pods at once, so one broken replica never blocks the
            // others; updates still replace one pod at a time, highest ordinal first.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(server)),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: claim_templates(server),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The user's `podLabels` beneath the operator's own: admission refuses the reserved keys, and
/// should one get through (a CRD applied without its rules), the selector labels still win.
fn pod_labels(server: &FtpServer) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = server
        .spec
        .pod_labels
        .iter()
        .filter(|(key, _)| !RESERVED_POD_LABELS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    merged.extend(labels(server));
    merged
}

/// Whether `live` can be updated into `desired`: a StatefulSet's selector, pod management policy
/// and claim templates cannot change. When they would (say storage switches to
/// `claimPerReplica`), the controller deletes the StatefulSet leaving its pods, and the new one
/// adopts them and replaces them one at a time like any rollout.
pub fn updatable_in_place(live: &StatefulSet, desired: &StatefulSet) -> bool {
    let (Some(live), Some(desired)) = (live.spec.as_ref(), desired.spec.as_ref()) else {
        return true;
    };
    let claims = |spec: &StatefulSetSpec| {
        spec.volume_claim_templates
            .iter()
            .flatten()
            .map(|claim| {
                let spec = claim.spec.clone().unwrap_or_default();
                (
                    claim.metadata.name.clone(),
                    spec.storage_class_name,
                    spec.resources.and_then(|r| r.requests),
                )
            })
            .collect::<Vec<_>>()
    };
    let policy = |spec: &StatefulSetSpec| {
        spec.pod_management_policy
            .clone()
            .unwrap_or_else(|| "OrderedReady".to_owned())
    };
    live.selector == desired.selector
        && policy(live) == policy(desired)
        && claims(live) == claims(desired)
}

/// With `storage.claimPerReplica`: one ReadWriteOnce claim per replica, kept when a replica is
/// scaled away (its files come back with it) and when the FtpServer is deleted (the default
/// retention; files are not thrown away by deleting a resource).
fn claim_templates(server: &FtpServer) -> Option<Vec<PersistentVolumeClaim>> {
    let template = server.spec.storage.as_ref()?.claim_per_replica.as_ref()?;
    Some(vec![PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(labels(server)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: template.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(template.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }])
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

    // Always mounted, also with no users yet: the first FtpUser then needs no pod template
    // change, hence no restart.
    volumes.push(secret_volume("users", &users_secret_name(server)));
    mounts.push(mount("users", USERS_DIR, true));
    if let Some(tls) = &spec.tls {
        volumes.push(secret_volume("tls", &tls.secret_ref.name));
        mounts.push(mount("tls", TLS_DIR, true));
    }
    if sftp_enabled(server) {
        // Private keys: readable by the server's group (the pod's fsGroup) and no one else.
        let mut keys = secret_volume("sftp-host-keys", &host_keys_secret_name(server));
        if let Some(secret) = keys.secret.as_mut() {
            secret.default_mode = Some(0o440);
        }
        volumes.push(keys);
        mounts.push(mount("sftp-host-keys", SFTP_HOST_KEYS_DIR, true));
    }

    let data = match spec.storage.as_ref() {
        // The StatefulSet adds the volume from its claim template.
        Some(storage) if storage.claim_per_replica.is_some() => None,
        // Files live in the bucket; nothing on disk.
        Some(storage) if storage.is_object_storage() => None,
        Some(storage) if storage.persistent_volume_claim.is_some() => Some(Volume {
            name: DATA_VOLUME.to_owned(),
            persistent_volume_claim: storage.persistent_volume_claim.as_ref().map(|pvc| {
                PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.claim_name.clone(),
                    ..PersistentVolumeClaimVolumeSource::default()
                }
            }),
            ..Volume::default()
        }),
        storage => Some(Volume {
            name: DATA_VOLUME.to_owned(),
            empty_dir: Some(
                storage
                    .and_then(|s| s.empty_dir.clone())
                    .unwrap_or_default(),
            ),
            ..Volume::default()
        }),
    };
    let on_disk = !spec
        .storage
        .as_ref()
        .is_some_and(crate::api::StorageSpec::is_object_storage);
    volumes.extend(data);
    if on_disk {
        mounts.push(mount(DATA_VOLUME, DATA_DIR, false));
    }

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

/// With `credentialsSecretRef` on `storage.s3` or `storage.azureBlob`: the Secret's keys as the
/// standard variables (Azure's two optional: a Secret holds one of them). Without, none: the
/// SDKs' credential chains then find the pod's workload identity.
fn object_storage_credentials(storage: Option<&crate::api::StorageSpec>) -> Vec<EnvVar> {
    let s3 = storage.and_then(|s| s.s3.as_ref());
    let azure = storage.and_then(|s| s.azure_blob.as_ref());
    let (secret, keys, optional) = match (s3, azure) {
        (Some(s3), _) => (
            s3.credentials_secret_ref.as_ref(),
            &crate::api::S3StorageSpec::CREDENTIAL_KEYS,
            false,
        ),
        (None, Some(azure)) => (
            azure.credentials_secret_ref.as_ref(),
            &crate::api::AzureBlobStorageSpec::CREDENTIAL_KEYS,
            true,
        ),
        (None, None) => return Vec::new(),
    };
    let Some(secret) = secret else {
        return Vec::new();
    };
    keys.iter()
        .map(|key| EnvVar {
            name: (*key).to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: (*key).to_owned(),
                    optional: Some(optional),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect()
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
    let config = desired_server_config(server, valid, None, None);
    // The slice size joins the hash only when set, so servers without one keep their hash
    // (and their pods) across this operator's upgrade.
    let slice = config
        .passive_ports_per_replica
        .map(|n| format!(" per-replica={n}"))
        .unwrap_or_default();
    let restart_only = format!(
        "listen={} passive={}{slice} metrics={}",
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

    fn desired(server: &FtpServer) -> StatefulSet {
        let image = server.spec.image.as_deref().unwrap_or(DEFAULT_IMAGE);
        desired_stateful_set(server, &validated(server), image)
    }

    fn build(yaml: &str) -> StatefulSet {
        desired(&server(yaml))
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn template_annotations(set: &StatefulSet) -> &BTreeMap<String, String> {
        let template = &set.spec.as_ref().unwrap().template;
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
        let set = build(fixtures::MINIMAL);
        let container = &pod(&set).containers[0];
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        assert_eq!(
            container.command.as_ref().unwrap(),
            &[
                "ftp-server",
                "--config",
                "/etc/ftp-server/ftp-server.toml",
                "--replica-index",
                "$(FTP_SERVER_REPLICA_INDEX)"
            ]
        );
        let env = &container.env.as_ref().unwrap()[0];
        assert_eq!(env.name, REPLICA_INDEX_ENV);
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['apps.kubernetes.io/pod-index']"
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
        assert_eq!(set.spec.as_ref().unwrap().replicas, Some(1));
    }

    #[test]
    fn sftp_adds_its_port_and_mounts_the_host_keys_for_the_servers_group_only() {
        let without = build(fixtures::FULL);
        assert!(
            !pod(&without)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "sftp-host-keys")
        );
        let mut server = server(fixtures::FULL);
        server.spec.sftp = Some(serde_yaml::from_str("{}").unwrap());
        let set = desired(&server);
        let pod = pod(&set);
        let container = &pod.containers[0];
        assert!(
            container
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .any(|p| p.name.as_deref() == Some("sftp") && p.container_port == 2222)
        );
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "sftp-host-keys")
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(
            secret.secret_name.as_deref(),
            Some("contoso-sftp-host-keys")
        );
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "sftp-host-keys")
            .unwrap();
        assert_eq!(mount.mount_path, SFTP_HOST_KEYS_DIR);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn pod_is_locked_down() {
        let set = build(fixtures::MINIMAL);
        let pod = pod(&set);
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

    const PLATFORM: &str = r#"
metadata: {name: contoso, namespace: ftp}
spec:
  passivePorts: {min: 20000, max: 20009}
  imagePullSecrets: [{name: regcred}, {name: mirror}]
  serviceAccountName: ftp-files
  priorityClassName: business-critical
  podLabels: {team: files, app.kubernetes.io/instance: other}
"#;

    #[test]
    fn platform_pod_settings_reach_the_pods() {
        let set = build(PLATFORM);
        let pod = pod(&set);
        let secrets: Vec<_> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(secrets, ["regcred", "mirror"]);
        assert_eq!(pod.service_account_name.as_deref(), Some("ftp-files"));
        assert_eq!(
            pod.priority_class_name.as_deref(),
            Some("business-critical")
        );
        // Another account still gets no API token: the server never calls the API.
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn pod_labels_are_added_but_never_replace_the_selector_labels() {
        let set = build(PLATFORM);
        let spec = set.spec.as_ref().unwrap();
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("files"));
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("contoso")
        );
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        // The StatefulSet's own labels are the operator's only.
        assert!(!set.metadata.labels.as_ref().unwrap().contains_key("team"));
    }

    #[test]
    fn without_platform_settings_the_pod_names_none() {
        let set = build(fixtures::MINIMAL);
        let pod = pod(&set);
        assert_eq!(pod.image_pull_secrets, None);
        assert_eq!(pod.service_account_name, None);
        assert_eq!(pod.priority_class_name, None);
    }

    #[test]
    fn keepalive_sysctls_follow_the_spec() {
        let set = build(fixtures::FULL);
        let sysctls: Vec<_> = pod(&set)
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
    fn host_network_pods_set_no_sysctls_and_share_the_one_update_strategy() {
        let set = build(fixtures::HOST_NETWORK);
        let pod = pod(&set);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(pod.security_context.as_ref().unwrap().sysctls, None);
        // The same strategy on and off the host network: nothing to switch, nothing to wedge.
        let strategy = |set: &StatefulSet| set.spec.as_ref().unwrap().update_strategy.clone();
        assert_eq!(strategy(&set), strategy(&build(fixtures::MINIMAL)));
        let strategy = strategy(&set).unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(strategy.rolling_update.unwrap().partition, Some(0));
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
    fn a_new_claim_template_or_policy_needs_a_new_stateful_set() {
        let server = server(fixtures::MINIMAL);
        let desired = desired(&server);
        assert!(updatable_in_place(&desired, &desired));
        let mut with_claims = server.clone();
        with_claims.spec.storage = Some(crate::api::StorageSpec {
            persistent_volume_claim: None,
            empty_dir: None,
            claim_per_replica: Some(crate::api::ClaimTemplate {
                size: "1Gi".into(),
                storage_class_name: None,
            }),
            s3: None,
            azure_blob: None,
        });
        assert!(!updatable_in_place(&desired, &self::desired(&with_claims)));
        let mut ordered = desired.clone();
        if let Some(spec) = ordered.spec.as_mut() {
            spec.pod_management_policy = None;
        }
        assert!(!updatable_in_place(&ordered, &desired));
        // Everything else updates in place.
        let mut scaled = server.clone();
        scaled.spec.replicas = 3;
        scaled.spec.passive_ports.per_replica = Some(1);
        scaled.spec.image = Some("other:2".into());
        assert!(updatable_in_place(&desired, &self::desired(&scaled)));
    }

    #[test]
    fn draining_pods_of_a_larger_count_keep_their_slices() {
        let server = server(fixtures::MINIMAL);
        let pod = |name: &str| -> Pod {
            serde_yaml::from_str(&format!("metadata: {{name: {name}}}")).unwrap()
        };
        let (a, b, other) = (pod("minimal-0"), pod("minimal-3"), pod("minimal-x-7"));
        assert_eq!(slices_in_use(&server, &[]), 1);
        assert_eq!(slices_in_use(&server, &[&a, &other]), 1);
        assert_eq!(slices_in_use(&server, &[&a, &b]), 4);
    }

    #[test]
    fn pods_drain_for_drain_seconds_and_spread_over_nodes() {
        let mut server = server(fixtures::MINIMAL);
        let set = desired(&server);
        assert_eq!(pod(&set).termination_grace_period_seconds, Some(615));
        server.spec.drain_seconds = 30;
        let set = desired(&server);
        let pod = pod(&set);
        assert_eq!(pod.termination_grace_period_seconds, Some(45));
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            Some(selector_labels(&server))
        );
        let spec = set.spec.unwrap();
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.volume_claim_templates, None);
    }

    #[test]
    fn claim_per_replica_becomes_a_claim_template_mounted_as_data() {
        let mut server = server(fixtures::MINIMAL);
        server.spec.storage = Some(crate::api::StorageSpec {
            persistent_volume_claim: None,
            empty_dir: None,
            claim_per_replica: Some(crate::api::ClaimTemplate {
                size: "5Gi".into(),
                storage_class_name: Some("fast".into()),
            }),
            s3: None,
            azure_blob: None,
        });
        let set = desired(&server);
        let pod = pod(&set);
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.name != "data")
        );
        assert!(
            pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/srv/ftp")
        );
        let claims = set.spec.unwrap().volume_claim_templates.unwrap();
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        assert_eq!(
            claim.access_modes.as_deref(),
            Some(&["ReadWriteOnce".to_owned()][..])
        );
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("5Gi".into())
        );
    }

    #[test]
    fn full_spec_mounts_config_secrets_and_claim_and_passes_pod_knobs() {
        let set = build(fixtures::FULL);
        let pod = pod(&set);
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
            Some("contoso-generated-users")
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
        assert_eq!(template_annotations(&set)["example.com/scrape"], "true");
        assert_eq!(set.spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn address_users_and_tls_changes_do_not_touch_the_pod_template() {
        let before = server(fixtures::FULL);
        let mut after = before.clone();
        after.spec.public_address = Some("20.50.1.7".into());
        let template = |s: &FtpServer| desired(s).spec.unwrap().template;
        assert_eq!(template(&before), template(&after));
    }

    #[test]
    fn passive_range_change_changes_the_restart_hash() {
        let before = server(fixtures::MINIMAL);
        let mut after = before.clone();
        after.spec.passive_ports.max = 30005;
        let hash =
            |s: &FtpServer| template_annotations(&desired(s))[RESTART_HASH_ANNOTATION].clone();
        assert_ne!(hash(&before), hash(&after));
        assert_eq!(hash(&before), hash(&before.clone()));
        // A server without a slice keeps the hash it had before slices existed.
        assert_eq!(hash(&before), "4e61f07459054c64");
        let mut sliced = before.clone();
        sliced.spec.passive_ports.per_replica = Some(1);
        assert_ne!(hash(&before), hash(&sliced));
    }

    #[test]
    fn s3_storage_has_no_data_volume_and_takes_credentials_from_the_secret() {
        let set = build(fixtures::S3);
        let spec = pod(&set);
        let container = &spec.containers[0];
        let volumes: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert!(!volumes.contains(&DATA_VOLUME), "{volumes:?}");
        let mounts: Vec<_> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(!mounts.contains(&DATA_DIR), "{mounts:?}");
        assert!(set.spec.as_ref().unwrap().volume_claim_templates.is_none());
        let from_secret: Vec<(String, String, String)> = container
            .env
            .iter()
            .flatten()
            .filter_map(|env| {
                let key = env.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((env.name.clone(), key.name.clone(), key.key.clone()))
            })
            .collect();
        assert_eq!(
            from_secret,
            [
                (
                    "AWS_ACCESS_KEY_ID".into(),
                    "ftp-s3".into(),
                    "AWS_ACCESS_KEY_ID".into()
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "ftp-s3".into(),
                    "AWS_SECRET_ACCESS_KEY".into()
                ),
            ]
        );
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        assert_eq!(set.spec.as_ref().unwrap().replicas, Some(3));

        // Without a Secret: no AWS variables, so the pod's workload identity is used.
        let identity = fixtures::S3.replace("      credentialsSecretRef: {name: ftp-s3}\n", "");
        assert_ne!(identity, fixtures::S3, "fixture changed: update this test");
        let set = build(&identity);
        let env = pod(&set).containers[0].env.clone().unwrap_or_default();
        assert!(env.iter().all(|e| !e.name.starts_with("AWS_")), "{env:?}");

        // On disk, nothing changes: the data volume, no termination-message policy.
        let set = build(fixtures::MINIMAL);
        let container = &pod(&set).containers[0];
        assert!(container.termination_message_policy.is_none());
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == DATA_DIR)
        );
    }

    #[test]
    fn azure_blob_storage_takes_whichever_credential_the_secret_holds() {
        let set = build(fixtures::AZURE_BLOB);
        let spec = pod(&set);
        let container = &spec.containers[0];
        assert!(
            !spec.volumes.iter().flatten().any(|v| v.name == DATA_VOLUME),
            "no data volume on object storage"
        );
        let from_secret: Vec<(String, bool)> = container
            .env
            .iter()
            .flatten()
            .filter_map(|env| {
                let key = env.value_from.as_ref()?.secret_key_ref.as_ref()?;
                assert_eq!(key.name, "ftp-blob");
                Some((env.name.clone(), key.optional == Some(true)))
            })
            .collect();
        assert_eq!(
            from_secret,
            [
                ("AZURE_STORAGE_ACCOUNT_KEY".into(), true),
                ("AZURE_STORAGE_SAS_TOKEN".into(), true)
            ]
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("ftp-files"));
        let labels = set
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone();
        assert_eq!(
            labels
                .unwrap_or_default()
                .get("azure.workload.identity/use")
                .map(String::as_str),
            Some("true")
        );
    }
}
