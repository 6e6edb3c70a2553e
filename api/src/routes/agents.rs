//! The agent protocol (`/agent/v1`): registration, long-polled assignments, reports.
//!
//! An agent sees and reports on only the captures of its own machine.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, post, web};
use agent_protocol::{
    Assignments, CaptureAssignment, CaptureFilter, CaptureReport, DesiredState, FileSettings,
    FilterProtocol, PendingUpload, RegisterRequest, RegisterResponse, TransferRequest,
    UploadTarget,
};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Deserialize;
use uuid::Uuid;

use crate::arm::ids::{self, ResourceId};
use crate::arm::models::PacketCaptureParameters;
use crate::auth::agents::{
    AgentBearer, CREDENTIAL_PREFIX, ENROLLMENT_PREFIX, credential_matches, issue_credential,
    redeem, unauthorized,
};
use crate::db::models::{CaptureRow, MachineRow, NewMachine, WatcherRow};
use crate::db::schema::{file_transfers, machines, packet_captures};
use crate::error::{ApiError, ApiResult, CloudError, ErrorCode};
use crate::lifecycle::{self, CaptureStatus, ProvisioningState, TransferState, UploadState};
use crate::limits;
use crate::state::AppState;

fn agent_not_registered(agent_id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::AgentNotRegistered,
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
    // Who is asking comes first: a refused bearer learns nothing of the body's schema.
    crate::auth::agents::check_registration_bearer(&mut *state.conn().await?, &bearer).await?;
    let req: RegisterRequest = super::agent_body(&body, "registration")?;
    let machine = machine_of(&req)?;
    let location = match req.location.trim() {
        "" => state.default_location.clone(),
        given => given.to_string(),
    };
    let agent_id = Uuid::new_v4();
    let key = ids::key(&req.machine_id);
    let credential_ttl = state.auth.config.agent_credential_ttl;
    let now = Utc::now();
    let mut conn = state.conn().await?;
    let issued = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let enrolling = admit(conn, &bearer, &key).await?;
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
                last_seen_at: now,
                lost: false,
            };
            row.upsert(conn).await?;
            lifecycle::agent::restarted(conn, &key, &req.running_captures, now).await?;
            WatcherRow::ensure_default(conn, &machine.subscription, &location).await?;
            match enrolling {
                true => Ok(Some(issue_credential(conn, &key, credential_ttl).await?)),
                false => Ok(None),
            }
        })
        .await?;
    lifecycle::settle(&mut conn, None, now).await?;
    tracing::info!(machine = %req.machine_id, %agent_id, "agent registered");
    Ok(HttpResponse::Ok().json(RegisterResponse {
        agent_id,
        max_poll_seconds: state.timing.max_poll().as_secs().max(1) as u32,
        lost_after_seconds: state.timing.agent_lost.as_secs() as u32,
        credential_expires_on: issued.as_ref().map(|(_, e)| *e),
        credential: issued.map(|(c, _)| c),
    }))
}

/// The machine a registration names (a VM or a scale set instance), once every field of the
/// registration is within its bounds (see [`registration_fields`]).
fn machine_of(req: &RegisterRequest) -> ApiResult<ResourceId> {
    registration_fields(req)?;
    let machine = ResourceId::parse(&req.machine_id)
        .filter(is_machine_id)
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidParameter,
                "machineId",
                format!(
                    "'{}' is not a virtual machine resource id (/subscriptions/{{s}}/resourceGroups/{{rg}}/providers/Microsoft.Compute/virtualMachines/{{name}}).",
                    limits::shown(&req.machine_id)
                ),
            )
        })?;
    ids::validate_subscription(&machine.subscription)?;
    ids::check_id_parts(&req.machine_id, &machine, "machineId")?;
    Ok(machine)
}

/// The bounds of a registration's fields: `location` empty or a region name; `hostname`, `os`,
/// `agentVersion` and each interface at most [`limits::MAX_AGENT_TEXT_CHARS`] characters without
/// control characters; at most [`limits::MAX_AGENT_INTERFACES`] interfaces and
/// [`limits::MAX_RUNNING_CAPTURES`] running captures. 400 `InvalidParameter` naming the field.
fn registration_fields(req: &RegisterRequest) -> ApiResult<()> {
    let code = ErrorCode::InvalidParameter;
    if !req.location.trim().is_empty() {
        ids::validate_location(&req.location, code, "location")?;
    }
    for (value, target) in [
        (&req.hostname, "hostname"),
        (&req.os, "os"),
        (&req.agent_version, "agentVersion"),
    ] {
        limits::check_text(value, limits::MAX_AGENT_TEXT_CHARS, code, target)?;
    }
    if req.interfaces.len() > limits::MAX_AGENT_INTERFACES {
        return Err(ApiError::invalid(
            code,
            "interfaces",
            format!(
                "{} interfaces were given; at most {} are allowed.",
                req.interfaces.len(),
                limits::MAX_AGENT_INTERFACES
            ),
        ));
    }
    for (i, interface) in req.interfaces.iter().enumerate() {
        let target = format!("interfaces[{i}]");
        limits::check_text(interface, limits::MAX_AGENT_TEXT_CHARS, code, &target)?;
    }
    if req.running_captures.len() > limits::MAX_RUNNING_CAPTURES {
        return Err(ApiError::invalid(
            code,
            "runningCaptures",
            format!(
                "{} running captures were given; at most {} are allowed.",
                req.running_captures.len(),
                limits::MAX_RUNNING_CAPTURES
            ),
        ));
    }
    Ok(())
}

/// Who may register the machine `key`: the holder of an enrollment token whose scope holds it
/// (`true`: a credential is issued), or of the machine's own credential.
async fn admit(conn: &mut AsyncPgConnection, bearer: &AgentBearer, key: &str) -> ApiResult<bool> {
    match &bearer.0 {
        None => Ok(false),
        Some(t) if t.starts_with(ENROLLMENT_PREFIX) => {
            redeem(conn, t, key).await?;
            Ok(true)
        }
        Some(t) if t.starts_with(CREDENTIAL_PREFIX) => {
            let own: bool = diesel::select(diesel::dsl::exists(
                machines::table
                    .filter(machines::resource_key.eq(key))
                    .filter(credential_matches(t)),
            ))
            .get_result(conn)
            .await?;
            if !own {
                return Err(unauthorized(
                    "The credential is not this machine's, or it expired or was revoked.",
                ));
            }
            Ok(false)
        }
        Some(_) => Err(unauthorized(
            "Register with an enrollment token (cet_...) or the machine's credential (cac_...).",
        )),
    }
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
        .filter(packet_captures::status.eq_any([CaptureStatus::NotStarted, CaptureStatus::Running]))
        .filter(
            packet_captures::provisioning_state
                .ne_all([ProvisioningState::Failed, ProvisioningState::Canceled]),
        )
        .order((packet_captures::created_at, packet_captures::id))
        .select(CaptureRow::as_select())
        .load(conn)
        .await?;
    let captures: Vec<CaptureAssignment> = rows.iter().filter_map(to_assignment).collect();
    let transfers: Vec<TransferRequest> = file_transfers::table
        .filter(file_transfers::machine_key.eq(machine_key))
        .filter(file_transfers::state.eq(TransferState::Requested))
        .order(file_transfers::created_at)
        .select((
            file_transfers::id,
            file_transfers::capture_id,
            file_transfers::file_index,
        ))
        .load::<(Uuid, Uuid, Option<i32>)>(conn)
        .await?
        .into_iter()
        .map(|(transfer_id, capture_id, file)| TransferRequest {
            transfer_id,
            capture_id,
            file: file.and_then(|i| u32::try_from(i).ok()),
        })
        .collect();
    let uploads: Vec<PendingUpload> = packet_captures::table
        .filter(packet_captures::machine_key.eq(machine_key))
        .filter(packet_captures::upload_state.eq(UploadState::Pending))
        .filter(packet_captures::status.eq_any([CaptureStatus::Stopped, CaptureStatus::Error]))
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
                continuous: a.continuous.is_some(),
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
    let continuous = match (p.continuous_capture, &p.capture_settings) {
        (Some(ring), Some(s)) => Some(FileSettings {
            ring,
            file_count: s
                .file_count
                .unwrap_or(crate::arm::validate::DEFAULT_FILE_COUNT as u32),
            file_size_in_bytes: s
                .file_size_in_bytes
                .unwrap_or(crate::arm::validate::DEFAULT_FILE_SIZE),
        }),
        _ => None,
    };
    Some(CaptureAssignment {
        capture_id: c.id,
        resource_id: c.resource_id.clone(),
        desired: if c.desired_running {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        },
        bytes_to_capture_per_packet: p.bytes_to_capture_per_packet.unwrap_or(0),
        // A ring does not stop on bytes.
        total_bytes_per_session: match continuous {
            Some(FileSettings { ring: true, .. }) => u64::MAX,
            _ if total == 0 => crate::arm::validate::MAX_U32,
            _ => total,
        },
        // The session's limit, as validated (a continuous capture's `sessionTimeLimitInSeconds`).
        time_limit_in_seconds: u32::try_from(c.time_limit_seconds)
            .ok()
            .filter(|t| *t > 0)
            .unwrap_or(crate::arm::validate::DEFAULT_TIME_LIMIT),
        continuous,
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
        if query.since != Some(current.generation) || now >= deadline || state.hub.is_closing() {
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
    let mut conn = state.conn().await?;
    let reported = conn
        .transaction::<_, ApiError, _>(async |conn| {
            // Who is asking comes first: a refused credential learns nothing of the body's schema.
            let machine = touch(conn, agent_id, &bearer).await?;
            let report: CaptureReport = super::agent_body(&body, "report")?;
        let kept = report.counters().file_set.len();
        if kept as u64 > crate::arm::validate::MAX_FILE_COUNT {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRequestContent,
                "fileSet",
                format!(
                    "Invalid report: 'fileSet' lists {kept} files; a continuous capture keeps at most {}.",
                    crate::arm::validate::MAX_FILE_COUNT
                ),
            ));
        }
            lifecycle::agent::report(conn, &machine.resource_key, capture_id, &report, Utc::now())
                .await?;
            Ok((machine.resource_key, !report.counters().file_set.is_empty()))
        })
        .await?;
    let (machine_key, continuous) = reported;
    if continuous {
        super::ring::delete_discarded(&state, capture_id, &machine_key).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate the agent's credential: the new one is the answer; the current one keeps working for
/// a few minutes.
#[utoipa::path(
    tag = "Agent protocol",
    operation_id = "Agents_RotateCredential",
    params(("agentId" = Uuid, Path)),
    responses(
        (status = 200, description = "The new credential", body = agent_protocol::AgentCredential),
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
        return Err(ApiError::new(
            ErrorCode::AuthenticationDisabled,
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
    Ok(HttpResponse::Ok().json(agent_protocol::AgentCredential {
        credential,
        expires_on,
    }))
}
