//! The `FtpServer` custom resource, `ftpoperator.dev/v1alpha1`: the contract users write.
//!
//! The CRD is generated from these types (`ftp-operator crd`); the CEL rules below are enforced by
//! the apiserver, so a bad manifest is refused at `kubectl apply` with a message saying what to
//! change. Provider-specific limits live in [`crate::lb`] and surface as `Stalled` conditions.

pub mod conditions;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EmptyDirVolumeSource, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod limits;
pub use limits::LimitsSpec;

pub mod user;
pub use user::{FtpUser, FtpUserSpec, FtpUserStatus};

/// In-pod ports the server itself uses; the passive range must stay clear of them.
pub use crate::ftp::config::{
    DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT, POD_IMPLICIT_TLS_PORT, POD_SFTP_PORT,
};

/// Longest `metadata.name`: the Service takes it as a DNS label (63), and a StatefulSet's pods
/// carry `controller-revision-hash: <name>-<10 hex>` in a label (63 - 11).
pub const MAX_NAME_LENGTH: usize = 52;

/// Most ports one passive range may span: each is a Service port and a load-balancer rule.
pub const MAX_PASSIVE_PORTS: i32 = 1000;

/// An FTP server reachable through a load balancer.
// Each printer column repeats `type_ = "string"`, which clippy mistakes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ftpoperator.dev",
    version = "v1alpha1",
    kind = "FtpServer",
    doc = "An FTP server reachable through a load balancer, with keepalive below its idle timeout",
    namespaced,
    status = "FtpServerStatus",
    derive = "PartialEq",
    shortname = "ftpsrv",
    category = "ftp",
    cel,
    validation = Rule::new("size(self.metadata.name) <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 52 characters of lower-case letters, digits and '-', starting with a letter and ending with a letter or digit: the Service takes the name as it is (a DNS label), the pods carry it in a label, and a StatefulSet's revision label appends 11 characters to it"),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.publicAddress"
    ),
    printcolumn(name = "Passive", type_ = "string", json_path = ".status.passivePorts"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Serving",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // `kubectl scale ftpserver/x --replicas=3`, and a target for a HorizontalPodAutoscaler.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[x_kube(
    validation = Rule::new("self.controlPort < self.passivePorts.min || self.controlPort > self.passivePorts.max")
        .message("controlPort must lie outside passivePorts: move the control port or the passive range")
        .field_path(".controlPort"),
    validation = Rule::new("!has(self.keepalive) || !has(self.keepalive.idleSeconds) || !has(self.loadBalancer) || !has(self.loadBalancer.idleTimeoutSeconds) || self.keepalive.idleSeconds < self.loadBalancer.idleTimeoutSeconds")
        .message("keepalive.idleSeconds must be below loadBalancer.idleTimeoutSeconds, or the balancer forgets idle control connections: lower keepalive.idleSeconds or remove it to derive it")
        .field_path(".keepalive.idleSeconds"),
    validation = Rule::new("self.replicas <= 1 || has(self.passivePorts.perReplica)")
        .message("replicas above 1 need passivePorts.perReplica: each replica advertises only its own slice of the passive range, so set perReplica such that replicas x perReplica ports fit in passivePorts")
        .field_path(".passivePorts.perReplica"),
    validation = Rule::new("!has(self.passivePorts.perReplica) || self.replicas * self.passivePorts.perReplica <= self.passivePorts.max - self.passivePorts.min + 1")
        .message(kube::core::cel::Message::Expression(
            // format(): concatenating string(int)s is priced by the apiserver's cost estimate as
            // unbounded strings and refused.
            "'replicas %d x passivePorts.perReplica %d need %d ports, but passivePorts %d-%d has %d: widen the range or lower replicas'.format([self.replicas, self.passivePorts.perReplica, self.replicas * self.passivePorts.perReplica, self.passivePorts.min, self.passivePorts.max, self.passivePorts.max - self.passivePorts.min + 1])".into()))
        .field_path(".replicas"),
    validation = Rule::new("!has(self.tls) || !self.tls.implicit || (self.tls.implicitPort != self.controlPort && (self.tls.implicitPort < self.passivePorts.min || self.tls.implicitPort > self.passivePorts.max))")
        .message("tls.implicitPort must differ from controlPort and lie outside passivePorts: move one of them (990 is the usual implicit FTPS port)")
        .field_path(".tls.implicitPort"),
    validation = Rule::new("!has(self.tls) || !self.tls.implicit || self.passivePorts.min > 9990 || self.passivePorts.max < 9990")
        .message("passivePorts must not include 9990 when tls.implicit is set: the server pod listens there for implicit FTPS")
        .field_path(".passivePorts"),
    validation = Rule::new("!has(self.loadBalancer) || !has(self.loadBalancer.provider) || self.loadBalancer.provider != 'aws' || self.passivePorts.max - self.passivePorts.min < 49 - (has(self.tls) && self.tls.implicit ? 1 : 0) - (has(self.sftp) && self.sftp.enabled ? 1 : 0)")
        .message("passivePorts may span at most 49 ports with loadBalancer.provider aws, one fewer with tls.implicit and one fewer with sftp: an AWS NLB has at most 50 listeners and the control port (and the implicit FTPS and SFTP ports) takes one each; narrow the range")
        .field_path(".passivePorts"),
    validation = Rule::new("!has(self.sftp) || !self.sftp.enabled || (self.sftp.port != self.controlPort && (self.sftp.port < self.passivePorts.min || self.sftp.port > self.passivePorts.max) && (!has(self.tls) || !self.tls.implicit || self.sftp.port != self.tls.implicitPort))")
        .message("sftp.port must differ from controlPort and tls.implicitPort and lie outside passivePorts: move one of them (22 is the usual SFTP port)")
        .field_path(".sftp.port"),
    validation = Rule::new("!has(self.sftp) || !self.sftp.enabled || self.passivePorts.min > 2222 || self.passivePorts.max < 2222")
        .message("passivePorts must not include 2222 when sftp is enabled: the server pod listens there for SFTP")
        .field_path(".passivePorts"),
)]
#[serde(rename_all = "camelCase")]
pub struct FtpServerSpec {
    /// Number of server pods. Above 1, each owns `passivePorts.perReplica` ports of the range.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must be 0 or more"))]
    pub replicas: i32,

    /// Address advertised to clients in passive replies: an IP or a DNS name. Absent: taken from
    /// the Service's load-balancer status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(r"isIP(self) || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("publicAddress must be an IP address or a lower-case DNS name such as ftp.example.com"))]
    pub public_address: Option<String>,

    /// Port clients connect to on the load balancer for the control connection.
    #[serde(default = "default_control_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("controlPort must be between 1 and 65535 (21 is the FTP standard)"))]
    pub control_port: i32,

    /// Ports for passive data connections; the load balancer forwards every one.
    pub passive_ports: PassivePorts,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveSpec>,

    #[serde(default)]
    pub load_balancer: LoadBalancerSpec,

    /// Where files live; defaults to an emptyDir (lost when the pod goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// Secret with key `users`: lines `name:PHC-hash[:ACCESS[:HOME]]`. ACCESS is `ro`, `rw`
    /// (the default), `incoming` (upload new files only) or a list of `list`, `download`,
    /// `upload`, `delete`, `rename`, `mkdir` joined by `,`; HOME is the login's directory beneath
    /// the storage root (absent: the root), created at its first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UsersSpec>,

    #[serde(default)]
    pub anonymous: AnonymousSpec,

    /// Explicit FTPS (`AUTH TLS`) from a `kubernetes.io/tls` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// SFTP beside FTP: the same users, homes and files on one more port of the same address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sftp: Option<SftpSpec>,

    /// Session limits, timeouts and the login lockout; absent fields take the server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Server image; absent: the operator's default, pinned to its own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Labels added to the server pods, e.g. for a NetworkPolicy or a cost report. The labels
    /// the operator and the StatefulSet controller select pods by are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(RESERVED_POD_LABELS_RULE)
        .message("podLabels must not set app.kubernetes.io/name, app.kubernetes.io/instance, app.kubernetes.io/managed-by, apps.kubernetes.io/pod-index, statefulset.kubernetes.io/pod-name or controller-revision-hash: the operator and the StatefulSet controller select the server's pods by them; pick another key"))]
    pub pod_labels: BTreeMap<String, String>,

    /// Secrets in the FtpServer's namespace the kubelet uses to pull `image` from a private
    /// registry, as in a PodSpec: `[{name: regcred}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(s, size(s.name) >= 1)")
        .message("imagePullSecrets entries must name a Secret: {name: regcred}"))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// ServiceAccount the server pods run as (its image pull secrets apply too); absent: the
    /// namespace's `default`. The server never calls the Kubernetes API, so no token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN_RULE)
        .message("serviceAccountName must be a ServiceAccount's name: lower-case letters, digits, '-' and '.'"))]
    pub service_account_name: Option<String>,

    /// PriorityClass of the server pods; absent: the cluster's default priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(DNS_SUBDOMAIN_RULE)
        .message("priorityClassName must be a PriorityClass's name: lower-case letters, digits, '-' and '.'"))]
    pub priority_class_name: Option<String>,

    /// How long a pod being replaced (rollout, scale down, node drain) lets running transfers
    /// finish after it stops taking new sessions; the pod's termination grace follows it.
    #[serde(default = "default_drain_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("drainSeconds must be between 0 and 86400 (one day)"))]
    pub drain_seconds: i32,

    /// Run the server on the node's network (no SNAT). Pods on the host network cannot set
    /// `net.*` sysctls, so keepalive then relies on the server's own socket options.
    #[serde(default)]
    pub host_network: bool,
}

/// Pod labels the operator sets (its selector and `managed-by`) and the StatefulSet controller
/// sets (ordinal, pod name, revision): a user's value would move pods out of their selectors.
pub const RESERVED_POD_LABELS: [&str; 6] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "apps.kubernetes.io/pod-index",
    "statefulset.kubernetes.io/pod-name",
    "controller-revision-hash",
];

// Key lookups, not `self.all(...)`: a map lookup costs the apiserver's estimate a constant,
// while iterating an unbounded map of unbounded strings exceeds its budget.
const RESERVED_POD_LABELS_RULE: &str = "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self) && !('app.kubernetes.io/managed-by' in self) && !('apps.kubernetes.io/pod-index' in self) && !('statefulset.kubernetes.io/pod-name' in self) && !('controller-revision-hash' in self)";

const DNS_SUBDOMAIN_RULE: &str =
    r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";

fn default_replicas() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_control_port() -> i32 {
    21
}

fn default_drain_seconds() -> i32 {
    600
}

/// An inclusive range of ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("self.min <= self.max")
        .message("passivePorts.min must not exceed passivePorts.max: swap them"),
    validation = Rule::new("self.min >= 1024 && self.max <= 65535")
        .message("passivePorts must lie within 1024-65535: pick an unprivileged range such as 20000-20019"),
    validation = Rule::new("self.max - self.min < 1000")
        .message("passivePorts may span at most 1000 ports (each one is a Service port and a load-balancer rule): narrow the range"),
    validation = Rule::new("!(self.min <= 2121 && 2121 <= self.max) && !(self.min <= 9100 && 9100 <= self.max)")
        .message("passivePorts must not include 2121 or 9100: the server pod listens there for control connections and metrics"),
    validation = Rule::new("!has(self.perReplica) || (self.perReplica >= 1 && self.perReplica <= self.max - self.min + 1)")
        .message("passivePorts.perReplica must be between 1 and the number of ports in the range"),
)]
pub struct PassivePorts {
    pub min: i32,
    pub max: i32,
    /// Ports each replica owns: replica `i` advertises only
    /// `min + i*perReplica .. min + (i+1)*perReplica - 1`. Fixed, so scaling adds or removes
    /// slices without moving the others. Absent: the whole range, for one replica.
    #[serde(
        default,
        rename = "perReplica",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_replica: Option<i32>,
}

impl PassivePorts {
    pub fn len(&self) -> i32 {
        self.max - self.min + 1
    }

    pub fn is_empty(&self) -> bool {
        self.max < self.min
    }

    pub fn ports(&self) -> std::ops::RangeInclusive<i32> {
        self.min..=self.max
    }

    /// The ports replica `index` owns: its slice, or the whole range without `perReplica`.
    pub fn slice(&self, index: i32) -> std::ops::RangeInclusive<i32> {
        match self.per_replica {
            Some(size) => {
                let min = self.min + index * size;
                min..=(min + size - 1).min(self.max)
            }
            None => self.ports(),
        }
    }
}

impl std::fmt::Display for PassivePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// TCP keepalive on the server's sockets (and the pod's sysctls).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.idleSeconds) || (self.idleSeconds >= 1 && self.idleSeconds <= 32767)")
        .message("keepalive.idleSeconds must be between 1 and 32767 (the kernel's limit)"),
    validation = Rule::new("!has(self.intervalSeconds) || (self.intervalSeconds >= 1 && self.intervalSeconds <= 32767)")
        .message("keepalive.intervalSeconds must be between 1 and 32767 (the kernel's limit)"),
    validation = Rule::new("self.probes >= 1 && self.probes <= 127")
        .message("keepalive.probes must be between 1 and 127 (the kernel's limit)"),
)]
#[serde(rename_all = "camelCase")]
pub struct KeepaliveSpec {
    /// Seconds a connection is idle before the first probe. Absent: derived from the balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<i32>,
    /// Seconds between unanswered probes. Absent: derived from the balancer, so that a lost
    /// probe is retried before the balancer forgets the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i32>,
    #[serde(default = "default_keepalive_probes")]
    pub probes: i32,
    /// Also tune the nodes' keepalive sysctls (needed for hostNetwork servers).
    #[serde(default)]
    pub node_sysctls: bool,
}

impl Default for KeepaliveSpec {
    fn default() -> Self {
        KeepaliveSpec {
            idle_seconds: None,
            interval_seconds: None,
            probes: default_keepalive_probes(),
            node_sysctls: false,
        }
    }
}

fn default_keepalive_probes() -> i32 {
    6
}

/// The cloud in front of the server; decides annotations, idle timeouts and port limits.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Generic,
    Azure,
    Aws,
    Gcp,
    Metallb,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.provider) || self.provider != 'azure' || !has(self.idleTimeoutSeconds) || (self.idleTimeoutSeconds % 60 == 0 && self.idleTimeoutSeconds >= 240 && self.idleTimeoutSeconds <= 6000)")
        .message("loadBalancer.idleTimeoutSeconds must be a whole number of minutes from 4 to 100 (240-6000, a multiple of 60) with provider azure: Azure sets idle timeouts in minutes")
        .field_path(".idleTimeoutSeconds"),
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    #[serde(default)]
    pub provider: Provider,
    /// The balancer's idle timeout; absent: the provider's documented default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("loadBalancer.idleTimeoutSeconds must be at least 1"))]
    pub idle_timeout_seconds: Option<i32>,
    /// Passed through to the Service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The Service's `loadBalancerSourceRanges`: CIDRs such as 198.51.100.0/24.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(range, isCIDR(range))")
        .message("loadBalancer.sourceRanges entries must be CIDRs such as 198.51.100.0/24 or 2001:db8::/32"))]
    pub source_ranges: Vec<String>,
    /// The balancer sends a PROXY protocol header (v1 or v2) with the client's address on every
    /// connection; the server reads it from these sources and from no others. Absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolSpec>,
}

/// Where PROXY protocol headers come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("size(self.trustedSources) >= 1")
        .message("loadBalancer.proxyProtocol.trustedSources must list the balancer's addresses (e.g. the VPC's CIDR): without them no header would be read"),
    validation = Rule::new("self.trustedSources.all(c, isCIDR(c))")
        .message("loadBalancer.proxyProtocol.trustedSources must be CIDRs such as 10.0.0.0/16"),
)]
#[serde(rename_all = "camelCase")]
pub struct ProxyProtocolSpec {
    /// CIDRs the balancer connects from (AWS NLB: the VPC's or the balancer subnets' CIDRs).
    /// Connections from them must start with a header; headers from anywhere else are refused.
    #[schemars(length(max = 32), inner(length(max = 43)))]
    pub trusted_sources: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.persistentVolumeClaim), has(self.emptyDir), has(self.claimPerReplica), has(self.s3), has(self.azureBlob)].filter(x, x).size() == 1")
        .message("storage must set exactly one of persistentVolumeClaim, emptyDir, claimPerReplica, s3 or azureBlob"),
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// One existing claim every replica mounts: with more than one replica it must be
    /// ReadWriteMany.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimRef>,
    /// Scratch space per pod, lost when the pod goes; each replica has its own files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// A claim of its own for each replica (`data-<server>-<i>`), kept across pod replacements
    /// and scale-downs; each replica has its own files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_per_replica: Option<ClaimTemplate>,
    /// An S3 bucket (or S3-compatible store): every replica serves the same files with no
    /// volume at all. What each FTP command does there, and what is refused (APPE, REST + STOR),
    /// is in docs/storage.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3StorageSpec>,
    /// An Azure Blob Storage container, shared by every replica like `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_blob: Option<AzureBlobStorageSpec>,
}

impl StorageSpec {
    /// Files live in an object store: no volume holds them.
    pub fn is_object_storage(&self) -> bool {
        self.s3.is_some() || self.azure_blob.is_some()
    }
}

/// Where in Azure Blob Storage the files live, and how the server signs in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AzureBlobStorageSpec {
    /// The storage account.
    #[schemars(length(min = 3, max = 24))]
    pub account: String,
    /// The container; the server checks at startup that it can list it.
    #[schemars(length(min = 3, max = 63))]
    pub container: String,
    /// Name prefix every home lives beneath, e.g. `ftp/`; absent: the container's top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Blob endpoint URL; absent: `https://<account>.blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Secret with key `AZURE_STORAGE_ACCOUNT_KEY` (or `AZURE_STORAGE_SAS_TOKEN`), given to the
    /// server as that environment variable. Absent: Azure workload identity (a service account
    /// federated with a managed identity, spec.serviceAccountName, and the pod label
    /// `azure.workload.identity/use: "true"` in spec.podLabels), with no Secret at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

impl AzureBlobStorageSpec {
    /// The keys `credentialsSecretRef` may hold; one of them is used.
    pub const CREDENTIAL_KEYS: [&str; 2] = ["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN"];
}

/// Where in S3 the files live, and how the server signs in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3StorageSpec {
    /// The bucket; the server checks at startup that it can list it.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix every home lives beneath, e.g. `ftp/`; absent: the bucket's top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Endpoint URL of an S3-compatible store; absent: AWS's for the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// The bucket's region; absent: us-east-1 (or AWS_REGION where the cloud injects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Address the bucket in the URL's path (`endpoint/bucket/key`), as most S3-compatible
    /// stores need; absent or false: as a host name (`bucket.endpoint/key`), AWS's way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, given to the server
    /// as environment variables. Absent: the pod's workload identity (on EKS, IRSA through
    /// spec.serviceAccountName, or EKS Pod Identity), with no Secret at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

impl S3StorageSpec {
    /// The keys `credentialsSecretRef` must hold.
    pub const CREDENTIAL_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
}

/// The claim made for each replica.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTemplate {
    /// Requested size, e.g. `10Gi`.
    pub size: String,
    /// Absent: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimRef {
    pub claim_name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsersSpec {
    pub secret_ref: SecretRef,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    cel,
    validation = Rule::new("!self.writable || self.enabled")
        .message("anonymous.writable needs anonymous.enabled: enable anonymous access or drop writable"),
)]
pub struct AnonymousSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub writable: bool,
    /// Directory beneath the storage root anonymous sessions are confined to, e.g. `pub`
    /// (`..` cannot climb above the root); absent: the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub home: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    pub secret_ref: SecretRef,
    /// Refuse logins before `AUTH TLS` and plain data channels.
    #[serde(default)]
    pub required: bool,
    /// Also serve implicit FTPS (TLS from the first byte) on `implicitPort`, for clients that
    /// speak only that; one more Service port, same certificate.
    #[serde(default)]
    pub implicit: bool,
    /// The load balancer's port for implicit FTPS (the pod listens on 9990).
    #[serde(default = "default_implicit_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub implicit_port: i32,
    /// A protected data connection must resume the TLS session of its own control connection,
    /// so nobody else can take a transfer's data (vsftpd `require_ssl_reuse`). Set false only for
    /// clients that cannot resume, such as Python's stock `ftplib`.
    #[serde(default = "default_true")]
    pub require_session_reuse: bool,
}

fn default_implicit_port() -> i32 {
    990
}

/// SFTP on the same server: the users of `users` log in by password, or by the keys of the
/// users Secret's `NAME.authorized_keys` entries. The host keys are made once, in the Secret
/// `<name>-sftp-host-keys` the FtpServer owns, and every replica presents them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SftpSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The load balancer's port for SFTP (the pod listens on 2222).
    #[serde(default = "default_sftp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_sftp_port() -> i32 {
    22
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// What the controller last saw and did, in kstatus form.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FtpServerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The address clients are told to connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// The passive range in force, `MIN-MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Server pods that exist now (the scale subresource's status replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the server pods, for the scale subresource (and an autoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The node keepalive tuner's progress on the nodes this server's pods may run on; only
    /// when the server needs node sysctls (`keepalive.nodeSysctls` or `hostNetwork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_keepalive: Option<NodeKeepaliveStatus>,
}

/// Per-node keepalive tuning, summed over the nodes the server's pods may run on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeKeepaliveStatus {
    /// Nodes whose tuner applies this server's values (or smaller ones).
    pub tuned: i32,
    /// Nodes whose tuner has not reported this server yet.
    pub pending: i32,
    /// Nodes whose tuner reported an error.
    pub failed: i32,
    /// `node: reason` for the first few failed nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl FtpServer {
    /// The CRD as YAML, as `ftp-operator crd` prints it and `crds/ftpserver.yaml` holds it.
    pub fn crd_yaml() -> String {
        use kube::CustomResourceExt;
        let yaml = serde_yaml::to_string(&FtpServer::crd()).unwrap_or_default();
        format!("# Generated by `ftp-operator crd`; do not edit.\n{yaml}")
    }
}

#[cfg(test)]
mod tests;
