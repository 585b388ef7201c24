//! Logins the way real clients make them: passwords hashed by `ftp-server hash-password` at its
//! default (memory-hard) cost, many sessions of one user at once, many clients behind one
//! address, and guessers from elsewhere. Each test fails on the defect it names.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{Options, Raw, Server};

/// `ftp_logins_total{result="..."}` as the server's metrics say now.
fn logins(server: &Server, result: &str) -> u64 {
    let (status, text) = server.http_get("/metrics");
    assert_eq!(status, 200, "{text}");
    let series = format!("ftp_logins_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} series in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Connects from `source`, sends USER and PASS, and returns the PASS reply's first line (and
/// lists the home after a `230`, so the session is really usable).
fn try_login(source: [u8; 4], port: u16, user: &str, password: &str) -> String {
    let mut raw = Raw::connect_from(source, port);
    let reply = raw.cmd(&format!("USER {user}"));
    if !reply.starts_with("331") {
        return reply.lines().next().unwrap_or_default().to_owned();
    }
    let reply = raw.cmd(&format!("PASS {password}"));
    if reply.starts_with("230") {
        raw.expect("PWD", "257");
        raw.expect("QUIT", "221");
    }
    reply.lines().next().unwrap_or_default().to_owned()
}

/// Runs `count` logins at once (released together by a barrier) and returns their replies.
fn at_once(
    count: usize,
    port: u16,
    login: impl Fn(usize) -> ([u8; 4], &'static str, &'static str) + Send + Sync + 'static,
) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(count));
    let login = Arc::new(login);
    let clients: Vec<_> = (0..count)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let login = Arc::clone(&login);
            thread::spawn(move || {
                let (source, user, password) = login(i);
                barrier.wait();
                try_login(source, port, user, password)
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

fn server() -> Server {
    Server::start(Options {
        users: vec![("alice", "right-password", true)],
        ..Default::default()
    })
}

#[test]
fn fifty_right_passwords_from_one_address_all_log_in() {
    let server = server();
    let replies = at_once(50, server.port, |_| {
        ([127, 0, 0, 1], "alice", "right-password")
    });
    let refused: Vec<_> = replies.iter().filter(|r| !r.starts_with("230")).collect();
    assert!(
        refused.is_empty(),
        "{} of 50 refused: {refused:?}",
        refused.len()
    );
    assert_eq!(logins(&server, "ok"), 50);
    assert_eq!(logins(&server, "failed"), 0);
}

#[test]
fn fifty_guesses_at_once_from_one_address_get_only_the_threshold_verified() {
    let server = server();
    let replies = at_once(50, server.port, |_| ([127, 0, 0, 1], "alice", "guess"));
    // The default threshold is 5: five guesses are checked, the others refused unverified.
    assert_eq!(logins(&server, "failed"), 5, "{replies:?}");
    assert_eq!(logins(&server, "locked"), 45, "{replies:?}");
    let locked = replies
        .iter()
        .filter(|r| r.starts_with("421 Too many failed logins"))
        .count();
    assert!(locked >= 45, "{replies:?}");
    // And the address stays locked, even for the right password.
    assert!(try_login([127, 0, 0, 1], server.port, "alice", "right-password").starts_with("421"));
}

#[test]
fn guesses_for_a_user_from_other_addresses_do_not_lock_out_her_right_password() {
    let server = Server::start(Options {
        users: vec![("alice", "right-password", true)],
        // Guessers the throttle holds back give up here rather than at the default minute.
        config_toml: Some("[limits]\nlogin_timeout_seconds = 10\n".into()),
        ..Default::default()
    });
    // 100 wrong guesses for alice at once, from 20 addresses, five each.
    let port = server.port;
    let attack = thread::spawn(move || {
        at_once(100, port, |i| {
            ([127, 0, 1, 1 + (i % 20) as u8], "alice", "guess")
        })
    });
    // While they run, alice logs in from a clean address.
    thread::sleep(std::time::Duration::from_millis(500));
    let reply = try_login([127, 0, 2, 1], server.port, "alice", "right-password");
    assert!(
        reply.starts_with("230"),
        "alice from a clean address: {reply}"
    );
    let replies = attack.join().unwrap();
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("530") || r.starts_with("421")),
        "{replies:?}"
    );
    // The attack was real: every address had at least its first guess checked.
    let failed = logins(&server, "failed");
    assert!((20..=100).contains(&failed), "{failed} guesses checked");
    assert_eq!(logins(&server, "ok"), 1);
}
