//! `ftp-operator`: the controller and the CRD generator. Flags and wiring only.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ftp_operator::api::FtpServer;
use ftp_operator::controller::{self, Settings, http, metrics::Metrics};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info};

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
    /// Watch FtpServers and keep their ConfigMaps, Deployments and Services in step.
    Controller(ControllerArgs),
    /// Print the FtpServer CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Image for FtpServers that set no spec.image.
    #[arg(long, env = "FTP_OPERATOR_DEFAULT_FTP_IMAGE", default_value = concat!("ghcr.io/ftp-operator/ftp-operator:", env!("CARGO_PKG_VERSION")))]
    default_ftp_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    #[arg(long, default_value = "ftp-operator")]
    lease_name: String,
    /// This replica's name in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch only this namespace; default: all.
    #[arg(long)]
    namespace: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", FtpServer::crd_yaml());
            Ok(())
        }
        Command::Controller(args) => run_controller(args).await,
    }
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let identity = args
        .identity
        .unwrap_or_else(|| format!("ftp-operator-{}", std::process::id()));

    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, http::router(Arc::new(registry))).await {
            error!(%err, "metrics server stopped");
        }
    });

    let client = kube::Client::try_default().await?;
    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.leader_election_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .with_field_manager("ftp-operator-lease")
        .build()
        .await?;
    let (mut leading, lease_task) = lease.watch().await;
    info!(%identity, lease = %args.lease_name, "waiting for the lease");
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => changed?,
            _ = shutdown_signal() => return Ok(()),
        }
    }
    info!(%identity, "holding the lease; reconciling");

    let settings = Settings {
        default_image: args.default_ftp_image,
        namespace: args.namespace,
        identity: identity.clone(),
    };
    let lost_lease = async move {
        while leading.changed().await.is_ok() {
            if !*leading.borrow() {
                break;
            }
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(client, settings, metrics, async move {
        let _ = stopped.await;
    }));
    tokio::select! {
        _ = lost_lease => {
            // Another replica may already be writing: stop at once rather than race it.
            error!("lost the lease; exiting");
            std::process::exit(1);
        }
        _ = shutdown_signal() => {
            info!("shutting down");
            let _ = stop.send(());
            let _ = controller.await;
        }
    }
    // Dropping the receiver makes the lease task release the Lease for the next replica.
    let _ = lease_task.await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
