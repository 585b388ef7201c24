//! What the probe found, per replica, and how that becomes the `PassiveReachable` condition (and,
//! for a server with SFTP, `SftpReachable`). Pure: the sessions' reports go in, the conditions
//! come out, so every case is unit-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::ftp::config::PassiveRange;

/// The two passive commands the probe runs, EPSV first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passive {
    Epsv,
    Pasv,
}

impl fmt::Display for Passive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Passive::Epsv => "EPSV",
            Passive::Pasv => "PASV",
        })
    }
}

/// Where a probe session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ControlConnection,
    Login,
    /// The EPSV or PASV command itself (refused, no reply, an address that cannot be read).
    Passive(Passive),
    /// Connecting to the address the passive reply gave.
    DataConnection(Passive),
    /// LIST over that data connection.
    List(Passive),
}

impl Step {
    /// The condition's reason when this step fails.
    pub fn reason(self) -> &'static str {
        match self {
            Step::ControlConnection => "ControlConnectionFailed",
            Step::Login => "LoginFailed",
            Step::Passive(Passive::Epsv) => "EpsvFailed",
            Step::Passive(Passive::Pasv) => "PasvFailed",
            Step::DataConnection(_) => "DataConnectionFailed",
            Step::List(_) => "ListFailed",
        }
    }

    /// The metric label of this step (a handful of values, never an address).
    pub fn label(self) -> &'static str {
        match self {
            Step::ControlConnection => "control",
            Step::Login => "login",
            Step::Passive(Passive::Epsv) => "epsv",
            Step::Passive(Passive::Pasv) => "pasv",
            Step::DataConnection(Passive::Epsv) => "epsv_data",
            Step::DataConnection(Passive::Pasv) => "pasv_data",
            Step::List(Passive::Epsv) => "epsv_list",
            Step::List(Passive::Pasv) => "pasv_list",
        }
    }
}

/// A failed probe session: the step, what it talked to, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    /// The control address (`host:port`) for the control steps, the data address for the others.
    pub endpoint: String,
    pub detail: String,
}

impl Failure {
    pub fn describe(&self) -> String {
        let Failure {
            step,
            endpoint,
            detail,
        } = self;
        match step {
            Step::ControlConnection => format!("control connection to {endpoint}: {detail}"),
            Step::Login => format!("login as the probe account at {endpoint}: {detail}"),
            Step::Passive(mode) => format!("{mode} at {endpoint}: {detail}"),
            Step::DataConnection(mode) => format!("{mode} data connection to {endpoint} {detail}"),
            Step::List(mode) => {
                format!("LIST over the {mode} data connection to {endpoint}: {detail}")
            }
        }
    }
}

/// Where an SFTP probe session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpStep {
    /// The TCP connection or the SSH handshake.
    Connection,
    /// The server presented a host key that is not one of its Secret's.
    HostKey,
    Login,
    /// Starting the `sftp` subsystem or listing the home.
    List,
}

impl SftpStep {
    pub const ALL: [SftpStep; 4] = [
        SftpStep::Connection,
        SftpStep::HostKey,
        SftpStep::Login,
        SftpStep::List,
    ];

    /// The `SftpReachable` reason when this step fails.
    pub fn reason(self) -> &'static str {
        match self {
            SftpStep::Connection => "SftpConnectionFailed",
            SftpStep::HostKey => "SftpHostKeyMismatch",
            SftpStep::Login => "SftpLoginFailed",
            SftpStep::List => "SftpListFailed",
        }
    }

    /// The metric label of this step.
    pub fn label(self) -> &'static str {
        match self {
            SftpStep::Connection => "connection",
            SftpStep::HostKey => "host_key",
            SftpStep::Login => "login",
            SftpStep::List => "list",
        }
    }
}

/// A failed SFTP probe session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpFailure {
    pub step: SftpStep,
    /// The public `host:port` of the SFTP listener.
    pub endpoint: String,
    pub detail: String,
}

impl SftpFailure {
    pub fn describe(&self) -> String {
        let SftpFailure {
            step,
            endpoint,
            detail,
        } = self;
        match step {
            SftpStep::Connection => format!("SFTP connection to {endpoint}: {detail}"),
            SftpStep::HostKey => format!("SFTP host key at {endpoint}: {detail}"),
            SftpStep::Login => format!("SFTP login as the probe account at {endpoint}: {detail}"),
            SftpStep::List => format!("SFTP at {endpoint}: {detail}"),
        }
    }
}

/// One probe session as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The first data address a passive reply gave (it tells the replica), if one came.
    pub data_address: Option<SocketAddr>,
    pub outcome: Result<(), Failure>,
}

/// How the passive range is cut into replicas' slices (see src/lb/replicas.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slices {
    pub passive: PassiveRange,
    /// Ports per replica; None: one replica owns the whole range.
    pub per_replica: Option<u16>,
}

impl Slices {
    /// The replica owning `port`: replica i owns `min + i*n ..= min + (i+1)*n - 1`.
    pub fn replica_of(&self, port: u16) -> Option<u32> {
        if !self.passive.contains(port) {
            return None;
        }
        let offset = u32::from(port - self.passive.min);
        match self.per_replica {
            None => Some(0),
            Some(0) => None,
            Some(per_replica) => Some(offset / u32::from(per_replica)),
        }
    }
}

/// A ready replica: its ordinal and pod name.
pub type ReadyReplicas = BTreeMap<u32, String>;

/// What the probe knows of one FtpServer, kept between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerProbe {
    /// The last result of each replica a round reached; a replica a round did not reach keeps
    /// its previous one.
    pub replicas: BTreeMap<u32, Result<(), Failure>>,
    /// A failure no replica can be blamed for (the control connection, the login, a passive
    /// reply without a usable port) in the last round; it stops that round.
    pub unattributed: Option<Failure>,
    /// The public `host:port` the last round probed.
    pub endpoint: String,
    /// The last round's SFTP session (its endpoint and outcome); None when the server has no
    /// SFTP or no round has run one yet.
    pub sftp: Option<(String, Result<(), SftpFailure>)>,
}

impl ServerProbe {
    /// Folds one round's sessions in. Replicas no longer ready are forgotten.
    pub fn record_round(
        &mut self,
        endpoint: &str,
        sessions: &[SessionReport],
        slices: Slices,
        ready: &ReadyReplicas,
    ) {
        self.endpoint = endpoint.to_owned();
        self.unattributed = None;
        self.replicas
            .retain(|replica, _| ready.contains_key(replica));
        let mut round: BTreeMap<u32, Result<(), Failure>> = BTreeMap::new();
        for session in sessions {
            let replica = session
                .data_address
                .and_then(|address| slices.replica_of(address.port()));
            match (replica, &session.outcome) {
                (Some(replica), outcome) => {
                    // Within a round a failure of the replica outweighs its successes.
                    let entry = round.entry(replica).or_insert_with(|| outcome.clone());
                    if entry.is_ok() {
                        *entry = outcome.clone();
                    }
                }
                (None, Err(failure)) => self.unattributed = Some(failure.clone()),
                (None, Ok(())) => {
                    let address = session.data_address.map(|a| a.to_string());
                    self.unattributed = Some(Failure {
                        step: Step::Passive(Passive::Epsv),
                        endpoint: endpoint.to_owned(),
                        detail: format!(
                            "the reply's data address {} is outside passivePorts {}",
                            address.unwrap_or_default(),
                            slices.passive
                        ),
                    });
                }
            }
        }
        for (replica, outcome) in round {
            if ready.contains_key(&replica) {
                self.replicas.insert(replica, outcome);
            }
        }
    }

    /// Whether every ready replica has been reached by some round.
    pub fn reached_all(&self, ready: &ReadyReplicas) -> bool {
        ready
            .keys()
            .all(|replica| self.replicas.contains_key(replica))
    }
}

/// What the probe can say of a server, for its condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProbeObservation {
    /// The controller runs without a probe (`--probe-interval-seconds=0`).
    #[default]
    Disabled,
    /// On, but no round has probed this server yet.
    NotProbedYet,
    /// On, but the server runs another image than the operator's (named here), which may not
    /// know the probe account's config key: it gets none.
    NeedsDefaultImage(String),
    Probed(ServerProbe),
}

/// The `PassiveReachable` condition: (status, reason, message). The message depends only on the
/// result, so an unchanged result rewrites nothing.
pub fn passive_reachable(
    observation: &ProbeObservation,
    public_address: Option<&str>,
    ready: &ReadyReplicas,
) -> (&'static str, &'static str, String) {
    let probed = match observation {
        ProbeObservation::Disabled => {
            return (
                "Unknown",
                "ProbeDisabled",
                "the controller runs with --probe-interval-seconds=0 (chart value probe.intervalSeconds)"
                    .to_owned(),
            );
        }
        ProbeObservation::NeedsDefaultImage(image) => {
            return (
                "Unknown",
                "ProbeNeedsDefaultImage",
                format!(
                    "the probe account is given only to servers on the operator's own image; this \
                     one runs {image} (spec.image, or waiting for its turn to move to the new \
                     default image)"
                ),
            );
        }
        _ if public_address.is_none() => {
            return (
                "Unknown",
                "NoPublicAddress",
                "probed once the server has a public address".to_owned(),
            );
        }
        _ if ready.is_empty() => {
            return (
                "Unknown",
                "NoReadyReplica",
                "probed once a replica is ready".to_owned(),
            );
        }
        ProbeObservation::NotProbedYet => {
            return (
                "Unknown",
                "NotProbedYet",
                "the first probe round has not reached this server yet".to_owned(),
            );
        }
        ProbeObservation::Probed(probed) => probed,
    };
    if let Some(failure) = &probed.unattributed {
        return ("False", failure.step.reason(), failure.describe());
    }
    let failed: Vec<(u32, &Failure)> = probed
        .replicas
        .iter()
        .filter(|(replica, _)| ready.contains_key(replica))
        .filter_map(|(replica, outcome)| outcome.as_ref().err().map(|f| (*replica, f)))
        .collect();
    if let Some((_, first)) = failed.first() {
        let message = failed
            .iter()
            .map(|(replica, failure)| {
                format!(
                    "replica {replica} ({}): {}",
                    ready.get(replica).map_or("", String::as_str),
                    failure.describe()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return ("False", first.step.reason(), message);
    }
    let reached: Vec<String> = ready
        .keys()
        .filter(|replica| probed.replicas.contains_key(replica))
        .map(u32::to_string)
        .collect();
    if reached.is_empty() {
        return (
            "Unknown",
            "NotProbedYet",
            "no probe session has reached a ready replica yet".to_owned(),
        );
    }
    let mut message = format!(
        "{}: probe login, EPSV and PASV listings work on replica(s) {}",
        probed.endpoint,
        reached.join(", ")
    );
    let missing: Vec<String> = ready
        .keys()
        .filter(|replica| !probed.replicas.contains_key(replica))
        .map(u32::to_string)
        .collect();
    if !missing.is_empty() {
        message.push_str(&format!("; not reached yet: {}", missing.join(", ")));
    }
    ("True", "Reachable", message)
}

/// The `SftpReachable` condition of a server with SFTP: (status, reason, message), like
/// [`passive_reachable`]. One session a round is enough: every replica serves SFTP.
pub fn sftp_reachable(
    observation: &ProbeObservation,
    public_address: Option<&str>,
    ready: &ReadyReplicas,
) -> (&'static str, &'static str, String) {
    let probed = match observation {
        ProbeObservation::Probed(probed) if public_address.is_some() && !ready.is_empty() => probed,
        // The same reasons as PassiveReachable's: the same probe, the same preconditions.
        other => return passive_reachable(other, public_address, ready),
    };
    match &probed.sftp {
        None => (
            "Unknown",
            "NotProbedYet",
            "no probe round has run an SFTP session yet".to_owned(),
        ),
        Some((_, Err(failure))) => ("False", failure.step.reason(), failure.describe()),
        Some((endpoint, Ok(()))) => (
            "True",
            "Reachable",
            format!(
                "{endpoint}: the host key is the server's own, the probe login and a listing of \
                 its home work over SFTP"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(per_replica: Option<u16>) -> Slices {
        Slices {
            passive: PassiveRange::new(20000, 20029).unwrap(),
            per_replica,
        }
    }

    fn ready(n: u32) -> ReadyReplicas {
        (0..n).map(|i| (i, format!("files-{i}"))).collect()
    }

    fn ok(port: u16) -> SessionReport {
        SessionReport {
            data_address: Some(SocketAddr::from(([198, 18, 0, 20], port))),
            outcome: Ok(()),
        }
    }

    fn data_timeout(port: u16) -> SessionReport {
        SessionReport {
            data_address: Some(SocketAddr::from(([198, 18, 0, 20], port))),
            outcome: Err(Failure {
                step: Step::DataConnection(Passive::Pasv),
                endpoint: format!("198.18.0.20:{port}"),
                detail: "timed out after 5 s".into(),
            }),
        }
    }

    #[test]
    fn a_port_tells_its_replica() {
        let s = slices(Some(7));
        assert_eq!(s.replica_of(20000), Some(0));
        assert_eq!(s.replica_of(20006), Some(0));
        assert_eq!(s.replica_of(20007), Some(1));
        assert_eq!(s.replica_of(20013), Some(1));
        assert_eq!(s.replica_of(20014), Some(2));
        assert_eq!(s.replica_of(20029), Some(4));
        assert_eq!(s.replica_of(19999), None);
        assert_eq!(s.replica_of(20030), None);
        assert_eq!(slices(None).replica_of(20029), Some(0));
        assert_eq!(slices(Some(0)).replica_of(20000), None);
    }

    #[test]
    fn every_replica_reached_and_working_is_true_with_a_stable_message() {
        let mut probe = ServerProbe::default();
        probe.record_round(
            "198.18.0.20:21",
            &[ok(20001), ok(20008), ok(20015)],
            slices(Some(7)),
            &ready(3),
        );
        let first = passive_reachable(
            &ProbeObservation::Probed(probe.clone()),
            Some("198.18.0.20"),
            &ready(3),
        );
        assert_eq!(
            first,
            (
                "True",
                "Reachable",
                "198.18.0.20:21: probe login, EPSV and PASV listings work on replica(s) 0, 1, 2"
                    .to_owned()
            )
        );
        // Another round on other ports of the same slices: the same condition, word for word.
        probe.record_round(
            "198.18.0.20:21",
            &[ok(20006), ok(20012), ok(20020)],
            slices(Some(7)),
            &ready(3),
        );
        let second = passive_reachable(
            &ProbeObservation::Probed(probe),
            Some("198.18.0.20"),
            &ready(3),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn a_failing_slice_names_its_replica_step_and_port() {
        let mut probe = ServerProbe::default();
        probe.record_round(
            "198.18.0.20:21",
            &[ok(20001), data_timeout(20009), ok(20008), ok(20015)],
            slices(Some(7)),
            &ready(3),
        );
        let (status, reason, message) = passive_reachable(
            &ProbeObservation::Probed(probe.clone()),
            Some("198.18.0.20"),
            &ready(3),
        );
        assert_eq!((status, reason), ("False", "DataConnectionFailed"));
        assert_eq!(
            message,
            "replica 1 (files-1): PASV data connection to 198.18.0.20:20009 timed out after 5 s"
        );
        // A later round that does not reach replica 1 keeps its failure.
        probe.record_round("198.18.0.20:21", &[ok(20002)], slices(Some(7)), &ready(3));
        assert_eq!(
            passive_reachable(
                &ProbeObservation::Probed(probe.clone()),
                Some("198.18.0.20"),
                &ready(3)
            )
            .0,
            "False"
        );
        // One that reaches it and works clears it.
        probe.record_round("198.18.0.20:21", &[ok(20010)], slices(Some(7)), &ready(3));
        assert_eq!(
            passive_reachable(
                &ProbeObservation::Probed(probe),
                Some("198.18.0.20"),
                &ready(3)
            )
            .0,
            "True"
        );
    }

    #[test]
    fn replicas_not_reached_are_named_and_gone_ones_forgotten() {
        let mut probe = ServerProbe::default();
        probe.record_round(
            "a:21",
            &[ok(20001), data_timeout(20016)],
            slices(Some(7)),
            &ready(3),
        );
        // Scaled to 2: replica 2's failure goes with it.
        probe.record_round("a:21", &[ok(20003)], slices(Some(7)), &ready(2));
        let (status, _, message) = passive_reachable(
            &ProbeObservation::Probed(probe.clone()),
            Some("a"),
            &ready(2),
        );
        assert_eq!(status, "True");
        assert!(
            message.ends_with("replica(s) 0; not reached yet: 1"),
            "{message}"
        );
        assert!(!probe.reached_all(&ready(2)));
    }

    #[test]
    fn a_failure_before_any_data_port_is_the_servers() {
        let mut probe = ServerProbe::default();
        let login = Failure {
            step: Step::Login,
            endpoint: "198.18.0.20:21".into(),
            detail: "530 Login incorrect.".into(),
        };
        probe.record_round(
            "198.18.0.20:21",
            &[SessionReport {
                data_address: None,
                outcome: Err(login),
            }],
            slices(Some(7)),
            &ready(3),
        );
        let (status, reason, message) = passive_reachable(
            &ProbeObservation::Probed(probe),
            Some("198.18.0.20"),
            &ready(3),
        );
        assert_eq!((status, reason), ("False", "LoginFailed"));
        assert_eq!(
            message,
            "login as the probe account at 198.18.0.20:21: 530 Login incorrect."
        );
    }

    #[test]
    fn a_port_outside_the_range_is_a_failure() {
        let mut probe = ServerProbe::default();
        probe.record_round("a:21", &[ok(3000)], slices(Some(7)), &ready(1));
        let (status, reason, message) =
            passive_reachable(&ProbeObservation::Probed(probe), Some("a"), &ready(1));
        assert_eq!((status, reason), ("False", "EpsvFailed"));
        assert!(
            message.contains("outside passivePorts 20000-20029"),
            "{message}"
        );
    }

    #[test]
    fn unknown_says_why() {
        let probed = ProbeObservation::Probed(ServerProbe::default());
        let reason = |observation: &ProbeObservation, address: Option<&str>, n: u32| {
            let (status, reason, _) = passive_reachable(observation, address, &ready(n));
            assert_eq!(status, "Unknown");
            reason
        };
        assert_eq!(
            reason(&ProbeObservation::Disabled, Some("a"), 1),
            "ProbeDisabled"
        );
        assert_eq!(reason(&probed, None, 1), "NoPublicAddress");
        assert_eq!(reason(&probed, Some("a"), 0), "NoReadyReplica");
        assert_eq!(
            reason(&ProbeObservation::NotProbedYet, Some("a"), 1),
            "NotProbedYet"
        );
        assert_eq!(reason(&probed, Some("a"), 1), "NotProbedYet");
        let pinned = ProbeObservation::NeedsDefaultImage("ftp-operator:0.0.9".into());
        assert_eq!(reason(&pinned, Some("a"), 1), "ProbeNeedsDefaultImage");
    }

    #[test]
    fn sftp_reachable_follows_the_last_sftp_session() {
        let condition = |sftp: Option<(String, Result<(), SftpFailure>)>| {
            let probe = ServerProbe {
                sftp,
                ..ServerProbe::default()
            };
            sftp_reachable(&ProbeObservation::Probed(probe), Some("a"), &ready(1))
        };
        let endpoint = "198.18.0.20:22".to_owned();
        let (status, reason, message) = condition(Some((endpoint.clone(), Ok(()))));
        assert_eq!((status, reason), ("True", "Reachable"));
        assert!(
            message.starts_with("198.18.0.20:22: the host key"),
            "{message}"
        );
        let mismatch = SftpFailure {
            step: SftpStep::HostKey,
            endpoint: endpoint.clone(),
            detail: "the server presented ssh-ed25519 SHA256:x".into(),
        };
        let (status, reason, message) = condition(Some((endpoint, Err(mismatch))));
        assert_eq!((status, reason), ("False", "SftpHostKeyMismatch"));
        assert!(
            message.contains("198.18.0.20:22") && message.contains("SHA256:x"),
            "{message}"
        );
        assert_eq!(condition(None).1, "NotProbedYet");
        // Its preconditions are the probe's, with the same reasons.
        let (status, reason, _) = sftp_reachable(&ProbeObservation::Disabled, Some("a"), &ready(1));
        assert_eq!((status, reason), ("Unknown", "ProbeDisabled"));
        let probed = ProbeObservation::Probed(ServerProbe::default());
        assert_eq!(
            sftp_reachable(&probed, None, &ready(1)).1,
            "NoPublicAddress"
        );
        assert_eq!(
            sftp_reachable(&probed, Some("a"), &ready(0)).1,
            "NoReadyReplica"
        );
    }
}
