//! ARM packet capture filters compiled to a libpcap filter expression. The values are parsed with
//! the one grammar of [`grammar`], the one the API validates with: what the API accepts is exactly
//! what an agent compiles.
//!
//! Semantics (those of Azure Network Watcher):
//! - the fields of one filter are AND-ed, the filters are OR-ed; no filter captures everything;
//! - `local*` and `remote*` do not name a direction: a packet matches when its source is the local
//!   side and its destination the remote side, or the other way round; a local address goes with
//!   the local port, a remote address with the remote port;
//! - a value is a single value, a range `a-b` or a list `a;b;c`; IPv4 and IPv6;
//! - an address range that is not a CIDR block is decomposed exactly into CIDR blocks.

pub mod grammar;

use std::net::IpAddr;

pub use grammar::{Field, FilterValue, Kind, ValueError, parse_addresses, parse_ports};

use crate::protocol::{CaptureFilter, FilterProtocol};

/// A filter value that cannot be compiled, with the field's path (`filters[0].localPort`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter {field}: {error}")]
pub struct FilterError {
    pub field: String,
    pub error: ValueError,
}

/// The CIDR blocks (a single address is a /32 or /128) of an address value.
fn address_blocks(v: &FilterValue<IpAddr>) -> Result<Vec<(IpAddr, u8)>, ValueError> {
    let host = |a: &IpAddr| (*a, if a.is_ipv4() { 32 } else { 128 });
    Ok(match v {
        FilterValue::Single(a) => vec![host(a)],
        FilterValue::List(l) => l.iter().map(host).collect(),
        FilterValue::Range(a, b) => range_to_cidrs(*a, *b)?,
    })
}

/// The inclusive ranges of a port value.
fn port_ranges(v: &FilterValue<u16>) -> Vec<(u16, u16)> {
    match v {
        FilterValue::Single(p) => vec![(*p, *p)],
        FilterValue::List(l) => l.iter().map(|p| (*p, *p)).collect(),
        FilterValue::Range(a, b) => vec![(*a, *b)],
    }
}

/// The smallest list of CIDR blocks covering exactly `[a, b]`; an error if the families differ or
/// `a > b`.
pub fn range_to_cidrs(a: IpAddr, b: IpAddr) -> Result<Vec<(IpAddr, u8)>, ValueError> {
    grammar::check_address_range(a, b, &format!("{a}-{b}"))?;
    let blocks = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            split_range(u32::from(a) as u128, u32::from(b) as u128, 32).map(|blocks| {
                blocks
                    .into_iter()
                    .map(|(n, l)| (IpAddr::V4((n as u32).into()), l))
                    .collect()
            })
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            split_range(u128::from(a), u128::from(b), 128).map(|blocks| {
                blocks
                    .into_iter()
                    .map(|(n, l)| (IpAddr::V6(n.into()), l))
                    .collect()
            })
        }
        _ => None,
    };
    // Checked above: one family, in order.
    blocks.ok_or_else(|| ValueError::MixedFamilies(format!("{a}-{b}")))
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

fn addresses_expr(dir: &str, blocks: &[(IpAddr, u8)]) -> String {
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

fn ports_expr(dir: &str, ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
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
fn side(
    dir: &str,
    blocks: &Option<Vec<(IpAddr, u8)>>,
    ports: &Option<Vec<(u16, u16)>>,
) -> Vec<String> {
    let mut parts = vec![];
    if let Some(b) = blocks {
        parts.push(addresses_expr(dir, b));
    }
    if let Some(p) = ports {
        parts.push(ports_expr(dir, p));
    }
    parts
}

fn one_filter(f: &CaptureFilter, i: usize) -> Result<String, FilterError> {
    let err = |field: Field| {
        move |error| FilterError {
            field: format!("filters[{i}].{}", field.name()),
            error,
        }
    };
    let addresses = |field: Field| {
        field
            .value(f)
            .map(|s| parse_addresses(s).and_then(|v| address_blocks(&v)))
            .transpose()
            .map_err(err(field))
    };
    let ports = |field: Field| {
        field
            .value(f)
            .map(|s| parse_ports(s).map(|v| port_ranges(&v)))
            .transpose()
            .map_err(err(field))
    };
    let local_a = addresses(Field::LocalIpAddress)?;
    let remote_a = addresses(Field::RemoteIpAddress)?;
    let local_p = ports(Field::LocalPort)?;
    let remote_p = ports(Field::RemotePort)?;

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

    /// A filter (protocol Any) with one field set.
    fn one(field: Field, value: &str) -> CaptureFilter {
        let mut f = CaptureFilter::default();
        let v = Some(value.to_string());
        match field {
            Field::LocalIpAddress => f.local_ip_address = v,
            Field::RemoteIpAddress => f.remote_ip_address = v,
            Field::LocalPort => f.local_port = v,
            Field::RemotePort => f.remote_port = v,
        }
        f
    }

    #[test]
    fn every_accepted_form_compiles() {
        use Field::*;
        let any = |p: &str| format!("((tcp or udp) and {p})");
        for (field, value, want) in [
            // Single addresses, IPv4 and IPv6, spaces ignored, one trailing ';' allowed.
            (LocalIpAddress, "10.0.0.4", "(src host 10.0.0.4 or dst host 10.0.0.4)".to_string()),
            (LocalIpAddress, " 10.0.0.4 ", "(src host 10.0.0.4 or dst host 10.0.0.4)".into()),
            (LocalIpAddress, "10.0.0.4;", "(src host 10.0.0.4 or dst host 10.0.0.4)".into()),
            (LocalIpAddress, "::1", "(src host ::1 or dst host ::1)".into()),
            (RemoteIpAddress, "10.0.0.4", "(dst host 10.0.0.4 or src host 10.0.0.4)".into()),
            // Lists, of one family or both.
            (
                LocalIpAddress,
                "127.0.0.1;127.0.0.5",
                "((src host 127.0.0.1 or src host 127.0.0.5) or (dst host 127.0.0.1 or dst host 127.0.0.5))".into(),
            ),
            (
                RemoteIpAddress,
                " 127.0.0.1 ; 127.0.0.5 ;",
                "((dst host 127.0.0.1 or dst host 127.0.0.5) or (src host 127.0.0.1 or src host 127.0.0.5))".into(),
            ),
            (
                LocalIpAddress,
                "10.0.0.4;fe80::1",
                "((src host 10.0.0.4 or src host fe80::1) or (dst host 10.0.0.4 or dst host fe80::1))".into(),
            ),
            // Ranges: CIDR blocks, exactly.
            (LocalIpAddress, "127.0.0.0-127.0.0.255", "(src net 127.0.0.0/24 or dst net 127.0.0.0/24)".into()),
            (
                LocalIpAddress,
                "10.0.0.1 - 10.0.0.2",
                "((src host 10.0.0.1 or src host 10.0.0.2) or (dst host 10.0.0.1 or dst host 10.0.0.2))".into(),
            ),
            (LocalIpAddress, "10.0.0.7-10.0.0.7", "(src host 10.0.0.7 or dst host 10.0.0.7)".into()),
            (LocalIpAddress, "fe80::-fe80::ffff", "(src net fe80::/112 or dst net fe80::/112)".into()),
            // Ports: with protocol Any, TCP or UDP.
            (LocalPort, "80", any("(src port 80 or dst port 80)")),
            (LocalPort, "0", any("(src port 0 or dst port 0)")),
            (LocalPort, "65535", any("(src port 65535 or dst port 65535)")),
            (LocalPort, "80;", any("(src port 80 or dst port 80)")),
            (RemotePort, "53", any("(dst port 53 or src port 53)")),
            (LocalPort, "80;443", any("((src port 80 or src port 443) or (dst port 80 or dst port 443))")),
            (LocalPort, "80; 443;", any("((src port 80 or src port 443) or (dst port 80 or dst port 443))")),
            (LocalPort, "80-85", any("(src portrange 80-85 or dst portrange 80-85)")),
            (LocalPort, " 80 - 85 ", any("(src portrange 80-85 or dst portrange 80-85)")),
            (LocalPort, "80-80", any("(src port 80 or dst port 80)")),
        ] {
            assert_eq!(compile(&[one(field, value)]), Ok(want), "{field:?} {value:?}");
        }
        // A blank value is no condition.
        assert_eq!(
            compile(&[f(FilterProtocol::Tcp, Some("  "), Some(""), None, None)]),
            Ok("tcp".to_string())
        );
    }

    #[test]
    fn every_rejected_form_is_rejected() {
        for (field, value, want) in grammar::tests::rejected() {
            assert_eq!(
                compile(&[
                    f(FilterProtocol::Tcp, None, None, None, None),
                    one(field, value)
                ]),
                Err(FilterError {
                    field: format!("filters[1].{}", field.name()),
                    error: want
                }),
                "{field:?} {value:?}"
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
        assert_eq!(
            range_to_cidrs("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()),
            Err(ValueError::Reversed("10.0.0.2-10.0.0.1".into()))
        );
        assert_eq!(
            range_to_cidrs("10.0.0.1".parse().unwrap(), "::1".parse().unwrap()),
            Err(ValueError::MixedFamilies("10.0.0.1-::1".into()))
        );
    }
}
