//! The FTP server the operator's Deployments run.

pub mod config;
