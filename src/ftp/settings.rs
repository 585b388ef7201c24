//! What a session runs with: the configuration plus everything loaded from the files it names
//! (users, TLS certificate, root directory). Built whole or not at all, so a bad reload keeps the
//! previous settings.

use super::auth::{Users, UsersError};
use super::config::{ConfigError, ServerConfig};
use std::sync::Arc;

use super::storage::Storage;
use super::storage::local::LocalStorage;
use super::storage::object::{ObjectStorage, OpenError};
use super::tls::{self, TlsError};
use crate::sftp::host_keys::{HostKeyError, HostKeys};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Users(#[from] UsersError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    ObjectStorage(#[from] OpenError),
    #[error(transparent)]
    HostKeys(#[from] HostKeyError),
    #[error("cannot open root directory {path}: {source}")]
    Root {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Settings {
    pub config: ServerConfig,
    pub users: Users,
    pub tls: Option<tls::TlsAcceptors>,
    /// Where the files live; every login's home is opened from it.
    pub storage: Arc<dyn Storage>,
    /// The SFTP host keys (none when SFTP is off).
    pub sftp_host_keys: HostKeys,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("users", &self.users.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Settings {
    pub fn build(config: ServerConfig) -> Result<Settings, SettingsError> {
        config.validate()?;
        let mut users = match &config.users_file {
            Some(path) => Users::load(path)?,
            None => Users::default(),
        };
        if let Some(probe) = &config.probe_user {
            users.add_probe(probe)?;
        }
        let tls = match &config.tls {
            Some(tls) => Some(tls::acceptors(&tls.cert_file, &tls.key_file)?),
            None => None,
        };
        let sftp_host_keys = match config.sftp.as_ref().filter(|sftp| sftp.enabled) {
            Some(sftp) => HostKeys::load(&sftp.host_key_files)?,
            None => HostKeys::default(),
        };
        let storage: Arc<dyn Storage> = match (&config.storage.s3, &config.storage.azure_blob) {
            (Some(s3), _) => Arc::new(ObjectStorage::s3(s3)?),
            (None, Some(azure)) => Arc::new(ObjectStorage::azure_blob(azure)?),
            (None, None) => Arc::new(LocalStorage::open(&config.root).map_err(|source| {
                SettingsError::Root {
                    path: config.root.display().to_string(),
                    source,
                }
            })?),
        };
        Ok(Settings {
            config,
            users,
            tls,
            storage,
            sftp_host_keys,
        })
    }

    /// TLS is required for login and data.
    pub fn tls_required(&self) -> bool {
        self.config.tls.as_ref().is_some_and(|tls| tls.required)
    }
}
