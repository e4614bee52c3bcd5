/**
 * `npm run bench:runtimes`: what vsw costs the container runtimes that use it,
 * against each runtime's own default network, in the same run:
 *   - podman 4.3: a vsw nat network through the vsw-cni plugin, against a CNI
 *     bridge (bridge + host-local, what podman's CNI backend makes);
 *   - docker 20.10: a vsw network through the vsw driver (`-d vsw`), against
 *     docker's own bridge.
 * For each: the start time of a container (`run --rm IMAGE true`, wall clock
 * of the whole CLI call, --runs times, median), and iperf3 TCP between two
 * containers on the network (one server, a client per run, --seconds each,
 * median Gbit/s). Ratios are vsw / baseline.
 *
 * Everything runs isolated under /tmp/PREFIX (the runtimes' config, storage
 * and sockets: test/integration/helpers/runtimes.ts) and is removed at the
 * end, also on failure or Ctrl-C; `npm run cleanup` removes what a killed run
 * left.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { BenchError, apiRequest, choicesOption, cmd, formatTable, intOption, median, parseIperfJson, ratio, start, stop, tcpResult, waitFor } from './bench-lib.js';
import { CLI, parseBenchArgs, requireRoot, resultPath, runMain, writeResult } from './bench/runner.js';
import type { CommandResult } from '../test/integration/helpers/env.js';
import { BUSYBOX_IMAGE, IPERF3_IN_IMAGE, hasIperf3, podmanEnv, runtimeAvailable, startDockerd, type DockerHandle, type PodmanHandle } from '../test/integration/helpers/runtimes.js';

const DOCKER_PLUGIN_SOCKET = '/run/docker/plugins/vsw.sock';

const HELP = `usage: npm run bench:runtimes -- [options]

Measures container start time and iperf3 TCP between two containers for
podman (vsw-cni against a CNI bridge) and docker (the vsw driver against
docker's bridge), in one run. Needs root, podman, runc, docker.io, busybox-static,
containernetworking-plugins, iperf3 (npm run setup installs them) and a built tree.

options:
  --runs N       container starts and iperf3 runs per network (default 7 starts, 3 iperf3 runs: N and ceil(N/2))
  --seconds S    length of each iperf3 run (default 5)
  --only LIST    podman,docker (default both)
  --out FILE     JSON results (default bench-results/bench-runtimes-<timestamp>.json)
  --help         show this text
`;

const RUNTIMES = ['podman', 'docker'] as const;

interface Options {
  runs: number;
  seconds: number;
  only: Set<(typeof RUNTIMES)[number]>;
  out: string;
}

function parseOptions(argv: string[]): Options | null {
  const values = parseBenchArgs(argv, { runs: { type: 'string' }, seconds: { type: 'string' }, only: { type: 'string' }, out: { type: 'string' } });
  if (!values) return null;
  return {
    runs: intOption('runs', values.runs, 7, 1, 50),
    seconds: intOption('seconds', values.seconds, 5, 1, 60),
    only: new Set(choicesOption('only', values.only, RUNTIMES)),
    out: resultPath(values.out, 'bench-runtimes'),
  };
}

interface NetworkResult {
  startMs: number[];
  gbps: number[];
}

interface RuntimeResult {
  runtime: string;
  vsw: NetworkResult;
  baseline: NetworkResult & { name: string };
}

/** A runtime as the bench drives it: run a container, start one detached, remove one, read its address. */
interface Runtime {
  name: string;
  /** Never throws for a non-zero exit. */
  run(args: string[]): Promise<CommandResult>;
  address(container: string, network: string): Promise<string>;
}

class Bench {
  readonly prefix = `vswt${randomBytes(2).toString('hex')}`;
  readonly dir = `/tmp/${this.prefix}`;
  readonly socket = `${this.dir}/vsw.sock`;
  daemon?: ChildProcess;
  podman?: PodmanHandle;
  docker?: DockerHandle;

  async startDaemon(docker: boolean): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const log = openSync(`${this.dir}/daemon.log`, 'a');
    this.daemon = start('node', [CLI, 'daemon', '--socket', this.socket, '--state-dir', `${this.dir}/state`, '--log-level', 'warn', ...(docker ? ['--docker', DOCKER_PLUGIN_SOCKET] : [])], log);
    closeSync(log);
    await waitFor('the vsw daemon to answer', 15_000, async () => ((await apiRequest(this.socket, 'GET', '/v1/version').catch(() => null))?.status === 200 ? true : undefined));
  }

  async vsw(args: string[]): Promise<string> {
    const r = await cmd('node', [CLI, '--socket', this.socket, ...args]);
    if (r.code !== 0) throw new BenchError(`vsw ${args.join(' ')} failed: ${r.stderr.trim()}`);
    return r.stdout;
  }

  async cleanup(): Promise<string[]> {
    const problems: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (this.podman) await attempt('podman cleanup', () => this.podman!.cleanup());
    if (this.docker) {
      // The containers and networks go first, through the driver, while the daemon still answers.
      const docker = this.docker;
      await attempt('docker containers', async () => {
        const ids = (await docker.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
        if (ids.length) await docker.docker(['rm', '-f', ...ids]);
        const nets = (await docker.docker(['network', 'ls', '--filter', 'driver=vsw', '-q'])).stdout.split('\n').filter(Boolean);
        if (nets.length) await docker.docker(['network', 'rm', ...nets]);
      });
      await attempt('dockerd stop', () => docker.stop());
    }
    if (this.daemon) {
      await attempt('vsw daemon stop', () => stop(this.daemon!));
      await attempt('vsw system reset', async () => {
        const r = await cmd('node', [CLI, 'system', 'reset', '--state-dir', `${this.dir}/state`, '--socket', this.socket]);
        if (r.code !== 0) throw new Error(r.stderr.trim());
      });
    }
    await attempt('remove the directory', () => cmd('rm', ['-rf', this.dir]));
    return problems;
  }
}

/** Wall-clock milliseconds of each `run --rm` of a trivial container on the network. */
async function startTimes(rt: Runtime, network: string, runs: number): Promise<number[]> {
  const out: number[] = [];
  // One unmeasured run: the first start pays for caches (image layers, plugin binaries) no later one does.
  for (let i = 0; i <= runs; i++) {
    const began = performance.now();
    const r = await rt.run(['run', '--rm', '--network', network, BUSYBOX_IMAGE, 'true']);
    const ms = performance.now() - began;
    if (r.code !== 0) throw new BenchError(`${rt.name} run on ${network} failed: ${r.stderr.trim().split('\n').pop()}`);
    if (i > 0) out.push(ms);
  }
  return out;
}

/** iperf3 TCP from a client container to a server container on the same network, `runs` times. */
async function throughput(rt: Runtime, network: string, runs: number, seconds: number, prefix: string): Promise<number[]> {
  const server = `${prefix}-iperf-${network.replace(/[^A-Za-z0-9]/g, '')}`;
  const started = await rt.run(['run', '-d', '--name', server, '--network', network, BUSYBOX_IMAGE, IPERF3_IN_IMAGE, '-s']);
  if (started.code !== 0) throw new BenchError(`${rt.name}: the iperf3 server on ${network} did not start: ${started.stderr.trim()}`);
  try {
    const ip = await rt.address(server, network);
    const out: number[] = [];
    for (let i = 0; i < runs; i++) {
      const client = await rt.run(['run', '--rm', '--network', network, BUSYBOX_IMAGE, IPERF3_IN_IMAGE, '-c', ip, '-t', String(seconds), '-J']);
      if (client.code !== 0) throw new BenchError(`${rt.name}: iperf3 to ${ip} on ${network} failed: ${client.stderr.trim().split('\n').pop()}`);
      out.push(tcpResult(parseIperfJson(client.stdout)).bitsPerSecond / 1e9);
    }
    return out;
  } finally {
    await rt.run(['rm', '-f', server]);
  }
}

/** A runtime driven through its docker-like CLI (podman, docker): the address is what its IPAM gave. */
function cliRuntime(name: string, run: (args: string[], opts: { timeoutMs: number }) => Promise<CommandResult>): Runtime {
  return {
    name,
    run: (args) => run(args, { timeoutMs: 120_000 }),
    address: async (container, network) => {
      const r = await run(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container], { timeoutMs: 30_000 });
      if (r.code !== 0 || r.stdout.trim() === '') throw new BenchError(`${name} inspect ${container}: no address on ${network}: ${r.stderr.trim()}`);
      return r.stdout.trim();
    },
  };
}

async function measure(rt: Runtime, vswNet: string, baseNet: string, baseName: string, o: Options, prefix: string): Promise<RuntimeResult> {
  const iperfRuns = Math.ceil(o.runs / 2);
  process.stderr.write(`bench: ${rt.name}: start time on ${baseName} and vsw\n`);
  const baseStart = await startTimes(rt, baseNet, o.runs);
  const vswStart = await startTimes(rt, vswNet, o.runs);
  process.stderr.write(`bench: ${rt.name}: iperf3 on ${baseName} and vsw\n`);
  const baseGbps = await throughput(rt, baseNet, iperfRuns, o.seconds, prefix);
  const vswGbps = await throughput(rt, vswNet, iperfRuns, o.seconds, prefix);
  return { runtime: rt.name, vsw: { startMs: vswStart, gbps: vswGbps }, baseline: { name: baseName, startMs: baseStart, gbps: baseGbps } };
}

async function benchRuntimes(o: Options): Promise<number> {
  requireRoot('namespaces, TAPs, container runtimes', 'npm run bench:runtimes');
  if (!hasIperf3()) throw new BenchError('iperf3 is not installed: run `npm run setup`.');
  for (const rt of o.only) {
    const missing = await runtimeAvailable(rt === 'podman' ? 'podman' : 'docker');
    if (missing) throw new BenchError(missing);
  }
  const bench = new Bench();
  const results: RuntimeResult[] = [];
  let failure: unknown;
  try {
    await bench.startDaemon(o.only.has('docker'));
    if (o.only.has('podman')) {
      await bench.vsw(['network', 'create', '-d', 'nat', '--subnet', '10.252.1.0/24', `${bench.prefix}p`]);
      const binDir = `${bench.dir}/cni-bin`;
      const podman = (bench.podman = podmanEnv(bench.prefix, { cniPluginDirs: [binDir, '/usr/lib/cni'] }));
      await bench.vsw(['cni', 'install', '--network', `${bench.prefix}p`, '--bin-dir', binDir, '--conf-dir', podman.cniConfigDir]);
      await podman.importBusyboxImage();
      const base = await podman.bridgeNetwork(`${bench.prefix}pb`, '10.252.2.0/24');
      results.push(await measure(cliRuntime('podman', (args, opts) => podman.run(args, opts)), `${bench.prefix}p`, base.name, 'CNI bridge', o, bench.prefix));
    }
    if (o.only.has('docker')) {
      const docker = (bench.docker = await startDockerd(bench.prefix, { bridge: true, bridgeSubnet: '10.252.3.0/24' }));
      await docker.importBusyboxImage();
      await docker.dockerOk(['network', 'create', '-d', 'vsw', '--subnet', '10.252.4.0/24', `${bench.prefix}d`]);
      results.push(await measure(cliRuntime('docker', (args, opts) => docker.docker(args, opts)), `${bench.prefix}d`, 'bridge', 'docker bridge', o, bench.prefix));
    }
  } catch (err) {
    failure = err;
  }
  const problems = await bench.cleanup();
  if (failure) throw failure;
  if (problems.length) throw new BenchError(`cleanup failed: ${problems.join('; ')}`);

  const rows = results.map((r) => {
    const [vs, bs, vg, bg] = [median(r.vsw.startMs), median(r.baseline.startMs), median(r.vsw.gbps), median(r.baseline.gbps)];
    const f = (v: number | null, d = 0): string => (v === null ? '-' : v.toFixed(d));
    return [r.runtime, r.baseline.name, f(bs), f(vs), f(ratio(vs, bs), 2), f(bg, 2), f(vg, 2), f(ratio(vg, bg), 2)];
  });
  const table = formatTable(['RUNTIME', 'BASELINE', 'START BASE ms', 'START VSW ms', 'RATIO', 'TCP BASE Gbit/s', 'TCP VSW Gbit/s', 'RATIO'], rows);
  process.stdout.write(`${table.join('\n')}\n`);
  await writeResult(o.out, { when: new Date().toISOString(), runs: o.runs, seconds: o.seconds, results });
  return 0;
}

await runMain({ name: 'bench', help: HELP, parse: parseOptions, run: benchRuntimes, interruptible: true });
