//! The agent's main loop: register, long-poll, reconcile, report; shut down on SIGTERM.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use agent_protocol::filter;
use agent_protocol::{
    AgentClient, CaptureAssignment, CaptureCounters, CaptureErrorCode, CaptureReport, ClientError,
    DesiredState, PendingUpload, RegisterRequest, TransferRequest,
};

use crate::config::RunArgs;
use crate::diagnose::{self, Bearer, Verdict};
use crate::session::{Outcome, Session, Spec};
use crate::{credential, files, paths, tls, upload};

/// How long a shutdown may take to stop captures and deliver their final reports.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    session: Session,
    files: paths::CaptureFiles,
    continuous: bool,
    /// The capture keeps its files on the machine (`filePath`/`localPath` given).
    keep_local: bool,
    /// The capture has a storage account: its files are uploaded (a continuous capture's as each
    /// is finished, a single file once the capture has stopped).
    storage: bool,
    /// The newest upload SAS of a single-file capture.
    upload: Option<agent_protocol::UploadTarget>,
}

impl Running {
    /// A single-file capture's file as reported: its ARM path, or the real path of its spool
    /// file.
    fn reported_name(&self) -> String {
        if self.keep_local {
            self.files.arm_name(1)
        } else {
            self.files.base().display().to_string()
        }
    }
}

/// A report to deliver, in order, for one capture.
type Outbox = mpsc::UnboundedSender<(Uuid, CaptureReport)>;

pub struct Agent {
    args: RunArgs,
    client: AgentClient,
    running: HashMap<Uuid, Running>,
    /// Every capture this process ever started or refused: each is started at most once.
    seen: HashSet<Uuid>,
    outbox: Outbox,
    agent_id: tokio::sync::watch::Receiver<Uuid>,
    /// The files of the captures this agent ran: the only files it ever sends.
    files: files::FileRecord,
    transfers_seen: HashSet<Uuid>,
    /// Uploads this process started (each at most once): a capture's single file, or one file
    /// of a continuous capture.
    uploads_started: HashSet<(Uuid, Option<u32>)>,
    upload_settings: Arc<upload::UploadSettings>,
    shutting_down: bool,
    credential_file: credential::CredentialFile,
    /// The machine's credential, once the server gave one.
    credential: Option<credential::Stored>,
    enrollment_token: Option<String>,
    /// Whether this process registered once: until then, errors that a server being deployed
    /// may cause are retried for `--startup-retry-seconds` only.
    registered_once: bool,
}

/// Capped exponential backoff with jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200) * 2u32.saturating_pow(attempt.min(6));
    let cap = base.min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    cap / 2 + cap.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

pub fn http_client(args: &RunArgs) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca_cert {
        let trusted = tls::read_ca_file(ca)?;
        b = b.tls_backend_preconfigured(tls::client_config(trusted)?);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

impl Agent {
    pub fn new(
        args: RunArgs,
        client: AgentClient,
        outbox: Outbox,
        agent_id: tokio::sync::watch::Receiver<Uuid>,
        enrollment_token: Option<String>,
    ) -> Agent {
        let files = files::FileRecord::open(&args.state_dir.join("files.tsv"));
        let upload_settings = Arc::new(upload::UploadSettings {
            block_size: args.upload_block_size,
            concurrency: args.upload_concurrency,
            retry_period: Duration::from_secs(args.upload_retry_seconds),
            uploads_at_once: Arc::new(tokio::sync::Semaphore::new(upload::UPLOADS_AT_ONCE)),
        });
        let credential_file = credential::CredentialFile::new(&args.state_dir);
        let credential = credential_file.load(&args.machine_id);
        client.set_bearer(
            credential
                .as_ref()
                .map(|c| c.credential.clone())
                .or_else(|| enrollment_token.clone()),
        );
        Agent {
            args,
            client,
            credential_file,
            credential,
            enrollment_token,
            running: HashMap::new(),
            seen: HashSet::new(),
            outbox,
            agent_id,
            files,
            transfers_seen: HashSet::new(),
            uploads_started: HashSet::new(),
            upload_settings,
            shutting_down: false,
            registered_once: false,
        }
    }

    /// Keeps a credential the server handed out.
    fn keep_credential(&mut self, credential: String, expires_on: chrono::DateTime<chrono::Utc>) {
        let stored = credential::Stored {
            machine_id: self.args.machine_id.clone(),
            credential,
            obtained_at: chrono::Utc::now(),
            expires_on,
        };
        if let Err(e) = self.credential_file.save(&stored) {
            tracing::warn!(error = %e, "cannot save the agent credential");
        }
        self.credential = Some(stored);
    }

    /// Rotates the credential when a third of its life is left.
    async fn rotate_if_due(&mut self, agent_id: Uuid) {
        if !self
            .credential
            .as_ref()
            .is_some_and(credential::Stored::due)
        {
            return;
        }
        match self.client.rotate_credential(agent_id).await {
            Ok(c) => {
                tracing::info!(expires_on = %c.expires_on, "agent credential rotated");
                self.keep_credential(c.credential, c.expires_on);
            }
            Err(e) => tracing::warn!(error = %e, "cannot rotate the agent credential"),
        }
    }

    /// Registers, retrying transient errors with backoff: the agent id, `None` when shutdown was
    /// asked for meanwhile, or the message of an error that retrying cannot fix.
    async fn register(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Uuid>, String> {
        let req = RegisterRequest {
            machine_id: self.args.machine_id.clone(),
            location: self.args.location.clone(),
            hostname: hostname(),
            os: std::env::consts::OS.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            interfaces: self.args.interfaces.clone(),
            running_captures: self.running.keys().copied().collect(),
        };
        let mut attempt = 0;
        let started = tokio::time::Instant::now();
        let startup_retry = Duration::from_secs(self.args.startup_retry_seconds);
        let mut credential_refused = false;
        loop {
            let bearer = match (&self.credential, self.client.bearer()) {
                (_, None) => Bearer::None,
                (Some(_), Some(_)) => Bearer::Credential,
                (None, Some(_)) => Bearer::Token { credential_refused },
            };
            match self.client.register(&req).await {
                Ok(r) => {
                    tracing::info!(agent_id = %r.agent_id, "registered");
                    if let (Some(c), Some(e)) = (r.credential, r.credential_expires_on) {
                        self.keep_credential(c, e);
                    }
                    self.registered_once = true;
                    return Ok(Some(r.agent_id));
                }
                // The stored credential no longer works (revoked, expired): enroll again if a
                // token was given.
                Err(ClientError::Server { status: 401, .. })
                    if self.credential.is_some() && self.enrollment_token.is_some() =>
                {
                    tracing::warn!("the agent credential was refused; enrolling again");
                    self.credential = None;
                    credential_refused = true;
                    self.client.set_bearer(self.enrollment_token.clone());
                }
                Err(e) => {
                    match diagnose::registration(&e, &self.args, bearer) {
                        Verdict::Fatal(message) => return Err(message),
                        Verdict::Startup(message)
                            if !self.registered_once && started.elapsed() >= startup_retry =>
                        {
                            return Err(format!(
                                "{message} (gave up after retrying for {} s: --startup-retry-seconds)",
                                startup_retry.as_secs()
                            ));
                        }
                        Verdict::Startup(message) | Verdict::Transient(message) => {
                            tracing::warn!(error = %message, "registration failed; retrying");
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = shutdown.changed() => return Ok(None),
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Runs until `shutdown` fires, or until an error that retrying cannot fix (its message is
    /// returned); then stops every capture and reports.
    pub async fn run(
        mut self,
        agent_id: tokio::sync::watch::Sender<Uuid>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        report_every: Duration,
    ) -> Result<(), String> {
        let mut id = match self.register(&mut shutdown).await {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(()),
            Err(fatal) => return Err(fatal),
        };
        let mut fatal = None;
        let _ = agent_id.send(id);
        let mut since = None;
        let mut attempt = 0;
        let mut finished = tokio::time::interval(Duration::from_millis(100));
        let mut progress = tokio::time::interval(report_every);
        let mut rotation = tokio::time::interval(Duration::from_secs(5));
        // The long poll stays in flight while the ticks below run: it is only replaced once it
        // answered.
        let next_poll = |client: AgentClient, id: Uuid, since: Option<i64>, delay: Duration| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                client.poll(id, since, Duration::from_secs(25)).await
            })
        };
        let mut poll = next_poll(self.client.clone(), id, since, Duration::ZERO);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                r = &mut poll => {
                    let mut delay = Duration::ZERO;
                    match r {
                        Ok(a) => {
                            attempt = 0;
                            since = Some(a.generation);
                            self.reconcile(&a.captures);
                            self.send_files(&a.transfers);
                            self.resume_uploads(&a.uploads);
                        }
                        Err(ClientError::Server { status: 401 | 404, .. }) => {
                            let new_id = match self.register(&mut shutdown).await {
                                Ok(Some(new_id)) => new_id,
                                Ok(None) => break,
                                Err(e) => {
                                    fatal = Some(e);
                                    break;
                                }
                            };
                            id = new_id;
                            let _ = agent_id.send(id);
                            since = None;
                        }
                        Err(e) => {
                            match diagnose::transport(&e, &self.args) {
                                Verdict::Fatal(m) => {
                                    tracing::error!(error = %m, "poll failed; retrying");
                                }
                                Verdict::Startup(m) | Verdict::Transient(m) => {
                                    tracing::warn!(error = %m, "poll failed; retrying");
                                }
                            }
                            delay = backoff(attempt);
                            attempt += 1;
                        }
                    }
                    poll = next_poll(self.client.clone(), id, since, delay);
                }
                _ = finished.tick() => self.collect_finished(),
                _ = rotation.tick() => self.rotate_if_due(id).await,
                _ = progress.tick() => {
                    for r in self.progress() {
                        let _ = self.outbox.send(r);
                    }
                }
            }
        }
        if let Some(message) = &fatal {
            tracing::error!(error = %message, "cannot go on; stopping");
        }
        self.shutdown().await;
        fatal.map_or(Ok(()), Err)
    }

    fn reconcile(&mut self, assignments: &[CaptureAssignment]) {
        self.collect_finished();
        let wanted: HashSet<Uuid> = assignments
            .iter()
            .filter(|a| a.desired == DesiredState::Running)
            .map(|a| a.capture_id)
            .collect();
        for (id, r) in &self.running {
            if !wanted.contains(id) {
                tracing::info!(capture = %id, "stopping");
                r.session.stop(false);
            }
        }
        for a in assignments {
            if a.desired == DesiredState::Running && self.seen.insert(a.capture_id) {
                self.start(a);
            }
            // Keep the newest upload SAS for when the capture stops.
            if let (Some(r), Some(t)) = (self.running.get_mut(&a.capture_id), &a.upload) {
                r.upload = Some(t.clone());
            }
        }
    }

    fn start(&mut self, a: &CaptureAssignment) {
        let failed = |code, message: String| CaptureReport::Failed {
            code,
            message,
            counters: CaptureCounters::default(),
        };
        let continuous = a.continuous.is_some();
        let prepared = filter::compile(&a.filters)
            .map_err(|e| {
                failed(
                    CaptureErrorCode::CaptureFailed,
                    format!("the filter cannot be compiled: {e}"),
                )
            })
            .and_then(|expr| {
                // Storage only: spool files, each removed once its upload is confirmed.
                let files = paths::CaptureFiles::new(
                    &self.args.captures_root,
                    a.file_path.as_deref(),
                    a.capture_id,
                    continuous,
                )
                .map_err(|e| failed(CaptureErrorCode::LocalFileFailed, e))?;
                // The first file is checked before anything is captured.
                files
                    .resolve(1)
                    .map_err(|e| failed(CaptureErrorCode::LocalFileFailed, e))?;
                let spec = Spec {
                    device: self.args.device(),
                    filter: expr,
                    snaplen: a.bytes_to_capture_per_packet,
                    total_bytes: a.total_bytes_per_session,
                    time_limit: Duration::from_secs(u64::from(a.time_limit_in_seconds)),
                    files: a.continuous,
                    buffer_size: self.args.buffer_size,
                };
                Ok((spec, files))
            });
        let (spec, files) = match prepared {
            Ok(p) => p,
            Err(report) => {
                let _ = self.outbox.send((a.capture_id, report));
                return;
            }
        };
        tracing::info!(capture = %a.capture_id, file = %files.base().display(), filter = %spec.filter, continuous, "starting");
        let namer_files = files.clone();
        let namer: crate::rotation::Namer = Box::new(move |i| namer_files.resolve(i));
        match Session::start(spec, namer) {
            Ok(session) => {
                let real_base = if continuous {
                    files.base()
                } else {
                    self.files_base_single(&files)
                };
                self.files.insert(a.capture_id, &real_base, continuous);
                let running = Running {
                    session,
                    files,
                    continuous,
                    keep_local: a.file_path.is_some(),
                    storage: a.storage_path.is_some(),
                    upload: a.upload.clone(),
                };
                let _ = self.outbox.send((
                    a.capture_id,
                    CaptureReport::Running {
                        start_time: running.session.started,
                        counters: Self::counters(&running),
                    },
                ));
                self.running.insert(a.capture_id, running);
            }
            Err(Outcome::Failed(code, message)) => {
                tracing::warn!(capture = %a.capture_id, %message, "capture failed to start");
                let _ = self.outbox.send((a.capture_id, failed(code, message)));
            }
            Err(Outcome::Stopped(_)) => {}
        }
    }

    /// The real path of a single-file capture (its folders exist once the capture started).
    fn files_base_single(&self, files: &paths::CaptureFiles) -> std::path::PathBuf {
        let base = files.base();
        std::fs::canonicalize(&base).unwrap_or(base)
    }

    fn counters(r: &Running) -> CaptureCounters {
        let c = &r.session.counters;
        let file_set = if r.continuous {
            r.session
                .files
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default()
        } else {
            vec![]
        };
        // A continuous capture's files are in `file_set` (the server names them).
        let files = if r.continuous {
            vec![]
        } else {
            vec![r.reported_name()]
        };
        CaptureCounters {
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            kernel_drops: c.kernel_drops.load(Ordering::Relaxed),
            files,
            file_set,
        }
    }

    /// Uploads the files of continuous captures as they are finished, and reports captures that
    /// ended by themselves (limits, errors).
    fn collect_finished(&mut self) {
        // Outcomes first: a capture's last file is finished before its outcome is sent, so the
        // files drained below include it.
        let done: Vec<(Uuid, Outcome)> = self
            .running
            .iter_mut()
            .filter_map(|(id, r)| r.session.done.try_recv().ok().map(|o| (*id, o)))
            .collect();
        let mut jobs = vec![];
        for (id, r) in &self.running {
            for f in r.session.finished.try_iter() {
                if r.continuous && r.storage {
                    jobs.push(upload::Upload {
                        capture_id: *id,
                        file_index: Some(f.index),
                        file: f.path,
                        keep_local: r.keep_local,
                        target: None,
                    });
                }
            }
        }
        for (id, outcome) in done {
            if let Some(r) = self.running.remove(&id) {
                self.send_final(id, &r, outcome);
                if r.storage && !r.continuous {
                    jobs.push(upload::Upload {
                        capture_id: id,
                        file_index: None,
                        file: self.files_base_single(&r.files),
                        keep_local: r.keep_local,
                        target: r.upload.clone(),
                    });
                }
            }
        }
        for job in jobs {
            self.spawn_upload(job);
        }
    }

    /// Uploads of stopped captures that this process did not start (it restarted since).
    fn resume_uploads(&mut self, pending: &[PendingUpload]) {
        for p in pending {
            if self.running.contains_key(&p.capture_id) {
                continue;
            }
            let record = self.files.get(p.capture_id);
            match record {
                Some((base, true)) if p.continuous => {
                    // Every numbered file still here; a file uploaded and kept ("both") is
                    // uploaded again, which the server checks like any other.
                    for (index, file) in paths::numbered_on_disk(&base) {
                        if self.uploads_started.contains(&(p.capture_id, Some(index))) {
                            continue;
                        }
                        tracing::info!(capture = %p.capture_id, file = %file.display(), "resuming an upload");
                        self.spawn_upload(upload::Upload {
                            capture_id: p.capture_id,
                            file_index: Some(index),
                            file,
                            keep_local: p.keep_local,
                            target: None,
                        });
                    }
                    self.uploads_started.insert((p.capture_id, None));
                }
                Some((file, false)) if !p.continuous => {
                    if self.uploads_started.contains(&(p.capture_id, None)) {
                        continue;
                    }
                    tracing::info!(capture = %p.capture_id, file = %file.display(), "resuming an upload");
                    self.spawn_upload(upload::Upload {
                        capture_id: p.capture_id,
                        file_index: None,
                        file,
                        keep_local: p.keep_local,
                        target: None,
                    });
                }
                _ => {
                    if !self.uploads_started.insert((p.capture_id, None)) {
                        continue;
                    }
                    tokio::spawn(upload::give_up(
                        self.client.clone(),
                        self.agent_id.clone(),
                        p.capture_id,
                        "this agent has no file for the capture (it did not run it, or lost its record).".into(),
                    ));
                }
            }
        }
    }

    fn spawn_upload(&mut self, job: upload::Upload) {
        if self.shutting_down {
            tracing::warn!(capture = %job.capture_id, file = %job.file.display(), "shutting down: not uploaded, file kept");
            return;
        }
        self.uploads_started
            .insert((job.capture_id, job.file_index));
        tokio::spawn(upload::run(
            self.client.clone(),
            self.agent_id.clone(),
            self.upload_settings.clone(),
            job,
        ));
    }

    /// Sends the files callers asked for, each once.
    fn send_files(&mut self, transfers: &[TransferRequest]) {
        for t in transfers {
            if self.transfers_seen.insert(t.transfer_id) {
                tokio::spawn(files::send(
                    self.client.clone(),
                    self.agent_id.clone(),
                    t.clone(),
                    self.files.get(t.capture_id),
                    self.args.captures_root.clone(),
                ));
            }
        }
    }

    fn send_final(&self, id: Uuid, r: &Running, outcome: Outcome) {
        let counters = Self::counters(r);
        tracing::info!(capture = %id, ?outcome, packets = counters.packets, "capture ended");
        let report = match outcome {
            Outcome::Stopped(stop_reason) => CaptureReport::Stopped {
                stop_reason,
                counters,
            },
            Outcome::Failed(code, message) => CaptureReport::Failed {
                code,
                message,
                counters,
            },
        };
        let _ = self.outbox.send((id, report));
    }

    /// Progress reports of every running capture.
    pub fn progress(&self) -> Vec<(Uuid, CaptureReport)> {
        self.running
            .iter()
            .map(|(id, r)| {
                (
                    *id,
                    CaptureReport::Running {
                        start_time: r.session.started,
                        counters: Self::counters(r),
                    },
                )
            })
            .collect()
    }

    async fn shutdown(mut self) {
        self.shutting_down = true;
        tracing::info!(captures = self.running.len(), "shutting down");
        for r in self.running.values() {
            r.session.stop(true);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        for (id, mut r) in std::mem::take(&mut self.running) {
            let outcome = tokio::time::timeout_at(deadline, &mut r.session.done)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Outcome::Stopped(agent_protocol::StopReason::AgentStopped));
            self.send_final(id, &r, outcome);
        }
    }
}

/// Delivers reports in order, retrying each with backoff; the final report of a capture is never
/// dropped while the agent runs. Returns when the outbox is closed and empty.
pub async fn deliver(
    client: AgentClient,
    agent_id: tokio::sync::watch::Receiver<Uuid>,
    mut rx: mpsc::UnboundedReceiver<(Uuid, CaptureReport)>,
) {
    while let Some((capture, report)) = rx.recv().await {
        let mut attempt = 0;
        loop {
            let id = *agent_id.borrow();
            match client.report(id, capture, &report).await {
                Ok(()) => break,
                // The capture is gone (deleted) or no longer ours: nothing to tell.
                Err(ClientError::Server {
                    status: 404, code, ..
                }) if code == "CaptureNotAssigned" => break,
                Err(e) => {
                    let is_final = !matches!(report, CaptureReport::Running { .. });
                    if !is_final && attempt >= 3 {
                        break;
                    }
                    tracing::warn!(error = %e, %capture, "report failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `capture-agent run`.
pub async fn run(args: RunArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.captures_root)
        .map_err(|e| format!("captures root {}: {e}", args.captures_root.display()))?;
    let _ = std::fs::create_dir_all(&args.state_dir);
    let client = AgentClient::new(&args.server, http_client(&args)?)
        .map_err(|e| format!("--server: {e}"))?;
    // What the agent registers with is known before any request.
    let stored = credential::CredentialFile::new(&args.state_dir)
        .load(&args.machine_id)
        .is_some();
    let enrollment_token = match args.enrollment_token() {
        Ok(t) => t,
        Err(e) if stored => {
            tracing::warn!(error = %e, "using the stored credential");
            None
        }
        Err(e) => return Err(e),
    };
    if enrollment_token.is_none() && !stored {
        tracing::warn!(
            state_dir = %args.state_dir.display(),
            "no enrollment token (--enrollment-token, --enrollment-token-file) and no stored credential: registering without any, which only a server with --auth-disabled accepts"
        );
    }
    let (outbox, rx) = mpsc::unbounded_channel();
    let (id_tx, id_rx) = tokio::sync::watch::channel(Uuid::nil());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delivery = tokio::spawn(deliver(client.clone(), id_rx.clone(), rx));
    let report_every = Duration::from_secs_f64(args.report_seconds.max(0.1));
    let agent = Agent::new(args, client, outbox, id_rx.clone(), enrollment_token);
    let mut main = tokio::spawn(agent.run(id_tx, stop_rx, report_every));
    let result = tokio::select! {
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            // Captures are stopped and flushed within the deadline; reports get as long again.
            tokio::time::timeout(SHUTDOWN_DEADLINE + Duration::from_secs(1), &mut main)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Ok(()))
        }
        // The agent ended by itself: an error that retrying cannot fix.
        r = &mut main => r.unwrap_or_else(|e| Err(format!("the agent failed: {e}"))),
    };
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, delivery).await;
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
