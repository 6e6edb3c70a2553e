//! Capture triggers (issue 14; an extension of this service, not in Azure): a child resource of
//! a network watcher, `…/networkWatchers/{nw}/captureTriggers/{name}`, that turns alerts into
//! ordinary packet captures.
//!
//! - [`model`]: the wire shapes; [`validate`]: the PUT body (its capture template validated as
//!   a packet capture) and the capture a template makes for one machine.
//! - [`alerts`]: Prometheus Alertmanager (webhook version 4) and Azure Monitor (common alert
//!   schema) payloads, read into one [`alerts::Alert`] shape.
//! - [`secret`]: the per-trigger webhook secret.
//!
//! The handlers are `routes::triggers` (ARM) and `routes::webhooks` (deliveries); what a
//! delivery does (guards, captures created and stopped, events) is the lifecycle event
//! [`crate::lifecycle::triggers`]; the rows and their queries are [`crate::db::triggers`].

pub mod alerts;
pub mod model;
pub mod secret;
pub mod validate;
