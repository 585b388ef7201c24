//! FtpUsers: logins declared one object each, gathered into their FtpServer's users file.
//!
//! - [`gather`]: the pure decision — which users the file holds, each FtpUser's verdict.
//! - [`file`]: the file's TOML form; [`legacy`]: the lines of `spec.users.secretRef`.
//! - [`passwords`]: a password Secret's value, and hashing clear passwords once.
//! - [`status`]: an FtpUser's status from its verdict; [`observe`]: reading what they name.
//! - [`orphans`]: the status of FtpUsers whose server does not exist.

pub mod file;
pub mod gather;
pub mod legacy;
pub mod observe;
pub mod orphans;
pub mod passwords;
pub mod status;

pub use gather::{Bound, Credential, Gathered, Verdict, gather};
