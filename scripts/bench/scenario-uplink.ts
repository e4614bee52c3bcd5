/**
 * The modes on a physical uplink, each against its Linux counterpart in the
 * same run: transparent against macvlan (bridge mode), l2bridge against
 * ipvlan L2 (one MAC on the wire, like l2bridge), or, on a kernel without
 * ipvlan (these test machines'), against the other way Linux puts containers
 * on a LAN behind the host's MAC: a routing host with proxy ARP, the
 * container on a veth.
 *
 * The LAN is a namespace holding a bridge, with one LAN host on it (the
 * iperf3 server). vsw's uplink is the host end of a veth into that bridge,
 * and vsw's container (the client) sits on a network riding on it; the
 * baseline's container has a macvlan or ipvlan child of a second such veth.
 * Both paths cross the same bridge to the same LAN host: TCP 1 stream and UDP
 * 64 B datagrams, container to LAN host, vsw and the baseline alternating.
 */
import { CpuMeter, Interrupted, alternate, judge, medianOf, ratio, type Check } from '../bench-lib.js';
import { runIperf } from '../lab-lib.js';
import { deleteLink, netnsAdd, pickSubnet, sh, type BenchContext, type RunRecord } from './context.js';
import { checkNamespaces, fmtBps } from './measure.js';
import { ownTable, type Scenario } from './scenario.js';
import type { Column, ReportRow } from './runner.js';

/** The aim the issue set: vsw's TCP at least half its counterpart's. */
export const UPLINK_BAR = 0.5;
const UDP_LEN = 64;
const VARIANTS = { tcp: 'tcp', udp: `udp ${UDP_LEN} B` } as const;

type BaselineSide = 'macvlan' | 'ipvlan' | 'routed';

/** The baselines' names in the tables. */
const BASELINE_LABELS: Record<BaselineSide, string> = { macvlan: 'macvlan', ipvlan: 'ipvlan L2', routed: 'routed + proxy ARP' };

/** What differs between the modes. */
interface UplinkMode {
  test: 'transparent' | 'l2bridge';
  /** The baselines in order of preference: the first one this kernel can make is measured. */
  baselines: readonly BaselineSide[];
}

const TRANSPARENT: UplinkMode = { test: 'transparent', baselines: ['macvlan'] };
const L2BRIDGE: UplinkMode = { test: 'l2bridge', baselines: ['ipvlan', 'routed'] };

interface LanPath {
  side: 'vsw' | BaselineSide;
  clientNs: string;
  serverNs: string;
  clientIp: string;
  serverIp: string;
}

interface UplinkTopology {
  lan: string;
  uplink: string;
  network: string;
  subnet: string;
  vsw: LanPath;
  baseline: LanPath;
}

export interface UplinkRunRecord extends RunRecord {
  side: 'vsw' | BaselineSide;
}

async function ip(args: string[]): Promise<void> {
  await sh('ip', args);
}

async function setupUplink(ctx: BenchContext, mode: UplinkMode): Promise<UplinkTopology> {
  const { prefix, cleanup } = ctx;
  const { cidr, prefix: taken, x } = await pickSubnet(ctx.taken, `the ${mode.test} scenario`);
  ctx.taken.push(taken);
  const net = (host: number): string => `10.${x}.0.${host}`;
  // Names by mode: both scenarios may run in one bench.
  const tag = mode.test === 'transparent' ? 't' : 'b';
  const lan = `${prefix}-${tag}lan`;
  const server = `${prefix}-${tag}lanh`;
  const vswNs = `${prefix}-${tag}vc`;
  const mvNs = `${prefix}-${tag}bc`;
  const uplink = `${prefix}-${tag}up`;
  const mvUplink = `${prefix}-${tag}bup`;
  for (const ns of [lan, server, vswNs, mvNs]) await netnsAdd(cleanup, ns);
  await ip(['-n', lan, 'link', 'add', 'br0', 'type', 'bridge']);
  await ip(['-n', lan, 'link', 'set', 'br0', 'up']);
  await ip(['-n', lan, 'link', 'add', 'tohost', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', server]);
  for (const [hostEnd, lanEnd] of [
    [uplink, 'tovsw'],
    [mvUplink, 'tomv'],
  ]) {
    cleanup.add(`delete veth ${hostEnd}`, () => deleteLink(hostEnd));
    await ip(['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', lanEnd, 'netns', lan]);
    await ip(['link', 'set', hostEnd, 'up']);
  }
  for (const port of ['tohost', 'tovsw', 'tomv']) {
    await ip(['-n', lan, 'link', 'set', port, 'master', 'br0']);
    await ip(['-n', lan, 'link', 'set', port, 'up']);
  }
  await ip(['-n', server, 'addr', 'add', `${net(2)}/24`, 'dev', 'eth0']);
  await ip(['-n', server, 'link', 'set', 'eth0', 'up']);
  // The baseline's container at .3.
  const baseline = await setupBaseline(ctx, mode, { tag, uplink: mvUplink, containerNs: mvNs, net });
  // l2bridge's one MAC is the host's: the host has an address on that LAN (.1).
  if (mode.test === 'l2bridge') await ip(['addr', 'add', `${net(1)}/24`, 'dev', uplink]);
  // vsw's container takes an address from the upper half.
  const network = `${prefix}-${tag}n`;
  cleanup.add(`remove network ${network}`, async () => {
    await ctx.daemon.cli(['network', 'rm', network], { cleanup: true, allowFail: true });
  });
  await ctx.daemon.cli(['network', 'create', network, '-d', mode.test, '--uplink', uplink, '--subnet', cidr, '--ip-range', `10.${x}.0.128/25`]);
  const created = await ctx.daemon.cli(['endpoint', 'create', '--network', network, '--netns', vswNs]);
  const id = created.stdout.trim();
  cleanup.add(`remove endpoint ${id}`, async () => {
    await ctx.daemon.cli(['endpoint', 'rm', id], { cleanup: true, allowFail: true });
  });
  const endpoint = JSON.parse((await ctx.daemon.cli(['endpoint', 'inspect', id])).stdout) as { ip: string };
  return {
    lan,
    uplink,
    network,
    subnet: cidr,
    vsw: { side: 'vsw', clientNs: vswNs, serverNs: server, clientIp: endpoint.ip, serverIp: net(2) },
    baseline: { side: baseline, clientNs: mvNs, serverNs: server, clientIp: net(3), serverIp: net(2) },
  };
}

/** The first of the mode's baselines this kernel can make, its container at .3 in `containerNs`. */
async function setupBaseline(ctx: BenchContext, mode: UplinkMode, at: { tag: string; uplink: string; containerNs: string; net: (host: number) => string }): Promise<BaselineSide> {
  const { prefix, cleanup } = ctx;
  const child = `${prefix}-${at.tag}bl`;
  for (const side of mode.baselines) {
    if (side === 'routed') {
      // A host namespace that routes: its LAN leg is the uplink, the container behind a veth, proxy ARP both ways.
      const host = `${prefix}-${at.tag}bh`;
      await netnsAdd(cleanup, host);
      await ip(['link', 'set', at.uplink, 'netns', host, 'name', 'eth1']);
      await ip(['-n', host, 'link', 'set', 'eth1', 'up']);
      await ip(['-n', host, 'addr', 'add', `${at.net(4)}/24`, 'dev', 'eth1']);
      await ip(['-n', host, 'link', 'add', 'ct', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', at.containerNs]);
      await ip(['-n', host, 'link', 'set', 'ct', 'up']);
      await ip(['-n', host, 'route', 'add', `${at.net(3)}/32`, 'dev', 'ct']);
      for (const key of ['net.ipv4.ip_forward=1', 'net.ipv4.conf.eth1.proxy_arp=1', 'net.ipv4.conf.ct.proxy_arp=1']) await sh('ip', ['netns', 'exec', host, 'sysctl', '-qw', key]);
    } else {
      const made = await sh('ip', ['link', 'add', child, 'link', at.uplink, 'type', ...(side === 'ipvlan' ? ['ipvlan', 'mode', 'l2'] : ['macvlan', 'mode', 'bridge'])], { allowFail: true });
      if (made.code !== 0) {
        console.error(`bench: ${mode.test}: no ${side} on this kernel (${made.stderr.trim()}); trying the next baseline`);
        continue;
      }
      await ip(['link', 'set', child, 'netns', at.containerNs, 'name', 'eth0']);
    }
    await ip(['-n', at.containerNs, 'addr', 'add', `${at.net(3)}/24`, 'dev', 'eth0']);
    await ip(['-n', at.containerNs, 'link', 'set', 'eth0', 'up']);
    return side;
  }
  throw new Error(`${mode.test}: none of ${mode.baselines.join(', ')} can be made on this kernel`);
}

async function measureLan(ctx: BenchContext, mode: UplinkMode, p: LanPath, variant: string, run: number): Promise<UplinkRunRecord> {
  const udp = variant === VARIANTS.udp;
  const rec: UplinkRunRecord = { test: mode.test, side: p.side, variant, run, ok: false };
  const meter = p.side === 'vsw' ? new CpuMeter(ctx.daemon.pid, ctx.clkTck) : null;
  try {
    const out = await runIperf({ clientNs: p.clientNs, serverNs: p.serverNs, serverIp: p.serverIp, seconds: ctx.opts.time, udp, len: UDP_LEN, during: meter ? async () => meter.begin() : undefined });
    if (meter) rec.daemonCpuPercent = await meter.end();
    rec.tcp = out.tcp;
    rec.udp = out.udp;
    rec.ok = true;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
  }
  const what = rec.tcp ? fmtBps(rec.tcp.bitsPerSecond) : rec.udp ? `${(rec.udp.packetsPerSecond / 1e3).toFixed(0)} kpps received` : `failed: ${rec.error}`;
  console.error(`bench: ${mode.test} run ${run} ${p.side} ${variant}: ${what}`);
  if (!rec.ok) {
    if (!ctx.daemon.alive()) throw await ctx.daemon.died();
    checkNamespaces([p]);
  }
  return rec;
}

async function runUplink(ctx: BenchContext, mode: UplinkMode, t: UplinkTopology): Promise<UplinkRunRecord[]> {
  const out: UplinkRunRecord[] = [];
  for (let run = 1; run <= ctx.opts.runs; run++) {
    for (const variant of Object.values(VARIANTS)) {
      for (const p of alternate(run, [t.vsw, t.baseline])) out.push(await measureLan(ctx, mode, p, variant, run));
    }
  }
  return out;
}

// ---------------------------------------------------------------- summary

export interface UplinkSummaryRow extends ReportRow {
  vsw: number | null;
  baseline: number | null;
  ratio: number | null;
}

/** The baseline the records measured (the mode's first, when none ran). */
function measuredBaseline(mode: UplinkMode, records: readonly RunRecord[]): BaselineSide {
  return mode.baselines.find((side) => records.some((r) => r.test === mode.test && r.side === side)) ?? mode.baselines[0];
}

function columns(mode: UplinkMode, records: readonly RunRecord[]): readonly Column<UplinkSummaryRow>[] {
  const baseline = measuredBaseline(mode, records);
  return [
    { header: `vsw ${mode.test}`, value: (r) => r.vsw },
    { header: BASELINE_LABELS[baseline], value: (r) => r.baseline },
    { header: `vsw/${baseline}`, value: (r) => r.ratio, digits: 2 },
  ];
}

function summary(mode: UplinkMode, records: readonly RunRecord[]): UplinkSummaryRow[] {
  const recs = records.filter((r) => r.test === mode.test);
  if (recs.length === 0) return [];
  const baseline = measuredBaseline(mode, recs);
  const row = (scenario: string, unit: string, variant: string, f: (r: RunRecord) => number | null | undefined, digits: number, withRatio: boolean): UplinkSummaryRow => {
    const v = medianOf(recs, { variant, side: 'vsw' }, f);
    const b = medianOf(recs, { variant, side: baseline }, f);
    return { scenario, unit, vsw: v, baseline: b, ratio: withRatio ? ratio(v, b) : null, digits };
  };
  return [
    row('TCP 1 stream, container to LAN host', 'Gbit/s', VARIANTS.tcp, (r) => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null), 2, true),
    row(`UDP ${UDP_LEN} B received, container to LAN host`, 'kpps', VARIANTS.udp, (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), 0, true),
    row('daemon CPU during TCP', '% of a core', VARIANTS.tcp, (r) => r.daemonCpuPercent, 0, false),
  ];
}

function checks(mode: UplinkMode, records: readonly RunRecord[]): Check[] {
  const rows = summary(mode, records);
  if (rows.length === 0) return [];
  const label = BASELINE_LABELS[measuredBaseline(mode, records)];
  return [
    judge(`${mode.test}: vsw TCP 1 stream / ${label}`, rows[0].ratio, `>= ${UPLINK_BAR}`, (v) => v >= UPLINK_BAR),
    { what: `${mode.test}: vsw UDP ${UDP_LEN} B received pps / ${label}`, value: rows[1].ratio, bar: null, met: null },
  ];
}

function uplinkScenario(mode: UplinkMode): Scenario<UplinkTopology> {
  return {
    name: mode.test,
    setup: (ctx) => setupUplink(ctx, mode),
    run: (ctx, t) => runUplink(ctx, mode, t),
    describe: async (_ctx, t) => ({ topology: t }),
    table: (records) => ownTable(`${mode.test} scenario (container to a LAN host through a physical uplink)`, columns(mode, records), summary(mode, records)),
    checks: (records) => checks(mode, records),
  };
}

export const transparentScenario = uplinkScenario(TRANSPARENT);
export const l2bridgeScenario = uplinkScenario(L2BRIDGE);
export const transparentSummary = (records: readonly RunRecord[]): UplinkSummaryRow[] => summary(TRANSPARENT, records);
export const transparentChecks = (records: readonly RunRecord[]): Check[] => checks(TRANSPARENT, records);
export const l2bridgeSummary = (records: readonly RunRecord[]): UplinkSummaryRow[] => summary(L2BRIDGE, records);
export const l2bridgeChecks = (records: readonly RunRecord[]): Check[] => checks(L2BRIDGE, records);
