//! Explicit FTPS: a rustls server configuration built from PEM files (with the ring provider).
//! One configuration serves a session's control and data connections, so its session cache and
//! tickets let the data-channel handshake resume the control session, as FileZilla expects.

use std::path::Path;
use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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

/// Acceptors for the control connection and for data connections. They share one session cache
/// and ticketer, so a data connection can resume the control session; the data one sends no TLS
/// 1.3 tickets, because an uploading client never reads them and, closing with unread bytes, would
/// reset the connection and lose the end of the upload.
#[derive(Clone)]
pub struct TlsAcceptors {
    pub control: TlsAcceptor,
    pub data: TlsAcceptor,
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.session_storage = ServerSessionMemoryCache::new(8192);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    let mut data = config.clone();
    data.send_tls13_tickets = 0;
    Ok(TlsAcceptors {
        control: TlsAcceptor::from(Arc::new(config)),
        data: TlsAcceptor::from(Arc::new(data)),
    })
}
