//! Keepalive against the real control plane: the value derived from the balancer reaches the
//! status, the rendered config and the pod sysctls; servers needing node sysctls bring the node
//! tuner DaemonSet and take it away; a tuner agent run as a local process (kwok nodes run no
//! real pods) tunes a kwok node's sysctls in a temporary directory, reports on the Node, and
//! restores the node before the FtpServer's finalizer lets it go.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::harness::{ControllerProcess, client, install_crd};
use super::harness::{TestNamespace, kubeconfig_path, wait_for};
use super::node_tuner::create_tuning_config_map;
use super::{TIMEOUT, condition, rendered_config, setup, wait_condition};

const TUNER_DAEMON_SET: &str = "ftp-operator-node-tuner";
const FINALIZER: &str = "ftpoperator.dev/node-keepalive";
const APPLIED: &str = "ftpoperator.dev/keepalive-applied";
const ORIGINAL: &str = "ftpoperator.dev/keepalive-original";

/// A namespace and a controller with node tuning installed (the chart's ConfigMap, the flag).
pub(super) async fn setup_tuning(prefix: &str) -> (Client, TestNamespace, ControllerProcess) {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    create_tuning_config_map(&ns, "[]").await;
    let controller = ControllerProcess::start_with(
        &ns.name,
        &format!("{prefix}-a"),
        &kubeconfig_path(),
        &["--node-tuning=true"],
    );
    (client, ns, controller)
}

async fn daemon_set(ns: &TestNamespace) -> Option<DaemonSet> {
    ns.api::<DaemonSet>().get_opt(TUNER_DAEMON_SET).await.ok()?
}

async fn wait_gone(ns: &TestNamespace, name: &str) {
    let servers = ns.api::<FtpServer>();
    wait_for(&format!("FtpServer {name} to go"), TIMEOUT, || async {
        servers.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn keepalive_derived_from_the_balancer_reaches_status_config_and_pod() {
    let (_client, ns, _controller) = setup("ka-derived").await;
    ns.create_server(
        r#"
metadata: {name: azure}
spec:
  passivePorts: {min: 30000, max: 30001}
  loadBalancer: {provider: azure, idleTimeoutSeconds: 240}
"#,
    )
    .await;
    let (state, reason, message) =
        wait_condition(&ns, "azure", "KeepaliveConfigured", &[], TIMEOUT).await;
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("True", "DerivedFromLoadBalancer")
    );
    assert!(
        message.contains(
            "idle 120 s, interval 10 s, 6 probes (derived from loadBalancer.idleTimeoutSeconds=240)"
        ),
        "{message}"
    );
    let config = wait_for("the rendered config", TIMEOUT, || {
        rendered_config(&ns, "azure")
    })
    .await;
    assert_eq!(config.keepalive.idle_seconds, 120);
    let set = ns.api::<StatefulSet>().get("azure").await.unwrap();
    let sysctls = set
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .security_context
        .unwrap()
        .sysctls
        .unwrap();
    assert!(
        sysctls
            .iter()
            .any(|s| s.name == "net.ipv4.tcp_keepalive_time" && s.value == "120")
    );
    // No node sysctls asked for: no finalizer, no DaemonSet.
    let servers = ns.api::<FtpServer>();
    assert!(servers.get("azure").await.unwrap().finalizers().is_empty());
    assert!(daemon_set(&ns).await.is_none());
}

// Two servers created back to back also guard against reconciles parked on a cache that is not
// complete yet: kube's store wakes only its latest waiter, and the other one used to hang.
#[tokio::test]
async fn the_tuner_daemon_set_lives_exactly_while_a_server_needs_node_sysctls() {
    let (_client, ns, _controller) = setup_tuning("ka-daemonset").await;
    // A node selector no node carries: other tests' tuner agents must not tune for these.
    for name in ["first", "second"] {
        ns.create_server(&format!(
            r#"
metadata: {{name: {name}}}
spec:
  passivePorts: {{min: 30000, max: 30001}}
  keepalive: {{nodeSysctls: true}}
  nodeSelector: {{ftpoperator.dev/test-none: {}}}
"#,
            ns.name
        ))
        .await;
    }
    let ds = wait_for("the node tuner DaemonSet", TIMEOUT, || daemon_set(&ns)).await;
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("ftp-operator-node-tuner")
    );
    let servers = ns.api::<FtpServer>();
    let first = wait_for("the finalizer and the status", TIMEOUT, || async {
        let server = servers.get("first").await.ok()?;
        let has = server.finalizers().iter().any(|f| f == FINALIZER);
        (has && condition(&server, "KeepaliveConfigured").is_some()).then_some(server)
    })
    .await;
    let (state, reason, _) = condition(&first, "KeepaliveConfigured").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", "NoMatchingNodes")
    );

    servers
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&ns, "first").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon_set(&ns).await.is_some(),
        "the second server still needs it"
    );

    servers
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&ns, "second").await;
    wait_for(
        "the DaemonSet to go with the last server",
        TIMEOUT,
        || async { daemon_set(&ns).await.is_none().then_some(()) },
    )
    .await;
}

/// `ftp-operator node-tuner run` for one kwok node, writing into a temporary sysctl tree.
struct Agent(Child);

impl Agent {
    fn start(node: &str, root: &Path) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_ftp-operator"))
            .args([
                "node-tuner",
                "run",
                "--node-name",
                node,
                "--resync-seconds",
                "2",
                "--sysctl-root",
            ])
            .arg(root)
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node tuner starts");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_sysctls(root: &Path) -> (u32, u32, u32) {
    // The agent writes these plain files as it would /proc/sys (truncate, then write): a read in
    // between finds the file empty, which /proc/sys never shows, so read again.
    let read = |name: &str| {
        let path = root.join("net/ipv4").join(name);
        for _ in 0..100 {
            if let Ok(value) = std::fs::read_to_string(&path).unwrap().trim().parse() {
                return value;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} holds no number", path.display())
    };
    (
        read("tcp_keepalive_time"),
        read("tcp_keepalive_intvl"),
        read("tcp_keepalive_probes"),
    )
}

async fn label_node(client: &Client, node: &str, key: &str, value: Option<&str>) {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .expect("node labelled");
}

#[tokio::test]
async fn a_local_agent_tunes_its_node_reports_it_and_restores_it_on_deletion() {
    let (client, ns, _controller) = setup_tuning("ka-agent").await;
    let node = "kwok-node-0";
    // Only this test's server selects the node through this label.
    let label = format!("ftpoperator.dev/test-{}", ns.name);
    label_node(&client, node, &label, Some("yes")).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
    for (name, value) in [
        ("tcp_keepalive_time", 7200),
        ("tcp_keepalive_intvl", 75),
        ("tcp_keepalive_probes", 9),
    ] {
        std::fs::write(dir.path().join("net/ipv4").join(name), format!("{value}\n")).unwrap();
    }
    let _agent = Agent::start(node, dir.path());

    ns.create_server(&format!(
        r#"
metadata: {{name: edge}}
spec:
  hostNetwork: true
  passivePorts: {{min: 30000, max: 30001}}
  keepalive: {{idleSeconds: 30, intervalSeconds: 5, probes: 4}}
  nodeSelector: {{{label}: "yes"}}
"#
    ))
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    // The agent sets the sysctls, then reports on the Node: wait for both.
    let annotated = wait_for(
        "the agent to tune the node and report it",
        TIMEOUT,
        || async {
            let node = nodes.get(node).await.ok()?;
            (read_sysctls(dir.path()) == (30, 5, 4) && node.annotations().contains_key(APPLIED))
                .then_some(node)
        },
    )
    .await;
    let original: serde_json::Value =
        serde_json::from_str(&annotated.annotations()[ORIGINAL]).unwrap();
    assert_eq!(original, json!({"time": 7200, "intvl": 75, "probes": 9}));
    let servers = ns.api::<FtpServer>();
    let key = format!("{}/edge", ns.name);
    let report: serde_json::Value =
        serde_json::from_str(&annotated.annotations()[APPLIED]).unwrap();
    assert_eq!(report["servers"], json!([key]));

    let (_, _, message) =
        wait_condition(&ns, "edge", "KeepaliveConfigured", &["True"], TIMEOUT).await;
    let tuned = (servers.get("edge").await.unwrap(), message);
    let nodes_status = tuned.0.status.unwrap().node_keepalive.unwrap();
    assert_eq!(
        (
            nodes_status.tuned,
            nodes_status.pending,
            nodes_status.failed
        ),
        (1, 0, 0)
    );
    assert!(
        tuned.1.contains("1 tuned, 0 pending, 0 failed"),
        "{}",
        tuned.1
    );

    // A hand change on the node is undone at the next resync.
    std::fs::write(dir.path().join("net/ipv4/tcp_keepalive_time"), "7200\n").unwrap();
    wait_for("the agent to re-apply", TIMEOUT, || async {
        (read_sysctls(dir.path()) == (30, 5, 4)).then_some(())
    })
    .await;

    // Deleting the server: the agent restores the node, then the finalizer lets it go.
    servers
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&ns, "edge").await;
    assert_eq!(
        read_sysctls(dir.path()),
        (7200, 75, 9),
        "restored before the server went"
    );
    let node_after = nodes.get(node).await.unwrap();
    assert!(!node_after.annotations().contains_key(ORIGINAL));
    assert!(!node_after.annotations().contains_key(APPLIED));
    wait_for("the DaemonSet to go", TIMEOUT, || async {
        daemon_set(&ns).await.is_none().then_some(())
    })
    .await;
    label_node(&client, node, &label, None).await;
}
