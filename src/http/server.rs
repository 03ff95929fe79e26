//! Start-up pieces every service shares.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::HttpResponse;

use super::error::ApiError;

/// How long tccd's servers keep an idle connection open. Clients (tccd's own included) keep
/// idle pooled connections for less than this ([`CLIENT_IDLE`]), so a request never races the
/// server closing the connection it was sent on.
pub const KEEP_ALIVE: Duration = Duration::from_secs(90);

/// How long tccd's HTTP clients keep an idle pooled connection.
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// The one stdout line that tells a caller where the service listens (logs go to stderr).
pub fn announce(addrs: &[SocketAddr]) {
    if let Some(addr) = addrs.first() {
        println!("listening on http://{addr}");
    }
}

/// Unknown routes answer with the API's error body, not actix's empty 404.
pub async fn unknown_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No such endpoint."))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Prometheus text exposition of a registry.
pub fn metrics_response(registry: &prometheus::Registry) -> HttpResponse {
    use prometheus::Encoder;
    let encoder = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        log::error!("cannot encode metrics: {e}");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(buf)
}
