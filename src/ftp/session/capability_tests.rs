//! Sessions on a back-end that declares fewer capabilities than the local disk: what it cannot do
//! is refused plainly and not advertised, and its streamed bodies carry transfers.

use std::io::{self, Seek};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{Entry, Session};
use crate::ftp::auth::lockout::Lockout;
use crate::ftp::auth::verify::Verifier;
use crate::ftp::config::{PassiveRange, ServerConfig};
use crate::ftp::metrics::Metrics;
use crate::ftp::passive::PortPool;
use crate::ftp::server::{MemoryBudget, Shared};
use crate::ftp::settings::Settings;
use crate::ftp::storage::local::LocalStorage;
use crate::ftp::storage::{
    Capabilities, Download, Entries, Home, Keep, Metadata, Storage, Upload, UploadBody,
};
use crate::ftp::upload_memory::UploadMemory;

/// Local files behind fewer capabilities, with bodies as streams (as an object store gives) and
/// uploads that, like a store that cannot append, always start empty whatever they are asked to
/// keep: a session that asked it to append would overwrite.
struct StreamStorage {
    local: LocalStorage,
    capabilities: Capabilities,
}

struct StreamHome {
    local: Arc<dyn Home>,
}

struct StreamUpload {
    local: Box<dyn Upload>,
}

impl Storage for StreamStorage {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn open_home(&self, home: &str) -> io::Result<Arc<dyn Home>> {
        Ok(Arc::new(StreamHome {
            local: self.local.open_home(home)?,
        }))
    }

    fn remove_upload_leftovers(&self, older_than: Duration) -> io::Result<usize> {
        self.local.remove_upload_leftovers(older_than)
    }
}

impl Home for StreamHome {
    fn stat(&self, path: &str) -> io::Result<Metadata> {
        self.local.stat(path)
    }
    fn lstat(&self, path: &str) -> io::Result<Metadata> {
        self.local.lstat(path)
    }
    fn change_dir(&self, path: &str) -> io::Result<()> {
        self.local.change_dir(path)
    }
    fn list(&self, path: &str) -> io::Result<Entries> {
        self.local.list(path)
    }
    fn open_read(&self, path: &str, offset: u64) -> io::Result<(Download, u64)> {
        let (download, size) = self.local.open_read(path, offset)?;
        let Download::File { mut file, offset } = download else {
            return Err(io::Error::other("the local back-end gives files"));
        };
        file.seek(io::SeekFrom::Start(offset))?;
        Ok((Download::Stream(Box::new(file)), size))
    }
    fn begin_upload(&self, path: &str, _keep: Keep) -> io::Result<Box<dyn Upload>> {
        Ok(Box::new(StreamUpload {
            local: self.local.begin_upload(path, Keep::Nothing)?,
        }))
    }
    fn mkdir(&self, path: &str) -> io::Result<()> {
        self.local.mkdir(path)
    }
    fn remove_dir(&self, path: &str) -> io::Result<()> {
        self.local.remove_dir(path)
    }
    fn remove_file(&self, path: &str) -> io::Result<()> {
        self.local.remove_file(path)
    }
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        self.local.rename(from, to, replace)
    }
    fn set_modified(&self, _path: &str, _seconds: i64) -> io::Result<()> {
        Err(io::Error::other("no modification times here"))
    }
    fn chmod(&self, _path: &str, _mode: u32) -> io::Result<()> {
        Err(io::Error::other("no permission bits here"))
    }
}

impl Upload for StreamUpload {
    fn take_body(&mut self) -> Option<UploadBody> {
        match self.local.take_body()? {
            UploadBody::File(file) => Some(UploadBody::Stream(Box::new(file))),
            stream => Some(stream),
        }
    }
    fn commit(self: Box<Self>, replace: bool) -> io::Result<()> {
        self.local.commit(replace)
    }
    fn discard(self: Box<Self>) -> io::Result<()> {
        self.local.discard()
    }
}

/// What an object store offers: ranged reads, nothing else beyond whole files.
const OBJECT_STORE_LIKE: Capabilities = Capabilities {
    append: false,
    resume_upload: false,
    resume_download: true,
    atomic_rename: false,
    chmod: false,
    set_mtime: false,
    zero_copy: false,
};

/// A client on the control connection of one session served in this process.
struct Client {
    control: BufReader<TcpStream>,
}

impl Client {
    /// Starts a session on `root` with `storage` (None: the local disk, as the server runs) and
    /// logs in anonymously, with write access.
    async fn logged_in(root: &std::path::Path, capabilities: Option<Capabilities>) -> Client {
        let ports = free_ports();
        let mut config = ServerConfig::new(root, ports);
        config.anonymous.enabled = true;
        config.anonymous.writable = true;
        let mut settings = Settings::build(config).unwrap();
        if let Some(capabilities) = capabilities {
            settings.storage = Arc::new(StreamStorage {
                local: LocalStorage::open(root).unwrap(),
                capabilities,
            });
        }
        let metrics = Arc::new(Metrics::default());
        let (_settings_tx, settings_rx) = watch::channel(Arc::new(settings));
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings: settings_rx,
            metrics: Arc::clone(&metrics),
            ports: PortPool::new(metrics),
            lockout: Arc::new(Lockout::with_capacity(16)),
            verifier: Verifier::new(1),
            live_users: Default::default(),
            memory: MemoryBudget {
                limit: None,
                sessions: None,
                upload_bytes: 0,
            },
            upload_memory: UploadMemory::new(0, Default::default()),
            shutdown: shutdown_rx,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // The senders live as long as the session, so it sees neither reload nor shutdown.
            let _kept = (_settings_tx, _shutdown_tx);
            let (stream, peer) = listener.accept().await.unwrap();
            let session = Session::new(1, stream, peer, address, Entry::Plain, shared);
            let _ = session.run().await;
        });
        let mut client = Client {
            control: BufReader::new(TcpStream::connect(address).await.unwrap()),
        };
        assert_eq!(client.reply().await.0, 220);
        assert_eq!(client.command("USER anonymous").await.0, 331);
        assert_eq!(client.command("PASS guest").await.0, 230);
        client
    }

    /// The next reply: its code and all its text (every line of a multi-line one).
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            self.control.read_line(&mut line).await.unwrap();
            assert!(!line.is_empty(), "the server closed the connection");
            text.push_str(&line);
            let bytes = line.as_bytes();
            if bytes.len() >= 4 && bytes[..3].iter().all(u8::is_ascii_digit) && bytes[3] == b' ' {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    async fn command(&mut self, line: &str) -> (u16, String) {
        self.control
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// Sends PASV and connects to the port it gives.
    async fn passive(&mut self) -> TcpStream {
        let (code, text) = self.command("PASV").await;
        assert_eq!(code, 227, "{text}");
        let numbers: Vec<u16> = text
            .split(['(', ')'])
            .nth(1)
            .unwrap()
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        TcpStream::connect(("127.0.0.1", numbers[4] * 256 + numbers[5]))
            .await
            .unwrap()
    }
}

/// A passive range of ten ports that were free a moment ago.
fn free_ports() -> PassiveRange {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if first < 65000
            && (first..first + 10)
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        {
            return PassiveRange {
                min: first,
                max: first + 9,
            };
        }
    }
    panic!("no ten free ports in a row on loopback");
}

#[tokio::test]
async fn appe_on_a_store_that_cannot_append_is_refused_and_the_file_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log"), "old").unwrap();
    let mut client = Client::logged_in(dir.path(), Some(OBJECT_STORE_LIKE)).await;
    let mut data = client.passive().await;
    let (code, text) = client.command("APPE log").await;
    if code == 150 {
        // Served anyway: what a client would then do, so the overwrite shows below.
        data.write_all(b"new").await.unwrap();
        drop(data);
        client.reply().await;
    }
    assert_eq!(code, 502, "{text}");
    assert!(text.contains("cannot append"), "{text}");
    assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_restarted_upload_on_a_store_that_cannot_resume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), "0123456789").unwrap();
    let mut client = Client::logged_in(dir.path(), Some(OBJECT_STORE_LIKE)).await;
    assert_eq!(client.command("REST 4").await.0, 350);
    let mut data = client.passive().await;
    let (code, text) = client.command("STOR big").await;
    if code == 150 {
        data.write_all(b"tail").await.unwrap();
        drop(data);
        client.reply().await;
    }
    assert_eq!(code, 504, "{text}");
    assert!(text.contains("cannot resume"), "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("big")).unwrap(),
        b"0123456789"
    );
    // The refusal used up the restart marker: a plain STOR now replaces the file.
    let mut data = client.passive().await;
    assert_eq!(client.command("STOR big").await.0, 150);
    data.write_all(b"whole").await.unwrap();
    drop(data);
    assert_eq!(client.reply().await.0, 226);
    assert_eq!(std::fs::read(dir.path().join("big")).unwrap(), b"whole");
}

#[tokio::test]
async fn feat_and_facts_offer_only_what_the_storage_can_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let mut local = Client::logged_in(dir.path(), None).await;
    let (_, features) = local.command("FEAT").await;
    assert!(features.contains(" REST STREAM\r\n"), "{features}");
    assert!(features.contains(" MFMT\r\n"), "{features}");
    let (_, facts) = local.command("MLST f").await;
    assert!(facts.contains(";perm=adfrw;"), "{facts}");
    let mut store = Client::logged_in(
        dir.path(),
        Some(Capabilities {
            resume_download: false,
            ..OBJECT_STORE_LIKE
        }),
    )
    .await;
    let (code, features) = store.command("FEAT").await;
    assert_eq!(code, 211);
    assert!(!features.contains("REST"), "{features}");
    assert!(!features.contains("MFMT"), "{features}");
    assert!(features.contains(" SIZE\r\n"), "{features}");
    let (code, text) = store.command("REST 5").await;
    assert_eq!(code, 502, "{text}");
    let (code, text) = store.command("MFMT 20260101000000 x").await;
    assert_eq!(code, 502, "{text}");
    assert!(text.contains("modification times"), "{text}");
    // RFC 3659's `a` says APPE may be used on the file.
    let (code, facts) = store.command("MLST f").await;
    assert_eq!(code, 250, "{facts}");
    assert!(facts.contains(";perm=dfrw;"), "{facts}");
}

#[tokio::test]
async fn streamed_bodies_carry_uploads_and_ranged_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = Client::logged_in(dir.path(), Some(OBJECT_STORE_LIKE)).await;
    let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut data = client.passive().await;
    assert_eq!(client.command("STOR f").await.0, 150);
    data.write_all(&body).await.unwrap();
    drop(data);
    assert_eq!(client.reply().await.0, 226);
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), body);
    assert_eq!(client.command("REST 100000").await.0, 350);
    let mut data = client.passive().await;
    assert_eq!(client.command("RETR f").await.0, 150);
    let mut received = Vec::new();
    data.read_to_end(&mut received).await.unwrap();
    assert_eq!(client.reply().await.0, 226);
    assert_eq!(received, body[100_000..]);
    // Nothing but the file: no temporary upload left.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        names.push(entry.unwrap().file_name());
    }
    assert_eq!(names, ["f"]);
}
