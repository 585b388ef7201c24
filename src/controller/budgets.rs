//! Budgets a server's Services draw from the whole cluster, checked before they are applied:
//!
//! - NodePorts. Every port of a Service that allocates node ports takes one from the
//!   apiserver's `--service-node-port-range` (30000-32767, 2768 ports, by default), and a
//!   LoadBalancer Service with `externalTrafficPolicy: Local` one more for its
//!   `healthCheckNodePort`. The controller cannot read the apiserver's flag, so the range is a
//!   setting of its own (`--node-port-range`, the chart's `cluster.nodePortRange`).
//! - Azure load-balancing rules per NIC. Azure allows 300 "rules per NIC (across all IPs on a
//!   NIC)" on Standard and Basic Load Balancers (Azure subscription limits, "Load balancer
//!   limits": https://learn.microsoft.com/azure/azure-resource-manager/management/azure-subscription-service-limits#load-balancer).
//!   cloud-provider-azure puts every node in the cluster balancer's backend pool, and "any
//!   IP:port combination in a frontEndIPConfiguration that maps to a member of a backend pool
//!   counts as one of the 300 rules for that node"
//!   (https://cloud-provider-azure.sigs.k8s.io/topics/multislb/): one rule per Service port, for
//!   every LoadBalancer Service of the cluster. With several Standard Load Balancers
//!   (`multipleStandardLoadBalancerConfigurations`) a node is in fewer pools, so the limit is a
//!   setting (`--azure-rules-per-nic`) an admin may raise.
//!
//! The cluster's use is read with one paged LIST of Services, and only when this server's
//! Services would take more than they hold: a quiet reconcile makes no call, and nothing of the
//! listing is kept (no cluster-wide Service cache).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::api::{FtpServerSpec, Provider};

use crate::process::errors::ApplyError;
use crate::process::errors::Invalid;

/// The Stalled reason when the cluster's NodePort range cannot hold this server's ports.
pub const NODE_PORTS_EXHAUSTED: &str = "NodePortsExhausted";
/// The Stalled reason when Azure's load-balancing rules per NIC would be exceeded.
pub const AZURE_RULES_EXHAUSTED: &str = "AzureRulesPerNicExhausted";

/// Azure's documented rules per NIC (see the module comment).
pub const AZURE_RULES_PER_NIC: u32 = 300;

/// Services per page of the cluster-wide listing: bounds what is held at once.
const LIST_PAGE: u32 = 500;

/// The apiserver's `--service-node-port-range`, as the controller is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    pub min: u16,
    pub max: u16,
}

impl NodePortRange {
    /// The apiserver's default.
    pub const DEFAULT: NodePortRange = NodePortRange {
        min: 30000,
        max: 32767,
    };

    pub fn len(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn contains(&self, port: i32) -> bool {
        (i32::from(self.min)..=i32::from(self.max)).contains(&port)
    }
}

impl Default for NodePortRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl FromStr for NodePortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "node port range {text:?} must be MIN-MAX with 1 <= MIN <= MAX <= 65535, as the \
                 apiserver's --service-node-port-range (e.g. 30000-32767)"
            )
        };
        let (min, max) = text.trim().split_once('-').ok_or_else(bad)?;
        let min: u16 = min.trim().parse().map_err(|_| bad())?;
        let max: u16 = max.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(NodePortRange { min, max })
    }
}

/// The cluster's limits the controller checks against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterBudgets {
    pub node_ports: NodePortRange,
    pub azure_rules_per_nic: u32,
}

impl Default for ClusterBudgets {
    fn default() -> Self {
        ClusterBudgets {
            node_ports: NodePortRange::DEFAULT,
            azure_rules_per_nic: AZURE_RULES_PER_NIC,
        }
    }
}

/// What a set of Services takes from the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Draw {
    pub node_ports: usize,
    /// Ports of LoadBalancer Services served by the cloud's controller (no loadBalancerClass).
    pub balancer_rules: usize,
}

fn is_load_balancer(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .is_some_and(|spec| spec.type_.as_deref() == Some("LoadBalancer"))
}

/// Services with a `loadBalancerClass` are left to another controller by the cloud provider's.
fn cloud_balanced(service: &Service) -> bool {
    is_load_balancer(service)
        && service
            .spec
            .as_ref()
            .is_some_and(|spec| spec.load_balancer_class.is_none())
}

fn port_count(service: &Service) -> usize {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .map_or(0, Vec::len)
}

/// What the desired Services will take once applied.
pub fn wanted(services: &[Service]) -> Draw {
    let mut draw = Draw::default();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let ports = port_count(service);
        let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        if node_port_type && spec.allocate_load_balancer_node_ports != Some(false) {
            draw.node_ports += ports;
        }
        // Allocated whether or not the balancer uses node ports.
        if is_load_balancer(service) && spec.external_traffic_policy.as_deref() == Some("Local") {
            draw.node_ports += 1;
        }
        if cloud_balanced(service) {
            draw.balancer_rules += ports;
        }
    }
    draw
}

/// What live Services hold now.
pub fn held<'a>(services: impl IntoIterator<Item = &'a Service>) -> Draw {
    let mut draw = Draw::default();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        draw.node_ports += spec
            .ports
            .iter()
            .flatten()
            .filter(|port| port.node_port.is_some())
            .count();
        draw.node_ports += usize::from(spec.health_check_node_port.is_some());
        if cloud_balanced(service) {
            draw.balancer_rules += port_count(service);
        }
    }
    draw
}

/// The cluster's use, summed over every Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterUse {
    /// Distinct node ports in use inside the range (a port serving TCP and UDP counts once).
    pub node_ports: usize,
    pub balancer_rules: usize,
}

impl ClusterUse {
    pub fn of<'a>(services: impl IntoIterator<Item = &'a Service>, range: NodePortRange) -> Self {
        let mut tally = Tally::new(range);
        services.into_iter().for_each(|service| tally.add(service));
        tally.into_use()
    }
}

/// Sums Services one at a time, so a paged listing keeps no more than a page.
struct Tally {
    range: NodePortRange,
    node_ports: BTreeSet<i32>,
    balancer_rules: usize,
}

impl Tally {
    fn new(range: NodePortRange) -> Self {
        Tally {
            range,
            node_ports: BTreeSet::new(),
            balancer_rules: 0,
        }
    }

    fn add(&mut self, service: &Service) {
        let Some(spec) = &service.spec else { return };
        let ports = spec.ports.iter().flatten().filter_map(|p| p.node_port);
        let range = self.range;
        self.node_ports.extend(
            ports
                .chain(spec.health_check_node_port)
                .filter(|port| range.contains(*port)),
        );
        if cloud_balanced(service) {
            self.balancer_rules += port_count(service);
        }
    }

    fn into_use(self) -> ClusterUse {
        ClusterUse {
            node_ports: self.node_ports.len(),
            balancer_rules: self.balancer_rules,
        }
    }
}

/// Which checks need the cluster's use: only a server whose Services would take more.
pub fn needs_listing(spec: &FtpServerSpec, wanted: Draw, held: Draw) -> bool {
    wanted.node_ports > held.node_ports
        || (spec.load_balancer.provider == Provider::Azure
            && wanted.balancer_rules > held.balancer_rules)
}

/// The first budget this server's Services would break, with the numbers and the fix.
pub fn judge(
    spec: &FtpServerSpec,
    budgets: &ClusterBudgets,
    wanted: Draw,
    held: Draw,
    used: &ClusterUse,
) -> Option<Invalid> {
    let passive = spec.passive_ports;
    let range = budgets.node_ports;
    let more = wanted.node_ports.saturating_sub(held.node_ports);
    let free = range.len().saturating_sub(used.node_ports);
    if more > free {
        return Some(Invalid {
            reason: NODE_PORTS_EXHAUSTED,
            message: format!(
                "passivePorts {passive} with controlPort {control} needs {needed} NodePorts (one \
                 per Service port, one per Service for the externalTrafficPolicy: Local health \
                 check), {more} more than its Services hold; the cluster's NodePort range \
                 {range} has {size}, {used} in use, {free} free: shrink passivePorts, free \
                 NodePorts, or use a provider whose balancer needs none \
                 (allocateLoadBalancerNodePorts: false, loadBalancer.provider: aws); if the \
                 apiserver's --service-node-port-range is not {range}, set the operator's \
                 --node-port-range (chart value cluster.nodePortRange)",
                control = spec.control_port,
                needed = wanted.node_ports,
                size = range.len(),
                used = used.node_ports,
            ),
        });
    }
    if spec.load_balancer.provider == Provider::Azure {
        let limit = budgets.azure_rules_per_nic as usize;
        let after =
            (used.balancer_rules + wanted.balancer_rules).saturating_sub(held.balancer_rules);
        if wanted.balancer_rules > held.balancer_rules && after > limit {
            let others = used.balancer_rules.saturating_sub(held.balancer_rules);
            return Some(Invalid {
                reason: AZURE_RULES_EXHAUSTED,
                message: format!(
                    "passivePorts {passive} with controlPort {control} needs {needed} Azure \
                     load-balancing rules (one per Service port, on every node's NIC); the \
                     cluster's other LoadBalancer Services use {others}, {after} in all, but \
                     Azure allows {limit} rules per NIC: shrink passivePorts, remove ports \
                     from other LoadBalancer Services, or spread Services over several \
                     Standard Load Balancers (cloud-provider-azure \
                     multipleStandardLoadBalancerConfigurations) and raise the operator's \
                     --azure-rules-per-nic (chart value cluster.azureRulesPerNic)",
                    control = spec.control_port,
                    needed = wanted.balancer_rules,
                ),
            });
        }
    }
    None
}

/// Checks this server's desired Services against the cluster's budgets, listing every Service
/// only when they would take more than `live` holds. Without the right to list Services
/// cluster-wide (a namespaced install), the check is skipped and the apiserver's own refusal
/// (a full NodePort range) surfaces as Stalled when the Service is applied.
pub async fn check(
    client: &Client,
    budgets: &ClusterBudgets,
    spec: &FtpServerSpec,
    desired: &[Service],
    live: &[&Service],
) -> Result<Option<Invalid>, ApplyError> {
    let wanted = wanted(desired);
    let held = held(live.iter().copied());
    if !needs_listing(spec, wanted, held) {
        return Ok(None);
    }
    let Some(used) = cluster_use(client, budgets.node_ports).await? else {
        return Ok(None);
    };
    Ok(judge(spec, budgets, wanted, held, &used))
}

/// The cluster's use from a paged LIST of every Service; None when the operator may not list
/// them cluster-wide.
async fn cluster_use(
    client: &Client,
    range: NodePortRange,
) -> Result<Option<ClusterUse>, ApplyError> {
    let api: Api<Service> = Api::all(client.clone());
    let mut tally = Tally::new(range);
    let mut params = ListParams::default().limit(LIST_PAGE);
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(status)) if status.code == 403 => {
                tracing::warn!(
                    message = %status.message,
                    "cannot list Services cluster-wide; NodePort and Azure rule budgets are not checked"
                );
                return Ok(None);
            }
            Err(source) => return Err(ApplyError::read::<Service>("(all namespaces)", source)),
        };
        page.items.iter().for_each(|service| tally.add(service));
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(Some(tally.into_use()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::desired_services;
    use crate::controller::build::fixtures::{self, server, validated};

    fn service(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn the_range_parses_like_the_apiservers_flag() {
        assert_eq!(
            "30000-32767".parse::<NodePortRange>(),
            Ok(NodePortRange::DEFAULT)
        );
        assert_eq!(NodePortRange::DEFAULT.len(), 2768);
        for bad in ["30000", "32767-30000", "0-10", "a-b", "30000-70000"] {
            let err = bad.parse::<NodePortRange>().unwrap_err();
            assert!(err.contains("--service-node-port-range"), "{err}");
        }
    }

    #[test]
    fn desired_services_want_a_node_port_per_port_and_one_for_the_health_check() {
        let server = server(fixtures::MINIMAL);
        let services = desired_services(&server, &validated(&server), None, 1);
        // Control port and passive 30000-30002, and the Local health check.
        assert_eq!(
            wanted(&services),
            Draw {
                node_ports: 5,
                balancer_rules: 4
            }
        );
        let mut aws = server.clone();
        aws.spec.load_balancer.provider = Provider::Aws;
        let services = desired_services(&aws, &validated(&aws), None, 1);
        assert_eq!(wanted(&services).node_ports, 1, "only the health check");
    }

    const LIVE: &str = r#"
metadata: {name: s}
spec:
  type: LoadBalancer
  healthCheckNodePort: 32000
  ports:
  - {port: 21, nodePort: 31000, protocol: TCP}
  - {port: 53, nodePort: 31001, protocol: TCP}
  - {port: 53, nodePort: 31001, protocol: UDP}
"#;

    #[test]
    fn the_clusters_use_counts_distinct_node_ports_inside_the_range() {
        let live = service(LIVE);
        let classed = service(
            "metadata: {name: c}\nspec: {type: LoadBalancer, loadBalancerClass: x, ports: [{port: 1, nodePort: 40000}]}",
        );
        let used = ClusterUse::of([&live, &classed], NodePortRange::DEFAULT);
        assert_eq!(
            used,
            ClusterUse {
                node_ports: 3,
                balancer_rules: 3
            }
        );
        assert_eq!(
            held([&live]),
            Draw {
                node_ports: 4,
                balancer_rules: 3
            }
        );
    }

    #[test]
    fn node_ports_that_do_not_fit_stall_with_the_numbers_and_the_fix() {
        let spec = server(
            "metadata: {name: big, namespace: ftp}\nspec: {passivePorts: {min: 20000, max: 20999}}",
        )
        .spec;
        let budgets = ClusterBudgets::default();
        let wanted = Draw {
            node_ports: 1002,
            balancer_rules: 1001,
        };
        let used = ClusterUse {
            node_ports: 1900,
            balancer_rules: 0,
        };
        let invalid = judge(&spec, &budgets, wanted, Draw::default(), &used).unwrap();
        assert_eq!(invalid.reason, NODE_PORTS_EXHAUSTED);
        assert!(
            invalid
                .message
                .contains("passivePorts 20000-20999 with controlPort 21 needs 1002 NodePorts"),
            "{}",
            invalid.message
        );
        assert!(
            invalid
                .message
                .contains("range 30000-32767 has 2768, 1900 in use, 868 free"),
            "{}",
            invalid.message
        );
        assert!(
            invalid
                .message
                .contains("allocateLoadBalancerNodePorts: false")
        );
        // What the Services already hold is not asked for again.
        let held = Draw {
            node_ports: 200,
            balancer_rules: 0,
        };
        assert_eq!(judge(&spec, &budgets, wanted, held, &used), None);
    }

    #[test]
    fn azure_rules_count_every_load_balancer_service_of_the_cluster() {
        let spec = server(
            "metadata: {name: az, namespace: ftp}\nspec: {passivePorts: {min: 20000, max: 20019}, loadBalancer: {provider: azure}}",
        )
        .spec;
        let budgets = ClusterBudgets::default();
        let wanted = Draw {
            node_ports: 0,
            balancer_rules: 21,
        };
        let used = ClusterUse {
            node_ports: 0,
            balancer_rules: 290,
        };
        let invalid = judge(&spec, &budgets, wanted, Draw::default(), &used).unwrap();
        assert_eq!(invalid.reason, AZURE_RULES_EXHAUSTED);
        assert!(
            invalid
                .message
                .contains("needs 21 Azure load-balancing rules"),
            "{}",
            invalid.message
        );
        assert!(
            invalid
                .message
                .contains("use 290, 311 in all, but Azure allows 300 rules per NIC"),
            "{}",
            invalid.message
        );
        // When 20 of the 290 are this server's own already, 270 + 21 fit.
        let held = Draw {
            node_ports: 0,
            balancer_rules: 20,
        };
        assert_eq!(judge(&spec, &budgets, wanted, held, &used), None);
        // Other providers have no such limit.
        let mut generic = spec.clone();
        generic.load_balancer.provider = Provider::Generic;
        assert_eq!(
            judge(&generic, &budgets, wanted, Draw::default(), &used),
            None
        );
        assert!(!needs_listing(
            &generic,
            wanted,
            Draw {
                node_ports: 0,
                balancer_rules: 0
            }
        ));
        assert!(needs_listing(&spec, wanted, Draw::default()));
    }

    #[test]
    fn a_server_whose_services_take_no_more_needs_no_listing() {
        let spec = server(fixtures::MINIMAL).spec;
        let same = Draw {
            node_ports: 5,
            balancer_rules: 4,
        };
        assert!(!needs_listing(&spec, same, same));
        assert!(needs_listing(
            &spec,
            Draw {
                node_ports: 6,
                ..same
            },
            same
        ));
    }
}
