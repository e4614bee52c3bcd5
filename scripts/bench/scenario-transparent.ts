/**
 * transparent: containers on a physical LAN, vsw's transparent network
 * against its Linux counterpart, macvlan in bridge mode, in the same run.
 *
 * The LAN is a namespace holding a bridge, with one LAN host on it (the
 * iperf3 server). vsw's uplink is the host end of a veth into that bridge,
 * and vsw's container (the client) sits on a transparent network riding on
 * it; macvlan's container has a macvlan child of a second such veth. Both
 * paths cross the same bridge to the same LAN host: TCP 1 stream and UDP 64 B
 * datagrams, container to LAN host, vsw and macvlan alternating.
 */
import { CpuMeter, Interrupted, alternate, judge, medianOf, ratio, type Check } from '../bench-lib.js';
import { runIperf } from '../lab-lib.js';
import { deleteLink, netnsAdd, pickSubnet, sh, type BenchContext, type RunRecord } from './context.js';
import { checkNamespaces, fmtBps } from './measure.js';
import { ownTable, type Scenario } from './scenario.js';
import type { Column, ReportRow } from './runner.js';

/** The aim the issue set: vsw's TCP at least half macvlan's. */
export const TRANSPARENT_BAR = 0.5;
const UDP_LEN = 64;
const VARIANTS = { tcp: 'tcp', udp: `udp ${UDP_LEN} B` } as const;

interface LanPath {
  side: 'vsw' | 'macvlan';
  clientNs: string;
  serverNs: string;
  clientIp: string;
  serverIp: string;
}

interface TransparentTopology {
  lan: string;
  uplink: string;
  network: string;
  subnet: string;
  vsw: LanPath;
  macvlan: LanPath;
}

export interface TransparentRunRecord extends RunRecord {
  side: 'vsw' | 'macvlan';
}

async function ip(args: string[]): Promise<void> {
  await sh('ip', args);
}

async function setupTransparent(ctx: BenchContext): Promise<TransparentTopology> {
  const { prefix, cleanup } = ctx;
  const { cidr, prefix: taken, x } = await pickSubnet(ctx.taken, 'the transparent scenario');
  ctx.taken.push(taken);
  const net = (host: number): string => `10.${x}.0.${host}`;
  const lan = `${prefix}-lan`;
  const server = `${prefix}-lanh`;
  const vswNs = `${prefix}-trc`;
  const mvNs = `${prefix}-mvc`;
  const uplink = `${prefix}-tup`;
  const mvUplink = `${prefix}-mup`;
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
  // macvlan in bridge mode, its container at .3.
  await ip(['link', 'add', `${prefix}-mv`, 'link', mvUplink, 'type', 'macvlan', 'mode', 'bridge']);
  await ip(['link', 'set', `${prefix}-mv`, 'netns', mvNs, 'name', 'eth0']);
  await ip(['-n', mvNs, 'addr', 'add', `${net(3)}/24`, 'dev', 'eth0']);
  await ip(['-n', mvNs, 'link', 'set', 'eth0', 'up']);
  // vsw's container takes an address from the upper half.
  const network = `${prefix}-tr`;
  cleanup.add(`remove network ${network}`, async () => {
    await ctx.daemon.cli(['network', 'rm', network], { cleanup: true, allowFail: true });
  });
  await ctx.daemon.cli(['network', 'create', network, '-d', 'transparent', '--uplink', uplink, '--subnet', cidr, '--ip-range', `10.${x}.0.128/25`]);
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
    macvlan: { side: 'macvlan', clientNs: mvNs, serverNs: server, clientIp: net(3), serverIp: net(2) },
  };
}

async function measureLan(ctx: BenchContext, p: LanPath, variant: string, run: number): Promise<TransparentRunRecord> {
  const udp = variant === VARIANTS.udp;
  const rec: TransparentRunRecord = { test: 'transparent', side: p.side, variant, run, ok: false };
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
  console.error(`bench: transparent run ${run} ${p.side} ${variant}: ${what}`);
  if (!rec.ok) {
    if (!ctx.daemon.alive()) throw await ctx.daemon.died();
    checkNamespaces([p]);
  }
  return rec;
}

async function runTransparent(ctx: BenchContext, t: TransparentTopology): Promise<TransparentRunRecord[]> {
  const out: TransparentRunRecord[] = [];
  for (let run = 1; run <= ctx.opts.runs; run++) {
    for (const variant of Object.values(VARIANTS)) {
      for (const p of alternate(run, [t.vsw, t.macvlan])) out.push(await measureLan(ctx, p, variant, run));
    }
  }
  return out;
}

// ---------------------------------------------------------------- summary

export interface TransparentSummaryRow extends ReportRow {
  vsw: number | null;
  macvlan: number | null;
  ratio: number | null;
}

const COLUMNS: readonly Column<TransparentSummaryRow>[] = [
  { header: 'vsw transparent', value: (r) => r.vsw },
  { header: 'macvlan', value: (r) => r.macvlan },
  { header: 'vsw/macvlan', value: (r) => r.ratio, digits: 2 },
];

export function transparentSummary(records: readonly RunRecord[]): TransparentSummaryRow[] {
  const recs = records.filter((r) => r.test === 'transparent');
  if (recs.length === 0) return [];
  const row = (scenario: string, unit: string, variant: string, f: (r: RunRecord) => number | null | undefined, digits: number, withRatio: boolean): TransparentSummaryRow => {
    const v = medianOf(recs, { variant, side: 'vsw' }, f);
    const m = medianOf(recs, { variant, side: 'macvlan' }, f);
    return { scenario, unit, vsw: v, macvlan: m, ratio: withRatio ? ratio(v, m) : null, digits };
  };
  return [
    row('TCP 1 stream, container to LAN host', 'Gbit/s', VARIANTS.tcp, (r) => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null), 2, true),
    row(`UDP ${UDP_LEN} B received, container to LAN host`, 'kpps', VARIANTS.udp, (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), 0, true),
    row('daemon CPU during TCP', '% of a core', VARIANTS.tcp, (r) => r.daemonCpuPercent, 0, false),
  ];
}

export function transparentChecks(records: readonly RunRecord[]): Check[] {
  const rows = transparentSummary(records);
  if (rows.length === 0) return [];
  return [
    judge('transparent: vsw TCP 1 stream / macvlan', rows[0].ratio, `>= ${TRANSPARENT_BAR}`, (v) => v >= TRANSPARENT_BAR),
    { what: `transparent: vsw UDP ${UDP_LEN} B received pps / macvlan`, value: rows[1].ratio, bar: null, met: null },
  ];
}

export const transparentScenario: Scenario<TransparentTopology> = {
  name: 'transparent',
  setup: setupTransparent,
  run: runTransparent,
  describe: async (_ctx, t) => ({ topology: t }),
  table: (records) => ownTable('transparent scenario (container to a LAN host through a physical uplink)', COLUMNS, transparentSummary(records)),
  checks: transparentChecks,
};
