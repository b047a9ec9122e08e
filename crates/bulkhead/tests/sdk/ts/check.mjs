// Calls every public function of Slicer's TypeScript SDK against a live bulkhead daemon and
// prints one JSON line per named check: {"name","ok","detail"}.
//
// Run from a built copy of third_party/slicer-sdk-ts (scripts/sdk-tools.sh puts this file
// beside its dist/ and node_modules/) by crates/bulkhead/tests/e2e_sdk.rs. Every check runs,
// whatever failed before it. Environment: SDK_URL (socket path or http://host:port),
// SDK_TOKEN, SDK_GROUP, SDK_SET ("full": jail nodes, every call; "vm": create/exec/cp/delete).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import WebSocket from 'ws';
import {
  SlicerClient,
  SlicerAPIError,
  SecretExistsError,
  SlicerShellSession,
  encodeFrame,
  parseFrame,
  parseAddressMapping,
  resolveTransport,
  FRAME_TYPE_DATA,
} from './dist/index.js';

const url = process.env.SDK_URL;
const token = process.env.SDK_TOKEN || undefined;
const group = process.env.SDK_GROUP;
const vmSet = process.env.SDK_SET === 'vm';
if (!url || !group) {
  console.error('check.mjs: set SDK_URL and SDK_GROUP');
  process.exit(2);
}
const timeoutMs = vmSet ? 240_000 : 90_000;
const client = new SlicerClient({ baseURL: url, ...(token && { token }), userAgent: 'bulkhead-sdkcheck-ts' });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sdkcheck-ts-'));
let vm; // the main node's handle
let noNode = 'not created yet';

class Fail extends Error {}
const fail = (msg) => {
  throw new Fail(msg);
};
const show = (v) => JSON.stringify(v, (_, x) => (Buffer.isBuffer(x) ? `<${x.length} bytes>` : x));

async function check(name, f) {
  let ok = true;
  let detail = '';
  let timer;
  try {
    const r = await Promise.race([
      f(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    detail = r === undefined ? '' : String(r);
  } catch (e) {
    ok = false;
    detail = e instanceof Error ? e.message : String(e);
  } finally {
    clearTimeout(timer);
  }
  if (detail.length > 600) detail = detail.slice(0, 600) + '...';
  process.stdout.write(JSON.stringify({ name, ok, detail }) + '\n');
  return ok;
}

function needNode() {
  if (!vm) fail(`no node to act on: ${noNode}`);
}

// Runs a shell snippet in the node; a non-zero exit is a failure.
async function sh(script) {
  const r = await vm.execBuffered({ command: script, shell: '/bin/sh', stdio: 'text' });
  if (r.exitCode !== 0) fail(`exec ${script}: exit ${r.exitCode}: ${r.stderr}`);
  return r.stdout;
}

const sha = (b) => createHash('sha256').update(b).digest('hex');

async function collect(gen) {
  let stdout = Buffer.alloc(0);
  let stderr = Buffer.alloc(0);
  const types = [];
  let exit;
  for await (const f of gen) {
    types.push(f.type);
    const bytes = f.dataBytes ?? (f.data !== undefined ? Buffer.from(f.data) : undefined);
    if (f.type === 'stdout' && bytes) stdout = Buffer.concat([stdout, bytes]);
    if (f.type === 'stderr' && bytes) stderr = Buffer.concat([stderr, bytes]);
    if (f.type === 'exit') exit = f;
  }
  return { stdout, stderr, types, exit };
}

async function meta() {
  await check('info.getInfo', async () => {
    const info = await client.getInfo();
    // Slicer's spec has version and git_commit; platform and arch are optional in the SDK.
    if (!info.version || !info.git_commit) fail(`info lacks version/git_commit: ${show(info)}`);
    return show(info);
  });
  await check('hostgroups.list+find', async () => {
    const groups = await client.hostGroups.list();
    const g = await client.hostGroups.find(group);
    if (!g || g.ramBytes <= 0 || g.cpus <= 0 || !groups.some((x) => x.name === group)) {
      fail(`group ${group} in ${show(groups)}: ${show(g)}`);
    }
    if ((await client.hostGroups.find('no-such-group')) !== undefined) fail('found a group that does not exist');
    return show(g);
  });
  await check('client.fromEnv', async () => {
    process.env.SLICER_URL = url;
    if (token) process.env.SLICER_TOKEN = token;
    const c = SlicerClient.fromEnv();
    const groups = await c.hostGroups.list();
    if (!groups.some((g) => g.name === group)) fail(`groups ${show(groups)}`);
  });
  await check('transport.resolveTransport', async () => {
    const t = resolveTransport(url);
    const want = url.startsWith('/') ? 'socket' : 'net';
    if (t.kind !== want) fail(`resolveTransport(${url}) = ${show(t)}`);
  });
}

async function create() {
  const ok = await check('vms.create(tags,wait=agent)', async () => {
    const v = await client.vms.create(group, { tags: ['sdk', 'sdk-env=a'] }, { wait: 'agent', waitTimeoutSec: 180 });
    if (!v.hostname || v.hostGroup !== group || !v.createdAt || !v.arch) fail(`create answered ${show(v)}`);
    // The full set runs with a node network (as Slicer's nodes always have): an address.
    if (!vmSet && !v.ip) fail(`create answered no ip: ${show(v)}`);
    vm = v;
    return v.hostname;
  });
  if (!ok) {
    try {
      vm = await client.vms.create(group, {}, { wait: 'agent', waitTimeoutSec: 180 });
    } catch (e) {
      noNode = e.message;
    }
  }
  if (vmSet) return;
  await check('vms.createRaw+attach+delete', async () => {
    const res = await client.vms.createRaw(group, {}, { wait: 'agent' });
    if (!res.hostname || !res.createdAt) fail(`createRaw answered ${show(res)}`);
    const h = client.vms.attach(group, res.hostname);
    const health = await h.waitForAgent({ timeoutMs: 30_000 });
    if (health.hostname !== res.hostname) fail(`health ${show(health)}`);
    await h.delete();
    if ((await client.vms.get(res.hostname)) !== undefined) fail(`${res.hostname} still there after delete`);
    return res.hostname;
  });
  await check('vms.create(userdata)+waitForUserdata', async () => {
    const v = await client.vms.create(group, { userdata: '#!/bin/sh\necho userdata-ran > /tmp/userdata-mark\n' });
    try {
      const h = await v.waitForUserdata({ timeoutMs: 60_000 });
      if (!h.userdataRan) fail(`health ${show(h)}`);
      const r = await v.execBuffered({ command: 'cat', args: ['/tmp/userdata-mark'] });
      if (r.stdout !== 'userdata-ran\n') fail(`userdata output ${show(r)}`);
    } finally {
      await v.delete().catch(() => {});
    }
  });
  await check('vms.list+get', async () => {
    needNode();
    const all = await client.vms.list();
    const me = all.find((n) => n.hostname === vm.hostname);
    if (!me || me.hostGroup !== group || !me.ip || me.status !== 'Running' || !me.createdAt || !(me.ramBytes > 0)) {
      fail(`listed as ${show(me)} in ${show(all)}`);
    }
    const got = await client.vms.get(vm.hostname);
    if (!got || got.hostname !== vm.hostname || got.hostGroup !== group) fail(`get: ${show(got)}`);
    if ((await client.vms.get('no-such-node')) !== undefined) fail('get found a node that does not exist');
    return show(me);
  });
  await check('vms.list(tag,tagPrefix)', async () => {
    needNode();
    for (const [opts, want] of [
      [{ tag: 'sdk' }, true],
      [{ tagPrefix: 'sdk-env' }, true],
      [{ tag: 'sdk-env' }, false],
      [{ tag: 'no-such-tag' }, false],
    ]) {
      const has = (await client.vms.list(opts)).some((n) => n.hostname === vm.hostname);
      if (has !== want) fail(`list(${show(opts)}) lists the node: ${has}, want ${want}`);
    }
  });
  await check('hostgroups.listVMs', async () => {
    needNode();
    const nodes = await client.hostGroups.listVMs(group);
    const me = nodes.find((n) => n.hostname === vm.hostname);
    if (!me || !(me.tags ?? []).includes('sdk')) fail(`${vm.hostname} (tag sdk) not in ${show(nodes)}`);
    if ((await client.hostGroups.listVMs(group, { tag: 'no-such-tag' })).length !== 0) fail('tag filter ignored');
  });
}

async function execs() {
  await check('exec.execBuffered(text)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: 'echo', args: ['hello', 'world'] });
    if (r.stdout !== 'hello world\n' || r.exitCode !== 0 || !(r.pid > 0) || !r.startedAt || !r.endedAt) {
      fail(`got ${show(r)}: want stdout, exit 0, pid, startedAt, endedAt`);
    }
  });
  await check('exec.execBuffered(base64,binary)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: 'printf', args: ['\\000\\377\\200a'], stdio: 'base64' });
    if (!Buffer.isBuffer(r.stdout) || !r.stdout.equals(Buffer.from([0, 0xff, 0x80, 0x61]))) fail(`got ${show(r)} ${r.stdout.toString('hex')}`);
  });
  await check('exec.execBuffered(exit code,stderr,env,cwd,shell)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: 'echo $FOO $(pwd) >&2; exit 3', shell: '/bin/sh', env: ['FOO=bar'], cwd: '/tmp' });
    if (r.exitCode !== 3 || r.stderr !== 'bar /tmp\n') fail(`got ${show(r)}`);
  });
  await check('exec.execBuffered(uid,gid,permissions)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: 'sh', args: ['-c', 'id -u; umask'], uid: 1000, gid: 1000, permissions: '0644' });
    if (r.exitCode !== 0 || !r.stdout.startsWith('1000\n')) fail(`got ${show(r)}`);
    return r.stdout.replace('\n', ' ');
  });
  await check('exec.execBuffered(missing command)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: '/no/such/command' });
    if (r.exitCode === 0 && !r.error) fail(`got ${show(r)}: want a non-zero exit or an error`);
    return `exit ${r.exitCode} error ${r.error ?? ''}`;
  });
  await check('exec.execBuffered(signal)', async () => {
    needNode();
    const r = await vm.execBuffered({ command: 'kill -TERM $$', shell: '/bin/sh' });
    if (typeof r.signal !== 'string' || !r.signal.toUpperCase().includes('TERM')) fail(`got ${show(r)}: want signal SIGTERM as a string`);
    return r.signal;
  });
  await check('exec.exec(stream,text)', async () => {
    needNode();
    const { stdout, stderr, types, exit } = await collect(vm.exec({ command: 'echo out; echo err >&2; exit 5', shell: '/bin/sh', stdio: 'text' }));
    if (stdout.toString() !== 'out\n' || stderr.toString() !== 'err\n' || exit?.exitCode !== 5) {
      fail(`stdout ${show(stdout.toString())} stderr ${show(stderr.toString())} exit ${show(exit)} frames ${types}`);
    }
    return types.join(',');
  });
  await check('exec.exec(stream,base64,stdin)', async () => {
    needNode();
    const input = Buffer.from([1, 0, 254, 10, 255]);
    const { stdout, exit } = await collect(vm.exec({ command: 'cat', stdin: input, stdio: 'base64' }));
    if (!stdout.equals(input) || exit?.exitCode !== 0) fail(`stdout ${stdout.toString('hex')} exit ${show(exit)}`);
  });
}

async function bg() {
  let id;
  await check('bg.exec', async () => {
    needNode();
    const r = await vm.bg.exec({ command: 'echo bg-one; sleep 1; echo bg-two >&2', shell: '/bin/sh', cwd: '/tmp' });
    if (!r.execId || !(r.pid > 0) || !r.startedAt || !(r.ringBytes > 0)) fail(`got ${show(r)}`);
    id = r.execId;
    return id;
  });
  const needId = () => id || fail('no background exec');
  await check('bg.list', async () => {
    needId();
    const l = await vm.bg.list();
    if (!l.some((i) => i.execId === id)) fail(`${id} not in ${show(l)}`);
  });
  await check('bg.info', async () => {
    needId();
    const i = await vm.bg.info(id);
    if (i.execId !== id || !(i.pid > 0) || !i.command || !(i.ringBytes > 0)) fail(`got ${show(i)}`);
  });
  await check('bg.wait', async () => {
    needId();
    const w = await vm.bg.wait(id, 20);
    if (w.running || w.timedOut || w.exitCode !== 0 || !w.endedAt) fail(`got ${show(w)}`);
  });
  await check('bg.logs', async () => {
    needId();
    const { stdout, stderr, types } = await collect(vm.bg.logs(id));
    if (stdout.toString() !== 'bg-one\n' || stderr.toString() !== 'bg-two\n' || !types.includes('exit')) {
      fail(`stdout ${show(stdout.toString())} stderr ${show(stderr.toString())} frames ${types}`);
    }
    const later = await collect(vm.bg.logs(id, { fromId: 2, follow: true }));
    if (later.types.length === 0 || later.types.length >= types.length) fail(`fromId=2 gave ${later.types} of ${types}`);
    return types.join(',');
  });
  await check('bg.remove', async () => {
    needId();
    const d = await vm.bg.remove(id);
    if (d.execId !== id || !d.reaped) fail(`got ${show(d)}`);
    try {
      await vm.bg.info(id);
      fail('info after remove succeeded');
    } catch (e) {
      if (!(e instanceof SlicerAPIError) || (e.status !== 410 && e.status !== 404)) throw e;
    }
  });
  await check('bg.kill(signal,graceMs)', async () => {
    needNode();
    const r = await vm.bg.exec({ command: 'sleep', args: ['300'] });
    const k = await vm.bg.kill(r.execId, { signal: 'SIGTERM', graceMs: 500 });
    if (k.execId !== r.execId || !k.signalSent.includes('TERM')) fail(`kill answered ${show(k)}`);
    const w = await vm.bg.wait(r.execId, 10);
    if (w.running || !(w.signal ?? '').toUpperCase().includes('TERM')) fail(`after kill ${show(w)}`);
    await vm.bg.remove(r.execId);
    return k.signalSent;
  });
  await check('bg.exec(ringBytes,gap)', async () => {
    needNode();
    const r = await vm.bg.exec({ command: 'seq 1 100000', shell: '/bin/sh', ringBytes: 65536 });
    try {
      if (r.ringBytes !== 65536) fail(`ringBytes ${r.ringBytes}`);
      await vm.bg.wait(r.execId, 20);
      const i = await vm.bg.info(r.execId);
      const { stdout, types } = await collect(vm.bg.logs(r.execId));
      const out = stdout.toString();
      if (!types.includes('gap') || !(i.bytesDropped > 0) || !out.endsWith('\n100000\n') || out.length > 65536) {
        fail(`frames ${[...new Set(types)]} dropped ${i.bytesDropped} kept ${out.length} bytes`);
      }
      return `dropped ${i.bytesDropped}`;
    } finally {
      await vm.bg.remove(r.execId).catch(() => {});
    }
  });
}

export { check, fail, show, needNode, sh, sha, collect, tmp, url, token, group };
export const state = { get vm() { return vm; } };

// Secrets (#13): list, create (SecretExistsError on a taken name), patch, delete, and a node
// created with `secrets` that finds its file with the asked owner and mode.
async function secrets() {
  const name = `sdk-ts-${Date.now()}`;
  const value = `ts-sdk-value-${name}`;
  await check('secrets.create+list', async () => {
    await client.secrets.create({ name, data: value, permissions: '0440', uid: 1000, gid: 1000 });
    try {
      await client.secrets.create({ name, data: 'x' });
      fail('a second create succeeded');
    } catch (e) {
      if (!(e instanceof SecretExistsError)) throw e;
    }
    const s = (await client.secrets.list()).find((x) => x.name === name);
    if (!s || s.size !== value.length || s.permissions !== '0440' || s.uid !== 1000 || !s.modifiedAt) fail(`listed as ${show(s)}`);
    return show(s);
  });
  await check('secrets.vms.create(secrets)+patch+delete', async () => {
    const v = await client.vms.create(group, { secrets: [name] }, { wait: 'agent', waitTimeoutSec: 180 });
    try {
      const r = await v.execBuffered({ command: `cat /run/secrets/${name}; stat -c ' %a %u %g' /run/secrets/${name}`, shell: '/bin/sh', stdio: 'text' });
      if (r.stdout.trim() !== `${value} 440 1000 1000`) fail(`the node reads ${show(r)}`);
    } finally {
      await v.delete().catch(() => {});
    }
    await client.secrets.patch(name, { data: `new-${value}`, permissions: '0400' });
    const s = (await client.secrets.list()).find((x) => x.name === name);
    if (s.size !== value.length + 4 || s.permissions !== '0400') fail(`after patch ${show(s)}`);
    await client.secrets.delete(name);
    try {
      await client.secrets.delete(name);
      fail('a second delete succeeded');
    } catch (e) {
      if (!(e instanceof SlicerAPIError) || e.status !== 404) throw e;
    }
  });
}

async function main() {
  await meta();
  await create();
  await execs();
  const files = await import('./check-files.mjs');
  await files.copies();
  if (!vmSet) {
    await bg();
    await files.fsCalls();
    await files.nodeCalls();
    await secrets(); // secrets (#13)
  }
  await check('vm.delete', async () => {
    needNode();
    await vm.delete();
    if ((await client.vms.list()).some((n) => n.hostname === vm.hostname)) fail(`${vm.hostname} still listed after delete`);
    try {
      await vm.delete();
      fail('a second delete succeeded');
    } catch (e) {
      if (!(e instanceof SlicerAPIError) || e.status !== 404) throw e;
    }
  });
  fs.rmSync(tmp, { recursive: true, force: true });
  process.exit(0);
}

// Shared with check-files.mjs (imported lazily, after this module is initialised).
export { client, vmSet, http, Readable, WebSocket, SlicerShellSession, encodeFrame, parseFrame, parseAddressMapping, FRAME_TYPE_DATA, execFileSync, randomBytes, SlicerAPIError };

main();
