//! The Helm chart installs the CRD from its own copy; it must be the very bytes `ftp-operator crd`
//! generated into crds/ftpserver.yaml, or `helm install` and `kubectl apply -f crds/` would
//! install different APIs.

#[test]
fn chart_crd_is_a_byte_copy_of_crds_ftpserver_yaml() {
    let root = env!("CARGO_MANIFEST_DIR");
    let repo = std::fs::read(format!("{root}/crds/ftpserver.yaml")).expect("crds/ftpserver.yaml");
    let chart = std::fs::read(format!(
        "{root}/charts/ftp-operator/files/crds/ftpserver.yaml"
    ))
    .expect("charts/ftp-operator/files/crds/ftpserver.yaml (run scripts/sync-chart-crd.sh)");
    assert!(
        repo == chart,
        "charts/ftp-operator/files/crds/ftpserver.yaml differs from crds/ftpserver.yaml: run scripts/sync-chart-crd.sh"
    );
}
