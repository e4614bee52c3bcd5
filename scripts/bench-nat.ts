/**
 * The `nat` scenario of `npm run bench` (scripts/bench.ts runs it): what a
 * nat network's gateway costs next to plain switching by the same daemon.
 *
 * Topology (P is the bench's per-run prefix, vswtXXXX):
 *
 *   P-nc (container)          P-ni (container)
 *     eth0 10.N.0.x             eth0 10.X.0.y
 *       |                         |
 *   vsw nat network P-nat     vsw internal network P-net (the bench's own)
 *   gateway 10.N.0.1: SNAT        |
 *       |                         |
 *   host TAP P-nat                |
 *   100.127.a.b+1/30              |
 *       |  host kernel routes     |
 *   veth P-noh 198.18.Z.1/24      |
 *       |                         |
 *     eth0 198.18.Z.2/24        eth1 10.X.0.z
 *   P-no (outside): default route via 198.18.Z.1; the servers listen here
 *
 * Through the NAT, a container's traffic leaves P-nc by its default route
 * (the gateway), is translated to the network's external address (vsw's
 * end of the transit /30), crosses the host TAP, is forwarded by the host
 * kernel onto the veth, and reaches P-no; the answer comes back the same way.
 * Without NAT, P-ni reaches P-no's second interface on the internal network:
 * container to container through the same daemon, in the same run, to the
 * same server processes. The ratio NAT / no NAT is the NAT's cost (the
 * gateway's translation, the host TAP, and the host's forwarding hop).
 *
 * Measured per run: iperf3 TCP one stream both ways (-R), and new TCP
 * connections and new UDP flows per second with scripts/nat-connrate.ts,
 * each through the NAT and without it; the connection rate also between
 * the generator and the server over P-no's loopback, the ceiling the
 * generator itself reaches on this machine with no switch at all.
 *
 * Nothing here touches the host beyond what `vsw network create -d nat`
 * does itself (its host TAP, ip_forward, an nftables table for traffic
 * leaving by the default route, which this traffic never does) and one veth
 * with a /24 that overlaps no host route. Sysctls for the generator (port
 * range, tcp_tw_reuse) are set inside the bench's namespaces only.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';

import {
  BenchError,
  cmd,
  ifMtu,
  judge,
  median,
  pickFreePrefix,
  ratio,
  start,
  waitFor,
  type Check,
  type CmdOptions,
  type CmdResult,
  type Prefix,
} from './bench-lib.js';
import type { ConnRateResult } from './nat-connrate.js';

export type { ConnRateResult } from './nat-connrate.js';

/** Ports of the connection-rate server in the outside namespace (a namespace of the bench's own: nothing else listens there). */
export const CONNRATE_TCP_PORT = 5301;
export const CONNRATE_UDP_PORT = 5302;
/** Exchanges before the counted ones, per connection-rate run (JIT, caches): not counted, but they take NAT ports too. */
export const CONNRATE_WARMUP = 500;
/** Seconds the generator may run at most; a run this slow is a finding in itself. */
const CONNRATE_MAX_SECONDS = 120;
/** Bars of the scenario (reported, never turned into a failure). */
export const NAT_RATIO_BAR = 0.8;
export const NAT_CONN_RATE_BAR = 20_000;
/**
 * Sysctls set in the client namespaces (never on the host): the kernel's own
 * choice of source ports (iperf3's) stays below the block the generator binds
 * explicitly (SRC_PORT_FIRST and up), so a TIME_WAIT an iperf3 client left
 * cannot hold a port the generator wants; and TIME_WAIT ports may be reused.
 */
const CLIENT_SYSCTLS = ['net.ipv4.ip_local_port_range=1024 9999', 'net.ipv4.tcp_tw_reuse=1'];
/**
 * Source ports of the generator's connections and flows; the block moves on
 * from run to run (see sourcePorts). Above every port a server of the bench
 * listens on (iperf3 5201, the generator's server 5301-5302), which the
 * loopback run shares a namespace with.
 */
const SRC_PORT_FIRST = 10_000;
const SRC_PORT_LAST = 65535;

/** What bench.ts lends the scenario: its cleanup, its namespace helper, its daemon. */
export interface NatHarness {
  prefix: string;
  /** Registers an undo step; steps run last-registered first, also after a failure or an interrupt. */
  onCleanup(what: string, fn: () => Promise<void>): void;
  /** Creates a namespace with lo up, its removal registered first. */
  netnsAdd(ns: string): Promise<void>;
  deleteLink(name: string): Promise<void>;
  /** The vsw CLI against the bench's daemon. */
  cli(args: string[], opts?: CmdOptions): Promise<CmdResult>;
  daemonAlive(): boolean;
  /** `vsw endpoint create --network net --netns ns`, its removal registered. */
  addEndpoint(network: string, ns: string): Promise<{ id: string; ip: string; ifname: string }>;
  /** The bench's internal network, which the outside namespace and the reference client join. */
  internalNetwork: string;
  /** Prefixes the bench uses already, so the nat subnet and the outside link pick others. */
  taken: Prefix[];
}

export interface NatTopology {
  /** The nat network, and the host TAP named after it. */
  network: string;
  subnet: string;
  /** From `vsw network inspect`: transit /30, hostIp, externalIp, ports, hostChanges ... */
  nat: Record<string, unknown>;
  externalIp: string;
  containerNs: string;
  containerIp: string;
  outsideNs: string;
  /** The outside namespace's veth address: the target through the NAT. */
  outsideIp: string;
  /** The outside namespace's address on the internal network: the target without NAT. */
  outsideInternalIp: string;
  /** The veth's host end and its /24. */
  hostLink: string;
  hostLinkCidr: string;
  internalClientNs: string;
  internalClientIp: string;
  /** MTUs of the interfaces the two paths end on, recorded so that results are not compared blindly. */
  mtu: { container: number | null; outsideVeth: number | null; outsideVsw: number | null };
}

const sh = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> => cmd(file, args, opts);

const randomInt = (lo: number, hi: number): number => lo + Math.floor(Math.random() * (hi - lo + 1));

/**
 * Builds the topology above. Every step registers its undo first (through
 * the harness), so a failure half-way leaves nothing behind.
 */
export async function setupNat(h: NatHarness): Promise<NatTopology> {
  const p = h.prefix;
  const network = `${p}-nat`; // also the host TAP's name: at most 15 characters (vswtXXXX-nat is 12)
  const containerNs = `${p}-nc`;
  const outsideNs = `${p}-no`;
  const hostLink = `${p}-noh`;
  const internalClientNs = `${p}-ni`;

  const taken = [...h.taken];
  const sub = await pickFreePrefix(() => `10.${randomInt(100, 199)}.0.0/24`, taken, 'every 10.100.0.0/24 .. 10.199.0.0/24 overlaps a route of this host or the bench: free one of them for the nat scenario.');
  taken.push(sub.prefix);
  const link = await pickFreePrefix(() => `198.18.${randomInt(1, 254)}.0/24`, taken, 'every 198.18.1.0/24 .. 198.18.254.0/24 overlaps a route of this host: free one of them for the nat scenario.');
  taken.push(link.prefix);
  // An explicit transit /30 from the top half of vsw's default pool (100.127.0.0/16): other daemons
  // on the host (tests) take theirs from the bottom, so two creating at once cannot pick the same one.
  const transit = await pickFreePrefix(() => `100.127.${randomInt(128, 255)}.${randomInt(0, 63) * 4}/30`, taken, 'every /30 tried in 100.127.128.0/17 overlaps a route of this host: free some for the nat scenario.');

  // The outside namespace, reached from the host through a veth.
  const [a, b, c] = link.cidr.split('.');
  const hostLinkIp = `${a}.${b}.${c}.1`;
  const outsideIp = `${a}.${b}.${c}.2`;
  await h.netnsAdd(outsideNs);
  // Deleting the namespace takes the veth pair with it; this covers a failure before the move.
  h.onCleanup(`delete veth ${hostLink}`, () => h.deleteLink(hostLink));
  await sh('ip', ['link', 'add', hostLink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outsideNs]);
  await sh('ip', ['addr', 'add', `${hostLinkIp}/24`, 'dev', hostLink]);
  await sh('ip', ['link', 'set', hostLink, 'up']);
  await sh('ip', ['-n', outsideNs, 'addr', 'add', `${outsideIp}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', outsideNs, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', outsideNs, 'route', 'add', 'default', 'via', hostLinkIp]);

  // The nat network. If the daemon is gone by cleanup time, its nftables table is removed by hand.
  const table = `vsw_nat_${network.replace(/[^A-Za-z0-9_]/g, '_')}`;
  h.onCleanup(`remove nftables table ip ${table}`, async () => {
    const r = await cmd('nft', ['list', 'table', 'ip', table], { cleanup: true, allowFail: true, timeoutMs: 10_000 });
    if (r.code === 0) await cmd('nft', ['delete', 'table', 'ip', table], { cleanup: true, timeoutMs: 10_000 });
  });
  h.onCleanup(`remove vsw network ${network}`, async () => {
    if (!h.daemonAlive()) return;
    // Removing the network is what undoes its host changes (ip_forward, the nftables table): say so if it fails.
    const r = await h.cli(['network', 'rm', network], { cleanup: true, allowFail: true });
    if (r.code !== 0 && !/no network|not found/i.test(r.stderr)) throw new BenchError(`vsw network rm ${network}: ${r.stderr.trim() || `exit status ${r.code}`}`);
  });
  await h.cli(['network', 'create', '-d', 'nat', '--subnet', sub.cidr, '--transit', transit.cidr, network]);
  const inspect = JSON.parse((await h.cli(['network', 'inspect', network])).stdout) as { nat?: Record<string, unknown> };
  const nat = inspect.nat;
  if (!nat || typeof nat.externalIp !== 'string') throw new BenchError(`vsw network inspect ${network} shows no nat section with an externalIp: is this a daemon with nat networks?`);

  await h.netnsAdd(containerNs);
  const container = await h.addEndpoint(network, containerNs);
  // The outside namespace joins the internal network too (its second interface), for the path without NAT.
  const outsideVsw = await h.addEndpoint(h.internalNetwork, outsideNs);
  await h.netnsAdd(internalClientNs);
  const internalClient = await h.addEndpoint(h.internalNetwork, internalClientNs);

  for (const ns of [containerNs, internalClientNs]) await sh('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...CLIENT_SYSCTLS]);

  return {
    network,
    subnet: sub.cidr,
    nat,
    externalIp: nat.externalIp,
    containerNs,
    containerIp: container.ip,
    outsideNs,
    outsideIp,
    outsideInternalIp: outsideVsw.ip,
    hostLink,
    hostLinkCidr: `${hostLinkIp}/24`,
    internalClientNs,
    internalClientIp: internalClient.ip,
    mtu: { container: await ifMtu(containerNs, container.ifname), outsideVeth: await ifMtu(outsideNs, 'eth0'), outsideVsw: await ifMtu(outsideNs, outsideVsw.ifname) },
  };
}

/**
 * Why traffic through the NAT may have stopped, beyond the daemon: the host
 * forwards it, and net.ipv4.ip_forward is host-wide, so another vsw daemon
 * removing its last nat network can turn it off under this one.
 */
export async function natPathHint(): Promise<string> {
  const fwd = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').then((s) => s.trim(), () => '?');
  return fwd === '0' ? ' (net.ipv4.ip_forward is 0 now: the host no longer forwards between the NAT and the outside namespace; another vsw daemon removing its last nat network turns it off)' : '';
}

// ---------------------------------------------------------------- the connection-rate generator

export type ConnProto = 'tcp' | 'udp';

/** The server of scripts/nat-connrate.ts in the outside namespace, on all its addresses; resolves once it listens. */
export async function startConnServer(ns: string, script: string): Promise<ChildProcess> {
  const args = ['netns', 'exec', ns, process.execPath, script, 'server', '--bind', '0.0.0.0', '--tcp-port', String(CONNRATE_TCP_PORT), '--udp-port', String(CONNRATE_UDP_PORT)];
  const child = start('ip', args, 'pipe');
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`the connection-rate server in ${ns} listening`, 15_000, async () => {
    if (child.exitCode !== null || child.signalCode !== null) throw new BenchError(`the connection-rate server in ${ns} exited: ${out.trim() || 'no output'}`);
    return out.includes('"listening"') ? true : undefined;
  }, 50);
  return child;
}

/**
 * Source ports of one run's exchanges: each takes the next port of a block
 * of `count`, so every connection and flow is a new 4-tuple (left to itself,
 * the kernel hands a closed connection's port to a later one, and a NAT then
 * restarts the old translation instead of making a new one). Runs take the
 * blocks that fit in SRC_PORT_FIRST..SRC_PORT_LAST in turn; a block is used
 * again only once what it left has gone cold (BLOCK_COLD_MS).
 */
export function sourcePorts(run: number, count: number): { first: number; block: number } {
  const blocks = Math.max(1, Math.floor((SRC_PORT_LAST - SRC_PORT_FIRST + 1) / count));
  const block = (run - 1) % blocks;
  return { first: SRC_PORT_FIRST + block * count, block };
}

/**
 * How long a block of source ports rests before a run uses it again: vsw
 * keeps a UDP connection 60 s after its last packet and a cached flow 30 s
 * idle, so a 4-tuple reused sooner is an old flow, not a new one.
 */
export const BLOCK_COLD_MS = 65_000;

export interface ConnRateArgs {
  proto: ConnProto;
  host: string;
  total: number;
  concurrency: number;
  srcPortFirst?: number;
}

/** One run of the generator in namespace ns; its JSON result, or a BenchError with what it printed. */
export async function connRate(ns: string, script: string, a: ConnRateArgs): Promise<ConnRateResult> {
  const port = a.proto === 'tcp' ? CONNRATE_TCP_PORT : CONNRATE_UDP_PORT;
  const args = ['netns', 'exec', ns, process.execPath, script, 'client', '--proto', a.proto, '--host', a.host, '--port', String(port)];
  args.push('--total', String(a.total), '--concurrency', String(a.concurrency), '--warmup', String(CONNRATE_WARMUP), '--max-seconds', String(CONNRATE_MAX_SECONDS));
  if (a.srcPortFirst !== undefined) args.push('--src-port-first', String(a.srcPortFirst));
  const r = await cmd('ip', args, { allowFail: true, timeoutMs: (CONNRATE_MAX_SECONDS + 30) * 1000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    const res = JSON.parse(line) as ConnRateResult;
    if (typeof res.perSecond === 'number' && typeof res.ok === 'number') return res;
  } catch {
    // reported below
  }
  const why = r.stderr.trim().split('\n').pop() || line || `exit status ${r.code}`;
  throw new BenchError(`the connection-rate generator in ${ns} printed no result: ${why}`);
}

// ---------------------------------------------------------------- the gateway's counters

export interface LinkDrops {
  /** Frames the host kernel could not queue to the reader (for the host TAP: to vsw). */
  txDropped: number;
  rxDropped: number;
}

/** The kernel's drop counters of a host interface (ip -s link); null if it cannot be read. */
export async function linkDrops(ifname: string): Promise<LinkDrops | null> {
  const r = await cmd('ip', ['-s', '-j', 'link', 'show', 'dev', ifname], { allowFail: true });
  try {
    const l = (JSON.parse(r.stdout) as { stats64?: { rx?: { dropped?: number }; tx?: { dropped?: number } } }[])[0];
    return { txDropped: l.stats64?.tx?.dropped ?? 0, rxDropped: l.stats64?.rx?.dropped ?? 0 };
  } catch {
    return null;
  }
}

export interface NatCounters {
  created: number;
  expired: number;
  refused: number;
  active: number;
  poolSize: number;
}

export interface NatState {
  counters: NatCounters;
  /** The host TAP's port counters (drops by reason). */
  hostPort?: unknown;
  /** Live translations by protocol (counted from the listing, which is not kept). */
  live: Record<string, number>;
}

/** Picks the one network's entry out of GET /v1/nat?network=N. */
export function natState(body: unknown, network: string): NatState {
  const list = Array.isArray(body) ? (body as Record<string, unknown>[]) : [];
  const s = list.find((e) => e.network === network);
  const c = s?.counters as Partial<NatCounters> | undefined;
  if (!s || !c || typeof c.created !== 'number' || typeof c.active !== 'number' || typeof c.poolSize !== 'number') {
    throw new BenchError(`GET /v1/nat?network=${network} has no counters for the network: ${JSON.stringify(body).slice(0, 160)}`);
  }
  const live: Record<string, number> = {};
  for (const t of Array.isArray(s.translations) ? (s.translations as { protocol?: unknown }[]) : []) {
    const proto = String(t.protocol);
    live[proto] = (live[proto] ?? 0) + 1;
  }
  return {
    counters: { created: c.created, expired: c.expired ?? 0, refused: c.refused ?? 0, active: c.active, poolSize: c.poolSize },
    hostPort: s.hostPort,
    live,
  };
}

// ---------------------------------------------------------------- summary

/** What the summary needs of bench.ts's run records. */
export interface NatRunLike {
  test: string;
  side: string;
  variant?: string;
  ok: boolean;
  tcp?: { bitsPerSecond: number; retransmits: number | null };
  connRate?: ConnRateResult;
  daemonCpuPercent?: number | null;
  /** Connection-rate runs: daemon CPU time per exchange (warmup included), microseconds. */
  daemonCpuUsPerExchange?: number | null;
  daemonCpuUsPerExchangeSplit?: { user: number; system: number };
  /** Connection-rate runs through the NAT: the gateway's counters over the run. */
  natDelta?: { created: number; refused: number };
  /** iperf3 runs through the NAT: the host TAP's kernel drop counters over the run. */
  hostTapDrops?: LinkDrops | null;
}

export const NAT_VARIANTS = { tcp: 'tcp', tcpReverse: 'tcp -R', connTcp: 'conn tcp', connUdp: 'conn udp' } as const;

export interface NatSummaryRow {
  scenario: string;
  unit: string;
  /** Through the NAT. */
  nat: number | null;
  /** Through vsw without NAT (container to container). */
  noNat: number | null;
  /** nat / noNat, for rates. */
  ratio: number | null;
  /** Connection rates: the generator over loopback in one namespace, no switch (its own ceiling here). */
  loopback: number | null;
  digits: number;
}

export function natSummary(records: readonly NatRunLike[]): NatSummaryRow[] {
  const recs = records.filter((r) => r.test === 'nat');
  if (recs.length === 0) return [];
  const pick = (variant: string, side: string, f: (r: NatRunLike) => number | null | undefined): number | null =>
    median(recs.filter((r) => r.ok && r.variant === variant && r.side === side).map(f));
  const rows: NatSummaryRow[] = [];
  const row = (scenario: string, unit: string, variant: string, f: (r: NatRunLike) => number | null | undefined, digits: number, opts: { ratio?: boolean; loopback?: boolean } = {}): void => {
    const n = pick(variant, 'nat', f);
    const v = pick(variant, 'vsw', f);
    rows.push({ scenario, unit, nat: n, noNat: v, ratio: opts.ratio ? ratio(n, v) : null, loopback: opts.loopback ? pick(variant, 'loopback', f) : null, digits });
  };
  const gbps = (r: NatRunLike): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);
  const V = NAT_VARIANTS;
  row('TCP 1 stream, container -> outside', 'Gbit/s', V.tcp, gbps, 2, { ratio: true });
  row('TCP retransmits', 'per run', V.tcp, (r) => r.tcp?.retransmits, 0);
  row('TCP 1 stream, outside -> container (-R)', 'Gbit/s', V.tcpReverse, gbps, 2, { ratio: true });
  row('TCP retransmits (-R)', 'per run', V.tcpReverse, (r) => r.tcp?.retransmits, 0);
  row('host TAP drops toward vsw (-R)', 'per run', V.tcpReverse, (r) => r.hostTapDrops?.txDropped, 0);
  row('daemon CPU during TCP', '% of a core', V.tcp, (r) => r.daemonCpuPercent, 0);
  for (const [variant, what] of [[V.connTcp, 'new TCP connections'], [V.connUdp, 'new UDP flows']] as const) {
    row(what, 'per s', variant, (r) => r.connRate?.perSecond, 0, { ratio: true, loopback: true });
    row(`${what}: time to answer, median p50`, 'ms', variant, (r) => r.connRate?.latencyMs?.p50, 2, { loopback: true });
    row(`${what}: time to answer, median p99`, 'ms', variant, (r) => r.connRate?.latencyMs?.p99, 2, { loopback: true });
    row(`${what}: failed`, 'per run', variant, (r) => r.connRate?.failed, 0, { loopback: true });
    const per = variant === V.connTcp ? 'connection' : 'flow';
    row(`${what}: daemon CPU per ${per}`, 'us', variant, (r) => r.daemonCpuUsPerExchange, 1);
    row(`${what}: daemon CPU per ${per}, user`, 'us', variant, (r) => r.daemonCpuUsPerExchangeSplit?.user, 1);
    row(`${what}: daemon CPU per ${per}, kernel`, 'us', variant, (r) => r.daemonCpuUsPerExchangeSplit?.system, 1);
    row(`${what}: NAT translations created`, 'per run', variant, (r) => r.natDelta?.created, 0);
    row(`${what}: NAT translations refused`, 'per run', variant, (r) => r.natDelta?.refused, 0);
  }
  return rows;
}

/** The bars of the scenario: throughput through the NAT next to without it, and the connection rate. */
export function natChecks(records: readonly NatRunLike[]): Check[] {
  const rows = natSummary(records);
  if (rows.length === 0) return [];
  const get = (scenario: string): NatSummaryRow | undefined => rows.find((r) => r.scenario === scenario);
  const bar = `>= ${NAT_RATIO_BAR}`;
  const ok = (v: number): boolean => v >= NAT_RATIO_BAR;
  const tcp = get('TCP 1 stream, container -> outside');
  const rev = get('TCP 1 stream, outside -> container (-R)');
  const conn = get('new TCP connections');
  const udp = get('new UDP flows');
  return [
    judge('nat: TCP through the NAT / vsw without NAT', tcp?.ratio ?? null, bar, ok),
    judge('nat: TCP -R through the NAT / vsw without NAT', rev?.ratio ?? null, bar, ok),
    judge('nat: new TCP connections/s through the NAT', conn?.nat ?? null, `>= ${NAT_CONN_RATE_BAR}`, (v) => v >= NAT_CONN_RATE_BAR, 0),
    { what: 'nat: new TCP connections/s, NAT / vsw without NAT', value: conn?.ratio ?? null, bar: null, met: null },
    { what: 'nat: new TCP connections/s, NAT / loopback (no switch)', value: ratio(conn?.nat ?? null, conn?.loopback ?? null), bar: null, met: null },
    { what: 'nat: new UDP flows/s through the NAT', value: udp?.nat ?? null, bar: null, met: null, digits: 0 },
    { what: 'nat: new UDP flows/s, NAT / vsw without NAT', value: udp?.ratio ?? null, bar: null, met: null },
  ];
}
