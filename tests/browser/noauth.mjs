// The console on a server started with --auth-disabled (tests/tests/e2e/console.rs,
// `the_console_without_authentication`): no sign-in, a notice that authentication is off, the
// list, and Add.
import { assert, axe, env, launch, log, newPage, noProblems, step } from './lib.mjs';

const URL0 = env('CONSOLE_URL').replace(/\/$/, '');
const SUB = env('SUB');
const row = (page, name) => page.locator(`tr[data-capture$="/packetcaptures/${name}"]`);

const browser = await launch();
try {
  const { page } = await newPage(browser);
  await step('no sign-in: the list at once, saying authentication is off; empty, it says what to do', async () => {
    const config = await (await fetch(`${URL0}/console/config.json`)).json();
    assert(config.mode === 'none', `config.json mode: ${JSON.stringify(config)}`);
    await page.goto(`${URL0}/`);
    const empty = page.getByRole('region', { name: 'No packet captures yet' });
    await empty.waitFor({ timeout: 15000 });
    const text = await empty.textContent();
    assert(text.includes(`capture-agent run --server ${URL0}`) && text.includes('capture-api agent-tokens create'), `the empty list shows how to register an agent: ${text}`);
    assert(await page.locator('.signin').count() === 0, 'no sign-in page');
    assert(await page.locator('#sign-out').count() === 0, 'no sign-out button');
    await page.getByText('Authentication is disabled on this server').waitFor();
    await axe(page, 'empty list without authentication');
  });
  await step('Add: the region\'s watcher created, then the capture, which runs', async () => {
    await page.locator('#add-button').click();
    const panel = page.getByRole('dialog', { name: 'Add packet capture' });
    await panel.waitFor();
    assert(await panel.getByLabel('Subscription').inputValue() === SUB, 'the subscription is offered');
    await panel.getByLabel('Target virtual machine').locator('option', { hasText: 'vm1' }).waitFor({ state: 'attached' });
    await panel.getByLabel('Packet capture name').fill('added-open');
    const puts = [];
    page.on('request', (r) => { if (r.method() === 'PUT') puts.push(new URL(r.url()).pathname); });
    await panel.getByRole('button', { name: 'OK' }).click();
    await panel.waitFor({ state: 'detached', timeout: 30000 });
    // No watcher in the machine's region: the console created it first, then the capture.
    const watcher = `/subscriptions/${SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_eastus`;
    assert(JSON.stringify(puts) === JSON.stringify([watcher, `${watcher}/packetCaptures/added-open`]), `the watcher, then the capture: ${JSON.stringify(puts)}`);
    await row(page, 'added-open').and(page.locator('[data-status="Running"]')).waitFor({ timeout: 20000 });
  });
  noProblems(page);
  log('PASS');
} catch (e) {
  log(`FAIL: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
