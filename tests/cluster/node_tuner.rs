//! The node tuner DaemonSet's own controller: reconciled from the install's ConfigMap, with no
//! FtpServer reconcile involved; opt-in at install; where its agents may run; a DaemonSet that
//! cannot be written fails no FtpServer.

use std::time::Duration;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::harness::{
    ControllerProcess, TestNamespace, client, exclusive_apiserver, grant_service_account,
    impersonating_kubeconfig, install_crd, wait_for,
};
use super::{SMALL, TIMEOUT, condition, set_load_balancer_ip, wait_condition, wait_ready};

const TUNER: &str = "ftp-operator-node-tuner";
const FINALIZER: &str = "ftpoperator.dev/node-keepalive";

/// The ConfigMap the chart renders with nodeTuning.enabled, here by hand.
pub async fn create_tuning_config_map(ns: &TestNamespace, tolerations: &str) -> ConfigMap {
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": TUNER},
        "data": {"tolerations.json": tolerations},
    }))
    .unwrap();
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config)
        .await
        .expect("node tuning ConfigMap created")
}

/// A server asking for node sysctls on nodes no test has, so no agent tunes for it.
fn tuned_server(name: &str, ns: &TestNamespace) -> String {
    format!(
        r#"
metadata: {{name: {name}}}
spec:
  passivePorts: {{min: 30000, max: 30001}}
  keepalive: {{nodeSysctls: true}}
  nodeSelector: {{ftpoperator.dev/test-none: {}}}
"#,
        ns.name
    )
}

/// SMALL, Ready: its Service given a balancer address once it exists.
async fn serve_small(ns: &TestNamespace, ip: &str) {
    ns.create_server(SMALL).await;
    let services = ns.api::<Service>();
    wait_for("the Service", TIMEOUT, || async {
        services.get_opt("small").await.ok()?
    })
    .await;
    set_load_balancer_ip(ns, "small", ip).await;
    wait_ready(ns, "small").await;
}

async fn daemon_set(ns: &TestNamespace) -> Option<DaemonSet> {
    ns.api::<DaemonSet>().get_opt(TUNER).await.ok()?
}

fn applied_count(controller: &ControllerProcess) -> usize {
    controller
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("applied the node tuner DaemonSet"))
        .count()
}

#[tokio::test]
async fn the_daemon_set_has_a_controller_of_its_own_owned_by_the_install() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "tuning-own").await;
    let config = create_tuning_config_map(&ns, "[]").await;
    let controller = ControllerProcess::start_with(
        &ns.name,
        "tuning-own-a",
        &super::harness::kubeconfig_path(),
        &["--node-tuning=true"],
    );
    for name in ["first", "second"] {
        ns.create_server(&tuned_server(name, &ns)).await;
    }
    let ds = wait_for("the node tuner DaemonSet", TIMEOUT, || daemon_set(&ns)).await;
    let owner = &ds.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.clone()),
        ("ConfigMap", TUNER, config.uid().unwrap())
    );
    assert_eq!(owner.controller, Some(true));
    let servers = ns.api::<FtpServer>();
    for name in ["first", "second"] {
        wait_for("the finalizer and the status", TIMEOUT, || async {
            let server = servers.get(name).await.ok()?;
            let has = server.finalizers().iter().any(|f| f == FINALIZER);
            (has && condition(&server, "KeepaliveConfigured").is_some()).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Written once; then FtpServer changes wake its controller, which writes nothing.
    let applied = applied_count(&controller);
    let writes = controller.api_writes().await;
    for round in 0..3 {
        for name in ["first", "second"] {
            servers
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"test/round": round.to_string()}}}),
                    ),
                )
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        applied_count(&controller),
        applied,
        "a quiet DaemonSet was applied again"
    );
    assert_eq!(
        controller.api_writes().await,
        writes,
        "a quiet reconcile wrote"
    );
    assert_eq!(daemon_set(&ns).await.unwrap().metadata.generation, Some(1));

    // Deleted by hand, it comes back from its own controller: no FtpServer reconcile runs. (Other
    // tests' Node changes wake tuned servers now and then, so a window may see some: one quiet
    // window of a few is the proof; a DaemonSet restored by FtpServer reconciles never has one.)
    let mut quiet = false;
    let mut old_uid = ds.uid();
    for _ in 0..5 {
        let reconciles = controller.metric("ftp_operator_reconciles_total").await;
        ns.api::<DaemonSet>()
            .delete(TUNER, &DeleteParams::default())
            .await
            .unwrap();
        let back = wait_for("the DaemonSet to come back", TIMEOUT, || async {
            let ds = daemon_set(&ns).await?;
            (ds.uid() != old_uid && ds.metadata.deletion_timestamp.is_none()).then_some(ds)
        })
        .await;
        old_uid = back.uid();
        if controller.metric("ftp_operator_reconciles_total").await == reconciles {
            quiet = true;
            break;
        }
    }
    assert!(
        quiet,
        "every time, FtpServer reconciles took part in restoring the DaemonSet"
    );

    // Deleting the install's ConfigMap (what helm uninstall does) takes the DaemonSet along.
    ns.api::<ConfigMap>()
        .delete(TUNER, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete the DaemonSet",
        TIMEOUT,
        || async { daemon_set(&ns).await.is_none().then_some(()) },
    )
    .await;
    for name in ["first", "second"] {
        servers
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn without_node_tuning_node_sysctls_are_stalled_saying_how_to_turn_it_on() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "tuning-off").await;
    let _controller = ControllerProcess::start(&ns.name, "tuning-off-a");
    ns.create_server(&tuned_server("asks", &ns)).await;
    let (state, reason, message) = wait_condition(&ns, "asks", "Stalled", &[], TIMEOUT).await;
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "NodeTuningDisabled")
    );
    assert!(
        message.contains("--set nodeTuning.enabled=true"),
        "{message}"
    );
    let server = ns.api::<FtpServer>().get("asks").await.unwrap();
    assert!(
        server.finalizers().is_empty(),
        "no finalizer without node tuning"
    );
    assert!(daemon_set(&ns).await.is_none());
    // A server that does not ask is served as usual.
    serve_small(&ns, "198.51.100.7").await;
}

#[tokio::test]
async fn the_agents_honour_taints_unless_told_and_skip_non_linux_and_virtual_nodes() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "tuning-shape").await;
    create_tuning_config_map(&ns, "[]").await;
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "tuning-shape-a",
        &super::harness::kubeconfig_path(),
        &["--node-tuning=true"],
    );
    ns.create_server(&tuned_server("shape", &ns)).await;
    let ds = wait_for("the node tuner DaemonSet", TIMEOUT, || daemon_set(&ns)).await;
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.tolerations, None,
        "no toleration unless the install gives one"
    );
    assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
    let affinity = serde_json::to_value(pod.affinity.unwrap()).unwrap();
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0],
        json!({"key": "type", "operator": "NotIn", "values": ["virtual-kubelet", "kwok"]})
    );
    // kwok's nodes are virtual: the scheduler places no agent on them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = daemon_set(&ns).await.unwrap().status.unwrap();
    assert_eq!(status.desired_number_scheduled, 0);

    // Extra tolerations from the install reach the DaemonSet (a ConfigMap change wakes it).
    ns.api::<ConfigMap>()
        .patch(
            TUNER,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tolerations.json":
                r#"[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]"#}})),
        )
        .await
        .unwrap();
    let tolerations = wait_for("the tolerations to arrive", TIMEOUT, || async {
        daemon_set(&ns).await?.spec?.template.spec?.tolerations
    })
    .await;
    assert_eq!(
        tolerations[0].key.as_deref(),
        Some("node-role.kubernetes.io/control-plane")
    );
    ns.api::<FtpServer>()
        .delete("shape", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_daemon_set_that_cannot_be_written_fails_no_ftpserver() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "tuning-fail").await;
    create_tuning_config_map(&ns, "[]").await;
    // Everything the controller needs, but DaemonSets.
    let _access = grant_service_account(
        &ns,
        "no-daemonsets",
        json!([
            {"apiGroups": ["ftpoperator.dev"], "resources": ["ftpservers", "ftpservers/status", "ftpservers/finalizers", "ftpusers", "ftpusers/status"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "persistentvolumeclaims"], "verbs": ["*"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["*"]},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]}
        ]),
    );
    let kubeconfig = impersonating_kubeconfig(&ns.name, "no-daemonsets");
    let controller = ControllerProcess::start_with(
        &ns.name,
        "tuning-fail-a",
        &kubeconfig,
        &["--node-tuning=true"],
    );
    ns.create_server(&tuned_server("tuned", &ns)).await;
    controller
        .wait_logged("node tuner DaemonSet reconcile failed", TIMEOUT)
        .await;
    // The server next to it, and the tuned one itself, are reconciled as if nothing failed.
    serve_small(&ns, "198.51.100.8").await;
    let servers = ns.api::<FtpServer>();
    let (_, reason, _) = wait_condition(&ns, "tuned", "KeepaliveConfigured", &[], TIMEOUT).await;
    assert_eq!(reason, "NoMatchingNodes");
    let tuned = servers.get("tuned").await.unwrap();
    assert_ne!(
        condition(&tuned, "Stalled").map(|c| c.0).as_deref(),
        Some("True"),
        "the DaemonSet's failure stalled an FtpServer"
    );
    assert!(daemon_set(&ns).await.is_none());
    servers
        .delete("tuned", &DeleteParams::default())
        .await
        .unwrap();
}

/// A local agent process, killed when the test ends, passed or not: left running it would hold
/// the test runner's output open and keep reporting its node.
struct LocalAgent(std::process::Child);

impl LocalAgent {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ftp-operator node-tuner run` as a local process for one kwok node (kwok runs no real pods),
/// writing into a temporary sysctl tree, as an agent of the install `install_uid`.
fn start_agent(node: &str, root: &std::path::Path, install_uid: &str) -> LocalAgent {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ftp-operator"))
        .args([
            "node-tuner",
            "run",
            "--node-name",
            node,
            "--resync-seconds",
            "2",
        ])
        .arg("--sysctl-root")
        .arg(root)
        .args(["--install-uid", install_uid])
        .env("KUBECONFIG", super::harness::kubeconfig_path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("node tuner starts");
    LocalAgent(child)
}

fn read_time(root: &std::path::Path) -> String {
    std::fs::read_to_string(root.join("net/ipv4/tcp_keepalive_time"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn uninstall_has_the_nodes_restored_and_leaves_no_finalizer() {
    use k8s_openapi::api::core::v1::Node;
    // The uninstall releases every FtpServer of the cluster and relabels a shared node: other
    // tests' tuned servers would conflict with it (409) and be woken mid-count. It runs alone.
    let _alone = exclusive_apiserver().await;
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "tuning-uninstall").await;
    let config = create_tuning_config_map(&ns, "[]").await;
    let node = "kwok-node-1";
    let label = format!("ftpoperator.dev/test-{}", ns.name);
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let label_node = |value: Option<&str>| {
        let patch = json!({"metadata": {"labels": {label.clone(): value}}});
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("node labelled");
        }
    };
    label_node(Some("yes")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
    for (name, value) in [
        ("tcp_keepalive_time", 600),
        ("tcp_keepalive_intvl", 60),
        ("tcp_keepalive_probes", 5),
    ] {
        std::fs::write(dir.path().join("net/ipv4").join(name), format!("{value}\n")).unwrap();
    }
    let mut agent = start_agent(node, dir.path(), &config.uid().unwrap());
    let mut controller = ControllerProcess::start_with(
        &ns.name,
        "tuning-uninstall-a",
        &super::harness::kubeconfig_path(),
        &["--node-tuning=true"],
    );
    ns.create_server(&format!(
        r#"
metadata: {{name: edge}}
spec:
  passivePorts: {{min: 30000, max: 30001}}
  keepalive: {{idleSeconds: 30, intervalSeconds: 5, probes: 4, nodeSysctls: true}}
  nodeSelector: {{{label}: "yes"}}
"#
    ))
    .await;
    let servers = ns.api::<FtpServer>();
    wait_for("the node tuned and the finalizer on", TIMEOUT, || async {
        let server = servers.get("edge").await.ok()?;
        let held = server.finalizers().iter().any(|f| f == FINALIZER);
        (held && read_time(dir.path()) == "30").then_some(())
    })
    .await;

    // The operator is gone (in a cluster the hook scales its Deployment to zero first).
    controller.kill();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftp-operator"))
        .args(["node-tuner", "uninstall", "--namespace", &ns.name])
        .args([
            "--operator-deployment",
            "ftp-operator",
            "--timeout-seconds",
            "30",
        ])
        .env("KUBECONFIG", super::harness::kubeconfig_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "uninstall failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_time(dir.path()), "600", "the node's own value is back");
    let server = servers.get("edge").await.unwrap();
    assert!(
        !server.finalizers().iter().any(|f| f == FINALIZER),
        "the finalizer is gone"
    );
    let annotations = nodes.get(node).await.unwrap().annotations().clone();
    assert!(!annotations.contains_key("ftpoperator.dev/keepalive-original"));
    // The agent stays restored while the servers still ask (until Helm deletes its DaemonSet).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(read_time(dir.path()), "600");
    agent.kill();
    servers
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ftpoperator.dev/keepalive-restore": null}}}),
            ),
        )
        .await
        .unwrap();
    label_node(None).await;
}
