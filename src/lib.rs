//! tccd: a TCC (Try / Confirm / Cancel) distributed-transaction coordinator, and the pieces a
//! resource service needs to take part.

pub mod bench;
pub mod client;
pub mod coordinator;
pub mod db;
pub mod demo;
pub mod failpoints;
pub mod http;
pub mod resource;
pub mod time;
pub mod validate;
