/**
 * `npm run bench:controller`: the network controller at scale (issue 16):
 * --hosts hosts (default 50) with --endpoints endpoints each (default 100)
 * on one overlay network, one etcd member, one controller.
 *
 * Hosts h1..hR (--real, default 3) are real: namespaces on an underlay
 * bridge, each with `vsw daemon --agent` and its data plane, and a real
 * namespace per endpoint. Hosts h(R+1)..hN are SIMULATED: one process each
 * (scripts/bench/sim-agent.ts) running the real Agent against a recording
 * data plane (scripts/bench/recording-host.ts) that applies to memory only.
 * Both kinds watch, reconcile and write status the same way; what a real
 * daemon adds (saving its state, TAPs, the data plane) only the real hosts
 * show, and every table says which is which.
 *
 * Where things run: the underlay namespace PREFIX-ul holds bridge br0; the
 * real hosts PREFIX-hI hang off it (eth0 = U.(10+I)/24); a veth PREFIX-ul in
 * the bench's own namespace is on br0 too with U.1/24, and etcd listens on
 * U.1. So etcd is reached at one URL by the real hosts' daemons, the
 * controller, the simulated agents and the bench's own etcd client (which
 * watches status keys and reads the key counts), without running any of
 * them through `ip netns exec`. U is a /24 no route of this machine uses
 * (pickFreePrefix), as is the overlay's /16.
 *
 * What it measures:
 *   - build: the network (applied on every host), then N*E endpoints through
 *     the controller's REST API (POST /v1/endpoints, --concurrency at a
 *     time): until every create was answered, every endpoint realized
 *     (/vsw/v1/realized/) and applied (its status), and every host knows
 *     every other host's endpoints as remotes (the real daemons' GET
 *     /v1/overlay?network=NET, what `vsw overlay ls --network NET --json`
 *     prints; the simulated agents' --stats file), with a timeout
 *     (--remotes-timeout), reported as far as it got when it runs out;
 *   - policy rounds: PUT /v1/policies/scale with a rule that changes every
 *     round (block tcp to port 10000+round) over the whole subnet. t0 just
 *     before the request; R = the policy key's mod_revision; a host has
 *     applied the round when every one of its endpoints' group status
 *     (/vsw/v1/status/HOST/groups/ENDPOINT/acl/scale) says applied at a
 *     revision >= R, as seen by the bench's watch. Per round: the time until
 *     every host applied (fleet), and each host's own time. Round 0 creates
 *     the policy and is reported apart; the next round starts once the
 *     fleet applied and the processes are quiet again (CPU under the idle
 *     level plus a margin), which takes a while itself and is reported;
 *   - one endpoint: a group for ONE random endpoint (PUT
 *     /v1/endpoints/NAME/layers/acl/groups/one), time to its status applied;
 *   - etcd: keys and bytes (key + value) under /vsw/ per kind, its db size
 *     (etcdctl endpoint status) and RSS; the controller's, the real
 *     daemons' and the simulated agents' RSS (VmRSS, and VmHWM for peaks);
 *     CPU seconds per component and phase;
 *   - fleet health per phase and round: host keys deleted (an agent's lease
 *     expired: its realized endpoints go with it and every other host
 *     withdraws them), the fewest hosts registered, realized endpoints
 *     withdrawn; and the CPU each simulated agent spent on a round, which
 *     is what a host's agent would spend with cores of its own (here 47
 *     agents share two);
 *   - a restart of one simulated agent at full size: whether and when it
 *     reads the whole state again and re-applies its host.
 *
 * The bench raises its own priority once the agents run (its timestamps
 * should not wait for a CPU), and a run stopped by a failure or a signal
 * still writes what it measured, marked incomplete.
 *
 * Everything carries one prefix (vswt + 4 hex): namespaces, the veth, the
 * processes' arguments (/tmp/PREFIX/...), the directory; all of it is
 * removed at the end, also on failure or Ctrl-C (`npm run cleanup` removes
 * what a killed run left).
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Etcd3, Range, type IKeyValue, type Watcher } from 'etcd3';
import { Keys } from '../src/controller/layout.js';
import {
  BenchError,
  Interrupted,
  apiError,
  apiRequest,
  cmd,
  formatTable,
  intOption,
  interrupt,
  median,
  pickFreePrefix,
  procCpuTicks,
  procStatusKiB,
  seededRandom,
  sleep,
  start,
  stop,
  waitFor,
} from './bench-lib.js';
import { CLI, REPO_ROOT, machineInfo, parseBenchArgs, requireBuilt, requireRoot, requireTools, resultPath, runMain, writeResult } from './bench/runner.js';
import type { RecordingStats } from './bench/recording-host.js';

const NAME = 'bench-controller';
const SIM_AGENT = path.join(REPO_ROOT, 'dist/scripts/bench/sim-agent.js');

const HELP = `usage: npm run bench:controller -- [options]

The network controller at scale: N hosts x E endpoints on one overlay
network, one etcd member. Hosts h1..hR are real (vsw daemon --agent with its
data plane, a namespace per endpoint); the rest are SIMULATED: the real agent
applying to a recording data plane (scripts/bench/recording-host.ts), one
process per host. Measures the build (creates answered, realized, applied,
remotes known everywhere), the time from a policy change to applied on every
host (p50/p99/max over rounds, real and simulated apart), one endpoint's
group, etcd's keys, bytes and db size, and every process's memory. Needs
root, iproute2, etcd and etcdctl (etcd-server, etcd-client) and a built tree.

options:
  --hosts N            hosts (default 50)
  --endpoints N        endpoints per host (default 100)
  --real N             real hosts among them (default 3)
  --rounds N           policy changes measured (default 30), and as many one-endpoint groups
  --concurrency N      endpoint creates in flight (default 8)
  --remotes-timeout S  how long to wait for every host to know every remote (default 900)
  --round-timeout S    how long one round may take before it counts as timed out (default 120)
  --cpu-prof DIR       run the controller, the first real daemon and the first simulated agent
                       with node --cpu-prof, profiles written to DIR when they stop
  --out FILE           JSON results (default bench-results/bench-controller-<timestamp>.json)
  --help               show this text
`;

interface Options {
  hosts: number;
  endpoints: number;
  real: number;
  rounds: number;
  concurrency: number;
  remotesTimeoutS: number;
  roundTimeoutS: number;
  cpuProf: string | null;
  out: string;
}

function parseOptions(argv: string[]): Options | null {
  const v = parseBenchArgs(argv, {
    hosts: { type: 'string' },
    endpoints: { type: 'string' },
    real: { type: 'string' },
    rounds: { type: 'string' },
    concurrency: { type: 'string' },
    'remotes-timeout': { type: 'string' },
    'round-timeout': { type: 'string' },
    'cpu-prof': { type: 'string' },
    out: { type: 'string' },
  });
  if (!v) return null;
  // Up to 200 hosts: their VTEPs are U.11 .. U.210 of the underlay /24.
  const hosts = intOption('hosts', v.hosts, 50, 1, 200);
  const endpoints = intOption('endpoints', v.endpoints, 100, 1, 1000);
  if (hosts * endpoints > 60_000) throw new BenchError(`--hosts ${hosts} x --endpoints ${endpoints} is more than the 60,000 endpoints the bench's /16 holds: ask for fewer.`);
  const real = intOption('real', v.real, Math.min(3, hosts), 0, hosts);
  return {
    hosts,
    endpoints,
    real,
    rounds: intOption('rounds', v.rounds, 30, 1, 1000),
    concurrency: intOption('concurrency', v.concurrency, 8, 1, 256),
    remotesTimeoutS: intOption('remotes-timeout', v['remotes-timeout'], 900, 1, 86_400),
    roundTimeoutS: intOption('round-timeout', v['round-timeout'], 120, 1, 3600),
    cpuProf: v['cpu-prof'] === undefined ? null : path.resolve(v['cpu-prof']),
    out: resultPath(v.out, NAME),
  };
}

const log = (line: string): void => void process.stderr.write(`${NAME}: ${line}\n`);
const secs = (ms: number | null): string => (ms === null ? '-' : (ms / 1000).toFixed(ms < 10_000 ? 2 : 1));
const mib = (kib: number | null): string => (kib === null ? '-' : (kib / 1024).toFixed(1));

/** Nearest-rank percentile; null for no values. */
function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

interface Stats {
  n: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

function stats(values: readonly number[]): Stats {
  return { n: values.length, p50: percentile(values, 50), p99: percentile(values, 99), max: values.length ? Math.max(...values) : null };
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

// ---------------------------------------------------------------- the hosts

interface BenchHost {
  name: string;
  index: number;
  vtep: string;
  real: boolean;
  log: string;
  child: ChildProcess | null;
  /** Real: its namespace, API socket and state directory. */
  netns: string;
  socket: string;
  stateDir: string;
  /** Simulated: the sim agent's --stats file. */
  statsFile: string;
  /** Its endpoints' names and namespaces, in order. */
  endpoints: { name: string; netns: string }[];
  profiled: boolean;
}

interface Proc {
  rssKiB: number | null;
  hwmKiB: number | null;
}

interface MemorySnapshot {
  etcd: Proc;
  controller: Proc;
  real: ({ host: string } & Proc)[];
  sim: { n: number; medianRssKiB: number | null; maxRssKiB: number | null; minRssKiB: number | null; sumRssKiB: number; medianHwmKiB: number | null; maxHwmKiB: number | null };
}

interface EtcdSnapshot {
  revision: number;
  kinds: Record<string, { keys: number; bytes: number }>;
  total: { keys: number; bytes: number };
  dbSize: number | null;
  dbSizeInUse: number | null;
}

/** Since a mark: host keys deleted (lease expiries), the fewest hosts registered, realized endpoints withdrawn, the fewest realized. */
interface FleetHealth {
  hostKeyDeletes: number;
  minRegistered: number;
  realizedDeletes: number;
  minRealized: number;
}

interface CpuSnapshot {
  etcd: number;
  controller: number;
  real: number;
  sim: number;
}

/** A status key of a group on one endpoint, as the watch last saw it. */
interface GroupStatus {
  state: string;
  revision: number;
  at: number;
}

/**
 * One measured change: the status keys it must turn applied (key -> host),
 * R once read, and per host the time the last of its keys got there.
 */
interface Round {
  t0: number;
  targets: Map<string, string>;
  expected: Map<string, number>;
  revision: number | null;
  settled: Set<string>;
  perHostCount: Map<string, number>;
  perHostAt: Map<string, number>;
  failed: Map<string, string>;
  done: () => void;
}

class Bench {
  readonly prefix: string;
  readonly dir: string;
  readonly controllerSocket: string;
  readonly network: string;
  /** The underlay /24's first three octets, and the bench's own address on it (where etcd listens). */
  underlay = '';
  etcdUrl = '';
  subnet = '';
  vni = 0;
  etcd: ChildProcess | null = null;
  controller: ChildProcess | null = null;
  hosts: BenchHost[] = [];
  namespaces: string[] = [];
  rootLink: string | null = null;
  client: Etcd3 | null = null;
  watchers: Watcher[] = [];
  clkTck = 100;

  // What the watches saw.
  readonly realized = new Set<string>();
  realizedAllAt: number | null = null;
  readonly endpointApplied = new Set<string>();
  readonly endpointFailed = new Map<string, string>();
  endpointAppliedAllAt: number | null = null;
  readonly networkApplied = new Set<string>();
  readonly networkFailed = new Map<string, string>();
  networkAppliedAllAt: number | null = null;
  readonly groups = new Map<string, GroupStatus>();
  round: Round | null = null;
  statusEvents = 0;
  /** The measurements as they are made: written with the rest when the run stops early. */
  readonly records: { create: RoundRecord | null; rounds: RoundRecord[]; single: SingleRecord[] } = { create: null, rounds: [], single: [] };
  /** Registered hosts (their keys live under the agents' leases), and what went wrong with them since the last mark(). */
  readonly registered = new Set<string>();
  health = { hostKeyDeletes: 0, minRegistered: 0, realizedDeletes: 0, minRealized: 0 };

  constructor(readonly opts: Options) {
    // Other runs share the machine: a prefix whose directory exists is someone else's (every run makes its directory first).
    let prefix: string;
    do prefix = `vswt${randomBytes(2).toString('hex')}`;
    while (existsSync(`/tmp/${prefix}`) || existsSync(`/run/netns/${prefix}-ul`));
    this.prefix = prefix;
    this.dir = `/tmp/${this.prefix}`;
    this.controllerSocket = `${this.dir}/controller.sock`;
    this.network = `${this.prefix}-net`;
  }

  get total(): number {
    return this.opts.hosts * this.opts.endpoints;
  }

  get realHosts(): BenchHost[] {
    return this.hosts.filter((h) => h.real);
  }

  get simHosts(): BenchHost[] {
    return this.hosts.filter((h) => !h.real);
  }

  /** node's arguments before the script: --cpu-prof for the processes to profile. */
  nodeArgs(profiled: boolean, name: string): string[] {
    if (!profiled || this.opts.cpuProf === null) return [];
    return ['--cpu-prof', '--cpu-prof-dir', this.opts.cpuProf, '--cpu-prof-name', `${name}.cpuprofile`];
  }

  /** Starts a long-running child with its output in `logFile`. */
  spawnLogged(file: string, args: string[], logFile: string): ChildProcess {
    const fd = openSync(logFile, 'a');
    try {
      return start(file, args, fd);
    } finally {
      closeSync(fd);
    }
  }

  async api(method: string, url: string, body?: unknown, timeoutMs = 120_000): Promise<unknown> {
    const r = await apiRequest(this.controllerSocket, method, url, body, { timeoutMs });
    if (r.status >= 300) throw new BenchError(`the controller: ${method} ${url}: ${apiError(r)}`);
    return r.body;
  }

  // ---------------------------------------------------------------- setup

  async setup(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    if (this.opts.cpuProf) await mkdir(this.opts.cpuProf, { recursive: true });
    this.clkTck = Number((await cmd('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
    const under = await pickFreePrefix(() => `192.168.${100 + (randomBytes(1)[0] % 150)}.0/24`, [], 'no free /24 in 192.168.100.0-192.168.249.0 for the bench underlay: free one.');
    this.underlay = under.cidr.split('.').slice(0, 3).join('.');
    const over = await pickFreePrefix(() => `10.${150 + (randomBytes(1)[0] % 100)}.0.0/16`, [under.prefix], 'no free /16 in 10.150.0.0-10.249.0.0 for the bench overlay: free one.');
    this.subnet = over.cidr;
    this.vni = 10_000 + (randomBytes(2).readUInt16BE(0) % 50_000);
    this.etcdUrl = `http://${this.underlay}.1:2379`;
    log(`prefix ${this.prefix}; underlay ${under.cidr} (etcd at ${this.etcdUrl}); overlay ${this.subnet}, VNI ${this.vni}`);

    // The underlay: its namespace and bridge, and the bench's namespace on it through a veth.
    const ul = `${this.prefix}-ul`;
    await this.addNamespaces([ul]);
    await cmd('ip', ['-n', ul, 'link', 'add', 'br0', 'type', 'bridge']);
    await cmd('ip', ['-n', ul, 'link', 'set', 'br0', 'up']);
    this.rootLink = ul;
    await cmd('ip', ['link', 'add', ul, 'type', 'veth', 'peer', 'name', 'rt0', 'netns', ul]);
    await cmd('ip', ['-n', ul, 'link', 'set', 'rt0', 'master', 'br0', 'up']);
    // No IPv6 on the bench's end: its router solicitations and MLD reports would only cross the underlay.
    await writeFile(`/proc/sys/net/ipv6/conf/${ul}/disable_ipv6`, '1').catch(() => undefined);
    await cmd('ip', ['addr', 'add', `${this.underlay}.1/24`, 'dev', ul]);
    await cmd('ip', ['link', 'set', ul, 'up']);

    for (let i = 1; i <= this.opts.hosts; i++) {
      const name = `h${i}`;
      const real = i <= this.opts.real;
      const h: BenchHost = {
        name,
        index: i,
        vtep: `${this.underlay}.${10 + i}`,
        real,
        log: `${this.dir}/${real ? 'daemon' : 'sim'}-${name}.log`,
        child: null,
        netns: `${this.prefix}-${name}`,
        socket: `${this.dir}/${name}.sock`,
        stateDir: `${this.dir}/${name}.state`,
        statsFile: `${this.dir}/sim-${name}.json`,
        endpoints: Array.from({ length: this.opts.endpoints }, (_, k) => ({ name: `${name}-e${k + 1}`, netns: `${this.prefix}-${name}-e${k + 1}` })),
        profiled: this.opts.cpuProf !== null && (i === 1 || i === this.opts.real + 1),
      };
      this.hosts.push(h);
    }

    // The real hosts: a namespace on the underlay each, and a namespace per endpoint.
    for (const h of this.realHosts) {
      await this.addNamespaces([h.netns]);
      await cmd('ip', ['-n', ul, 'link', 'add', h.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns]);
      await cmd('ip', ['-n', ul, 'link', 'set', h.name, 'master', 'br0', 'up']);
      await cmd('ip', ['-n', h.netns, 'addr', 'add', `${h.vtep}/24`, 'dev', 'eth0']);
      await cmd('ip', ['-n', h.netns, 'link', 'set', 'eth0', 'up']);
      await this.addNamespaces(h.endpoints.map((e) => e.netns));
    }
    if (this.realHosts.length) log(`namespaces: ${this.realHosts.length} real hosts with ${this.opts.endpoints} endpoint namespaces each`);

    // etcd: one member, data under the run's directory, clients on the underlay address.
    const peer = `http://${this.underlay}.1:2380`;
    this.etcd = this.spawnLogged(
      'etcd',
      [
        '--name', 'e1',
        '--data-dir', `${this.dir}/etcd`,
        '--listen-client-urls', this.etcdUrl,
        '--advertise-client-urls', this.etcdUrl,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `e1=${peer}`,
        '--initial-cluster-token', this.prefix,
        '--logger', 'zap',
        '--log-outputs', 'stderr',
      ],
      `${this.dir}/etcd.log`,
    );
    await waitFor('etcd answering', 30_000, async () => {
      if (this.etcd!.exitCode !== null) throw new BenchError(`etcd exited at start: see ${this.dir}/etcd.log.`);
      const r = await cmd('etcdctl', ['--endpoints', this.etcdUrl, '--dial-timeout', '1s', 'endpoint', 'health'], { allowFail: true, timeoutMs: 10_000 });
      return r.code === 0 ? true : undefined;
    }, 200);

    this.controller = this.spawnLogged(
      process.execPath,
      [...this.nodeArgs(this.opts.cpuProf !== null, 'controller'), CLI, 'controller', '--etcd', this.etcdUrl, '--socket', this.controllerSocket, '--log-level', 'warn'],
      `${this.dir}/controller.log`,
    );
    await waitFor('the controller answering', 30_000, async () => {
      if (this.controller!.exitCode !== null) throw new BenchError(`the controller exited at start: ${await tail(`${this.dir}/controller.log`)}`);
      const r = await apiRequest(this.controllerSocket, 'GET', '/v1/version', undefined, { timeoutMs: 2000 }).catch(() => undefined);
      return r?.status === 200 ? true : undefined;
    }, 100);

    this.client = new Etcd3({ hosts: this.etcdUrl, dialTimeout: 5000 });
    await this.watch();
  }

  /** Namespaces through one `ip -batch` (hundreds of `ip` processes would take longer than what is measured), IPv6 off in each. */
  async addNamespaces(names: string[]): Promise<void> {
    const batch = `${this.dir}/netns.batch`;
    await writeFile(batch, names.map((n) => `netns add ${n}\n`).join(''));
    this.namespaces.push(...names);
    await cmd('ip', ['-batch', batch], { timeoutMs: 300_000 });
    // Without IPv6 an idle endpoint sends nothing: its router solicitations and MLD reports would be flooded to every VTEP.
    await writeFile(batch, names.map((n) => `netns exec ${n} sh -c "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && ip link set lo up"\n`).join(''));
    await cmd('ip', ['-batch', batch], { timeoutMs: 300_000 });
  }

  /** The bench's own watches: status keys (every host's, every kind) and the network's realized endpoints. */
  async watch(): Promise<void> {
    const client = this.client!;
    const status = await client.watch().prefix(Keys.status).create();
    status.on('put', (kv) => this.onStatus(kv, false));
    status.on('delete', (kv) => this.onStatus(kv, true));
    const realized = await client.watch().prefix(Keys.realizedOf(this.network)).create();
    realized.on('put', (kv) => {
      this.realized.add(kv.key.toString());
      if (this.realized.size >= this.total && this.realizedAllAt === null) this.realizedAllAt = performance.now();
    });
    realized.on('delete', (kv) => {
      this.realized.delete(kv.key.toString());
      this.health.realizedDeletes++;
      this.health.minRealized = Math.min(this.health.minRealized, this.realized.size);
    });
    // A host key goes when its agent's lease expires (or the agent stops): counted, since a lost lease takes the host's realized endpoints with it.
    const hosts = await client.watch().prefix(Keys.hosts).create();
    hosts.on('put', (kv) => void this.registered.add(kv.key.toString().slice(Keys.hosts.length)));
    hosts.on('delete', (kv) => {
      this.registered.delete(kv.key.toString().slice(Keys.hosts.length));
      this.health.hostKeyDeletes++;
      this.health.minRegistered = Math.min(this.health.minRegistered, this.registered.size);
    });
    for (const w of [status, realized, hosts]) w.on('error', (err) => log(`the bench's watch failed: ${(err as Error).message}`));
    this.watchers.push(status, realized, hosts);
  }

  private onStatus(kv: IKeyValue, deleted: boolean): void {
    const at = performance.now();
    this.statusEvents++;
    const key = kv.key.toString();
    const [host, kind, ...rest] = key.slice(Keys.status.length).split('/');
    const name = rest.join('/');
    let value: { state?: string; revision?: number; reason?: string } = {};
    if (!deleted) {
      try {
        value = JSON.parse(kv.value.toString()) as typeof value;
      } catch {
        value = {};
      }
    }
    if (kind === 'networks' && name === this.network) {
      if (deleted || value.state !== 'applied') this.networkApplied.delete(host);
      else this.networkApplied.add(host);
      if (value.state === 'failed') this.networkFailed.set(host, value.reason ?? 'no reason given');
      if (this.networkApplied.size >= this.opts.hosts && this.networkAppliedAllAt === null) this.networkAppliedAllAt = at;
    } else if (kind === 'endpoints') {
      if (deleted || value.state !== 'applied') this.endpointApplied.delete(key);
      else this.endpointApplied.add(key);
      if (value.state === 'failed') this.endpointFailed.set(key, value.reason ?? 'no reason given');
      else this.endpointFailed.delete(key);
      if (this.endpointApplied.size >= this.total && this.endpointAppliedAllAt === null) this.endpointAppliedAllAt = at;
    } else if (kind === 'groups') {
      if (deleted) this.groups.delete(key);
      else this.groups.set(key, { state: value.state ?? '?', revision: Number(value.revision ?? 0), at });
      const r = this.round;
      if (r && r.revision !== null && r.targets.has(key)) this.check(r, key);
    }
  }

  /** Starts counting lease expiries and withdrawn endpoints afresh; returns what was counted since the last mark. */
  mark(): FleetHealth {
    const h = { ...this.health };
    this.health = { hostKeyDeletes: 0, minRegistered: this.registered.size, realizedDeletes: 0, minRealized: this.realized.size };
    return h;
  }

  /** Whether `key` now counts for round r (applied or failed at R or later), and whether that completed its host and the round. */
  check(r: Round, key: string): void {
    if (r.settled.has(key)) return;
    const s = this.groups.get(key);
    if (!s || s.revision < r.revision! || (s.state !== 'applied' && s.state !== 'failed')) return;
    r.settled.add(key);
    if (s.state === 'failed') r.failed.set(key, s.state);
    const host = r.targets.get(key)!;
    const n = (r.perHostCount.get(host) ?? 0) + 1;
    r.perHostCount.set(host, n);
    r.perHostAt.set(host, Math.max(r.perHostAt.get(host) ?? 0, s.at));
    if (n === r.expected.get(host)) {
      let all = true;
      for (const [h, want] of r.expected) if ((r.perHostCount.get(h) ?? 0) < want) all = false;
      if (all) r.done();
    }
  }

  // ---------------------------------------------------------------- agents

  async startAgents(): Promise<number> {
    const t0 = performance.now();
    for (const h of this.realHosts) {
      h.child = this.spawnLogged(
        'ip',
        ['netns', 'exec', h.netns, process.execPath, ...this.nodeArgs(h.profiled, `daemon-${h.name}`), CLI, 'daemon', '--socket', h.socket, '--state-dir', h.stateDir, '--log-level', 'warn', '--agent', '--etcd', this.etcdUrl, '--host', h.name, '--vtep', h.vtep],
        h.log,
      );
    }
    for (const h of this.simHosts) {
      h.child = this.spawnLogged(process.execPath, [...this.nodeArgs(h.profiled, `sim-${h.name}`), SIM_AGENT, '--etcd', this.etcdUrl, '--host', h.name, '--vtep', h.vtep, '--stats', h.statsFile], h.log);
    }
    log(`agents: ${this.realHosts.length} real daemons (--agent), ${this.simHosts.length} simulated (sim-agent on a recording data plane) starting`);
    await waitFor(`all ${this.opts.hosts} agents registered`, 180_000, async () => {
      for (const h of this.hosts) {
        if (h.child && h.child.exitCode !== null) throw new BenchError(`${h.name}'s ${h.real ? 'daemon' : 'simulated agent'} exited at start: ${await tail(h.log)}`);
      }
      const n = await this.client!.getAll().prefix(Keys.hosts).count();
      return n >= this.opts.hosts ? true : undefined;
    }, 200);
    for (const k of await this.client!.getAll().prefix(Keys.hosts).keys()) this.registered.add(k.slice(Keys.hosts.length));
    this.mark();
    return performance.now() - t0;
  }

  // ---------------------------------------------------------------- measurements of processes

  async memory(): Promise<MemorySnapshot> {
    const proc = async (c: ChildProcess | null): Promise<Proc> => ({
      rssKiB: c === null || c.pid === undefined ? null : await procStatusKiB(c.pid, 'VmRSS'),
      hwmKiB: c === null || c.pid === undefined ? null : await procStatusKiB(c.pid, 'VmHWM'),
    });
    const sims = await Promise.all(this.simHosts.map((h) => proc(h.child)));
    const rss = sims.map((s) => s.rssKiB).filter((x): x is number => x !== null);
    const hwm = sims.map((s) => s.hwmKiB).filter((x): x is number => x !== null);
    return {
      etcd: await proc(this.etcd),
      controller: await proc(this.controller),
      real: await Promise.all(this.realHosts.map(async (h) => ({ host: h.name, ...(await proc(h.child)) }))),
      sim: {
        n: rss.length,
        medianRssKiB: median(rss),
        maxRssKiB: rss.length ? Math.max(...rss) : null,
        minRssKiB: rss.length ? Math.min(...rss) : null,
        sumRssKiB: rss.reduce((a, b) => a + b, 0),
        medianHwmKiB: median(hwm),
        maxHwmKiB: hwm.length ? Math.max(...hwm) : null,
      },
    };
  }

  async cpu(): Promise<CpuSnapshot> {
    const ticks = async (c: ChildProcess | null): Promise<number> => (c === null || c.pid === undefined ? 0 : ((await procCpuTicks(c.pid)) ?? 0));
    const sum = async (hs: BenchHost[]): Promise<number> => (await Promise.all(hs.map((h) => ticks(h.child)))).reduce((a, b) => a + b, 0);
    return { etcd: await ticks(this.etcd), controller: await ticks(this.controller), real: await sum(this.realHosts), sim: await sum(this.simHosts) };
  }

  cpuSeconds(a: CpuSnapshot, b: CpuSnapshot): CpuSnapshot {
    const d = (k: keyof CpuSnapshot): number => round1((b[k] - a[k]) / this.clkTck);
    return { etcd: d('etcd'), controller: d('controller'), real: d('real'), sim: d('sim') };
  }

  /** CPU of every process of the run together, in cores, over `ms`. */
  async cores(ms: number): Promise<number> {
    const total = (c: CpuSnapshot): number => c.etcd + c.controller + c.real + c.sim;
    const a = await this.cpu();
    const t0 = performance.now();
    await sleep(ms);
    const b = await this.cpu();
    return (total(b) - total(a)) / this.clkTck / ((performance.now() - t0) / 1000);
  }

  quietCores = 0.2;

  /**
   * Until the run's processes are quiet again: a 0.5 s window in which
   * together they used no more CPU than at idle plus a margin. After the
   * last status is written the agents still take in each other's status
   * writes (every agent watches everything), and the next round should not
   * be measured on top of that. Null after maxMs.
   */
  async waitQuiet(maxMs: number): Promise<number | null> {
    const t0 = performance.now();
    for (;;) {
      const c = await this.cores(500);
      const t = performance.now() - t0;
      if (c <= this.quietCores) return t;
      if (t > maxMs) return null;
    }
  }

  /** Keys and bytes (key + value) under /vsw/ per kind, read in pages at one revision (one read of everything would pass gRPC's 4 MiB message limit). */
  async etcdSnapshot(): Promise<EtcdSnapshot> {
    const client = this.client!;
    const kinds: Record<string, { keys: number; bytes: number }> = {};
    const add = (kind: string, bytes: number): void => {
      kinds[kind] ??= { keys: 0, bytes: 0 };
      kinds[kind].keys++;
      kinds[kind].bytes += bytes;
    };
    const end = Range.prefix('/vsw/').end;
    let from: Buffer = Buffer.from('/vsw/');
    let revision: string | null = null;
    for (;;) {
      let q = client.getAll().inRange(new Range(from, end)).limit(2000);
      if (revision !== null) q = q.revision(revision);
      const res = await q.exec();
      revision ??= res.header.revision;
      for (const kv of res.kvs) {
        const key = kv.key.toString();
        const parts = key.startsWith('/vsw/v1/') ? key.slice('/vsw/v1/'.length).split('/') : [key.slice('/vsw/'.length)];
        const bytes = kv.key.length + kv.value.length;
        add(parts[0], bytes);
        // Status per kind of object too: that is where the writes of a rollout go.
        if (parts[0] === 'status') add(`status/${parts[2]}`, bytes);
      }
      if (!res.more || res.kvs.length === 0) break;
      from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
    let keys = 0;
    let bytes = 0;
    for (const [k, v] of Object.entries(kinds)) {
      if (k.includes('/')) continue;
      keys += v.keys;
      bytes += v.bytes;
    }
    const st = await cmd('etcdctl', ['--endpoints', this.etcdUrl, 'endpoint', 'status', '-w', 'json'], { allowFail: true });
    let dbSize: number | null = null;
    let dbSizeInUse: number | null = null;
    try {
      const s = (JSON.parse(st.stdout) as { Status: { dbSize?: number; dbSizeInUse?: number } }[])[0].Status;
      dbSize = s.dbSize ?? null;
      dbSizeInUse = s.dbSizeInUse ?? null;
    } catch {
      log(`etcdctl endpoint status printed no JSON: ${st.stderr.trim()}`);
    }
    return { revision: Number(revision), kinds, total: { keys, bytes }, dbSize, dbSizeInUse };
  }

  // ---------------------------------------------------------------- remotes

  /** How many remote endpoints each host knows on the network: the real daemons' API, the simulated agents' stats files. */
  async remoteCounts(): Promise<Map<string, number | null>> {
    const out = new Map<string, number | null>();
    await Promise.all(
      this.hosts.map(async (h) => {
        if (h.real) {
          const r = await apiRequest(h.socket, 'GET', `/v1/overlay?network=${encodeURIComponent(this.network)}`, undefined, { timeoutMs: 30_000 }).catch(() => null);
          const list = r?.status === 200 ? (r.body as { remotes?: unknown[] }[]) : null;
          out.set(h.name, list ? (list[0]?.remotes?.length ?? 0) : null);
        } else {
          out.set(h.name, (await readStats(h.statsFile))?.remotes ?? null);
        }
      }),
    );
    return out;
  }

  // ---------------------------------------------------------------- cleanup

  async cleanup(): Promise<void> {
    for (const w of this.watchers) await w.cancel().catch(() => undefined);
    this.client?.close();
    // Simulated agents first, then the daemons (they still talk to etcd while they stop), the controller, etcd last.
    const grace = (h: BenchHost): number => (h.profiled ? 120_000 : 10_000);
    await Promise.all(this.simHosts.filter((h) => h.child).map((h) => stop(h.child!, grace(h))));
    await Promise.all(this.realHosts.filter((h) => h.child).map((h) => stop(h.child!, grace(h))));
    for (const h of this.realHosts) {
      if (!existsSync(h.stateDir)) continue;
      await cmd('ip', ['netns', 'exec', h.netns, process.execPath, CLI, 'system', 'reset', '--state-dir', h.stateDir], { cleanup: true, allowFail: true, timeoutMs: 300_000 });
    }
    if (this.controller) await stop(this.controller, this.opts.cpuProf ? 120_000 : 10_000);
    if (this.etcd) await stop(this.etcd, 10_000);
    if (this.namespaces.length > 0) {
      const batch = `${this.dir}/netns-del.batch`;
      await writeFile(batch, this.namespaces.map((n) => `netns delete ${n}\n`).join(''));
      await cmd('ip', ['-force', '-batch', batch], { cleanup: true, allowFail: true, timeoutMs: 300_000 });
    }
    // Its peer went with the underlay namespace, and the veth with it; this is for a run stopped in between.
    if (this.rootLink) await cmd('ip', ['link', 'delete', 'dev', this.rootLink], { cleanup: true, allowFail: true });
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The code measured: the checkout's commit, and the files under src/ and native/src/ that differ from it (the agent and controller run from this tree). */
async function sourceInfo(): Promise<{ commit: string | null; uncommitted: string[] | null }> {
  const head = await cmd('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'], { allowFail: true });
  const st = await cmd('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--', 'src', 'native/src'], { allowFail: true });
  return {
    commit: head.code === 0 ? head.stdout.trim() : null,
    uncommitted: st.code === 0 ? st.stdout.split('\n').filter(Boolean).map((l) => l.slice(3)) : null,
  };
}

/** The bench's own niceness lowered to -10 (root may); the niceness it runs at. */
function raisePriority(): number {
  try {
    os.setPriority(-10);
  } catch {
    // Not allowed: the timestamps then include the bench's wait for a CPU.
  }
  return os.getPriority();
}

/** Warnings and errors of every agent's, daemon's and the controller's log, by host. */
async function allWarnings(b: Bench): Promise<Record<string, Record<string, number>>> {
  const warn: Record<string, Record<string, number>> = {};
  for (const h of b.hosts) {
    const w = await warnings(h.log);
    if (Object.keys(w).length) warn[h.name] = w;
  }
  const ctlWarn = await warnings(`${b.dir}/controller.log`);
  if (Object.keys(ctlWarn).length) warn.controller = ctlWarn;
  return warn;
}

async function readStats(file: string): Promise<RecordingStats | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as RecordingStats;
  } catch {
    return null;
  }
}

async function tail(file: string, lines = 8): Promise<string> {
  try {
    const text = (await readFile(file, 'utf8')).trim().split('\n').slice(-lines).join('\n');
    return text ? `the end of ${file}:\n${text}` : `${file} is empty.`;
  } catch {
    return `${file} cannot be read.`;
  }
}

/** Warnings and errors in a pino log (level >= 40), counted by message. */
async function warnings(file: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string };
      if ((j.level ?? 0) >= 40) out[j.msg ?? '?'] = (out[j.msg ?? '?'] ?? 0) + 1;
    } catch {
      // not a JSON line (a node warning)
    }
  }
  return out;
}

// ---------------------------------------------------------------- phases

interface BuildResult {
  networkAppliedMs: number | null;
  createsAnsweredMs: number;
  createsPerSecond: number;
  createLatencyMs: Stats & { firstTenthMedian: number | null; lastTenthMedian: number | null };
  realizedMs: number | null;
  appliedMs: number | null;
  remotes: {
    expected: number;
    timeoutS: number;
    /** Per host: when it knew every other host's endpoints (ms from the first endpoint create), or null, with the count it got to. */
    real: { host: string; reachedMs: number | null; count: number | null }[];
    simulated: { reached: number; of: number; lastMs: number | null; slowest: { host: string; count: number | null }[] };
    samples: { ms: number; real: Record<string, number | null>; simulatedReached: number }[];
  };
  quietMs: number | null;
  health: FleetHealth;
  cpuSeconds: CpuSnapshot;
}

async function build(b: Bench): Promise<BuildResult> {
  const o = b.opts;
  const hostNames = b.hosts.map((h) => h.name);
  b.mark();
  const cpu0 = await b.cpu();
  const t0 = performance.now();
  await b.api('POST', '/v1/networks', { name: b.network, driver: 'overlay', subnet: b.subnet, vni: b.vni, hosts: hostNames });
  await waitFor(`network ${b.network} applied on all ${o.hosts} hosts`, 120_000, async () => {
    if (b.networkFailed.size) throw new BenchError(`network ${b.network} failed on ${[...b.networkFailed].map(([h, r]) => `${h}: ${r}`).join('; ')}`);
    return b.networkAppliedAllAt !== null ? true : undefined;
  }, 20);
  const networkAppliedMs = b.networkAppliedAllAt! - t0;
  log(`network applied on all ${o.hosts} hosts in ${secs(networkAppliedMs)} s`);

  // Endpoints host by host in turn (e1 on every host, then e2 ...), as a rollout across a fleet would come.
  const order: { name: string; host: string; netns: string }[] = [];
  for (let k = 0; k < o.endpoints; k++) for (const h of b.hosts) order.push({ ...h.endpoints[k], host: h.name });
  const latencies: number[] = new Array<number>(order.length);
  let next = 0;
  let answered = 0;
  const e0 = performance.now();
  let lastProgress = e0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= order.length) return;
      const e = order[i];
      const t = performance.now();
      await b.api('POST', '/v1/endpoints', { network: b.network, host: e.host, netns: e.netns, name: e.name });
      latencies[i] = performance.now() - t;
      answered++;
      if (performance.now() - lastProgress > 10_000) {
        lastProgress = performance.now();
        log(`endpoints: ${answered}/${order.length} created (${secs(lastProgress - e0)} s, last ${latencies[i].toFixed(0)} ms), ${b.realized.size} realized, ${b.endpointApplied.size} applied`);
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, () => worker()));
  const createsAnsweredMs = performance.now() - e0;
  log(`endpoints: all ${order.length} creates answered in ${secs(createsAnsweredMs)} s; ${b.realized.size} realized, ${b.endpointApplied.size} applied so far`);

  let lastLog = performance.now();
  await waitFor(`every endpoint realized and applied`, Math.max(600_000, o.remotesTimeoutS * 1000), async () => {
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      log(`waiting: ${b.realized.size}/${b.total} realized, ${b.endpointApplied.size}/${b.total} applied, ${b.endpointFailed.size} failed`);
    }
    // A failure that stays: one sentence naming the first few (an agent retries a failed endpoint on its next reconciliation).
    if (b.endpointFailed.size > 0 && b.endpointApplied.size + b.endpointFailed.size >= b.total) {
      throw new BenchError(`${b.endpointFailed.size} endpoints failed on their hosts: ${[...b.endpointFailed].slice(0, 3).map(([k, r]) => `${k.slice(Keys.status.length)}: ${r}`).join('; ')}`);
    }
    return b.realizedAllAt !== null && b.endpointAppliedAllAt !== null ? true : undefined;
  }, 50);
  const realizedMs = b.realizedAllAt! - e0;
  const appliedMs = b.endpointAppliedAllAt! - e0;
  log(`endpoints: all realized ${secs(realizedMs)} s, all applied ${secs(appliedMs)} s after the first create`);

  // Remotes: every host knows the other hosts' N*E - E endpoints.
  const expected = b.total - o.endpoints;
  const reachedAt = new Map<string, number>();
  const last = new Map<string, number | null>();
  const samples: BuildResult['remotes']['samples'] = [];
  const deadline = performance.now() + o.remotesTimeoutS * 1000;
  let lastSample = 0;
  for (;;) {
    const counts = await b.remoteCounts();
    const now = performance.now();
    for (const [h, n] of counts) {
      last.set(h, n);
      if (n !== null && n >= expected && !reachedAt.has(h)) reachedAt.set(h, now - e0);
    }
    if (now - lastSample > 10_000 || reachedAt.size === b.hosts.length) {
      lastSample = now;
      const real = Object.fromEntries(b.realHosts.map((h) => [h.name, counts.get(h.name) ?? null]));
      const simReached = b.simHosts.filter((h) => reachedAt.has(h.name)).length;
      samples.push({ ms: Math.round(now - e0), real, simulatedReached: simReached });
      log(`remotes (of ${expected}): ${b.realHosts.map((h) => `${h.name} ${counts.get(h.name) ?? '?'}`).join(', ')}${b.simHosts.length ? `; simulated hosts complete: ${simReached}/${b.simHosts.length}` : ''}`);
    }
    if (reachedAt.size === b.hosts.length || now > deadline) break;
    await sleep(2000);
  }
  const simReached = b.simHosts.filter((h) => reachedAt.has(h.name));
  const remotes: BuildResult['remotes'] = {
    expected,
    timeoutS: o.remotesTimeoutS,
    real: b.realHosts.map((h) => ({ host: h.name, reachedMs: reachedAt.get(h.name) ?? null, count: last.get(h.name) ?? null })),
    simulated: {
      reached: simReached.length,
      of: b.simHosts.length,
      lastMs: simReached.length ? Math.max(...simReached.map((h) => reachedAt.get(h.name)!)) : null,
      slowest: b.simHosts.filter((h) => !reachedAt.has(h.name)).slice(0, 5).map((h) => ({ host: h.name, count: last.get(h.name) ?? null })),
    },
    samples,
  };
  if (reachedAt.size < b.hosts.length) log(`remotes: NOT every host knows every remote after ${o.remotesTimeoutS} s (--remotes-timeout); going on with the rounds regardless`);
  const quietMs = await b.waitQuiet(120_000);
  log(`quiet again ${secs(quietMs)} s later`);
  const health = b.mark();
  const cpuSeconds = b.cpuSeconds(cpu0, await b.cpu());

  const firstTenth = latencies.slice(0, Math.max(1, Math.floor(latencies.length / 10)));
  const lastTenth = latencies.slice(Math.floor((latencies.length * 9) / 10));
  return {
    networkAppliedMs: round1(networkAppliedMs),
    createsAnsweredMs: round1(createsAnsweredMs),
    createsPerSecond: round1(order.length / (createsAnsweredMs / 1000)),
    createLatencyMs: { ...roundStats(stats(latencies)), firstTenthMedian: roundOrNull(median(firstTenth)), lastTenthMedian: roundOrNull(median(lastTenth)) },
    realizedMs: round1(realizedMs),
    appliedMs: round1(appliedMs),
    remotes,
    quietMs: quietMs === null ? null : round1(quietMs),
    health,
    cpuSeconds,
  };
}

const roundOrNull = (x: number | null): number | null => (x === null ? null : round1(x));
function roundStats(s: Stats): Stats {
  return { n: s.n, p50: roundOrNull(s.p50), p99: roundOrNull(s.p99), max: roundOrNull(s.max) };
}

interface RoundRecord {
  round: number;
  revision: number;
  /** Every host applied (ms from t0); null when the round timed out. */
  fleetMs: number | null;
  realFleetMs: number | null;
  simFleetMs: number | null;
  perHostMs: Record<string, number | null>;
  /** Hosts that had not applied when the round timed out, and group statuses that failed. */
  missing: string[];
  failed: number;
  /** After the fleet applied: until the processes were quiet again. */
  quietMs: number | null;
  statusEvents: number;
  /** From the request to the end of the quiet wait. */
  health: FleetHealth;
  cpuSeconds: CpuSnapshot;
  /** The simulated agents' CPU seconds divided among them: what one host's agent spent on the round. */
  cpuSecondsPerSimulatedAgent: number | null;
}

/**
 * One measured change: `send` makes it (t0 just before), `revisionOf` reads
 * R, and the round is over when every target status key is applied (or
 * failed) at R or later, or after the timeout.
 */
async function measure(b: Bench, targets: Map<string, string>, send: () => Promise<void>, policyKey: string, timeoutMs: number): Promise<{ t0: number; revision: number; round: Round; timedOut: boolean }> {
  const expected = new Map<string, number>();
  for (const host of targets.values()) expected.set(host, (expected.get(host) ?? 0) + 1);
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const round: Round = { t0: 0, targets, expected, revision: null, settled: new Set(), perHostCount: new Map(), perHostAt: new Map(), failed: new Map(), done: () => finish() };
  b.round = round;
  round.t0 = performance.now();
  await send();
  const res = await b.client!.get(policyKey).exec();
  const kv = res.kvs[0];
  if (!kv) throw new BenchError(`the controller answered but ${policyKey} is not in etcd.`);
  round.revision = Number(kv.mod_revision);
  // The statuses that arrived before R was known; the watch checks the rest as they come.
  for (const key of targets.keys()) b.check(round, key);
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const timedOut = await Promise.race([
    finished.then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
    new Promise<boolean>((_, reject) => {
      onAbort = () => reject(new Interrupted());
      if (interrupt.signal.aborted) onAbort();
      else interrupt.signal.addEventListener('abort', onAbort, { once: true });
    }),
  ]).finally(() => {
    clearTimeout(timer);
    if (onAbort) interrupt.signal.removeEventListener('abort', onAbort);
  });
  b.round = null;
  return { t0: round.t0, revision: round.revision, round, timedOut };
}

async function policyRounds(b: Bench): Promise<{ create: RoundRecord; rounds: RoundRecord[]; stoppedEarly: string | null }> {
  const o = b.opts;
  const targets = new Map<string, string>();
  for (const h of b.hosts) for (const e of h.endpoints) targets.set(`${Keys.statusOf(h.name)}groups/${e.name}/acl/scale`, h.name);
  const realNames = new Set(b.realHosts.map((h) => h.name));
  const one = async (round: number): Promise<RoundRecord> => {
    const events0 = b.statusEvents;
    b.mark();
    const cpu0 = await b.cpu();
    const spec = { priority: 100, rules: [{ priority: 100, action: 'block', direction: 'in', match: { protocol: 'tcp', dstPorts: String(10_000 + round) } }] };
    const m = await measure(b, targets, async () => void (await b.api('PUT', '/v1/policies/scale', { network: b.network, prefix: b.subnet, layer: 'acl', group: 'scale', spec })), Keys.policy('scale'), o.roundTimeoutS * 1000);
    const perHostMs: Record<string, number | null> = {};
    for (const h of b.hosts) {
      const at = m.round.perHostAt.get(h.name);
      perHostMs[h.name] = (m.round.perHostCount.get(h.name) ?? 0) === o.endpoints && at !== undefined ? round1(at - m.t0) : null;
    }
    const fleetOf = (names: string[]): number | null => {
      if (names.length === 0) return null;
      const v = names.map((n) => perHostMs[n]);
      return v.some((x) => x === null) ? null : Math.max(...(v as number[]));
    };
    const missing = b.hosts.filter((h) => perHostMs[h.name] === null).map((h) => h.name);
    const quietMs = await b.waitQuiet(m.timedOut ? 5_000 : 60_000);
    const cpuSeconds = b.cpuSeconds(cpu0, await b.cpu());
    const health = b.mark();
    const rec: RoundRecord = {
      round,
      revision: m.revision,
      fleetMs: fleetOf(b.hosts.map((h) => h.name)),
      realFleetMs: fleetOf(b.hosts.filter((h) => realNames.has(h.name)).map((h) => h.name)),
      simFleetMs: fleetOf(b.hosts.filter((h) => !realNames.has(h.name)).map((h) => h.name)),
      perHostMs,
      missing,
      failed: m.round.failed.size,
      quietMs: quietMs === null ? null : round1(quietMs),
      statusEvents: b.statusEvents - events0,
      health,
      cpuSeconds,
      cpuSecondsPerSimulatedAgent: b.simHosts.length ? Math.round((cpuSeconds.sim / b.simHosts.length) * 100) / 100 : null,
    };
    log(`round ${round}: fleet ${rec.fleetMs === null ? `TIMED OUT (${missing.length} hosts missing: ${missing.slice(0, 5).join(', ')})` : `${rec.fleetMs.toFixed(0)} ms`} (real ${rec.realFleetMs?.toFixed(0) ?? '-'}, simulated ${rec.simFleetMs?.toFixed(0) ?? '-'}), quiet ${secs(rec.quietMs)} s later${rec.failed ? `, ${rec.failed} FAILED` : ''}; ${health.hostKeyDeletes} host keys expired (fewest registered ${health.minRegistered}), ${health.realizedDeletes} realized withdrawn (fewest ${health.minRealized})`);
    return rec;
  };
  const create = await one(0);
  b.records.create = create;
  const rounds = b.records.rounds;
  let timeouts = 0;
  let stoppedEarly: string | null = null;
  for (let r = 1; r <= o.rounds; r++) {
    const rec = await one(r);
    rounds.push(rec);
    timeouts = rec.fleetMs === null ? timeouts + 1 : 0;
    if (timeouts >= 2) {
      stoppedEarly = `two rounds in a row timed out (--round-timeout ${o.roundTimeoutS} s); hosts missing in the last: ${rec.missing.join(', ')}`;
      log(`rounds: stopping early: ${stoppedEarly}`);
      break;
    }
  }
  return { create, rounds, stoppedEarly };
}

interface SingleRecord {
  round: number;
  endpoint: string;
  host: string;
  real: boolean;
  ms: number | null;
  quietMs: number | null;
}

async function singleEndpoint(b: Bench): Promise<SingleRecord[]> {
  const o = b.opts;
  const rnd = seededRandom(16);
  const out = b.records.single;
  for (let r = 1; r <= o.rounds; r++) {
    const h = b.hosts[Math.floor(rnd() * b.hosts.length)];
    const e = h.endpoints[Math.floor(rnd() * h.endpoints.length)];
    const key = `${Keys.statusOf(h.name)}groups/${e.name}/acl/one`;
    const spec = { priority: 200, rules: [{ priority: 100, action: 'block', direction: 'in', match: { protocol: 'udp', dstPorts: String(20_000 + r) } }] };
    const m = await measure(b, new Map([[key, h.name]]), async () => void (await b.api('PUT', `/v1/endpoints/${encodeURIComponent(e.name)}/layers/acl/groups/one`, spec)), Keys.policy(`${e.name}.acl.one`), o.roundTimeoutS * 1000);
    const at = m.round.perHostAt.get(h.name);
    const ms = !m.timedOut && m.round.failed.size === 0 && at !== undefined ? round1(at - m.t0) : null;
    const quietMs = await b.waitQuiet(m.timedOut ? 5_000 : 60_000);
    out.push({ round: r, endpoint: e.name, host: h.name, real: h.real, ms, quietMs: quietMs === null ? null : round1(quietMs) });
    log(`one endpoint ${r}: ${e.name} (${h.real ? 'real' : 'simulated'} ${h.name}) ${ms === null ? 'TIMED OUT or failed' : `${ms.toFixed(0)} ms`}`);
  }
  return out;
}

/**
 * One simulated agent stopped and started again at full size: it reads the
 * whole state at one revision (as after a restart, a lost lease or a
 * compacted watch) and applies its host from scratch (a recording host
 * starts empty, like a daemon whose state is gone). Whether and when it has
 * its endpoints and every remote again; then, once the run is quiet, how
 * many of its groups it put back (the status keys of the groups survive the
 * restart and say applied).
 */
interface RestartResult {
  host: string;
  ms: number | null;
  endpoints: number | null;
  remotes: number | null;
  groups: number | null;
  groupsWanted: number;
  warnings: Record<string, number>;
}

async function restartOne(b: Bench): Promise<RestartResult | null> {
  const h = b.simHosts[b.simHosts.length - 1];
  if (!h) return null;
  await stop(h.child!, 10_000);
  await rm(h.statsFile, { force: true });
  const logFile = `${b.dir}/sim-${h.name}-restart.log`;
  const t0 = performance.now();
  // Through nice, back to the default niceness the other agents have: the bench itself runs raised (raisePriority).
  const own = os.getPriority();
  const args = [SIM_AGENT, '--etcd', b.etcdUrl, '--host', h.name, '--vtep', h.vtep, '--stats', h.statsFile];
  h.child = own === 0 ? b.spawnLogged(process.execPath, args, logFile) : b.spawnLogged('nice', ['-n', String(-own), process.execPath, ...args], logFile);
  const expected = b.total - b.opts.endpoints;
  let s: RecordingStats | null = null;
  let ms: number | null = null;
  const deadline = t0 + 120_000;
  while (performance.now() < deadline) {
    s = await readStats(h.statsFile);
    if (s && s.endpoints >= b.opts.endpoints && s.remotes >= expected) {
      ms = round1(performance.now() - t0);
      break;
    }
    if (h.child.exitCode !== null) break;
    await sleep(250);
  }
  if (ms !== null) {
    await b.waitQuiet(30_000);
    // The stats file is rewritten at most once a second.
    await sleep(1500);
    s = (await readStats(h.statsFile)) ?? s;
  }
  // The prefix policy's group on each of its endpoints, and the one-endpoint groups that were on them.
  const groupsWanted = b.opts.endpoints + (await b.client!.getAll().prefix(`${Keys.statusOf(h.name)}groups/`).keys()).filter((k) => k.endsWith('/acl/one')).length;
  const result: RestartResult = { host: h.name, ms, endpoints: s?.endpoints ?? null, remotes: s?.remotes ?? null, groups: s?.groups ?? null, groupsWanted, warnings: await warnings(logFile) };
  log(`restart of simulated ${h.name}: ${ms === null ? `NOT back within 120 s (endpoints ${result.endpoints ?? 0}, remotes ${result.remotes ?? 0}); its warnings: ${JSON.stringify(result.warnings)}` : `endpoints and remotes back in ${secs(ms)} s, groups ${result.groups ?? 0} of ${groupsWanted}`}`);
  return result;
}

// ---------------------------------------------------------------- main

async function bench(opts: Options): Promise<number> {
  requireRoot('namespaces, veths, TAPs', 'npm run bench:controller');
  requireBuilt(CLI, 'the vsw CLI', 'npm run build');
  requireBuilt(SIM_AGENT, 'the simulated agent', 'npm run build:ts');
  await requireTools([['ip', 'iproute2'], ['etcd', 'etcd-server'], ['etcdctl', 'etcd-client'], ['getconf', 'libc-bin']], 'the controller bench');
  outPath = opts.out;
  const source = await sourceInfo();
  // The machine is shared: what else ran when the bench started.
  const loadBefore = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const b = new Bench(opts);
  current = b;
  const t = (): number => performance.now();
  const began = t();
  await b.setup();
  const cpu0 = await b.cpu();
  const registeredMs = await b.startAgents();
  log(`all ${opts.hosts} agents registered in ${secs(registeredMs)} s`);
  // The bench only watches and stamps times, but at full size dozens of busy agents share two cores and its
  // timestamps would lag by its own wait for a CPU. Raised after the agents started, so they keep the default.
  const benchNice = raisePriority();
  // The idle level the quiet waits compare with: every agent keeps its lease alive, nothing else happens.
  await sleep(2000);
  const idleCores = await b.cores(3000);
  b.quietCores = Math.max(0.1, idleCores + 0.15);
  log(`idle: ${idleCores.toFixed(3)} cores for all processes together; "quiet" is at most ${b.quietCores.toFixed(2)}`);
  const memIdle = await b.memory();
  const cpu1 = await b.cpu();
  const topology = {
    hosts: opts.hosts,
    endpointsPerHost: opts.endpoints,
    endpoints: b.total,
    realHosts: b.realHosts.map((h) => h.name),
    simulatedHosts: b.simHosts.map((h) => h.name),
    simulatedDataPlane: 'recording (scripts/bench/recording-host.ts): the real Agent (src/controller/agent.ts) in one process per host, applying to memory; no daemon, TAP or namespace',
    realDataPlane: 'vsw daemon --agent in a namespace on an underlay bridge, one real namespace per endpoint',
    etcd: "one member (Debian etcd 3.4), data on the machine's disk",
    subnet: b.subnet,
    vni: b.vni,
    profiled: b.hosts.filter((h) => h.profiled).map((h) => h.name).concat(opts.cpuProf ? ['controller'] : []),
  };
  const startup = { benchNiceness: benchNice, agentsRegisteredMs: round1(registeredMs), idleCores: round1(idleCores * 1000) / 1000, quietCores: b.quietCores };
  partial = { date: new Date().toISOString(), machine: { ...machineInfo(), loadAverageAtStart: loadBefore }, source, options: { ...opts, out: undefined }, topology, startup, memoryKiB: { idle: memIdle } };

  const buildResult = await build(b);
  const cpu2 = await b.cpu();
  const memBuild = await b.memory();
  const etcdBuild = await b.etcdSnapshot();
  Object.assign(partial, { build: buildResult, etcd: { afterBuild: etcdBuild }, memoryKiB: { idle: memIdle, afterBuild: memBuild } });

  const policy = await policyRounds(b);
  const cpu3 = await b.cpu();
  const single = await singleEndpoint(b);
  const cpu4 = await b.cpu();
  const memRounds = await b.memory();
  const etcdRounds = await b.etcdSnapshot();
  const simStats = (await Promise.all(b.simHosts.map((h) => readStats(h.statsFile)))).filter((s): s is RecordingStats => s !== null);
  const restart = await restartOne(b);

  const warn = await allWarnings(b);

  // ---------------------------------------------------------------- report
  const real = b.realHosts.map((h) => h.name);
  const sim = b.simHosts.map((h) => h.name);
  const range = (names: string[]): string => (names.length === 0 ? 'none' : names.length === 1 ? names[0] : `${names[0]}..${names[names.length - 1]}`);
  const lines: string[] = [];
  const out = (s = ''): void => void lines.push(s);
  out(`controller scale: ${opts.hosts} hosts x ${opts.endpoints} endpoints = ${b.total} endpoints on one overlay network (${b.subnet}), one etcd member (${(await cmd('etcd', ['--version'])).stdout.split('\n')[0].replace('etcd Version: ', 'etcd ')}), one controller`);
  out(`  real hosts (vsw daemon --agent, data plane, a namespace per endpoint): ${range(real)} (${real.length})`);
  out(`  SIMULATED hosts (the real agent on a recording data plane, scripts/bench/recording-host.ts; nothing in the kernel): ${range(sim)} (${sim.length})`);
  out(`  code measured: commit ${source.commit?.slice(0, 12) ?? 'unknown'}${source.uncommitted?.length ? ` with uncommitted changes in ${source.uncommitted.join(', ')}` : ''}`);
  if (opts.cpuProf) out(`  run with node --cpu-prof (profiles in ${opts.cpuProf}): the controller, ${b.hosts.filter((h) => h.profiled).map((h) => h.name).join(' and ')}`);
  out(`  load average when the bench started: ${loadBefore.join(' ')}; the bench itself ran at niceness ${benchNice} once the agents were up (its timestamps should not wait for a CPU)`);
  out(`  agents registered ${secs(registeredMs)} s after start; idle CPU of all processes ${idleCores.toFixed(3)} cores`);
  out();

  const br = buildResult;
  const remoteRows = [
    ...br.remotes.real.map((r) => [`remotes: ${r.host} (real) knows all ${br.remotes.expected}`, r.reachedMs === null ? `NOT within ${br.remotes.timeoutS} s: ${r.count ?? '?'} of ${br.remotes.expected}` : secs(r.reachedMs)]),
    [
      `remotes: simulated hosts know all ${br.remotes.expected}`,
      br.remotes.simulated.of === 0 ? '-' : br.remotes.simulated.reached === br.remotes.simulated.of ? secs(br.remotes.simulated.lastMs) : `${br.remotes.simulated.reached} of ${br.remotes.simulated.of} hosts within ${br.remotes.timeoutS} s`,
    ],
  ];
  for (const l of formatTable(['build', 's'], [
    [`network applied on all ${opts.hosts} hosts (from its create)`, secs(br.networkAppliedMs)],
    [`all ${b.total} endpoint creates answered (${opts.concurrency} in flight; from the first)`, secs(br.createsAnsweredMs)],
    [`  creates per second`, br.createsPerSecond.toFixed(1)],
    [`  create latency ms p50 / p99 / max`, `${br.createLatencyMs.p50?.toFixed(0)} / ${br.createLatencyMs.p99?.toFixed(0)} / ${br.createLatencyMs.max?.toFixed(0)}`],
    [`  create latency ms, median of the first / last tenth`, `${br.createLatencyMs.firstTenthMedian?.toFixed(0)} / ${br.createLatencyMs.lastTenthMedian?.toFixed(0)}`],
    [`every endpoint realized (from the first create)`, secs(br.realizedMs)],
    [`every endpoint applied (status)`, secs(br.appliedMs)],
    ...remoteRows,
    [`then quiet again after`, br.quietMs === null ? 'not within 120 s' : secs(br.quietMs)],
  ], 'lr')) out(l);
  out(`  fleet health during the build: ${br.health.hostKeyDeletes} host keys expired (fewest registered: ${br.health.minRegistered} of ${opts.hosts}), ${br.health.realizedDeletes} realized endpoints withdrawn`);
  out();

  const fleet = (pick: (r: RoundRecord) => number | null): number[] => policy.rounds.map(pick).filter((x): x is number => x !== null);
  const pooled = (names: string[]): number[] => policy.rounds.flatMap((r) => names.map((n) => r.perHostMs[n])).filter((x): x is number => x !== null);
  const timedOut = (pick: (r: RoundRecord) => number | null): number => policy.rounds.filter((r) => pick(r) === null).length;
  const summary = {
    fleetAll: stats(fleet((r) => r.fleetMs)),
    fleetReal: stats(fleet((r) => r.realFleetMs)),
    fleetSimulated: stats(fleet((r) => r.simFleetMs)),
    perHostReal: stats(pooled(real)),
    perHostSimulated: stats(pooled(sim)),
    quiet: stats(policy.rounds.map((r) => r.quietMs).filter((x): x is number => x !== null)),
    singleAll: stats(single.map((s) => s.ms).filter((x): x is number => x !== null)),
    singleReal: stats(single.filter((s) => s.real).map((s) => s.ms).filter((x): x is number => x !== null)),
    singleSimulated: stats(single.filter((s) => !s.real).map((s) => s.ms).filter((x): x is number => x !== null)),
  };
  const ms = (v: number | null): string => (v === null ? '-' : v.toFixed(0));
  const row = (what: string, s: Stats, missed: number | string): string[] => [what, String(s.n), ms(s.p50), ms(s.p99), ms(s.max), String(missed)];
  const rs = policy.rounds.length;
  for (const l of formatTable(['policy change -> applied (ms)', 'n', 'p50', 'p99', 'max', 'timed out'], [
    row(`prefix policy, fleet: all ${opts.hosts} hosts`, summary.fleetAll, timedOut((r) => r.fleetMs)),
    row(`prefix policy, fleet: the ${real.length} real hosts`, summary.fleetReal, real.length ? timedOut((r) => r.realFleetMs) : '-'),
    row(`prefix policy, fleet: the ${sim.length} simulated hosts`, summary.fleetSimulated, sim.length ? timedOut((r) => r.simFleetMs) : '-'),
    row(`prefix policy, per host, real (pooled)`, summary.perHostReal, rs * real.length - summary.perHostReal.n),
    row(`prefix policy, per host, simulated (pooled)`, summary.perHostSimulated, rs * sim.length - summary.perHostSimulated.n),
    row(`prefix policy created (round 0), fleet`, stats(policy.create.fleetMs === null ? [] : [policy.create.fleetMs]), policy.create.fleetMs === null ? 1 : 0),
    row(`then quiet again after (ms)`, summary.quiet, rs - summary.quiet.n),
    row(`one endpoint's group, any host`, summary.singleAll, single.length - summary.singleAll.n),
    row(`one endpoint's group, real host`, summary.singleReal, single.filter((s) => s.real).length - summary.singleReal.n),
    row(`one endpoint's group, simulated host`, summary.singleSimulated, single.filter((s) => !s.real).length - summary.singleSimulated.n),
  ], 'lrrrrr')) out(l);
  out(`  (a round: PUT /v1/policies/scale over ${b.subnet}, a new rule each time, ${b.total} group statuses to turn applied; p99 of ${rs} rounds is their maximum but one at most)`);
  if (policy.stoppedEarly) out(`  rounds stopped early: ${policy.stoppedEarly}`);
  out(`  status events the bench saw per round (median): ${median(policy.rounds.map((r) => r.statusEvents)) ?? '-'}`);
  out();
  // Every round: when a host's agent loses its lease (host key expired) its realized endpoints go, and every other agent withdraws them.
  for (const l of formatTable(['round', 'fleet ms', 'real ms', 'sim ms', 'host keys expired', 'fewest registered', 'realized withdrawn', 'CPU s per sim agent', 'quiet s'], [policy.create, ...policy.rounds].map((r) => [
    String(r.round), ms(r.fleetMs), ms(r.realFleetMs), ms(r.simFleetMs), String(r.health.hostKeyDeletes), String(r.health.minRegistered), String(r.health.realizedDeletes),
    r.cpuSecondsPerSimulatedAgent === null ? '-' : r.cpuSecondsPerSimulatedAgent.toFixed(2), r.quietMs === null ? 'no' : secs(r.quietMs),
  ]), 'rrrrrrrrr')) out(l);
  out(`  (round 0 creates the policy; "quiet s": until the processes were quiet again after the fleet applied, "no" when not within 60 s, and the next round went ahead)`);
  out();

  const kinds = [...new Set([...Object.keys(etcdBuild.kinds), ...Object.keys(etcdRounds.kinds)])].sort();
  const kb = (n: number | undefined): string => (n === undefined ? '-' : (n / 1024).toFixed(1));
  for (const l of formatTable(['etcd under /vsw/', 'keys (build)', 'KiB (build)', 'keys (rounds)', 'KiB (rounds)'], [
    ...kinds.map((k) => [k.includes('/') ? `  ${k}` : k, String(etcdBuild.kinds[k]?.keys ?? 0), kb(etcdBuild.kinds[k]?.bytes), String(etcdRounds.kinds[k]?.keys ?? 0), kb(etcdRounds.kinds[k]?.bytes)]),
    ['total', String(etcdBuild.total.keys), kb(etcdBuild.total.bytes), String(etcdRounds.total.keys), kb(etcdRounds.total.bytes)],
    ['db size (etcdctl endpoint status)', '', kb(etcdBuild.dbSize ?? undefined), '', kb(etcdRounds.dbSize ?? undefined)],
    ['db size in use', '', kb(etcdBuild.dbSizeInUse ?? undefined), '', kb(etcdRounds.dbSizeInUse ?? undefined)],
    ['revision', '', String(etcdBuild.revision), '', String(etcdRounds.revision)],
  ], 'lrrrr')) out(l);
  out();

  const memRow = (what: string, f: (m: MemorySnapshot) => number | null, peak: number | null): string[] => [what, mib(f(memIdle)), mib(f(memBuild)), mib(f(memRounds)), mib(peak)];
  for (const l of formatTable(['RSS MiB', 'idle', 'built', 'after rounds', 'peak (VmHWM)'], [
    memRow('etcd', (m) => m.etcd.rssKiB, memRounds.etcd.hwmKiB),
    memRow('controller', (m) => m.controller.rssKiB, memRounds.controller.hwmKiB),
    ...real.map((h, i) => memRow(`real daemon ${h}`, (m) => m.real[i]?.rssKiB ?? null, memRounds.real[i]?.hwmKiB ?? null)),
    ...(sim.length ? [memRow(`simulated agent, median of ${sim.length}`, (m) => m.sim.medianRssKiB, memRounds.sim.medianHwmKiB), memRow(`simulated agent, max`, (m) => m.sim.maxRssKiB, memRounds.sim.maxHwmKiB), memRow(`simulated agents, sum`, (m) => m.sim.sumRssKiB, null)] : []),
  ], 'lrrrr')) out(l);
  out();

  const cpuStart = b.cpuSeconds(cpu0, cpu1);
  const cpuBuild = b.cpuSeconds(cpu1, cpu2);
  const cpuRounds = b.cpuSeconds(cpu2, cpu3);
  const cpuSingle = b.cpuSeconds(cpu3, cpu4);
  for (const l of formatTable(['CPU seconds', 'start + idle', 'build', `${rs + 1} policy rounds`, `${single.length} one-endpoint`], (['etcd', 'controller', 'real', 'sim'] as const).map((k) => [
    k === 'real' ? `real daemons (${real.length})` : k === 'sim' ? `simulated agents (${sim.length})` : k,
    cpuStart[k].toFixed(1), cpuBuild[k].toFixed(1), cpuRounds[k].toFixed(1), cpuSingle[k].toFixed(1),
  ]), 'lrrrr')) out(l);
  out();

  if (simStats.length) {
    const methods = [...new Set(simStats.flatMap((s) => Object.keys(s.calls)))].sort();
    out(`recording data plane, calls per simulated host (median of ${simStats.length}): ${methods.map((m) => `${m} ${median(simStats.map((s) => s.calls[m] ?? 0))}`).join(', ')}`);
  }
  if (restart) {
    out(
      `restart of simulated ${restart.host} (its recording data plane empty) at full size: ${
        restart.ms === null
          ? `NOT back within 120 s (it got to ${restart.endpoints ?? 0} endpoints, ${restart.remotes ?? 0} remotes); its warnings: ${JSON.stringify(restart.warnings)}`
          : `read the state and had its ${restart.endpoints} endpoints and ${restart.remotes} remotes again in ${secs(restart.ms)} s; groups put back: ${restart.groups ?? 0} of ${restart.groupsWanted}`
      }`,
    );
  }
  const warnHosts = Object.keys(warn);
  out(warnHosts.length === 0 ? 'warnings in the agents\', daemons\' and controller\'s logs: none' : `warnings in the logs: ${warnHosts.map((h) => `${h}: ${JSON.stringify(warn[h])}`).join('; ')}`);
  out(`whole run ${secs(t() - began)} s`);
  for (const l of lines) console.log(l);

  finished = true;
  await writeResult(opts.out, {
    ...partial,
    build: buildResult,
    policyRounds: { summary, create: policy.create, rounds: policy.rounds, stoppedEarly: policy.stoppedEarly },
    singleEndpoint: single,
    etcd: { afterBuild: etcdBuild, afterRounds: etcdRounds },
    memoryKiB: { idle: memIdle, afterBuild: memBuild, afterRounds: memRounds },
    cpuSeconds: { startAndIdle: cpuStart, build: cpuBuild, policyRounds: cpuRounds, singleEndpoint: cpuSingle },
    simulatedCalls: simStats.map((s) => ({ host: s.host, calls: s.calls, endpoints: s.endpoints, remotes: s.remotes, groups: s.groups })),
    restart,
    warnings: warn,
    wholeRunMs: round1(t() - began),
  });
  return policy.stoppedEarly ? 1 : 0;
}

let current: Bench | null = null;
/** The result so far, and whether the whole one was written: a run stopped by a failure or a signal still leaves what it measured. */
let partial: Record<string, unknown> | null = null;
let finished = false;
let outPath = '';

/** Before the cleanup removes the logs: what the run measured until it stopped, marked incomplete. */
async function writePartial(): Promise<void> {
  if (!current || !partial || finished) return;
  const b = current;
  await writeResult(outPath, {
    ...partial,
    incomplete: 'the run stopped early (a failure or a signal): this is what it measured until then',
    policyRounds: { create: b.records.create, rounds: b.records.rounds },
    singleEndpoint: b.records.single,
    warnings: await allWarnings(b),
  }).catch((err: unknown) => console.error(`${NAME}: could not write the partial result: ${(err as Error).message}`));
}

await runMain({
  name: NAME,
  help: HELP,
  parse: parseOptions,
  run: bench,
  cleanup: async () => {
    await writePartial();
    if (current) await current.cleanup();
  },
  interruptible: true,
});
