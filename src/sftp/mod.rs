//! SFTP: a second front door to the same server. SSH (russh) carries the `sftp` subsystem only;
//! logins, permissions, homes, storage, audit, metrics, session limits, PROXY protocol and
//! keepalive are FTP's own ([`crate::ftp`]), so a user declared once reaches the same files by
//! either protocol.
//!
//! [`ssh`] runs a connection and its logins, [`requests`] one channel's packet stream and its
//! limits, [`files`] the requests against the login's home, [`host_keys`] and
//! [`authorized_keys`] the keys of the server and of its users.

pub mod authorized_keys;
pub mod files;
pub mod host_keys;
pub mod requests;
pub mod ssh;
