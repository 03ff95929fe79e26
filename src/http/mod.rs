//! HTTP pieces shared by every tccd service: the error body, the JSON extractor that names the
//! offending field, and server start-up.

pub mod error;
pub mod extract;
pub mod server;

pub use error::ApiError;
pub use extract::JsonBody;
