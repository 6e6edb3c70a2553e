// The console with many captures (tests/tests/e2e/console.rs, `console_bench`, ignored by
// default): time to the full list, and in-page times of rendering a sort and applying a filter.
import { assert, env, launch, log, newPage } from './lib.mjs';

const URL0 = env('CONSOLE_URL').replace(/\/$/, '');
const N = Number(env('CAPTURES'));
const browser = await launch();
try {
  const { page } = await newPage(browser);
  const t0 = Date.now();
  await page.goto(`${URL0}/`);
  await page.locator('.signin').waitFor();
  const interactive = Date.now() - t0;
  // Bytes over the wire for the first load (headers included), and the files' own sizes.
  const [transferred, decoded] = await page.evaluate(() => {
    const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
    return [all.reduce((n, e) => n + e.transferSize, 0), all.reduce((n, e) => n + e.decodedBodySize, 0)];
  });
  await page.locator('details.advanced summary').click();
  await page.getByLabel('Access token', { exact: true }).fill(env('OWNER_TOKEN'));
  const t1 = Date.now();
  await page.getByRole('button', { name: 'Use this token' }).click();
  await page.getByText(`${N} of ${N} captures`).waitFor({ timeout: 120000 });
  const listed = Date.now() - t1;
  const inPage = (f) => page.evaluate(f);
  const [sort, sortScript] = await inPage(() => {
    const t = performance.now();
    document.querySelector('button.sort[data-key="name"]').click();
    const script = performance.now() - t;
    document.body.getBoundingClientRect();
    return [performance.now() - t, script];
  });
  const more = await inPage(() => {
    const t = performance.now();
    document.querySelector('#show-more').click();
    document.body.getBoundingClientRect();
    return performance.now() - t;
  });
  const filter = await inPage(() => {
    const i = document.querySelector('.filters [name="q"]');
    const t = performance.now();
    i.value = 'pc-00099';
    i.dispatchEvent(new Event('input'));
    document.body.getBoundingClientRect();
    return performance.now() - t;
  });
  const rows = await page.locator('tbody tr').count();
  assert(rows === 1, `the filter leaves one row (${rows})`);
  // Every capture with its status, in the page: the list with `$expand=status`, against the
  // baseline of the list and one queryStatus per capture (12 at a time), alternated 3 times.
  const statuses = await page.evaluate(async (watchers) => {
    const s = JSON.parse(sessionStorage.getItem('capture-console.session'));
    const get = async (url, method = 'GET') => {
      const r = await fetch(url, { method, headers: { Authorization: `Bearer ${s.accessToken}` } });
      if (!r.ok) throw new Error(`${method} ${url}: ${r.status}`);
      return r.json();
    };
    const listAll = async (expand) => {
      const out = [];
      let url = `${watchers}/packetCaptures?api-version=2026-03-01${expand ? '&$expand=status' : ''}`;
      while (url) { const page = await get(url); out.push(...page.value); url = page.nextLink; }
      return out;
    };
    const expanded = async () => {
      const all = await listAll(true);
      return all.filter((c) => c.properties.captureStatus).length;
    };
    const perCapture = async () => {
      const all = await listAll(false);
      let next = 0; let got = 0;
      await Promise.all(Array.from({ length: 12 }, async () => {
        while (next < all.length) {
          const c = all[next++];
          const st = await get(`${c.id}/queryStatus?api-version=2026-03-01`, 'POST');
          if (st.packetCaptureStatus) got += 1;
        }
      }));
      return got;
    };
    const times = { expand: [], perCapture: [] };
    for (let i = 0; i < 3; i++) {
      for (const [k, f] of [['expand', expanded], ['perCapture', perCapture]]) {
        const t = performance.now();
        const n = await f();
        times[k].push(performance.now() - t);
        if (n === 0) throw new Error(`${k}: no status`);
      }
    }
    return times;
  }, env('WATCHER_ID'));
  const median = (xs) => [...xs].sort((a, b) => a - b)[1];
  const ratio = median(statuses.expand) / median(statuses.perCapture);
  console.log(`BENCH statuses_expand_ms=${statuses.expand.map((x) => x.toFixed(0)).join('/')} statuses_per_capture_ms=${statuses.perCapture.map((x) => x.toFixed(0)).join('/')} median_ratio=${ratio.toFixed(3)}`);
  console.log(`BENCH first_load_transferred_bytes=${transferred} first_load_decoded_bytes=${decoded} interactive_ms=${interactive} list_${N}_ms=${listed} render_sorted_${N}_ms=${sort.toFixed(1)} (script ${sortScript.toFixed(1)}) filter_ms=${filter.toFixed(1)} show_more_ms=${more.toFixed(1)}`);
} catch (e) {
  log(`FAIL: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
