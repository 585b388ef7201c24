//! Which FtpServers keep node tuning: those that need node sysctls, and deleted ones whose
//! finalizer still waits for their nodes to be restored. The DaemonSet's controller, the
//! uninstall hook and the FtpServer reconcile all ask the same question here.

use kube::{Resource, ResourceExt};

use crate::api::FtpServer;
use crate::keepalive::needs_node_sysctls;

/// Held by FtpServers that need node sysctls until no node is tuned for them any more.
pub const NODE_KEEPALIVE_FINALIZER: &str = "ftpoperator.dev/node-keepalive";

pub fn has_finalizer(server: &FtpServer) -> bool {
    server
        .finalizers()
        .iter()
        .any(|f| f == NODE_KEEPALIVE_FINALIZER)
}

/// Whether this server keeps the tuner DaemonSet alive: it needs node sysctls, or it is being
/// deleted and its finalizer still waits for the nodes to be restored.
pub fn keeps_tuner(server: &FtpServer) -> bool {
    if server.meta().deletion_timestamp.is_some() {
        has_finalizer(server)
    } else {
        needs_node_sysctls(&server.spec)
    }
}

/// Whether any server but `leaving` keeps the tuner DaemonSet alive.
pub fn tuner_needed<'a>(
    servers: impl IntoIterator<Item = &'a FtpServer>,
    leaving: Option<&FtpServer>,
) -> bool {
    let leaving = leaving.map(|s| (s.namespace(), s.name_any()));
    servers
        .into_iter()
        .filter(|s| Some((s.namespace(), s.name_any())) != leaving)
        .any(keeps_tuner)
}

/// FtpServers for the tests of both sides of node keepalive: the tuner's demand here and the
/// FtpServer's finalizer in `controller::node_keepalive`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::NODE_KEEPALIVE_FINALIZER;
    use crate::api::FtpServer;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A server in namespace `ftp`; `spec` is appended to the spec's flow mapping.
    pub fn server(name: &str, spec: &str) -> FtpServer {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: ftp}}\nspec: {{passivePorts: {{min: 20000, max: 20001}}{spec}}}"
        ))
        .unwrap()
    }

    /// The server being deleted, with or without the node-keepalive finalizer still on it.
    pub fn deleting(mut server: FtpServer, finalizer: bool) -> FtpServer {
        server.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        if finalizer {
            server.metadata.finalizers = Some(vec![NODE_KEEPALIVE_FINALIZER.to_owned()]);
        }
        server
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{deleting, server};
    use super::*;

    #[test]
    fn the_daemon_set_lives_while_a_server_needs_node_sysctls() {
        let plain = server("plain", "");
        let tuned = server("tuned", ", keepalive: {nodeSysctls: true}");
        let host = server("host", ", hostNetwork: true");
        assert!(!tuner_needed([&plain], None));
        assert!(tuner_needed([&plain, &tuned], None));
        assert!(tuner_needed([&host], None));
        // The last one leaving takes the DaemonSet with it.
        assert!(!tuner_needed([&plain, &tuned], Some(&tuned)));
        assert!(tuner_needed([&tuned, &host], Some(&tuned)));
        // A deleted server keeps it only while its finalizer waits for the nodes.
        assert!(tuner_needed([&deleting(tuned.clone(), true)], None));
        assert!(!tuner_needed([&deleting(tuned, false)], None));
    }
}
