//! Re-reading the configuration while running. A mounted ConfigMap is swapped through a `..data`
//! symlink, so the file is polled by content (following symlinks) rather than watched by inode.
//! The users file and TLS certificate are polled too. New sessions get the new settings at once;
//! running sessions keep theirs. A file that does not load is logged and the old settings stay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::cli::ServerFlags;
use super::config::ServerConfig;
use super::metrics::Metrics;
use super::settings::{Settings, SettingsError};

/// How often the files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The configuration the flags and the config file (if any) give now.
pub fn load(flags: &ServerFlags) -> Result<ServerConfig, SettingsError> {
    let file = match &flags.config {
        Some(path) => Some(ServerConfig::load(path)?),
        None => None,
    };
    Ok(flags.merge(file)?)
}

/// The contents of every file the settings were built from, to notice any change.
fn fingerprint(flags: &ServerFlags, config: Option<&ServerConfig>) -> Vec<Option<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = flags.config.iter().cloned().collect();
    if let Some(config) = config {
        paths.extend(config.users_file.iter().cloned());
        if let Some(tls) = &config.tls {
            paths.push(tls.cert_file.clone());
            paths.push(tls.key_file.clone());
        }
    }
    paths.iter().map(|path| std::fs::read(path).ok()).collect()
}

/// Polls forever, publishing new settings on `sender`.
pub async fn watch_files(
    flags: ServerFlags,
    sender: watch::Sender<Arc<Settings>>,
    metrics: Arc<Metrics>,
) {
    let mut last = {
        let current = sender.borrow().clone();
        fingerprint(&flags, Some(&current.config))
    };
    // The file may have been swapped after the served digest was taken at start and before
    // this first fingerprint: the change would then never be seen, and the server would serve
    // (and report) the old configuration for good. Compare with what it serves instead.
    let config_now = flags
        .config
        .as_ref()
        .and_then(|_| last.first().cloned().flatten());
    if config_now.map(|contents| super::metrics::config_digest(&contents))
        != metrics.served_config()
    {
        last.clear();
    }
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Reading files and hashing (the users file's dummy hash) block: off the runtime.
        let previous = std::mem::take(&mut last);
        let polled_flags = flags.clone();
        let polled = tokio::task::spawn_blocking(move || {
            let config = load(&polled_flags);
            let now = fingerprint(&polled_flags, config.as_ref().ok());
            if now == previous {
                return (now, None);
            }
            (now, Some(config.and_then(Settings::build)))
        })
        .await;
        let Ok((now, built)) = polled else {
            continue;
        };
        // The config file comes first in the fingerprint, when there is one.
        let config_contents = flags
            .config
            .as_ref()
            .and_then(|_| now.first().cloned().flatten());
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
                if let Some(contents) = &config_contents {
                    metrics.set_served_config(contents);
                }
            }
            Err(error) => {
                tracing::error!(%error, "new configuration not loaded; keeping the previous one");
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
