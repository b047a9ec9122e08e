// E2B's official JavaScript SDK (`e2b` from npm) against a bulkhead daemon (issue #15).
//
// Run by crates/bulkhead/tests/e2e_e2b_sdk.rs inside the daemon's network namespace, from the
// directory where scripts/sdk-tools.sh installed the SDK; configured only through its
// documented settings: E2B_API_KEY, E2B_API_URL, E2B_SANDBOX_URL (environment) and, for one
// check, the same as constructor options (apiKey, apiUrl, sandboxUrl). Also passed:
// E2BCHECK_TEMPLATE (a template of tenant A), E2BCHECK_KEY_B (a key of tenant B).
//
// Prints one JSON line per check: {"name", "ok", "detail"}; every check runs even when one
// before it failed; the last line is the check named "done".

import {
  CommandExitError,
  FileType,
  NotFoundError,
  AuthenticationError,
  Sandbox,
} from 'e2b'

const TEMPLATE = process.env.E2BCHECK_TEMPLATE
const KEY_B = process.env.E2BCHECK_KEY_B
const state = {}
const checks = []

function emit(name, ok, detail) {
  console.log(JSON.stringify({ name, ok, detail: String(detail ?? '').slice(0, 2000) }))
}

class CheckFailed extends Error {}

function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg)
}

async function rejects(types, fn, what) {
  let v
  try {
    v = await fn()
  } catch (e) {
    if (types.some((t) => e instanceof t)) return e
    throw new CheckFailed(`${what}: expected ${types.map((t) => t.name)}, got ${e?.name}: ${e?.message}`)
  }
  throw new CheckFailed(`${what}: expected ${types.map((t) => t.name)}, returned ${JSON.stringify(v)}`)
}

function check(name, fn) {
  checks.push(async () => {
    try {
      emit(name, true, (await fn()) ?? '')
    } catch (e) {
      emit(name, false, e instanceof CheckFailed ? e.message : `${e?.name}: ${e?.message} | ${e?.stack}`)
    }
  })
}

function sbx() {
  if (!state.sbx) throw new CheckFailed('no sandbox: `create` failed')
  return state.sbx
}

check('create', async () => {
  const s = await Sandbox.create(TEMPLATE, { timeoutMs: 300_000, metadata: { suite: 'js' } })
  state.sbx = s
  expect(s.sandboxId, 'Sandbox.create returned no sandboxId')
  const info = await s.getInfo()
  expect(info.sandboxId === s.sandboxId, `getInfo names another sandbox: ${JSON.stringify(info)}`)
  expect(info.metadata?.suite === 'js', `metadata not kept: ${JSON.stringify(info.metadata)}`)
  return s.sandboxId
})

check('commands.run', async () => {
  const r = await sbx().commands.run('echo hello; echo oops >&2')
  expect(r.exitCode === 0, `exit code ${r.exitCode}`)
  expect(r.stdout === 'hello\n', `stdout ${JSON.stringify(r.stdout)}`)
  expect(r.stderr === 'oops\n', `stderr ${JSON.stringify(r.stderr)}`)
  const e = await rejects([CommandExitError], () => sbx().commands.run('exit 7'), "run('exit 7')")
  expect(e.exitCode === 7, `CommandExitError.exitCode ${e.exitCode}`)
  const env = await sbx().commands.run('echo "$FOO"; pwd', { envs: { FOO: 'bar' }, cwd: '/tmp' })
  expect(env.stdout === 'bar\n/tmp\n', `envs and cwd: ${JSON.stringify(env.stdout)}`)
  const root = await sbx().commands.run('id -u', { user: 'root' })
  expect(root.stdout === '0\n', `user root: ${JSON.stringify(root.stdout)}`)
})

check('commands.background', async () => {
  let out = ''
  const h = await sbx().commands.run('echo ready; sleep 600', {
    background: true,
    onStdout: (d) => {
      out += d
    },
  })
  const deadline = Date.now() + 30_000
  while (!out.includes('ready')) {
    expect(Date.now() < deadline, `no streamed output in 30 s: ${JSON.stringify(out)}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  expect(await h.kill(), 'kill() answered false')
})

check('files.write_read', async () => {
  const s = sbx()
  const w = await s.files.write('/tmp/js/hello.txt', 'hello from js')
  expect(w.path === '/tmp/js/hello.txt', `WriteInfo.path ${w.path}`)
  const text = await s.files.read('/tmp/js/hello.txt')
  expect(text === 'hello from js', `read back ${JSON.stringify(text)}`)
  const bytes = new Uint8Array(65536).map((_, i) => i % 256)
  await s.files.write('/tmp/js/blob.bin', bytes.buffer)
  const back = await s.files.read('/tmp/js/blob.bin', { format: 'bytes' })
  expect(back.length === bytes.length && back.every((b, i) => b === bytes[i]), 'binary read back differs')
})

check('files.dirs', async () => {
  const s = sbx()
  expect(await s.files.makeDir('/tmp/js/dir'), 'makeDir answered false')
  const names = (await s.files.list('/tmp/js')).map((e) => `${e.name}:${e.type}`).sort()
  expect(
    JSON.stringify(names) === JSON.stringify(['blob.bin:file', 'dir:dir', 'hello.txt:file'].sort()),
    `list: ${JSON.stringify(names)} (FileType.DIR is ${FileType.DIR})`,
  )
  expect(await s.files.exists('/tmp/js/hello.txt'), 'exists false')
  await s.files.remove('/tmp/js/hello.txt')
  expect(!(await s.files.exists('/tmp/js/hello.txt')), 'exists true after remove')
})

check('create.options', async () => {
  // Constructor options instead of the environment: tenant B's key, so the sandbox is B's.
  const b = await Sandbox.create({
    apiKey: KEY_B,
    apiUrl: process.env.E2B_API_URL,
    sandboxUrl: process.env.E2B_SANDBOX_URL,
    timeoutMs: 120_000,
  })
  try {
    expect((await b.commands.run('echo b')).stdout === 'b\n', "tenant B's sandbox runs")
    await rejects([NotFoundError], () => Sandbox.getInfo(b.sandboxId), "tenant A: getInfo of B's")
    await rejects([NotFoundError], () => Sandbox.getInfo(sbx().sandboxId, { apiKey: KEY_B }), "tenant B: getInfo of A's")
  } finally {
    await b.kill()
  }
})

check('errors', async () => {
  await rejects([NotFoundError], () => Sandbox.getInfo('no-such-sandbox'), 'getInfo of an unknown id')
  await rejects([AuthenticationError], () => Sandbox.create({ apiKey: 'e2b_' + '0'.repeat(40) }), 'create with a bad key')
})

check('kill', async () => {
  const s = sbx()
  expect((await s.kill()) !== false, 'kill() answered false')
  await rejects([NotFoundError], () => Sandbox.getInfo(s.sandboxId), 'getInfo after kill')
  expect((await Sandbox.kill(s.sandboxId)) === false, 'kill of a killed sandbox answered true')
})

for (const c of checks) await c()
emit('done', true)
