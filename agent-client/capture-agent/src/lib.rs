//! The capture agent daemon (`capture-agent run`): registers its machine, long-polls for its
//! assignments, runs each capture with libpcap in a thread of its own, and reports.

pub mod agent;
pub mod config;
pub mod credential;
pub mod diagnose;
pub mod files;
pub mod paths;
pub mod rotation;
pub mod session;
pub mod tls;
pub mod upload;
pub mod writer;
