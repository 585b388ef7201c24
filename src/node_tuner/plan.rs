//! What to do on a node, decided from three facts: the values the kernel holds now, the
//! originals recorded before the first change (if any), and what the FtpServers want (if
//! anything). Pure; the agent and the one-shot commands carry it out.

use super::sysctl::KeepaliveSysctls;

/// The steps to take, in order: record `original` (before any write, so a crash between the two
/// never loses the node's own values), then `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The originals to keep on record afterwards; None clears the record.
    pub original: Option<KeepaliveSysctls>,
    /// Values to write to the kernel, when they differ from what it holds.
    pub write: Option<KeepaliveSysctls>,
}

pub fn plan(
    current: KeepaliveSysctls,
    original: Option<KeepaliveSysctls>,
    wanted: Option<KeepaliveSysctls>,
) -> Plan {
    match wanted {
        // Tuned: keep (or take) the record, and re-apply after a reboot or a hand change.
        Some(wanted) => Plan {
            original: Some(original.unwrap_or(current)),
            write: (current != wanted).then_some(wanted),
        },
        // Nobody wants anything: put the originals back, then forget them.
        None => Plan {
            original: None,
            write: original.filter(|original| *original != current),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: KeepaliveSysctls = KeepaliveSysctls::KERNEL_DEFAULTS;
    const TUNED: KeepaliveSysctls = KeepaliveSysctls {
        time: 30,
        intvl: 5,
        probes: 4,
    };
    const HOST: KeepaliveSysctls = KeepaliveSysctls {
        time: 600,
        intvl: 60,
        probes: 5,
    };

    #[test]
    fn first_tuning_records_the_node_values_then_writes() {
        assert_eq!(
            plan(HOST, None, Some(TUNED)),
            Plan {
                original: Some(HOST),
                write: Some(TUNED)
            }
        );
    }

    #[test]
    fn a_tuned_node_stays_quiet() {
        assert_eq!(
            plan(TUNED, Some(HOST), Some(TUNED)),
            Plan {
                original: Some(HOST),
                write: None
            }
        );
    }

    #[test]
    fn a_reboot_or_hand_change_is_undone_without_losing_the_originals() {
        // After a reboot the kernel holds its defaults again; the record says what the node had.
        assert_eq!(
            plan(DEFAULTS, Some(HOST), Some(TUNED)),
            Plan {
                original: Some(HOST),
                write: Some(TUNED)
            }
        );
    }

    #[test]
    fn when_nobody_needs_it_the_originals_come_back_and_the_record_goes() {
        assert_eq!(
            plan(TUNED, Some(HOST), None),
            Plan {
                original: None,
                write: Some(HOST)
            }
        );
        assert_eq!(
            plan(HOST, Some(HOST), None),
            Plan {
                original: None,
                write: None
            }
        );
        // Never tuned: nothing to do.
        assert_eq!(
            plan(HOST, None, None),
            Plan {
                original: None,
                write: None
            }
        );
    }
}
