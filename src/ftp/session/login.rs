//! `USER` and `PASS`: the lockout's turn, the password check in the verifier's bounded memory,
//! the login's home, and replies that tell the truth about why a login did not happen.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::{Flow, LoggedIn, Login, Reply0, Session};
use crate::ftp::access::{Access, Permissions};
use crate::ftp::audit;
use crate::ftp::auth::LoginRefusal;
use crate::ftp::auth::lockout::{Admission, Policy, Subject};
use crate::ftp::storage::Home;

impl Session {
    pub(super) async fn user(&mut self, name: String) -> Reply0 {
        if self.user.is_some() {
            self.reply(530, "Already logged in; reconnect to change user.")
                .await?;
            return Ok(Flow::Continue);
        }
        if self.settings.tls_required() && !self.tls_active() {
            self.reply(530, "TLS is required: send AUTH TLS first.")
                .await?;
            return Ok(Flow::Continue);
        }
        if self.login_locked(&name) {
            return self.refuse_locked(&name).await;
        }
        if !self.settings.users.address_allowed(&name, self.peer.ip()) {
            return self.refuse_address(&name).await;
        }
        let anonymous = matches!(name.as_str(), "anonymous" | "ftp");
        if anonymous && self.settings.config.anonymous.enabled {
            self.pending_login = Some(Login::Anonymous);
            self.reply(
                331,
                "Anonymous login ok, send your email address as password.",
            )
            .await?;
        } else {
            self.pending_login = Some(Login::User(name));
            self.reply(331, "Please specify the password.").await?;
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn pass(&mut self, password: String) -> Reply0 {
        if self.user.is_some() {
            self.reply(230, "Already logged in.").await?;
            return Ok(Flow::Continue);
        }
        let started = tokio::time::Instant::now();
        let Some(login) = self.pending_login.take() else {
            self.reply(503, "Login with USER first.").await?;
            return Ok(Flow::Continue);
        };
        // Checked again here: sessions that sent USER before the lockout must not keep guessing.
        let name = match &login {
            Login::Anonymous => "anonymous".to_owned(),
            Login::User(name) => name.clone(),
        };
        if self.login_locked(&name) {
            return self.refuse_locked(&name).await;
        }
        // Asked again: the users file may have changed since USER.
        if matches!(login, Login::User(_))
            && !self.settings.users.address_allowed(&name, self.peer.ip())
        {
            return self.refuse_address(&name).await;
        }
        let mut attempt = None;
        let logged_in = match login {
            Login::Anonymous => Some(self.anonymous_access()),
            Login::User(name) => {
                // Both waits end at the login deadline: a burst waits its turn, never longer
                // than the client was promised.
                let deadline = self.login_deadline;
                let admitted = self
                    .shared
                    .lockout
                    .admit(
                        self.lockout_subjects(&name),
                        self.lockout_policy(),
                        deadline,
                    )
                    .await;
                let started_attempt = match admitted {
                    Admission::Admitted(attempt) => attempt,
                    Admission::Locked => return self.refuse_locked(&name).await,
                    Admission::TimedOut => return self.refuse_busy(&name).await,
                };
                let verifier = Arc::clone(&self.shared.verifier);
                match self
                    .settings
                    .users
                    .verify(&name, &password, &verifier, deadline)
                    .await
                {
                    Ok(access) => {
                        attempt = Some(started_attempt);
                        access.map(|access| (name, access))
                    }
                    Err(busy) => {
                        // Nothing was verified: not a failed guess.
                        started_attempt.finish(false);
                        tracing::warn!(%busy, "login not verified");
                        return self.refuse_busy(&name).await;
                    }
                }
            }
        };
        // The password was right (or the login is anonymous): the account's own rules now.
        let account = match (&logged_in, attempt.is_some()) {
            (Some((name, _)), true) => {
                match self.settings.users.admit_session(
                    name,
                    &self.shared.live_users,
                    jiff::Timestamp::now(),
                ) {
                    Ok(account) => Some(account),
                    Err(refusal) => {
                        if let Some(attempt) = attempt {
                            // Not a failed guess: the password was right.
                            attempt.finish(false);
                        }
                        return self.refuse_account(name.clone(), refusal, started).await;
                    }
                }
            }
            _ => None,
        };
        let logged_in = match logged_in {
            Some((name, access)) => match self.open_home(&access).await {
                Ok(home) => Some(LoggedIn {
                    name,
                    permissions: access.permissions,
                    home,
                    account,
                }),
                Err(error) => {
                    tracing::error!(user = %name, home = %access.home, %error, "cannot open the login's home");
                    // The password was right: the attempt is not a failed guess.
                    if let Some(attempt) = attempt {
                        attempt.finish(false);
                    }
                    self.reply(530, "Login refused: the home directory cannot be opened.")
                        .await?;
                    return Ok(Flow::Continue);
                }
            },
            None => None,
        };
        let failed = logged_in.is_none();
        let locked = attempt.is_some_and(|attempt| attempt.finish(failed));
        match logged_in {
            Some(user) => {
                tracing::info!(user = %user.name, permissions = %user.permissions, "login");
                audit::login(&self.shared.metrics, self.actor_named(&user.name), "ok");
                self.meter_login(&user.name, "ok");
                self.user = Some(user);
                self.reply(230, "Login successful.").await?;
            }
            None => {
                audit::login(&self.shared.metrics, self.actor_named(&name), "failed");
                self.meter_login(&name, "failed");
                let limits = self.settings.config.limits;
                // Every failure is answered at the same time after PASS, however long the
                // verification took (unknown users, known ones with cheaper parameters).
                tokio::time::sleep_until(
                    started + Duration::from_millis(limits.login_failure_delay_millis.into()),
                )
                .await;
                tracing::warn!(locked, "login failed");
                if locked {
                    self.pending_login = None;
                    self.reply(421, "Too many failed logins; try again later.")
                        .await?;
                    return Ok(Flow::Quit);
                }
                self.reply(530, "Login incorrect.").await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// A login of a metered user (one of the TOML form) in its own series.
    fn meter_login(&self, name: &str, result: &str) {
        if self.settings.users.policy(name).metered {
            self.shared.metrics.user_login(name, result);
        }
    }

    /// The client's address is not in the user's `allowed_cidrs`: refused before any password is
    /// asked, so the address cannot guess. Nothing was guessed, so nothing counts toward a
    /// lockout: a disallowed address must not be able to throttle the user's right password.
    async fn refuse_address(&mut self, name: &str) -> Reply0 {
        self.pending_login = None;
        audit::login(&self.shared.metrics, self.actor_named(name), "address");
        self.meter_login(name, "address");
        self.reply(530, "Login refused from your address.").await?;
        Ok(Flow::Continue)
    }

    /// The password was right but the account may not log in now. Disabled and expired accounts
    /// hear what a wrong password hears, at the same time after `PASS` (the audit log says
    /// which); a user at its `max_sessions` is told so, as a full server says it is full.
    async fn refuse_account(
        &mut self,
        name: String,
        refusal: LoginRefusal,
        started: tokio::time::Instant,
    ) -> Reply0 {
        audit::login(
            &self.shared.metrics,
            self.actor_named(&name),
            refusal.as_str(),
        );
        self.meter_login(&name, refusal.as_str());
        tracing::warn!(user = %name, %refusal, "login refused by the account's policy");
        match refusal {
            LoginRefusal::Account(_) => {
                let delay = self.settings.config.limits.login_failure_delay_millis;
                tokio::time::sleep_until(started + Duration::from_millis(delay.into())).await;
                self.reply(530, "Login incorrect.").await?;
                Ok(Flow::Continue)
            }
            LoginRefusal::TooManySessions(limit) => {
                self.reply(
                    421,
                    format!(
                        "Too many sessions of this user (at most {}); try again later.",
                        limit.max_sessions
                    ),
                )
                .await?;
                Ok(Flow::Quit)
            }
        }
    }

    fn anonymous_access(&self) -> (String, Access) {
        let anonymous = &self.settings.config.anonymous;
        let permissions = if anonymous.writable {
            Permissions::read_write()
        } else {
            Permissions::read_only()
        };
        // The config was validated at load, so the home is already a valid one.
        let home = crate::ftp::access::home_path(anonymous.home.as_deref().unwrap_or_default())
            .unwrap_or_default();
        ("anonymous".into(), Access { permissions, home })
    }

    /// Opens (creating if missing) the login's home on a blocking thread.
    async fn open_home(&self, access: &Access) -> io::Result<Arc<dyn Home>> {
        let storage = Arc::clone(&self.settings.storage);
        let home = access.home.clone();
        tokio::task::spawn_blocking(move || storage.open_home(&home))
            .await
            .map_err(io::Error::other)?
    }

    fn lockout_subjects(&self, name: &str) -> [Subject; 2] {
        [
            Subject::network(self.peer.ip()),
            Subject::User(name.to_owned()),
        ]
    }

    fn lockout_policy(&self) -> Policy {
        let limits = self.settings.config.limits;
        Policy {
            threshold: limits.login_failures_before_lockout,
            window: Duration::from_secs(limits.login_failure_window_seconds.into()),
            lock_for: Duration::from_secs(limits.lockout_seconds.into()),
        }
    }

    fn login_locked(&self, name: &str) -> bool {
        self.shared.lockout.is_locked(&self.lockout_subjects(name))
    }

    /// The client's network is locked out after failed logins.
    async fn refuse_locked(&mut self, name: &str) -> Reply0 {
        self.pending_login = None;
        audit::login(&self.shared.metrics, self.actor_named(name), "locked");
        self.reply(421, "Too many failed logins; try again later.")
            .await?;
        Ok(Flow::Quit)
    }

    /// No login failed: the server could not check this one before the login timeout.
    async fn refuse_busy(&mut self, name: &str) -> Reply0 {
        self.pending_login = None;
        audit::login(&self.shared.metrics, self.actor_named(name), "busy");
        self.reply(
            421,
            "Server busy: too many logins are being checked; try again later.",
        )
        .await?;
        Ok(Flow::Quit)
    }
}
