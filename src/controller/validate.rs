//! Turns a spec into values the builders can use without further checks, or says what the user
//! must fix. Everything the CEL rules enforce is checked again here: objects stored before a CRD
//! upgrade never went through the current rules.

use kube::ResourceExt;

use crate::api::{FtpServer, FtpServerSpec};
use crate::ftp::config::{DEFAULT_CONTROL_PORT, DEFAULT_METRICS_PORT, Keepalive, PassiveRange};
use crate::keepalive::{self, KeepaliveInForce};
use crate::lb;

use super::build::USERS_KEY;
use super::observe::{Observed, SecretState};

/// A spec that passed every check, in the types the server's configuration uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub passive: PassiveRange,
    pub control_port: u16,
    pub keepalive: Keepalive,
    /// The same keepalive with where it came from, for status.
    pub keepalive_in_force: KeepaliveInForce,
}

/// Why an FtpServer cannot be applied: a `Stalled` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    fn spec(message: impl Into<String>) -> Self {
        Invalid {
            reason: "InvalidSpec",
            message: message.into(),
        }
    }
}

pub fn validate(server: &FtpServer, observed: &Observed) -> Result<Validated, Invalid> {
    validate_name(&server.name_any())?;
    let validated = validate_spec(&server.spec)?;
    validate_secrets(server, observed)?;
    Ok(validated)
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
    Ok(Validated {
        passive,
        control_port,
        keepalive: keepalive_in_force.keepalive,
        keepalive_in_force,
    })
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
        validate(&server, &observed).unwrap();
    }
}
