/**
 * `npm run bench`: vsw against the kernel's own answer to the same job, a
 * Linux bridge with veth pairs, on this machine, in one run.
 *
 * Two namespaces hang off a vsw `internal` network (TAPs served by a daemon
 * this script starts), two off a Linux bridge. iperf3 measures one TCP stream
 * and a flood of 64-byte UDP datagrams between each pair, several times, vsw
 * and bridge alternating so that background noise hits both. The medians and
 * the vsw/bridge ratios are printed and written to a JSON file. Absolute
 * numbers depend on the machine; the ratio is what to compare across machines.
 *
 * Two more scenarios run through the daemon's policy API: `policy` (one TCP
 * stream with 10 and with 10,000 ACL rules on each vsw port, none matching the
 * stream, against the bridge in the same run) and `qos` (one TCP stream from
 * an endpoint capped at 100 Mbit/s and at 1 Gbit/s, against the cap).
 *
 * The `nat` scenario (scripts/bench-nat.ts) puts a namespace behind a vsw
 * nat network and measures, to a server in an "outside" namespace the host
 * routes to, one TCP stream both ways and new TCP connections and UDP flows
 * per second, next to the same traffic switched by vsw without NAT.
 *
 * The `overlay` scenario (scripts/bench-overlay.ts) builds a two-host lab
 * (scripts/lab-lib.ts: host namespaces on an underlay bridge, one vsw daemon
 * each, a VXLAN overlay network) and, on the same underlay, the kernel's own
 * VXLAN; iperf3 TCP one and four streams and UDP 64-byte across the hosts,
 * vsw and kernel alternating, judged by vsw/kernel >= 0.25 for one stream.
 *
 * The daemon's memory is sampled (VmRSS) idle and after the runs, and
 * `--soak N` adds one long TCP run with a sample every 5 s, to show that the
 * data path does not leak per packet.
 *
 * Everything the bench creates carries one per-run prefix (vswt + 4 hex) and
 * is removed at the end, after a failure and on SIGINT/SIGTERM alike;
 * `npm run cleanup` removes what a SIGKILLed run left.
 */

import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, existsSync, openSync } from 'node:fs';
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ChildProcess } from 'node:child_process';

import {
  BenchError,
  CpuMeter,
  Interrupted,
  apiError,
  apiRequest,
  benchAclRules,
  cmd,
  formatTable,
  ifMtu,
  intOption,
  interrupt,
  judge,
  liveChildren,
  median,
  pickFreePrefix,
  procStatusKiB,
  ratio,
  sleep,
  start,
  stop,
  tcpResult,
  udpResult,
  waitFor,
  type Check,
  type CmdOptions,
  type CmdResult,
  type Prefix,
  type TcpResult,
  type UdpResult,
} from './bench-lib.js';
import {
  BLOCK_COLD_MS,
  CONNRATE_WARMUP,
  NAT_VARIANTS,
  connRate,
  linkDrops,
  natChecks,
  natPathHint,
  natState,
  natSummary,
  setupNat,
  startConnServer,
  sourcePorts,
  type ConnProto,
  type ConnRateResult,
  type LinkDrops,
  type NatState,
  type NatSummaryRow,
  type NatTopology,
} from './bench-nat.js';
import { overlayChecks, overlayDaemonRss, overlayScenario, overlaySummary, overlayTable, overlayTopologyJson, setupOverlay } from './bench-overlay.js';
import { runIperf } from './lab-lib.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = path.join(REPO_ROOT, 'dist/src/cli/main.js');
/** The nat scenario's connection-rate generator and server (scripts/nat-connrate.ts, built with the rest). */
const CONNRATE = path.join(REPO_ROOT, 'dist/scripts/nat-connrate.js');
const SOAK_SAMPLE_MS = 5000;
/** ACL rules per port in the policy scenario: few, then many. */
const POLICY_RULES = [10, 10_000] as const;
/** The group the policy scenario installs (and removes) on both endpoints. */
const POLICY_LAYER = 'acl';
const POLICY_GROUP = 'bench';
/** Egress caps of the qos scenario, as the API takes them and in bit/s. */
const QOS_CAPS: readonly { rate: string; bps: number }[] = [
  { rate: '100mbit', bps: 100e6 },
  { rate: '1gbit', bps: 1e9 },
];
const TESTS = ['tcp', 'udp', 'policy', 'qos', 'nat', 'overlay'] as const;
type Test = (typeof TESTS)[number];

const HELP = `usage: npm run bench -- [options]

Measures vsw against a Linux bridge (veth) on this machine with iperf3:
one TCP stream and 64-byte UDP at full rate, between two namespaces on each;
one TCP stream with 10 and 10,000 ACL rules per vsw port (policy); one TCP
stream from an endpoint with an egress cap of 100 Mbit/s and 1 Gbit/s (qos);
through a nat network to an outside namespace against vsw without NAT: one
TCP stream each way, new TCP connections/s and new UDP flows/s (nat);
across two lab hosts (namespaces on an underlay bridge, one vsw daemon
each) through a vsw VXLAN overlay against the kernel's VXLAN: TCP 1 and 4
streams, UDP 64-byte (overlay).
Needs root, iperf3, iproute2 and ping (nat also nft, overlay ethtool), and a
built tree (npm run build).

options:
  --runs N        runs of each test on each side (default 3); medians are reported
  --time S        seconds per iperf3 run (default 10)
  --soak S        also one TCP run of S seconds on vsw, sampling the daemon's RSS
                  every 5 s (default 0: off)
  --only LIST     run only these tests, comma-separated: tcp, udp, policy, qos,
                  nat, overlay (default: all six)
  --conns N       nat: new TCP connections, and new UDP flows, per connection-rate
                  run (default 20000; each holds a NAT port for a while)
  --concurrency C nat: exchanges the generator keeps in flight (default 128)
  --out FILE      where to write the JSON results
                  (default bench-results/bench-<ISO timestamp>.json)
  --profile DIR   run the daemon under node --cpu-prof, profiles (one per
                  thread) written to DIR when it exits
  --help          show this text
`;

// ---------------------------------------------------------------- options

interface Options {
  runs: number;
  time: number;
  soak: number;
  /** Tests to run, in the order of TESTS. */
  tests: Test[];
  /** nat: exchanges per connection-rate run, and how many in flight. */
  conns: number;
  concurrency: number;
  out: string;
  /** Directory for the daemon's --cpu-prof profiles, or null. */
  profile: string | null;
}


const OPTION_SPEC = {
  runs: { type: 'string' },
  time: { type: 'string' },
  soak: { type: 'string' },
  only: { type: 'string' },
  conns: { type: 'string' },
  concurrency: { type: 'string' },
  out: { type: 'string' },
  profile: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseOptions(argv: string[]): Options | null {
  const values = (() => {
    try {
      return parseArgs({ args: argv, options: OPTION_SPEC, strict: true, allowPositionals: false }).values;
    } catch (err) {
      throw new BenchError(`${(err as Error).message.replace(/\.$/, '')}: see --help.`);
    }
  })();
  if (values.help) return null;
  let tests: Test[] = [...TESTS];
  if (values.only !== undefined) {
    const asked = values.only.split(',').map((t) => t.trim()).filter(Boolean);
    const unknown = asked.filter((t) => !(TESTS as readonly string[]).includes(t));
    if (asked.length === 0 || unknown.length > 0) {
      throw new BenchError(`--only takes a comma-separated list of ${TESTS.join(', ')}, not "${values.only}".`);
    }
    tests = TESTS.filter((t) => asked.includes(t));
  }
  const soak = intOption('soak', values.soak, 0, 0, 3600);
  if (soak > 0 && soak < 10) throw new BenchError('--soak must be at least 10 seconds (RSS is sampled every 5 s), or 0 for off.');
  // --runs 0 makes sense only to run the soak alone.
  const runs = intOption('runs', values.runs, 3, soak > 0 ? 0 : 1, 100);
  const time = intOption('time', values.time, 10, 1, 3600);
  // A NAT pool has 64,512 ports per protocol (1024-65535); a run must fit in it with room to spare.
  const conns = intOption('conns', values.conns, 20_000, 100, 50_000);
  const concurrency = intOption('concurrency', values.concurrency, 128, 1, 4096);
  const stamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const out = values.out ? path.resolve(values.out) : path.join(REPO_ROOT, 'bench-results', `bench-${stamp}.json`);
  return { runs, time, soak, tests, conns, concurrency, out, profile: values.profile ? path.resolve(values.profile) : null };
}

// ---------------------------------------------------------------- preflight

async function onPath(name: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      await access(path.join(dir, name), fsConstants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

async function preflight(tests: Test[]): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new BenchError('the bench must run as root (it creates network namespaces and links): run it with `sudo -E npm run bench`.');
  }
  const tools: [string, string][] = [
    ['ip', 'iproute2'],
    ['iperf3', 'iperf3'],
    ['ping', 'iputils-ping'],
    ['ss', 'iproute2'],
  ];
  for (const [tool, pkg] of tools) {
    if (!(await onPath(tool))) throw new BenchError(`${tool} was not found: install it with \`apt-get install ${pkg}\`.`);
  }
  if (!existsSync(CLI)) {
    throw new BenchError(`the vsw CLI is not built (${path.relative(process.cwd(), CLI) || CLI} is missing): run \`npm run build\` first.`);
  }
  if (tests.includes('nat')) {
    if (!existsSync(CONNRATE)) throw new BenchError(`the connection-rate generator is not built (${CONNRATE} is missing): run \`npm run build:ts\` first.`);
    for (const [tool, pkg] of [['nft', 'nftables'], ['sysctl', 'procps']]) {
      if (!(await onPath(tool))) throw new BenchError(`${tool} was not found (the nat scenario needs it): install it with \`apt-get install ${pkg}\`.`);
    }
  }
  if (tests.includes('overlay')) {
    for (const [tool, pkg] of [['bridge', 'iproute2'], ['ethtool', 'ethtool']]) {
      if (!(await onPath(tool))) throw new BenchError(`${tool} was not found (the overlay scenario needs it for the kernel VXLAN baseline): install it with \`apt-get install ${pkg}\`.`);
    }
  }
}

// ---------------------------------------------------------------- cleanup

/**
 * Undo steps, run last-registered first. A step is registered before the
 * thing it undoes is created, and every step tolerates that thing being
 * absent, so a failure half-way through a creation leaves nothing behind.
 */
class Cleanup {
  private readonly steps: { what: string; fn: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;

  add(what: string, fn: () => Promise<void>): void {
    this.steps.push({ what, fn });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      // iperf3 servers first: a namespace cannot go while they sit in it.
      await Promise.all([...liveChildren].filter((c) => !isDaemon(c)).map((c) => stop(c, 1000)));
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

let daemonChild: ChildProcess | null = null;
const isDaemon = (c: ChildProcess): boolean => c === daemonChild;
const daemonAlive = (): boolean => daemonChild !== null && daemonChild.exitCode === null && daemonChild.signalCode === null;

const cleanup = new Cleanup();

/** Cleanup-phase commands: never cut short by the interrupt, failures reported by the caller. */
const undo = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> =>
  cmd(file, args, { timeoutMs: 15_000, ...opts, cleanup: true });

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

async function deleteLink(name: string): Promise<void> {
  const show = await undo('ip', ['link', 'show', 'dev', name], { allowFail: true });
  if (show.code !== 0) return;
  await undo('ip', ['link', 'delete', 'dev', name]);
}

// ---------------------------------------------------------------- topology

/**
 * vsw: through vsw without NAT (overlay: through the lab's vsw VXLAN); bridge: the Linux bridge;
 * nat: through a vsw nat network; loopback: no switch at all; kernel: the kernel's VXLAN (overlay).
 */
type SideName = 'vsw' | 'bridge' | 'nat' | 'loopback' | 'kernel';

interface Side {
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

/** Setup and measurement commands: an interrupt cuts them short. */
const sh = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> => cmd(file, args, opts);

async function netnsAdd(ns: string): Promise<void> {
  cleanup.add(`delete network namespace ${ns}`, () => deleteNetns(ns));
  await sh('ip', ['netns', 'add', ns]);
  await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
}

/** Picks 10.X.0.0/24 with X in 100..199 that overlaps no host route and none of `taken`. */
async function pickSubnet(taken: Prefix[]): Promise<{ cidr: string; prefix: Prefix; x: number }> {
  const { cidr, prefix } = await pickFreePrefix(
    () => `10.${100 + Math.floor(Math.random() * 100)}.0.0/24`,
    taken,
    'every 10.100.0.0/24 .. 10.199.0.0/24 overlaps a route of this host: free one of them for the bench.',
  );
  return { cidr, prefix, x: Number(cidr.split('.')[1]) };
}

function logTail(logPath: string, lines = 20): Promise<string> {
  return readFile(logPath, 'utf8')
    .then((t) => t.trimEnd().split('\n').slice(-lines).join('\n'))
    .catch(() => '');
}

class VswSide {
  readonly socket: string;
  readonly logPath: string;
  constructor(
    readonly prefix: string,
    readonly workDir: string,
    /** Node options for the daemon (--cpu-prof ...), before the CLI path. */
    readonly nodeArgs: string[] = [],
  ) {
    this.socket = path.join(workDir, 'vsw.sock');
    this.logPath = path.join(workDir, 'daemon.log');
  }

  /** The internal network of the vsw side (the nat scenario's path without NAT joins it too). */
  get network(): string {
    return `${this.prefix}-net`;
  }

  cli(args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const run = opts.cleanup ? undo : sh;
    return run(process.execPath, [CLI, '--socket', this.socket, ...args], { timeoutMs: 30_000, ...opts });
  }

  get pid(): number {
    if (!daemonChild?.pid) throw new BenchError('the vsw daemon is not running.');
    return daemonChild.pid;
  }

  async daemonDied(): Promise<BenchError> {
    const tail = await logTail(this.logPath);
    const how = daemonChild?.signalCode ? `on ${daemonChild.signalCode}` : `with status ${daemonChild?.exitCode}`;
    return new BenchError(`the vsw daemon exited ${how}${tail ? `; the end of its log:\n${tail}` : '.'}`);
  }

  async startDaemon(): Promise<void> {
    const stateDir = path.join(this.workDir, 'state');
    cleanup.add('stop the vsw daemon and remove what it made', async () => {
      // A stopped daemon leaves its TAPs for the next one; `vsw system reset` removes them.
      if (daemonChild) await stop(daemonChild, 5000);
      await undo(process.execPath, [CLI, '--socket', this.socket, 'system', 'reset', '--state-dir', stateDir], { timeoutMs: 30_000 });
    });
    const logFd = openSync(this.logPath, 'a');
    try {
      daemonChild = start(process.execPath, [...this.nodeArgs, CLI, 'daemon', '--socket', this.socket, '--state-dir', stateDir], logFd);
    } finally {
      // The child holds its own copy of the descriptor.
      closeSync(logFd);
    }
    await waitFor('the vsw daemon answering on its socket', 20_000, async () => {
      if (!daemonAlive()) throw await this.daemonDied();
      const r = await this.cli(['network', 'ls'], { allowFail: true });
      return r.code === 0 ? true : undefined;
    }, 200);
  }

  async setup(taken: Prefix[]): Promise<{ side: Side; prefix: Prefix }> {
    await this.startDaemon();
    const { cidr, prefix } = await pickSubnet(taken);
    const net = this.network;
    cleanup.add(`remove vsw network ${net}`, async () => {
      if (daemonAlive()) await this.cli(['network', 'rm', net], { cleanup: true, allowFail: true });
    });
    await this.cli(['network', 'create', '-d', 'internal', '--subnet', cidr, net]);

    const eps: { id: string; ip: string; ifname: string }[] = [];
    for (const n of [1, 2]) {
      const ns = `${this.prefix}-v${n}`;
      await netnsAdd(ns);
      eps.push(await this.addEndpoint(net, ns));
    }
    const side: Side = {
      name: 'vsw',
      subnet: cidr,
      clientNs: `${this.prefix}-v1`,
      serverNs: `${this.prefix}-v2`,
      clientIp: eps[0].ip,
      serverIp: eps[1].ip,
      mtu: await ifMtu(`${this.prefix}-v2`, eps[1].ifname),
      clientEndpoint: eps[0].id,
      serverEndpoint: eps[1].id,
    };
    return { side, prefix };
  }

  /** `vsw endpoint create --network net --netns ns`, with its removal registered for cleanup. */
  async addEndpoint(net: string, ns: string): Promise<{ id: string; ip: string; ifname: string }> {
    const created = await this.cli(['endpoint', 'create', '--network', net, '--netns', ns]);
    const id = /\b[0-9a-f]{12}\b/.exec(created.stdout)?.[0];
    cleanup.add(`remove the vsw endpoint in ${ns} on ${net}`, async () => {
      if (!daemonAlive()) return;
      const eid = id ?? (await this.findEndpoint(ns, true))?.id;
      if (eid) await this.cli(['endpoint', 'rm', eid], { cleanup: true, allowFail: true });
    });
    const ep = await this.findEndpoint(ns, false, id);
    if (!ep) throw new BenchError(`vsw endpoint ls does not list the endpoint just created in ${ns}.`);
    return ep;
  }

  /** The translation counters of a nat network (GET /v1/nat?network=N). */
  async natState(network: string): Promise<NatState> {
    return natState(await this.api('GET', `/v1/nat?network=${encodeURIComponent(network)}`), network);
  }

  /** A request to the daemon's REST API; throws a BenchError with the daemon's sentence on anything but 2xx. */
  async api(method: string, urlPath: string, body?: unknown, what = `${method} ${urlPath}`): Promise<unknown> {
    const r = await apiRequest(this.socket, method, urlPath, body, { timeoutMs: 120_000 });
    if (r.status >= 200 && r.status < 300) return r.body;
    if (!daemonAlive()) throw await this.daemonDied();
    throw new BenchError(`${what}: the daemon answered ${r.status}: ${apiError(r)}`);
  }

  /**
   * Refuses to start a scenario the daemon cannot serve: a daemon without the
   * policy routes answers 404 "no API route", which would otherwise show up as
   * a failure in the middle of the runs.
   */
  async checkPolicyApi(side: Side): Promise<void> {
    const r = await apiRequest(this.socket, 'GET', `/v1/endpoints/${side.clientEndpoint}/policy`);
    if (r.status === 404 && /no API route/i.test(apiError(r))) {
      throw new BenchError(`this vsw daemon has no policy API (GET /v1/endpoints/:id/policy answered: ${apiError(r)}): build a tree that has it.`);
    }
    if (r.status !== 200) throw new BenchError(`GET /v1/endpoints/${side.clientEndpoint}/policy answered ${r.status}: ${apiError(r)}`);
  }

  /**
   * Replaces the bench group on both endpoints with n block rules that the
   * iperf3 traffic does not match (scripts/bench-lib.ts benchAclRules), in
   * one PUT per endpoint. Returns the seconds each PUT took.
   */
  async installRules(side: Side, n: number): Promise<number[]> {
    const rules = benchAclRules(n);
    const seconds: number[] = [];
    for (const ep of [side.clientEndpoint!, side.serverEndpoint!]) {
      const t0 = performance.now();
      const group = (await this.api('PUT', `/v1/endpoints/${ep}/layers/${POLICY_LAYER}/groups/${POLICY_GROUP}`, { priority: 100, rules }, `installing ${n} ACL rules on endpoint ${ep}`)) as {
        rules?: unknown[];
      };
      seconds.push((performance.now() - t0) / 1000);
      if (!Array.isArray(group?.rules) || group.rules.length !== n) {
        throw new BenchError(`the daemon accepted the ${n}-rule group on endpoint ${ep} but answered with ${Array.isArray(group?.rules) ? group.rules.length : 'no'} rules.`);
      }
    }
    await this.checkRulesActive(side, rules);
    return seconds;
  }

  /**
   * Asks the data plane (POST /v1/trace) what it does with a packet that the
   * last "tcp to a /32 and port range" rule of the set blocks, from the client
   * endpoint's own address (so spoof guard passes): a block by the bench group
   * shows the whole set got there, not only the API's copy of it.
   */
  async checkRulesActive(side: Side, rules: ReturnType<typeof benchAclRules>): Promise<void> {
    const probe = [...rules].reverse().find((r) => r.match.dstPrefix && r.match.dstPorts && r.direction === undefined);
    if (!probe) return;
    const dst = probe.match.dstPrefix!.split('/')[0];
    const port = probe.match.dstPorts!.split('-')[0];
    const packet = `tcp ${side.clientIp}:40000 > ${dst}:${port} syn`;
    const t = (await this.api('POST', '/v1/trace', { endpoint: side.clientEndpoint, direction: 'out', packet }, `tracing "${packet}"`)) as {
      verdict?: string;
      steps?: { group?: string; action?: string }[];
    };
    const byGroup = t?.steps?.some((st) => st.group === POLICY_GROUP && st.action === 'block');
    if (t?.verdict !== 'block' || !byGroup) {
      throw new BenchError(`after installing ${rules.length} rules, a trace of "${packet}" (rule priority ${probe.priority}) says ${t?.verdict ?? 'nothing'}, not a block by group ${POLICY_GROUP}: the rules did not reach the data plane.`);
    }
  }

  async removeRules(side: Side): Promise<void> {
    for (const ep of [side.clientEndpoint!, side.serverEndpoint!]) {
      const r = await apiRequest(this.socket, 'DELETE', `/v1/endpoints/${ep}/layers/${POLICY_LAYER}/groups/${POLICY_GROUP}`, undefined, { cleanup: true });
      if (r.status >= 300 && r.status !== 404) console.error(`bench: could not remove the bench ACL group from endpoint ${ep}: ${apiError(r)}`);
    }
  }

  /** Caps what the client endpoint sends. */
  async setQos(side: Side, rate: string): Promise<void> {
    const body = (await this.api('PUT', `/v1/endpoints/${side.clientEndpoint}/qos`, { maxEgress: rate }, `capping endpoint ${side.clientEndpoint} at ${rate}`)) as {
      maxEgress?: unknown;
    };
    if (typeof body?.maxEgress !== 'string') throw new BenchError(`PUT /v1/endpoints/${side.clientEndpoint}/qos answered without maxEgress: ${JSON.stringify(body).slice(0, 120)}`);
  }

  async clearQos(side: Side): Promise<void> {
    const r = await apiRequest(this.socket, 'DELETE', `/v1/endpoints/${side.clientEndpoint}/qos`, undefined, { cleanup: true });
    if (r.status >= 300 && r.status !== 404) console.error(`bench: could not remove the egress cap from endpoint ${side.clientEndpoint}: ${apiError(r)}`);
  }

  /** The endpoint by id, or else the one in namespace ns, from `endpoint ls --json`. */
  async findEndpoint(ns: string, forCleanup: boolean, id?: string): Promise<{ id: string; ip: string; ifname: string } | undefined> {
    const r = await this.cli(['endpoint', 'ls', '--json'], { cleanup: forCleanup, allowFail: forCleanup });
    if (r.code !== 0) return undefined;
    let list: unknown;
    try {
      list = JSON.parse(r.stdout);
    } catch {
      throw new BenchError(`vsw endpoint ls --json printed something that is not JSON: ${r.stdout.slice(0, 120)}`);
    }
    const arr = (Array.isArray(list) ? list : ((list as { endpoints?: unknown }).endpoints ?? [])) as Record<string, unknown>[];
    const ep = arr.find((e) => (id ? e.id === id : e.netns === ns));
    if (!ep || typeof ep.ip !== 'string') return undefined;
    return { id: String(ep.id), ip: ep.ip.split('/')[0], ifname: typeof ep.ifname === 'string' ? ep.ifname : 'eth0' };
  }
}

async function setupBridge(prefix: string, taken: Prefix[]): Promise<{ side: Side; prefix: Prefix }> {
  const { cidr, prefix: pfx, x } = await pickSubnet(taken);
  const br = `${prefix}-br`;
  cleanup.add(`delete bridge ${br}`, () => deleteLink(br));
  await sh('ip', ['link', 'add', br, 'type', 'bridge']);
  await sh('ip', ['link', 'set', br, 'up']);
  const ips: string[] = [];
  for (const n of [1, 2]) {
    const ns = `${prefix}-b${n}`;
    const hostEnd = `${prefix}-b${n}h`;
    const ip = `10.${x}.0.${n + 1}`;
    await netnsAdd(ns);
    // Deleting the namespace takes the veth pair with it; this covers a failure before the move.
    cleanup.add(`delete veth ${hostEnd}`, () => deleteLink(hostEnd));
    await sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sh('ip', ['link', 'set', hostEnd, 'master', br, 'up']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    ips.push(ip);
  }
  const side: Side = {
    name: 'bridge',
    subnet: cidr,
    clientNs: `${prefix}-b1`,
    serverNs: `${prefix}-b2`,
    clientIp: ips[0],
    serverIp: ips[1],
    mtu: await ifMtu(`${prefix}-b2`, 'eth0'),
  };
  return { side, prefix: pfx };
}

/** One ping through the path before measuring: ARP resolved, MACs learned, ports up. */
async function waitReachable(side: Side): Promise<void> {
  await waitFor(`a ping from ${side.clientNs} to ${side.serverIp} (${side.name})`, 20_000, async () => {
    const r = await sh('ip', ['netns', 'exec', side.clientNs, 'ping', '-c', '1', '-W', '1', side.serverIp], {
      allowFail: true,
      timeoutMs: 5000,
    });
    return r.code === 0 ? true : undefined;
  }, 200);
}

// ---------------------------------------------------------------- measurement

type Proto = 'tcp' | 'udp';

/**
 * One iperf3 test: a one-shot server (-1) bound to the server's address, the
 * client with -J. A fresh server per test means a test that failed midway
 * cannot leave a server stuck in "busy" for the next one.
 */
async function iperf(
  side: Side,
  proto: Proto,
  seconds: number,
  during?: (done: Promise<unknown>) => Promise<void>,
  /** Reverse mode (-R): the server sends, the client receives. */
  reverse = false,
): Promise<Record<string, unknown>> {
  const { doc } = await runIperf({ clientNs: side.clientNs, serverNs: side.serverNs, serverIp: side.serverIp, seconds, udp: proto === 'udp', len: 64, during, reverse });
  return doc;
}

interface RunRecord {
  test: Test;
  side: SideName;
  /** policy: "10 rules", "10000 rules" (vsw) or "bridge"; qos: the cap, e.g. "100mbit". */
  variant?: string;
  /** policy, vsw: ACL rules on each of the two ports during the run. */
  rules?: number;
  /** policy, vsw: seconds each endpoint's PUT of the rule group took before the run. */
  installSeconds?: number[];
  /** qos: the client endpoint's egress cap in bit/s. */
  capBps?: number;
  run: number;
  ok: boolean;
  error?: string;
  tcp?: TcpResult;
  udp?: UdpResult;
  /** Daemon CPU over the test, percent of one core (vsw and nat sides; overlay: both lab daemons summed). */
  daemonCpuPercent?: number | null;
  /** overlay, vsw: each lab daemon's CPU over the test (h1 sends, h2 receives). */
  daemonCpuByHost?: (number | null)[];
  /** overlay, TCP: parallel streams (-P). */
  streams?: number;
  /** nat: iperf3 -R (the server in the outside namespace sends). */
  reverse?: boolean;
  /** nat: a run of the connection-rate generator (scripts/nat-connrate.ts). */
  connRate?: ConnRateResult;
  /** nat, connection rate: daemon CPU time per exchange (warmup included), microseconds. */
  daemonCpuUsPerExchange?: number | null;
  /** The same, in user mode (JS, N-API) and in the kernel (TAP reads and writes, and the receiving stacks a write runs). */
  daemonCpuUsPerExchangeSplit?: { user: number; system: number };
  /** nat, connection rate through the NAT: the gateway's counters over the run (translations created, flows refused). */
  natDelta?: { created: number; refused: number };
  /** nat: the daemon's VmRSS right after the run (where it grows, and whether it settles). */
  daemonRssAfterKiB?: number | null;
  /** nat, iperf3 through the NAT: the host TAP's kernel drop counters over the run. */
  hostTapDrops?: LinkDrops | null;
}

let clkTck = 100;

async function measure(vsw: VswSide, side: Side, test: Test, seconds: number, run: number, extra: Partial<RunRecord> = {}): Promise<RunRecord> {
  const proto: Proto = test === 'udp' ? 'udp' : 'tcp';
  const rec: RunRecord = { test, side: side.name, ...extra, run, ok: false };
  // Both vsw paths (with and without NAT) run through the daemon; the bridge does not.
  const meter = side.name === 'vsw' || side.name === 'nat' ? new CpuMeter(vsw.pid, clkTck) : null;
  try {
    const doc = await iperf(side, proto, seconds, meter ? async () => meter.begin() : undefined, rec.reverse === true);
    if (meter) rec.daemonCpuPercent = await meter.end();
    if (proto === 'tcp') rec.tcp = tcpResult(doc);
    else rec.udp = udpResult(doc);
    rec.ok = true;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
  }
  const what =
    rec.tcp ? `${fmtBps(rec.tcp.bitsPerSecond)}, ${rec.tcp.retransmits ?? '?'} retransmits`
    : rec.udp ? `${(rec.udp.packetsPerSecond / 1e3).toFixed(0)} kpps received, ${rec.udp.lostPercent.toFixed(1)}% lost`
    : `failed: ${rec.error}`;
  const cpu = typeof rec.daemonCpuPercent === 'number' ? `, daemon CPU ${rec.daemonCpuPercent.toFixed(0)}%` : '';
  const label = rec.variant && rec.variant !== side.name ? `${side.name} ${rec.variant}` : side.name;
  console.error(`bench: ${test} run ${run} ${label}: ${what}${cpu}`);
  // A run may fail on its own (an iperf3 hiccup) and the next one be fine; a lost topology fails all the rest.
  if (!rec.ok) {
    await checkIntact(vsw, [side]);
    if (side.name === 'nat') rec.error += await natPathHint();
  }
  return rec;
}

/**
 * Stops the bench when its topology is gone (the daemon died, or another
 * process such as an unscoped `scripts/cleanup.sh` removed the namespaces):
 * every later run would fail too, and numbers around the loss mean nothing.
 */
async function checkIntact(vsw: VswSide, sides: Side[]): Promise<void> {
  if (!daemonAlive()) throw await vsw.daemonDied();
  for (const side of sides) {
    for (const ns of [side.clientNs, side.serverNs]) {
      if (!existsSync(`/run/netns/${ns}`)) {
        throw new BenchError(`network namespace ${ns} disappeared while the bench ran: something else removed it (another vswt cleanup?).`);
      }
    }
  }
}

interface RssSample {
  /** Seconds since the soak test started. */
  t: number;
  rssKiB: number | null;
}

interface SoakResult {
  seconds: number;
  error?: string;
  tcp?: TcpResult;
  daemonCpuPercent?: number | null;
  rssBeforeKiB: number | null;
  rssAfterKiB?: number | null;
  rssMaxKiB?: number | null;
  /** Last sample minus first sample under load. */
  rssGrowthKiB?: number | null;
  samples: RssSample[];
}

async function soak(vsw: VswSide, side: Side, seconds: number): Promise<SoakResult> {
  console.error(`bench: soak: one ${seconds} s TCP run on vsw, daemon RSS every ${SOAK_SAMPLE_MS / 1000} s`);
  const samples: RssSample[] = [];
  const rssBefore = await procStatusKiB(vsw.pid, 'VmRSS');
  const meter = new CpuMeter(vsw.pid, clkTck);
  const t0 = performance.now();
  let tcp: TcpResult;
  try {
    const doc = await iperf(side, 'tcp', seconds, async (client) => {
      await meter.begin();
      const finished = client.then(() => true, () => true);
      for (;;) {
        if (await Promise.race([sleep(SOAK_SAMPLE_MS).then(() => false), finished])) break;
        const rss = await procStatusKiB(vsw.pid, 'VmRSS');
        samples.push({ t: Math.round((performance.now() - t0) / 1000), rssKiB: rss });
        console.error(`bench: soak: t=${samples.at(-1)!.t}s RSS ${fmtMiB(rss)} MiB`);
      }
    });
    tcp = tcpResult(doc);
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    console.error(`bench: soak failed: ${(err as Error).message}`);
    return { seconds, error: (err as Error).message, rssBeforeKiB: rssBefore, samples };
  }
  const cpu = await meter.end();
  const rssAfter = await procStatusKiB(vsw.pid, 'VmRSS');
  const values = samples.map((s) => s.rssKiB).filter((v): v is number => v !== null);
  // Growth is taken from the first in-load sample: the step from idle to loaded is buffers filling once, not a leak.
  const growth = values.length >= 2 ? values[values.length - 1] - values[0] : null;
  return {
    seconds,
    tcp,
    daemonCpuPercent: cpu,
    rssBeforeKiB: rssBefore,
    rssAfterKiB: rssAfter,
    rssMaxKiB: values.length ? Math.max(...values) : null,
    rssGrowthKiB: growth,
    samples,
  };
}

// ---------------------------------------------------------------- policy and qos scenarios

/**
 * One TCP stream through vsw with POLICY_RULES[i] block rules on each of the
 * two ports (installed by one PUT of a group per endpoint before each run),
 * and through the bridge, in the same run. The rules never match the stream,
 * so every new flow is looked up against all of them, and the established
 * stream must not look at any: the ratio many/few says whether rule count
 * costs anything once a flow is cached. (Per-flow setup cost with many rules
 * is what `npm run bench:vfp` measures, without the kernel.)
 */
async function policyScenario(vsw: VswSide, vs: Side, bs: Side, opts: Options): Promise<RunRecord[]> {
  await vsw.checkPolicyApi(vs);
  const out: RunRecord[] = [];
  const legs: (number | null)[] = [...POLICY_RULES, null];
  try {
    for (let run = 1; run <= opts.runs; run++) {
      // Rotate the order, so that over the runs each leg goes first, in the middle and last alike.
      const k = (run - 1) % legs.length;
      for (const rules of [...legs.slice(k), ...legs.slice(0, k)]) {
        if (rules === null) {
          out.push(await measure(vsw, bs, 'policy', opts.time, run, { variant: 'bridge' }));
          continue;
        }
        const extra: Partial<RunRecord> = { variant: `${rules} rules`, rules };
        try {
          extra.installSeconds = await vsw.installRules(vs, rules);
        } catch (err) {
          if (err instanceof Interrupted || !daemonAlive()) throw err;
          const rec: RunRecord = { test: 'policy', side: 'vsw', ...extra, run, ok: false, error: (err as Error).message };
          console.error(`bench: policy run ${run} vsw ${rules} rules: failed: ${rec.error}`);
          out.push(rec);
          continue;
        }
        out.push(await measure(vsw, vs, 'policy', opts.time, run, extra));
      }
    }
  } finally {
    if (daemonAlive()) await vsw.removeRules(vs);
  }
  return out;
}

/**
 * One TCP stream from the client endpoint while its egress is capped
 * (PUT /v1/endpoints/:ep/qos): the cap limits what the endpoint sends, and
 * the iperf3 client sends. Measured is the receiver's rate; the ratio to the
 * cap should be close to 1.
 */
async function qosScenario(vsw: VswSide, vs: Side, opts: Options): Promise<RunRecord[]> {
  await vsw.checkPolicyApi(vs);
  const out: RunRecord[] = [];
  try {
    for (let run = 1; run <= opts.runs; run++) {
      const order = run % 2 === 1 ? QOS_CAPS : [...QOS_CAPS].reverse();
      for (const cap of order) {
        const extra: Partial<RunRecord> = { variant: cap.rate, capBps: cap.bps };
        try {
          await vsw.setQos(vs, cap.rate);
        } catch (err) {
          if (err instanceof Interrupted || !daemonAlive()) throw err;
          const rec: RunRecord = { test: 'qos', side: 'vsw', ...extra, run, ok: false, error: (err as Error).message };
          console.error(`bench: qos run ${run} vsw ${cap.rate}: failed: ${rec.error}`);
          out.push(rec);
          continue;
        }
        out.push(await measure(vsw, vs, 'qos', opts.time, run, extra));
      }
    }
  } finally {
    if (daemonAlive()) await vsw.clearQos(vs);
  }
  return out;
}

// ---------------------------------------------------------------- nat scenario

/** The two paths of the nat scenario as Sides, for measure() and waitReachable(). */
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
 * Waits until the nat network's pool for `proto` has `need` ports that no
 * live translation holds: a closed TCP connection keeps its port for the
 * 10 s of TIME_WAIT, a UDP flow for 60 s after its last packet, so back-to-back
 * runs could otherwise find the pool short and measure refusals.
 */
async function waitNatPorts(vsw: VswSide, network: string, proto: ConnProto, need: number): Promise<NatState> {
  const free = (s: NatState): number => s.counters.poolSize - (s.live[proto] ?? 0);
  let state = await vsw.natState(network);
  if (free(state) >= need) return state;
  console.error(`bench: nat: waiting for ${need} free ${proto} NAT ports (${state.live[proto] ?? 0} of ${state.counters.poolSize} held by recent flows)`);
  const deadline = Date.now() + 90_000;
  while (free(state) < need && Date.now() < deadline) {
    // Not faster: every GET /v1/nat lists every live translation (megabytes of JSON at these counts).
    await sleep(2000);
    state = await vsw.natState(network);
  }
  return state;
}

/** When each block of source ports was last used, by side, protocol and block (measureConnRate). */
const blockUsed = new Map<string, number>();

/**
 * One run of the connection-rate generator: from the container through the
 * NAT (side nat), from the reference container through vsw without NAT
 * (vsw), or inside the outside namespace over loopback (loopback: no switch,
 * the generator's own ceiling on this machine). Through the NAT, the
 * gateway's counters are read before and after: every exchange should have
 * created one translation, and none should have been refused.
 */
async function measureConnRate(
  vsw: VswSide,
  t: NatTopology,
  sides: { nat: Side; noNat: Side },
  side: SideName,
  proto: ConnProto,
  run: number,
  opts: Options,
): Promise<RunRecord> {
  const variant = proto === 'tcp' ? NAT_VARIANTS.connTcp : NAT_VARIANTS.connUdp;
  const rec: RunRecord = { test: 'nat', side, variant, run, ok: false };
  const leg = side === 'nat' ? { ns: t.containerNs, host: t.outsideIp } : side === 'vsw' ? { ns: t.internalClientNs, host: t.outsideInternalIp } : { ns: t.outsideNs, host: '127.0.0.1' };
  const exchanges = CONNRATE_WARMUP + opts.conns;
  const ports = sourcePorts(run, exchanges);
  try {
    // Through vsw (with NAT or without), a block of source ports must have gone cold first: see BLOCK_COLD_MS.
    const key = `${side}/${proto}/${ports.block}`;
    const rest = (blockUsed.get(key) ?? -Infinity) + BLOCK_COLD_MS - Date.now();
    if (side !== 'loopback' && rest > 0) {
      console.error(`bench: nat: waiting ${(rest / 1000).toFixed(0)} s until the ${side} ${proto} source ports of run ${run} have gone cold (their last use was under ${BLOCK_COLD_MS / 1000} s ago)`);
      await sleep(rest);
    }
    const before = side === 'nat' ? await waitNatPorts(vsw, t.network, proto, exchanges) : null;
    const meter = side === 'loopback' ? null : new CpuMeter(vsw.pid, clkTck);
    await meter?.begin();
    let r: ConnRateResult;
    try {
      r = await connRate(leg.ns, CONNRATE, { proto, host: leg.host, total: opts.conns, concurrency: opts.concurrency, srcPortFirst: ports.first });
    } finally {
      blockUsed.set(key, Date.now());
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
      const after = await vsw.natState(t.network);
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
    await checkIntact(vsw, [sides.nat, sides.noNat]);
    if (side === 'nat') rec.error += await natPathHint();
  }
  return rec;
}

/**
 * Per run, in this order: iperf3 TCP and TCP -R through the NAT and without
 * it (which path goes first alternates from run to run), then the connection
 * rate for TCP and for UDP through the NAT, without it, and over loopback.
 */
async function natScenario(vsw: VswSide, t: NatTopology, internalSubnet: string, opts: Options): Promise<RunRecord[]> {
  const sides = natSides(t, internalSubnet);
  await waitReachable(sides.nat);
  await waitReachable(sides.noNat);
  console.error(
    `bench: nat: ${t.containerIp} -> ${t.outsideIp} through ${t.network} (external ${t.externalIp}), ` +
      `${t.internalClientIp} -> ${t.outsideInternalIp} without NAT; ${opts.conns} exchanges per connection-rate run, ${opts.concurrency} in flight`,
  );
  const server = await startConnServer(t.outsideNs, CONNRATE);
  const out: RunRecord[] = [];
  try {
    for (let run = 1; run <= opts.runs; run++) {
      const order = run % 2 === 1 ? [sides.nat, sides.noNat] : [sides.noNat, sides.nat];
      for (const reverse of [false, true]) {
        for (const side of order) {
          // Through the NAT, the host TAP's drops say whether the kernel outran vsw's reads (retransmits with -R).
          const before = side.name === 'nat' ? await linkDrops(t.network) : null;
          const rec = await measure(vsw, side, 'nat', opts.time, run, { variant: reverse ? NAT_VARIANTS.tcpReverse : NAT_VARIANTS.tcp, reverse });
          const after = before ? await linkDrops(t.network) : null;
          if (before && after) rec.hostTapDrops = { txDropped: after.txDropped - before.txDropped, rxDropped: after.rxDropped - before.rxDropped };
          rec.daemonRssAfterKiB = await procStatusKiB(vsw.pid, 'VmRSS');
          out.push(rec);
        }
      }
      for (const proto of ['tcp', 'udp'] as const) {
        for (const side of [...order.map((s) => s.name), 'loopback' as const]) {
          const rec = await measureConnRate(vsw, t, sides, side, proto, run, opts);
          rec.daemonRssAfterKiB = await procStatusKiB(vsw.pid, 'VmRSS');
          out.push(rec);
        }
      }
    }
  } finally {
    await stop(server, 1000);
  }
  return out;
}

// ---------------------------------------------------------------- report

/** Gbit/s with two decimals, or Mbit/s with one below 1 Gbit/s (the qos caps). */
function fmtBps(bps: number): string {
  return bps >= 1e9 ? `${(bps / 1e9).toFixed(2)} Gbit/s` : `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

function fmtMiB(kib: number | null | undefined): string {
  return typeof kib === 'number' ? (kib / 1024).toFixed(1) : '-';
}

interface SummaryRow {
  scenario: string;
  unit: string;
  vsw: number | null;
  bridge: number | null;
  /** vsw/bridge, for the rows where a ratio means something (rates, not counts of losses). */
  ratio: number | null;
  digits: number;
}

function summarize(records: RunRecord[], daemon: Record<string, number | null>, soakResult: SoakResult | null): SummaryRow[] {
  const pick = (test: Test, side: SideName, f: (r: RunRecord) => number | null | undefined): number | null =>
    median(records.filter((r) => r.ok && r.test === test && r.side === side).map(f));
  const rows: SummaryRow[] = [];
  const pair = (scenario: string, unit: string, test: Test, f: (r: RunRecord) => number | null | undefined, withRatio: boolean, digits: number): void => {
    if (!records.some((r) => r.test === test)) return;
    const v = pick(test, 'vsw', f);
    const b = pick(test, 'bridge', f);
    rows.push({ scenario, unit, vsw: v, bridge: b, ratio: withRatio ? ratio(v, b) : null, digits });
  };
  const only = (scenario: string, unit: string, v: number | null, digits: number): void => {
    rows.push({ scenario, unit, vsw: v, bridge: null, ratio: null, digits });
  };
  const pickVariant = (test: Test, variant: string, f: (r: RunRecord) => number | null | undefined): number | null =>
    median(records.filter((r) => r.ok && r.test === test && r.variant === variant).map(f));
  const gbps = (r: RunRecord): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);
  pair('TCP 1 stream', 'Gbit/s', 'tcp', gbps, true, 2);
  pair('TCP retransmits', 'per run', 'tcp', (r) => r.tcp?.retransmits, false, 0);
  pair('UDP 64 B received', 'kpps', 'udp', (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), true, 0);
  pair('UDP 64 B sent', 'kpps', 'udp', (r) => (r.udp ? r.udp.sentPacketsPerSecond / 1e3 : null), true, 0);
  pair('UDP 64 B lost', '%', 'udp', (r) => r.udp?.lostPercent, false, 1);
  if (records.some((r) => r.test === 'policy')) {
    const bridge = pickVariant('policy', 'bridge', gbps);
    for (const n of POLICY_RULES) {
      const v = pickVariant('policy', `${n} rules`, gbps);
      rows.push({ scenario: `TCP 1 stream, ${n} ACL rules/port`, unit: 'Gbit/s', vsw: v, bridge, ratio: ratio(v, bridge), digits: 2 });
    }
    const bridgeRetr = pickVariant('policy', 'bridge', (r) => r.tcp?.retransmits);
    for (const n of POLICY_RULES) {
      const v = pickVariant('policy', `${n} rules`, (r) => r.tcp?.retransmits);
      rows.push({ scenario: `TCP retransmits, ${n} ACL rules/port`, unit: 'per run', vsw: v, bridge: bridgeRetr, ratio: null, digits: 0 });
    }
    const n = POLICY_RULES[POLICY_RULES.length - 1];
    only(`PUT of a ${n}-rule group`, 's per endpoint', median(records.filter((r) => r.rules === n).flatMap((r) => r.installSeconds ?? [])), 2);
  }
  for (const cap of records.some((r) => r.test === 'qos') ? QOS_CAPS : []) {
    only(`TCP 1 stream, egress cap ${cap.rate}`, 'Mbit/s', pickVariant('qos', cap.rate, (r) => (r.tcp ? r.tcp.bitsPerSecond / 1e6 : null)), 1);
    only(`TCP retransmits, egress cap ${cap.rate}`, 'per run', pickVariant('qos', cap.rate, (r) => r.tcp?.retransmits), 0);
  }
  if (records.some((r) => r.test === 'tcp')) only('daemon CPU during TCP', '% of a core', pick('tcp', 'vsw', (r) => r.daemonCpuPercent), 0);
  if (records.some((r) => r.test === 'udp')) only('daemon CPU during UDP', '% of a core', pick('udp', 'vsw', (r) => r.daemonCpuPercent), 0);
  const mib = (k: number | null | undefined): number | null => (typeof k === 'number' ? k / 1024 : null);
  only('daemon RSS idle, 2 ports', 'MiB', mib(daemon.rssIdleKiB), 1);
  if (daemon.rssAfterTcpKiB !== undefined) only('daemon RSS after TCP runs', 'MiB', mib(daemon.rssAfterTcpKiB), 1);
  if (daemon.rssAfterUdpKiB !== undefined) only('daemon RSS after UDP runs', 'MiB', mib(daemon.rssAfterUdpKiB), 1);
  if (daemon.rssAfterPolicyKiB !== undefined) only(`daemon RSS after policy runs (${POLICY_RULES[POLICY_RULES.length - 1]} rules/port)`, 'MiB', mib(daemon.rssAfterPolicyKiB), 1);
  if (daemon.rssAfterQosKiB !== undefined) only('daemon RSS after qos runs', 'MiB', mib(daemon.rssAfterQosKiB), 1);
  if (daemon.rssAfterNatKiB !== undefined) only('daemon RSS after nat runs', 'MiB', mib(daemon.rssAfterNatKiB), 1);
  only('daemon peak RSS (VmHWM)', 'MiB', mib(daemon.hwmKiB), 1);
  if (soakResult) {
    const s = soakResult;
    only(`soak ${s.seconds} s TCP`, 'Gbit/s', s.tcp ? s.tcp.bitsPerSecond / 1e9 : null, 2);
    only('soak RSS growth, first to last sample', 'MiB', mib(s.rssGrowthKiB), 1);
    only('soak RSS max', 'MiB', mib(s.rssMaxKiB), 1);
  }
  return rows;
}

/** The ratios the policy and qos scenarios are judged by (nat: natChecks); reported, never turned into a failure. */
function checks(records: RunRecord[]): Check[] {
  const out: Check[] = [];
  const med = (test: Test, variant: string): number | null =>
    median(records.filter((r) => r.ok && r.test === test && r.variant === variant).map((r) => r.tcp?.bitsPerSecond));
  const check = (what: string, value: number | null, bar: string, ok: (v: number) => boolean): void => {
    out.push(judge(what, value, bar, ok));
  };
  if (records.some((r) => r.test === 'policy')) {
    const few = POLICY_RULES[0];
    const many = POLICY_RULES[POLICY_RULES.length - 1];
    check(`policy: vsw TCP with ${many} / with ${few} rules per port`, ratio(med('policy', `${many} rules`), med('policy', `${few} rules`)), '>= 0.9', (v) => v >= 0.9);
    for (const n of POLICY_RULES) {
      check(`policy: vsw TCP with ${n} rules per port / bridge`, ratio(med('policy', `${n} rules`), med('policy', 'bridge')), '>= 0.5', (v) => v >= 0.5);
    }
  }
  if (records.some((r) => r.test === 'qos')) {
    for (const cap of QOS_CAPS) {
      const m = med('qos', cap.rate);
      check(`qos: TCP measured / egress cap ${cap.rate}`, m === null ? null : m / cap.bps, '0.9 - 1.1', (v) => v >= 0.9 && v <= 1.1);
    }
  }
  return out;
}

function printChecks(list: Check[]): void {
  if (list.length === 0) return;
  const w = Math.max(...list.map((c) => c.what.length));
  const values = list.map((c) => (c.value === null ? '-' : c.value.toFixed(c.digits ?? 2)));
  const vw = Math.max(5, ...values.map((v) => v.length));
  console.log('');
  console.log('ratios (medians):');
  list.forEach((c, i) => {
    const verdict = c.bar === null ? '(for reference)' : c.met === null ? 'no data' : c.met ? 'within the bar' : 'MISSES the bar';
    console.log(`  ${c.what.padEnd(w)}  ${values[i].padStart(vw)}  ${c.bar === null ? ''.padEnd(12) : `bar ${c.bar.padEnd(8)}`}  ${verdict}`);
  });
}

const fmtCell = (v: number | null, digits: number): string => (v === null ? '-' : v.toFixed(digits));

function printTable(rows: SummaryRow[]): void {
  const cells = rows.map((r) => [r.scenario, r.unit, fmtCell(r.vsw, r.digits), fmtCell(r.bridge, r.digits), fmtCell(r.ratio, 2)]);
  for (const line of formatTable(['scenario', 'unit', 'vsw', 'bridge', 'vsw/bridge'], cells)) console.log(line);
}

function printNatTable(rows: NatSummaryRow[]): void {
  const cells = rows.map((r) => [r.scenario, r.unit, fmtCell(r.nat, r.digits), fmtCell(r.noNat, r.digits), fmtCell(r.ratio, 2), fmtCell(r.loopback, r.digits)]);
  for (const line of formatTable(['nat scenario', 'unit', 'through NAT', 'vsw, no NAT', 'NAT/no NAT', 'loopback'], cells)) console.log(line);
}

async function machineInfo(): Promise<Record<string, unknown>> {
  const firstLine = async (file: string, args: string[]): Promise<string | null> => {
    const r = await sh(file, args, { allowFail: true });
    return r.code === 0 ? r.stdout.split('\n')[0].trim() : null;
  };
  // With bridge-nf-call-iptables on, bridged frames also traverse iptables: it slows the baseline, so it is recorded.
  const brNf = await readFile('/proc/sys/net/bridge/bridge-nf-call-iptables', 'utf8').then((s) => Number(s.trim()), () => null);
  return {
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? null,
    memTotalMiB: Math.round(os.totalmem() / 2 ** 20),
    kernel: os.release(),
    node: process.version,
    iperf3: await firstLine('iperf3', ['--version']),
    bridgeNfCallIptables: brNf,
    vswCommit: await firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
  };
}

// ---------------------------------------------------------------- main

/** vswt + 4 hex digits that no namespace, link or work directory uses yet (another run, or a leftover). */
async function freshPrefix(): Promise<string> {
  const netns = (await sh('ip', ['netns', 'list'])).stdout;
  const links = (await sh('ip', ['-o', 'link', 'show'])).stdout;
  for (;;) {
    const prefix = `vswt${randomBytes(2).toString('hex')}`;
    if (!netns.includes(prefix) && !links.includes(prefix) && !existsSync(`/tmp/${prefix}`)) return prefix;
  }
}

async function bench(opts: Options): Promise<number> {
  await preflight(opts.tests);
  const clk = await sh('getconf', ['CLK_TCK'], { allowFail: true });
  clkTck = Number(clk.stdout.trim()) || 100;

  // Fail on an unwritable --out now, not after minutes of measuring.
  await mkdir(path.dirname(opts.out), { recursive: true });
  const prefix = await freshPrefix();
  const workDir = `/tmp/${prefix}`;
  console.error(`bench: prefix ${prefix}, ${opts.runs} run(s) of ${opts.time} s per test and side${opts.soak ? `, soak ${opts.soak} s` : ''}`);
  cleanup.add(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
  await mkdir(workDir, { recursive: true });

  if (opts.profile) await mkdir(opts.profile, { recursive: true });
  const vsw = new VswSide(prefix, workDir, opts.profile ? ['--cpu-prof', '--cpu-prof-dir', opts.profile] : []);
  try {
    const machine = await machineInfo();
    const v = await vsw.setup([]);
    // qos and nat have baselines of their own (the cap; vsw without NAT): the bridge is for the others.
    const b = opts.tests.some((t) => t === 'tcp' || t === 'udp' || t === 'policy') ? await setupBridge(prefix, [v.prefix]) : null;
    await waitReachable(v.side);
    if (b) await waitReachable(b.side);
    console.error(`bench: vsw ${v.side.clientIp} -> ${v.side.serverIp} (mtu ${v.side.mtu})${b ? `, bridge ${b.side.clientIp} -> ${b.side.serverIp} (mtu ${b.side.mtu})` : ''}`);

    // Idle: two ports, one ping's worth of learning, nothing flowing.
    await sleep(1000);
    const daemon: Record<string, number | null> = { rssIdleKiB: await procStatusKiB(vsw.pid, 'VmRSS') };

    const records: RunRecord[] = [];
    let nat: { topology: NatTopology; state: NatState | null } | null = null;
    let overlay: { topology: Record<string, unknown>; daemonRssAfterKiB: Record<string, number | null> } | null = null;
    for (const test of opts.tests) {
      if (opts.runs === 0) break;
      if (test === 'policy') {
        records.push(...(await policyScenario(vsw, v.side, b!.side, opts)));
      } else if (test === 'qos') {
        records.push(...(await qosScenario(vsw, v.side, opts)));
      } else if (test === 'nat') {
        // Built only now, so that the idle RSS above is that of two ports and the other tests run as before.
        const topology = await setupNat({
          prefix,
          onCleanup: (what, fn) => cleanup.add(what, fn),
          netnsAdd,
          deleteLink,
          cli: (args, o) => vsw.cli(args, o),
          daemonAlive,
          addEndpoint: (net, ns) => vsw.addEndpoint(net, ns),
          internalNetwork: vsw.network,
          taken: [v.prefix, ...(b ? [b.prefix] : [])],
        });
        records.push(...(await natScenario(vsw, topology, v.side.subnet, opts)));
        nat = { topology, state: await vsw.natState(topology.network).catch(() => null) };
      } else if (test === 'overlay') {
        // Lab daemons of its own (scripts/lab-lib.ts), beside the bench's; a setup that fails (a tree
        // without overlay networks) is one failed record, so the scenarios measured before still get written.
        const h = { prefix, onCleanup: (what: string, fn: () => Promise<void>) => cleanup.add(what, fn), clkTck, runs: opts.runs, time: opts.time };
        let topology: Awaited<ReturnType<typeof setupOverlay>>;
        try {
          topology = await setupOverlay(h);
        } catch (err) {
          if (err instanceof Interrupted) throw err;
          console.error(`bench: overlay: setup failed: ${(err as Error).message}`);
          records.push({ test: 'overlay', side: 'vsw', variant: 'setup', run: 0, ok: false, error: (err as Error).message });
          continue;
        }
        records.push(...(await overlayScenario(h, topology)));
        overlay = { topology: overlayTopologyJson(topology), daemonRssAfterKiB: await overlayDaemonRss(topology) };
      } else {
        for (let run = 1; run <= opts.runs; run++) {
          // Alternate which side goes first so that a slow drift (thermal, a neighbour) does not favour one.
          const order = run % 2 === 1 ? [v.side, b!.side] : [b!.side, v.side];
          for (const side of order) records.push(await measure(vsw, side, test, opts.time, run));
        }
      }
      daemon[`rssAfter${test[0].toUpperCase()}${test.slice(1)}KiB`] = await procStatusKiB(vsw.pid, 'VmRSS');
    }
    const soakResult = opts.soak > 0 ? await soak(vsw, v.side, opts.soak) : null;
    daemon.hwmKiB = await procStatusKiB(vsw.pid, 'VmHWM');

    const summary = summarize(records, daemon, soakResult);
    const natRows = natSummary(records);
    const overlayRows = overlaySummary(records);
    const ratios = [...checks(records), ...natChecks(records), ...overlayChecks(records)];
    const failed = records.filter((r) => !r.ok).length + (soakResult?.error ? 1 : 0);
    const result = {
      bench: 'vsw vs Linux bridge (veth), iperf3',
      timestamp: new Date().toISOString(),
      prefix,
      options: {
        runs: opts.runs,
        time: opts.time,
        soak: opts.soak,
        tests: opts.tests,
        policyRules: POLICY_RULES,
        qosCaps: QOS_CAPS.map((c) => c.rate),
        ...(opts.tests.includes('nat') ? { natConns: opts.conns, natConcurrency: opts.concurrency, natWarmup: CONNRATE_WARMUP } : {}),
      },
      machine,
      topology: { vsw: v.side, bridge: b?.side ?? null, ...(nat ? { nat: nat.topology } : {}), ...(overlay ? { overlay: overlay.topology } : {}) },
      summary: summary.map(({ digits: _digits, ...row }) => row),
      ...(nat ? { nat: { summary: natRows.map(({ digits: _digits, ...row }) => row), state: nat.state } } : {}),
      ...(overlayRows.length ? { overlay: { summary: overlayRows.map(({ digits: _digits, ...row }) => row), daemonRssAfterKiB: overlay?.daemonRssAfterKiB ?? null } } : {}),
      ratios,
      daemon,
      soak: soakResult,
      runs: records,
    };

    console.log('');
    console.log(`vsw bench: ${machine.nproc} cores, kernel ${machine.kernel}, node ${machine.node}, ${opts.runs} run(s) x ${opts.time} s, medians`);
    printTable(summary);
    if (natRows.length > 0) {
      console.log('');
      printNatTable(natRows);
    }
    if (overlayRows.length > 0) {
      console.log('');
      for (const line of overlayTable(overlayRows)) console.log(line);
    }
    printChecks(ratios);
    await mkdir(path.dirname(opts.out), { recursive: true });
    await writeFile(opts.out, JSON.stringify(result, null, 2) + '\n');
    console.log('');
    const rel = path.relative(process.cwd(), opts.out);
    console.log(`results written to ${rel && !rel.startsWith('..') ? rel : opts.out}`);
    if (failed) {
      console.error(`bench: ${failed} of ${records.length + (soakResult ? 1 : 0)} runs failed; their errors are in the JSON file.`);
      return 1;
    }
    return 0;
  } catch (err) {
    // A dead daemon's log tail is already in the error (daemonDied).
    if (!(err instanceof Interrupted) && daemonAlive()) {
      const tail = await logTail(vsw.logPath, 10);
      if (tail) console.error(`bench: the end of the daemon's log (${vsw.logPath}):\n${tail}`);
    }
    throw err;
  }
}

let signalled: NodeJS.Signals | null = null;

function onSignal(sig: NodeJS.Signals): void {
  if (signalled) return;
  signalled = sig;
  console.error(`bench: ${sig}: stopping and removing everything the bench created`);
  interrupt.abort();
}

async function main(): Promise<void> {
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Last resort if something escapes the finally below: no orphaned iperf3 or daemon.
  process.on('exit', () => {
    for (const c of liveChildren) c.kill('SIGKILL');
  });

  let code = 1;
  try {
    const opts = parseOptions(process.argv.slice(2));
    if (!opts) {
      process.stdout.write(HELP);
      code = 0;
    } else {
      code = await bench(opts);
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) {
      console.error(err instanceof BenchError ? `bench: ${err.message}` : err);
    }
    code = 1;
  } finally {
    await cleanup.run();
  }
  if (signalled) code = signalled === 'SIGINT' ? 130 : 143;
  process.exit(code);
}

await main();
