/**
 * `npm run bench`: vsw against the kernel's own answer to the same job, a
 * Linux bridge with veth pairs, on this machine, in one run.
 *
 * Two namespaces hang off a vsw `internal` network (TAPs served by a daemon
 * this script starts), two off a Linux bridge. Then the scenarios, one file
 * each in scripts/bench/ (the contract: scripts/bench/scenario.ts):
 *   tcp, udp   iperf3 one TCP stream, and a flood of 64-byte UDP datagrams,
 *              between each pair, vsw and bridge alternating so that
 *              background noise hits both;
 *   policy     one TCP stream with 10 and 10,000 ACL rules on each vsw port,
 *              none matching the stream, against the bridge in the same run;
 *   qos        one TCP stream from an endpoint capped at 100 Mbit/s and at
 *              1 Gbit/s, against the cap;
 *   nat        a namespace behind a vsw nat network, to a server in an
 *              "outside" namespace the host routes to: one TCP stream both
 *              ways and new TCP connections and UDP flows per second, next
 *              to the same traffic switched by vsw without NAT;
 *   overlay    a two-host lab (scripts/lab-lib.ts) through a vsw VXLAN
 *              overlay against the kernel's own VXLAN on the same underlay;
 *   vm         a QEMU guest (scripts/vm/guest.ts) to a namespace through
 *              vsw's vhost-user port against QEMU's own -netdev tap on a
 *              Linux bridge, the two guests one after the other.
 * The medians and the ratios are printed and written to a JSON file.
 * Absolute numbers depend on the machine; the ratio is what to compare
 * across machines.
 *
 * The daemon's memory is sampled (VmRSS) idle and after each scenario, and
 * `--soak N` adds one long TCP run with a sample every 5 s, to show that the
 * data path does not leak per packet.
 *
 * Everything the bench creates carries one per-run prefix (vswt + 4 hex) and
 * is removed at the end, after a failure and on SIGINT/SIGTERM alike;
 * `npm run cleanup` removes what a SIGKILLed run left.
 */

import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

import { Interrupted, procStatusKiB, sleep } from './bench-lib.js';
import { setupBridge } from './bench/bridge-side.js';
import { Cleanup, freshPrefix, logTail, sh, type BenchContext, type BenchOptions, type RunRecord } from './bench/context.js';
import { failedLeg, waitReachable } from './bench/measure.js';
import { BENCH_HELP, parseBenchOptions } from './bench/options.js';
import { CLI, REPO_ROOT, checkLines, machineInfo, reportTable, requireBuilt, requireRoot, requireTools, rowsJson, runMain, writeResult, type Tool } from './bench/runner.js';
import { SUMMARY_COLUMNS, mainTable, rssKey, type Scenario } from './bench/scenario.js';
import { SCENARIOS } from './bench/scenarios.js';
import { soak, soakRows } from './bench/soak.js';
import { VswDaemon } from './bench/vsw-daemon.js';

/** What every run uses, whichever scenarios it has. */
const TOOLS: readonly Tool[] = [
  ['ip', 'iproute2'],
  ['iperf3', 'iperf3'],
  ['ping', 'iputils-ping'],
  ['ss', 'iproute2'],
];

async function preflight(chosen: readonly Scenario[]): Promise<void> {
  requireRoot('it creates network namespaces and links', 'npm run bench');
  await requireTools(TOOLS);
  requireBuilt(CLI, 'the vsw CLI', 'npm run build');
  for (const s of chosen) {
    await requireTools(s.tools ?? [], `the ${s.name} scenario`);
    await s.preflight?.();
  }
}

async function benchMachine(): Promise<Record<string, unknown>> {
  const firstLine = async (file: string, args: string[]): Promise<string | null> => {
    const r = await sh(file, args, { allowFail: true });
    return r.code === 0 ? r.stdout.split('\n')[0].trim() : null;
  };
  // With bridge-nf-call-iptables on, bridged frames also traverse iptables: it slows the baseline, so it is recorded.
  const brNf = await readFile('/proc/sys/net/bridge/bridge-nf-call-iptables', 'utf8').then((s) => Number(s.trim()), () => null);
  return {
    ...machineInfo(),
    iperf3: await firstLine('iperf3', ['--version']),
    bridgeNfCallIptables: brNf,
    vswCommit: await firstLine('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
  };
}

// ---------------------------------------------------------------- scenarios

interface ScenarioOutcome {
  records: RunRecord[];
  topology?: unknown;
  details?: Record<string, unknown>;
}

/** setup, run, describe, teardown; a setup that fails is one failed record, so the scenarios measured before still get written. */
async function runScenario(ctx: BenchContext, s: Scenario): Promise<ScenarioOutcome> {
  let state: unknown;
  try {
    state = await s.setup?.(ctx);
  } catch (err) {
    return { records: [failedLeg(ctx, { test: s.name, side: 'vsw', variant: 'setup', run: 0 }, err)] };
  }
  try {
    const records = await s.run(ctx, state);
    return { records, ...(await s.describe?.(ctx, state)) };
  } finally {
    await s.teardown?.(ctx, state);
  }
}

// ---------------------------------------------------------------- main

const cleanup = new Cleanup();

async function bench(opts: BenchOptions): Promise<number> {
  const chosen = SCENARIOS.filter((s) => opts.tests.includes(s.name));
  await preflight(chosen);
  const clk = await sh('getconf', ['CLK_TCK'], { allowFail: true });
  const clkTck = Number(clk.stdout.trim()) || 100;

  // Fail on an unwritable --out now, not after minutes of measuring.
  await mkdir(path.dirname(opts.out), { recursive: true });
  const prefix = await freshPrefix();
  const workDir = `/tmp/${prefix}`;
  console.error(`bench: prefix ${prefix}, ${opts.runs} run(s) of ${opts.time} s per test and side${opts.soak ? `, soak ${opts.soak} s` : ''}`);
  cleanup.add(`remove ${workDir}`, () => rm(workDir, { recursive: true, force: true }));
  await mkdir(workDir, { recursive: true });

  if (opts.profile) await mkdir(opts.profile, { recursive: true });
  const daemon = new VswDaemon(prefix, workDir, cleanup, opts.profile ? ['--cpu-prof', '--cpu-prof-dir', opts.profile] : []);
  try {
    const machine = await benchMachine();
    const v = await daemon.setup([]);
    // qos, nat and overlay have baselines of their own (the cap; vsw without NAT; the kernel's VXLAN).
    const b = chosen.some((s) => s.usesBridge) ? await setupBridge(cleanup, prefix, [v.prefix]) : null;
    await waitReachable(v.side);
    if (b) await waitReachable(b.side);
    console.error(`bench: vsw ${v.side.clientIp} -> ${v.side.serverIp} (mtu ${v.side.mtu})${b ? `, bridge ${b.side.clientIp} -> ${b.side.serverIp} (mtu ${b.side.mtu})` : ''}`);

    // Idle: two ports, one ping's worth of learning, nothing flowing.
    await sleep(1000);
    const memory: Record<string, number | null> = { rssIdleKiB: await procStatusKiB(daemon.pid, 'VmRSS') };

    const ctx: BenchContext = { opts, prefix, workDir, cleanup, daemon, clkTck, vsw: v.side, bridge: b?.side ?? null, taken: [v.prefix, ...(b ? [b.prefix] : [])] };
    const records: RunRecord[] = [];
    const topology: Record<string, unknown> = { vsw: v.side, bridge: b?.side ?? null };
    const details = new Map<Scenario, Record<string, unknown>>();
    for (const s of opts.runs === 0 ? [] : chosen) {
      const outcome = await runScenario(ctx, s);
      records.push(...outcome.records);
      if (outcome.topology !== undefined) topology[s.name] = outcome.topology;
      if (outcome.details) details.set(s, outcome.details);
      memory[rssKey(s)] = await procStatusKiB(daemon.pid, 'VmRSS');
    }
    const soakResult = opts.soak > 0 ? await soak(ctx, opts.soak) : null;
    memory.hwmKiB = await procStatusKiB(daemon.pid, 'VmHWM');

    const ran = chosen.filter((s) => records.some((r) => r.test === s.name));
    const summary = mainTable(chosen, records, memory, soakResult ? soakRows(soakResult) : []);
    const tables = ran.flatMap((s) => {
      const table = s.table?.(records);
      return table ? [{ s, table }] : [];
    });
    const ratios = ran.flatMap((s) => s.checks?.(records) ?? []);
    const failed = records.filter((r) => !r.ok).length + (soakResult?.error ? 1 : 0);
    const result = {
      bench: 'vsw vs Linux bridge (veth), iperf3',
      timestamp: new Date().toISOString(),
      prefix,
      options: { runs: opts.runs, time: opts.time, soak: opts.soak, tests: opts.tests, ...Object.assign({}, ...chosen.map((s) => s.resultOptions?.(opts) ?? {})) },
      machine,
      topology,
      summary: rowsJson(summary),
      ...Object.fromEntries(tables.map(({ s, table }) => [s.name, { summary: table.summary, ...details.get(s) }])),
      ratios,
      daemon: memory,
      soak: soakResult,
      runs: records,
    };

    console.log('');
    console.log(`vsw bench: ${machine.nproc} cores, kernel ${machine.kernel}, node ${machine.node}, ${opts.runs} run(s) x ${opts.time} s, medians`);
    for (const line of reportTable('scenario', SUMMARY_COLUMNS, summary)) console.log(line);
    for (const { table } of tables) {
      console.log('');
      for (const line of table.lines) console.log(line);
    }
    for (const line of checkLines(ratios)) console.log(line);
    await writeResult(opts.out, result);
    if (failed) {
      console.error(`bench: ${failed} of ${records.length + (soakResult ? 1 : 0)} runs failed; their errors are in the JSON file.`);
      return 1;
    }
    return 0;
  } catch (err) {
    // A dead daemon's log tail is already in the error (VswDaemon.died).
    if (!(err instanceof Interrupted) && daemon.alive()) {
      const tail = await logTail(daemon.logPath, 10);
      if (tail) console.error(`bench: the end of the daemon's log (${daemon.logPath}):\n${tail}`);
    }
    throw err;
  }
}

await runMain({ name: 'bench', help: BENCH_HELP, parse: parseBenchOptions, run: bench, cleanup: () => cleanup.run(), interruptible: true });
