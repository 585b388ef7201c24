//! Every command and reply format, checked byte for byte with a raw control connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Options, Server};

fn rw_server() -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true), ("reader", "books", false)],
        ..Default::default()
    })
}

#[test]
fn greeting_feat_syst_help_and_simple_commands() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        ..Default::default()
    });
    let mut ftp = server.raw();
    assert_eq!(ftp.greeting, "220 ftp-server ready.\r\n");
    let feat = ftp.cmd("FEAT");
    assert!(feat.starts_with("211-Features:\r\n"), "{feat:?}");
    assert!(feat.ends_with("\r\n211 End\r\n"), "{feat:?}");
    for feature in [
        " EPSV\r\n",
        " MDTM\r\n",
        " SIZE\r\n",
        " REST STREAM\r\n",
        " UTF8\r\n",
        " MLST type*;size*;modify*;perm*;unique*;\r\n",
    ] {
        assert!(feat.contains(feature), "FEAT lacks {feature:?}: {feat:?}");
    }
    assert!(!feat.contains("AUTH TLS"), "no TLS configured: {feat:?}");
    assert_eq!(ftp.cmd("SYST"), "215 UNIX Type: L8\r\n");
    assert_eq!(ftp.cmd("OPTS UTF8 ON"), "200 Always in UTF8 mode.\r\n");
    assert_eq!(ftp.cmd("NOOP"), "200 NOOP ok.\r\n");
    let help = ftp.cmd("HELP");
    assert!(
        help.starts_with("214-") && help.ends_with("214 Help OK.\r\n"),
        "{help:?}"
    );
    // Before login, file commands are refused.
    ftp.expect("PWD", "530");
    ftp.expect("LIST", "530");
    ftp.login_anonymous();
    assert_eq!(ftp.cmd("PWD"), "257 \"/\" is the current directory\r\n");
    ftp.expect("TYPE I", "200");
    ftp.expect("TYPE A", "200");
    ftp.expect("TYPE X", "504");
    ftp.expect("STRU F", "200");
    ftp.expect("STRU R", "504");
    ftp.expect("MODE S", "200");
    ftp.expect("MODE B", "504");
    ftp.expect("FOOBAR", "500");
    ftp.expect("RETR", "501");
    ftp.expect("ABOR", "225");
    let stat = ftp.cmd("STAT");
    assert!(
        stat.starts_with("211-") && stat.ends_with("211 End of status\r\n"),
        "{stat:?}"
    );
    assert_eq!(ftp.cmd("QUIT"), "221 Goodbye.\r\n");
}

#[test]
fn anonymous_is_read_only_and_off_by_default() {
    let server = rw_server();
    let mut ftp = server.raw();
    ftp.expect("USER anonymous", "331");
    ftp.expect("PASS a@b", "530");

    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        ..Default::default()
    });
    std::fs::write(server.path("f.txt"), "data").unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    ftp.expect("MKD new", "550");
    ftp.expect("DELE f.txt", "550");
    ftp.expect("RNFR f.txt", "550");
    ftp.expect("STOR x", "550");
    ftp.expect("APPE f.txt", "550");
    let (bytes, end) = ftp.transfer_in("RETR f.txt");
    assert_eq!(bytes, b"data");
    assert!(end.starts_with("226"), "{end:?}");
    assert!(server.path("f.txt").exists());
}

#[test]
fn directories_files_and_metadata() {
    let server = rw_server();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    assert_eq!(ftp.cmd("MKD we\"ird"), "257 \"/we\"\"ird\" created\r\n");
    ftp.expect("CWD we\"ird", "250");
    assert_eq!(
        ftp.cmd("PWD"),
        "257 \"/we\"\"ird\" is the current directory\r\n"
    );
    ftp.expect("CDUP", "250");
    ftp.expect("RMD we\"ird", "250");
    ftp.expect("CWD missing", "550");
    ftp.expect("MKD sub", "257");
    ftp.expect("CWD /sub", "250");
    let end = ftp.transfer_out("STOR file.bin", b"0123456789");
    assert_eq!(end, "226 Transfer complete.\r\n");
    assert_eq!(ftp.cmd("SIZE file.bin"), "213 10\r\n");
    let mdtm = ftp.cmd("MDTM file.bin");
    assert!(
        mdtm.starts_with("213 20") && mdtm.trim_end().len() == 18,
        "{mdtm:?}"
    );
    ftp.expect("SIZE /sub", "550");
    ftp.expect("SIZE nothing", "550");
    // APPE extends, REST + RETR resumes.
    assert!(ftp.transfer_out("APPE file.bin", b"abc").starts_with("226"));
    assert_eq!(
        std::fs::read(server.path("sub/file.bin")).unwrap(),
        b"0123456789abc"
    );
    ftp.expect("REST 10", "350");
    let (bytes, _) = ftp.transfer_in("RETR file.bin");
    assert_eq!(bytes, b"abc");
    // REST then STOR resumes an upload at the offset.
    ftp.expect("REST 4", "350");
    assert!(ftp.transfer_out("STOR file.bin", b"XY").starts_with("226"));
    assert_eq!(
        std::fs::read(server.path("sub/file.bin")).unwrap(),
        b"0123XY"
    );
    // Listings.
    let (list, end) = ftp.transfer_in("LIST");
    let list = String::from_utf8(list).unwrap();
    assert!(
        list.starts_with("-rw-r--r--") && list.trim_end().ends_with(" file.bin"),
        "{list:?}"
    );
    assert!(end.starts_with("226"));
    let (names, _) = ftp.transfer_in("NLST");
    assert_eq!(names, b"file.bin\r\n");
    // mget sends a pattern.
    let (names, _) = ftp.transfer_in("NLST *.bin");
    assert_eq!(names, b"file.bin\r\n");
    let (names, _) = ftp.transfer_in("NLST /sub/f*");
    assert_eq!(names, b"/sub/file.bin\r\n");
    let (mlsd, _) = ftp.transfer_in("MLSD");
    let mlsd = String::from_utf8(mlsd).unwrap();
    assert!(mlsd.contains("type=cdir;"), "{mlsd:?}");
    assert!(mlsd.contains("type=file;size=6;modify="), "{mlsd:?}");
    assert!(mlsd.contains("; file.bin\r\n"), "{mlsd:?}");
    let mlst = ftp.cmd("MLST file.bin");
    assert!(
        mlst.starts_with("250-Listing /sub/file.bin\r\n type=file;size=6;"),
        "{mlst:?}"
    );
    assert!(mlst.ends_with(" /sub/file.bin\r\n250 End\r\n"), "{mlst:?}");
    let stat = ftp.cmd("STAT file.bin");
    assert!(
        stat.starts_with("213-Status of /sub/file.bin:\r\n")
            && stat.ends_with("213 End of status\r\n"),
        "{stat:?}"
    );
    // Rename, delete, STOU.
    ftp.expect("RNTO x", "503");
    ftp.expect("RNFR file.bin", "350");
    ftp.expect("RNTO renamed.bin", "250");
    assert!(server.path("sub/renamed.bin").exists());
    ftp.expect("DELE renamed.bin", "250");
    ftp.expect("DELE renamed.bin", "550");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    let start = ftp.cmd("STOU");
    assert!(
        start.starts_with("150") && start.contains("FILE: stou-"),
        "{start:?}"
    );
    data.write_all(b"unique").unwrap();
    drop(data);
    assert!(ftp.read_reply().starts_with("226"));
    let name = start
        .split("FILE: ")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .trim();
    assert_eq!(
        std::fs::read(server.path("sub").join(name)).unwrap(),
        b"unique"
    );
    ftp.expect("RMD /sub", "550");
}

#[test]
fn read_only_user_cannot_write() {
    let server = rw_server();
    let mut ftp = server.raw();
    ftp.login("reader", "books");
    ftp.expect("MKD x", "550");
    ftp.expect("STOR y", "550");
}

#[test]
fn pasv_advertises_the_public_address() {
    let server = Server::start(Options {
        args: vec![
            "--anonymous".into(),
            "--public-address".into(),
            "192.0.2.10".into(),
        ],
        ..Default::default()
    });
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let reply = ftp.expect("PASV", "227");
    let prefix = "227 Entering Passive Mode (192,0,2,10,";
    assert!(
        reply.starts_with(prefix) && reply.ends_with(").\r\n"),
        "{reply:?}"
    );
    let numbers: Vec<u16> = reply[prefix.len()..reply.len() - 4]
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    let port = numbers[0] * 256 + numbers[1];
    assert!(
        (server.passive.0..=server.passive.1).contains(&port),
        "port {port} outside {:?}",
        server.passive
    );
    // EPSV carries only the port.
    let reply = ftp.expect("EPSV", "229");
    assert!(
        reply.starts_with("229 Entering Extended Passive Mode (|||") && reply.ends_with("|)\r\n"),
        "{reply:?}"
    );
    ftp.expect("EPSV 2", "522");
    ftp.expect("EPSV ALL", "200");
    ftp.expect("PASV", "503");
    ftp.expect("EPSV", "229");

    // A DNS name is resolved when the reply is made.
    let server = Server::start(Options {
        args: vec![
            "--anonymous".into(),
            "--public-address".into(),
            "localhost".into(),
        ],
        ..Default::default()
    });
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let reply = ftp.expect("PASV", "227");
    assert!(
        reply.starts_with("227 Entering Passive Mode (127,0,0,1,"),
        "{reply:?}"
    );
}

#[test]
fn passive_ports_exhausted_gives_425_and_a_metric() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        passive_ports: 1,
        ..Default::default()
    });
    let mut first = server.raw();
    first.login_anonymous();
    first.expect("EPSV", "229");
    let mut second = server.raw();
    second.login_anonymous();
    let reply = second.expect("EPSV", "425");
    assert!(reply.contains("No passive port free"), "{reply:?}");
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_passive_ports_exhausted_total 1"),
        "{metrics}"
    );
}

#[test]
fn paths_cannot_escape_the_root() {
    let server = rw_server();
    let outside = server
        .root
        .path()
        .parent()
        .unwrap()
        .join(format!("outside-{}", server.port));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), server.path("link-file")).unwrap();
    std::os::unix::fs::symlink(&outside, server.path("link-dir")).unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let relative = format!("../outside-{}/secret", server.port);
    let absolute = outside.join("secret").display().to_string();
    for path in [
        relative.as_str(),
        absolute.as_str(),
        "link-file",
        "link-dir/secret",
        "/../../../../etc/passwd",
    ] {
        ftp.expect(&format!("SIZE {path}"), "550");
        ftp.expect(&format!("RETR {path}"), "550");
    }
    ftp.expect("CWD link-dir", "550");
    // With a data connection ready, so the refusal is about the path.
    let data = ftp.epsv();
    let _connected = TcpStream::connect(data).unwrap();
    ftp.expect("STOR link-dir/planted", "550");
    ftp.expect("MKD link-dir/planted", "550");
    ftp.expect("CWD ../../..", "250");
    assert_eq!(ftp.cmd("PWD"), "257 \"/\" is the current directory\r\n");
    ftp.expect("RNFR link-file", "350");
    ftp.expect("RNTO ../escaped", "250");
    // The rename stayed inside: `..` at the top is the top.
    assert!(server.path("escaped").is_symlink());
    assert!(!outside.join("planted").exists());
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn data_connection_from_another_address_is_refused() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some("[limits]\ndata_connect_timeout_seconds = 2\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("f"), "payload").unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let address = ftp.epsv();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.2:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.connect(&address.into()).unwrap();
    let mut thief: TcpStream = socket.into();
    thief
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ftp.send("RETR f");
    let reply = ftp.read_reply();
    assert!(reply.starts_with("425"), "{reply:?}");
    let mut stolen = Vec::new();
    let _ = thief.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "data went to another address");
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_data_connections_refused_total 1"),
        "{metrics}"
    );
    // The rightful client still gets it.
    let (bytes, _) = ftp.transfer_in("RETR f");
    assert_eq!(bytes, b"payload");
}

#[test]
fn port_and_eprt_are_refused_and_never_bounce() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        ..Default::default()
    });
    let mut ftp = server.raw();
    ftp.login_anonymous();
    ftp.expect("PORT 127,0,0,1,200,10", "502");
    ftp.expect("EPRT |1|127.0.0.1|51210|", "502");

    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some("[active_mode]\nenabled = true\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("f"), "active").unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    ftp.expect("PORT 192,0,2,1,200,10", "500");
    ftp.expect("EPRT |1|192.0.2.1|51210|", "500");
    ftp.expect("PORT 127,0,0,1,0,21", "500");
    // To the client's own address it works.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    ftp.expect(&format!("EPRT |1|127.0.0.1|{port}|"), "200");
    ftp.send("RETR f");
    let (mut data, _) = listener.accept().unwrap();
    assert!(ftp.read_reply().starts_with("150"));
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"active");
    assert!(ftp.read_reply().starts_with("226"));
}

#[test]
fn interrupted_upload_keeps_the_old_file_and_leaves_no_partial_file() {
    let server = rw_server();
    std::fs::write(server.path("report.csv"), "old contents").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR report.csv", "150");
    (&data).write_all(&vec![b'x'; 300_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The client dies: the connection is reset, not closed.
    socket2::SockRef::from(&data)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(data);
    let reply = ftp.read_reply();
    assert!(reply.starts_with("426"), "{reply:?}");
    assert_eq!(
        std::fs::read(server.path("report.csv")).unwrap(),
        b"old contents"
    );
    let names: Vec<_> = std::fs::read_dir(server.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["report.csv"], "leftover files");
    // A complete upload replaces it.
    assert!(
        ftp.transfer_out("STOR report.csv", b"new")
            .starts_with("226")
    );
    assert_eq!(std::fs::read(server.path("report.csv")).unwrap(), b"new");

    // The control connection vanishing mid-upload discards it too.
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR report.csv", "150");
    data.write_all(b"partial").unwrap();
    drop(ftp);
    std::thread::sleep(Duration::from_millis(300));
    drop(data);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(server.path("report.csv")).unwrap(), b"new");
    assert_eq!(std::fs::read_dir(server.root.path()).unwrap().count(), 1);
}

#[test]
fn abor_stops_a_running_download() {
    let server = rw_server();
    std::fs::write(server.path("big"), vec![7u8; 64 * 1024 * 1024]).unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("RETR big", "150");
    let mut chunk = [0u8; 1024];
    data.read_exact(&mut chunk).unwrap();
    let abort = ftp.cmd("ABOR");
    assert!(abort.starts_with("426"), "{abort:?}");
    assert!(ftp.read_reply().starts_with("226"));
    ftp.expect("NOOP", "200");
}

#[test]
fn bad_input_gets_clear_replies() {
    let server = rw_server();
    let mut ftp = server.raw();
    let long = format!("USER {}", "a".repeat(10_000));
    ftp.expect(&long, "500");
    ftp.stream.write_all(b"RETR \xff\xfe\r\n").unwrap();
    assert!(ftp.read_reply().starts_with("5"));
    ftp.expect("PORT 1,2,3", "501");
    ftp.login("alice", "wonderland");
    ftp.expect("REST abc", "501");
    ftp.expect("PORT 999,1,1,1,1,1", "501");
    ftp.expect("RETR nul\0byte", "553");
    ftp.expect("NOOP", "200");
}

#[test]
fn failed_logins_do_not_reveal_users_and_lock_out_the_address() {
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        config_toml: Some("[limits]\nlogin_failure_delay_millis = 10\nlogin_failures_before_lockout = 3\nlockout_seconds = 60\n".into()),
        ..Default::default()
    });
    let mut ftp = server.raw();
    let known = ftp.cmd("USER alice");
    let wrong = ftp.cmd("PASS nope");
    let unknown = ftp.cmd("USER mallory");
    let wrong_unknown = ftp.cmd("PASS nope");
    assert_eq!(known, unknown);
    assert_eq!(wrong, wrong_unknown);
    assert_eq!(wrong, "530 Login incorrect.\r\n");
    // The third failure, on a new connection, locks the address out.
    let mut ftp = server.raw();
    ftp.expect("USER alice", "331");
    ftp.expect("PASS nope", "421");
    let mut ftp = server.raw();
    ftp.expect("USER alice", "421");
    let (_, metrics) = server.http_get("/metrics");
    // The address is locked out (three failures), neither name (two for alice, one for
    // mallory); the labels say which kind, never which address or name.
    for line in [
        "ftp_logins_total{result=\"failed\"} 3",
        "ftp_lockouts_total{subject=\"network\"} 1",
        "ftp_lockouts_total{subject=\"user\"} 0",
        "ftp_lockouts_active{subject=\"network\"} 1",
        "ftp_lockouts_active{subject=\"user\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    assert!(!metrics.contains("127.0.0.1") && !metrics.contains("alice"));
}

#[test]
fn session_limits_and_idle_timeout() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some(
            "[limits]\nmax_sessions_per_address = 2\nidle_timeout_seconds = 2\n".into(),
        ),
        ..Default::default()
    });
    let _one = server.raw();
    let _two = server.raw();
    let three = server.raw();
    assert!(three.greeting.starts_with("421"), "{:?}", three.greeting);
    drop(_one);
    std::thread::sleep(Duration::from_millis(200));
    let mut four = server.raw();
    assert!(four.greeting.starts_with("220"));
    // Idle for longer than the limit: closed with 421.
    std::thread::sleep(Duration::from_secs(3));
    let reply = four.read_reply();
    assert!(reply.starts_with("421 Timeout"), "{reply:?}");
}

#[test]
fn idle_timeout_never_cuts_a_transfer() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some("[limits]\nidle_timeout_seconds = 1\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("big"), vec![1u8; 8 * 1024 * 1024]).unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("RETR big", "150");
    // Read slowly for longer than the idle timeout.
    let mut total = 0;
    let mut buffer = vec![0u8; 256 * 1024];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        total += data.read(&mut buffer).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).unwrap();
    assert_eq!(total + rest.len(), 8 * 1024 * 1024);
    assert!(ftp.read_reply().starts_with("226"));
}

#[test]
fn total_session_limit() {
    let server = Server::start(Options {
        args: vec!["--anonymous".into()],
        config_toml: Some("[limits]\nmax_sessions = 2\n".into()),
        ..Default::default()
    });
    let _one = server.raw();
    let _two = server.raw();
    let three = server.raw();
    assert_eq!(
        three.greeting,
        "421 Too many connections; try again later.\r\n",
        "server log:\n{}",
        server.log()
    );
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_sessions_refused_total{result=\"total\"} 1"),
        "{metrics}"
    );
}

#[test]
fn quit_during_an_upload_waits_for_it() {
    let server = rw_server();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR kept.bin", "150");
    data.write_all(&[5u8; 100_000]).unwrap();
    ftp.send("QUIT");
    std::thread::sleep(Duration::from_millis(200));
    drop(data);
    assert_eq!(ftp.read_reply(), "226 Transfer complete.\r\n");
    assert_eq!(ftp.read_reply(), "221 Goodbye.\r\n");
    assert_eq!(
        std::fs::read(server.path("kept.bin")).unwrap().len(),
        100_000
    );
}

#[test]
fn ipv6_control_connection_uses_epsv() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let metrics_port = common::free_port();
    let passive = common::free_range(5);
    std::fs::write(root.path().join("six"), "over ipv6").unwrap();
    let args = vec![
        "--listen".to_string(),
        format!("[::1]:{port}"),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
        "--root".into(),
        root.path().display().to_string(),
        "--passive-ports".into(),
        format!("{}-{}", passive.0, passive.1),
        "--anonymous".into(),
    ];
    let _server = Server::spawn(args, root, state, port, metrics_port, passive);
    let mut ftp = common::Raw::connect_to(format!("[::1]:{port}").parse().unwrap());
    ftp.login_anonymous();
    ftp.expect("PASV", "425");
    ftp.expect("EPSV 1", "522");
    let (bytes, end) = ftp.transfer_in("RETR six");
    assert_eq!(bytes, b"over ipv6");
    assert!(end.starts_with("226"), "{end:?}");
}

#[test]
fn abor_during_an_upload_discards_it() {
    let server = rw_server();
    std::fs::write(server.path("doc"), "original").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR doc", "150");
    data.write_all(&[1u8; 50_000]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let reply = ftp.cmd("ABOR");
    assert!(reply.starts_with("426"), "{reply:?}");
    assert!(ftp.read_reply().starts_with("226"));
    assert_eq!(std::fs::read(server.path("doc")).unwrap(), b"original");
    assert_eq!(std::fs::read_dir(server.root.path()).unwrap().count(), 1);
    ftp.expect("NOOP", "200");
}
