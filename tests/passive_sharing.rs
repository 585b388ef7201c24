//! A passive range smaller than the number of sessions: one port serves sessions from different
//! client addresses at once, each data connection reaching the session of its own address; two
//! sessions from one address never wait on one port together.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Options, Raw, Server};

/// A control connection from the loopback address `source`.
fn raw_from(server: &Server, source: &str) -> Raw {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    let to: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    socket.connect(&to.into()).unwrap();
    Raw::from_stream(socket.into())
}

fn data_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

#[test]
fn one_port_serves_sessions_from_different_addresses_at_once() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        passive_ports: 1,
        config_toml: Some("[limits]\npassive_port_wait_seconds = 1\n".into()),
        ..Default::default()
    });
    let sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    for (i, _) in sources.iter().enumerate() {
        std::fs::write(
            server.path(&format!("f{i}")),
            format!("file {i} ").repeat(50_000),
        )
        .unwrap();
    }
    let mut sessions: Vec<Raw> = sources.iter().map(|s| raw_from(&server, s)).collect();
    // All three wait on the range's one port at the same time.
    let addresses: Vec<SocketAddr> = sessions
        .iter_mut()
        .map(|ftp| {
            ftp.login_anonymous();
            ftp.epsv()
        })
        .collect();
    assert!(
        addresses.iter().all(|a| a.port() == server.passive.0),
        "{addresses:?}"
    );
    // A second session from 127.0.0.1 cannot wait there too: 425 once the wait is over.
    let mut same = raw_from(&server, "127.0.0.1");
    same.login_anonymous();
    let started = Instant::now();
    let reply = same.cmd("EPSV");
    assert!(reply.starts_with("425"), "{reply:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Data connections in the opposite order, all before any RETR: each must still reach the
    // session of its own address.
    let mut data: Vec<TcpStream> = sources
        .iter()
        .zip(&addresses)
        .rev()
        .map(|(source, address)| data_from(source, *address))
        .collect();
    data.reverse();
    for (i, ftp) in sessions.iter_mut().enumerate() {
        ftp.send(&format!("RETR f{i}"));
    }
    for (i, (ftp, data)) in sessions.iter_mut().zip(data.iter_mut()).enumerate() {
        let start = ftp.read_reply();
        assert!(start.starts_with("150"), "{start:?}");
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        assert_eq!(
            bytes,
            format!("file {i} ").repeat(50_000).into_bytes(),
            "session {i}"
        );
        assert_eq!(ftp.read_reply(), "226 Transfer complete.\r\n");
    }
    // Once 127.0.0.1's first session has its connection, the port is free for its second.
    let (bytes, end) = same.transfer_in("RETR f0");
    assert_eq!(bytes.len(), 350_000);
    assert_eq!(end, "226 Transfer complete.\r\n");
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_passive_ports_exhausted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ftp_data_connections_refused_total 0"),
        "{metrics}"
    );
}

#[test]
fn a_connection_from_an_address_nobody_waits_for_is_refused_on_a_shared_port() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        passive_ports: 1,
        config_toml: Some("[limits]\ndata_connect_timeout_seconds = 3\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("f"), "payload").unwrap();
    let mut first = raw_from(&server, "127.0.0.2");
    first.login_anonymous();
    let address = first.epsv();
    let mut second = raw_from(&server, "127.0.0.3");
    second.login_anonymous();
    assert_eq!(second.epsv(), address);
    // 127.0.0.4 has no session waiting: closed, counted, and nobody's data goes to it.
    let mut thief = data_from("127.0.0.4", address);
    thief
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty());
    let mut data = data_from("127.0.0.2", address);
    let start = first.cmd("RETR f");
    assert!(start.starts_with("150"), "{start:?}");
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"payload");
    assert_eq!(first.read_reply(), "226 Transfer complete.\r\n");
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_data_connections_refused_total 1"),
        "{metrics}"
    );
}
