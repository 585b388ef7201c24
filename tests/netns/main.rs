//! The proof with a load balancer that forgets.
//!
//! Each test builds its own three namespaces (scripts/netns-lb.sh): the client reaches our
//! `ftp-server` only through the balancer's virtual IP, and the balancer forgets a TCP flow idle for
//! `LB_TIMEOUT` seconds, dropping its later packets, as a cloud load balancer does. The client's link
//! is slowed so a transfer lasts several times that timeout, during which the control connection
//! carries nothing. The server namespace keeps the kernel's tcp_keepalive_time (7200 s), so only the
//! keepalive ftp-server sets on its own sockets can keep the control flow alive.
//!
//! Needs root; run with `cargo test --features netns-tests --test netns`. Without root or tools the
//! tests fail and say what is missing.

mod harness;

use std::time::Duration;

use ftp_operator::ftp::config::Keepalive;
use harness::{Lab, Transfer, sha256, write_random_file};

/// The balancer's conntrack timeout for established flows, seconds.
const LB_TIMEOUT: u32 = 3;
/// The client's link, both directions: 4000 kbit/s = 500 kB/s.
const LINK_KBIT: u32 = 4000;
/// 7 MB on that link: 14 s, more than four times the balancer's timeout.
const FILE_BYTES: usize = 7_000_000;

/// Keepalive well below the balancer's timeout: `spec.keepalive` of the test's FtpServer.
const KEEPALIVE_ON: Option<Keepalive> = Some(Keepalive {
    idle_seconds: 1,
    interval_seconds: 1,
    probes: 5,
});
/// The controller's rendering with `idle_seconds = 0`: a server that never turns keepalive on.
const KEEPALIVE_OFF: Option<Keepalive> = None;

fn lab(tag: &str, keepalive: Option<Keepalive>) -> Lab {
    let mut lab = Lab::up(tag, LB_TIMEOUT, LINK_KBIT);
    lab.start_server(keepalive);
    lab
}

/// Time a transfer that works may take: its link time, doubled, plus slack for a busy machine.
fn generous(lab: &Lab) -> Duration {
    lab.link_time(FILE_BYTES as u64) * 2 + Duration::from_secs(15)
}

/// Time after which a transfer that has not received its 226 has certainly lost it: the link time
/// plus several balancer timeouts (a 226 that can get through arrives within milliseconds).
fn patient(lab: &Lab) -> Duration {
    lab.link_time(FILE_BYTES as u64) + Duration::from_secs(u64::from(LB_TIMEOUT) * 3)
}

fn assert_long_enough(lab: &Lab, elapsed: Duration) {
    let needed = Duration::from_secs(u64::from(LB_TIMEOUT) * 3);
    assert!(
        elapsed >= needed,
        "the transfer took {elapsed:?}, not several times the balancer's {LB_TIMEOUT} s timeout \
         ({needed:?}): the test proves nothing (is the link shaped? {})",
        lab.name
    );
}

/// The client saw the transfer through: curl succeeded and the last reply was the 226.
fn assert_completed(lab: &Lab, what: &str, t: &Transfer) {
    eprintln!(
        "{what}, keepalive on: curl exit {} reply {:?} in {:?}",
        t.exit_code, t.reply, t.elapsed
    );
    assert_eq!(
        t.exit_code,
        0,
        "curl failed: {}\nserver log:\n{}",
        t.stderr,
        lab.server_log()
    );
    assert!(
        t.reply.starts_with("226 "),
        "last reply {:?}, wanted 226",
        t.reply
    );
}

/// The client never got the 226: it went out on the idle control connection, which the balancer
/// had forgotten, and was dropped there as a packet of a flow it no longer knows.
fn assert_lost_226(lab: &Lab, what: &str, t: &Transfer, dropped_before: u64) {
    eprintln!(
        "{what}, keepalive off: curl exit {} reply {:?} {} in {:?}",
        t.exit_code, t.reply, t.stderr, t.elapsed
    );
    assert_ne!(
        t.exit_code, 0,
        "curl succeeded: the balancer model does not bite"
    );
    assert!(
        !t.reply.starts_with("226 "),
        "got 226 although the control flow was idle for the whole transfer"
    );
    assert!(
        lab.balancer_dropped() > dropped_before,
        "the balancer dropped nothing: the failure has another cause"
    );
}

#[test]
fn slow_download_completes_with_keepalive() {
    let lab = lab("dl-on", KEEPALIVE_ON);
    let source = lab.root().join("big.bin");
    write_random_file(&source, FILE_BYTES);
    let target = lab.dir.path().join("downloaded.bin");
    let t = lab.curl(
        &["-o", target.to_str().unwrap(), &lab.url("big.bin")],
        generous(&lab),
    );
    assert_completed(&lab, "download", &t);
    assert_eq!(
        sha256(&target),
        sha256(&source),
        "the downloaded file differs"
    );
    assert_long_enough(&lab, t.elapsed);
}

#[test]
fn slow_download_loses_its_226_without_keepalive() {
    let lab = lab("dl-off", KEEPALIVE_OFF);
    let source = lab.root().join("big.bin");
    write_random_file(&source, FILE_BYTES);
    let target = lab.dir.path().join("downloaded.bin");
    let dropped_before = lab.balancer_dropped();
    let t = lab.curl(
        &["-o", target.to_str().unwrap(), &lab.url("big.bin")],
        patient(&lab),
    );
    assert_lost_226(&lab, "download", &t, dropped_before);
    // Every byte arrived all the same: only the 226 was lost.
    assert_eq!(
        sha256(&target),
        sha256(&source),
        "the data itself should have arrived intact"
    );
    assert_long_enough(&lab, t.elapsed);
}

#[test]
fn slow_upload_completes_with_keepalive() {
    let lab = lab("up-on", KEEPALIVE_ON);
    let source = lab.dir.path().join("upload.bin");
    write_random_file(&source, FILE_BYTES);
    let t = lab.curl(
        &["-T", source.to_str().unwrap(), &lab.url("uploaded.bin")],
        generous(&lab),
    );
    assert_completed(&lab, "upload", &t);
    assert_eq!(
        sha256(&lab.root().join("uploaded.bin")),
        sha256(&source),
        "the stored file differs"
    );
    assert_long_enough(&lab, t.elapsed);
}

#[test]
fn slow_upload_loses_its_226_without_keepalive() {
    let lab = lab("up-off", KEEPALIVE_OFF);
    let source = lab.dir.path().join("upload.bin");
    write_random_file(&source, FILE_BYTES);
    let dropped_before = lab.balancer_dropped();
    let t = lab.curl(
        &["-T", source.to_str().unwrap(), &lab.url("uploaded.bin")],
        patient(&lab),
    );
    assert_lost_226(&lab, "upload", &t, dropped_before);
    assert_long_enough(&lab, t.elapsed);
}
