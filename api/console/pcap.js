// A tiny reader of classic pcap files: the first packets, decoded enough for a table (time,
// addresses, protocol, ports, length, TCP flags). Wireshark is the tool for anything more.

export class PcapError extends Error {}

const LINKTYPES = { 0: 'null', 1: 'ethernet', 101: 'raw', 113: 'sll', 228: 'raw4', 229: 'raw6', 276: 'sll2' };

/**
 * Parses up to `max` packets of `buffer` (an ArrayBuffer). Returns {linktype, packets,
 * total, truncated, message}; throws PcapError when the file is not a pcap file at all.
 */
export function parsePcap(buffer, max = 200) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 24) {
    throw new PcapError(`This is not a pcap file: it is ${buffer.byteLength} bytes long, shorter than a pcap file header (24 bytes).`);
  }
  const magic = view.getUint32(0, false);
  let little;
  let nanos;
  if (magic === 0xa1b2c3d4) { little = false; nanos = false; }
  else if (magic === 0xd4c3b2a1) { little = true; nanos = false; }
  else if (magic === 0xa1b23c4d) { little = false; nanos = true; }
  else if (magic === 0x4d3cb2a1) { little = true; nanos = true; }
  else if (magic === 0x0a0d0d0a) {
    throw new PcapError('This is a pcapng file: the viewer reads classic pcap files only. Open it with Wireshark.');
  } else {
    throw new PcapError(`This is not a pcap file: its first bytes (0x${magic.toString(16).padStart(8, '0')}) are not a pcap magic number.`);
  }
  const linktype = view.getUint32(20, little) & 0x0fffffff;
  const snaplen = view.getUint32(16, little);
  const packets = [];
  let offset = 24;
  let total = 0;
  let truncated = false;
  let message = null;
  let first = null;
  while (offset < buffer.byteLength) {
    if (offset + 16 > buffer.byteLength) {
      truncated = true;
      message = `The file is truncated: it ends inside the header of packet ${total + 1}.`;
      break;
    }
    const sec = view.getUint32(offset, little);
    const frac = view.getUint32(offset + 4, little);
    const incl = view.getUint32(offset + 8, little);
    const orig = view.getUint32(offset + 12, little);
    if (incl > Math.max(snaplen, 262144) * 4) {
      truncated = true;
      message = `The file is damaged: packet ${total + 1} claims ${incl} captured bytes.`;
      break;
    }
    if (offset + 16 + incl > buffer.byteLength) {
      truncated = true;
      message = `The file is truncated: packet ${total + 1} needs ${incl} bytes but only ${buffer.byteLength - offset - 16} remain.`;
      break;
    }
    total += 1;
    const ts = sec + frac / (nanos ? 1e9 : 1e6);
    if (first === null) first = ts;
    if (packets.length < max) {
      const data = new Uint8Array(buffer, offset + 16, incl);
      packets.push({ number: total, time: ts, relative: ts - first, captured: incl, length: orig, ...decode(linktype, data) });
    }
    offset += 16 + incl;
  }
  return { linktype: LINKTYPES[linktype] || `linktype ${linktype}`, packets, total, truncated, message };
}

function ipv4Text(d, o) {
  return `${d[o]}.${d[o + 1]}.${d[o + 2]}.${d[o + 3]}`;
}

function ipv6Text(d, o) {
  const g = [];
  for (let i = 0; i < 8; i += 1) g.push(((d[o + 2 * i] << 8) | d[o + 2 * i + 1]).toString(16));
  // The longest run of zero groups becomes '::'.
  let best = -1; let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== '0') { i += 1; continue; }
    let j = i;
    while (j < 8 && g[j] === '0') j += 1;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}

const TCP_FLAGS = [[0x01, 'FIN'], [0x02, 'SYN'], [0x04, 'RST'], [0x08, 'PSH'], [0x10, 'ACK'], [0x20, 'URG'], [0x40, 'ECE'], [0x80, 'CWR']];

/** The network layer of one packet: {src, dst, protocol, srcPort, dstPort, flags, info}. */
function decode(linktype, d) {
  let etherType = null;
  let o = 0;
  switch (linktype) {
    case 1: // Ethernet, with VLAN tags
      if (d.length < 14) return { protocol: 'Ethernet', info: 'short frame' };
      etherType = (d[12] << 8) | d[13];
      o = 14;
      while ((etherType === 0x8100 || etherType === 0x88a8) && d.length >= o + 4) {
        etherType = (d[o + 2] << 8) | d[o + 3];
        o += 4;
      }
      break;
    case 113: // Linux cooked v1
      if (d.length < 16) return { protocol: 'SLL', info: 'short frame' };
      etherType = (d[14] << 8) | d[15];
      o = 16;
      break;
    case 276: // Linux cooked v2
      if (d.length < 20) return { protocol: 'SLL2', info: 'short frame' };
      etherType = (d[0] << 8) | d[1];
      o = 20;
      break;
    case 0: { // BSD loopback: a host-order address family
      if (d.length < 4) return { protocol: 'Null', info: 'short frame' };
      const af = d[0] || d[3];
      etherType = af === 2 ? 0x0800 : [24, 28, 30].includes(af) ? 0x86dd : null;
      o = 4;
      break;
    }
    case 101: case 228: case 229:
      etherType = d.length && (d[0] >> 4) === 6 ? 0x86dd : 0x0800;
      break;
    default:
      return { protocol: `linktype ${linktype}`, info: '' };
  }
  if (etherType === 0x0800) return ipv4(d, o);
  if (etherType === 0x86dd) return ipv6(d, o);
  if (etherType === 0x0806) return { protocol: 'ARP', info: '' };
  return { protocol: etherType === null ? 'unknown' : `0x${etherType.toString(16).padStart(4, '0')}`, info: '' };
}

function ipv4(d, o) {
  if (d.length < o + 20) return { protocol: 'IPv4', info: 'truncated header' };
  const ihl = (d[o] & 0x0f) * 4;
  const proto = d[o + 9];
  const src = ipv4Text(d, o + 12);
  const dst = ipv4Text(d, o + 16);
  const fragOffset = ((d[o + 6] & 0x1f) << 8) | d[o + 7];
  if (fragOffset !== 0) return { src, dst, protocol: 'IPv4', info: 'fragment' };
  return { src, dst, ...transport(proto, d, o + ihl) };
}

function ipv6(d, o) {
  if (d.length < o + 40) return { protocol: 'IPv6', info: 'truncated header' };
  let next = d[o + 6];
  const src = ipv6Text(d, o + 8);
  const dst = ipv6Text(d, o + 24);
  let p = o + 40;
  // Hop-by-hop, routing and destination options headers.
  while ([0, 43, 60].includes(next) && d.length >= p + 8) {
    const len = (d[p + 1] + 1) * 8;
    next = d[p];
    p += len;
  }
  return { src, dst, ...transport(next, d, p) };
}

function transport(proto, d, p) {
  const port = (i) => (d[i] << 8) | d[i + 1];
  if (proto === 6) {
    if (d.length < p + 14) return { protocol: 'TCP', info: 'truncated header' };
    const f = d[p + 13];
    const flags = TCP_FLAGS.filter(([bit]) => f & bit).map(([, name]) => name).join(',');
    return { protocol: 'TCP', srcPort: port(p), dstPort: port(p + 2), flags, info: '' };
  }
  if (proto === 17) {
    if (d.length < p + 8) return { protocol: 'UDP', info: 'truncated header' };
    const payload = d.subarray(p + 8, Math.min(d.length, p + 8 + 32));
    return { protocol: 'UDP', srcPort: port(p), dstPort: port(p + 2), info: printable(payload) };
  }
  if (proto === 1) return { protocol: 'ICMP', info: d.length > p ? `type ${d[p]}` : '' };
  if (proto === 58) return { protocol: 'ICMPv6', info: d.length > p ? `type ${d[p]}` : '' };
  return { protocol: `IP proto ${proto}`, info: '' };
}

/** A payload's printable ASCII, dots for the rest. */
function printable(bytes) {
  let s = '';
  for (const b of bytes) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
  return s;
}
