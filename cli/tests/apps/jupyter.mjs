// JupyterLab through wrenn's proxy: open JupyterLab at `base`, create a new
// notebook from the launcher, run `print(6*7)` and see `42` (the kernel's
// messages come over the kernel WebSocket, through the proxy). With
// `idleSecs` > 0 the tab then sits idle that long and a second cell runs —
// on the same kernel WebSocket, which must not have been closed meanwhile
// (JupyterLab would silently reconnect a dropped one, hiding a proxy that
// cuts idle WebSockets).
//
//   node jupyter.mjs '{"name": "subdomain", "base": "http://8888-<id>.localhost:7880/",
//                      "idleSecs": 0, "artifacts": "<dir>", "profile": "<empty dir>"}'

import { check, describe, emit, firstPage, run, screenshot, spec, trackWebSockets, until } from './lib.mjs';

const KERNEL_WS = /\/api\/kernels\/[0-9a-f-]+\/channels/;

/** Types `code` into the notebook's active cell and runs it (Shift+Enter). */
async function runCell(page, index, code) {
  const cell = page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell').nth(index);
  await cell.waitFor({ timeout: 30_000 });
  await cell.locator('.cm-content').click();
  await page.keyboard.type(code);
  await page.keyboard.press('Shift+Enter');
  const prompt = cell.locator('.jp-InputPrompt');
  await until(`cell ${index + 1} to start running (prompt [*] or [n])`, 30_000,
    async () => /\[(\*|\d+)\]/.test((await prompt.textContent()) ?? ''));
  const output = cell.locator('.jp-OutputArea-output');
  await output.first().waitFor({ timeout: 60_000 });
  return (await output.first().innerText()).trim();
}

await run(async (context) => {
  const page = await firstPage(context);
  const sockets = trackWebSockets(page);
  const result = { form: spec.name, base: spec.base, screenshots: [] };

  // `?reset`: a fresh workspace, whatever an earlier JupyterLab left open.
  const resp = await page.goto(spec.base + 'lab?reset');
  check(resp && resp.status() === 200, `${spec.base}lab answered ${resp && resp.status()}`);
  check(page.url().startsWith(spec.base), `JupyterLab left ${spec.base}: ${page.url()}`);

  // The launcher's "Python 3 (ipykernel)" notebook card makes a new notebook.
  const card = page.locator('.jp-LauncherCard[data-category="Notebook"]').first();
  await card.waitFor({ timeout: 60_000 });
  result.screenshots.push(await screenshot(page, `${spec.name}-1-launcher`));
  await card.click();
  await page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell').first().waitFor({ timeout: 30_000 });
  // A cell run before the notebook's session has its kernel is silently
  // dropped by JupyterLab: wait until the kernel's WebSocket (opened by the
  // session's kernel connection) has brought a message and the kernel is idle.
  await until('the kernel WebSocket to receive a message', 60_000,
    () => sockets.some((s) => KERNEL_WS.test(s.url) && !s.closed && s.received > 0));
  await page
    .locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout: 60_000 });
  emit({ event: 'notebook' });

  const first = await runCell(page, 0, 'print(6*7)');
  check(first === '42', `print(6*7) printed ${JSON.stringify(first)}`);
  result.first = first;
  result.screenshots.push(await screenshot(page, `${spec.name}-2-first-cell`));

  const kernel = sockets.filter((s) => KERNEL_WS.test(s.url));
  check(kernel.length >= 1, `no kernel WebSocket was opened: ${JSON.stringify(sockets.map(describe))}`);
  const ws = kernel[kernel.length - 1];
  check(ws.url.startsWith(spec.base.replace(/^http/, 'ws')), `kernel WebSocket ${ws.url} is not under ${spec.base}`);
  check(!ws.closed && ws.received > 0, `kernel WebSocket: ${JSON.stringify(describe(ws))}`);
  result.kernelSocket = describe(ws);

  if (spec.idleSecs > 0) {
    const before = { sent: ws.sent, received: ws.received, sockets: sockets.length };
    emit({ event: 'idle', secs: spec.idleSecs });
    // The point of this step is the silence itself: nothing to poll for.
    await page.waitForTimeout(spec.idleSecs * 1000);
    check(!ws.closed, `the kernel WebSocket closed while idle at ${ws.closedAt}`);
    const second = await runCell(page, 1, 'print(sum(range(10)))');
    check(second === '45', `print(sum(range(10))) printed ${JSON.stringify(second)}`);
    check(!ws.closed, `the kernel WebSocket closed at ${ws.closedAt}`);
    check(ws.sent > before.sent && ws.received > before.received,
      `the second cell did not go over the first cell's kernel WebSocket: ${JSON.stringify(describe(ws))}`);
    const reopened = sockets.slice(before.sockets).filter((s) => KERNEL_WS.test(s.url));
    check(reopened.length === 0, `kernel WebSocket reopened after the idle period: ${JSON.stringify(reopened.map(describe))}`);
    result.second = second;
    result.idleSecs = spec.idleSecs;
    result.kernelSocket = describe(ws);
    result.screenshots.push(await screenshot(page, `${spec.name}-3-after-idle`));
  }
  result.sockets = sockets.map(describe);
  return result;
});
