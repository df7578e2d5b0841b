// A Next.js dev server through wrenn's proxy: the page shows `before`; the
// driver clicks the counter button `clicks` times, marks the window, says
// `{"event": "ready"}` and waits for a line on stdin (meanwhile the test
// rewrites the page's source inside the sandbox); then the page must show
// `after` by hot module replacement, not by a reload: the window's marker
// and the click count (React state) survive, the main frame never navigated
// again, and the update arrived on the HMR WebSocket that was open before.
//
//   node next.mjs '{"base": "http://3000-<id>.localhost:7880/", "greeting": "#greeting",
//                   "before": "…", "after": "…", "counter": "#counter", "clicks": 3,
//                   "artifacts": "<dir>", "profile": "<empty dir>"}'

import { check, describe, emit, firstPage, nextCommand, run, screenshot, spec, trackWebSockets, until } from './lib.mjs';

const HMR_WS = /\/_next\/webpack-hmr/;

await run(async (context) => {
  const page = await firstPage(context);
  const sockets = trackWebSockets(page);
  let navigations = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations++;
  });
  const result = { base: spec.base, screenshots: [] };

  const resp = await page.goto(spec.base);
  check(resp && resp.status() === 200, `${spec.base} answered ${resp && resp.status()}`);
  const heading = page.locator(spec.greeting);
  await until(`${spec.greeting} to show ${JSON.stringify(spec.before)}`, 60_000,
    async () => (await heading.textContent().catch(() => null)) === spec.before);

  // Next's client opens the HMR socket once it has hydrated; the server
  // greets it at once, so a received frame means the channel works.
  const hmr = await until('the HMR WebSocket to open and receive a frame', 60_000,
    () => sockets.find((s) => HMR_WS.test(s.url) && !s.closed && s.received > 0));
  check(hmr.url.startsWith(spec.base.replace(/^http/, 'ws')), `HMR WebSocket ${hmr.url} is not under ${spec.base}`);

  // State only the live page has: clicks on a hydrated React button.
  const counter = page.locator(spec.counter);
  const clicked = `clicked ${spec.clicks} times`;
  for (let i = 0; i < spec.clicks; i++) await counter.click();
  await until(`${spec.counter} to show ${JSON.stringify(clicked)}`, 10_000,
    async () => (await counter.textContent()) === clicked);

  const marker = `wrenn-${Math.random().toString(36).slice(2)}`;
  await page.evaluate((m) => {
    window.__wrennMarker = m;
  }, marker);
  const before = { navigations, received: hmr.received, sockets: sockets.length };
  result.screenshots.push(await screenshot(page, 'next-1-before'));
  emit({ event: 'ready', hmr: describe(hmr) });

  const cmd = await nextCommand();
  check(cmd === 'changed', `expected "changed" from the test, got ${JSON.stringify(cmd)}`);

  await until(`${spec.greeting} to show ${JSON.stringify(spec.after)}`, 90_000,
    async () => (await heading.textContent().catch(() => null)) === spec.after);
  result.screenshots.push(await screenshot(page, 'next-2-after'));

  const kept = await page.evaluate(() => window.__wrennMarker);
  check(kept === marker, `the window was replaced (a reload): marker ${JSON.stringify(kept)}, set ${marker}`);
  const count = await counter.textContent();
  check(count === clicked, `the page lost its state (a reload or remount): ${JSON.stringify(count)}`);
  check(navigations === before.navigations, `the page navigated ${navigations - before.navigations} time(s) after the change`);
  check(!hmr.closed, `the HMR WebSocket closed at ${hmr.closedAt}`);
  check(hmr.received > before.received, `no HMR message arrived after the change: ${JSON.stringify(describe(hmr))}`);
  result.marker = kept;
  result.counter = count;
  result.navigations = navigations;
  result.hmr = describe(hmr);
  result.hmrMessagesAfterChange = hmr.received - before.received;
  result.sockets = sockets.map(describe);
  result.text = await heading.textContent();
  return result;
});
