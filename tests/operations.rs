//! What operators and clients rely on beyond the core protocol: the audit log and its metrics,
//! HOST, MFMT, SITE CHMOD, symlinks in listings.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Options, Server};

fn rw_server(config: &str) -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        config_toml: Some(format!(
            "{config}[limits]\nlogin_failure_delay_millis = 10\n"
        )),
        ..Default::default()
    })
}

/// The server log's audit lines, as JSON objects.
fn audit_lines(server: &Server) -> Vec<serde_json::Value> {
    server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect()
}

fn find<'a>(
    lines: &'a [serde_json::Value],
    event: &str,
    key: &str,
    value: &str,
) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|line| line["fields"]["event"] == event && line["fields"][key] == value)
        .unwrap_or_else(|| panic!("no {event} line with {key}={value} in {lines:#?}"))
}

#[test]
fn every_login_transfer_and_change_is_audited_and_counted() {
    let server = rw_server("");
    let mut ftp = server.raw();
    ftp.expect("USER alice", "331");
    ftp.expect("PASS wrong", "530");
    ftp.login("alice", "wonderland");
    assert!(
        ftp.transfer_out("STOR up.bin", &[7u8; 1000])
            .starts_with("226")
    );
    let (bytes, _) = ftp.transfer_in("RETR up.bin");
    assert_eq!(bytes.len(), 1000);
    ftp.expect("MKD d", "257");
    ftp.expect("RNFR up.bin", "350");
    ftp.expect("RNTO d/moved.bin", "250");
    ftp.expect("DELE d/moved.bin", "250");
    ftp.expect("DELE d/missing", "550");
    ftp.expect("RMD d", "250");
    ftp.expect("QUIT", "221");
    std::thread::sleep(std::time::Duration::from_millis(200));

    let lines = audit_lines(&server);
    let failed = find(&lines, "login", "result", "failed");
    assert_eq!(failed["fields"]["user"], "alice");
    assert_eq!(failed["fields"]["client"], "127.0.0.1");
    find(&lines, "login", "result", "ok");
    let upload = find(&lines, "transfer", "direction", "upload");
    assert_eq!(upload["fields"]["path"], "/up.bin");
    assert_eq!(upload["fields"]["bytes"], 1000);
    assert_eq!(upload["fields"]["result"], "ok");
    assert_eq!(upload["fields"]["user"], "alice");
    assert!(upload["fields"]["seconds"].as_f64().is_some());
    let download = find(&lines, "transfer", "direction", "download");
    assert_eq!(download["fields"]["bytes"], 1000);
    let rename = find(&lines, "file_change", "operation", "rename");
    assert_eq!(rename["fields"]["path"], "/up.bin");
    assert_eq!(rename["fields"]["to"], "/d/moved.bin");
    find(&lines, "file_change", "operation", "mkdir");
    find(&lines, "file_change", "operation", "rmdir");
    let deletes: Vec<_> = lines
        .iter()
        .filter(|line| line["fields"]["operation"] == "delete")
        .map(|line| line["fields"]["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deletes, ["ok", "failed"]);

    let (_, metrics) = server.http_get("/metrics");
    for expected in [
        "ftp_logins_total{result=\"failed\"} 1",
        "ftp_logins_total{result=\"ok\"} 1",
        "ftp_transfers_total{direction=\"upload\",result=\"ok\"} 1",
        "ftp_transfers_total{direction=\"download\",result=\"ok\"} 1",
        "ftp_file_changes_total{operation=\"rename\",result=\"ok\"} 1",
        "ftp_file_changes_total{operation=\"delete\",result=\"ok\"} 1",
        "ftp_file_changes_total{operation=\"delete\",result=\"failed\"} 1",
        "ftp_file_changes_total{operation=\"mkdir\",result=\"ok\"} 1",
        "ftp_file_changes_total{operation=\"rmdir\",result=\"ok\"} 1",
        "ftp_transfer_seconds_total{direction=\"upload\"}",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
}

#[test]
fn host_is_accepted_before_login_only() {
    let server = rw_server("");
    let mut ftp = server.raw();
    assert!(ftp.cmd("FEAT").contains(" HOST\r\n"));
    ftp.expect("HOST ftp.example.com", "220");
    ftp.login("alice", "wonderland");
    ftp.expect("HOST other.example.com", "503");
    // curl sends nothing of the kind, lftp neither; a HOST-sending session still works fully.
    let (bytes, end) = ftp.transfer_in("LIST");
    assert!(end.starts_with("226"), "{end:?}");
    assert!(bytes.is_empty());
}

#[test]
fn mfmt_sets_the_modification_time() {
    let server = rw_server("");
    std::fs::write(server.path("f"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    assert!(ftp.cmd("FEAT").contains(" MFMT\r\n"));
    assert_eq!(
        ftp.cmd("MFMT 20200102030405 f"),
        "213 Modify=20200102030405; f\r\n"
    );
    assert_eq!(ftp.cmd("MDTM f"), "213 20200102030405\r\n");
    let modified = std::fs::metadata(server.path("f"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        modified
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1_577_934_245
    );
    ftp.expect("MFMT 20200102030405 missing", "550");
    ftp.expect("MFMT nonsense f", "501");
}

#[test]
fn site_chmod_is_off_by_default_and_limited_to_permission_bits() {
    let server = rw_server("");
    std::fs::write(server.path("f"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    ftp.expect("SITE CHMOD 600 f", "502");
    let mode = std::fs::metadata(server.path("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o777, 0o600);

    let server = rw_server("site_chmod = true\n");
    std::fs::write(server.path("f"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    ftp.expect("SITE CHMOD 600 f", "200");
    let mode = std::fs::metadata(server.path("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    ftp.expect("SITE CHMOD 4755 f", "501");
    ftp.expect("SITE CHMOD 600 missing", "550");
}

#[test]
fn site_chmod_needs_a_writable_login() {
    let server = Server::start(Options {
        users: vec![("reader", "books", false)],
        config_toml: Some("site_chmod = true\n".into()),
        ..Default::default()
    });
    std::fs::write(server.path("f"), "x").unwrap();
    let mut ftp = server.raw();
    ftp.login("reader", "books");
    ftp.expect("SITE CHMOD 777 f", "550");
}

#[test]
fn listings_show_symlinks_as_symlinks() {
    let server = rw_server("");
    std::fs::write(server.path("real.txt"), "0123456789").unwrap();
    std::fs::create_dir(server.path("dir")).unwrap();
    std::os::unix::fs::symlink("real.txt", server.path("file-link")).unwrap();
    std::os::unix::fs::symlink("dir", server.path("dir-link")).unwrap();
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let (list, _) = ftp.transfer_in("LIST");
    let list = String::from_utf8(list).unwrap();
    let line = list.lines().find(|l| l.contains("file-link")).unwrap();
    assert!(
        line.starts_with('l') && line.ends_with(" file-link -> real.txt"),
        "{line}"
    );
    assert!(list.contains(" dir-link -> dir"), "{list}");
    let (mlsd, _) = ftp.transfer_in("MLSD");
    let mlsd = String::from_utf8(mlsd).unwrap();
    let link = mlsd.lines().find(|l| l.ends_with(" file-link")).unwrap();
    assert!(link.starts_with("type=OS.unix=symlink;"), "{link}");
    let real = mlsd.lines().find(|l| l.ends_with(" real.txt")).unwrap();
    assert!(real.starts_with("type=file;size=10;"), "{real}");
    // A link is still followed for the file itself.
    let (bytes, _) = ftp.transfer_in("RETR file-link");
    assert_eq!(bytes, b"0123456789");
}

#[test]
fn a_config_table_may_omit_keys() {
    let server = Server::start(Options {
        config_toml: Some("[anonymous]\nenabled = true\n[keepalive]\nidle_seconds = 30\n".into()),
        ..Default::default()
    });
    let mut ftp = server.raw();
    ftp.login_anonymous();
    ftp.expect("MKD x", "550");
}
