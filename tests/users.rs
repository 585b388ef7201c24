//! The TOML form of the users file and each per-user limit, driven by real clients (curl,
//! Python's ftplib) and raw sockets against the debug ftp-server on loopback. Passwords are
//! hashed by `ftp-server hash-password` at its default cost. Each test fails without the limit it
//! names: loopback moves far more than 1 MiB/s, accepts any address, and stores anything.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{Options, Raw, Server};

const MIB: u64 = 1 << 20;

/// A server whose users file is `users` (the TOML form), with `PASSWORD` for every user; the
/// directory holding the file lives as long as the server (the file is polled).
fn server_with(users: &str, tls: bool, config_toml: Option<String>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(&path, users).unwrap();
    let server = Server::start(Options {
        args: vec!["--users".into(), path.display().to_string()],
        tls,
        config_toml,
        ..Default::default()
    });
    (server, dir)
}

const PASSWORD: &str = "partner-password";

fn user(name: &str, hash: &str, extra: &str) -> String {
    format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n{extra}\n")
}

fn curl(args: &[&str]) -> std::process::Output {
    common::require("curl");
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .output()
        .unwrap()
}

fn first_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

#[test]
fn disabled_and_expired_users_hear_what_a_wrong_password_hears() {
    let hash = common::hash_password(PASSWORD);
    let users = [
        "# partners\n".to_owned(),
        user("acme", &hash, "access = \"ro\""),
        user("paused", &hash, "enabled = false"),
        user("lapsed", &hash, "expires = \"2020-01-01T00:00:00Z\""),
        user("later", &hash, "expires = \"2999-01-01T00:00:00Z\""),
    ]
    .concat();
    let (server, _users) = server_with(&users, false, None);
    std::fs::write(server.path("hello.txt"), "hi").unwrap();
    for name in ["acme", "later"] {
        let output = curl(&[
            &format!("{}/hello.txt", server.url()),
            "--user",
            &format!("{name}:{PASSWORD}"),
        ]);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.stdout, b"hi");
    }
    for name in ["paused", "lapsed"] {
        let output = curl(&[
            &format!("{}/hello.txt", server.url()),
            "--user",
            &format!("{name}:{PASSWORD}"),
        ]);
        // 67: the server denied the login.
        assert_eq!(output.status.code(), Some(67), "{name} logged in");
    }
    let pass_reply = |name: &str, password: &str| {
        let mut raw = server.raw();
        raw.expect(&format!("USER {name}"), "331");
        first_line(&raw.cmd(&format!("PASS {password}"))).to_owned()
    };
    let wrong = pass_reply("acme", "wrong");
    assert_eq!(wrong, "530 Login incorrect.");
    assert_eq!(pass_reply("paused", PASSWORD), wrong);
    assert_eq!(pass_reply("lapsed", PASSWORD), wrong);
    let log = server.log();
    for (name, result) in [("paused", "disabled"), ("lapsed", "expired")] {
        assert!(
            log.lines().any(|line| line.contains("\"event\":\"login\"")
                && line.contains(&format!("\"result\":\"{result}\""))
                && line.contains(&format!("\"user\":\"{name}\""))),
            "no audit line says {name} was {result}:\n{log}"
        );
    }
}

#[test]
fn an_address_outside_the_allow_list_gets_no_password_prompt_and_locks_nothing() {
    let hash = common::hash_password(PASSWORD);
    let users = user(
        "partner",
        &hash,
        "allowed_cidrs = [\"127.0.0.2/32\", \"198.51.100.0/24\"]",
    );
    let (server, _users) = server_with(
        &users,
        false,
        Some("[limits]\nlogin_failures_before_lockout = 3\n".into()),
    );
    // More refusals than the lockout threshold: none counts as a guess.
    for _ in 0..5 {
        let mut raw = Raw::connect_from([127, 0, 0, 3], server.port);
        let reply = raw.cmd("USER partner");
        assert_eq!(first_line(&reply), "530 Login refused from your address.");
        // No password was asked for, so none is taken.
        assert!(raw.cmd("PASS partner-password").starts_with("503"));
    }
    // ftplib from the allowed address logs in, the user's right password not throttled.
    common::require("python3");
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(source_address=('127.0.0.2', 0))\n\
         f.connect('127.0.0.1', {port})\n\
         f.login('partner', '{PASSWORD}')\n\
         print(f.pwd())\n\
         f.quit()\n",
        port = server.port
    );
    let output = common::run_ok("python3", &["-c", &script]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "/");
}

#[test]
fn max_sessions_refuses_a_further_session_of_that_user_only() {
    let hash = common::hash_password(PASSWORD);
    let users = [
        user("acme", &hash, "max_sessions = 2"),
        user("bob", &hash, ""),
    ]
    .concat();
    let (server, _users) = server_with(&users, false, None);
    let mut first = server.raw();
    first.login("acme", PASSWORD);
    let mut second = server.raw();
    second.login("acme", PASSWORD);
    common::require("python3");
    let ftplib_login = |name: &str| {
        let script = format!(
            "import ftplib\n\
             f = ftplib.FTP()\n\
             f.connect('127.0.0.1', {port})\n\
             try:\n    f.login('{name}', '{PASSWORD}')\n    print('logged in')\n    f.quit()\n\
             except ftplib.all_errors as error:\n    print(error)\n",
            port = server.port
        );
        let output = common::run_ok("python3", &["-c", &script]);
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(
        ftplib_login("acme"),
        "421 Too many sessions of this user (at most 2); try again later."
    );
    assert_eq!(ftplib_login("bob"), "logged in");
    // The two sessions were untouched.
    first.expect("PWD", "257");
    second.expect("PWD", "257");
    first.expect("QUIT", "221");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ftplib_login("acme");
        if reply == "logged in" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed session's place never came free: {reply}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The rate a transfer reached, as a fraction of `limit`; must not pass it by more than 10 %
/// (a throttle that does nothing reaches many times the limit on loopback), nor be starved.
fn assert_holds(bytes: u64, elapsed: Duration, limit: u64, what: &str) {
    let ratio = bytes as f64 / elapsed.as_secs_f64() / limit as f64;
    eprintln!("{what}: {bytes} bytes in {elapsed:?}: {ratio:.3} of the limit");
    assert!(ratio <= 1.10, "{what}: {ratio:.3} of the limit");
    assert!(ratio >= 0.5, "{what}: only {ratio:.3} of the limit");
}

/// Downloads `path` over EPSV on a logged-in raw session; bytes and the time from `150` to `226`.
fn timed_download(raw: &mut Raw, path: &str) -> (u64, Duration) {
    raw.expect("TYPE I", "200");
    let address = raw.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    let start = raw.cmd(&format!("RETR {path}"));
    assert!(start.starts_with("150"), "{start}");
    let started = Instant::now();
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    let end = raw.read_reply();
    let elapsed = started.elapsed();
    assert!(end.starts_with("226"), "{end}");
    (bytes.len() as u64, elapsed)
}

#[test]
fn a_session_download_limit_holds_on_a_plain_sendfile_download() {
    let hash = common::hash_password(PASSWORD);
    let users = user(
        "acme",
        &hash,
        &format!("session_download_bytes_per_second = {MIB}"),
    );
    let (server, _users) = server_with(&users, false, None);
    std::fs::write(server.path("big"), vec![7u8; (6 * MIB) as usize]).unwrap();
    let mut raw = server.raw();
    raw.login("acme", PASSWORD);
    let (bytes, elapsed) = timed_download(&mut raw, "big");
    assert_eq!(bytes, 6 * MIB);
    assert_holds(bytes, elapsed, MIB, "one plain download");
}

#[test]
fn four_sessions_of_one_user_share_the_users_download_limit() {
    let hash = common::hash_password(PASSWORD);
    let users = user("acme", &hash, &format!("download_bytes_per_second = {MIB}"));
    let (server, _users) = server_with(&users, false, None);
    std::fs::write(server.path("part"), vec![7u8; (2 * MIB) as usize]).unwrap();
    let port = server.port;
    let barrier = Arc::new(Barrier::new(4));
    let sessions: Vec<_> = (0..4)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut raw = Raw::connect(port);
                raw.login("acme", PASSWORD);
                barrier.wait();
                let started = Instant::now();
                let (bytes, _) = timed_download(&mut raw, "part");
                (bytes, started, Instant::now())
            })
        })
        .collect();
    let results: Vec<_> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
    let bytes: u64 = results.iter().map(|r| r.0).sum();
    let first_start = results.iter().map(|r| r.1).min().unwrap();
    let last_end = results.iter().map(|r| r.2).max().unwrap();
    assert_eq!(bytes, 8 * MIB);
    assert_holds(bytes, last_end - first_start, MIB, "four sessions together");
}

#[test]
fn a_session_upload_limit_holds_on_a_plain_upload() {
    let hash = common::hash_password(PASSWORD);
    let users = user(
        "acme",
        &hash,
        &format!("session_upload_bytes_per_second = {MIB}"),
    );
    let (server, _users) = server_with(&users, false, None);
    let mut raw = server.raw();
    raw.login("acme", PASSWORD);
    raw.expect("TYPE I", "200");
    let address = raw.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    let start = raw.cmd("STOR up");
    assert!(start.starts_with("150"), "{start}");
    let started = Instant::now();
    data.write_all(&vec![1u8; (6 * MIB) as usize]).unwrap();
    drop(data);
    let end = raw.read_reply();
    let elapsed = started.elapsed();
    assert!(end.starts_with("226"), "{end}");
    assert_eq!(std::fs::metadata(server.path("up")).unwrap().len(), 6 * MIB);
    assert_holds(6 * MIB, elapsed, MIB, "one plain upload");
}

#[test]
fn the_user_limits_hold_through_tls_uploads_and_downloads() {
    let hash = common::hash_password(PASSWORD);
    let users = user(
        "acme",
        &hash,
        &format!("upload_bytes_per_second = {MIB}\ndownload_bytes_per_second = {MIB}"),
    );
    let (server, _users) = server_with(&users, true, None);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::write(&source, vec![3u8; (5 * MIB) as usize]).unwrap();
    std::fs::write(server.path("down"), vec![4u8; (5 * MIB) as usize]).unwrap();
    let login = format!("acme:{PASSWORD}");
    let timing = "%{size_upload} %{size_download} %{time_pretransfer} %{time_total}";
    let measured = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let fields: Vec<f64> = text
            .split_whitespace()
            .rev()
            .take(4)
            .map(|field| field.parse().unwrap())
            .collect();
        // Reversed: total, pretransfer, download, upload. Timed from the data connection on.
        let [total, pretransfer, download, upload] = fields[..] else {
            panic!("curl wrote {text:?}")
        };
        (
            (upload + download) as u64,
            Duration::from_secs_f64(total - pretransfer),
        )
    };
    let up = curl(&[
        "--ssl-reqd",
        "--insecure",
        "--user",
        &login,
        "-T",
        &source.display().to_string(),
        &format!("{}/up", server.url()),
        "--write-out",
        timing,
    ]);
    let (bytes, elapsed) = measured(up);
    assert_eq!(bytes, 5 * MIB);
    assert_holds(bytes, elapsed, MIB, "a TLS upload");
    let down = curl(&[
        "--ssl-reqd",
        "--insecure",
        "--user",
        &login,
        &format!("{}/down", server.url()),
        "--output",
        "/dev/null",
        "--write-out",
        timing,
    ]);
    let (bytes, elapsed) = measured(down);
    assert_eq!(bytes, 5 * MIB);
    assert_holds(bytes, elapsed, MIB, "a TLS download");
}

/// Uploads `bytes` to `path` on a logged-in raw session and returns the final reply (the data
/// connection may be cut by a refusal: the reply on the control connection is what counts).
fn upload(raw: &mut Raw, path: &str, bytes: usize) -> String {
    let address = raw.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    let start = raw.cmd(&format!("STOR {path}"));
    if !start.starts_with("150") {
        return start;
    }
    let _ = data.write_all(&vec![9u8; bytes]);
    drop(data);
    raw.read_reply()
}

#[test]
fn the_quota_refuses_the_byte_that_crosses_it_and_keeps_the_old_file() {
    let hash = common::hash_password(PASSWORD);
    let users = user(
        "acme",
        &hash,
        &format!("home = \"homes/acme\"\nquota_bytes = {MIB}\nquota_files = 3"),
    );
    let (server, _users) = server_with(&users, false, None);
    let home = server.path("homes/acme");
    let mut raw = server.raw();
    raw.login("acme", PASSWORD);
    raw.expect("TYPE I", "200");
    assert!(upload(&mut raw, "a", 600 * 1024).starts_with("226"));
    let rest = (MIB - 600 * 1024) as usize;
    // One byte past the quota: refused, and nothing of it stays.
    let refused = upload(&mut raw, "b", rest + 1);
    assert!(refused.starts_with("552"), "{refused}");
    assert!(!home.join("b").exists());
    // Exactly up to the quota: stored.
    assert!(upload(&mut raw, "b", rest).starts_with("226"));
    // Replacing a file with one byte more than it had crosses the quota: the old file stays.
    let original = std::fs::read(home.join("a")).unwrap();
    let refused = upload(&mut raw, "a", 600 * 1024 + 1);
    assert!(refused.starts_with("552"), "{refused}");
    assert_eq!(std::fs::read(home.join("a")).unwrap(), original);
    // curl sees the refusal too, and the file is still the old one.
    let dir = tempfile::tempdir().unwrap();
    let bigger = dir.path().join("bigger");
    std::fs::write(&bigger, vec![5u8; 700 * 1024]).unwrap();
    let output = curl(&[
        "--user",
        &format!("acme:{PASSWORD}"),
        "-T",
        &bigger.display().to_string(),
        &format!("{}/a", server.url()),
    ]);
    assert!(!output.status.success(), "curl stored past the quota");
    assert_eq!(std::fs::read(home.join("a")).unwrap(), original);
    // And lftp: it hears the 552 and does not retry into a partial file.
    common::require("lftp");
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; \
         open -u acme,{PASSWORD} ftp://127.0.0.1:{port}; put {bigger} -o a; bye",
        port = server.port,
        bigger = bigger.display()
    );
    let output = Command::new("lftp").args(["-c", &script]).output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("552"),
        "lftp: {said}"
    );
    assert_eq!(std::fs::read(home.join("a")).unwrap(), original);
    // Nothing partial anywhere: only the two committed files.
    let mut names: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    // Freed space is usable again; the file quota counts files.
    raw.expect("DELE b", "250");
    assert!(upload(&mut raw, "c", 10).starts_with("226"));
    assert!(upload(&mut raw, "d", 10).starts_with("226"));
    let refused = upload(&mut raw, "e", 10);
    assert_eq!(
        first_line(&refused),
        "552 Quota exceeded: this login may store at most 3 files."
    );
    assert!(!home.join("e").exists());
}

#[test]
fn users_of_the_toml_form_have_metrics_of_their_own() {
    let hash = common::hash_password(PASSWORD);
    let (server, _users) = server_with(&user("acme", &hash, ""), false, None);
    let (_, fresh) = server.http_get("/metrics");
    for series in [
        "ftp_user_sessions{user=\"acme\"} 0",
        "ftp_user_bytes_total{user=\"acme\",direction=\"download\"} 0",
        "ftp_user_logins_total{user=\"acme\",result=\"ok\"} 0",
    ] {
        assert!(fresh.contains(series), "{series} missing from\n{fresh}");
    }
    std::fs::write(server.path("f"), vec![1u8; 1000]).unwrap();
    let mut raw = server.raw();
    raw.login("acme", PASSWORD);
    let (bytes, _) = timed_download(&mut raw, "f");
    assert_eq!(bytes, 1000);
    let (_, after) = server.http_get("/metrics");
    for series in [
        "ftp_user_sessions{user=\"acme\"} 1",
        "ftp_user_bytes_total{user=\"acme\",direction=\"download\"} 1000",
        "ftp_user_logins_total{user=\"acme\",result=\"ok\"} 1",
    ] {
        assert!(after.contains(series), "{series} missing from\n{after}");
    }
}

#[test]
fn a_reloaded_users_file_changes_new_logins_and_a_bad_one_keeps_the_old_users() {
    let hash = common::hash_password(PASSWORD);
    let (server, users_dir) = server_with(&user("acme", &hash, ""), false, None);
    let path = users_dir.path().join("users.toml");
    let mut running = server.raw();
    running.login("acme", PASSWORD);
    let pass_reply = |name: &str| {
        let mut raw = server.raw();
        let reply = raw.cmd(&format!("USER {name}"));
        if !reply.starts_with("331") {
            return first_line(&reply).to_owned();
        }
        first_line(&raw.cmd(&format!("PASS {PASSWORD}"))).to_owned()
    };
    let eventually = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}: never happened; log:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    };
    // An unknown key for bob: the load fails naming bob and the line, acme stays.
    std::fs::write(
        &path,
        [user("acme", &hash, ""), user("bob", &hash, "quota = 5")].concat(),
    )
    .unwrap();
    eventually("the bad file reported", &|| {
        server.log().lines().any(|line| {
            line.contains("not loaded") && line.contains("bob") && line.contains("line 8")
        })
    });
    assert_eq!(pass_reply("acme"), "230 Login successful.");
    assert_eq!(pass_reply("bob"), "530 Login incorrect.");
    // Fixed, with acme disabled: bob logs in, acme's new logins are refused, its running session
    // goes on.
    std::fs::write(
        &path,
        [
            user("acme", &hash, "enabled = false"),
            user("bob", &hash, ""),
        ]
        .concat(),
    )
    .unwrap();
    eventually("bob's login", &|| {
        pass_reply("bob") == "230 Login successful."
    });
    assert_eq!(pass_reply("acme"), "530 Login incorrect.");
    running.expect("PWD", "257");
}

#[test]
fn the_allow_list_checks_the_address_a_trusted_proxy_header_gives() {
    let hash = common::hash_password(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(
        &path,
        user("partner", &hash, "allowed_cidrs = [\"198.51.100.0/24\"]"),
    )
    .unwrap();
    let server = Server::start(Options {
        args: vec![
            "--users".into(),
            path.display().to_string(),
            "--proxy-protocol-from".into(),
            "127.0.0.1/32".into(),
        ],
        ..Default::default()
    });
    let user_reply = |client: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        write!(stream, "PROXY TCP4 {client} 127.0.0.1 40000 21\r\n").unwrap();
        let mut raw = Raw::from_stream(stream);
        assert!(raw.greeting.starts_with("220"), "{}", raw.greeting);
        first_line(&raw.cmd("USER partner")).to_owned()
    };
    assert_eq!(
        user_reply("198.51.100.7"),
        "331 Please specify the password."
    );
    assert_eq!(
        user_reply("203.0.113.9"),
        "530 Login refused from your address."
    );
}
