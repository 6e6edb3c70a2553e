//! The ARM side: resource ids, api-versions, wire models and request validation.

pub mod api_version;
pub mod ids;
pub mod models;
pub mod put;
pub mod validate;
