/**
 * Bounds of the VFP data plane on a real daemon started with a small
 * per-port connection bound: a flood of new UDP flows is refused and counted
 * (connLimit) while an established ping keeps going and the daemon's memory
 * stays put; and an egress cap (QoS) that visibly applies to iperf3.
 * Subnet 10.73.0.0/24 (network q).
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EndpointPolicy, FlowsResponse } from '../../src/service/api-types.js';
import { inNetns, ping, runPrefix, spawnInNetns } from './helpers/env.js';
import {
  api,
  createNetworkWithEndpoints,
  type DaemonHandle,
  dropCount,
  type EndpointJson,
  type LineReader,
  readLines,
  rssKiB,
  startDaemon,
  teardown,
} from './helpers/daemon.js';

const prefix = runPrefix();
const netQ = `${prefix}-q`;
/** q1 -> q2 for the connection bound, q3 -> q4 for QoS (their own connection tables). */
const nsQ = [`${prefix}-q1`, `${prefix}-q2`, `${prefix}-q3`, `${prefix}-q4`];
const MAX_CONNECTIONS_PER_PORT = 64;
const FLOOD_PER_ROUND = 500;
const SINK_PORT = 9000;
/** Generous: the daemon idles well below this (README: about 90 MiB), tables included. */
const RSS_CEILING_KIB = 1024 * 1024;
/** Between two identical rounds of refused flows, more than this is growth, not noise. */
const RSS_GROWTH_KIB = 32 * 1024;
const QOS_CAP_BPS = 50e6;

let d: DaemonHandle;
const ep: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix, { extraArgs: ['--max-connections-per-port', String(MAX_CONNECTIONS_PER_PORT)] });
  ep.push(...(await createNetworkWithEndpoints(d, netQ, '10.73.0.0/24', nsQ)));
});

test.after.always(async () => {
  await teardown(prefix, d);
});

/** One datagram from each of `count` source ports starting at `base`: `count` new UDP flows. */
const UDP_FLOOD = `
import socket, sys
dst, port, base, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", base + i))
    s.sendto(b"flood", (dst, port))
    s.close()
print("sent %d" % count, flush=True)
`;

const UDP_SINK = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, src = s.recvfrom(65535)
    print("%s:%d" % src, flush=True)
`;

function spawnReader(t: ExecutionContext, ns: string, cmd: string, args: string[]): { reader: LineReader; kill: (signal?: NodeJS.Signals) => void } {
  const child = spawnInNetns(ns, cmd, args);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  return { reader: readLines(child), kill: (signal: NodeJS.Signals = 'SIGKILL') => child.kill(signal) };
}

async function flood(ns: string, dst: string, base: number): Promise<void> {
  const r = await inNetns(ns, 'python3', ['-c', UDP_FLOOD, dst, String(SINK_PORT), String(base), String(FLOOD_PER_ROUND)], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`UDP flood from ${ns}: ${r.stderr}`);
}

async function connLimitDrops(ids: string[]): Promise<number> {
  let sum = 0;
  for (const id of ids) sum += await dropCount(d, id, 'connLimit');
  return sum;
}

test.serial('new flows beyond the per-port connection bound are refused and counted; an established flow and the memory are unaffected', async (t) => {
  const [a, b] = ep;
  const help = await d.vsw(['daemon', '--help']);
  t.regex(help.stdout, /--max-connections-per-port/, 'vsw daemon --help lists the bound');
  t.true(await ping(nsQ[0], b.ip, 1), 'a -> b');

  const sink = spawnReader(t, nsQ[1], 'python3', ['-c', UDP_SINK, String(SINK_PORT)]);
  await sink.reader.waitFor(/^listening$/);
  const pinger = spawnReader(t, nsQ[0], 'ping', ['-n', '-i', '0.2', '-W', '2', b.ip]);
  const replies = (): number => pinger.reader.lines.filter((l) => /bytes from .*icmp_seq=/.test(l)).length;
  await pinger.reader.waitFor(/bytes from .*icmp_seq=/, 3, 10_000);

  const rss0 = rssKiB(d.pid);
  const dropsBefore = await connLimitDrops([a.id, b.id]);
  await flood(nsQ[0], b.ip, 20_000);
  await sleep(500);
  const dropsRound1 = await connLimitDrops([a.id, b.id]);
  const repliesRound1 = replies();
  const rss1 = rssKiB(d.pid);
  await flood(nsQ[0], b.ip, 21_000);
  await sleep(500);
  const dropsRound2 = await connLimitDrops([a.id, b.id]);
  const rss2 = rssKiB(d.pid);
  // The established ping, after both rounds: a few more replies.
  await pinger.reader.waitFor(/bytes from .*icmp_seq=/, repliesRound1 + 5, 10_000);
  pinger.kill('SIGINT');
  const deadline = Date.now() + 5_000;
  while (!pinger.reader.exited() && Date.now() < deadline) await sleep(50);
  const summary = pinger.reader.lines.find((l) => /packets transmitted/.test(l)) ?? '';
  const m = /(\d+) packets transmitted, (\d+) received/.exec(summary);
  t.truthy(m, `ping summary: ${pinger.reader.lines.slice(-3).join(' | ')}`);
  const [sent, got] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  t.log(`ping during the floods: ${got}/${sent}; connLimit ${dropsBefore} -> ${dropsRound1} -> ${dropsRound2}; RSS ${rss0} -> ${rss1} -> ${rss2} KiB`);
  // The request in flight when SIGINT came may go unanswered; nothing else may.
  t.true(got >= sent - 1, `the established ping lost ${sent - got} of ${sent} during the floods`);

  t.true(dropsRound1 > dropsBefore, `connLimit after round 1: ${dropsBefore} -> ${dropsRound1}`);
  t.true(dropsRound2 > dropsRound1, `connLimit after round 2: ${dropsRound1} -> ${dropsRound2}`);
  t.log(`connLimit by port: a=${await dropCount(d, a.id, 'connLimit')} b=${await dropCount(d, b.id, 'connLimit')}`);
  const arrived = sink.reader.lines.length - 1;
  t.true(arrived > 0, 'some flows were admitted before the bound');
  t.true(arrived <= MAX_CONNECTIONS_PER_PORT, `${arrived} of ${2 * FLOOD_PER_ROUND} new UDP flows reached b with a bound of ${MAX_CONNECTIONS_PER_PORT}`);

  const flows = await api<FlowsResponse>(d, 'GET', '/v1/flows');
  t.is(flows.status, 200);
  const conns = flows.body.stats.connections;
  t.true(conns.refused > 0, `connections: ${JSON.stringify(conns)}`);
  t.true(conns.live <= 2 * MAX_CONNECTIONS_PER_PORT, `live connections ${conns.live} with two ports bound at ${MAX_CONNECTIONS_PER_PORT}`);

  t.true(rss2 < RSS_CEILING_KIB, `daemon RSS ${rss2} KiB`);
  t.true(rss2 - rss1 < RSS_GROWTH_KIB, `daemon RSS grew ${rss2 - rss1} KiB between two identical floods (${rss1} -> ${rss2})`);
  t.false(d.exited(), 'the daemon is running');
});

test.serial('an egress cap of 50mbit applies to iperf3 (a sanity bound, not a benchmark)', async (t) => {
  const [, , c, e] = ep;
  const set = await d.vsw(['policy', 'qos', 'set', c.id, '--max-egress', '50mbit']);
  t.is(set.code, 0, set.stderr);
  const policy = await api<EndpointPolicy>(d, 'GET', `/v1/endpoints/${c.id}/policy`);
  t.is(policy.body.qos?.maxEgress, '50mbit', JSON.stringify(policy.body.qos));

  const server = spawnReader(t, nsQ[3], 'iperf3', ['-s', '-1', '-B', e.ip, '--forceflush']);
  await server.reader.waitFor(/Server listening/, 1, 5_000);
  const client = await inNetns(nsQ[2], 'iperf3', ['-c', e.ip, '-t', '2', '-J'], { timeoutMs: 30_000 });
  t.is(client.code, 0, client.stderr || client.stdout.slice(0, 500));
  const report = JSON.parse(client.stdout) as { end: { sum_received: { bits_per_second: number } } };
  const bps = report.end.sum_received.bits_per_second;
  t.log(`iperf3 through a ${QOS_CAP_BPS / 1e6} Mbit/s cap: ${(bps / 1e6).toFixed(1)} Mbit/s`);
  t.true(bps > 0, `bits_per_second ${bps}`);
  t.true(bps < 2 * QOS_CAP_BPS, `${(bps / 1e6).toFixed(1)} Mbit/s through a ${QOS_CAP_BPS / 1e6} Mbit/s cap`);

  const del = await api(d, 'DELETE', `/v1/endpoints/${c.id}/qos`);
  t.true(del.status >= 200 && del.status < 300, `DELETE qos: HTTP ${del.status} ${JSON.stringify(del.body)}`);
  const cleared = await api<EndpointPolicy>(d, 'GET', `/v1/endpoints/${c.id}/policy`);
  t.is(cleared.body.qos, null);
});
