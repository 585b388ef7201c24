//! The Helm chart installs the CRDs from its own copies; each must be the very bytes
//! `ftp-operator crd` generated into crds/, or `helm install` and `kubectl apply -f crds/` would
//! install different APIs.

#[test]
fn chart_crds_are_byte_copies_of_crds() {
    let root = env!("CARGO_MANIFEST_DIR");
    for crd in ["ftpserver.yaml", "ftpuser.yaml"] {
        let repo = std::fs::read(format!("{root}/crds/{crd}")).expect("crds/");
        let chart = std::fs::read(format!("{root}/charts/ftp-operator/files/crds/{crd}"))
            .expect("charts/ftp-operator/files/crds/ (run scripts/sync-chart-crd.sh)");
        assert!(
            repo == chart,
            "charts/ftp-operator/files/crds/{crd} differs from crds/{crd}: run scripts/sync-chart-crd.sh"
        );
    }
}
