//! The served-config report across the seam: a real ftp-server whose users file is edited into
//! one it cannot load keeps its old users and says so on its metrics port, and the controller's
//! own client (`served::ask`) reads that report; older clients still get the digest alone.

mod common;

use std::time::{Duration, Instant};

use ftp_operator::controller::served::{Answer, ask};
use ftp_operator::ftp::config::{
    InputFile, PassiveRange, ServedConfig, ServerConfig, config_digest,
};

use common::{Server, hash_password};

/// Asks until `done` holds for the answer, for at most 15 s (the server polls every 2 s).
async fn ask_until(address: &str, done: impl Fn(&ServedConfig) -> bool) -> ServedConfig {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = ask(address).await;
        if let Answer::Serves(served) = &answer
            && done(served)
        {
            return served.clone();
        }
        assert!(Instant::now() < deadline, "last answer: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_users_file_the_server_cannot_load_is_reported_with_its_line_until_fixed() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (common::free_port(), common::free_port());
    let passive = common::free_range(3);
    let users = state.path().join("users");
    let hash = hash_password("pw");
    std::fs::write(&users, format!("carol:{hash}:rw\n")).unwrap();
    let mut config = ServerConfig::new(
        root.path(),
        PassiveRange::new(passive.0, passive.1).unwrap(),
    );
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.metrics_listen = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    config.public_address = Some("127.0.0.1".into());
    config.users_file = Some(users.clone());
    let text = config.render();
    let path = state.path().join("ftp-server.toml");
    std::fs::write(&path, &text).unwrap();
    let server = Server::spawn(
        vec!["--config".into(), path.display().to_string()],
        root,
        state,
        port,
        metrics_port,
        passive,
    );
    let address = format!("127.0.0.1:{metrics_port}");
    let digest = config_digest(text.as_bytes());

    let served = ask_until(&address, |served| served.digest.is_some()).await;
    assert_eq!(
        served,
        ServedConfig {
            digest: Some(digest.clone()),
            rejected: None
        }
    );

    // Line 2's hash is argon2i, which the server refuses.
    std::fs::write(
        &users,
        format!(
            "carol:{hash}:rw\nmallory:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ:rw\n"
        ),
    )
    .unwrap();
    let served = ask_until(&address, |served| served.rejected.is_some()).await;
    let rejected = served.rejected.unwrap();
    assert_eq!((rejected.file, rejected.line), (InputFile::Users, Some(2)));
    assert!(
        rejected.reason.contains("not argon2id"),
        "{}",
        rejected.reason
    );
    assert_eq!(served.digest.as_deref(), Some(digest.as_str()));
    // A client that asks for text (an older operator) still gets the digest alone.
    let (status, response) = server.http_get("/config-digest");
    assert_eq!(status, 200);
    assert!(response.trim_end().ends_with(&digest), "{response}");
    // The old users still log in.
    let mut session = server.raw();
    assert!(session.cmd("USER carol").starts_with("331"));
    assert!(session.cmd("PASS pw").starts_with("230"));

    std::fs::write(&users, format!("carol:{hash}:rw\nmallory:{hash}:ro\n")).unwrap();
    ask_until(&address, |served| served.rejected.is_none()).await;
}
