//! Protected data connections are bound to their control connection's TLS session: a second
//! client from the same address that races to the passive port, with a fresh session or with a
//! session of its own from the server, gets nothing and can inject nothing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{Options, Server};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

fn tls_server(extra: &[&str]) -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true), ("eve", "own", true)],
        tls: true,
        args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

/// A rustls client configuration trusting the test server's certificate; each one has its own
/// resumption store, so two of them are two unrelated clients.
fn client(
    server: &Server,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.state.path().join("cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls(config: &Arc<ClientConfig>, tcp: TcpStream) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let connection = ClientConnection::new(Arc::clone(config), name).unwrap();
    StreamOwned::new(connection, tcp)
}

/// A control connection after `AUTH TLS`, logged in, with `PROT P`.
struct Control {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl Control {
    fn login(server: &Server, config: &Arc<ClientConfig>, user: &str, password: &str) -> Control {
        let tcp = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut plain = BufReader::new(tcp.try_clone().unwrap());
        let mut line = String::new();
        plain.read_line(&mut line).unwrap();
        (&tcp).write_all(b"AUTH TLS\r\n").unwrap();
        line.clear();
        plain.read_line(&mut line).unwrap();
        assert!(line.starts_with("234"), "{line:?}");
        let mut control = Control {
            reader: BufReader::new(tls(config, tcp)),
        };
        control.expect(&format!("USER {user}"), "331");
        control.expect(&format!("PASS {password}"), "230");
        control.expect("PBSZ 0", "200");
        control.expect("PROT P", "200");
        control
    }

    fn read_reply(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn cmd(&mut self, line: &str) -> String {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        stream.flush().unwrap();
        self.read_reply()
    }

    fn expect(&mut self, line: &str, code: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(code),
            "{line}: expected {code}, got {reply:?}"
        );
        reply
    }

    fn epsv(&mut self) -> SocketAddr {
        let reply = self.expect("EPSV", "229");
        let port = reply
            .split("|||")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .and_then(|port| port.parse().ok())
            .unwrap();
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// Reads what a protected data connection delivers; a refused handshake delivers nothing.
fn read_all(mut data: StreamOwned<ClientConnection, TcpStream>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = data.read_to_end(&mut bytes);
    bytes
}

fn secret(server: &Server) -> Vec<u8> {
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(server.path("secret.bin"), &bytes).unwrap();
    bytes
}

static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

/// TLS 1.3 (resumption by ticket) and TLS 1.2 (by session id).
fn both_versions() -> [&'static [&'static rustls::SupportedProtocolVersion]; 2] {
    [&TLS13, &TLS12]
}

#[test]
fn the_victims_own_resumed_session_gets_its_data() {
    let server = tls_server(&[]);
    let payload = secret(&server);
    for versions in both_versions() {
        let config = client(&server, versions);
        let mut victim = Control::login(&server, &config, "alice", "wonderland");
        // Several transfers in a row, each resuming the control session.
        for _ in 0..3 {
            let tcp = TcpStream::connect(victim.epsv()).unwrap();
            victim.expect("RETR secret.bin", "150");
            let data = tls(&config, tcp);
            assert_eq!(read_all(data), payload);
            assert!(victim.read_reply().starts_with("226"));
        }
        let tcp = TcpStream::connect(victim.epsv()).unwrap();
        victim.expect("STOR up.bin", "150");
        let mut data = tls(&config, tcp);
        data.write_all(b"uploaded").unwrap();
        data.conn.send_close_notify();
        data.flush().unwrap();
        drop(data);
        assert!(victim.read_reply().starts_with("226"));
        assert_eq!(std::fs::read(server.path("up.bin")).unwrap(), b"uploaded");
    }
}

#[test]
fn a_fresh_session_from_the_same_address_is_refused_and_gets_nothing() {
    let server = tls_server(&[]);
    secret(&server);
    for versions in both_versions() {
        let config = client(&server, versions);
        let mut victim = Control::login(&server, &config, "alice", "wonderland");
        let address = victim.epsv();
        // The attacker wins the race to the passive port with a session of its own.
        let attacker = client(&server, versions);
        let stolen = TcpStream::connect(address).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        victim.expect("RETR secret.bin", "150");
        let bytes = read_all(tls(&attacker, stolen));
        assert!(
            bytes.is_empty(),
            "the attacker received {} bytes",
            bytes.len()
        );
        let reply = victim.read_reply();
        assert!(reply.starts_with("522"), "{reply:?}");

        // Nor can it inject an upload.
        let address = victim.epsv();
        let stolen = TcpStream::connect(address).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        victim.expect("STOR injected.bin", "150");
        let mut data = tls(&attacker, stolen);
        let _ = data.write_all(b"evil");
        let _ = data.flush();
        drop(data);
        let reply = victim.read_reply();
        assert!(reply.starts_with("522"), "{reply:?}");
        assert!(!server.path("injected.bin").exists());
    }
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_data_connections_refused_total 4"),
        "{metrics}"
    );
}

#[test]
fn a_session_from_the_attackers_own_control_connection_is_refused_too() {
    let server = tls_server(&[]);
    secret(&server);
    for versions in both_versions() {
        // The attacker logs in itself, so it holds a session the server issued.
        let attacker = client(&server, versions);
        let mut own = Control::login(&server, &attacker, "eve", "own");
        own.expect("NOOP", "200");
        let config = client(&server, versions);
        let mut victim = Control::login(&server, &config, "alice", "wonderland");
        let address = victim.epsv();
        let stolen = TcpStream::connect(address).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        victim.expect("RETR secret.bin", "150");
        let bytes = read_all(tls(&attacker, stolen));
        assert!(
            bytes.is_empty(),
            "the attacker received {} bytes",
            bytes.len()
        );
        let reply = victim.read_reply();
        assert!(reply.starts_with("522"), "{reply:?}");
    }
}

#[test]
fn without_required_reuse_a_fresh_data_session_is_accepted() {
    let server = tls_server(&["--require-tls-session-reuse", "false"]);
    let payload = secret(&server);
    let config = client(&server, &[&rustls::version::TLS13]);
    let mut ftp = Control::login(&server, &config, "alice", "wonderland");
    let tcp = TcpStream::connect(ftp.epsv()).unwrap();
    ftp.expect("RETR secret.bin", "150");
    let fresh = client(&server, &[&rustls::version::TLS13]);
    assert_eq!(read_all(tls(&fresh, tcp)), payload);
    assert!(ftp.read_reply().starts_with("226"));
}
