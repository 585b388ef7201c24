//! `ftp-server`: the FTP daemon. Flags and wiring only; the logic lives in `ftp_operator::ftp`.

use std::io::Read;

use clap::{Parser, Subcommand};
use ftp_operator::ftp::{auth, cli::ServerFlags, memory, reload, server, settings::Settings};
use ftp_operator::sftp::host_keys::{self, KeyType};

#[derive(Parser)]
#[command(
    name = "ftp-server",
    version,
    about = "FTP server for running behind cloud load balancers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Tool>,
    #[command(flatten)]
    flags: ServerFlags,
}

#[derive(Subcommand)]
enum Tool {
    /// Read a password from stdin and print its argon2id PHC hash for the users file.
    HashPassword,
    /// Make an SFTP host key (an OpenSSH private key, mode 0600) and print its fingerprint; an
    /// existing file is never replaced.
    GenerateHostKey {
        #[arg(long = "type", value_enum, default_value = "ed25519")]
        kind: KeyType,
        /// Where to write the key; without it, the key is printed to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Tool::GenerateHostKey { kind, out }) = &cli.command {
        match out {
            Some(path) => println!("{}", host_keys::generate_file(*kind, path)?),
            None => print!(
                "{}",
                host_keys::generate(*kind).map_err(|e| anyhow::anyhow!("{e}"))?
            ),
        }
        return Ok(());
    }
    if let Some(Tool::HashPassword) = cli.command {
        let mut password = String::new();
        std::io::stdin().read_to_string(&mut password)?;
        let password = password.strip_suffix('\n').unwrap_or(&password);
        let password = password.strip_suffix('\r').unwrap_or(password);
        println!(
            "{}",
            auth::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?
        );
        return Ok(());
    }
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    memory::tune_allocator();
    let (files, config) = reload::read(&cli.flags);
    let settings = Settings::build(config?)?;
    // Large plain transfers each run on a blocking thread: allow one per session.
    let blocking_threads = settings.config.limits.max_sessions as usize + 64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()?;
    let result = runtime.block_on(server::serve(settings, cli.flags, files));
    // Sessions cut at the end of the grace period may still be unwinding a blocking transfer.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
