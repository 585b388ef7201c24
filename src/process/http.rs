//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::watch_refusals::WatchRefusals;

pub fn router(registry: Arc<Registry>, refusals: WatchRefusals) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        // Ready once serving: a standby replica waiting for the lease is healthy and ready too.
        // Not while the apiserver refuses the FtpServer watch: no server could say so.
        .route(
            "/readyz",
            get(move || async move {
                if refusals.servers_refused() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the apiserver refuses the FtpServer watch (see the log): grant the \
                         operator list and watch on ftpservers.ftpoperator.dev",
                    )
                } else {
                    (StatusCode::OK, "ok")
                }
            }),
        )
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
