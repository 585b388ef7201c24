//! The controller's reachability probe against a real ftp-server on loopback: the probe account
//! rendered into the server's config (`probe_user`), sessions as the controller runs them, and
//! the PassiveReachable condition they give; for a server with SFTP, the SFTP session and the
//! SftpReachable condition.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Options, Server};
use ftp_operator::controller::probe::account::ProbeAccount;
use ftp_operator::controller::probe::results::{
    ProbeObservation, ReadyReplicas, ServerProbe, Slices, passive_reachable, sftp_reachable,
};
use ftp_operator::controller::probe::session::SessionTarget;
use ftp_operator::controller::probe::sftp_session::{SftpTarget, probe_sftp};
use ftp_operator::controller::probe::{ProbeMetrics, round};
use ftp_operator::ftp::config::PassiveRange;

/// A server with the probe account in its config file, advertising `public_address`.
fn server(account: &ProbeAccount, public_address: &str, tls: bool) -> Server {
    Server::start(Options {
        config_toml: Some(format!(
            "public_address = {public_address:?}\n[probe_user]\nname = {:?}\npassword_hash = {:?}\n",
            account.user, account.password_hash
        )),
        users: vec![("alice", "wonderland", true)],
        tls,
        args: if tls {
            vec!["--require-tls".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    })
}

fn target(server: &Server, user: &str, password: &str, tls: bool) -> SessionTarget {
    SessionTarget {
        host: "127.0.0.1".into(),
        control_port: server.port,
        user: user.into(),
        password: password.into(),
        tls,
        step_timeout: Duration::from_secs(3),
    }
}

fn one_replica() -> ReadyReplicas {
    BTreeMap::from([(0, "files-0".to_owned())])
}

/// A round as the controller runs it, and the condition it gives.
async fn condition(
    server: &Server,
    target: &SessionTarget,
) -> (&'static str, &'static str, String) {
    let slices = Slices {
        passive: PassiveRange::new(server.passive.0, server.passive.1).unwrap(),
        per_replica: None,
    };
    let metrics = ProbeMetrics::default();
    let sessions = round(target, slices, &one_replica(), &metrics).await;
    let mut probe = ServerProbe::default();
    probe.record_round(&target.endpoint(), &sessions, slices, &one_replica());
    passive_reachable(
        &ProbeObservation::Probed(probe),
        Some("127.0.0.1"),
        &one_replica(),
    )
}

#[tokio::test]
async fn a_good_server_is_reachable() {
    let account = ProbeAccount::generate().unwrap();
    let server = server(&account, "127.0.0.1", false);
    let target = target(&server, &account.user, &account.password, false);
    let (status, reason, message) = condition(&server, &target).await;
    assert_eq!((status, reason), ("True", "Reachable"), "{message}");
    assert_eq!(
        message,
        format!(
            "127.0.0.1:{}: probe login, EPSV and PASV listings work on replica(s) 0",
            server.port
        )
    );
    // The probe's home is its own: the users' files are not in its listing, and it may not
    // download or upload.
    std::fs::write(server.root.path().join("secret.txt"), "x").unwrap();
    let mut ftp = suppaftp::FtpStream::connect(("127.0.0.1", server.port)).unwrap();
    ftp.login(&account.user, &account.password).unwrap();
    assert!(ftp.list(None).unwrap().is_empty());
    assert!(ftp.retr_as_buffer("/secret.txt").is_err());
    assert!(
        ftp.put_file("up.txt", &mut std::io::Cursor::new(b"x"))
            .is_err()
    );
}

#[tokio::test]
async fn a_server_that_requires_tls_is_probed_over_auth_tls() {
    let account = ProbeAccount::generate().unwrap();
    let server = server(&account, "127.0.0.1", true);
    let plain = target(&server, &account.user, &account.password, false);
    let (status, reason, _) = condition(&server, &plain).await;
    assert_eq!((status, reason), ("False", "LoginFailed"));
    let secure = target(&server, &account.user, &account.password, true);
    let (status, reason, message) = condition(&server, &secure).await;
    assert_eq!((status, reason), ("True", "Reachable"), "{message}");
}

#[tokio::test]
async fn a_wrong_advertised_address_fails_at_the_pasv_data_connection() {
    let account = ProbeAccount::generate().unwrap();
    // 127.0.0.2 is loopback, but the server listens on 127.0.0.1 only: nothing answers there.
    let server = server(&account, "127.0.0.2", false);
    let target = target(&server, &account.user, &account.password, false);
    let (status, reason, message) = condition(&server, &target).await;
    assert_eq!(
        (status, reason),
        ("False", "DataConnectionFailed"),
        "{message}"
    );
    // EPSV (the control connection's address) worked; PASV's advertised address did not.
    assert!(
        message.starts_with("replica 0 (files-0): PASV data connection to 127.0.0.2:"),
        "{message}"
    );
    let port: u16 = message
        .trim_start_matches("replica 0 (files-0): PASV data connection to 127.0.0.2:")
        .split(' ')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {message}"));
    assert!(
        (server.passive.0..=server.passive.1).contains(&port),
        "{message}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_login_failure_and_ends_the_round() {
    let account = ProbeAccount::generate().unwrap();
    let server = server(&account, "127.0.0.1", false);
    let target = target(&server, &account.user, "not-the-password", false);
    let slices = Slices {
        passive: PassiveRange::new(server.passive.0, server.passive.1).unwrap(),
        per_replica: None,
    };
    let sessions = round(&target, slices, &one_replica(), &ProbeMetrics::default()).await;
    assert_eq!(sessions.len(), 1, "a failed login must end the round");
    let (status, reason, message) = condition(&server, &target).await;
    assert_eq!((status, reason), ("False", "LoginFailed"));
    assert_eq!(
        message,
        format!(
            "login as the probe account at 127.0.0.1:{}: 530 Login incorrect.",
            server.port
        )
    );
}

#[tokio::test]
async fn nothing_listening_is_a_control_connection_failure() {
    let port = common::free_port();
    let target = SessionTarget {
        host: "127.0.0.1".into(),
        control_port: port,
        user: "u".into(),
        password: "p".into(),
        tls: false,
        step_timeout: Duration::from_secs(2),
    };
    let report = ftp_operator::controller::probe::session::probe_session(&target).await;
    let failure = report.outcome.unwrap_err();
    assert_eq!(failure.step.reason(), "ControlConnectionFailed");
    assert!(
        failure.describe().contains(&format!("127.0.0.1:{port}")),
        "{}",
        failure.describe()
    );
}

/// A server with SFTP and the probe account, its host keys made by `ftp-server
/// generate-host-key` as the controller's Secret holds them; returns the server, its SFTP port
/// and the public halves of its keys.
fn sftp_server(
    account: &ProbeAccount,
    keys: &tempfile::TempDir,
) -> (Server, u16, Vec<russh::keys::PublicKey>) {
    let files = host_keys(keys);
    let port = common::free_port();
    let server = Server::start(Options {
        config_toml: Some(format!(
            "public_address = \"127.0.0.1\"\n[probe_user]\nname = {:?}\npassword_hash = {:?}\n\
             [sftp]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nhost_key_files = [{:?}, {:?}]\n",
            account.user, account.password_hash, files[0], files[1]
        )),
        users: vec![("alice", "wonderland", true)],
        ..Default::default()
    });
    (server, port, public_keys(&files))
}

/// Two host keys (ed25519, ECDSA P-256) in `dir`.
fn host_keys(dir: &tempfile::TempDir) -> [std::path::PathBuf; 2] {
    ["ed25519", "ecdsa-p256"].map(|kind| {
        let path = dir.path().join(kind);
        let output = std::process::Command::new(common::BIN)
            .args(["generate-host-key", "--type", kind, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        path
    })
}

fn public_keys(files: &[std::path::PathBuf]) -> Vec<russh::keys::PublicKey> {
    files
        .iter()
        .map(|file| {
            russh::keys::PrivateKey::from_openssh(std::fs::read(file).unwrap())
                .unwrap()
                .public_key()
                .clone()
        })
        .collect()
}

fn sftp_target(
    port: u16,
    account: &ProbeAccount,
    host_keys: Vec<russh::keys::PublicKey>,
) -> SftpTarget {
    SftpTarget {
        host: "127.0.0.1".into(),
        port,
        user: account.user.clone(),
        password: account.password.clone(),
        host_keys,
        step_timeout: Duration::from_secs(3),
    }
}

/// One SFTP session as a round runs it, and the SftpReachable condition it gives.
async fn sftp_condition(target: &SftpTarget) -> (&'static str, &'static str, String) {
    let probe = ServerProbe {
        sftp: Some((target.endpoint(), probe_sftp(target).await)),
        ..ServerProbe::default()
    };
    sftp_reachable(
        &ProbeObservation::Probed(probe),
        Some("127.0.0.1"),
        &one_replica(),
    )
}

#[tokio::test]
async fn sftp_with_the_secrets_host_keys_is_reachable() {
    let account = ProbeAccount::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (_server, port, public) = sftp_server(&account, &keys);
    let (status, reason, message) = sftp_condition(&sftp_target(port, &account, public)).await;
    assert_eq!((status, reason), ("True", "Reachable"), "{message}");
    assert!(
        message.starts_with(&format!("127.0.0.1:{port}: ")),
        "{message}"
    );
}

#[tokio::test]
async fn a_host_key_that_is_not_the_secrets_is_reported_before_clients_refuse_it() {
    let account = ProbeAccount::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (_server, port, _) = sftp_server(&account, &keys);
    // The keys of another server, as a Secret replaced behind the pods' back would hold.
    let other = tempfile::tempdir().unwrap();
    let expected = public_keys(&host_keys(&other));
    let (status, reason, message) = sftp_condition(&sftp_target(port, &account, expected)).await;
    assert_eq!(
        (status, reason),
        ("False", "SftpHostKeyMismatch"),
        "{message}"
    );
    assert!(
        message.contains("SHA256:"),
        "the message names the key: {message}"
    );
}

#[tokio::test]
async fn sftp_login_and_connection_failures_name_their_step() {
    let account = ProbeAccount::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (_server, port, public) = sftp_server(&account, &keys);
    let mut wrong = sftp_target(port, &account, public.clone());
    wrong.password = "not-the-probe-password".into();
    let (status, reason, message) = sftp_condition(&wrong).await;
    assert_eq!((status, reason), ("False", "SftpLoginFailed"), "{message}");
    let nobody = sftp_target(common::free_port(), &account, public);
    let (status, reason, message) = sftp_condition(&nobody).await;
    assert_eq!(
        (status, reason),
        ("False", "SftpConnectionFailed"),
        "{message}"
    );
}
