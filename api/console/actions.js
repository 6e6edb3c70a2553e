// A capture's actions: Stop, Download (through the API's download action, or the blob's link),
// Delete with a confirmation; from the list's menus and from the details page.

import { del, post, request, versioned, waitOperation } from './api.js';
import { bytes, confirmDialog, h, openMenu, toast } from './ui.js';
import { captureKey, denied, permission, queryStatus, rerender, soon, state, statusOf } from './model.js';

function actionItems(c, returnTo) {
  const st = statusOf(c);
  const stopWhy = permission(c.sub, 'stop', c.rg);
  const delWhy = permission(c.sub, 'delete', c.rg);
  return [
    { label: 'Details', action: 'details', onSelect: () => { window.location.hash = `#/captures/${encodeURIComponent(c.id)}`; } },
    {
      label: 'Stop', action: 'stop',
      disabled: st !== 'Running' || !!stopWhy,
      title: stopWhy || (st !== 'Running' ? 'Only a running capture can be stopped.' : null),
      onSelect: () => stopCapture(c),
    },
    { label: 'Download', action: 'download', onSelect: () => downloadCapture(c) },
    {
      label: 'Delete', action: 'delete', disabled: !!delWhy, title: delWhy,
      onSelect: () => deleteCapture(c, returnTo),
    },
  ];
}

export function openActions(c, { anchor, x, y, returnTo }) {
  openMenu({ items: actionItems(c, returnTo), anchor, x, y, returnTo, label: `Actions for ${c.name}` });
}

export async function stopCapture(c) {
  try {
    const r = await post(versioned(`${c.id}/stop`));
    toast(`Stopping ${c.name}…`);
    const loc = r.headers.get('azure-asyncoperation');
    if (loc) await waitOperation(loc).catch(() => {});
    await queryStatus(c);
    soon(0);
  } catch (e) {
    if (e.status === 403) denied(c.sub, c.rg, 'stop', e);
    toast(`Cannot stop ${c.name}: ${e.readable || e.message}`, 'error');
    rerender();
  }
}

/** Fetches the capture's file through the API: an ArrayBuffer (and remembers it). */
export async function fetchCaptureFile(c) {
  const r = await post(versioned(`${c.id}/download`));
  const d = r.body || {};
  if (d.source === 'StorageAccount') return { link: d.downloadUrl, expiresOn: d.expiresOn };
  const res = await request('GET', d.downloadUrl, { accept: 'application/vnd.tcpdump.pcap, application/octet-stream', raw: true });
  const buf = await res.arrayBuffer();
  state.downloads.set(captureKey(c.id), buf);
  return { buffer: buf };
}

/** The file as the machine keeps it (`fileIndex`: one file of a continuous capture). */
export async function fetchContent(c, fileIndex) {
  const q = fileIndex ? `&fileIndex=${fileIndex}` : '';
  const res = await request('GET', `${versioned(`${c.id}/content`)}${q}`, { accept: 'application/vnd.tcpdump.pcap, application/octet-stream', raw: true });
  return res.arrayBuffer();
}

export async function downloadFile(c, index) {
  try {
    const buf = await fetchContent(c, index);
    saveBytes(buf, `${c.name}_${String(index).padStart(5, '0')}.cap`);
  } catch (e) {
    toast(`Cannot download file ${index}: ${e.readable || e.message}`, 'error');
  }
}

function saveBytes(buffer, name) {
  const url = URL.createObjectURL(new Blob([buffer], { type: 'application/vnd.tcpdump.pcap' }));
  const a = h('a', { href: url, download: name, class: 'visually-hidden' }, 'download');
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export async function downloadCapture(c) {
  toast(`Downloading ${c.name}…`);
  try {
    const f = await fetchCaptureFile(c);
    if (f.link) {
      // A read-only link to the blob (another origin): the browser fetches it itself.
      const a = h('a', { href: f.link, target: '_blank', rel: 'noopener noreferrer', class: 'visually-hidden' }, 'blob');
      document.body.append(a);
      a.click();
      a.remove();
      toast(`${c.name}: opened the storage blob's download link (valid until ${f.expiresOn || 'soon'}).`);
    } else {
      saveBytes(f.buffer, `${c.name}.cap`);
      toast(`${c.name}.cap downloaded (${bytes(f.buffer.byteLength)}).`);
    }
  } catch (e) {
    toast(`Cannot download ${c.name}: ${e.readable || e.message}`, 'error');
  }
}

export async function deleteCapture(c, returnTo) {
  const why = permission(c.sub, 'delete', c.rg);
  if (why) { toast(why, 'error'); return; }
  const yes = await confirmDialog({
    title: `Delete packet capture ${c.name}?`,
    message: h('div', {},
      h('p', {}, `The capture ${c.name} is removed from the list${statusOf(c) === 'Running' ? ' and stopped' : ''}.`),
      h('p', {}, h('strong', {}, 'Its files are not deleted: '), 'the file on the machine and the blob in the storage account stay where they are.')),
  });
  if (!yes) return;
  try {
    const r = await del(versioned(c.id));
    const op = r.headers.get('azure-asyncoperation');
    if (op) await waitOperation(op);
    state.captures.delete(captureKey(c.id));
    toast(`${c.name} deleted; its files are kept.`);
    if (window.location.hash.startsWith('#/captures/')) window.location.hash = '#/';
    else rerender();
    const next = document.querySelector('.row-link') || document.getElementById('add-button');
    if (next) next.focus();
    soon(1000);
  } catch (e) {
    if (e.status === 403) denied(c.sub, c.rg, 'delete', e);
    toast(`Cannot delete ${c.name}: ${e.readable || e.message}`, 'error');
    if (returnTo && returnTo.isConnected) returnTo.focus();
    rerender();
  }
}
