//! An independent reader of pcap files (it shares no code with libpcap or the agent), and the
//! packet fields the tests assert on.

use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct Record {
    /// Capture time: seconds and micro- (or nano-, see [`PcapFile::nanos`]) seconds.
    pub ts_sec: u32,
    pub ts_frac: u32,
    pub caplen: u32,
    pub origlen: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 6 = TCP, 17 = UDP.
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// The transport payload, as far as it was captured.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct PcapFile {
    /// Whether record timestamps are in nanoseconds (else microseconds).
    pub nanos: bool,
    pub linktype: u32,
    pub snaplen: u32,
    pub records: Vec<Record>,
    /// Bytes after the last whole record (a record cut short by a crash).
    pub trailing: usize,
}

pub fn read(path: &std::path::Path) -> PcapFile {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 24, "no pcap header in {}", path.display());
    let nanos = matches!(
        &b[0..4],
        [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]
    );
    let le = match &b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a pcap file: magic {m:02x?}"),
    };
    let u32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(
        (u32_at(4) & 0xffff, u32_at(4) >> 16),
        (2, 4),
        "pcap version 2.4"
    );
    let snaplen = u32_at(16);
    let linktype = u32_at(20);
    let mut records = vec![];
    let mut o = 24;
    while o + 16 <= b.len() {
        let caplen = u32_at(o + 8);
        let origlen = u32_at(o + 12);
        if o + 16 + caplen as usize > b.len() {
            break;
        }
        assert!(
            caplen <= origlen && caplen <= snaplen,
            "caplen {caplen} origlen {origlen} snaplen {snaplen}"
        );
        records.push(Record {
            ts_sec: u32_at(o),
            ts_frac: u32_at(o + 4),
            caplen,
            origlen,
            data: b[o + 16..o + 16 + caplen as usize].to_vec(),
        });
        o += 16 + caplen as usize;
    }
    PcapFile {
        nanos,
        linktype,
        snaplen,
        records,
        trailing: b.len() - o,
    }
}

impl Record {
    /// Parses Ethernet (link type 1) / Linux cooked (113) + IPv4/IPv6 + TCP/UDP.
    pub fn packet(&self, linktype: u32) -> Option<Packet> {
        let d = &self.data;
        let (ethertype, l3) = match linktype {
            1 => (u16::from_be_bytes([*d.get(12)?, *d.get(13)?]), 14),
            113 => (u16::from_be_bytes([*d.get(14)?, *d.get(15)?]), 16),
            _ => return None,
        };
        let (src, dst, proto, l4) = match ethertype {
            0x0800 => {
                let ihl = (*d.get(l3)? & 0x0f) as usize * 4;
                let ip4 = |o: usize| -> Option<IpAddr> {
                    Some(IpAddr::from([
                        *d.get(o)?,
                        *d.get(o + 1)?,
                        *d.get(o + 2)?,
                        *d.get(o + 3)?,
                    ]))
                };
                (ip4(l3 + 12)?, ip4(l3 + 16)?, *d.get(l3 + 9)?, l3 + ihl)
            }
            0x86dd => {
                let ip6 = |o: usize| -> Option<IpAddr> {
                    let s: [u8; 16] = d.get(o..o + 16)?.try_into().ok()?;
                    Some(IpAddr::from(s))
                };
                (ip6(l3 + 8)?, ip6(l3 + 24)?, *d.get(l3 + 6)?, l3 + 40)
            }
            _ => return None,
        };
        let port =
            |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*d.get(o)?, *d.get(o + 1)?])) };
        let header = match proto {
            17 => 8,
            6 => ((*d.get(l4 + 12)? >> 4) as usize) * 4,
            _ => return None,
        };
        Some(Packet {
            src,
            dst,
            proto,
            src_port: port(l4)?,
            dst_port: port(l4 + 2)?,
            payload: d.get(l4 + header..).unwrap_or_default().to_vec(),
        })
    }
}

impl PcapFile {
    /// The capture time of a record.
    pub fn time(&self, r: &Record) -> std::time::SystemTime {
        let frac = if self.nanos {
            r.ts_frac as u64
        } else {
            r.ts_frac as u64 * 1000
        };
        std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(r.ts_sec as u64)
            + std::time::Duration::from_nanos(frac)
    }

    pub fn packets(&self) -> Vec<Packet> {
        self.records
            .iter()
            .filter_map(|r| r.packet(self.linktype))
            .collect()
    }

    /// Payload tags (the text of each UDP payload) in file order.
    pub fn tags(&self) -> Vec<String> {
        self.packets()
            .into_iter()
            .map(|p| {
                String::from_utf8_lossy(&p.payload)
                    .trim_end_matches('.')
                    .to_string()
            })
            .collect()
    }
}
