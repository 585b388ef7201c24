//! Watches the apiserver refuses (a Role without `list` or `watch` on a resource). Such a cache
//! never fills, and reconciles wait for complete caches; without this record every FtpServer
//! would wait silently. They report `Stalled` with reason `PermissionDenied` instead, naming the
//! resource, the verb and the namespace; a refused FtpServer watch, which leaves no FtpServer to
//! report on, makes `/readyz` fail and is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tracing::error;

use super::errors::Invalid;

/// The Stalled reason for a refused watch.
pub const PERMISSION_DENIED: &str = "PermissionDenied";

/// The Stalled reason for a watch of a resource the apiserver does not serve (its CRD missing).
pub const CRD_NOT_INSTALLED: &str = "CrdNotInstalled";

/// The resource name of the FtpServer watch, whose refusal no FtpServer can report.
pub const FTP_SERVERS: &str = "ftpservers.ftpoperator.dev";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub resource: &'static str,
    pub verb: &'static str,
    /// None: cluster-wide.
    pub namespace: Option<String>,
    pub message: String,
    /// The apiserver does not serve the resource at all (404): its CRD is not installed.
    pub not_installed: bool,
}

impl Refusal {
    pub fn describe(&self) -> String {
        if self.not_installed {
            return format!(
                "the apiserver does not serve {} ({}): install its CRD with the operator's \
                 version (the chart installs it; with crds.install=false, kubectl apply \
                 --server-side -f crds/), then the watch resumes by itself",
                self.resource, self.message
            );
        }
        let scope = self.namespace.as_deref().map_or_else(
            || "cluster-wide".to_owned(),
            |ns| format!("in namespace {ns}"),
        );
        format!(
            "the apiserver does not let the operator {} {} {scope} ({}): grant its \
             ServiceAccount {} on {} there (the chart's RBAC), then the watch resumes by itself",
            self.verb,
            self.resource,
            self.message,
            if self.verb == "list" {
                "list and watch"
            } else {
                "watch"
            },
            self.resource,
        )
    }
}

/// A watch: its resource, and its namespace (None: cluster-wide).
type WatchKey = (&'static str, Option<String>);

/// The refused watches of this process.
#[derive(Debug, Clone, Default)]
pub struct WatchRefusals(Arc<Mutex<BTreeMap<WatchKey, Refusal>>>);

impl WatchRefusals {
    /// Passes a watcher's events through, recording a 403 and clearing it at the next event.
    pub fn track<K, S>(
        &self,
        resource: &'static str,
        namespace: Option<String>,
        events: S,
    ) -> impl Stream<Item = S::Item> + use<K, S>
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        let refusals = self.clone();
        events.inspect(move |event| {
            let key = (resource, namespace.clone());
            let mut map = refusals.0.lock().unwrap_or_else(|e| e.into_inner());
            match event.as_ref().err().and_then(forbidden) {
                Some((verb, code, message)) => {
                    let refusal = Refusal {
                        resource,
                        verb,
                        namespace: namespace.clone(),
                        message,
                        not_installed: code == 404,
                    };
                    if map.get(&key) != Some(&refusal) {
                        error!(problem = %refusal.describe(), "watch refused");
                    }
                    map.insert(key, refusal);
                }
                None if event.is_ok() => {
                    map.remove(&key);
                }
                None => {}
            }
        })
    }

    /// What a server in `namespace` reports while a watch it depends on is refused.
    pub fn blocking(&self, namespace: &str) -> Option<Invalid> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .find(|r| r.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .map(|refusal| Invalid {
                reason: if refusal.not_installed {
                    CRD_NOT_INSTALLED
                } else {
                    PERMISSION_DENIED
                },
                message: refusal.describe(),
            })
    }

    /// True while an FtpServer watch is refused: the operator cannot see the servers it should
    /// reconcile (`/readyz` fails).
    pub fn servers_refused(&self) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.keys().any(|(resource, _)| *resource == FTP_SERVERS)
    }
}

/// The verb, the code and the apiserver's words, when `error` is a 403 or (a resource whose CRD
/// is not installed, such as an FtpUser CRD older installs lack) a 404.
fn forbidden(error: &watcher::Error) -> Option<(&'static str, u16, String)> {
    let (verb, status) = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status)) => ("list", status),
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => ("watch", status),
        watcher::Error::WatchError(status) => ("watch", status),
        _ => return None,
    };
    [403, 404]
        .contains(&status.code)
        .then(|| (verb, status.code, status.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use k8s_openapi::api::core::v1::Service;

    fn refused(code: u16) -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": "Forbidden",
                "message": "services is forbidden: User \"system:serviceaccount:ops:op\" cannot list resource \"services\"",
            }))
            .unwrap(),
        ))
    }

    #[tokio::test]
    async fn a_refused_list_stalls_the_servers_of_its_namespace_until_the_watch_resumes() {
        let refusals = WatchRefusals::default();
        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> = vec![Err(refused(403))];
        refusals
            .track("services", Some("team-a".into()), stream::iter(events))
            .collect::<Vec<_>>()
            .await;
        let invalid = refusals.blocking("team-a").unwrap();
        assert_eq!(invalid.reason, "PermissionDenied");
        assert!(
            invalid
                .message
                .contains("does not let the operator list services in namespace team-a")
                && invalid
                    .message
                    .contains("grant its ServiceAccount list and watch"),
            "{}",
            invalid.message
        );
        assert_eq!(refusals.blocking("team-b"), None);
        assert!(!refusals.servers_refused());

        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> =
            vec![Ok(watcher::Event::Init)];
        refusals
            .track("services", Some("team-a".into()), stream::iter(events))
            .collect::<Vec<_>>()
            .await;
        assert_eq!(refusals.blocking("team-a"), None);
    }

    #[tokio::test]
    async fn other_errors_are_not_refusals_and_a_refused_server_watch_is_seen() {
        let refusals = WatchRefusals::default();
        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> = vec![Err(refused(500))];
        refusals
            .track("services", None, stream::iter(events))
            .collect::<Vec<_>>()
            .await;
        assert_eq!(refusals.blocking("x"), None);
        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> = vec![Err(refused(403))];
        refusals
            .track(FTP_SERVERS, None, stream::iter(events))
            .collect::<Vec<_>>()
            .await;
        assert!(refusals.servers_refused());
        // Cluster-wide: every namespace's servers are blocked.
        assert!(refusals.blocking("x").is_some());
    }

    #[tokio::test]
    async fn a_resource_without_its_crd_stalls_the_servers_saying_to_install_it() {
        let refusals = WatchRefusals::default();
        let events: Vec<Result<watcher::Event<Service>, watcher::Error>> = vec![Err(refused(404))];
        refusals
            .track("ftpusers.ftpoperator.dev", None, stream::iter(events))
            .collect::<Vec<_>>()
            .await;
        let invalid = refusals.blocking("x").unwrap();
        assert_eq!(invalid.reason, "CrdNotInstalled");
        assert!(
            invalid
                .message
                .starts_with("the apiserver does not serve ftpusers.ftpoperator.dev")
                && invalid.message.contains("install its CRD"),
            "{}",
            invalid.message
        );
    }
}
