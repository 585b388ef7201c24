//! The LoadBalancer Service: the control port, the implicit FTPS port when on, and every passive
//! port, one ServicePort each.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::ftp::config::{DEFAULT_CONTROL_PORT, POD_IMPLICIT_TLS_PORT};
use crate::lb;

use super::{owned_metadata, selector_labels};
use crate::controller::validate::Validated;

pub fn desired_service(server: &FtpServer, valid: &Validated) -> Service {
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
    // Kubernetes has no port ranges: one ServicePort per passive port, forwarded unchanged.
    let passive = valid
        .passive
        .ports()
        .map(|port| tcp_port(format!("pasv-{port}"), i32::from(port), i32::from(port)));

    // The user's annotations win over the provider defaults.
    let mut annotations = lb::service_annotations(spec);
    annotations.extend(spec.load_balancer.annotations.clone());

    let mut metadata = owned_metadata(server, server.name_any());
    metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            selector: Some(selector_labels(server)),
            ports: Some(
                std::iter::once(control)
                    .chain(implicit)
                    .chain(passive)
                    .collect(),
            ),
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

    #[test]
    fn control_port_maps_to_the_pod_and_passive_ports_map_to_themselves() {
        let server = server(fixtures::MINIMAL);
        let service = desired_service(&server, &validated(&server));
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
        let server = server(fixtures::FULL);
        let service = desired_service(&server, &validated(&server));
        let annotations = service.metadata.annotations.unwrap();
        assert_eq!(annotations[lb::AZURE_IDLE_TIMEOUT_ANNOTATION], "30");
        assert_eq!(annotations["example.com/team"], "files");
        assert_eq!(annotations.len(), 2);
        let ports = ports(&desired_service(&server, &validated(&server)));
        assert_eq!(ports.len(), 22);
        assert_eq!(
            ports[1],
            ("ftps-implicit".into(), 990, IntOrString::Int(9990))
        );
        assert_eq!(
            service.spec.unwrap().load_balancer_source_ranges.unwrap(),
            vec!["203.0.113.0/24".to_owned()]
        );
    }

    #[test]
    fn node_ports_are_left_out_only_where_the_balancer_targets_pods() {
        let allocate = |yaml| {
            let server = server(yaml);
            desired_service(&server, &validated(&server))
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
        let annotations = desired_service(&server, &validated(&server))
            .metadata
            .annotations
            .unwrap();
        assert_eq!(annotations[lb::AWS_SCHEME_ANNOTATION], "internal");
        assert_eq!(annotations[lb::AWS_TYPE_ANNOTATION], "external");
        assert_eq!(
            annotations[&format!("{}TCP-20001", lb::AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX)],
            "tcp.idle_timeout.seconds=600"
        );
        assert_eq!(annotations[lb::AWS_PROXY_PROTOCOL_ANNOTATION], "*");
    }
}
