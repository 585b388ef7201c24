//! Leader election that cannot split. One replica holds a `coordination.k8s.io` Lease; it may
//! write to the API only while its last successful renewal is younger than `renew_deadline`,
//! which is shorter than the lease duration the others wait for. The check sits in the HTTP
//! client ([`FenceLayer`]), so no write of the controller (apply, status, Event, finalizer) can
//! slip past it: a replica frozen (SIGSTOP) or cut off from the API that comes back after
//! another took over refuses every write, and the process exits.
//!
//! The timing follows client-go's leaderelection: others measure a holder's lease from when
//! *they* saw its record change, so clocks need not agree.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, Ready, ready};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

/// How long others wait for a silent holder, how long the holder trusts its last renewal, and
/// how often it renews (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Until when this replica may write. Shared by the elector and the fenced client.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    until: Arc<Mutex<Option<Instant>>>,
}

impl Fence {
    pub fn is_leading(&self) -> bool {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|until| Instant::now() < until)
    }

    fn extend_to(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn close(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn deadline(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A client layer that refuses every request but reads (GET, which includes watches) while the
/// fence says this replica is not the leader.
#[derive(Debug, Clone)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

/// Returned instead of sending a write when the replica is not (or no longer) the leader.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (lease not renewed in time): refusing to {0}")]
pub struct NotLeading(String);

impl<S, B> tower::Service<http::Request<B>> for Fenced<S>
where
    S: tower::Service<http::Request<B>, Error = tower::BoxError>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Either<S::Future, Ready<Result<S::Response, tower::BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let read = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if read || self.fence.is_leading() {
            Either::Left(self.inner.call(request))
        } else {
            let what = format!("{} {}", request.method(), request.uri().path());
            warn!(request = %what, "refusing to write: not the leader");
            Either::Right(ready(Err(Box::new(NotLeading(what)))))
        }
    }
}

/// What the elector last saw of the Lease, and when (by this replica's clock).
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    fence: Fence,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// `client` must not be fenced: the elector itself writes the Lease.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            fence: Fence::default(),
            observed: None,
        }
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => warn!(%error, "cannot read or write the Lease"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews every retry period; returns when the fence has run out (the lease is lost).
    pub async fn keep(&mut self) {
        loop {
            let Some(deadline) = self.fence.deadline() else {
                return;
            };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let attempt = self.try_acquire_or_renew();
            match tokio::time::timeout(deadline - now, attempt).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    // Someone else holds it: our renewals failed for too long.
                    self.fence.close();
                    return;
                }
                Ok(Err(error)) => warn!(%error, "cannot renew the Lease"),
                Err(_) => {}
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Gives the Lease up, so the next replica need not wait for it to run out.
    pub async fn release(&mut self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(%error, "cannot release the Lease");
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        // The fence counts from before the request: the apiserver records the renewal later.
        let started = Instant::now();
        let now = MicroTime(jiff::Timestamp::now());
        let lease_seconds = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.fence.extend_to(started + self.timings.renew_deadline);
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        };
        if self.observed.as_ref().map(|(seen, _)| seen) != Some(&record) {
            self.observed = Some((record, Instant::now()));
        }
        let observed_at = self.observed.as_ref().map_or(started, |(_, at)| *at);
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let their_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timings.lease_duration, Duration::from_secs);
        let free = holder.is_none() || observed_at + their_duration <= Instant::now();
        if !mine && !free {
            debug!(holder = ?holder, "the Lease is held by another replica");
            return Ok(false);
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(lease_seconds),
            acquire_time: if mine {
                spec.acquire_time
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..spec
        });
        // `replace` carries the resourceVersion read above: if another replica wrote in
        // between, the apiserver refuses with a conflict and nobody double-holds.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.fence.extend_to(started + self.timings.renew_deadline);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_only_until_its_deadline() {
        let fence = Fence::default();
        assert!(!fence.is_leading());
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(fence.is_leading());
        fence.extend_to(Instant::now() - Duration::from_millis(1));
        assert!(!fence.is_leading());
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        fence.close();
        assert!(!fence.is_leading());
    }

    /// Answers every request with its method.
    struct Answer;

    impl tower::Service<http::Request<()>> for Answer {
        type Response = http::Method;
        type Error = tower::BoxError;
        type Future = Ready<Result<http::Method, tower::BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            ready(Ok(request.method().clone()))
        }
    }

    fn send(service: &mut Fenced<Answer>, method: http::Method) -> Result<http::Method, String> {
        use tower::Service;
        let request = http::Request::builder()
            .method(method)
            .uri("/api/v1/namespaces/ftp/services/files")
            .body(())
            .unwrap();
        futures::executor::block_on(service.call(request)).map_err(|e| e.to_string())
    }

    #[test]
    fn without_the_lease_only_reads_go_out() {
        let fence = Fence::default();
        let mut service = tower::Layer::layer(&FenceLayer(fence.clone()), Answer);
        assert_eq!(send(&mut service, http::Method::GET), Ok(http::Method::GET));
        for write in [
            http::Method::PATCH,
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
        ] {
            let refused = send(&mut service, write).unwrap_err();
            assert!(refused.contains("not the leader"), "{refused}");
        }
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        assert_eq!(
            send(&mut service, http::Method::PATCH),
            Ok(http::Method::PATCH)
        );
    }

    #[test]
    fn the_holder_stops_trusting_itself_before_the_others_take_over() {
        let timings = Timings::default();
        assert!(timings.renew_deadline + timings.retry_period < timings.lease_duration);
    }
}
