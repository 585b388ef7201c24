//! Reading and writing the three keepalive sysctls under a root directory (`/proc/sys` on a
//! node, a temporary directory in tests).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the kernel exposes sysctls.
pub const DEFAULT_SYSCTL_ROOT: &str = "/proc/sys";

/// `net.ipv4.tcp_keepalive_{time,intvl,probes}`, as one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepaliveSysctls {
    pub time: u32,
    pub intvl: u32,
    pub probes: u32,
}

impl KeepaliveSysctls {
    /// What every new network namespace starts with.
    pub const KERNEL_DEFAULTS: KeepaliveSysctls = KeepaliveSysctls {
        time: 7200,
        intvl: 75,
        probes: 9,
    };

    /// The smallest of each field: a node tuned for several servers satisfies all of them.
    pub fn min(self, other: KeepaliveSysctls) -> KeepaliveSysctls {
        KeepaliveSysctls {
            time: self.time.min(other.time),
            intvl: self.intvl.min(other.intvl),
            probes: self.probes.min(other.probes),
        }
    }
}

impl std::fmt::Display for KeepaliveSysctls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tcp_keepalive_time={} tcp_keepalive_intvl={} tcp_keepalive_probes={}",
            self.time, self.intvl, self.probes
        )
    }
}

/// The `net/ipv4` sysctl files under a root directory.
#[derive(Debug, Clone)]
pub struct SysctlRoot {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds {text:?}, not a number")]
    Parse { path: PathBuf, text: String },
    #[error("cannot write {value} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: u32,
        source: std::io::Error,
    },
}

impl SysctlRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SysctlRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join("net/ipv4").join(name)
    }

    fn read_one(&self, name: &str) -> Result<u32, SysctlError> {
        let path = self.path(name);
        let text = std::fs::read_to_string(&path).map_err(|source| SysctlError::Read {
            path: path.clone(),
            source,
        })?;
        text.trim()
            .parse()
            .map_err(|_| SysctlError::Parse { path, text })
    }

    fn write_one(&self, name: &str, value: u32) -> Result<(), SysctlError> {
        let path = self.path(name);
        std::fs::write(&path, format!("{value}\n")).map_err(|source| SysctlError::Write {
            path,
            value,
            source,
        })
    }

    pub fn read(&self) -> Result<KeepaliveSysctls, SysctlError> {
        Ok(KeepaliveSysctls {
            time: self.read_one("tcp_keepalive_time")?,
            intvl: self.read_one("tcp_keepalive_intvl")?,
            probes: self.read_one("tcp_keepalive_probes")?,
        })
    }

    pub fn write(&self, values: KeepaliveSysctls) -> Result<(), SysctlError> {
        self.write_one("tcp_keepalive_time", values.time)?;
        self.write_one("tcp_keepalive_intvl", values.intvl)?;
        self.write_one("tcp_keepalive_probes", values.probes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary sysctl tree holding `values`, as `/proc/sys` would.
    pub fn fake_root(values: KeepaliveSysctls) -> (tempfile::TempDir, SysctlRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        let root = SysctlRoot::new(dir.path());
        root.write(values).unwrap();
        (dir, root)
    }

    #[test]
    fn writes_are_read_back() {
        let (_dir, root) = fake_root(KeepaliveSysctls::KERNEL_DEFAULTS);
        assert_eq!(root.read().unwrap(), KeepaliveSysctls::KERNEL_DEFAULTS);
        let tuned = KeepaliveSysctls {
            time: 30,
            intvl: 5,
            probes: 4,
        };
        root.write(tuned).unwrap();
        assert_eq!(root.read().unwrap(), tuned);
        assert_eq!(
            std::fs::read_to_string(root.root().join("net/ipv4/tcp_keepalive_time")).unwrap(),
            "30\n"
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysctlRoot::new(dir.path());
        let err = root.read().unwrap_err().to_string();
        assert!(err.contains("net/ipv4/tcp_keepalive_time"), "{err}");
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(dir.path().join("net/ipv4/tcp_keepalive_time"), "x\n").unwrap();
        let err = root.read().unwrap_err().to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn min_takes_each_field_separately() {
        let a = KeepaliveSysctls {
            time: 30,
            intvl: 10,
            probes: 4,
        };
        let b = KeepaliveSysctls {
            time: 60,
            intvl: 5,
            probes: 9,
        };
        assert_eq!(
            a.min(b),
            KeepaliveSysctls {
                time: 30,
                intvl: 5,
                probes: 4
            }
        );
    }
}
