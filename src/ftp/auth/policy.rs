//! What a user's account allows beyond its password: whether it may log in now (enabled, not
//! expired), from where (client CIDRs), how many sessions at once, how fast, and how much it may
//! store. Line-format users have the default policy: no limits of their own.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;

/// Bytes per second, each direction, for all sessions of a user together and for each session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bandwidth {
    pub upload_bytes_per_second: Option<u64>,
    pub download_bytes_per_second: Option<u64>,
    pub session_upload_bytes_per_second: Option<u64>,
    pub session_download_bytes_per_second: Option<u64>,
}

/// What a user may store under their home.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub bytes: Option<u64>,
    pub files: Option<u64>,
}

impl Quota {
    pub fn is_limited(&self) -> bool {
        self.bytes.is_some() || self.files.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    pub enabled: bool,
    /// From this moment on, logins are refused.
    pub expires: Option<Timestamp>,
    /// Concurrent sessions of this user on this server process.
    pub max_sessions: Option<u32>,
    /// Empty: any address.
    pub allowed_cidrs: Vec<IpNet>,
    pub bandwidth: Bandwidth,
    pub quota: Quota,
    /// Has series of its own in the metrics: users of the TOML form, whose number the file bounds
    /// and whose names an operator declared one by one.
    pub metered: bool,
}

impl Default for UserPolicy {
    fn default() -> Self {
        UserPolicy {
            enabled: true,
            expires: None,
            max_sessions: None,
            allowed_cidrs: Vec::new(),
            bandwidth: Bandwidth::default(),
            quota: Quota::default(),
            metered: false,
        }
    }
}

/// Why a user whose password was right may not log in. Clients hear only "Login incorrect";
/// the audit log says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRefusal {
    Disabled,
    Expired,
}

impl AccountRefusal {
    /// The `result` of the audit line and of `ftp_logins_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRefusal::Disabled => "disabled",
            AccountRefusal::Expired => "expired",
        }
    }
}

impl UserPolicy {
    /// Whether a client at `client` may log in as this user (the address a trusted PROXY header
    /// gave, when there is one). IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn address_allowed(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allowed_cidrs.is_empty() || self.allowed_cidrs.iter().any(|net| net.contains(&client))
    }

    /// Why the account may not log in at `now`, if it may not.
    pub fn refusal(&self, now: Timestamp) -> Option<AccountRefusal> {
        if !self.enabled {
            Some(AccountRefusal::Disabled)
        } else if self.expires.is_some_and(|expires| now >= expires) {
            Some(AccountRefusal::Expired)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists_match_the_clients_network_only() {
        let policy = UserPolicy {
            allowed_cidrs: vec![
                "198.51.100.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..UserPolicy::default()
        };
        assert!(policy.address_allowed("198.51.100.7".parse().unwrap()));
        assert!(policy.address_allowed("::ffff:198.51.100.7".parse().unwrap()));
        assert!(policy.address_allowed("2001:db8::1".parse().unwrap()));
        assert!(!policy.address_allowed("198.51.101.7".parse().unwrap()));
        assert!(!policy.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(UserPolicy::default().address_allowed("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn disabled_and_expired_accounts_are_refused() {
        let now: Timestamp = "2027-01-30T23:59:59Z".parse().unwrap();
        let expiring = UserPolicy {
            expires: Some("2027-01-31T00:00:00Z".parse().unwrap()),
            ..UserPolicy::default()
        };
        assert_eq!(expiring.refusal(now), None);
        assert_eq!(
            expiring.refusal("2027-01-31T00:00:00Z".parse().unwrap()),
            Some(AccountRefusal::Expired)
        );
        let disabled = UserPolicy {
            enabled: false,
            ..expiring
        };
        assert_eq!(disabled.refusal(now), Some(AccountRefusal::Disabled));
    }
}
