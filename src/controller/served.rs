//! Ready means reachable: the configuration the running server pods serve.
//!
//! A changed ConfigMap reaches a pod's mounted volume only when the kubelet next syncs the pod,
//! up to a minute or more later, and the server re-reads it within its poll interval. Until then
//! PASV advertises the old address, so the FtpServer must not be Ready. Each server reports the
//! digest of the configuration file it serves (`/config-digest` on its metrics port); the
//! controller compares it with the ConfigMap's. Every pod carries, as an annotation, what its
//! mounted files should be made of (the config digest, the generated users Secret's digest and
//! the TLS Secret's resourceVersion): updating that annotation makes the kubelet sync the pod,
//! and its volumes, at once, so a changed address, user or certificate reaches the server in
//! seconds, not a minute.
//!
//! The same answer says which file a server could not load (a users or TLS Secret edited into
//! one that does not load leaves the old settings in effect), and a pod that is Ready but does
//! not answer the operator at all is, past a grace period, a network path the operator lacks
//! (a NetworkPolicy), not a kubelet that is slow.
//!
//! Pods are found by their labels, not through the workload that owns them. Turn the check off
//! (`--verify-served-config=false`) only where no server really runs, as on kwok's fake nodes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{FtpServer, FtpServerStatus};
use crate::ftp::config::{
    CONFIG_FILE_NAME, DEFAULT_METRICS_PORT, InputFile, RejectedInput, SERVED_CONFIG_MEDIA_TYPE,
    SERVED_CONFIG_PATH, ServedConfig, config_digest,
};

use super::build::{USERS_KEY, config_map_name, users_secret_name};
use super::status::condition;
use crate::api::conditions::{READY, RECONCILING, STALLED};
use crate::process::api_writes::ApiWrites;

/// What a pod's mounted files should hold: `<config digest>[ users=<digest of the users Secret>][ tls=<rv>]`.
pub const MOUNTED_INPUTS_ANNOTATION: &str = "ftpoperator.dev/mounted-inputs";
/// How long one pod may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a Ready pod may fail to answer before its silence is blamed on the network path: the
/// kubelet's readiness probe reaches the same port, so a pod Ready this long is listening.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

pub const USERS_SECRET_INVALID: &str = "UsersSecretInvalid";
pub const TLS_SECRET_INVALID: &str = "TlsSecretInvalid";
pub const CONFIG_REJECTED: &str = "ConfigRejected";
pub const SERVER_UNREACHABLE: &str = "ServerUnreachableFromOperator";
pub const OBJECT_STORAGE_UNAVAILABLE: &str = "ObjectStorageUnavailable";

/// The digest of the configuration file the ConfigMap holds.
pub fn desired_digest(config_map: &ConfigMap) -> Option<String> {
    config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CONFIG_FILE_NAME))
        .map(|text| config_digest(text.as_bytes()))
}

/// What one running pod answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Serves(ServedConfig),
    /// No connection to its metrics port (refused, timed out, no route, no address yet).
    Unreachable(String),
    /// Connected, but no usable answer.
    Unanswered(String),
}

/// One running pod: its name, its metrics address, since when it is Ready, and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    pub pod: String,
    pub address: Option<String>,
    pub ready_since: Option<Time>,
    pub answer: Answer,
}

/// What the running server pods said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub reports: Vec<PodReport>,
}

/// Why Ready is held back, for the conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub reason: &'static str,
    pub message: String,
    /// Only a person can fix it (Stalled=True); otherwise it is on its way.
    pub stalled: bool,
}

impl Hold {
    /// When to look again: soon while on the way (the kubelet syncs a nudged pod within a second
    /// or two; the server polls every 2 s), less often while a person must act.
    pub fn recheck_after(&self) -> Duration {
        if self.stalled {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(1)
        }
    }
}

impl Served {
    /// What Ready waits for, or None when every pod serves the desired configuration. A file a
    /// pod could not load comes first, then a pod the operator cannot reach, then lag.
    pub fn hold(&self, server: &FtpServer, desired: &str, now: &Time) -> Option<Hold> {
        let more = |count: usize| match count {
            0 | 1 => String::new(),
            n => format!(" (and {} more pod(s))", n - 1),
        };
        let rejected: Vec<(&str, &RejectedInput)> = self
            .reports
            .iter()
            .filter_map(|report| match &report.answer {
                Answer::Serves(ServedConfig {
                    rejected: Some(rejected),
                    ..
                }) => Some((report.pod.as_str(), rejected)),
                _ => None,
            })
            .collect();
        if let Some((pod, input)) = rejected.first() {
            let (reason, message) = rejected_message(server, pod, input);
            return Some(Hold {
                reason,
                message: format!("{message}{}", more(rejected.len())),
                stalled: true,
            });
        }
        let silent: Vec<&PodReport> = self
            .reports
            .iter()
            .filter(|report| matches!(report.answer, Answer::Unreachable(_)))
            .collect();
        let overdue: Vec<&PodReport> = silent
            .into_iter()
            .filter(|report| {
                report.ready_since.as_ref().is_some_and(|since| {
                    now.0.duration_since(since.0).unsigned_abs() >= UNREACHABLE_GRACE
                })
            })
            .collect();
        if let Some(report) = overdue.first() {
            return Some(Hold {
                reason: SERVER_UNREACHABLE,
                message: format!(
                    "{}{}",
                    unreachable_message(server, report),
                    more(overdue.len())
                ),
                stalled: true,
            });
        }
        let lagging: Vec<&str> = self
            .reports
            .iter()
            .filter(|report| match &report.answer {
                Answer::Serves(served) => served.digest.as_deref() != Some(desired),
                _ => false,
            })
            .map(|report| report.pod.as_str())
            .collect();
        let waiting: Vec<String> = self
            .reports
            .iter()
            .filter_map(|report| match &report.answer {
                Answer::Unreachable(why) | Answer::Unanswered(why) => {
                    Some(format!("{}: {why}", report.pod))
                }
                Answer::Serves(_) => None,
            })
            .collect();
        let pods = self.reports.len();
        let message = match (lagging.is_empty(), waiting.is_empty()) {
            (true, true) => return None,
            (false, true) => format!(
                "waiting for {} of {pods} pod(s) to serve the new configuration ({}); the kubelet is updating their mounted ConfigMap",
                lagging.len(),
                lagging.join(", ")
            ),
            (lagging_none, false) => {
                let mut message = format!(
                    "waiting for {} of {pods} pod(s) to answer on their metrics port {DEFAULT_METRICS_PORT} ({})",
                    waiting.len(),
                    waiting.join("; ")
                );
                if !lagging_none {
                    message.push_str(&format!(
                        " and for {} to serve the new configuration ({})",
                        lagging.len(),
                        lagging.join(", ")
                    ));
                }
                message
            }
        };
        Some(Hold {
            reason: "Progressing",
            message,
            stalled: false,
        })
    }
}

/// The reason and message for a file a pod could not load, naming the Secret it comes from.
fn rejected_message(
    server: &FtpServer,
    pod: &str,
    input: &RejectedInput,
) -> (&'static str, String) {
    let at_line = input
        .line
        .map_or_else(String::new, |line| format!(", line {line}"));
    let reason = &input.reason;
    match input.file {
        InputFile::Users => {
            // The operator checked every line and password before rendering the file: a server
            // that refuses it reads an older form of it.
            let from = server.spec.users.as_ref().map_or(String::new(), |u| {
                format!(" and the users Secret {}", u.secret_ref.name)
            });
            (
                USERS_SECRET_INVALID,
                format!(
                    "pod {pod} cannot load its users file, Secret {} (key {USERS_KEY}){at_line}: \
                     {reason}; it keeps serving the users it had before the file changed. The \
                     operator renders that file from the FtpUsers{from}: check that the server \
                     image (spec.image) is as new as the operator",
                    users_secret_name(server)
                ),
            )
        }
        InputFile::Tls => {
            let secret = server
                .spec
                .tls
                .as_ref()
                .map_or("(none)", |t| t.secret_ref.name.as_str());
            (
                TLS_SECRET_INVALID,
                format!(
                    "pod {pod} cannot load the TLS Secret {secret} (keys tls.crt, tls.key){at_line}: \
                     {reason}; it keeps serving the certificate it had before the Secret changed. \
                     Put a PEM certificate chain in tls.crt and its private key in tls.key"
                ),
            )
        }
        InputFile::ObjectStorage => (
            OBJECT_STORAGE_UNAVAILABLE,
            format!(
                "pod {pod} {reason}; it keeps serving with the storage it had before. \
                 {OBJECT_STORAGE_ADVICE}"
            ),
        ),
        InputFile::Config | InputFile::Other => (
            CONFIG_REJECTED,
            format!(
                "pod {pod} cannot load the configuration in ConfigMap {}{at_line}: {reason}; it \
                 keeps serving the previous one. The operator renders that ConfigMap: check that \
                 the server image (spec.image) is as new as the operator",
                config_map_name(server)
            ),
        ),
    }
}

/// What to check when the server cannot use its bucket.
pub const OBJECT_STORAGE_ADVICE: &str = "Check spec.storage.s3 (bucket, region, endpoint, \
     forcePathStyle) or spec.storage.azureBlob (account, container, endpoint) and the \
     credentials: the Secret named by credentialsSecretRef, or the identity of the pods' service \
     account (spec.serviceAccountName), which must allow listing the bucket or container and \
     reading, writing and deleting objects in it";

/// Stable while nothing changes (no elapsed time in it), so a quiet reconcile writes nothing.
fn unreachable_message(server: &FtpServer, report: &PodReport) -> String {
    let why = match &report.answer {
        Answer::Unreachable(why) | Answer::Unanswered(why) => why.as_str(),
        Answer::Serves(_) => "",
    };
    let namespace = server.namespace().unwrap_or_default();
    format!(
        "the operator cannot reach pod {} on its metrics port {DEFAULT_METRICS_PORT} ({why}) \
         although the pod has been Ready for over {} s: a NetworkPolicy likely blocks the operator, \
         either one in namespace {namespace} that selects the server's pods (allow ingress from \
         the operator's pods to TCP port {DEFAULT_METRICS_PORT}) or the operator's own (the \
         chart's networkPolicy.enabled: its policy must allow egress to TCP port \
         {DEFAULT_METRICS_PORT} of the FtpServer pods, as the chart's current one does). Until \
         then the operator cannot tell which configuration the pods serve, and the \
         reachability probe is likely blocked the same way",
        report.pod,
        UNREACHABLE_GRACE.as_secs()
    )
}

/// Whether the status about to be written says Ready.
pub fn is_ready(status: &FtpServerStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True")
}

/// Holds Ready back for `hold`: on the way, Reconciling stays True; when a person must act,
/// Stalled turns True with the same reason and message.
pub fn hold_ready(
    status: &mut FtpServerStatus,
    previous: &FtpServerStatus,
    hold: &Hold,
    now: &Time,
) {
    let generation = status.observed_generation;
    let message = hold.message.clone();
    for c in status.conditions.iter_mut() {
        let (is_true, reason, message) = match c.type_.as_str() {
            READY => (false, hold.reason, message.clone()),
            RECONCILING if hold.stalled => (
                false,
                "Stalled",
                "cannot proceed until this is fixed".to_owned(),
            ),
            RECONCILING => (true, hold.reason, message.clone()),
            STALLED if hold.stalled => (true, hold.reason, message.clone()),
            _ => continue,
        };
        *c = condition(
            &previous.conditions,
            &c.type_.clone(),
            is_true,
            reason,
            message,
            generation,
            now,
        );
    }
}

/// The annotation value for the desired config digest and the referenced Secrets' versions.
pub fn mounted_inputs(desired: &str, secret_versions: &[(&str, Option<String>)]) -> String {
    let mut inputs = desired.to_owned();
    for (name, version) in secret_versions {
        if let Some(version) = version {
            inputs.push_str(&format!(" {name}={version}"));
        }
    }
    inputs
}

/// Asks every running pod of the server (`pods`, from the cache) which configuration it serves,
/// and nudges the kubelet for each pod whose mounted inputs changed (a counted write).
pub async fn check(
    client: &Client,
    server: &FtpServer,
    pods: &[Arc<Pod>],
    inputs: &str,
    writes: &ApiWrites,
) -> Result<Served, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &server.namespace().unwrap_or_default());
    let mut served = Served::default();
    for pod in pods.iter().filter(|pod| is_running(pod)) {
        let name = pod.name_any();
        let annotated = pod.annotations().get(MOUNTED_INPUTS_ANNOTATION);
        if annotated.map(String::as_str) != Some(inputs) {
            let patch = json!({"metadata": {"annotations": {MOUNTED_INPUTS_ANNOTATION: inputs}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            writes.record("Pod");
        }
        let address = serving_address(pod);
        let answer = match &address {
            Some(address) => ask(address).await,
            None => Answer::Unreachable("no pod IP or metrics port yet".to_owned()),
        };
        if !matches!(answer, Answer::Serves(_)) {
            tracing::debug!(pod = %name, ?answer, "cannot tell which configuration the pod serves");
        }
        served.reports.push(PodReport {
            pod: name,
            address,
            ready_since: ready_since(pod),
            answer,
        });
    }
    Ok(served)
}

/// Since when the pod is Ready, when it is.
fn ready_since(pod: &Pod) -> Option<Time> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .clone()
}

/// Running and not being deleted: a pod that will answer.
fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// `ip:port` of the pod's metrics endpoint (the container port named `metrics`).
fn serving_address(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))?
        .container_port;
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

/// GET /config-digest from one pod (`ip:port`), asking for the whole report.
pub async fn ask(address: &str) -> Answer {
    let Ok(connected) =
        tokio::time::timeout(ASK_TIMEOUT, tokio::net::TcpStream::connect(address)).await
    else {
        return Answer::Unreachable(format!(
            "connecting to {address} timed out after {ASK_TIMEOUT:?}"
        ));
    };
    let stream = match connected {
        Ok(stream) => stream,
        Err(e) => return Answer::Unreachable(format!("connecting to {address}: {e}")),
    };
    let request = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::get(SERVED_CONFIG_PATH)
            .header(hyper::header::HOST, address)
            .header(hyper::header::ACCEPT, SERVED_CONFIG_MEDIA_TYPE)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        parse_answer(status.as_u16(), content_type.as_deref(), &body)
    };
    match tokio::time::timeout(ASK_TIMEOUT, request).await {
        Ok(Ok(served)) => Answer::Serves(served),
        Ok(Err(why)) => Answer::Unanswered(why),
        Err(_) => Answer::Unanswered(format!("{address} did not answer within {ASK_TIMEOUT:?}")),
    }
}

/// A server's answer: the JSON report, or (from a server older than the report) the digest alone
/// as text.
fn parse_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ServedConfig, String> {
    if !(200..300).contains(&status) {
        return Err(format!("{SERVED_CONFIG_PATH} answered {status}"));
    }
    if content_type.is_some_and(|t| t.starts_with(SERVED_CONFIG_MEDIA_TYPE)) {
        return serde_json::from_slice(body)
            .map_err(|e| format!("{SERVED_CONFIG_PATH} answered no report: {e}"));
    }
    Ok(ServedConfig {
        digest: Some(String::from_utf8_lossy(body).trim().to_owned()),
        rejected: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desired_digest_is_the_servers_digest_of_the_same_file() {
        let config_map: ConfigMap = serde_yaml::from_str(
            "metadata: {name: c-config}\ndata: {ftp-server.toml: \"public_address = \\\"198.18.0.10\\\"\\n\"}",
        )
        .unwrap();
        assert_eq!(
            desired_digest(&config_map),
            Some(config_digest(b"public_address = \"198.18.0.10\"\n"))
        );
        assert!(config_digest(b"").starts_with("sha256:e3b0c442"));
    }

    #[test]
    fn mounted_inputs_name_the_secrets_that_exist() {
        assert_eq!(
            mounted_inputs("sha256:ab", &[("users", Some("12".into())), ("tls", None)]),
            "sha256:ab users=12"
        );
    }

    use crate::controller::build::fixtures::{self, server};

    const DESIRED: &str = "sha256:new";

    fn at(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    fn now() -> Time {
        at("2026-01-01T00:10:00Z")
    }

    fn serving(pod: &str, digest: &str, rejected: Option<RejectedInput>) -> PodReport {
        PodReport {
            pod: pod.into(),
            address: Some("10.0.0.5:9100".into()),
            ready_since: Some(at("2026-01-01T00:00:00Z")),
            answer: Answer::Serves(ServedConfig {
                digest: Some(digest.into()),
                rejected,
            }),
        }
    }

    fn silent(pod: &str, ready_since: Option<&str>) -> PodReport {
        PodReport {
            pod: pod.into(),
            address: Some("10.0.0.6:9100".into()),
            ready_since: ready_since.map(at),
            answer: Answer::Unreachable("connecting to 10.0.0.6:9100 timed out after 2s".into()),
        }
    }

    fn hold(reports: Vec<PodReport>) -> Option<Hold> {
        Served { reports }.hold(&server(fixtures::FULL), DESIRED, &now())
    }

    #[test]
    fn every_pod_serving_the_desired_configuration_holds_nothing() {
        assert_eq!(
            hold(vec![
                serving("contoso-0", DESIRED, None),
                serving("contoso-1", DESIRED, None)
            ]),
            None
        );
        assert_eq!(hold(vec![]), None);
    }

    #[test]
    fn waiting_names_the_lagging_pods() {
        let held = hold(vec![
            serving("contoso-0", "sha256:old", None),
            serving("contoso-1", DESIRED, None),
        ])
        .unwrap();
        assert_eq!(
            held,
            Hold {
                reason: "Progressing",
                message: "waiting for 1 of 2 pod(s) to serve the new configuration (contoso-0); the kubelet is updating their mounted ConfigMap".into(),
                stalled: false,
            }
        );
        assert_eq!(held.recheck_after(), Duration::from_secs(1));
    }

    #[test]
    fn a_users_secret_the_server_cannot_load_is_not_ready_and_names_the_secret_line_and_why() {
        let rejected = RejectedInput {
            file: InputFile::Users,
            line: Some(2),
            reason:
                "hash scheme argon2i is not argon2id: make the hash with `ftp-server hash-password`"
                    .into(),
        };
        // The pod serves the desired ConfigMap: only the report tells that its users are old.
        let held = hold(vec![
            serving("contoso-0", DESIRED, Some(rejected.clone())),
            serving("contoso-1", DESIRED, Some(rejected)),
        ])
        .unwrap();
        assert_eq!(held.reason, USERS_SECRET_INVALID);
        assert!(held.stalled);
        for part in [
            "pod contoso-0 cannot load its users file, Secret contoso-generated-users (key users), line 2: hash scheme argon2i is not argon2id",
            "keeps serving the users it had",
            "from the FtpUsers and the users Secret ftp-users",
            "(and 1 more pod(s))",
        ] {
            assert!(held.message.contains(part), "{part}: {}", held.message);
        }
    }

    #[test]
    fn a_tls_secret_the_server_cannot_load_names_the_secret() {
        let rejected = RejectedInput {
            file: InputFile::Tls,
            line: None,
            reason: "certificate file /etc/ftp-tls/tls.crt holds no certificate".into(),
        };
        let held = hold(vec![serving("contoso-0", DESIRED, Some(rejected))]).unwrap();
        assert_eq!(held.reason, TLS_SECRET_INVALID);
        assert!(held.stalled);
        assert!(
            held.message.contains("cannot load the TLS Secret ftp-tls (keys tls.crt, tls.key): certificate file /etc/ftp-tls/tls.crt holds no certificate"),
            "{}",
            held.message
        );
    }

    #[test]
    fn a_bucket_the_server_cannot_use_on_reload_is_named_with_what_to_check() {
        let rejected = RejectedInput {
            file: InputFile::ObjectStorage,
            line: None,
            reason: "cannot use object storage: S3 bucket \"contoso-ftp\": PermissionDenied (permanent) at list"
                .into(),
        };
        let held = hold(vec![serving("contoso-0", DESIRED, Some(rejected))]).unwrap();
        assert_eq!(held.reason, OBJECT_STORAGE_UNAVAILABLE);
        assert!(held.stalled);
        for part in [
            "pod contoso-0 cannot use object storage: S3 bucket \"contoso-ftp\": PermissionDenied",
            "spec.storage.s3",
            "spec.serviceAccountName",
        ] {
            assert!(held.message.contains(part), "{part}: {}", held.message);
        }
    }

    #[test]
    fn a_configuration_the_server_rejects_names_the_config_map() {
        let rejected = RejectedInput {
            file: InputFile::Config,
            line: None,
            reason: "config file /etc/ftp-server/ftp-server.toml is not valid: unknown field"
                .into(),
        };
        let held = hold(vec![serving("contoso-0", "sha256:old", Some(rejected))]).unwrap();
        assert_eq!(held.reason, CONFIG_REJECTED);
        assert!(
            held.message.contains("ConfigMap contoso-config")
                && held.message.contains("unknown field"),
            "{}",
            held.message
        );
    }

    #[test]
    fn a_ready_pod_the_operator_cannot_reach_is_blamed_on_a_network_policy_after_the_grace() {
        // Ready for 30 s: still on the way, and the message says what the operator waits for.
        let held = hold(vec![silent("contoso-1", Some("2026-01-01T00:09:30Z"))]).unwrap();
        assert_eq!((held.reason, held.stalled), ("Progressing", false));
        assert!(
            held.message.contains("to answer on their metrics port 9100 (contoso-1: connecting to 10.0.0.6:9100 timed out")
                && !held.message.contains("kubelet"),
            "{}",
            held.message
        );
        // Not Ready at all: the pod may not listen yet; no blame either.
        let held = hold(vec![silent("contoso-1", None)]).unwrap();
        assert_eq!(held.reason, "Progressing");

        // Ready for 10 minutes and still silent: the path is blocked.
        let held = hold(vec![
            serving("contoso-0", DESIRED, None),
            silent("contoso-1", Some("2026-01-01T00:00:00Z")),
        ])
        .unwrap();
        assert_eq!(held.reason, SERVER_UNREACHABLE);
        assert!(held.stalled);
        assert_eq!(held.recheck_after(), Duration::from_secs(10));
        for part in [
            "cannot reach pod contoso-1 on its metrics port 9100 (connecting to 10.0.0.6:9100 timed out",
            "Ready for over 60 s",
            "NetworkPolicy",
            "namespace ftp",
            "networkPolicy.enabled",
        ] {
            assert!(held.message.contains(part), "{part}: {}", held.message);
        }
    }

    #[test]
    fn a_pod_reports_since_when_it_is_ready() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: contoso-0}\n\
             status: {phase: Running, conditions: [{type: Ready, status: 'True', lastTransitionTime: '2026-01-01T00:00:00Z'}]}",
        )
        .unwrap();
        assert_eq!(ready_since(&pod), Some(at("2026-01-01T00:00:00Z")));
        let not_ready: Pod = serde_yaml::from_str(
            "metadata: {name: contoso-0}\n\
             status: {phase: Running, conditions: [{type: Ready, status: 'False', lastTransitionTime: '2026-01-01T00:00:00Z'}]}",
        )
        .unwrap();
        assert_eq!(ready_since(&not_ready), None);
    }

    #[test]
    fn a_servers_answer_is_its_report_or_from_an_older_server_its_digest() {
        let report = ServedConfig {
            digest: Some("sha256:ab".into()),
            rejected: Some(RejectedInput {
                file: InputFile::Users,
                line: Some(3),
                reason: "empty user name".into(),
            }),
        };
        let body = serde_json::to_vec(&report).unwrap();
        assert_eq!(
            parse_answer(200, Some("application/json"), &body),
            Ok(report)
        );
        assert_eq!(
            parse_answer(200, Some("text/plain; charset=utf-8"), b"sha256:ab\n"),
            Ok(ServedConfig {
                digest: Some("sha256:ab".into()),
                rejected: None
            })
        );
        assert!(parse_answer(404, None, b"no configuration file\n").is_err());
        assert!(parse_answer(200, Some("application/json"), b"sha256:ab").is_err());
        // A file kind a newer server names still reads.
        let newer: ServedConfig = serde_json::from_str(
            r#"{"digest": "sha256:ab", "rejected": {"file": "sftp_keys", "reason": "bad key"}}"#,
        )
        .unwrap();
        assert_eq!(newer.rejected.unwrap().file, InputFile::Other);
    }

    #[test]
    fn a_hold_a_person_must_fix_stalls_and_one_on_its_way_keeps_reconciling() {
        let now = now();
        let ready = |is_true: bool, type_: &str| {
            condition(&[], type_, is_true, "Ready", String::new(), Some(1), &now)
        };
        let status = FtpServerStatus {
            conditions: vec![
                ready(true, READY),
                ready(false, RECONCILING),
                ready(false, STALLED),
            ],
            ..FtpServerStatus::default()
        };
        let state = |status: &FtpServerStatus, type_: &str| {
            let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let mut stalled = status.clone();
        let hold = Hold {
            reason: USERS_SECRET_INVALID,
            message: "pod contoso-0 cannot load the users Secret ftp-users".into(),
            stalled: true,
        };
        hold_ready(&mut stalled, &status, &hold, &now);
        assert_eq!(
            state(&stalled, READY),
            ("False".into(), USERS_SECRET_INVALID.into())
        );
        assert_eq!(
            state(&stalled, STALLED),
            ("True".into(), USERS_SECRET_INVALID.into())
        );
        assert_eq!(
            state(&stalled, RECONCILING),
            ("False".into(), "Stalled".into())
        );

        let mut waiting = status.clone();
        let hold = Hold {
            reason: "Progressing",
            message: "waiting for 1 of 1 pod(s)".into(),
            stalled: false,
        };
        hold_ready(&mut waiting, &status, &hold, &now);
        assert_eq!(
            state(&waiting, READY),
            ("False".into(), "Progressing".into())
        );
        assert_eq!(
            state(&waiting, RECONCILING),
            ("True".into(), "Progressing".into())
        );
        assert_eq!(state(&waiting, STALLED), ("False".into(), "Ready".into()));
    }
}
