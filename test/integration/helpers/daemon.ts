/**
 * A real `vsw daemon` for integration tests, driven only through the real
 * CLI (dist/src/cli/main.js), plus the small helpers those tests share:
 * namespaces, endpoint and stats lookups, packet captures, and the check that
 * an error is one sentence. Everything is named with the test file's prefix so
 * removeEverything(prefix) and scripts/cleanup.sh find it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecutionContext } from 'ava';
import type { Endpoint, PortStats, StatsResponse } from '../../../src/service/api-types.js';
import type { SavedState } from '../../../src/service/state-file.js';
import { addNetns, removeEverything, sh, spawnInNetns, type CommandResult } from './env.js';

/** The CLI entry, compiled: this file runs from dist/test/integration/helpers/. */
export const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));

const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

export interface DaemonHandle {
  prefix: string;
  socket: string;
  dir: string;
  /** --state-dir: state.json, runtime.bin, lock. */
  stateDir: string;
  /** The namespace the daemon runs in (a lab "host"), if not the test's own. */
  netns?: string;
  /** How to start this daemon again on the same socket and state (restart tests). */
  options: DaemonOptions;
  pid: number;
  process: ChildProcess;
  /** Runs `node dist/src/cli/main.js --socket SOCKET ...args`; never throws for a non-zero exit. */
  vsw(args: string[], opts?: { timeoutMs?: number }): Promise<CommandResult>;
  /** Like vsw() but throws unless the command exits 0; returns stdout. */
  vswOk(args: string[]): Promise<string>;
  /** vswOk() with stdout parsed as JSON. */
  vswJson<T = unknown>(args: string[]): Promise<T>;
  /**
   * Sends `signal` and waits for the exit; resolves to the exit code (128 + signal number when killed).
   * After timeoutMs (5 s) it sends SIGKILL and rejects: a daemon that needs that is a failure.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number>;
  /** Whether the daemon process has exited. */
  exited(): boolean;
  /** The daemon's combined stdout and stderr so far. */
  log(): string;
}

/** `node dist/src/cli/main.js ...args` as its own process; never throws for a non-zero exit. */
export function runCli(args: string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
  return sh('node', [CLI, ...args], { timeoutMs: opts.timeoutMs ?? 60_000 });
}

export interface DaemonOptions {
  extraArgs?: string[];
  /** Run inside this namespace, as a lab "host". */
  netns?: string;
  /** For several daemons in one test: /tmp/PREFIX/NAME instead of /tmp/PREFIX. */
  name?: string;
  /** Resolve once the process runs, without waiting for the API (the caller polls what it measures). */
  noWait?: boolean;
}

/**
 * Starts `vsw daemon` on its own socket and state directory under /tmp/PREFIX (or /tmp/PREFIX/NAME
 * with `name`, for several daemons in one test); with `netns` it runs inside that namespace, as a
 * lab "host". The same options start it again on the same socket and state (a restart).
 */
export async function startDaemon(prefix: string, opts: DaemonOptions = {}): Promise<DaemonHandle> {
  const dir = opts.name === undefined ? `/tmp/${prefix}` : `/tmp/${prefix}/${opts.name}`;
  mkdirSync(dir, { recursive: true });
  const socket = `${dir}/vsw.sock`;
  const stateDir = `${dir}/state`;
  const logPath = `${dir}/daemon.log`;
  const logFd = openSync(logPath, 'a');
  const daemonArgv = ['node', CLI, 'daemon', '--socket', socket, '--state-dir', stateDir, '--log-level', 'debug', ...(opts.extraArgs ?? [])];
  // ip netns exec execs the daemon in place, so the child's pid is the daemon's and signals reach it.
  const argv = opts.netns === undefined ? daemonArgv : ['ip', 'netns', 'exec', opts.netns, ...daemonArgv];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  let exitCode: number | undefined;
  const exitedP = new Promise<number>((resolve) => {
    child.on('exit', (code, signal) => {
      exitCode = code ?? 128 + signalNumber(signal);
      resolve(exitCode);
    });
  });
  const log = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const vsw = (args: string[], o: { timeoutMs?: number } = {}): Promise<CommandResult> => runCli(['--socket', socket, ...args], o);
  const vswOk = async (args: string[]): Promise<string> => {
    const r = await vsw(args);
    if (r.code !== 0) throw new Error(`vsw ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
    return r.stdout;
  };
  const handle: DaemonHandle = {
    prefix,
    socket,
    dir,
    stateDir,
    netns: opts.netns,
    options: opts,
    pid: child.pid ?? -1,
    process: child,
    vsw,
    vswOk,
    vswJson: async <T>(args: string[]): Promise<T> => JSON.parse(await vswOk(args)) as T,
    exited: () => exitCode !== undefined,
    log,
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = STOP_GRACE_MS): Promise<number> {
      if (exitCode !== undefined) return exitCode;
      child.kill(signal);
      // Unreferenced: a daemon that exits at once must not keep the test process waiting for the timer.
      const code = await Promise.race([exitedP, sleep(timeoutMs, undefined, { ref: false }).then(() => undefined)]);
      if (code !== undefined) return code;
      child.kill('SIGKILL');
      await exitedP;
      throw new Error(`the daemon did not exit within ${timeoutMs} ms of ${signal}; it was killed`);
    },
  };

  if (opts.noWait) return handle;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`the daemon exited with ${exitCode} before it was ready:\n${log()}`);
    const r = await vsw(['network', 'ls'], { timeoutMs: 5_000 });
    if (r.code === 0) break;
    if (Date.now() > deadline) {
      await handle.stop('SIGKILL').catch(() => undefined);
      throw new Error(`the daemon did not answer \`vsw network ls\` within ${READY_TIMEOUT_MS} ms (last: ${r.stderr.trim()}):\n${log()}`);
    }
    await sleep(100);
  }
  return handle;
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : (constants.signals[signal] ?? 0);
}

/** The same daemon again (same socket, state directory and options), once the previous process has exited. */
export function restartDaemon(d: DaemonHandle, opts: Pick<DaemonOptions, 'noWait' | 'extraArgs'> = {}): Promise<DaemonHandle> {
  if (!d.exited()) throw new Error(`restartDaemon: daemon ${d.pid} is still running; stop it first`);
  return startDaemon(d.prefix, { ...d.options, ...opts });
}

/** Polls the API until the daemon answers (restart tests start it with noWait); resolves to the time it took. */
export async function waitAnswering(h: DaemonHandle, timeoutMs = 10_000): Promise<number> {
  const started = Date.now();
  let last = '';
  for (;;) {
    if (h.exited()) throw new Error(`the daemon exited before it answered:\n${h.log().split('\n').slice(-8).join('\n')}`);
    try {
      const r = await api(h, 'GET', '/v1/version');
      if (r.status === 200) return Date.now() - started;
      last = `status ${r.status}`;
    } catch (err) {
      // Not listening yet (ENOENT, ECONNREFUSED): that is what is being waited for.
      last = (err as Error).message;
    }
    if (Date.now() - started > timeoutMs) throw new Error(`the daemon did not answer within ${timeoutMs} ms (last: ${last})`);
    await sleep(20);
  }
}

/** `vsw system reset` for this daemon's state (in its namespace, where its host changes are). */
export function systemReset(d: DaemonHandle): Promise<CommandResult> {
  const argv = ['node', CLI, '--socket', d.socket, 'system', 'reset', '--state-dir', d.stateDir];
  return d.netns === undefined ? sh(argv[0], argv.slice(1)) : sh('ip', ['netns', 'exec', d.netns, ...argv]);
}

/** What a saved state names on the host: what `vsw system reset` must remove. */
export interface SavedObjects {
  /** Endpoint TAPs in namespaces vsw did not create: [netns, ifname]. */
  taps: [string, string][];
  compartments: string[];
  hostInterfaces: string[];
  nftTables: string[];
  /** VM endpoints' vhost-user sockets that vsw serves (and removes with them, or at reset). */
  sockets: string[];
}

export function savedObjects(d: DaemonHandle): SavedObjects {
  const path = `${d.stateDir}/state.json`;
  const empty: SavedObjects = { taps: [], compartments: [], hostInterfaces: [], nftTables: [], sockets: [] };
  if (!existsSync(path)) return empty;
  const saved = JSON.parse(readFileSync(path, 'utf8')) as SavedState;
  const compartments = saved.compartments.map((c) => c.name);
  return {
    // A fabric endpoint has no TAP (nor a namespace), nor has a VM's.
    taps: saved.endpoints.filter((e) => e.endpoint.fabric === undefined && e.endpoint.vhostUser === undefined && !compartments.includes(e.endpoint.netns)).map((e) => [e.endpoint.netns, e.endpoint.ifname]),
    sockets: saved.endpoints.flatMap((e) => (e.endpoint.vhostUser?.mode === 'server' ? [e.endpoint.vhostUser.socket] : [])),
    compartments,
    hostInterfaces: saved.networks.flatMap((n) => (n.nat ? [n.nat.info.hostInterface] : [])),
    nftTables: [...new Set([...saved.host.nftTables, ...saved.networks.flatMap((n) => (n.nat?.table ? [n.nat.table] : []))])],
  };
}

/** Which of `objects` are still on the host (in `netns`, the daemon's namespace, for host interfaces and tables). */
export async function leftovers(objects: SavedObjects, netns?: string): Promise<string[]> {
  const left: string[] = [];
  const namespaces = new Set((await sh('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]));
  for (const [ns, ifname] of objects.taps) {
    if (namespaces.has(ns) && (await linksIn(ns)).includes(ifname)) left.push(`TAP ${ns}/${ifname}`);
  }
  for (const ns of objects.compartments) if (namespaces.has(ns)) left.push(`compartment ${ns}`);
  const hostLinks = netns === undefined ? (JSON.parse((await sh('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname) : await linksIn(netns);
  for (const ifname of objects.hostInterfaces) if (hostLinks.includes(ifname)) left.push(`host interface ${ifname}`);
  const nftArgs = ['list', 'tables'];
  const tables = netns === undefined ? await sh(NFT, nftArgs) : await sh('ip', ['netns', 'exec', netns, NFT, ...nftArgs]);
  // Family ip for nat tables, netdev for uplink guards.
  const listed = new Set(tables.stdout.split('\n').map((l) => l.split(' ')[2]));
  for (const table of objects.nftTables) if (listed.has(table)) left.push(`nftables table ${table}`);
  for (const socket of objects.sockets) if (existsSync(socket)) left.push(`vhost-user socket ${socket}`);
  return left;
}

/** nftables' own nft (npm's PATH has a JavaScript one that answers anything with exit 0). */
export const NFT = '/usr/sbin/nft';

/**
 * What every test file's test.after.always does: stop the daemon with SIGTERM (it must exit 0),
 * run `vsw system reset` (it must succeed and leave nothing of what the state named), and only
 * then remove the prefix's leftovers. A failure is thrown after the cleanup, so it is reported
 * and the machine is still clean for the next file.
 */
export async function teardown(prefix: string, ...daemons: (DaemonHandle | undefined)[]): Promise<void> {
  const problems: string[] = [];
  try {
    for (const d of daemons) {
      if (!d) continue;
      if (!d.exited()) {
        const code = await d.stop('SIGTERM').catch((err: Error) => err.message);
        if (code !== 0) problems.push(`daemon ${d.pid}: SIGTERM gave ${String(code)}:\n${d.log().split('\n').slice(-5).join('\n')}`);
      }
      const objects = savedObjects(d);
      const reset = await systemReset(d);
      if (reset.code !== 0) problems.push(`vsw system reset for ${d.stateDir} exited ${reset.code}: ${reset.stderr.trim()}`);
      const left = await leftovers(objects, d.netns);
      if (left.length > 0) problems.push(`vsw system reset left ${left.join(', ')}`);
    }
    // A table no state names (leaked by a crash between install and save) would pass the check above.
    const stray = (await sh(NFT, ['list', 'tables', 'ip'])).stdout.split('\n').filter((l) => l.startsWith(`table ip vsw_nat_${prefix.replace(/[^A-Za-z0-9_]/g, '_')}`));
    if (stray.length > 0) problems.push(`nftables tables of this run remain after the reset: ${stray.join(', ')}`);
  } finally {
    await removeEverything(prefix);
    rmSync(`/tmp/${prefix}`, { recursive: true, force: true });
  }
  if (problems.length > 0) throw new Error(`teardown of ${prefix}: ${problems.join('; ')}`);
}

/** What `vsw ... --json` prints is the API's own JSON: the test reads it with the API's types. */
export type EndpointJson = Endpoint;
export type PortStatsJson = PortStats;
type StatsJson = StatsResponse;

/** Per-endpoint-id port counters from `vsw stats --json`. */
export async function portStats(d: DaemonHandle): Promise<Map<string, PortStatsJson>> {
  const stats = await d.vswJson<StatsJson>(['stats', '--json']);
  return new Map(stats.ports.map((p) => [p.endpoint, p]));
}

export async function txFrames(d: DaemonHandle, endpointId: string): Promise<number> {
  const p = (await portStats(d)).get(endpointId);
  if (!p) throw new Error(`vsw stats --json has no port for endpoint ${endpointId}`);
  return p.txFrames;
}

/** Creates an endpoint with the CLI (which prints its id) and returns it as `vsw endpoint inspect` shows it. */
export async function createEndpoint(d: DaemonHandle, network: string, netns: string, extra: string[] = []): Promise<EndpointJson> {
  const id = (await d.vswOk(['endpoint', 'create', '--network', network, '--netns', netns, ...extra])).trim();
  if (!/^[0-9a-f]{12}$/.test(id)) throw new Error(`vsw endpoint create printed ${JSON.stringify(id)}, not an endpoint id`);
  return d.vswJson<EndpointJson>(['endpoint', 'inspect', id]);
}

/** An internal network on `subnet`, and one endpoint in each of `namespaces` (created here, IPv6 off), in order. */
export async function createNetworkWithEndpoints(d: DaemonHandle, network: string, subnet: string, namespaces: readonly string[]): Promise<EndpointJson[]> {
  await d.vswOk(['network', 'create', network, '-d', 'internal', '--subnet', subnet]);
  const endpoints: EndpointJson[] = [];
  for (const ns of namespaces) {
    await addNetns(ns);
    endpoints.push(await createEndpoint(d, network, ns));
  }
  return endpoints;
}

export interface Capture {
  /** Stops tcpdump (SIGINT) and returns the packets it wrote. */
  stop(): Promise<string[]>;
}

/**
 * tcpdump on `ifname` inside `ns`, writing packets to a file as they arrive;
 * resolves once tcpdump is listening, so traffic sent afterwards is captured.
 * --immediate-mode: otherwise libpcap (TPACKET_V3) holds a partly filled
 * block, and a stop within a second throws it away, so "captured nothing"
 * would prove nothing.
 */
export async function capture(ns: string, ifname: string, filter: string[], file: string): Promise<Capture> {
  const child = spawnInNetns(ns, 'tcpdump', ['-i', ifname, '-n', '-U', '--immediate-mode', '-w', file, ...filter]);
  let stderr = '';
  const done = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump in ${ns} did not start: ${stderr}`)), 5_000);
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (/listening on/.test(stderr)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`tcpdump in ${ns} exited early: ${stderr}`));
    });
  });
  child.stdout?.resume();
  return {
    async stop(): Promise<string[]> {
      child.kill('SIGINT');
      await Promise.race([done, sleep(3_000).then(() => child.kill('SIGKILL'))]);
      await done;
      const r = await sh('tcpdump', ['-r', file, '-n']);
      if (r.code !== 0) throw new Error(`tcpdump -r ${file}: ${r.stderr}`);
      return r.stdout.split('\n').filter(Boolean);
    },
  };
}

/** Asserts a failed CLI call: non-zero exit and a stderr of exactly one sentence, no stack trace. */
export function assertOneSentence(t: ExecutionContext, r: CommandResult, what: string): void {
  const err = r.stderr.trim();
  t.not(r.code, 0, `${what}: exit code`);
  t.true(err.length > 0, `${what}: stderr is empty (stdout: ${r.stdout.trim()})`);
  t.false(/\n.+/.test(err), `${what}: stderr has more than one line: ${err}`);
  t.false(/at .*\.js/.test(r.stderr), `${what}: stderr has a stack trace: ${err}`);
  t.regex(err, /\.$/, `${what}: stderr does not end with a period: ${err}`);
}

/** `ip -n NS -j link show` interface names. */
export async function linksIn(ns: string): Promise<string[]> {
  const r = await sh('ip', ['-n', ns, '-j', 'link', 'show']);
  if (r.code !== 0) throw new Error(`ip -n ${ns} link: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname);
}

/** A process exists (and is not a zombie). */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}


/**
 * Waits (bounded) until no neighbour entry in these namespaces is INCOMPLETE,
 * DELAY or PROBE: the kernel sends ARP on its own only in those states, so
 * afterwards the only frames on the wire are the ones the test causes.
 */
export async function waitNeighboursSettled(namespaces: readonly string[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const busy: string[] = [];
    for (const ns of namespaces) {
      const r = await sh('ip', ['-n', ns, '-j', 'neigh', 'show']);
      const entries = JSON.parse(r.stdout || '[]') as { dst: string; state?: string[] }[];
      for (const e of entries) {
        if (e.state?.some((s) => s === 'INCOMPLETE' || s === 'DELAY' || s === 'PROBE')) busy.push(`${ns}:${e.dst}:${e.state.join(',')}`);
      }
    }
    if (busy.length === 0) return;
    if (Date.now() > deadline) throw new Error(`neighbour entries still resolving after ${timeoutMs} ms: ${busy.join(' ')}`);
    await sleep(250);
  }
}

/** What api() got back: the HTTP status and the parsed JSON body (undefined when empty). */
export interface ApiResult<T = unknown> {
  status: number;
  body: T;
}

/**
 * One REST call to the daemon over its unix socket, for what the CLI cannot
 * express (exact status codes, malformed bodies). Never throws for a 4xx/5xx.
 */
export async function api<T = unknown>(d: DaemonHandle, method: string, path: string, body?: unknown): Promise<ApiResult<T>> {
  const { request } = await import('node:http');
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> =
    payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: d.socket, method, path, headers, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown;
        try {
          parsed = text.length === 0 ? undefined : JSON.parse(text);
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed as T });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** A port's drop count for one reason (0 when it never happened), from `vsw stats --json`. */
export async function dropCount(d: DaemonHandle, endpointId: string, reason: string): Promise<number> {
  const p = (await portStats(d)).get(endpointId);
  if (!p) throw new Error(`vsw stats --json has no port for endpoint ${endpointId}`);
  return p.drops[reason] ?? 0;
}

/** Lines a child process writes to stdout, collected as they arrive. */
export interface LineReader {
  lines: string[];
  /** Resolves once `count` lines match `re`; rejects after timeoutMs or when the process exits first. */
  waitFor(re: RegExp, count?: number, timeoutMs?: number): Promise<void>;
  exited(): boolean;
  /** stderr so far. */
  stderr(): string;
}

export function readLines(child: ChildProcess): LineReader {
  const lines: string[] = [];
  let partial = '';
  let err = '';
  let done = false;
  child.stdout?.on('data', (chunk: Buffer) => {
    partial += chunk.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  child.on('exit', () => {
    done = true;
  });
  return {
    lines,
    exited: () => done,
    stderr: () => err,
    async waitFor(re: RegExp, count = 1, timeoutMs = 10_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (lines.filter((l) => re.test(l)).length >= count) return;
        if (done) throw new Error(`the process exited before printing ${count} line(s) matching ${re}: stdout ${lines.join(' | ')} stderr ${err.trim()}`);
        if (Date.now() > deadline) throw new Error(`no ${count} line(s) matching ${re} within ${timeoutMs} ms: stdout ${lines.slice(-5).join(' | ')} stderr ${err.trim()}`);
        await sleep(50);
      }
    },
  };
}

/** Resident set size of a process in KiB, from /proc/PID/status. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS line`);
  return Number(m[1]);
}
