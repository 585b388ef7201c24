use super::*;

fn spec(yaml: &str) -> FtpServerSpec {
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn default_idle_timeouts_are_the_documented_ones() {
    assert_eq!(default_idle_timeout_seconds(Provider::Azure), 240);
    assert_eq!(default_idle_timeout_seconds(Provider::Aws), 350);
    assert_eq!(default_idle_timeout_seconds(Provider::Gcp), 600);
    assert_eq!(default_idle_timeout_seconds(Provider::Metallb), 900);
    assert_eq!(default_idle_timeout_seconds(Provider::Generic), 900);
    let s = spec("passivePorts: {min: 20000, max: 20009}\nloadBalancer: {provider: aws}");
    assert_eq!(idle_timeout_seconds(&s), 350);
}

#[test]
fn aws_refuses_more_than_49_passive_ports_and_names_the_fix() {
    let s = spec("passivePorts: {min: 20000, max: 20099}\nloadBalancer: {provider: aws}");
    let err = check_limits(&s).unwrap_err().to_string();
    assert!(
        err.contains("passivePorts 20000-20099 has 100 ports; AWS NLB allows at most 49"),
        "{err}"
    );
    assert!(err.contains("20000-20048"), "{err}");
    let s = spec("passivePorts: {min: 20000, max: 20048}\nloadBalancer: {provider: aws}");
    check_limits(&s).unwrap();
}

#[test]
fn aws_idle_timeout_range_is_checked() {
    let s = spec(
        "passivePorts: {min: 20000, max: 20009}\nloadBalancer: {provider: aws, idleTimeoutSeconds: 30}",
    );
    assert!(
        check_limits(&s)
            .unwrap_err()
            .to_string()
            .contains("60-6000")
    );
}

#[test]
fn azure_idle_timeout_must_be_whole_minutes_from_4_to_100() {
    for bad in [120, 250, 6060] {
        let s = spec(&format!(
            "passivePorts: {{min: 20000, max: 20009}}\nloadBalancer: {{provider: azure, idleTimeoutSeconds: {bad}}}"
        ));
        let err = check_limits(&s).unwrap_err().to_string();
        assert!(err.contains("whole minutes from 4 to 100"), "{bad}: {err}");
    }
    let s = spec(
        "passivePorts: {min: 20000, max: 20009}\nloadBalancer: {provider: azure, idleTimeoutSeconds: 1800}",
    );
    check_limits(&s).unwrap();
    assert_eq!(service_annotations(&s)[AZURE_IDLE_TIMEOUT_ANNOTATION], "30");
}

#[test]
fn azure_without_timeout_adds_no_annotation() {
    let s = spec("passivePorts: {min: 20000, max: 20009}\nloadBalancer: {provider: azure}");
    assert!(service_annotations(&s).is_empty());
}

#[test]
fn gcp_accepts_five_ports_or_one_contiguous_range() {
    let s = spec("passivePorts: {min: 20000, max: 20003}\nloadBalancer: {provider: gcp}");
    check_limits(&s).unwrap();
    let s = spec(
        "controlPort: 19999\npassivePorts: {min: 20000, max: 20099}\nloadBalancer: {provider: gcp}",
    );
    check_limits(&s).unwrap();
    let s = spec("passivePorts: {min: 20000, max: 20004}\nloadBalancer: {provider: gcp}");
    let err = check_limits(&s).unwrap_err().to_string();
    assert!(err.contains("set controlPort to 19999 or 20005"), "{err}");
}

#[test]
fn aws_gets_nlb_annotations_and_one_listener_attribute_per_port() {
    let s = spec(
        "passivePorts: {min: 20000, max: 20001}\nloadBalancer: {provider: aws, idleTimeoutSeconds: 900}",
    );
    let annotations = service_annotations(&s);
    assert_eq!(annotations[AWS_TYPE_ANNOTATION], "external");
    assert_eq!(annotations[AWS_NLB_TARGET_TYPE_ANNOTATION], "ip");
    assert_eq!(
        annotations[AWS_TARGET_GROUP_ATTRIBUTES_ANNOTATION],
        "preserve_client_ip.enabled=true"
    );
    let listeners: Vec<_> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX))
        .collect();
    assert_eq!(listeners.len(), 3);
    assert_eq!(
        annotations[&format!("{AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX}TCP-21")],
        "tcp.idle_timeout.seconds=900"
    );
}

#[test]
fn generic_and_metallb_have_no_limits_or_annotations() {
    for provider in ["generic", "metallb"] {
        let s = spec(&format!(
            "passivePorts: {{min: 20000, max: 20999}}\nloadBalancer: {{provider: {provider}}}"
        ));
        check_limits(&s).unwrap();
        assert!(service_annotations(&s).is_empty());
    }
}

const IMPLICIT_TLS: &str = "tls: {secretRef: {name: t}, implicit: true}";

#[test]
fn implicit_ftps_takes_one_more_listener_on_aws() {
    let s = spec(&format!(
        "passivePorts: {{min: 20000, max: 20048}}\nloadBalancer: {{provider: aws, idleTimeoutSeconds: 600}}\n{IMPLICIT_TLS}"
    ));
    let err = check_limits(&s).unwrap_err().to_string();
    assert!(err.contains("at most 48"), "{err}");
    assert!(err.contains("implicit FTPS"), "{err}");
    let s = spec(&format!(
        "passivePorts: {{min: 20000, max: 20047}}\nloadBalancer: {{provider: aws, idleTimeoutSeconds: 600}}\n{IMPLICIT_TLS}"
    ));
    check_limits(&s).unwrap();
    let annotations = service_annotations(&s);
    assert_eq!(
        annotations[&format!("{AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX}TCP-990")],
        "tcp.idle_timeout.seconds=600"
    );
}

#[test]
fn implicit_ftps_on_gcp_needs_few_ports_or_one_contiguous_range() {
    let s = spec(&format!(
        "controlPort: 21\npassivePorts: {{min: 20000, max: 20002}}\nloadBalancer: {{provider: gcp}}\n{IMPLICIT_TLS}"
    ));
    check_limits(&s).unwrap();
    let s = spec(&format!(
        "controlPort: 21\npassivePorts: {{min: 20000, max: 20003}}\nloadBalancer: {{provider: gcp}}\n{IMPLICIT_TLS}"
    ));
    let err = check_limits(&s).unwrap_err().to_string();
    assert!(err.contains("19999 and 20004"), "{err}");
    let s = spec(
        "controlPort: 19999\npassivePorts: {min: 20000, max: 20019}\nloadBalancer: {provider: gcp}\n\
         tls: {secretRef: {name: t}, implicit: true, implicitPort: 20020}",
    );
    check_limits(&s).unwrap();
}

#[test]
fn sftp_is_one_more_listener_on_aws_and_one_more_port_on_gcp() {
    let aws = |max: i32| {
        spec(&format!(
            "passivePorts: {{min: 20000, max: {max}}}\nloadBalancer: {{provider: aws, idleTimeoutSeconds: 600}}\nsftp: {{port: 22}}"
        ))
    };
    let err = check_limits(&aws(20048)).unwrap_err().to_string();
    assert!(err.contains("at most 48") && err.contains("SFTP"), "{err}");
    check_limits(&aws(20047)).unwrap();
    // Its listener gets the idle timeout like every other.
    assert!(service_annotations(&aws(20047)).contains_key(&format!(
        "{AWS_LISTENER_ATTRIBUTES_ANNOTATION_PREFIX}TCP-22"
    )));
    let gcp = |control: i32, sftp: i32, max: i32| {
        spec(&format!(
            "controlPort: {control}\npassivePorts: {{min: 20000, max: {max}}}\nloadBalancer: {{provider: gcp}}\nsftp: {{port: {sftp}}}"
        ))
    };
    check_limits(&gcp(21, 22, 20002)).unwrap();
    let err = check_limits(&gcp(21, 22, 20003)).unwrap_err().to_string();
    assert!(
        err.contains("sftp.port") && err.contains("at most 3 passive"),
        "{err}"
    );
    check_limits(&gcp(19999, 20020, 20019)).unwrap();
    let off = spec(
        "controlPort: 21\npassivePorts: {min: 20000, max: 20003}\nloadBalancer: {provider: gcp}\nsftp: {enabled: false}",
    );
    assert!(
        check_limits(&off).is_ok(),
        "without SFTP, control and four passive ports are five"
    );
}

#[test]
fn proxy_protocol_sets_the_aws_annotation_and_nothing_elsewhere() {
    let proxy = "proxyProtocol: {trustedSources: [10.0.0.0/16]}";
    let aws = spec(&format!(
        "passivePorts: {{min: 20000, max: 20009}}\nloadBalancer: {{provider: aws, {proxy}}}"
    ));
    assert_eq!(
        service_annotations(&aws)[AWS_PROXY_PROTOCOL_ANNOTATION],
        "*"
    );
    let without = spec("passivePorts: {min: 20000, max: 20009}\nloadBalancer: {provider: aws}");
    assert!(!service_annotations(&without).contains_key(AWS_PROXY_PROTOCOL_ANNOTATION));
    for provider in ["azure", "gcp", "metallb", "generic"] {
        let s = spec(&format!(
            "passivePorts: {{min: 20000, max: 20003}}\nloadBalancer: {{provider: {provider}, {proxy}}}"
        ));
        assert!(
            !service_annotations(&s)
                .keys()
                .any(|key| key.contains("proxy-protocol")),
            "{provider}"
        );
    }
}
