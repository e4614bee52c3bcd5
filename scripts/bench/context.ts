/**
 * What `npm run bench` hands each scenario (scripts/bench/scenario.ts): its
 * options, the per-run prefix, the cleanup, the bench's vsw daemon, the two
 * sides every run builds (vsw's internal network, and the Linux bridge when a
 * chosen scenario compares against it), and the record of one run.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';

import { cmd, liveChildren, pickFreePrefix, stop, type CmdOptions, type CmdResult, type Prefix, type TcpResult, type UdpResult } from '../bench-lib.js';
import type { VswDaemon } from './vsw-daemon.js';

/** The scenarios, by the names --only takes and run records carry, in the order they run. */
export const TEST_NAMES = ['tcp', 'udp', 'policy', 'qos', 'nat', 'overlay', 'transparent', 'l2bridge', 'vm'] as const;
export type TestName = (typeof TEST_NAMES)[number];

/**
 * vsw: through vsw without NAT (overlay: through the lab's vsw VXLAN); bridge: the Linux bridge;
 * nat: through a vsw nat network; loopback: no switch at all; kernel: the kernel's VXLAN (overlay);
 * macvlan: a macvlan child of a physical uplink (transparent); ipvlan: an ipvlan L2 child of one, or
 * routed: a routing host with proxy ARP on one, where the kernel has no ipvlan (l2bridge);
 * tap: a QEMU guest on QEMU's own -netdev tap in a Linux bridge (vm; its vsw side is a vhost-user port).
 */
export type SideName = 'vsw' | 'bridge' | 'nat' | 'loopback' | 'kernel' | 'macvlan' | 'ipvlan' | 'routed' | 'tap';

/** Two namespaces and the path between them that a scenario measures. */
export interface Side {
  name: SideName;
  subnet: string;
  clientNs: string;
  serverNs: string;
  clientIp: string;
  serverIp: string;
  /** MTU of the server's interface, recorded so that results on different setups are not compared blindly. */
  mtu: number | null;
  /** vsw only: the endpoint ids, for the policy API. */
  clientEndpoint?: string;
  serverEndpoint?: string;
}

/** One measured run of a scenario on one side; scenarios add fields of their own. */
export interface RunRecord {
  test: TestName;
  side: SideName;
  /** Which leg of the scenario (policy: "10 rules", qos: "100mbit", nat: "tcp -R" ...). */
  variant?: string;
  run: number;
  ok: boolean;
  error?: string;
  tcp?: TcpResult;
  udp?: UdpResult;
  /** iperf3 -R: the server sends, the client receives. */
  reverse?: boolean;
  /** Daemon CPU over the run, percent of one core (vsw and nat sides; overlay: both lab daemons summed). */
  daemonCpuPercent?: number | null;
}

export interface BenchOptions {
  runs: number;
  time: number;
  soak: number;
  /** Scenarios to run, in the order of TEST_NAMES. */
  tests: TestName[];
  /** nat: exchanges per connection-rate run, and how many in flight. */
  conns: number;
  concurrency: number;
  out: string;
  /** Directory for the daemon's --cpu-prof profiles, or null. */
  profile: string | null;
}

export interface BenchContext {
  opts: BenchOptions;
  /** vswt + 4 hex digits: every namespace, link and file of the run is named with it. */
  prefix: string;
  workDir: string;
  cleanup: Cleanup;
  daemon: VswDaemon;
  /** Clock ticks per second, for CPU meters. */
  clkTck: number;
  /** Two endpoints on the daemon's internal network. */
  vsw: Side;
  /** Two veths on a Linux bridge, when a chosen scenario compares against it. */
  bridge: Side | null;
  /** Prefixes the sides took already: a scenario that picks subnets of its own avoids them. */
  taken: Prefix[];
}

// ---------------------------------------------------------------- cleanup

/**
 * Undo steps, run last-registered first. A step is registered before the
 * thing it undoes is created, and every step tolerates that thing being
 * absent, so a failure half-way through a creation leaves nothing behind.
 */
export class Cleanup {
  private readonly steps: { what: string; fn: () => Promise<void> }[] = [];
  private readonly spared = new Set<ChildProcess>();
  private running: Promise<void> | null = null;

  add(what: string, fn: () => Promise<void>): void {
    this.steps.push({ what, fn });
  }

  /** A child that a step stops in its turn (a daemon with endpoints still to remove), not with the strays at the start. */
  spare(child: ChildProcess): void {
    this.spared.add(child);
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      // iperf3 servers first: a namespace cannot go while they sit in it.
      await Promise.all([...liveChildren].filter((c) => !this.spared.has(c)).map((c) => stop(c, 1000)));
      for (let step = this.steps.pop(); step; step = this.steps.pop()) {
        try {
          await step.fn();
        } catch (err) {
          console.error(`bench: cleanup: could not ${step.what}: ${(err as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}

/** Setup and measurement commands: an interrupt cuts them short. */
export const sh = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> => cmd(file, args, opts);

/** Cleanup-phase commands: never cut short by the interrupt, failures reported by the caller. */
export const undo = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> => cmd(file, args, { timeoutMs: 15_000, ...opts, cleanup: true });

async function deleteNetns(ns: string): Promise<void> {
  // Processes left inside keep the namespace alive after its name is gone.
  const pids = await undo('ip', ['netns', 'pids', ns], { allowFail: true });
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (!existsSync(`/run/netns/${ns}`)) return;
  await undo('ip', ['netns', 'delete', ns]);
}

export async function deleteLink(name: string): Promise<void> {
  const show = await undo('ip', ['link', 'show', 'dev', name], { allowFail: true });
  if (show.code !== 0) return;
  await undo('ip', ['link', 'delete', 'dev', name]);
}

/** A namespace with lo up, its removal registered first. */
export async function netnsAdd(cleanup: Cleanup, ns: string): Promise<void> {
  cleanup.add(`delete network namespace ${ns}`, () => deleteNetns(ns));
  await sh('ip', ['netns', 'add', ns]);
  await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
}

/** A veth from the host into namespace ns (named eth0 there), its removal registered first. */
export async function vethInto(cleanup: Cleanup, hostEnd: string, ns: string): Promise<void> {
  // Deleting the namespace takes the veth pair with it; this covers a failure before the move.
  cleanup.add(`delete veth ${hostEnd}`, () => deleteLink(hostEnd));
  await sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
}

/** A whole number in [lo, hi]: subnets are drawn at random, so two runs at once rarely try the same one first. */
export const randomInt = (lo: number, hi: number): number => lo + Math.floor(Math.random() * (hi - lo + 1));

/** 10.X.0.0/24 with X in 100..199 that overlaps no host route and none of `taken`; `forWhat` names who could not get one. */
export async function pickSubnet(taken: readonly Prefix[], forWhat = 'the bench'): Promise<{ cidr: string; prefix: Prefix; x: number }> {
  const { cidr, prefix } = await pickFreePrefix(
    () => `10.${randomInt(100, 199)}.0.0/24`,
    taken,
    `every 10.100.0.0/24 .. 10.199.0.0/24 overlaps a route of this host${forWhat === 'the bench' ? '' : ' or the bench'}: free one of them for ${forWhat}.`,
  );
  return { cidr, prefix, x: Number(cidr.split('.')[1]) };
}

/** vswt + 4 hex digits that no namespace, link or work directory uses yet (another run, or a leftover). */
export async function freshPrefix(): Promise<string> {
  const netns = (await sh('ip', ['netns', 'list'])).stdout;
  const links = (await sh('ip', ['-o', 'link', 'show'])).stdout;
  for (;;) {
    const prefix = `vswt${randomBytes(2).toString('hex')}`;
    if (!netns.includes(prefix) && !links.includes(prefix) && !existsSync(`/tmp/${prefix}`)) return prefix;
  }
}

export function logTail(logPath: string, lines = 20): Promise<string> {
  return readFile(logPath, 'utf8')
    .then((t) => t.trimEnd().split('\n').slice(-lines).join('\n'))
    .catch(() => '');
}
