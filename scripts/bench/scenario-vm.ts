/**
 * vm: a QEMU guest's NIC through vsw's vhost-user port, against QEMU's own
 * `-netdev tap` on a Linux bridge, in the same run, with the same guest
 * (scripts/vm/guest.ts: Debian's kernel, the busybox + iperf3 initramfs, one
 * vCPU, 256 MB) and the same QEMU options and accelerator on both sides.
 *
 * Topology (P is the bench's per-run prefix, vswtXXXX):
 *
 *   vsw side                                   tap side (the baseline)
 *
 *   guest P-vmvN (run N)                       guest P-vmqN
 *     eth0 (virtio-net) 10.X.0.a                 eth0 (virtio-net) 10.Y.0.5
 *       |                                          |
 *   vhost-user socket /tmp/P/vm.sock           QEMU -netdev tap,vhost=off
 *       |  (vsw serves it: endpoint P-vm)          |  (QEMU runs in P-vmb)
 *   vsw internal network P-vmn                 P-vmb: TAP P-vmt in bridge br0,
 *       |                                          veth v0 in br0
 *   TAP endpoint in P-vmc                          |
 *     10.X.0.b: iperf3 -s                      P-vms: eth0 10.Y.0.2: iperf3 -s
 *
 * Per run (--runs), the two sides one after the other, never at once (a
 * guest under TCG takes a whole core), which one goes first alternating from
 * run to run: boot the side's guest, then three legs of --time seconds with
 * iperf3 in the guest as the client: TCP one stream guest -> container,
 * 64-byte UDP datagrams guest -> container at full rate (-b 0), and TCP one
 * stream container -> guest (-R); then stop the guest. A fresh guest per run
 * and side: each boot is a new connection for vsw's endpoint (it waits for
 * its next VMM on the same socket) and a fresh start for the TAP side.
 *
 * A guest that lost its path (vsw stopped its queues for a ring rule, or its
 * frames stopped moving) has no network until its next boot: the legs after
 * a failed one first check vsw's endpoint and a ping and fail at once, with
 * the reason, instead of timing out. The first failed leg of a vsw guest
 * records a diagnosis: the guest's eth0 counters and vsw's port counters and
 * device state, twice 2 s apart, a ping, and the guest's dmesg.
 *
 * Besides iperf3's numbers, each leg records QEMU's CPU, its main loop's
 * thread (the TAP's reads and writes, the vhost-user socket, interrupt
 * injection) apart from the rest (the vCPU); vsw's daemon CPU on the vsw
 * side; and the frames dropped on their way into the guest: vsw's counters
 * of frames the guest had no receive buffer for (rxNoBuffer, rxUnfit), and
 * the TAP's tx drops (its queue overflowing while QEMU did not read).
 *
 * Under TCG (these machines: a nested KVM guest hangs, see guest.ts) both
 * sides are bound by the guest's emulation, so the ratio compares the two
 * switch paths under that bound, not their raw speed; the vCPU rows show how
 * close to a full core the guest ran. The table says which accelerator ran.
 *
 * Everything is named with P and removed after, also on failure and
 * interrupt: the guests (QEMU also dies with the bench: guest.ts's pdeathsig),
 * the endpoints and the network, the namespaces (the TAP, bridge and veth go
 * with them), the guests' logs in /tmp/vsw-vm (kept when a leg failed, with
 * a copy of the daemon's log, and named then).
 */
import type { ChildProcess } from 'node:child_process';
import { copyFile, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

import {
  BenchError,
  CpuMeter,
  Interrupted,
  alternate,
  exited,
  ifMtu,
  interrupt,
  medianOf,
  parseIperfJson,
  ratio,
  sleep,
  start,
  stop,
  tcpResult,
  udpResult,
  waitFor,
  type Check,
} from '../bench-lib.js';
import { IPERF_PORT } from '../lab-lib.js';
import { VM_DIR, buildInitramfs, detectAccel, kernelVersion, qemuAvailable, startGuest, type Accel, type Guest, type GuestOptions } from '../vm/guest.js';
import { netnsAdd, pickSubnet, sh, type BenchContext, type RunRecord } from './context.js';
import { fmtBps } from './measure.js';
import type { Column, ReportRow } from './runner.js';
import { ownTable, type Scenario, type ScenarioTable } from './scenario.js';

const UDP_LEN = 64;
export const VM_VARIANTS = { tcp: 'tcp', tcpReverse: 'tcp -R', udp: `udp ${UDP_LEN} B` } as const;
type VmVariant = (typeof VM_VARIANTS)[keyof typeof VM_VARIANTS];
/** The legs of a guest, in the order they run. */
const LEGS: readonly VmVariant[] = [VM_VARIANTS.tcp, VM_VARIANTS.udp, VM_VARIANTS.tcpReverse];

/** Both guests' NIC: one MAC, each in its own L2 domain. */
const GUEST_MAC = '52:54:00:76:5e:01';
const GUEST_MEM_MB = 256;
/** iperf3's own start and its result exchange run in the emulated guest too: seconds beyond --time a leg may take. */
const LEG_SLACK_S = 60;
/** iperf3 --connect-timeout in the guest. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Where the guest's iperf3 writes its JSON, read back with cat (the console may carry other lines). */
const GUEST_JSON = '/tmp/vsw-iperf.json';
const GUEST_ERR = '/tmp/vsw-iperf.err';

export type VmSide = 'vsw' | 'tap';

/** What the table and the checks say about the accelerator. */
export const TCG_NOTE = "under TCG both sides are bound by the guest's emulation: the ratio compares the switch paths under that bound, not their raw speed";

export interface VmRunRecord extends RunRecord {
  test: 'vm';
  side: VmSide;
  accel: Accel;
  /** QEMU's CPU over the leg (all its threads), percent of one core. */
  qemuCpuPercent?: number | null;
  /**
   * The same split: its main loop (the thread whose id is QEMU's pid: the TAP's reads and writes, the
   * vhost-user chardev, interrupt injection) and every other thread (the vCPU; call_rcu idles).
   */
  qemuMainCpuPercent?: number | null;
  qemuVcpuCpuPercent?: number | null;
  /** iperf3's own CPU measure (end.cpu_utilization_percent.host_total / remote_total): the client in the guest, the server in the namespace. */
  iperfCpuPercent?: { guest: number | null; server: number | null };
  /** Frames on their way into the guest dropped over the leg: vsw's rxNoBuffer + rxUnfit, or the TAP's tx drops. */
  toGuestDrops?: number | null;
  /** vsw side: the leg failed with the endpoint's queues stopped (the guest broke a ring rule, as vsw saw it). */
  endpointBroken?: boolean;
  /** vsw side, the first failed leg of a guest: what both ends counted then and 2 s later (see diagnose). */
  diagnosis?: Diagnosis;
  /** Milliseconds from spawning QEMU to the guest's shell, for the guest this leg ran in (vsw: the vhost-user handshake included). */
  bootMs?: number;
}

interface GuestPath {
  side: VmSide;
  /** Where the iperf3 server runs, and its address. */
  serverNs: string;
  serverIp: string;
  guestIp: string;
  /** The guest, as startGuest takes it. */
  guest: GuestOptions;
}

export interface VmTopology {
  accel: Accel;
  guestKernel: string;
  initramfs: string;
  guest: { memMb: number; cpus: number; mac: string };
  vsw: {
    network: string;
    subnet: string;
    containerNs: string;
    containerIp: string;
    endpoint: string;
    socket: string;
    guestIp: string;
    /** The guests' names (and logs) are this with the run's number. */
    guestName: string;
    mtu: { container: number | null };
  };
  tap: {
    bridgeNs: string;
    tap: string;
    serverNs: string;
    subnet: string;
    serverIp: string;
    guestIp: string;
    guestName: string;
    mtu: { tap: number | null; server: number | null };
  };
}

/** What the runs change and the cleanup reads: made before anything exists. */
interface VmLive {
  /** The guest running (or booting) now, if any: the cleanup stops it. */
  guest: Promise<Guest> | null;
  /** A leg failed: the guests' logs are kept. */
  keepLogs: boolean;
}

interface VmState {
  topology: VmTopology;
  paths: Record<VmSide, GuestPath>;
  live: VmLive;
  boots: { side: VmSide; run: number; bootMs: number | null; error?: string }[];
  /** The runs whose vsw guest got its diagnosis (after its first failed leg). */
  diagnosed: Set<number>;
  /** SIDE/RUN of the guests that had a leg fail: the next legs check the path first. */
  lostPath: Set<string>;
}

// ---------------------------------------------------------------- topology

async function setupVm(ctx: BenchContext): Promise<VmState> {
  const p = ctx.prefix;
  const { cleanup, daemon } = ctx;
  const missing = await qemuAvailable();
  if (missing) throw new BenchError(`the vm scenario cannot start a guest here: ${missing}`);
  const [accel, initramfs] = await Promise.all([detectAccel(), buildInitramfs()]);

  const live: VmLive = { guest: null, keepLogs: false };
  // Each run's guests are named apart (P-vmv1, P-vmq1 ...), so that each has its own log.
  const guestNames = { vsw: `${p}-vmv`, tap: `${p}-vmq` };
  // The guests' logs (guest.ts writes them to /tmp/vsw-vm/NAME.log); kept for a failed leg.
  cleanup.add("remove the vm guests' logs", async () => {
    const logs = (await readdir(VM_DIR).catch(() => [] as string[])).filter((f) => f.startsWith(`${p}-vm`) && f.endsWith('.log'));
    if (live.keepLogs) {
      // The daemon's log goes with the bench's work directory: a copy beside the guests'.
      const daemonLog = join(VM_DIR, `${p}-daemon.log`);
      await copyFile(daemon.logPath, daemonLog).catch(() => undefined);
      console.error(`bench: vm: a leg failed; the guests' serial consoles are in ${VM_DIR}/${p}-vm*.log, the daemon's log in ${daemonLog}`);
      return;
    }
    for (const f of logs) await rm(join(VM_DIR, f), { force: true });
  });

  // ---- vsw: an internal network with a container (TAP) and the VM endpoint
  const taken = [...ctx.taken];
  const vsub = await pickSubnet(taken, 'the vm scenario');
  taken.push(vsub.prefix);
  ctx.taken.push(vsub.prefix);
  const network = `${p}-vmn`;
  cleanup.add(`remove vsw network ${network}`, async () => {
    if (daemon.alive()) await daemon.cli(['network', 'rm', network], { cleanup: true, allowFail: true });
  });
  await daemon.cli(['network', 'create', '-d', 'internal', '--subnet', vsub.cidr, network]);
  const containerNs = `${p}-vmc`;
  await netnsAdd(cleanup, containerNs);
  const container = await daemon.addEndpoint(network, containerNs);
  const endpoint = `${p}-vm`;
  const socket = `${ctx.workDir}/vm.sock`;
  cleanup.add(`remove the vsw VM endpoint ${endpoint}`, async () => {
    if (daemon.alive()) await daemon.cli(['endpoint', 'rm', endpoint], { cleanup: true, allowFail: true });
  });
  await daemon.cli(['endpoint', 'create', '--network', network, '--vhost-user', socket, '--mac', GUEST_MAC, '--name', endpoint]);
  const vmEp = await inspectEndpoint(ctx, endpoint);
  const guestIp = vmEp.ip.split('/')[0];
  if (!guestIp || guestIp === '0.0.0.0') throw new BenchError(`vsw endpoint inspect ${endpoint} shows no address: ${JSON.stringify(vmEp).slice(0, 200)}`);

  // ---- tap: a namespace with a bridge, QEMU's persistent TAP and a veth to the server's namespace
  const tsub = await pickSubnet(taken, 'the vm scenario');
  ctx.taken.push(tsub.prefix);
  const bridgeNs = `${p}-vmb`;
  const serverNs = `${p}-vms`;
  const tap = `${p}-vmt`;
  const tapServerIp = `10.${tsub.x}.0.2`;
  const tapGuestIp = `10.${tsub.x}.0.5`;
  // Deleting the namespaces takes the bridge, the TAP and the veth with them.
  await netnsAdd(cleanup, bridgeNs);
  await netnsAdd(cleanup, serverNs);
  await sh('ip', ['-n', bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
  await sh('ip', ['-n', bridgeNs, 'link', 'set', 'br0', 'up']);
  // Persistent, in the bridge and up before QEMU attaches to it (as in test/integration/vm-guest.test.ts).
  await sh('ip', ['-n', bridgeNs, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  await sh('ip', ['-n', bridgeNs, 'link', 'set', tap, 'master', 'br0', 'up']);
  await sh('ip', ['-n', bridgeNs, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', serverNs]);
  await sh('ip', ['-n', bridgeNs, 'link', 'set', 'v0', 'master', 'br0', 'up']);
  await sh('ip', ['-n', serverNs, 'addr', 'add', `${tapServerIp}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', serverNs, 'link', 'set', 'eth0', 'up']);

  // Stopped first of all (registered last): a guest still booting when an interrupt came is awaited, then stopped.
  cleanup.add("stop the vm scenario's guest", () => stopCurrentGuest(live));

  const common = { mac: GUEST_MAC, memMb: GUEST_MEM_MB, cpus: 1 };
  const paths: Record<VmSide, GuestPath> = {
    vsw: {
      side: 'vsw',
      serverNs: containerNs,
      serverIp: container.ip,
      guestIp,
      guest: { ...common, name: guestNames.vsw, netdev: { kind: 'vhost-user', socket, reconnectSeconds: 1 }, ip: `${guestIp}/${vsub.cidr.split('/')[1]}` },
    },
    tap: {
      side: 'tap',
      serverNs,
      serverIp: tapServerIp,
      guestIp: tapGuestIp,
      guest: { ...common, name: guestNames.tap, netdev: { kind: 'tap', ifname: tap, netns: bridgeNs }, ip: `${tapGuestIp}/24` },
    },
  };
  const topology: VmTopology = {
    accel,
    guestKernel: kernelVersion(),
    initramfs,
    guest: { memMb: GUEST_MEM_MB, cpus: 1, mac: GUEST_MAC },
    vsw: { network, subnet: vsub.cidr, containerNs, containerIp: container.ip, endpoint, socket, guestIp, guestName: guestNames.vsw, mtu: { container: await ifMtu(containerNs, container.ifname) } },
    tap: {
      bridgeNs,
      tap,
      serverNs,
      subnet: tsub.cidr,
      serverIp: tapServerIp,
      guestIp: tapGuestIp,
      guestName: guestNames.tap,
      mtu: { tap: await ifMtu(bridgeNs, tap), server: await ifMtu(serverNs, 'eth0') },
    },
  };
  console.error(
    `bench: vm: guests under ${accel}; vsw: guest ${guestIp} -> container ${container.ip} through ${socket} on ${network}; ` +
      `tap: guest ${tapGuestIp} -> ${tapServerIp} through ${tap} on a bridge in ${bridgeNs}`,
  );
  return { topology, paths, live, boots: [], diagnosed: new Set(), lostPath: new Set() };
}

interface EndpointView {
  ip: string;
  state?: string;
  stateReason?: string;
  vhost?: { state: string; connections: number; rxNoBuffer: number; rxUnfit: number; features?: string };
}

async function inspectEndpoint(ctx: BenchContext, name: string): Promise<EndpointView> {
  const r = await ctx.daemon.cli(['endpoint', 'inspect', name]);
  return JSON.parse(r.stdout) as EndpointView;
}

// ---------------------------------------------------------------- a guest's legs

/** Rejects with Interrupted as soon as the bench is interrupted (the cleanup then stops the guest under p). */
function interruptible<T>(p: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (interrupt.signal.aborted) return reject(new Interrupted());
    const onAbort = (): void => reject(new Interrupted());
    interrupt.signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => interrupt.signal.removeEventListener('abort', onAbort));
  });
}

/**
 * The JSON document in what `cat` printed on the guest's console: from the
 * first line that opens an object to the last line that closes one, so that
 * a line the console adds before or after (a kernel message) is left out.
 */
export function extractJson(text: string): string {
  const lines = text.replace(/\r/g, '').split('\n');
  const first = lines.findIndex((l) => l.startsWith('{'));
  let last = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (lines[i].startsWith('}')) {
      last = i;
      break;
    }
  }
  if (first < 0 || last < first) throw new BenchError(`the guest's iperf3 printed no JSON${text.trim() ? `: ${text.trim().slice(0, 200)}` : ''}.`);
  return lines.slice(first, last + 1).join('\n');
}

/** An iperf3 server for one test (-1) in ns on ip; resolves once it listens. */
async function iperfServer(ns: string, ip: string): Promise<{ child: ChildProcess; output: () => string }> {
  const child = start('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-1', '-B', ip, '-p', String(IPERF_PORT)], 'pipe');
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  // The listening socket, not the "listening" line: iperf3 block-buffers stdout into a pipe.
  await waitFor(`the iperf3 server in ${ns} listening`, 10_000, async () => {
    if (child.exitCode !== null) throw new BenchError(`the iperf3 server in ${ns} exited: ${out.trim()}`);
    const r = await sh('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${IPERF_PORT}`], { allowFail: true });
    return r.stdout.trim() ? true : undefined;
  }, 50);
  return { child, output: () => out };
}

/** utime + stime of one thread of pid (its /proc/PID/task/TID/stat), in clock ticks; null if it is gone. */
async function threadTicks(pid: number, tid: number): Promise<number | null> {
  try {
    const text = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    return Number.isFinite(ticks) ? ticks : null;
  } catch {
    return null;
  }
}

/** QEMU's CPU over an interval: all its threads (CpuMeter), and its main loop's thread apart. */
class QemuMeter {
  private readonly all: CpuMeter;
  private main0: number | null = null;
  private t0 = 0;
  constructor(
    private readonly pid: number,
    private readonly clkTck: number,
  ) {
    this.all = new CpuMeter(pid, clkTck);
  }
  async begin(): Promise<void> {
    await this.all.begin();
    this.main0 = await threadTicks(this.pid, this.pid);
    this.t0 = performance.now();
  }
  /** Percent of one core: all threads, the main loop, the rest (the vCPU). */
  async end(): Promise<{ all: number | null; main: number | null; vcpu: number | null }> {
    const all = await this.all.end();
    const main1 = await threadTicks(this.pid, this.pid);
    const seconds = (performance.now() - this.t0) / 1000;
    const main = this.main0 === null || main1 === null || seconds <= 0 ? null : ((main1 - this.main0) / this.clkTck / seconds) * 100;
    return { all, main, vcpu: all !== null && main !== null ? Math.max(0, all - main) : null };
  }
}

/** iperf3's own CPU figures from its -J document. */
function iperfCpu(doc: Record<string, unknown>): { guest: number | null; server: number | null } {
  const end = doc.end as { cpu_utilization_percent?: { host_total?: unknown; remote_total?: unknown } } | undefined;
  const c = end?.cpu_utilization_percent;
  const n = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return { guest: n(c?.host_total), server: n(c?.remote_total) };
}

/** Frames on their way into the guest dropped so far (see VmRunRecord.toGuestDrops); null when they cannot be read. */
async function toGuestDrops(ctx: BenchContext, s: VmState, side: VmSide): Promise<number | null> {
  try {
    if (side === 'vsw') {
      const v = (await inspectEndpoint(ctx, s.topology.vsw.endpoint)).vhost;
      return v ? v.rxNoBuffer + v.rxUnfit : null;
    }
    const r = await sh('ip', ['-n', s.topology.tap.bridgeNs, '-s', '-j', 'link', 'show', 'dev', s.topology.tap.tap], { allowFail: true });
    const l = (JSON.parse(r.stdout) as { stats64?: { tx?: { dropped?: number } } }[])[0];
    return l?.stats64?.tx?.dropped ?? null;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    return null;
  }
}

/** Why vsw's VM endpoint moves no frames now (its queues stopped, the VMM gone), or null while it runs. */
async function endpointProblem(ctx: BenchContext, s: VmState): Promise<{ why: string; broken: boolean } | null> {
  const name = s.topology.vsw.endpoint;
  try {
    const e = await inspectEndpoint(ctx, name);
    if (e.state === 'up') return null;
    return { why: `vsw's endpoint ${name} is ${e.vhost?.state ?? e.state}: ${e.stateReason ?? 'no reason given'}`, broken: e.vhost?.state === 'broken' };
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    return { why: `vsw endpoint inspect ${name} failed: ${(err as Error).message}`, broken: false };
  }
}

/** The counters of the guest's NIC at both ends, read after a failed leg. */
export interface DiagnosisSample {
  /** vsw endpoint inspect: the device's state and its receive-side drops. */
  vhost: EndpointView['vhost'] | null;
  /** vsw stats: the VM port's frames (rx: from the guest, tx: to it) and drops by reason. */
  port: { rxFrames: number; txFrames: number; drops: Record<string, number> } | null;
  /** The guest's /sys/class/net/eth0/statistics. */
  guestEth0: Record<string, number> | null;
}

export interface Diagnosis {
  first: DiagnosisSample;
  /** Two seconds later, with nothing running: whether anything still moves. */
  later: DiagnosisSample;
  /** One ping from the guest to its server after that. */
  guestPings: boolean | null;
  /** The guest's kernel log, last lines (the console shows only emergencies). */
  guestDmesg: string | null;
}

const GUEST_STATS = ['tx_packets', 'rx_packets', 'tx_dropped', 'rx_dropped', 'tx_errors', 'rx_errors'];

async function diagnosisSample(ctx: BenchContext, s: VmState, g: Guest): Promise<DiagnosisSample> {
  const name = s.topology.vsw.endpoint;
  const vhost = await inspectEndpoint(ctx, name).then((e) => e.vhost ?? null, () => null);
  const port = await ctx.daemon
    .cli(['stats', '--json'])
    .then((r) => (JSON.parse(r.stdout) as { ports?: { name?: string; rxFrames: number; txFrames: number; drops: Record<string, number> }[] }).ports?.find((p) => p.name === name) ?? null)
    .then((p) => (p ? { rxFrames: p.rxFrames, txFrames: p.txFrames, drops: p.drops } : null), () => null);
  const guestEth0 = await interruptible(g.run(`cd /sys/class/net/eth0/statistics && for f in ${GUEST_STATS.join(' ')}; do echo "$f $(cat $f)"; done`, { timeoutMs: 15_000 })).then(
    (r) => Object.fromEntries(r.output.trim().split('\n').map((l) => l.split(' ')).filter((kv) => kv.length === 2).map(([k, v]) => [k, Number(v)])),
    (err: unknown) => {
      if (err instanceof Interrupted) throw err;
      return null;
    },
  );
  return { vhost, port, guestEth0 };
}

/**
 * After the first failed leg of a vsw guest: both ends' counters of its NIC,
 * again 2 s later, a ping, and the guest's kernel log, so that the record
 * says whether frames stopped leaving the guest, stopped being taken by vsw,
 * or stopped reaching the guest. Collected, never interpreted here.
 */
async function diagnose(ctx: BenchContext, s: VmState, g: Guest, path: GuestPath): Promise<Diagnosis> {
  const first = await diagnosisSample(ctx, s, g);
  await sleep(2000);
  const later = await diagnosisSample(ctx, s, g);
  const ping = await interruptible(g.run(`ping -c 1 -W 2 ${path.serverIp}`, { timeoutMs: 15_000 })).then(
    (r) => r.code === 0,
    (err: unknown) => {
      if (err instanceof Interrupted) throw err;
      return null;
    },
  );
  const dmesg = await interruptible(g.run('dmesg | tail -n 8', { timeoutMs: 15_000 })).then(
    (r) => r.output.trim(),
    (err: unknown) => {
      if (err instanceof Interrupted) throw err;
      return null;
    },
  );
  return { first, later, guestPings: ping, guestDmesg: dmesg };
}

function fmtDiagnosis(d: Diagnosis): string {
  const side = (x: DiagnosisSample): string =>
    `guest eth0 tx ${x.guestEth0?.tx_packets ?? '?'} rx ${x.guestEth0?.rx_packets ?? '?'}, ` +
    `vsw port from the guest ${x.port?.rxFrames ?? '?'} to it ${x.port?.txFrames ?? '?'}, device ${x.vhost?.state ?? '?'}`;
  return `then: ${side(d.first)}; 2 s later: ${side(d.later)}; guest ping ${d.guestPings === null ? '?' : d.guestPings ? 'answered' : 'unanswered'}`;
}

/** One leg: iperf3 in the guest as the client, the server in the side's namespace. */
async function measureLeg(ctx: BenchContext, s: VmState, g: Guest, path: GuestPath, variant: VmVariant, run: number, bootMs: number): Promise<VmRunRecord> {
  const rec: VmRunRecord = { test: 'vm', side: path.side, variant, run, ok: false, accel: g.accel, bootMs, ...(variant === VM_VARIANTS.tcpReverse ? { reverse: true } : {}) };
  const udp = variant === VM_VARIANTS.udp;
  const seconds = ctx.opts.time;
  // --connect-timeout: a guest that lost its path fails the leg in seconds, not after the SYN retries.
  const args = ['-c', path.serverIp, '-p', String(IPERF_PORT), '-t', String(seconds), '-J', '--connect-timeout', String(CONNECT_TIMEOUT_MS)];
  if (variant === VM_VARIANTS.tcpReverse) args.push('-R');
  if (udp) args.push('-u', '-b', '0', '-l', String(UDP_LEN));
  let server: { child: ChildProcess; output: () => string } | null = null;
  try {
    // A guest whose queues vsw stopped earlier in this session has no network: say why instead of timing out.
    const problem = path.side === 'vsw' ? await endpointProblem(ctx, s) : null;
    if (problem) {
      if (problem.broken) rec.endpointBroken = true;
      throw new BenchError(`not run: ${problem.why}`);
    }
    // A guest that lost its path since the last leg (an earlier failure): say so instead of measuring nothing.
    if (s.lostPath.has(`${path.side}/${run}`)) {
      const ping = await interruptible(g.run(`ping -c 1 -W 2 ${path.serverIp}`, { timeoutMs: 15_000 }));
      if (ping.code !== 0) throw new BenchError(`not run: the guest's ping to ${path.serverIp} got no answer after an earlier leg failed`);
    }
    server = await iperfServer(path.serverNs, path.serverIp);
    const qemu = new QemuMeter(g.pid, ctx.clkTck);
    const daemon = path.side === 'vsw' ? new CpuMeter(ctx.daemon.pid, ctx.clkTck) : null;
    const drops0 = await toGuestDrops(ctx, s, path.side);
    await Promise.all([qemu.begin(), daemon?.begin()]);
    const r = await interruptible(g.run(`iperf3 ${args.join(' ')} >${GUEST_JSON} 2>${GUEST_ERR}`, { timeoutMs: (seconds + LEG_SLACK_S) * 1000 }));
    const [qemuCpu, daemonCpu] = await Promise.all([qemu.end(), daemon?.end()]);
    const drops1 = await toGuestDrops(ctx, s, path.side);
    rec.qemuCpuPercent = qemuCpu.all;
    rec.qemuMainCpuPercent = qemuCpu.main;
    rec.qemuVcpuCpuPercent = qemuCpu.vcpu;
    if (daemon) rec.daemonCpuPercent = daemonCpu ?? null;
    rec.toGuestDrops = drops0 !== null && drops1 !== null ? drops1 - drops0 : null;
    const json = await interruptible(g.run(`cat ${GUEST_JSON}`, { timeoutMs: 60_000 }));
    let doc: Record<string, unknown>;
    try {
      doc = parseIperfJson(extractJson(json.output));
    } catch (err) {
      const stderr = (await interruptible(g.run(`cat ${GUEST_ERR}`))).output.trim();
      throw new BenchError(`${(err as Error).message} (iperf3 exit status ${r.code}${stderr ? `; stderr: ${stderr.slice(0, 300)}` : ''})`);
    }
    if (udp) rec.udp = udpResult(doc);
    else rec.tcp = tcpResult(doc);
    rec.iperfCpuPercent = iperfCpu(doc);
    rec.ok = true;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
    s.lostPath.add(`${path.side}/${run}`);
    if (path.side === 'vsw' && !rec.error.startsWith('not run: ')) {
      const problem = await endpointProblem(ctx, s);
      if (problem) rec.error += ` (${problem.why})`;
      if (problem?.broken) rec.endpointBroken = true;
      if (!s.diagnosed.has(run)) {
        s.diagnosed.add(run);
        rec.diagnosis = await diagnose(ctx, s, g, path);
        console.error(`bench: vm run ${run} vsw ${variant}: after the failure, ${fmtDiagnosis(rec.diagnosis)}`);
      }
    }
    s.live.keepLogs = true;
  } finally {
    if (server && !(await exited(server.child, 3000))) await stop(server.child, 1000);
  }
  const what =
    rec.tcp ? `${fmtBps(rec.tcp.bitsPerSecond)}, ${rec.tcp.retransmits ?? '?'} retransmits`
    : rec.udp ? `${(rec.udp.packetsPerSecond / 1e3).toFixed(1)} kpps received of ${(rec.udp.sentPacketsPerSecond / 1e3).toFixed(1)} sent, ${rec.udp.lostPercent.toFixed(1)}% lost`
    : `failed: ${rec.error}`;
  const cpu = [
    typeof rec.qemuCpuPercent === 'number' ? `QEMU CPU ${rec.qemuCpuPercent.toFixed(0)}% (vCPU ${rec.qemuVcpuCpuPercent?.toFixed(0) ?? '?'}%, main loop ${rec.qemuMainCpuPercent?.toFixed(0) ?? '?'}%)` : '',
    typeof rec.daemonCpuPercent === 'number' ? `daemon CPU ${rec.daemonCpuPercent.toFixed(0)}%` : '',
    rec.toGuestDrops ? `${rec.toGuestDrops} frames to the guest dropped` : '',
  ].filter(Boolean);
  console.error(`bench: vm run ${run} ${path.side} ${variant}: ${what}${cpu.length ? `, ${cpu.join(', ')}` : ''}`);
  if (!rec.ok) {
    if (!ctx.daemon.alive()) throw await ctx.daemon.died();
  }
  return rec;
}

/** The guest reaches its server (ARP resolved, MACs learned, the vhost-user queues running). */
async function waitGuestReaches(g: Guest, path: GuestPath): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await interruptible(g.run(`ping -c 1 -W 1 ${path.serverIp}`, { timeoutMs: 15_000 }));
    if (r.code === 0) return;
    if (Date.now() > deadline) throw new BenchError(`the ${path.side} guest cannot ping ${path.serverIp}: ${r.output.trim().slice(-200)}`);
    await sleep(300);
  }
}

/** Waits until vsw's VM endpoint runs its queues (the guest's driver started them). */
async function waitEndpointRunning(ctx: BenchContext, s: VmState): Promise<void> {
  await waitFor(`vsw's VM endpoint ${s.topology.vsw.endpoint} running its queues`, 30_000, async () => {
    const e = await inspectEndpoint(ctx, s.topology.vsw.endpoint);
    return e.state === 'up' && e.vhost?.state === 'running' ? true : undefined;
  }, 200);
}

/** One guest on one side: boot, the legs, stop. A guest that does not come up is one failed record per leg. */
async function guestSession(ctx: BenchContext, s: VmState, side: VmSide, run: number): Promise<VmRunRecord[]> {
  const path = s.paths[side];
  const accel = s.topology.accel;
  let g: Guest;
  let bootMs: number;
  try {
    const pending = startGuest({ ...path.guest, name: `${path.guest.name}${run}` });
    s.live.guest = pending;
    g = await interruptible(pending);
    bootMs = g.bootMs;
    if (side === 'vsw') await waitEndpointRunning(ctx, s);
    await waitGuestReaches(g, path);
    s.boots.push({ side, run, bootMs });
    console.error(`bench: vm run ${run} ${side}: guest ${path.guest.name}${run} booted under ${g.accel} in ${(bootMs / 1000).toFixed(1)} s`);
  } catch (err) {
    if (err instanceof Interrupted || !ctx.daemon.alive()) throw err;
    s.live.keepLogs = true;
    const error = (err as Error).message;
    s.boots.push({ side, run, bootMs: null, error });
    console.error(`bench: vm run ${run} ${side}: the guest did not come up: ${error}`);
    await stopCurrentGuest(s.live);
    return LEGS.map((variant) => ({ test: 'vm', side, variant, run, ok: false, accel, error: `the guest did not come up: ${error}` }));
  }
  try {
    const out: VmRunRecord[] = [];
    for (const variant of LEGS) out.push(await measureLeg(ctx, s, g, path, variant, run, bootMs));
    return out;
  } finally {
    await stopCurrentGuest(s.live);
  }
}

async function stopCurrentGuest(live: VmLive): Promise<void> {
  const pending = live.guest;
  live.guest = null;
  if (pending) await pending.then((g) => g.stop(), () => undefined);
}

async function runVm(ctx: BenchContext, s: VmState): Promise<VmRunRecord[]> {
  const out: VmRunRecord[] = [];
  for (let run = 1; run <= ctx.opts.runs; run++) {
    for (const side of alternate<VmSide>(run, ['vsw', 'tap'])) out.push(...(await guestSession(ctx, s, side, run)));
  }
  return out;
}

// ---------------------------------------------------------------- summary

export interface VmSummaryRow extends ReportRow {
  vsw: number | null;
  tap: number | null;
  /** vsw/tap, for rates. */
  ratio: number | null;
}

const VM_COLUMNS: readonly Column<VmSummaryRow>[] = [
  { header: 'vsw vhost-user', value: (r) => r.vsw },
  { header: 'QEMU tap + bridge', value: (r) => r.tap },
  { header: 'vsw/tap', value: (r) => r.ratio, digits: 2 },
];

const isVm = (r: RunRecord): r is VmRunRecord => r.test === 'vm';

/** The accelerator the records ran under ('tcg, kvm' if they differ; null without records). */
export function vmAccel(records: readonly RunRecord[]): string | null {
  const seen = [...new Set(records.filter(isVm).map((r) => r.accel).filter(Boolean))];
  return seen.length ? seen.join(', ') : null;
}

export function vmSummary(records: readonly RunRecord[]): VmSummaryRow[] {
  const recs = records.filter(isVm);
  if (recs.length === 0) return [];
  const rows: VmSummaryRow[] = [];
  const row = (scenario: string, unit: string, variant: string, f: (r: VmRunRecord) => number | null | undefined, digits: number, withRatio: boolean): void => {
    const v = medianOf(recs, { variant, side: 'vsw' }, f);
    const t = medianOf(recs, { variant, side: 'tap' }, f);
    rows.push({ scenario, unit, vsw: v, tap: t, ratio: withRatio ? ratio(v, t) : null, digits });
  };
  const gbps = (r: VmRunRecord): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);
  const V = VM_VARIANTS;
  row('TCP 1 stream, guest -> container', 'Gbit/s', V.tcp, gbps, 3, true);
  row('TCP retransmits', 'per run', V.tcp, (r) => r.tcp?.retransmits, 0, false);
  row('TCP 1 stream, container -> guest (-R)', 'Gbit/s', V.tcpReverse, gbps, 3, true);
  row('TCP retransmits (-R)', 'per run', V.tcpReverse, (r) => r.tcp?.retransmits, 0, false);
  row('frames to the guest dropped (-R)', 'per run', V.tcpReverse, (r) => r.toGuestDrops, 0, false);
  row(`UDP ${UDP_LEN} B received, guest -> container`, 'kpps', V.udp, (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), 1, true);
  row(`UDP ${UDP_LEN} B sent by the guest`, 'kpps', V.udp, (r) => (r.udp ? r.udp.sentPacketsPerSecond / 1e3 : null), 1, true);
  row(`UDP ${UDP_LEN} B lost`, '%', V.udp, (r) => r.udp?.lostPercent, 2, false);
  for (const [variant, what] of [[V.tcp, 'TCP'], [V.tcpReverse, 'TCP -R'], [V.udp, 'UDP']] as const) {
    row(`QEMU vCPU thread during ${what}`, '% of a core', variant, (r) => r.qemuVcpuCpuPercent, 0, false);
    row(`QEMU main loop during ${what}`, '% of a core', variant, (r) => r.qemuMainCpuPercent, 0, false);
    row(`daemon CPU during ${what}`, '% of a core', variant, (r) => r.daemonCpuPercent, 0, false);
  }
  row('guest boot to its shell', 's', V.tcp, (r) => (typeof r.bootMs === 'number' ? r.bootMs / 1000 : null), 1, false);
  // Medians are of the legs that ran: say how many did not.
  const failed = (side: VmSide): number => recs.filter((r) => r.side === side && !r.ok).length;
  const legs = (side: VmSide): number => recs.filter((r) => r.side === side).length;
  rows.push({ scenario: `legs failed (of ${legs('vsw')} vsw, ${legs('tap')} tap)`, unit: 'legs', vsw: failed('vsw'), tap: failed('tap'), ratio: null, digits: 0 });
  // A guest session (one run of a side) in which vsw stopped the guest's queues for a ring rule.
  const brokenSessions = new Set(recs.filter((r) => r.side === 'vsw' && r.endpointBroken).map((r) => r.run)).size;
  const sessions = new Set(recs.filter((r) => r.side === 'vsw').map((r) => r.run)).size;
  rows.push({ scenario: `guests whose queues vsw stopped (of ${sessions})`, unit: 'guests', vsw: brokenSessions, tap: null, ratio: null, digits: 0 });
  return rows;
}

export function vmTable(records: readonly RunRecord[]): ScenarioTable | null {
  const accel = vmAccel(records);
  const table = ownTable(`VM: guest -> container, vsw vhost-user vs QEMU tap on a Linux bridge (${accel ?? 'no guest ran'})`, VM_COLUMNS, vmSummary(records));
  if (!table) return null;
  const runs = Math.max(0, ...records.filter(isVm).map((r) => r.run));
  table.lines.push(`accelerator: ${accel ?? '-'}; one vCPU, ${GUEST_MEM_MB} MB, the same guest and QEMU options on both sides; ${runs} run(s) per side, a fresh guest per run`);
  if (accel?.includes('tcg')) table.lines.push(`note: ${TCG_NOTE}`);
  return table;
}

export function vmChecks(records: readonly RunRecord[]): Check[] {
  const rows = vmSummary(records);
  if (rows.length === 0) return [];
  const accel = vmAccel(records) ?? '-';
  const get = (scenario: string): number | null => rows.find((r) => r.scenario === scenario)?.ratio ?? null;
  return [
    { what: `vm (${accel}): TCP guest -> container, vsw vhost-user / QEMU tap`, value: get('TCP 1 stream, guest -> container'), bar: null, met: null },
    { what: `vm (${accel}): TCP container -> guest, vsw vhost-user / QEMU tap`, value: get('TCP 1 stream, container -> guest (-R)'), bar: null, met: null },
    { what: `vm (${accel}): UDP ${UDP_LEN} B received pps, vsw vhost-user / QEMU tap`, value: get(`UDP ${UDP_LEN} B received, guest -> container`), bar: null, met: null },
  ];
}

// ---------------------------------------------------------------- the scenario

export const vmScenario: Scenario<VmState> = {
  name: 'vm',

  async preflight() {
    const missing = await qemuAvailable();
    if (missing) throw new BenchError(`the vm scenario cannot start a QEMU guest here: ${missing} (or leave vm out of --only).`);
  },

  setup: setupVm,
  run: runVm,

  async describe(ctx, s) {
    const qemu = await sh('qemu-system-x86_64', ['--version'], { allowFail: true });
    const endpoint = await inspectEndpoint(ctx, s.topology.vsw.endpoint).catch(() => null);
    return {
      topology: s.topology,
      details: {
        accel: s.topology.accel,
        note: s.topology.accel === 'tcg' ? TCG_NOTE : null,
        qemu: qemu.stdout.split('\n')[0].trim() || null,
        boots: s.boots,
        vhost: endpoint?.vhost ?? null,
      },
    };
  },

  async teardown(_ctx, s) {
    await stopCurrentGuest(s.live);
  },

  resultOptions: () => ({ vmAccelForced: process.env.VSW_VM_ACCEL ?? null }),

  rssAfter: 'vm runs',

  table: vmTable,
  checks: vmChecks,
};
