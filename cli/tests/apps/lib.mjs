// Shared by the app drivers (jupyter.mjs, next.mjs): Debian's Chromium
// driven by playwright-core, a line protocol with the Rust test, WebSocket
// bookkeeping and screenshots.
//
// Protocol: the driver gets one JSON argument (its spec), prints one JSON
// object per line on stdout — `{"event": "<name>", ...}` as it goes, then
// `{"ok": true, ...}` or `{"ok": false, "error": "..."}` last — and, where a
// scenario says so, waits for one line on stdin before going on. Everything
// else (Chromium's own chatter) goes to stderr.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

export const spec = JSON.parse(process.argv[2]);

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

/** Prints one protocol line. */
export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Waits for the test's next line on stdin. */
export async function nextCommand() {
  const { value, done } = await stdinLines.next();
  check(!done, 'the test closed stdin');
  return value.trim();
}

/**
 * Every WebSocket a page opens: url, frames each way, and whether (and when)
 * it closed. `kind(url)` names the ones the scenario cares about.
 */
export function trackWebSockets(page) {
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), sent: 0, received: 0, closed: false, closedAt: null, ws };
    ws.on('framesent', () => s.sent++);
    ws.on('framereceived', () => s.received++);
    ws.on('close', () => {
      s.closed = true;
      s.closedAt = new Date().toISOString();
    });
    ws.on('socketerror', (e) => {
      s.error = String(e);
    });
    sockets.push(s);
  });
  return sockets;
}

/** A plain copy of a tracked socket for the report. */
export function describe(s) {
  return { url: s.url, sent: s.sent, received: s.received, closed: s.closed, closedAt: s.closedAt, error: s.error };
}

/** Polls `fn` every 100 ms until it returns a truthy value. */
export async function until(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The tab the browser opened with (a persistent context starts with one). */
export async function firstPage(context) {
  return context.pages()[0] ?? (await context.newPage());
}

/** Saves a screenshot of `page` as `<artifacts>/<name>.png`; returns its path. */
export async function screenshot(page, name) {
  mkdirSync(spec.artifacts, { recursive: true });
  const path = join(spec.artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Launches Chromium with the flags this machine needs (no background
 * networking: the host's egress is closed to it), runs `scenario(context)`,
 * prints its result, and on failure a screenshot of every open page.
 */
export async function run(scenario) {
  let context;
  try {
    context = await chromium.launchPersistentContext(spec.profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    const result = await scenario(context);
    emit({ ok: true, ...result });
  } catch (e) {
    const shots = [];
    if (context) {
      for (const [i, page] of context.pages().entries()) {
        try {
          shots.push(await screenshot(page, `failure-${i}`));
        } catch {
          // The page may be gone; the error below is what matters.
        }
      }
    }
    emit({ ok: false, error: String((e && e.stack) || e), screenshots: shots });
    process.exitCode = 1;
  } finally {
    if (context) await context.close().catch(() => {});
    process.stdin.destroy();
  }
}
