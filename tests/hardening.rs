//! What a hostile or merely unusual client does, through raw sockets and real clients: each test
//! here failed before the fix it names.

mod common;

use common::{Options, Server};

fn rw_server() -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        ..Default::default()
    })
}

#[test]
fn mlsd_of_a_missing_path_is_550_and_of_a_file_501() {
    let server = rw_server();
    std::fs::write(server.path("file"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let reply = ftp.cmd("MLSD missing");
    assert!(reply.starts_with("550"), "{reply:?}");
    let reply = ftp.cmd("MLSD missing/deeper");
    assert!(reply.starts_with("550"), "{reply:?}");
    ftp.expect("MLSD file", "501");
}

#[test]
fn names_with_control_bytes_are_refused_with_553() {
    let server = rw_server();
    std::fs::write(server.path("plain"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    // With a data connection ready, so only the name can be the reason for a refusal.
    let data = ftp.epsv();
    let _connected = std::net::TcpStream::connect(data).unwrap();
    for line in [
        "STOR a\rb",
        "STOR forged\r-rw-r--r-- 1 ftp ftp 1 Jan 01 2026 evil",
        "APPE tab\there",
        "MKD dir\u{1}x",
        "RETR nul\0byte",
        "DELE esc\u{1b}[2J",
        "CWD bell\u{7}",
    ] {
        let reply = ftp.cmd(line);
        assert!(reply.starts_with("553"), "{line:?}: {reply:?}");
    }
    ftp.expect("RNFR plain", "350");
    ftp.expect("RNTO new\rname", "553");
    let names: Vec<_> = std::fs::read_dir(server.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["plain"]);
    // Ordinary names with spaces and non-ASCII letters still work.
    let reply = ftp.transfer_out("STOR a b é.txt", b"ok");
    assert!(reply.starts_with("226"), "{reply:?}");
}

fn lockout_server(anonymous: bool) -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true), ("mallory", "own", true)],
        config_toml: Some(format!(
            "[anonymous]\nenabled = {anonymous}\nwritable = false\n\
             [limits]\nlogin_failure_delay_millis = 10\nlogin_failures_before_lockout = 3\n\
             lockout_seconds = 60\nmax_sessions_per_address = 100\n"
        )),
        ..Default::default()
    })
}

#[test]
fn a_good_login_does_not_reset_the_failure_count() {
    let server = lockout_server(true);
    let mut ftp = server.raw();
    ftp.expect("USER alice", "331");
    ftp.expect("PASS guess1", "530");
    ftp.expect("USER alice", "331");
    ftp.expect("PASS guess2", "530");
    // The attacker's own good logins, anonymous and with an account of their own.
    server.raw().login_anonymous();
    server.raw().login("mallory", "own");
    let mut ftp = server.raw();
    ftp.expect("USER alice", "331");
    ftp.expect("PASS guess3", "421");
    // Locked now: even the right password no longer gets in from here.
    let mut ftp = server.raw();
    let reply = ftp.cmd("USER alice");
    assert!(reply.starts_with("421"), "{reply:?}");
}

#[test]
fn parallel_sessions_cannot_multiply_guesses() {
    let server = lockout_server(false);
    // Eight sessions all pass USER before any guess.
    let mut sessions: Vec<_> = (0..8).map(|_| server.raw()).collect();
    for ftp in &mut sessions {
        ftp.expect("USER alice", "331");
    }
    let last = sessions.pop().unwrap();
    let mut refused = 0;
    for (index, ftp) in sessions.iter_mut().enumerate() {
        let reply = ftp.cmd(&format!("PASS guess{index}"));
        if reply.starts_with("421") {
            refused += 1;
        } else {
            assert!(reply.starts_with("530"), "{reply:?}");
        }
    }
    assert_eq!(refused, 5, "the lockout did not hold at PASS");
    let mut last = last;
    let reply = last.cmd("PASS wonderland");
    assert!(
        reply.starts_with("421"),
        "right password got past the lockout: {reply:?}"
    );
}

#[test]
fn a_user_name_guessed_from_many_addresses_is_throttled_never_refused() {
    let server = lockout_server(false);
    for source in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]] {
        let mut ftp = common::Raw::connect_from(source, server.port);
        ftp.expect("USER alice", "331");
        ftp.expect("PASS wrong", "530");
    }
    // alice has had the threshold of failures: her right password from a clean address still
    // gets in, with no backoff.
    let started = std::time::Instant::now();
    common::Raw::connect_from([127, 0, 0, 5], server.port).login("alice", "wonderland");
    let clean = started.elapsed();
    // A further guess from an address that already failed waits out a backoff first.
    let started = std::time::Instant::now();
    let mut ftp = common::Raw::connect_from([127, 0, 0, 2], server.port);
    ftp.expect("USER alice", "331");
    ftp.expect("PASS wrong", "530");
    let backed_off = started.elapsed();
    assert!(
        backed_off >= std::time::Duration::from_millis(700) && backed_off > clean,
        "the guess from a failed address waited {backed_off:?}, the clean login {clean:?}"
    );
    // Other names from other addresses are untouched.
    common::Raw::connect_from([127, 0, 0, 6], server.port).login("mallory", "own");
    let (_, metrics) = server.http_get("/metrics");
    for line in [
        "ftp_lockouts_total{subject=\"user\"} 1",
        "ftp_lockouts_total{subject=\"network\"} 0",
        "ftp_lockouts_active{subject=\"user\"} 1",
        "ftp_lockouts_active{subject=\"network\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
}

/// Closes a data connection with a reset, the way a crashed client or a cut network ends it.
fn reset(stream: std::net::TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(stream);
}

#[test]
fn resumed_and_appended_uploads_touch_nothing_until_they_succeed() {
    use std::io::Write;
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        config_toml: Some("[limits]\ndata_connect_timeout_seconds = 1\n".into()),
        ..Default::default()
    });
    let original = b"0123456789";
    std::fs::write(server.path("f"), original).unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    // No data connection at all.
    for command in ["STOR f", "APPE f", "STOU"] {
        ftp.expect("REST 3", "350");
        ftp.expect(command, "425");
        assert_eq!(
            std::fs::read(server.path("f")).unwrap(),
            original,
            "{command}"
        );
    }
    // A passive port the client never connects to.
    for command in ["STOR f", "APPE f"] {
        ftp.epsv();
        ftp.expect("REST 3", "350");
        ftp.expect(command, "425");
        assert_eq!(
            std::fs::read(server.path("f")).unwrap(),
            original,
            "{command}"
        );
    }
    // A data connection cut half way through.
    for command in ["STOR f", "APPE f"] {
        ftp.expect("REST 3", "350");
        let address = ftp.epsv();
        let mut data = std::net::TcpStream::connect(address).unwrap();
        ftp.expect(command, "150");
        data.write_all(b"partial").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        reset(data);
        let end = ftp.read_reply();
        assert!(end.starts_with("426"), "{command}: {end:?}");
        assert_eq!(
            std::fs::read(server.path("f")).unwrap(),
            original,
            "{command}"
        );
    }
    // And when they succeed they do what they mean.
    ftp.expect("REST 3", "350");
    assert!(ftp.transfer_out("STOR f", b"abc").starts_with("226"));
    assert_eq!(std::fs::read(server.path("f")).unwrap(), b"012abc");
    assert!(ftp.transfer_out("APPE f", b"!").starts_with("226"));
    assert_eq!(std::fs::read(server.path("f")).unwrap(), b"012abc!");
    ftp.expect("REST 100", "350");
    let address = ftp.epsv();
    let _data = std::net::TcpStream::connect(address).unwrap();
    ftp.expect("STOR f", "550");
    let names: Vec<_> = std::fs::read_dir(server.root.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "temporary files left behind");
}

#[test]
fn idle_passive_listeners_expire_and_free_their_ports() {
    let server = Server::start(Options {
        passive_ports: 3,
        config_toml: Some(
            "[anonymous]\nenabled = true\nwritable = false\n\
             [limits]\ndata_connect_timeout_seconds = 1\npassive_port_wait_seconds = 0\n"
                .into(),
        ),
        ..Default::default()
    });
    // No wait for a place on a port (the holders' expiry would end it): a full range is 425 at once.
    std::fs::write(server.path("f"), "content").unwrap();
    let mut holders: Vec<_> = (0..3).map(|_| server.raw()).collect();
    for ftp in &mut holders {
        ftp.login_anonymous();
        ftp.expect("PASV", "227");
        // A second PASV replaces the first: one listener per session.
        ftp.expect("EPSV", "229");
    }
    let mut fourth = server.raw();
    fourth.login_anonymous();
    fourth.expect("EPSV", "425");
    // The holders only send NOOP; their listeners expire after the data-connect timeout.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for ftp in &mut holders {
        ftp.expect("NOOP", "200");
    }
    let (_, metrics) = server.http_get("/metrics");
    assert!(metrics.contains("ftp_passive_ports_in_use 0"), "{metrics}");
    let (bytes, end) = fourth.transfer_in("RETR f");
    assert_eq!(bytes, b"content");
    assert!(end.starts_with("226"), "{end:?}");
    // An expired listener is gone for its session too: the transfer command finds no plan.
    holders[0].expect("RETR f", "425");
}

#[test]
fn login_timeout_is_not_extended_by_noop() {
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        config_toml: Some(
            "[limits]\nlogin_timeout_seconds = 2\nidle_timeout_seconds = 600\n".into(),
        ),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let mut idle = server.raw();
    let mut busy = server.raw();
    let mut reply = String::new();
    while started.elapsed() < std::time::Duration::from_secs(6) {
        reply = busy.cmd("NOOP");
        if !reply.starts_with("200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(reply.starts_with("421"), "NOOP kept the session: {reply:?}");
    assert!(reply.contains("Login timeout"), "{reply:?}");
    assert!(idle.read_reply().starts_with("421"));
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    // Logged in in time, the login timeout no longer applies.
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    ftp.expect("NOOP", "200");
}

/// An argon2id hash with costly parameters, as an operator may choose for an important account.
fn strong_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(48 * 1024, 2, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    argon2
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn unknown_and_known_users_fail_in_the_same_time() {
    let state = tempfile::tempdir().unwrap();
    let users = state.path().join("users");
    std::fs::write(&users, format!("admin:{}:rw\n", strong_hash("long secret"))).unwrap();
    let server = Server::start(Options {
        args: vec!["--users".into(), users.display().to_string()],
        config_toml: Some(
            "[limits]\nlogin_failure_delay_millis = 2500\nlogin_failures_before_lockout = 0\n"
                .into(),
        ),
        ..Default::default()
    });
    let time = |user: &str| {
        let mut ftp = server.raw();
        ftp.expect(&format!("USER {user}"), "331");
        let started = std::time::Instant::now();
        ftp.expect("PASS wrong", "530");
        started.elapsed().as_millis() as i64
    };
    let median = |mut times: Vec<i64>| {
        times.sort();
        times[times.len() / 2]
    };
    let known = median((0..3).map(|_| time("admin")).collect());
    let unknown = median((0..3).map(|_| time("nobody")).collect());
    assert!(
        (known - unknown).abs() < 150,
        "a wrong password for a real user takes {known} ms, for an unknown one {unknown} ms"
    );
}

#[test]
fn a_users_file_with_another_hash_scheme_does_not_load() {
    let state = tempfile::tempdir().unwrap();
    let users = state.path().join("users");
    std::fs::write(
        &users,
        "old:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ:rw\n",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::BIN)
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--passive-ports",
            "30000-30001",
        ])
        .args([
            "--users",
            users.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not argon2id") && stderr.contains("line 1"),
        "{stderr}"
    );
}

#[test]
fn temporary_upload_names_are_out_of_reach() {
    let server = rw_server();
    std::fs::create_dir(server.path("d")).unwrap();
    std::fs::write(
        server.path("d/.ftp-upload-0123456789abcdef"),
        "someone's partial upload",
    )
    .unwrap();
    std::fs::write(server.path("plain"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let data = ftp.epsv();
    let _connected = std::net::TcpStream::connect(data).unwrap();
    ftp.expect("RETR d/.ftp-upload-0123456789abcdef", "550");
    ftp.expect("SIZE d/.ftp-upload-0123456789abcdef", "550");
    ftp.expect("DELE d/.ftp-upload-0123456789abcdef", "550");
    ftp.expect("RNFR d/.ftp-upload-0123456789abcdef", "550");
    ftp.expect("STOR .ftp-upload-mine", "553");
    ftp.expect("APPE d/.ftp-upload-0123456789abcdef", "553");
    ftp.expect("MKD .ftp-upload-dir", "553");
    ftp.expect("RNFR plain", "350");
    ftp.expect("RNTO .ftp-upload-renamed", "553");
    assert!(server.path("plain").exists());
    assert_eq!(
        std::fs::read(server.path("d/.ftp-upload-0123456789abcdef")).unwrap(),
        b"someone's partial upload"
    );
}

#[test]
fn leftovers_of_a_killed_server_are_removed_at_start() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("a/b")).unwrap();
    let old = root.path().join("a/b/.ftp-upload-00000000000000aa");
    let fresh = root.path().join(".ftp-upload-00000000000000bb");
    std::fs::write(&old, "dead").unwrap();
    std::fs::write(&fresh, "maybe alive").unwrap();
    std::fs::write(root.path().join("a/keep.txt"), "keep").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let server = Server::start_in(
        Options {
            config_toml: Some("[limits]\nidle_timeout_seconds = 3\n".into()),
            ..Default::default()
        },
        root,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while server.path("a/b/.ftp-upload-00000000000000aa").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead upload was not removed at start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // One written to just now may belong to a live upload of another server on the volume: it
    // goes only once the stall bound has passed without a write.
    assert!(server.path(".ftp-upload-00000000000000bb").exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.path(".ftp-upload-00000000000000bb").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale upload was never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(server.path("a/keep.txt")).unwrap(), b"keep");
}

#[test]
fn retr_of_a_fifo_is_refused_at_once() {
    let server = rw_server();
    let fifo = server.path("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let started = std::time::Instant::now();
    ftp.expect("RETR pipe", "550");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    ftp.expect("SIZE pipe", "550");
    // Nor is one replaced by an upload.
    let address = ftp.epsv();
    let _data = std::net::TcpStream::connect(address).unwrap();
    ftp.expect("STOR pipe", "550");
    // The session (and its worker thread) is fine afterwards.
    ftp.expect("NOOP", "200");
}

#[test]
fn a_listing_the_client_never_reads_is_cut_at_the_stall_bound() {
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        config_toml: Some("[limits]\nidle_timeout_seconds = 2\n".into()),
        ..Default::default()
    });
    std::fs::create_dir(server.path("big")).unwrap();
    // About 6 MB of listing: more than the kernel buffers of both ends hold (4 MiB + 4 KiB).
    let long = "n".repeat(200);
    for i in 0..30_000 {
        std::fs::File::create(server.path(&format!("big/{long}-{i:08}"))).unwrap();
    }
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let data: std::net::TcpStream = socket.into();
    ftp.expect("LIST big", "150");
    let started = std::time::Instant::now();
    let end = ftp.read_reply();
    assert!(end.starts_with("426"), "{end:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    drop(data);
    ftp.expect("NOOP", "200");
}
