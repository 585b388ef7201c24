//! One probe session, as an FTP client on the internet would run it: connect to the public
//! address, AUTH TLS when the server has TLS, log in as the probe account, then `EPSV` + `LIST`
//! and `PASV` + `LIST`. PASV connects to the address the server advertises (never the control
//! connection's peer), so a server advertising the wrong address fails here. Every step has its
//! own timeout.
//!
//! The client is suppaftp's: its passive stream builder is handed the data address of each
//! passive reply, which is how the session learns the port (hence the replica) and tells a
//! refused passive command from a data connection that does not open.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::{FtpError, Mode};
use tokio::net::TcpStream;

use super::results::{Failure, Passive, SessionReport, Step};

/// What one session connects to and logs in as.
#[derive(Debug, Clone)]
pub struct SessionTarget {
    /// The public address: an IP or a DNS name.
    pub host: String,
    pub control_port: u16,
    pub user: String,
    pub password: String,
    /// Run `AUTH TLS` first (the server has a certificate). The certificate is not verified:
    /// this probes reachability, not the certificate's trust.
    pub tls: bool,
    /// Each step's timeout.
    pub step_timeout: Duration,
}

impl SessionTarget {
    pub fn endpoint(&self) -> String {
        endpoint(&self.host, self.control_port)
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What the passive stream builder saw of one data connection.
#[derive(Debug, Default)]
struct DataSeen {
    address: Option<SocketAddr>,
    error: Option<String>,
}

/// Runs one session; never panics on what the network or the server does.
pub async fn probe_session(target: &SessionTarget) -> SessionReport {
    let first_data = Arc::new(Mutex::new(None));
    let outcome = run(target, &first_data).await;
    let data_address = *first_data.lock().unwrap_or_else(|e| e.into_inner());
    SessionReport {
        data_address,
        outcome,
    }
}

async fn run(
    target: &SessionTarget,
    first_data: &Arc<Mutex<Option<SocketAddr>>>,
) -> Result<(), Failure> {
    let endpoint = target.endpoint();
    let step = target.step_timeout;
    let control_failure = |detail: String| Failure {
        step: Step::ControlConnection,
        endpoint: endpoint.clone(),
        detail,
    };
    let stream = connect(&target.host, target.control_port, step)
        .await
        .map_err(control_failure)?;
    let ftp = within(step, AsyncRustlsFtpStream::connect_with_stream(stream))
        .await
        .map_err(control_failure)?
        .map_err(|e| control_failure(describe(&e)))?;
    let ftp = if target.tls {
        within(step, ftp.into_secure(tls_connector(), &target.host))
            .await
            .map_err(control_failure)?
            .map_err(|e| control_failure(format!("AUTH TLS: {}", describe(&e))))?
    } else {
        ftp
    };
    let seen = Arc::new(Mutex::new(DataSeen::default()));
    let mut ftp = {
        let seen = Arc::clone(&seen);
        let first_data = Arc::clone(first_data);
        ftp.passive_stream_builder(move |address| {
            let seen = Arc::clone(&seen);
            let first_data = Arc::clone(&first_data);
            Box::pin(async move {
                first_data
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(address);
                seen.lock().unwrap_or_else(|e| e.into_inner()).address = Some(address);
                let connected = match tokio::time::timeout(step, TcpStream::connect(address)).await
                {
                    Ok(Ok(stream)) => return Ok(stream),
                    Ok(Err(error)) => format!("failed: {error}"),
                    Err(_) => format!("timed out after {} s", step.as_secs()),
                };
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some(connected.clone());
                Err(FtpError::ConnectionError(std::io::Error::other(connected)))
            })
        })
    };
    within(step, ftp.login(&target.user, &target.password))
        .await
        .map_err(|detail| Failure {
            step: Step::Login,
            endpoint: endpoint.clone(),
            detail,
        })?
        .map_err(|e| Failure {
            step: Step::Login,
            endpoint: endpoint.clone(),
            detail: describe(&e),
        })?;
    for (mode, passive) in [
        (Mode::ExtendedPassive, Passive::Epsv),
        (Mode::Passive, Passive::Pasv),
    ] {
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = DataSeen::default();
        ftp.set_mode(mode);
        // The passive command, the data connection and the listing: three steps' time.
        let listed = within(step * 3, ftp.list(None)).await;
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        let error = match listed {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => describe(&error),
            Err(timeout) => timeout,
        };
        return Err(match (seen.address, seen.error) {
            (None, _) => Failure {
                step: Step::Passive(passive),
                endpoint: endpoint.clone(),
                detail: error,
            },
            (Some(address), Some(connect)) => Failure {
                step: Step::DataConnection(passive),
                endpoint: address.to_string(),
                detail: connect,
            },
            (Some(address), None) => Failure {
                step: Step::List(passive),
                endpoint: address.to_string(),
                detail: error,
            },
        });
    }
    // The session is done either way; a failed QUIT says nothing about reachability.
    let _ = within(step, ftp.quit()).await;
    Ok(())
}

/// `work`'s output, or why not: it had no answer within `limit`. For the SFTP session too.
pub(super) async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no answer within {} s", limit.as_secs()))
}

/// A TCP connection to `host:port` made within `limit`, or why not. For the SFTP session too.
pub(super) async fn connect(host: &str, port: u16, limit: Duration) -> Result<TcpStream, String> {
    within(limit, TcpStream::connect((host, port)))
        .await?
        .map_err(|e| e.to_string())
}

/// The server's own words for a refusal ("530 Login incorrect."), else the error.
fn describe(error: &FtpError) -> String {
    match error {
        FtpError::UnexpectedResponse(response) => format!(
            "{} {}",
            response.status.code(),
            String::from_utf8_lossy(&response.body)
                .trim()
                .trim_start_matches(&response.status.code().to_string())
                .trim()
        ),
        other => other.to_string(),
    }
}

fn tls_connector() -> AsyncRustlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        })
        // The ring provider supports the default versions; this branch is never taken.
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))))
                .with_no_client_auth()
        });
    AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate (signatures are still checked): the probe asks whether a client gets
/// through, not whether it would trust the certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
