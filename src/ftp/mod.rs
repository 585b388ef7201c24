//! The FTP server the operator's StatefulSets run.
//!
//! One concern per module: [`command`] parses, [`session`] runs the control connection,
//! [`passive`] and [`transfer`] carry data, [`storage`] is where files live
//! (the local disk, whose [`fs`] keeps every path inside the root).

pub mod access;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod command;
pub mod config;
pub mod control;
pub mod fs;
pub mod keepalive;
pub mod listing;
pub mod live_users;
pub mod memory;
pub mod metrics;
pub mod passive;
pub mod proxy;
pub mod quota;
pub mod reload;
pub mod reply;
pub mod server;
pub mod session;
pub mod settings;
pub mod storage;
pub mod stream;
pub mod throttle;
pub mod tls;
pub mod transfer;
pub mod upload_memory;
