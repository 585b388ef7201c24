//! Leader election that cannot split: a frozen leader is replaced and, when it wakes, writes
//! nothing and exits; a leader told to stop finishes and hands the lease on at once.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use ftp_operator::api::FtpServer;

use super::harness::{
    ControllerProcess, grant_service_account, impersonating_kubeconfig, kubectl_apply, wait_for,
};
use super::{SMALL, TIMEOUT, expected_ports, rendered_config, service_ports, setup};

#[tokio::test]
async fn a_frozen_leader_is_replaced_and_never_writes_after_it_lost_the_lease() {
    let (_client, ns, mut first) = setup("frozen").await;
    first.wait_logged("holding the lease", TIMEOUT).await;
    let mut second = ControllerProcess::start(&ns.name, "frozen-b");
    second.wait_logged("waiting for the lease", TIMEOUT).await;
    ns.create_server(SMALL).await;
    let services = ns.api::<Service>();
    wait_for("the first replica's children", TIMEOUT, || async {
        services.get_opt("small").await.ok()??;
        ns.api::<StatefulSet>().get_opt("small").await.ok()?
    })
    .await;
    // Let the first finish what it is doing, so no request is in flight when it freezes.
    tokio::time::sleep(Duration::from_secs(3)).await;

    first.signal("STOP");
    second
        .wait_logged("holding the lease", Duration::from_secs(45))
        .await;
    let servers = ns.api::<FtpServer>();
    let set_range = |min: i32, max: i32| {
        let servers = servers.clone();
        async move {
            servers
                .patch(
                    "small",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"passivePorts": {"min": min, "max": max}}})),
                )
                .await
                .unwrap();
        }
    };
    set_range(30000, 30001).await;
    wait_for("the new leader to reconcile", TIMEOUT, || async {
        let svc = services.get("small").await.ok()?;
        (service_ports(&svc) == expected_ports(21, 30000, 30001)).then_some(())
    })
    .await;

    // Only the frozen replica is left to act on the next change when it wakes.
    second.kill();
    set_range(30010, 30011).await;
    let seen = first.logs.lock().unwrap().len();
    first.signal("CONT");
    wait_for(
        "the replica that lost the lease to exit after waking",
        Duration::from_secs(20),
        || std::future::ready(first.exited()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let svc = services.get("small").await.unwrap();
    assert_eq!(
        service_ports(&svc),
        expected_ports(21, 30000, 30001),
        "the replica that lost the lease applied a change"
    );
    let config = rendered_config(&ns, "small").await.unwrap();
    assert_eq!(config.passive_ports.to_string(), "30000-30001");
    let after: Vec<String> = first.logs.lock().unwrap()[seen..].to_vec();
    assert!(
        after.iter().all(|line| !line.contains("applied changes")),
        "{after:#?}"
    );
    assert!(
        after.iter().any(|line| line.contains("lost the lease")),
        "{after:#?}"
    );
}

#[tokio::test]
async fn a_stopped_leader_finishes_then_hands_the_lease_on_at_once() {
    let (client, ns, first) = setup("handover").await;
    first.wait_logged("holding the lease", TIMEOUT).await;
    let second = ControllerProcess::start(&ns.name, "handover-b");
    second.wait_logged("waiting for the lease", TIMEOUT).await;
    ns.create_server(SMALL).await;
    first.signal("TERM");
    first.wait_logged("released the lease", TIMEOUT).await;
    // Released, not left to expire: the Lease no longer names the first replica.
    let lease = Api::<Lease>::namespaced(client, &ns.name)
        .get("ftp-operator")
        .await
        .unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_ne!(holder.as_deref(), Some("handover-a"));
    second.wait_logged("holding the lease", TIMEOUT).await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_before_another_takes_over() {
    let client = super::harness::client().await;
    super::harness::install_crd(&client).await;
    let ns = super::harness::TestNamespace::new(&client, "norenew").await;
    let everything = |leases: &[&str]| {
        json!([
            {"apiGroups": ["ftpoperator.dev"], "resources": ["ftpservers", "ftpservers/status", "ftpusers", "ftpusers/status"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "persistentvolumeclaims"], "verbs": ["*"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["*"]},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets"], "verbs": ["*"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": leases},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]}
        ])
    };
    let _access = grant_service_account(&ns, "leader", everything(&["*"]));
    let kubeconfig = impersonating_kubeconfig(&ns.name, "leader");
    let mut first = ControllerProcess::start_with(&ns.name, "norenew-a", &kubeconfig, &[]);
    first.wait_logged("holding the lease", TIMEOUT).await;
    let second = ControllerProcess::start(&ns.name, "norenew-b");
    second.wait_logged("waiting for the lease", TIMEOUT).await;
    ns.create_server(SMALL).await;
    let services = ns.api::<Service>();
    wait_for("the first replica's Service", TIMEOUT, || async {
        services.get_opt("small").await.ok()?
    })
    .await;

    // The leader may still read the Lease and write everything else, but no longer renew.
    kubectl_apply(
        &ns.name,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "leader"}, "rules": everything(&["get", "list", "watch"])}),
    );
    wait_for(
        "a leader that cannot renew its lease to exit",
        Duration::from_secs(30),
        || std::future::ready(first.exited()),
    )
    .await;
    assert!(first.logged("lost the lease"));
    second
        .wait_logged("holding the lease", Duration::from_secs(45))
        .await;
}
