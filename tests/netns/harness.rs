//! A lab: three network namespaces made by `scripts/netns-lb.sh` (client, balancer, server), our
//! `ftp-server` running in the server namespace, and curl run in the client namespace.
//!
//! Nothing here skips: without root or a needed tool the test fails and says what is missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ftp_operator::api::FtpServer;
use ftp_operator::controller::build::{DATA_DIR, USERS_DIR, USERS_KEY, desired_config_map};
use ftp_operator::controller::validate::validate_spec;
use ftp_operator::ftp::config::{CONFIG_FILE_NAME, Keepalive, PassiveRange, ServerConfig};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-lb.sh");
pub const FTP_SERVER: &str = env!("CARGO_BIN_EXE_ftp-server");

/// Addresses and ports fixed by scripts/netns-lb.sh (its defaults; `env` prints them).
pub const VIP: &str = "10.203.0.100";
pub const LB_CONTROL_PORT: u16 = 21;
pub const SERVER_CONTROL_PORT: u16 = 2121;
pub const PASSIVE: (u16, u16) = (30000, 30009);

pub const USER: &str = "tester";
pub const PASSWORD: &str = "slow-but-steady";

/// Fails the test, saying exactly what is missing, unless we are root and have every tool.
pub fn preflight() {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (network namespaces, nftables and sysctls need it)".to_string());
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("nft", "nftables"),
        ("curl", "curl"),
        ("sysctl", "procps"),
        ("sha256sum", "coreutils"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(format!("`{tool}` (Debian package {package})"));
        }
    }
    assert!(
        missing.is_empty(),
        "the netns tests cannot run; missing: {}. Run them as root (CI does); scripts/install-deps.sh installs the packages.",
        missing.join(", ")
    );
}

pub struct Lab {
    pub name: String,
    pub lb_timeout: u32,
    pub link_bytes_per_second: u64,
    pub dir: tempfile::TempDir,
    server: Option<Child>,
}

pub struct Transfer {
    pub exit_code: i32,
    /// What `curl -w` printed: the last reply code and the byte count.
    pub reply: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Lab {
    /// Creates the namespaces `ftpop-<pid>-<tag>-{client,balancer,server}`.
    /// `link_kbit`: the client's link rate, both directions.
    pub fn up(tag: &str, lb_timeout: u32, link_kbit: u32) -> Lab {
        preflight();
        let name = format!("ftpop-{}-{tag}", std::process::id());
        let out = Command::new(SCRIPT)
            .arg("up")
            .arg(&name)
            .env("LB_TIMEOUT", lb_timeout.to_string())
            .env("LINK_RATE", format!("{link_kbit}kbit"))
            .output()
            .expect("run scripts/netns-lb.sh");
        let lab = Lab {
            name,
            lb_timeout,
            link_bytes_per_second: u64::from(link_kbit) * 1000 / 8,
            dir: tempfile::Builder::new()
                .prefix("ftpop-netns-")
                .tempdir()
                .unwrap(),
            server: None,
        };
        assert!(
            out.status.success(),
            "netns-lb.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The model's premises, checked where they live.
        assert_eq!(
            lab.sysctl(
                "balancer",
                "net.netfilter.nf_conntrack_tcp_timeout_established"
            ),
            lb_timeout.to_string()
        );
        assert_eq!(
            lab.sysctl("balancer", "net.netfilter.nf_conntrack_tcp_loose"),
            "0"
        );
        assert_eq!(
            lab.sysctl("server", "net.ipv4.tcp_keepalive_time"),
            "7200",
            "the server namespace must keep the kernel default, so only the socket options can help"
        );
        fs::create_dir(lab.root()).unwrap();
        lab
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn exec(&self, role: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(SCRIPT);
        cmd.arg("exec").arg(&self.name).arg(role).args(args);
        cmd
    }

    pub fn sysctl(&self, role: &str, key: &str) -> String {
        let out = self.exec(role, &["sysctl", "-n", key]).output().unwrap();
        assert!(
            out.status.success(),
            "sysctl {key} in {role}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Packets of forgotten flows the balancer dropped so far.
    pub fn balancer_dropped(&self) -> u64 {
        let out = self
            .exec(
                "balancer",
                &["nft", "list", "chain", "inet", "ftpop_lb", "lb_forward"],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("ct state invalid"))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no invalid-drop counter in the balancer's rules:\n{text}"))
    }

    /// The configuration the server runs with, rendered by the controller's own builder
    /// (`desired_config_map`) for an FtpServer whose public address is the VIP, whose passive range
    /// is what the balancer forwards and whose balancer forgets after `LB_TIMEOUT` seconds. Only the
    /// pod's mount paths are mapped to the lab's directories, as the volumes would map them.
    /// `keepalive: None` turns keepalive off (`idle_seconds = 0`), which the controller itself never
    /// renders: that is the failure the tests must show.
    pub fn server_config(&self, keepalive: Option<Keepalive>) -> String {
        let on = keepalive.unwrap_or(Keepalive {
            idle_seconds: 1,
            interval_seconds: 1,
            probes: 5,
        });
        let yaml = format!(
            "apiVersion: ftpoperator.dev/v1alpha1
kind: FtpServer
metadata: {{name: netns, namespace: ftp, uid: 0b7c1f4e-5d7e-4a43-9d8e-6f0f6c1a2b3c}}
spec:
  publicAddress: \"{VIP}\"
  controlPort: {LB_CONTROL_PORT}
  passivePorts: {{min: {}, max: {}}}
  keepalive: {{idleSeconds: {}, intervalSeconds: {}, probes: {}}}
  loadBalancer: {{provider: generic, idleTimeoutSeconds: {}}}
  users: {{secretRef: {{name: ftp-users}}}}
",
            PASSIVE.0, PASSIVE.1, on.idle_seconds, on.interval_seconds, on.probes, self.lb_timeout
        );
        let server: FtpServer = serde_yaml::from_str(&yaml).expect("the test's FtpServer parses");
        let valid = validate_spec(&server.spec)
            .unwrap_or_else(|e| panic!("the controller rejects the test's FtpServer: {e:?}"));
        let config_map =
            desired_config_map(&server, &valid, server.spec.public_address.as_deref(), None);
        let text = &config_map.data.as_ref().expect("ConfigMap data")[CONFIG_FILE_NAME];
        let mut config: ServerConfig = toml::from_str(text).expect("the rendered config parses");
        // What the controller decided must be what the balancer forwards.
        assert_eq!(
            config.public_address.as_deref(),
            Some(VIP),
            "advertised address"
        );
        assert_eq!(
            config.passive_ports,
            PassiveRange::new(PASSIVE.0, PASSIVE.1).unwrap()
        );
        assert_eq!(
            config.listen.port(),
            SERVER_CONTROL_PORT,
            "the balancer DNATs 21 to this port"
        );
        assert_eq!(config.keepalive, on);
        // The pod's volumes, mapped to the lab.
        assert_eq!(config.root, Path::new(DATA_DIR));
        config.root = self.root();
        assert_eq!(
            config.users_file.as_deref(),
            Some(Path::new(USERS_DIR).join(USERS_KEY).as_path())
        );
        config.users_file = Some(self.dir.path().join("users"));
        if keepalive.is_none() {
            config.keepalive.idle_seconds = 0;
        }
        config.validate().expect("the lab's config is valid");
        config.render()
    }

    /// Starts our ftp-server in the server namespace and waits until it answers through the VIP.
    pub fn start_server(&mut self, keepalive: Option<Keepalive>) {
        let hash = Command::new(FTP_SERVER)
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
                child.wait_with_output()
            })
            .expect("ftp-server hash-password");
        assert!(hash.status.success(), "ftp-server hash-password failed");
        let hash = String::from_utf8(hash.stdout).unwrap();
        fs::write(
            self.dir.path().join("users"),
            format!("{USER}:{}:rw\n", hash.trim()),
        )
        .unwrap();
        let config_path = self.dir.path().join("ftp-server.toml");
        fs::write(&config_path, self.server_config(keepalive)).unwrap();
        let log = fs::File::create(self.dir.path().join("ftp-server.log")).unwrap();
        let child = self
            .exec(
                "server",
                &[FTP_SERVER, "--config", config_path.to_str().unwrap()],
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ftp-server in the server namespace");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = self.curl(
                &["-m", "3", "--list-only", &self.url("")],
                Duration::from_secs(5),
            );
            if t.exit_code == 0 {
                return;
            }
            if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                panic!("ftp-server exited with {status}:\n{}", self.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "ftp-server does not answer through the VIP: {}\n{}",
                t.stderr,
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("ftp-server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ftp://{VIP}:{LB_CONTROL_PORT}/{path}")
    }

    /// Runs curl in the client namespace as the test user; `limit` bounds the whole run.
    pub fn curl(&self, args: &[&str], limit: Duration) -> Transfer {
        let secs = limit.as_secs().max(1).to_string();
        let user = format!("{USER}:{PASSWORD}");
        let mut all = vec![
            "curl",
            "-sS",
            "--user",
            &user,
            "-m",
            &secs,
            "-w",
            "%{response_code} %{size_download} %{size_upload}",
        ];
        all.extend_from_slice(args);
        let started = Instant::now();
        let Output {
            status,
            stdout,
            stderr,
        } = self.exec("client", &all).output().expect("run curl");
        Transfer {
            exit_code: status.code().unwrap_or(-1),
            reply: String::from_utf8_lossy(&stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            elapsed: started.elapsed(),
        }
    }

    /// How long `bytes` take on the client's link.
    pub fn link_time(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.link_bytes_per_second as f64)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Removes exactly the three namespaces and anything still running in them.
        let _ = Command::new(SCRIPT).arg("down").arg(&self.name).status();
    }
}

/// A file of `len` pseudo-random bytes (xorshift; no compression anywhere can shorten it).
pub fn write_random_file(path: &Path, len: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    fs::write(path, data).unwrap();
}

pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
