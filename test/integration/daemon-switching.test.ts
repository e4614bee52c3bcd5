/**
 * Switching through a real `vsw daemon`, configured only with the `vsw` CLI:
 * namespaces made with `ip netns add`, endpoints (TAPs) from
 * `vsw endpoint create`, traffic from ping, tcpdump and iperf3. Subnets
 * 10.61.0.0/24 (network a) and 10.62.0.0/24 (network b).
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { inNetns, ping, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import {
  api,
  capture,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  portStats,
  startDaemon,
  teardown,
  txFrames,
  waitNeighboursSettled,
} from './helpers/daemon.js';

const prefix = runPrefix();
const netA = `${prefix}-a`;
const netB = `${prefix}-b`;
const nsA = [`${prefix}-a1`, `${prefix}-a2`, `${prefix}-a3`];
const nsB = [`${prefix}-b1`, `${prefix}-b2`];
const BROADCAST_A = '10.61.0.255';
/** An address inside network a's subnet that only a namespace on network b holds. */
const FOREIGN_IP = '10.61.0.200';

let d: DaemonHandle;
const a: EndpointJson[] = [];
const b: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  a.push(...(await createNetworkWithEndpoints(d, netA, '10.61.0.0/24', nsA)));
  b.push(...(await createNetworkWithEndpoints(d, netB, '10.62.0.0/24', nsB)));
});

test.after.always(async () => {
  await teardown(prefix, d);
});

async function neighbours(ns: string): Promise<Map<string, string>> {
  const r = await sh('ip', ['-n', ns, '-j', 'neigh', 'show', 'dev', 'eth0']);
  if (r.code !== 0) throw new Error(r.stderr);
  const entries = JSON.parse(r.stdout || '[]') as { dst: string; lladdr?: string; state?: string[] }[];
  return new Map(entries.filter((e) => e.lladdr).map((e) => [e.dst, e.lladdr!.toLowerCase()]));
}

async function linkMac(ns: string): Promise<string> {
  const r = await sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', 'eth0']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { address: string }[])[0].address.toLowerCase();
}

test.serial('endpoints are TAPs named eth0 in each namespace with the address and MAC vsw reports', async (t) => {
  t.is(a.length, 3);
  for (const [i, ep] of a.entries()) {
    t.is(ep.netns, nsA[i]);
    t.is(ep.network, netA);
    t.is(ep.ifname, 'eth0');
    t.is(await linkMac(nsA[i]), ep.mac.toLowerCase());
    const addr = await sh('ip', ['-n', nsA[i], '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    t.true(addr.stdout.includes(` ${ep.ip}/${ep.prefixLength} `), addr.stdout);
    const tun = await sh('ip', ['-n', nsA[i], '-d', 'link', 'show', 'dev', 'eth0']);
    t.regex(tun.stdout, /tun type tap/);
  }
  const listed = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json', '--network', netA]);
  t.deepEqual(listed.map((e) => e.id).sort(), a.map((e) => e.id).sort());
});

test.serial('two namespaces ping each other both ways, and three all ways', async (t) => {
  t.true(await ping(nsA[0], a[1].ip), 'a1 -> a2');
  t.true(await ping(nsA[1], a[0].ip), 'a2 -> a1');
  for (const [from, to] of [
    [0, 2],
    [2, 0],
    [1, 2],
    [2, 1],
  ]) {
    t.true(await ping(nsA[from], a[to].ip), `a${from + 1} -> a${to + 1}`);
  }
});

test.serial('ARP resolves each peer to the MAC vsw reports for its endpoint', async (t) => {
  t.true(await ping(nsA[0], a[1].ip, 1));
  t.true(await ping(nsA[0], a[2].ip, 1));
  const seenByA1 = await neighbours(nsA[0]);
  t.is(seenByA1.get(a[1].ip), a[1].mac.toLowerCase(), `a1's neighbours: ${JSON.stringify([...seenByA1])}`);
  t.is(seenByA1.get(a[2].ip), a[2].mac.toLowerCase());
  const seenByA2 = await neighbours(nsA[1]);
  t.is(seenByA2.get(a[0].ip), a[0].mac.toLowerCase(), `a2's neighbours: ${JSON.stringify([...seenByA2])}`);
  const inspected = await d.vswJson<EndpointJson>(['endpoint', 'inspect', a[1].id]);
  t.is(inspected.mac, a[1].mac);
});

test.serial('a broadcast reaches every other port of the network', async (t) => {
  const caps = await Promise.all([1, 2].map((i) => capture(nsA[i], 'eth0', ['icmp'], `/tmp/${prefix}/bcast-a${i + 1}.pcap`)));
  const before = await portStats(d);
  // Echo requests to the broadcast address go unanswered (icmp_echo_ignore_broadcasts): only delivery matters.
  await inNetns(nsA[0], 'ping', ['-b', '-c', '1', '-W', '1', BROADCAST_A]);
  await sleep(300);
  const after = await portStats(d);
  const seen = await Promise.all(caps.map((c) => c.stop()));
  for (const i of [1, 2]) {
    const id = a[i].id;
    t.true(after.get(id)!.txFrames > before.get(id)!.txFrames, `tx frames of a${i + 1}: ${before.get(id)!.txFrames} -> ${after.get(id)!.txFrames}`);
    t.true(
      seen[i - 1].some((l) => l.includes(`${a[0].ip} > ${BROADCAST_A}`) && l.includes('echo request')),
      `tcpdump in a${i + 1} saw: ${seen[i - 1].join(' | ')}`,
    );
  }
});

test.serial('a unicast between two ports is not seen on the third', async (t) => {
  t.true(await ping(nsA[0], a[1].ip, 1), 'a1 knows a2');
  // Until every entry is settled the kernels may still send ARP probes (unicast to a3 among them).
  await waitNeighboursSettled(nsA);
  const cap = await capture(nsA[2], 'eth0', ['icmp'], `/tmp/${prefix}/unicast-a3.pcap`);
  const thirdBefore = await txFrames(d, a[2].id);
  const secondBefore = await txFrames(d, a[1].id);
  const r = await inNetns(nsA[0], 'ping', ['-c', '5', '-i', '0.2', '-W', '2', a[1].ip]);
  t.is(r.code, 0, r.stdout + r.stderr);
  await sleep(1000);
  const thirdAfter = await txFrames(d, a[2].id);
  const secondAfter = await txFrames(d, a[1].id);
  const seen = await cap.stop();
  t.is(thirdAfter, thirdBefore, 'the third port sent nothing');
  t.true(secondAfter - secondBefore >= 5, `the second port sent ${secondAfter - secondBefore} frames`);
  t.deepEqual(seen, [], 'tcpdump in the third namespace captured no ICMP');
});

test.serial('iperf3 TCP completes between two namespaces', async (t) => {
  const server = spawnInNetns(nsA[1], 'iperf3', ['-s', '-1', '-B', a[1].ip, '--forceflush']);
  const serverDone = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`iperf3 -s did not start: ${out}`)), 5_000);
      server.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (/Server listening/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    server.stderr?.resume();
    const before = (await portStats(d)).get(a[1].id)!;
    const client = await inNetns(nsA[0], 'iperf3', ['-c', a[1].ip, '-t', '3', '-J'], { timeoutMs: 30_000 });
    t.is(client.code, 0, client.stderr || client.stdout.slice(0, 500));
    const report = JSON.parse(client.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
    const { bits_per_second: bps, bytes } = report.end.sum_received;
    t.true(bps > 0, `bits_per_second ${bps}`);
    const after = (await portStats(d)).get(a[1].id)!;
    t.true(after.txBytes - before.txBytes >= bytes, `vsw sent ${after.txBytes - before.txBytes} bytes to a2, iperf3 received ${bytes}`);
    t.log(`TCP through the vsw daemon: ${(bps / 1e9).toFixed(2)} Gbit/s (not a benchmark)`);
    t.is(await serverDone, 0, 'iperf3 -s -1 exits 0 after one test');
  } finally {
    server.kill('SIGKILL');
  }
});

test.serial('two networks on one daemon are isolated', async (t) => {
  t.true(await ping(nsA[0], a[1].ip), 'network a works on its own');
  await waitNeighboursSettled(nsB);
  // b1 also claims an address in a's subnet: only a switch leaking between networks could reach it.
  const add = await sh('ip', ['-n', nsB[0], 'addr', 'add', `${FOREIGN_IP}/24`, 'dev', 'eth0']);
  t.is(add.code, 0, add.stderr);
  const bBefore = await portStats(d);
  t.false(await ping(nsA[0], FOREIGN_IP), `${FOREIGN_IP} (on network b) answers from network a`);
  await inNetns(nsA[0], 'ping', ['-b', '-c', '2', '-i', '0.2', '-W', '1', BROADCAST_A]);
  await sleep(300);
  const bAfter = await portStats(d);
  for (const ep of b) {
    t.is(bAfter.get(ep.id)!.txFrames, bBefore.get(ep.id)!.txFrames, `tx frames of ${ep.netns} (network b)`);
  }
  // The broadcast did go out on network a: the ports there counted it.
  for (const ep of a.slice(1)) t.true(bAfter.get(ep.id)!.txFrames > bBefore.get(ep.id)!.txFrames, `tx frames of ${ep.netns}`);
  const neigh = await sh('ip', ['-n', nsA[0], '-j', 'neigh', 'show', FOREIGN_IP]);
  const entry = (JSON.parse(neigh.stdout || '[]') as { lladdr?: string }[])[0];
  t.is(entry?.lladdr, undefined, `a1 resolved ${FOREIGN_IP}: ${neigh.stdout}`);
  t.true(await ping(nsB[1], b[0].ip), 'network b works on its own');
  // Positive control: from inside network b (with a route to it) the extra address answers,
  // once b1's spoof guard lets it send from that address.
  const relax = await api(d, 'PUT', `/v1/endpoints/${b[0].id}/spoof-guard`, { enabled: true, allowedIps: [FOREIGN_IP] });
  t.is(relax.status, 200, JSON.stringify(relax.body));
  const route = await sh('ip', ['-n', nsB[1], 'route', 'add', `${FOREIGN_IP}/32`, 'dev', 'eth0']);
  t.is(route.code, 0, route.stderr);
  t.true(await ping(nsB[1], FOREIGN_IP), 'inside network b the extra address answers');
});
