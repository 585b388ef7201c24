//! Per-user homes and permissions from the users file, and anonymous's own home: each login is
//! confined to its home as every session is to the root, and may do only what its line allows.

mod common;

use common::{Options, Server, hash_password};

/// A server whose users file holds exactly `lines` (`{hash}` stands for the hash of "pw").
fn server_with_users(lines: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users");
    std::fs::write(&users, lines.replace("{hash}", &hash_password("pw"))).unwrap();
    let mut args = vec!["--users".to_owned(), users.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start(Options {
        args,
        ..Default::default()
    });
    (server, users_dir)
}

#[test]
fn each_user_is_confined_to_a_home_of_their_own() {
    let (server, _users) = server_with_users(
        "alice:{hash}:rw:homes/alice\nbob:{hash}:rw:/homes/bob\nroot:{hash}\n",
        &[],
    );
    std::fs::create_dir_all(server.path("homes/bob")).unwrap();
    std::fs::write(server.path("homes/bob/private.txt"), "bob's").unwrap();
    std::fs::write(server.path("top.txt"), "top").unwrap();

    let mut alice = server.raw();
    alice.login("alice", "pw");
    // Created at the first login, and it is "/" to her.
    assert!(server.path("homes/alice").is_dir());
    assert_eq!(alice.cmd("PWD"), "257 \"/\" is the current directory\r\n");
    assert_eq!(
        alice.transfer_out("STOR mine.txt", b"alice's"),
        "226 Transfer complete.\r\n"
    );
    assert_eq!(
        std::fs::read(server.path("homes/alice/mine.txt")).unwrap(),
        b"alice's"
    );
    for escape in [
        "RETR ../bob/private.txt",
        "RETR /../../top.txt",
        "RETR ../../top.txt",
        "RETR top.txt",
    ] {
        alice.expect("EPSV", "229");
        let reply = alice.cmd(escape);
        assert!(reply.starts_with("550"), "{escape}: {reply:?}");
    }
    alice.expect("CWD ..", "250");
    assert_eq!(alice.cmd("PWD"), "257 \"/\" is the current directory\r\n");
    alice.expect("DELE ../bob/private.txt", "550");
    assert!(server.path("homes/bob/private.txt").exists());
    let (listing, _) = alice.transfer_in("NLST");
    assert_eq!(String::from_utf8_lossy(&listing), "mine.txt\r\n");
    // A symlink planted in her home cannot lead her out of it.
    std::os::unix::fs::symlink("../bob", server.path("homes/alice/to-bob")).unwrap();
    alice.expect("CWD to-bob", "550");

    let mut bob = server.raw();
    bob.login("bob", "pw");
    let (bytes, _) = bob.transfer_in("RETR private.txt");
    assert_eq!(bytes, b"bob's");

    // A line without a home (today's format) still sees the whole root.
    let mut root = server.raw();
    root.login("root", "pw");
    let (bytes, _) = root.transfer_in("RETR homes/alice/mine.txt");
    assert_eq!(bytes, b"alice's");
}

#[test]
fn permissions_allow_exactly_what_the_line_says() {
    let (server, _users) = server_with_users(
        "reader:{hash}:ro\nlister:{hash}:list\nmaker:{hash}:list,upload,mkdir,rename\n",
        &[],
    );
    std::fs::write(server.path("f.txt"), "original").unwrap();

    let mut reader = server.raw();
    reader.login("reader", "pw");
    let (bytes, _) = reader.transfer_in("RETR f.txt");
    assert_eq!(bytes, b"original");
    for refused in [
        "STOR g.txt",
        "DELE f.txt",
        "MKD d",
        "RNFR f.txt",
        "RMD x",
        "APPE f.txt",
    ] {
        let reply = reader.cmd(refused);
        assert!(
            reply.starts_with("550 Permission denied: this login may not"),
            "{refused}: {reply:?}"
        );
    }

    let mut lister = server.raw();
    lister.login("lister", "pw");
    let (listing, _) = lister.transfer_in("NLST");
    assert_eq!(String::from_utf8_lossy(&listing), "f.txt\r\n");
    lister.expect("SIZE f.txt", "213");
    lister.expect(
        "RETR f.txt",
        "550 Permission denied: this login may not download",
    );

    let mut maker = server.raw();
    maker.login("maker", "pw");
    maker.expect("MKD made", "257");
    assert_eq!(
        maker.transfer_out("STOR made/new.txt", b"new"),
        "226 Transfer complete.\r\n"
    );
    // Without `delete`, nothing that exists may be replaced: not by an upload, an append, a
    // resumed upload or a rename.
    for replace in ["STOR f.txt", "APPE f.txt"] {
        maker.expect("EPSV", "229");
        let reply = maker.cmd(replace);
        assert!(
            reply.starts_with("550") && reply.contains("replace"),
            "{replace}: {reply:?}"
        );
    }
    maker.expect("REST 3", "350");
    maker.expect("EPSV", "229");
    maker.expect("STOR f.txt", "550");
    maker.expect("RNFR made/new.txt", "350");
    maker.expect("RNTO f.txt", "550");
    maker.expect("RNFR made/new.txt", "350");
    maker.expect("RNTO renamed.txt", "250");
    maker.expect(
        "DELE renamed.txt",
        "550 Permission denied: this login may not delete",
    );
    maker.expect(
        "RETR renamed.txt",
        "550 Permission denied: this login may not download",
    );
    assert_eq!(std::fs::read(server.path("f.txt")).unwrap(), b"original");
    assert_eq!(std::fs::read(server.path("renamed.txt")).unwrap(), b"new");
}

#[test]
fn incoming_users_drop_files_they_cannot_see_or_overwrite() {
    let (server, _users) = server_with_users("drop:{hash}:incoming:incoming\n", &[]);
    let mut drop = server.raw();
    drop.login("drop", "pw");
    assert_eq!(
        drop.transfer_out("STOR report.csv", b"a,b\n"),
        "226 Transfer complete.\r\n"
    );
    assert_eq!(
        std::fs::read(server.path("incoming/report.csv")).unwrap(),
        b"a,b\n"
    );
    drop.expect("EPSV", "229");
    let reply = drop.cmd("STOR report.csv");
    assert!(
        reply.starts_with("550") && reply.contains("replace"),
        "{reply:?}"
    );
    for refused in [
        "LIST",
        "NLST",
        "MLSD",
        "RETR report.csv",
        "SIZE report.csv",
        "DELE report.csv",
        "MKD d",
    ] {
        let reply = drop.cmd(refused);
        assert!(
            reply.starts_with("550 Permission denied"),
            "{refused}: {reply:?}"
        );
    }
    // STOU always makes a new name, so it is allowed.
    let reply = drop.transfer_out("STOU", b"unique");
    assert_eq!(reply, "226 Transfer complete.\r\n");
    assert_eq!(
        std::fs::read_dir(server.path("incoming")).unwrap().count(),
        2
    );
    assert_eq!(
        std::fs::read(server.path("incoming/report.csv")).unwrap(),
        b"a,b\n"
    );
}

#[test]
fn anonymous_has_a_home_of_its_own() {
    let server = Server::start(Options {
        config_toml: Some("[anonymous]\nenabled = true\nwritable = false\nhome = \"pub\"\n".into()),
        ..Default::default()
    });
    std::fs::create_dir_all(server.path("pub")).unwrap();
    std::fs::write(server.path("pub/readme.txt"), "public").unwrap();
    std::fs::write(server.path("private.txt"), "private").unwrap();
    let mut ftp = server.raw();
    ftp.login_anonymous();
    let (bytes, _) = ftp.transfer_in("RETR readme.txt");
    assert_eq!(bytes, b"public");
    ftp.expect("EPSV", "229");
    ftp.expect("RETR ../private.txt", "550");
    ftp.expect("CWD /", "250");
    let (listing, _) = ftp.transfer_in("NLST");
    assert_eq!(String::from_utf8_lossy(&listing), "readme.txt\r\n");
}

#[test]
fn a_bad_access_field_is_refused_at_load_with_its_line() {
    let users_dir = tempfile::tempdir().unwrap();
    let users = users_dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "ok:{}:ro\nbad:{}:write\n",
            hash_password("pw"),
            hash_password("pw")
        ),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["--root"])
        .arg(root.path())
        .args([
            "--passive-ports",
            "30000-30001",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--users",
        ])
        .arg(&users)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("incoming"),
        "{stderr}"
    );
}
