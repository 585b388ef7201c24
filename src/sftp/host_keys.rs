//! The server's SSH host keys: read from OpenSSH private key files, and made by
//! `ftp-server generate-host-key`. Every replica must present the same keys, so they are made
//! once (by the controller, into a Secret) and only ever read here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read SFTP host key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "SFTP host key {path} is not an unencrypted OpenSSH private key: {reason} (make one with \
         `ftp-server generate-host-key --type ed25519 --out FILE`)"
    )]
    Parse { path: PathBuf, reason: String },
    #[error("SFTP host keys {first} and {second} are both {algorithm}: give one key per type")]
    SameType {
        first: PathBuf,
        second: PathBuf,
        algorithm: String,
    },
}

/// The host keys, one per type, in the order the config lists them.
#[derive(Clone, Default)]
pub struct HostKeys {
    pub keys: Arc<Vec<PrivateKey>>,
}

impl std::fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(fingerprint))
            .finish()
    }
}

/// `ALGORITHM SHA256:...`, as `ssh-keygen -lf` and a client's first-connection prompt show it.
pub fn fingerprint(key: &PrivateKey) -> String {
    format!(
        "{} {}",
        key.algorithm(),
        key.public_key().fingerprint(HashAlg::Sha256)
    )
}

impl HostKeys {
    pub fn load(paths: &[PathBuf]) -> Result<HostKeys, HostKeyError> {
        let mut keys: Vec<(PathBuf, PrivateKey)> = Vec::new();
        for path in paths {
            let text = std::fs::read(path).map_err(|source| HostKeyError::Read {
                path: path.clone(),
                source,
            })?;
            let key = PrivateKey::from_openssh(&text).map_err(|error| HostKeyError::Parse {
                path: path.clone(),
                reason: error.to_string(),
            })?;
            if key.is_encrypted() {
                return Err(HostKeyError::Parse {
                    path: path.clone(),
                    reason: "it is encrypted with a passphrase".into(),
                });
            }
            if let Some((first, _)) = keys.iter().find(|(_, k)| k.algorithm() == key.algorithm()) {
                return Err(HostKeyError::SameType {
                    first: first.clone(),
                    second: path.clone(),
                    algorithm: key.algorithm().to_string(),
                });
            }
            keys.push((path.clone(), key));
        }
        Ok(HostKeys {
            keys: Arc::new(keys.into_iter().map(|(_, key)| key).collect()),
        })
    }
}

/// The key types `generate-host-key` makes: ed25519 for every current client, ECDSA P-256 and
/// RSA for clients that predate ed25519.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
    Rsa,
}

/// A new private key in OpenSSH format (what `ssh-keygen -t TYPE -N ''` writes).
pub fn generate(kind: KeyType) -> Result<String, ssh_key::Error> {
    let algorithm = match kind {
        KeyType::Ed25519 => Algorithm::Ed25519,
        KeyType::EcdsaP256 => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        KeyType::Rsa => Algorithm::Rsa { hash: None },
    };
    let mut rng = ssh_key::rand_core::UnwrapErr(ssh_key::getrandom::SysRng);
    let key = match kind {
        // 3072 bits: what ssh-keygen makes by default.
        KeyType::Rsa => PrivateKey::from(ssh_key::private::RsaKeypair::random(&mut rng, 3072)?),
        _ => PrivateKey::random(&mut rng, algorithm)?,
    };
    Ok(key.to_openssh(LineEnding::LF)?.to_string())
}

/// Writes a new key to `path` readable by its owner only; an existing file is never replaced
/// (a host key that changes is what clients must be protected from).
pub fn generate_file(kind: KeyType, path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = generate(kind).map_err(|e| anyhow::anyhow!("cannot make a {kind:?} key: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())?;
    let key = PrivateKey::from_openssh(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(fingerprint(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_one_key_per_type_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ed25519 = dir.path().join("ed25519");
        let ecdsa = dir.path().join("ecdsa");
        generate_file(KeyType::Ed25519, &ed25519).unwrap();
        generate_file(KeyType::EcdsaP256, &ecdsa).unwrap();
        let keys = HostKeys::load(&[ed25519.clone(), ecdsa.clone()]).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.keys[0].algorithm(), Algorithm::Ed25519);
        let again = HostKeys::load(std::slice::from_ref(&ed25519)).unwrap();
        assert_eq!(fingerprint(&again.keys[0]), fingerprint(&keys.keys[0]));
        let error = generate_file(KeyType::Ed25519, &ed25519).unwrap_err();
        assert!(error.to_string().contains("cannot create"), "{error}");
        let error = HostKeys::load(&[ed25519.clone(), ed25519]).unwrap_err();
        assert!(error.to_string().contains("one key per type"), "{error}");
        std::fs::write(dir.path().join("junk"), "not a key").unwrap();
        let error = HostKeys::load(&[dir.path().join("junk")]).unwrap_err();
        assert!(error.to_string().contains("generate-host-key"), "{error}");
    }
}
