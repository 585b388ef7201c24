//! `AUTH TLS`, implicit FTPS, `PBSZ` and `PROT`: the control connection's upgrade and whether
//! data connections are protected.

use std::io;

use super::Session;
use crate::ftp::command::Protection;

impl Session {
    pub(super) fn tls_active(&self) -> bool {
        self.control.is_tls()
    }

    pub(super) async fn auth(&mut self) -> io::Result<()> {
        let Some(acceptors) = self.settings.tls.clone() else {
            return self
                .reply(502, "TLS is not configured on this server.")
                .await;
        };
        if self.tls_active() {
            return self.reply(503, "TLS is already active.").await;
        }
        self.reply(234, "Proceed with negotiation.").await?;
        let limit = self.idle_timeout();
        let tls = acceptors.session();
        self.control.upgrade(&tls.control(), limit).await?;
        self.tls = Some(tls);
        Ok(())
    }

    /// The TLS handshake an implicit FTPS session starts with. Data connections are protected
    /// from the start too (clients still send `PBSZ`/`PROT P`, which are accepted).
    pub(super) async fn implicit_tls(&mut self) -> io::Result<()> {
        let Some(acceptors) = self.settings.tls.clone() else {
            return Err(io::Error::other(
                "implicit FTPS without a TLS configuration",
            ));
        };
        let limit = self.idle_timeout();
        let tls = acceptors.session();
        self.control.upgrade(&tls.control(), limit).await?;
        self.tls = Some(tls);
        self.protect_data = true;
        Ok(())
    }

    pub(super) async fn prot(&mut self, level: Protection) -> io::Result<()> {
        if self.tls.is_none() {
            return self.reply(503, "PROT needs AUTH TLS first.").await;
        }
        match level {
            Protection::Private => {
                self.protect_data = true;
                self.reply(200, "PROT now Private.").await
            }
            Protection::Clear if self.settings.tls_required() => {
                self.reply(
                    534,
                    "PROT C refused: this server requires protected data connections.",
                )
                .await
            }
            Protection::Clear => {
                self.protect_data = false;
                self.reply(200, "PROT now Clear.").await
            }
        }
    }

    pub(super) async fn pbsz(&mut self) -> io::Result<()> {
        if self.tls.is_some() {
            self.reply(200, "PBSZ=0").await
        } else {
            self.reply(503, "PBSZ needs AUTH TLS first.").await
        }
    }
}
