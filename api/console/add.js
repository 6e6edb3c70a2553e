// The Add panel: the portal's fields, checked as they are typed with the API's own words
// (validate.js); OK creates the region's network watcher when there is none, then the capture.

import * as V from './validate.js';
import { COMPUTE_VERSION, STORAGE_VERSION, get, list, parseId, put, regionKey, versioned, waitOperation } from './api.js';
import { h, set, toast, trapFocus, uid } from './ui.js';
import { soon, writableSubs } from './model.js';

let addPanel = null;

async function inventory(sub) {
  const out = { vms: [], scaleSets: [], accounts: [], missing: false };
  const tryList = async (path) => {
    try { return await list(path); } catch (e) {
      if (e.status === 404) { out.missing = true; return []; }
      throw e;
    }
  };
  const [vms, ss, accounts] = await Promise.all([
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachines`, COMPUTE_VERSION)),
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachineScaleSets`, COMPUTE_VERSION)),
    tryList(versioned(`/subscriptions/${sub}/providers/Microsoft.Storage/storageAccounts`, STORAGE_VERSION)).catch(() => []),
  ]);
  out.vms = vms;
  out.scaleSets = ss;
  out.accounts = accounts;
  return out;
}

function closeAdd() {
  if (!addPanel) return;
  addPanel.release();
  addPanel.root.remove();
  addPanel = null;
  if (window.location.hash === '#/add') window.history.replaceState(null, '', '#/');
  const b = document.getElementById('add-button');
  if (b) b.focus();
}

export function openAdd() {
  if (addPanel) return;
  const titleId = uid('add-title');
  const form = h('form', { class: 'add-form', novalidate: true, 'aria-labelledby': titleId });
  const banner = h('div', { class: 'form-banner', 'aria-live': 'polite' });
  const panel = h('div', { class: 'panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': titleId },
    h('div', { class: 'panel-head' },
      h('h2', { id: titleId }, 'Add packet capture'),
      h('button', { type: 'button', class: 'btn icon', 'aria-label': 'Close', onclick: closeAdd }, '✕')),
    banner, form);
  const root = h('div', { class: 'overlay side' }, panel);
  root.addEventListener('mousedown', (e) => { if (e.target === root) closeAdd(); });
  document.body.append(root);
  addPanel = { root, release: trapFocus(panel, closeAdd) };
  buildAddForm(form, banner);
}

/** A labelled field with its inline error; `control` gets the ids. */
function field(label, control, { hint, name } = {}) {
  const id = control.id || uid('fld');
  control.id = id;
  if (name) control.name = name;
  const errId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  control.setAttribute('aria-describedby', [hintId, errId].filter(Boolean).join(' '));
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    h('p', { class: 'field-error', id: errId, dataset: { for: id } }));
}

function showError(control, message) {
  const err = document.getElementById(`${control.id}-error`);
  if (err) err.textContent = message || '';
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

async function buildAddForm(form, banner) {
  const subs = writableSubs();
  const el = {};
  el.sub = h('select', { required: true }, subs.map((s) => h('option', { value: s }, s)));
  el.rg = h('select', { required: true });
  el.targetType = h('select', {}, h('option', { value: 'AzureVM' }, 'Virtual machine'), h('option', { value: 'AzureVMSS' }, 'Virtual machine scale set'));
  el.target = h('select', { required: true });
  el.targetText = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '/subscriptions/…/providers/Microsoft.Compute/virtualMachines/vm1' });
  el.include = h('input', { type: 'text', autocomplete: 'off', placeholder: '0;1' });
  el.exclude = h('input', { type: 'text', autocomplete: 'off', placeholder: '2' });
  el.name = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', value: `capture-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}` });
  el.useStorage = h('input', { type: 'checkbox' });
  el.useFile = h('input', { type: 'checkbox', checked: true });
  el.filePath = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false' });
  el.account = h('select', {});
  el.perPacket = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', placeholder: 'whole packets' });
  el.perSession = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '1073741824' });
  el.timeLimit = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: String(V.DEFAULT_TIME_LIMIT) });
  el.continuous = h('select', {},
    h('option', { value: '' }, 'Off (one file)'),
    h('option', { value: 'true' }, 'Rolling: keep the newest files'),
    h('option', { value: 'false' }, 'Until the file count is reached'));
  el.fileCount = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '10' });
  el.fileSize = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '104857600' });
  el.session = h('input', { type: 'text', inputmode: 'numeric', autocomplete: 'off', value: '86400' });
  let pathEdited = false;
  const defaultPath = () => `/var/captures/${el.name.value || 'capture'}.cap`;
  el.filePath.value = defaultPath();
  el.filePath.addEventListener('input', () => { pathEdited = true; });
  el.name.addEventListener('input', () => { if (!pathEdited) { el.filePath.value = defaultPath(); validate('filePath'); } });

  const filters = h('div', { class: 'filter-rows', role: 'group', 'aria-label': 'Filters' });
  const filterRows = [];
  const addFilter = () => {
    const i = filterRows.length;
    const f = {
      protocol: h('select', {}, h('option', { value: 'Any' }, 'Any'), h('option', { value: 'TCP' }, 'TCP'), h('option', { value: 'UDP' }, 'UDP')),
      localIPAddress: h('input', { type: 'text', autocomplete: 'off', placeholder: '10.0.0.4' }),
      localPort: h('input', { type: 'text', autocomplete: 'off', placeholder: '80-85' }),
      remoteIPAddress: h('input', { type: 'text', autocomplete: 'off', placeholder: '10.0.0.1-10.0.0.255' }),
      remotePort: h('input', { type: 'text', autocomplete: 'off', placeholder: '80;443' }),
    };
    const legend = `Filter ${i + 1}`;
    const removeBtn = h('button', { type: 'button', class: 'btn link', 'aria-label': `Remove filter ${i + 1}` }, 'Remove');
    const box = h('fieldset', { class: 'filter-row' },
      h('legend', {}, legend),
      field('Protocol', f.protocol, { name: `filters[${i}].protocol` }),
      field('Local IP address', f.localIPAddress, { name: `filters[${i}].localIPAddress` }),
      field('Local port', f.localPort, { name: `filters[${i}].localPort` }),
      field('Remote IP address', f.remoteIPAddress, { name: `filters[${i}].remoteIPAddress` }),
      field('Remote port', f.remotePort, { name: `filters[${i}].remotePort` }),
      removeBtn);
    const entry = { f, box };
    removeBtn.addEventListener('click', () => {
      const k = filterRows.indexOf(entry);
      filterRows.splice(k, 1);
      box.remove();
      renumber();
      addFilterBtn.focus();
    });
    for (const [k, input] of Object.entries(f)) {
      if (k !== 'protocol') input.addEventListener('input', () => validateFilter(entry, k));
    }
    filterRows.push(entry);
    filters.append(box);
    f.protocol.focus();
  };
  const renumber = () => filterRows.forEach((r, k) => {
    r.box.querySelector('legend').textContent = `Filter ${k + 1}`;
    r.box.querySelector('button').setAttribute('aria-label', `Remove filter ${k + 1}`);
  });
  const validateFilter = (entry, k) => {
    const idx = filterRows.indexOf(entry);
    const kind = k.endsWith('Port') ? 'port' : 'address';
    const msg = V.filterValue(entry.f[k].value, kind, `properties.filters[${idx}].${k}`);
    showError(entry.f[k], msg);
    return !msg;
  };
  const addFilterBtn = h('button', { type: 'button', class: 'btn', id: 'add-filter', onclick: addFilter }, '+ Add filter');

  const storageFields = h('div', { class: 'field-group' });
  const fileFields = h('div', { class: 'field-group' });
  const vmssFields = h('div', { class: 'field-group' });
  const instanceBox = h('fieldset', { class: 'choice instances', hidden: true });
  let instanceChecks = [];
  const loadInstances = async () => {
    instanceChecks = [];
    instanceBox.hidden = true;
    const ss = el.targetType.value === 'AzureVMSS' && inv.scaleSets.find((m) => m.id === el.target.value);
    const link = ss && ss.properties && ss.properties.instancesLink;
    if (!link) { vmssFields.hidden = el.targetType.value !== 'AzureVMSS'; return; }
    try {
      const instances = await list(link);
      instanceChecks = instances.map((vm) => {
        const cb = h('input', { type: 'checkbox', checked: true, value: vm.instanceId });
        const p = vm.properties || {};
        return { cb, label: h('label', { class: 'check' }, cb, ` ${vm.instanceId}`, p.hostname ? ` (${p.hostname}${p.agentStatus && p.agentStatus !== 'Connected' ? `, agent ${p.agentStatus}` : ''})` : '') };
      });
      set(instanceBox, h('legend', {}, 'Instances to capture'), instanceChecks.map((i) => i.label),
        h('p', { class: 'hint' }, 'Unchecked instances are excluded; instances registered later are included unless you pick a subset.'));
      instanceBox.hidden = instanceChecks.length === 0;
      vmssFields.hidden = instanceChecks.length > 0;
    } catch {
      vmssFields.hidden = false;
    }
  };
  const continuousFields = h('div', { class: 'field-group' });
  const targetField = field('Target virtual machine', el.target, { name: 'target' });
  const targetTextField = field('Target (resource id)', el.targetText, { name: 'targetText', hint: 'This server does not list its machines: give the machine\'s resource id.' });
  const okBtn = h('button', { type: 'submit', class: 'btn primary' }, 'OK');
  const cancelBtn = h('button', { type: 'button', class: 'btn', onclick: closeAdd }, 'Cancel');
  const storageHint = h('p', { class: 'hint', id: uid('sthint') });

  set(form,
    field('Subscription', el.sub, { name: 'subscription' }),
    field('Resource group', el.rg, { name: 'resourceGroup' }),
    field('Target type', el.targetType, { name: 'targetType' }),
    targetField, targetTextField,
    instanceBox,
    set(vmssFields,
      field('Instances to include', el.include, { name: 'include', hint: 'Instance ids separated by ";" (blank: every instance).' }),
      field('Instances to exclude', el.exclude, { name: 'exclude', hint: 'Instance ids separated by ";".' })),
    field('Packet capture name', el.name, { name: 'name' }),
    h('fieldset', { class: 'choice' },
      h('legend', {}, 'Capture location'),
      h('label', { class: 'check' }, el.useStorage, ' Storage account'),
      h('label', { class: 'check' }, el.useFile, ' File'),
      h('p', { class: 'field-error', id: 'location-error' })),
    set(storageFields, field('Storage account', el.account, { name: 'storageAccount' }), storageHint),
    set(fileFields, field('Local file path', el.filePath, { name: 'filePath', hint: 'On Linux: starts with /var/captures/ and ends in .cap.' })),
    field('Maximum bytes per packet', el.perPacket, { name: 'bytesToCapturePerPacket', hint: 'Blank: whole packets.' }),
    field('Maximum bytes per session', el.perSession, { name: 'totalBytesPerSession' }),
    field('Time limit (seconds)', el.timeLimit, { name: 'timeLimitInSeconds', hint: 'Default 18,000 (5 hours).' }),
    h('details', { class: 'continuous' },
      h('summary', {}, 'Continuous capture'),
      field('Mode', el.continuous, { name: 'continuousCapture' }),
      set(continuousFields,
        field('File count', el.fileCount, { name: 'fileCount' }),
        field('File size (bytes)', el.fileSize, { name: 'fileSizeInBytes' }),
        field('Session time limit (seconds)', el.session, { name: 'sessionTimeLimitInSeconds' }))),
    h('h3', {}, 'Filters'),
    h('p', { class: 'hint' }, 'Optional. Fields of one filter must all match; a packet matching any filter is captured. Values: single, range a-b, or list a;b.'),
    filters, addFilterBtn,
    h('div', { class: 'form-actions' }, okBtn, cancelBtn));

  let inv = { vms: [], scaleSets: [], accounts: [], missing: false };
  const machines = () => (el.targetType.value === 'AzureVMSS' ? inv.scaleSets : inv.vms);
  const refreshTargets = () => {
    const rg = el.rg.value;
    const list_ = machines().filter((m) => parseId(m.id).resourceGroup === rg);
    set(el.target, list_.length
      ? list_.map((m) => h('option', { value: m.id }, `${m.name} (${m.location}${m.properties && m.properties.agentStatus && m.properties.agentStatus !== 'Connected' ? `, agent ${m.properties.agentStatus}` : ''})`))
      : h('option', { value: '' }, el.targetType.value === 'AzureVMSS' ? 'No registered scale set here' : 'No registered machine here'));
    targetField.querySelector('label').textContent = el.targetType.value === 'AzureVMSS' ? 'Target scale set' : 'Target virtual machine';
    validate('target');
    loadInstances();
  };
  const refreshGroups = () => {
    const groups = [...new Set([...inv.vms, ...inv.scaleSets].map((m) => parseId(m.id).resourceGroup))].sort();
    const keep = el.rg.value;
    set(el.rg, groups.length ? groups.map((g) => h('option', { value: g, selected: g === keep ? true : null }, g)) : h('option', { value: '' }, 'No registered machine'));
    refreshTargets();
  };
  const refreshAccounts = () => {
    set(el.account, inv.accounts.length
      ? inv.accounts.map((a) => {
        const premium = a.sku && a.sku.tier === 'Premium';
        return h('option', { value: a.id, disabled: premium ? true : null }, premium ? `${a.name} (premium: not supported for packet captures)` : a.name);
      })
      : h('option', { value: '' }, 'No registered storage account'));
    const firstOk = inv.accounts.find((a) => !(a.sku && a.sku.tier === 'Premium'));
    if (firstOk) el.account.value = firstOk.id;
    storageHint.textContent = inv.accounts.some((a) => a.sku && a.sku.tier === 'Premium')
      ? 'Premium storage accounts are shown disabled: packet captures cannot be stored in them.' : '';
  };
  const loadInventory = async () => {
    banner.replaceChildren(h('p', { role: 'status' }, 'Loading machines and storage accounts…'));
    try {
      inv = await inventory(el.sub.value);
      banner.replaceChildren();
    } catch (e) {
      banner.replaceChildren(h('p', { class: 'alert', role: 'alert' }, e.readable || e.message));
    }
    targetField.hidden = inv.missing;
    targetTextField.hidden = !inv.missing;
    refreshGroups();
    refreshAccounts();
  };
  const toggles = () => {
    storageFields.hidden = !el.useStorage.checked;
    fileFields.hidden = !el.useFile.checked;
    vmssFields.hidden = el.targetType.value !== 'AzureVMSS' || instanceChecks.length > 0;
    instanceBox.hidden = el.targetType.value !== 'AzureVMSS' || instanceChecks.length === 0;
    continuousFields.hidden = el.continuous.value === '';
    el.timeLimit.disabled = el.continuous.value !== '';
  };

  /** Checks one field as the API would; true when valid. */
  function validate(which) {
    let msg = null;
    let control = el[which];
    switch (which) {
      case 'name': msg = V.captureName(el.name.value); break;
      case 'filePath':
        if (el.useFile.checked) msg = V.capturePath(el.filePath.value, `properties.storageLocation.${el.continuous.value ? 'localPath' : 'filePath'}`);
        break;
      case 'perPacket': msg = V.integer(el.perPacket.value, 'properties.bytesToCapturePerPacket', V.MAX_U32); break;
      case 'perSession': msg = V.integer(el.perSession.value, 'properties.totalBytesPerSession', V.MAX_U32); break;
      case 'timeLimit': msg = el.continuous.value ? null : V.integer(el.timeLimit.value, 'properties.timeLimitInSeconds', V.DEFAULT_TIME_LIMIT); break;
      case 'fileCount':
        if (el.continuous.value) {
          msg = V.integer(el.fileCount.value, 'properties.captureSettings.fileCount', V.MAX_FILE_COUNT);
          if (!msg && el.fileCount.value.trim() !== '' && Number(el.fileCount.value) < 1) msg = `'properties.captureSettings.fileCount' must be between 1 and ${V.MAX_FILE_COUNT}.`;
        }
        break;
      case 'fileSize':
        if (el.continuous.value) msg = V.fileSize(el.fileSize.value, el.perPacket.value);
        break;
      case 'session':
        if (el.continuous.value) msg = V.integer(el.session.value, 'properties.captureSettings.sessionTimeLimitInSeconds', V.MAX_SESSION_LIMIT);
        break;
      case 'target':
        if (inv.missing) {
          control = el.targetText;
          msg = /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Compute\/virtualMachine(ScaleSet)?s\/[^/]+/i.test(el.targetText.value.trim()) ? null : 'Give the target machine\'s resource id.';
        } else if (!el.target.value) msg = 'Select the target machine (its agent must be registered).';
        else if (el.targetType.value === 'AzureVMSS' && instanceChecks.length && !instanceChecks.some((i) => i.cb.checked)) msg = 'Select at least one instance of the scale set.';
        break;
      case 'account':
        if (el.useStorage.checked && !el.account.value) msg = 'Select a storage account (register one with capture-api storage-accounts add).';
        break;
      case 'location': {
        const e = document.getElementById('location-error');
        const m = el.useStorage.checked || el.useFile.checked ? '' : "'properties.storageLocation' is required: give storageId, filePath or both.";
        e.textContent = m;
        return !m;
      }
      default: return true;
    }
    if (control) showError(control, msg);
    return !msg;
  }

  for (const k of ['name', 'filePath', 'perPacket', 'perSession', 'timeLimit', 'fileCount', 'fileSize', 'session']) {
    el[k].addEventListener('input', () => validate(k));
  }
  // The smallest file holds one packet of the snap length.
  el.perPacket.addEventListener('input', () => validate('fileSize'));
  el.targetText.addEventListener('input', () => validate('target'));
  el.sub.addEventListener('change', loadInventory);
  el.rg.addEventListener('change', refreshTargets);
  el.targetType.addEventListener('change', () => { toggles(); refreshTargets(); });
  el.target.addEventListener('change', () => { validate('target'); loadInstances(); });
  el.account.addEventListener('change', () => validate('account'));
  for (const k of ['useStorage', 'useFile']) el[k].addEventListener('change', () => { toggles(); validate('location'); validate('filePath'); validate('account'); });
  el.continuous.addEventListener('change', () => {
    toggles();
    for (const k of ['timeLimit', 'filePath', 'fileCount', 'fileSize', 'session']) validate(k);
  });
  toggles();
  el.sub.focus();
  await loadInventory();

  const bodyOf = () => {
    const props = {};
    const targetId = inv.missing ? el.targetText.value.trim() : el.target.value;
    props.target = targetId;
    if (el.targetType.value === 'AzureVMSS') {
      props.targetType = 'AzureVMSS';
      const ids = (s) => s.split(/[;,\s]+/).map((x) => x.trim()).filter(Boolean);
      let include = ids(el.include.value);
      let exclude = ids(el.exclude.value);
      if (instanceChecks.length) {
        const on = instanceChecks.filter((i) => i.cb.checked).map((i) => i.cb.value);
        const off = instanceChecks.filter((i) => !i.cb.checked).map((i) => i.cb.value);
        include = off.length && on.length <= off.length ? on : [];
        exclude = off.length && on.length > off.length ? off : [];
      }
      if (include.length || exclude.length) props.scope = { include, exclude };
    }
    const loc = {};
    if (el.useStorage.checked) loc.storageId = el.account.value;
    if (el.useFile.checked) loc[el.continuous.value ? 'localPath' : 'filePath'] = el.filePath.value;
    props.storageLocation = loc;
    if (el.perPacket.value.trim()) props.bytesToCapturePerPacket = Number(el.perPacket.value);
    if (el.perSession.value.trim()) props.totalBytesPerSession = Number(el.perSession.value);
    if (el.continuous.value) {
      props.continuousCapture = el.continuous.value === 'true';
      const cs = {};
      if (el.fileCount.value.trim()) cs.fileCount = Number(el.fileCount.value);
      if (el.fileSize.value.trim()) cs.fileSizeInBytes = Number(el.fileSize.value);
      if (el.session.value.trim()) cs.sessionTimeLimitInSeconds = Number(el.session.value);
      props.captureSettings = cs;
    } else if (el.timeLimit.value.trim()) {
      props.timeLimitInSeconds = Number(el.timeLimit.value);
    }
    props.filters = filterRows.map(({ f }) => {
      const out = { protocol: f.protocol.value };
      for (const k of ['localIPAddress', 'localPort', 'remoteIPAddress', 'remotePort']) {
        if (f[k].value.trim()) out[k] = f[k].value.trim();
      }
      return out;
    });
    return { properties: props };
  };

  /** The control an API error's target names. */
  const controlFor = (target, code) => {
    if (!target) return code === 'InvalidResourceName' ? el.name : null;
    const m = /^properties\.filters\[(\d+)\]\.(\w+)$/.exec(target);
    if (m && filterRows[Number(m[1])]) return filterRows[Number(m[1])].f[m[2]] || null;
    const map = {
      'properties.storageLocation.filePath': el.filePath,
      'properties.storageLocation.localPath': el.filePath,
      'properties.storageLocation.storageId': el.account,
      'properties.bytesToCapturePerPacket': el.perPacket,
      'properties.totalBytesPerSession': el.perSession,
      'properties.timeLimitInSeconds': el.timeLimit,
      'properties.target': inv.missing ? el.targetText : el.target,
      'properties.captureSettings.fileCount': el.fileCount,
      'properties.captureSettings.fileSizeInBytes': el.fileSize,
      'properties.captureSettings.sessionTimeLimitInSeconds': el.session,
      'properties.scope.include': el.include,
      'properties.scope.exclude': el.exclude,
    };
    return map[target] || null;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const checks = ['target', 'name', 'location', 'filePath', 'account', 'perPacket', 'perSession', 'timeLimit', 'fileCount', 'fileSize', 'session'].map(validate);
    const filterChecks = filterRows.flatMap((entry) => ['localIPAddress', 'localPort', 'remoteIPAddress', 'remotePort'].map((k) => validateFilter(entry, k)));
    if (![...checks, ...filterChecks].every(Boolean)) {
      banner.replaceChildren(h('p', { class: 'alert', role: 'alert' }, 'Correct the highlighted fields.'));
      const first = form.querySelector('[aria-invalid="true"]');
      if (first) first.focus();
      return;
    }
    okBtn.disabled = true;
    cancelBtn.disabled = true;
    const progress = h('p', { role: 'status', class: 'progress' });
    banner.replaceChildren(progress);
    const sub = el.sub.value;
    const body = bodyOf();
    const name = el.name.value;
    try {
      // The target's region, then that region's network watcher (created as the portal does).
      const targetId = body.properties.target;
      let region = ([...inv.vms, ...inv.scaleSets].find((m) => m.id.toLowerCase() === targetId.toLowerCase()) || {}).location;
      if (!region) {
        progress.textContent = 'Reading the target machine…';
        const vm = await get(versioned(targetId, COMPUTE_VERSION));
        region = vm.body && vm.body.location;
      }
      progress.textContent = `Finding the network watcher of ${region}…`;
      const watchers = await list(versioned(`/subscriptions/${sub}/providers/Microsoft.Network/networkWatchers`));
      let watcher = watchers.find((w) => regionKey(w.location) === regionKey(region));
      if (!watcher) {
        const wid = `/subscriptions/${sub}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_${regionKey(region)}`;
        progress.textContent = `Creating the network watcher NetworkWatcher_${regionKey(region)} (resource group NetworkWatcherRG)…`;
        const r = await put(versioned(wid), { location: region });
        watcher = r.body;
        const op = r.headers.get('azure-asyncoperation');
        if (op) await waitOperation(op);
      }
      const id = `${watcher.id}/packetCaptures/${name}`;
      progress.textContent = `Creating the packet capture ${name}…`;
      const r = await put(versioned(id), body);
      const op = r.headers.get('azure-asyncoperation');
      if (op) {
        await waitOperation(op, (st) => {
          progress.textContent = `Creating the packet capture ${name}: ${st === 'InProgress' ? 'waiting for the machine\'s agent to start it…' : st}`;
        });
      }
      toast(`Packet capture ${name} created.`);
      closeAdd();
      soon(0);
    } catch (err) {
      okBtn.disabled = false;
      cancelBtn.disabled = false;
      // A 403 names what is missing (the watcher, the target machine or the storage account):
      // shown at its field or above the form; other targets may still be allowed.
      const control = controlFor(err.target, err.code);
      if (control) showError(control, err.message);
      banner.replaceChildren(h('div', { class: 'alert', role: 'alert' },
        h('strong', {}, err.code ? `${err.code}: ` : 'Error: '), err.readable || err.message));
      (control || banner).focus?.();
    }
  });
}
