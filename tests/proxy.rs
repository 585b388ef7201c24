//! PROXY protocol behind a real sender: HAProxy (Debian's) on loopback in front of the control
//! port and the passive range, with `send-proxy-v2` and `send-proxy` (v1). Clients connect from
//! their own loopback addresses (127.0.0.5, 127.0.0.6); the server sees HAProxy's 127.0.0.1, and
//! must act on the address in the header: same-peer data check, per-address limits, lockout,
//! logs. Raw sockets check the refusals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Options, Server, require, run_ok};

/// HAProxy listening on 127.0.0.2 at the server's control port and passive range, forwarding to
/// the server on 127.0.0.1 with a PROXY header of `version` ("send-proxy-v2" or "send-proxy").
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(server: &Server, send_proxy: &str) -> Haproxy {
        require("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 2000\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend control\n  bind 127.0.0.2:{port}\n  default_backend control\n\
                 backend control\n  server ftp 127.0.0.1:{port} {send_proxy}\n\
                 frontend passive\n  bind 127.0.0.2:{min}-{max}\n  default_backend passive\n\
                 # No port: each connection goes to the port it came in on.\n\
                 backend passive\n  server ftp 127.0.0.1 {send_proxy}\n",
                port = server.port,
                min = server.passive.0,
                max = server.passive.1,
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.2", server.port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxied_server(extra_toml: &str) -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        args: vec![
            "--proxy-protocol-from".into(),
            "127.0.0.1/32".into(),
            "--public-address".into(),
            "127.0.0.2".into(),
        ],
        config_toml: Some(extra_toml.into()),
        ..Default::default()
    })
}

/// A TCP connection from `source` (a loopback address of the test's own) to `to`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// A control connection from `source`; returns the stream and a reader for replies.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(source: &str, to: SocketAddr) -> Client {
        let stream = connect_from(source, to);
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line
    }

    fn cmd(&mut self, line: &str) -> String {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

#[test]
fn curl_through_haproxy_v2_is_seen_with_its_own_address() {
    let server = proxied_server("");
    let _haproxy = Haproxy::start(&server, "send-proxy-v2");
    std::fs::write(server.path("f.bin"), vec![7u8; 300_000]).unwrap();
    let url = format!("ftp://127.0.0.2:{}/f.bin", server.port);
    // Both the EPSV and the PASV data path: the data connection's header must name the same
    // client as the control connection's, or the same-peer check refuses it.
    for mode in [&[][..], &["--disable-epsv"][..]] {
        let args = [
            &[
                "-sS",
                "--interface",
                "127.0.0.5",
                "--user",
                "alice:wonderland",
            ][..],
            mode,
            &[url.as_str()],
        ]
        .concat();
        let output = run_ok("curl", &args);
        assert_eq!(output.stdout, vec![7u8; 300_000]);
    }
    let upload = server.state.path().join("up.txt");
    std::fs::write(&upload, "through the balancer").unwrap();
    run_ok(
        "curl",
        &[
            "-sS",
            "--interface",
            "127.0.0.5",
            "--user",
            "alice:wonderland",
            "-T",
            upload.to_str().unwrap(),
            &format!("ftp://127.0.0.2:{}/up.txt", server.port),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(server.path("up.txt")).unwrap(),
        "through the balancer"
    );
    // The logs name the client, and the balancer it came through.
    let log = server.log();
    assert!(log.contains("\"peer\":\"127.0.0.5:"), "{log}");
    assert!(log.contains("\"via\":\"127.0.0.1:"), "{log}");
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        !metrics.contains("ftp_data_connections_refused_total 1"),
        "{metrics}"
    );
}

#[test]
fn haproxy_v1_header_is_read_too() {
    let server = proxied_server("");
    let _haproxy = Haproxy::start(&server, "send-proxy");
    std::fs::write(server.path("f.txt"), "v1").unwrap();
    let output = run_ok(
        "curl",
        &[
            "-sS",
            "--interface",
            "127.0.0.6",
            "--user",
            "alice:wonderland",
            &format!("ftp://127.0.0.2:{}/f.txt", server.port),
        ],
    );
    assert_eq!(output.stdout, b"v1");
    assert!(server.log().contains("\"peer\":\"127.0.0.6:"));
}

#[test]
fn limits_and_lockout_count_the_real_client_address() {
    let server = proxied_server(
        "[limits]\nmax_sessions_per_address = 1\nlogin_failures_before_lockout = 2\n\
         login_failure_delay_millis = 10\n",
    );
    let _haproxy = Haproxy::start(&server, "send-proxy-v2");
    let balancer: SocketAddr = format!("127.0.0.2:{}", server.port).parse().unwrap();
    // All of these reach the server from HAProxy's one address; only the header tells them apart.
    let mut first = Client::connect("127.0.0.5", balancer);
    assert!(first.reply().starts_with("220"));
    let mut second = Client::connect("127.0.0.5", balancer);
    let refused = second.reply();
    assert!(
        refused.starts_with("421") && refused.contains("your address"),
        "{refused:?}"
    );
    let mut other = Client::connect("127.0.0.6", balancer);
    assert!(other.reply().starts_with("220"));
    // Two failures lock out 127.0.0.5; 127.0.0.6 still logs in.
    assert!(first.cmd("USER mallory").starts_with("331"));
    assert!(first.cmd("PASS guess1").starts_with("530"));
    assert!(first.cmd("USER mallory").starts_with("331"));
    assert!(first.cmd("PASS guess2").starts_with("421"));
    assert!(other.cmd("USER alice").starts_with("331"));
    assert!(other.cmd("PASS wonderland").starts_with("230"));
}

#[test]
fn a_trusted_source_without_a_header_is_dropped() {
    let server = proxied_server("");
    // (The harness's own readiness probe came from 127.0.0.1 too, and was dropped likewise.)
    let dropped_before = proxy_header_refusals(&server);
    // From 127.0.0.1, which may only speak through a header: no greeting, the connection closes.
    let mut direct = connect_from(
        "127.0.0.1",
        format!("127.0.0.1:{}", server.port).parse().unwrap(),
    );
    direct.write_all(b"USER alice\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = direct.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(proxy_header_refusals(&server), dropped_before + 1);
}

fn proxy_header_refusals(server: &Server) -> u64 {
    let (_, metrics) = server.http_get("/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("ftp_sessions_refused_total{result=\"proxy_header\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_header_from_any_other_source_is_refused() {
    let server = proxied_server("");
    let to: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    // v1 text from 127.0.0.9, which is not a balancer: refused and closed, never believed.
    let mut client = Client::connect("127.0.0.9", to);
    assert!(client.reply().starts_with("220"));
    let reply = client.cmd("PROXY TCP4 198.51.100.1 127.0.0.1 40000 21");
    assert!(
        reply.starts_with("500") && reply.contains("PROXY header refused"),
        "{reply:?}"
    );
    assert_eq!(client.reply(), "");
    // v2 binary: its signature reads as blank lines and QUIT, so the session ends at once.
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ("198.51.100.1:40000".parse::<SocketAddr>().unwrap(), to),
    )
    .build()
    .unwrap();
    let mut client = Client::connect("127.0.0.9", to);
    assert!(client.reply().starts_with("220"));
    client.stream.write_all(&header).unwrap();
    client.stream.write_all(b"USER alice\r\n").unwrap();
    let mut replies = Vec::new();
    loop {
        let line = client.reply();
        if line.is_empty() {
            break;
        }
        replies.push(line);
    }
    assert!(
        replies.last().is_some_and(|l| l.starts_with("221")),
        "{replies:?}"
    );
    assert!(!replies.iter().any(|l| l.starts_with("331")), "{replies:?}");
    assert!(!server.log().contains("198.51.100.1"));
}

#[test]
fn a_data_connection_from_the_balancer_without_a_header_is_refused() {
    let server = proxied_server("[limits]\ndata_connect_timeout_seconds = 10\n");
    let _haproxy = Haproxy::start(&server, "send-proxy-v2");
    std::fs::write(server.path("f.txt"), "payload").unwrap();
    let balancer: SocketAddr = format!("127.0.0.2:{}", server.port).parse().unwrap();
    let mut ftp = Client::connect("127.0.0.5", balancer);
    assert!(ftp.reply().starts_with("220"));
    assert!(ftp.cmd("USER alice").starts_with("331"));
    assert!(ftp.cmd("PASS wonderland").starts_with("230"));
    let reply = ftp.cmd("EPSV");
    let port: u16 = reply
        .split("|||")
        .nth(1)
        .and_then(|rest| rest.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    // Straight to the server from the balancer's own address, with no header.
    let mut thief = connect_from("127.0.0.1", format!("127.0.0.1:{port}").parse().unwrap());
    thief.write_all(b"garbage!").unwrap();
    // The rightful one, through HAProxy with a header naming 127.0.0.5.
    let mut data = connect_from("127.0.0.5", format!("127.0.0.2:{port}").parse().unwrap());
    assert!(ftp.cmd("RETR f.txt").starts_with("150"));
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"payload");
    assert!(ftp.reply().starts_with("226"));
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty());
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_data_connections_refused_total 1"),
        "{metrics}"
    );
}
