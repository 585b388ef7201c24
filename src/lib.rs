//! ftp-operator: runs FTP servers correctly behind cloud load balancers.
//!
//! Two wings meet at one seam, [`ftp::config`]: the controller renders that configuration and the
//! FTP server reads it. The server (`ftp`) never imports the operator's modules.

pub mod api;
pub mod controller;
pub mod ftp;
pub mod keepalive;
pub mod lb;

pub mod node_tuner;
pub mod process;
pub mod sftp;
