//! The pcap file format (classic pcap, microsecond timestamps, this host's byte order), written
//! by a thread of its own.

/// Bytes of a pcap file header.
pub const HEADER_BYTES: u64 = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 16;

/// Writes the pcap file format itself (classic pcap, microsecond timestamps, this host's byte
/// order), every write error reported.
///
/// The writes happen in a thread of their own. Under overload (issue 12) the capture thread is
/// short of CPU: it must hand each ring block back to the kernel before the ring fills, and the
/// write(2) calls of 1 MiB into the page cache, about half its CPU time, kept it from the ring. So it
/// only copies records into 1 MiB chunks and passes full chunks over a bounded queue; the writer
/// thread writes them and hands them back for reuse. A full queue makes the capture thread wait,
/// as a slow write did before, so the kernel ring still overflows (and counts the drops) rather
/// than memory growing. Each chunk holds whole records, so the file only ever ends on a record
/// boundary.
pub struct PcapWriter {
    /// The chunk being filled.
    chunk: Vec<u8>,
    /// Full chunks to the writer thread; `None` once finished.
    full: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Written chunks coming back for reuse.
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

const CHUNK: usize = 1024 * 1024;
/// Full chunks waiting for the writer thread at most: with the one being written, the one being
/// filled and one handed back, a capture holds at most 7 chunks.
const QUEUED_CHUNKS: usize = 4;

impl PcapWriter {
    /// Creates the file (never over an existing one), readable by its owner and group only.
    pub fn create(
        path: &std::path::Path,
        linktype: u32,
        snaplen: u32,
    ) -> std::io::Result<PcapWriter> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)?;
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&snaplen.to_ne_bytes());
        header.extend_from_slice(&linktype.to_ne_bytes());
        file.write_all(&header)?;
        let (full, to_write) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let (give_back, empty) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("capture-write".into())
            .spawn(move || {
                for mut chunk in to_write {
                    file.write_all(&chunk)?;
                    chunk.clear();
                    let _ = give_back.send(chunk);
                }
                Ok(())
            })?;
        Ok(PcapWriter {
            chunk: Vec::with_capacity(CHUNK),
            full: Some(full),
            empty,
            writer: Some(writer),
        })
    }

    /// One record: the packet's timestamp and original length, and `data` as captured.
    pub fn write(&mut self, h: &pcap::PacketHeader, data: &[u8]) -> std::io::Result<()> {
        if self.chunk.len() + 16 + data.len() > CHUNK {
            self.pass_on()?;
        }
        self.chunk
            .extend_from_slice(&(h.ts.tv_sec as u32).to_ne_bytes());
        self.chunk
            .extend_from_slice(&(h.ts.tv_usec as u32).to_ne_bytes());
        self.chunk
            .extend_from_slice(&(data.len() as u32).to_ne_bytes());
        self.chunk.extend_from_slice(&h.len.to_ne_bytes());
        self.chunk.extend_from_slice(data);
        Ok(())
    }

    /// Passes the records so far on to the writer thread (they reach the file shortly after,
    /// without waiting here for the write). Also returns the error of a write that failed since,
    /// even when no packet came.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if !self.chunk.is_empty() {
            return self.pass_on();
        }
        // The writer thread only ends early when a write failed.
        if self.writer.as_ref().is_some_and(|w| w.is_finished()) {
            self.full = None;
            return self.writer_result();
        }
        Ok(())
    }

    /// Writes everything still queued and ends the writer thread.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.writer.is_none() {
            return Ok(()); // it failed, and that error was returned then
        }
        self.flush()?;
        self.full = None;
        self.writer_result()
    }

    fn pass_on(&mut self) -> std::io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.chunk, next);
        match &self.full {
            Some(full) if full.send(chunk).is_ok() => Ok(()),
            // The writer thread ended: it failed.
            _ => {
                self.full = None;
                self.writer_result()
            }
        }
    }

    fn writer_result(&mut self) -> std::io::Result<()> {
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other("the writer thread panicked")),
            None => Err(std::io::Error::other("the file is closed after an error")),
        }
    }
}
