//! The LoadBalancer Services: how the control port (and the implicit FTPS port when on) and each
//! replica's passive slice reach the right pod. Which shape a server gets is decided in [`crate::lb::replicas`] (per provider, with
//! sources) and carried in [`Routing`]:
//!
//! - [`Routing::Single`]: one Service, the control port and every passive port, selecting every
//!   pod (one replica, no slices).
//! - [`Routing::ServicePerReplica`]: the control Service holds only the control port and selects
//!   every ready pod; `<server>-pasv-<i>` holds replica `i`'s slice, selects that pod alone and
//!   asks for the control Service's address, so they all share one public address.
//! - [`Routing::EndpointSlices`]: one Service without a selector holding every port; the
//!   controller writes its EndpointSlices ([`super::endpoint_slices`]).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::ftp::config::{DEFAULT_CONTROL_PORT, POD_IMPLICIT_TLS_PORT, POD_SFTP_PORT};
use crate::lb::{self, AddressSharing};

use super::workload::{POD_NAME_LABEL, replica_pod_name};
use super::{owned_metadata, selector_labels};
use crate::controller::validate::{Routing, Validated};

/// The Service clients reach the control port through; its address is the public one.
pub fn control_service_name(server: &FtpServer) -> String {
    server.name_any()
}

/// The Service carrying replica `index`'s passive slice (Service-per-replica shape).
pub fn replica_service_name(server: &FtpServer, index: i32) -> String {
    format!("{}-pasv-{index}", server.name_any())
}

/// The name of a passive port in every Service and EndpointSlice.
pub fn passive_port_name(port: i32) -> String {
    format!("pasv-{port}")
}

/// Every Service the server wants now. `shared_address` is the control Service's balancer IP,
/// once it has one: per-replica Services that share it by IP are only built when it is known,
/// or the balancer would hand each of them an address of its own. `slices` is how many replica
/// slices to route ([`super::slices_in_use`]).
pub fn desired_services(
    server: &FtpServer,
    valid: &Validated,
    shared_address: Option<&str>,
    slices: i32,
) -> Vec<Service> {
    let spec = &server.spec;
    let control = tcp_port(
        "ftp".to_owned(),
        i32::from(valid.control_port),
        i32::from(DEFAULT_CONTROL_PORT),
    );
    // Like the control port, a public port mapped to the unprivileged one the pod listens on.
    let implicit = spec.tls.as_ref().filter(|tls| tls.implicit).map(|tls| {
        tcp_port(
            "ftps-implicit".to_owned(),
            tls.implicit_port,
            i32::from(POD_IMPLICIT_TLS_PORT),
        )
    });
    // SFTP needs no passive ports: any replica serves any session, as for the control port.
    let sftp = spec
        .sftp
        .as_ref()
        .filter(|sftp| sftp.enabled)
        .map(|sftp| tcp_port("sftp".to_owned(), sftp.port, i32::from(POD_SFTP_PORT)));
    // Kubernetes has no port ranges: one ServicePort per passive port, forwarded unchanged.
    let passive_ports = |ports: std::ops::RangeInclusive<i32>| {
        ports
            .map(|port| tcp_port(passive_port_name(port), port, port))
            .collect::<Vec<_>>()
    };
    let all_passive = passive_ports(spec.passive_ports.ports());
    let control: Vec<ServicePort> = std::iter::once(control)
        .chain(implicit)
        .chain(sftp)
        .collect();
    match valid.routing {
        Routing::Single => vec![load_balancer(
            server,
            control_service_name(server),
            control.into_iter().chain(all_passive).collect(),
            Some(selector_labels(server)),
        )],
        Routing::EndpointSlices => vec![load_balancer(
            server,
            control_service_name(server),
            control.into_iter().chain(all_passive).collect(),
            // No selector: the controller's EndpointSlices decide which pod gets which port.
            None,
        )],
        Routing::ServicePerReplica(sharing) => {
            let mut services = vec![load_balancer(
                server,
                control_service_name(server),
                control,
                Some(selector_labels(server)),
            )];
            let address = match sharing {
                AddressSharing::AzureIpv4Annotation => shared_address,
                // Validated: the reserved static IP is spec.publicAddress.
                AddressSharing::LoadBalancerIp => spec.public_address.as_deref(),
            };
            let Some(address) = address else {
                return services;
            };
            for index in 0..slices {
                let ports = passive_ports(spec.passive_ports.slice(index));
                if ports.is_empty() {
                    continue;
                }
                let mut selector = selector_labels(server);
                selector.insert(POD_NAME_LABEL.to_owned(), replica_pod_name(server, index));
                let mut service = load_balancer(
                    server,
                    replica_service_name(server, index),
                    ports,
                    Some(selector),
                );
                share_address(&mut service, sharing, address);
                if let Some(spec) = service.spec.as_mut() {
                    // A draining pod is not ready, yet its running sessions still open data
                    // connections to its slice: keep routing to it until it exits.
                    spec.publish_not_ready_addresses = Some(true);
                }
                services.push(service);
            }
            if let Some(control) = services.first_mut() {
                share_address(control, sharing, address);
            }
            services
        }
    }
}

fn share_address(service: &mut Service, sharing: AddressSharing, address: &str) {
    match sharing {
        AddressSharing::AzureIpv4Annotation => {
            service
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    lb::replicas::AZURE_LOAD_BALANCER_IPV4_ANNOTATION.to_owned(),
                    address.to_owned(),
                );
        }
        AddressSharing::LoadBalancerIp => {
            if let Some(spec) = service.spec.as_mut() {
                spec.load_balancer_ip = Some(address.to_owned());
            }
        }
    }
}

fn load_balancer(
    server: &FtpServer,
    name: String,
    ports: Vec<ServicePort>,
    selector: Option<std::collections::BTreeMap<String, String>>,
) -> Service {
    let spec = &server.spec;
    // The user's annotations win over the provider defaults.
    let mut annotations = lb::service_annotations(spec);
    annotations.extend(spec.load_balancer.annotations.clone());

    let mut metadata = owned_metadata(server, name);
    metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            selector,
            ports: Some(ports),
            // Keeps the client's address, which the server needs to match data connections to
            // their control connection, and avoids a second hop.
            external_traffic_policy: Some("Local".to_owned()),
            load_balancer_source_ranges: Some(spec.load_balancer.source_ranges.clone())
                .filter(|ranges| !ranges.is_empty()),
            // One NodePort per passive port, from a cluster-wide pool: none where unused.
            allocate_load_balancer_node_ports: (!lb::needs_node_ports(spec.load_balancer.provider))
                .then_some(false),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn tcp_port(name: String, port: i32, target_port: i32) -> ServicePort {
    ServicePort {
        name: Some(name),
        port,
        target_port: Some(IntOrString::Int(target_port)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server, validated};

    fn ports(service: &Service) -> Vec<(String, i32, IntOrString)> {
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap(),
                    p.port,
                    p.target_port.clone().unwrap(),
                )
            })
            .collect()
    }

    fn only(server: &FtpServer) -> Service {
        let mut services = desired_services(server, &validated(server), None, server.spec.replicas);
        assert_eq!(services.len(), 1);
        services.remove(0)
    }

    #[test]
    fn control_port_maps_to_the_pod_and_passive_ports_map_to_themselves() {
        let server = server(fixtures::MINIMAL);
        let service = only(&server);
        assert_eq!(
            ports(&service),
            vec![
                ("ftp".into(), 21, IntOrString::Int(2121)),
                ("pasv-30000".into(), 30000, IntOrString::Int(30000)),
                ("pasv-30001".into(), 30001, IntOrString::Int(30001)),
                ("pasv-30002".into(), 30002, IntOrString::Int(30002)),
            ]
        );
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.load_balancer_source_ranges, None);
        assert_eq!(service.metadata.annotations, None);
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/instance"],
            "minimal"
        );
    }

    #[test]
    fn azure_service_carries_idle_timeout_user_annotations_and_source_ranges() {
        let mut server = server(fixtures::FULL);
        server.spec.replicas = 1;
        server.spec.passive_ports.per_replica = None;
        let service = only(&server);
        let annotations = service.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[lb::AZURE_IDLE_TIMEOUT_ANNOTATION], "30");
        assert_eq!(annotations["example.com/team"], "files");
        assert_eq!(annotations.len(), 2);
        assert_eq!(ports(&service).len(), 22);
        assert_eq!(
            ports(&service)[1],
            ("ftps-implicit".into(), 990, IntOrString::Int(9990))
        );
        assert_eq!(
            service.spec.unwrap().load_balancer_source_ranges.unwrap(),
            vec!["203.0.113.0/24".to_owned()]
        );
    }

    #[test]
    fn sftp_is_one_more_port_of_the_control_service_on_the_same_address() {
        let mut single = server(fixtures::MINIMAL);
        single.spec.sftp = Some(serde_yaml::from_str("{}").unwrap());
        let service = only(&single);
        assert!(
            ports(&service).contains(&("sftp".into(), 22, IntOrString::Int(2222))),
            "{:?}",
            ports(&service)
        );
        let mut sliced = server(fixtures::FULL);
        sliced.spec.sftp = Some(serde_yaml::from_str("{port: 2022}").unwrap());
        let services = desired_services(&sliced, &validated(&sliced), Some("20.50.1.7"), 2);
        assert_eq!(
            ports(&services[0]),
            vec![
                ("ftp".into(), 21, IntOrString::Int(2121)),
                ("ftps-implicit".into(), 990, IntOrString::Int(9990)),
                ("sftp".into(), 2022, IntOrString::Int(2222)),
            ]
        );
        // Every replica serves SFTP: the per-replica Services hold only their passive slice.
        for service in &services[1..] {
            assert!(
                ports(service)
                    .iter()
                    .all(|(name, ..)| name.starts_with("pasv-"))
            );
        }
        sliced.spec.sftp = Some(serde_yaml::from_str("{enabled: false}").unwrap());
        let services = desired_services(&sliced, &validated(&sliced), Some("20.50.1.7"), 2);
        assert_eq!(ports(&services[0]).len(), 2);
    }

    #[test]
    fn node_ports_are_left_out_only_where_the_balancer_targets_pods() {
        let allocate = |yaml| {
            let server = server(yaml);
            only(&server)
                .spec
                .unwrap()
                .allocate_load_balancer_node_ports
        };
        assert_eq!(allocate(fixtures::AWS), Some(false));
        assert_eq!(allocate(fixtures::MINIMAL), None);
        assert_eq!(allocate(fixtures::FULL), None);
    }

    #[test]
    fn user_annotations_override_provider_defaults() {
        let server = server(fixtures::AWS);
        let annotations = only(&server).metadata.annotations.unwrap();
        assert_eq!(annotations[lb::AWS_SCHEME_ANNOTATION], "internal");
        assert_eq!(annotations[lb::AWS_TYPE_ANNOTATION], "external");
        assert_eq!(
            annotations[&format!("{}TCP-20001", lb::AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX)],
            "tcp.idle_timeout.seconds=600"
        );
        assert_eq!(annotations[lb::AWS_PROXY_PROTOCOL_ANNOTATION], "*");
    }

    #[test]
    fn azure_replicas_get_a_service_each_on_the_control_services_address() {
        // FULL: azure, 2 replicas, passive 20000-20019 in slices of 10.
        let server = server(fixtures::FULL);
        let valid = validated(&server);
        // Until the control Service has its address, only the control Service exists.
        let services = desired_services(&server, &valid, None, 2);
        assert_eq!(services.len(), 1);
        // The control port and the implicit FTPS port (FULL turns it on).
        assert_eq!(ports(&services[0]).len(), 2);

        let services = desired_services(&server, &valid, Some("20.50.1.7"), 2);
        let names: Vec<_> = services.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["contoso", "contoso-pasv-0", "contoso-pasv-1"]);
        assert_eq!(
            ports(&services[0]),
            vec![
                ("ftp".into(), 21, IntOrString::Int(2121)),
                ("ftps-implicit".into(), 990, IntOrString::Int(9990))
            ]
        );
        let control = services[0].spec.as_ref().unwrap();
        assert_eq!(control.publish_not_ready_addresses, None);
        assert!(
            !control
                .selector
                .as_ref()
                .unwrap()
                .contains_key(POD_NAME_LABEL)
        );
        for (index, service) in services[1..].iter().enumerate() {
            let first = 20000 + 10 * index as i32;
            let expected: Vec<_> = (first..first + 10)
                .map(|p| (format!("pasv-{p}"), p, IntOrString::Int(p)))
                .collect();
            assert_eq!(ports(service), expected);
            let spec = service.spec.as_ref().unwrap();
            assert_eq!(
                spec.selector.as_ref().unwrap()[POD_NAME_LABEL],
                format!("contoso-{index}")
            );
            assert_eq!(spec.publish_not_ready_addresses, Some(true));
            assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
            let annotations = service.metadata.annotations.as_ref().unwrap();
            assert_eq!(
                annotations[lb::replicas::AZURE_LOAD_BALANCER_IPV4_ANNOTATION],
                "20.50.1.7"
            );
            assert_eq!(annotations[lb::AZURE_IDLE_TIMEOUT_ANNOTATION], "30");
        }
    }

    #[test]
    fn gcp_replicas_share_the_reserved_address_from_the_spec() {
        let mut server = server(fixtures::FULL);
        server.spec.load_balancer.provider = crate::api::Provider::Gcp;
        server.spec.load_balancer.idle_timeout_seconds = None;
        server.spec.keepalive = None;
        server.spec.public_address = Some("34.1.2.3".into());
        let services = desired_services(&server, &validated(&server), None, 2);
        assert_eq!(services.len(), 3);
        for service in &services {
            assert_eq!(
                service.spec.as_ref().unwrap().load_balancer_ip.as_deref(),
                Some("34.1.2.3")
            );
        }
    }

    #[test]
    fn endpoint_slice_routing_is_one_service_without_a_selector() {
        let mut server = server(fixtures::AWS);
        server.spec.replicas = 2;
        server.spec.passive_ports.per_replica = Some(1);
        let service = only(&server);
        assert_eq!(service.spec.as_ref().unwrap().selector, None);
        assert_eq!(
            ports(&service).len(),
            1 + server.spec.passive_ports.len() as usize
        );
    }
}
