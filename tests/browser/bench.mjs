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
  await page.locator('details.advanced summary').click();
  await page.getByLabel('Access token', { exact: true }).fill(env('OWNER_TOKEN'));
  const t1 = Date.now();
  await page.getByRole('button', { name: 'Use this token' }).click();
  await page.getByText(`${N} of ${N} captures`).waitFor({ timeout: 120000 });
  const listed = Date.now() - t1;
  const inPage = (f) => page.evaluate(f);
  const sort = await inPage(() => {
    const t = performance.now();
    document.querySelector('button.sort[data-key="name"]').click();
    document.body.getBoundingClientRect();
    return performance.now() - t;
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
  console.log(`BENCH interactive_ms=${interactive} list_${N}_ms=${listed} render_sorted_${N}_ms=${sort.toFixed(1)} filter_ms=${filter.toFixed(1)} show_more_ms=${more.toFixed(1)}`);
} catch (e) {
  log(`FAIL: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
