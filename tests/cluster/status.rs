//! Honest status for failures a quiet cluster never shows: a pod the scheduler cannot place, a
//! balancer that never gets an address, an apiserver that refuses the operator's writes. Each
//! becomes a condition with a reason and what to do, and a Warning Event saying the same.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::harness::{
    ControllerProcess, TestNamespace, client, grant_service_account, impersonating_kubeconfig,
    install_crd, kubeconfig_path, kubectl, wait_for,
};
use super::{SMALL, TIMEOUT, set_load_balancer_ip, wait_condition, wait_ready};

async fn wait_warning(client: &Client, ns: &TestNamespace, reason: &str, text: &str) {
    let events = Api::<Event>::namespaced(client.clone(), &ns.name);
    wait_for(&format!("a Warning Event {reason}"), TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some(reason)
                    && e.note.as_deref().is_some_and(|n| n.contains(text))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_pod_the_scheduler_cannot_place_is_not_ready_with_the_schedulers_words() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "unschedulable").await;
    let _controller = ControllerProcess::start(&ns.name, "unschedulable-a");
    ns.create_server(
        "metadata: {name: nowhere}\nspec: {passivePorts: {min: 30000, max: 30001}, nodeSelector: {example.com/pool: none}}",
    )
    .await;
    let (_, _, message) = wait_condition(
        &ns,
        "nowhere",
        "Ready",
        &["False", "Unschedulable"],
        TIMEOUT,
    )
    .await;
    assert!(
        message.contains("cannot be scheduled")
            && message.contains("nodes are available")
            && message.contains("spec.nodeSelector"),
        "{message}"
    );
    let (_, reconciling, _) =
        wait_condition(&ns, "nowhere", "Reconciling", &["True"], TIMEOUT).await;
    assert_eq!(reconciling, "Unschedulable");
    // The printer column shows it.
    let out = kubectl()
        .args(["get", "ftpserver", "nowhere", "-n", &ns.name])
        .output()
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("REASON") && table.contains("Unschedulable"),
        "{table}"
    );
}

#[tokio::test]
async fn a_balancer_without_an_address_after_the_timeout_stalls_then_heals() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "noaddress").await;
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "noaddress-a",
        &kubeconfig_path(),
        &["--load-balancer-address-timeout-seconds", "8"],
    );
    ns.create_server(SMALL).await;
    wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("small").await.ok()?
    })
    .await;
    // Nothing assigns addresses here (no cloud); nothing else happens to wake the controller.
    let (_, reason, message) = wait_condition(&ns, "small", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "LoadBalancerAddressTimeout");
    assert!(
        message.contains("no load-balancer address for over 8 s")
            && message.contains("load-balancer controller"),
        "{message}"
    );
    let (_, lb_reason, _) =
        wait_condition(&ns, "small", "LoadBalancerReady", &["False"], TIMEOUT).await;
    assert_eq!(lb_reason, "AddressTimeout");
    wait_warning(
        &client,
        &ns,
        "LoadBalancerAddressTimeout",
        "no load-balancer address",
    )
    .await;

    set_load_balancer_ip(&ns, "small", "198.51.100.9").await;
    wait_ready(&ns, "small").await;
}

#[tokio::test]
async fn a_write_the_apiserver_forbids_stalls_with_the_missing_permission() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "forbidden").await;
    // Everything the controller needs in its namespace, except writing Services.
    let _access = grant_service_account(
        &ns,
        "restricted",
        json!([
            {"apiGroups": ["ftpoperator.dev"], "resources": ["ftpservers", "ftpservers/status", "ftpusers", "ftpusers/status"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "persistentvolumeclaims"], "verbs": ["*"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["*"]},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets"], "verbs": ["*"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]}
        ]),
    );
    let kubeconfig = impersonating_kubeconfig(&ns.name, "restricted");
    let _controller = ControllerProcess::start_with(&ns.name, "forbidden-a", &kubeconfig, &[]);
    ns.create_server(SMALL).await;
    let (_, reason, message) = wait_condition(&ns, "small", "Stalled", &["True"], TIMEOUT).await;
    assert_eq!(reason, "Forbidden");
    assert!(
        message.contains("does not let the operator write Service small")
            && message.contains("grant the operator's ServiceAccount"),
        "{message}"
    );
    let (_, ready_reason, _) = wait_condition(&ns, "small", "Ready", &["False"], TIMEOUT).await;
    assert_eq!(ready_reason, "Forbidden");
    wait_warning(&client, &ns, "Forbidden", "Service small").await;

    // Granted, the retry with backoff gets through without anyone touching the FtpServer.
    let grant = json!({"rules": [
        {"apiGroups": ["ftpoperator.dev"], "resources": ["ftpservers", "ftpservers/status", "ftpusers", "ftpusers/status"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "persistentvolumeclaims"], "verbs": ["*"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["*"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets"], "verbs": ["*"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]}
    ]});
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &ns.name)
        .patch("restricted", &PatchParams::default(), &Patch::Merge(grant))
        .await
        .unwrap();
    wait_for(
        "the Service, once allowed",
        Duration::from_secs(90),
        || async { ns.api::<Service>().get_opt("small").await.ok()? },
    )
    .await;
}
