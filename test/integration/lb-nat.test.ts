/**
 * A load balancer on a nat network with its VIP published on a host port:
 * an outside namespace (routed through the host) reaches the published port
 * and is balanced over the backends; containers reach the VIP by its DNS
 * name at the gateway; a published port clash is refused. Subnet
 * 172.23.0.0/24; the outside namespace on a free 198.18.K.0/24.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { addNetns, inNetns, runPrefix, spawnInNetns } from './helpers/env.js';
import { assertOneSentence, createEndpoint, readLines, restartDaemon, startDaemon, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { addOutsideNamespace, finishNatTest, freeNet24, hostPortBase, prefixNumber, readIpForward, type Outside } from './helpers/nat.js';
import { HTTP_CLIENT, NAMED_HTTP_SERVER } from './helpers/http.js';

const prefix = runPrefix();
const net = `${prefix}-lbn`;
const PUBLISHED = hostPortBase(prefix) + 7;
const names = ['n1', 'n2'] as const;
const ns = (n: string): string => `${prefix}-${n}`;

let d: DaemonHandle;
let outside: Outside;
let forwardBefore: string | undefined;
const servers: ChildProcess[] = [];
const backends: EndpointJson[] = [];

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', (prefixNumber(prefix) % 254) + 1));
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.23.0.0/24', net]);
  for (const n of [...names, 'cl']) {
    await addNetns(ns(n));
    const ep = await createEndpoint(d, net, ns(n), ['--name', `${prefix}-${n}`]);
    if (n === 'cl') continue;
    backends.push(ep);
    const server = spawnInNetns(ns(n), 'python3', ['-c', NAMED_HTTP_SERVER, '8080', n]);
    servers.push(server);
    await readLines(server).waitFor(/^listening$/);
  }
});

test.after.always(async () => {
  for (const s of servers) s.kill('SIGKILL');
  await finishNatTest(prefix, d, forwardBefore, []);
});

async function requests(where: string | null, host: string, port: number, n: number): Promise<{ counts: Record<string, number>; failures: string[] }> {
  const r = await inNetns(where ?? outside.ns, 'python3', ['-c', HTTP_CLIENT, host, String(port), String(n)], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`the HTTP client failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { counts: Record<string, number>; failures: string[] };
}

test.serial('the published VIP takes outside traffic, balanced over the backends; containers reach the VIP by name', async (t) => {
  await d.vswOk(['lb', 'create', `${prefix}-web`, '--network', net, '--port', '80', '--publish', String(PUBLISHED), ...backends.flatMap((b) => ['--backend', `${b.name}:8080`])]);
  const lb = await d.vswJson<{ vip: string; publish: number }>(['lb', 'inspect', `${prefix}-web`]);
  t.is(lb.publish, PUBLISHED);
  const fromOutside = await requests(null, outside.hostIp, PUBLISHED, 60);
  t.deepEqual(fromOutside.failures, []);
  for (const n of names) t.true((fromOutside.counts[n] ?? 0) >= 10, `${n} answered ${fromOutside.counts[n] ?? 0} of 60 outside requests: ${JSON.stringify(fromOutside.counts)}`);
  const dig = await inNetns(ns('cl'), 'dig', ['@172.23.0.1', '+short', '+time=2', '+tries=1', `${prefix}-web`]);
  t.is(dig.stdout.trim(), lb.vip, "the balancer's name answers with its VIP at the gateway");
  const inside = await requests(ns('cl'), lb.vip, 80, 20);
  t.deepEqual(inside.failures, []);
  t.is(await d.stop('SIGTERM'), 0);
  d = await restartDaemon(d);
  const afterRestart = await requests(null, outside.hostIp, PUBLISHED, 30);
  t.deepEqual(afterRestart.failures, [], 'after a daemon restart the published VIP answers again');
  t.is((afterRestart.counts.n1 ?? 0) + (afterRestart.counts.n2 ?? 0), 30);
  t.is((inside.counts.n1 ?? 0) + (inside.counts.n2 ?? 0), 20);
});

test.serial('a host port that is published already is refused, for a balancer and for an endpoint', async (t) => {
  const twice = await d.vsw(['lb', 'create', `${prefix}-web2`, '--network', net, '--port', '81', '--publish', String(PUBLISHED), '--backend', `${backends[0].name}:8080`]);
  assertOneSentence(t, twice, 'a balancer publishing a taken host port');
  t.regex(twice.stderr, /already published by load balancer/);
  const endpoint = await d.vsw(['endpoint', 'create', '--network', net, '--netns', ns('cl'), '--ifname', 'eth1', '-p', `${PUBLISHED}:80`]);
  assertOneSentence(t, endpoint, 'an endpoint publishing the balancer\'s host port');
  await d.vswOk(['lb', 'rm', `${prefix}-web`]);
  const gone = await inNetns(outside.ns, 'python3', ['-c', HTTP_CLIENT, outside.hostIp, String(PUBLISHED), '1']);
  t.notDeepEqual(JSON.parse(gone.stdout).failures, [], 'removed, the published port answers no more');
});
