/**
 * Load balancers through a real daemon and the `vsw lb` CLI: three backends
 * in their own namespaces run a small HTTP server that answers its name, a
 * client namespace asks the VIP. Shares, a backend failing its probe and
 * coming back, long-lived connections that survive it, a drain, hairpin,
 * trace, a restart, and bad input. Subnet 10.94.0.0/24.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoadBalancer } from '../../src/service/api-types.js';
import { addNetns, freeLoopbackPort, inNetns, runPrefix, spawnInNetns } from './helpers/env.js';
import { assertOneSentence, createEndpoint, readLines, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson, type LineReader } from './helpers/daemon.js';
import { TCP_ECHO_CLIENT, TCP_ECHO_SERVER } from './helpers/echo.js';
import { HTTP_CLIENT, NAMED_HTTP_SERVER } from './helpers/http.js';

const prefix = runPrefix();
const net = `${prefix}-lb`;
const other = `${prefix}-lb2`;
const VIP = '10.94.0.100';
const names = ['w1', 'w2', 'w3'] as const;
const ns = (n: string): string => `${prefix}-${n}`;

let d: DaemonHandle;
let metricsPort: number;

/** The daemon's samples of one metric for load balancer `lb`, by backend address. */
async function lbMetric(name: string, lb: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}\\{(.*)\\} (\\S+)$`).exec(line);
    if (m && m[1].includes(`lb="${lb}"`)) out.set(/backend="([^"]+)"/.exec(m[1])![1], Number(m[2]));
  }
  return out;
}
const backends = new Map<string, EndpointJson>();
const servers = new Map<string, ChildProcess>();
const clients: ChildProcess[] = [];
const echoReaders = new Map<string, LineReader>();

async function serve(name: string): Promise<void> {
  const child = spawnInNetns(ns(name), 'python3', ['-c', NAMED_HTTP_SERVER, '8080', name]);
  servers.set(name, child);
  await readLines(child).waitFor(/^listening$/);
}

/** The next unused client source port: fixed ports make the balancer's choices the same every run (random ones fail the 25-42% bounds about once in a hundred runs), and a fresh range per call meets no TIME_WAIT. */
let nextSourcePort = 30000;

async function requests(from: string, port: number, n: number): Promise<{ counts: Record<string, number>; failures: string[] }> {
  const first = nextSourcePort;
  nextSourcePort += n;
  const r = await inNetns(ns(from), 'python3', ['-c', HTTP_CLIENT, VIP, String(port), String(n), String(first)], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`the HTTP client failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { counts: Record<string, number>; failures: string[] };
}

async function inspect(lb: string): Promise<LoadBalancer> {
  return d.vswJson<LoadBalancer>(['lb', 'inspect', lb]);
}

/** Polls until the backend of endpoint `name` is in `state`; returns how long that took. */
async function waitBackend(lb: string, name: string, state: 'active' | 'down', timeoutMs = 10_000): Promise<number> {
  const start = Date.now();
  for (;;) {
    const b = (await inspect(lb)).backends.find((x) => x.endpoint === backends.get(name)!.id);
    if (b?.state === state) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`backend ${name} of ${lb} is not ${state} after ${timeoutMs} ms: ${JSON.stringify(b)}`);
    await sleep(100);
  }
}

/** A long-lived connection through `port` of the VIP; resolves once it echoes. */
async function longLived(port: number): Promise<{ reader: LineReader; child: ChildProcess }> {
  const child = spawnInNetns(ns('client'), 'python3', ['-c', TCP_ECHO_CLIENT, VIP, String(port)]);
  clients.push(child);
  const reader = readLines(child);
  await reader.waitFor(/^echo /, 3);
  return { reader, child };
}

/** The connection still echoes: `more` new echoes arrive. */
async function stillEchoes(reader: LineReader, more = 5): Promise<void> {
  const have = reader.lines.filter((l) => l.startsWith('echo ')).length;
  await reader.waitFor(/^echo /, have + more);
  if (reader.lines.some((l) => l.startsWith('error') || l === 'eof')) throw new Error(`the connection broke: ${reader.lines.slice(-3).join(' | ')}`);
}

test.before(async () => {
  metricsPort = await freeLoopbackPort();
  d = await startDaemon(prefix, { extraArgs: ['--metrics', `127.0.0.1:${metricsPort}`] });
  await d.vswOk(['network', 'create', net, '-d', 'internal', '--subnet', '10.94.0.0/24']);
  await d.vswOk(['network', 'create', other, '-d', 'internal', '--subnet', '10.95.0.0/24']);
  for (const n of ['client', ...names]) {
    await addNetns(ns(n));
    const ep = await createEndpoint(d, net, ns(n), ['--name', `${prefix}-${n}`]);
    if (n !== 'client') backends.set(n, ep);
  }
  for (const n of names) await serve(n);
  // An echo server per backend, for connections that must outlive changes.
  for (const n of names) {
    const echo = spawnInNetns(ns(n), 'python3', ['-c', TCP_ECHO_SERVER, '9000']);
    servers.set(`${n}-echo`, echo);
    echoReaders.set(n, readLines(echo));
    await echoReaders.get(n)!.waitFor(/^listening$/);
  }
});

test.after.always(async () => {
  for (const c of clients) c.kill('SIGTERM');
  for (const s of servers.values()) s.kill('SIGKILL');
  await teardown(prefix, d);
});

test.serial('bad input gets one sentence and a non-zero exit, and creates nothing', async (t) => {
  const elsewhere = await createEndpoint(d, other, ns('client'), ['--ifname', 'eth1', '--name', `${prefix}-elsewhere`]);
  const wrongNet = await d.vsw(['lb', 'create', 'bad', '--network', net, '--port', '80', '--vip', VIP, '--backend', elsewhere.name]);
  assertOneSentence(t, wrongNet, 'a backend on another network');
  t.regex(wrongNet.stderr, /is on network .*, not /);
  const outside = await d.vsw(['lb', 'create', 'bad', '--network', net, '--port', '80', '--vip', '10.95.0.9', '--backend', `${prefix}-w1`]);
  assertOneSentence(t, outside, 'a VIP outside the subnet');
  const taken = await d.vsw(['lb', 'create', 'bad', '--network', net, '--port', '80', '--vip', backends.get('w1')!.ip, '--backend', `${prefix}-w2`]);
  assertOneSentence(t, taken, "a VIP that is an endpoint's address");
  const port = await d.vsw(['lb', 'create', 'bad', '--network', net, '--port', '80/sctp']);
  assertOneSentence(t, port, 'a protocol other than tcp and udp');
  t.deepEqual(await d.vswJson<LoadBalancer[]>(['lb', 'ls', '--json']), [], 'nothing was created');
  await d.vswOk(['endpoint', 'rm', elsewhere.id]);
});

test.serial('300 requests to the VIP: each of 3 backends answers 25-42% of them', async (t) => {
  await d.vswOk(['lb', 'create', 'web', '--network', net, '--vip', VIP, '--port', '80', ...names.flatMap((n) => ['--backend', `${prefix}-${n}:8080`]), '--probe', 'http:/', '--probe-interval', '500', '--probe-timeout', '300']);
  await d.vswOk(['lb', 'create', 'echo', '--network', net, '--vip', VIP, '--port', '9000', ...names.flatMap((n) => ['--backend', `${prefix}-${n}`]), '--probe', 'tcp', '--probe-interval', '500', '--probe-timeout', '300']);
  const { counts, failures } = await requests('client', 80, 300);
  t.deepEqual(failures, []);
  for (const n of names) t.true((counts[n] ?? 0) >= 75 && (counts[n] ?? 0) <= 126, `${n} answered ${counts[n] ?? 0} of 300: ${JSON.stringify(counts)}`);
  const lb = await inspect('web');
  t.is(lb.vip, VIP);
  const total = lb.backends.reduce((n, b) => n + (b.counters?.connections ?? 0), 0);
  t.true(total >= 300, `the backends' counters add up to the connections made: ${total}`);
  for (const b of lb.backends) t.like(b, { state: 'active', health: { status: 'up' } });
  const connections = await lbMetric('vsw_lb_backend_connections_total', 'web');
  t.deepEqual(connections, new Map(lb.backends.map((b) => [`${b.ip}:${b.port}`, b.counters!.connections])), 'the metrics count what vsw lb inspect does');
  t.deepEqual([...(await lbMetric('vsw_lb_backend_up', 'web')).values()], [1, 1, 1]);
});

test.serial("a backend whose server stops is taken out within the probe window, no request fails after it, and it takes a third again when it is back; long-lived connections survive both", async (t) => {
  // Long-lived connections until every backend holds one (each echo server prints a line per connection it accepts).
  const live: LineReader[] = [];
  for (let i = 0; i < 30 && names.some((n) => !echoReaders.get(n)!.lines.some((l) => l.startsWith('accepted'))); i++) live.push((await longLived(9000)).reader);
  for (const n of names) t.true(echoReaders.get(n)!.lines.some((l) => l.startsWith('accepted')), `${n} holds a long-lived connection`);
  servers.get('w2')!.kill('SIGKILL');
  const outAfter = await waitBackend('web', 'w2', 'down', 5000);
  t.true(outAfter <= 500 * 2 + 300 + 1000, `w2 was taken out after ${outAfter} ms (interval 500 ms, threshold 2, timeout 300 ms)`);
  const w2 = `${backends.get('w2')!.ip}:8080`;
  t.is((await lbMetric('vsw_lb_backend_probe_up', 'web')).get(w2), 0, 'the metrics say its probe is down');
  t.true(((await lbMetric('vsw_lb_backend_probe_failures_total', 'web')).get(w2) ?? 0) >= 2);
  const without = await requests('client', 80, 150);
  t.deepEqual(without.failures, [], 'no request fails once the probe took it out');
  t.is(without.counts.w2 ?? 0, 0);
  t.is((without.counts.w1 ?? 0) + (without.counts.w3 ?? 0), 150);

  await serve('w2');
  await waitBackend('web', 'w2', 'active', 5000);
  const back = await requests('client', 80, 300);
  t.deepEqual(back.failures, []);
  t.true((back.counts.w2 ?? 0) >= 75 && (back.counts.w2 ?? 0) <= 126, `w2 takes about a third again: ${JSON.stringify(back.counts)}`);
  for (const r of live) await stillEchoes(r);
});

test.serial('drain: the drained backend gets no new connection, its established one finishes', async (t) => {
  // One long-lived connection pinned to w1 through a one-backend balancer, which is then drained.
  await d.vswOk(['lb', 'create', 'pinned', '--network', net, '--vip', VIP, '--port', '9001', '--backend', `${prefix}-w1:9000`]);
  const { reader } = await longLived(9001);
  await d.vswOk(['lb', 'backend', 'drain', 'pinned', `${prefix}-w1:9000`]);
  await d.vswOk(['lb', 'backend', 'drain', 'web', `${prefix}-w1:8080`]);
  const lb = await inspect('pinned');
  t.like(lb.backends[0], { draining: true, state: 'draining' });
  t.true((lb.backends[0].counters?.active ?? 0) >= 1, 'its connection is still counted active');
  await stillEchoes(reader);
  const { counts, failures } = await requests('client', 80, 100);
  t.deepEqual(failures, []);
  t.is(counts.w1 ?? 0, 0, `no new connection reaches the drained w1: ${JSON.stringify(counts)}`);
  await d.vswOk(['lb', 'backend', 'drain', '--undo', 'web', `${prefix}-w1:8080`]);
  const again = await requests('client', 80, 100);
  t.true((again.counts.w1 ?? 0) > 0, 'undrained, it takes new connections again');
  await d.vswOk(['lb', 'rm', 'pinned']);
});

test.serial('hairpin: a backend reaching its own VIP is answered by itself; trace shows the decision', async (t) => {
  await d.vswOk(['lb', 'create', 'self', '--network', net, '--vip', VIP, '--port', '81', '--backend', `${prefix}-w3:8080`]);
  const { counts, failures } = await requests('w3', 81, 5);
  t.deepEqual(failures, []);
  t.deepEqual(counts, { w3: 5 });
  const trace = await d.vswOk(['trace', '--endpoint', `${prefix}-client`, '--out', `tcp ${'10.94.0.2'}:40000 > ${VIP}:81 syn`]);
  t.regex(trace, /self: 10\.94\.0\.100:81 balanced to 10\.94\.0\.\d+:8080/);
  await d.vswOk(['lb', 'rm', 'self']);
});

test.serial('the balancers and a balanced connection survive a daemon restart; a network with a balancer cannot be removed; rm gives the VIP back', async (t) => {
  const { reader } = await longLived(9000);
  t.is(await d.stop('SIGTERM'), 0);
  d = await restartDaemon(d);
  await stillEchoes(reader);
  const lbs = await d.vswJson<LoadBalancer[]>(['lb', 'ls', '--json']);
  t.deepEqual(lbs.map((l) => l.name).sort(), ['echo', 'web']);
  await waitBackend('web', 'w1', 'active', 5000);
  const { counts, failures } = await requests('client', 80, 90);
  t.deepEqual(failures, []);
  t.is(Object.keys(counts).length, 3, `all three answer after the restart: ${JSON.stringify(counts)}`);
  const rm = await d.vsw(['network', 'rm', net]);
  assertOneSentence(t, rm, 'a network that still has load balancers');
  await d.vswOk(['lb', 'rm', 'web', 'echo']);
  t.deepEqual(await d.vswJson<LoadBalancer[]>(['lb', 'ls', '--json']), []);
  const ep = await createEndpoint(d, net, ns('client'), ['--ifname', 'eth2', '--ip', VIP]);
  t.is(ep.ip, VIP, 'the VIP is an ordinary free address again');
  await d.vswOk(['endpoint', 'rm', ep.id]);
});
