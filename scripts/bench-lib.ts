/**
 * Helpers for the benchmarks (scripts/bench.ts and its scenarios in
 * scripts/bench/, bench-vfp, bench-restart, bench-runtimes) and the lab
 * (scripts/lab-lib.ts): running commands, iperf3 output, /proc sampling, the
 * daemon's REST API, IPv4 prefixes, options, statistics and tables; and the
 * synthetic ACL rules that the policy scenario installs and bench-vfp
 * compiles. Kept apart from the benches so the parsing can be read (and
 * checked) without building a topology.
 *
 * Nothing here imports the rest of vsw: the bench drives vsw only through its
 * CLI and its API, as a user would, so it measures what users get.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** A failure the user can act on; main() prints only its message. */
export class BenchError extends Error {}

/** Thrown by cmd() and sleep() once SIGINT/SIGTERM arrived, so the bench unwinds into its cleanup. */
export class Interrupted extends BenchError {
  constructor() {
    super('interrupted.');
  }
}

/**
 * Aborted by the signal handler. Every command of the setup and measurement
 * phases is tied to it, so an interrupt kills the iperf3 client in flight and
 * the main flow reaches its `finally` (the one place that cleans up) instead
 * of two code paths racing to create and delete the same namespaces.
 */
export const interrupt = new AbortController();

export interface CmdResult {
  stdout: string;
  stderr: string;
  /** Exit status; null when the process died from a signal or the timeout. */
  code: number | null;
}

export interface CmdOptions {
  timeoutMs?: number;
  /** Return a non-zero exit instead of throwing (the caller looks at the output). */
  allowFail?: boolean;
  /** Part of cleanup: must run even after an interrupt. */
  cleanup?: boolean;
}

/** Every child started with start() that has not exited yet, so cleanup can kill strays. */
export const liveChildren = new Set<ChildProcess>();

/**
 * Runs a command to completion. Throws a BenchError naming the command and its
 * stderr, unless allowFail is set; a missing binary always throws.
 */
export async function cmd(file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  if (!opts.cleanup && interrupt.signal.aborted) throw new Interrupted();
  try {
    const { stdout, stderr } = await execFileP(file, args, {
      timeout: opts.timeoutMs ?? 30_000,
      // iperf3 -J of a 60 s run with per-interval stats runs to a few hundred KB.
      maxBuffer: 64 * 1024 * 1024,
      killSignal: 'SIGKILL',
      ...(opts.cleanup ? {} : { signal: interrupt.signal }),
    });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string; code?: number | string; killed?: boolean };
    if (!opts.cleanup && interrupt.signal.aborted) throw new Interrupted();
    if (e.code === 'ENOENT') throw new BenchError(`${file} was not found: install it or fix PATH.`);
    const res: CmdResult = {
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? '',
      code: typeof e.code === 'number' ? e.code : null,
    };
    if (opts.allowFail) return res;
    const why = res.stderr.trim().split('\n').pop() || (e.killed ? 'timed out' : e.message);
    throw new BenchError(`\`${file} ${args.join(' ')}\` failed: ${why}`);
  }
}

/**
 * Starts a long-running child (daemon, iperf3 server) and tracks it until it
 * exits. Its own process group keeps a terminal's Ctrl-C from reaching it: the
 * bench stops it in order during cleanup (the daemon still has endpoints to
 * remove then), and scripts/cleanup.sh finds it by its /tmp/vswt* arguments if
 * the bench itself is killed.
 */
export function start(file: string, args: string[], stdio: 'ignore' | 'pipe' | number = 'ignore'): ChildProcess {
  const child = spawn(file, args, { stdio: ['ignore', stdio, stdio], detached: true });
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  // A spawn error (ENOENT) also ends the child; the caller sees it through exited().
  child.once('error', () => liveChildren.delete(child));
  return child;
}

/** Resolves when the child has exited (at once if it already has), or after timeoutMs with false. */
export function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, timeoutMs);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

/** SIGTERM, then SIGKILL if the child is still there after graceMs. */
export async function stop(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await exited(child, graceMs)) return;
  child.kill('SIGKILL');
  await exited(child, 2000);
}

/** A sleep that an interrupt cuts short (with Interrupted). */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (interrupt.signal.aborted) return reject(new Interrupted());
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new Interrupted());
    };
    const timer = setTimeout(() => {
      interrupt.signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    interrupt.signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Polls fn until it returns a value other than undefined, or throws a BenchError with `what` after timeoutMs. */
export async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new BenchError(`${what} did not happen within ${(timeoutMs / 1000).toFixed(0)} s.`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- the daemon's REST API

export interface ApiResult {
  status: number;
  /** Parsed JSON, or undefined for an empty body. */
  body: unknown;
}

/**
 * One HTTP request to the daemon over its unix socket (node:http, as the CLI
 * does). Resolves with any status; the caller decides what a 4xx means. An
 * interrupt aborts it, unless it is part of cleanup.
 */
export function apiRequest(
  socketPath: string,
  method: string,
  urlPath: string,
  body?: unknown,
  opts: { timeoutMs?: number; cleanup?: boolean } = {},
): Promise<ApiResult> {
  if (!opts.cleanup && interrupt.signal.aborted) return Promise.reject(new Interrupted());
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> =
    payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise<ApiResult>((resolve, reject) => {
    const req = httpRequest(
      { socketPath, method, path: urlPath, headers, timeout: timeoutMs, ...(opts.cleanup ? {} : { signal: interrupt.signal }) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new BenchError(`${method} ${urlPath}: the daemon did not answer within ${timeoutMs / 1000} s.`)));
    req.on('error', (err) => {
      if (!opts.cleanup && interrupt.signal.aborted) reject(new Interrupted());
      else reject(err instanceof BenchError ? err : new BenchError(`${method} ${urlPath}: ${(err as Error).message}`));
    });
    req.end(payload);
  });
}

/** The daemon's error sentence from a JSON error body, or the HTTP status. */
export function apiError(r: ApiResult): string {
  const msg = (r.body as { error?: unknown } | undefined)?.error;
  return typeof msg === 'string' ? msg : `HTTP ${r.status}`;
}

// ---------------------------------------------------------------- statistics

/** A ratio or a rate that a scenario is judged by: reported next to its bar, never turned into a failure. */
export interface Check {
  what: string;
  value: number | null;
  /** The bar as text (">= 0.8"), or null for a figure shown for reference only. */
  bar: string | null;
  /** null when there is nothing to judge (the runs failed, or there is no bar). */
  met: boolean | null;
  /** Decimals to print the value with (default 2). */
  digits?: number;
}

/** A Check of `value` against a bar; met is null when the value is missing. */
export function judge(what: string, value: number | null, bar: string, ok: (v: number) => boolean, digits?: number): Check {
  return { what, value, bar, met: value === null ? null : ok(value), ...(digits === undefined ? {} : { digits }) };
}

// ---------------------------------------------------------------- options

/** A whole number with '_' allowed as a digit separator (1_000_000), or NaN. */
function wholeNumber(raw: string): number {
  return /^\d[\d_]*$/.test(raw) ? Number(raw.replace(/_/g, '')) : NaN;
}

/**
 * A whole-number option (`--name N`) from parseArgs' string: the default when
 * absent, else a number from min to max, else one sentence naming the option
 * and its range.
 */
export function intOption(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  if (raw === undefined) return dflt;
  const n = wholeNumber(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new BenchError(`--${name} takes a whole number from ${min} to ${max}, not "${raw}".`);
  return n;
}

/** A comma-separated list of whole numbers (`--rules 10,10000`): the default when absent, else each from min to max. */
export function intListOption(name: string, raw: string | undefined, dflt: readonly number[], min: number, max: number): number[] {
  if (raw === undefined) return [...dflt];
  const values = raw.split(',').map((item) => wholeNumber(item.trim()));
  if (values.some((n) => !Number.isInteger(n) || n < min || n > max)) {
    throw new BenchError(`--${name} takes whole numbers from ${min} to ${max}, comma-separated (such as ${dflt.join(',')}), not "${raw}".`);
  }
  return values;
}

/** A comma-separated choice (`--only tcp,nat`): every choice when absent, else the ones named, in the order of `choices`. */
export function choicesOption<T extends string>(name: string, raw: string | undefined, choices: readonly T[]): T[] {
  if (raw === undefined) return [...choices];
  const asked = raw.split(',').map((item) => item.trim()).filter(Boolean);
  if (asked.length === 0 || asked.some((a) => !(choices as readonly string[]).includes(a))) {
    throw new BenchError(`--${name} takes a comma-separated list of ${choices.join(', ')}, not "${raw}".`);
  }
  return choices.filter((c) => asked.includes(c));
}

// ---------------------------------------------------------------- repetitions and statistics

/**
 * The order of the legs of run `run` (1-based): as given in odd runs, reversed
 * in even ones, so that a slow drift (thermal, a neighbour) does not favour
 * the leg that always goes first.
 */
export function alternate<T>(run: number, legs: readonly T[]): T[] {
  return run % 2 === 1 ? [...legs] : [...legs].reverse();
}

/** The legs of run `run` (1-based) rotated by run - 1: over the runs each leg goes first, in the middle and last alike. */
export function rotate<T>(run: number, legs: readonly T[]): T[] {
  const k = legs.length === 0 ? 0 : (run - 1) % legs.length;
  return [...legs.slice(k), ...legs.slice(0, k)];
}

/** Median of the finite values; null when there are none (every run failed). */
export function median(values: readonly (number | null | undefined)[]): number | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** vsw/bridge; null when either is missing or the baseline is 0 (a ratio to zero says nothing). */
export function ratio(vsw: number | null, bridge: number | null): number | null {
  if (vsw === null || bridge === null || bridge === 0) return null;
  return vsw / bridge;
}

/**
 * Median of f over the successful records whose fields equal every field of
 * `where` (a test, a side, a variant ...); null when no such record has a value.
 */
export function medianOf<R extends { ok: boolean }>(records: readonly R[], where: Partial<R>, f: (r: R) => number | null | undefined): number | null {
  const keys = Object.keys(where) as (keyof R)[];
  return median(records.filter((r) => r.ok && keys.every((k) => r[k] === where[k])).map(f));
}

/**
 * Lines of a plain-text table. `align` is either how many columns from the
 * left are left-aligned (the others right-aligned), or one letter per column,
 * l or r. Lines carry no trailing blanks.
 */
export function formatTable(header: string[], cells: string[][], align: number | string = 2): string[] {
  const leftAligned = (i: number): boolean => (typeof align === 'number' ? i < align : align[i] !== 'r');
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]): string => c.map((s, i) => (leftAligned(i) ? s.padEnd(widths[i]) : s.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)];
}

// ---------------------------------------------------------------- links and namespaces

/** MTU of an interface in a namespace; null if it cannot be read. */
export async function ifMtu(ns: string, ifname: string): Promise<number | null> {
  const r = await cmd('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname], { allowFail: true });
  try {
    const mtu = (JSON.parse(r.stdout) as { mtu?: number }[])[0]?.mtu;
    return typeof mtu === 'number' ? mtu : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- IPv4 prefixes

export function ipv4ToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${ip}`);
  }
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

export interface Prefix {
  base: number;
  len: number;
}

/** "10.1.2.0/24" or a bare address (a host route, /32); null for anything else (IPv6, "default" is handled by the caller). */
export function parsePrefix(s: string): Prefix | null {
  const [addr, lenStr] = s.split('/');
  const len = lenStr === undefined ? 32 : Number(lenStr);
  if (!Number.isInteger(len) || len < 0 || len > 32) return null;
  let base: number;
  try {
    base = ipv4ToInt(addr);
  } catch {
    return null;
  }
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { base: (base & mask) >>> 0, len };
}

/** Two prefixes overlap when the shorter one contains the other's base. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  const len = Math.min(a.len, b.len);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
}

/** The IPv4 prefixes of every route of this host, in all tables ("default" left out). */
export async function hostRoutePrefixes(): Promise<Prefix[]> {
  const routes = JSON.parse((await cmd('ip', ['-j', '-4', 'route', 'show', 'table', 'all'])).stdout) as { dst?: string }[];
  return routes
    .map((r) => r.dst)
    .filter((d): d is string => typeof d === 'string' && d !== 'default')
    .map(parsePrefix)
    .filter((p): p is Prefix => p !== null && p.len > 0);
}

/**
 * Draws candidate prefixes (draw() returns CIDR text) until one overlaps
 * neither a route of the host nor any of `taken`; after 200 draws, throws a
 * BenchError with `exhausted`, which should tell the user what to free.
 */
export async function pickFreePrefix(draw: () => string, taken: readonly Prefix[], exhausted: string): Promise<{ cidr: string; prefix: Prefix }> {
  const used = [...(await hostRoutePrefixes()), ...taken];
  for (let attempt = 0; attempt < 200; attempt++) {
    const cidr = draw();
    const prefix = parsePrefix(cidr);
    if (!prefix) throw new Error(`not a prefix: ${cidr}`);
    if (!used.some((p) => prefixesOverlap(p, prefix))) return { cidr, prefix };
  }
  throw new BenchError(exhausted);
}

// ---------------------------------------------------------------- /proc

/** A "Vm*" line of /proc/PID/status in KiB (VmRSS, VmHWM); null if the process is gone. */
export async function procStatusKiB(pid: number, field: string): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

/** utime and stime of all the process's threads, in clock ticks; null if the process is gone. */
export async function procCpuTimes(pid: number): Promise<{ utime: number; stime: number } | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses: the fields that follow start after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so utime (14) and stime (15) are rest[11] and rest[12].
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? { utime, stime } : null;
}

/** utime + stime of all the process's threads, in clock ticks; null if the process is gone. */
export async function procCpuTicks(pid: number): Promise<number | null> {
  const t = await procCpuTimes(pid);
  return t ? t.utime + t.stime : null;
}

/** Measures a process's CPU use over an interval: call begin(), do the work, then end(). */
export class CpuMeter {
  private times0: { utime: number; stime: number } | null = null;
  private t0 = 0;
  /** After end(): CPU seconds in user mode and in the kernel over the interval (a TAP write runs the receiver's stack in the kernel). */
  userSeconds: number | null = null;
  systemSeconds: number | null = null;
  constructor(
    private readonly pid: number,
    private readonly clkTck: number,
  ) {}
  async begin(): Promise<void> {
    this.times0 = await procCpuTimes(this.pid);
    this.t0 = performance.now();
  }
  /** Percent of one core (a multi-threaded process can exceed 100). */
  async end(): Promise<number | null> {
    const times1 = await procCpuTimes(this.pid);
    const seconds = (performance.now() - this.t0) / 1000;
    if (this.times0 === null || times1 === null || seconds <= 0) return null;
    this.userSeconds = (times1.utime - this.times0.utime) / this.clkTck;
    this.systemSeconds = (times1.stime - this.times0.stime) / this.clkTck;
    return ((this.userSeconds + this.systemSeconds) / seconds) * 100;
  }
}

// ---------------------------------------------------------------- iperf3 -J

export interface TcpResult {
  /** Receiver-side goodput. */
  bitsPerSecond: number;
  retransmits: number | null;
  seconds: number;
}

export interface UdpResult {
  /** Datagrams the server received per second. */
  packetsPerSecond: number;
  /** Datagrams the client sent per second; the gap to packetsPerSecond is loss. */
  sentPacketsPerSecond: number;
  lostPercent: number;
  packets: number;
  lostPackets: number;
  seconds: number;
}

type Json = Record<string, unknown>;

function obj(v: unknown): Json | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/**
 * Parses iperf3 -J output. iperf3 writes a JSON document even when the test
 * fails, with the reason in "error"; that sentence is the most useful thing to
 * show, so it becomes the thrown message.
 */
export function parseIperfJson(stdout: string): Json {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch {
    throw new BenchError(`iperf3 printed no JSON${stdout.trim() ? `: ${stdout.trim().slice(0, 200)}` : ''}.`);
  }
  const d = obj(doc);
  if (!d) throw new BenchError('iperf3 printed JSON that is not an object.');
  if (typeof d.error === 'string') throw new BenchError(`iperf3: ${d.error}.`);
  return d;
}

export function tcpResult(doc: Json): TcpResult {
  const end = obj(doc.end);
  const recv = obj(end?.sum_received);
  const sent = obj(end?.sum_sent);
  const bps = num(recv?.bits_per_second);
  if (!end || bps === undefined) throw new BenchError('iperf3 TCP output has no end.sum_received.bits_per_second.');
  return {
    bitsPerSecond: bps,
    retransmits: num(sent?.retransmits) ?? null,
    seconds: num(recv?.seconds) ?? 0,
  };
}

/**
 * The client's JSON carries the server's count of what arrived: end.sum_received
 * (iperf3 >= 3.11) or, in older versions, end.sum, whose packets/lost_percent
 * come from the server report. Either way the received rate is
 * packets * (1 - lost%) / seconds.
 */
export function udpResult(doc: Json): UdpResult {
  const end = obj(doc.end);
  const s = obj(end?.sum_received) ?? obj(end?.sum);
  const packets = num(s?.packets);
  const lostPercent = num(s?.lost_percent);
  const seconds = num(s?.seconds);
  if (!s || packets === undefined || lostPercent === undefined || !seconds) {
    throw new BenchError('iperf3 UDP output has no end.sum_received (or end.sum) with packets, lost_percent and seconds.');
  }
  const lostPackets = num(s.lost_packets) ?? Math.round((packets * lostPercent) / 100);
  return {
    packetsPerSecond: (packets * (1 - lostPercent / 100)) / seconds,
    sentPacketsPerSecond: packets / seconds,
    lostPercent,
    packets,
    lostPackets,
    seconds,
  };
}

// ---------------------------------------------------------------- synthetic ACL rules

/** A rule as the daemon's API and the data plane's PortPolicy take it (plain JSON). */
export interface BenchRule {
  priority: number;
  action: 'block' | 'allow';
  direction?: 'in' | 'out' | 'both';
  match: {
    protocol?: 'tcp' | 'udp';
    srcPrefix?: string;
    dstPrefix?: string;
    srcPorts?: string;
    dstPorts?: string;
  };
}

/** mulberry32: a small seeded PRNG, so every run (and both benches) install the same rules. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * n ACL rules in the shapes real security groups have, none of which matches
 * traffic between addresses outside 10.200.0.0/15 and 172.16.0.0/12: every
 * rule names a source or destination inside those blocks, so a benchmark's own
 * flows are looked up against all of them and match none.
 *
 * Per 10 rules:
 *   4  block tcp to a /32, destination port range of 1 to 2000 ports (10.200.0.0/16)
 *   2  block tcp to a /32, one destination port (10.201.0.0/16)
 *   2  block from a /24 source, any protocol (172.16.0.0/13)
 *   1  block udp from a /24 source to a port range (172.24.0.0/14)
 *   1  block tcp from a /24 source with source ports 1024-65535 to port 22
 *      (172.28.0.0/14; both ports ranged: the classifier's worst shape)
 * Directions are mostly both, one in ten in and one in ten out. Priorities are
 * distinct (1000 + i). Addresses are distinct up to 10,240 rules.
 */
export function benchAclRules(n: number, seed = 1): BenchRule[] {
  const rnd = seededRandom(seed);
  const rules: BenchRule[] = [];
  const k = [0, 0, 0, 0, 0];
  const host = (second: number, j: number): string => `10.${second}.${(j >>> 8) & 0xff}.${j & 0xff}/32`;
  // The j-th /24 of a block of `size` /24s starting at 172.<second>.0.0.
  const net24 = (second: number, size: number, j: number): string => {
    const m = j % size;
    return `172.${second + (m >>> 8)}.${m & 0xff}.0/24`;
  };
  for (let i = 0; i < n; i++) {
    const kind = i % 10;
    const direction: BenchRule['direction'] = kind === 3 ? 'in' : kind === 7 ? 'out' : undefined;
    const base: Omit<BenchRule, 'match'> = { priority: 1000 + i, action: 'block', ...(direction ? { direction } : {}) };
    if (kind < 4) {
      const lo = 1 + Math.floor(rnd() * 60000);
      const hi = Math.min(65535, lo + Math.floor(rnd() * 2000));
      rules.push({ ...base, match: { protocol: 'tcp', dstPrefix: host(200, k[0]++), dstPorts: `${lo}-${hi}` } });
    } else if (kind < 6) {
      const j = k[1]++;
      const port = [22, 80, 443, 3306, 5432, 6379, 8080, 9200][j % 8];
      rules.push({ ...base, match: { protocol: 'tcp', dstPrefix: host(201, j), dstPorts: String(port) } });
    } else if (kind < 8) {
      rules.push({ ...base, match: { srcPrefix: net24(16, 2048, k[2]++) } });
    } else if (kind === 8) {
      const lo = 1 + Math.floor(rnd() * 60000);
      rules.push({ ...base, match: { protocol: 'udp', srcPrefix: net24(24, 1024, k[3]++), dstPorts: `${lo}-${lo + Math.floor(rnd() * 500)}` } });
    } else {
      rules.push({ ...base, match: { protocol: 'tcp', srcPrefix: net24(28, 1024, k[4]++), srcPorts: '1024-65535', dstPorts: '22' } });
    }
  }
  return rules;
}
