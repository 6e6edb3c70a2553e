//! Where each record of a capture goes: one file, or the files of a continuous capture.
//!
//! The rules, exactly (`FileSettings`):
//! - A file holds at most `fileSizeInBytes` bytes, its 24-byte header and 16-byte record headers
//!   included. A record that does not fit starts the next file; a record is never split.
//! - A record larger than a whole file (possible only below the server's minimum file size) is
//!   written alone into a file of its own: a file always holds at least one record.
//! - Ring (`continuousCapture: true`): once `fileCount` files exist, the oldest is deleted before
//!   the next one starts, so at most `fileCount` files are ever kept.
//! - No ring (`false`): the record that does not fit in file number `fileCount` ends the capture
//!   (`FileCountReached`); that record is not written.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use agent_protocol::{CaptureFile, FileSettings};
use chrono::{DateTime, Utc};

use crate::writer::{HEADER_BYTES, PcapWriter, RECORD_HEADER_BYTES};

/// What to do with the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Into the current file.
    Current,
    /// Into a new file (the ring deletes its oldest first).
    NextFile,
    /// Nowhere: the last file is full (`continuousCapture: false`).
    Stop,
}

/// The pure rotation decision: the current file's size and record count, and the settings.
#[derive(Debug, Clone)]
pub struct Rotation {
    settings: Option<FileSettings>,
    /// 1-based index of the file being written.
    pub index: u32,
    size: u64,
    records: u64,
}

impl Rotation {
    pub fn new(settings: Option<FileSettings>) -> Rotation {
        Rotation {
            settings,
            index: 1,
            size: HEADER_BYTES,
            records: 0,
        }
    }

    /// Where a record of `data_len` captured bytes goes.
    pub fn place(&self, data_len: u64) -> Place {
        let Some(s) = self.settings else {
            return Place::Current;
        };
        let fits = self.size + RECORD_HEADER_BYTES + data_len <= s.file_size_in_bytes;
        if fits || self.records == 0 {
            Place::Current
        } else if !s.ring && self.index >= s.file_count {
            Place::Stop
        } else {
            Place::NextFile
        }
    }

    /// A record was written to the current file.
    pub fn wrote(&mut self, data_len: u64) {
        self.size += RECORD_HEADER_BYTES + data_len;
        self.records += 1;
    }

    /// The next file started.
    pub fn next_file(&mut self) {
        self.index += 1;
        self.size = HEADER_BYTES;
        self.records = 0;
    }

    /// In a ring, the file to delete before file `index` starts.
    pub fn evicted_before(&self, index: u32) -> Option<u32> {
        let s = self.settings?;
        (s.ring && index > s.file_count).then(|| index - s.file_count)
    }
}

/// Names the files of a capture: the path of file `index` (1-based), created under the captures
/// root. A single-file capture only ever asks for index 1 and gets its own path.
pub type Namer = Box<dyn Fn(u32) -> Result<PathBuf, String> + Send>;

/// A file finished (full, or the capture ended): the agent uploads it if the capture has a
/// storage account.
#[derive(Debug, Clone)]
pub struct Finished {
    pub index: u32,
    pub path: PathBuf,
}

/// The kept files of a continuous capture, shared with the reporter.
pub type FileView = Arc<Mutex<Vec<CaptureFile>>>;

/// The file (or files) a capture writes, in order.
pub struct FileSequence {
    rotation: Rotation,
    namer: Namer,
    linktype: u32,
    snaplen: u32,
    out: PcapWriter,
    /// Kept files, oldest first; the last one is being written.
    kept: VecDeque<(CaptureFile, PathBuf)>,
    view: FileView,
    finished: std::sync::mpsc::Sender<Finished>,
}

impl FileSequence {
    /// Creates the first file.
    pub fn create(
        settings: Option<FileSettings>,
        namer: Namer,
        linktype: u32,
        snaplen: u32,
        finished: std::sync::mpsc::Sender<Finished>,
    ) -> Result<FileSequence, String> {
        let path = namer(1)?;
        let out = PcapWriter::create(&path, linktype, snaplen)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut kept = VecDeque::new();
        kept.push_back((new_file(1), path));
        let seq = FileSequence {
            rotation: Rotation::new(settings),
            namer,
            linktype,
            snaplen,
            out,
            kept,
            view: Arc::new(Mutex::new(Vec::new())),
            finished,
        };
        seq.publish();
        Ok(seq)
    }

    pub fn view(&self) -> FileView {
        self.view.clone()
    }

    /// Where a record of `data_len` bytes goes (see [`Rotation::place`]).
    pub fn place(&self, data_len: u64) -> Place {
        self.rotation.place(data_len)
    }

    /// The path of the file being written.
    pub fn current_path(&self) -> PathBuf {
        self.kept.back().map(|(_, p)| p.clone()).unwrap_or_default()
    }

    /// Writes one record to the current file.
    pub fn write(&mut self, h: &pcap::PacketHeader, data: &[u8]) -> std::io::Result<()> {
        self.out.write(h, data)?;
        self.rotation.wrote(data.len() as u64);
        let ts = packet_time(h);
        if let Some((f, _)) = self.kept.back_mut() {
            f.packets += 1;
            f.size += RECORD_HEADER_BYTES + data.len() as u64;
            f.first_packet_time.get_or_insert(ts);
            f.last_packet_time = Some(ts);
        }
        Ok(())
    }

    /// Finishes the current file and starts the next; in a ring, deletes the oldest first.
    pub fn next_file(&mut self) -> Result<(), String> {
        self.finish_current()
            .map_err(|e| format!("cannot write {}: {e}", self.current_path().display()))?;
        let index = self.rotation.index + 1;
        if let Some(old) = self.rotation.evicted_before(index) {
            while self.kept.front().is_some_and(|(f, _)| f.index <= old) {
                if let Some((f, path)) = self.kept.pop_front() {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        // Already uploaded and removed (storage only).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(format!(
                                "cannot delete {} (file {} leaving the ring): {e}",
                                path.display(),
                                f.index
                            ));
                        }
                    }
                }
            }
        }
        let path = (self.namer)(index)?;
        self.out = PcapWriter::create(&path, self.linktype, self.snaplen)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        self.rotation.next_file();
        self.kept.push_back((new_file(index), path));
        self.publish();
        Ok(())
    }

    /// Passes what was written so far on to the file (readers see whole records); the sizes
    /// published may be ahead of the file by the few chunks still being written.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.publish();
        Ok(())
    }

    /// The capture ended: the current file is complete.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.finish_current()
    }

    /// The current file is written whole (its writer thread ended) before it counts as
    /// finished.
    fn finish_current(&mut self) -> std::io::Result<()> {
        self.out.finish()?;
        if let Some((f, path)) = self.kept.back_mut() {
            f.complete = true;
            let _ = self.finished.send(Finished {
                index: f.index,
                path: path.clone(),
            });
        }
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        if let Ok(mut v) = self.view.lock() {
            *v = self.kept.iter().map(|(f, _)| f.clone()).collect();
        }
    }
}

fn new_file(index: u32) -> CaptureFile {
    CaptureFile {
        index,
        size: HEADER_BYTES,
        ..Default::default()
    }
}

fn packet_time(h: &pcap::PacketHeader) -> DateTime<Utc> {
    let t = UNIX_EPOCH
        + Duration::from_secs(h.ts.tv_sec.max(0) as u64)
        + Duration::from_micros(h.ts.tv_usec.max(0) as u64);
    DateTime::<Utc>::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ring: bool, file_count: u32, file_size_in_bytes: u64) -> Option<FileSettings> {
        Some(FileSettings {
            ring,
            file_count,
            file_size_in_bytes,
        })
    }

    /// Feeds records of the given data lengths; returns, per record, the file it went to (or 0
    /// for the record that stopped the capture) and the files deleted by then.
    fn run(s: Option<FileSettings>, lens: &[u64]) -> (Vec<u32>, Vec<u32>) {
        let mut r = Rotation::new(s);
        let (mut placed, mut deleted) = (vec![], vec![]);
        for &len in lens {
            match r.place(len) {
                Place::Current => {}
                Place::NextFile => {
                    deleted.extend(r.evicted_before(r.index + 1));
                    r.next_file();
                }
                Place::Stop => {
                    placed.push(0);
                    break;
                }
            }
            r.wrote(len);
            placed.push(r.index);
        }
        (placed, deleted)
    }

    #[test]
    fn a_record_that_exactly_fills_the_file_stays_in_it() {
        // 24 + (16 + 30) * 2 = 116 bytes: two records of 30 fill a 116-byte file exactly.
        let (placed, _) = run(settings(true, 10, 116), &[30, 30, 1]);
        assert_eq!(placed, vec![1, 1, 2]);
        // One byte less: the second record starts file 2.
        let (placed, _) = run(settings(true, 10, 115), &[30, 30]);
        assert_eq!(placed, vec![1, 2]);
    }

    #[test]
    fn a_record_larger_than_a_file_gets_a_file_of_its_own() {
        let (placed, _) = run(settings(true, 10, 100), &[10, 500, 10, 500, 500]);
        assert_eq!(placed, vec![1, 2, 3, 4, 5]);
        // Even as the very first record.
        let (placed, _) = run(settings(false, 2, 100), &[500, 500, 500]);
        assert_eq!(placed, vec![1, 2, 0]);
    }

    #[test]
    fn a_ring_keeps_the_newest_file_count_files() {
        // 24 + 16 + 60 = 100: one record per file.
        let (placed, deleted) = run(settings(true, 3, 100), &[60; 7]);
        assert_eq!(placed, vec![1, 2, 3, 4, 5, 6, 7]);
        // File 4 starts after file 1 is deleted, … file 7 after file 4.
        assert_eq!(deleted, vec![1, 2, 3, 4]);
    }

    #[test]
    fn file_count_one() {
        let (placed, deleted) = run(settings(true, 1, 100), &[60; 4]);
        assert_eq!(placed, vec![1, 2, 3, 4]);
        assert_eq!(deleted, vec![1, 2, 3]);
        let (placed, deleted) = run(settings(false, 1, 100), &[60; 4]);
        assert_eq!(placed, vec![1, 0]);
        assert!(deleted.is_empty());
    }

    #[test]
    fn without_a_ring_the_last_full_file_stops_the_capture() {
        let (placed, deleted) = run(settings(false, 3, 100), &[60; 5]);
        assert_eq!(placed, vec![1, 2, 3, 0]);
        assert!(deleted.is_empty());
    }

    #[test]
    fn a_single_file_capture_never_rotates() {
        let (placed, _) = run(None, &[262_144; 100]);
        assert!(placed.iter().all(|&i| i == 1));
    }

    #[test]
    fn files_on_disk_are_valid_pcaps_with_every_record_once() {
        let dir = std::env::temp_dir().join(format!("rotation-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.clone();
        let namer: Namer = Box::new(move |i| Ok(d.join(format!("c_{i:05}.cap"))));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut seq = FileSequence::create(settings(true, 3, 200), namer, 1, 65535, tx).unwrap();
        for n in 0u32..20 {
            let data = n.to_be_bytes().repeat(10); // 40 bytes: 56 per record, 3 per file
            let h = pcap::PacketHeader {
                ts: libc::timeval {
                    tv_sec: 1_700_000_000 + i64::from(n),
                    tv_usec: 0,
                },
                caplen: 40,
                len: 40,
            };
            if seq.place(40) == Place::NextFile {
                seq.next_file().unwrap();
            }
            seq.write(&h, &data).unwrap();
        }
        let view = seq.view();
        seq.finish().unwrap();
        let kept: Vec<u32> = view.lock().unwrap().iter().map(|f| f.index).collect();
        assert_eq!(kept, vec![5, 6, 7]);
        let finished: Vec<u32> = rx.try_iter().map(|f| f.index).collect();
        assert_eq!(finished, vec![1, 2, 3, 4, 5, 6, 7]);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["c_00005.cap", "c_00006.cap", "c_00007.cap"]);
        // Records 12..19 across the kept files, each once, in order.
        let mut seen = vec![];
        for name in &names {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert!(bytes.len() <= 200);
            assert_eq!(&bytes[0..4], &0xa1b2_c3d4u32.to_ne_bytes());
            let mut at = 24;
            while at < bytes.len() {
                let caplen = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap());
                let rec = &bytes[at + 16..at + 16 + caplen as usize];
                seen.push(u32::from_be_bytes(rec[0..4].try_into().unwrap()));
                at += 16 + caplen as usize;
            }
            assert_eq!(at, bytes.len());
        }
        assert_eq!(seen, (12..20).collect::<Vec<u32>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
