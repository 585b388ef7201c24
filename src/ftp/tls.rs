//! Explicit FTPS: a rustls server configuration built from PEM files (with the ring provider), and
//! the binding of a session's protected data connections to its control connection.
//!
//! Every control connection gets a session store of its own, and there is no ticket key: the TLS
//! 1.2 session ids and TLS 1.3 tickets a data connection can resume are exactly the ones issued on
//! that control connection. With `require_session_reuse` (the default, as vsftpd's
//! `require_ssl_reuse`), a data connection that does not resume one of them is refused, so another
//! client behind the same address that races to the passive port gets nothing and can inject
//! nothing.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::HandshakeKind;
use rustls::server::StoresServerSessions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// TLS 1.3 tickets sent on a control connection. Clients built on rustls use each ticket once and
/// keep at most 8 per server, and TLS 1.3 has no way for rustls to send more later on this
/// connection: so 8, and each download or listing hands out a fresh one (below). An upload sends
/// none, so such a client can make 8 uploads per control connection (OpenSSL and GnuTLS clients
/// resume from one ticket any number of times; rustls clients speaking TLS 1.2 resume their
/// session id any number of times).
const CONTROL_TICKETS: usize = 8;

/// Sessions one control connection's store keeps from its own handshake (8 tickets, or one TLS 1.2
/// session), never pushed out by the data connections' ones: clients resume from these for as
/// long as the control connection lasts.
const CONTROL_SESSIONS: usize = 16;

/// Sessions kept from accepted data connections, the oldest dropped first: a client that takes
/// them up uses the newest (rustls keeps 8), so the rest are spent.
const DATA_SESSIONS: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {source}")]
    Certificates {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate file {0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read private key {path}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS configuration, from which each control connection takes its own.
#[derive(Clone)]
pub struct TlsAcceptors {
    base: Arc<rustls::ServerConfig>,
}

pub fn acceptors(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptors, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: cert_file.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The builder's default has no ticketer: resumption goes through the session store, which is
    // what binds it to one control connection.
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptors {
        base: Arc::new(config),
    })
}

impl TlsAcceptors {
    /// The TLS state of one new control connection.
    pub fn session(&self) -> SessionTls {
        SessionTls {
            base: Arc::clone(&self.base),
            issued: Arc::new(SessionStore::default()),
        }
    }
}

/// Why a protected data connection was not set up.
#[derive(Debug, thiserror::Error)]
pub enum DataTlsError {
    #[error("TLS handshake on the data connection failed: {0}")]
    Handshake(io::Error),
    #[error("the data connection did not resume the control connection's TLS session")]
    NotResumed,
}

/// One control connection's TLS: its acceptor, and the sessions it issued.
#[derive(Clone)]
pub struct SessionTls {
    base: Arc<rustls::ServerConfig>,
    issued: Arc<SessionStore>,
}

impl SessionTls {
    pub fn control(&self) -> TlsAcceptor {
        let mut config = (*self.base).clone();
        config.session_storage = Arc::clone(&self.issued) as Arc<dyn StoresServerSessions>;
        config.send_tls13_tickets = CONTROL_TICKETS;
        TlsAcceptor::from(Arc::new(config))
    }

    /// Runs the server handshake on a data connection. `send_ticket`: hand the client a fresh TLS
    /// 1.3 ticket (downloads only: an uploading client never reads, and closing with the ticket
    /// unread would reset the connection and lose the end of the upload). Sessions the handshake
    /// creates join this control connection's store only once it is accepted.
    pub async fn accept_data(
        &self,
        tcp: TcpStream,
        send_ticket: bool,
        require_session_reuse: bool,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, DataTlsError> {
        let store = Arc::new(DataSessionStore {
            issued: Arc::clone(&self.issued),
            pending: Mutex::new(Vec::new()),
        });
        let mut config = (*self.base).clone();
        config.session_storage = Arc::clone(&store) as Arc<dyn StoresServerSessions>;
        config.send_tls13_tickets = usize::from(send_ticket);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            .map_err(DataTlsError::Handshake)?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        if require_session_reuse && !resumed {
            return Err(DataTlsError::NotResumed);
        }
        store.accept();
        Ok(stream)
    }
}

/// The sessions issued on one control connection and on its accepted data connections, kept
/// apart so that many transfers never push out what the control connection issued.
#[derive(Debug, Default)]
struct SessionStore {
    control: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
    data: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
}

fn insert_bounded(
    sessions: &Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
    bound: usize,
    key: Vec<u8>,
    value: Vec<u8>,
) -> bool {
    let Ok(mut sessions) = sessions.lock() else {
        return false;
    };
    sessions.retain(|(k, _)| *k != key);
    if sessions.len() >= bound {
        sessions.pop_front();
    }
    sessions.push_back((key, value));
    true
}

impl SessionStore {
    fn insert_from_data(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        insert_bounded(&self.data, DATA_SESSIONS, key, value)
    }

    fn find(&self, key: &[u8]) -> Option<Vec<u8>> {
        [&self.control, &self.data]
            .into_iter()
            .find_map(|sessions| {
                let sessions = sessions.lock().ok()?;
                sessions
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, value)| value.clone())
            })
    }
}

/// The control connection's own handshake stores here.
impl StoresServerSessions for SessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        insert_bounded(&self.control, CONTROL_SESSIONS, key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.find(key)
    }

    /// rustls takes a TLS 1.3 ticket out when it is used. Here it stays: clients on OpenSSL and
    /// GnuTLS (curl, lftp, ftplib) resume every data connection from the one session the control
    /// connection gave them. Without 0-RTT, reusing a ticket risks no replay.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.find(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A data connection's view of its control connection's store: it resumes from it, and what its
/// own handshake issues waits in `pending` until the connection is accepted (a refused
/// stranger's fresh session must not become resumable).
#[derive(Debug)]
struct DataSessionStore {
    issued: Arc<SessionStore>,
    pending: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl DataSessionStore {
    fn accept(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            for (key, value) in pending.drain(..) {
                self.issued.insert_from_data(key, value);
            }
        }
    }
}

impl StoresServerSessions for DataSessionStore {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        match self.pending.lock() {
            Ok(mut pending) if pending.len() < DATA_SESSIONS => {
                pending.push((key, value));
                true
            }
            _ => false,
        }
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.issued.find(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.issued.find(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}
