//! The capture lifecycle: every change of a capture's status, provisioning state, stop reason
//! or upload state, and of the operations that wait on them, is made by a function of this
//! module. Handlers, the agent protocol and the sweeper call these functions and write no state
//! themselves. Each function takes the time of the event (`now`), so that tests drive the clock.
//!
//! # States ([`states`], declared in `api/src/db/states.rs`)
//!
//! ```text
//!  status:        NotStarted ──► Running ──► Stopped
//!                      │            └──────► Error
//!                      ├──────────────────► Stopped   (stopped or deleted before it started)
//!                      └──────────────────► Error     (agent failed, or did not start it in time)
//!
//!  provisioning:  Updating ──► Succeeded   (an agent started it, or stopped it normally)
//!                     ├──────► Failed      (it never started: agent failure, deadline)
//!                     └──────► Canceled    (stopped or deleted before it started)
//!                 `Deleting` is shown while the capture's `deleting` flag is set.
//!
//!  upload:        Pending ──► Uploaded | Failed (the capture then shows Error/StorageFailed)
//!  file (continuous capture): Writing ──► Complete | Uploading ──► Uploaded | UploadFailed
//!                 (see [`files`]; `Discarded` while a file that left the ring loses its blob)
//!  operation:     InProgress ──► Succeeded | Failed | Canceled
//! ```
//!
//! # Events, and where each transition is made
//!
//! | event | function | who calls it | transition |
//! |---|---|---|---|
//! | PUT of a new capture | [`create::create`] | `routes::captures` | inserted `NotStarted`/`Updating` with a `CreateCapture` operation |
//! | stop | [`stop::stop`] | `routes::captures` | `Running`: told to stop (`StopCapture` operation); `NotStarted` → `Stopped`, create `Canceled` |
//! | DELETE of a capture | [`stop::delete_capture`] | `routes::captures` | as stop, and `deleting`; removed by [`settle`] once not `Running` |
//! | DELETE of a watcher | [`stop::delete_watcher`] | `routes::watchers` | watcher `Deleting`; each capture as a delete |
//! | agent reports `Running` | [`agent::report`] | `routes::agents` | `NotStarted` → `Running`, `Updating` → `Succeeded` |
//! | agent reports `Stopped` | [`agent::report`] | `routes::agents` | `NotStarted`/`Running` → `Stopped` (agent's or requested reason) |
//! | agent reports `Failed` | [`agent::report`] | `routes::agents` | → `Error`, `Updating` → `Failed` |
//! | agent registers without a capture it ran | [`agent::restarted`] | `routes::agents` | `Running` → `Error`/`AgentStopped` |
//! | agent silent for `--agent-lost-seconds` | [`agent::lost`] | [`sweeper`] | `Running` → `Error`/`AgentStopped` |
//! | time limit + stop grace passed | [`deadlines::time_limit_passed`] | [`sweeper`] | `Running` → `Stopped`/`TimeExceeded` |
//! | stop not acknowledged in the grace | [`deadlines::stop_grace_passed`] | [`sweeper`] | `Running` → `Stopped` (requested reason) |
//! | create deadline passed | [`deadlines::create_deadline_passed`] | [`sweeper`] | `NotStarted` → `Error`, create `Failed` |
//! | upload verified | [`upload::verified`] | `routes::agent_files` | upload `Pending` → `Uploaded` |
//! | upload given up | [`upload::failed`] | `routes::agent_files` | upload `Pending` → `Failed`; status → `Error`/`StorageFailed` |
//! | agent reports a continuous capture's files | [`files::reported`] | [`agent::report`] | files `Writing` → `Complete`/`Uploading`; out of the ring → removed or `Discarded` |
//! | one file uploaded / given up | [`files::upload_verified`], [`files::upload_failed`] | `routes::agent_files` | file `Uploading` → `Uploaded` / `UploadFailed` |
//! | a discarded file's blob deleted | [`files::blob_deleted`] | `routes::agents` (after a report) | the file is forgotten |
//! | a continuous capture ended, no file left to upload | [`files::settle_upload`] | the `files` functions | upload `Pending` → `Uploaded`, or `Failed` (`Error`/`StorageFailed`) |
//! | an alert fires at a capture trigger | [`triggers::deliver`] | `routes::webhooks` | for each machine it names that passes the trigger's guards: as a PUT of a new capture |
//! | an alert resolves at a capture trigger | [`triggers::deliver`] | `routes::webhooks` | with `stopWhenResolved`, the captures that alert created: as a stop |
//! | after each of these | [`settle`] | the functions above | operations complete; deleted captures and watchers are removed |
//!
//! So a capture goes from `Running` to `Stopped` by its agent's report ([`agent::report`]), or
//! by the server's safety nets ([`deadlines`]).
//!
//! # Adding a state
//!
//! Add the variant to its enum in `db/states.rs` and to the CHECK constraint of its column (a new
//! migration), then the event functions that enter and leave it, each with a test in
//! `api/tests/lifecycle.rs`. What agents see of a capture is derived from these columns in
//! `routes::agents` (assignments); what callers see in `routes::captures::to_model`.
//!
//! # Locks
//!
//! A transition of one capture locks the parent capture (scale sets) before the instance, the
//! order that stop, delete and agent reports all use ([`crate::db::models::CaptureRow`]'s lock
//! methods); the sweeper's multi-row statements skip rows locked by others (SKIP LOCKED) or are
//! single idempotent statements.
//!
//! A capture trigger's delivery ([`triggers`]) holds the network watcher (share), then locks the
//! trigger's row (`FOR UPDATE`) for the whole delivery, then the captures it stops: watcher,
//! trigger, capture. Trigger PUTs, rotations and DELETEs take the watcher before the trigger too
//! (see [`crate::db::triggers`]).

pub mod agent;
mod agent_stopped;
pub mod create;
pub mod deadlines;
pub mod files;
pub mod operations;
pub mod scale_sets;
mod settle;
pub mod stop;
pub mod sweeper;
pub mod triggers;
pub mod upload;

pub use crate::db::states;
pub use settle::settle;
pub use states::{
    CaptureStatus, OperationKind, OperationStatus, ProvisioningState, StopReason, TransferState,
    UploadState,
};
