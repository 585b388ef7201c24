//! Data connections: PASV/EPSV (from the passive range, advertising the public address),
//! PORT/EPRT (off by default, never to a third party), and running a transfer while the control
//! connection is still read for `ABOR` and `QUIT`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{DataPlan, Flow, Outcome, Reply0, Session};
use crate::ftp::audit::{self, TransferResult};
use crate::ftp::command::{self, Command, EpsvArg};
use crate::ftp::control::Line;
use crate::ftp::keepalive;
use crate::ftp::passive::{advertised_ipv4, same_host};
use crate::ftp::stream::MaybeTls;
use crate::ftp::tls::DataTlsError;

/// Which way a data connection carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Download,
    Upload,
}

impl Session {
    pub(super) async fn passive(&mut self, extended: bool) -> io::Result<()> {
        if self.epsv_all && !extended {
            return self.reply(503, "EPSV ALL is in effect; use EPSV.").await;
        }
        self.data_plan = None;
        let bind_ip = self.local.ip();
        let advertised = if extended {
            None
        } else {
            Some(
                advertised_ipv4(
                    self.settings.config.public_address.as_deref(),
                    self.local.ip(),
                )
                .await,
            )
        };
        if let Some(None) = advertised {
            return self
                .reply(
                    425,
                    "Cannot find an IPv4 address to advertise for PASV; use EPSV.",
                )
                .await;
        }
        // Validated when the settings were built; a replica only advertises its own slice.
        let range = self
            .settings
            .config
            .own_passive_ports()
            .unwrap_or(self.settings.config.passive_ports);
        let limits = self.settings.config.limits;
        let patience = Duration::from_secs(limits.passive_port_wait_seconds.into());
        let Some(listener) = self
            .shared
            .ports
            .open(
                &range,
                bind_ip,
                self.peer.ip(),
                &self.settings.config.proxy_protocol_from,
                patience,
            )
            .await
        else {
            tracing::warn!(%range, "passive ports exhausted");
            return self
                .reply(
                    425,
                    format!("No passive port free in {range}; try again later."),
                )
                .await;
        };
        let port = listener.port();
        self.data_plan = Some(DataPlan::Passive {
            listener,
            expires: tokio::time::Instant::now() + self.data_connect_timeout(),
        });
        match advertised {
            Some(Some(ip)) => {
                let [a, b, c, d] = ip.octets();
                self.reply(
                    227,
                    format!(
                        "Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                        port >> 8,
                        port & 0xff
                    ),
                )
                .await
            }
            _ => {
                self.reply(229, format!("Entering Extended Passive Mode (|||{port}|)"))
                    .await
            }
        }
    }

    pub(super) async fn epsv(&mut self, arg: EpsvArg) -> io::Result<()> {
        let ipv4 = self.local.ip().to_canonical().is_ipv4();
        match arg {
            EpsvArg::All => {
                self.epsv_all = true;
                self.reply(200, "EPSV ALL ok.").await
            }
            EpsvArg::Ipv4 if !ipv4 => {
                self.reply(522, "Network protocol not supported, use (2)")
                    .await
            }
            EpsvArg::Ipv6 if ipv4 => {
                self.reply(522, "Network protocol not supported, use (1)")
                    .await
            }
            _ => self.passive(true).await,
        }
    }

    pub(super) async fn active(&mut self, address: SocketAddr) -> io::Result<()> {
        let active = self.settings.config.active_mode;
        if !active.enabled {
            return self
                .reply(
                    502,
                    "Active mode (PORT/EPRT) is disabled; use PASV or EPSV.",
                )
                .await;
        }
        if self.epsv_all {
            return self.reply(503, "EPSV ALL is in effect; use EPSV.").await;
        }
        if !active.allow_foreign_address && !same_host(address.ip(), self.peer.ip()) {
            tracing::warn!(%address, "refused PORT to another address");
            return self
                .reply(
                    500,
                    "Illegal PORT command: the data address must be your own.",
                )
                .await;
        }
        if address.port() < 1024 {
            return self
                .reply(500, "Illegal PORT command: privileged port.")
                .await;
        }
        self.data_plan = Some(DataPlan::Active(address));
        self.reply(200, "PORT command successful. Consider using PASV.")
            .await
    }

    /// Checks that a data transfer may start at all (a plan exists, TLS policy is met).
    pub(super) async fn data_allowed(&mut self) -> io::Result<bool> {
        if self.data_plan.is_none() {
            self.reply(425, "Use PASV or EPSV first.").await?;
            return Ok(false);
        }
        if self.settings.tls_required() && !self.protect_data {
            self.data_plan = None;
            self.reply(521, "Data connections must be protected: send PROT P.")
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    fn data_connect_timeout(&self) -> Duration {
        Duration::from_secs(
            self.settings
                .config
                .limits
                .data_connect_timeout_seconds
                .max(1)
                .into(),
        )
    }

    /// Makes the data connection, replies `150`, then starts TLS on it if `PROT P`.
    pub(super) async fn open_data(
        &mut self,
        what: &str,
        direction: Direction,
    ) -> io::Result<Option<MaybeTls>> {
        match self.connect_data().await? {
            Some(tcp) => self.start_data(tcp, what, direction).await,
            None => Ok(None),
        }
    }

    /// Accepts (PASV) or makes (PORT) the data connection; replies `425` when none comes.
    pub(super) async fn connect_data(&mut self) -> io::Result<Option<TcpStream>> {
        let timeout = self.data_connect_timeout();
        let tcp = match self.data_plan.take() {
            Some(DataPlan::Passive { listener, expires }) => {
                let left = expires.saturating_duration_since(tokio::time::Instant::now());
                listener.accept(left).await
            }
            Some(DataPlan::Active(address)) => {
                tokio::time::timeout(timeout, TcpStream::connect(address))
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        let tcp = match tcp {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::info!(%error, "data connection failed");
                self.reply(425, "Cannot open data connection.").await?;
                return Ok(None);
            }
        };
        let _ = tcp.set_nodelay(true);
        if let Err(error) = keepalive::apply(&tcp, &self.settings.config.keepalive) {
            tracing::warn!(%error, "cannot set keepalive on data connection");
        }
        Ok(Some(tcp))
    }

    /// Replies `150` on a connected data connection, then starts TLS on it if `PROT P`.
    pub(super) async fn start_data(
        &mut self,
        tcp: TcpStream,
        what: &str,
        direction: Direction,
    ) -> io::Result<Option<MaybeTls>> {
        let timeout = self.data_connect_timeout();
        let mode = if self.ascii { "ASCII" } else { "BINARY" };
        self.reply(
            150,
            format!("Opening {mode} mode data connection for {what}."),
        )
        .await?;
        if !self.protect_data {
            return Ok(Some(MaybeTls::Plain(tcp)));
        }
        let Some(tls) = self.tls.clone() else {
            self.reply(425, "PROT P without TLS.").await?;
            return Ok(None);
        };
        let require_reuse = self
            .settings
            .config
            .tls
            .as_ref()
            .is_none_or(|tls| tls.require_session_reuse);
        let send_ticket = direction == Direction::Download;
        match tls
            .accept_data(tcp, send_ticket, require_reuse, timeout)
            .await
        {
            Ok(stream) => Ok(Some(MaybeTls::Tls(Box::new(stream)))),
            Err(error @ DataTlsError::NotResumed) => {
                self.shared.metrics.data_connections_refused.inc();
                tracing::warn!(%error, "refused a protected data connection");
                self.reply(
                    522,
                    "Data connection refused: it must resume the TLS session of this control connection.",
                )
                .await?;
                Ok(None)
            }
            Err(error) => {
                tracing::info!(%error, "data TLS handshake failed");
                self.reply(425, "TLS handshake on the data connection failed.")
                    .await?;
                Ok(None)
            }
        }
    }

    /// Runs a transfer while reading the control connection for `ABOR` (and answering `NOOP`,
    /// `STAT`); a closed control connection ends the transfer too.
    pub(super) async fn run_transfer<F>(&mut self, transfer: F) -> io::Result<Outcome>
    where
        F: Future<Output = io::Result<u64>>,
    {
        tokio::pin!(transfer);
        loop {
            tokio::select! {
                result = &mut transfer => return Ok(Outcome::Done(result)),
                line = self.read_line() => match line? {
                    Line::Closed => return Ok(Outcome::ControlClosed),
                    Line::TooLong => self.reply(500, "Command line too long.").await?,
                    Line::Command(line) => match command::parse(&line) {
                        Ok(Command::Abor) => return Ok(Outcome::Aborted),
                        Ok(Command::Noop) => self.reply(200, "NOOP ok.").await?,
                        Ok(Command::Stat(None)) => self.reply(213, "Transfer in progress.").await?,
                        // RFC 959: QUIT during a transfer waits for it, then closes.
                        Ok(Command::Quit) => {
                            self.quit_after_transfer = true;
                            return Ok(Outcome::Done((&mut transfer).await));
                        }
                        _ => self.reply(503, "A transfer is in progress; send ABOR to stop it.").await?,
                    },
                },
            }
        }
    }

    /// Sends the replies that end a transfer and audits it; returns whether the session goes on.
    pub(super) async fn finish_transfer(
        &mut self,
        direction: &str,
        path: &str,
        started: Instant,
        outcome: &Outcome,
    ) -> Reply0 {
        let (result, bytes) = match outcome {
            Outcome::Done(Ok(bytes)) => (TransferResult::Ok, *bytes),
            Outcome::Done(Err(error)) => {
                tracing::info!(direction, %error, "transfer failed");
                (TransferResult::Failed, 0)
            }
            Outcome::Aborted | Outcome::ControlClosed => (TransferResult::Aborted, 0),
        };
        let metrics = Arc::clone(&self.shared.metrics);
        if let Some(account) = self.account().filter(|account| account.metered())
            && direction != "listing"
        {
            metrics.user_bytes(account.name(), direction, bytes);
        }
        audit::transfer(
            &metrics,
            self.actor(),
            audit::Transfer {
                path,
                direction,
                bytes,
                elapsed: started.elapsed(),
                result,
            },
        );
        match outcome {
            Outcome::Done(Ok(_)) => self.reply(226, "Transfer complete.").await?,
            Outcome::Done(Err(error)) if error.kind() == io::ErrorKind::QuotaExceeded => {
                self.reply(
                    552,
                    format!("Quota exceeded: {error}; nothing of the upload was kept."),
                )
                .await?
            }
            Outcome::Done(Err(_)) => {
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?
            }
            Outcome::Aborted => {
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
                self.reply(226, "ABOR successful.").await?;
            }
            Outcome::ControlClosed => return Ok(Flow::Quit),
        }
        if self.quit_after_transfer {
            self.reply(221, "Goodbye.").await?;
            return Ok(Flow::Quit);
        }
        Ok(Flow::Continue)
    }
}
