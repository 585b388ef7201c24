//! SFTP against the real `ftp-server` on loopback, driven by OpenSSH's `sftp` (batch mode) and by
//! paramiko and asyncssh: the same users, permissions, confinement and lockout as FTP.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Options, Server, free_port, hash_password, require};
use serde_json::Value;

/// Debian's interpreter, where python3-paramiko is installed.
const PYTHON: &str = "/usr/bin/python3";

fn paramiko_script() -> String {
    format!(
        "{}/tests/clients/paramiko_sftp.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn require_paramiko() {
    let found = Command::new(PYTHON)
        .args(["-c", "import paramiko"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "paramiko is not installed for {PYTHON}: run `sudo bash scripts/install-deps.sh` \
         (python3-paramiko in scripts/deps/ftp.apt)"
    );
}

/// The files a test server's SFTP side is made from: host keys, a client key, the users file
/// (with homes) and the users' authorized keys beside it.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        require("ssh-keygen");
        let keys = Keys {
            dir: tempfile::tempdir().unwrap(),
        };
        for (kind, file) in [("ed25519", "host_ed25519"), ("ecdsa-p256", "host_ecdsa")] {
            let output = Command::new(BIN)
                .args(["generate-host-key", "--type", kind, "--out"])
                .arg(keys.path(file))
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
        }
        let output = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(keys.path("client"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        // Default-cost hashes, as `ftp-server hash-password` makes them for users.
        let users = format!(
            "alice:{}:rw:alice\nreader:{}:ro:alice\n",
            hash_password("wonderland"),
            hash_password("books")
        );
        std::fs::write(keys.path("users"), users).unwrap();
        std::fs::copy(keys.path("client.pub"), keys.path("alice.authorized_keys")).unwrap();
        keys
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

struct SftpServer {
    server: Server,
    port: u16,
}

fn sftp_toml(keys: &Keys, port: u16, extra: &str) -> String {
    format!(
        "users_file = {:?}\n{extra}\n[sftp]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
         host_key_files = [{:?}, {:?}]\n",
        keys.path("users"),
        keys.path("host_ed25519"),
        keys.path("host_ecdsa"),
    )
}

/// A server with SFTP on `port`; `extra` is TOML placed before the `[sftp]` table.
fn start_on(keys: &Keys, port: u16, extra: &str, root: tempfile::TempDir) -> SftpServer {
    let server = Server::start_in(
        Options {
            config_toml: Some(sftp_toml(keys, port, extra)),
            ..Default::default()
        },
        root,
    );
    SftpServer { server, port }
}

fn start(keys: &Keys, extra: &str) -> SftpServer {
    start_on(keys, free_port(), extra, tempfile::tempdir().unwrap())
}

impl SftpServer {
    fn home(&self, name: &str) -> PathBuf {
        self.server.path("alice").join(name)
    }

    /// OpenSSH's `sftp` in batch mode with alice's key; `known_hosts` is checked strictly when
    /// `strict`, else filled on first use.
    fn openssh(&self, keys: &Keys, batch: &str, strict: bool) -> Output {
        require("sftp");
        let mut child = Command::new("sftp")
            .args(["-b", "-", "-P", &self.port.to_string(), "-i"])
            .arg(keys.path("client"))
            .args(openssh_options(keys, strict))
            .arg("alice@127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs the paramiko client; its JSON answer.
    fn paramiko(&self, user: &str, auth: (&str, &str), mode: &[&str], input: &str) -> Value {
        self.paramiko_via(None, user, auth, mode, input)
    }

    /// The same, sending `proxy_header` (a PROXY protocol v1 line) first when given.
    fn paramiko_via(
        &self,
        proxy_header: Option<&str>,
        user: &str,
        auth: (&str, &str),
        mode: &[&str],
        input: &str,
    ) -> Value {
        require_paramiko();
        let mut command = Command::new(PYTHON);
        if let Some(header) = proxy_header {
            command.env("PROXY_HEADER", header);
        }
        let mut child = command
            .arg(paramiko_script())
            .args(["127.0.0.1", &self.port.to_string(), user, auth.0, auth.1])
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "paramiko client failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.server.log()
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "paramiko printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Runs `ops` (a JSON list of operations) as alice with her password.
    fn ops(&self, ops: Value) -> Vec<Value> {
        self.ops_as("alice", "wonderland", ops)
    }

    fn ops_as(&self, user: &str, password: &str, ops: Value) -> Vec<Value> {
        let answer = self.paramiko(user, ("password", password), &["ops"], &ops.to_string());
        match answer {
            Value::Array(results) => results,
            other => panic!("{user} could not log in: {other}\n{}", self.server.log()),
        }
    }

    fn metric(&self, series: &str) -> u64 {
        let text = self.server.http_get("/metrics").1;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
    }
}

fn openssh_options(keys: &Keys, strict: bool) -> Vec<String> {
    let known_hosts = keys.path("known_hosts");
    [
        "-o",
        "BatchMode=yes",
        "-o",
        if strict {
            "StrictHostKeyChecking=yes"
        } else {
            "StrictHostKeyChecking=accept-new"
        },
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o",
        "IdentitiesOnly=yes",
    ]
    .map(String::from)
    .to_vec()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(result: &Value) -> bool {
    result["ok"] == Value::Bool(true)
}

fn errno(result: &Value) -> i64 {
    result["errno"].as_i64().unwrap_or(-1)
}

fn write_random(path: &Path, len: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[1])
        .collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

#[test]
fn openssh_key_login_puts_gets_lists_renames_and_removes() {
    let keys = Keys::new();
    let server = start(&keys, "");
    let local = tempfile::tempdir().unwrap();
    let sent = write_random(&local.path().join("report.bin"), 3 * 1024 * 1024 + 17);
    let batch = format!(
        "pwd\nmkdir incoming\nput {0}/report.bin incoming/report.bin\nls -l incoming\n\
         get incoming/report.bin {0}/back.bin\nrename incoming/report.bin incoming/final.bin\n\
         ls incoming\nmkdir old\nrmdir old\nput {0}/report.bin gone.bin\nrm gone.bin\n",
        local.path().display()
    );
    let output = server.openssh(&keys, &batch, false);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}\n{}", server.server.log());
    assert!(shown.contains("Remote working directory: /"), "{shown}");
    assert!(shown.contains("report.bin"), "{shown}");
    assert_eq!(std::fs::read(local.path().join("back.bin")).unwrap(), sent);
    // The files are where FTP sees them: in alice's home beneath the root.
    assert_eq!(
        std::fs::read(server.home("incoming/final.bin")).unwrap(),
        sent
    );
    assert!(!server.home("incoming/report.bin").exists());
    assert!(!server.home("old").exists());
    assert!(!server.home("gone.bin").exists());
    let mut ftp = server.server.raw();
    ftp.login("alice", "wonderland");
    ftp.expect("SIZE incoming/final.bin", "213");
    assert_eq!(
        server.metric("ftp_sftp_logins_total{method=\"publickey\",result=\"ok\"}"),
        1
    );
    assert_eq!(
        server.metric("ftp_transfers_total{direction=\"upload\",result=\"ok\"}"),
        2
    );
}

#[test]
fn reget_and_reput_resume_partial_files() {
    let keys = Keys::new();
    let server = start(&keys, "");
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(server.home("")).unwrap();
    let remote = write_random(&server.home("remote.bin"), 2 * 1024 * 1024);
    std::fs::write(local.path().join("remote.bin"), &remote[..700_000]).unwrap();
    let upload = write_random(&local.path().join("upload.bin"), 1024 * 1024 + 5);
    std::fs::write(server.home("upload.bin"), &upload[..300_000]).unwrap();
    let batch = format!(
        "reget remote.bin {0}/remote.bin\nreput {0}/upload.bin upload.bin\n",
        local.path().display()
    );
    let output = server.openssh(&keys, &batch, false);
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output),
        server.server.log()
    );
    assert_eq!(
        std::fs::read(local.path().join("remote.bin")).unwrap(),
        remote
    );
    // reput sends only what follows the remote file's 300 000 bytes: a server that truncated
    // would leave a file without them.
    assert_eq!(std::fs::read(server.home("upload.bin")).unwrap(), upload);
    let sent = server.metric("ftp_bytes_total{direction=\"upload\"}");
    assert_eq!(sent, (upload.len() - 300_000) as u64);
}

/// A login with a byte quota resumes an upload as any other (its body writes in order, from
/// the file's end), and the quota still counts the kept bytes: a resume that would cross it
/// fails and leaves the partial file as it was.
#[test]
fn reput_resumes_for_a_login_with_a_quota_and_the_quota_still_holds() {
    let keys = Keys::new();
    let hash = hash_password("wonderland");
    std::fs::write(
        keys.path("users"),
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nhome = \"alice\"\n\
             quota_bytes = 1500000\n"
        ),
    )
    .unwrap();
    let server = start(&keys, "");
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(server.home("")).unwrap();
    let upload = write_random(&local.path().join("upload.bin"), 1024 * 1024 + 5);
    std::fs::write(server.home("upload.bin"), &upload[..300_000]).unwrap();
    let second = write_random(&local.path().join("second.bin"), 500_000);
    std::fs::write(server.home("second.bin"), &second[..100_000]).unwrap();
    let reput = |name: &str| {
        server.openssh(
            &keys,
            &format!("reput {}/{name} {name}\n", local.path().display()),
            false,
        )
    };
    let output = reput("upload.bin");
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output),
        server.server.log()
    );
    assert_eq!(std::fs::read(server.home("upload.bin")).unwrap(), upload);
    assert_eq!(
        server.metric("ftp_bytes_total{direction=\"upload\"}"),
        (upload.len() - 300_000) as u64
    );
    // 1 148 581 stored; resuming the second file from 100 000 of its 500 000 bytes would end at
    // 1 548 581, past the quota.
    let output = reput("second.bin");
    assert!(
        !output.status.success(),
        "a resume past the quota was accepted"
    );
    assert_eq!(
        std::fs::read(server.home("second.bin")).unwrap(),
        &second[..100_000]
    );
}

#[test]
fn password_logins_get_the_users_file_permissions() {
    let keys = Keys::new();
    let server = start(&keys, "");
    std::fs::create_dir_all(server.home("")).unwrap();
    std::fs::write(server.home("shared.txt"), "for readers").unwrap();
    let results = server.ops_as(
        "reader",
        "books",
        serde_json::json!([
            ["read", "shared.txt"],
            ["listdir", "."],
            ["write", "new.txt", "x"],
            ["mkdir", "dir"],
            ["rename", "shared.txt", "moved.txt"],
            ["remove", "shared.txt"],
        ]),
    );
    assert_eq!(results[0]["value"], "for readers", "{results:?}");
    assert_eq!(results[1]["value"], serde_json::json!(["shared.txt"]));
    for refused in &results[2..] {
        assert_eq!(errno(refused), 13, "{results:?}");
    }
    assert!(server.home("shared.txt").exists() && !server.home("new.txt").exists());
    let results = server.ops(serde_json::json!([
        ["write", "new.txt", "from alice"],
        ["rename", "shared.txt", "moved.txt"],
        ["rename", "new.txt", "moved.txt"],
    ]));
    assert!(ok(&results[0]) && ok(&results[1]), "{results:?}");
    // SFTP v3's rename never replaces a name that exists.
    assert!(!ok(&results[2]), "{results:?}");
    assert_eq!(
        std::fs::read_to_string(server.home("new.txt")).unwrap(),
        "from alice"
    );
    let wrong = server.paramiko("alice", ("password", "guess"), &["ops"], "[]");
    assert!(wrong["connect_error"].is_string(), "{wrong}");
    assert_eq!(
        server.metric("ftp_sftp_logins_total{method=\"password\",result=\"failed\"}"),
        1
    );
    assert_eq!(server.metric("ftp_logins_total{result=\"ok\"}"), 2);
}

#[test]
fn links_cannot_be_made_and_links_out_of_the_home_lead_nowhere() {
    let keys = Keys::new();
    let server = start(&keys, "");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::create_dir_all(server.home("dir")).unwrap();
    std::fs::write(server.home("dir/inner.txt"), "inside").unwrap();
    std::os::unix::fs::symlink(outside.path(), server.home("out")).unwrap();
    std::os::unix::fs::symlink("dir", server.home("inside")).unwrap();
    let results = server.ops(serde_json::json!([
        ["read", "inside/inner.txt"],
        ["symlink", "dir/inner.txt", "made-link"],
        ["read", "out/secret"],
        ["stat", "out/secret"],
        ["listdir", "out"],
        ["write", "out/new", "x"],
        ["mkdir", "out/made"],
        ["rename", "out/secret", "taken"],
        ["remove", "out/secret"],
        ["rmdir", "out/sub"],
    ]));
    // A link inside the home is followed, as over FTP.
    assert_eq!(results[0]["value"], "inside", "{results:?}");
    assert!(!ok(&results[1]), "{results:?}");
    assert!(std::fs::symlink_metadata(server.home("made-link")).is_err());
    for (index, result) in results.iter().enumerate().skip(2) {
        assert!(
            !ok(result),
            "operation {index} went through the link: {results:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "outside"
    );
    assert!(outside.path().join("sub").is_dir());
    let mut names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["secret", "sub"]);
}

#[test]
fn dot_dot_and_absolute_paths_stay_in_the_home() {
    let keys = Keys::new();
    let server = start(&keys, "");
    std::fs::create_dir_all(server.home("")).unwrap();
    std::fs::write(server.server.path("secret.txt"), "beside the home").unwrap();
    std::fs::create_dir(server.server.path("other")).unwrap();
    let results = server.ops(serde_json::json!([
        ["normalize", "../../.."],
        ["read", "../secret.txt"],
        ["read", "/../secret.txt"],
        ["stat", "../secret.txt"],
        ["listdir", "../.."],
        ["write", "../escaped.txt", "x"],
        ["write", "/../../escaped-abs.txt", "x"],
        ["mkdir", "../made"],
        ["rename", "../secret.txt", "mine.txt"],
        ["remove", "../secret.txt"],
        ["rmdir", "../other"],
        ["read", "/etc/passwd"],
    ]));
    assert_eq!(results[0]["value"], "/", "{results:?}");
    for index in [1, 2, 3, 8, 9, 10, 11] {
        assert_eq!(errno(&results[index]), 2, "operation {index}: {results:?}");
    }
    // `..` at the top stays at the top: these land in the home itself.
    assert_eq!(results[4]["value"], serde_json::json!([]), "{results:?}");
    assert!(
        ok(&results[5]) && ok(&results[6]) && ok(&results[7]),
        "{results:?}"
    );
    assert!(server.home("escaped.txt").exists() && server.home("escaped-abs.txt").exists());
    assert!(server.home("made").is_dir());
    assert_eq!(
        std::fs::read_to_string(server.server.path("secret.txt")).unwrap(),
        "beside the home"
    );
    assert!(server.server.path("other").is_dir());
    assert!(!server.server.path("escaped.txt").exists());
    assert!(!server.server.path("made").exists());
}

#[test]
fn wrong_passwords_lock_out_sftp_and_ftp_alike() {
    let keys = Keys::new();
    let server = start(
        &keys,
        "[limits]\nlogin_failure_delay_millis = 10\nlogin_failures_before_lockout = 3\n\
         lockout_seconds = 60\n",
    );
    for guess in ["guess1", "guess2", "guess3"] {
        let answer = server.paramiko("alice", ("password", guess), &["ops"], "[]");
        assert!(answer["connect_error"].is_string(), "{answer}");
    }
    // Locked now: the right password, a key, and FTP from this address are all refused.
    let answer = server.paramiko("alice", ("password", "wonderland"), &["ops"], "[]");
    assert!(answer["connect_error"].is_string(), "{answer}");
    let key = keys.path("client");
    let answer = server.paramiko("alice", ("key", key.to_str().unwrap()), &["ops"], "[]");
    assert!(answer["connect_error"].is_string(), "{answer}");
    let mut ftp = server.server.raw();
    let reply = ftp.cmd("USER alice");
    assert!(reply.starts_with("421"), "{reply:?}");
    assert_eq!(
        server.metric("ftp_sftp_logins_total{method=\"password\",result=\"failed\"}"),
        3
    );
    assert!(server.metric("ftp_sftp_logins_total{method=\"password\",result=\"locked\"}") >= 1);
    assert!(server.metric("ftp_lockouts_total{subject=\"network\"}") >= 1);
}

#[test]
fn twenty_sessions_of_one_user_at_once() {
    let keys = Keys::new();
    let server = start(&keys, "");
    let answer = server.paramiko(
        "alice",
        ("password", "wonderland"),
        &["concurrent", "20"],
        "",
    );
    assert_eq!(answer["intact"], 20, "{answer}\n{}", server.server.log());
    let uploaded = std::fs::read_dir(server.home("")).unwrap().count();
    assert_eq!(uploaded, 20);
}

#[test]
fn a_malformed_packet_ends_only_its_own_session() {
    let keys = Keys::new();
    let server = start(&keys, "");
    require("sftp");
    let local = tempfile::tempdir().unwrap();
    let sent = write_random(&local.path().join("a.bin"), 100_000);
    // A well-behaved session stays open while the broken ones are ended.
    let mut good = Command::new("sftp")
        .args(["-b", "-", "-P", &server.port.to_string(), "-i"])
        .arg(keys.path("client"))
        .args(openssh_options(&keys, false))
        .arg("alice@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = good.stdin.take().unwrap();
    writeln!(stdin, "put {}/a.bin a.bin", local.path().display()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.home("a.bin").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = keys.path("client");
    for mode in ["malformed", "oversized"] {
        let answer = server.paramiko("alice", ("key", key.to_str().unwrap()), &[mode], "");
        assert_eq!(answer["ended"], true, "{mode}: {answer}");
    }
    writeln!(stdin, "get a.bin {}/b.bin", local.path().display()).unwrap();
    drop(stdin);
    let output = good.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(std::fs::read(local.path().join("b.bin")).unwrap(), sent);
    assert_eq!(server.metric("ftp_sftp_protocol_errors_total"), 2);
}

#[test]
fn the_host_key_is_the_same_after_a_restart_with_the_same_key_files() {
    let keys = Keys::new();
    let port = free_port();
    let first = start_on(&keys, port, "", tempfile::tempdir().unwrap());
    let output = first.openssh(&keys, "pwd\n", false);
    assert!(output.status.success(), "{}", text(&output));
    let password = ("password", "wonderland");
    let key_before = first.paramiko("alice", password, &["hostkey"], "");
    drop(first);
    let second = start_on(&keys, port, "", tempfile::tempdir().unwrap());
    let output = second.openssh(&keys, "pwd\n", true);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        second.paramiko("alice", password, &["hostkey"], ""),
        key_before
    );
    drop(second);
    // New key files are a new identity, which a strict client refuses.
    let other = Keys::new();
    std::fs::copy(keys.path("known_hosts"), other.path("known_hosts")).unwrap();
    let third = start_on(&other, port, "", tempfile::tempdir().unwrap());
    let output = third.openssh(&other, "pwd\n", true);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&output)
    );
}

#[test]
fn behind_a_proxy_protocol_balancer_the_client_address_is_the_headers() {
    let keys = Keys::new();
    let server = start(&keys, "proxy_protocol_from = [\"127.0.0.0/8\"]\n");
    let key = keys.path("client");
    let auth = ("key", key.to_str().unwrap());
    let header = format!("PROXY TCP4 203.0.113.9 127.0.0.1 40000 {}", server.port);
    let answer = server.paramiko_via(Some(&header), "alice", auth, &["ops"], "[]");
    assert_eq!(
        answer,
        serde_json::json!([]),
        "{answer}\n{}",
        server.server.log()
    );
    let log = server.server.log();
    assert!(
        log.lines().any(|line| line.contains("\"event\":\"login\"")
            && line.contains("\"client\":\"203.0.113.9\"")),
        "{log}"
    );
    // From a trusted source, a connection without a header is dropped (the harness's start-up
    // probe of the FTP port was one already).
    let refused = "ftp_sessions_refused_total{result=\"proxy_header\"}";
    let before = server.metric(refused);
    let answer = server.paramiko("alice", auth, &["ops"], "[]");
    assert!(answer["connect_error"].is_string(), "{answer}");
    assert_eq!(server.metric(refused), before + 1);
}

#[test]
fn at_shutdown_a_download_in_flight_completes_and_idle_sessions_are_closed() {
    use std::io::{BufRead, BufReader};
    let keys = Keys::new();
    let mut server = start(&keys, "");
    std::fs::create_dir_all(server.home("")).unwrap();
    let size = 8 * 1024 * 1024;
    write_random(&server.home("big.bin"), size);
    require_paramiko();
    let mut download = Command::new(PYTHON)
        .arg(paramiko_script())
        .args(["127.0.0.1", &server.port.to_string(), "alice"])
        .arg("key")
        .arg(keys.path("client"))
        .args(["slow_get", "big.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(download.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // An idle session: OpenSSH's sftp waiting for a command that never comes.
    let mut idle = Command::new("sftp")
        .args(["-b", "-", "-P", &server.port.to_string(), "-i"])
        .arg(keys.path("client"))
        .args(openssh_options(&keys, false))
        .arg("alice@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut idle_stdin = idle.stdin.take().unwrap();
    writeln!(idle_stdin, "pwd").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    server.server.terminate();
    let closed = "closing the idle SFTP session";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.server.log().contains(closed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        server.server.log().matches(closed).count(),
        1,
        "the idle session, and only it, is closed at shutdown\n{}",
        server.server.log()
    );
    // The idle client finds out at its next request.
    writeln!(idle_stdin, "ls").unwrap();
    drop(idle_stdin);
    assert!(!idle.wait().unwrap().success());
    // The download, stopped before, goes on and completes.
    writeln!(download.stdin.take().unwrap()).unwrap();
    let report: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(report["bytes"], size, "{report}");
    assert!(download.wait().unwrap().success());
    assert!(server.server.wait_exit(Duration::from_secs(10)));
}

#[test]
fn no_shell_no_commands_no_forwarding() {
    let keys = Keys::new();
    let server = start(&keys, "");
    require("ssh");
    for extra in [&["true"][..], &["-W", "127.0.0.1:22"][..]] {
        let output = Command::new("timeout")
            .args(["20", "ssh", "-p", &server.port.to_string(), "-i"])
            .arg(keys.path("client"))
            .args(openssh_options(&keys, false))
            .arg("alice@127.0.0.1")
            .args(extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{extra:?}: {}", text(&output));
    }
}

#[test]
fn asyncssh_by_key_and_by_password() {
    let keys = Keys::new();
    let server = start(&keys, "");
    std::fs::write(server.server.path("outside.txt"), "beside the home").unwrap();
    let found = Command::new(PYTHON)
        .args(["-W", "ignore", "-c", "import asyncssh"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "asyncssh is not installed for {PYTHON}: run `sudo bash scripts/install-deps.sh` \
         (python3-asyncssh in scripts/deps/ftp.apt)"
    );
    // asyncssh checks the host key strictly: give it the server's, as a user would.
    let output = server.openssh(&keys, "pwd\n", false);
    assert!(output.status.success(), "{}", text(&output));
    let key = keys.path("client");
    for auth in [("key", key.to_str().unwrap()), ("password", "wonderland")] {
        let local = tempfile::tempdir().unwrap();
        let sent = write_random(&local.path().join("up.bin"), 500_000);
        let output = Command::new(PYTHON)
            .arg(format!(
                "{}/tests/clients/asyncssh_sftp.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args([
                "127.0.0.1",
                &server.port.to_string(),
                "alice",
                auth.0,
                auth.1,
            ])
            .arg(keys.path("known_hosts"))
            .arg(local.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{auth:?}: {}\n{}",
            text(&output),
            server.server.log()
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            report["listing"],
            serde_json::json!(["renamed.bin"]),
            "{report}"
        );
        // SSH_FX_NO_SUCH_FILE: `..` stops at the home's top, where there is no such file.
        assert_eq!(report["read_outside"], 2, "{report}");
        assert_eq!(report["write_outside"], "done", "{report}");
        assert_eq!(
            report["after_remove"],
            serde_json::json!(["escaped.txt"]),
            "{report}"
        );
        assert_eq!(std::fs::read(local.path().join("down.bin")).unwrap(), sent);
        assert!(!server.server.path("escaped.txt").exists());
        std::fs::remove_file(server.home("escaped.txt")).unwrap();
    }
}

/// The users file's per-user rules hold for SFTP as for FTP: a disabled account and an address
/// outside `allowed_cidrs` get no session, and the byte quota refuses the upload that crosses it,
/// leaving nothing of it behind.
#[test]
fn per_user_rules_of_the_toml_users_file_hold_for_sftp() {
    let keys = Keys::new();
    let hash = hash_password("wonderland");
    std::fs::write(
        keys.path("users"),
        format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nhome = \"alice\"\n\
             quota_bytes = 10\n\n\
             [[user]]\nname = \"carol\"\npassword_hash = \"{hash}\"\nhome = \"alice\"\n\
             enabled = false\n\n\
             [[user]]\nname = \"dave\"\npassword_hash = \"{hash}\"\nhome = \"alice\"\n\
             allowed_cidrs = [\"198.51.100.0/24\"]\n"
        ),
    )
    .unwrap();
    let server = start(&keys, "");
    for user in ["carol", "dave"] {
        let answer = server.paramiko(user, ("password", "wonderland"), &["ops"], "[]");
        assert!(
            answer["connect_error"].is_string(),
            "{user}: {answer}\n{}",
            server.server.log()
        );
    }
    assert_eq!(
        server.metric("ftp_sftp_logins_total{method=\"password\",result=\"disabled\"}"),
        1
    );
    assert_eq!(
        server.metric("ftp_sftp_logins_total{method=\"password\",result=\"address\"}"),
        1
    );
    // dave's refusal is not a guess: nothing counts toward a lockout.
    assert_eq!(server.metric("ftp_lockouts_total{subject=\"network\"}"), 0);

    let results = server.ops(serde_json::json!([
        ["write", "small.txt", "12345"],
        ["write", "big.txt", "0123456789abcdef"],
        ["listdir", "."],
        ["read", "small.txt"],
    ]));
    assert!(ok(&results[0]), "{results:?}");
    assert!(
        !ok(&results[1]),
        "the upload past the quota was accepted: {results:?}"
    );
    assert_eq!(
        results[2]["value"],
        serde_json::json!(["small.txt"]),
        "{results:?}"
    );
    assert_eq!(results[3]["value"], "12345");
}

/// paramiko's `get` asks for every 32 KiB of a file at once: a thousand requests outstanding for
/// 32 MB, far more than the server reads ahead. The download still completes, byte for byte
/// (the session used to hang once russh's buffer of the channel's messages was full).
#[test]
fn a_download_with_a_thousand_reads_outstanding_completes() {
    let keys = Keys::new();
    let server = start(&keys, "");
    std::fs::create_dir_all(server.home("")).unwrap();
    write_random(&server.home("big.bin"), 32_000_000);
    let local = tempfile::tempdir().unwrap();
    let back = local.path().join("big.bin");
    require_paramiko();
    require("timeout");
    // A hung session would hang the test: `timeout` turns it into a failure.
    let output = Command::new("timeout")
        .arg("120")
        .arg(PYTHON)
        .arg(paramiko_script())
        .args([
            "127.0.0.1",
            &server.port.to_string(),
            "alice",
            "password",
            "wonderland",
        ])
        .args(["get", "big.bin"])
        .arg(&back)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "paramiko's get did not complete ({}): {}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.server.log()
    );
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(server.home("big.bin")).unwrap(),
        "the downloaded file differs"
    );
}
