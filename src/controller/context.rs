//! What every reconcile of one FtpServer controller shares, and how a reconcile fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Client;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};

use crate::api::FtpServer;
use crate::process::errors::ApplyError;
use crate::process::watch_refusals::WatchRefusals;

use super::Settings;
use super::image_rollout::ImageRolloutGate;
use super::metrics::Metrics;
use super::observe::Stores;
use super::probe::Prober;
use super::users::passwords::PasswordHashes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Kubernetes API, for {0}")]
    Apply(#[from] ApplyError),
    #[error("waiting for the node tuners on {0} to stop tuning for this FtpServer")]
    NodesStillTuned(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What every reconcile of one controller shares.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub settings: Settings,
    pub metrics: Metrics,
    pub refusals: WatchRefusals,
    pub recorder: Recorder,
    pub reporter: Reporter,
    /// Consecutive failures per FtpServer, for exponential backoff.
    pub failures: Mutex<HashMap<ObjectRef<DeserializeGuard<FtpServer>>, u32>>,
    /// Which server may move to a new default image now: one for the process, shared by the
    /// namespaces' controllers.
    pub image_gate: Arc<ImageRolloutGate>,
    /// Every namespace's StatefulSet cache, to see whether the gate's holder (in any watched
    /// namespace) has rolled out.
    pub stateful_sets: Arc<Vec<(Option<String>, reflector::Store<StatefulSet>)>>,
    /// The probe's accounts and results, shared with its background task.
    pub prober: Arc<Prober>,
    /// The hashes made for FtpUsers' clear passwords, so each is hashed once.
    pub password_hashes: Arc<PasswordHashes>,
}
