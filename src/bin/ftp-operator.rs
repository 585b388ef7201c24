//! `ftp-operator`: the controller, the node keepalive tuner and the CRD generator. Flags and
//! wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ftp_operator::api::{FtpServer, FtpUser};
use ftp_operator::controller::budgets::{self, ClusterBudgets, NodePortRange};
use ftp_operator::controller::probe::ProbeMetrics;
use ftp_operator::controller::{self, Settings, metrics::Metrics};
use ftp_operator::node_tuner;
use ftp_operator::process::http;
use ftp_operator::process::leader::{Elector, FenceLayer, Timings};
use ftp_operator::process::watch_refusals::WatchRefusals;
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
    /// Watch FtpServers and keep their ConfigMaps, StatefulSets and Services in step.
    Controller(ControllerArgs),
    /// Print a CustomResourceDefinition as YAML: FtpServer's, or with `ftpuser` FtpUser's.
    Crd {
        #[arg(value_enum, default_value = "ftpserver")]
        kind: CrdKind,
    },
    /// Set the node's TCP keepalive sysctls for the FtpServers that need them.
    #[command(subcommand)]
    NodeTuner(NodeTunerCommand),
}

#[derive(Subcommand)]
enum NodeTunerCommand {
    /// The DaemonSet agent: watch FtpServers, tune this node, restore it when none needs it.
    Run(NodeTunerRunArgs),
    /// Set the keepalive sysctls once, recording the previous values in a state file.
    Apply(NodeTunerApplyArgs),
    /// Put back the values recorded by `apply` and delete the state file.
    Restore(NodeTunerRestoreArgs),
    /// The Helm pre-delete hook: stop the operator, have every tuned node restored, and remove
    /// the node-keepalive finalizers, so nothing is left tuned or stuck.
    Uninstall(NodeTunerUninstallArgs),
}

#[derive(clap::Args)]
struct NodeTunerUninstallArgs {
    /// The operator's namespace (the node tuning ConfigMap's and the Deployment's).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The operator's Deployment, scaled to zero first.
    #[arg(long)]
    operator_deployment: String,
    /// Seconds to wait for the operator to stop, and then for the nodes to be restored.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

#[derive(clap::Args)]
struct NodeTunerRunArgs {
    /// The Node this agent runs on (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    #[arg(long, default_value = node_tuner::DEFAULT_SYSCTL_ROOT)]
    sysctl_root: PathBuf,
    /// Seconds between checks for reboots and hand changes.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// The install this agent belongs to (the DaemonSet passes its owner's uid); an uninstall
    /// naming it on the Node makes the agent restore the node.
    #[arg(long, env = node_tuner::daemon_set::INSTALL_UID_ENV)]
    install_uid: Option<String>,
}

#[derive(clap::Args)]
struct NodeTunerApplyArgs {
    /// tcp_keepalive_time, seconds.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32767))]
    idle: u32,
    /// tcp_keepalive_intvl, seconds.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=32767))]
    interval: u32,
    /// tcp_keepalive_probes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=127))]
    probes: u32,
    #[arg(long)]
    state_file: PathBuf,
    #[arg(long, default_value = node_tuner::DEFAULT_SYSCTL_ROOT)]
    sysctl_root: PathBuf,
}

#[derive(clap::Args)]
struct NodeTunerRestoreArgs {
    #[arg(long)]
    state_file: PathBuf,
    #[arg(long, default_value = node_tuner::DEFAULT_SYSCTL_ROOT)]
    sysctl_root: PathBuf,
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Image for FtpServers that set no spec.image.
    #[arg(long, env = "FTP_OPERATOR_DEFAULT_FTP_IMAGE", default_value = concat!("ghcr.io/ftp-operator/ftp-operator:", env!("CARGO_PKG_VERSION")))]
    default_ftp_image: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease and of the node tuner DaemonSet.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    #[arg(long, default_value = "ftp-operator")]
    lease_name: String,
    /// This replica's name in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Image of the node keepalive tuner DaemonSet; default: the same as --default-ftp-image
    /// (one image holds both binaries).
    #[arg(long, env = "FTP_OPERATOR_NODE_TUNER_IMAGE")]
    node_tuner_image: Option<String>,
    /// Watch only these namespaces (repeat the flag or separate by commas); default: all.
    /// With several, node tuning is off (it counts FtpServers cluster-wide or in one namespace).
    #[arg(long, value_delimiter = ',')]
    namespace: Vec<String>,
    /// Hold Ready until every running server pod serves the rendered configuration (asked on
    /// its metrics port). `false` only where no server really runs, as on kwok's fake nodes.
    #[arg(long, env = "FTP_OPERATOR_VERIFY_SERVED_CONFIG", default_value_t = true, action = clap::ArgAction::Set)]
    verify_served_config: bool,
    /// Seconds a Service may go without a load-balancer address before its FtpServer is
    /// Stalled (cloud balancers take a few minutes to provision).
    #[arg(long, default_value_t = 600)]
    load_balancer_address_timeout_seconds: u64,
    /// Seconds between rounds of the reachability probe, which logs in to each FtpServer through
    /// its public address and lists over EPSV and PASV (the PassiveReachable condition); 0 turns
    /// it off (and no probe account is made), as where no server really runs (kwok's fake nodes).
    #[arg(
        long,
        env = "FTP_OPERATOR_PROBE_INTERVAL_SECONDS",
        default_value_t = 60
    )]
    probe_interval_seconds: u64,
    /// How long each probe step (connect, a reply, the data connection) may take.
    #[arg(long, default_value_t = 5)]
    probe_step_timeout_seconds: u64,
    /// Node keepalive tuning (the chart's nodeTuning.enabled): run the node tuner DaemonSet's
    /// controller; without it FtpServers asking for keepalive.nodeSysctls are Stalled.
    #[arg(long, env = "FTP_OPERATOR_NODE_TUNING", default_value_t = false, action = clap::ArgAction::Set)]
    node_tuning: bool,
    /// The apiserver's --service-node-port-range, which the operator cannot read: a server's
    /// Services that would not fit in what is left of it are Stalled before they are applied.
    #[arg(long, default_value_t = NodePortRange::DEFAULT)]
    node_port_range: NodePortRange,
    /// Azure load-balancing rules per node NIC (300; more only with several Standard Load
    /// Balancers): Azure servers whose Services would exceed it with the cluster's other
    /// LoadBalancer Services are Stalled.
    #[arg(long, default_value_t = budgets::AZURE_RULES_PER_NIC)]
    azure_rules_per_nic: u32,
    /// Check those budgets with a cluster-wide LIST of Services; `false` in a namespaced
    /// install, which may not list them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cluster_budgets: bool,
}

/// The resources whose CRDs `crd` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CrdKind {
    Ftpserver,
    Ftpuser,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { kind } => {
            print!(
                "{}",
                match kind {
                    CrdKind::Ftpserver => FtpServer::crd_yaml(),
                    CrdKind::Ftpuser => FtpUser::crd_yaml(),
                }
            );
            Ok(())
        }
        Command::Controller(args) => {
            exit_on_panic();
            run_controller(args).await
        }
        Command::NodeTuner(command) => run_node_tuner(command).await,
    }
}

async fn run_node_tuner(command: NodeTunerCommand) -> anyhow::Result<()> {
    match command {
        NodeTunerCommand::Apply(args) => {
            let values = node_tuner::KeepaliveSysctls {
                time: args.idle,
                intvl: args.interval,
                probes: args.probes,
            };
            let root = node_tuner::SysctlRoot::new(args.sysctl_root);
            node_tuner::oneshot::apply(&root, &args.state_file, values)?;
            println!("{values}");
            Ok(())
        }
        NodeTunerCommand::Restore(args) => {
            let root = node_tuner::SysctlRoot::new(args.sysctl_root);
            node_tuner::oneshot::restore(&root, &args.state_file)?;
            println!("{}", root.read()?);
            Ok(())
        }
        NodeTunerCommand::Run(args) => {
            init_logging();
            let settings = node_tuner::agent::AgentSettings {
                node_name: args.node_name,
                sysctl_root: node_tuner::SysctlRoot::new(args.sysctl_root),
                resync: Duration::from_secs(args.resync_seconds.max(1)),
                install_uid: args.install_uid.filter(|uid| !uid.is_empty()),
            };
            let client = kube::Client::try_default().await?;
            node_tuner::agent::run(client, settings, shutdown_signal()).await
        }
        NodeTunerCommand::Uninstall(args) => {
            init_logging();
            let client = kube::Client::try_default().await?;
            let settings = node_tuner::uninstall::UninstallSettings {
                namespace: args.namespace,
                operator_deployment: args.operator_deployment,
                timeout: Duration::from_secs(args.timeout_seconds),
            };
            node_tuner::uninstall::run(client, settings).await
        }
    }
}

/// A panic anywhere ends the process: a controller with a dead task must not keep the lease
/// (and report healthy) while reconciling nothing.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        error!(panic = %info, "panicked; exiting");
        std::process::exit(101);
    }));
}

fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
}

async fn run_controller(args: ControllerArgs) -> anyhow::Result<()> {
    init_logging();
    if args.node_tuning && args.namespace.len() > 1 {
        anyhow::bail!(
            "--node-tuning=true needs the operator to watch all namespaces or one (--namespace \
             was given {}): node tuning is off in a namespaced install of several namespaces",
            args.namespace.len()
        );
    }
    let identity = args
        .identity
        .unwrap_or_else(|| format!("ftp-operator-{}", std::process::id()));

    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let probe_metrics = ProbeMetrics::default();
    probe_metrics.register(registry.sub_registry_with_prefix("ftp_operator"));
    let refusals = WatchRefusals::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let router = http::router(Arc::new(registry), refusals.clone());
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            error!(%err, "metrics server stopped");
        }
    });

    // The elector's own client writes the Lease; the controller's refuses every write unless
    // the lease was renewed recently enough (see ftp_operator::process::leader).
    let config = kube::Config::infer().await?;
    let lease_client = kube::Client::try_from(config.clone())?;
    let mut elector = Elector::new(
        lease_client,
        &args.leader_election_namespace,
        &args.lease_name,
        &identity,
        Timings::default(),
    );
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(elector.fence()))
        .build();
    info!(%identity, lease = %args.lease_name, "waiting for the lease");
    tokio::select! {
        () = elector.acquire() => {}
        _ = shutdown_signal() => return Ok(()),
    }
    info!(%identity, "holding the lease; reconciling");

    let tuning = args
        .node_tuning
        .then(|| node_tuner::controller::TuningSettings {
            namespace: args.leader_election_namespace.clone(),
            image: args
                .node_tuner_image
                .clone()
                .unwrap_or_else(|| args.default_ftp_image.clone()),
            watch_namespace: args.namespace.first().cloned(),
        });
    let settings = Settings {
        node_tuning: args.node_tuning,
        default_image: args.default_ftp_image,
        namespaces: args.namespace,
        identity: identity.clone(),
        verify_served_config: args.verify_served_config,
        load_balancer_address_timeout: Duration::from_secs(
            args.load_balancer_address_timeout_seconds,
        ),
        probe: controller::probe::ProbeSettings {
            interval: (args.probe_interval_seconds > 0)
                .then(|| Duration::from_secs(args.probe_interval_seconds)),
            step_timeout: Duration::from_secs(args.probe_step_timeout_seconds.max(1)),
        },
        cluster_budgets: args.cluster_budgets.then_some(ClusterBudgets {
            node_ports: args.node_port_range,
            azure_rules_per_nic: args.azure_rules_per_nic,
        }),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures::FutureExt::shared(async move {
        let _ = stopped.await;
    });
    // The node tuner's controller beside the FtpServer one, in the same process and lease; the
    // task ends when either stops.
    let tuning = tuning.map(|tuning| {
        let tuning_metrics = node_tuner::controller::TuningMetrics {
            api_writes: metrics.api_writes.clone(),
            reconcile_errors: metrics.reconcile_errors.clone(),
        };
        node_tuner::controller::run(client.clone(), tuning, tuning_metrics, stopped.clone())
    });
    let mut controller = tokio::spawn(async move {
        let servers = controller::run(client, settings, metrics, probe_metrics, refusals, stopped);
        match tuning {
            Some(tuning) => {
                futures::join!(servers, tuning);
            }
            None => servers.await,
        }
    });
    tokio::select! {
        () = elector.keep() => {
            // Another replica may already be writing; this one's writes are refused already.
            error!("lost the lease; exiting");
            std::process::exit(1);
        }
        ended = &mut controller => {
            error!(?ended, "the controller stopped; exiting");
            std::process::exit(1);
        }
        _ = shutdown_signal() => info!("shutting down: finishing the reconciles in flight"),
    }
    let _ = stop.send(());
    // Keep renewing while the reconciles in flight finish, then hand the lease on.
    tokio::select! {
        () = elector.keep() => {
            error!("lost the lease while shutting down; exiting");
            std::process::exit(1);
        }
        _ = &mut controller => {}
    }
    elector.release().await;
    info!("released the lease");
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
