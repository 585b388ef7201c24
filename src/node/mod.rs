//! The node keepalive tuner: `ftp-operator node-tuner`, run by a DaemonSet the controller
//! manages, sets `net.ipv4.tcp_keepalive_{time,intvl,probes}` on nodes whose FtpServers need it
//! (`keepalive.nodeSysctls` or `hostNetwork`) and restores the originals when none does.
//!
//! Net sysctls belong to a network namespace: the agent runs on the host network, so writing
//! `/proc/sys/net/ipv4` there changes the node's values (and nothing in any pod's namespace).
//!
//! - [`sysctl`]: reading and writing the files under a root directory.
//! - [`plan`]: what to write and what to keep on record; pure.
//! - [`selection`]: which servers' pods may run on a node and the merged values they want.
//! - [`report`]: the Node annotations the agent writes and the controller summarises.
//! - [`oneshot`]: `apply`/`restore` with a state file, no API.
//! - [`agent`]: the watch-and-resync loop.

pub mod agent;
pub mod oneshot;
pub mod plan;
pub mod report;
pub mod selection;
pub mod sysctl;

pub use sysctl::{DEFAULT_SYSCTL_ROOT, KeepaliveSysctls, SysctlRoot};
