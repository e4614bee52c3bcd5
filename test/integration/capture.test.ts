/**
 * `vsw capture` on a real daemon: pings between two namespaces recorded with
 * the real CLI and read back by tshark (addresses, points, interfaces), a
 * policy-blocked frame captured at the drop point with its reason, Ctrl-C,
 * the end of a capture whose endpoint goes away or whose daemon stops, the
 * limit on concurrent captures, and the one-sentence refusals. Subnet
 * 10.131.0.0/24 (network c).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import { api, assertOneSentence, CLI, createEndpoint, createNetworkWithEndpoints, type DaemonHandle, type EndpointJson, startDaemon, teardown } from './helpers/daemon.js';

const prefix = runPrefix();
const net = `${prefix}-c`;
const ns = [`${prefix}-c1`, `${prefix}-c2`];

let d: DaemonHandle;
/** a, b: the endpoints in c1, c2. */
const ep: EndpointJson[] = [];
let dir: string;

test.before(async () => {
  d = await startDaemon(prefix);
  dir = d.dir;
  ep.push(...(await createNetworkWithEndpoints(d, net, '10.131.0.0/24', ns)));
});

test.after.always(async () => {
  await teardown(prefix, d);
});

// ------------------------------------------------------------------ helpers

interface RunningCapture {
  child: ChildProcess;
  /** Resolves when the CLI exits. */
  done: Promise<{ code: number; stderr: string }>;
  /** What it wrote to stdout so far. */
  stdout(): Buffer;
}

/** `vsw capture ...args` in the background; resolves once it says it is capturing (the daemon is recording). */
async function startCapture(t: ExecutionContext, args: string[]): Promise<RunningCapture> {
  const child = spawn('node', [CLI, '--socket', d.socket, 'capture', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const out: Buffer[] = [];
  child.stdout!.on('data', (c: Buffer) => out.push(c));
  const done = new Promise<{ code: number; stderr: string }>((resolve) => child.on('exit', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stderr })));
  const deadline = Date.now() + 10_000;
  while (!/^capturing /m.test(stderr)) {
    if (child.exitCode !== null) throw new Error(`vsw capture ${args.join(' ')} exited ${child.exitCode} before capturing: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`vsw capture ${args.join(' ')} did not start within 10 s: ${stderr}`);
    await sleep(20);
  }
  return { child, done, stdout: () => Buffer.concat(out) };
}

/** Waits for the capture to exit, bounded: a capture that never ends is a failure, not a hang. */
async function finished(c: RunningCapture, timeoutMs = 15_000): Promise<{ code: number; stderr: string }> {
  const timeout = sleep(timeoutMs).then(() => null);
  const r = await Promise.race([c.done, timeout]);
  if (r === null) {
    c.child.kill('SIGKILL');
    throw new Error(`vsw capture did not end within ${timeoutMs} ms`);
  }
  return r;
}

/** ping from `from` to `ip` in the background until stopped (the capture decides how many frames it keeps). */
function pingUntilStopped(t: ExecutionContext, from: string, ip: string): ChildProcess {
  const child = spawnInNetns(from, 'ping', ['-i', '0.2', '-W', '1', ip]);
  child.stdout?.resume();
  child.stderr?.resume();
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  return child;
}

/** tshark's fields of every frame of a file, '|'-separated. */
async function tshark(file: string, fields: string[], filter?: string): Promise<string[][]> {
  const r = await sh('tshark', ['-r', file, ...(filter ? ['-Y', filter] : []), '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])]);
  if (r.code !== 0) throw new Error(`tshark -r ${file}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('|'));
}

// -------------------------------------------------------------------- tests

test.serial('an endpoint capture with -c writes that many frames of the ping, which tshark and tcpdump read with the right addresses', async (t) => {
  const [a, b] = ep;
  const file = `${dir}/a.pcap`;
  const c = await startCapture(t, [a.name, '-c', '6', '-w', file]);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  const r = await finished(c);
  pinger.kill('SIGINT');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, new RegExp(`^capturing endpoint ${a.name} at ingress,egress, writing pcap to ${file}$`, 'm'));
  t.regex(r.stderr, /^6 frames captured\.$/m);
  const frames = await tshark(file, ['frame.len', 'eth.type']);
  t.is(frames.length, 6);
  const requests = await tshark(file, ['ip.src', 'ip.dst'], 'icmp.type == 8');
  const replies = await tshark(file, ['ip.src', 'ip.dst'], 'icmp.type == 0');
  t.true(requests.length >= 1, 'an echo request');
  t.true(replies.length >= 1, 'an echo reply');
  t.true(requests.every(([src, dst]) => src === a.ip && dst === b.ip), JSON.stringify(requests));
  t.true(replies.every(([src, dst]) => src === b.ip && dst === a.ip), JSON.stringify(replies));
  const td = await sh('tcpdump', ['-r', file, '-n']);
  t.is(td.code, 0, td.stderr);
  t.is(td.stdout.split('\n').filter(Boolean).length, 6);
});

test.serial('with -w - the file goes to stdout, whole, for a reader such as tshark -r -', async (t) => {
  const [a, b] = ep;
  const c = await startCapture(t, [a.name, '-c', '4', '-w', '-', '--format', 'pcapng']);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  const r = await finished(c);
  pinger.kill('SIGINT');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /writing pcapng to stdout/);
  const file = `${dir}/stdout.pcapng`;
  writeFileSync(file, c.stdout());
  t.deepEqual((await tshark(file, ['frame.interface_name'])).map((row) => row[0]), new Array(4).fill(a.name));
});

test.serial('a network capture in pcapng names each endpoint and says where each frame was seen: a request enters at a and leaves at b', async (t) => {
  const [a, b] = ep;
  const file = `${dir}/net.pcapng`;
  const c = await startCapture(t, [net, '-c', '12', '-w', file]);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  const r = await finished(c);
  pinger.kill('SIGINT');
  t.is(r.code, 0, r.stderr);
  const rows = await tshark(file, ['frame.interface_name', 'frame.comment', 'icmp.seq', 'ip.src', 'ip.dst'], 'icmp.type == 8');
  t.true(rows.length >= 2, JSON.stringify(rows));
  const seq = rows[0][2];
  const sameRequest = rows.filter((row) => row[2] === seq).map((row) => `${row[0]} ${row[1]}`);
  t.deepEqual(sameRequest.sort(), [`${a.name} ingress`, `${b.name} egress`].sort(), `request seq ${seq}`);
  t.true(rows.every((row) => row[3] === a.ip && row[4] === b.ip));
  const info = await sh('capinfos', ['-I', file]);
  t.regex(info.stdout, /Number of interfaces in file: 2/);
});

test.serial('a drop capture shows the frame a policy blocked, with the reason as its comment', async (t) => {
  const [a, b] = ep;
  await d.vswOk(['policy', 'acl', 'add', b.id, '--action', 'block', '--direction', 'in', '--protocol', 'icmp', '--priority', '100']);
  t.teardown(async () => {
    const rules = await api<{ id: string }[]>(d, 'GET', `/v1/endpoints/${b.id}/acl`);
    for (const rule of rules.body ?? []) await api(d, 'DELETE', `/v1/endpoints/${b.id}/acl/${rule.id}`);
  });
  const file = `${dir}/drops.pcapng`;
  const c = await startCapture(t, [b.name, '--point', 'drop', '-c', '1', '-w', file]);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  const r = await finished(c);
  pinger.kill('SIGINT');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /^1 frame captured\.$/m);
  const rows = await tshark(file, ['frame.interface_name', 'frame.comment', 'ip.src', 'ip.dst', 'icmp.type']);
  t.deepEqual(rows, [[b.name, 'drop: policyBlock', a.ip, b.ip, '8']]);
});

test.serial('Ctrl-C ends a capture: exit 0, the count on stderr, a file tshark reads whole, and the daemon stops recording', async (t) => {
  const [a, b] = ep;
  const file = `${dir}/ctrlc.pcap`;
  const c = await startCapture(t, [a.id, '-w', file]);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  await sleep(1500);
  c.child.kill('SIGINT');
  const r = await finished(c);
  pinger.kill('SIGINT');
  t.is(r.code, 0, r.stderr);
  const m = /^(\d+) frames? captured\.$/m.exec(r.stderr);
  t.truthy(m, r.stderr);
  const n = Number(m![1]);
  t.true(n >= 4, `1.5 s of pings, both ways: ${n} frames`);
  t.is((await tshark(file, ['frame.len'])).length, n);
  const deadline = Date.now() + 5_000;
  while (!/"msg":"capture ended"[^\n]*"end":"client"|"end":"client"[^\n]*"msg":"capture ended"/.test(d.log()) && Date.now() < deadline) await sleep(100);
  t.regex(d.log(), /"end":"client"/, 'the daemon ended the session when its client went away');
});

test.serial('a capture ends, in one sentence, when its endpoint is removed', async (t) => {
  const ns3 = `${prefix}-c3`;
  await addNetns(ns3);
  const c3 = await createEndpoint(d, net, ns3);
  const c = await startCapture(t, [c3.name, '-w', `${dir}/gone.pcap`]);
  await d.vswOk(['endpoint', 'rm', c3.id]);
  const r = await finished(c);
  t.is(r.code, 1);
  const last = r.stderr.trim().split('\n').pop()!;
  t.is(last, `vsw: the capture ended early: endpoint ${c3.name} was removed.`);
});

test.serial('several captures run at once, each with its own points; past the limit one more is refused with 409', async (t) => {
  const [a, b] = ep;
  const ingress = await startCapture(t, [a.name, '--point', 'ingress', '-c', '3', '-w', `${dir}/in.pcapng`]);
  const egress = await startCapture(t, [a.name, '--point', 'egress', '-c', '3', '-w', `${dir}/out.pcapng`]);
  const pinger = pingUntilStopped(t, ns[0], b.ip);
  const [ri, re] = [await finished(ingress), await finished(egress)];
  pinger.kill('SIGINT');
  t.is(ri.code, 0, ri.stderr);
  t.is(re.code, 0, re.stderr);
  t.deepEqual([...new Set((await tshark(`${dir}/in.pcapng`, ['frame.comment'])).map((r) => r[0]))], ['ingress']);
  t.deepEqual([...new Set((await tshark(`${dir}/out.pcapng`, ['frame.comment'])).map((r) => r[0]))], ['egress']);

  // Eight streams held open by hand (no traffic needed), then a ninth.
  const open: (() => void)[] = [];
  t.teardown(() => open.forEach((close) => close()));
  for (let i = 0; i < 8; i++) {
    const { status, close } = await openCaptureStream({ target: a.id, points: ['drop'] });
    open.push(close);
    t.is(status, 200, `capture ${i + 1}`);
  }
  const refused = await api<{ error: string }>(d, 'POST', '/v1/captures', { target: a.id });
  t.is(refused.status, 409);
  t.regex(refused.body.error, /^8 captures are running already, the most at once: .*\.$/);
  open.splice(0).forEach((close) => close());
  // Their clients gone, the daemon frees the slots.
  const deadline = Date.now() + 5_000;
  let again = await openCaptureStream({ target: a.id });
  while (again.status !== 200 && Date.now() < deadline) {
    await sleep(100);
    again = await openCaptureStream({ target: a.id });
  }
  again.close();
  t.is(again.status, 200);
});

/** POST /v1/captures, answered with headers only; the stream stays open until close(). */
function openCaptureStream(body: object): Promise<{ status: number; close: () => void }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: d.socket, method: 'POST', path: '/v1/captures', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } },
      (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, close: () => req.destroy() });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

test.serial('bad input is refused in one sentence: unknown target, bad -c, --point, --format, -s, a file that cannot be written', async (t) => {
  const [a] = ep;
  const cases: [string, string[], RegExp][] = [
    ['unknown target', ['capture', `${prefix}-nope`, '-w', `${dir}/x.pcap`], new RegExp(`no endpoint or network named ${prefix}-nope`)],
    ['-c 0', ['capture', a.name, '-c', '0', '-w', `${dir}/x.pcap`], /-c takes a whole number of frames from 1/],
    ['-c abc', ['capture', a.name, '-c', 'abc', '-w', `${dir}/x.pcap`], /-c takes a whole number/],
    ['--point', ['capture', a.name, '--point', 'ingress,sideways', '-w', `${dir}/x.pcap`], /--point takes ingress, egress, drop/],
    ['--format', ['capture', a.name, '--format', 'json', '-w', `${dir}/x.pcap`], /--format takes pcap or pcapng/],
    ['-s', ['capture', a.name, '-s', '70000', '-w', `${dir}/x.pcap`], /-s takes a whole number of bytes from 1 to 65535/],
    ['missing directory', ['capture', a.name, '-w', `${dir}/no/such/dir/x.pcap`], /its directory does not exist/],
    ['a directory', ['capture', a.name, '-w', dir], /is a directory/],
  ];
  for (const [what, args, re] of cases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, re, what);
  }
  t.false((await sh('test', ['-e', `${dir}/x.pcap`])).code === 0, 'a refused capture leaves no file behind');
  const bad = await api<{ error: string }>(d, 'POST', '/v1/captures', { target: a.id, count: 0 });
  t.is(bad.status, 400);
  t.regex(bad.body.error, /^body\.count must be a whole number of frames from 1 to \d+: pass -c N or leave it out\.$/);
  const unknownField = await api<{ error: string }>(d, 'POST', '/v1/captures', { target: a.id, filter: 'icmp' });
  t.is(unknownField.status, 400);
  const help = await d.vsw(['capture', '--help']);
  t.is(help.code, 0);
  t.regex(help.stdout, /--point <points>/);
});

// Last: it stops the daemon.
test.serial('a daemon that stops ends its captures (and still exits 0), and the CLI says why', async (t) => {
  const [a] = ep;
  const c = await startCapture(t, [a.name, '-w', `${dir}/stop.pcap`]);
  const code = await d.stop('SIGTERM');
  t.is(code, 0, d.log().split('\n').slice(-5).join('\n'));
  const r = await finished(c);
  t.is(r.code, 1);
  t.is(r.stderr.trim().split('\n').pop(), 'vsw: the capture ended early: the daemon is stopping.');
});
