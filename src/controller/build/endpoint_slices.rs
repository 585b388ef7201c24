//! EndpointSlices for a Service without a selector ([`Routing::EndpointSlices`]): the control
//! port goes to every ready pod; each replica's passive ports go to that replica's pod alone.
//!
//! kube-proxy routes a Service port to the endpoints of the slices whose ports carry that
//! port's name, and the AWS Load Balancer Controller registers a listener's IP targets the same
//! way (see [`crate::lb::replicas`]); a slice per replica is therefore all the routing a slice
//! needs.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;

use crate::api::FtpServer;
use crate::ftp::config::{DEFAULT_CONTROL_PORT, POD_IMPLICIT_TLS_PORT, POD_SFTP_PORT};

use super::owned_metadata;
use super::service::{control_service_name, passive_port_name};
use super::workload::replica_pod_name;
use crate::controller::validate::{Routing, Validated};

/// `endpointslice.kubernetes.io/managed-by`: tells the EndpointSlice controller (and readers)
/// these slices are ours.
pub const ENDPOINT_SLICE_MANAGER: &str = "ftp-operator.ftpoperator.dev";

/// The slices the server wants, given its pods as observed. Empty unless the routing uses
/// EndpointSlices. `slices` is the number of replica slices to keep: the desired replicas, or
/// more while a scaled-away pod is still draining (its running sessions still need data
/// connections to its ports).
pub fn desired_endpoint_slices(
    server: &FtpServer,
    valid: &Validated,
    pods: &[&Pod],
    slices: i32,
) -> Vec<EndpointSlice> {
    if valid.routing != Routing::EndpointSlices {
        return Vec::new();
    }
    // The implicit FTPS port is a control port too: every ready pod takes it.
    let implicit = server
        .spec
        .tls
        .as_ref()
        .filter(|tls| tls.implicit)
        .map(|_| tcp_port("ftps-implicit".to_owned(), i32::from(POD_IMPLICIT_TLS_PORT)));
    // So is SFTP's: it needs no passive port, any replica serves it.
    let sftp = server
        .spec
        .sftp
        .as_ref()
        .filter(|sftp| sftp.enabled)
        .map(|_| tcp_port("sftp".to_owned(), i32::from(POD_SFTP_PORT)));
    let control_ports: Vec<EndpointPort> =
        std::iter::once(tcp_port("ftp".to_owned(), i32::from(DEFAULT_CONTROL_PORT)))
            .chain(implicit)
            .chain(sftp)
            .collect();
    // Only ready pods take new sessions; a draining pod has turned its readiness off.
    let control_endpoints = pods
        .iter()
        .filter_map(|pod| endpoint(pod, is_ready(pod)))
        .collect();
    let mut wanted = vec![slice(
        server,
        format!("{}-control", control_service_name(server)),
        control_ports,
        control_endpoints,
    )];
    for index in 0..slices {
        let ports: Vec<EndpointPort> = server
            .spec
            .passive_ports
            .slice(index)
            .map(|port| tcp_port(passive_port_name(port), port))
            .collect();
        if ports.is_empty() {
            continue;
        }
        let owner = replica_pod_name(server, index);
        // The owner takes data connections for as long as it runs, ready or draining.
        let endpoints = pods
            .iter()
            .filter(|pod| pod.name_any() == owner)
            .filter_map(|pod| endpoint(pod, true))
            .collect();
        wanted.push(slice(
            server,
            format!("{}-pasv-{index}", control_service_name(server)),
            ports,
            endpoints,
        ));
    }
    wanted
}

fn slice(
    server: &FtpServer,
    name: String,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut metadata = owned_metadata(server, name);
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.insert(
        "kubernetes.io/service-name".to_owned(),
        control_service_name(server),
    );
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".to_owned(),
        ENDPOINT_SLICE_MANAGER.to_owned(),
    );
    EndpointSlice {
        metadata,
        // Pod IPs are IPv4 here; an IPv6 pod needs slices of its own kind (not built yet).
        address_type: "IPv4".to_owned(),
        endpoints: Some(endpoints),
        ports: Some(ports),
    }
}

/// The pod as an endpoint, while it has an IPv4 address and has not finished.
fn endpoint(pod: &Pod, ready: bool) -> Option<Endpoint> {
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?;
    ip.parse::<Ipv4Addr>().ok()?;
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Some(Endpoint {
        addresses: vec![ip.to_owned()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            name: Some(pod.name_any()),
            namespace: pod.namespace(),
            uid: pod.uid(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// Ready and not being deleted: the pod takes new sessions.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

fn tcp_port(name: String, port: i32) -> EndpointPort {
    EndpointPort {
        name: Some(name),
        port: Some(port),
        protocol: Some("TCP".to_owned()),
        ..EndpointPort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server, validated};

    fn pod(name: &str, ip: &str, ready: bool, deleting: bool) -> Pod {
        let deletion = if deleting {
            ", deletionTimestamp: '2026-01-01T00:00:00Z'"
        } else {
            ""
        };
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ftp, uid: u-{name}{deletion}}}\n\
             spec: {{nodeName: node-a, containers: []}}\n\
             status: {{phase: Running, podIP: {ip}, conditions: [{{type: Ready, status: '{}'}}]}}",
            if ready { "True" } else { "False" }
        ))
        .unwrap()
    }

    fn aws(replicas: i32) -> FtpServer {
        let mut server = server(fixtures::AWS);
        server.spec.replicas = replicas;
        server.spec.passive_ports.per_replica = Some(1);
        server
    }

    /// A slice as (name, "port-name:port"s, (address, ready)s).
    type Summary = (String, Vec<String>, Vec<(String, bool)>);

    fn summary(slices: &[EndpointSlice]) -> Vec<Summary> {
        slices
            .iter()
            .map(|s| {
                let ports = s
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}:{}", p.name.clone().unwrap(), p.port.unwrap()))
                    .collect();
                let endpoints = s
                    .endpoints
                    .iter()
                    .flatten()
                    .map(|e| {
                        let ready = e.conditions.as_ref().unwrap().ready.unwrap();
                        (e.addresses[0].clone(), ready)
                    })
                    .collect();
                (s.name_any(), ports, endpoints)
            })
            .collect()
    }

    #[test]
    fn the_sftp_port_goes_to_every_ready_pod_with_the_control_port() {
        let mut server = aws(2);
        server.spec.sftp = Some(serde_yaml::from_str("{}").unwrap());
        let a = pod("aws-0", "10.0.0.10", true, false);
        let b = pod("aws-1", "10.0.0.11", true, false);
        let slices = desired_endpoint_slices(&server, &validated(&server), &[&a, &b], 2);
        let control = &summary(&slices)[0];
        assert_eq!(
            control.1,
            vec!["ftp:2121".to_owned(), "sftp:2222".to_owned()]
        );
        assert_eq!(control.2.len(), 2, "{control:?}");
        // Passive slices carry no SFTP port.
        assert!(
            summary(&slices)[1..]
                .iter()
                .all(|s| !s.1.iter().any(|p| p.starts_with("sftp")))
        );
    }

    #[test]
    fn the_implicit_ftps_port_goes_with_the_control_port() {
        let mut server = aws(2);
        server.spec.tls =
            Some(serde_yaml::from_str("{secretRef: {name: ftp-tls}, implicit: true}").unwrap());
        let a = pod("aws-0", "10.0.0.10", true, false);
        let slices = desired_endpoint_slices(&server, &validated(&server), &[&a], 2);
        assert_eq!(
            summary(&slices)[0].1,
            vec!["ftp:2121".to_owned(), "ftps-implicit:9990".to_owned()]
        );
    }

    #[test]
    fn control_goes_to_ready_pods_and_each_slice_to_its_owner() {
        let server = aws(2);
        let a = pod("aws-0", "10.0.0.10", true, false);
        let b = pod("aws-1", "10.0.0.11", false, false);
        let slices = desired_endpoint_slices(&server, &validated(&server), &[&a, &b], 2);
        assert_eq!(
            summary(&slices),
            vec![
                (
                    "aws-control".into(),
                    vec!["ftp:2121".into()],
                    vec![("10.0.0.10".into(), true), ("10.0.0.11".into(), false)]
                ),
                (
                    "aws-pasv-0".into(),
                    vec!["pasv-20000:20000".into()],
                    vec![("10.0.0.10".into(), true)]
                ),
                (
                    "aws-pasv-1".into(),
                    vec!["pasv-20001:20001".into()],
                    vec![("10.0.0.11".into(), true)]
                ),
            ]
        );
        let labels = slices[1].metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "aws");
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            ENDPOINT_SLICE_MANAGER
        );
        let target = slices[1].endpoints.as_ref().unwrap()[0]
            .target_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (target.kind.as_deref(), target.name.as_deref()),
            (Some("Pod"), Some("aws-0"))
        );
    }

    #[test]
    fn a_draining_pod_leaves_the_control_port_but_keeps_its_slice() {
        let server = aws(2);
        let draining = pod("aws-0", "10.0.0.10", true, true);
        let slices = desired_endpoint_slices(&server, &validated(&server), &[&draining], 2);
        let summary = summary(&slices);
        assert_eq!(summary[0].2, vec![("10.0.0.10".to_owned(), false)]);
        assert_eq!(summary[1].2, vec![("10.0.0.10".to_owned(), true)]);
        let conditions = slices[1].endpoints.as_ref().unwrap()[0]
            .conditions
            .clone()
            .unwrap();
        assert_eq!(conditions.terminating, Some(true));
        // No pod yet for replica 1: its slice exists, empty.
        assert!(summary[2].2.is_empty());
    }

    #[test]
    fn other_routings_write_no_slices() {
        let server = server(fixtures::MINIMAL);
        let a = pod("minimal-0", "10.0.0.10", true, false);
        assert!(desired_endpoint_slices(&server, &validated(&server), &[&a], 1).is_empty());
    }
}
