//! The grammar of ARM packet capture filter values, one for the server and the agents: the API
//! accepts a value when it parses here, and an agent compiles what parses here.
//!
//! A field value (`localIPAddress`, `remoteIPAddress`, `localPort`, `remotePort`) is, as the ARM
//! REST spec describes `PacketCaptureFilter`:
//! - a single value: `127.0.0.1`, `80`;
//! - a range `a-b`: `127.0.0.1-127.0.0.255`, `80-85`; both ends included, `a <= b`, both
//!   addresses of one family;
//! - a list `a;b;c` of single values, a trailing `;` allowed: `127.0.0.1;127.0.0.5;`, `80;443;`.
//!   "Multiple ranges not currently supported. Mixing ranges with multiple entries not currently
//!   supported.": a list holds no range (not even `80-85;`), and there is one range at most;
//! - IPv4 and IPv6 addresses; ports are decimal, 0 to 65535; spaces around values are ignored;
//! - an empty value (or no value) means no condition on that field.

use std::fmt;
use std::net::IpAddr;

use crate::protocol::CaptureFilter;

/// The value of one filter field, as written: the three forms of the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue<T> {
    Single(T),
    /// Inclusive; `lo <= hi`, and for addresses both of one family.
    Range(T, T),
    /// Two entries or more (a one-entry list `a;` is a [`FilterValue::Single`]).
    List(Vec<T>),
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Address,
    Port,
}

impl Kind {
    /// The accepted forms, for error messages.
    pub fn forms(self) -> &'static str {
        match self {
            Kind::Address => {
                "use a single address \"10.0.0.4\", a range \"10.0.0.1-10.0.0.255\" or a list \"10.0.0.4;10.0.0.5;\" (IPv4 or IPv6; a list cannot hold a range)"
            }
            Kind::Port => {
                "use a single port \"80\", a range \"80-85\" or a list \"80;443;\" (ports from 0 to 65535; a list cannot hold a range)"
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Address => "IP address",
            Kind::Port => "port",
        })
    }
}

/// The four value fields of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    LocalIpAddress,
    RemoteIpAddress,
    LocalPort,
    RemotePort,
}

impl Field {
    pub const ALL: [Field; 4] = [
        Field::LocalIpAddress,
        Field::RemoteIpAddress,
        Field::LocalPort,
        Field::RemotePort,
    ];

    /// The JSON property name.
    pub fn name(self) -> &'static str {
        match self {
            Field::LocalIpAddress => "localIPAddress",
            Field::RemoteIpAddress => "remoteIPAddress",
            Field::LocalPort => "localPort",
            Field::RemotePort => "remotePort",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Field::LocalIpAddress | Field::RemoteIpAddress => Kind::Address,
            Field::LocalPort | Field::RemotePort => Kind::Port,
        }
    }

    /// This field's value in `f`, trimmed; None when absent or blank (no condition).
    pub fn value(self, f: &CaptureFilter) -> Option<&str> {
        let v = match self {
            Field::LocalIpAddress => &f.local_ip_address,
            Field::RemoteIpAddress => &f.remote_ip_address,
            Field::LocalPort => &f.local_port,
            Field::RemotePort => &f.remote_port,
        };
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

/// Why a field value is not in the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("the value is empty")]
    Empty,
    #[error("'{0}' is not an IP address")]
    NotAnAddress(String),
    #[error("'{0}' is not a port from 0 to 65535")]
    NotAPort(String),
    #[error("the list has an empty entry")]
    EmptyEntry,
    #[error("'{0}' is not a range: a range is two values joined by one '-'")]
    NotARange(String),
    #[error("the range '{0}' starts after it ends")]
    Reversed(String),
    #[error("the range '{0}' mixes IPv4 and IPv6 addresses")]
    MixedFamilies(String),
    #[error("multiple ranges are not supported")]
    MultipleRanges,
    #[error("'{0}' is a range inside a list: mixing ranges with multiple entries is not supported")]
    RangeInList(String),
}

/// Parses an IP address field value.
pub fn parse_addresses(s: &str) -> Result<FilterValue<IpAddr>, ValueError> {
    parse_value(
        s,
        |p| {
            p.parse()
                .map_err(|_| ValueError::NotAnAddress(p.to_string()))
        },
        check_address_range,
    )
}

/// Parses a port field value.
pub fn parse_ports(s: &str) -> Result<FilterValue<u16>, ValueError> {
    parse_value(
        s,
        |p| {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ValueError::NotAPort(p.to_string()));
            }
            p.parse().map_err(|_| ValueError::NotAPort(p.to_string()))
        },
        |a, b, text| {
            if a > b {
                Err(ValueError::Reversed(text.to_string()))
            } else {
                Ok(())
            }
        },
    )
}

/// The grammar, over the item parser and the range check of one kind.
fn parse_value<T>(
    s: &str,
    item: impl Fn(&str) -> Result<T, ValueError>,
    range: impl Fn(T, T, &str) -> Result<(), ValueError>,
) -> Result<FilterValue<T>, ValueError>
where
    T: Copy,
{
    let s = s.trim();
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    if s.contains(';') {
        // One trailing ';' ends a list: "80;443;", and "80;" is the single port 80.
        let entries: Vec<&str> = s
            .strip_suffix(';')
            .unwrap_or(s)
            .split(';')
            .map(str::trim)
            .collect();
        if entries.iter().any(|e| e.is_empty()) {
            return Err(ValueError::EmptyEntry);
        }
        let mut ranges = entries.iter().filter(|e| e.contains('-'));
        if let Some(first) = ranges.next() {
            return Err(if ranges.next().is_some() {
                ValueError::MultipleRanges
            } else {
                ValueError::RangeInList((*first).to_string())
            });
        }
        let mut items = entries
            .into_iter()
            .map(&item)
            .collect::<Result<Vec<T>, _>>()?;
        return Ok(match items.len() {
            1 => FilterValue::Single(items.remove(0)),
            _ => FilterValue::List(items),
        });
    }
    if let Some((a, b)) = s.split_once('-') {
        if b.contains('-') {
            return Err(ValueError::NotARange(s.to_string()));
        }
        let (lo, hi) = (item(a.trim())?, item(b.trim())?);
        range(lo, hi, s)?;
        return Ok(FilterValue::Range(lo, hi));
    }
    item(s).map(FilterValue::Single)
}

/// A range's two addresses are of one family and in order; `text` names the range.
pub(crate) fn check_address_range(a: IpAddr, b: IpAddr, text: &str) -> Result<(), ValueError> {
    if a.is_ipv4() != b.is_ipv4() {
        Err(ValueError::MixedFamilies(text.to_string()))
    } else if a > b {
        Err(ValueError::Reversed(text.to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every rejected form, with its error.
    pub(crate) fn rejected() -> Vec<(Field, &'static str, ValueError)> {
        use Field::*;
        use ValueError::*;
        let s = |x: &str| x.to_string();
        vec![
            (LocalIpAddress, "10.0.0.300", NotAnAddress(s("10.0.0.300"))),
            (
                LocalIpAddress,
                "10.0.0.0/24",
                NotAnAddress(s("10.0.0.0/24")),
            ),
            (
                LocalIpAddress,
                "fe80::1%eth0",
                NotAnAddress(s("fe80::1%eth0")),
            ),
            (
                LocalIpAddress,
                "10.0.0.1,10.0.0.2",
                NotAnAddress(s("10.0.0.1,10.0.0.2")),
            ),
            (
                LocalIpAddress,
                "10.0.0.1 10.0.0.2",
                NotAnAddress(s("10.0.0.1 10.0.0.2")),
            ),
            (LocalIpAddress, "-10.0.0.1", NotAnAddress(s(""))),
            (LocalIpAddress, "10.0.0.1-", NotAnAddress(s(""))),
            // Reversed ranges, ranges across families.
            (
                LocalIpAddress,
                "10.0.0.5-10.0.0.1",
                Reversed(s("10.0.0.5-10.0.0.1")),
            ),
            (
                LocalIpAddress,
                "fe80::9 - fe80::1",
                Reversed(s("fe80::9 - fe80::1")),
            ),
            (
                RemoteIpAddress,
                "10.0.0.1-::1",
                MixedFamilies(s("10.0.0.1-::1")),
            ),
            (
                RemoteIpAddress,
                "::-255.255.255.255",
                MixedFamilies(s("::-255.255.255.255")),
            ),
            // "Mixing ranges with multiple entries not currently supported."
            (
                LocalIpAddress,
                "10.0.0.1-10.0.0.5;10.0.0.9",
                RangeInList(s("10.0.0.1-10.0.0.5")),
            ),
            (
                LocalIpAddress,
                "10.0.0.9; 10.0.0.1-10.0.0.5",
                RangeInList(s("10.0.0.1-10.0.0.5")),
            ),
            (
                LocalIpAddress,
                "10.0.0.1-10.0.0.5;",
                RangeInList(s("10.0.0.1-10.0.0.5")),
            ),
            (LocalIpAddress, "::1-::5;::7", RangeInList(s("::1-::5"))),
            // "Multiple ranges not currently supported."
            (
                LocalIpAddress,
                "10.0.0.1-10.0.0.5;10.0.1.1-10.0.1.5",
                MultipleRanges,
            ),
            (
                LocalIpAddress,
                "10.0.0.1-10.0.0.5-10.0.0.9",
                NotARange(s("10.0.0.1-10.0.0.5-10.0.0.9")),
            ),
            // Empty entries: only one trailing ';' ends a list.
            (LocalIpAddress, "10.0.0.1;;10.0.0.2", EmptyEntry),
            (LocalIpAddress, ";10.0.0.1", EmptyEntry),
            (LocalIpAddress, "10.0.0.1;;", EmptyEntry),
            (LocalIpAddress, "10.0.0.1; ;", EmptyEntry),
            (LocalIpAddress, ";", EmptyEntry),
            // Ports.
            (LocalPort, "70000", NotAPort(s("70000"))),
            (LocalPort, "65536", NotAPort(s("65536"))),
            (LocalPort, "+1", NotAPort(s("+1"))),
            (LocalPort, "-1", NotAPort(s(""))),
            (LocalPort, "0x50", NotAPort(s("0x50"))),
            (LocalPort, "8 0", NotAPort(s("8 0"))),
            (LocalPort, "http", NotAPort(s("http"))),
            (LocalPort, "80;x", NotAPort(s("x"))),
            (RemotePort, "9-3", Reversed(s("9-3"))),
            (RemotePort, "80-85;443", RangeInList(s("80-85"))),
            (RemotePort, "80-85;", RangeInList(s("80-85"))),
            (RemotePort, "80-85;90-95", MultipleRanges),
            (RemotePort, "80-85-90", NotARange(s("80-85-90"))),
            (RemotePort, "80;;443", EmptyEntry),
        ]
    }

    #[test]
    fn typed_values() {
        assert_eq!(parse_ports("80"), Ok(FilterValue::Single(80)));
        assert_eq!(parse_ports("80;"), Ok(FilterValue::Single(80)));
        assert_eq!(parse_ports("80-85"), Ok(FilterValue::Range(80, 85)));
        assert_eq!(parse_ports("80;443;"), Ok(FilterValue::List(vec![80, 443])));
        assert_eq!(
            parse_addresses("127.0.0.1-127.0.0.255"),
            Ok(FilterValue::Range(
                "127.0.0.1".parse().unwrap(),
                "127.0.0.255".parse().unwrap()
            ))
        );
        assert_eq!(
            parse_addresses(" ::1 ; 10.0.0.4 ;"),
            Ok(FilterValue::List(vec![
                "::1".parse().unwrap(),
                "10.0.0.4".parse().unwrap()
            ]))
        );
    }

    #[test]
    fn every_rejected_form_is_rejected() {
        for (field, value, want) in rejected() {
            let parsed = match field.kind() {
                Kind::Address => parse_addresses(value).map(drop),
                Kind::Port => parse_ports(value).map(drop),
            };
            assert_eq!(parsed, Err(want), "{field:?} {value:?}");
        }
        assert_eq!(parse_addresses(" "), Err(ValueError::Empty));
        assert_eq!(parse_ports(""), Err(ValueError::Empty));
    }
}
