//! The namespaced install: the chart's Roles (rendered by helm with `watchNamespaces`) are all
//! the controller may use, and it reconciles the FtpServers of the listed namespaces, leaves
//! those of any other alone, and reads nothing cluster-scoped.

use std::process::Command;

use ftp_operator::api::FtpServer;
use k8s_openapi::api::core::v1::Service;

use super::harness::{
    ControllerProcess, TestNamespace, client, impersonating_kubeconfig, install_crd,
    kubectl_apply_input, wait_for,
};
use super::{SMALL, TIMEOUT, set_load_balancer_ip, wait_ready};

const RELEASE: &str = "nsd";
/// The chart's ServiceAccount for that release name.
const ACCOUNT: &str = "nsd-ftp-operator";

/// helm, built (or taken from the cache) by scripts/tools.sh, as the Helm tier does.
fn helm() -> String {
    let out = Command::new("bash")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tools.sh"),
            "path",
            "helm",
        ])
        .output()
        .expect("scripts/tools.sh runs");
    assert!(
        out.status.success(),
        "scripts/tools.sh path helm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The chart's templates/rbac.yaml for a release in `release_ns` watching `watched`.
fn chart_rbac(release_ns: &str, watched: &[&str]) -> String {
    let out = Command::new(helm())
        .args([
            "template",
            RELEASE,
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ftp-operator"),
            "-n",
            release_ns,
            "--set",
            &format!("watchNamespaces={{{}}}", watched.join(",")),
            "--show-only",
            "templates/rbac.yaml",
        ])
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_namespaced_install_reconciles_only_its_namespaces_with_only_its_roles() {
    let client = client().await;
    install_crd(&client).await;
    let release = TestNamespace::new(&client, "nsd-ops").await;
    let team_a = TestNamespace::new(&client, "nsd-a").await;
    let team_b = TestNamespace::new(&client, "nsd-b").await;
    let other = TestNamespace::new(&client, "nsd-other").await;

    // The Roles cover the other namespace too, so only the controller's own scoping keeps it
    // out of there.
    let rbac = chart_rbac(&release.name, &[&team_a.name, &team_b.name, &other.name]);
    assert!(
        !rbac.contains("kind: ClusterRole"),
        "the namespaced chart renders cluster-wide RBAC:\n{rbac}"
    );
    kubectl_apply_input(
        &[],
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {ACCOUNT}, namespace: {}}}\n---\n{rbac}",
            release.name
        ),
    );
    // Every server exists before the controller starts, so one that watched the other namespace
    // would meet its server in its first list, before the watched ones can become Ready.
    for ns in [&team_a, &team_b, &other] {
        ns.create_server(SMALL).await;
    }
    let kubeconfig = impersonating_kubeconfig(&release.name, ACCOUNT);
    let watched = format!("--namespace={},{}", team_a.name, team_b.name);
    let controller = ControllerProcess::start_scoped(
        "nsd-a",
        &kubeconfig,
        &[
            &watched,
            "--leader-election-namespace",
            &release.name,
            // What the chart passes with watchNamespaces (its Roles list no Services cluster-wide).
            "--cluster-budgets=false",
        ],
    );
    for (ns, ip) in [(&team_a, "198.51.100.31"), (&team_b, "198.51.100.32")] {
        wait_for("the watched namespace's Service", TIMEOUT, || async {
            ns.api::<Service>().get_opt("small").await.ok()?
        })
        .await;
        set_load_balancer_ip(ns, "small", ip).await;
        let server = wait_ready(ns, "small").await;
        assert_eq!(
            server.status.and_then(|s| s.public_address).as_deref(),
            Some(ip)
        );
    }
    // Both watched namespaces are done; the other one was never looked at.
    let untouched = other.api::<FtpServer>().get("small").await.unwrap();
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    assert!(
        other
            .api::<Service>()
            .get_opt("small")
            .await
            .unwrap()
            .is_none()
    );
    // Every call it made was allowed by the Roles: no watch or read was refused (a Node watch,
    // a cluster-wide list, would be).
    let refused: Vec<String> = controller
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("forbidden"))
        .cloned()
        .collect();
    assert!(refused.is_empty(), "refused calls: {refused:#?}");
}
