//! An operator upgrade changes the default image of every FtpServer that names none. Rolling all
//! of them at once would drain every server in the cluster at the same moment, so the default
//! image is handed out to one server at a time: the next one gets it when the last has rolled
//! out. Servers naming their own `spec.image` are the user's decision and roll at once.
//!
//! The one holder is kept in memory. That remembers nothing the cluster cannot tell again: after
//! a controller restart the first server to reconcile takes the slot, and a holder whose rollout
//! is done (or whose StatefulSet is gone) frees it for the next, as read from the caches.

use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use crate::api::FtpServer;

use super::health::WorkloadSummary;

/// The image a server runs, and whether it waits for its turn to move to the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChoice {
    pub image: String,
    /// Kept on its current image while another server rolls to the new default.
    pub waiting: bool,
}

/// The server that may roll to the default image now.
#[derive(Debug, Default)]
pub struct ImageRolloutGate {
    holder: Mutex<Option<ObjectRef<FtpServer>>>,
}

impl ImageRolloutGate {
    /// Decides `server`'s image. `workload` is its StatefulSet as observed; `holder_done` tells
    /// whether the current holder's rollout has finished (or it has no workload any more).
    pub fn choose(
        &self,
        server: &FtpServer,
        workload: Option<&WorkloadSummary>,
        default_image: &str,
        holder_done: impl Fn(&ObjectRef<FtpServer>) -> bool,
    ) -> ImageChoice {
        if let Some(image) = &server.spec.image {
            return ImageChoice {
                image: image.clone(),
                waiting: false,
            };
        }
        let me = ObjectRef::from_obj(server);
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        let running = workload.and_then(|w| w.image.as_deref());
        match running {
            // New servers, and servers already on the default, take no turn.
            None => ImageChoice {
                image: default_image.to_owned(),
                waiting: false,
            },
            Some(current) if current == default_image => {
                if holder.as_ref() == Some(&me) && workload.is_some_and(|w| w.rolled_out) {
                    *holder = None;
                }
                ImageChoice {
                    image: default_image.to_owned(),
                    waiting: false,
                }
            }
            Some(current) => {
                let free = match holder.as_ref() {
                    None => true,
                    Some(other) if *other == me => true,
                    Some(other) => holder_done(other),
                };
                if free {
                    *holder = Some(me);
                    ImageChoice {
                        image: default_image.to_owned(),
                        waiting: false,
                    }
                } else {
                    ImageChoice {
                        image: current.to_owned(),
                        waiting: true,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::{self, server};

    const OLD: &str = "ftp-operator:0.1.0";
    const NEW: &str = "ftp-operator:0.2.0";

    fn named(name: &str) -> FtpServer {
        let mut server = server(fixtures::MINIMAL);
        server.metadata.name = Some(name.into());
        server
    }

    fn running(image: &str, rolled_out: bool) -> WorkloadSummary {
        WorkloadSummary {
            image: Some(image.into()),
            rolled_out,
            ..WorkloadSummary::default()
        }
    }

    #[test]
    fn an_upgrade_moves_one_server_at_a_time_to_the_new_default() {
        let gate = ImageRolloutGate::default();
        let (a, b) = (named("a"), named("b"));
        let not_done = |_: &ObjectRef<FtpServer>| false;
        let first = gate.choose(&a, Some(&running(OLD, true)), NEW, not_done);
        assert_eq!(first.image, NEW);
        let second = gate.choose(&b, Some(&running(OLD, true)), NEW, not_done);
        assert_eq!(
            second,
            ImageChoice {
                image: OLD.into(),
                waiting: true
            }
        );
        // a is asked again mid-rollout: it keeps its turn.
        assert_eq!(
            gate.choose(&a, Some(&running(NEW, false)), NEW, not_done)
                .image,
            NEW
        );
        // a has rolled out: the slot is free, b goes next.
        gate.choose(&a, Some(&running(NEW, true)), NEW, not_done);
        assert_eq!(
            gate.choose(&b, Some(&running(OLD, true)), NEW, not_done)
                .image,
            NEW
        );
    }

    #[test]
    fn a_finished_or_vanished_holder_frees_the_slot_and_new_or_pinned_servers_never_wait() {
        let gate = ImageRolloutGate::default();
        gate.choose(&named("a"), Some(&running(OLD, true)), NEW, |_| false);
        let b = gate.choose(&named("b"), Some(&running(OLD, true)), NEW, |_| true);
        assert_eq!(b.image, NEW);
        let fresh = gate.choose(&named("c"), None, NEW, |_| false);
        assert_eq!(fresh.image, NEW);
        let mut pinned = named("d");
        pinned.spec.image = Some("mine:1".into());
        let pinned = gate.choose(&pinned, Some(&running(OLD, true)), NEW, |_| false);
        assert_eq!(
            pinned,
            ImageChoice {
                image: "mine:1".into(),
                waiting: false
            }
        );
    }
}
