//! `JsonBody<T>`: reads a JSON request body with the API's rules — 415 for another content type,
//! 413 past the size limit, 400 naming the offending field for anything serde refuses.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// Largest request body any endpoint takes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body. An empty body reads as `{}`, so endpoints whose fields are all optional accept
/// no body at all.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_ascii_lowercase());
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| ApiError::invalid(format!("Cannot read the body: {e}.")))?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            let is_json = content_type.as_deref().is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime == "application/json" || mime.ends_with("+json")
            });
            if body.iter().all(u8::is_ascii_whitespace) && (content_type.is_none() || is_json) {
                return parse(b"{}").map(JsonBody);
            }
            if !is_json {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "The request body must be JSON (Content-Type: application/json).",
                ));
            }
            parse(&body).map(JsonBody)
        })
    }
}

/// Parses JSON, naming the path of the field serde refused.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::invalid(format!("Malformed JSON body: {inner}."))
        } else {
            ApiError::invalid(format!("Field `{path}`: {inner}."))
        }
    })
}

/// A query string, refused with a 400 naming the offending parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for QueryParams<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(
            req.query_string().as_bytes(),
        ));
        let parsed = serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::invalid(format!("Query parameter `{path}`: {}.", e.into_inner()))
            });
        std::future::ready(parsed)
    }
}

/// Query strings read by actix's own extractor get the same 400 treatment.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|e, _| ApiError::invalid(format!("Bad query string: {e}.")).into())
}

/// Path segments that fail to parse.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|e, _| ApiError::invalid(format!("Bad path: {e}.")).into())
}
