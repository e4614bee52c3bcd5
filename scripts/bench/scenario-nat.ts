/**
 * nat: what a nat network's gateway costs next to plain switching by the
 * same daemon.
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
 * Measured per run, in this order: iperf3 TCP one stream both ways (-R),
 * through the NAT and without it (which path goes first alternates from run
 * to run); then new TCP connections and new UDP flows per second with
 * scripts/nat-connrate.ts, through the NAT, without it, and between the
 * generator and the server over P-no's loopback, the ceiling the generator
 * itself reaches on this machine with no switch at all.
 *
 * Nothing here touches the host beyond what `vsw network create -d nat`
 * does itself (its host TAP, ip_forward, an nftables table for traffic
 * leaving by the default route, which this traffic never does) and one veth
 * with a /24 that overlaps no host route. Sysctls for the generator (port
 * range, tcp_tw_reuse) are set inside the bench's namespaces only.
 */
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';

import {
  BenchError,
  CpuMeter,
  Interrupted,
  alternate,
  cmd,
  ifMtu,
  judge,
  medianOf,
  pickFreePrefix,
  procStatusKiB,
  ratio,
  sleep,
  start,
  stop,
  waitFor,
  type Check,
} from '../bench-lib.js';
import type { ConnRateResult } from '../nat-connrate.js';
import { netnsAdd, pickSubnet, randomInt, sh, vethInto, type BenchContext, type RunRecord, type Side, type SideName } from './context.js';
import { checkIntact, measure, waitReachable } from './measure.js';
import { REPO_ROOT, requireBuilt, type Column, type ReportRow } from './runner.js';
import { ownTable, type Scenario } from './scenario.js';

/** The connection-rate generator and server (scripts/nat-connrate.ts, built with the rest). */
const CONNRATE = path.join(REPO_ROOT, 'dist/scripts/nat-connrate.js');
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

export type { ConnRateResult } from '../nat-connrate.js';
export type ConnProto = 'tcp' | 'udp';

export const NAT_VARIANTS = { tcp: 'tcp', tcpReverse: 'tcp -R', connTcp: 'conn tcp', connUdp: 'conn udp' } as const;

export interface NatRunRecord extends RunRecord {
  /** A run of the connection-rate generator (scripts/nat-connrate.ts). */
  connRate?: ConnRateResult;
  /** Connection rate: daemon CPU time per exchange (warmup included), microseconds. */
  daemonCpuUsPerExchange?: number | null;
  /** The same, in user mode (JS, N-API) and in the kernel (TAP reads and writes, and the receiving stacks a write runs). */
  daemonCpuUsPerExchangeSplit?: { user: number; system: number };
  /** Connection rate through the NAT: the gateway's counters over the run (translations created, flows refused). */
  natDelta?: { created: number; refused: number };
  /** The daemon's VmRSS right after the run (where it grows, and whether it settles). */
  daemonRssAfterKiB?: number | null;
  /** iperf3 through the NAT: the host TAP's kernel drop counters over the run. */
  hostTapDrops?: LinkDrops | null;
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

// ---------------------------------------------------------------- topology

/**
 * Builds the topology above. Every step registers its undo first, so a
 * failure half-way leaves nothing behind.
 */
async function setupNat(ctx: BenchContext): Promise<NatTopology> {
  const p = ctx.prefix;
  const { cleanup, daemon } = ctx;
  const network = `${p}-nat`; // also the host TAP's name: at most 15 characters (vswtXXXX-nat is 12)
  const containerNs = `${p}-nc`;
  const outsideNs = `${p}-no`;
  const hostLink = `${p}-noh`;
  const internalClientNs = `${p}-ni`;

  const taken = [...ctx.taken];
  const sub = await pickSubnet(taken, 'the nat scenario');
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
  await netnsAdd(cleanup, outsideNs);
  await vethInto(cleanup, hostLink, outsideNs);
  await sh('ip', ['addr', 'add', `${hostLinkIp}/24`, 'dev', hostLink]);
  await sh('ip', ['link', 'set', hostLink, 'up']);
  await sh('ip', ['-n', outsideNs, 'addr', 'add', `${outsideIp}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', outsideNs, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', outsideNs, 'route', 'add', 'default', 'via', hostLinkIp]);

  // The nat network. If the daemon is gone by cleanup time, its nftables table is removed by hand.
  const table = `vsw_nat_${network.replace(/[^A-Za-z0-9_]/g, '_')}`;
  cleanup.add(`remove nftables table ip ${table}`, async () => {
    const r = await cmd('nft', ['list', 'table', 'ip', table], { cleanup: true, allowFail: true, timeoutMs: 10_000 });
    if (r.code === 0) await cmd('nft', ['delete', 'table', 'ip', table], { cleanup: true, timeoutMs: 10_000 });
  });
  cleanup.add(`remove vsw network ${network}`, async () => {
    if (!daemon.alive()) return;
    // Removing the network is what undoes its host changes (ip_forward, the nftables table): say so if it fails.
    const r = await daemon.cli(['network', 'rm', network], { cleanup: true, allowFail: true });
    if (r.code !== 0 && !/no network|not found/i.test(r.stderr)) throw new BenchError(`vsw network rm ${network}: ${r.stderr.trim() || `exit status ${r.code}`}`);
  });
  await daemon.cli(['network', 'create', '-d', 'nat', '--subnet', sub.cidr, '--transit', transit.cidr, network]);
  const inspect = JSON.parse((await daemon.cli(['network', 'inspect', network])).stdout) as { nat?: Record<string, unknown> };
  const nat = inspect.nat;
  if (!nat || typeof nat.externalIp !== 'string') throw new BenchError(`vsw network inspect ${network} shows no nat section with an externalIp: is this a daemon with nat networks?`);

  await netnsAdd(cleanup, containerNs);
  const container = await daemon.addEndpoint(network, containerNs);
  // The outside namespace joins the internal network too (its second interface), for the path without NAT.
  const outsideVsw = await daemon.addEndpoint(daemon.network, outsideNs);
  await netnsAdd(cleanup, internalClientNs);
  const internalClient = await daemon.addEndpoint(daemon.network, internalClientNs);

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

/** The two paths of the scenario as Sides, for measure() and waitReachable(). */
function natSides(t: NatTopology, internalSubnet: string): { nat: Side; noNat: Side } {
  return {
    nat: { name: 'nat', subnet: t.subnet, clientNs: t.containerNs, serverNs: t.outsideNs, clientIp: t.containerIp, serverIp: t.outsideIp, mtu: t.mtu.outsideVeth },
    noNat: {
      name: 'vsw',
      subnet: internalSubnet,
      clientNs: t.internalClientNs,
      serverNs: t.outsideNs,
      clientIp: t.internalClientIp,
      serverIp: t.outsideInternalIp,
      mtu: t.mtu.outsideVsw,
    },
  };
}

/**
 * Why traffic through the NAT may have stopped, beyond the daemon: the host
 * forwards it, and net.ipv4.ip_forward is host-wide, so another vsw daemon
 * removing its last nat network can turn it off under this one.
 */
async function natPathHint(): Promise<string> {
  const fwd = await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').then((s) => s.trim(), () => '?');
  return fwd === '0' ? ' (net.ipv4.ip_forward is 0 now: the host no longer forwards between the NAT and the outside namespace; another vsw daemon removing its last nat network turns it off)' : '';
}

// ---------------------------------------------------------------- the connection-rate generator

/** The server of scripts/nat-connrate.ts in the outside namespace, on all its addresses; resolves once it listens. */
async function startConnServer(ns: string): Promise<ChildProcess> {
  const args = ['netns', 'exec', ns, process.execPath, CONNRATE, 'server', '--bind', '0.0.0.0', '--tcp-port', String(CONNRATE_TCP_PORT), '--udp-port', String(CONNRATE_UDP_PORT)];
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

interface ConnRateArgs {
  proto: ConnProto;
  host: string;
  total: number;
  concurrency: number;
  srcPortFirst?: number;
}

/** One run of the generator in namespace ns; its JSON result, or a BenchError with what it printed. */
async function connRate(ns: string, a: ConnRateArgs): Promise<ConnRateResult> {
  const port = a.proto === 'tcp' ? CONNRATE_TCP_PORT : CONNRATE_UDP_PORT;
  const args = ['netns', 'exec', ns, process.execPath, CONNRATE, 'client', '--proto', a.proto, '--host', a.host, '--port', String(port)];
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
async function linkDrops(ifname: string): Promise<LinkDrops | null> {
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

/** The translation counters of a nat network (GET /v1/nat?network=N). */
async function fetchNatState(ctx: BenchContext, network: string): Promise<NatState> {
  return natState(await ctx.daemon.api('GET', `/v1/nat?network=${encodeURIComponent(network)}`), network);
}

/**
 * Waits until the nat network's pool for `proto` has `need` ports that no
 * live translation holds: a closed TCP connection keeps its port for the
 * 10 s of TIME_WAIT, a UDP flow for 60 s after its last packet, so back-to-back
 * runs could otherwise find the pool short and measure refusals.
 */
async function waitNatPorts(ctx: BenchContext, network: string, proto: ConnProto, need: number): Promise<NatState> {
  const free = (s: NatState): number => s.counters.poolSize - (s.live[proto] ?? 0);
  let state = await fetchNatState(ctx, network);
  if (free(state) >= need) return state;
  console.error(`bench: nat: waiting for ${need} free ${proto} NAT ports (${state.live[proto] ?? 0} of ${state.counters.poolSize} held by recent flows)`);
  const deadline = Date.now() + 90_000;
  while (free(state) < need && Date.now() < deadline) {
    // Not faster: every GET /v1/nat lists every live translation (megabytes of JSON at these counts).
    await sleep(2000);
    state = await fetchNatState(ctx, network);
  }
  return state;
}

// ---------------------------------------------------------------- runs

interface NatRunState {
  topology: NatTopology;
  sides: { nat: Side; noNat: Side };
  server: ChildProcess;
  /** When each block of source ports was last used, by side, protocol and block (measureConnRate). */
  blockUsed: Map<string, number>;
}

/**
 * One run of the connection-rate generator: from the container through the
 * NAT (side nat), from the reference container through vsw without NAT
 * (vsw), or inside the outside namespace over loopback (loopback: no switch,
 * the generator's own ceiling on this machine). Through the NAT, the
 * gateway's counters are read before and after: every exchange should have
 * created one translation, and none should have been refused.
 */
async function measureConnRate(ctx: BenchContext, s: NatRunState, side: SideName, proto: ConnProto, run: number): Promise<NatRunRecord> {
  const t = s.topology;
  const variant = proto === 'tcp' ? NAT_VARIANTS.connTcp : NAT_VARIANTS.connUdp;
  const rec: NatRunRecord = { test: 'nat', side, variant, run, ok: false };
  const leg = side === 'nat' ? { ns: t.containerNs, host: t.outsideIp } : side === 'vsw' ? { ns: t.internalClientNs, host: t.outsideInternalIp } : { ns: t.outsideNs, host: '127.0.0.1' };
  const exchanges = CONNRATE_WARMUP + ctx.opts.conns;
  const ports = sourcePorts(run, exchanges);
  try {
    // Through vsw (with NAT or without), a block of source ports must have gone cold first: see BLOCK_COLD_MS.
    const key = `${side}/${proto}/${ports.block}`;
    const rest = (s.blockUsed.get(key) ?? -Infinity) + BLOCK_COLD_MS - Date.now();
    if (side !== 'loopback' && rest > 0) {
      console.error(`bench: nat: waiting ${(rest / 1000).toFixed(0)} s until the ${side} ${proto} source ports of run ${run} have gone cold (their last use was under ${BLOCK_COLD_MS / 1000} s ago)`);
      await sleep(rest);
    }
    const before = side === 'nat' ? await waitNatPorts(ctx, t.network, proto, exchanges) : null;
    const meter = side === 'loopback' ? null : new CpuMeter(ctx.daemon.pid, ctx.clkTck);
    await meter?.begin();
    let r: ConnRateResult;
    try {
      r = await connRate(leg.ns, { proto, host: leg.host, total: ctx.opts.conns, concurrency: ctx.opts.concurrency, srcPortFirst: ports.first });
    } finally {
      s.blockUsed.set(key, Date.now());
    }
    const cpu = meter ? await meter.end() : null;
    rec.connRate = r;
    if (meter) {
      const n = r.total + r.warmup;
      rec.daemonCpuPercent = cpu;
      if (cpu !== null && meter.userSeconds !== null && meter.systemSeconds !== null) {
        rec.daemonCpuUsPerExchange = ((meter.userSeconds + meter.systemSeconds) * 1e6) / n;
        rec.daemonCpuUsPerExchangeSplit = { user: (meter.userSeconds * 1e6) / n, system: (meter.systemSeconds * 1e6) / n };
      }
    }
    if (before) {
      const after = await fetchNatState(ctx, t.network);
      rec.natDelta = { created: after.counters.created - before.counters.created, refused: after.counters.refused - before.counters.refused };
    }
    rec.ok = r.ok > 0;
    if (!rec.ok) rec.error = `no exchange got an answer: ${JSON.stringify(r.errors)}`;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
  }
  const r = rec.connRate;
  const what = r
    ? `${r.perSecond}/s (${r.ok} answered, ${r.failed} failed${r.failed ? ` ${JSON.stringify(r.errors)}` : ''}` +
      `${r.latencyMs ? `, p50 ${r.latencyMs.p50.toFixed(1)} ms, p99 ${r.latencyMs.p99.toFixed(1)} ms` : ''})`
    : `failed: ${rec.error}`;
  const cpu = typeof rec.daemonCpuUsPerExchange === 'number' ? `, daemon ${rec.daemonCpuUsPerExchange.toFixed(0)} us CPU per exchange` : '';
  const natNote = rec.natDelta ? `, ${rec.natDelta.created} translations created, ${rec.natDelta.refused} refused` : '';
  const warm = r && (r.warmupFailed > 0 || r.warmupSeconds > 2) ? `; warmup of ${r.warmup} took ${r.warmupSeconds} s, ${r.warmupFailed} failed ${JSON.stringify(r.warmupErrors)}` : '';
  console.error(`bench: nat run ${run} ${side} ${variant}: ${what}${cpu}${natNote}${warm}`);
  if (!rec.ok) {
    await checkIntact(ctx, [s.sides.nat, s.sides.noNat]);
    if (side === 'nat') rec.error += await natPathHint();
  }
  return rec;
}

/** iperf3 TCP one stream on a path; through the NAT with the host TAP's drops over the run. */
async function measureTcp(ctx: BenchContext, s: NatRunState, side: Side, reverse: boolean, run: number): Promise<NatRunRecord> {
  // Through the NAT, the host TAP's drops say whether the kernel outran vsw's reads (retransmits with -R).
  const before = side.name === 'nat' ? await linkDrops(s.topology.network) : null;
  const rec: NatRunRecord = await measure(ctx, side, 'nat', run, { variant: reverse ? NAT_VARIANTS.tcpReverse : NAT_VARIANTS.tcp, reverse });
  if (!rec.ok && side.name === 'nat') rec.error += await natPathHint();
  const after = before ? await linkDrops(s.topology.network) : null;
  if (before && after) rec.hostTapDrops = { txDropped: after.txDropped - before.txDropped, rxDropped: after.rxDropped - before.rxDropped };
  return rec;
}

// ---------------------------------------------------------------- summary

export interface NatSummaryRow extends ReportRow {
  /** Through the NAT. */
  nat: number | null;
  /** Through vsw without NAT (container to container). */
  noNat: number | null;
  /** nat / noNat, for rates. */
  ratio: number | null;
  /** Connection rates: the generator over loopback in one namespace, no switch (its own ceiling here). */
  loopback: number | null;
}

const NAT_COLUMNS: readonly Column<NatSummaryRow>[] = [
  { header: 'through NAT', value: (r) => r.nat },
  { header: 'vsw, no NAT', value: (r) => r.noNat },
  { header: 'NAT/no NAT', value: (r) => r.ratio, digits: 2 },
  { header: 'loopback', value: (r) => r.loopback },
];

const isNat = (r: RunRecord): r is NatRunRecord => r.test === 'nat';

export function natSummary(records: readonly RunRecord[]): NatSummaryRow[] {
  const recs = records.filter(isNat);
  if (recs.length === 0) return [];
  const rows: NatSummaryRow[] = [];
  const row = (scenario: string, unit: string, variant: string, f: (r: NatRunRecord) => number | null | undefined, digits: number, opts: { ratio?: boolean; loopback?: boolean } = {}): void => {
    const n = medianOf(recs, { variant, side: 'nat' }, f);
    const v = medianOf(recs, { variant, side: 'vsw' }, f);
    rows.push({ scenario, unit, nat: n, noNat: v, ratio: opts.ratio ? ratio(n, v) : null, loopback: opts.loopback ? medianOf(recs, { variant, side: 'loopback' }, f) : null, digits });
  };
  const gbps = (r: NatRunRecord): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);
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
export function natChecks(records: readonly RunRecord[]): Check[] {
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

// ---------------------------------------------------------------- the scenario

export const natScenario: Scenario<NatRunState> = {
  name: 'nat',
  tools: [
    ['nft', 'nftables'],
    ['sysctl', 'procps'],
  ],

  async preflight() {
    requireBuilt(CONNRATE, 'the connection-rate generator', 'npm run build:ts');
  },

  // Built only at its turn, so that the idle RSS is that of two ports and the scenarios before it run as they would alone.
  async setup(ctx) {
    const topology = await setupNat(ctx);
    const t = topology;
    const sides = natSides(t, ctx.vsw.subnet);
    await waitReachable(sides.nat);
    await waitReachable(sides.noNat);
    console.error(
      `bench: nat: ${t.containerIp} -> ${t.outsideIp} through ${t.network} (external ${t.externalIp}), ` +
        `${t.internalClientIp} -> ${t.outsideInternalIp} without NAT; ${ctx.opts.conns} exchanges per connection-rate run, ${ctx.opts.concurrency} in flight`,
    );
    return { topology, sides, server: await startConnServer(t.outsideNs), blockUsed: new Map() };
  },

  async run(ctx, s) {
    const out: NatRunRecord[] = [];
    const rss = (): Promise<number | null> => procStatusKiB(ctx.daemon.pid, 'VmRSS');
    for (let run = 1; run <= ctx.opts.runs; run++) {
      const order = alternate(run, [s.sides.nat, s.sides.noNat]);
      for (const reverse of [false, true]) {
        for (const side of order) out.push({ ...(await measureTcp(ctx, s, side, reverse, run)), daemonRssAfterKiB: await rss() });
      }
      for (const proto of ['tcp', 'udp'] as const) {
        for (const side of [...order.map((o) => o.name), 'loopback' as const]) out.push({ ...(await measureConnRate(ctx, s, side, proto, run)), daemonRssAfterKiB: await rss() });
      }
    }
    return out;
  },

  async describe(ctx, s) {
    return { topology: s.topology, details: { state: await fetchNatState(ctx, s.topology.network).catch(() => null) } };
  },

  async teardown(_ctx, s) {
    await stop(s.server, 1000);
  },

  resultOptions: (opts) => ({ natConns: opts.conns, natConcurrency: opts.concurrency, natWarmup: CONNRATE_WARMUP }),

  rssAfter: 'nat runs',

  table: (records) => ownTable('nat scenario', NAT_COLUMNS, natSummary(records)),

  checks: natChecks,
};
