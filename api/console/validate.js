// The API's validation rules and messages for the Add form, so that a value is refused as it is
// typed with the words the API would use (api/src/arm/validate.rs, api/src/arm/ids.rs and the
// filter grammar of agent-client/protocol/src/filter/grammar.rs). The API stays the judge: its
// error on OK is shown at the field it names.

export const CAPTURE_FOLDER = '/var/captures';
const MAX_FILE_PATH_BYTES = 4096;
const MAX_NETWORK_NAME_CHARS = 80;
const MAX_FILTER_VALUE_CHARS = 512;
const SHOWN_CHARS = 100;
export const MAX_U32 = 4294967295;
export const DEFAULT_TIME_LIMIT = 18000;
export const MAX_FILE_COUNT = 10000;
export const MAX_SESSION_LIMIT = 604800;
const MAX_SNAPLEN = 262144;
const DEFAULT_FILE_SIZE = 104857600;

/** The API's `shown`: at most 100 characters of a value, then an ellipsis. */
function shown(s) {
  const chars = [...s];
  return chars.length > SHOWN_CHARS ? `${chars.slice(0, SHOWN_CHARS).join('')}…` : s;
}

const utf8Length = (s) => new TextEncoder().encode(s).length;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** A capture (Microsoft.Network resource) name; null when valid. */
export function captureName(name) {
  const ok = name.length > 0
    && name.length <= MAX_NETWORK_NAME_CHARS
    && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)
    && /[A-Za-z0-9_]$/.test(name);
  if (ok) return null;
  return `Resource name '${shown(name)}' of the packet capture is invalid. The name can be up to ${MAX_NETWORK_NAME_CHARS} characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.`;
}

/** A Linux capture file path (`target` is the API's field path); null when valid. */
export function capturePath(p, target = 'properties.storageLocation.filePath') {
  const rest = p.startsWith(CAPTURE_FOLDER) ? p.slice(CAPTURE_FOLDER.length) : null;
  const under = rest !== null && rest.startsWith('/') && rest.length > 1;
  const ok = under
    && p.endsWith('.cap')
    && utf8Length(p) > CAPTURE_FOLDER.length + 5
    && !CONTROL.test(p)
    && !p.includes('\\')
    && !p.split('/').some((seg) => seg === '..' || seg === '.')
    && !p.includes('//')
    && utf8Length(p) <= MAX_FILE_PATH_BYTES;
  if (ok) return null;
  void target;
  return `'${shown(p)}' is not a valid capture file path: on Linux it must start with '${CAPTURE_FOLDER}/', end in '.cap', be at most ${MAX_FILE_PATH_BYTES} bytes long, and contain no '.' or '..' segments and no control characters.`;
}

/** An integer field from 0 to `max` typed as text (blank: null, the default). */
export function integer(text, path, max) {
  const t = text.trim();
  if (t === '') return null;
  if (!/^\d+$/.test(t) || Number(t) > max) return `'${path}' must be an integer from 0 to ${max}.`;
  return null;
}

/**
 * `captureSettings.fileSizeInBytes` (blank: the default) given the text of
 * `bytesToCapturePerPacket` (blank or 0: whole packets): an integer, with room for one packet of
 * the snap length after the file's and the record's headers.
 */
export function fileSize(text, perPacketText) {
  const path = 'properties.captureSettings.fileSizeInBytes';
  const bad = integer(text, path, MAX_U32);
  if (bad) return bad;
  const size = text.trim() === '' ? DEFAULT_FILE_SIZE : Number(text.trim());
  const p = perPacketText.trim();
  const perPacket = /^\d+$/.test(p) ? Number(p) : 0;
  const snaplen = perPacket === 0 ? MAX_SNAPLEN : Math.min(perPacket, MAX_SNAPLEN);
  const smallest = 24 + 16 + snaplen;
  if (size >= smallest) return null;
  const why = perPacket === 0 ? 'whole packets, bytesToCapturePerPacket 0' : 'bytesToCapturePerPacket';
  return `'${path}' (${size}) cannot hold one packet of ${snaplen} bytes (${why}): give at least ${smallest}, or lower 'properties.bytesToCapturePerPacket'.`;
}

const FORMS = {
  address: 'use a single address "10.0.0.4", a range "10.0.0.1-10.0.0.255" or a list "10.0.0.4;10.0.0.5;" (IPv4 or IPv6; a list cannot hold a range)',
  port: 'use a single port "80", a range "80-85" or a list "80;443;" (ports from 0 to 65535; a list cannot hold a range)',
};

class ValueError extends Error {}

function parsePort(p) {
  if (p === '' || !/^[0-9]+$/.test(p) || Number(p) > 65535) throw new ValueError(`'${p}' is not a port from 0 to 65535`);
  return Number(p);
}

function ipv4(p) {
  const parts = p.split('.');
  if (parts.length !== 4) return null;
  const bytes = [];
  for (const x of parts) {
    if (!/^[0-9]{1,3}$/.test(x) || (x.length > 1 && x.startsWith('0')) || Number(x) > 255) return null;
    bytes.push(Number(x));
  }
  return bytes;
}

/** Rust's `Ipv6Addr` parser, as a 16-byte array (null if invalid). */
function ipv6(p) {
  if (!/^[0-9A-Fa-f:.]+$/.test(p)) return null;
  const halves = p.split('::');
  if (halves.length > 2) return null;
  const words = (s) => (s === '' ? [] : s.split(':'));
  const parse = (ws, allowV4) => {
    const out = [];
    for (let i = 0; i < ws.length; i += 1) {
      const w = ws[i];
      if (allowV4 && i === ws.length - 1 && w.includes('.')) {
        const v4 = ipv4(w);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9A-Fa-f]{1,4}$/.test(w)) return null;
        out.push(parseInt(w, 16));
      }
    }
    return out;
  };
  let groups;
  if (halves.length === 1) {
    groups = parse(words(halves[0]), true);
    if (!groups || groups.length !== 8) return null;
  } else {
    const head = parse(words(halves[0]), false);
    const tail = parse(words(halves[1]), true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  }
  return groups.flatMap((g) => [g >> 8, g & 255]);
}

function parseAddress(p) {
  const v4 = ipv4(p);
  if (v4) return { v4: true, bytes: v4 };
  const v6 = ipv6(p);
  if (v6) return { v4: false, bytes: v6 };
  throw new ValueError(`'${p}' is not an IP address`);
}

function compareBytes(a, b) {
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

function parseValue(s, item, range) {
  s = s.trim();
  if (s === '') throw new ValueError('the value is empty');
  if (s.includes(';')) {
    const body = s.endsWith(';') ? s.slice(0, -1) : s;
    const entries = body.split(';').map((e) => e.trim());
    if (entries.some((e) => e === '')) throw new ValueError('the list has an empty entry');
    const ranges = entries.filter((e) => e.includes('-'));
    if (ranges.length > 1) throw new ValueError('multiple ranges are not supported');
    if (ranges.length === 1) throw new ValueError(`'${ranges[0]}' is a range inside a list: mixing ranges with multiple entries is not supported`);
    entries.forEach(item);
    return;
  }
  const dash = s.indexOf('-');
  if (dash >= 0) {
    const a = s.slice(0, dash);
    const b = s.slice(dash + 1);
    if (b.includes('-')) throw new ValueError(`'${s}' is not a range: a range is two values joined by one '-'`);
    range(item(a.trim()), item(b.trim()), s);
    return;
  }
  item(s);
}

/**
 * A filter value (`kind` 'address' or 'port') of field `path`
 * (e.g. properties.filters[0].localPort); null when valid.
 */
export function filterValue(value, kind, path) {
  const len = [...value].length;
  if (len > MAX_FILTER_VALUE_CHARS) {
    return `'${path}' is ${len} characters long; a filter value may have at most ${MAX_FILTER_VALUE_CHARS}.`;
  }
  const v = value.trim();
  if (v === '') return null;
  try {
    if (kind === 'port') {
      parseValue(v, parsePort, (a, b, text) => {
        if (a > b) throw new ValueError(`the range '${text}' starts after it ends`);
      });
    } else {
      parseValue(v, parseAddress, (a, b, text) => {
        if (a.v4 !== b.v4) throw new ValueError(`the range '${text}' mixes IPv4 and IPv6 addresses`);
        if (compareBytes(a.bytes, b.bytes) > 0) throw new ValueError(`the range '${text}' starts after it ends`);
      });
    }
  } catch (e) {
    if (!(e instanceof ValueError)) throw e;
    const field = path.split('.').pop();
    const kindName = kind === 'port' ? 'port' : 'IP address';
    return `'${v}' is not a valid ${kindName} filter for '${field}' (${e.message}): ${FORMS[kind]}.`;
  }
  return null;
}
