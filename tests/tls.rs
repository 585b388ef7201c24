//! Explicit FTPS (AUTH TLS, PBSZ, PROT) with curl, ftplib, lftp and suppaftp; --require-tls;
//! certificate reload.

mod common;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Options, Server, assert_ftplib_session, make_certificate, run_ok};

fn tls_server(extra: &[&str]) -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        tls: true,
        args: extra.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn cert(server: &Server) -> String {
    server.state.path().join("cert.pem").display().to_string()
}

#[test]
fn curl_with_ssl_reqd_uses_protected_data_and_resumes_the_session() {
    let server = tls_server(&["--require-tls"]);
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let local = server.state.path().join("up.bin");
    std::fs::write(&local, &payload).unwrap();
    let url = format!("{}/up.bin", server.url());
    let base = ["-sS", "--ssl-reqd", "-k", "--user", "alice:wonderland"];
    run_ok(
        "curl",
        &[&base[..], &["-T", local.to_str().unwrap(), &url]].concat(),
    );
    assert_eq!(std::fs::read(server.path("up.bin")).unwrap(), payload);
    let output = run_ok("curl", &[&base[..], &["-v", &url]].concat());
    assert_eq!(output.stdout, payload);
    let verbose = String::from_utf8_lossy(&output.stderr);
    assert!(verbose.contains("PROT P"), "{verbose}");
    // The data connection's handshake resumed the control session (no second certificate).
    assert!(verbose.contains("SSL re-using session ID"), "{verbose}");
    assert_eq!(verbose.matches("Certificate (11)").count(), 1, "{verbose}");
    let listing = run_ok(
        "curl",
        &[&base[..], &[format!("{}/", server.url()).as_str()]].concat(),
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("up.bin"));
    // Without TLS the server refuses to log in at all.
    let plain = std::process::Command::new("curl")
        .args(["-sS", "--user", "alice:wonderland", &url])
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("530") || !plain.stderr.is_empty());
}

#[test]
fn require_tls_refuses_plain_login_and_clear_data() {
    let server = tls_server(&["--require-tls"]);
    let mut ftp = server.raw();
    let feat = ftp.cmd("FEAT");
    assert!(
        feat.contains(" AUTH TLS\r\n") && feat.contains(" PROT\r\n") && feat.contains(" PBSZ\r\n"),
        "{feat:?}"
    );
    let reply = ftp.cmd("USER alice");
    assert!(
        reply.starts_with("530") && reply.contains("AUTH TLS"),
        "{reply:?}"
    );
    ftp.expect("PBSZ 0", "503");
    ftp.expect("PROT P", "503");
    assert_eq!(ftp.cmd("AUTH TLS"), "234 Proceed with negotiation.\r\n");
}

#[test]
fn ftplib_ftp_tls_with_prot_p_resuming_the_session() {
    let server = tls_server(&["--require-tls"]);
    assert_ftplib_session(server.port, &["tls-resume", &cert(&server)]);
}

#[test]
fn stock_ftplib_needs_the_session_reuse_opt_out() {
    let server = tls_server(&["--require-tls", "--require-tls-session-reuse", "false"]);
    assert_ftplib_session(server.port, &["tls", &cert(&server)]);
    // With the default, its fresh data sessions are refused.
    let strict = tls_server(&["--require-tls"]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/ftplib_session.py"
    );
    let output = std::process::Command::new("python3")
        .args([
            script,
            "127.0.0.1",
            &strict.port.to_string(),
            "alice",
            "wonderland",
            "tls",
        ])
        .arg(cert(&strict))
        .output()
        .unwrap();
    assert!(!output.status.success());
    // ftplib sees the refusal as a dropped TLS connection (or the 522 reply), the server says why.
    let log = strict.log();
    assert!(log.contains("refused a protected data connection"), "{log}");
}

#[test]
fn lftp_over_tls() {
    let server = tls_server(&["--require-tls"]);
    std::fs::write(server.path("hello.txt"), "secret hello\n").unwrap();
    let back = server.state.path().join("back.txt");
    let script = format!(
        "set ftp:fix-pasv-address false; set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:verify-certificate false; set net:max-retries 1; set net:timeout 10; \
         open -u alice,wonderland ftp://127.0.0.1:{}; get hello.txt -o {}; put {} -o copy.txt; cls; bye",
        server.port,
        back.display(),
        back.display()
    );
    let output = run_ok("lftp", &["-c", &script]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("copy.txt"));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "secret hello\n");
    assert_eq!(
        std::fs::read_to_string(server.path("copy.txt")).unwrap(),
        "secret hello\n"
    );
}

fn client_config(cert_path: &std::path::Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn suppaftp_tls_login(
    server: &Server,
    trust: &std::path::Path,
) -> Result<suppaftp::RustlsFtpStream, suppaftp::FtpError> {
    let ftp = suppaftp::RustlsFtpStream::connect(("127.0.0.1", server.port))?;
    let connector = suppaftp::RustlsConnector::from(client_config(trust));
    let mut ftp = ftp.into_secure(connector, "localhost")?;
    ftp.login("alice", "wonderland")?;
    Ok(ftp)
}

#[test]
fn suppaftp_over_tls_and_certificate_reload() {
    let server = tls_server(&[]);
    let first = server.state.path().join("first.pem");
    std::fs::copy(cert(&server), &first).unwrap();
    let mut ftp = suppaftp_tls_login(&server, &first).unwrap();
    ftp.put_file("t.bin", &mut Cursor::new(vec![9u8; 50_000]))
        .unwrap();
    assert_eq!(
        ftp.retr_as_buffer("t.bin").unwrap().into_inner(),
        vec![9u8; 50_000]
    );

    // Replace the certificate files: new sessions get the new certificate, the open one goes on.
    let fresh = tempfile::tempdir().unwrap();
    make_certificate(fresh.path(), "cert.pem", "key.pem");
    std::fs::copy(
        fresh.path().join("key.pem"),
        server.state.path().join("key.pem"),
    )
    .unwrap();
    std::fs::copy(
        fresh.path().join("cert.pem"),
        server.state.path().join("cert.pem"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if suppaftp_tls_login(&server, &fresh.path().join("cert.pem")).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate never served; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        suppaftp_tls_login(&server, &first).is_err(),
        "old certificate still served"
    );
    assert_eq!(
        ftp.retr_as_buffer("t.bin").unwrap().into_inner().len(),
        50_000
    );
    ftp.quit().unwrap();
}

/// A TLS server that also serves implicit FTPS; returns it with the implicit port.
fn implicit_tls_server(extra: &[&str]) -> (Server, u16) {
    let implicit = common::free_port();
    let listen = format!("127.0.0.1:{implicit}");
    let args: Vec<&str> = [&["--implicit-tls-listen", listen.as_str()][..], extra].concat();
    (tls_server(&args), implicit)
}

#[test]
fn implicit_ftps_with_curl_and_lftp() {
    let (server, implicit) = implicit_tls_server(&["--require-tls"]);
    let payload: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
    let local = server.state.path().join("up.bin");
    std::fs::write(&local, &payload).unwrap();
    // ftps:// is implicit FTPS to curl: TLS from the first byte, then PBSZ/PROT P.
    let url = format!("ftps://127.0.0.1:{implicit}/up.bin");
    let base = [
        "-sS",
        "--cacert",
        &cert(&server),
        "--user",
        "alice:wonderland",
    ];
    run_ok(
        "curl",
        &[&base[..], &["-T", local.to_str().unwrap(), &url]].concat(),
    );
    assert_eq!(std::fs::read(server.path("up.bin")).unwrap(), payload);
    let output = run_ok("curl", &[&base[..], &["-v", &url]].concat());
    assert_eq!(output.stdout, payload);
    let verbose = String::from_utf8_lossy(&output.stderr);
    assert!(verbose.contains("PROT P"), "{verbose}");
    assert!(!verbose.contains("AUTH TLS"), "{verbose}");

    let back = server.state.path().join("back.bin");
    let script = format!(
        "set ftp:fix-pasv-address false; set ssl:verify-certificate false; \
         set net:max-retries 1; set net:timeout 10; \
         open -u alice,wonderland ftps://127.0.0.1:{implicit}; get up.bin -o {}; cls; bye",
        back.display()
    );
    let output = run_ok("lftp", &["-c", &script]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("up.bin"));
    assert_eq!(std::fs::read(&back).unwrap(), payload);

    // Plain FTP on the implicit port gets no FTP greeting, only a failed handshake.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", implicit)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"USER alice\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!answer.starts_with(b"220"), "{answer:?}");
}

#[test]
fn implicit_ftps_follows_a_certificate_reload() {
    let (server, implicit) = implicit_tls_server(&[]);
    let first = server.state.path().join("first.pem");
    std::fs::copy(cert(&server), &first).unwrap();
    std::fs::write(server.path("f.txt"), "reloaded").unwrap();
    let fetch = |trust: &std::path::Path| {
        std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(trust)
            .args([
                "--user",
                "alice:wonderland",
                &format!("ftps://127.0.0.1:{implicit}/f.txt"),
            ])
            .output()
            .unwrap()
    };
    common::require("curl");
    assert_eq!(fetch(&first).stdout, b"reloaded");
    let fresh = tempfile::tempdir().unwrap();
    make_certificate(fresh.path(), "cert.pem", "key.pem");
    for name in ["key.pem", "cert.pem"] {
        std::fs::copy(fresh.path().join(name), server.state.path().join(name)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while fetch(&fresh.path().join("cert.pem")).stdout != b"reloaded" {
        assert!(
            Instant::now() < deadline,
            "new certificate never served on the implicit port; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !fetch(&first).status.success(),
        "old certificate still served on the implicit port"
    );
}

fn suppaftp_tls_login_with(
    server: &Server,
    config: Arc<rustls::ClientConfig>,
) -> suppaftp::RustlsFtpStream {
    let ftp = suppaftp::RustlsFtpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut ftp = ftp
        .into_secure(suppaftp::RustlsConnector::from(config), "localhost")
        .unwrap();
    ftp.login("alice", "wonderland").unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .unwrap();
    ftp
}

/// rustls clients use each TLS 1.3 ticket once and keep at most 8 per server. The control
/// connection hands out 8 and every download or listing one more, so with session reuse required
/// (the default) a rustls client can download without end, but upload at most 8 times per control
/// connection: there is no ticket left for a ninth, whose full handshake is refused. The many
/// downloads first also check that their tickets never push out the control connection's.
#[test]
fn suppaftp_tls13_downloads_without_end_and_uploads_eight_times_per_control_connection() {
    let server = tls_server(&[]);
    std::fs::write(server.path("down.bin"), vec![7u8; 30_000]).unwrap();
    let config = client_config(std::path::Path::new(&cert(&server)));
    let mut ftp = suppaftp_tls_login_with(&server, Arc::clone(&config));
    for index in 0..20 {
        match ftp.retr_as_buffer("down.bin") {
            Ok(data) => assert_eq!(data.into_inner(), vec![7u8; 30_000]),
            Err(error) => panic!("download {index} failed: {error}; log:\n{}", server.log()),
        }
    }
    for index in 0..8u8 {
        let name = format!("up{index}.bin");
        if let Err(error) = ftp.put_file(&name, &mut Cursor::new(vec![index; 30_000])) {
            panic!("upload {index} failed: {error}; log:\n{}", server.log());
        }
        assert_eq!(
            std::fs::read(server.path(&name)).unwrap(),
            vec![index; 30_000]
        );
        // A listing in between is a download: it replaces its own ticket, adds none. After
        // the eighth upload no ticket is left, for a listing either.
        if index == 7 {
            break;
        }
        if let Err(error) = ftp.nlst(None) {
            panic!(
                "listing after upload {index} failed: {error}; log:\n{}",
                server.log()
            );
        }
    }
    // Refused: the client sees the 522 or, writing already, a broken pipe.
    let ninth = ftp.put_file("up8.bin", &mut Cursor::new(vec![8u8; 30_000]));
    assert!(
        ninth.is_err(),
        "a ninth upload without a ticket was accepted"
    );
    assert!(!server.path("up8.bin").exists());
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("ftp_data_connections_refused_total 1"),
        "{metrics}"
    );
    drop(ftp);
    // A new control connection brings new tickets.
    let mut ftp = suppaftp_tls_login_with(&server, config);
    ftp.put_file("again.bin", &mut Cursor::new(vec![1u8; 10]))
        .unwrap();
    ftp.quit().unwrap();
}

/// A rustls client that must upload more than 8 files on one control connection with session
/// reuse required speaks TLS 1.2 to this server: a TLS 1.2 session id resumes any number of times.
#[test]
fn suppaftp_tls12_uploads_twenty_files_in_a_row_with_session_reuse_required() {
    let server = tls_server(&[]);
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        for cert in CertificateDer::pem_file_iter(cert(&server)).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut ftp = suppaftp_tls_login_with(&server, Arc::new(config));
    for index in 0..20u8 {
        let name = format!("up{index}.bin");
        if let Err(error) = ftp.put_file(&name, &mut Cursor::new(vec![index; 30_000])) {
            panic!("upload {index} failed: {error}; log:\n{}", server.log());
        }
    }
    for index in 0..20u8 {
        assert_eq!(
            std::fs::read(server.path(&format!("up{index}.bin"))).unwrap(),
            vec![index; 30_000]
        );
    }
    ftp.quit().unwrap();
}
