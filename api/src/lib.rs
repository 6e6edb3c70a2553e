//! The ARM-compatible packet capture API server.
//!
//! Read top to bottom: [`config`] (command line), [`server`] (routes and start-up),
//! [`routes`] (HTTP handlers per resource), [`arm`] (ARM ids, versions, models, validation),
//! [`limits`] (every bound on what a caller controls), [`db`] (schema, rows and their queries,
//! states, pool, migrations), [`lifecycle`] (every transition of a capture and its operations,
//! and the sweeper),
//! [`notify`] (LISTEN/NOTIFY wake-ups of agents' long polls), [`embedded_pg`] (the default
//! local database), [`error`] (the one mapping of errors to ARM responses), [`triggers`]
//! (capture triggers: alerts that start captures).

pub mod admin;
pub mod arm;
pub mod auth;
pub mod coalesce;
pub mod config;
pub mod db;
pub mod embedded_pg;
pub mod error;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod notify;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod storage;
pub mod triggers;
