// Shared by the browser tests: Debian's Chromium through playwright-core, axe-core checks,
// screenshots, and steps that print what they do (the Rust test shows this output on failure).
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
    headless: true,
  });
}

/** A page that fails the test on any page error or CSP violation. */
export async function newPage(browser, { width = 1280, height = 800, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme, acceptDownloads: true });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(t)) page.problems.push(`CSP: ${t}`);
  });
  return { context, page };
}

export function noProblems(page) {
  assert(page.problems.length === 0, `the page reported problems:\n${page.problems.join('\n')}`);
}

/**
 * axe-core on the page as it is: no serious or critical violation. Injected through the
 * DevTools protocol (the console's CSP allows no inline script, and must not be weakened).
 */
export async function axe(page, what) {
  const session = await page.context().newCDPSession(page);
  await session.send('Runtime.evaluate', { expression: AXE });
  const { result, exceptionDetails } = await session.send('Runtime.evaluate', {
    expression: `axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))`,
    awaitPromise: true,
    returnByValue: true,
  });
  await session.detach();
  if (exceptionDetails) throw new Error(`axe failed on ${what}: ${JSON.stringify(exceptionDetails)}`);
  const violations = JSON.parse(result.value);
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  log(`axe ${what}: ${violations.length} violations (${violations.map((v) => `${v.id}/${v.impact}`).join(', ') || 'none'}), ${bad.length} serious or critical`);
  assert(bad.length === 0, `accessibility (${what}):\n${JSON.stringify(bad, null, 2)}`);
}

export async function screenshot(page, name, { fullPage = false } = {}) {
  const dir = process.env.SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage });
  log(`screenshot ${dir}/${name}.png`);
}

export async function step(name, f) {
  const t0 = Date.now();
  log(`STEP ${name}`);
  await f();
  log(`ok ${name} (${Date.now() - t0} ms)`);
}

/**
 * Makes the console believe its access token expires in 30 s, reloads, and waits for the
 * refresh it does then (less than 60 s left): a new refresh token and a later expiry. Answers
 * the session before.
 */
export async function forceRefresh(page) {
  const before = await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('capture-console.session'));
    s.expiresAt = Date.now() + 30000;
    sessionStorage.setItem('capture-console.session', JSON.stringify(s));
    return s;
  });
  await page.reload();
  await page.waitForFunction((old) => {
    const s = JSON.parse(sessionStorage.getItem('capture-console.session') || 'null');
    return s && s.refreshToken && s.refreshToken !== old && s.expiresAt > Date.now() + 60000;
  }, before.refreshToken, { timeout: 15000 });
  return before;
}
