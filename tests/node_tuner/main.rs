//! The node tuner inside a real network namespace: net sysctls are per namespace, so a tuner run
//! there must change that namespace's values, leave the caller's alone, and restore exactly what
//! it found. Needs root and `ip`; fails (never skips) without them.
//!
//! Run with `cargo test --features netns-tests --test node_tuner`.

use std::path::Path;
use std::process::{Command, Output};

const TUNER: &str = env!("CARGO_BIN_EXE_ftp-operator");

/// A network namespace, deleted when the test ends however it ends.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(suffix: &str) -> NetNs {
        assert!(
            rustix::process::geteuid().is_root(),
            "the node tuner namespace tests need root (to create network namespaces); run them as root"
        );
        let name = format!("ftpop-tuner-{}-{suffix}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run `ip` ({err}): install iproute2 (scripts/install-deps.sh)")
            });
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            text(&out.stderr)
        );
        NetNs { name }
    }

    /// Runs a command inside the namespace; panics with its output when it fails.
    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec runs");
        check(&out, args);
        text(&out.stdout)
    }

    /// The keepalive sysctls as a process inside the namespace reads them.
    fn keepalive(&self) -> (u32, u32, u32) {
        let read = |name: &str| {
            self.exec(&["cat", &format!("/proc/sys/net/ipv4/{name}")])
                .trim()
                .parse()
                .unwrap()
        };
        (
            read("tcp_keepalive_time"),
            read("tcp_keepalive_intvl"),
            read("tcp_keepalive_probes"),
        )
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The keepalive sysctls of the namespace this test runs in (the "host").
fn host_keepalive() -> (u32, u32, u32) {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new("/proc/sys/net/ipv4").join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        read("tcp_keepalive_time"),
        read("tcp_keepalive_intvl"),
        read("tcp_keepalive_probes"),
    )
}

/// The tuner's `apply` command line: idle, interval and probes (as the DaemonSet passes them),
/// and where it records the originals.
fn tuner_apply<'a>([idle, interval, probes]: [&'a str; 3], state: &'a str) -> [&'a str; 11] {
    [
        TUNER,
        "node-tuner",
        "apply",
        "--idle",
        idle,
        "--interval",
        interval,
        "--probes",
        probes,
        "--state-file",
        state,
    ]
}

#[test]
fn apply_sets_the_namespace_sysctls_and_restore_puts_back_the_kernel_defaults() {
    let ns = NetNs::new("apply");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keepalive-original.json");
    let state = state.to_str().unwrap();
    let host_before = host_keepalive();
    assert_eq!(
        ns.keepalive(),
        (7200, 75, 9),
        "a new namespace starts at the kernel defaults"
    );

    let applied = ns.exec(&tuner_apply(["30", "5", "4"], state));
    assert!(applied.contains("tcp_keepalive_time=30"), "{applied}");
    assert_eq!(ns.keepalive(), (30, 5, 4));
    assert_eq!(
        host_keepalive(),
        host_before,
        "the caller's namespace must not change"
    );
    let recorded = std::fs::read_to_string(state).unwrap();
    assert!(
        recorded.contains("7200"),
        "the originals are on record: {recorded}"
    );

    // A second apply (as after a hand change) keeps the first record, not the tuned values.
    ns.exec(&[
        "sh",
        "-c",
        "echo 999 > /proc/sys/net/ipv4/tcp_keepalive_time",
    ]);
    ns.exec(&tuner_apply(["20", "5", "4"], state));
    assert_eq!(ns.keepalive(), (20, 5, 4));

    ns.exec(&[TUNER, "node-tuner", "restore", "--state-file", state]);
    assert_eq!(ns.keepalive(), (7200, 75, 9));
    assert!(!Path::new(state).exists(), "restore deletes the record");
    assert_eq!(host_keepalive(), host_before);
}

#[test]
fn two_namespaces_are_tuned_independently() {
    let first = NetNs::new("one");
    let second = NetNs::new("two");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("one.json");
    first.exec(&tuner_apply(["45", "10", "6"], state.to_str().unwrap()));
    assert_eq!(first.keepalive(), (45, 10, 6));
    assert_eq!(second.keepalive(), (7200, 75, 9));
}

/// The DaemonSet runs the tuner as uid 0 with every capability dropped and no privilege
/// escalation; that must be enough to write the namespace's sysctls. A non-root user with no
/// capabilities must be refused, or this test would prove nothing.
#[test]
fn tuner_with_the_daemon_sets_privileges_only() {
    let ns = NetNs::new("caps");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let no_caps = [
        "setpriv",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
    ];
    let apply = tuner_apply(["30", "5", "4"], state);
    let as_root: Vec<&str> = no_caps.iter().chain(&apply).copied().collect();
    ns.exec(&as_root);
    assert_eq!(ns.keepalive(), (30, 5, 4));

    // Let nobody write its state file, so only the sysctl write can fail.
    let nobody_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        nobody_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let nobody_state = nobody_dir.path().join("state.json");
    let as_nobody: Vec<&str> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .into_iter()
    .chain(no_caps[1..].iter().copied())
    .chain(tuner_apply(
        ["20", "5", "4"],
        nobody_state.to_str().unwrap(),
    ))
    .collect();
    let refused = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(&as_nobody)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "an unprivileged user must not change sysctls"
    );
    assert!(
        text(&refused.stderr).contains("cannot write 20"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(ns.keepalive(), (30, 5, 4));

    let restore: Vec<&str> = no_caps
        .iter()
        .copied()
        .chain([TUNER, "node-tuner", "restore", "--state-file", state])
        .collect();
    ns.exec(&restore);
    assert_eq!(ns.keepalive(), (7200, 75, 9));
}
