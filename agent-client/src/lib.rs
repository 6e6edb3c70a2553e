//! The agent protocol between the capture API server and the capture agents.
//!
//! [`protocol`] holds the wire types (shared by the server and the agents),
//! [`client`] a typed async client for them.

pub mod client;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod filter;
pub mod protocol;

pub use client::{AgentClient, ClientError};
pub use protocol::*;
