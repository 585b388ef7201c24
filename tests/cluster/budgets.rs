//! Cluster-wide budgets checked before a server's Services are applied: NodePorts left in the
//! cluster's range, and on Azure the load-balancing rules every node NIC carries. A server that
//! does not fit is Stalled with the numbers, its Service untouched; freeing room heals it.

use std::time::Duration;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::harness::{
    ControllerProcess, TestNamespace, client, exclusive_apiserver, install_crd, kubeconfig_path,
    wait_for,
};
use super::{SMALL, TIMEOUT, condition, wait_condition};

/// Longer than the 30 s a budget-stalled server waits before it looks again.
const HEAL_TIMEOUT: Duration = Duration::from_secs(90);

fn filler(name: &str, type_: &str, ports: std::ops::Range<i32>, node_ports: bool) -> Service {
    let ports: Vec<serde_json::Value> = ports
        .map(|i| {
            let mut port = json!({"name": format!("p{i}"), "port": 10000 + i, "protocol": "TCP"});
            if node_ports {
                port["nodePort"] = json!(30000 + i);
            }
            port
        })
        .collect();
    let mut spec = json!({"type": type_, "ports": ports});
    if type_ == "LoadBalancer" {
        spec["allocateLoadBalancerNodePorts"] = json!(false);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn wait_stalled(ns: &TestNamespace, name: &str, reason: &str) -> String {
    wait_condition(ns, name, "Stalled", &["True", reason], TIMEOUT)
        .await
        .2
}

async fn wait_unstalled_with_service(ns: &TestNamespace, name: &str) {
    wait_condition(ns, name, "Stalled", &["False"], HEAL_TIMEOUT).await;
    wait_for("the Service applied", TIMEOUT, || async {
        ns.api::<Service>().get_opt(name).await.ok()?
    })
    .await;
}

#[tokio::test]
async fn a_server_whose_node_ports_do_not_fit_is_stalled_until_ports_are_freed() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "nodeports").await;
    // Ports 30000-30007, given explicitly: the apiserver hands out the low band of its range
    // only on request, so no other test's Service lands in 30000-30009.
    ns.api::<Service>()
        .create(
            &PostParams::default(),
            &filler("unrelated", "NodePort", 0..8, true),
        )
        .await
        .expect("the unrelated NodePort Service is created");
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "nodeports-a",
        &kubeconfig_path(),
        &["--node-port-range=30000-30009"],
    );
    ns.create_server(SMALL).await;

    let message = wait_stalled(&ns, "small", "NodePortsExhausted").await;
    assert!(
        message.contains("passivePorts 30000-30002 with controlPort 21 needs 5 NodePorts")
            && message
                .contains("the cluster's NodePort range 30000-30009 has 10, 8 in use, 2 free")
            && message.contains("allocateLoadBalancerNodePorts: false"),
        "{message}"
    );
    // Nothing was applied: no Service, and not the ConfigMap either.
    assert!(!ns.has::<Service>("small").await);
    assert!(!ns.has::<ConfigMap>("small-config").await);
    let servers = ns.api::<FtpServer>();
    let ready = condition(&servers.get("small").await.unwrap(), "Ready").unwrap();
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("False", "NodePortsExhausted")
    );

    ns.api::<Service>()
        .delete("unrelated", &DeleteParams::default())
        .await
        .expect("the unrelated Service is deleted");
    wait_unstalled_with_service(&ns, "small").await;
}

#[tokio::test]
async fn an_azure_server_over_the_rules_per_nic_is_stalled_until_rules_are_freed() {
    // Every LoadBalancer Service of the cluster counts: no other test may add or remove one.
    let _alone = exclusive_apiserver().await;
    let client = client().await;
    install_crd(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client.clone());
    // Earlier tests' namespaces are being deleted with their Services; the count is stable once
    // no LoadBalancer Service is left in a terminating namespace (some stay terminating for
    // good: an FtpServer whose killed controller left its finalizer).
    let rules_in_use = wait_for(
        "no LoadBalancer Service left in a terminating namespace",
        Duration::from_secs(180),
        || async {
            let list = namespaces.list(&ListParams::default()).await.ok()?;
            let terminating: Vec<String> = list
                .items
                .iter()
                .filter(|ns| {
                    ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
                })
                .filter_map(|ns| ns.metadata.name.clone())
                .collect();
            let list = services.list(&ListParams::default()).await.ok()?;
            let balanced: Vec<&Service> = list
                .items
                .iter()
                .filter(|s| {
                    s.spec.as_ref().is_some_and(|spec| {
                        spec.type_.as_deref() == Some("LoadBalancer")
                            && spec.load_balancer_class.is_none()
                    })
                })
                .collect();
            if balanced.iter().any(|s| {
                s.metadata
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| terminating.contains(ns))
            }) {
                return None;
            }
            Some(
                balanced
                    .iter()
                    .filter_map(|s| s.spec.as_ref()?.ports.as_ref())
                    .map(Vec::len)
                    .sum::<usize>(),
            )
        },
    )
    .await;
    let ns = TestNamespace::new(&client, "azurerules").await;
    ns.api::<Service>()
        .create(
            &PostParams::default(),
            &filler("unrelated", "LoadBalancer", 0..8, false),
        )
        .await
        .expect("the unrelated LoadBalancer Service is created");
    let limit = rules_in_use + 10;
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "azurerules-a",
        &kubeconfig_path(),
        &[&format!("--azure-rules-per-nic={limit}")],
    );
    ns.create_server(
        "metadata: {name: az}\nspec: {passivePorts: {min: 30000, max: 30002}, loadBalancer: {provider: azure}}",
    )
    .await;

    let message = wait_stalled(&ns, "az", "AzureRulesPerNicExhausted").await;
    let others = rules_in_use + 8;
    assert!(
        message.contains("needs 4 Azure load-balancing rules")
            && message.contains(&format!(
                "other LoadBalancer Services use {others}, {} in all, but Azure allows {limit} rules per NIC",
                others + 4
            )),
        "{message}"
    );
    assert!(ns.api::<Service>().get_opt("az").await.unwrap().is_none());

    // Four ports fewer on the unrelated balancer: 4 + 4 more fit in the 10 left.
    let fewer = json!({"spec": {"ports": (0..4).map(|i| json!({"name": format!("p{i}"), "port": 10000 + i, "protocol": "TCP"})).collect::<Vec<_>>()}});
    ns.api::<Service>()
        .patch("unrelated", &PatchParams::default(), &Patch::Merge(&fewer))
        .await
        .expect("the unrelated Service shrinks");
    wait_unstalled_with_service(&ns, "az").await;
}
