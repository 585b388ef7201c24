//! `ftp-operator`: the controller and the CRD generator. Flags and wiring only.

use clap::{Parser, Subcommand};
use ftp_operator::api::FtpServer;

#[derive(Parser)]
#[command(
    version,
    about = "Runs FTP servers correctly behind cloud load balancers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the FtpServer CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", FtpServer::crd_yaml()),
    }
    Ok(())
}
