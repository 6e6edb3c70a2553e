//! The agent protocol (`/agent/v1`): registration, long-polled assignments, reports.
//!
//! An agent sees and reports on only the captures of its own machine.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use agent_client::{
    Assignments, CaptureAssignment, CaptureCounters, CaptureFilter, CaptureReport, DesiredState,
    FilterProtocol, PendingUpload, RegisterRequest, RegisterResponse, StopReason, TransferRequest,
    UploadTarget,
};
use chrono::Utc;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use uuid::Uuid;

use crate::arm::ids::{self, ResourceId};
use crate::arm::models::PacketCaptureParameters;
use crate::auth::agents::{
    AgentBearer, CREDENTIAL_PREFIX, ENROLLMENT_PREFIX, credential_matches, issue_credential,
    redeem, unauthorized,
};
use crate::db::models::{CaptureRow, MachineRow, NewMachine, NewWatcher};
use crate::db::schema::{file_transfers, machines, network_watchers, packet_captures};
use crate::error::{ApiError, ApiResult, CloudError};
use crate::state::AppState;

fn agent_not_registered(agent_id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AgentNotRegistered",
        format!(
            "No agent {agent_id} is registered (it may have been replaced by a newer registration of its machine): register again."
        ),
    )
}

fn is_machine_id(id: &ResourceId) -> bool {
    id.is_type("Microsoft.Compute", &["virtualMachines"])
        || id.is_type(
            "Microsoft.Compute",
            &["virtualMachineScaleSets", "virtualMachines"],
        )
}

/// Register a machine's agent.
///
/// Re-registering a machine replaces its previous agent id. Captures the server believed running
/// on the machine but that are not in `runningCaptures` end as Error / `AgentStopped`. A network
/// watcher `NetworkWatcher_{location}` in resource group `NetworkWatcherRG` is created for the
/// machine's subscription and region if there is none.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_Register",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Invalid registration", body = CloudError),
    )
)]
#[post("/agent/v1/agents")]
pub async fn register(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let req: RegisterRequest = super::agent_body(&body, "registration")?;
    let machine = ResourceId::parse(&req.machine_id)
        .filter(is_machine_id)
        .ok_or_else(|| {
            ApiError::invalid(
                "InvalidParameter",
                "machineId",
                format!("'{}' is not a virtual machine resource id (/subscriptions/{{s}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/virtualMachines/{{name}}).", req.machine_id),
            )
        })?;
    ids::validate_subscription(&machine.subscription)?;
    let location = if req.location.trim().is_empty() {
        state.default_location.clone()
    } else {
        req.location.trim().to_string()
    };
    let agent_id = Uuid::new_v4();
    let key = ids::key(&req.machine_id);
    let machine_id = req.machine_id.clone();
    let credential_ttl = state.auth.config.agent_credential_ttl;
    let mut conn = state.conn().await?;
    let issued = conn.transaction::<_, ApiError, _>(async move |conn| {
            // Who may register this machine: the holder of an enrollment token whose scope
            // holds it, or of the machine's own credential.
            let enrolling = match &bearer.0 {
                None => false,
                Some(t) if t.starts_with(ENROLLMENT_PREFIX) => {
                    redeem(conn, t, &key).await?;
                    true
                }
                Some(t) if t.starts_with(CREDENTIAL_PREFIX) => {
                    let own: bool = diesel::select(diesel::dsl::exists(
                        machines::table
                            .filter(machines::resource_key.eq(&key))
                            .filter(credential_matches(t)),
                    ))
                    .get_result(conn)
                    .await?;
                    if !own {
                        return Err(unauthorized("The credential is not this machine's, or it expired or was revoked."));
                    }
                    false
                }
                Some(_) => {
                    return Err(unauthorized("Register with an enrollment token (cet_...) or the machine's credential (cac_...)."));
                }
            };
            let row = NewMachine {
                resource_key: key.clone(),
                resource_id: &req.machine_id,
                subscription_id: &machine.subscription,
                subscription_key: ids::key(&machine.subscription),
                location: &location,
                agent_id,
                hostname: &req.hostname,
                os: &req.os,
                agent_version: &req.agent_version,
                interfaces: serde_json::to_value(&req.interfaces).unwrap_or_default(),
                last_seen_at: Utc::now(),
                lost: false,
            };
            diesel::insert_into(machines::table)
                .values(&row)
                .on_conflict(machines::resource_key)
                .do_update()
                .set(&row)
                .execute(conn)
                .await?;
            diesel::sql_query(
                "UPDATE packet_captures SET status = 'Error', errors = '[\"AgentStopped\"]',
                     stop_reason = 'AgentStopped', stopped_at = now(), updated_at = now(), desired_running = false,
                     error_message = 'The capture agent restarted and no longer runs this capture.'
                 WHERE machine_key = $1 AND status = 'Running' AND NOT (id = ANY($2))",
            )
            .bind::<Text, _>(&key)
            .bind::<Array<SqlUuid>, _>(&req.running_captures)
            .execute(conn)
            .await?;
            let sub = machine.subscription.clone();
            let name = format!("NetworkWatcher_{}", ids::location_key(&location));
            let rg = "NetworkWatcherRG";
            diesel::insert_into(network_watchers::table)
                .values(NewWatcher {
                    id: Uuid::new_v4(),
                    subscription_id: &sub,
                    resource_group: rg,
                    name: &name,
                    identity_key: super::watcher_identity(&sub, rg, &name),
                    subscription_key: ids::key(&sub),
                    location: &location,
                    location_key: ids::location_key(&location),
                    tags: serde_json::json!({}),
                    etag: Uuid::new_v4(),
                    provisioning_state: "Succeeded",
                })
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if enrolling {
                return Ok(Some(issue_credential(conn, &key, credential_ttl).await?));
            }
            Ok(None)
            })
    .await?;
    crate::sweeper::settle(&mut conn, None).await?;
    tracing::info!(machine = %machine_id, %agent_id, "agent registered");
    Ok(HttpResponse::Ok().json(RegisterResponse {
        agent_id,
        max_poll_seconds: state.timing.max_poll().as_secs().max(1) as u32,
        lost_after_seconds: state.timing.agent_lost.as_secs() as u32,
        credential_expires_on: issued.as_ref().map(|(_, e)| *e),
        credential: issued.map(|(c, _)| c),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PollQuery {
    /// The generation the agent has; the answer comes when the assignments differ from it.
    pub since: Option<i64>,
    /// Longest wait in seconds (capped by the server).
    pub wait_seconds: Option<f64>,
}

/// Checks the agent's credential, marks the agent alive and returns its machine: 404 for an
/// unknown agent id (register again), 401 for a credential that is not the machine's (or was
/// revoked).
pub(super) async fn touch(
    conn: &mut AsyncPgConnection,
    agent_id: Uuid,
    bearer: &AgentBearer,
) -> ApiResult<MachineRow> {
    let target = machines::table.filter(machines::agent_id.eq(agent_id));
    let updated = match &bearer.0 {
        None => diesel::update(target)
            .set((
                machines::last_seen_at.eq(Utc::now()),
                machines::lost.eq(false),
            ))
            .returning(MachineRow::as_returning())
            .get_result(conn)
            .await
            .optional()?,
        Some(credential) => diesel::update(target.filter(credential_matches(credential)))
            .set((
                machines::last_seen_at.eq(Utc::now()),
                machines::lost.eq(false),
            ))
            .returning(MachineRow::as_returning())
            .get_result(conn)
            .await
            .optional()?,
    };
    if let Some(m) = updated {
        return Ok(m);
    }
    let exists: bool = diesel::select(diesel::dsl::exists(target))
        .get_result(conn)
        .await?;
    if exists {
        Err(unauthorized(
            "The credential is not this agent's, or it expired or was revoked.",
        ))
    } else {
        Err(agent_not_registered(agent_id))
    }
}

/// The machine's assignments. Their generation is a hash of their content: it changes exactly
/// when what the agent must do changes, whatever order concurrent transactions commit in.
async fn assignments(
    conn: &mut AsyncPgConnection,
    machine_key: &str,
) -> ApiResult<(Assignments, Vec<CaptureRow>)> {
    let rows: Vec<CaptureRow> = packet_captures::table
        .filter(packet_captures::machine_key.eq(machine_key))
        .filter(packet_captures::status.eq_any(["NotStarted", "Running"]))
        .filter(packet_captures::provisioning_state.ne_all(["Failed", "Canceled"]))
        .order((packet_captures::created_at, packet_captures::id))
        .select(CaptureRow::as_select())
        .load(conn)
        .await?;
    let captures: Vec<CaptureAssignment> = rows.iter().filter_map(to_assignment).collect();
    let transfers: Vec<TransferRequest> = file_transfers::table
        .filter(file_transfers::machine_key.eq(machine_key))
        .filter(file_transfers::state.eq("Requested"))
        .order(file_transfers::created_at)
        .select((file_transfers::id, file_transfers::capture_id))
        .load::<(Uuid, Uuid)>(conn)
        .await?
        .into_iter()
        .map(|(transfer_id, capture_id)| TransferRequest {
            transfer_id,
            capture_id,
        })
        .collect();
    let uploads: Vec<PendingUpload> = packet_captures::table
        .filter(packet_captures::machine_key.eq(machine_key))
        .filter(packet_captures::upload_state.eq("Pending"))
        .filter(packet_captures::status.eq_any(["Stopped", "Error"]))
        // A capture that never started has no file to upload.
        .filter(packet_captures::capture_start_time.is_not_null())
        .order((packet_captures::created_at, packet_captures::id))
        .select(CaptureRow::as_select())
        .load(conn)
        .await?
        .iter()
        .filter_map(|c| {
            to_assignment(c).map(|a| PendingUpload {
                capture_id: c.id,
                keep_local: a.file_path.is_some(),
            })
        })
        .collect();
    let generation = content_generation(&captures, &transfers, &uploads);
    Ok((
        Assignments {
            generation,
            captures,
            transfers,
            uploads,
        },
        rows,
    ))
}

/// Upload credentials for the captures that have a storage account, signed only for an answer
/// that is sent (they are not part of the generation).
async fn attach_upload_sas(
    conn: &mut AsyncPgConnection,
    storage: &crate::storage::accounts::Registry,
    rows: &[CaptureRow],
    assignments: &mut Assignments,
) -> ApiResult<()> {
    let account_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.storage_account_id).collect();
    let accounts = crate::storage::accounts::by_ids(conn, &account_ids).await?;
    for a in assignments.captures.iter_mut() {
        let Some(row) = rows.iter().find(|r| r.id == a.capture_id) else {
            continue;
        };
        let account = row
            .storage_account_id
            .and_then(|id| accounts.iter().find(|acc| acc.id == id));
        if let (Some(account), Some(blob)) = (account, &row.blob_name) {
            match storage.upload_sas(account, blob) {
                Ok(sas) => {
                    a.upload = Some(UploadTarget {
                        blob_url: sas.url,
                        expires_on: sas.expires_on,
                    })
                }
                Err(e) => tracing::warn!(capture = %row.id, error = %e, "no upload credential"),
            }
        }
    }
    Ok(())
}

fn content_generation(
    captures: &[CaptureAssignment],
    transfers: &[TransferRequest],
    uploads: &[PendingUpload],
) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(captures)
        .unwrap_or_default()
        .hash(&mut h);
    transfers.hash(&mut h);
    uploads.hash(&mut h);
    // Never 0: an agent that has nothing yet sends no `since`.
    (h.finish() >> 1) as i64 | 1
}

fn to_assignment(c: &CaptureRow) -> Option<CaptureAssignment> {
    let p: PacketCaptureParameters = serde_json::from_value(c.parameters.clone()).ok()?;
    let filters = p
        .filters
        .unwrap_or_default()
        .into_iter()
        .map(|f| CaptureFilter {
            protocol: match f.protocol.as_deref() {
                Some("TCP") => FilterProtocol::Tcp,
                Some("UDP") => FilterProtocol::Udp,
                _ => FilterProtocol::Any,
            },
            local_ip_address: f.local_ip_address,
            remote_ip_address: f.remote_ip_address,
            local_port: f.local_port,
            remote_port: f.remote_port,
        })
        .collect();
    let total = p
        .total_bytes_per_session
        .unwrap_or(crate::arm::validate::DEFAULT_TOTAL_BYTES);
    Some(CaptureAssignment {
        capture_id: c.id,
        resource_id: c.resource_id.clone(),
        desired: if c.desired_running {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        },
        bytes_to_capture_per_packet: p.bytes_to_capture_per_packet.unwrap_or(0),
        total_bytes_per_session: if total == 0 {
            crate::arm::validate::MAX_U32
        } else {
            total
        },
        time_limit_in_seconds: match p.time_limit_in_seconds {
            None | Some(0) => crate::arm::validate::DEFAULT_TIME_LIMIT,
            Some(t) => t,
        },
        filters,
        file_path: p
            .storage_location
            .file_path
            .or(p.storage_location.local_path),
        storage_path: p.storage_location.storage_path,
        upload: None,
    })
}

/// Long-poll for the desired state of the machine's captures: answers at once when the
/// generation differs from `since`, else when it changes or the wait ends.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_PollAssignments",
    params(("agentId" = Uuid, Path), PollQuery),
    responses(
        (status = 200, description = "The assignments", body = Assignments),
        (status = 404, description = "Unknown agent: register again", body = CloudError),
    )
)]
#[get("/agent/v1/agents/{agentId}/assignments")]
pub async fn poll(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<Uuid>,
    query: web::Query<PollQuery>,
) -> ApiResult<HttpResponse> {
    let agent_id = path.into_inner();
    let max = state.timing.max_poll();
    let wait = query
        .wait_seconds
        .filter(|w| w.is_finite() && *w >= 0.0)
        .map(|w| Duration::from_secs_f64(w.min(max.as_secs_f64())))
        .unwrap_or(max);
    let deadline = Instant::now() + wait;

    let machine = {
        let mut conn = state.conn().await?;
        touch(&mut conn, agent_id, &bearer).await?
    };
    // Subscribe before reading, so that a change committed in between still wakes us.
    let mut sub = state.hub.subscribe(&machine.resource_key);
    state.metrics.polls_waiting.inc();
    let _guard = scopeguard(&state);
    let mut woken = false;
    loop {
        sub.mark_seen();
        let mut conn = state.conn().await?;
        // A revocation (which wakes us) ends the poll at once.
        if woken && bearer.0.is_some() {
            touch(&mut conn, agent_id, &bearer).await?;
        }
        let (mut current, rows) = assignments(&mut conn, &machine.resource_key).await?;
        woken = true;
        let now = Instant::now();
        if query.since != Some(current.generation) || now >= deadline {
            attach_upload_sas(&mut conn, &state.storage, &rows, &mut current).await?;
            return Ok(HttpResponse::Ok().json(current));
        }
        drop(conn);
        if !sub.changed(deadline - now).await {
            let mut conn = state.conn().await?;
            attach_upload_sas(&mut conn, &state.storage, &rows, &mut current).await?;
            return Ok(HttpResponse::Ok().json(current));
        }
    }
}

struct PollGuard(std::sync::Arc<crate::metrics::Metrics>);
impl Drop for PollGuard {
    fn drop(&mut self) {
        self.0.polls_waiting.dec();
    }
}
fn scopeguard(state: &AppState) -> PollGuard {
    PollGuard(state.metrics.clone())
}

fn counters_i64(c: &CaptureCounters) -> (i64, i64, i64, serde_json::Value) {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (
        i(c.packets),
        i(c.bytes),
        i(c.kernel_drops),
        serde_json::to_value(&c.files).unwrap_or_default(),
    )
}

/// Report the state of a capture assigned to this agent's machine.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_ReportCapture",
    params(("agentId" = Uuid, Path), ("captureId" = Uuid, Path)),
    request_body = CaptureReport,
    responses(
        (status = 204, description = "Recorded"),
        (status = 404, description = "Unknown agent, or not a capture of this agent's machine", body = CloudError),
    )
)]
#[post("/agent/v1/agents/{agentId}/captures/{captureId}/report")]
pub async fn report(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let (agent_id, capture_id) = path.into_inner();
    let report: CaptureReport = super::agent_body(&body, "report")?;
    let mut conn = state.conn().await?;
    conn.transaction::<_, ApiError, _>(async move |conn| {
            let machine = touch(conn, agent_id, &bearer).await?;
            // A scale set instance: lock its parent first, in the order stop and delete use
            // (parent, then instances), so that the two cannot deadlock.
            let parent: Option<Option<Uuid>> = packet_captures::table
                .find(capture_id)
                .select(packet_captures::parent_id)
                .first(conn)
                .await
                .optional()?;
            if let Some(Some(parent)) = parent {
                packet_captures::table
                    .find(parent)
                    .select(packet_captures::id)
                    .for_update()
                    .first::<Uuid>(conn)
                    .await
                    .optional()?;
            }
            let c: CaptureRow = packet_captures::table
                .find(capture_id)
                .filter(packet_captures::machine_key.eq(&machine.resource_key))
                .select(CaptureRow::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "CaptureNotAssigned",
                        format!("Capture {capture_id} is not assigned to this agent's machine (or was deleted)."),
                    )
                })?;
            let active = c.status == "NotStarted" || c.status == "Running";
            let now = Utc::now();
            let target = packet_captures::table.find(c.id);
            let succeeded_if_updating = if c.provisioning_state == "Updating" { "Succeeded" } else { c.provisioning_state.as_str() };
            match &report {
                CaptureReport::Running { start_time, .. } => {
                    if c.status == "NotStarted" {
                        diesel::update(target)
                            .set((
                                packet_captures::status.eq("Running"),
                                packet_captures::capture_start_time.eq(start_time),
                                packet_captures::provisioning_state.eq(succeeded_if_updating),
                            ))
                            .execute(conn)
                            .await?;
                    }
                }
                CaptureReport::Stopped { stop_reason, .. } => {
                    if active {
                        let reason = match (stop_reason, &c.stop_requested_reason) {
                            (StopReason::StoppedByUser, Some(requested)) => requested.clone(),
                            (r, _) => r.as_str().to_string(),
                        };
                        diesel::update(target)
                            .set((
                                packet_captures::status.eq("Stopped"),
                                packet_captures::stop_reason.eq(reason),
                                packet_captures::stopped_at.eq(now),
                                packet_captures::desired_running.eq(false),
                                packet_captures::provisioning_state.eq(succeeded_if_updating),
                            ))
                            .execute(conn)
                            .await?;
                    }
                }
                CaptureReport::Failed { code, message, .. } => {
                    if active {
                        diesel::update(target)
                            .set((
                                packet_captures::status.eq("Error"),
                                packet_captures::errors.eq(serde_json::json!([code.as_str()])),
                                packet_captures::error_message.eq(message),
                                packet_captures::stop_reason.eq(StopReason::CaptureError.as_str()),
                                packet_captures::stopped_at.eq(now),
                                packet_captures::desired_running.eq(false),
                                packet_captures::provisioning_state.eq(
                                    if c.provisioning_state == "Updating" { "Failed" } else { c.provisioning_state.as_str() },
                                ),
                            ))
                            .execute(conn)
                            .await?;
                    }
                }
            }
            // Counters and files, whatever the state.
            let (p, b, d, f) = counters_i64(report.counters());
            diesel::update(target)
                .set((
                    packet_captures::packets.eq(p),
                    packet_captures::bytes.eq(b),
                    packet_captures::kernel_drops.eq(d),
                    packet_captures::files.eq(f),
                    packet_captures::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            crate::sweeper::settle(conn, Some(c.id)).await?;
            Ok(())
            })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the agent's credential: the new one is the answer; the current one keeps working for
/// a few minutes.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_RotateCredential",
    params(("agentId" = Uuid, Path)),
    responses(
        (status = 200, description = "The new credential", body = agent_client::AgentCredential),
        (status = 401, description = "Not this agent's credential", body = CloudError),
        (status = 404, description = "Unknown agent", body = CloudError),
    )
)]
#[post("/agent/v1/agents/{agentId}/credential")]
pub async fn rotate_credential(
    state: web::Data<AppState>,
    bearer: AgentBearer,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let agent_id = path.into_inner();
    if bearer.0.is_none() {
        return Err(ApiError::bad_request(
            "AuthenticationDisabled",
            "Authentication is disabled on this server: agents have no credentials.",
        ));
    }
    let mut conn = state.conn().await?;
    let current = bearer.0.as_deref().unwrap_or_default();
    let Some((machine, credential, expires_on)) = crate::auth::agents::rotate(
        &mut conn,
        agent_id,
        current,
        state.auth.config.agent_credential_ttl,
    )
    .await?
    else {
        // Tell an unknown agent from a refused credential, as every agent call does.
        touch(&mut conn, agent_id, &bearer).await?;
        return Err(unauthorized(
            "Only the current credential of the agent can be rotated.",
        ));
    };
    tracing::info!(%machine, "agent credential rotated");
    Ok(HttpResponse::Ok().json(agent_client::AgentCredential {
        credential,
        expires_on,
    }))
}
