//! The errors both controllers share: an API call about one object that failed, and what the
//! user must fix before a server can be applied (a `Stalled` condition).

use kube::Resource;

/// An API call about one object failed; names it for status and Events.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {kind} {name}: {source}")]
pub struct ApplyError {
    /// What the operator tried: "write" or "read".
    pub verb: &'static str,
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl ApplyError {
    pub fn of<K: Resource<DynamicType = ()>>(name: &str, source: kube::Error) -> Self {
        ApplyError {
            verb: "write",
            kind: K::kind(&()).into_owned(),
            name: name.to_owned(),
            source,
        }
    }

    pub fn read<K: Resource<DynamicType = ()>>(name: &str, source: kube::Error) -> Self {
        ApplyError {
            verb: "read",
            ..Self::of::<K>(name, source)
        }
    }

    /// The apiserver's status code, when it answered.
    pub fn code(&self) -> Option<u16> {
        match &self.source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

/// Why an FtpServer cannot be applied: a `Stalled` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    /// A spec the user must change (`InvalidSpec`).
    pub fn spec(message: impl Into<String>) -> Self {
        Invalid {
            reason: "InvalidSpec",
            message: message.into(),
        }
    }
}
