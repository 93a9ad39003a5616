//! Health over HTTP, for load balancers and orchestrators that cannot speak gRPC:
//! `GET /livez` (the process answers) and `GET /readyz` (what the gRPC port's
//! `grpc.health.v1` says, read from the same statuses, not probed again).

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use tonic_health::{
    pb::{HealthCheckRequest, health_check_response::ServingStatus, health_server::Health},
    server::{HealthReporter, HealthService},
};
use utoipa::ToSchema;

/// The statuses the gRPC port serves, and the names to read.
#[derive(Clone)]
pub struct Readiness {
    health: std::sync::Arc<HealthService>,
    /// `""` (the gateway itself) and each public service.
    names: Vec<&'static str>,
}

pub(super) fn router(health: HealthReporter) -> Router {
    let readiness = Readiness {
        health: std::sync::Arc::new(HealthService::from_health_reporter(health)),
        names: crate::edge::health_names(),
    };
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

/// The answer of `/livez` and of a ready `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// What `/readyz` answers when something is not serving.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    #[schema(example = "not serving")]
    pub status: &'static str,
    /// The `grpc.health.v1` names not SERVING: `""` is the gateway itself, any
    /// other the public service whose upstream has no replica serving.
    #[schema(example = json!(["agora.posts.v1.PostService"]))]
    pub not_serving: Vec<&'static str>,
}

/// Whether the process answers at all; nothing else is checked, so a failing
/// upstream never gets the gateway restarted.
#[utoipa::path(
    get,
    path = "/livez",
    operation_id = "livez",
    tag = "Health",
    responses((status = 200, description = "The process answers", body = Live)),
)]
pub async fn livez() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Whether to send calls here: 200 while the gateway and the upstream of every
/// public service are SERVING, as `grpc.health.v1` on the gRPC port says
/// (upstreams are followed every 5 seconds), else 503 naming what is not.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "Health",
    responses(
        (status = 200, description = "Everything is serving", body = Live),
        (status = 503, description = "Something is not serving", body = NotReady),
    ),
)]
pub async fn readyz(
    State(readiness): State<Readiness>,
) -> Result<Json<Live>, (StatusCode, Json<NotReady>)> {
    let mut not_serving = Vec::new();
    for name in &readiness.names {
        let request = tonic::Request::new(HealthCheckRequest {
            service: (*name).to_owned(),
        });
        // Unknown (not yet probed) counts as not serving.
        let serving = readiness
            .health
            .check(request)
            .await
            .is_ok_and(|response| response.get_ref().status() == ServingStatus::Serving);
        if !serving {
            not_serving.push(*name);
        }
    }
    if not_serving.is_empty() {
        return Ok(Json(Live { status: "ok" }));
    }
    Err((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(NotReady {
            status: "not serving",
            not_serving,
        }),
    ))
}
