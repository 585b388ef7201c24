//! The command line is the user interface: flag names, the hash-password tool, clear errors.

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn help_lists_every_flag_by_its_contract_name() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen <ADDR:PORT>",
        "--root <DIR>",
        "--passive-ports <MIN-MAX>",
        "--public-address <HOST>",
        "--anonymous",
        "--users <FILE>",
        "--keepalive-idle <SECS>",
        "--keepalive-interval <SECS>",
        "--keepalive-probes <N>",
        "--tls-cert <FILE>",
        "--tls-key <FILE>",
        "--require-tls",
        "--metrics-listen <ADDR:PORT>",
        "--config <FILE>",
        "hash-password",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn hash_password_prints_an_argon2id_phc_string() {
    let hash = common::hash_password("correct horse\n");
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert_ne!(
        hash,
        common::hash_password("correct horse\n"),
        "salt is not random"
    );
}

#[test]
fn bad_configuration_fails_with_a_message_saying_what_to_fix() {
    let output = Command::new(BIN).args(["--root", "/tmp"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--passive-ports"));
    let output = Command::new(BIN)
        .args(["--root", "/tmp", "--passive-ports", "30000-20000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("MIN-MAX"));
    let output = Command::new(BIN)
        .args([
            "--root",
            "/nonexistent/dir",
            "--passive-ports",
            "30000-30001",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/dir"));
}
