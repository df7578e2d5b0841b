// E2B's JavaScript SDK, unmodified (npm e2b 2.51.0, scripts/e2b-sdks),
// against a running wrenn: the SDK's documented examples, case by case.
//
// Run by cli/tests/e2b.rs as `node sdk_test.mjs` with:
//
//   E2B_SDK_NODE_DIR=<the npm project scripts/e2b-sdks installed>
//   E2B_API_URL=http://<control>  E2B_SANDBOX_URL=http://<proxy>
//   E2B_DOMAIN=localhost:<proxy port>  E2B_API_KEY=<admin key>
//
// The SDK is loaded from E2B_SDK_NODE_DIR (its ES module build, as
// `import { Sandbox } from 'e2b'` gives). Every case runs, whatever failed
// before it; each prints `=== RUN group/name`, then `--- PASS` or `--- FAIL`
// with the error; the last line is the summary, and the exit code is 1 if any
// case failed. Arguments (or E2B_SDK_TEST_ONLY, comma-separated) select cases
// by substring of `group/name`. Sandboxes carry the metadata `suite=<run id>`;
// all are killed at the end and the list filtered on it must be empty.
//
// The test gives two more keys: WRENN_E2B_SECOND_KEY (active) and
// WRENN_E2B_REVOKED_KEY (used once, then revoked before the run).
// Groups as in sdk_test.py; the JS SDK watches with the WatchDir stream (the
// Python sync SDK polls CreateWatcher/GetWatcherEvents). code: `runCode`
// (@e2b/code-interpreter 2.8.0) in the SDK's default template
// code-interpreter-v1, which the test builds from conf/templates/code-interpreter.

import { createRequire } from 'node:module'
import { randomBytes, randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import http from 'node:http'

const nodeDir = process.env.E2B_SDK_NODE_DIR
if (!nodeDir) throw new Error('E2B_SDK_NODE_DIR is not set: run scripts/e2b-sdks and point it at its node/ directory')

/** The ES module build of an installed package, as `import … from name`. */
async function sdk(name) {
  const require = createRequire(join(nodeDir, 'package.json'))
  const pkgDir = dirname(require.resolve(`${name}/package.json`))
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
  return import(pathToFileURL(join(pkgDir, pkg.module ?? pkg.main)).href)
}

const {
  Sandbox,
  AuthenticationError,
  CommandExitError,
  FileNotFoundError,
  FileType,
  FilesystemEventType,
  NotFoundError,
  SandboxError,
  SandboxNotFoundError,
} = await sdk('e2b')

const CASE_TIMEOUT_MS = 120_000
const RUN = randomUUID().replaceAll('-', '').slice(0, 12)
const PROXY = new URL(process.env.E2B_SANDBOX_URL)
const ENVD_PORT = 49983
const NO_SUCH_ID = 'i00000000000000000000'

const CASES = []
const CREATED = []
let sharedSandbox

function test(group, name, fn) {
  CASES.push([`${group}/${name}`, fn])
}

// ---------------------------------------------------------------- helpers

async function newSandbox(template, opts = {}) {
  const sbx = await Sandbox.create(template ?? 'base', {
    ...opts,
    metadata: { suite: RUN, ...(opts.metadata ?? {}) },
  })
  CREATED.push(sbx.sandboxId)
  return sbx
}

async function shared() {
  sharedSandbox ??= newSandbox('base', { timeoutMs: 900_000, envs: { SUITE_ENV: 'from-create' } })
  return sharedSandbox
}

function check(cond, what) {
  if (!cond) throw new Error(what)
}

/** JSON with object keys sorted, so that key order does not matter. */
function canon(v) {
  return JSON.stringify(v, (_, x) =>
    x && typeof x === 'object' && !Array.isArray(x) && !(x instanceof Date)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  )
}

function eq(got, want, what) {
  const g = canon(got)
  const w = canon(want)
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`)
}

async function rejects(cls, fn) {
  let got
  try {
    got = await fn()
  } catch (e) {
    if (e instanceof cls) return e
    throw new Error(`expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message ?? e}`)
  }
  throw new Error(`expected ${cls.name}, got a result: ${JSON.stringify(got)}`)
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function eventually(fn, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const v = await fn()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`)
    }
    await sleep(100)
  }
}

/** One HTTP/1.1 request to the proxy: { status, headers, body (Buffer) }. */
function raw(method, path, headers, body, host) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: PROXY.hostname,
        port: PROXY.port,
        method,
        path,
        headers: host ? { ...headers, Host: host } : headers,
        agent: false,
        timeout: 30_000,
      },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)))
    req.on('error', reject)
    req.end(body)
  })
}

function near(date, wantMs, slackS, what) {
  const delta = Math.abs(date.getTime() - wantMs) / 1000
  check(delta <= slackS, `${what}: ${date.toISOString()} is ${delta.toFixed(1)} s from ${new Date(wantMs).toISOString()}`)
}

async function listAll(opts) {
  const pager = Sandbox.list(opts)
  const out = []
  while (pager.hasNext) out.push(...(await pager.nextItems()))
  return out
}

// ---------------------------------------------------------------- rest

test('rest', 'create_get_info_kill', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 120_000, metadata: { case: 'create' } })
  const info = await sbx.getInfo()
  eq(info.sandboxId, sbx.sandboxId, 'getInfo().sandboxId')
  eq(info.templateId, 'base', 'templateId')
  eq(info.state, 'running', 'state')
  eq(info.metadata, { suite: RUN, case: 'create' }, 'metadata')
  const span = (info.endAt - info.startedAt) / 1000
  check(span >= 115 && span <= 125, `endAt - startedAt = ${span} s, want about 120`)
  eq((await Sandbox.getInfo(sbx.sandboxId)).sandboxId, sbx.sandboxId, 'Sandbox.getInfo(id)')
  eq(await sbx.kill(), true, 'kill()')
  eq(await Sandbox.kill(sbx.sandboxId), false, 'Sandbox.kill(id) of a killed sandbox')
  await rejects(SandboxNotFoundError, () => Sandbox.getInfo(sbx.sandboxId))
})

test('rest', 'create_returns_envd_access_token', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 60_000 })
  check(sbx.envdAccessToken, 'the create response has no envdAccessToken: the SDK sends no X-Access-Token to envd')
  await sbx.kill()
})

test('rest', 'list_by_metadata_and_state', async () => {
  const tag = randomBytes(4).toString('hex')
  const a = await newSandbox('base', { timeoutMs: 120_000, metadata: { list: tag } })
  const b = await newSandbox('base', { timeoutMs: 120_000, metadata: { list: tag } })
  const got = await listAll({ query: { metadata: { suite: RUN, list: tag } } })
  eq(got.map((s) => s.sandboxId).sort(), [a.sandboxId, b.sandboxId].sort(), 'listed ids')
  for (const s of got) eq([s.state, s.metadata.list], ['running', tag], `state and metadata of ${s.sandboxId}`)
  const pager = Sandbox.list({ query: { metadata: { list: tag } }, limit: 1 })
  const pages = []
  while (pager.hasNext) pages.push((await pager.nextItems()).map((s) => s.sandboxId))
  eq(pages.filter((p) => p.length).length, 2, `pages of limit 1: ${JSON.stringify(pages)}`)
  eq(await listAll({ query: { metadata: { list: tag }, state: ['paused'] } }), [], 'paused sandboxes with this tag')
  await a.kill()
  await b.kill()
})

test('rest', 'set_timeout_moves_end_at', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 60_000 })
  await sbx.setTimeout(600_000)
  near((await sbx.getInfo()).endAt, Date.now() + 600_000, 15, 'endAt after setTimeout(600 s)')
  await Sandbox.setTimeout(sbx.sandboxId, 30_000)
  near((await sbx.getInfo()).endAt, Date.now() + 30_000, 15, 'endAt after Sandbox.setTimeout(id, 30 s)')
  await sbx.kill()
})

test('rest', 'pause_and_connect', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 300_000 })
  eq(await sbx.pause(), true, 'pause()')
  eq((await sbx.getInfo()).state, 'paused', 'state after pause')
  eq(await Sandbox.pause(sbx.sandboxId), false, 'pause of a paused sandbox')
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 })
  eq(again.sandboxId, sbx.sandboxId, 'connect().sandboxId')
  eq((await again.getInfo()).state, 'running', 'state after connect')
  await Sandbox.connect(sbx.sandboxId)
  await sbx.kill()
})

test('rest', 'metrics', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 120_000 })
  await sbx.getMetrics()
  await sbx.kill()
})

// ---------------------------------------------------------------- errors

test('errors', 'unknown_template', async () => {
  const e = await rejects(SandboxError, () => Sandbox.create(`no-such-template-${RUN}`))
  eq(e.statusCode, 404, `status of create with an unknown template (${e.message})`)
})

test('errors', 'bad_timeout', async () => {
  const e = await rejects(SandboxError, () => Sandbox.create('base', { timeoutMs: -1000 }))
  eq(e.statusCode, 400, `status of create with a negative timeout (${e.message})`)
  const sbx = await newSandbox('base', { timeoutMs: 60_000 })
  const e2 = await rejects(SandboxError, () => sbx.setTimeout(-5000))
  eq(e2.statusCode, 400, `status of setTimeout(-5 s) (${e2.message})`)
  await sbx.kill()
})

test('errors', 'nonexistent_sandbox', async () => {
  await rejects(SandboxNotFoundError, () => Sandbox.getInfo(NO_SUCH_ID))
  await rejects(SandboxNotFoundError, () => Sandbox.setTimeout(NO_SUCH_ID, 60_000))
  await rejects(SandboxNotFoundError, () => Sandbox.connect(NO_SUCH_ID))
  await rejects(SandboxNotFoundError, () => Sandbox.pause(NO_SUCH_ID))
  eq(await Sandbox.kill(NO_SUCH_ID), false, 'Sandbox.kill of a nonexistent id')
})

test('errors', 'wrong_api_key', async () => {
  const bad = { apiKey: `e2b_${'0'.repeat(40)}` }
  await rejects(AuthenticationError, () => Sandbox.create('base', bad))
  await rejects(AuthenticationError, () => Sandbox.list(bad).nextItems())
  await rejects(AuthenticationError, () => Sandbox.getInfo(NO_SUCH_ID, bad))
  await rejects(AuthenticationError, () => Sandbox.kill(NO_SUCH_ID, bad))
})

test('errors', 'revoked_key', async () => {
  const key = process.env.WRENN_E2B_REVOKED_KEY
  check(key, "no revoked key given (WRENN_E2B_REVOKED_KEY): `wrenn key create`/`key rm` failed, see the test's output")
  await rejects(AuthenticationError, () => Sandbox.create('base', { apiKey: key }))
  await rejects(AuthenticationError, () => Sandbox.list({ apiKey: key }).nextItems())
})

test('rest', 'another_key_works', async () => {
  const key = process.env.WRENN_E2B_SECOND_KEY
  check(key, "no second key given (WRENN_E2B_SECOND_KEY): `wrenn key create` failed, see the test's output")
  const sbx = await Sandbox.create('base', { timeoutMs: 60_000, metadata: { suite: RUN }, apiKey: key })
  CREATED.push(sbx.sandboxId)
  eq((await Sandbox.getInfo(sbx.sandboxId)).sandboxId, sbx.sandboxId, 'seen with the admin key')
  eq(await Sandbox.kill(sbx.sandboxId, { apiKey: key }), true, 'kill with the second key')
})

// ---------------------------------------------------------------- commands

test('commands', 'run_foreground', async () => {
  const sbx = await shared()
  const seen = []
  const r = await sbx.commands.run('echo hello; echo oops >&2', { onStdout: (d) => seen.push(d) })
  eq([r.exitCode, r.stdout, r.stderr], [0, 'hello\n', 'oops\n'], 'result')
  eq(seen.join(''), 'hello\n', 'onStdout chunks')
})

test('commands', 'exit_code_rejects', async () => {
  const sbx = await shared()
  const e = await rejects(CommandExitError, () => sbx.commands.run('echo bad >&2; exit 3'))
  eq([e.exitCode, e.stderr], [3, 'bad\n'], 'CommandExitError')
})

test('commands', 'background_and_wait', async () => {
  const sbx = await shared()
  const h = await sbx.commands.run('sleep 0.5; echo done', { background: true })
  check(h.pid > 0, `pid ${h.pid}`)
  const r = await h.wait()
  eq([r.exitCode, r.stdout], [0, 'done\n'], 'result')
})

test('commands', 'env_vars', async () => {
  const sbx = await shared()
  eq((await sbx.commands.run('echo $SUITE_ENV')).stdout, 'from-create\n', 'envs given at create')
  const r = await sbx.commands.run('echo "$FOO $SUITE_ENV"', { envs: { FOO: 'bar', SUITE_ENV: 'override' } })
  eq(r.stdout, 'bar override\n', 'envs given to run')
})

test('commands', 'cwd', async () => {
  const sbx = await shared()
  eq((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n', 'pwd with cwd /tmp')
  eq((await sbx.commands.run('pwd')).stdout, '/home/user\n', 'default cwd')
})

test('commands', 'users', async () => {
  const sbx = await shared()
  eq((await sbx.commands.run('whoami')).stdout, 'user\n', 'default user')
  eq((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n', 'user root')
  eq((await sbx.commands.run('whoami', { user: 'user' })).stdout, 'user\n', 'user user')
  eq((await sbx.commands.run('sudo -n whoami')).stdout, 'root\n', 'passwordless sudo')
})

test('commands', 'stdin_send_and_close', async () => {
  const sbx = await shared()
  const h = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(h.pid, 'hello ')
  await sbx.commands.sendStdin(h.pid, new TextEncoder().encode('world\n'))
  await sbx.commands.closeStdin(h.pid)
  eq((await h.wait()).stdout, 'hello world\n', "cat's output")
})

test('commands', 'kill_process', async () => {
  const sbx = await shared()
  const h = await sbx.commands.run('sleep 600', { background: true })
  eq(await sbx.commands.kill(h.pid), true, 'commands.kill')
  const e = await rejects(CommandExitError, () => h.wait())
  check(e.exitCode !== 0, `exit code after SIGKILL: ${e.exitCode}`)
  eq(await sbx.commands.kill(h.pid), false, 'commands.kill of a gone pid')
  const h2 = await sbx.commands.run('sleep 600', { background: true })
  eq(await h2.kill(), true, 'handle.kill')
  await rejects(CommandExitError, () => h2.wait())
})

test('commands', 'connect_by_pid', async () => {
  const sbx = await shared()
  const h = await sbx.commands.run('sleep 1; echo after', { background: true })
  await h.disconnect()
  const again = await sbx.commands.connect(h.pid)
  eq(again.pid, h.pid, 'pid of the connected handle')
  const r = await again.wait()
  eq([r.exitCode, r.stdout], [0, 'after\n'], 'result through connect')
})

test('commands', 'list_processes', async () => {
  const sbx = await shared()
  const h = await sbx.commands.run('sleep 600', { background: true, envs: { LISTED: '1' }, cwd: '/tmp' })
  try {
    const p = (await sbx.commands.list()).find((p) => p.pid === h.pid)
    check(p, `pid ${h.pid} not listed`)
    eq([p.cmd, p.args, p.envs.LISTED, p.cwd], ['/bin/bash', ['-l', '-c', 'sleep 600'], '1', '/tmp'], 'ProcessInfo')
  } finally {
    await h.kill()
  }
})

// ---------------------------------------------------------------- files

const DIR = '/home/user/e2b-files-js'

test('files', 'write_read_text', async () => {
  const f = (await shared()).files
  const info = await f.write(`${DIR}/hello.txt`, 'hello world\n')
  eq([info.name, info.path, info.type], ['hello.txt', `${DIR}/hello.txt`, FileType.FILE], 'WriteInfo')
  eq(await f.read(`${DIR}/hello.txt`), 'hello world\n', 'read back')
  await f.write(`${DIR}/hello.txt`, 'replaced')
  eq(await f.read(`${DIR}/hello.txt`), 'replaced', 'read after overwrite')
})

test('files', 'write_read_bytes', async () => {
  const f = (await shared()).files
  const data = new Uint8Array(256 * 64).map((_, i) => i % 256)
  await f.write(`${DIR}/bytes.bin`, data.buffer)
  const back = await f.read(`${DIR}/bytes.bin`, { format: 'bytes' })
  check(Buffer.from(back).equals(Buffer.from(data)), `bytes read back differ (${back.length} bytes)`)
  eq((await f.getInfo(`${DIR}/bytes.bin`)).size, data.length, 'size')
})

test('files', 'write_many', async () => {
  const f = (await shared()).files
  const infos = await f.write([
    { path: `${DIR}/many/a.txt`, data: 'A' },
    { path: `${DIR}/many/b.bin`, data: new Uint8Array([0, 66]).buffer },
    { path: `${DIR}/many/deep/c.txt`, data: 'C' },
  ])
  eq(infos.map((i) => i.path).sort(), [`${DIR}/many/a.txt`, `${DIR}/many/b.bin`, `${DIR}/many/deep/c.txt`].sort(), 'written paths')
  eq(await f.read(`${DIR}/many/a.txt`), 'A', 'a.txt')
  eq([...(await f.read(`${DIR}/many/b.bin`, { format: 'bytes' }))], [0, 66], 'b.bin')
  eq(await f.read(`${DIR}/many/deep/c.txt`), 'C', 'deep/c.txt')
})

test('files', 'list_dir', async () => {
  const f = (await shared()).files
  await f.write(`${DIR}/list/one.txt`, '1')
  await f.makeDir(`${DIR}/list/sub`)
  await f.write(`${DIR}/list/sub/two.txt`, '2')
  const entries = Object.fromEntries((await f.list(`${DIR}/list`)).map((e) => [e.name, e]))
  eq(Object.keys(entries).sort(), ['one.txt', 'sub'], 'depth 1')
  eq([entries['one.txt'].type, entries.sub.type], [FileType.FILE, FileType.DIR], 'types')
  const deep = (await f.list(`${DIR}/list`, { depth: 2 })).map((e) => e.path).sort()
  eq(deep, [`${DIR}/list/one.txt`, `${DIR}/list/sub`, `${DIR}/list/sub/two.txt`], 'depth 2')
  await rejects(FileNotFoundError, () => f.list(`${DIR}/no-such-dir`))
})

test('files', 'make_dir', async () => {
  const f = (await shared()).files
  eq(await f.makeDir(`${DIR}/made/a/b`), true, 'makeDir of a new path')
  eq(await f.makeDir(`${DIR}/made/a/b`), false, 'makeDir of an existing one')
  eq((await f.getInfo(`${DIR}/made/a`)).type, FileType.DIR, 'parents made')
})

test('files', 'rename_remove_exists', async () => {
  const f = (await shared()).files
  await f.write(`${DIR}/mv/old.txt`, 'x')
  const info = await f.rename(`${DIR}/mv/old.txt`, `${DIR}/mv/new.txt`)
  eq([info.name, info.path], ['new.txt', `${DIR}/mv/new.txt`], "rename's EntryInfo")
  eq(await f.exists(`${DIR}/mv/old.txt`), false, 'old path exists')
  eq(await f.exists(`${DIR}/mv/new.txt`), true, 'new path exists')
  await f.remove(`${DIR}/mv/new.txt`)
  eq(await f.exists(`${DIR}/mv/new.txt`), false, 'exists after remove')
  await f.remove(`${DIR}/mv`)
  eq(await f.exists(`${DIR}/mv`), false, 'a removed directory')
})

test('files', 'get_info_and_owner', async () => {
  const f = (await shared()).files
  await f.write(`${DIR}/info.txt`, '12345')
  const e = await f.getInfo(`${DIR}/info.txt`)
  eq([e.name, e.path, e.type, e.size], ['info.txt', `${DIR}/info.txt`, FileType.FILE, 5], 'EntryInfo')
  eq([e.owner, e.group], ['user', 'user'], 'owner of a file the default user wrote')
  check(e.permissions.startsWith('-rw'), `permissions ${e.permissions}`)
  near(e.modifiedTime, Date.now(), 120, 'modifiedTime')
  await f.write('/root/e2b-root-js.txt', 'r', { user: 'root' })
  eq((await f.getInfo('/root/e2b-root-js.txt', { user: 'root' })).owner, 'root', 'owner of a file root wrote')
  await rejects(FileNotFoundError, () => f.getInfo(`${DIR}/no-such-file`))
  await rejects(FileNotFoundError, () => f.read(`${DIR}/no-such-file`))
  await rejects(NotFoundError, () => f.read(`${DIR}/no-such-file`))
})

test('files', 'signed_urls', async () => {
  // downloadUrl/uploadUrl are signed with the envd access token and need no
  // token header: the URL the SDK gives, sent through the proxy with the Host
  // getHost(49983) names (with E2B_SANDBOX_URL the URL's own host carries no sandbox).
  const sbx = await shared()
  const host = sbx.getHost(ENVD_PORT)
  await sbx.files.write(`${DIR}/signed.txt`, 'signed content')
  const down = new URL(await sbx.downloadUrl(`${DIR}/signed.txt`, { useSignatureExpiration: 120 }))
  check(down.searchParams.get('signature'), `downloadUrl has no signature: ${down}`)
  let r = await raw('GET', down.pathname + down.search, {}, undefined, host)
  eq([r.status, r.body.toString()], [200, 'signed content'], `GET ${down.pathname}${down.search}`)
  const tampered = down.pathname + down.search.replace('signature=v1_', 'signature=v1_A')
  r = await raw('GET', tampered, {}, undefined, host)
  check([401, 403].includes(r.status), `a tampered signature: ${r.status} ${r.body.toString().slice(0, 200)}`)
  const up = new URL(await sbx.uploadUrl(`${DIR}/uploaded.txt`))
  const boundary = 'e2btestboundary'
  const form =
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${DIR}/uploaded.txt"\r\n` +
    `Content-Type: application/octet-stream\r\n\r\nuploaded content\r\n--${boundary}--\r\n`
  r = await raw('POST', up.pathname + up.search, { 'Content-Type': `multipart/form-data; boundary=${boundary}` }, form, host)
  check(r.status >= 200 && r.status < 300, `POST to uploadUrl: ${r.status} ${r.body.toString().slice(0, 200)}`)
  eq(await sbx.files.read(`${DIR}/uploaded.txt`), 'uploaded content', 'the uploaded file')
})

test('files', 'watch_dir', async () => {
  const f = (await shared()).files
  const d = `${DIR}/watched`
  await f.makeDir(d)
  const seen = []
  let exit = null
  const w = await f.watchDir(d, (e) => seen.push(e), { onExit: (err) => (exit = err ?? 'ended') })
  try {
    await f.write(`${d}/w.txt`, 'data')
    await eventually(() => seen.some((e) => e.name === 'w.txt'), 'an event for w.txt')
    const types = new Set(seen.filter((e) => e.name === 'w.txt').map((e) => e.type))
    check(types.has(FilesystemEventType.CREATE) || types.has(FilesystemEventType.WRITE), `event types for w.txt: ${[...types]}`)
    await f.remove(`${d}/w.txt`)
    await eventually(() => seen.some((e) => e.type === FilesystemEventType.REMOVE), 'a remove event')
    check(exit === null, `the watch ended early: ${exit}`)
  } finally {
    await w.stop()
  }
})

// ---------------------------------------------------------------- pty

function ptyReader() {
  const chunks = []
  const dec = new TextDecoder()
  return {
    onData: (d) => chunks.push(dec.decode(d, { stream: true })),
    text: () => chunks.join(''),
    async waitFor(needle, what) {
      await eventually(() => this.text().includes(needle), `${what} (${JSON.stringify(needle)}); output so far: ${JSON.stringify(this.text().slice(-300))}`)
    },
  }
}

const enc = (s) => new TextEncoder().encode(s)

test('pty', 'create_input_resize_kill', async () => {
  const sbx = await shared()
  const out = ptyReader()
  const h = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData })
  await sbx.pty.sendInput(h.pid, enc('echo $((6*7))x\n'))
  await out.waitFor('42x', "echo's output")
  await sbx.pty.sendInput(h.pid, enc('stty size; whoami\n'))
  await out.waitFor('24 80', 'the created size')
  await out.waitFor('user', 'the default user')
  await sbx.pty.resize(h.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(h.pid, enc('stty size\n'))
  await out.waitFor('30 100', 'the size after resize')
  eq(await sbx.pty.kill(h.pid), true, 'pty.kill')
  await rejects(CommandExitError, () => h.wait())
})

test('pty', 'exit_code_and_user', async () => {
  const sbx = await shared()
  const out = ptyReader()
  const h = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData, user: 'root', cwd: '/tmp', envs: { PTYVAR: 'v' } })
  await sbx.pty.sendInput(h.pid, enc('echo "$(whoami) $(pwd) $PTYVAR $TERM"; exit 7\n'))
  await out.waitFor('root /tmp v xterm-256color', 'whoami, pwd, env')
  const e = await rejects(CommandExitError, () => h.wait())
  eq(e.exitCode, 7, 'exit code of the shell')
})

// ---------------------------------------------------------------- host

test('host', 'get_host_http_server', async () => {
  const sbx = await shared()
  const host = sbx.getHost(8000)
  eq(host, `8000-${sbx.sandboxId}.${process.env.E2B_DOMAIN}`, 'getHost(8000)')
  await sbx.files.write('/home/user/www-js/marker.txt', 'served by http.server\n')
  const srv = await sbx.commands.run('python3 -m http.server 8001', { background: true, cwd: '/home/user/www-js' })
  try {
    const host8001 = sbx.getHost(8001)
    await eventually(async () => {
      const r = await raw('GET', '/marker.txt', {}, undefined, host8001)
      return r.status === 200 && r.body.toString() === 'served by http.server\n'
    }, `GET /marker.txt with Host: ${host8001}`, 30_000)
    const r = await raw('GET', '/marker.txt', { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8001' })
    eq([r.status, r.body.toString()], [200, 'served by http.server\n'], 'GET through the routing headers')
  } finally {
    await srv.kill()
  }
})

// ---------------------------------------------------------------- lifecycle

test('lifecycle', 'pause_resume_keeps_state', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 300_000 })
  await sbx.files.write('/home/user/kept.txt', 'before pause')
  const h = await sbx.commands.run('sleep 600', { background: true })
  eq(await sbx.pause(), true, 'pause()')
  const same = await Sandbox.connect(sbx.sandboxId)
  eq(await same.files.read('/home/user/kept.txt'), 'before pause', 'file after resume')
  const pids = (await same.commands.list()).map((p) => p.pid)
  check(pids.includes(h.pid), `background process ${h.pid} after resume: ${pids}`)
  eq((await same.commands.run('echo alive')).stdout, 'alive\n', 'a command after resume')
  eq(await same.isRunning(), true, 'isRunning()')
  await same.kill()
  eq(await same.isRunning(), false, 'isRunning() after kill (/health answers 502)')
})

// ---------------------------------------------------------------- envd_auth

test('envd_auth', 'envd_port_needs_the_access_token', async () => {
  const sbx = await newSandbox('base', { timeoutMs: 120_000 })
  const token = sbx.envdAccessToken
  check(token, 'no envdAccessToken in the create response')
  const route = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': String(ENVD_PORT) }
  const rpc = { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1' }
  const wrong = (token[0] === 'x' ? 'y' : 'x') + token.slice(1)
  for (const [label, extra] of [['no token', {}], ['a wrong token', { 'X-Access-Token': wrong }]]) {
    // GET /health needs no token (as envd's): isRunning() asks it.
    let r = await raw('GET', '/health', { ...route, ...extra })
    check(r.status >= 200 && r.status < 300, `GET /health with ${label}: ${r.status} ${r.body.toString().slice(0, 200)}`)
    r = await raw('POST', '/process.Process/List', { ...route, ...rpc, ...extra }, '{}')
    check([401, 403].includes(r.status), `List with ${label}: ${r.status} ${r.body.toString().slice(0, 200)}`)
  }
  let r = await raw('GET', '/health', { ...route, 'X-Access-Token': token })
  check(r.status >= 200 && r.status < 300, `GET /health with the token: ${r.status} ${r.body.toString().slice(0, 200)}`)
  r = await raw('POST', '/process.Process/List', { ...route, ...rpc, 'X-Access-Token': token }, '{}')
  eq(r.status, 200, `List with the token (${r.body.toString().slice(0, 200)})`)
  await sbx.kill()
})

// ---------------------------------------------------------------- code

let codeSandbox
/** One code-interpreter sandbox (the SDK's default template,
 * code-interpreter-v1, which the test built from conf/templates/code-interpreter). */
async function code() {
  codeSandbox ??= (async () => {
    const { Sandbox: CodeSandbox } = await sdk('@e2b/code-interpreter')
    const sbx = await CodeSandbox.create({ timeoutMs: 900_000, metadata: { suite: RUN } })
    CREATED.push(sbx.sandboxId)
    return sbx
  })()
  return codeSandbox
}

test('code', 'run_code_prints_and_returns', async () => {
  const out = []
  const e = await (await code()).runCode("print('hello'); 6 * 7", { onStdout: (m) => out.push(m.line) })
  eq(e.logs.stdout, ['hello\n'], 'stdout')
  eq(e.text, '42', "the cell's value")
  eq(out, ['hello\n'], 'onStdout')
  check(e.error === undefined || e.error === null, `error ${JSON.stringify(e.error)}`)
})

test('code', 'run_code_error_with_traceback', async () => {
  const e = await (await code()).runCode('def f():\n    return 1 / 0\nf()')
  check(e.error, 'no error')
  eq(e.error.name, 'ZeroDivisionError', 'error name')
  eq(e.error.value, 'division by zero', 'error value')
  check(e.error.traceback.includes('f()'), `traceback ${e.error.traceback.slice(0, 300)}`)
})

test('code', 'run_code_matplotlib_png', async () => {
  const e = await (await code()).runCode('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()')
  const png = e.results.find((r) => r.png)?.png
  check(png, `no PNG result: ${JSON.stringify(e.results).slice(0, 300)}`)
  eq([...Buffer.from(png, 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'PNG signature')
})

test('code', 'run_code_keeps_variables_and_contexts_are_separate', async () => {
  const sbx = await code()
  await sbx.runCode('x = 41')
  eq((await sbx.runCode('x + 1')).text, '42', 'a variable across calls')
  const ctx = await sbx.createCodeContext()
  await sbx.runCode("y = 'ctx'", { context: ctx })
  eq((await sbx.runCode('y', { context: ctx })).text, "'ctx'", 'a variable in the context')
  eq((await sbx.runCode("'y' in globals()")).text, 'False', 'the default context does not see it')
  check((await sbx.listCodeContexts()).some((c) => c.id === ctx.id), 'listCodeContexts')
  await sbx.removeCodeContext(ctx)
  check(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id), 'removed')
})

// ---------------------------------------------------------------- driver

test('cleanup', 'nothing_left', async () => {
  const problems = []
  for (const id of CREATED) {
    try {
      await Sandbox.kill(id)
    } catch (e) {
      problems.push(`kill ${id}: ${e.message}`)
    }
  }
  const left = (await listAll({ query: { metadata: { suite: RUN } } })).map((s) => s.sandboxId)
  check(left.length === 0 && problems.length === 0, `left: ${left}; ${problems}`)
})

function withTimeout(promise, ms) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the case ran over ${ms / 1000} s`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

const only = [...process.argv.slice(2), ...(process.env.E2B_SDK_TEST_ONLY ?? '').split(',')].filter(Boolean)
console.log(`node: e2b SDK run ${RUN} against ${process.env.E2B_API_URL} (sandboxes through ${process.env.E2B_SANDBOX_URL})`)
const passed = []
const failed = []
for (const [name, fn] of CASES) {
  if (only.length && name !== 'cleanup/nothing_left' && !only.some((s) => name.includes(s))) continue
  console.log(`=== RUN  ${name}`)
  const started = performance.now()
  try {
    await withTimeout(fn(), CASE_TIMEOUT_MS)
    passed.push(name)
    console.log(`--- PASS ${name} (${((performance.now() - started) / 1000).toFixed(2)}s)`)
  } catch (e) {
    failed.push(name)
    console.log(`--- FAIL ${name} (${((performance.now() - started) / 1000).toFixed(2)}s): ${e?.constructor?.name}: ${e?.message ?? e}`)
    console.log(`    ${(e?.stack ?? String(e)).split('\n').join('\n    ')}`)
    if (e?.cause) console.log(`    cause: ${e.cause?.stack ?? e.cause}`)
  }
}
console.log(`node: ${passed.length} passed, ${failed.length} failed${failed.length ? `: ${failed.join(', ')}` : ''}`)
// Open streams of a failed case must not keep the process alive.
process.exit(failed.length ? 1 : 0)
