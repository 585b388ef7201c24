//! Turns a spec into values the builders can use without further checks, or says what the user
//! must fix. Everything the CEL rules enforce is checked again here: objects stored before a CRD
//! upgrade never went through the current rules.

use kube::ResourceExt;

use crate::api::{FtpServer, FtpServerSpec};
use crate::ftp::config::{
    DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT, Keepalive, POD_SFTP_PORT, PassiveRange,
};
use crate::keepalive::{self, KeepaliveInForce};
use crate::lb::{self, AddressSharing, ReplicaRouting};

use super::observe::{ClaimState, Observed, SecretState};
use crate::process::errors::Invalid;

/// The key of the users Secret: one line `name:PHC-hash[:ro|rw]` per user.
pub const USERS_KEY: &str = "users";

/// How the Services (or EndpointSlices) route the control port and the passive slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// No `perReplica`: one replica, one Service with every port.
    Single,
    /// A control Service and a Service per replica on the shared address.
    ServicePerReplica(AddressSharing),
    /// One Service without a selector and controller-written EndpointSlices.
    EndpointSlices,
}

/// A spec that passed every check, in the types the server's configuration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub passive: PassiveRange,
    pub control_port: u16,
    pub keepalive: Keepalive,
    /// The same keepalive with where it came from, for status.
    pub keepalive_in_force: KeepaliveInForce,
    /// Ports per replica; None: the whole range (one replica).
    pub per_replica: Option<u16>,
    pub routing: Routing,
}

pub fn validate(server: &FtpServer, observed: &Observed) -> Result<Validated, Invalid> {
    validate_name(&server.name_any())?;
    let validated = validate_spec(&server.spec)?;
    validate_secrets(server, observed)?;
    validate_shared_claim(server, &observed.shared_claim)?;
    Ok(validated)
}

/// Every replica mounts a shared claim, so with more than one it must be ReadWriteMany.
fn validate_shared_claim(server: &FtpServer, claim: &ClaimState) -> Result<(), Invalid> {
    let replicas = server.spec.replicas;
    let Some(name) = server
        .spec
        .storage
        .as_ref()
        .and_then(|s| s.persistent_volume_claim.as_ref())
        .map(|c| &c.claim_name)
    else {
        return Ok(());
    };
    if replicas <= 1 {
        return Ok(());
    }
    let fix = "use a ReadWriteMany claim, or set storage.claimPerReplica for a claim per replica";
    match claim {
        ClaimState::NotReferenced | ClaimState::Missing => Err(Invalid {
            reason: "ClaimMissing",
            message: format!(
                "PersistentVolumeClaim {name} named by spec.storage.persistentVolumeClaim does \
                 not exist; with replicas: {replicas} every replica mounts it: create it \
                 ReadWriteMany, or set storage.claimPerReplica"
            ),
        }),
        ClaimState::Present { access_modes }
            if !access_modes.iter().any(|m| m == "ReadWriteMany") =>
        {
            Err(Invalid {
                reason: "ClaimNotShareable",
                message: format!(
                    "PersistentVolumeClaim {name} is {} but replicas: {replicas} mount it from \
                     several pods, possibly on several nodes: {fix}",
                    if access_modes.is_empty() {
                        "without access modes".to_owned()
                    } else {
                        access_modes.join(",")
                    }
                ),
            })
        }
        ClaimState::Present { .. } => Ok(()),
    }
}

/// The name every child is named after: a DNS label short enough for the workload's labels.
pub fn validate_name(name: &str) -> Result<(), Invalid> {
    let bytes = name.as_bytes();
    let label = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if label && name.len() <= crate::api::MAX_NAME_LENGTH {
        return Ok(());
    }
    Err(Invalid {
        reason: "InvalidName",
        message: format!(
            "metadata.name {name:?} must be at most {} characters of lower-case letters, digits \
             and '-', starting with a letter and ending with a letter or digit (the Service and \
             the pods' labels carry it): recreate the FtpServer under such a name",
            crate::api::MAX_NAME_LENGTH
        ),
    })
}

/// Checks that need only the spec: port ranges, keepalive, provider limits.
pub fn validate_spec(spec: &FtpServerSpec) -> Result<Validated, Invalid> {
    let ports = spec.passive_ports;
    let passive = match (u16::try_from(ports.min), u16::try_from(ports.max)) {
        (Ok(min), Ok(max)) if (1024..=max).contains(&min) => PassiveRange { min, max },
        _ => {
            return Err(Invalid::spec(format!(
                "passivePorts {ports} must be MIN-MAX within 1024-65535 with MIN <= MAX"
            )));
        }
    };
    if passive.len() > crate::api::MAX_PASSIVE_PORTS as usize {
        return Err(Invalid::spec(format!(
            "passivePorts {ports} has {} ports; at most {} are allowed: narrow the range",
            passive.len(),
            crate::api::MAX_PASSIVE_PORTS
        )));
    }
    for own in [DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT] {
        if passive.contains(own) {
            return Err(Invalid::spec(format!(
                "passivePorts {ports} includes {own}, which the server pod uses itself: move the range"
            )));
        }
    }
    let control_port = u16::try_from(spec.control_port)
        .ok()
        .filter(|port| *port >= 1)
        .ok_or_else(|| {
            Invalid::spec(format!(
                "controlPort {} must be between 1 and 65535",
                spec.control_port
            ))
        })?;
    if passive.contains(control_port) {
        return Err(Invalid::spec(format!(
            "controlPort {control_port} lies inside passivePorts {ports}: move one of them"
        )));
    }
    if let Some(sftp) = spec.sftp.as_ref().filter(|sftp| sftp.enabled) {
        let implicit = spec.tls.as_ref().filter(|tls| tls.implicit);
        if sftp.port == spec.control_port
            || implicit.is_some_and(|tls| tls.implicit_port == sftp.port)
            || spec.passive_ports.ports().contains(&sftp.port)
            || !(1..=65535).contains(&sftp.port)
        {
            return Err(Invalid::spec(format!(
                "sftp.port {} must be 1-65535, differ from controlPort and tls.implicitPort and \
                 lie outside passivePorts {ports}: move one of them (22 is the usual SFTP port)",
                sftp.port
            )));
        }
        if passive.contains(POD_SFTP_PORT) {
            return Err(Invalid::spec(format!(
                "passivePorts {ports} includes {POD_SFTP_PORT}, where the server pod listens for \
                 SFTP: move the range"
            )));
        }
    }
    // The server's config takes only what parses, so an entry that does not would silently
    // leave that balancer's connections without their client address.
    if let Some(proxy) = &spec.load_balancer.proxy_protocol {
        if proxy.trusted_sources.is_empty() {
            return Err(Invalid::spec(
                "loadBalancer.proxyProtocol.trustedSources must list the balancer's addresses \
                 (e.g. the VPC's CIDR): without them no header would be read",
            ));
        }
        if let Some(bad) = proxy
            .trusted_sources
            .iter()
            .find(|cidr| cidr.parse::<ipnet::IpNet>().is_err())
        {
            return Err(Invalid::spec(format!(
                "loadBalancer.proxyProtocol.trustedSources entry {bad:?} is not a CIDR: write it \
                 as 10.0.0.0/16 or 2001:db8::/32"
            )));
        }
    }
    let keepalive_in_force =
        keepalive::keepalive_in_force(spec).map_err(|err| Invalid::spec(err.0))?;
    lb::check_limits(spec).map_err(|err| Invalid {
        reason: "ProviderLimit",
        message: err.0,
    })?;
    let (per_replica, routing) = replica_routing(spec, passive)?;
    Ok(Validated {
        passive,
        control_port,
        keepalive: keepalive_in_force.keepalive,
        keepalive_in_force,
        per_replica,
        routing,
    })
}

/// The slice size and how slices are routed; refuses what the balancer cannot route.
fn replica_routing(
    spec: &FtpServerSpec,
    passive: PassiveRange,
) -> Result<(Option<u16>, Routing), Invalid> {
    let replicas = spec.replicas;
    let range = spec.passive_ports;
    let Some(per_replica) = range.per_replica else {
        if replicas > 1 {
            return Err(Invalid::spec(format!(
                "replicas: {replicas} needs passivePorts.perReplica: each replica advertises only \
                 its own slice of passivePorts {range} ({} ports), e.g. perReplica: {}",
                passive.len(),
                passive.len() / replicas as usize
            )));
        }
        return Ok((None, Routing::Single));
    };
    let size = u16::try_from(per_replica)
        .ok()
        .filter(|size| (1..=passive.len()).contains(&usize::from(*size)))
        .ok_or_else(|| {
            Invalid::spec(format!(
                "passivePorts.perReplica {per_replica} must be between 1 and the {} ports of \
                 passivePorts {range}",
                passive.len()
            ))
        })?;
    let needed = i64::from(replicas) * i64::from(size);
    if needed > passive.len() as i64 {
        return Err(Invalid::spec(format!(
            "replicas {replicas} x passivePorts.perReplica {size} need {needed} ports, but \
             passivePorts {range} has {}: widen the range or lower replicas",
            passive.len()
        )));
    }
    let provider = spec.load_balancer.provider;
    let routing = match lb::replica_routing(provider) {
        ReplicaRouting::ServicePerReplica(sharing) => {
            let reserved_ip = spec
                .public_address
                .as_deref()
                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok());
            if sharing == AddressSharing::LoadBalancerIp && !reserved_ip {
                return Err(Invalid {
                    reason: "ProviderLimit",
                    message: "passivePorts.perReplica on GCP needs spec.publicAddress set to a \
                              reserved static IP: each replica's slice is a Service (a forwarding \
                              rule) of its own, and forwarding rules share only a reserved \
                              address; reserve one (gcloud compute addresses create) and put \
                              it in publicAddress"
                        .to_owned(),
                });
            }
            Routing::ServicePerReplica(sharing)
        }
        ReplicaRouting::EndpointSlicesPerReplica => Routing::EndpointSlices,
        ReplicaRouting::Refused(why) if replicas > 1 => {
            return Err(Invalid {
                reason: "ProviderLimit",
                message: format!("replicas: {replicas} is not possible on {provider:?}: {why}"),
            });
        }
        // One replica owns the one slice: the single-Service shape is right.
        ReplicaRouting::Refused(_) => Routing::Single,
    };
    Ok((Some(size), routing))
}

/// The referenced Secrets exist and have the keys the server reads.
fn validate_secrets(server: &FtpServer, observed: &Observed) -> Result<(), Invalid> {
    if let Some(users) = &server.spec.users {
        let name = &users.secret_ref.name;
        check_secret(&observed.users_secret, name, "users", &[USERS_KEY])?;
    }
    if let Some(tls) = &server.spec.tls {
        let name = &tls.secret_ref.name;
        check_secret(&observed.tls_secret, name, "tls", &["tls.crt", "tls.key"])?;
    }
    Ok(())
}

fn check_secret(
    state: &SecretState,
    name: &str,
    field: &str,
    keys: &[&str],
) -> Result<(), Invalid> {
    match state {
        SecretState::NotReferenced | SecretState::Missing => Err(Invalid {
            reason: "SecretMissing",
            message: format!(
                "Secret {name} named by spec.{field}.secretRef does not exist: create it in this \
                 namespace or fix the name"
            ),
        }),
        SecretState::Present { keys: present } => {
            let missing: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|key| !present.iter().any(|p| p == key))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Invalid {
                    reason: "SecretInvalid",
                    message: format!(
                        "Secret {name} named by spec.{field}.secretRef lacks key {}: add it",
                        missing.join(" and ")
                    ),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    fn spec(yaml: &str) -> FtpServerSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn names_every_child_can_carry_pass_and_others_say_why() {
        for good in ["a", "contoso", "ftp-1", &"a".repeat(52)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in ["ftp.example", "1st", "-a", "a-", "Upper", &"a".repeat(53)] {
            let invalid = validate_name(bad).unwrap_err();
            assert_eq!(invalid.reason, "InvalidName");
            assert!(
                invalid.message.contains("at most 52 characters"),
                "{}",
                invalid.message
            );
        }
    }

    #[test]
    fn minimal_spec_gets_keepalive_derived_from_the_generic_balancer() {
        let v = validate_spec(&server(fixtures::MINIMAL).spec).unwrap();
        assert_eq!(v.passive, PassiveRange::new(30000, 30002).unwrap());
        assert_eq!(v.control_port, 21);
        assert_eq!(
            v.keepalive,
            Keepalive {
                idle_seconds: 450,
                interval_seconds: 10,
                probes: 6
            }
        );
    }

    #[test]
    fn every_cel_rule_is_checked_again() {
        let cases = [
            (
                "passivePorts: {min: 20010, max: 20000}",
                "passivePorts 20010-20000",
            ),
            ("passivePorts: {min: 80, max: 90}", "within 1024-65535"),
            (
                "passivePorts: {min: 60000, max: 70000}",
                "within 1024-65535",
            ),
            ("passivePorts: {min: 20000, max: 21000}", "has 1001 ports"),
            ("passivePorts: {min: 2100, max: 2200}", "includes 2121"),
            ("passivePorts: {min: 9000, max: 9100}", "includes 9100"),
            (
                "passivePorts: {min: 2200, max: 2300}\nsftp: {}",
                "includes 2222, where the server pod listens for SFTP",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nsftp: {port: 21}",
                "sftp.port 21 must be 1-65535, differ from controlPort",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nsftp: {port: 20001}",
                "lie outside passivePorts",
            ),
            (
                "controlPort: 0\npassivePorts: {min: 20000, max: 20001}",
                "controlPort 0",
            ),
            (
                "controlPort: 20001\npassivePorts: {min: 20000, max: 20001}",
                "inside passivePorts",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nkeepalive: {probes: 200}",
                "probes in 1-127",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nkeepalive: {idleSeconds: 300}\nloadBalancer: {idleTimeoutSeconds: 300}",
                "not below loadBalancer.idleTimeoutSeconds 300",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nkeepalive: {idleSeconds: 300}\nloadBalancer: {provider: azure}",
                "not below the azure default idle timeout of 240 s",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {proxyProtocol: {trustedSources: []}}",
                "must list the balancer's addresses",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {proxyProtocol: {trustedSources: [10.0.0.0/16, 10.1.0.0]}}",
                "entry \"10.1.0.0\" is not a CIDR",
            ),
            (
                "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {proxyProtocol: {trustedSources: [10.0.0.0/33]}}",
                "is not a CIDR",
            ),
        ];
        for (yaml, message) in cases {
            let err = validate_spec(&spec(yaml)).unwrap_err();
            assert_eq!(err.reason, "InvalidSpec", "{yaml}");
            assert!(err.message.contains(message), "{yaml}: {err}");
        }
    }

    #[test]
    fn replicas_get_slices_routed_the_providers_way() {
        let routed = |yaml: &str| validate_spec(&spec(yaml)).map(|v| (v.per_replica, v.routing));
        let base = "passivePorts: {min: 20000, max: 20029, perReplica: 10}\n";
        assert_eq!(
            routed(&format!(
                "{base}replicas: 3\nloadBalancer: {{provider: azure}}"
            )),
            Ok((
                Some(10),
                Routing::ServicePerReplica(AddressSharing::AzureIpv4Annotation)
            ))
        );
        assert_eq!(
            routed(&format!(
                "{base}replicas: 3\nloadBalancer: {{provider: aws}}"
            )),
            Ok((Some(10), Routing::EndpointSlices))
        );
        assert_eq!(
            routed(&format!("{base}replicas: 2")),
            Ok((Some(10), Routing::EndpointSlices))
        );
        assert_eq!(
            routed("passivePorts: {min: 20000, max: 20029}"),
            Ok((None, Routing::Single))
        );
        // MetalLB: refused above one replica, the single shape at one.
        let err = routed(&format!(
            "{base}replicas: 2\nloadBalancer: {{provider: metallb}}"
        ))
        .unwrap_err();
        assert_eq!(err.reason, "ProviderLimit");
        assert!(
            err.message
                .contains("replicas: 2 is not possible on Metallb"),
            "{err}"
        );
        assert!(err.message.contains("use replicas: 1"), "{err}");
        assert_eq!(
            routed(&format!(
                "{base}replicas: 1\nloadBalancer: {{provider: metallb}}"
            )),
            Ok((Some(10), Routing::Single))
        );
        // GCP shares only a reserved address.
        let err = routed(&format!(
            "{base}replicas: 2\nloadBalancer: {{provider: gcp}}"
        ))
        .unwrap_err();
        assert!(err.message.contains("reserved static IP"), "{err}");
        assert_eq!(
            routed(&format!(
                "{base}replicas: 2\npublicAddress: 34.1.2.3\nloadBalancer: {{provider: gcp}}"
            )),
            Ok((
                Some(10),
                Routing::ServicePerReplica(AddressSharing::LoadBalancerIp)
            ))
        );
    }

    #[test]
    fn slices_that_do_not_fit_say_the_numbers() {
        let err = validate_spec(&spec(
            "replicas: 4\npassivePorts: {min: 20000, max: 20029, perReplica: 10}",
        ))
        .unwrap_err();
        assert!(
            err.message.contains(
                "replicas 4 x passivePorts.perReplica 10 need 40 ports, but passivePorts 20000-20029 has 30"
            ),
            "{err}"
        );
        let err = validate_spec(&spec("replicas: 3\npassivePorts: {min: 20000, max: 20029}"))
            .unwrap_err();
        assert!(
            err.message.contains("needs passivePorts.perReplica"),
            "{err}"
        );
        assert!(err.message.contains("e.g. perReplica: 10"), "{err}");
    }

    #[test]
    fn a_shared_claim_must_be_read_write_many_with_several_replicas() {
        let server = server(fixtures::FULL);
        let present = |modes: &[&str]| ClaimState::Present {
            access_modes: modes.iter().map(|m| m.to_string()).collect(),
        };
        let err = validate_shared_claim(&server, &present(&["ReadWriteOnce"])).unwrap_err();
        assert_eq!(err.reason, "ClaimNotShareable");
        assert!(
            err.message
                .contains("PersistentVolumeClaim ftp-data is ReadWriteOnce but replicas: 2"),
            "{err}"
        );
        assert!(err.message.contains("storage.claimPerReplica"), "{err}");
        let err = validate_shared_claim(&server, &ClaimState::Missing).unwrap_err();
        assert_eq!(err.reason, "ClaimMissing");
        validate_shared_claim(&server, &present(&["ReadWriteMany"])).unwrap();
        let mut one = server.clone();
        one.spec.replicas = 1;
        validate_shared_claim(&one, &present(&["ReadWriteOnce"])).unwrap();
    }

    #[test]
    fn provider_limits_stall_with_their_own_reason() {
        let err = validate_spec(&spec(
            "passivePorts: {min: 20000, max: 20099}\nloadBalancer: {provider: aws}",
        ))
        .unwrap_err();
        assert_eq!(err.reason, "ProviderLimit");
        assert!(err.message.contains("AWS NLB allows at most 49"), "{err}");
    }

    #[test]
    fn missing_or_incomplete_secrets_say_what_to_fix() {
        let server = server(fixtures::FULL);
        let mut observed = Observed::default();
        let err = validate(&server, &observed).unwrap_err();
        assert_eq!(err.reason, "SecretMissing");
        assert!(
            err.message
                .contains("Secret ftp-users named by spec.users.secretRef does not exist")
        );

        observed.users_secret = SecretState::Present {
            keys: vec!["users".into()],
        };
        observed.tls_secret = SecretState::Present {
            keys: vec!["tls.crt".into()],
        };
        let err = validate(&server, &observed).unwrap_err();
        assert_eq!(err.reason, "SecretInvalid");
        assert!(
            err.message
                .contains("Secret ftp-tls named by spec.tls.secretRef lacks key tls.key")
        );

        observed.tls_secret = SecretState::Present {
            keys: vec!["tls.crt".into(), "tls.key".into()],
        };
        observed.shared_claim = ClaimState::Present {
            access_modes: vec!["ReadWriteMany".into()],
        };
        validate(&server, &observed).unwrap();
    }
}
