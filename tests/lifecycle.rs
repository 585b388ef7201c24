//! The server as a process: config reload through a ConfigMap-style symlink swap, graceful
//! shutdown on SIGTERM mid-transfer, keepalive on the accepted sockets, health endpoints.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Options, Server, hash_password, keepalive_timers};

/// Writes `text` as a new ConfigMap revision: a fresh data directory, then `..data` swapped to it
/// with one rename, the way the kubelet updates a mounted ConfigMap.
fn publish(mount: &Path, revision: u32, text: &str) {
    let data = mount.join(format!("..2026_{revision}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ftp-server.toml"), text).unwrap();
    let temporary = mount.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(data.file_name().unwrap(), &temporary).unwrap();
    std::fs::rename(&temporary, mount.join("..data")).unwrap();
    let link = mount.join("ftp-server.toml");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/ftp-server.toml", link).unwrap();
    }
}

fn config_text(address: &str) -> String {
    // root and passive ports come from the flags, which override the file.
    format!(
        "root = \"/nonexistent\"\npassive_ports = {{ min = 1, max = 2 }}\npublic_address = \"{address}\"\n"
    )
}

fn wait_for(what: &str, server: &Server, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn config_reload_changes_new_sessions_and_keeps_old_ones() {
    let mount = tempfile::tempdir().unwrap();
    publish(mount.path(), 1, &config_text("192.0.2.1"));
    let users = tempfile::tempdir().unwrap();
    let users_file = users.path().join("users");
    std::fs::write(&users_file, format!("alice:{}:rw\n", hash_password("one"))).unwrap();
    let server = Server::start(Options {
        args: vec![
            "--config".into(),
            mount.path().join("ftp-server.toml").display().to_string(),
            "--users".into(),
            users_file.display().to_string(),
        ],
        ..Default::default()
    });
    std::fs::write(server.path("f"), "still here").unwrap();
    let mut old = server.raw();
    old.login("alice", "one");
    assert!(old.expect("PASV", "227").contains("(192,0,2,1,"));

    publish(mount.path(), 2, &config_text("192.0.2.2"));
    std::fs::write(&users_file, format!("bob:{}:ro\n", hash_password("two"))).unwrap();
    wait_for("the new public address", &server, || {
        let mut fresh = server.raw();
        fresh.expect("USER bob", "331");
        if !fresh.cmd("PASS two").starts_with("230") {
            return false;
        }
        fresh.expect("PASV", "227").contains("(192,0,2,2,")
    });
    // The old session was not dropped and still works with what it started with.
    assert!(old.expect("PASV", "227").contains("(192,0,2,1,"));
    let (bytes, end) = old.transfer_in("RETR f");
    assert_eq!(bytes, b"still here");
    assert!(end.starts_with("226"));

    // A broken file is logged and ignored: new sessions keep the last good settings.
    publish(mount.path(), 3, "this is not toml = = =\n");
    wait_for("the failed reload to be counted", &server, || {
        server
            .http_get("/metrics")
            .1
            .contains("ftp_config_reloads_total{result=\"failed\"} 1")
    });
    let mut fresh = server.raw();
    fresh.login("bob", "two");
    assert!(fresh.expect("PASV", "227").contains("(192,0,2,2,"));
    assert!(server.log().contains("keeping the previous one"));
}

#[test]
fn sigterm_lets_a_running_transfer_finish_and_stops_accepting() {
    let mut server = Server::start(Options {
        args: vec!["--anonymous".into()],
        ..Default::default()
    });
    let size = 16 * 1024 * 1024;
    std::fs::write(server.path("big"), vec![3u8; size]).unwrap();
    let mut idle = server.raw();
    idle.login_anonymous();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("RETR big", "150");
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = data.read(&mut buffer).unwrap();
    assert_eq!(server.http_get("/readyz").0, 200);

    server.terminate();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.http_get("/readyz").0,
        503,
        "readiness still on during shutdown"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "still accepting"
    );
    let reply = idle.read_reply();
    assert!(reply.starts_with("421"), "idle session: {reply:?}");
    // The transfer goes on to the end.
    loop {
        let read = data.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        total += read;
    }
    assert_eq!(total, size);
    let end = ftp.read_reply();
    assert!(end.starts_with("226"), "{end:?}");
    assert!(
        server.wait_exit(Duration::from_secs(10)),
        "server did not exit after its sessions ended"
    );
}

#[test]
fn keepalive_is_set_on_control_and_data_sockets() {
    let server = Server::start(Options {
        args: vec![
            "--anonymous".into(),
            "--keepalive-idle".into(),
            "37".into(),
            "--keepalive-interval".into(),
            "7".into(),
            "--keepalive-probes".into(),
            "3".into(),
        ],
        ..Default::default()
    });
    let mut ftp = server.raw();
    ftp.login_anonymous();
    // Until the client's delayed ACK arrives ss shows the retransmission timer instead.
    std::thread::sleep(Duration::from_millis(300));
    let timers = keepalive_timers(server.port);
    assert_eq!(timers.len(), 1, "control socket: {timers:?}");
    assert!(
        (30..=37).contains(&timers[0]),
        "keepalive idle not 37 s: {timers:?}"
    );
    let off = Server::start(Options {
        args: vec!["--anonymous".into(), "--keepalive-idle".into(), "0".into()],
        ..Default::default()
    });
    let mut ftp = off.raw();
    ftp.login_anonymous();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        keepalive_timers(off.port).is_empty(),
        "keepalive on with idle 0"
    );
}

#[test]
fn keepalive_on_an_idle_data_connection() {
    // An upload that has not sent anything yet leaves the data socket idle: its timer shows.
    let mut writer = Server::start(Options {
        users: vec![("w", "w", true)],
        args: vec!["--keepalive-idle".into(), "41".into()],
        ..Default::default()
    });
    let mut up = writer.raw();
    up.login("w", "w");
    let address = up.epsv();
    let data = TcpStream::connect(address).unwrap();
    up.expect("STOR slow.bin", "150");
    std::thread::sleep(Duration::from_millis(200));
    let timers = keepalive_timers(address.port());
    assert_eq!(timers.len(), 1, "data socket: {timers:?}");
    assert!((35..=41).contains(&timers[0]), "{timers:?}");
    drop(data);
    assert!(up.read_reply().starts_with("226"));
    writer.terminate();
    assert!(writer.wait_exit(Duration::from_secs(10)));
}

#[test]
fn health_and_metrics_endpoints() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        ..Default::default()
    });
    std::fs::write(server.path("f"), "12345").unwrap();
    let (status, body) = server.http_get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.http_get("/readyz").0, 200);
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let (bytes, _) = ftp.transfer_in("RETR f");
    assert_eq!(bytes, b"12345");
    ftp.expect("QUIT", "221");
    let (status, metrics) = server.http_get("/metrics");
    assert_eq!(status, 200);
    for expected in [
        "ftp_logins_total{result=\"ok\"} 1",
        "ftp_bytes_total{direction=\"download\"} 5",
        "ftp_transfers_total{direction=\"download\",result=\"ok\"} 1",
        "ftp_passive_ports_in_use 0",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
}

#[test]
fn sigterm_closes_stalled_transfers_after_the_grace_period() {
    let mut server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some("[limits]\nshutdown_grace_seconds = 1\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("big"), vec![3u8; 32 * 1024 * 1024]).unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let address = ftp.epsv();
    let _data = TcpStream::connect(address).unwrap();
    ftp.expect("RETR big", "150");
    // The client never reads: the transfer cannot finish.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.terminate();
    assert!(
        server.wait_exit(Duration::from_secs(8)),
        "server hung past its grace period"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait for the grace period"
    );
}

/// The seam: a file rendered by `ServerConfig::render` (what the controller puts in the ConfigMap)
/// runs the server with no flag but `--config`, users and TLS included.
#[test]
fn a_rendered_config_file_alone_runs_the_server() {
    use ftp_operator::ftp::config::{PassiveRange, ServerConfig, Tls};
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let metrics_port = common::free_port();
    let passive = common::free_range(5);
    common::make_certificate(state.path(), "tls.crt", "tls.key");
    std::fs::write(
        state.path().join("users"),
        format!("carol:{}:rw\n", hash_password("pw")),
    )
    .unwrap();
    let mut config = ServerConfig::new(
        root.path(),
        PassiveRange::new(passive.0, passive.1).unwrap(),
    );
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.metrics_listen = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    config.public_address = Some("127.0.0.1".into());
    config.users_file = Some(state.path().join("users"));
    config.tls = Some(Tls {
        required: true,
        // Stock ftplib below cannot resume the control session on its data connections.
        require_session_reuse: false,
        ..Tls::new(state.path().join("tls.crt"), state.path().join("tls.key"))
    });
    let path = state.path().join("ftp-server.toml");
    std::fs::write(&path, config.render()).unwrap();
    let cert = state.path().join("tls.crt").display().to_string();
    let server = Server::spawn(
        vec!["--config".into(), path.display().to_string()],
        root,
        state,
        port,
        metrics_port,
        passive,
    );
    std::fs::write(server.path("hello.txt"), "hello").unwrap();
    let output = common::run_ok(
        "python3",
        &[
            "-c",
            "import ftplib, ssl, sys, io\n\
ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=sys.argv[2]), timeout=20)\n\
ftp.trust_server_pasv_ipv4_address = True\n\
ftp.connect('127.0.0.1', int(sys.argv[1]))\n\
ftp.login('carol', 'pw')\n\
ftp.prot_p()\n\
out = io.BytesIO()\n\
ftp.retrbinary('RETR hello.txt', out.write)\n\
print(out.getvalue().decode())\n\
ftp.quit()\n",
            &server.port.to_string(),
            &cert,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello");
    let mut plain = server.raw();
    assert!(
        plain.cmd("USER carol").starts_with("530"),
        "TLS not required"
    );
}
