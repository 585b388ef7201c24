//! The Events an FtpServer gets: which ones is decided purely ([`events`]) from what the
//! reconcile applied and how the status changed; [`publish`] sends them.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::conditions::{READY, STALLED};
use crate::api::{FtpServer, FtpServerStatus};
use crate::process::apply::Applied;

use super::context::Context;
use super::status::Outcome;

/// Events for what changed and what failed; an unchanged reconcile emits none.
pub fn events(
    changes: &[(ObjectReference, Applied)],
    previous: &FtpServerStatus,
    status: &FtpServerStatus,
    outcome: &Outcome,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (child, applied) in changes {
        let verb = match applied {
            Applied::Unchanged => continue,
            Applied::Created => "Created",
            Applied::Updated => "Updated",
        };
        let kind = child.kind.as_deref().unwrap_or_default();
        let name = child.name.as_deref().unwrap_or_default();
        events.push(Event {
            type_: EventType::Normal,
            reason: verb.to_owned(),
            note: Some(format!("{verb} {kind} {name}")),
            action: "Apply".to_owned(),
            // The child is part of the Recorder's series key: without it, "Created Service"
            // and "Created Deployment" would become repeats (PATCHes) of "Created ConfigMap"
            // and their notes would be lost.
            secondary: Some(child.clone()),
        });
    }
    // A warning whenever what stalls the server, or the failure it retries, says something new.
    let warned = |s: &FtpServerStatus| {
        let find = |type_: &str, state: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == state)
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
        match outcome {
            Outcome::Failed(_) => find(READY, "False"),
            _ => find(STALLED, "True"),
        }
    };
    if let Some((reason, message)) =
        warned(status).filter(|now| warned(previous).as_ref() != Some(now))
    {
        let action = match outcome {
            Outcome::Stalled(_) => "Validate",
            Outcome::Failed(_) => "Apply",
            Outcome::Applied { .. } => "Observe",
        };
        events.push(Event {
            type_: EventType::Warning,
            reason,
            note: Some(message.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        });
    }
    let ready = |s: &FtpServerStatus| {
        s.conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True")
    };
    if ready(status) && !ready(previous) {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Ready".to_owned(),
            note: Some(format!(
                "serving at {}",
                status.public_address.as_deref().unwrap_or_default()
            )),
            action: "Reconcile".to_owned(),
            secondary: None,
        });
    }
    events
}

/// Publishes `events` on `server`; a failure to publish is logged, never retried.
pub async fn publish(
    server: &FtpServer,
    ctx: &Context,
    events: Vec<Event>,
    changes: &[(ObjectReference, Applied)],
) {
    let reference = server.object_ref(&());
    for event in events {
        // A Recorder folds an Event into an earlier one with the same reason, keeping the
        // earlier note; a warning is published only when its message changed, so it gets a
        // Recorder with nothing to fold into and the Event says what is wrong now.
        let fresh;
        let recorder = if event.type_ == EventType::Warning {
            fresh = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &fresh
        } else {
            &ctx.recorder
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "cannot publish event");
        } else {
            ctx.metrics.api_write("Event");
        }
    }
    if !changes.iter().all(|(_, a)| *a == Applied::Unchanged) {
        info!(name = %server.name_any(), namespace = ?server.namespace(), "applied changes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::errors::Invalid;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(conditions: &[(&str, &str, &str, &str)]) -> FtpServerStatus {
        FtpServerStatus {
            public_address: Some("20.50.1.7".to_owned()),
            conditions: conditions
                .iter()
                .map(|(type_, status, reason, message)| Condition {
                    type_: (*type_).to_owned(),
                    status: (*status).to_owned(),
                    reason: (*reason).to_owned(),
                    message: (*message).to_owned(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                })
                .collect(),
            ..FtpServerStatus::default()
        }
    }

    fn child(kind: &str, name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            ..ObjectReference::default()
        }
    }

    fn stalled() -> Outcome {
        Outcome::Stalled(Invalid {
            reason: "NameTaken",
            message: "taken".to_owned(),
        })
    }

    fn notes(events: &[Event]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| (e.reason.clone(), e.note.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_quiet_reconcile_emits_nothing() {
        let same = status(&[("Ready", "True", "Serving", "")]);
        let changes = [(child("ConfigMap", "a-config"), Applied::Unchanged)];
        assert!(events(&changes, &same, &same, &stalled()).is_empty());
    }

    #[test]
    fn each_changed_child_gets_an_event_naming_it() {
        let same = status(&[]);
        let changes = [
            (child("ConfigMap", "a-config"), Applied::Created),
            (child("Service", "a"), Applied::Unchanged),
            (child("StatefulSet", "a"), Applied::Updated),
        ];
        let outcome = Outcome::Failed(Invalid {
            reason: "Rejected",
            message: String::new(),
        });
        let events = events(&changes, &same, &same, &outcome);
        assert_eq!(
            notes(&events),
            [
                ("Created".into(), "Created ConfigMap a-config".into()),
                ("Updated".into(), "Updated StatefulSet a".into()),
            ]
        );
        assert_eq!(
            events[0].secondary.as_ref().and_then(|c| c.name.as_deref()),
            Some("a-config")
        );
    }

    #[test]
    fn a_stall_warns_once_per_message() {
        let before = status(&[]);
        let now = status(&[("Stalled", "True", "NameTaken", "Service a is held by x")]);
        let events_now = events(&[], &before, &now, &stalled());
        assert_eq!(events_now.len(), 1);
        assert_eq!(events_now[0].type_, EventType::Warning);
        assert_eq!(events_now[0].action, "Validate");
        assert_eq!(
            notes(&events_now),
            [("NameTaken".into(), "Service a is held by x".into())]
        );
        // The same stall again: no repeat.
        assert!(events(&[], &now, &now, &stalled()).is_empty());
        // A new message: a new warning.
        let other = status(&[("Stalled", "True", "NameTaken", "Service a is held by y")]);
        assert_eq!(events(&[], &now, &other, &stalled()).len(), 1);
    }

    #[test]
    fn becoming_ready_says_where_it_serves() {
        let before = status(&[("Ready", "False", "Progressing", "")]);
        let now = status(&[("Ready", "True", "Serving", "")]);
        let outcome = Outcome::Stalled(Invalid {
            reason: "x",
            message: String::new(),
        });
        assert_eq!(
            notes(&events(&[], &before, &now, &outcome)),
            [("Ready".into(), "serving at 20.50.1.7".into())]
        );
        assert!(events(&[], &now, &now, &outcome).is_empty());
    }
}
