/**
 * `npm run bench:vfp`: a microbenchmark of the VFP slow path and the unified
 * flow table, on synthetic frames, with no kernel, TAP or namespace involved.
 *
 * Why: `npm run bench` measures what users get end to end, and there the
 * kernel's TAP writes dominate (see docs/BENCHMARKS.md); a slow path that
 * grows with the rule count would hide behind a long TCP stream, whose one
 * flow is set up once. The VFP design promises that thousands of rules per
 * port do not make new-flow setup linear in the rule count, and that cached
 * flows never look at a rule; this script measures exactly those two claims,
 * plus what a million cached flows cost in memory.
 *
 * What it measures, each as the median of --runs runs:
 *   - New flows per second through the whole slow path: Switch.receive on
 *     batches of 64 distinct TCP SYNs from port 1 to port 2 (one network, both
 *     ports with the same ACL of N rules, spoof guard on), so every frame runs
 *     spoof guard, port 1's layers outbound, MAC lookup, port 2's layers
 *     inbound, two conntrack creations and one flow-table insert. The rules
 *     (scripts/bench-lib.ts benchAclRules) never match the test traffic, so
 *     every lookup has to rule all of them out: the classifier's worst case.
 *     With 10 and with 10,000 rules (--rules); the ratio last/first says
 *     whether setup cost grows with the rule count.
 *   - Cached frames per second: the same frames again, now flow-table hits.
 *   - Memory of 1,000,000 cached flows (--mem-flows), in a fresh child process:
 *     RSS before the switch exists, after it is built, and after the flows
 *     went through Switch.receive; the typed-array sizes the tables report.
 *   - Rule build time for 10,000 rules: validation (what the daemon does on
 *     a PUT), Vfp.setPolicy (parse and compile, two classifiers per group),
 *     and the Classifier constructor alone.
 *
 * Every run builds a fresh Switch, so each run sets up its flows in an empty
 * table, as a restarted daemon would. The switch's clock is frozen during a
 * run (conntrack timeouts never fire mid-measurement). Frames are written
 * into the I/O buffer once and only the 6 bytes that make a flow distinct
 * (source port, destination address) are patched per frame, so the harness
 * costs next to nothing; transmit() counts and discards. Each run checks that
 * every frame reached port 2 and that the right number of flows was created
 * (or, cached, that no frame took the slow path), so a broken path cannot
 * post a flattering number.
 *
 * Numbers are per core of this machine; the ratios are what to compare.
 */

import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { buildArpRequest, buildTcp4 } from '../src/packet/builders.js';
import { VNET_HDR_LEN } from '../src/packet/vnet.js';
import { COUNTER_COLUMNS, TX_FRAMES } from '../src/switch/counters.js';
import { MacTable } from '../src/switch/mac-table.js';
import { Switch, type FrameIo, type SwitchOptions } from '../src/switch/switch.js';
import { Classifier } from '../src/vfp/classifier.js';
import { matchToClassifierRule } from '../src/vfp/compile.js';
import { parseMatch, validateLayer, type LayerSpec, type PortPolicy } from '../src/vfp/policy.js';
import { Vfp } from '../src/vfp/vfp.js';
import { BenchError, benchAclRules, formatTable, intListOption, intOption, median } from './bench-lib.js';
import { machineInfo, parseBenchArgs, resultPath, runMain, writeResult } from './bench/runner.js';

const SELF = fileURLToPath(import.meta.url);

const HELP = `usage: npm run bench:vfp -- [options]

Microbenchmark of the VFP slow path and the flow table on synthetic frames
(no kernel, no root): new flows/s with few and many ACL rules per port, cached
frames/s, memory of a million cached flows, rule compile time.

options:
  --runs N        runs of each measurement (default 5); medians are reported
  --flows N       distinct new flows per run of the rate tests (default 65536)
  --rules A,B,..  ACL rules per port for the rate tests (default 10,10000);
                  the ratio is last/first
  --mem-flows N   flows for the memory test, in a child process (default 1000000; 0: skip)
  --build-rules N rules for the build-time test (default 10000; 0: skip)
  --out FILE      where to write the JSON results
                  (default bench-results/bench-vfp-<ISO timestamp>.json)
  --help          show this text
`;

// ---------------------------------------------------------------- synthetic I/O

const SLOT = 2048;
const HEADROOM = 128;
const BATCH = 64;
const MAX_PORTS = 16;

/** Frame I/O with a fixed batch buffer; transmit counts and drops what it is given. */
class NullIo implements FrameIo {
  readonly buffer = Buffer.alloc(BATCH * SLOT);
  readonly lengths = new Int32Array(BATCH);
  readonly slotSize = SLOT;
  readonly headroom = HEADROOM;
  readonly vnetHdrLen = VNET_HDR_LEN;
  readonly batchSize = BATCH;
  transmitted = 0;

  place(slot: number, frame: Uint8Array): void {
    const off = slot * SLOT + HEADROOM;
    this.buffer.fill(0, off - VNET_HDR_LEN, off);
    this.buffer.set(frame, off);
    this.lengths[slot] = frame.length;
  }

  transmit(_fd: number, _buf: Uint8Array, _offsets: Uint32Array, _lengths: Uint32Array, count: number): number {
    this.transmitted += count;
    return count;
  }

  transmitPackets(_fd: number, _buf: Uint8Array, _offsets: Uint32Array, _lengths: Uint32Array, count: number): number {
    this.transmitted += count;
    return count;
  }
}

// ---------------------------------------------------------------- topology and traffic

const MAC1 = '02:76:0a:0a:00:02';
const MAC2 = '02:76:0a:0a:00:03';
const IP1 = '10.10.0.2';
const IP2 = '10.10.0.3';
const PORT1 = 1;
const PORT2 = 2;
const DST_PORT = 5201;
/** Flow i: source port 1024 + i % PORTS_PER_DST, destination 10.20.0.1 + floor(i / PORTS_PER_DST). */
const PORTS_PER_DST = 64000;
const DST_BASE = ((10 << 24) | (20 << 16) | 1) >>> 0;

// Offsets inside an untagged IPv4/TCP frame.
const IP_DST_AT = 14 + 16;
const TCP_SRC_PORT_AT = 14 + 20;

function policyFor(mac: string, ip: string, layer: LayerSpec): PortPolicy {
  return { layers: [layer], spoofGuard: { enabled: true, mac, ips: [ip] }, qos: null };
}

function aclLayer(rules: number): LayerSpec {
  return {
    name: 'acl',
    priority: 100,
    defaultIn: 'allow',
    defaultOut: 'allow',
    groups: [{ name: 'default', priority: 100, rules: benchAclRules(rules) }],
  };
}

interface Bench {
  sw: Switch;
  io: NullIo;
  counters: Float64Array;
}

function makeSwitch(layer: LayerSpec, opts: SwitchOptions = {}): Bench {
  const io = new NullIo();
  const counters = new Float64Array(MAX_PORTS * COUNTER_COLUMNS);
  const now = 1_000_000;
  const sw = new Switch(
    io,
    counters,
    new MacTable({ maxEntries: 1024, agingSeconds: 300 }),
    { portStopped: () => undefined },
    () => now,
    opts,
  );
  sw.addNetwork(1, 'bench');
  sw.addPort({ portId: PORT1, networkId: 1, fd: 101, name: 'p1', policy: policyFor(MAC1, IP1, layer) });
  sw.addPort({ portId: PORT2, networkId: 1, fd: 102, name: 'p2', policy: policyFor(MAC2, IP2, layer) });
  // Port 2 announces itself, so port 1's frames to MAC2 are known unicast (cacheable), not floods.
  io.place(0, buildArpRequest({ srcMac: MAC2, srcIp: IP2, targetIp: IP1 }));
  sw.receive(PORT2, 1);
  // Every slot holds the SYN template; runs patch only what makes each flow distinct.
  const syn = buildTcp4({ srcMac: MAC1, dstMac: MAC2, srcIp: IP1, dstIp: '10.20.0.1', srcPort: 1024, dstPort: DST_PORT });
  for (let s = 0; s < BATCH; s++) io.place(s, syn);
  io.transmitted = 0;
  return { sw, io, counters };
}

/** Sends flows [first, first + n) from port 1, 64 per batch. Returns elapsed ms. */
function sendFlows(b: Bench, first: number, n: number): number {
  const buf = b.io.buffer;
  const sw = b.sw;
  const t0 = performance.now();
  for (let i = first, end = first + n; i < end; ) {
    const count = Math.min(BATCH, end - i);
    for (let s = 0; s < count; s++, i++) {
      const off = s * SLOT + HEADROOM;
      const sp = 1024 + (i % PORTS_PER_DST);
      const dst = (DST_BASE + Math.floor(i / PORTS_PER_DST)) >>> 0;
      buf[off + TCP_SRC_PORT_AT] = sp >>> 8;
      buf[off + TCP_SRC_PORT_AT + 1] = sp & 0xff;
      buf[off + IP_DST_AT] = dst >>> 24;
      buf[off + IP_DST_AT + 1] = (dst >>> 16) & 0xff;
      buf[off + IP_DST_AT + 2] = (dst >>> 8) & 0xff;
      buf[off + IP_DST_AT + 3] = dst & 0xff;
    }
    sw.receive(PORT1, count);
  }
  return performance.now() - t0;
}

function txFrames(b: Bench, port: number): number {
  return b.counters[port * COUNTER_COLUMNS + TX_FRAMES];
}

// ---------------------------------------------------------------- rate tests

interface RateRun {
  rules: number;
  run: number;
  newFlowsPerSecond: number;
  cachedFramesPerSecond: number;
  cachedPasses: number;
}

/** Cached passes over the same flows until at least this much time was measured. */
const CACHED_MIN_MS = 300;

function rateRun(rules: number, layer: LayerSpec, flows: number, run: number): RateRun {
  // The daemon's defaults (1M connections, 500k per port) hold 2 connections per flow up to 500k flows.
  const b = makeSwitch(layer, flows > 500_000 ? { vfp: { conntrack: { capacity: 1 << 21, maxPerPort: 1 << 20 } } } : {});
  const vfp = b.sw.vfp;
  const created0 = vfp.stats.flowsCreated;
  const ms = sendFlows(b, 0, flows);
  const created = vfp.stats.flowsCreated - created0;
  if (created !== flows) throw new BenchError(`${rules} rules, run ${run}: ${created} flows were created for ${flows} new flows.`);
  if (txFrames(b, PORT2) !== flows) throw new BenchError(`${rules} rules, run ${run}: port 2 got ${txFrames(b, PORT2)} of ${flows} frames.`);

  const slow0 = vfp.stats.slowPathRuns;
  const tx0 = txFrames(b, PORT2);
  let passes = 0;
  let cachedMs = 0;
  while (cachedMs < CACHED_MIN_MS || passes < 2) {
    cachedMs += sendFlows(b, 0, flows);
    passes++;
  }
  const slow = vfp.stats.slowPathRuns - slow0;
  if (slow !== 0) throw new BenchError(`${rules} rules, run ${run}: ${slow} cached frames took the slow path.`);
  if (txFrames(b, PORT2) - tx0 !== flows * passes) throw new BenchError(`${rules} rules, run ${run}: cached frames went missing.`);
  return {
    rules,
    run,
    newFlowsPerSecond: flows / (ms / 1000),
    cachedFramesPerSecond: (flows * passes) / (cachedMs / 1000),
    cachedPasses: passes,
  };
}

interface ClassifierShape {
  rules: number;
  /** Tuples (distinct masks) in port 1's outbound classifier: the probes a non-matching lookup makes. */
  tuplesOut: number;
  tuplesIn: number;
  entriesOut: number;
  entriesIn: number;
}

function shapeOf(rules: number, layer: LayerSpec): ClassifierShape {
  const b = makeSwitch(layer, { vfp: { maxFlows: 1024, conntrack: { capacity: 1024 } } });
  const [out, inn] = b.sw.vfp.policies[PORT1]!.layers[0].groups[0].classifiers;
  return { rules, tuplesOut: out?.tupleCount ?? 0, tuplesIn: inn?.tupleCount ?? 0, entriesOut: out?.entryCount ?? 0, entriesIn: inn?.entryCount ?? 0 };
}

// ---------------------------------------------------------------- build time

interface BuildRun {
  validateMs: number;
  setPolicyMs: number;
  classifierMs: number;
}

function buildRun(rules: number): BuildRun {
  const specs = benchAclRules(rules);
  const layer: LayerSpec = { name: 'acl', priority: 100, defaultIn: 'allow', defaultOut: 'allow', groups: [{ name: 'default', priority: 100, rules: specs }] };
  let t0 = performance.now();
  const valid = validateLayer(layer);
  const validateMs = performance.now() - t0;
  const vfp = new Vfp({ maxPorts: 4, maxFlows: 1024, conntrack: { capacity: 1024 } });
  t0 = performance.now();
  vfp.setPolicy(1, policyFor(MAC1, IP1, valid));
  const setPolicyMs = performance.now() - t0;
  const crs = specs.map((r, i) => matchToClassifierRule(parseMatch(r.match), i, r.priority));
  t0 = performance.now();
  const c = new Classifier(crs);
  const classifierMs = performance.now() - t0;
  if (c.tupleCount === 0) throw new BenchError('the classifier came out empty.');
  return { validateMs, setPolicyMs, classifierMs };
}

// ---------------------------------------------------------------- memory (child process)

interface MemResult {
  label: string;
  flows: number;
  rules: number;
  switchOptions: SwitchOptions;
  rssBeforeKiB: number;
  rssBuiltKiB: number;
  rssAfterKiB: number;
  heapUsedBeforeKiB: number;
  heapUsedAfterKiB: number;
  flowTableBytes: number;
  conntrackBytes: number;
  transpositionBytes: number;
  flowsLive: number;
  connectionsLive: number;
  createSeconds: number;
  newFlowsPerSecond: number;
  cachedFramesPerSecond: number;
}

/**
 * Two sizings of the same switch: conntrack with room for 4M connections (the
 * configuration the task asked for), and with just enough for the 2 per flow
 * that a flow between two local ports creates (one at each port). Slabs are
 * handed out by bump pointers, so only what is used is touched; the hash
 * indexes are filled at construction, so their size (set by the capacity)
 * shows in the empty switch's RSS.
 */
const MEM_CONFIGS: Record<string, SwitchOptions> = {
  'conntrack 2^22': { vfp: { maxFlows: 1 << 20, conntrack: { maxPerPort: 2_000_000, capacity: 1 << 22 } } },
  'conntrack 2^21': { vfp: { maxFlows: 1 << 20, conntrack: { maxPerPort: 2_000_000, capacity: 1 << 21 } } },
};
const MEM_RULES = 10;

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

const kib = (bytes: number): number => Math.round(bytes / 1024);

/** Runs in the child: a fresh process, so the RSS delta is the tables and nothing else. */
function memChild(label: string, flows: number): MemResult {
  const options = MEM_CONFIGS[label];
  if (!options) throw new BenchError(`no memory configuration ${label}.`);
  const layer = aclLayer(MEM_RULES);
  gc();
  const before = process.memoryUsage();
  const b = makeSwitch(layer, options);
  gc();
  const built = process.memoryUsage();
  const vfp = b.sw.vfp;
  const ms = sendFlows(b, 0, flows);
  if (vfp.flows.size !== flows) throw new BenchError(`memory test: the flow table holds ${vfp.flows.size} flows, not ${flows} (full: ${vfp.stats.flowTableFull}).`);
  const slow0 = vfp.stats.slowPathRuns;
  const cachedMs = sendFlows(b, 0, flows);
  if (vfp.stats.slowPathRuns !== slow0) throw new BenchError('memory test: cached frames took the slow path.');
  gc();
  const after = process.memoryUsage();
  return {
    label,
    flows,
    rules: MEM_RULES,
    switchOptions: options,
    rssBeforeKiB: kib(before.rss),
    rssBuiltKiB: kib(built.rss),
    rssAfterKiB: kib(after.rss),
    heapUsedBeforeKiB: kib(before.heapUsed),
    heapUsedAfterKiB: kib(after.heapUsed),
    flowTableBytes: vfp.flows.byteSize,
    conntrackBytes: vfp.conntrack.byteSize,
    transpositionBytes: vfp.transpositions.byteSize,
    flowsLive: vfp.flows.size,
    connectionsLive: vfp.conntrack.size,
    createSeconds: ms / 1000,
    newFlowsPerSecond: flows / (ms / 1000),
    cachedFramesPerSecond: flows / (cachedMs / 1000),
  };
}

function runMemChild(label: string, flows: number): Promise<MemResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', SELF, '--mem-child', label, String(flows)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code !== 0) return reject(new BenchError(`the memory test's child process exited ${signal ? `on ${signal}` : `with status ${code}`}.`));
      try {
        resolve(JSON.parse(out) as MemResult);
      } catch {
        reject(new BenchError(`the memory test's child printed something that is not JSON: ${out.slice(0, 200)}`));
      }
    });
  });
}

// ---------------------------------------------------------------- options and report

interface Options {
  runs: number;
  flows: number;
  rules: number[];
  memFlows: number;
  buildRules: number;
  out: string;
}


function parseOptions(argv: string[]): Options | null {
  const values = parseBenchArgs(argv, {
    runs: { type: 'string' },
    flows: { type: 'string' },
    rules: { type: 'string' },
    'mem-flows': { type: 'string' },
    'build-rules': { type: 'string' },
    out: { type: 'string' },
  });
  if (!values) return null;
  return {
    runs: intOption('runs', values.runs, 5, 1, 100),
    flows: intOption('flows', values.flows, 65536, 64, 1 << 20),
    rules: intListOption('rules', values.rules, [10, 10000], 0, 65535),
    memFlows: intOption('mem-flows', values['mem-flows'], 1_000_000, 0, 1 << 20),
    buildRules: intOption('build-rules', values['build-rules'], 10000, 0, 65535),
    out: resultPath(values.out, 'bench-vfp'),
  };
}

interface Row {
  what: string;
  unit: string;
  value: number | null;
  digits: number;
}

function printTable(rows: Row[]): void {
  const cells = rows.map((r) => [r.what, r.value === null ? '-' : r.value.toLocaleString('en-US', { maximumFractionDigits: r.digits, minimumFractionDigits: r.digits }), r.unit]);
  for (const line of formatTable(['measurement', 'median', 'unit'], cells, 'lrl')) console.log(line);
}

async function bench(opts: Options): Promise<number> {
  await mkdir(path.dirname(opts.out), { recursive: true });
  const layers = new Map(opts.rules.map((n) => [n, aclLayer(n)]));
  console.error(`bench-vfp: ${opts.runs} run(s), ${opts.flows} new flows per run, rules per port: ${opts.rules.join(', ')}`);

  // Warm-up: the JIT sees every path (both rule sets, new and cached) before anything is timed.
  for (const n of opts.rules) rateRun(n, layers.get(n)!, Math.min(opts.flows, 8192), 0);

  const shapes = opts.rules.map((n) => shapeOf(n, layers.get(n)!));
  const runs: RateRun[] = [];
  for (let run = 1; run <= opts.runs; run++) {
    // Alternate the order so that drift on a shared machine hits every rule count alike.
    const order = run % 2 === 1 ? opts.rules : [...opts.rules].reverse();
    for (const n of order) {
      const r = rateRun(n, layers.get(n)!, opts.flows, run);
      runs.push(r);
      console.error(`bench-vfp: run ${run}, ${n} rules: ${Math.round(r.newFlowsPerSecond).toLocaleString('en-US')} new flows/s, ${Math.round(r.cachedFramesPerSecond).toLocaleString('en-US')} cached frames/s`);
    }
  }

  const builds: BuildRun[] = [];
  if (opts.buildRules > 0) {
    buildRun(opts.buildRules); // warm-up
    for (let run = 1; run <= opts.runs; run++) builds.push(buildRun(opts.buildRules));
  }

  const mems: MemResult[] = [];
  if (opts.memFlows > 0) {
    for (const label of Object.keys(MEM_CONFIGS)) {
      console.error(`bench-vfp: memory: ${opts.memFlows.toLocaleString('en-US')} flows in a child process, ${label}`);
      mems.push(await runMemChild(label, opts.memFlows));
    }
  }

  const rows: Row[] = [];
  const med = (n: number, f: (r: RateRun) => number): number | null => median(runs.filter((r) => r.rules === n).map(f));
  for (const n of opts.rules) rows.push({ what: `new flows, ${n} rules/port`, unit: 'flows/s', value: med(n, (r) => r.newFlowsPerSecond), digits: 0 });
  const first = opts.rules[0];
  const last = opts.rules[opts.rules.length - 1];
  const newRatio = opts.rules.length > 1 ? (med(last, (r) => r.newFlowsPerSecond) ?? 0) / (med(first, (r) => r.newFlowsPerSecond) ?? 1) : null;
  if (newRatio !== null) rows.push({ what: `new flows, ratio ${last}/${first} rules`, unit: '', value: newRatio, digits: 2 });
  for (const n of opts.rules) rows.push({ what: `cached frames, ${n} rules/port`, unit: 'frames/s', value: med(n, (r) => r.cachedFramesPerSecond), digits: 0 });
  for (const s of shapes) {
    rows.push({ what: `classifier tuples, ${s.rules} rules`, unit: `out (in: ${s.tuplesIn}); hash entries ${s.entriesOut} out, ${s.entriesIn} in`, value: s.tuplesOut, digits: 0 });
  }
  if (builds.length) {
    rows.push({ what: `validate ${opts.buildRules} rules (policy.ts)`, unit: 'ms', value: median(builds.map((b) => b.validateMs)), digits: 1 });
    rows.push({ what: `Vfp.setPolicy, ${opts.buildRules} rules`, unit: 'ms', value: median(builds.map((b) => b.setPolicyMs)), digits: 1 });
    rows.push({ what: `new Classifier, ${opts.buildRules} rules`, unit: 'ms', value: median(builds.map((b) => b.classifierMs)), digits: 1 });
  }
  for (const mem of mems) {
    const mib = (k: number): number => k / 1024;
    const m = `${(mem.flows / 1e6).toLocaleString('en-US')}M flows, ${mem.label}`;
    rows.push({ what: `${m}: RSS of the empty switch`, unit: 'MiB over the bare process', value: mib(mem.rssBuiltKiB - mem.rssBeforeKiB), digits: 1 });
    rows.push({ what: `${m}: RSS with the flows cached`, unit: 'MiB over the bare process', value: mib(mem.rssAfterKiB - mem.rssBeforeKiB), digits: 1 });
    rows.push({ what: `${m}: RSS growth from the flows alone`, unit: 'MiB', value: mib(mem.rssAfterKiB - mem.rssBuiltKiB), digits: 1 });
    rows.push({ what: `${m}: FlowTable.byteSize`, unit: 'MiB', value: mem.flowTableBytes / 2 ** 20, digits: 1 });
    rows.push({ what: `${m}: Conntrack.byteSize`, unit: `MiB (${mem.connectionsLive.toLocaleString('en-US')} connections)`, value: mem.conntrackBytes / 2 ** 20, digits: 1 });
    rows.push({ what: `${m}: JS heap growth`, unit: 'MiB', value: mib(mem.heapUsedAfterKiB - mem.heapUsedBeforeKiB), digits: 1 });
    rows.push({ what: `${m}: new flows (1 run, table filling)`, unit: 'flows/s', value: mem.newFlowsPerSecond, digits: 0 });
    rows.push({ what: `${m}: cached frames, all flows once`, unit: 'frames/s', value: mem.cachedFramesPerSecond, digits: 0 });
  }

  const machine = { ...machineInfo(), loadavg: os.loadavg() };
  const result = {
    bench: 'vsw VFP slow path and flow table, synthetic frames',
    timestamp: new Date().toISOString(),
    options: { runs: opts.runs, flows: opts.flows, rules: opts.rules, memFlows: opts.memFlows, buildRules: opts.buildRules },
    machine,
    summary: rows.map(({ digits: _d, ...r }) => r),
    newFlowsRatio: newRatio,
    classifierShapes: shapes,
    runs,
    builds,
    memory: mems,
  };
  console.log('');
  console.log(`vsw bench:vfp: ${machine.nproc} cores (${machine.cpuModel}), node ${machine.node}, ${opts.runs} run(s), medians`);
  printTable(rows);
  await writeResult(opts.out, result);
  return 0;
}

const argv = process.argv.slice(2);
if (argv[0] === '--mem-child') {
  process.stdout.write(JSON.stringify(memChild(argv[1], Number(argv[2]))) + '\n');
} else {
  // Nothing to undo and no command to cut short: a signal simply ends it.
  await runMain({ name: 'bench-vfp', help: HELP, parse: parseOptions, run: bench, interruptible: false });
}
