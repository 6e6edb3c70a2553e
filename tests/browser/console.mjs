// The web console in a real Chromium, against the real server, PostgreSQL and agent that
// tests/tests/e2e/console.rs starts: headers, sign-in, the list, Add (validation and a real
// capture), Stop, Download, the packet viewer, Delete, a Reader, sign-out, layouts and axe.
import dgram from 'node:dgram';
import { spawnSync } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { assert, axe, env, forceRefresh, launch, log, newPage, noProblems, screenshot, step } from './lib.mjs';

const URL0 = env('CONSOLE_URL').replace(/\/$/, '');
const OWNER_TOKEN = env('OWNER_TOKEN');
const READER_TOKEN = env('READER_TOKEN');
const SUB = env('SUB');
const VM = env('VM_ID');
const STORAGE_ID = env('STORAGE_ID');
const DOWNLOAD_TO = env('DOWNLOAD_TO');
const SIGNIN_USER = process.env.SIGNIN_USER;
const SIGNIN_PASSWORD = process.env.SIGNIN_PASSWORD;
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const NAME = 'console-pc';

const row = (page, name) => page.locator(`tr[data-capture$="/packetcaptures/${name}"]`);

async function api(method, path, body, token = OWNER_TOKEN) {
  const r = await fetch(`${URL0}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

function sendUdp(tags) {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.bind(47000, '127.0.7.2', async () => {
      try {
        for (const t of tags) {
          await new Promise((r, j) => s.send(Buffer.from(`${t}`.padEnd(64, '.')), 57000, '127.0.7.9', (e) => (e ? j(e) : r())));
        }
        s.close(resolve);
      } catch (e) { reject(e); }
    });
  });
}

async function signIn(page) {
  await page.goto(`${URL0}/`);
  const config = await fetch(`${URL0}/console/config.json`);
  if (config.ok && SIGNIN_USER) {
    log('signing in through the authorize page');
    await page.click('#sign-in');
    await page.waitForURL((u) => u.pathname.endsWith('/oauth2/v2.0/authorize'), { timeout: 10000 });
    const q = new URL(page.url()).searchParams;
    assert(q.get('code_challenge_method') === 'S256' && q.get('code_challenge').length === 43 && q.get('state'), `a PKCE request: ${page.url()}`);
    await axe(page, 'authorize page');
    await page.getByLabel('User name').fill(SIGNIN_USER);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByLabel('Password').waitFor();
    await page.getByLabel('Password').fill(SIGNIN_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => u.pathname === '/' && !u.searchParams.has('code'), { timeout: 15000 });
    return 'oauth';
  }
  log('no sign-in flow on this server yet: using the access token form');
  await page.locator('details.advanced summary').click().catch(() => {});
  await page.getByLabel('Access token', { exact: true }).fill(OWNER_TOKEN);
  await page.getByRole('button', { name: 'Use this token' }).click();
  return 'token';
}

const browser = await launch();
const started = Date.now();
try {
  await step('console headers and caching', async () => {
    const r = await fetch(`${URL0}/`);
    assert(r.status === 200, `GET / answered ${r.status}`);
    const html = await r.text();
    for (const [k, v] of [['content-security-policy', CSP], ['x-content-type-options', 'nosniff'], ['referrer-policy', 'no-referrer']]) {
      assert(r.headers.get(k) === v, `${k}: ${r.headers.get(k)}`);
    }
    assert(/text\/html/.test(r.headers.get('content-type')), 'html');
    assert(r.headers.get('cache-control') === 'no-cache', `index cache-control ${r.headers.get('cache-control')}`);
    const etag = r.headers.get('etag');
    assert(etag, 'an ETag on the page');
    const again = await fetch(`${URL0}/`, { headers: { 'If-None-Match': etag } });
    assert(again.status === 304, `If-None-Match answered ${again.status}`);
    assert(again.headers.get('content-security-policy') === CSP, 'CSP on 304');
    assert(!/<script>|<style|style=|\son[a-z]+=/i.test(html), 'no inline script, style or handler in the page');
    const js = html.match(/\/console\/app\.js\?v=([0-9a-f]+)/);
    assert(js, 'the page names app.js by hash');
    const a = await fetch(`${URL0}/console/app.js?v=${js[1]}`);
    assert(a.status === 200 && /javascript/.test(a.headers.get('content-type')), 'app.js');
    assert(/immutable/.test(a.headers.get('cache-control')), `versioned asset cache ${a.headers.get('cache-control')}`);
    assert(a.headers.get('content-security-policy') === CSP, 'CSP on assets');
    assert(a.headers.get('x-content-type-options') === 'nosniff', 'nosniff on assets');
    // Compressed at build time: gzip when accepted (fetch decodes it), else the plain bytes.
    assert(a.headers.get('content-encoding') === 'gzip', `app.js content-encoding ${a.headers.get('content-encoding')}`);
    assert(/accept-encoding/i.test(a.headers.get('vary') || ''), 'Vary: Accept-Encoding');
    const plain = await fetch(`${URL0}/console/app.js?v=${js[1]}`, { headers: { 'Accept-Encoding': 'identity' } });
    assert(!plain.headers.get('content-encoding'), 'identity gets no encoding');
    assert(plain.headers.get('etag') !== a.headers.get('etag'), 'each representation has its ETag');
    assert(await plain.text() === await a.text(), 'gzip holds the same app.js');
    const unversioned = await fetch(`${URL0}/console/ui.js`);
    assert(unversioned.headers.get('cache-control') === 'no-cache' && unversioned.headers.get('etag'), 'modules revalidate');
    const none = await fetch(`${URL0}/console/nope.js`);
    assert(none.status === 404, 'unknown assets are 404');
    // The page is public, the API is not.
    const apiCall = await fetch(`${URL0}/subscriptions?api-version=2022-12-01`);
    assert(apiCall.status === 401, `the API without a token answered ${apiCall.status}`);
  });

  const { context, page } = await newPage(browser);
  let kind;
  await step('first load: size and time', async () => {
    const t0 = Date.now();
    await page.goto(`${URL0}/`);
    await page.locator('.signin').waitFor();
    const interactive = Date.now() - t0;
    // Bytes over the wire (headers included) of the page and everything it loaded.
    const transferred = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      return nav.transferSize + performance.getEntriesByType('resource').reduce((a, r) => a + r.transferSize, 0);
    });
    const files = await page.evaluate(() => performance.getEntriesByType('resource').map((r) => r.name.replace(location.origin, '')));
    assert(files.some((f) => f.startsWith('/console/app.js')) && files.some((f) => f.startsWith('/console/app.css')), `loaded: ${files}`);
    log(`first load: ${transferred} bytes, interactive in ${interactive} ms`);
    assert(transferred < 300 * 1024, `first load ${transferred} bytes`);
    assert(interactive < 3000, `interactive after ${interactive} ms`);
    await axe(page, 'sign-in page');
  });

  await step('sign in', async () => {
    kind = await signIn(page);
    await page.locator('#sign-out').waitFor({ timeout: 10000 });
    const stored = await page.evaluate(() => ({ local: localStorage.length, cookies: document.cookie }));
    assert(stored.local === 0 && stored.cookies === '', `tokens only in sessionStorage: ${JSON.stringify(stored)}`);
    if (kind === 'oauth') {
      // The access token is refreshed before it expires (the refresh token rotates).
      await forceRefresh(page);
      log('the session was refreshed before its expiry');
      await page.locator('#sign-out').waitFor();
    }
  });

  await step('the list shows captures of every status', async () => {
    for (const [name, status] of [['seen-running', 'Running'], ['seen-stopped', 'Stopped'], ['seen-error', 'Error'], ['seen-notstarted', 'NotStarted']]) {
      await row(page, name).and(page.locator(`[data-status="${status}"]`)).waitFor({ timeout: 15000 });
    }
    const reason = await row(page, 'seen-stopped').locator('.reason').textContent();
    assert(/StoppedByUser/.test(reason), `stop reason shown: ${reason}`);
    const err = await row(page, 'seen-error').locator('.reason').textContent();
    assert(err.trim().length > 0, 'the error is shown');
    const out = await row(page, 'seen-running').locator('.output').textContent();
    assert(/\/var\/captures\//.test(out), `where the file goes: ${out}`);
    await axe(page, 'captures list');
    await screenshot(page, 'console-list');
  });

  await step('search, filter and sort', async () => {
    await page.getByLabel('Search').fill('seen-err');
    await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1);
    await page.getByLabel('Search').fill('');
    await page.getByLabel('Status', { exact: true }).selectOption('Running');
    await page.waitForFunction(() => [...document.querySelectorAll('tbody tr')].every((r) => r.dataset.status === 'Running'));
    await page.getByLabel('Status', { exact: true }).selectOption('');
    await page.locator('button.sort[data-key="name"]').click();
    const names = await page.locator('tbody .row-link').allTextContents();
    assert(JSON.stringify(names) === JSON.stringify([...names].sort()), `sorted by name: ${names}`);
    assert(await page.locator('th[aria-sort="ascending"] button[data-key="name"]').count() === 1, 'aria-sort');
  });

  await step('Add: the API\'s messages inline, nothing created', async () => {
    const puts = [];
    page.on('request', (r) => { if (r.method() === 'PUT') puts.push(r.url()); });
    await page.getByRole('button', { name: '+ Add' }).click();
    const panel = page.getByRole('dialog', { name: 'Add packet capture' });
    await panel.waitFor();
    await panel.getByLabel('Target virtual machine').locator('option').first().waitFor({ state: 'attached' });
    // A scale set: its registered instances to pick from.
    await panel.getByLabel('Target type').selectOption('AzureVMSS');
    await panel.getByLabel('Target scale set').locator('option', { hasText: 'ss1' }).waitFor({ state: 'attached' });
    await panel.getByRole('group', { name: 'Instances to capture' }).getByLabel(/^ ?0/).waitFor();
    await panel.getByLabel('Target type').selectOption('AzureVM');
    await panel.getByLabel('Target virtual machine').locator('option', { hasText: 'vm1' }).waitFor({ state: 'attached' });
    await panel.getByLabel('Packet capture name').fill(NAME);
    // What the API says about a bad local path and a bad port range.
    const probe = (props) => api('PUT', `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/console-invalid?api-version=2026-03-01`,
      { properties: { target: VM, storageLocation: { filePath: '/var/captures/x.cap' }, ...props } });
    const badPath = await probe({ storageLocation: { filePath: '/tmp/console.cap' } });
    assert(badPath.status === 400, `the API refuses the path: ${JSON.stringify(badPath.body)}`);
    const badPort = await probe({ filters: [{ protocol: 'UDP', localPort: '90-80' }] });
    assert(badPort.status === 400, `the API refuses the port range: ${JSON.stringify(badPort.body)}`);
    await panel.getByLabel('Local file path').fill('/tmp/console.cap');
    const pathError = panel.locator(`[id="${await panel.getByLabel('Local file path').getAttribute('id')}-error"]`);
    assert((await pathError.textContent()) === badPath.body.error.message, `inline path message:\n${await pathError.textContent()}\nAPI:\n${badPath.body.error.message}`);
    await panel.getByRole('button', { name: '+ Add filter' }).click();
    const f1 = panel.locator('fieldset.filter-row').nth(0);
    await f1.getByLabel('Protocol').selectOption('UDP');
    await f1.getByLabel('Local port').fill('90-80');
    const portError = f1.locator(`[id="${await f1.getByLabel('Local port').getAttribute('id')}-error"]`);
    assert((await portError.textContent()) === badPort.body.error.message, `inline port message:\n${await portError.textContent()}\nAPI:\n${badPort.body.error.message}`);
    await axe(page, 'add panel with errors');
    await panel.getByRole('button', { name: 'OK' }).click();
    await panel.locator('.form-banner .alert').waitFor();
    assert(puts.length === 0, `nothing was sent: ${puts}`);
    assert(await panel.getByLabel('Packet capture name').inputValue() === NAME, 'the form keeps its values');
    const listed = await api('GET', `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures?api-version=2026-03-01`);
    assert(!listed.body.value.some((c) => c.name === NAME || c.name === 'console-invalid'), 'no capture was created');
  });

  await step('Add with two filters and both outputs: it runs and its counters rise', async () => {
    const panel = page.getByRole('dialog', { name: 'Add packet capture' });
    await panel.getByLabel('Local file path').fill(`/var/captures/${NAME}.cap`);
    const f1 = panel.locator('fieldset.filter-row').nth(0);
    await f1.getByLabel('Local IP address').fill('127.0.7.2');
    await f1.getByLabel('Local port').fill('47000');
    await panel.getByRole('button', { name: '+ Add filter' }).click();
    const f2 = panel.locator('fieldset.filter-row').nth(1);
    await f2.getByLabel('Protocol').selectOption('TCP');
    await f2.getByLabel('Local port').fill('47001');
    await panel.getByLabel('Storage account', { exact: true }).first().check();
    const account = panel.locator('select[name="storageAccount"]');
    await account.selectOption(STORAGE_ID);
    const premium = await account.locator('option[disabled]').allTextContents();
    assert(premium.some((t) => /premium/i.test(t)), `the premium account is shown disabled: ${premium}`);
    assert(await panel.locator('[aria-invalid="true"]').count() === 0, 'no field is invalid');
    await screenshot(page, 'console-add');
    await panel.getByRole('button', { name: 'OK' }).click();
    await panel.waitFor({ state: 'detached', timeout: 30000 });
    await row(page, NAME).and(page.locator('[data-status="Running"]')).waitFor({ timeout: 15000 });
    const created = await api('GET', `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/${NAME}?api-version=2026-03-01`);
    const p = created.body.properties;
    assert(p.filters.length === 2 && p.storageLocation.storageId && p.storageLocation.filePath, `created as asked: ${JSON.stringify(p)}`);
    await sendUdp(['console-0', 'console-1', 'console-2', 'console-3', 'console-4']);
    const packets = row(page, NAME).locator('td.packets');
    const sel = `tr[data-capture$="/packetcaptures/${NAME}"] td.packets`;
    const atLeast = (n) => page.waitForFunction(([s, k]) => {
      const el = document.querySelector(s);
      return el && Number(el.textContent.replace(/\D/g, '')) >= k;
    }, [sel, n], { timeout: 15000 });
    await atLeast(5);
    const first = Number((await packets.textContent()).replace(/\D/g, ''));
    await sendUdp(['console-5', 'console-6', 'console-7', 'console-8', 'console-9']);
    await atLeast(first + 5);
    log(`counters rose from ${first} to ${await packets.textContent()}`);
  });

  await step('Stop from the "..." menu: Stopped with its reason', async () => {
    await row(page, NAME).getByRole('button', { name: `Actions for ${NAME}` }).click();
    const menu = page.getByRole('menu');
    await menu.waitFor();
    await menu.getByRole('menuitem', { name: 'Stop' }).click();
    await row(page, NAME).and(page.locator('[data-status="Stopped"]')).waitFor({ timeout: 20000 });
    const reason = await row(page, NAME).locator('.reason').textContent();
    assert(/StoppedByUser/.test(reason), `reason: ${reason}`);
  });

  let fileBytes;
  await step('Download from the right-click menu: a pcap file', async () => {
    await row(page, NAME).locator('td.output').click({ button: 'right' });
    const menu = page.getByRole('menu');
    await menu.waitFor();
    const download = page.waitForEvent('download', { timeout: 20000 }).then((d) => ({ d }));
    const popup = context.waitForEvent('page', { timeout: 20000 }).then((p) => ({ p }));
    await menu.getByRole('menuitem', { name: 'Download' }).click();
    const got = await Promise.race([download, popup]);
    if (got.d) {
      await got.d.saveAs(DOWNLOAD_TO);
      log(`downloaded ${got.d.suggestedFilename()}`);
    } else {
      const url = got.p.url();
      await got.p.close();
      log(`a link to the storage blob: ${url.split('?')[0]}`);
      const r = await fetch(url);
      assert(r.ok, `the blob link answered ${r.status}`);
      writeFileSync(DOWNLOAD_TO, Buffer.from(await r.arrayBuffer()));
    }
    fileBytes = readFileSync(DOWNLOAD_TO);
    assert(fileBytes.length > 24, `downloaded ${fileBytes.length} bytes`);
    console.log(`DOWNLOADED ${DOWNLOAD_TO}`);
  });

  await step('details and the packet table', async () => {
    await row(page, NAME).locator('.row-link').click();
    await page.getByRole('heading', { level: 1, name: new RegExp(NAME) }).waitFor();
    await page.getByRole('heading', { name: 'Parameters' }).waitFor();
    await page.getByRole('button', { name: 'Show the first packets' }).click();
    const table = page.getByRole('table', { name: 'Packets' });
    // Both outputs: the machine kept its copy, which the viewer reads through the API.
    await table.waitFor({ timeout: 15000 });
    const text = await table.textContent();
    for (const want of ['127.0.7.2', '127.0.7.9', 'UDP', '47000 → 57000', 'console-0']) assert(text.includes(want), `the packet table shows ${want}`);
    await axe(page, 'details page');
    await page.evaluate(() => window.scrollTo(0, 0));
    await screenshot(page, 'console-details', { fullPage: true });
    // The downloaded file, opened from this computer, shows the same packets.
    await page.locator('input[type="file"]').setInputFiles(DOWNLOAD_TO);
    await page.getByText(/^console-pc\.cap: 10 packets/).waitFor();
    await page.locator('input[type="file"]').setInputFiles({ name: 'bad.cap', mimeType: 'application/octet-stream', buffer: Buffer.from('this is not a capture file at all') });
    await page.getByText(/not a pcap file/).waitFor();
    await page.locator('input[type="file"]').setInputFiles({ name: 'cut.cap', mimeType: 'application/octet-stream', buffer: fileBytes.subarray(0, fileBytes.length - 10) });
    await page.getByText(/truncated/).waitFor();
  });

  await step('Delete by keyboard: confirmation, then gone', async () => {
    await page.goto(`${URL0}/#/`);
    const link = row(page, NAME).locator('.row-link');
    await link.focus();
    await page.keyboard.press('Shift+F10');
    const menu = page.getByRole('menu');
    await menu.waitFor();
    await page.keyboard.press('End');
    const focused = await page.evaluate(() => document.activeElement.textContent);
    assert(/Delete/.test(focused), `End reaches Delete: ${focused}`);
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('alertdialog');
    await dialog.waitFor();
    assert(/not deleted/.test(await dialog.textContent()), 'the dialog says files are not deleted');
    await axe(page, 'delete confirmation');
    await dialog.getByRole('button', { name: 'No' }).click();
    assert(await row(page, NAME).count() === 1, 'No keeps it');
    await link.focus();
    await page.keyboard.press('Delete');
    await dialog.getByRole('button', { name: 'Yes' }).click();
    await row(page, NAME).waitFor({ state: 'detached', timeout: 15000 });
    const gone = await api('GET', `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/${NAME}?api-version=2026-03-01`);
    assert(gone.status === 404, `deleted: ${gone.status}`);
  });

  const capturePath = (name) => `/subscriptions/${SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw1/packetCaptures/${name}?api-version=2026-03-01`;
  const openAdd = async () => {
    await page.goto(`${URL0}/#/`);
    await page.locator('#add-button').click();
    const panel = page.getByRole('dialog', { name: 'Add packet capture' });
    await panel.waitFor();
    await panel.getByLabel('Target virtual machine').locator('option', { hasText: 'vm1' }).waitFor({ state: 'attached' });
    return panel;
  };

  await step('Add on a scale set, one instance of two: created as picked, it runs there', async () => {
    const panel = await openAdd();
    await panel.getByLabel('Target type').selectOption('AzureVMSS');
    await panel.getByLabel('Target scale set').locator('option', { hasText: 'ss1' }).waitFor({ state: 'attached' });
    const instances = panel.getByRole('group', { name: 'Instances to capture' });
    await instances.getByLabel(/^ ?1/).waitFor();
    await instances.getByLabel(/^ ?1/).uncheck();
    await panel.getByLabel('Packet capture name').fill('console-ss');
    assert(await panel.getByLabel('Local file path').inputValue() === '/var/captures/console-ss.cap', 'the path follows the name');
    await panel.getByRole('button', { name: 'OK' }).click();
    await panel.waitFor({ state: 'detached', timeout: 30000 });
    await row(page, 'console-ss').and(page.locator('[data-status="Running"]')).waitFor({ timeout: 20000 });
    const p = (await api('GET', capturePath('console-ss'))).body.properties;
    assert(p.targetType === 'AzureVMSS' && /virtualMachineScaleSets\/ss1$/.test(p.target), `a scale set capture: ${JSON.stringify(p)}`);
    assert(p.scope.include.length === 1 && /\/ss1\/virtualMachines\/0$/.test(p.scope.include[0]) && p.scope.exclude.length === 0, `instance 0 only: ${JSON.stringify(p.scope)}`);
    assert((await api('POST', capturePath('console-ss').replace('?', '/stop?'))).status < 300, 'stopped');
  });

  await step('Add a rolling capture: its settings sent, its files in the details', async () => {
    const panel = await openAdd();
    await panel.getByLabel('Packet capture name').fill('console-ring');
    await panel.getByLabel('Maximum bytes per packet').fill('128');
    await panel.locator('details.continuous summary').click();
    await panel.getByLabel('Mode', { exact: true }).selectOption('true');
    assert(await panel.getByLabel('Time limit (seconds)', { exact: true }).isDisabled(), 'the session limit replaces the time limit');
    await panel.getByLabel('File count', { exact: true }).fill('3');
    await panel.getByLabel('File size (bytes)', { exact: true }).fill('1');
    const sizeError = panel.locator(`[id="${await panel.getByLabel('File size (bytes)', { exact: true }).getAttribute('id')}-error"]`);
    assert((await sizeError.textContent()).length > 0, 'a file too small for one packet is refused as typed');
    await panel.getByLabel('File size (bytes)', { exact: true }).fill('1000');
    await panel.getByLabel('Session time limit (seconds)', { exact: true }).fill('600');
    await panel.getByRole('button', { name: '+ Add filter' }).click();
    const f1 = panel.locator('fieldset.filter-row').nth(0);
    await f1.getByLabel('Protocol').selectOption('UDP');
    await f1.getByLabel('Local IP address').fill('127.0.7.2');
    assert(await panel.locator('[aria-invalid="true"]').count() === 0, 'no field is invalid');
    await panel.getByRole('button', { name: 'OK' }).click();
    await panel.waitFor({ state: 'detached', timeout: 30000 });
    await row(page, 'console-ring').and(page.locator('[data-status="Running"]')).waitFor({ timeout: 20000 });
    const p = (await api('GET', capturePath('console-ring'))).body.properties;
    assert(p.continuousCapture === true && p.storageLocation.localPath === '/var/captures/console-ring.cap'
      && JSON.stringify(p.captureSettings) === JSON.stringify({ fileCount: 3, fileSizeInBytes: 1000, sessionTimeLimitInSeconds: 600 })
      && p.bytesToCapturePerPacket === 128, `created as asked: ${JSON.stringify(p)}`);
    // About 8 datagrams a file: 40 make 5 or more files, of which the ring keeps the newest 3.
    await sendUdp(Array.from({ length: 40 }, (_, i) => `ring-${i}`));
    await row(page, 'console-ring').locator('.row-link').click();
    await page.getByRole('heading', { level: 1, name: /console-ring/ }).waitFor();
    const files = page.getByRole('table', { name: 'Capture files' });
    await page.waitForFunction(() => {
      const t = document.querySelector('table[aria-label="Capture files"]');
      return t && t.querySelectorAll('tbody tr').length === 3 && /_0000[5-9]\.cap|_000[1-9][0-9]\.cap/.test(t.textContent);
    }, null, { timeout: 20000 });
    const text = await files.textContent();
    assert(!/console-ring_00001\.cap/.test(text), `the first file left the ring: ${text}`);
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.getByText('StoppedByUser').first().waitFor({ timeout: 20000 });
    await axe(page, 'details of a rolling capture');
  });

  await step('a real 403: the role removed while the page is open', async () => {
    const { context: c6, page: p6 } = await newPage(browser);
    await p6.goto(`${URL0}/`);
    await p6.locator('details.advanced summary').click().catch(() => {});
    await p6.getByLabel('Access token', { exact: true }).fill(env('RG_CONTRIBUTOR_TOKEN'));
    await p6.getByRole('button', { name: 'Use this token' }).click();
    await row(p6, 'seen-stopped').waitFor({ timeout: 15000 });
    // Network Contributor of rg1 (Reader of the subscription): Add and Delete are enabled.
    await p6.waitForFunction(() => document.querySelector('#add-button') && document.querySelector('#add-button').getAttribute('aria-disabled') !== 'true');
    await row(p6, 'seen-stopped').getByRole('button', { name: 'Actions for seen-stopped' }).click();
    const item = p6.getByRole('menu').getByRole('menuitem', { name: /^Delete/ });
    assert(await item.getAttribute('aria-disabled') === null, 'Delete is enabled for a Network Contributor of the resource group');
    const argv = JSON.parse(env('REVOKE'));
    const run = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env: { ...process.env, DATABASE_URL: '' } });
    assert(run.status === 0, `revoking the role: ${run.stderr}`);
    await item.click();
    const dialog = p6.getByRole('alertdialog');
    await dialog.getByRole('button', { name: 'Yes' }).click();
    const message = p6.locator('.toast.error').filter({ hasText: 'seen-stopped' });
    await message.waitFor({ timeout: 15000 });
    const said = await message.textContent();
    assert(/does not have authorization to perform action 'Microsoft\.Network\/networkWatchers\/packetCaptures\/delete'/.test(said), `the 403 reads as a sentence: ${said}`);
    assert(await row(p6, 'seen-stopped').count() === 1, 'the capture is still listed');
    assert((await api('GET', capturePath('seen-stopped'))).status === 200, 'the capture is still there');
    await row(p6, 'seen-stopped').getByRole('button', { name: 'Actions for seen-stopped' }).click();
    const again = p6.getByRole('menu').getByRole('menuitem', { name: /^Delete/ });
    assert(await again.getAttribute('aria-disabled') === 'true', 'Delete is disabled after the 403');
    assert(/does not have authorization/.test(await again.getAttribute('title')), 'and says why');
    await p6.keyboard.press('Escape');
    noProblems(p6);
    await c6.close();
  });

  await step('390 px and dark', async () => {
    const { context: c2, page: p2 } = await newPage(browser, { width: 390, height: 844, colorScheme: 'dark' });
    await p2.goto(`${URL0}/`);
    await p2.locator('details.advanced summary').click().catch(() => {});
    await p2.getByLabel('Access token', { exact: true }).fill(OWNER_TOKEN);
    await p2.getByRole('button', { name: 'Use this token' }).click();
    await row(p2, 'seen-running').waitFor();
    const overflow = await p2.evaluate(() => document.documentElement.scrollWidth);
    assert(overflow <= 392, `no sideways scrolling at 390 px (${overflow})`);
    await axe(p2, 'list at 390 px, dark');
    await screenshot(p2, 'console-list-phone');
    noProblems(p2);
    await c2.close();
  });

  await step('a Reader cannot add, stop or delete', async () => {
    const { context: c3, page: p3 } = await newPage(browser);
    await p3.goto(`${URL0}/`);
    await p3.locator('details.advanced summary').click().catch(() => {});
    await p3.getByLabel('Access token', { exact: true }).fill(READER_TOKEN);
    await p3.getByRole('button', { name: 'Use this token' }).click();
    await row(p3, 'seen-running').waitFor({ timeout: 15000 });
    const add = p3.locator('#add-button');
    await p3.waitForFunction(() => document.querySelector('#add-button')?.getAttribute('aria-disabled') === 'true', null, { timeout: 10000 });
    assert(/packetCaptures\/write/.test(await add.getAttribute('title')), 'Add names the missing permission');
    await row(p3, 'seen-running').getByRole('button', { name: 'Actions for seen-running' }).click();
    const menu = p3.getByRole('menu');
    for (const [item, perm] of [['Stop', 'stop/action'], ['Delete', 'packetCaptures/delete']]) {
      const mi = menu.getByRole('menuitem', { name: new RegExp(`^${item}`) });
      assert(await mi.getAttribute('aria-disabled') === 'true', `${item} is disabled for a Reader`);
      assert((await mi.getAttribute('title')).includes(perm), `${item} names ${perm}`);
    }
    assert(await menu.getByRole('menuitem', { name: 'Download' }).getAttribute('aria-disabled') === null, 'a Reader can download');
    await p3.keyboard.press('Escape');
    noProblems(p3);
    await c3.close();
  });

  await step('sign out', async () => {
    const before = await page.evaluate(() => sessionStorage.getItem('capture-console.session'));
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('.signin').waitFor();
    const after = await page.evaluate(() => sessionStorage.getItem('capture-console.session'));
    assert(after === null, 'the session is forgotten');
    if (kind === 'oauth') {
      const s = JSON.parse(before);
      const cfg = await (await fetch(`${URL0}/console/config.json`)).json();
      log(`checking that the refresh token is revoked (${Object.keys(cfg)})`);
      const tokenUrl = cfg.tokenEndpoint || (cfg.endpoints && cfg.endpoints.token);
      if (tokenUrl) {
        const r = await fetch(new URL(tokenUrl, URL0), {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: s.refreshToken, client_id: cfg.clientId }),
        });
        assert(r.status >= 400, `the refresh token still works after sign-out (${r.status})`);
      }
    }
    await page.reload();
    await page.locator('.signin').waitFor();
  });

  if (process.env.SIGNIN_LINK) {
    await step('a one-time sign-in link signs in once', async () => {
      const { context: c4, page: p4 } = await newPage(browser);
      await p4.goto(process.env.SIGNIN_LINK);
      await p4.locator('#sign-out').waitFor({ timeout: 15000 });
      await row(p4, 'seen-running').waitFor({ timeout: 15000 });
      assert(!new URL(p4.url()).searchParams.has('signin'), 'the link leaves the address bar');
      noProblems(p4);
      await c4.close();
      const { context: c5, page: p5 } = await newPage(browser);
      await p5.goto(process.env.SIGNIN_LINK);
      await p5.waitForURL((u) => u.pathname.endsWith('/oauth2/v2.0/authorize'), { timeout: 10000 });
      assert(await p5.locator('#sign-out').count() === 0, 'a used link does not sign in again');
      await c5.close();
    });
  }

  noProblems(page);
  await context.close();
  log(`PASS in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  log(`FAIL: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
