// The TypeScript SDK checks for files (cp, tar both ways with GNU tar, fs routes, watch) and
// for the node itself (stats, health, logs, lifecycle, shell, forward). Imported by check.mjs.
import fs from 'node:fs';
import path from 'node:path';
import {
  check, fail, show, needNode, sh, sha, tmp, url, token, state, client,
  http, Readable, WebSocket, SlicerShellSession, encodeFrame, parseFrame, parseAddressMapping,
  FRAME_TYPE_DATA, execFileSync, randomBytes, SlicerAPIError,
} from './check.mjs';

const vm = () => state.vm;

export async function copies() {
  const blob = randomBytes(300_000);
  await check('fs.writeFile+readFile(binary)', async () => {
    needNode();
    await vm().fs.writeFile('/tmp/ts-blob.bin', blob, { uid: 1000, gid: 1000, permissions: '0640' });
    const back = await vm().fs.readFile('/tmp/ts-blob.bin');
    if (!back.equals(blob)) fail(`read back ${back.length} bytes, want the ${blob.length} written`);
    const st = await sh("stat -c '%u %g %a' /tmp/ts-blob.bin");
    if (st !== '1000 1000 640\n') fail(`owner/mode ${show(st)}`);
    await vm().fs.writeFile('/tmp/ts-text.txt', 'text body\n');
    if ((await sh('cat /tmp/ts-text.txt')) !== 'text body\n') fail('string content not written');
  });
  // GNU tar both ways: an archive made by tar(1) goes up, one from the node is read by tar(1).
  const tree = path.join(tmp, 'tree');
  fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
  fs.mkdirSync(path.join(tree, 'empty'));
  fs.writeFileSync(path.join(tree, 'a.txt'), 'alpha\n');
  fs.writeFileSync(path.join(tree, 'sub', 'b.bin'), blob.subarray(0, 1000));
  const archive = execFileSync('tar', ['-cf', '-', '-C', tree, '.']);
  await check('fs.tarTo(Buffer,GNU tar)', async () => {
    needNode();
    await sh('mkdir -p /tmp/ts-up');
    await vm().fs.tarTo('/tmp/ts-up', archive);
    const out = await sh('cat /tmp/ts-up/a.txt; sha256sum /tmp/ts-up/sub/b.bin | cut -c1-64; test -d /tmp/ts-up/empty && echo dirs');
    const want = `alpha\n${sha(blob.subarray(0, 1000))}\ndirs\n`;
    if (out !== want) fail(`in the node ${show(out)}, want ${show(want)}`);
  });
  await check('fs.tarTo(Readable)', async () => {
    needNode();
    await sh('mkdir -p /tmp/ts-up2');
    await vm().fs.tarTo('/tmp/ts-up2', Readable.from([archive.subarray(0, 700), archive.subarray(700)]));
    if ((await sh('cat /tmp/ts-up2/a.txt')) !== 'alpha\n') fail('streamed archive not unpacked');
  });
  await check('fs.tarFrom(GNU tar)', async () => {
    needNode();
    await sh('mkdir -p /tmp/ts-down/d && echo one > /tmp/ts-down/one && echo two > /tmp/ts-down/d/two');
    const tar = await vm().fs.tarFrom('/tmp/ts-down');
    const dest = path.join(tmp, 'down');
    fs.mkdirSync(dest);
    execFileSync('tar', ['-xf', '-', '-C', dest], { input: tar });
    const listing = execFileSync('tar', ['-tf', '-'], { input: tar }).toString();
    const two = [path.join(dest, 'd', 'two'), path.join(dest, 'ts-down', 'd', 'two')].find((p) => fs.existsSync(p));
    if (!two || fs.readFileSync(two, 'utf8') !== 'two\n') fail(`unpacked listing ${show(listing)}`);
    return listing.split('\n').slice(0, 5).join(' ');
  });
}

export async function fsCalls() {
  await check('fs.readDir', async () => {
    needNode();
    await sh('mkdir -p /tmp/ts-fs/sub && printf 123 > /tmp/ts-fs/three');
    const l = await vm().fs.readDir('/tmp/ts-fs');
    const three = l.find((e) => e.name === 'three');
    const sub = l.find((e) => e.name === 'sub');
    if (!three || three.type !== 'file' || three.size !== 3 || !three.mtime || !three.mode || sub?.type !== 'directory') fail(`readdir ${show(l)}`);
    return show(l);
  });
  await check('fs.stat+exists', async () => {
    needNode();
    const st = await vm().fs.stat('/tmp/ts-fs/three');
    if (!st || st.size !== 3 || st.type !== 'file' || st.name !== 'three') fail(`stat ${show(st)}`);
    if ((await vm().fs.stat('/tmp/ts-fs/none')) !== null) fail('stat of a missing file is not null');
    if (!(await vm().fs.exists('/tmp/ts-fs/three'))) fail('exists(existing) = false');
    if (await vm().fs.exists('/tmp/ts-fs/none')) fail('exists(missing) = true');
  });
  await check('fs.mkdir', async () => {
    needNode();
    await vm().fs.mkdir({ path: '/tmp/ts-fs/m/n', recursive: true, mode: '0750' });
    if ((await sh("stat -c '%F %a' /tmp/ts-fs/m/n")) !== 'directory 750\n') fail('not made as asked');
    try {
      await vm().fs.mkdir({ path: '/tmp/ts-fs/p/q' });
      fail('a non-recursive mkdir with a missing parent succeeded');
    } catch (e) {
      if (!(e instanceof SlicerAPIError) || e.status >= 500) throw e;
    }
  });
  await check('fs.remove', async () => {
    needNode();
    await vm().fs.remove('/tmp/ts-fs/three');
    await vm().fs.remove('/tmp/ts-fs/m', true);
    const left = (await sh('ls /tmp/ts-fs')).split('\n');
    if (left.includes('three') || left.includes('m')) fail(`left ${show(left)}`);
  });
  await check('fs.watch', async () => {
    needNode();
    await sh('mkdir -p /tmp/ts-w');
    setTimeout(() => {
      sh('echo x > /tmp/ts-w/skip.log; echo x > /tmp/ts-w/hit.txt').catch(() => {});
    }, 700);
    const got = [];
    for await (const ev of vm().fs.watch({ paths: ['/tmp/ts-w'], patterns: ['*.txt'], timeout: '20s', maxEvents: 1 })) got.push(ev);
    if (got.length !== 1 || got[0].path !== '/tmp/ts-w/hit.txt' || !got[0].type || !(got[0].id > 0)) fail(`events ${show(got)}`);
    return show(got[0]);
  });
}

async function waitExec() {
  let last;
  for (let i = 0; i < 100; i++) {
    try {
      if ((await sh('echo up')) === 'up\n') return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  fail(`exec did not work again: ${last?.message}`);
}

const status = async () => (await client.vms.list()).find((n) => n.hostname === vm().hostname)?.status ?? '';

export async function nodeCalls() {
  await check('vms.stats', async () => {
    needNode();
    const stats = await client.vms.stats();
    const s = stats.find((x) => x.hostname === vm().hostname);
    const p = s?.snapshot;
    if (!p || s.error || !(p.totalMemory > 0) || !(p.memoryUsed > 0) || !(p.totalCpus > 0) || !(p.diskSpaceTotal > 0) || !p.timestamp || !p.uptime) {
      fail(`stat ${show(s)} in ${stats.length}`);
    }
    return show(p);
  });
  await check('vm.health', async () => {
    needNode();
    const h = await vm().health();
    if (h.hostname !== vm().hostname || !h.agentVersion || !(h.agentUptime > 0) || !(h.systemUptime > 0)) fail(`health ${show(h)}`);
    const again = await vm().waitForAgent({ timeoutMs: 5000 });
    if (again.hostname !== vm().hostname) fail(`waitForAgent ${show(again)}`);
    return show(h);
  });
  await check('vm.logs', async () => {
    needNode();
    const l = await vm().logs();
    if (l.hostname !== vm().hostname || typeof l.content !== 'string' || typeof l.lines !== 'number') fail(`logs ${show(l)}`);
    return `${l.lines} lines`;
  });
  await check('shell.SlicerShellSession', async () => {
    needNode();
    let out = '';
    let onData;
    const term = {
      cols: 91, rows: 37,
      onData: (cb) => { onData = cb; return { dispose() {} }; },
      write: (d) => { out += d; },
      reset() {},
    };
    // The session is written for a browser's WebSocket; Node 20 has none, so ws stands in, with the
    // socket or bearer token a browser page would get from its origin.
    const base = url.startsWith('/') ? `ws+unix://${url}:` : url.replace(/^http/, 'ws');
    globalThis.WebSocket = class extends WebSocket {
      constructor(u) { super(u, token ? { headers: { Authorization: `Bearer ${token}` } } : {}); }
    };
    const states = [];
    const closed = new Promise((resolve) => {
      const s = new SlicerShellSession(term, {
        url: `${base}/vm/${encodeURIComponent(vm().hostname)}/shell`,
        onStateChange: (st) => { states.push(st); if (st === 'connected') setTimeout(() => onData('stty size; tty >/dev/null && echo is-a-tty; echo shell-$((6*7)); exit\n'), 300); if (st === 'disconnected') resolve(); },
      });
      s.connect();
      setTimeout(() => { s.disconnect(); resolve(); }, 20_000);
    });
    await closed;
    if (!out.includes('37 91') || !out.includes('is-a-tty') || !out.includes('shell-42')) fail(`states ${states} output ${show(out.slice(0, 300))}`);
    const f = parseFrame(encodeFrame(FRAME_TYPE_DATA, new Uint8Array([104, 105])).buffer);
    if (f?.frameType !== FRAME_TYPE_DATA || Buffer.from(f.payload).toString() !== 'hi') fail('frame codec');
  });
  // Two servers in the node: one on every address, one on its loopback only (a forward of
  // 127.0.0.1:PORT reaches the node's own loopback on Slicer: its agent dials inside).
  for (const [name, bind, port] of [
    ['vm.forward(server on 0.0.0.0)', '0.0.0.0', 8081],
    ['vm.forward(server on the node\'s loopback)', '127.0.0.1', 8080],
  ]) {
  await check(name, async () => {
    needNode();
    const m = parseAddressMapping(`127.0.0.1:0:127.0.0.1:${port}`);
    if (m.listenPort !== 0 || m.remotePort !== port) fail(`parseAddressMapping ${show(m)}`);
    const web = await vm().bg.exec({
      command: `mkdir -p /tmp/www && echo forwarded-ok > /tmp/www/index.html && exec httpd -f -p ${bind}:${port} -h /tmp/www`,
      shell: '/bin/sh',
    });
    // The server answers inside the node first, so that a failure below is the forward's.
    let inside = '';
    for (let i = 0; i < 20 && inside !== 'forwarded-ok\n'; i++) {
      inside = await sh(`wget -qO- http://127.0.0.1:${port}/`).catch((e) => e.message);
      if (inside !== 'forwarded-ok\n') await new Promise((r) => setTimeout(r, 250));
    }
    if (inside !== 'forwarded-ok\n') fail(`the web server in the node does not answer inside it: ${show(inside)}`);
    const fwd = await vm().forward(`127.0.0.1:0:127.0.0.1:${port}`);
    try {
      const port = fwd.listeners[0]?.port;
      if (!port) fail(`listeners ${show(fwd.listeners)}`);
      let body = '';
      for (let i = 0; i < 20 && body !== 'forwarded-ok\n'; i++) {
        body = await new Promise((resolve) => {
          http.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
            let b = '';
            res.on('data', (c) => { b += c; });
            res.on('end', () => resolve(b));
          }).on('error', () => resolve(''));
        });
        if (body !== 'forwarded-ok\n') await new Promise((r) => setTimeout(r, 250));
      }
      if (body !== 'forwarded-ok\n') fail(`through the forward: ${show(body)}`);
    } finally {
      await fwd.close();
      await vm().bg.kill(web.execId, { signal: 'SIGKILL' }).catch(() => {});
      await vm().bg.remove(web.execId).catch(() => {});
    }
  });
  }
  await check('vm.pause+resume', async () => {
    needNode();
    await vm().pause();
    if ((await status()) !== 'Paused') { await vm().resume(); fail('status after pause is not Paused'); }
    await vm().resume();
    if ((await status()) !== 'Running') fail('status after resume is not Running');
    await waitExec();
  });
  // Reboot is Slicer's graceful stop on Firecracker: the node either stops (then relaunch
  // brings it back) or restarts (its agent's uptime starts again); it must come back working.
  await check('vm.shutdown(reboot)', async () => {
    needNode();
    await new Promise((r) => setTimeout(r, 1100));
    const before = await vm().health();
    await vm().shutdown({ action: 'reboot' });
    let how = '';
    for (let i = 0; i < 300 && !how; i++) {
      if ((await status()) === 'Stopped') {
        how = 'stopped';
        await vm().relaunch();
        break;
      }
      const now = await vm().health().catch(() => undefined);
      if (now && now.agentUptime > 0 && now.agentUptime < before.agentUptime) how = 'restarted';
      else await new Promise((r) => setTimeout(r, 200));
    }
    if (!how) fail(`after reboot the node neither stopped nor restarted (status ${await status()})`);
    await waitExec();
    return how;
  });
  await check('vm.shutdown(shutdown)+relaunch', async () => {
    needNode();
    await vm().shutdown({ action: 'shutdown' });
    for (let i = 0; i < 100 && (await status()) !== 'Stopped'; i++) await new Promise((r) => setTimeout(r, 300));
    if ((await status()) !== 'Stopped') fail(`status after shutdown ${await status()}`);
    await vm().relaunch();
    await waitExec();
    if ((await status()) !== 'Running') fail(`status after relaunch ${await status()}`);
  });
  // Jail nodes: suspend either works (restore brings the node back) or is refused with a clear
  // 4xx; a missing route (404/405) or a 5xx is a failure.
  await check('vm.suspend+restore', async () => {
    needNode();
    try {
      await vm().suspend();
    } catch (e) {
      if (e instanceof SlicerAPIError && [400, 409, 422].includes(e.status) && e.body.includes('{')) return `refused: ${e.body}`;
      throw e;
    }
    await vm().restore();
    await waitExec();
    return 'suspended and restored';
  });
}
