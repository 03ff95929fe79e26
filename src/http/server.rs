//! Start-up pieces every service shares.

use std::net::SocketAddr;

use actix_web::HttpResponse;

use super::error::ApiError;

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
