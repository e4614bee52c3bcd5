/**
 * overlay: vsw's VXLAN overlay between two hosts against the kernel's own
 * VXLAN on the same underlay, in the same run.
 *
 * Topology (P is the bench's per-run prefix vswtXXXX; the lab takes P + "o"
 * so that its namespaces never match the bench's own P-* names):
 *
 *                       Po-ul: Linux bridge br0, the underlay (MTU 1500)
 *          ____________/     |          |      \____________
 *   Po-h1 192.168.56.11   Po-h2 .12   Po-k1 .101         Po-k2 .102
 *   vsw daemon            vsw daemon  kernel vxlan0      kernel vxlan0
 *   overlay blue,         (same)      VNI 4096, 4789,    (same)
 *   VNI 4096, UDP 4789                nolearning, bridge
 *     |                     |           |                  |
 *   Po-h1-c1 --------->  Po-h2-c1     Po-k1-c1 -------->  Po-k2-c1
 *   (TAP, vsw's MTU)     iperf3 -s    (veth, MTU 1450)    iperf3 -s
 *
 * The vsw side is exactly what `scripts/lab up --hosts 2 --containers 1`
 * builds (scripts/lab-lib.ts labUp): one vsw daemon per host namespace, each
 * encapsulating into UDP on the host's eth0. The kernel side
 * (kernelVxlanUp) hangs two more "hosts" off the same underlay bridge: a
 * vxlan0 with one all-zeros FDB entry for the peer, a Linux bridge, and a
 * veth to the container, MTU underlay - 50. Both paths cross two host
 * namespaces and the underlay bridge; they differ only in who does the
 * switching and the encapsulation.
 *
 * Measured per run, vsw and kernel alternating (which goes first flips from
 * run to run, so a slow drift does not favour one side): iperf3 TCP one
 * stream, TCP four streams (-P 4), and UDP 64-byte datagrams at full rate
 * (received packets per second). The bar: vsw's single TCP stream reaches
 * at least 0.25 of the kernel's (OVERLAY_BAR); the other ratios are reported
 * for reference.
 *
 * There is no wire between namespaces, and neither side has to cut TCP
 * super-frames into MTU-sized packets: the kernel encapsulates a 64 KB TSO
 * frame as one VXLAN GSO packet (its underlay veth sends about 49 KB per
 * packet on average during a TCP run), and vsw cuts it into UDP GSO runs
 * (about 34 KB per datagram on the underlay) that the receiving daemon
 * gets back whole with UDP_GRO. What a real NIC would do with them is not
 * measured. As a reference closer to a wire, each run also measures the
 * single stream with segmentation offload off on both sides' underlay
 * veths (variant "tcp, underlay segments": `ethtool -K eth0
 * tx-udp-segmentation off` on the vsw hosts, `tx-udp_tnl-segmentation off
 * tx-udp_tnl-csum-segmentation off` on the kernel's), so that every
 * datagram crossing the underlay is MTU-sized, as with NICs that cannot
 * segment UDP or VXLAN.
 *
 * Interop, vsw against the kernel itself (the legs of
 * OVERLAY_INTEROP_VARIANTS): one more kernel host, P-k3 (192.168.56.103),
 * with a vxlan0 on the lab's own network (its VNI, a container at the
 * subnet's last address), flooding to lab host h1 alone, which takes it as
 * a peer (`vsw overlay peer add`). TCP one stream each way between that
 * container and h1's, with the underlay veths' offloads as they are and with
 * segmentation off on both (h1's and P-k3's eth0): the kernel's VXLAN GSO
 * packets then arrive at vsw as MTU-sized datagrams, one by one, as from a
 * NIC without GRO. The table sets each leg beside the kernel's own figure
 * for the same variant (kernel to kernel).
 *
 * The CPU time of both lab daemons over each vsw run is
 * recorded (percent of one core, per host and summed): on this two-core
 * machine the iperf3 client and server, the two daemons and the kernel's
 * softirq work share the cores, so CPU, not the wire, is the limit on both
 * sides.
 */
import { BenchError, CpuMeter, Interrupted, alternate, cmd, ifMtu, judge, medianOf, parsePrefix, procStatusKiB, ratio, waitFor, type Check, type CmdOptions } from '../bench-lib.js';
import {
  LAB_DEFAULTS,
  UNDERLAY_BRIDGE,
  VXLAN_OVERHEAD,
  VXLAN_PORT,
  kernelNetns,
  kernelUnderlayIp,
  kernelVxlanUp,
  labDown,
  labUp,
  pingOnce,
  processAlive,
  runIperf,
  underlayNetns,
  vsw,
  type KernelVxlanTopology,
  type LabDescription,
} from '../lab-lib.js';
import type { BenchContext, RunRecord } from './context.js';
import { checkNamespaces } from './measure.js';
import type { Column, ReportRow } from './runner.js';
import { ownTable, type Scenario } from './scenario.js';

/** vsw's single TCP stream must reach at least this fraction of the kernel's. */
export const OVERLAY_BAR = 0.25;
/** Streams of the multi-stream TCP variant. */
export const OVERLAY_STREAMS = 4;
export const OVERLAY_UDP_LEN = 64;
export const OVERLAY_VARIANTS = {
  tcp: 'tcp',
  /** TCP 1 stream with the underlay veths' segmentation offload off (see the header). */
  tcpSegmented: 'tcp, underlay segments',
  tcpMulti: `tcp -P ${OVERLAY_STREAMS}`,
  udp: `udp ${OVERLAY_UDP_LEN} B`,
} as const;
/**
 * The offloads of each side's underlay veths (eth0 in the host namespaces) that let a super-frame
 * cross them unsegmented: vsw sends UDP GSO datagrams, the kernel VXLAN GSO packets.
 */
const UNDERLAY_OFFLOADS = { vsw: ['tx-udp-segmentation'], kernel: ['tx-udp_tnl-segmentation', 'tx-udp_tnl-csum-segmentation'] } as const;
/**
 * Interop legs (see the header): TCP 1 stream between a kernel VXLAN host and a vsw host on the
 * same overlay network, each way, with the underlay's offloads as they are and without segmentation.
 */
export const OVERLAY_INTEROP_VARIANTS = {
  kernelToVsw: 'tcp, kernel -> vsw',
  vswToKernel: 'tcp, vsw -> kernel',
  kernelToVswSegmented: 'tcp, kernel -> vsw, underlay segments',
  vswToKernelSegmented: 'tcp, vsw -> kernel, underlay segments',
} as const;
type Variant = (typeof OVERLAY_VARIANTS)[keyof typeof OVERLAY_VARIANTS] | (typeof OVERLAY_INTEROP_VARIANTS)[keyof typeof OVERLAY_INTEROP_VARIANTS];
/** Which kernel host the interop peer is (P-k3): after the baseline's two. */
const INTEROP_KERNEL_HOST = 3;

/** One direction of traffic: client container to server container. */
export interface OverlayPath {
  side: 'vsw' | 'kernel';
  clientNs: string;
  serverNs: string;
  clientIp: string;
  serverIp: string;
  /** MTU of the client's and the server's interface: the two sides are compared at these. */
  mtu: { client: number | null; server: number | null };
  /** The host namespaces whose eth0 loses its segmentation offloads (these features) for the "underlay segments" variants. */
  underlay: { netns: string; features: readonly string[] }[];
  /** The vsw daemons whose CPU is measured on this path (pids). */
  daemons: number[];
}

/** The kernel VXLAN host on the lab's own network (interop legs). */
export interface InteropPeer {
  netns: string;
  underlayIp: string;
  containerNs: string;
  containerIp: string;
  /** The lab host that takes it as a peer, and whose container it talks to. */
  host: string;
}

export interface OverlayTopology {
  lab: LabDescription;
  kernel: KernelVxlanTopology;
  vsw: OverlayPath;
  kernelPath: OverlayPath;
  interop: InteropPeer;
  /** kernel container -> h1's container, and back. */
  kernelToVsw: OverlayPath;
  vswToKernel: OverlayPath;
  /** The lab daemons, host by host. */
  daemons: { host: string; pid: number }[];
}

export interface OverlayRunRecord extends RunRecord {
  /** TCP streams (-P). */
  streams?: number;
  /** vsw runs: each lab daemon's CPU over the run (h1 sends, h2 receives); daemonCpuPercent is their sum. */
  daemonCpuByHost?: (number | null)[];
}

/**
 * Builds the lab (2 hosts, 1 container each) and the kernel VXLAN beside it;
 * the removal of both is registered before anything is built.
 */
async function setupOverlay(ctx: BenchContext): Promise<OverlayTopology> {
  const labPrefix = `${ctx.prefix}o`;
  ctx.cleanup.add(`remove the overlay lab ${labPrefix}`, async () => {
    await labDown(labPrefix);
  });
  const lab = await labUp({ ...LAB_DEFAULTS, prefix: labPrefix, hosts: 2, containers: 1, logLevel: 'warn' }, (line) => console.error(`bench: overlay: ${line}`));
  const kernel = await kernelVxlanUp(lab, { hosts: 2 });
  const interop = await interopPeerUp(lab);
  const [a, b] = [lab.hosts[0].containers[0], lab.hosts[1].containers[0]];
  const [ka, kb] = kernel.hosts;
  const daemons = lab.hosts.map((x) => ({ host: x.name, pid: x.pid! }));
  const vswUnderlay = lab.hosts.map((x) => ({ netns: x.netns, features: UNDERLAY_OFFLOADS.vsw }));
  const interopUnderlay = [
    { netns: lab.hosts[0].netns, features: UNDERLAY_OFFLOADS.vsw },
    { netns: interop.netns, features: UNDERLAY_OFFLOADS.kernel },
  ];
  const kernelMtu = await ifMtu(interop.containerNs, 'eth0');
  return {
    lab,
    kernel,
    vsw: { side: 'vsw', clientNs: a.netns, serverNs: b.netns, clientIp: a.ip, serverIp: b.ip, mtu: { client: a.mtu, server: b.mtu }, underlay: vswUnderlay, daemons: daemons.map((d) => d.pid) },
    kernelPath: {
      side: 'kernel',
      clientNs: ka.containerNs,
      serverNs: kb.containerNs,
      clientIp: ka.containerIp,
      serverIp: kb.containerIp,
      mtu: { client: ka.mtu, server: kb.mtu },
      underlay: kernel.hosts.map((k) => ({ netns: k.netns, features: UNDERLAY_OFFLOADS.kernel })),
      daemons: [],
    },
    interop,
    kernelToVsw: { side: 'vsw', clientNs: interop.containerNs, serverNs: a.netns, clientIp: interop.containerIp, serverIp: a.ip, mtu: { client: kernelMtu, server: a.mtu }, underlay: interopUnderlay, daemons: [daemons[0].pid] },
    vswToKernel: { side: 'vsw', clientNs: a.netns, serverNs: interop.containerNs, clientIp: a.ip, serverIp: interop.containerIp, mtu: { client: a.mtu, server: kernelMtu }, underlay: interopUnderlay, daemons: [daemons[0].pid] },
    daemons,
  };
}

/**
 * The interop peer (see the header): namespace P-k3 on the lab's underlay with a kernel vxlan0 on
 * the lab network's VNI, flooding to lab host h1 only, bridged to a container at the subnet's last
 * address (each lab host hands out its share from the start, so with a few containers per host
 * that address is free); h1 takes P-k3 as a peer. labDown removes it with the rest (P-*).
 */
async function interopPeerUp(lab: LabDescription): Promise<InteropPeer> {
  const h1 = lab.hosts[0];
  const vni = lab.network.vni;
  const subnet = parsePrefix(lab.network.subnet);
  if (vni === null || !subnet) throw new BenchError(`the overlay scenario needs the lab's overlay network, not a ${lab.network.driver} network.`);
  const last = (subnet.base + 2 ** (32 - subnet.len) - 2) >>> 0;
  const netns = kernelNetns(lab.prefix, INTEROP_KERNEL_HOST);
  const peer: InteropPeer = {
    netns,
    underlayIp: kernelUnderlayIp(INTEROP_KERNEL_HOST),
    containerNs: `${netns}-c1`,
    containerIp: [last >>> 24, (last >>> 16) & 255, (last >>> 8) & 255, last & 255].join('.'),
    host: h1.name,
  };
  const mtu = lab.underlay.mtu;
  const inner = String(mtu - VXLAN_OVERHEAD);
  const port = `k${INTEROP_KERNEL_HOST}`;
  const ul = underlayNetns(lab.prefix);
  const run = (file: string, args: string[]) => cmd(file, args);
  await run('ip', ['netns', 'add', netns]);
  await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', ul, 'link', 'add', port, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', netns]);
  await run('ip', ['-n', ul, 'link', 'set', port, 'master', UNDERLAY_BRIDGE, 'up']);
  await run('ip', ['-n', netns, 'addr', 'add', `${peer.underlayIp}/24`, 'dev', 'eth0']);
  await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', netns, 'link', 'add', 'vxlan0', 'mtu', inner, 'type', 'vxlan', 'id', String(vni), 'dstport', String(VXLAN_PORT), 'local', peer.underlayIp, 'dev', 'eth0', 'nolearning']);
  await run('bridge', ['-n', netns, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxlan0', 'dst', h1.underlayIp]);
  await run('ip', ['-n', netns, 'link', 'add', 'br0', 'type', 'bridge']);
  await run('ip', ['-n', netns, 'link', 'set', 'vxlan0', 'master', 'br0', 'up']);
  await run('ip', ['netns', 'add', peer.containerNs]);
  await run('ip', ['-n', peer.containerNs, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', netns, 'link', 'add', 'veth0', 'mtu', inner, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', inner, 'netns', peer.containerNs]);
  await run('ip', ['-n', netns, 'link', 'set', 'veth0', 'master', 'br0', 'up']);
  await run('ip', ['-n', netns, 'link', 'set', 'br0', 'up']);
  await run('ip', ['-n', peer.containerNs, 'addr', 'add', `${peer.containerIp}/${subnet.len}`, 'dev', 'eth0']);
  await run('ip', ['-n', peer.containerNs, 'link', 'set', 'eth0', 'up']);
  await vsw(h1, ['overlay', 'peer', 'add', lab.network.name, peer.underlayIp]);
  return peer;
}

/** A few pings until the path answers: ARP resolved (or suppressed), MACs and VTEPs learned. */
async function waitPath(p: OverlayPath): Promise<void> {
  await waitFor(`a ping from ${p.clientNs} to ${p.serverIp} (${p.side} VXLAN)`, 20_000, async () => ((await pingOnce(p.clientNs, p.serverIp, 1)) !== null ? true : undefined), 200);
}

/** Stops the scenario when its topology is gone: every later run would fail too. */
function checkLabIntact(t: OverlayTopology): void {
  for (const d of t.daemons) {
    if (!processAlive(d.pid)) throw new BenchError(`the vsw daemon of lab host ${d.host} (pid ${d.pid}) exited during the overlay runs; its log: ${t.lab.hosts.find((x) => x.name === d.host)?.log}.`);
  }
  checkNamespaces([t.vsw, t.kernelPath, t.kernelToVsw]);
}

function fmtRate(r: OverlayRunRecord): string {
  if (r.tcp) return `${(r.tcp.bitsPerSecond / 1e9).toFixed(2)} Gbit/s, ${r.tcp.retransmits ?? '?'} retransmits`;
  if (r.udp) return `${(r.udp.packetsPerSecond / 1e3).toFixed(0)} kpps received, ${(r.udp.sentPacketsPerSecond / 1e3).toFixed(0)} kpps sent, ${r.udp.lostPercent.toFixed(1)}% lost`;
  return `failed: ${r.error}`;
}

/** Turns the segmentation offloads of a path's underlay veths off or on. */
async function underlayOffloads(p: OverlayPath, on: boolean, opts: CmdOptions = {}): Promise<void> {
  for (const u of p.underlay) {
    await cmd('ip', ['netns', 'exec', u.netns, 'ethtool', '-K', 'eth0', ...u.features.flatMap((f) => [f, on ? 'on' : 'off'])], opts);
  }
}

async function measureOverlay(ctx: BenchContext, t: OverlayTopology, p: OverlayPath, variant: Variant, run: number): Promise<OverlayRunRecord> {
  const udp = variant === OVERLAY_VARIANTS.udp;
  const segmented = variant.endsWith('underlay segments');
  const streams = variant === OVERLAY_VARIANTS.tcpMulti ? OVERLAY_STREAMS : 1;
  const rec: OverlayRunRecord = { test: 'overlay', side: p.side, variant, run, ok: false, ...(udp ? {} : { streams }) };
  const meters = p.daemons.map((pid) => new CpuMeter(pid, ctx.clkTck));
  try {
    if (segmented) await underlayOffloads(p, false);
    const out = await runIperf({
      clientNs: p.clientNs,
      serverNs: p.serverNs,
      serverIp: p.serverIp,
      seconds: ctx.opts.time,
      parallel: streams,
      udp,
      len: OVERLAY_UDP_LEN,
      during: async () => {
        for (const m of meters) await m.begin();
      },
    });
    if (meters.length) {
      rec.daemonCpuByHost = [];
      for (const m of meters) rec.daemonCpuByHost.push(await m.end());
      const known = rec.daemonCpuByHost.filter((v): v is number => v !== null);
      rec.daemonCpuPercent = known.length === meters.length ? known.reduce((x, y) => x + y, 0) : null;
    }
    rec.tcp = out.tcp;
    rec.udp = out.udp;
    rec.ok = true;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
  } finally {
    if (segmented) await underlayOffloads(p, true, { cleanup: true, allowFail: true });
  }
  const cpu = rec.daemonCpuByHost ? `, daemons CPU ${rec.daemonCpuByHost.map((c) => (c === null ? '?' : `${c.toFixed(0)}%`)).join(' + ')}` : '';
  console.error(`bench: overlay run ${run} ${p.side} ${variant}: ${fmtRate(rec)}${cpu}`);
  if (!rec.ok) checkLabIntact(t);
  return rec;
}

/** Per run: TCP 1 stream, TCP -P 4, UDP 64 B; each on both sides, alternating which goes first. */
async function runOverlay(ctx: BenchContext, t: OverlayTopology): Promise<OverlayRunRecord[]> {
  await waitPath(t.vsw);
  await waitPath(t.kernelPath);
  const m = (x: { client: number | null; server: number | null }): string => `mtu ${x.client ?? '?'}/${x.server ?? '?'}`;
  console.error(
    `bench: overlay: vsw ${t.vsw.clientIp} -> ${t.vsw.serverIp} (${m(t.vsw.mtu)}), kernel ${t.kernelPath.clientIp} -> ${t.kernelPath.serverIp} (${m(t.kernelPath.mtu)}), ` +
      `VNI ${t.lab.network.vni}, underlay MTU ${t.lab.underlay.mtu}`,
  );
  await waitPath(t.kernelToVsw);
  console.error(`bench: overlay: interop ${t.kernelToVsw.clientIp} (kernel VXLAN on ${t.interop.netns}) <-> ${t.kernelToVsw.serverIp} (vsw ${t.interop.host})`);
  const interop: [OverlayPath, Variant][] = [
    [t.kernelToVsw, OVERLAY_INTEROP_VARIANTS.kernelToVsw],
    [t.vswToKernel, OVERLAY_INTEROP_VARIANTS.vswToKernel],
    [t.kernelToVsw, OVERLAY_INTEROP_VARIANTS.kernelToVswSegmented],
    [t.vswToKernel, OVERLAY_INTEROP_VARIANTS.vswToKernelSegmented],
  ];
  const out: OverlayRunRecord[] = [];
  for (let run = 1; run <= ctx.opts.runs; run++) {
    const order = alternate(run, [t.vsw, t.kernelPath]);
    for (const variant of Object.values(OVERLAY_VARIANTS)) {
      for (const p of order) out.push(await measureOverlay(ctx, t, p, variant, run));
    }
    for (const [p, variant] of alternate(run, interop)) out.push(await measureOverlay(ctx, t, p, variant, run));
  }
  return out;
}

/** The lab daemons' resident memory now, host by host, in KiB. */
async function overlayDaemonRss(t: OverlayTopology): Promise<Record<string, number | null>> {
  const out: Record<string, number | null> = {};
  for (const d of t.daemons) out[d.host] = await procStatusKiB(d.pid, 'VmRSS');
  return out;
}

// ---------------------------------------------------------------- summary

export interface OverlaySummaryRow extends ReportRow {
  vsw: number | null;
  kernel: number | null;
  /** vsw / kernel, for rates. */
  ratio: number | null;
}

const OVERLAY_COLUMNS: readonly Column<OverlaySummaryRow>[] = [
  { header: 'vsw VXLAN', value: (r) => r.vsw },
  { header: 'kernel VXLAN', value: (r) => r.kernel },
  { header: 'vsw/kernel', value: (r) => r.ratio, digits: 2 },
];

const isOverlay = (r: RunRecord): r is OverlayRunRecord => r.test === 'overlay';

export function overlaySummary(records: readonly RunRecord[]): OverlaySummaryRow[] {
  const recs = records.filter(isOverlay);
  if (recs.length === 0) return [];
  const pick = (variant: string, side: 'vsw' | 'kernel', f: (r: OverlayRunRecord) => number | null | undefined): number | null => medianOf(recs, { variant, side }, f);
  const rows: OverlaySummaryRow[] = [];
  const row = (scenario: string, unit: string, variant: string, f: (r: OverlayRunRecord) => number | null | undefined, digits: number, withRatio: boolean): void => {
    const v = pick(variant, 'vsw', f);
    const k = pick(variant, 'kernel', f);
    rows.push({ scenario, unit, vsw: v, kernel: k, ratio: withRatio ? ratio(v, k) : null, digits });
  };
  const vswOnly = (scenario: string, unit: string, variant: string, f: (r: OverlayRunRecord) => number | null | undefined, digits: number): void => {
    rows.push({ scenario, unit, vsw: pick(variant, 'vsw', f), kernel: null, ratio: null, digits });
  };
  const V = OVERLAY_VARIANTS;
  const gbps = (r: OverlayRunRecord): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);
  row('TCP 1 stream', 'Gbit/s', V.tcp, gbps, 2, true);
  row('TCP 1 stream retransmits', 'per run', V.tcp, (r) => r.tcp?.retransmits, 0, false);
  row('TCP 1 stream, MTU-sized on the underlay', 'Gbit/s', V.tcpSegmented, gbps, 2, true);
  row('TCP 1 stream, MTU-sized on the underlay, retransmits', 'per run', V.tcpSegmented, (r) => r.tcp?.retransmits, 0, false);
  row(`TCP ${OVERLAY_STREAMS} streams`, 'Gbit/s', V.tcpMulti, gbps, 2, true);
  row(`TCP ${OVERLAY_STREAMS} streams retransmits`, 'per run', V.tcpMulti, (r) => r.tcp?.retransmits, 0, false);
  row(`UDP ${OVERLAY_UDP_LEN} B received`, 'kpps', V.udp, (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), 0, true);
  row(`UDP ${OVERLAY_UDP_LEN} B sent`, 'kpps', V.udp, (r) => (r.udp ? r.udp.sentPacketsPerSecond / 1e3 : null), 0, true);
  row(`UDP ${OVERLAY_UDP_LEN} B lost`, '%', V.udp, (r) => r.udp?.lostPercent, 1, false);
  // Interop: each leg in the vsw column, the kernel's own figure for the same variant (kernel to kernel) beside it.
  const I = OVERLAY_INTEROP_VARIANTS;
  const interopRow = (scenario: string, variant: string, kernelVariant: string): void => {
    const v = pick(variant, 'vsw', gbps);
    const k = pick(kernelVariant, 'kernel', gbps);
    rows.push({ scenario, unit: 'Gbit/s', vsw: v, kernel: k, ratio: ratio(v, k), digits: 2 });
    rows.push({ scenario: `${scenario}, retransmits`, unit: 'per run', vsw: pick(variant, 'vsw', (r) => r.tcp?.retransmits), kernel: null, ratio: null, digits: 0 });
  };
  interopRow('TCP 1 stream, kernel VXLAN -> vsw', I.kernelToVsw, V.tcp);
  interopRow('TCP 1 stream, vsw -> kernel VXLAN', I.vswToKernel, V.tcp);
  interopRow('TCP 1 stream, MTU-sized, kernel VXLAN -> vsw', I.kernelToVswSegmented, V.tcpSegmented);
  interopRow('TCP 1 stream, MTU-sized, vsw -> kernel VXLAN', I.vswToKernelSegmented, V.tcpSegmented);
  vswOnly('daemons CPU during TCP 1 stream, h1 + h2', '% of a core', V.tcp, (r) => r.daemonCpuPercent, 0);
  vswOnly("  sender's daemon (h1)", '% of a core', V.tcp, (r) => r.daemonCpuByHost?.[0], 0);
  vswOnly("  receiver's daemon (h2)", '% of a core', V.tcp, (r) => r.daemonCpuByHost?.[1], 0);
  vswOnly('daemons CPU during TCP 1 stream, MTU-sized, h1 + h2', '% of a core', V.tcpSegmented, (r) => r.daemonCpuPercent, 0);
  vswOnly(`daemons CPU during TCP ${OVERLAY_STREAMS} streams, h1 + h2`, '% of a core', V.tcpMulti, (r) => r.daemonCpuPercent, 0);
  vswOnly(`daemons CPU during UDP ${OVERLAY_UDP_LEN} B, h1 + h2`, '% of a core', V.udp, (r) => r.daemonCpuPercent, 0);
  vswOnly("h1's daemon CPU, kernel VXLAN -> vsw", '% of a core', I.kernelToVsw, (r) => r.daemonCpuPercent, 0);
  vswOnly("h1's daemon CPU, MTU-sized, kernel VXLAN -> vsw", '% of a core', I.kernelToVswSegmented, (r) => r.daemonCpuPercent, 0);
  return rows;
}

/** The bar (TCP 1 stream, vsw / kernel >= 0.25) and the other ratios for reference. */
export function overlayChecks(records: readonly RunRecord[]): Check[] {
  const rows = overlaySummary(records);
  if (rows.length === 0) return [];
  const get = (scenario: string): OverlaySummaryRow | undefined => rows.find((r) => r.scenario === scenario);
  return [
    judge('overlay: vsw VXLAN TCP 1 stream / kernel VXLAN', get('TCP 1 stream')?.ratio ?? null, `>= ${OVERLAY_BAR}`, (v) => v >= OVERLAY_BAR),
    { what: 'overlay: the same, MTU-sized datagrams on the underlay (no GSO)', value: get('TCP 1 stream, MTU-sized on the underlay')?.ratio ?? null, bar: null, met: null },
    { what: `overlay: vsw VXLAN TCP ${OVERLAY_STREAMS} streams / kernel VXLAN`, value: get(`TCP ${OVERLAY_STREAMS} streams`)?.ratio ?? null, bar: null, met: null },
    { what: `overlay: vsw VXLAN UDP ${OVERLAY_UDP_LEN} B received pps / kernel VXLAN`, value: get(`UDP ${OVERLAY_UDP_LEN} B received`)?.ratio ?? null, bar: null, met: null },
    { what: 'overlay: interop TCP 1 stream, kernel VXLAN -> vsw / kernel -> kernel', value: get('TCP 1 stream, kernel VXLAN -> vsw')?.ratio ?? null, bar: null, met: null },
    { what: 'overlay: interop TCP 1 stream, vsw -> kernel VXLAN / kernel -> kernel', value: get('TCP 1 stream, vsw -> kernel VXLAN')?.ratio ?? null, bar: null, met: null },
  ];
}

/** The topology as the JSON result records it. */
function overlayTopologyJson(t: OverlayTopology): Record<string, unknown> {
  return {
    labPrefix: t.lab.prefix,
    underlay: t.lab.underlay,
    network: t.lab.network,
    vsw: t.vsw,
    kernel: { ...t.kernelPath, vni: t.kernel.vni, subnet: t.kernel.subnet, hosts: t.kernel.hosts },
    interop: { peer: t.interop, kernelToVsw: t.kernelToVsw, vswToKernel: t.vswToKernel },
    daemons: t.daemons,
  };
}

export const overlayScenario: Scenario<OverlayTopology> = {
  name: 'overlay',
  tools: [
    ['bridge', 'iproute2'],
    ['ethtool', 'ethtool'],
  ],
  // Lab daemons of its own (scripts/lab-lib.ts), beside the bench's.
  setup: setupOverlay,
  run: runOverlay,
  describe: async (_ctx, t) => ({ topology: overlayTopologyJson(t), details: { daemonRssAfterKiB: await overlayDaemonRss(t) } }),
  table: (records) => ownTable('overlay scenario', OVERLAY_COLUMNS, overlaySummary(records)),
  checks: overlayChecks,
};
