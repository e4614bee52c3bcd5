/**
 * A load balancer whose backends sit on two hosts of an overlay network
 * (docs/LOADBALANCER.md, "Backends"; issue 15: "backends across two lab
 * hosts on an overlay network"). Two "hosts" (namespaces on an underlay
 * bridge, one vsw daemon each, as in overlay.test.ts), overlay network VNI
 * 4196 on 10.96.0.0/24 over the underlay 192.168.96.0/24. Host A has
 * backends a1 and a2 and client ca, host B has backend b1 and client cb;
 * each backend runs an HTTP server answering its own name on 8080. Each host
 * knows the other's endpoints as remote endpoints (`vsw overlay remote add`)
 * and has the same balancer web (VIP 10.96.0.100:80): its own backends by
 * endpoint name, the other host's by address.
 *
 * The decision is made where the client's frame enters: a client on A
 * balanced to b1 is DNATed on A, b1 answers the client directly through the
 * tunnel, and A rewrites the reply back from the VIP. So the VIP never
 * crosses the underlay, only the host of the client counts the connection,
 * and ARP for the VIP is answered by the client's own host.
 */
import test, { type ExecutionContext } from 'ava';
import type { ChildProcess } from 'node:child_process';
import type { LoadBalancer, Network, OverlayNetworkState, TraceResponse } from '../../src/service/api-types.js';
import { addNetns, inNetns, must, runPrefix, spawnInNetns } from './helpers/env.js';
import { api, capture, createEndpoint, readLines, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { HTTP_CLIENT, NAMED_HTTP_SERVER } from './helpers/http.js';
import { addUnderlay, startHostDaemon, tsharkFields, type UnderlayHost } from './helpers/overlay.js';

const prefix = runPrefix();
const NET = `${prefix}-ov`;
const VNI = 4196;
const SUBNET = '10.96.0.0/24';
const UNDERLAY = '192.168.96';
const VIP = '10.96.0.100';
/** An address nobody has: ARP for it is flooded to the peer (what the ARP check must be able to see). */
const NOBODY = '10.96.0.250';
const PORT = 8080;

const ns = (n: string): string => `${prefix}-${n}`;

interface Host {
  name: 'A' | 'B';
  underlay: UnderlayHost;
  daemon: DaemonHandle;
  backends: string[];
  client: string;
}

let daemonA: DaemonHandle | undefined;
let daemonB: DaemonHandle | undefined;
let A: Host;
let B: Host;
/** Endpoints by short name (a1, a2, b1, ca, cb, and tb for traces on B). */
const eps = new Map<string, EndpointJson>();
const servers: ChildProcess[] = [];
const ip = (n: string): string => eps.get(n)!.ip;
const backendNames = ['a1', 'a2', 'b1'] as const;

/**
 * n GETs to the VIP from the client, from source ports firstPort.. (fixed, not ephemeral: the
 * addresses are the same every run, so are the balancer's choices, and the 25-42% bounds cannot
 * fail by chance; with random ports they would, about once in a hundred runs). Each call uses
 * its own range: a 4-tuple used again could meet its predecessor's TIME_WAIT.
 */
async function requests(client: string, n: number, firstPort: number): Promise<{ counts: Record<string, number>; failures: string[] }> {
  const r = await inNetns(ns(client), 'python3', ['-c', HTTP_CLIENT, VIP, '80', String(n), String(firstPort)], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`the HTTP client in ${client} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { counts: Record<string, number>; failures: string[] };
}

function inspect(h: Host): Promise<LoadBalancer> {
  return h.daemon.vswJson<LoadBalancer>(['lb', 'inspect', 'web']);
}

/** Connections the host's balancer made, by backend address:port. */
async function balanced(h: Host): Promise<Map<string, number>> {
  return new Map((await inspect(h)).backends.map((b) => [`${b.ip}:${b.port}`, b.counters?.connections ?? 0]));
}

async function lbStageCounters(h: Host): Promise<Record<string, number>> {
  const net = await h.daemon.vswJson<Network>(['network', 'inspect', NET]);
  const stage = net.stages?.find((s) => s.name === 'lb');
  if (!stage) throw new Error(`vsw network inspect ${NET} on ${h.name} shows no lb stage: ${JSON.stringify(net.stages?.map((s) => s.name))}`);
  return stage.counters;
}

/** Where `vsw trace` says host h's balancer sends a SYN from src:sport to the VIP, and by which Maglev entry. */
async function choice(h: Host, endpoint: string, src: string, sport: number): Promise<string> {
  const r = await api<TraceResponse>(h.daemon, 'POST', '/v1/trace', { endpoint: ns(endpoint), direction: 'out', packet: `tcp ${src}:${sport} > ${VIP}:80 syn` });
  const m = /balanced to (\S+) \(Maglev entry (\d+)\)/.exec(JSON.stringify(r.body));
  if (r.status !== 200 || !m) throw new Error(`trace on ${h.name} from ${src}:${sport}: ${r.status} ${JSON.stringify(r.body)}`);
  return `${m[1]} entry ${m[2]}`;
}

async function overlayState(h: Host): Promise<OverlayNetworkState> {
  const [state] = await h.daemon.vswJson<OverlayNetworkState[]>(['overlay', 'ls', '--network', NET, '--json']);
  return state;
}

/** Each of `names` answered 25-42% of `total`, nobody else answered, and nothing failed. */
function assertShares(t: ExecutionContext, r: { counts: Record<string, number>; failures: string[] }, names: readonly string[], total: number, what: string): void {
  t.log(`${what}: ${JSON.stringify(r.counts)}`);
  t.deepEqual(r.failures, [], `${what}: failed requests`);
  t.deepEqual(Object.keys(r.counts).sort(), [...names].sort(), `${what}: who answered: ${JSON.stringify(r.counts)}`);
  const low = Math.ceil(total * 0.25);
  const high = Math.floor(total * 0.42);
  for (const n of names) t.true((r.counts[n] ?? 0) >= low && (r.counts[n] ?? 0) <= high, `${what}: ${n} answered ${r.counts[n] ?? 0} of ${total} (${low}-${high} wanted): ${JSON.stringify(r.counts)}`);
}

test.before(async () => {
  const [ua, ub] = await addUnderlay(prefix, 2, 1, UNDERLAY);
  daemonA = await startHostDaemon(prefix, ua);
  daemonB = await startHostDaemon(prefix, ub);
  A = { name: 'A', underlay: ua, daemon: daemonA, backends: ['a1', 'a2'], client: 'ca' };
  B = { name: 'B', underlay: ub, daemon: daemonB, backends: ['b1'], client: 'cb' };
  for (const [h, peer] of [
    [A, B],
    [B, A],
  ] as const) {
    await h.daemon.vswOk(['network', 'create', '-d', 'overlay', '--subnet', SUBNET, '--vni', String(VNI), '--vtep', h.underlay.ip, '--peer', peer.underlay.ip, NET]);
  }
  for (const h of [A, B]) {
    for (const n of [...h.backends, h.client]) {
      await addNetns(ns(n));
      eps.set(n, await createEndpoint(h.daemon, NET, ns(n), ['--name', ns(n)]));
    }
  }
  // For traces on B of frames from A's client's address (its spoof guard would stop them on cb): carries no traffic.
  await addNetns(ns('tb'));
  eps.set('tb', await createEndpoint(B.daemon, NET, ns('tb'), ['--name', ns('tb'), '--no-spoof-guard']));
  // What a controller would push: each host learns the other's endpoints as remote endpoints.
  for (const [h, other] of [
    [A, B],
    [B, A],
  ] as const) {
    for (const n of [...other.backends, other.client]) {
      await h.daemon.vswOk(['overlay', 'remote', 'add', NET, '--mac', eps.get(n)!.mac, '--ip', ip(n), '--vtep', other.underlay.ip]);
    }
  }
  for (const n of backendNames) {
    const child = spawnInNetns(ns(n), 'python3', ['-c', NAMED_HTTP_SERVER, String(PORT), n]);
    servers.push(child);
    await readLines(child).waitFor(/^listening$/);
  }
  // The same balancer on both hosts: local backends by endpoint name (probed here), the other host's by address.
  for (const [h, other] of [
    [A, B],
    [B, A],
  ] as const) {
    const backends = [...h.backends.map((n) => `${ns(n)}:${PORT}`), ...other.backends.map((n) => `${ip(n)}:${PORT}`)];
    await h.daemon.vswOk(['lb', 'create', 'web', '--network', NET, '--vip', VIP, '--port', '80', ...backends.flatMap((b) => ['--backend', b]), '--probe', 'http:/', '--probe-interval', '500', '--probe-timeout', '300']);
  }
});

test.after.always(async () => {
  for (const s of servers) s.kill('SIGKILL');
  await teardown(prefix, daemonA, daemonB);
});

test.serial('both hosts have the balancer with three backends: their own endpoints (probed) and the other host\'s remote endpoints (not probed here)', async (t) => {
  t.true(ip('a1') !== ip('b1') && ip('a2') !== ip('b1'), 'the hosts hand out different addresses');
  for (const h of [A, B]) {
    const lb = await inspect(h);
    t.is(lb.vip, VIP);
    t.deepEqual(lb.backends.map((b) => `${b.ip}:${b.port}`).sort(), backendNames.map((n) => `${ip(n)}:${PORT}`).sort(), `${h.name}'s backends`);
    for (const b of lb.backends) {
      t.is(b.state, 'active', `${h.name}: backend ${b.name} is ${b.state}`);
      const local = h.backends.some((n) => ip(n) === b.ip);
      if (local) t.truthy(b.endpoint, `${h.name}: local backend ${b.name} names its endpoint`);
      else {
        t.is(b.endpoint, undefined, `${h.name}: remote backend ${b.name} has no local endpoint`);
        t.is(b.health?.status, 'unprobed', `${h.name}: remote backend ${b.name} is probed on its own host only`);
      }
    }
  }
});

test.serial('both hosts choose alike: a connection from the same address and port goes to the same backend by the same Maglev entry on either host', async (t) => {
  const seen = new Set<string>();
  for (let sport = 40000; sport < 40030; sport++) {
    const onA = await choice(A, 'ca', ip('ca'), sport);
    const onB = await choice(B, 'tb', ip('ca'), sport);
    t.is(onB, onA, `source port ${sport}`);
    seen.add(onA.split(' ')[0]);
  }
  t.is(seen.size, 3, `30 connections spread over every backend: ${[...seen].join(' ')}`);
});

test.serial('300 requests from the client on host A: all three backends answer 25-42% each; A alone balanced them, b1 answered A\'s client directly and the VIP never crossed the underlay', async (t) => {
  const beforeA = await balanced(A);
  const beforeB = await balanced(B);
  const file = `/tmp/${prefix}/from-a.pcap`;
  const cap = await capture(ns('ul'), 'br0', ['udp', 'port', '4789'], file);
  const r = await requests('ca', 300, 20000);
  await cap.stop();
  assertShares(t, r, backendNames, 300, 'from A');

  // A's balancer counted exactly what its client saw; B's balancer took no decision.
  const afterA = await balanced(A);
  for (const n of backendNames) {
    const key = `${ip(n)}:${PORT}`;
    t.is(afterA.get(key)! - beforeA.get(key)!, r.counts[n], `A counted ${n}'s connections`);
  }
  t.deepEqual(await balanced(B), beforeB, 'B balanced none of A\'s connections');

  // On the underlay: A's client to b1 and b1 straight back to A's client, the VIP in neither direction.
  const inner = await tsharkFields(file, 'vxlan && tcp', ['ip.src', 'ip.dst', 'tcp.srcport', 'tcp.dstport']);
  // tshark lists the outer then the inner value of ip.src and ip.dst.
  const rows = inner.map(([src, dst, sport, dport]) => ({ src: src.split(',')[1], dst: dst.split(',')[1], sport, dport }));
  const toB1 = rows.filter((x) => x.src === ip('ca') && x.dst === ip('b1') && x.dport === String(PORT));
  const fromB1 = rows.filter((x) => x.src === ip('b1') && x.dst === ip('ca') && x.sport === String(PORT));
  t.true(toB1.length > 0 && fromB1.length > 0, `the capture shows A's client and b1 talking over the tunnel (${toB1.length} and ${fromB1.length} segments of ${rows.length})`);
  const synsToB1 = new Set(toB1.map((x) => x.sport)).size;
  t.is(synsToB1, r.counts.b1, 'each connection b1 answered crossed the underlay from its own client port');
  t.deepEqual(rows.filter((x) => x.src === VIP || x.dst === VIP), [], 'no inner packet to or from the VIP on the underlay');
  t.deepEqual(rows.filter((x) => x.src === ip('a1') || x.dst === ip('a1') || x.src === ip('a2') || x.dst === ip('a2')), [], 'A\'s own backends stay off the underlay');
});

test.serial('300 requests from the client on host B: all three backends answer 25-42% each, and B alone balanced them', async (t) => {
  const beforeA = await balanced(A);
  const beforeB = await balanced(B);
  const r = await requests('cb', 300, 20000);
  assertShares(t, r, backendNames, 300, 'from B');
  const afterB = await balanced(B);
  for (const n of backendNames) {
    const key = `${ip(n)}:${PORT}`;
    t.is(afterB.get(key)! - beforeB.get(key)!, r.counts[n], `B counted ${n}'s connections`);
  }
  t.deepEqual(await balanced(A), beforeA, 'A balanced none of B\'s connections');
});

test.serial('ARP for the VIP is answered by the client\'s own host: none crosses the underlay, while ARP for an unknown address does', async (t) => {
  const arpBefore = { A: (await lbStageCounters(A)).lbArpAnswered, B: (await lbStageCounters(B)).lbArpAnswered };
  const floodedBefore = (await overlayState(A)).counters.tunnel.flooded;
  const file = `/tmp/${prefix}/arp.pcap`;
  const cap = await capture(ns('ul'), 'br0', ['udp', 'port', '4789'], file);
  for (const c of ['ca', 'cb']) {
    // Forget the VIP's MAC, then reach the VIP: the kernel ARPs for it first.
    await inNetns(ns(c), 'ip', ['neigh', 'flush', 'to', VIP]);
    const r = await requests(c, 3, 21000);
    t.deepEqual(r.failures, [], `${c} reaches the VIP after ARP`);
  }
  // The control: ARP for an address nobody has goes to the peer, so this capture would show one for the VIP.
  await inNetns(ns('ca'), 'ping', ['-c', '1', '-W', '1', NOBODY]);
  await cap.stop();
  const arp = await tsharkFields(file, 'vxlan && arp', ['arp.opcode', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4']);
  t.true(arp.some(([op, , dst]) => op === '1' && dst === NOBODY), `the control: ARP for ${NOBODY} crossed the underlay (${JSON.stringify(arp)})`);
  t.deepEqual(arp.filter(([, src, dst]) => src === VIP || dst === VIP), [], 'no ARP for or from the VIP on the underlay');
  t.true((await overlayState(A)).counters.tunnel.flooded > floodedBefore, 'A flooded the control ARP');
  const arpAfter = { A: (await lbStageCounters(A)).lbArpAnswered, B: (await lbStageCounters(B)).lbArpAnswered };
  t.true(arpAfter.A > arpBefore.A, `A answered its client's ARP for the VIP (${arpBefore.A} -> ${arpAfter.A})`);
  t.true(arpAfter.B > arpBefore.B, `B answered its client's ARP for the VIP (${arpBefore.B} -> ${arpAfter.B})`);
  const vipMac = (await inspect(A)).vipMac;
  t.is((await inspect(B)).vipMac, vipMac, 'both hosts answer with the same VIP MAC');
  for (const c of ['ca', 'cb']) {
    const neigh = JSON.parse(await must('ip', ['-n', ns(c), '-j', 'neigh', 'show', VIP])) as { lladdr?: string }[];
    t.is(neigh[0]?.lladdr, vipMac, `${c} resolved the VIP to its MAC`);
  }
});

test.serial('the remote backend removed on host A: A\'s client reaches only a1 and a2; B still balances over all three', async (t) => {
  await A.daemon.vswOk(['lb', 'backend', 'rm', 'web', `${ip('b1')}:${PORT}`]);
  t.deepEqual((await inspect(A)).backends.map((b) => b.ip).sort(), [ip('a1'), ip('a2')].sort());
  const r = await requests('ca', 150, 22000);
  t.deepEqual(r.failures, []);
  t.is(r.counts.b1 ?? 0, 0, `b1 answered A's client: ${JSON.stringify(r.counts)}`);
  t.is((r.counts.a1 ?? 0) + (r.counts.a2 ?? 0), 150);
  for (const n of ['a1', 'a2']) t.true((r.counts[n] ?? 0) >= 45, `${n} takes about half: ${JSON.stringify(r.counts)}`);
  const fromB = await requests('cb', 90, 22000);
  t.deepEqual(fromB.failures, []);
  t.deepEqual(Object.keys(fromB.counts).sort(), [...backendNames], `B's balancer is unchanged: ${JSON.stringify(fromB.counts)}`);
});

test.serial('a remote backend whose remote endpoint the overlay forgets is down at once, and back when it is added again', async (t) => {
  const a1 = eps.get('a1')!;
  await B.daemon.vswOk(['overlay', 'remote', 'rm', NET, a1.mac]);
  t.is((await inspect(B)).backends.find((b) => b.ip === a1.ip)?.state, 'down', "vsw lb inspect on B says a1 is down: B no longer knows where it is");
  const without = await requests('cb', 60, 23000);
  t.deepEqual(without.failures, []);
  t.is(without.counts.a1 ?? 0, 0, `a1 gets nothing from B's client: ${JSON.stringify(without.counts)}`);
  await B.daemon.vswOk(['overlay', 'remote', 'add', NET, '--mac', a1.mac, '--ip', a1.ip, '--vtep', A.underlay.ip]);
  t.is((await inspect(B)).backends.find((b) => b.ip === a1.ip)?.state, 'active');
  const back = await requests('cb', 90, 23100);
  t.deepEqual(back.failures, []);
  t.true((back.counts.a1 ?? 0) > 0, `a1 takes connections from B's client again: ${JSON.stringify(back.counts)}`);
});
