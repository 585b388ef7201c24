//! Re-reading the configuration while running. A mounted ConfigMap is swapped through a `..data`
//! symlink, so the file is polled by content (following symlinks) rather than watched by inode.
//! The users file and TLS certificate are polled too. New sessions get the new settings at once;
//! running sessions keep theirs. A file that does not load is logged and the old settings stay;
//! the metrics port reports which file and why (`/config-digest`), so the operator can say so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::auth::UsersError;
use super::cli::ServerFlags;
use super::config::{ConfigError, InputFile, RejectedInput, ServerConfig};
use super::metrics::Metrics;
use super::settings::{Settings, SettingsError};

/// How often the files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The contents of every file the settings are made from (`None`: unreadable): the config file
/// first, when there is one, then the users file and the TLS certificate and key it names.
pub type Fingerprint = Vec<Option<Vec<u8>>>;

/// Reads the files the settings are made from, once: the configuration is parsed from the very
/// bytes the fingerprint holds, and the files it names are fingerprinted before
/// [`Settings::build`] reads them. A file that changes after this therefore differs from the
/// fingerprint at the next poll. (Reading a file again for the fingerprint, after loading it, can
/// take in contents that arrived in between; the settings then hold the old contents for good,
/// as a pod did whose ConfigMap changed while it started.)
pub fn read(flags: &ServerFlags) -> (Fingerprint, Result<ServerConfig, SettingsError>) {
    let mut files = Fingerprint::new();
    let file = match &flags.config {
        Some(path) => {
            let bytes = std::fs::read(path);
            files.push(bytes.as_ref().ok().cloned());
            match bytes {
                Ok(bytes) => ServerConfig::parse(path, &bytes).map(Some),
                Err(source) => Err(ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            }
        }
        None => Ok(None),
    };
    let config = file.and_then(|file| flags.merge(file));
    if let Ok(config) = &config {
        let mut named: Vec<&PathBuf> = config.users_file.iter().collect();
        if let Some(tls) = &config.tls {
            named.extend([&tls.cert_file, &tls.key_file]);
        }
        if let Some(sftp) = config.sftp.as_ref().filter(|sftp| sftp.enabled) {
            named.extend(&sftp.host_key_files);
        }
        files.extend(named.into_iter().map(|path| std::fs::read(path).ok()));
    }
    (files, config.map_err(SettingsError::from))
}

/// The config file's contents in a fingerprint of [`read`], when the server has a config file.
pub fn config_contents<'a>(flags: &ServerFlags, files: &'a Fingerprint) -> Option<&'a [u8]> {
    flags
        .config
        .as_ref()
        .and_then(|_| files.first())
        .and_then(|contents| contents.as_deref())
}

/// What a reload that failed tells the operator: the file at fault, its line, and why.
pub fn rejected_input(error: &SettingsError) -> RejectedInput {
    let (file, line, reason) = match error {
        SettingsError::Users(UsersError::Line { line, reason }) => {
            (InputFile::Users, Some(*line), reason.clone())
        }
        SettingsError::Users(UsersError::Toml { line, .. }) => {
            (InputFile::Users, *line, error.to_string())
        }
        SettingsError::Users(UsersError::Read { .. }) => {
            (InputFile::Users, None, error.to_string())
        }
        SettingsError::Tls(_) => (InputFile::Tls, None, error.to_string()),
        // The probe account is part of the configuration file.
        SettingsError::Users(UsersError::Probe { .. })
        | SettingsError::Config(_)
        // The configuration names the host key files.
        | SettingsError::HostKeys(_)
        | SettingsError::Root { .. } => (InputFile::Config, None, error.to_string()),
        SettingsError::ObjectStorage(_) => (InputFile::ObjectStorage, None, error.to_string()),
    };
    RejectedInput { file, line, reason }
}

/// Polls forever, publishing new settings on `sender`. `last` is the fingerprint the current
/// settings were read with.
pub async fn watch_files(
    flags: ServerFlags,
    sender: watch::Sender<Arc<Settings>>,
    metrics: Arc<Metrics>,
    mut last: Fingerprint,
) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Reading files and hashing (the users file's dummy hash) block: off the runtime.
        let previous = std::mem::take(&mut last);
        let polled_flags = flags.clone();
        let polled = tokio::task::spawn_blocking(move || {
            let (now, config) = read(&polled_flags);
            if now == previous {
                return (now, None);
            }
            (now, Some(config.and_then(Settings::build)))
        })
        .await;
        let Ok((now, built)) = polled else {
            continue;
        };
        let served = config_contents(&flags, &now).map(<[u8]>::to_vec);
        last = now;
        let Some(built) = built else {
            continue;
        };
        match built {
            Ok(settings) => {
                let old = sender.borrow().config.clone();
                if settings.config.listen != old.listen
                    || settings.config.metrics_listen != old.metrics_listen
                {
                    tracing::warn!(
                        "listen addresses changed in the config file; they take effect after a restart"
                    );
                }
                tracing::info!(public_address = ?settings.config.public_address, users = settings.users.len(), "configuration reloaded");
                metrics
                    .config_reloads
                    .get_or_create(&super::metrics::ResultLabel {
                        result: "ok".into(),
                    })
                    .inc();
                sender.send_replace(Arc::new(settings));
                if let Some(contents) = &served {
                    metrics.set_served_config(contents);
                }
                metrics.set_rejected_input(None);
            }
            Err(error) => {
                tracing::error!(%error, "new configuration not loaded; keeping the previous one");
                metrics.set_rejected_input(Some(rejected_input(&error)));
                metrics
                    .config_reloads
                    .get_or_create(&super::metrics::ResultLabel {
                        result: "failed".into(),
                    })
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_toml_users_file_error_is_reported_with_its_line() {
        let error = SettingsError::Users(UsersError::Toml {
            user: Some("acme".into()),
            line: Some(4),
            reason: "unknown field `quota`".into(),
        });
        let rejected = rejected_input(&error);
        assert_eq!((rejected.file, rejected.line), (InputFile::Users, Some(4)));
        assert!(
            rejected.reason.contains("user \"acme\"") && rejected.reason.contains("quota"),
            "{}",
            rejected.reason
        );
    }
    use crate::ftp::config::config_digest;

    fn config_text(root: &Path, address: &str) -> String {
        format!(
            "root = {:?}\npassive_ports = {{ min = 30000, max = 30009 }}\npublic_address = \"{address}\"\n",
            root.display().to_string()
        )
    }

    /// A pod whose ConfigMap is swapped while it starts: the file changes after the settings were
    /// read and before the watcher's first poll. The watcher must apply it (it used to take the
    /// new contents as the ones already served, and kept the old settings for good).
    #[tokio::test]
    async fn a_change_before_the_first_poll_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ftp-server.toml");
        std::fs::write(&path, config_text(dir.path(), "198.18.0.1")).unwrap();
        let flags = ServerFlags {
            config: Some(path.clone()),
            ..ServerFlags::default()
        };
        let (files, config) = read(&flags);
        let settings = Settings::build(config.unwrap()).unwrap();
        let changed = config_text(dir.path(), "198.18.0.2");
        std::fs::write(&path, &changed).unwrap();

        let (sender, mut receiver) = watch::channel(Arc::new(settings));
        let metrics = Arc::new(Metrics::default());
        let watcher = tokio::spawn(watch_files(flags, sender, Arc::clone(&metrics), files));
        let seen = tokio::time::timeout(Duration::from_secs(10), receiver.changed()).await;
        watcher.abort();
        assert!(seen.is_ok(), "the change was never applied");
        assert_eq!(
            receiver.borrow().config.public_address.as_deref(),
            Some("198.18.0.2")
        );
        assert_eq!(
            metrics.served_config(),
            Some(config_digest(changed.as_bytes()))
        );
    }

    /// The fingerprint holds the bytes the configuration was parsed from.
    #[test]
    fn the_fingerprint_is_what_was_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ftp-server.toml");
        let text = config_text(dir.path(), "198.18.0.1");
        std::fs::write(&path, &text).unwrap();
        let flags = ServerFlags {
            config: Some(path),
            ..ServerFlags::default()
        };
        let (files, config) = read(&flags);
        assert_eq!(
            config.unwrap().public_address.as_deref(),
            Some("198.18.0.1")
        );
        assert_eq!(config_contents(&flags, &files), Some(text.as_bytes()));
    }

    /// A users file edited into one that does not load keeps the old users and reports the
    /// line and why; fixing it clears the report.
    #[tokio::test]
    async fn a_users_file_that_does_not_load_is_reported_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        let hash = crate::ftp::auth::hash_password("secret").unwrap();
        std::fs::write(&users, format!("alice:{hash}:rw\n")).unwrap();
        let path = dir.path().join("ftp-server.toml");
        let text = format!(
            "{}users_file = {:?}\n",
            config_text(dir.path(), "198.18.0.1"),
            users.display().to_string()
        );
        std::fs::write(&path, &text).unwrap();
        let flags = ServerFlags {
            config: Some(path.clone()),
            ..ServerFlags::default()
        };
        let (files, config) = read(&flags);
        let settings = Settings::build(config.unwrap()).unwrap();
        let (sender, mut receiver) = watch::channel(Arc::new(settings));
        let metrics = Arc::new(Metrics::default());
        metrics.set_served_config(text.as_bytes());
        let watcher = tokio::spawn(watch_files(flags, sender, Arc::clone(&metrics), files));

        std::fs::write(
            &users,
            format!("alice:{hash}:rw\nbob:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ\n"),
        )
        .unwrap();
        let reported = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(rejected) = metrics.served_config_report().rejected {
                    return rejected;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the bad users file was never reported");
        assert_eq!((reported.file, reported.line), (InputFile::Users, Some(2)));
        assert!(
            reported.reason.contains("not argon2id"),
            "{}",
            reported.reason
        );
        // The digest still names the configuration in effect.
        assert_eq!(
            metrics.served_config_report().digest,
            Some(config_digest(text.as_bytes()))
        );
        assert_eq!(receiver.borrow_and_update().users.len(), 1);

        std::fs::write(&users, format!("alice:{hash}:rw\nbob:{hash}:ro\n")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), receiver.changed()).await;
        watcher.abort();
        assert!(seen.is_ok(), "the fixed users file was never loaded");
        assert_eq!(receiver.borrow().users.len(), 2);
        assert_eq!(metrics.served_config_report().rejected, None);
    }

    #[test]
    fn a_bad_certificate_is_reported_as_the_tls_files() {
        let error = SettingsError::Tls(crate::ftp::tls::TlsError::NoCertificate(
            "/etc/ftp-tls/tls.crt".into(),
        ));
        let rejected = rejected_input(&error);
        assert_eq!((rejected.file, rejected.line), (InputFile::Tls, None));
        assert!(
            rejected.reason.contains("/etc/ftp-tls/tls.crt"),
            "{}",
            rejected.reason
        );
    }
}
