//! The resource side of TCC: the barrier (SQL and Redis) that any Rust resource service can use,
//! and `tccd stock`, the stock service built on it.

pub mod barrier;
pub mod stock;

pub use crate::coordinator::model::Op;
