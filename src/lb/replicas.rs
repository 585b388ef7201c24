//! How each balancer can send a replica's passive slice to that replica alone, with the client's
//! address preserved — or why it cannot.
//!
//! The problem, once: Kubernetes routes each Service port on its own, so with several pods behind
//! one Service a data connection can reach a pod that never opened that port. ClientIP affinity
//! is kept per Service port, not across ports (kubernetes/kubernetes#103000, closed unfixed; the
//! same holds for Cilium's kube-proxy replacement, cilium/cilium#16954). And with
//! `externalTrafficPolicy: Local` a cloud balancer health-checks *nodes* per Service
//! (`healthCheckNodePort`), not per port: one Service holding every slice would send a slice's
//! traffic to any node that has some server pod, and kube-proxy there drops what has no local
//! endpoint. So a slice needs either a Service of its own (its own health check, selecting its
//! one pod) on the shared address, or a balancer that targets pod IPs per port.

use crate::api::Provider;

/// How the operator routes the slices of an FtpServer with more than one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRouting {
    /// A control Service (the control port, every ready pod) plus one Service per replica with
    /// its slice, selecting that pod alone, all on the one public address.
    ServicePerReplica(AddressSharing),
    /// One Service without a selector; the controller writes its EndpointSlices: the control
    /// port → every ready pod, each slice's ports → its owner pod.
    EndpointSlicesPerReplica,
    /// `replicas > 1` is refused for this balancer; the message says why and what to use.
    Refused(&'static str),
}

/// How per-replica Services ask the balancer for the control Service's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSharing {
    /// Azure: `service.beta.kubernetes.io/azure-load-balancer-ipv4: <ip>` on each Service.
    AzureIpv4Annotation,
    /// GCP: `spec.loadBalancerIP` set to a reserved static address on each Service.
    LoadBalancerIp,
}

/// Azure: "Provider Azure supports sharing one IP address among multiple load balancer typed
/// external or internal services" (since v1.20): create the first Service, then give the others
/// that address in `service.beta.kubernetes.io/azure-load-balancer-ipv4` (or `loadBalancerIP`);
/// the ports must differ. Each Service gets its own rules and, with `Local`, its own health probe
/// on its `healthCheckNodePort`, so a slice's rules only reach the node of its owner.
/// Sharing by public IP *name* (`service.beta.kubernetes.io/azure-pip-name`) works as well since
/// cloud-provider-azure#4257/#4271 (release 1.27); the user's annotations are copied to every
/// Service, so a user who names the public IP that way shares it too.
/// Source: <https://kubernetes-sigs.github.io/cloud-provider-azure/topics/shared-ip>.
pub const AZURE_LOAD_BALANCER_IPV4_ANNOTATION: &str =
    "service.beta.kubernetes.io/azure-load-balancer-ipv4";

/// Decides the routing for a provider; the facts and their sources are in the match arms.
pub fn replica_routing(provider: Provider) -> ReplicaRouting {
    match provider {
        Provider::Azure => ReplicaRouting::ServicePerReplica(AddressSharing::AzureIpv4Annotation),
        // GCP: every LoadBalancer Service becomes its own forwarding rule, and "two forwarding
        // rules can share the same IP address as long as their port and protocol information is
        // unique" (https://cloud.google.com/load-balancing/docs/protocol-forwarding). GKE puts a
        // Service on a reserved static address given in `spec.loadBalancerIP`; two Services on
        // one preallocated static IP is the documented way round single-protocol Services
        // (metallb/metallb#121 quotes it). So every Service needs that reserved address up front:
        // `spec.publicAddress` must be the IP. Each slice is contiguous, so its forwarding rule
        // is one port range however long the slice is (the 5-separate-ports limit in
        // `check_limits` is about the single-Service shape). Container-native (pod-IP) backends
        // exist in GKE only for Ingress/Gateway; L4 Services target nodes (GCE_VM_IP NEGs or
        // instance groups, https://cloud.google.com/kubernetes-engine/docs/concepts/service-load-balancer-parameters),
        // so EndpointSlices alone would not steer the cloud's traffic.
        Provider::Gcp => ReplicaRouting::ServicePerReplica(AddressSharing::LoadBalancerIp),
        // AWS: an NLB's addresses belong to that NLB; two Services never share them. But with
        // IP targets (`aws-load-balancer-nlb-target-type: ip`) the AWS Load Balancer Controller
        // registers, per listener, the pod IPs of the EndpointSlices labelled
        // `kubernetes.io/service-name: <svc>` whose ports carry that Service port's name, taking
        // only endpoints whose targetRef is a Pod it knows (pkg/backend/endpoint_resolver.go,
        // `resolvePodEndpointsWithEndpointsData`). So one selector-less Service with
        // controller-written EndpointSlices gives each passive listener's target group exactly
        // its owner pod, and the NLB (client IP preserved, `preserve_client_ip.enabled=true`)
        // connects straight to it, bypassing kube-proxy and node health checks.
        Provider::Aws => ReplicaRouting::EndpointSlicesPerReplica,
        // MetalLB: Services share an address with `metallb.io/allow-shared-ip: <key>`, but "if
        // you need externalTrafficPolicy: local, specify identical pod selectors so that the
        // services send traffic to the same set of pods" (OpenShift's MetalLB docs, "Sharing a
        // specific IP address"; MetalLB's usage page says the same). A Service per replica has a
        // different selector by construction, and in layer-2 mode one node answers for the
        // address, so with `Local` the slices of pods on other nodes are unreachable; `Cluster`
        // would route them but SNATs the client's address, which the server checks on every data
        // connection. Neither works.
        Provider::Metallb => ReplicaRouting::Refused(
            "MetalLB shares one address between Services with externalTrafficPolicy Local only \
             when they select the same pods, and in layer-2 mode a single node answers for it, so \
             a replica's passive slice cannot be sent to that replica alone with the client's \
             address kept: use replicas: 1 (rollouts still drain), or provider generic behind a \
             balancer that sends each port to the pod IPs in its EndpointSlices",
        ),
        // Generic: nothing is known about the balancer, so the operator uses the shape that
        // needs nothing from it: kube-proxy routes each Service port only to the endpoints of the
        // EndpointSlices that carry that port's name, so the controller's slices send a passive
        // port only to its owner on the node that receives the packet. That is right for a
        // balancer that targets pod IPs, and for one that delivers to a node hosting the owner;
        // docs/replicas.md says so.
        Provider::Generic => ReplicaRouting::EndpointSlicesPerReplica,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_has_its_shape() {
        assert_eq!(
            replica_routing(Provider::Azure),
            ReplicaRouting::ServicePerReplica(AddressSharing::AzureIpv4Annotation)
        );
        assert_eq!(
            replica_routing(Provider::Gcp),
            ReplicaRouting::ServicePerReplica(AddressSharing::LoadBalancerIp)
        );
        assert_eq!(
            replica_routing(Provider::Aws),
            ReplicaRouting::EndpointSlicesPerReplica
        );
        assert_eq!(
            replica_routing(Provider::Generic),
            ReplicaRouting::EndpointSlicesPerReplica
        );
        let ReplicaRouting::Refused(why) = replica_routing(Provider::Metallb) else {
            panic!("MetalLB must refuse replicas > 1");
        };
        assert!(why.contains("use replicas: 1"), "{why}");
    }
}
