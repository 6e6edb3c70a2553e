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
//! - a continuous capture writes a sequence of files (`rotation`): `FileCountReached` when the
//!   last file of a capture without a ring is full.
//!
//! The file is flushed every second and on stop, so readers see whole records.
//!
//! The kernel hands packets over in blocks (TPACKET_V3, not immediate mode): a block is passed on
//! when full or after 50 ms, which costs one wake-up per block instead of one per packet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use chrono::{DateTime, Utc};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::oneshot;

use agent_protocol::{CaptureErrorCode, FileSettings, StopReason};

use crate::rotation::{FileSequence, FileView, Finished, Namer, Place};

/// Largest snap length libpcap accepts.
pub const MAX_SNAPLEN: u64 = 262_144;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const POLL_TIMEOUT_MS: i32 = 50;
/// How long a stopping capture reads on: a little more than the kernel takes to hand over a
/// partly filled block.
const DRAIN: Duration = Duration::from_millis(2 * POLL_TIMEOUT_MS as u64);

#[derive(Debug, Clone)]
pub struct Spec {
    pub device: String,
    pub filter: String,
    pub snaplen: u64,
    pub total_bytes: u64,
    pub time_limit: Duration,
    /// The files of a continuous capture; `None`: one file.
    pub files: Option<FileSettings>,
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
    /// The kept files (what a continuous capture reports).
    pub files: FileView,
    /// Files as they are finished, to upload.
    pub finished: std::sync::mpsc::Receiver<Finished>,
}

impl Session {
    /// Opens the capture and starts its thread. Errors before the first packet (device, filter,
    /// file) come back here, so nothing is ever captured with a wrong filter.
    /// `namer` gives the path of each file (see `rotation`).
    pub fn start(spec: Spec, namer: Namer) -> Result<Session, Outcome> {
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
                    .immediate_mode(false)
                    .buffer_size(spec.buffer_size)
                    .timeout(POLL_TIMEOUT_MS)
                    .open()
            })
            .map_err(|e| {
                let mut failed = fail(
                    CaptureErrorCode::CaptureFailed,
                    &format!("cannot open {}", spec.device),
                    e,
                );
                // The usual cause on a new machine: say what fixes it.
                if let Outcome::Failed(_, m) = &mut failed
                    && m.contains("Operation not permitted")
                {
                    m.push_str(" (the agent needs the capabilities CAP_NET_RAW and CAP_NET_ADMIN: run it as the capture-agent service of the Debian package, or as root)");
                }
                failed
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
        let (finished_tx, finished) = std::sync::mpsc::channel();
        let save = FileSequence::create(
            spec.files,
            namer,
            cap.get_datalink().0 as u32,
            snaplen as u32,
            finished_tx,
        )
        .map_err(|e| Outcome::Failed(CaptureErrorCode::LocalFileFailed, e))?;
        let files = save.view();
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
            files,
            finished,
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
    mut save: FileSequence,
    spec: &Spec,
    stop: &AtomicU8,
    counters: &Counters,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + spec.time_limit;
    let mut last_flush = started;
    let mut bytes: u64 = 0;
    let mut packets: u64 = 0;
    // Packets are timestamped by the kernel: those stamped at or after the deadline are not
    // written, however late the batch they came in is handled.
    let deadline_wall = std::time::SystemTime::now() + spec.time_limit;
    // Once asked to stop (or at the deadline), the capture still writes what the kernel
    // captured before then: packets wait in a ring block until it is handed over (at most
    // POLL_TIMEOUT_MS), so it reads on for DRAIN, skipping packets stamped after the cutoff.
    let mut draining: Option<(Outcome, Instant, std::time::SystemTime)> = None;
    let outcome = loop {
        if draining.is_none() {
            let reason = match stop.load(Ordering::SeqCst) {
                STOP_USER => Some(StopReason::StoppedByUser),
                STOP_AGENT => Some(StopReason::AgentStopped),
                _ if Instant::now() >= deadline => Some(StopReason::TimeExceeded),
                _ => None,
            };
            if let Some(reason) = reason {
                let cutoff = std::time::SystemTime::now().min(deadline_wall);
                draining = Some((Outcome::Stopped(reason), Instant::now() + DRAIN, cutoff));
            }
        }
        let cutoff = draining.as_ref().map_or(deadline_wall, |d| d.2);
        // Every packet the kernel has ready, in one call.
        let mut ended: Option<Outcome> = None;
        let mut write_error: Option<String> = None;
        let read = cap.dispatch(None, |p| {
            if ended.is_some() || write_error.is_some() {
                return;
            }
            let ts = std::time::UNIX_EPOCH
                + Duration::from_secs(p.header.ts.tv_sec.max(0) as u64)
                + Duration::from_micros(p.header.ts.tv_usec.max(0) as u64);
            if ts >= cutoff {
                if draining.is_none() {
                    ended = Some(Outcome::Stopped(StopReason::TimeExceeded));
                }
                return;
            }
            let caplen = p.header.caplen.min(spec.snaplen as u32);
            if bytes + caplen as u64 > spec.total_bytes {
                ended = Some(Outcome::Stopped(StopReason::TotalBytesExceeded));
                return;
            }
            match save.place(u64::from(caplen)) {
                Place::Current => {}
                Place::NextFile => {
                    if let Err(e) = save.next_file() {
                        write_error = Some(e);
                        return;
                    }
                }
                Place::Stop => {
                    ended = Some(Outcome::Stopped(StopReason::FileCountReached));
                    return;
                }
            }
            if let Err(e) = save.write(p.header, &p.data[..caplen as usize]) {
                write_error = Some(format!(
                    "cannot write {}: {e}",
                    save.current_path().display()
                ));
                return;
            }
            bytes += caplen as u64;
            packets += 1;
        });
        if let Some(e) = write_error {
            break Outcome::Failed(CaptureErrorCode::LocalFileFailed, e);
        }
        counters.packets.store(packets, Ordering::Relaxed);
        counters.bytes.store(bytes, Ordering::Relaxed);
        if let Some(outcome) = ended {
            break outcome;
        }
        match read {
            Ok(0) => {
                if let Some((outcome, until, _)) = &draining
                    && Instant::now() >= *until
                {
                    break outcome.clone();
                }
                // Nothing ready: wait for the next block, at most until the next check.
                let until = draining.as_ref().map_or(deadline, |d| d.1);
                let wait = until
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
            Ok(_) => {}
            Err(e) => {
                break Outcome::Failed(
                    CaptureErrorCode::CaptureFailed,
                    format!("capture error: {e}"),
                );
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            if let Err(e) = save.flush() {
                break Outcome::Failed(
                    CaptureErrorCode::LocalFileFailed,
                    format!("cannot write {}: {e}", save.current_path().display()),
                );
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
    let path = save.current_path();
    match save.finish() {
        Ok(()) => outcome,
        Err(e) => Outcome::Failed(
            CaptureErrorCode::LocalFileFailed,
            format!("cannot write {}: {e}", path.display()),
        ),
    }
}
