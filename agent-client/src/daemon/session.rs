//! One capture: a thread that reads packets with libpcap and writes them to a pcap file,
//! enforcing the limits in-process.
//!
//! Limits, exactly:
//! - `bytesToCapturePerPacket` is the snap length (0 = whole packets, up to 262144 bytes);
//! - `totalBytesPerSession` counts the captured packet data written (each record's captured
//!   length), not the 24-byte file header nor the 16-byte record headers. The capture stops
//!   *before* a packet that would make the total exceed the limit (`TotalBytesExceeded`); that
//!   packet is not written;
//! - `timeLimitInSeconds` stops the capture at its deadline (`TimeExceeded`), checked at least
//!   every 50 ms.
//!
//! The file is flushed every second and on stop, so readers see whole records.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use chrono::{DateTime, Utc};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::oneshot;

use crate::protocol::{CaptureErrorCode, StopReason};

/// Largest snap length libpcap accepts.
pub const MAX_SNAPLEN: u64 = 262_144;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const POLL_TIMEOUT_MS: i32 = 50;

#[derive(Debug, Clone)]
pub struct Spec {
    pub device: String,
    pub filter: String,
    pub snaplen: u64,
    pub total_bytes: u64,
    pub time_limit: Duration,
    pub file: PathBuf,
    pub buffer_size: i32,
}

/// Live counters, read by the reporter.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub kernel_drops: AtomicU64,
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stopped(StopReason),
    Failed(CaptureErrorCode, String),
}

const RUN: u8 = 0;
const STOP_USER: u8 = 1;
const STOP_AGENT: u8 = 2;

/// A running capture, from the agent's side.
pub struct Session {
    stop: Arc<AtomicU8>,
    pub counters: Arc<Counters>,
    pub started: DateTime<Utc>,
    pub done: oneshot::Receiver<Outcome>,
}

impl Session {
    /// Opens the capture and starts its thread. Errors before the first packet (device, filter,
    /// file) come back here, so nothing is ever captured with a wrong filter.
    pub fn start(spec: Spec) -> Result<Session, Outcome> {
        let snaplen = if spec.snaplen == 0 {
            MAX_SNAPLEN
        } else {
            spec.snaplen.min(MAX_SNAPLEN)
        };
        // libpcap's own truncation on Linux can cut a few bytes short of a small snap length (ring
        // frame alignment): read a little more and truncate exactly here.
        let open_snaplen = (snaplen + 256).min(MAX_SNAPLEN) as i32;
        let fail = |code, what: &str, e: pcap::Error| Outcome::Failed(code, format!("{what}: {e}"));
        let mut cap = pcap::Capture::from_device(spec.device.as_str())
            .and_then(|c| {
                c.snaplen(open_snaplen)
                    .promisc(false)
                    .immediate_mode(true)
                    .buffer_size(spec.buffer_size)
                    .timeout(POLL_TIMEOUT_MS)
                    .open()
            })
            .map_err(|e| {
                fail(
                    CaptureErrorCode::CaptureFailed,
                    &format!("cannot open {}", spec.device),
                    e,
                )
            })?;
        cap.filter(&spec.filter, true).map_err(|e| {
            fail(
                CaptureErrorCode::CaptureFailed,
                &format!("cannot set the filter '{}'", spec.filter),
                e,
            )
        })?;
        // Non-blocking: the thread waits in poll(2) itself, so that it wakes for a stop, the
        // deadline and the flush interval even when no packet comes.
        let cap = cap.setnonblock().map_err(|e| {
            fail(
                CaptureErrorCode::CaptureFailed,
                "cannot set non-blocking mode",
                e,
            )
        })?;
        let mut save = cap.savefile(&spec.file).map_err(|e| {
            fail(
                CaptureErrorCode::LocalFileFailed,
                &format!("cannot create {}", spec.file.display()),
                e,
            )
        })?;
        set_file_snaplen(&mut save, &spec.file, snaplen as u32).map_err(|e| {
            Outcome::Failed(
                CaptureErrorCode::LocalFileFailed,
                format!("cannot write {}: {e}", spec.file.display()),
            )
        })?;
        let stop = Arc::new(AtomicU8::new(RUN));
        let counters = Arc::new(Counters::default());
        let (tx, done) = oneshot::channel();
        let started = Utc::now();
        let (stop2, counters2) = (stop.clone(), counters.clone());
        let spec = Spec { snaplen, ..spec };
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let outcome = run(cap, save, &spec, &stop2, &counters2);
                let _ = tx.send(outcome);
            })
            .map_err(|e| {
                Outcome::Failed(
                    CaptureErrorCode::InternalError,
                    format!("cannot start a thread: {e}"),
                )
            })?;
        Ok(Session {
            stop,
            counters,
            started,
            done,
        })
    }

    /// Asks the capture to stop (by the user, or because the agent shuts down).
    pub fn stop(&self, by_agent: bool) {
        let _ = self.stop.compare_exchange(
            RUN,
            if by_agent { STOP_AGENT } else { STOP_USER },
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

fn run(
    mut cap: pcap::Capture<pcap::Active>,
    mut save: pcap::Savefile,
    spec: &Spec,
    stop: &AtomicU8,
    counters: &Counters,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + spec.time_limit;
    let mut last_flush = started;
    let mut bytes: u64 = 0;
    let mut packets: u64 = 0;
    let outcome = loop {
        match stop.load(Ordering::SeqCst) {
            STOP_USER => break Outcome::Stopped(StopReason::StoppedByUser),
            STOP_AGENT => break Outcome::Stopped(StopReason::AgentStopped),
            _ => {}
        }
        if Instant::now() >= deadline {
            break Outcome::Stopped(StopReason::TimeExceeded);
        }
        match cap.next_packet() {
            Ok(p) => {
                let caplen = p.header.caplen.min(spec.snaplen as u32);
                let len = caplen as u64;
                if bytes + len > spec.total_bytes {
                    break Outcome::Stopped(StopReason::TotalBytesExceeded);
                }
                let header = pcap::PacketHeader {
                    caplen,
                    ..*p.header
                };
                save.write(&pcap::Packet::new(&header, &p.data[..caplen as usize]));
                bytes += len;
                packets += 1;
                counters.packets.store(packets, Ordering::Relaxed);
                counters.bytes.store(bytes, Ordering::Relaxed);
            }
            // Nothing to read: wait for a packet, at most until the next check.
            Err(pcap::Error::TimeoutExpired) => {
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(POLL_TIMEOUT_MS as u64));
                let mut fds = [PollFd::new(cap.as_fd(), PollFlags::POLLIN)];
                let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                if let Err(e) = poll(&mut fds, PollTimeout::from(ms))
                    && e != nix::errno::Errno::EINTR
                {
                    break Outcome::Failed(CaptureErrorCode::CaptureFailed, format!("poll: {e}"));
                }
            }
            Err(e) => {
                break Outcome::Failed(
                    CaptureErrorCode::CaptureFailed,
                    format!("capture error: {e}"),
                );
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            if let Err(message) = flush_and_check(&mut save, &spec.file, packets, bytes) {
                break Outcome::Failed(CaptureErrorCode::LocalFileFailed, message);
            }
            if let Ok(stats) = cap.stats() {
                counters
                    .kernel_drops
                    .store(stats.dropped as u64, Ordering::Relaxed);
            }
        }
    };
    if let Ok(stats) = cap.stats() {
        counters
            .kernel_drops
            .store(stats.dropped as u64, Ordering::Relaxed);
    }
    match flush_and_check(&mut save, &spec.file, packets, bytes) {
        Ok(()) => outcome,
        Err(message) => Outcome::Failed(CaptureErrorCode::LocalFileFailed, message),
    }
}

/// Flushes, then checks that the file holds everything written: stdio can lose a failed write's
/// error (disk full), the file's size cannot.
fn flush_and_check(
    save: &mut pcap::Savefile,
    file: &std::path::Path,
    packets: u64,
    bytes: u64,
) -> Result<(), String> {
    save.flush()
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let expected = 24 + 16 * packets + bytes;
    let len = std::fs::metadata(file)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if len < expected {
        return Err(format!(
            "could write only {len} of {expected} bytes to {} (disk full or I/O error)",
            file.display()
        ));
    }
    Ok(())
}

/// Writes the capture's snap length into the file header (offset 16, the byte order of the
/// header libpcap wrote: this host's).
fn set_file_snaplen(
    save: &mut pcap::Savefile,
    file: &std::path::Path,
    snaplen: u32,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    save.flush().map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
    f.seek(SeekFrom::Start(16))?;
    f.write_all(&snaplen.to_ne_bytes())
}
