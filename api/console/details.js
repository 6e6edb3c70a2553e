// A capture's details: parameters, timeline, files, a throughput chart, and the packet viewer
// (the first packets of its file, decoded in the page by pcap.js).

import { get, parseId, versioned } from './api.js';
import { PcapError, parsePcap } from './pcap.js';
import { bytes, count, duration, h, set, time, uid } from './ui.js';
import { FINAL, captureKey, durationOf, permission, queryStatus, setView, shapeCapture, state, statusOf } from './model.js';
import { statusBadge } from './list.js';
import { deleteCapture, downloadCapture, downloadFile, fetchCaptureFile, fetchContent, stopCapture } from './actions.js';

const main = document.getElementById('main');

export async function renderDetails(id) {
  const key = captureKey(id);
  setView(() => renderDetails(id));
  let c = state.captures.get(key);
  if (!c) {
    try {
      const r = await get(versioned(id));
      const p = parseId(id);
      const wid = id.split('/packetCaptures/')[0];
      const w = (await get(versioned(wid))).body;
      c = shapeCapture(r.body, w || { name: p.types[0] ? p.types[0][1] : '', id: wid, location: '' });
      state.captures.set(key, c);
      await queryStatus(c);
    } catch (e) {
      set(main, h('p', {}, h('a', { href: '#/' }, '← Packet captures')),
        h('p', { class: 'alert', role: 'alert' }, e.status === 404 ? 'This packet capture does not exist (any more).' : (e.readable || e.message)));
      return;
    }
  }
  document.title = `${c.name} · Packet capture`;
  const s = c.status || {};
  const p = c.props;
  const st = statusOf(c);
  const stopWhy = permission(c.sub, 'stop', c.rg);
  const delWhy = permission(c.sub, 'delete', c.rg);
  const loc = p.storageLocation || {};
  const dl = (pairs) => h('dl', { class: 'params' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const filters = p.filters || [];
  const files = s.continuousCaptureFiles || null;
  const singleSize = s.packetsCaptured != null && s.bytesCaptured != null ? 24 + s.bytesCaptured + 16 * s.packetsCaptured : null;
  // The packet viewer survives the page's refreshes (what it shows is the user's doing).
  let viewer = viewerOf.key === key ? viewerOf.box : null;
  const fresh = !viewer;
  if (fresh) {
    viewer = h('section', { class: 'card', 'aria-labelledby': 'viewer-title' });
    viewerOf = { key, box: viewer };
  }
  const focused = document.activeElement && document.activeElement.id;
  const scrolled = window.scrollY;
  set(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Packet captures')),
    h('div', { class: 'page-head' },
      h('h1', {}, c.name, ' ', statusBadge(st)),
      h('div', { class: 'toolbar' },
        h('button', {
          type: 'button', class: 'btn', id: 'details-stop',
          'aria-disabled': st !== 'Running' || stopWhy ? 'true' : null,
          title: stopWhy || (st !== 'Running' ? 'Only a running capture can be stopped.' : null),
          onclick: () => { if (st === 'Running' && !stopWhy) stopCapture(c); },
        }, 'Stop'),
        h('button', { type: 'button', class: 'btn', id: 'details-download', onclick: () => downloadCapture(c) }, 'Download'),
        h('button', {
          type: 'button', class: 'btn danger', id: 'details-delete',
          'aria-disabled': delWhy ? 'true' : null, title: delWhy,
          onclick: (e) => deleteCapture(c, e.currentTarget),
        }, 'Delete'))),
    h('div', { class: 'details-grid' },
      h('section', { class: 'card', 'aria-labelledby': 'params-title' },
        h('h2', { id: 'params-title' }, 'Parameters'),
        dl([
          ['Target', p.target],
          ['Target type', p.targetType],
          ['Scope', p.scope && ((p.scope.include || []).length || (p.scope.exclude || []).length)
            ? `include ${(p.scope.include || []).join(', ') || 'all'}; exclude ${(p.scope.exclude || []).join(', ') || 'none'}` : null],
          ['Subscription', c.sub], ['Resource group', c.rg], ['Network watcher', c.watcher], ['Region', c.location],
          ['Local file', loc.filePath || loc.localPath], ['Storage account', loc.storageId], ['Blob', loc.storagePath],
          ['Bytes per packet', p.bytesToCapturePerPacket ? count(p.bytesToCapturePerPacket) : 'whole packets'],
          ['Bytes per session', count(p.totalBytesPerSession)],
          ['Time limit', p.continuousCapture == null ? `${count(p.timeLimitInSeconds)} s` : null],
          ['Continuous capture', p.continuousCapture == null ? null : (p.continuousCapture ? 'rolling (keeps the newest files)' : 'until the file count is reached')],
          ['Files', p.captureSettings ? `${p.captureSettings.fileCount ?? '–'} of ${bytes(p.captureSettings.fileSizeInBytes)}; session ${count(p.captureSettings.sessionTimeLimitInSeconds)} s` : null],
          ['Provisioning state', p.provisioningState],
        ]),
        h('h3', {}, 'Filters'),
        filters.length
          ? h('table', { class: 'mini' },
            h('thead', {}, h('tr', {}, ['Protocol', 'Local IP', 'Local port', 'Remote IP', 'Remote port'].map((x) => h('th', { scope: 'col' }, x)))),
            h('tbody', {}, filters.map((f) => h('tr', {}, [f.protocol, f.localIPAddress, f.localPort, f.remoteIPAddress, f.remotePort].map((x) => h('td', {}, x || 'any'))))))
          : h('p', {}, 'None: every packet.')),
      h('section', { class: 'card', 'aria-labelledby': 'status-title' },
        h('h2', { id: 'status-title' }, 'Status'),
        dl([
          ['Status', st],
          ['Packets', count(s.packetsCaptured)], ['Bytes', bytes(s.bytesCaptured)], ['Kernel drops', count(s.kernelDrops)],
          ['Duration', duration(durationOf(c))],
        ]),
        h('h3', {}, 'Timeline'),
        h('ol', { class: 'timeline' },
          h('li', {}, 'Created', p.provisioningState ? ` (${p.provisioningState})` : ''),
          s.captureStartTime ? h('li', {}, 'Started ', time(s.captureStartTime)) : h('li', {}, 'Not started yet'),
          FINAL.has(st) ? h('li', {}, st === 'Error' ? 'Ended with an error' : 'Stopped', s.stopReason ? ` (${s.stopReason})` : '',
            s.captureStopTime ? [' ', time(s.captureStopTime)]
              : c.seenStopAt ? [' ', time(new Date(c.seenStopAt).toISOString())] : '') : null),
        (s.packetCaptureError || []).length || s.errorMessage || c.statusError
          ? h('div', { class: 'alert', role: 'alert' }, h('h3', {}, 'Errors'),
            h('p', {}, (s.packetCaptureError || []).join(', ')), s.errorMessage ? h('p', {}, s.errorMessage) : null,
            c.statusError ? h('p', {}, c.statusError) : null)
          : null,
        h('h3', {}, 'Throughput'),
        chart(c)),
      h('section', { class: 'card wide', 'aria-labelledby': 'files-title' },
        h('h2', { id: 'files-title' }, 'Files'),
        files
          ? h('table', { class: 'mini', 'aria-label': 'Capture files' },
            h('thead', {}, h('tr', {}, ['#', 'State', 'Size', 'Packets', 'First packet', 'Last packet', 'Where', 'File'].map((x) => h('th', { scope: 'col' }, x)))),
            h('tbody', {}, files.map((f) => h('tr', {},
              h('td', {}, f.index), h('td', {}, f.state), h('td', { class: 'num' }, bytes(f.sizeInBytes)), h('td', { class: 'num' }, count(f.packets)),
              h('td', {}, time(f.firstPacketTime)), h('td', {}, time(f.lastPacketTime)),
              h('td', { class: 'output' }, [f.localPath, f.blobUrl, f.message].filter(Boolean).join(' · ')),
              h('td', {}, h('button', { type: 'button', class: 'btn link', onclick: () => downloadFile(c, f.index) }, `Download file ${f.index}`))))))
          : h('ul', {}, (s.captureFiles || []).map((f) => h('li', {}, h('code', {}, f),
            singleSize !== null ? ` (${bytes(singleSize)})` : '')),
          !(s.captureFiles || []).length ? h('li', {}, 'No file yet.') : null)),
      viewer));
  if (fresh) renderViewer(viewer, c);
  window.scrollTo(0, scrolled);
  if (focused) {
    const again = document.getElementById(focused);
    if (again) again.focus({ preventScroll: true });
  }
}

let viewerOf = { key: null, box: null };

/** A small SVG chart of packets/s and bytes/s from the counters seen while the page was open. */
function chart(c) {
  const hst = c.history;
  if (hst.length < 2) {
    return h('p', { class: 'hint' }, 'The chart fills in while the console watches a running capture.');
  }
  const rates = [];
  for (let i = 1; i < hst.length; i += 1) {
    const dt = (hst[i].t - hst[i - 1].t) / 1000;
    if (dt <= 0) continue;
    rates.push({ t: hst[i].t, pps: Math.max(0, (hst[i].packets - hst[i - 1].packets) / dt), bps: Math.max(0, (hst[i].bytes - hst[i - 1].bytes) / dt) });
  }
  const W = 320; const H = 90;
  const t0 = rates[0].t; const t1 = rates[rates.length - 1].t || t0 + 1;
  const line = (key, cls) => {
    const max = Math.max(1, ...rates.map((r) => r[key]));
    const pts = rates.map((r) => `${((r.t - t0) / Math.max(1, t1 - t0)) * W},${H - (r[key] / max) * (H - 6) - 3}`).join(' ');
    return h('svg:polyline', { points: pts, class: cls, fill: 'none' });
  };
  const maxP = Math.max(...rates.map((r) => r.pps));
  const maxB = Math.max(...rates.map((r) => r.bps));
  return h('figure', { class: 'chart' },
    h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Packets per second (peak ${maxP.toFixed(1)}) and bytes per second (peak ${bytes(Math.round(maxB))}/s)` },
      h('svg:line', { x1: 0, y1: H - 1, x2: W, y2: H - 1, class: 'axis' }),
      line('pps', 'pps'), line('bps', 'bps')),
    h('figcaption', {}, h('span', { class: 'key pps' }, 'packets/s'), ` peak ${maxP.toFixed(1)} · `,
      h('span', { class: 'key bps' }, 'bytes/s'), ` peak ${bytes(Math.round(maxB))}/s`));
}

// ---------------------------------------------------------------------------------------------
// The packet viewer

function renderViewer(box, c) {
  const out = h('div', { class: 'viewer-out' });
  const fileId = uid('pcapfile');
  const fileInput = h('input', { type: 'file', id: fileId, accept: '.cap,.pcap,application/vnd.tcpdump.pcap' });
  fileInput.addEventListener('change', async () => {
    const f = fileInput.files && fileInput.files[0];
    if (f) showPackets(out, await f.arrayBuffer(), f.name);
  });
  const load = h('button', {
    type: 'button', class: 'btn', id: 'view-packets',
    onclick: async () => {
      set(out, h('p', { role: 'status' }, 'Fetching the capture file…'));
      try {
        const f = await fetchCaptureFile(c);
        if (f.link) {
          // In a storage account (another origin): the machine's copy, when it kept one.
          try {
            const buf = await fetchContent(c);
            state.downloads.set(captureKey(c.id), buf);
            showPackets(out, buf, `${c.name}.cap`);
          } catch {
            set(out, h('p', {}, 'This capture is in a storage account and its machine kept no copy: download it, then open it here with the file picker.'));
          }
          return;
        }
        showPackets(out, f.buffer, `${c.name}.cap`);
      } catch (e) {
        set(out, h('p', { class: 'alert', role: 'alert' }, `Cannot fetch the file: ${e.readable || e.message}`));
      }
    },
  }, 'Show the first packets');
  set(box,
    h('h2', { id: 'viewer-title' }, 'Packets'),
    h('div', { class: 'toolbar' }, load,
      h('span', { class: 'or' }, 'or'),
      h('label', { for: fileId, class: 'file-label' }, 'open a .cap file from this computer'), fileInput),
    out);
  const cached = state.downloads.get(captureKey(c.id));
  if (cached) showPackets(out, cached, `${c.name}.cap`);
}

function showPackets(out, buffer, name) {
  let r;
  try {
    r = parsePcap(buffer, 200);
  } catch (e) {
    if (!(e instanceof PcapError)) throw e;
    set(out, h('p', { class: 'alert', role: 'alert' }, `${name}: ${e.message}`));
    return;
  }
  const ports = (p) => (p.srcPort !== undefined ? `${p.srcPort} → ${p.dstPort}` : '');
  set(out,
    h('p', {}, `${name}: ${count(r.total)} packets (${r.linktype}, ${bytes(buffer.byteLength)})`,
      r.total > r.packets.length ? `; the first ${r.packets.length} are shown` : '', '. ',
      'For anything more, open the file in Wireshark.'),
    r.message ? h('p', { class: 'alert', role: 'alert' }, r.message) : null,
    r.packets.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'packets', 'aria-label': 'Packets' },
        h('thead', {}, h('tr', {}, ['No.', 'Time (s)', 'Source', 'Destination', 'Protocol', 'Ports', 'Length', 'TCP flags', 'Info']
          .map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', {}, r.packets.map((p) => h('tr', {},
          h('td', { class: 'num' }, p.number),
          h('td', { class: 'num' }, p.relative.toFixed(6)),
          h('td', {}, p.src || ''), h('td', {}, p.dst || ''),
          h('td', {}, p.protocol), h('td', {}, ports(p)),
          h('td', { class: 'num' }, p.length),
          h('td', {}, p.flags || ''),
          h('td', { class: 'info' }, p.info || ''))))))
      : h('p', {}, 'The file holds no packets.'));
}
