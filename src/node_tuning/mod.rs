//! Node keepalive tuning, cluster-wide: one controller for the one tuner DaemonSet, and the
//! uninstall step that puts every node back. The agent itself is [`crate::node`]; the
//! per-server side (finalizer, status) is [`crate::controller::node_tuner`].
//!
//! - [`daemon_set`]: the DaemonSet, a pure function of its inputs.
//! - [`controller`]: keeps it present exactly while some FtpServer needs node sysctls.
//! - [`uninstall`]: `ftp-operator node-tuner uninstall`, the Helm pre-delete hook.

pub mod controller;
pub mod daemon_set;
pub mod uninstall;

pub use daemon_set::{NODE_TUNER_NAME, NODE_TUNER_SERVICE_ACCOUNT};

/// The ConfigMap the chart renders (with `nodeTuning.enabled`) in the operator's namespace. It
/// carries the DaemonSet's install-time inputs, and the DaemonSet is owned by it.
///
/// Why an owner reference to a chart-rendered ConfigMap rather than rendering the DaemonSet in
/// the chart: the DaemonSet must exist only while some FtpServer needs node sysctls (a node
/// agent with hostNetwork on every node is not something to run idle), which the chart cannot
/// know; and rather than the operator Deployment, because the ConfigMap also carries the inputs
/// (its changes wake the controller) and is not replaced by a rollout. `helm uninstall` deletes
/// the ConfigMap, and the garbage collector deletes the DaemonSet with it.
pub const NODE_TUNING_CONFIG_MAP: &str = "ftp-operator-node-tuner";
/// The ConfigMap key holding extra tolerations for the agents, a JSON list.
pub const TOLERATIONS_KEY: &str = "tolerations.json";
