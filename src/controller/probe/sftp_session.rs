//! One SFTP probe session, as an SFTP client on the internet would run it: connect to the public
//! address's SFTP port, check that the host key presented is one of the server's own (the
//! `<name>-sftp-host-keys` Secret), log in as the probe account with its password, start the
//! `sftp` subsystem and list the home. A host key that is not the Secret's is exactly what a
//! client refuses with "host key changed"; the probe says so before the clients do.
//!
//! Any replica serves any SFTP session (no passive ports), so one session a round is enough.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::Disconnect;
use russh::client::{self, Config, Handler};
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;

use super::results::{SftpFailure, SftpStep};
use super::session::{connect, within};

/// What one SFTP session connects to, logs in as and expects.
#[derive(Debug, Clone)]
pub struct SftpTarget {
    /// The public address: an IP or a DNS name.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The public halves of the host-key Secret's keys.
    pub host_keys: Vec<PublicKey>,
    /// Each step's timeout.
    pub step_timeout: Duration,
}

impl SftpTarget {
    pub fn endpoint(&self) -> String {
        super::session::endpoint(&self.host, self.port)
    }
}

/// Accepts the server only when it presents one of the expected keys, and keeps what it
/// presented so a refusal can name it.
struct ExpectKeys {
    expected: Vec<PublicKey>,
    presented: Arc<Mutex<Option<PublicKey>>>,
}

impl Handler for ExpectKeys {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = presented else {
            // The server presents plain keys; a certificate is someone else's server.
            return Ok(false);
        };
        *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        Ok(self
            .expected
            .iter()
            .any(|expected| expected.key_data() == key.key_data()))
    }
}

/// Runs one session; never panics on what the network or the server does.
pub async fn probe_sftp(target: &SftpTarget) -> Result<(), SftpFailure> {
    let endpoint = target.endpoint();
    let step = target.step_timeout;
    let failure = |step: SftpStep, detail: String| SftpFailure {
        step,
        endpoint: endpoint.clone(),
        detail,
    };
    let stream = connect(&target.host, target.port, step)
        .await
        .map_err(|detail| failure(SftpStep::Connection, detail))?;
    let config = Arc::new(Config {
        inactivity_timeout: Some(step * 3),
        ..Config::default()
    });
    let presented = Arc::new(Mutex::new(None));
    let handler = ExpectKeys {
        expected: target.host_keys.clone(),
        presented: Arc::clone(&presented),
    };
    let connected = within(step, client::connect_stream(config, stream, handler)).await;
    let mut session = match connected.and_then(|handshake| handshake.map_err(|e| e.to_string())) {
        Ok(session) => session,
        Err(detail) => {
            let presented = presented.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(match presented {
                Some(key)
                    if !target
                        .host_keys
                        .iter()
                        .any(|k| k.key_data() == key.key_data()) =>
                {
                    failure(
                        SftpStep::HostKey,
                        format!(
                            "the server presented {} {}, which is not in its host-key Secret: \
                             clients that know the Secret's keys refuse it",
                            key.algorithm(),
                            key.fingerprint(HashAlg::Sha256)
                        ),
                    )
                }
                _ => failure(SftpStep::Connection, format!("SSH handshake: {detail}")),
            });
        }
    };
    let login = within(
        step,
        session.authenticate_password(target.user.clone(), target.password.clone()),
    )
    .await
    .map_err(|detail| failure(SftpStep::Login, detail))?
    .map_err(|e| failure(SftpStep::Login, e.to_string()))?;
    if !login.success() {
        return Err(failure(
            SftpStep::Login,
            "the server refused the probe account's password".to_owned(),
        ));
    }
    let listed = within(step * 3, async {
        let channel = session
            .channel_open_session()
            .await
            .map_err(|e| e.to_string())?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| e.to_string())?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| format!("starting the sftp subsystem: {e}"))?;
        let listed = sftp
            .read_dir(".")
            .await
            .map(drop)
            .map_err(|e| format!("listing the home: {e}"));
        let _ = sftp.close().await;
        listed
    })
    .await;
    // The session is done either way; a failed goodbye says nothing about reachability.
    let _ = within(
        step,
        session.disconnect(Disconnect::ByApplication, "probe done", "en"),
    )
    .await;
    listed
        .map_err(|detail| failure(SftpStep::List, detail))?
        .map_err(|detail| failure(SftpStep::List, detail))
}
