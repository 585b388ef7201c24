//! Several replicas on the real control plane, with kwok nodes running the pods: each provider's
//! routing shape (per-replica Services on a shared address, or controller-written EndpointSlices),
//! kept in step when the FtpServer is scaled with `kubectl scale`; the refusals (MetalLB, a
//! ReadWriteOnce claim, a range too small) with their messages; and the move from the Deployment
//! of earlier versions.

use std::collections::BTreeSet;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};

use super::harness::{TestNamespace, kubectl, wait_for};
use super::{TIMEOUT, service_ports, set_load_balancer_ip, setup, wait_condition, wait_ready};

fn scale(ns: &TestNamespace, name: &str, replicas: i32) -> Result<(), String> {
    let out = kubectl()
        .args([
            "scale",
            &format!("ftpserver/{name}"),
            &format!("--replicas={replicas}"),
            "-n",
            &ns.name,
        ])
        .output()
        .expect("kubectl runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn service_names(ns: &TestNamespace) -> BTreeSet<String> {
    ns.api::<Service>()
        .list(&ListParams::default())
        .await
        .map(|list| list.items.iter().map(|s| s.name_any()).collect())
        .unwrap_or_default()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `(slice name, ports, pod names)` of the controller's EndpointSlices.
async fn slices(ns: &TestNamespace) -> Vec<(String, Vec<i32>, Vec<String>)> {
    let mut out: Vec<_> = ns
        .api::<EndpointSlice>()
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=ftp-operator"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let ports = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            let pods = s
                .endpoints
                .iter()
                .flatten()
                .map(|e| {
                    e.target_ref
                        .as_ref()
                        .and_then(|t| t.name.clone())
                        .unwrap_or_default()
                })
                .collect();
            (s.name_any(), ports, pods)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn azure_replicas_get_a_service_each_on_the_shared_address_and_follow_kubectl_scale() {
    let (_client, ns, _controller) = setup("rep-azure").await;
    ns.create_server(
        r#"
metadata: {name: az}
spec:
  replicas: 3
  passivePorts: {min: 20000, max: 20029, perReplica: 10}
  loadBalancer: {provider: azure}
"#,
    )
    .await;
    // Only the control Service until the cloud gives it an address.
    let control = wait_for("the control Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("az").await.ok()?
    })
    .await;
    assert_eq!(
        service_ports(&control),
        vec![("ftp".into(), 21, "2121".into())]
    );
    assert_eq!(service_names(&ns).await, names(&["az"]));

    set_load_balancer_ip(&ns, "az", "198.18.0.10").await;
    wait_for("a Service per replica", TIMEOUT, || async {
        (service_names(&ns).await == names(&["az", "az-pasv-0", "az-pasv-1", "az-pasv-2"]))
            .then_some(())
    })
    .await;
    for index in 0..3 {
        let service = ns
            .api::<Service>()
            .get(&format!("az-pasv-{index}"))
            .await
            .unwrap();
        let first = 20000 + 10 * index;
        let expected: Vec<_> = (first..first + 10)
            .map(|p| (format!("pasv-{p}"), p, p.to_string()))
            .collect();
        assert_eq!(service_ports(&service), expected);
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.as_ref().unwrap()["statefulset.kubernetes.io/pod-name"],
            format!("az-{index}")
        );
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(
            service.annotations()["service.beta.kubernetes.io/azure-load-balancer-ipv4"],
            "198.18.0.10"
        );
    }
    let set = ns.api::<StatefulSet>().get("az").await.unwrap();
    assert_eq!(set.spec.as_ref().unwrap().replicas, Some(3));
    let budget = ns.api::<PodDisruptionBudget>().get("az").await.unwrap();
    assert_eq!(
        budget.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let server = wait_ready(&ns, "az").await;
    let status = server.status.unwrap();
    assert_eq!((status.ready_replicas, status.replicas), (Some(3), Some(3)));

    // kubectl scale goes through the scale subresource; a count that does not fit is refused
    // by the apiserver with the numbers.
    let refused = scale(&ns, "az", 4).unwrap_err();
    assert!(
        refused.contains("replicas 4 x passivePorts.perReplica 10 need 40 ports, but passivePorts 20000-20029 has 30"),
        "{refused}"
    );
    scale(&ns, "az", 1).unwrap();
    wait_for(
        "the scaled-away replicas' Services and the budget to go",
        TIMEOUT,
        || async {
            let budget_gone = ns
                .api::<PodDisruptionBudget>()
                .get_opt("az")
                .await
                .ok()?
                .is_none();
            (service_names(&ns).await == names(&["az", "az-pasv-0"]) && budget_gone).then_some(())
        },
    )
    .await;
    let server = wait_ready(&ns, "az").await;
    assert_eq!(server.status.unwrap().replicas, Some(1));
}

#[tokio::test]
async fn aws_replicas_get_endpoint_slices_that_follow_pods_and_scale() {
    let (_client, ns, controller) = setup("rep-aws").await;
    ns.create_server(
        r#"
metadata: {name: nlb}
spec:
  replicas: 2
  passivePorts: {min: 20000, max: 20005, perReplica: 3}
  loadBalancer: {provider: aws}
"#,
    )
    .await;
    let service = wait_for("the Service", TIMEOUT, || async {
        ns.api::<Service>().get_opt("nlb").await.ok()?
    })
    .await;
    assert_eq!(service.spec.as_ref().unwrap().selector, None);
    assert_eq!(service_ports(&service).len(), 7);
    // kwok runs the pods and gives them IPs; the slices name them.
    let expected = vec![
        (
            "nlb-control".to_owned(),
            vec![2121],
            vec!["nlb-0".to_owned(), "nlb-1".to_owned()],
        ),
        (
            "nlb-pasv-0".to_owned(),
            vec![20000, 20001, 20002],
            vec!["nlb-0".to_owned()],
        ),
        (
            "nlb-pasv-1".to_owned(),
            vec![20003, 20004, 20005],
            vec!["nlb-1".to_owned()],
        ),
    ];
    wait_for("EndpointSlices per replica", TIMEOUT, || async {
        (slices(&ns).await == expected).then_some(())
    })
    .await;
    // Once in step, a pass over unchanged pods writes nothing.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let writes = controller.api_writes().await;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(
        controller.api_writes().await,
        writes,
        "writes while nothing changed"
    );
    // kube's own EndpointSlice controller leaves a selector-less Service alone.
    let all = ns
        .api::<EndpointSlice>()
        .list(&ListParams::default().labels("kubernetes.io/service-name=nlb"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    // A replaced pod gets a new IP; its slice follows.
    let pods = ns.api::<Pod>();
    let old_uid = pods.get("nlb-1").await.unwrap().uid();
    pods.delete("nlb-1", &Default::default()).await.unwrap();
    wait_for(
        "the slice to carry the replacement pod",
        TIMEOUT,
        || async {
            let pod = pods.get("nlb-1").await.ok()?;
            if pod.uid() == old_uid {
                return None;
            }
            let ip = pod.status?.pod_ip?;
            let slice = ns.api::<EndpointSlice>().get("nlb-pasv-1").await.ok()?;
            let endpoint = slice.endpoints.as_ref()?.first()?;
            let target = endpoint.target_ref.as_ref()?;
            (endpoint.addresses == vec![ip] && target.uid == pod.metadata.uid).then_some(())
        },
    )
    .await;

    scale(&ns, "nlb", 1).unwrap();
    wait_for("the scaled-away replica's slice to go", TIMEOUT, || async {
        let now = slices(&ns).await;
        (now.iter().map(|s| s.0.as_str()).collect::<Vec<_>>() == ["nlb-control", "nlb-pasv-0"]
            && now[0].2 == ["nlb-0"])
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn refusals_stall_with_what_to_change() {
    let (_client, ns, _controller) = setup("rep-refused").await;
    // MetalLB cannot route a slice to its owner alone.
    ns.create_server(
        r#"
metadata: {name: bare}
spec:
  replicas: 2
  passivePorts: {min: 20000, max: 20009, perReplica: 5}
  loadBalancer: {provider: metallb}
"#,
    )
    .await;
    // A shared claim that only one node can mount.
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rwo"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    ns.create_server(
        r#"
metadata: {name: shared}
spec:
  replicas: 2
  passivePorts: {min: 20000, max: 20009, perReplica: 5}
  storage: {persistentVolumeClaim: {claimName: rwo}}
"#,
    )
    .await;
    let stalled = |name: &'static str| {
        let ns = &ns;
        async move {
            let (_, reason, message) =
                wait_condition(ns, name, "Stalled", &["True"], TIMEOUT).await;
            (reason, message)
        }
    };
    let (reason, message) = stalled("bare").await;
    assert_eq!(reason, "ProviderLimit");
    assert!(message.contains("MetalLB shares one address"), "{message}");
    assert!(message.contains("use replicas: 1"), "{message}");
    let (reason, message) = stalled("shared").await;
    assert_eq!(reason, "ClaimNotShareable");
    assert!(
        message.contains("PersistentVolumeClaim rwo is ReadWriteOnce but replicas: 2"),
        "{message}"
    );
    assert!(!ns.has::<StatefulSet>("shared").await);

    // Nothing of the sort gets past the apiserver without perReplica.
    let server: FtpServer = serde_yaml::from_str(
        "metadata: {name: noslice}\nspec: {replicas: 2, passivePorts: {min: 20000, max: 20009}}",
    )
    .unwrap();
    let err = ns
        .api::<FtpServer>()
        .create(&PostParams::default(), &server)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("replicas above 1 need passivePorts.perReplica"),
        "{err}"
    );
}

#[tokio::test]
async fn a_deployment_of_earlier_versions_is_removed_once_the_stateful_set_serves() {
    let (_client, ns, _controller) = setup("rep-legacy").await;
    let server = ns
        .create_server("metadata: {name: old}\nspec: {passivePorts: {min: 30000, max: 30002}}")
        .await;
    // What an earlier version left: a Deployment of the server's name with its labels, controlled
    // by the FtpServer.
    let legacy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "old", "labels": {
            "app.kubernetes.io/name": "ftp-server",
            "app.kubernetes.io/instance": "old",
            "app.kubernetes.io/managed-by": "ftp-operator"},
            "ownerReferences": [{"apiVersion": "ftpoperator.dev/v1alpha1", "kind": "FtpServer",
                "name": "old", "uid": server.uid(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "old", "legacy": "yes"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/instance": "old", "legacy": "yes"}},
                "spec": {"containers": [{"name": "ftp-server", "image": "ftp-operator:old"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &legacy)
        .await
        .unwrap();
    wait_for(
        "the Deployment to go once the StatefulSet is ready",
        TIMEOUT,
        || async {
            let set = ns.api::<StatefulSet>().get_opt("old").await.ok()??;
            let ready = set.status?.ready_replicas.unwrap_or(0);
            let gone = ns.api::<Deployment>().get_opt("old").await.ok()?.is_none();
            (ready >= 1 && gone).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn switching_to_a_claim_per_replica_replaces_the_stateful_set_without_wedging() {
    let (_client, ns, _controller) = setup("rep-claims").await;
    ns.create_server("metadata: {name: st}\nspec: {passivePorts: {min: 30000, max: 30002}}")
        .await;
    let sets = ns.api::<StatefulSet>();
    let first = wait_for("the StatefulSet", TIMEOUT, || async {
        sets.get_opt("st").await.ok()?
    })
    .await;
    // Claim templates cannot change in place; the controller must not retry an apply forever.
    ns.api::<FtpServer>()
        .patch(
            "st",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "spec": {"storage": {"claimPerReplica": {"size": "1Gi"}}}
            })),
        )
        .await
        .unwrap();
    let second = wait_for("a StatefulSet with a claim template", TIMEOUT, || async {
        let set = sets.get_opt("st").await.ok()??;
        let templates = set.spec.as_ref()?.volume_claim_templates.clone()?;
        (templates[0].metadata.name.as_deref() == Some("data")).then_some(set)
    })
    .await;
    assert_ne!(first.uid(), second.uid());
}
