//! The agent protocol between the capture API server and the capture agents.
//!
//! [`protocol`] holds the wire types (shared by the server and the agents), [`client`] a typed
//! async client for them, and [`filter`] the grammar of ARM packet capture filter values (what
//! the server accepts) and their compilation to a libpcap filter (what the agents capture).

pub mod client;
pub mod filter;
pub mod protocol;

pub use client::{AgentClient, Cause, ClientError};
pub use protocol::*;
