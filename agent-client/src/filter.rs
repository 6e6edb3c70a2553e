//! ARM packet capture filters compiled to a libpcap filter expression.
//!
//! Semantics (those of Azure Network Watcher):
//! - the fields of one filter are AND-ed, the filters are OR-ed; no filter captures everything;
//! - `local*` and `remote*` do not name a direction: a packet matches when its source is the local
//!   side and its destination the remote side, or the other way round; a local address goes with
//!   the local port, a remote address with the remote port;
//! - a value is a single value, a range `a-b` or a list `a;b;c`; IPv4 and IPv6;
//! - an address range that is not a CIDR block is decomposed exactly into CIDR blocks.

use std::net::IpAddr;

use crate::protocol::{CaptureFilter, FilterProtocol};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter {field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

/// One side's address set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Addresses {
    /// CIDR blocks (a single address is a /32 or /128).
    Blocks(Vec<(IpAddr, u8)>),
}

/// One side's port set: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ports(Vec<(u16, u16)>);

fn split_list(s: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = s.split(';').map(str::trim).collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    parts
}

fn parse_addresses(s: &str, field: &str) -> Result<Addresses, FilterError> {
    let err = |m: String| FilterError {
        field: field.to_string(),
        message: m,
    };
    let mut blocks = vec![];
    for part in split_list(s) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: IpAddr = a
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("'{a}' is not an address")))?;
                let b: IpAddr = b
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("'{b}' is not an address")))?;
                blocks.extend(
                    range_to_cidrs(a, b).ok_or_else(|| err(format!("'{part}' is not a range")))?,
                );
            }
            None => {
                let a: IpAddr = part
                    .parse()
                    .map_err(|_| err(format!("'{part}' is not an address")))?;
                blocks.push((a, if a.is_ipv4() { 32 } else { 128 }));
            }
        }
    }
    if blocks.is_empty() {
        return Err(err("no address".to_string()));
    }
    Ok(Addresses::Blocks(blocks))
}

fn parse_ports(s: &str, field: &str) -> Result<Ports, FilterError> {
    let err = |m: String| FilterError {
        field: field.to_string(),
        message: m,
    };
    let port = |p: &str| -> Result<u16, FilterError> {
        let p = p.trim();
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(format!("'{p}' is not a port")));
        }
        p.parse().map_err(|_| err(format!("'{p}' is not a port")))
    };
    let mut ranges = vec![];
    for part in split_list(s) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(err(format!("'{part}' starts after it ends")));
                }
                ranges.push((a, b));
            }
            None => {
                let p = port(part)?;
                ranges.push((p, p));
            }
        }
    }
    Ok(Ports(ranges))
}

/// The smallest list of CIDR blocks covering exactly `[a, b]`; None if the family differs or
/// `a > b`.
pub fn range_to_cidrs(a: IpAddr, b: IpAddr) -> Option<Vec<(IpAddr, u8)>> {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Some(
            split_range(u32::from(a) as u128, u32::from(b) as u128, 32)?
                .into_iter()
                .map(|(n, l)| (IpAddr::V4((n as u32).into()), l))
                .collect(),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => Some(
            split_range(u128::from(a), u128::from(b), 128)?
                .into_iter()
                .map(|(n, l)| (IpAddr::V6(n.into()), l))
                .collect(),
        ),
        _ => None,
    }
}

/// Greedy decomposition: at each step the largest aligned block starting at `lo` that fits.
fn split_range(mut lo: u128, hi: u128, bits: u8) -> Option<Vec<(u128, u8)>> {
    if lo > hi {
        return None;
    }
    let mut out = vec![];
    loop {
        // Largest power of two dividing lo (alignment), capped at the address width.
        let align = if lo == 0 {
            bits as u32
        } else {
            lo.trailing_zeros().min(bits as u32)
        };
        // Largest block size that does not pass hi: 2^k with lo + 2^k - 1 <= hi.
        let span = hi - lo; // block size - 1 must be <= span
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let k = align.min(fit).min(bits as u32);
        out.push((lo, bits - k as u8));
        let size_minus_1 = if k == 128 {
            u128::MAX
        } else {
            (1u128 << k) - 1
        };
        let last = lo + size_minus_1;
        if last >= hi {
            return Some(out);
        }
        lo = last + 1;
    }
}

fn addresses_expr(dir: &str, a: &Addresses) -> String {
    let Addresses::Blocks(blocks) = a;
    let parts: Vec<String> = blocks
        .iter()
        .map(|(ip, len)| {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            if *len == full {
                format!("{dir} host {ip}")
            } else {
                format!("{dir} net {ip}/{len}")
            }
        })
        .collect();
    any_of(parts)
}

fn ports_expr(dir: &str, p: &Ports) -> String {
    let parts: Vec<String> =
        p.0.iter()
            .map(|(a, b)| {
                if a == b {
                    format!("{dir} port {a}")
                } else {
                    format!("{dir} portrange {a}-{b}")
                }
            })
            .collect();
    any_of(parts)
}

fn any_of(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" or "))
    }
}

fn all_of(parts: Vec<String>) -> String {
    let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.len() {
        0 => String::new(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(" and ")),
    }
}

/// One side's condition when it is the packet's `dir` ("src" or "dst").
fn side(dir: &str, addrs: &Option<Addresses>, ports: &Option<Ports>) -> Vec<String> {
    let mut parts = vec![];
    if let Some(a) = addrs {
        parts.push(addresses_expr(dir, a));
    }
    if let Some(p) = ports {
        parts.push(ports_expr(dir, p));
    }
    parts
}

fn one_filter(f: &CaptureFilter, i: usize) -> Result<String, FilterError> {
    let field = |name: &str| format!("filters[{i}].{name}");
    let nonempty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let local_a = nonempty(&f.local_ip_address)
        .map(|s| parse_addresses(&s, &field("localIPAddress")))
        .transpose()?;
    let remote_a = nonempty(&f.remote_ip_address)
        .map(|s| parse_addresses(&s, &field("remoteIPAddress")))
        .transpose()?;
    let local_p = nonempty(&f.local_port)
        .map(|s| parse_ports(&s, &field("localPort")))
        .transpose()?;
    let remote_p = nonempty(&f.remote_port)
        .map(|s| parse_ports(&s, &field("remotePort")))
        .transpose()?;

    let proto = match f.protocol {
        FilterProtocol::Tcp => "tcp",
        FilterProtocol::Udp => "udp",
        FilterProtocol::Any => "",
    };
    let has_sides =
        local_a.is_some() || remote_a.is_some() || local_p.is_some() || remote_p.is_some();
    let direction = if has_sides {
        // local = source and remote = destination, or the other way round.
        let out = all_of(
            [
                side("src", &local_a, &local_p),
                side("dst", &remote_a, &remote_p),
            ]
            .concat(),
        );
        let back = all_of(
            [
                side("dst", &local_a, &local_p),
                side("src", &remote_a, &remote_p),
            ]
            .concat(),
        );
        if out == back {
            out
        } else {
            format!("({out} or {back})")
        }
    } else {
        String::new()
    };
    // A port condition needs a transport header: with protocol Any it means TCP or UDP.
    let proto = if proto.is_empty() && (local_p.is_some() || remote_p.is_some()) {
        "(tcp or udp)"
    } else {
        proto
    };
    Ok(all_of(vec![proto.to_string(), direction]))
}

/// The libpcap filter expression of ARM filters; the empty string captures everything.
pub fn compile(filters: &[CaptureFilter]) -> Result<String, FilterError> {
    let exprs = filters
        .iter()
        .enumerate()
        .map(|(i, f)| one_filter(f, i))
        .collect::<Result<Vec<_>, _>>()?;
    // A filter with no condition matches every packet, and so does their union.
    if exprs.is_empty() || exprs.iter().any(String::is_empty) {
        return Ok(String::new());
    }
    Ok(if exprs.len() == 1 {
        exprs.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", exprs.join(" or "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn f(
        proto: FilterProtocol,
        la: Option<&str>,
        lp: Option<&str>,
        ra: Option<&str>,
        rp: Option<&str>,
    ) -> CaptureFilter {
        CaptureFilter {
            protocol: proto,
            local_ip_address: la.map(Into::into),
            remote_ip_address: ra.map(Into::into),
            local_port: lp.map(Into::into),
            remote_port: rp.map(Into::into),
        }
    }

    #[test]
    fn forms() {
        use FilterProtocol::*;
        assert_eq!(compile(&[]).unwrap(), "");
        assert_eq!(compile(&[f(Any, None, None, None, None)]).unwrap(), "");
        assert_eq!(compile(&[f(Udp, None, None, None, None)]).unwrap(), "udp");
        assert_eq!(
            compile(&[f(Tcp, Some("10.0.0.4"), Some("80"), None, None)]).unwrap(),
            "(tcp and ((src host 10.0.0.4 and src port 80) or (dst host 10.0.0.4 and dst port 80)))"
        );
        assert_eq!(
            compile(&[f(Any, None, Some("80-85"), None, None)]).unwrap(),
            "((tcp or udp) and (src portrange 80-85 or dst portrange 80-85))"
        );
        assert_eq!(
            compile(&[f(
                Udp,
                Some("127.0.0.1;127.0.0.5;"),
                None,
                Some("::1"),
                Some("53;5353")
            )])
            .unwrap(),
            "(udp and (((src host 127.0.0.1 or src host 127.0.0.5) and dst host ::1 and (dst port 53 or dst port 5353)) or ((dst host 127.0.0.1 or dst host 127.0.0.5) and src host ::1 and (src port 53 or src port 5353))))"
        );
        assert_eq!(
            compile(&[
                f(Tcp, None, None, None, None),
                f(Udp, Some("10.0.0.0-10.0.0.255"), None, None, None)
            ])
            .unwrap(),
            "(tcp or (udp and (src net 10.0.0.0/24 or dst net 10.0.0.0/24)))"
        );
        // One filter without conditions makes the union match everything.
        assert_eq!(
            compile(&[
                f(Tcp, None, Some("1"), None, None),
                f(Any, None, None, None, None)
            ])
            .unwrap(),
            ""
        );
    }

    #[test]
    fn rejects_bad_values() {
        use FilterProtocol::*;
        for (la, lp) in [
            (Some("10.0.0.300"), None),
            (Some("10.0.0.5-10.0.0.1"), None),
            (Some("10.0.0.1-::1"), None),
            (None, Some("70000")),
            (None, Some("+1")),
            (None, Some("9-3")),
        ] {
            assert!(
                compile(&[f(Any, la, lp, None, None)]).is_err(),
                "{la:?} {lp:?}"
            );
        }
    }

    fn covered(blocks: &[(IpAddr, u8)], x: u32) -> usize {
        blocks
            .iter()
            .filter(|(ip, len)| {
                let IpAddr::V4(ip) = ip else { return false };
                let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                (u32::from(*ip) & mask) == (x & mask)
            })
            .count()
    }

    #[test]
    fn range_decomposition_matches_brute_force() {
        // Every range over a small window of addresses, checked address by address: each address
        // in the range is in exactly one block, none outside is in any, and every block is aligned.
        let base = u32::from(Ipv4Addr::new(10, 1, 2, 0)) - 40;
        for lo in 0..72u32 {
            for hi in lo..72u32 {
                let (a, b) = (base + lo, base + hi);
                let blocks =
                    range_to_cidrs(Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into()).unwrap();
                for (ip, len) in &blocks {
                    let IpAddr::V4(ip) = ip else { panic!("v4") };
                    let host_bits = 32 - *len as u32;
                    assert_eq!(
                        u32::from(*ip) & ((1u64 << host_bits) - 1) as u32,
                        0,
                        "unaligned block"
                    );
                }
                for x in (base - 4)..(base + 80) {
                    let want = usize::from(x >= a && x <= b);
                    assert_eq!(covered(&blocks, x), want, "range {a}-{b}, address {x}");
                }
                // Minimal: a greedy split never needs more than 2 blocks per bit.
                assert!(blocks.len() <= 62);
            }
        }
        // Whole spaces and single addresses.
        assert_eq!(
            range_to_cidrs(
                "0.0.0.0".parse().unwrap(),
                "255.255.255.255".parse().unwrap()
            )
            .unwrap(),
            vec![("0.0.0.0".parse().unwrap(), 0)]
        );
        assert_eq!(
            range_to_cidrs(
                "::".parse().unwrap(),
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()
            )
            .unwrap(),
            vec![("::".parse().unwrap(), 0)]
        );
        assert_eq!(
            range_to_cidrs("::1".parse().unwrap(), "::1".parse().unwrap()).unwrap(),
            vec![("::1".parse().unwrap(), 128)]
        );
        assert_eq!(
            range_to_cidrs("fe80::1".parse().unwrap(), "fe80::6".parse().unwrap()).unwrap(),
            vec![
                ("fe80::1".parse().unwrap(), 128),
                ("fe80::2".parse().unwrap(), 127),
                ("fe80::4".parse().unwrap(), 127),
                ("fe80::6".parse().unwrap(), 128)
            ]
        );
        assert!(range_to_cidrs("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()).is_none());
    }
}
