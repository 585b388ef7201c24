//! One version in one place: Cargo.toml's version is what both binaries print, what the chart
//! calls itself and its app, and the tag of every image the chart, the controller and the
//! Dockerfile name. A release that bumps one and forgets another fails here.

use std::path::Path;
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE: &str = "ghcr.io/ftp-operator/ftp-operator";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn run(binary: &str, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e}"));
    assert!(out.status.success(), "{binary} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn both_binaries_print_the_crate_version() {
    for (binary, name) in [
        (env!("CARGO_BIN_EXE_ftp-operator"), "ftp-operator"),
        (env!("CARGO_BIN_EXE_ftp-server"), "ftp-server"),
    ] {
        assert_eq!(
            run(binary, &["--version"]).trim(),
            format!("{name} {VERSION}")
        );
    }
}

#[test]
fn the_chart_version_and_app_version_are_the_crate_version() {
    let chart = yaml("charts/ftp-operator/Chart.yaml");
    assert_eq!(
        chart["version"].as_str(),
        Some(VERSION),
        "Chart.yaml version must be Cargo.toml's {VERSION}"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "Chart.yaml appVersion must be Cargo.toml's {VERSION}"
    );
    let images = chart["annotations"]["artifacthub.io/images"]
        .as_str()
        .unwrap_or_default();
    assert!(
        images.contains(&format!("image: {IMAGE}:{VERSION}\n")),
        "Chart.yaml's artifacthub.io/images must name {IMAGE}:{VERSION}, has {images:?}"
    );
}

#[test]
fn the_chart_image_defaults_to_the_crate_version() {
    let values = yaml("charts/ftp-operator/values.yaml");
    assert_eq!(values["image"]["repository"].as_str(), Some(IMAGE));
    // Empty means the chart's appVersion (checked above); a fixed tag must be this version.
    let tag = values["image"]["tag"].as_str();
    assert!(
        tag == Some("") || tag == Some(VERSION),
        "values.yaml image.tag must be empty (appVersion) or {VERSION}, is {tag:?}"
    );
    let helpers = read("charts/ftp-operator/templates/_helpers.tpl");
    assert!(
        helpers.contains("(default .Chart.AppVersion .Values.image.tag)"),
        "the chart's image tag no longer defaults to appVersion"
    );
}

#[test]
fn the_controller_and_the_dockerfile_name_the_same_image() {
    let help = run(
        env!("CARGO_BIN_EXE_ftp-operator"),
        &["controller", "--help"],
    );
    assert!(
        help.contains(&format!("[default: {IMAGE}:{VERSION}]")),
        "--default-ftp-image's default is not {IMAGE}:{VERSION}"
    );
    let dockerfile = read("Dockerfile");
    for line in dockerfile
        .lines()
        .filter(|l| l.contains(&format!("{IMAGE}:")))
    {
        assert!(
            line.contains(&format!("{IMAGE}:{VERSION}")) || line.contains("<crate version>"),
            "Dockerfile names another version: {line}"
        );
    }
}
