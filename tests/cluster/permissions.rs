//! A watch the apiserver refuses (a Role without list and watch on one resource) does not leave
//! FtpServers silently unreconciled: they are Stalled with reason PermissionDenied naming the
//! resource, the verb and the namespace, and heal once the access is granted.

use std::time::Duration;

use serde_json::json;

use super::harness::{
    ControllerProcess, TestNamespace, client, grant_service_account, impersonating_kubeconfig,
    install_crd,
};
use super::{SMALL, TIMEOUT, wait_condition};

/// What the controller needs in its namespace, but (when `budgets` is false) any access to
/// PodDisruptionBudgets.
fn rules(budgets: bool) -> serde_json::Value {
    let mut rules = vec![
        json!({"apiGroups": ["ftpoperator.dev"], "resources": ["ftpservers", "ftpservers/status", "ftpservers/finalizers", "ftpusers", "ftpusers/status"], "verbs": ["*"]}),
        json!({"apiGroups": [""], "resources": ["configmaps", "secrets", "pods", "services", "persistentvolumeclaims"], "verbs": ["*"]}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["*"]}),
        json!({"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["*"]}),
        json!({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]}),
        json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]}),
    ];
    if budgets {
        rules.push(
            json!({"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]}),
        );
    }
    json!(rules)
}

#[tokio::test]
async fn a_refused_watch_stalls_the_servers_naming_it_until_access_is_granted() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "refused-watch").await;
    let _access = grant_service_account(&ns, "no-budgets", rules(false));
    let kubeconfig = impersonating_kubeconfig(&ns.name, "no-budgets");
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "refused-watch-a",
        &kubeconfig,
        &["--cluster-budgets=false"],
    );
    ns.create_server(SMALL).await;
    let (_, _, message) = wait_condition(
        &ns,
        "small",
        "Stalled",
        &["True", "PermissionDenied"],
        TIMEOUT,
    )
    .await;
    assert!(
        message.contains(&format!(
            "does not let the operator list poddisruptionbudgets.policy in namespace {}",
            ns.name
        )) && message.contains("grant its ServiceAccount list and watch"),
        "{message}"
    );

    // The Role gains PodDisruptionBudgets: the watch resumes and the server is reconciled.
    let _access = grant_service_account(&ns, "no-budgets", rules(true));
    wait_condition(
        &ns,
        "small",
        "Stalled",
        &["False"],
        Duration::from_secs(120),
    )
    .await;
}
