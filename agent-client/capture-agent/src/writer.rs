//! The pcap file format (classic pcap, microsecond timestamps, this host's byte order), written
//! through a large buffer.

/// Bytes of a pcap file header.
pub const HEADER_BYTES: u64 = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 16;

/// Writes the pcap file format itself (classic pcap, microsecond timestamps, this host's byte
/// order) through a large buffer: a few big writes instead of stdio's many small ones, and every
/// write error reported.
pub struct PcapWriter {
    out: std::io::BufWriter<std::fs::File>,
}

const WRITE_BUFFER: usize = 1024 * 1024;

impl PcapWriter {
    /// Creates the file (never over an existing one), readable by its owner and group only.
    pub fn create(
        path: &std::path::Path,
        linktype: u32,
        snaplen: u32,
    ) -> std::io::Result<PcapWriter> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)?;
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        header.extend_from_slice(&snaplen.to_ne_bytes());
        header.extend_from_slice(&linktype.to_ne_bytes());
        out.write_all(&header)?;
        out.flush()?;
        Ok(PcapWriter { out })
    }

    /// One record: the packet's timestamp and original length, and `data` as captured.
    pub fn write(&mut self, h: &pcap::PacketHeader, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(h.ts.tv_sec as u32).to_ne_bytes());
        rec[4..8].copy_from_slice(&(h.ts.tv_usec as u32).to_ne_bytes());
        rec[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        rec[12..16].copy_from_slice(&h.len.to_ne_bytes());
        // Flush before a record that does not fit, so that the file only ever ends on a record
        // boundary (readers never see half a record).
        if self.out.capacity() - self.out.buffer().len() < rec.len() + data.len() {
            self.out.flush()?;
        }
        self.out.write_all(&rec)?;
        self.out.write_all(data)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.out.flush()
    }
}
