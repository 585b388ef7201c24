//! Starts the real `ftp-server` binary on free loopback ports with a temporary root, and a small
//! raw FTP client for checking exact replies.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ftp-server");

/// Fails the test (never skips it) when a client program is missing.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run `sudo bash scripts/install-deps.sh` (Debian package list in scripts/deps/ftp.apt)"
    );
}

/// A free loopback port for one server, taken from 15000-19999: below the ranges `free_range`
/// hands out and below the kernel's ephemeral range, where any outgoing connection on the machine
/// (the other test lane's, a build's) may take a port between this check and the server's bind.
/// A port is handed out once per test process, so two tests never race for it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..500 {
        let port = 15000 + rand_u16() % 5000;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 15000-19999");
}

/// A run of `count` consecutive free ports, taken below the kernel's ephemeral range
/// (32768 and up by default) so that no port `free_port` hands out can fall inside it.
pub fn free_range(count: u16) -> (u16, u16) {
    for _ in 0..200 {
        let start = 20000 + (rand_u16() % (12000 - count));
        let listeners: Vec<_> = (start..start + count)
            .map(|port| TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if listeners.iter().all(|l| l.is_ok()) {
            return (start, start + count - 1);
        }
    }
    panic!("no free port range");
}

/// A pseudo-random number, different on every call and in every process.
fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish() as u16
}

pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Options for a test server.
#[derive(Default)]
pub struct Options {
    pub args: Vec<String>,
    /// Extra TOML appended to a config file (then `--config` is passed).
    pub config_toml: Option<String>,
    pub passive_ports: u16,
    /// `(name, password, rw)` accounts for a users file.
    pub users: Vec<(&'static str, &'static str, bool)>,
    pub tls: bool,
    /// Environment variables for the server process (beside the test's own).
    pub env: Vec<(String, String)>,
}

pub struct Server {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    pub passive: (u16, u16),
    pub root: tempfile::TempDir,
    /// Holds the config file, users file, certificates and the log.
    pub state: tempfile::TempDir,
}

impl Server {
    /// Starts a server on free ports; if another test took a port in between, tries again.
    pub fn start(options: Options) -> Server {
        Server::start_in(options, tempfile::tempdir().unwrap())
    }

    /// Starts a server whose root is the prepared directory `root`.
    pub fn start_in(options: Options, root: tempfile::TempDir) -> Server {
        let mut root = root;
        let mut state = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            match Server::try_start(&options, root, state) {
                Ok(server) => return server,
                Err((log, r, s)) => {
                    assert!(
                        log.contains("in use"),
                        "ftp-server did not start; log:\n{log}"
                    );
                    (root, state) = (r, s);
                }
            }
        }
        panic!("ftp-server found no free ports in 5 tries");
    }

    fn try_start(
        options: &Options,
        root: tempfile::TempDir,
        state: tempfile::TempDir,
    ) -> Result<Server, (String, tempfile::TempDir, tempfile::TempDir)> {
        let port = free_port();
        let metrics_port = free_port();
        let passive = free_range(if options.passive_ports == 0 {
            10
        } else {
            options.passive_ports
        });
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        if let Some(extra) = &options.config_toml {
            let path = state.path().join("ftp-server.toml");
            std::fs::write(
                &path,
                format!(
                    "root = {:?}\npassive_ports = {{ min = {}, max = {} }}\n{extra}",
                    root.path(),
                    passive.0,
                    passive.1
                ),
            )
            .unwrap();
            args.extend(["--config".into(), path.display().to_string()]);
        } else {
            args.extend([
                "--root".into(),
                root.path().display().to_string(),
                "--passive-ports".into(),
                format!("{}-{}", passive.0, passive.1),
            ]);
        }
        if !options.users.is_empty() {
            let path = state.path().join("users");
            let lines: String = options
                .users
                .iter()
                .map(|(name, password, rw)| {
                    format!(
                        "{name}:{}:{}\n",
                        hash_password(password),
                        if *rw { "rw" } else { "ro" }
                    )
                })
                .collect();
            std::fs::write(&path, lines).unwrap();
            args.extend(["--users".into(), path.display().to_string()]);
        }
        if options.tls {
            make_certificate(state.path(), "cert.pem", "key.pem");
            args.extend([
                "--tls-cert".into(),
                state.path().join("cert.pem").display().to_string(),
                "--tls-key".into(),
                state.path().join("key.pem").display().to_string(),
            ]);
        }
        args.extend(options.args.iter().cloned());
        Server::try_spawn(args, &options.env, root, state, port, metrics_port, passive)
    }

    /// Runs the binary with exactly `args` and waits until it listens on `port`.
    pub fn spawn(
        args: Vec<String>,
        root: tempfile::TempDir,
        state: tempfile::TempDir,
        port: u16,
        metrics_port: u16,
        passive: (u16, u16),
    ) -> Server {
        match Server::try_spawn(args, &[], root, state, port, metrics_port, passive) {
            Ok(server) => server,
            Err((log, _, _)) => panic!("ftp-server did not start; log:\n{log}"),
        }
    }

    fn try_spawn(
        args: Vec<String>,
        env: &[(String, String)],
        root: tempfile::TempDir,
        state: tempfile::TempDir,
        port: u16,
        metrics_port: u16,
        passive: (u16, u16),
    ) -> Result<Server, (String, tempfile::TempDir, tempfile::TempDir)> {
        let log = std::fs::File::create(state.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .args(&args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            port,
            metrics_port,
            passive,
            root,
            state,
        };
        if server.wait_listening() {
            return Ok(server);
        }
        let log = server.log();
        let root = std::mem::replace(&mut server.root, tempfile::tempdir().unwrap());
        let state = std::mem::replace(&mut server.state, tempfile::tempdir().unwrap());
        Err((log, root, state))
    }

    /// True once this very process listens (a port taken by another test's server does not
    /// count) and its probe session is gone; false if the process exited.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let probe = self
                .log()
                .contains("ftp-server listening")
                .then(|| {
                    TcpStream::connect(("127.0.0.1", self.port))
                        .or_else(|_| TcpStream::connect(("::1", self.port)))
                        .ok()
                })
                .flatten();
            if let Some(mut probe) = probe {
                // The probe connection is a session too (or, from a source trusted to send a
                // PROXY header, a connection the server drops). Tests that count sessions must
                // start from zero, and `ftp_sessions_active 0` alone is also what the server
                // reports before it has accepted the probe: so close our side and read until
                // the server has closed its own, then wait for the count to drop.
                let _ = probe.shutdown(std::net::Shutdown::Write);
                let _ = probe.set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(100)),
                ));
                let _ = probe.read_to_end(&mut Vec::new());
                while Instant::now() < deadline {
                    if TcpStream::connect(("127.0.0.1", self.metrics_port)).is_ok()
                        && self
                            .http_get("/metrics")
                            .1
                            .contains("ftp_sessions_active 0")
                    {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ftp-server did not start; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("ftp://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as the kubelet does when a pod stops.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the process to exit; returns whether it did in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn make_certificate(dir: &Path, cert: &str, key: &str) {
    require("openssl");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(dir.join(key))
        .arg("-out")
        .arg(dir.join(cert))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a certificate");
}

/// Runs a program, failing the test with its output if it fails.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    require(program);
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs tests/clients/ftplib_session.py as alice against `port` and checks that every step
/// behaved. `mode` is `["plain"]`, or `["tls", CAFILE]` for FTP_TLS with `PROT P`.
pub fn assert_ftplib_session(port: u16, mode: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/ftplib_session.py"
    );
    let port = port.to_string();
    let args: Vec<&str> = [script, "127.0.0.1", &port, "alice", "wonderland"]
        .into_iter()
        .chain(mode.iter().copied())
        .collect();
    let output = run_ok("python3", &args);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ftplib ok");
}

/// A raw control connection, to check replies byte for byte.
pub struct Raw {
    reader: BufReader<TcpStream>,
    pub stream: TcpStream,
    pub greeting: String,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw::connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn connect_to(address: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(address).unwrap())
    }

    /// Connects to the server on 127.0.0.1 from another loopback address, as a second client
    /// machine would.
    pub fn connect_from(source: [u8; 4], port: u16) -> Raw {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket
            .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        Raw::from_stream(socket.into())
    }

    /// A raw control connection over an already connected stream (e.g. from a chosen source).
    pub fn from_stream(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut raw = Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
            greeting: String::new(),
        };
        raw.greeting = raw.read_reply();
        raw
    }

    /// Reads one whole reply (all lines of a multi-line one).
    pub fn read_reply(&mut self) -> String {
        let mut text = String::new();
        let mut first = String::new();
        self.reader.read_line(&mut first).unwrap();
        text.push_str(&first);
        if first.len() >= 4 && &first[3..4] == "-" {
            let code = &first[..3];
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                text.push_str(&line);
                if line.starts_with(code) && &line[3..4] == " " {
                    break;
                }
            }
        }
        text
    }

    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.read_reply()
    }

    pub fn expect(&mut self, line: &str, code: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(code),
            "{line}: expected {code}, got {reply:?}"
        );
        reply
    }

    pub fn login_anonymous(&mut self) {
        self.expect("USER anonymous", "331");
        self.expect("PASS test@example.com", "230");
    }

    pub fn login(&mut self, user: &str, password: &str) {
        self.expect(&format!("USER {user}"), "331");
        self.expect(&format!("PASS {password}"), "230");
    }

    /// Sends EPSV and returns the data address to connect to.
    pub fn epsv(&mut self) -> SocketAddr {
        let reply = self.expect("EPSV", "229");
        let port: u16 = reply
            .split("|||")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad 229 reply {reply:?}"));
        SocketAddr::new(self.stream.peer_addr().unwrap().ip(), port)
    }

    /// Runs a data command over EPSV; returns the data received and the final reply.
    pub fn transfer_in(&mut self, command: &str) -> (Vec<u8>, String) {
        let address = self.epsv();
        let mut data = TcpStream::connect(address).unwrap();
        let start = self.cmd(command);
        assert!(start.starts_with("150"), "{command}: {start:?}");
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        let end = self.read_reply();
        (bytes, end)
    }

    /// Uploads `bytes` with `command` over EPSV; returns the final reply.
    pub fn transfer_out(&mut self, command: &str, bytes: &[u8]) -> String {
        let address = self.epsv();
        let mut data = TcpStream::connect(address).unwrap();
        let start = self.cmd(command);
        assert!(start.starts_with("150"), "{command}: {start:?}");
        data.write_all(bytes).unwrap();
        drop(data);
        self.read_reply()
    }
}

/// The keepalive timer `ss` shows for the server's end of connections on `port`.
pub fn keepalive_timers(port: u16) -> Vec<u64> {
    require("ss");
    let output = Command::new("ss")
        .args([
            "-tno",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split("timer:(keepalive,")
        .skip(1)
        .map(|rest| {
            let value = rest.split([',', ')']).next().unwrap();
            // Forms: "36sec", "1min3sec", "119min".
            let mut seconds = 0;
            let mut number = String::new();
            let mut unit = String::new();
            for c in value.chars() {
                if c.is_ascii_digit() {
                    if !unit.is_empty() {
                        seconds += unit_seconds(&number, &unit);
                        number.clear();
                        unit.clear();
                    }
                    number.push(c);
                } else {
                    unit.push(c);
                }
            }
            seconds + unit_seconds(&number, &unit)
        })
        .collect()
}

fn unit_seconds(number: &str, unit: &str) -> u64 {
    let n: u64 = number.parse().unwrap_or(0);
    match unit {
        "min" => n * 60,
        "ms" => 0,
        _ => n,
    }
}
