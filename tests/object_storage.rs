//! ftp-server on an S3 bucket: a real S3 server (moto's, installed by scripts/moto.sh into a
//! cache) on loopback, and the same real clients as tests/clients.rs against it, plus what object
//! storage must refuse and what an interrupted upload must leave (nothing).

mod common;

use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Options, Server, free_port, hash_password, keepalive_timers, run_ok};

const BUCKET: &str = "ftp-files";
const PREFIX: &str = "srv";

/// moto's S3 server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> S3Server {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto.sh");
        let ensured = run_ok("bash", &[script, "ensure"]);
        let binary = String::from_utf8(ensured.stdout).unwrap().trim().to_owned();
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut server = S3Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.request("GET", "/").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "moto's S3 server did not answer on port {port}"
            );
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "moto's S3 server exited"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One unsigned request (moto accepts those); `(0, "")` when nothing answers yet.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut text = String::new();
        if stream.read_to_string(&mut text).is_err() {
            return (0, String::new());
        }
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, text) = self.request("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "creating bucket {bucket}: {text}");
    }

    /// Every key in the bucket (one page is plenty for a test).
    fn keys(&self) -> Vec<String> {
        let (status, text) = self.request("GET", &format!("/{BUCKET}?list-type=2"));
        assert_eq!(status, 200, "{text}");
        xml_values(&text, "Key")
    }

    /// Keys of multipart uploads started and neither completed nor aborted.
    fn pending_uploads(&self) -> Vec<String> {
        let (status, text) = self.request("GET", &format!("/{BUCKET}?uploads"));
        assert_eq!(status, 200, "{text}");
        xml_values(&text, "Key")
    }

    /// The size of the object at `key`, from the listing (moto refuses unsigned object reads;
    /// contents are checked through the FTP server).
    fn object_size(&self, key: &str) -> Option<u64> {
        let (status, text) = self.request("GET", &format!("/{BUCKET}?list-type=2&prefix={key}"));
        assert_eq!(status, 200, "{text}");
        let keys = xml_values(&text, "Key");
        let sizes = xml_values(&text, "Size");
        keys.iter()
            .zip(sizes)
            .find(|(found, _)| *found == key)
            .and_then(|(_, size)| size.parse().ok())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xml_values(text: &str, tag: &str) -> Vec<String> {
    let pattern = regex::Regex::new(&format!("<{tag}>([^<]*)</{tag}>")).unwrap();
    pattern
        .captures_iter(text)
        .map(|c| c[1].to_owned())
        .collect()
}

/// The `[storage.s3]` table for `s3`'s bucket, with 5 MiB parts so a few MiB make a multipart
/// upload.
fn storage_toml(s3: &S3Server, bucket: &str) -> String {
    format!(
        "[storage.s3]\nbucket = {bucket:?}\nprefix = {PREFIX:?}\nendpoint = {:?}\nregion = \"us-east-1\"\npath_style = true\npart_size_bytes = 5242880\n",
        s3.endpoint()
    )
}

fn credentials() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
    ]
}

/// `users` lines `name:password:access:home`, hashed into a users file in a directory the
/// caller keeps.
fn users_file(dir: &std::path::Path, users: &[(&str, &str, &str, &str)]) -> String {
    let lines: String = users
        .iter()
        .map(|(name, password, access, home)| {
            format!("{name}:{}:{access}:{home}\n", hash_password(password))
        })
        .collect();
    let path = dir.join("users");
    std::fs::write(&path, lines).unwrap();
    path.display().to_string()
}

/// A server whose files live in `s3`'s bucket; alice may read and write at the bucket's prefix.
fn s3_ftp_server(s3: &S3Server) -> Server {
    s3.create_bucket(BUCKET);
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        args: vec!["--public-address".into(), "127.0.0.1".into()],
        config_toml: Some(storage_toml(s3, BUCKET)),
        env: credentials(),
        ..Default::default()
    })
}

/// Waits (a bounded time) until `done` holds; the aborts of a vanished session run after it.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn curl_stores_retrieves_lists_resumes_and_deletes_on_s3() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let local = server.state.path().join("upload.bin");
    // Over two 5 MiB parts: a real multipart upload.
    let payload: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let login = ["-sS", "--user", "alice:wonderland"];
    let upload_url = format!("{}/dir/upload.bin", server.url());
    run_ok(
        "curl",
        &[
            &login[..],
            &[
                "--ftp-create-dirs",
                "-T",
                local.to_str().unwrap(),
                &upload_url,
            ],
        ]
        .concat(),
    );
    let keys = s3.keys();
    assert!(keys.contains(&format!("{PREFIX}/dir/")), "{keys:?}");
    assert!(
        keys.contains(&format!("{PREFIX}/dir/upload.bin")),
        "{keys:?}"
    );
    assert!(s3.pending_uploads().is_empty());

    let output = run_ok("curl", &[&login[..], &[upload_url.as_str()]].concat());
    assert!(output.stdout == payload, "RETR returned other bytes");
    // REST + RETR: a ranged read.
    let output = run_ok(
        "curl",
        &[&login[..], &["-r", "7000000-", upload_url.as_str()]].concat(),
    );
    assert!(output.stdout == payload[7_000_000..], "REST + RETR");

    let list_url = format!("{}/dir/", server.url());
    let output = run_ok("curl", &[&login[..], &[list_url.as_str()]].concat());
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(
        listing.starts_with("-rw-r--r--")
            && listing.contains(" 12000000 ")
            && listing.trim_end().ends_with(" upload.bin"),
        "{listing:?}"
    );
    run_ok(
        "curl",
        &[
            &login[..],
            &["-Q", "-DELE /dir/upload.bin", list_url.as_str()],
        ]
        .concat(),
    );
    assert_eq!(s3.keys(), [format!("{PREFIX}/dir/")]);
}

#[test]
fn lftp_manages_files_and_directories_on_s3() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let local = server.state.path().join("local.txt");
    std::fs::write(&local, "lftp payload\n").unwrap();
    let back = server.state.path().join("back.txt");
    let script = format!(
        "set ftp:prefer-epsv false; set net:max-retries 1; set net:timeout 10; \
         open -u alice,wonderland ftp://127.0.0.1:{port}; \
         mkdir lf; cd lf; put {local} -o remote.txt; get remote.txt -o {back}; \
         mv remote.txt renamed.txt; cls -l; quote SIZE renamed.txt; cd ..; \
         set ftp:prefer-epsv true; cls; bye",
        port = server.port,
        local = local.display(),
        back = back.display()
    );
    let output = run_ok("lftp", &["-c", &script]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("renamed.txt"), "{stdout}");
    assert!(stdout.contains("213 13"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "lftp payload\n");
    // The rename is a copy and a delete: the old key is gone, the new one holds the bytes.
    assert_eq!(
        s3.object_size(&format!("{PREFIX}/lf/renamed.txt")),
        Some(13)
    );
    assert!(!s3.keys().contains(&format!("{PREFIX}/lf/remote.txt")));

    // RMD of a directory that still holds a file is refused; emptied, it goes.
    let script = format!(
        "set net:max-retries 1; open -u alice,wonderland ftp://127.0.0.1:{}; \
         rmdir lf; echo after-refused-rmdir; rm lf/renamed.txt; rmdir lf; cls; bye",
        server.port
    );
    let output = Command::new("lftp").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Directory not empty"), "{text}");
    assert!(text.contains("after-refused-rmdir"), "{text}");
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn python_ftplib_session_on_s3_with_append_refused() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/ftplib_session.py"
    );
    let output = Command::new("python3")
        .args([script, "127.0.0.1", &server.port.to_string()])
        .args(["alice", "wonderland", "plain"])
        .env("FTPLIB_APPEND", "refused")
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ftplib ok",
        "ftplib: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the variable the same script insists on APPE, which must fail here.
    let output = Command::new("python3")
        .args([script, "127.0.0.1", &server.port.to_string()])
        .args(["alice", "wonderland", "plain"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "APPE passed on object storage");
}

#[test]
fn suppaftp_session_on_s3_and_what_object_storage_refuses() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let mut ftp = suppaftp::FtpStream::connect(("127.0.0.1", server.port)).unwrap();
    ftp.login("alice", "wonderland").unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .unwrap();
    ftp.mkdir("rs").unwrap();
    ftp.cwd("rs").unwrap();
    assert_eq!(ftp.pwd().unwrap(), "/rs");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    ftp.put_file("a.bin", &mut Cursor::new(payload.clone()))
        .unwrap();
    assert_eq!(ftp.size("a.bin").unwrap(), payload.len());
    assert_eq!(ftp.retr_as_buffer("a.bin").unwrap().into_inner(), payload);
    ftp.set_mode(suppaftp::Mode::ExtendedPassive);
    assert_eq!(ftp.nlst(None).unwrap(), vec!["a.bin".to_string()]);
    let mlsd = ftp.mlsd(None).unwrap();
    assert!(mlsd.iter().any(|line| line.ends_with(" a.bin")), "{mlsd:?}");
    let mlst = ftp.mlst(Some("a.bin")).unwrap();
    assert!(mlst.contains("type=file"), "{mlst}");
    // No `a` (append) in the perm fact: the storage cannot.
    let perm = mlst.split(';').find(|f| f.starts_with("perm=")).unwrap();
    assert!(!perm.contains('a'), "{mlst}");
    ftp.resume_transfer(99_000).unwrap();
    let mut stream = ftp.retr_as_stream("a.bin").unwrap();
    let mut tail = Vec::new();
    Read::read_to_end(&mut stream, &mut tail).unwrap();
    stream.finish().unwrap();
    assert_eq!(tail, payload[99_000..]);
    ftp.rename("a.bin", "b.bin").unwrap();
    assert!(ftp.size("a.bin").is_err());
    assert_eq!(ftp.size("b.bin").unwrap(), payload.len());
    let feat = ftp.feat().unwrap();
    assert!(
        feat.contains_key("MLST") && !feat.contains_key("MFMT"),
        "{feat:?}"
    );
    ftp.quit().unwrap();

    // APPE and REST + STOR: refused before any data connection, and the object untouched.
    let mut raw = server.raw();
    raw.login("alice", "wonderland");
    let reply = raw.expect("APPE /rs/b.bin", "502");
    assert!(reply.contains("cannot append"), "{reply}");
    raw.expect("REST 10", "350");
    let reply = raw.expect("STOR /rs/b.bin", "504");
    assert!(reply.contains("cannot resume an upload"), "{reply}");
    raw.expect("MFMT 20200101000000 /rs/b.bin", "502");
    // Directories are not renamed key by key.
    raw.expect("RNFR /rs", "350");
    raw.expect("RNTO /moved", "550");
    assert_eq!(
        s3.object_size(&format!("{PREFIX}/rs/b.bin")),
        Some(payload.len() as u64)
    );
    raw.expect("DELE /rs/b.bin", "250");
    raw.expect("RMD /rs", "250");
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn an_interrupted_upload_leaves_no_object_and_no_pending_parts() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    assert!(
        ftp.transfer_out("STOR report.csv", b"old contents")
            .starts_with("226")
    );

    // The client dies mid-upload, after parts went to S3 (the writer keeps one part back, so
    // more than two parts' worth): the connection is reset.
    let address = ftp.epsv();
    let data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR report.csv", "150");
    (&data).write_all(&vec![b'x'; 12_000_000]).unwrap();
    eventually("the upload's first part never reached S3", || {
        !s3.pending_uploads().is_empty()
    });
    socket2::SockRef::from(&data)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(data);
    let reply = ftp.read_reply();
    assert!(reply.starts_with("426"), "{reply:?}");
    // Aborted before the reply: no parts left, and the old object as it was.
    assert_eq!(s3.pending_uploads(), Vec::<String>::new());
    assert_eq!(s3.object_size(&format!("{PREFIX}/report.csv")), Some(12));
    let (bytes, end) = ftp.transfer_in("RETR report.csv");
    assert!(end.starts_with("226"), "{end}");
    assert_eq!(bytes, b"old contents");

    // The control connection vanishing mid-upload aborts it too (when the session goes).
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    let address = ftp.epsv();
    let mut data = TcpStream::connect(address).unwrap();
    ftp.expect("STOR fresh.csv", "150");
    data.write_all(&vec![b'y'; 12_000_000]).unwrap();
    eventually("the second upload's first part never reached S3", || {
        !s3.pending_uploads().is_empty()
    });
    drop(ftp);
    std::thread::sleep(Duration::from_millis(300));
    socket2::SockRef::from(&data)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(data);
    eventually("the vanished session's upload was not aborted", || {
        s3.pending_uploads().is_empty()
    });
    assert_eq!(s3.keys(), [format!("{PREFIX}/report.csv")]);
}

#[test]
fn homes_are_prefixes_with_the_same_permissions() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let state = tempfile::tempdir().unwrap();
    let users = users_file(
        state.path(),
        &[
            ("alice", "wonderland", "rw", "alice"),
            ("bob", "builder", "rw", "bob"),
            ("reader", "onlyreads", "ro", "alice"),
        ],
    );
    let server = Server::start(Options {
        args: vec!["--users".into(), users],
        config_toml: Some(storage_toml(&s3, BUCKET)),
        env: credentials(),
        ..Default::default()
    });
    let mut alice = server.raw();
    alice.login("alice", "wonderland");
    assert!(
        alice
            .transfer_out("STOR notes.txt", b"alice's")
            .starts_with("226")
    );
    assert!(
        s3.keys().contains(&format!("{PREFIX}/alice/notes.txt")),
        "{:?}",
        s3.keys()
    );
    // bob's home is his own prefix: alice's file is not there, and `..` stays inside.
    let mut bob = server.raw();
    bob.login("bob", "builder");
    let (listing, end) = bob.transfer_in("NLST");
    assert!(end.starts_with("226"), "{end}");
    assert!(listing.is_empty(), "{}", String::from_utf8_lossy(&listing));
    bob.expect("RETR ../alice/notes.txt", "550");
    bob.expect("SIZE /../alice/notes.txt", "550");
    // A read-only login sees alice's home and cannot change it.
    let mut reader = server.raw();
    reader.login("reader", "onlyreads");
    let (bytes, end) = reader.transfer_in("RETR notes.txt");
    assert!(end.starts_with("226"), "{end}");
    assert_eq!(bytes, b"alice's");
    reader.expect("DELE notes.txt", "550");
    reader.expect("MKD sub", "550");
    assert!(s3.keys().contains(&format!("{PREFIX}/alice/notes.txt")));
}

#[test]
fn a_missing_bucket_stops_the_server_naming_it() {
    let s3 = S3Server::start();
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = state.path().join("ftp-server.toml");
    let (min, max) = common::free_range(2);
    std::fs::write(
        &config,
        format!(
            "root = {:?}\npassive_ports = {{ min = {min}, max = {max} }}\nlisten = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n{}",
            root.path(),
            free_port(),
            free_port(),
            storage_toml(&s3, "no-such-bucket")
        ),
    )
    .unwrap();
    let output = Command::new(common::BIN)
        .arg("--config")
        .arg(&config)
        .envs(credentials())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot use object storage: S3 bucket \"no-such-bucket\"")
            && stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
}

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const CONTAINER: &str = "ftp-files";

/// Azurite's Blob server on a free loopback port, its data in a directory of its own, stopped
/// when dropped.
struct AzureServer {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl AzureServer {
    fn start() -> AzureServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/azurite.sh");
        let ensured = run_ok("bash", &[script, "ensure"]);
        let binary = String::from_utf8(ensured.stdout).unwrap().trim().to_owned();
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&binary)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut server = AzureServer {
            child,
            port,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Azurite did not listen on port {port}"
            );
            assert!(server.child.try_wait().unwrap().is_none(), "Azurite exited");
            std::thread::sleep(Duration::from_millis(100));
        }
        server.blob("create");
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    fn blob(&self, command: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/azure_blob.py");
        let endpoint = self.endpoint();
        let output = run_ok(
            "python3",
            &[
                script,
                &endpoint,
                AZURITE_ACCOUNT,
                AZURITE_KEY,
                command,
                CONTAINER,
            ],
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The names of the container's committed blobs.
    fn blobs(&self) -> Vec<String> {
        self.blob("list").lines().map(str::to_owned).collect()
    }
}

impl Drop for AzureServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn clients_and_refusals_on_azure_blob() {
    let azure = AzureServer::start();
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        args: vec!["--public-address".into(), "127.0.0.1".into()],
        config_toml: Some(format!(
            "[storage.azure_blob]\naccount = {AZURITE_ACCOUNT:?}\ncontainer = {CONTAINER:?}\nprefix = {PREFIX:?}\nendpoint = {:?}\nblock_size_bytes = 5242880\n",
            azure.endpoint()
        )),
        env: vec![("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into())],
        ..Default::default()
    });
    let local = server.state.path().join("upload.bin");
    // Over two 5 MiB blocks: staged, then committed as a block list.
    let payload: Vec<u8> = (0..12_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let login = ["-sS", "--user", "alice:wonderland"];
    let upload_url = format!("{}/dir/upload.bin", server.url());
    run_ok(
        "curl",
        &[
            &login[..],
            &[
                "--ftp-create-dirs",
                "-T",
                local.to_str().unwrap(),
                &upload_url,
            ],
        ]
        .concat(),
    );
    let blobs = azure.blobs();
    assert!(
        blobs.contains(&format!("{PREFIX}/dir/upload.bin")),
        "{blobs:?}"
    );
    let output = run_ok("curl", &[&login[..], &[upload_url.as_str()]].concat());
    assert!(output.stdout == payload, "RETR returned other bytes");
    let output = run_ok(
        "curl",
        &[&login[..], &["-r", "7000000-", upload_url.as_str()]].concat(),
    );
    assert!(output.stdout == payload[7_000_000..], "REST + RETR");

    let mut raw = server.raw();
    raw.login("alice", "wonderland");
    let (listing, end) = raw.transfer_in("MLSD /dir");
    assert!(end.starts_with("226"), "{end}");
    let listing = String::from_utf8(listing).unwrap();
    assert!(
        listing.contains("type=file;") && listing.contains("size=12000000;"),
        "{listing}"
    );
    raw.expect("APPE /dir/upload.bin", "502");
    raw.expect("REST 10", "350");
    raw.expect("STOR /dir/upload.bin", "504");
    raw.expect("RMD /dir", "550");
    raw.expect("RNFR /dir/upload.bin", "350");
    raw.expect("RNTO /dir/moved.bin", "250");
    assert_eq!(
        raw.expect("SIZE /dir/moved.bin", "213").trim(),
        "213 12000000"
    );

    // An upload reset mid-way commits nothing.
    let address = raw.epsv();
    let data = TcpStream::connect(address).unwrap();
    raw.expect("STOR /dir/cut.bin", "150");
    (&data).write_all(&vec![b'z'; 12_000_000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    socket2::SockRef::from(&data)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(data);
    let reply = raw.read_reply();
    assert!(reply.starts_with("426"), "{reply:?}");
    let blobs = azure.blobs();
    assert!(!blobs.iter().any(|b| b.ends_with("cut.bin")), "{blobs:?}");

    raw.expect("DELE /dir/moved.bin", "250");
    raw.expect("RMD /dir", "250");
    assert_eq!(azure.blobs(), Vec::<String>::new());
}

/// What the server reports on `/config-digest` as JSON (the controller's view).
fn served_report(server: &Server) -> serde_json::Value {
    let mut stream = TcpStream::connect(("127.0.0.1", server.metrics_port)).unwrap();
    write!(
        stream,
        "GET /config-digest HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_reload_naming_a_bucket_that_does_not_work_keeps_the_old_one_and_says_why() {
    let s3 = S3Server::start();
    let server = s3_ftp_server(&s3);
    let mut ftp = server.raw();
    ftp.login("alice", "wonderland");
    assert!(
        ftp.transfer_out("STOR kept.txt", b"kept")
            .starts_with("226")
    );
    let config = server.state.path().join("ftp-server.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replace(&format!("bucket = {BUCKET:?}"), "bucket = \"gone-bucket\"");
    assert_ne!(broken, text, "the config names no bucket: update this test");
    std::fs::write(&config, broken).unwrap();
    let mut report = serde_json::Value::Null;
    eventually("the rejected bucket was never reported", || {
        report = served_report(&server);
        !report["rejected"].is_null()
    });
    assert_eq!(report["rejected"]["file"], "object_storage", "{report}");
    let reason = report["rejected"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("cannot use object storage: S3 bucket \"gone-bucket\"")
            && reason.contains("NoSuchBucket"),
        "{reason}"
    );
    // Sessions go on with the bucket that works.
    let (bytes, end) = ftp.transfer_in("RETR kept.txt");
    assert!(end.starts_with("226"), "{end}");
    assert_eq!(bytes, b"kept");
}

/// The server's peak resident memory so far (`VmHWM`), in bytes.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

/// A metric's value from the server's `/metrics`.
fn metric(server: &Server, name: &str) -> f64 {
    let (status, text) = server.http_get("/metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

const MIB: u64 = 1024 * 1024;
/// The memory limit the upload-memory test gives the server: with default-cost hashes it holds
/// three uploads of 5 MiB parts at once (12 MiB each), where ten at once would pass it.
const MEMORY_LIMIT: u64 = 128 * MIB;

#[test]
fn concurrent_uploads_stay_within_the_memory_limit_or_are_refused_plainly() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    // SFTP too: its uploads draw on the same budget.
    let keys = tempfile::tempdir().unwrap();
    let host_key = keys.path().join("host_ed25519");
    let generated = Command::new(BIN)
        .args(["generate-host-key", "--type", "ed25519", "--out"])
        .arg(&host_key)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let sftp_port = free_port();
    let server = Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        args: vec![
            "--public-address".into(),
            "127.0.0.1".into(),
            "--keepalive-idle".into(),
            "41".into(),
        ],
        config_toml: Some(format!(
            "[limits]\nmemory_limit_bytes = {MEMORY_LIMIT}\n{}\n[sftp]\nenabled = true\n\
             listen = \"127.0.0.1:{sftp_port}\"\nhost_key_files = [{host_key:?}]\n",
            storage_toml(&s3, BUCKET)
        )),
        env: credentials(),
        passive_ports: 20,
        ..Default::default()
    });
    assert_eq!(
        metric(&server, "ftp_upload_memory_budget_bytes"),
        (3 * 12 * MIB) as f64
    );

    // Ten curl uploads of 16 MiB (four parts each) at once.
    let payload: Vec<u8> = (0..16 * MIB as u32).map(|i| (i % 253) as u8).collect();
    let local = server.state.path().join("many.bin");
    std::fs::write(&local, &payload).unwrap();
    let uploads: Vec<_> = (0..10)
        .map(|i| {
            Command::new("curl")
                .args(["-sS", "-v", "--user", "alice:wonderland", "-T"])
                .arg(&local)
                .arg(format!("{}/many-{i}.bin", server.url()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut stored = 0;
    for (i, upload) in uploads.into_iter().enumerate() {
        let output = upload.wait_with_output().unwrap();
        let key = format!("{PREFIX}/many-{i}.bin");
        if output.status.success() {
            stored += 1;
            assert_eq!(s3.object_size(&key), Some(16 * MIB), "{key}");
        } else {
            // The only failure allowed is the server saying it has no memory for it now.
            let log = String::from_utf8_lossy(&output.stderr);
            assert!(
                log.contains("< 452 Server is at its upload capacity for its memory"),
                "upload {i} failed otherwise:\n{log}"
            );
            assert_eq!(s3.object_size(&key), None, "{key}");
        }
    }
    assert!(stored >= 1, "no upload got through");
    let peak = peak_resident_bytes(server.pid());
    assert!(
        peak < MEMORY_LIMIT,
        "the server's peak RSS {peak} passed its limit {MEMORY_LIMIT}"
    );
    // What was stored is what was sent.
    let back = run_ok(
        "curl",
        &[
            "-sS",
            "--user",
            "alice:wonderland",
            &format!("{}/many-0.bin", server.url()),
        ],
    );
    if s3.object_size(&format!("{PREFIX}/many-0.bin")).is_some() {
        assert!(back.stdout == payload, "RETR returned other bytes");
    }

    // Three uploads hold the whole budget; a fourth waits, then hears why it cannot start.
    let mut held: Vec<_> = (0..3)
        .map(|i| {
            let mut ftp = server.raw();
            ftp.login("alice", "wonderland");
            let data = TcpStream::connect(ftp.epsv()).unwrap();
            ftp.expect(&format!("STOR held-{i}.bin"), "150");
            (&data).write_all(b"partial").unwrap();
            (ftp, data)
        })
        .collect();
    let small = server.state.path().join("small.bin");
    std::fs::write(&small, b"small").unwrap();
    let mut sftp = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/paramiko_sftp.py"
        ))
        .args(["127.0.0.1", &sftp_port.to_string(), "alice", "password"])
        .args(["wonderland", "ops"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ops = format!(
        "[[\"put\", {:?}, \"/sftp-late.bin\"]]",
        small.display().to_string()
    );
    sftp.stdin
        .take()
        .unwrap()
        .write_all(ops.as_bytes())
        .unwrap();
    // The refused client connects its data connection first, as clients do after EPSV: while
    // its upload waits for buffers, the server holds that connection with keepalive on, so a
    // balancer does not forget it.
    let mut late = server.raw();
    late.login("alice", "wonderland");
    let late_address = late.epsv();
    let late_data = TcpStream::connect(late_address).unwrap();
    // The held uploads' data connections may share the port (one address, ports reused once
    // taken): the waiting one adds a timer of its own.
    std::thread::sleep(Duration::from_millis(300));
    let before = keepalive_timers(late_address.port());
    late.send("STOR late.bin");
    std::thread::sleep(Duration::from_millis(500));
    let timers = keepalive_timers(late_address.port());
    assert!(
        timers.len() == before.len() + 1 && timers.iter().all(|t| (35..=41).contains(t)),
        "the waiting upload's data connection has no keepalive: {before:?} before STOR, {timers:?} after"
    );
    let reply = late.read_reply();
    assert!(
        reply.starts_with("452")
            && reply.contains("upload capacity for its memory; try the upload again later"),
        "{reply}"
    );
    drop(late_data);
    let sftp = sftp.wait_with_output().unwrap();
    let results = String::from_utf8_lossy(&sftp.stdout);
    assert!(
        results.contains("\"ok\": false")
            && results.contains("Server is at its upload capacity for its memory"),
        "SFTP: {results}\n{}",
        String::from_utf8_lossy(&sftp.stderr)
    );
    assert_eq!(s3.object_size(&format!("{PREFIX}/sftp-late.bin")), None);
    assert!(metric(&server, "ftp_upload_memory_refusals_total") >= 2.0);
    // One held upload ends; its buffers go to the next.
    let (mut ftp, data) = held.remove(0);
    drop(data);
    assert!(ftp.read_reply().starts_with("226"));
    let data = TcpStream::connect(late.epsv()).unwrap();
    late.expect("STOR late.bin", "150");
    drop(data);
    assert!(late.read_reply().starts_with("226"));
    assert_eq!(s3.object_size(&format!("{PREFIX}/late.bin")), Some(0));
    drop(held);
    eventually("the held uploads were not aborted", || {
        s3.pending_uploads().is_empty()
    });
}
