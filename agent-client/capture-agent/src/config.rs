//! Command line of `capture-agent`; every flag also from a `CAPTURE_AGENT_*` variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "capture-agent",
    version,
    about = "Packet capture agent: runs the captures the server assigns to this machine"
)]
pub struct Cli {
    /// Log format on standard error: `text` (coloured only on a terminal, and never with
    /// NO_COLOR set) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAPTURE_AGENT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register with the server and run the captures it assigns, until SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The capture API server, e.g. https://capture.example:8480
    #[arg(long, env = "CAPTURE_AGENT_SERVER")]
    pub server: String,
    /// ARM resource id of this machine (a VM, or a VM scale set instance).
    #[arg(long, env = "CAPTURE_AGENT_MACHINE_ID")]
    pub machine_id: String,
    /// Azure region of this machine.
    #[arg(long, env = "CAPTURE_AGENT_LOCATION", default_value = "")]
    pub location: String,
    /// Interface to capture on (repeatable). One interface: that one; none or several: `any`.
    #[arg(
        long = "interface",
        env = "CAPTURE_AGENT_INTERFACE",
        value_delimiter = ','
    )]
    pub interfaces: Vec<String>,
    /// The folder that capture paths under ARM's `/var/captures` are written to. Every file the
    /// agent writes resolves inside it.
    #[arg(
        long,
        env = "CAPTURE_AGENT_CAPTURES_ROOT",
        default_value = "/var/captures"
    )]
    pub captures_root: PathBuf,
    /// Enrollment token (`capture-api agent-tokens create`) for the first registration; the
    /// credential the server answers with is kept in --state-dir and used from then on.
    #[arg(long, env = "CAPTURE_AGENT_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// A file holding the enrollment token (instead of --enrollment-token).
    #[arg(long, env = "CAPTURE_AGENT_ENROLLMENT_TOKEN_FILE")]
    pub enrollment_token_file: Option<PathBuf>,
    /// PEM certificate to trust for the server (a self-signed server).
    #[arg(long, env = "CAPTURE_AGENT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Kernel capture ring per capture, in bytes (the agent's memory grows by this much per
    /// running capture).
    #[arg(long, env = "CAPTURE_AGENT_BUFFER_SIZE", default_value_t = 32 * 1024 * 1024)]
    pub buffer_size: i32,
    /// Folder for the agent's own state.
    #[arg(
        long,
        env = "CAPTURE_AGENT_STATE_DIR",
        default_value = "/var/lib/capture-agent"
    )]
    pub state_dir: PathBuf,
    /// How long the agent keeps trying to upload a finished capture to its storage account
    /// before the capture is reported StorageFailed (the file is kept either way).
    #[arg(
        long,
        env = "CAPTURE_AGENT_UPLOAD_RETRY_SECONDS",
        default_value_t = 900
    )]
    pub upload_retry_seconds: u64,
    /// Block size of uploads.
    #[arg(long, env = "CAPTURE_AGENT_UPLOAD_BLOCK_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub upload_block_size: usize,
    /// Blocks of one upload in flight at once; an upload's memory is about this many blocks
    /// (each block is read once and handed to its request), whatever the file's size.
    #[arg(long, env = "CAPTURE_AGENT_UPLOAD_CONCURRENCY", default_value_t = 4)]
    pub upload_concurrency: usize,
    /// How long the first registration retries errors a server being deployed may cause
    /// (connection refused, DNS failure, 404 on the agent API) before the agent exits with the
    /// error. Once registered, the agent retries those for as long as it runs.
    #[arg(
        long,
        env = "CAPTURE_AGENT_STARTUP_RETRY_SECONDS",
        default_value_t = 60
    )]
    pub startup_retry_seconds: u64,
    /// Seconds between counter reports of a running capture.
    #[arg(long, env = "CAPTURE_AGENT_REPORT_SECONDS", default_value_t = 2.0)]
    pub report_seconds: f64,
}

impl RunArgs {
    /// The enrollment token, from the flag or the file.
    pub fn enrollment_token(&self) -> Result<Option<String>, String> {
        let (token, from) = if let Some(t) = &self.enrollment_token {
            (t.trim().to_string(), "--enrollment-token".to_string())
        } else if let Some(f) = &self.enrollment_token_file {
            let t = std::fs::read_to_string(f).map_err(|e| {
                format!(
                    "cannot read --enrollment-token-file {}: {e}. Give a readable file holding the enrollment token (`capture-api agent-tokens create`).",
                    f.display()
                )
            })?;
            (
                t.trim().to_string(),
                format!("--enrollment-token-file {}", f.display()),
            )
        } else {
            return Ok(None);
        };
        if token.is_empty() {
            return Err(format!(
                "{from} is empty: give the enrollment token that `capture-api agent-tokens create` printed."
            ));
        }
        Ok(Some(token))
    }

    /// The device libpcap opens.
    pub fn device(&self) -> String {
        match self.interfaces.as_slice() {
            [one] => one.clone(),
            _ => "any".to_string(),
        }
    }
}
