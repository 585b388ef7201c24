//! The docs name only what exists: every FtpServer field, condition reason, metric, chart value
//! and command-line flag that README.md and docs/ cite is checked against the generated CRD, the
//! Rust sources, the chart's values.yaml and the binaries' `--help`; and every field of the CRD
//! has its row in docs/api.md. A rename on either side fails here, naming the file and the name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and every Markdown file under docs/, with their text.
fn docs() -> Vec<(String, String)> {
    let mut files = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(root()).unwrap().display().to_string();
            let text = read(&path);
            (name, text)
        })
        .collect()
}

/// The text inside single backticks, one span per item.
fn code_spans(text: &str) -> Vec<String> {
    let span = Regex::new(r"`([^`\n]+)`").unwrap();
    span.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

fn crd_schema() -> Value {
    schema_of("crds/ftpserver.yaml")
}

/// The FtpUser CRD's schema: the docs cite its fields with the same `spec.` prefix.
fn user_crd_schema() -> Value {
    schema_of("crds/ftpuser.yaml")
}

fn schema_of(path: &str) -> Value {
    let crd: Value = serde_yaml::from_str(&read(&root().join(path))).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Whether `path` (`a.b.c`, `[n]` indices dropped) names a field of `schema`: through
/// `properties`, list `items`, and maps (any key).
fn resolves(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    for segment in path.split('.') {
        while node.get("items").is_some() && node.get("properties").is_none() {
            node = &node["items"];
        }
        if let Some(child) = node.get("properties").and_then(|p| p.get(segment)) {
            node = child;
        } else {
            // A map's keys are the user's (nodeSelector, annotations, ...).
            return node.get("additionalProperties").is_some();
        }
    }
    true
}

fn values() -> Value {
    serde_yaml::from_str(&read(&root().join("charts/ftp-operator/values.yaml"))).unwrap()
}

fn value_resolves(values: &Value, path: &str) -> bool {
    let mut node = values;
    for segment in path.split('.') {
        match node.get(segment) {
            Some(child) => node = child,
            // Below a map the chart passes through (podLabels, resources, ...): the user's keys.
            None => return node.as_mapping().is_some_and(|m| m.is_empty()) || node.is_sequence(),
        }
    }
    true
}

/// Fields of other objects the docs cite with the same prefixes (a Service's, a Node's).
const FOREIGN_FIELDS: &[&str] = &[
    "spec.loadBalancerIP",
    "spec.externalTrafficPolicy",
    "spec.allocateLoadBalancerNodePorts",
    "spec.loadBalancerClass",
    "spec.template.spec.containers",
    "status.loadBalancer",
    "status.containerStatuses",
];

/// `tls.rs`, `tls.crt`: a file or a Secret key, not a field.
fn file_like(span: &str) -> bool {
    let extensions = [
        "rs", "crt", "key", "md", "yaml", "toml", "json", "py", "sh", "txt",
    ];
    span.rsplit('.')
        .next()
        .is_some_and(|last| extensions.contains(&last))
}

fn api_field_name(span: &str) -> Option<String> {
    let field = Regex::new(r"^((?:spec|status)(?:\.[a-zA-Z][a-zA-Z0-9]*(?:\[\d+\])?)+)").unwrap();
    let name = field.captures(span)?[1].to_owned();
    Some(
        Regex::new(r"\[\d+\]")
            .unwrap()
            .replace_all(&name, "")
            .into_owned(),
    )
}

#[test]
fn every_ftpserver_field_the_docs_cite_exists() {
    let schema = crd_schema();
    let user_schema = user_crd_schema();
    let spec = &schema["properties"]["spec"];
    let values = values();
    // `loadBalancer.idleTimeoutSeconds`, `keepalive.nodeSysctls`: spec fields without `spec.`.
    let relative = Regex::new(r"^([a-z][a-zA-Z0-9]*(?:\.[a-z][a-zA-Z0-9]*)+)$").unwrap();
    let spec_fields: BTreeSet<&str> = spec["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .filter_map(Value::as_str)
        .collect();
    let mut missing = Vec::new();
    for (file, text) in docs() {
        for span in code_spans(&text) {
            if let Some(name) = api_field_name(&span) {
                let foreign = FOREIGN_FIELDS.iter().any(|f| name.starts_with(f));
                if !foreign && !resolves(&schema, &name) && !resolves(&user_schema, &name) {
                    missing.push(format!("{file}: `{name}`"));
                }
            } else if let Some(c) = relative.captures(&span).filter(|_| !file_like(&span)) {
                let name = &c[1];
                let first = name.split('.').next().unwrap_or_default();
                // A chart value that shares a spec field's first name (`image.tag`) is the chart's.
                if spec_fields.contains(first)
                    && !resolves(spec, name)
                    && !resolves(&user_schema["properties"]["spec"], name)
                    && !value_resolves(&values, name)
                {
                    missing.push(format!("{file}: `{name}`"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs cite FtpServer fields the CRD (crds/ftpserver.yaml) does not have:\n{}",
        missing.join("\n")
    );
}

/// Rows of docs/api.md's tables, by their first cell's backticked names.
fn api_md_rows() -> BTreeSet<String> {
    let text = read(&root().join("docs/api.md"));
    let first_cell = Regex::new(r"(?m)^\| *([^|]+?) *\|").unwrap();
    first_cell
        .captures_iter(&text)
        .flat_map(|c| code_spans(&c[1]))
        .collect()
}

/// Leaves of `schema` (under `prefix`) that no row of api.md documents: a documented object
/// covers its children; an undocumented one needs each child documented.
fn undocumented(schema: &Value, prefix: &str, rows: &BTreeSet<String>, out: &mut Vec<String>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_mapping) else {
        return;
    };
    for (key, child) in properties {
        let path = format!("{prefix}.{}", key.as_str().unwrap_or_default());
        if rows.contains(&path) {
            continue;
        }
        if child.get("properties").is_some() {
            undocumented(child, &path, rows, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_ftpserver_field_has_a_row_in_docs_api_md() {
    let schema = crd_schema();
    let rows = api_md_rows();
    let mut missing = Vec::new();
    undocumented(&schema["properties"]["spec"], "spec", &rows, &mut missing);
    undocumented(
        &schema["properties"]["status"],
        "status",
        &rows,
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "docs/api.md has no row for these fields of crds/ftpserver.yaml:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_ftpuser_field_has_a_row_in_docs_api_md() {
    let schema = user_crd_schema();
    let rows = api_md_rows();
    let mut missing = Vec::new();
    undocumented(&schema["properties"]["spec"], "spec", &rows, &mut missing);
    undocumented(
        &schema["properties"]["status"],
        "status",
        &rows,
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "docs/api.md has no row for these fields of crds/ftpuser.yaml:\n{}",
        missing.join("\n")
    );
}

/// The Rust sources under src/, concatenated.
fn sources() -> String {
    let mut all = String::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path: PathBuf = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                all.push_str(&read(&path));
            }
        }
    }
    all
}

/// Every string literal in the Rust sources under src/.
fn source_literals() -> BTreeSet<String> {
    let literal = Regex::new(r#""([A-Za-z0-9_./-]+)""#).unwrap();
    let text = sources();
    literal
        .captures_iter(&text)
        .map(|c| c[1].to_owned())
        .collect()
}

#[test]
fn every_condition_reason_the_docs_cite_is_one_the_code_writes() {
    let literals = source_literals();
    // PascalCase with two humps or more (`SecretMissing`), in a line that speaks of reasons.
    let reason = Regex::new(r"^[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+$").unwrap();
    // Kubernetes' and Flux's own words the same lines use.
    let kubernetes = [
        "HealthCheckFailed",
        "ConfigMap",
        "StatefulSet",
        "EndpointSlice",
        "PodDisruptionBudget",
        "LoadBalancer",
        "ReadWriteMany",
        "ReadWriteOnce",
    ];
    let mut missing = Vec::new();
    for (file, text) in docs() {
        // Lines that speak of reasons, and rows of tables of them (`| X | Stalled=True | ...`).
        let about_reasons = |l: &&str| {
            l.to_lowercase().contains("reason")
                || (l.starts_with('|')
                    && ["Stalled=", "Ready=", "Reconciling="]
                        .iter()
                        .any(|c| l.contains(c)))
        };
        for line in text.lines().filter(about_reasons) {
            for span in code_spans(line) {
                for name in span.split(',').map(str::trim) {
                    if reason.is_match(name)
                        && !kubernetes.contains(&name)
                        && !literals.contains(name)
                    {
                        missing.push(format!("{file}: `{name}`"));
                    }
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs cite reasons no source file under src/ writes:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_metric_the_docs_cite_is_registered() {
    // Names given to a registry (`register("sessions", ...)`) or encoded by a collector.
    let name = Regex::new(r#"(?:register|encode_descriptor)\(\s*"([a-z_]+)""#).unwrap();
    let text = sources();
    let literals: BTreeSet<String> = name.captures_iter(&text).map(|c| c[1].to_owned()).collect();
    // Prefixes of sub-registries (`sub_registry_with_prefix("probe")`) below ftp/ftp_operator.
    let prefix = Regex::new(r#"with_prefix\("([a-z_]+)"\)"#).unwrap();
    let prefixes: Vec<String> = prefix
        .captures_iter(&text)
        .map(|c| c[1].to_owned())
        .collect();
    let registered = |name: &str| {
        literals.contains(name)
            || prefixes.iter().any(|p| {
                name.strip_prefix(&format!("{p}_"))
                    .is_some_and(|rest| literals.contains(rest))
            })
    };
    // The registries' prefixes (Registry::with_prefix("ftp"), sub_registry_with_prefix).
    let metric =
        Regex::new(r"^(ftp_operator|ftp)_([a-z_]+?)(_total|_bucket|_sum|_count)?$").unwrap();
    let mut missing = Vec::new();
    for (file, text) in docs() {
        for span in code_spans(&text) {
            let Some(c) = metric.captures(&span) else {
                continue;
            };
            // Registered by its name without the prefix; counters gain `_total` when encoded.
            if !registered(&c[2]) {
                missing.push(format!("{file}: `{span}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs cite metrics that no registry in src/ registers:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_chart_value_the_docs_set_exists() {
    let values = values();
    let set = Regex::new(r"--set(?:-string)?[ =]'?([A-Za-z][A-Za-z0-9.\[\]]*)=").unwrap();
    let index = Regex::new(r"\[\d+\]").unwrap();
    let dotted = Regex::new(r"^[a-zA-Z.]+$").unwrap();
    let mut missing = Vec::new();
    for (file, text) in docs() {
        for c in set.captures_iter(&text) {
            let name = index.replace_all(&c[1], "").into_owned();
            if !value_resolves(&values, &name) {
                missing.push(format!("{file}: --set {name}"));
            }
        }
        // Values named in prose: `nodeTuning.enabled`, `probe.intervalSeconds`.
        for span in code_spans(&text) {
            let name = span.split([' ', '=', ':']).next().unwrap_or_default();
            let first = name.split('.').next().unwrap_or_default();
            let chart_only = [
                "nodeTuning",
                "crds",
                "serviceAccount",
                "rbac",
                "probe",
                "cluster",
                "metrics",
                "grafanaDashboard",
                "networkPolicy",
            ];
            if name.contains('.')
                && !file_like(name)
                && chart_only.contains(&first)
                && dotted.is_match(name)
                && !value_resolves(&values, name)
            {
                missing.push(format!("{file}: `{name}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name chart values charts/ftp-operator/values.yaml does not have:\n{}",
        missing.join("\n")
    );
}

/// Every `--flag` the binaries' `--help` shows, over all their subcommands.
fn own_flags() -> BTreeSet<String> {
    let operator = env!("CARGO_BIN_EXE_ftp-operator");
    let server = env!("CARGO_BIN_EXE_ftp-server");
    let runs: [(&str, &[&str]); 11] = [
        (operator, &[]),
        (operator, &["controller"]),
        (operator, &["crd"]),
        (operator, &["node-tuner"]),
        (operator, &["node-tuner", "run"]),
        (operator, &["node-tuner", "apply"]),
        (operator, &["node-tuner", "restore"]),
        (operator, &["node-tuner", "uninstall"]),
        (server, &[]),
        (server, &["hash-password"]),
        (server, &["generate-host-key"]),
    ];
    let flag = Regex::new(r"--[a-z0-9][a-z0-9-]*").unwrap();
    let mut flags = BTreeSet::new();
    for (binary, args) in runs {
        let out = Command::new(binary)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{binary} {args:?} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        flags.extend(flag.find_iter(&help).map(|m| m.as_str().to_owned()));
    }
    flags
}

/// Flags of other programs the docs cite on their own (helm, kubectl, curl, Kubernetes'
/// components, etcd).
const FOREIGN_FLAGS: &[&str] = &[
    "--set",
    "--wait",
    "--create-namespace",
    "--show-only",
    "--leader-elect",
    "--no-hooks",
    "--skip-crds",
    "--reuse-values",
    "--server-side",
    "--ssl-reqd",
    "--limit-rate",
    "--service-node-port-range",
    "--kubelet-preferred-address-types",
    "--kubelet-client-certificate",
    "--ipvs-tcp-timeout",
    "--endpoint-reconciler-type",
    "--controllers",
    "--authorization-mode",
    "--allowed-unsafe-sysctls",
    "--unsafe-no-fsync",
];

#[test]
fn every_flag_the_docs_cite_exists() {
    let own = own_flags();
    let flag = Regex::new(r"^(--[a-z0-9][a-z0-9-]*)").unwrap();
    // The binary as the command: at a line's start (after a prompt), a span's or a pipe's.
    let invocation =
        Regex::new(r"(?m)(?:^\s*(?:\$\s+)?|`|\|\s*)((?:ftp-operator|ftp-server) [^`\n|]*)")
            .unwrap();
    let any_flag = Regex::new(r"--[a-z0-9][a-z0-9-]*").unwrap();
    let mut missing = Vec::new();
    for (file, text) in docs() {
        let mut cited: Vec<String> = code_spans(&text)
            .iter()
            .filter_map(|span| flag.captures(span).map(|c| c[1].to_owned()))
            .filter(|f| !FOREIGN_FLAGS.contains(&f.as_str()))
            .collect();
        // Flags on a command line that runs one of the binaries (up to a pipe or the span's end).
        for line in text.lines() {
            for run in invocation.captures_iter(line) {
                cited.extend(any_flag.find_iter(&run[1]).map(|m| m.as_str().to_owned()));
            }
        }
        for f in cited {
            if !own.contains(&f) {
                missing.push(format!("{file}: {f}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "the docs cite flags neither binary's --help has (or add another program's flag to FOREIGN_FLAGS):\n{}",
        missing.join("\n")
    );
}
