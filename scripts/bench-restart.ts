/**
 * `npm run bench:restart`: what restarting the daemon costs the containers
 * on it, with 1, 100 and 1,000 endpoints (--endpoints).
 *
 * For each size: that many namespaces (IPv6 off, or their multicast chatter
 * floods every port) with an endpoint each on one internal network, built
 * through the REST API; then, per run:
 *   - start to first forwarded frame: the daemon is stopped with SIGTERM
 *     (so runtime.bin is there, as in an upgrade), a ping from endpoint 0 to
 *     endpoint 1 every 10 ms is already running, and the clock starts when
 *     the new daemon is spawned; the first echo reply after that (ping -D
 *     timestamps) is the first frame forwarded. The time to the socket
 *     appearing and the daemon's own count ('listening', ms) are kept too;
 *   - ping loss across a SIGTERM restart and across a SIGKILL restart: the
 *     same 10 ms ping while the daemon is stopped and started again at once;
 *     lost echoes, and the longest gap between two replies.
 * Once per size: the state file's size, the create latency of the last
 * endpoints (each answer waits for the state write), and the state write
 * latency itself from the daemon's own histogram (vsw_state_write_duration_
 * seconds, read over 20 policy writes at that size).
 *
 * The baseline in the same run is the floor no restart can beat: starting
 * node with the vsw CLI (`vsw --version`), and the same ping with no
 * restart (its loss is the machine's).
 *
 * Everything carries one prefix (vswt + 4 hex) and is removed at the end,
 * also on failure or Ctrl-C; `npm run cleanup` removes what a killed run left.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import {
  BenchError,
  apiError,
  apiRequest,
  cmd,
  exited,
  formatTable,
  intListOption,
  intOption,
  median,
  pickFreePrefix,
  sleep,
  start,
  stop,
  waitFor,
} from './bench-lib.js';
import { CLI, parseBenchArgs, requireBuilt, requireRoot, resultPath, runMain, writeResult } from './bench/runner.js';
const PING_INTERVAL_S = 0.01;

const HELP = `usage: npm run bench:restart -- [options]

Measures what a restart of the vsw daemon costs its containers: time from
daemon start to the first forwarded frame, ping loss across a SIGTERM and a
SIGKILL restart, and the state file's size and write latency, with 1, 100
and 1,000 endpoints. Needs root, iproute2, ping and a built tree.

options:
  --endpoints LIST  endpoint counts, comma-separated (default 1,100,1000)
  --runs N          restarts of each kind per count (default 3); medians are reported
  --out FILE        JSON results (default bench-results/bench-restart-<timestamp>.json)
  --help            show this text
`;

interface Options {
  endpoints: number[];
  runs: number;
  out: string;
}

function parseOptions(argv: string[]): Options | null {
  const values = parseBenchArgs(argv, { endpoints: { type: 'string' }, runs: { type: 'string' }, out: { type: 'string' } });
  if (!values) return null;
  return {
    // One endpoint still gets a peer: the ping needs one.
    endpoints: intListOption('endpoints', values.endpoints, [1, 100, 1000], 1, 4000),
    runs: intOption('runs', values.runs, 3, 1, 50),
    out: resultPath(values.out, 'bench-restart'),
  };
}

/** A running `ping -D` whose replies (wall-clock seconds) are collected as they come. */
class Pinger {
  readonly replies: number[] = [];
  private readonly child: ChildProcess;
  private summary = '';

  constructor(ns: string, ip: string) {
    this.child = start('ip', ['netns', 'exec', ns, 'ping', '-D', '-n', '-i', String(PING_INTERVAL_S), '-W', '1', ip], 'pipe');
    let partial = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const m = /^\[(\d+\.\d+)\] \d+ bytes from/.exec(line);
        if (m) this.replies.push(Number(m[1]) * 1000);
        else this.summary += `${line}\n`;
      }
    });
  }

  firstReplyAfter(ms: number): number | undefined {
    return this.replies.find((r) => r > ms);
  }

  /** SIGINT (ping prints its summary), then sent and received as ping counts them, and the longest gap. */
  async finish(): Promise<{ sent: number; received: number; longestGapMs: number }> {
    this.child.kill('SIGINT');
    await exited(this.child, 3000);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(this.summary);
    if (!m) throw new BenchError(`ping printed no summary: ${this.summary.trim().slice(-200)}`);
    let gap = 0;
    for (let i = 1; i < this.replies.length; i++) gap = Math.max(gap, this.replies[i] - this.replies[i - 1]);
    return { sent: Number(m[1]), received: Number(m[2]), longestGapMs: gap };
  }
}

class Bench {
  readonly prefix = `vswt${randomBytes(2).toString('hex')}`;
  readonly dir = `/tmp/${this.prefix}`;
  readonly socket = `${this.dir}/vsw.sock`;
  readonly stateDir = `${this.dir}/state`;
  readonly log = `${this.dir}/daemon.log`;
  daemon?: ChildProcess;
  namespaces: string[] = [];

  ns(i: number): string {
    return `${this.prefix}-e${i}`;
  }

  startDaemon(extra: string[] = []): ChildProcess {
    const fd = openSync(this.log, 'a');
    try {
      this.daemon = start(process.execPath, [CLI, 'daemon', '--socket', this.socket, '--state-dir', this.stateDir, '--log-level', 'info', ...extra], fd);
    } finally {
      closeSync(fd);
    }
    return this.daemon;
  }

  async waitAnswering(): Promise<void> {
    await waitFor('the vsw daemon answering', 60_000, async () => {
      if (this.daemon && (this.daemon.exitCode !== null || this.daemon.signalCode !== null)) throw new BenchError(`the daemon exited; see ${this.log}.`);
      const r = await apiRequest(this.socket, 'GET', '/v1/version').catch(() => undefined);
      return r?.status === 200 ? true : undefined;
    }, 20);
  }

  async api(method: string, url: string, body?: unknown): Promise<unknown> {
    const r = await apiRequest(this.socket, method, url, body);
    if (r.status >= 300) throw new BenchError(`${method} ${url}: ${apiError(r)}`);
    return r.body;
  }

  /** Namespaces through one `ip -batch` each step: a thousand `ip` processes would cost more than what is measured. */
  async addNamespaces(from: number, to: number): Promise<void> {
    const names = Array.from({ length: to - from }, (_, k) => this.ns(from + k));
    const batch = `${this.dir}/netns.batch`;
    await writeFile(batch, names.map((n) => `netns add ${n}\n`).join(''));
    await cmd('ip', ['-batch', batch], { timeoutMs: 300_000 });
    this.namespaces.push(...names);
    await writeFile(batch, names.map((n) => `netns exec ${n} sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1\n`).join(''));
    await cmd('ip', ['-batch', batch], { timeoutMs: 300_000 });
  }

  async metric(name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`)).text();
    const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
    if (!m) throw new BenchError(`the daemon's metrics have no ${name}.`);
    return Number(m[1]);
  }

  metricsPort = 0;

  async cleanup(): Promise<void> {
    if (this.daemon) await stop(this.daemon, 10_000);
    await cmd(process.execPath, [CLI, '--socket', this.socket, 'system', 'reset', '--state-dir', this.stateDir], { cleanup: true, allowFail: true, timeoutMs: 300_000 });
    if (this.namespaces.length > 0) {
      const batch = `${this.dir}/netns-del.batch`;
      await writeFile(batch, this.namespaces.map((n) => `netns delete ${n}\n`).join(''));
      await cmd('ip', ['-force', '-batch', batch], { cleanup: true, allowFail: true, timeoutMs: 300_000 });
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

interface SizeResult {
  endpoints: number;
  stateFileBytes: number;
  /** Median create latency of the last 10% of endpoints (each answer waits for the state write). */
  createMs: number | null;
  /** Mean state.json write latency at this size, from the daemon's histogram over 20 writes. */
  stateWriteMs: number;
  runs: {
    startToSocketMs: number;
    startToFirstFrameMs: number;
    daemonListeningMs: number | null;
    restoredMs: number | null;
    sigterm: { lost: number; sent: number; longestGapMs: number };
    sigkill: { lost: number; sent: number; longestGapMs: number };
  }[];
}

async function lastLogMs(log: string, msg: string): Promise<number | null> {
  const lines = (await readFile(log, 'utf8')).split('\n').filter((l) => l.includes(`"msg":"${msg}"`));
  const last = lines.pop();
  return last ? (JSON.parse(last) as { ms?: number }).ms ?? null : null;
}

async function measureSize(b: Bench, n: number, runs: number, subnet: string): Promise<SizeResult> {
  await mkdir(b.dir, { recursive: true });
  b.metricsPort = 20000 + (randomBytes(2).readUInt16BE(0) % 20000);
  b.startDaemon(['--metrics', `127.0.0.1:${b.metricsPort}`]);
  await b.waitAnswering();
  await b.api('POST', '/v1/networks', { name: `${b.prefix}-net`, driver: 'internal', subnet });
  const count = Math.max(2, n);
  await b.addNamespaces(0, count);
  const ids: string[] = [];
  const ips: string[] = [];
  const createMs: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const ep = (await b.api('POST', '/v1/endpoints', { network: `${b.prefix}-net`, netns: b.ns(i) })) as { id: string; ip: string };
    createMs.push(performance.now() - t0);
    ids.push(ep.id);
    ips.push(ep.ip);
    if (i % 100 === 99) process.stderr.write(`bench: ${i + 1}/${count} endpoints\n`);
  }
  const writesBefore = await b.metric('vsw_state_write_duration_seconds_count');
  const sumBefore = await b.metric('vsw_state_write_duration_seconds_sum');
  for (let i = 0; i < 10; i++) {
    await b.api('PUT', `/v1/endpoints/${ids[0]}/qos`, { maxEgress: '10gbit' });
    await b.api('DELETE', `/v1/endpoints/${ids[0]}/qos`);
  }
  const writes = (await b.metric('vsw_state_write_duration_seconds_count')) - writesBefore;
  const stateWriteMs = (((await b.metric('vsw_state_write_duration_seconds_sum')) - sumBefore) / writes) * 1000;
  const stateFileBytes = statSync(`${b.stateDir}/state.json`).size;

  const result: SizeResult = { endpoints: count, stateFileBytes, createMs: median(createMs.slice(Math.floor(count * 0.9))), stateWriteMs, runs: [] };
  const restartOnce = async (signal: 'SIGTERM' | 'SIGKILL'): Promise<{ lost: number; sent: number; longestGapMs: number }> => {
    const ping = new Pinger(b.ns(0), ips[1]);
    await waitFor('the ping getting replies', 10_000, async () => (ping.replies.length >= 20 ? true : undefined), 20);
    b.daemon!.kill(signal);
    await exited(b.daemon!, 30_000);
    const restarted = Date.now();
    b.startDaemon();
    await waitFor('replies after the restart', 60_000, async () => (ping.replies.filter((r) => r > restarted).length >= 50 ? true : undefined), 20);
    const r = await ping.finish();
    return { lost: r.sent - r.received, sent: r.sent, longestGapMs: Math.round(r.longestGapMs) };
  };

  for (let run = 0; run < runs; run++) {
    await stop(b.daemon!, 30_000);
    const ping = new Pinger(b.ns(0), ips[1]);
    const t0 = Date.now();
    b.startDaemon();
    const socketAt = await waitFor('the socket', 60_000, async () => (existsSync(b.socket) ? Date.now() : undefined), 2);
    const first = await waitFor('the first reply', 60_000, async () => ping.firstReplyAfter(t0), 5);
    await ping.finish();
    await b.waitAnswering();
    const sigterm = await restartOnce('SIGTERM');
    const sigkill = await restartOnce('SIGKILL');
    result.runs.push({
      startToSocketMs: socketAt - t0,
      startToFirstFrameMs: Math.round(first - t0),
      daemonListeningMs: await lastLogMs(b.log, 'listening'),
      restoredMs: await lastLogMs(b.log, 'state restored'),
      sigterm,
      sigkill,
    });
    process.stderr.write(`bench: ${count} endpoints, run ${run + 1}: first frame ${Math.round(first - t0)} ms after start; SIGTERM lost ${sigterm.lost}/${sigterm.sent}, SIGKILL lost ${sigkill.lost}/${sigkill.sent}\n`);
  }
  return result;
}

/** The floors: node starting the vsw CLI, and the ping's own loss with nothing restarted. */
async function baseline(b: Bench): Promise<{ cliStartMs: number; pingLossNoRestart: number }> {
  const starts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await cmd(process.execPath, [CLI, '--version']);
    starts.push(performance.now() - t0);
  }
  const ping = new Pinger(b.ns(0), await endpointIp(b, 1));
  await sleep(3000);
  const r = await ping.finish();
  return { cliStartMs: Math.round(median(starts) ?? 0), pingLossNoRestart: r.sent - r.received };
}

async function endpointIp(b: Bench, i: number): Promise<string> {
  const list = (await b.api('GET', '/v1/endpoints')) as { netns: string; ip: string }[];
  const ep = list.find((e) => e.netns === b.ns(i));
  if (!ep) throw new BenchError(`no endpoint in ${b.ns(i)}.`);
  return ep.ip;
}

async function bench(opts: Options): Promise<number> {
  requireRoot('namespaces, TAPs', 'npm run bench:restart');
  requireBuilt(CLI, 'the vsw CLI', 'npm run build');
  const sizes: SizeResult[] = [];
  let floor: { cliStartMs: number; pingLossNoRestart: number } | undefined;
  for (const n of opts.endpoints) {
    const b = new Bench();
    try {
      const { cidr } = await pickFreePrefix(() => `10.${100 + (randomBytes(1)[0] % 100)}.${(randomBytes(1)[0] % 16) * 16}.0/20`, [], 'no free /20 in 10.100.0.0/9 for the bench network: free one.');
      process.stderr.write(`bench: ${n} endpoints on ${cidr} (prefix ${b.prefix})\n`);
      sizes.push(await measureSize(b, n, opts.runs, cidr));
      floor ??= await baseline(b);
    } finally {
      await b.cleanup();
    }
  }

  const rows = sizes.map((s) => {
    const med = (f: (r: SizeResult['runs'][number]) => number | null) => median(s.runs.map(f));
    return [
      String(s.endpoints),
      fmt(med((r) => r.startToSocketMs)),
      fmt(med((r) => r.startToFirstFrameMs)),
      `${fmt(med((r) => r.sigterm.lost))} (${fmt(med((r) => r.sigterm.longestGapMs))} ms)`,
      `${fmt(med((r) => r.sigkill.lost))} (${fmt(med((r) => r.sigkill.longestGapMs))} ms)`,
      `${(s.stateFileBytes / 1024).toFixed(1)} KiB`,
      `${s.stateWriteMs.toFixed(2)} ms`,
      `${fmt(s.createMs)} ms`,
    ];
  });
  for (const line of formatTable(['ENDPOINTS', 'START->SOCKET ms', 'START->1ST FRAME ms', 'SIGTERM LOST (GAP)', 'SIGKILL LOST (GAP)', 'STATE FILE', 'STATE WRITE', 'CREATE'], rows)) console.log(line);
  if (floor) console.log(`\nfloor in the same run: node starting the vsw CLI ${floor.cliStartMs} ms; the same ping without a restart lost ${floor.pingLossNoRestart} in 3 s (10 ms interval)`);
  await writeResult(opts.out, { date: new Date().toISOString(), options: opts, floor, sizes });
  return 0;
}

function fmt(v: number | null): string {
  return v === null ? '-' : String(Math.round(v));
}

await runMain({ name: 'bench', help: HELP, parse: parseOptions, run: bench, interruptible: true });
