// Browses a `python3 -m http.server` directory listing through wrenn's proxy
// in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// the listing, a click into a subdirectory and back, a missing trailing slash
// (must redirect inside the prefix, no loop), and a download whose SHA-256
// must match. A screenshot per URL form is kept as an artifact.
//
//   node browse.mjs '<json>'
//   json: {
//     "forms": [{"name": "path", "base": "http://localhost:7880/proxy/<id>/8000/"}, ...],
//     "dir": "sub",                       // a subdirectory of the served root
//     "file": "data.bin",                 // a file inside it
//     "sha256": "<hex>",                  // the file's checksum
//     "entries": ["hello.txt", "sub/"],   // names the root listing must show
//     "artifacts": "/path/for/screenshots"
//   }
// Prints one JSON line with the results; exits non-zero on the first failure.

import { chromium } from 'playwright-core';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const spec = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function browseForm(context, form) {
  const page = await context.newPage();
  const base = form.base;
  const result = { form: form.name, base };

  // 1. The listing.
  let resp = await page.goto(base);
  check(resp && resp.status() === 200, `${form.name}: ${base} answered ${resp && resp.status()}`);
  const body = await page.textContent('body');
  check(body.includes('Directory listing for /'), `${form.name}: no directory listing at ${base}`);
  for (const e of spec.entries) check(body.includes(e), `${form.name}: listing lacks ${e}`);

  // 2. Click into the subdirectory; the URL stays under the base.
  await Promise.all([page.waitForURL(base + spec.dir + '/'), page.click(`a[href="${spec.dir}/"]`)]);
  check(page.url() === base + spec.dir + '/', `${form.name}: clicked into ${page.url()}`);
  check((await page.textContent('body')).includes(spec.file), `${form.name}: ${spec.dir}/ does not list ${spec.file}`);

  // 3. And back.
  await page.goBack();
  check(page.url() === base, `${form.name}: back went to ${page.url()}`);

  // 4. A missing trailing slash redirects once, inside the prefix.
  resp = await page.goto(base + spec.dir);
  check(resp.status() === 200, `${form.name}: ${base + spec.dir} ended with ${resp.status()}`);
  check(page.url() === base + spec.dir + '/', `${form.name}: slash redirect went to ${page.url()}`);
  let hops = 0;
  for (let r = resp.request().redirectedFrom(); r; r = r.redirectedFrom()) hops++;
  check(hops === 1, `${form.name}: ${hops} redirects for a missing slash`);
  result.redirects = hops;

  // 5. Download the file by clicking its link; the checksum must match.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click(`a[href="${spec.file}"]`),
  ]);
  const path = await download.path();
  const sha256 = createHash('sha256').update(readFileSync(path)).digest('hex');
  check(sha256 === spec.sha256, `${form.name}: downloaded ${spec.file} has sha256 ${sha256}`);
  result.download = { url: download.url(), sha256 };

  // 6. Screenshot of the listing.
  await page.goto(base);
  mkdirSync(spec.artifacts, { recursive: true });
  result.screenshot = join(spec.artifacts, `listing-${form.name}.png`);
  await page.screenshot({ path: result.screenshot, fullPage: true });
  await page.close();
  return result;
}

const profile = mkdtempSync(join(tmpdir(), 'wrenn-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    acceptDownloads: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const results = [];
  for (const form of spec.forms) results.push(await browseForm(context, form));
  console.log(JSON.stringify({ ok: true, results }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack || e) }));
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
