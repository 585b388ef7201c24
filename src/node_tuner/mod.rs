//! Node keepalive tuning: everything about setting `net.ipv4.tcp_keepalive_{time,intvl,probes}`
//! on nodes whose FtpServers need it (`keepalive.nodeSysctls` or `hostNetwork`) and restoring the
//! originals when none does. The agent (`ftp-operator node-tuner run`) runs in a DaemonSet that a
//! controller of its own keeps present exactly while some FtpServer needs it; the Helm pre-delete
//! hook (`ftp-operator node-tuner uninstall`) puts every node back. The FtpServer reconcile's
//! side (its finalizer and status) is [`crate::controller::node_keepalive`].
//!
//! Net sysctls belong to a network namespace: the agent runs on the host network, so writing
//! `/proc/sys/net/ipv4` there changes the node's values (and nothing in any pod's namespace).
//!
//! The agent:
//! - [`sysctl`]: reading and writing the files under a root directory.
//! - [`plan`]: what to write and what to keep on record; pure.
//! - [`selection`]: which servers' pods may run on a node and the merged values they want.
//! - [`report`]: the Node annotations the agent writes and the FtpServer reconcile summarises.
//! - [`oneshot`]: `apply`/`restore` with a state file, no API.
//! - [`agent`]: the watch-and-resync loop.
//!
//! Its DaemonSet and uninstall:
//! - [`demand`]: which FtpServers keep the DaemonSet, and the finalizer they hold.
//! - [`daemon_set`]: the DaemonSet, a pure function of its inputs.
//! - [`controller`]: keeps it present exactly while some FtpServer needs node sysctls.
//! - [`uninstall`]: the Helm pre-delete hook.

pub mod agent;
pub mod controller;
pub mod daemon_set;
pub mod demand;
pub mod oneshot;
pub mod plan;
pub mod report;
pub mod selection;
pub mod sysctl;
pub mod uninstall;

pub use daemon_set::{NODE_TUNER_NAME, NODE_TUNER_SERVICE_ACCOUNT};
pub use sysctl::{DEFAULT_SYSCTL_ROOT, KeepaliveSysctls, SysctlRoot};

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
