//! What each load balancer needs to know and allows: idle timeouts, annotations, port limits.
//!
//! Decisions worth knowing:
//! - Azure sets its idle timeout in whole minutes (4–100), so `idleTimeoutSeconds` must be whole
//!   minutes there; rounding would make the balancer forget flows earlier than the user said.
//! - AWS NLB (AWS Load Balancer Controller): one listener per Service port, at most 50 per
//!   balancer, so at most 49 passive ports beside the control port. Client IPs are preserved
//!   because the server accepts data connections only from the control connection's peer.
//! - GCP passthrough forwarding rules take at most 5 separate ports, or one contiguous range. The
//!   passive range is contiguous, but the control port usually is not next to it; rather than let
//!   the cloud widen the rule to everything between them, more than 5 ports are accepted only when
//!   the control port sits right next to the passive range.
//! - PROXY protocol (`loadBalancer.proxyProtocol`): only AWS has a Service annotation that turns
//!   it on. Azure's public Standard Load Balancer forwards packets and sends no header (its
//!   `azure-pls-proxy-protocol` annotation is for Private Link Service only, see
//!   https://kubernetes-sigs.github.io/cloud-provider-azure/topics/pls-integration); GCP's
//!   passthrough Network Load Balancer, which LoadBalancer Services get, has no PROXY header
//!   either, only the proxy balancers do (https://cloud.google.com/load-balancing/docs/features);
//!   MetalLB announces addresses and forwards nothing itself. There the setting is for a balancer
//!   the user runs in front (HAProxy), which they configure themselves.

use std::collections::BTreeMap;

use crate::api::{FtpServerSpec, Provider};

pub mod replicas;
pub use replicas::{AddressSharing, ReplicaRouting, replica_routing};

pub const AZURE_IDLE_TIMEOUT_ANNOTATION: &str =
    "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout";
pub const AWS_TYPE_ANNOTATION: &str = "service.beta.kubernetes.io/aws-load-balancer-type";
pub const AWS_NLB_TARGET_TYPE_ANNOTATION: &str =
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type";
pub const AWS_SCHEME_ANNOTATION: &str = "service.beta.kubernetes.io/aws-load-balancer-scheme";
pub const AWS_TARGET_GROUP_ATTRIBUTES_ANNOTATION: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";
/// Followed by `TCP-<port>`: one listener's attributes, as the AWS Load Balancer Controller reads
/// them (`tcp.idle_timeout.seconds=<n>`, 60-6000 s, is the NLB listener attribute AWS documents).
pub const AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX: &str =
    "service.beta.kubernetes.io/aws-load-balancer-listener-attributes.";

/// AWS Load Balancer Controller: `"*"` enables PROXY protocol v2 on every target group
/// (https://kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/service/annotations/).
pub const AWS_PROXY_PROTOCOL_ANNOTATION: &str =
    "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol";

/// AWS NLB: listeners per load balancer.
pub const AWS_MAX_LISTENERS: i32 = 50;
/// GCP passthrough forwarding rule: separate ports per rule.
pub const GCP_MAX_SEPARATE_PORTS: i32 = 5;

/// A spec the chosen balancer cannot carry; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitError(pub String);

/// The balancer's documented idle timeout when the user gives none, in seconds.
pub fn default_idle_timeout_seconds(provider: Provider) -> i32 {
    match provider {
        Provider::Azure => 240,
        Provider::Aws => 350,
        // GCP's firewall connection tracking.
        Provider::Gcp => 600,
        // Bare-metal balancers hand flows to kube-proxy; IPVS forgets idle TCP after 900 s.
        Provider::Metallb | Provider::Generic => 900,
    }
}

/// The idle timeout in force: the user's, else the provider's default.
pub fn idle_timeout_seconds(spec: &FtpServerSpec) -> i32 {
    spec.load_balancer
        .idle_timeout_seconds
        .unwrap_or_else(|| default_idle_timeout_seconds(spec.load_balancer.provider))
}

/// Checks what the provider allows, before anything is applied.
pub fn check_limits(spec: &FtpServerSpec) -> Result<(), LimitError> {
    let passive = spec.passive_ports;
    let idle = spec.load_balancer.idle_timeout_seconds;
    match spec.load_balancer.provider {
        Provider::Azure => {
            if let Some(seconds) = idle
                && (!(240..=6000).contains(&seconds) || seconds % 60 != 0)
            {
                return Err(LimitError(format!(
                    "loadBalancer.idleTimeoutSeconds {seconds} is not possible on Azure, which sets \
                     idle timeouts in whole minutes from 4 to 100: use a multiple of 60 between \
                     240 and 6000"
                )));
            }
        }
        Provider::Aws => {
            let (max_passive, others) = match (implicit_tls_port(spec), sftp_port(spec)) {
                (None, None) => (AWS_MAX_LISTENERS - 1, "one is the control port"),
                (Some(_), None) => (
                    AWS_MAX_LISTENERS - 2,
                    "two are the control and implicit FTPS ports",
                ),
                (None, Some(_)) => (AWS_MAX_LISTENERS - 2, "two are the control and SFTP ports"),
                (Some(_), Some(_)) => (
                    AWS_MAX_LISTENERS - 3,
                    "three are the control, implicit FTPS and SFTP ports",
                ),
            };
            if passive.len() > max_passive {
                return Err(LimitError(format!(
                    "passivePorts {passive} has {} ports; AWS NLB allows at most {max_passive} \
                     behind one load balancer (50 listeners, {others}): narrow the range, e.g. \
                     {}-{}",
                    passive.len(),
                    passive.min,
                    passive.min + max_passive - 1
                )));
            }
            if let Some(seconds) = idle
                && !(60..=6000).contains(&seconds)
            {
                return Err(LimitError(format!(
                    "loadBalancer.idleTimeoutSeconds {seconds} is outside AWS NLB's 60-6000 \
                     seconds: pick a value in that range"
                )));
            }
        }
        Provider::Gcp => {
            // With slices, the control Service (control and implicit FTPS ports: two) and each
            // slice's Service are forwarding rules of their own (`replicas::replica_routing`).
            let sliced = passive.per_replica.is_some();
            if sftp_port(spec).is_some() && !sliced {
                let mut ports: Vec<i32> = listener_ports(spec).collect();
                ports.sort_unstable();
                let contiguous = ports.windows(2).all(|pair| pair[1] == pair[0] + 1);
                let fronts = ports.len() as i32 - passive.len();
                if ports.len() > GCP_MAX_SEPARATE_PORTS as usize && !contiguous {
                    return Err(LimitError(format!(
                        "controlPort {}, sftp.port{} and passivePorts {passive} make {} ports \
                         that are not one contiguous range; GCP forwarding rules take at most \
                         {GCP_MAX_SEPARATE_PORTS} separate ports: put those ports right beside \
                         the range, or use at most {} passive ports",
                        spec.control_port,
                        if implicit_tls_port(spec).is_some() {
                            ", tls.implicitPort"
                        } else {
                            ""
                        },
                        ports.len(),
                        GCP_MAX_SEPARATE_PORTS - fronts
                    )));
                }
                return Ok(());
            }
            if let Some(implicit) = implicit_tls_port(spec).filter(|_| !sliced) {
                let mut ports: Vec<i32> = listener_ports(spec).collect();
                ports.sort_unstable();
                let contiguous = ports.windows(2).all(|pair| pair[1] == pair[0] + 1);
                if ports.len() > GCP_MAX_SEPARATE_PORTS as usize && !contiguous {
                    return Err(LimitError(format!(
                        "controlPort {}, tls.implicitPort {implicit} and passivePorts {passive} \
                         make {} ports that are not one contiguous range; GCP forwarding rules \
                         take at most {GCP_MAX_SEPARATE_PORTS} separate ports: put the two ports \
                         at {} and {}, or use at most {} passive ports",
                        spec.control_port,
                        ports.len(),
                        passive.min - 1,
                        passive.max + 1,
                        GCP_MAX_SEPARATE_PORTS - 2
                    )));
                }
                return Ok(());
            }
            let total = passive.len() + 1;
            let adjacent =
                spec.control_port == passive.min - 1 || spec.control_port == passive.max + 1;
            if total > GCP_MAX_SEPARATE_PORTS && !adjacent && !sliced {
                return Err(LimitError(format!(
                    "controlPort {} and passivePorts {passive} make {total} ports that are not one \
                     contiguous range; GCP forwarding rules take at most {GCP_MAX_SEPARATE_PORTS} \
                     separate ports: set controlPort to {} or {}, or use at most {} passive ports",
                    spec.control_port,
                    passive.min - 1,
                    passive.max + 1,
                    GCP_MAX_SEPARATE_PORTS - 1
                )));
            }
        }
        Provider::Metallb | Provider::Generic => {}
    }
    Ok(())
}

/// Whether the provider's balancer sends traffic through NodePorts. Every passive port takes one
/// from the cluster-wide pool (30000-32767, 2768 ports by default) unless the Service sets
/// `allocateLoadBalancerNodePorts: false`, which is safe only where the balancer does not use them.
/// - AWS: the operator asks the AWS Load Balancer Controller for IP targets
///   (`aws-load-balancer-nlb-target-type: ip`): "the AWS NLB targets traffic directly to the
///   Kubernetes pods" (kubernetes-sigs.github.io/aws-load-balancer-controller, guide/service/nlb,
///   IP mode), so NodePorts carry nothing.
/// - Azure, GCP, MetalLB and generic balancers keep the default: their controllers may target
///   node ports, and without a source saying otherwise a missing NodePort would break traffic.
pub fn needs_node_ports(provider: Provider) -> bool {
    match provider {
        Provider::Aws => false,
        Provider::Azure | Provider::Gcp | Provider::Metallb | Provider::Generic => true,
    }
}

/// Annotations the provider needs on the Service, before the user's own (which win).
pub fn service_annotations(spec: &FtpServerSpec) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    let idle = spec.load_balancer.idle_timeout_seconds;
    match spec.load_balancer.provider {
        Provider::Azure => {
            if let Some(seconds) = idle {
                annotations.insert(
                    AZURE_IDLE_TIMEOUT_ANNOTATION.to_owned(),
                    (seconds / 60).to_string(),
                );
            }
        }
        Provider::Aws => {
            annotations.insert(AWS_TYPE_ANNOTATION.to_owned(), "external".to_owned());
            annotations.insert(AWS_NLB_TARGET_TYPE_ANNOTATION.to_owned(), "ip".to_owned());
            annotations.insert(
                AWS_SCHEME_ANNOTATION.to_owned(),
                "internet-facing".to_owned(),
            );
            annotations.insert(
                AWS_TARGET_GROUP_ATTRIBUTES_ANNOTATION.to_owned(),
                "preserve_client_ip.enabled=true".to_owned(),
            );
            if spec.load_balancer.proxy_protocol.is_some() {
                annotations.insert(AWS_PROXY_PROTOCOL_ANNOTATION.to_owned(), "*".to_owned());
            }
            if let Some(seconds) = idle {
                for port in listener_ports(spec) {
                    annotations.insert(
                        format!("{AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX}TCP-{port}"),
                        format!("tcp.idle_timeout.seconds={seconds}"),
                    );
                }
            }
        }
        Provider::Gcp | Provider::Metallb | Provider::Generic => {}
    }
    annotations
}

/// The public implicit FTPS port, when it is on.
fn implicit_tls_port(spec: &FtpServerSpec) -> Option<i32> {
    spec.tls
        .as_ref()
        .filter(|tls| tls.implicit)
        .map(|tls| tls.implicit_port)
}

/// The public SFTP port, when it is on.
fn sftp_port(spec: &FtpServerSpec) -> Option<i32> {
    spec.sftp
        .as_ref()
        .filter(|sftp| sftp.enabled)
        .map(|sftp| sftp.port)
}

/// Every port the balancer forwards: control, implicit FTPS and SFTP (when on), passive.
fn listener_ports(spec: &FtpServerSpec) -> impl Iterator<Item = i32> {
    std::iter::once(spec.control_port)
        .chain(implicit_tls_port(spec))
        .chain(sftp_port(spec))
        .chain(spec.passive_ports.ports())
}

#[cfg(test)]
mod tests;
