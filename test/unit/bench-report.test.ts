import path from 'node:path';

import test from 'ava';

import { BenchError } from '../../scripts/bench-lib.js';
import type { RunRecord } from '../../scripts/bench/context.js';
import { parseBenchOptions } from '../../scripts/bench/options.js';
import { REPO_ROOT, checkLines, parseBenchArgs, reportTable, resultPath, rowsJson } from '../../scripts/bench/runner.js';
import { SUMMARY_COLUMNS, mainTable, rssKey, type Scenario } from '../../scripts/bench/scenario.js';
import { natChecks, natScenario, natState, natSummary, sourcePorts, type NatRunRecord } from '../../scripts/bench/scenario-nat.js';
import { overlayChecks, overlayScenario, overlaySummary } from '../../scripts/bench/scenario-overlay.js';
import { policyScenario } from '../../scripts/bench/scenario-policy.js';
import { qosScenario } from '../../scripts/bench/scenario-qos.js';
import { vmScenario } from '../../scripts/bench/scenario-vm.js';
import { tcpScenario } from '../../scripts/bench/scenario-tcp.js';
import { l2bridgeChecks, l2bridgeScenario, l2bridgeSummary, UPLINK_BAR, transparentChecks, transparentScenario, transparentSummary } from '../../scripts/bench/scenario-uplink.js';
import { udpScenario } from '../../scripts/bench/scenario-udp.js';
import { SCENARIOS } from '../../scripts/bench/scenarios.js';
import { soakRows } from '../../scripts/bench/soak.js';

const ALL: readonly Scenario[] = SCENARIOS;

type Fields = Omit<RunRecord, 'test' | 'side' | 'run' | 'ok'> & Record<string, unknown>;

function rec(test: RunRecord['test'], side: RunRecord['side'], fields: Fields = {}, ok = true): RunRecord {
  return { test, side, run: 1, ok, ...fields };
}
const tcp = (gbps: number, retransmits: number | null = 0) => ({ tcp: { bitsPerSecond: gbps * 1e9, retransmits, seconds: 10 } });
const udp = (kpps: number, sentKpps: number, lostPercent: number) => ({
  udp: { packetsPerSecond: kpps * 1e3, sentPacketsPerSecond: sentKpps * 1e3, lostPercent, packets: 0, lostPackets: 0, seconds: 10 },
});

// ---------------------------------------------------------------- runner

test('parseBenchArgs: the string options given, null for --help or -h, an unknown option or a missing value as one sentence', (t) => {
  const spec = { runs: { type: 'string' }, out: { type: 'string' } } as const;
  t.deepEqual(parseBenchArgs(['--runs', '2'], spec), { runs: '2' });
  t.is(parseBenchArgs(['--runs', '2', '--help'], spec), null);
  t.is(parseBenchArgs(['-h'], spec), null);
  t.throws(() => parseBenchArgs(['--rusn', '2'], spec), { instanceOf: BenchError, message: /^Unknown option '--rusn'.*: see --help\.$/s });
  t.throws(() => parseBenchArgs(['--runs'], spec), { instanceOf: BenchError, message: /--runs.*: see --help\.$/s });
  t.throws(() => parseBenchArgs(['extra'], spec), { instanceOf: BenchError, message: /: see --help\.$/ });
});

test('resultPath: --out made absolute, else bench-results/NAME-<ISO time without colons or milliseconds>.json in the checkout', (t) => {
  t.is(resultPath('x/out.json', 'bench'), path.resolve('x/out.json'));
  t.is(resultPath(undefined, 'bench-vfp', new Date('2026-12-05T01:07:03.456Z')), path.join(REPO_ROOT, 'bench-results', 'bench-vfp-2026-12-05T01-07-03Z.json'));
});

test('reportTable: name and unit left, values right with the row\'s decimals or the column\'s; rowsJson leaves the decimals out', (t) => {
  const rows = [
    { scenario: 'TCP 1 stream', unit: 'Gbit/s', vsw: 9.5, bridge: 19, ratio: 0.5, digits: 2 },
    { scenario: 'TCP retransmits', unit: 'per run', vsw: 3, bridge: null, ratio: null, digits: 0 },
  ];
  t.deepEqual(reportTable('scenario', SUMMARY_COLUMNS, rows), [
    'scenario         unit      vsw  bridge  vsw/bridge',
    '---------------  -------  ----  ------  ----------',
    'TCP 1 stream     Gbit/s   9.50   19.00        0.50',
    'TCP retransmits  per run     3       -           -',
  ]);
  t.deepEqual(rowsJson(rows)[0], { scenario: 'TCP 1 stream', unit: 'Gbit/s', vsw: 9.5, bridge: 19, ratio: 0.5 });
});

test('checkLines: each ratio against its bar, or for reference; nothing without checks', (t) => {
  t.deepEqual(checkLines([]), []);
  const lines = checkLines([
    { what: 'a / b', value: 0.9, bar: '>= 0.8', met: true },
    { what: 'c', value: 12345, bar: '>= 20000', met: false, digits: 0 },
    { what: 'd / e', value: null, bar: '>= 0.5', met: null },
    { what: 'f', value: 1.5, bar: null, met: null },
  ]);
  t.deepEqual(lines, [
    '',
    'ratios (medians):',
    '  a / b   0.90  bar >= 0.8    within the bar',
    '  c      12345  bar >= 20000  MISSES the bar',
    '  d / e      -  bar >= 0.5    no data',
    '  f       1.50                (for reference)',
  ]);
});

// ---------------------------------------------------------------- npm run bench: options

test('bench options: the defaults, --only in run order, --soak at least 10 s and then --runs 0 allowed', (t) => {
  const o = parseBenchOptions([])!;
  t.like(o, { runs: 3, time: 10, soak: 0, tests: ['tcp', 'udp', 'policy', 'qos', 'nat', 'overlay', 'transparent', 'l2bridge', 'vm'], conns: 20000, concurrency: 128, profile: null });
  t.regex(o.out, /bench-results\/bench-[0-9T-]+Z\.json$/);
  t.deepEqual(parseBenchOptions(['--only', 'nat,tcp', '--runs', '1', '--time', '3'])!.tests, ['tcp', 'nat']);
  t.is(parseBenchOptions(['--soak', '60', '--runs', '0'])!.runs, 0);
  t.throws(() => parseBenchOptions(['--runs', '0']), { message: '--runs takes a whole number from 1 to 100, not "0".' });
  t.throws(() => parseBenchOptions(['--soak', '5']), { message: '--soak must be at least 10 seconds (RSS is sampled every 5 s), or 0 for off.' });
  t.throws(() => parseBenchOptions(['--only', 'vxlan']), { message: '--only takes a comma-separated list of tcp, udp, policy, qos, nat, overlay, transparent, l2bridge, vm, not "vxlan".' });
  t.throws(() => parseBenchOptions(['--conns', '99']), { message: '--conns takes a whole number from 100 to 50000, not "99".' });
  t.is(parseBenchOptions(['--help']), null);
});

test('every scenario is listed once, under its --only name, in run order', (t) => {
  t.deepEqual(
    SCENARIOS.map((s) => s.name),
    parseBenchOptions([])!.tests,
  );
  t.deepEqual([tcpScenario, udpScenario, policyScenario, qosScenario, natScenario, overlayScenario, transparentScenario, l2bridgeScenario, vmScenario], [...SCENARIOS]);
});

// ---------------------------------------------------------------- npm run bench: the main table

/** A run of every scenario of the main table, two runs each where a median matters. */
function mainRecords(): RunRecord[] {
  return [
    rec('tcp', 'vsw', { ...tcp(9, 0), daemonCpuPercent: 80 }),
    rec('tcp', 'vsw', { ...tcp(11, 2), daemonCpuPercent: 100 }),
    rec('tcp', 'vsw', { ...tcp(50, 0) }, false),
    rec('tcp', 'bridge', tcp(20, 4)),
    rec('udp', 'vsw', { ...udp(100, 200, 50), daemonCpuPercent: 120 }),
    rec('udp', 'bridge', udp(250, 250, 0)),
    rec('policy', 'vsw', { variant: '10 rules', rules: 10, installSeconds: [0.01, 0.02], ...tcp(10) }),
    rec('policy', 'vsw', { variant: '10000 rules', rules: 10000, installSeconds: [1, 3], ...tcp(9) }),
    rec('policy', 'bridge', { variant: 'bridge', ...tcp(20, 1) }),
    rec('qos', 'vsw', { variant: '100mbit', capBps: 100e6, tcp: { bitsPerSecond: 95e6, retransmits: 5, seconds: 10 } }),
    rec('qos', 'vsw', { variant: '1gbit', capBps: 1e9, tcp: { bitsPerSecond: 1.2e9, retransmits: 7, seconds: 10 } }),
  ];
}

test('the main table keeps the rows (names and units) the bench has always printed, in the same order', (t) => {
  const memory: Record<string, number | null> = { rssIdleKiB: 80 * 1024, hwmKiB: 120 * 1024 };
  for (const s of ALL) memory[rssKey(s)] = 100 * 1024;
  const soak = soakRows({ seconds: 60, tcp: { bitsPerSecond: 1e10, retransmits: 0, seconds: 60 }, rssBeforeKiB: 1, rssGrowthKiB: 512, rssMaxKiB: 2048, samples: [] });
  const rows = mainTable(ALL, mainRecords(), memory, soak);
  t.deepEqual(
    rows.map((r) => `${r.scenario} | ${r.unit}`),
    [
      'TCP 1 stream | Gbit/s',
      'TCP retransmits | per run',
      'UDP 64 B received | kpps',
      'UDP 64 B sent | kpps',
      'UDP 64 B lost | %',
      'TCP 1 stream, 10 ACL rules/port | Gbit/s',
      'TCP 1 stream, 10000 ACL rules/port | Gbit/s',
      'TCP retransmits, 10 ACL rules/port | per run',
      'TCP retransmits, 10000 ACL rules/port | per run',
      'PUT of a 10000-rule group | s per endpoint',
      'TCP 1 stream, egress cap 100mbit | Mbit/s',
      'TCP retransmits, egress cap 100mbit | per run',
      'TCP 1 stream, egress cap 1gbit | Mbit/s',
      'TCP retransmits, egress cap 1gbit | per run',
      'daemon CPU during TCP | % of a core',
      'daemon CPU during UDP | % of a core',
      'daemon RSS idle, 2 ports | MiB',
      'daemon RSS after TCP runs | MiB',
      'daemon RSS after UDP runs | MiB',
      'daemon RSS after policy runs (10000 rules/port) | MiB',
      'daemon RSS after qos runs | MiB',
      'daemon RSS after nat runs | MiB',
    'daemon RSS after vm runs | MiB',
      'daemon peak RSS (VmHWM) | MiB',
      'soak 60 s TCP | Gbit/s',
      'soak RSS growth, first to last sample | MiB',
      'soak RSS max | MiB',
    ],
  );
  const row = (name: string) => rows.find((r) => r.scenario === name)!;
  // The failed 50 Gbit/s run does not count; the ratio is of the medians.
  t.like(row('TCP 1 stream'), { vsw: 10, bridge: 20, ratio: 0.5 });
  t.like(row('TCP retransmits'), { vsw: 1, bridge: 4, ratio: null });
  t.like(row('UDP 64 B received'), { vsw: 100, bridge: 250, ratio: 0.4 });
  t.like(row('UDP 64 B lost'), { vsw: 50, bridge: 0, ratio: null });
  t.like(row('TCP 1 stream, 10000 ACL rules/port'), { vsw: 9, bridge: 20, ratio: 0.45 });
  t.like(row('PUT of a 10000-rule group'), { vsw: 2, bridge: null });
  t.like(row('TCP 1 stream, egress cap 100mbit'), { vsw: 95 });
  t.like(row('daemon CPU during TCP'), { vsw: 90 });
  t.like(row('daemon RSS idle, 2 ports'), { vsw: 80 });
  t.like(row('soak RSS growth, first to last sample'), { vsw: 0.5 });
});

test('the main table leaves out the rows of scenarios that did not run, and the RSS after one that was not sampled', (t) => {
  const records = mainRecords().filter((r) => r.test === 'udp');
  const rows = mainTable([udpScenario, natScenario], records, { rssIdleKiB: 1024, rssAfterUdpKiB: 2048, hwmKiB: 4096 }, []);
  t.deepEqual(
    rows.map((r) => r.scenario),
    ['UDP 64 B received', 'UDP 64 B sent', 'UDP 64 B lost', 'daemon CPU during UDP', 'daemon RSS idle, 2 ports', 'daemon RSS after UDP runs', 'daemon peak RSS (VmHWM)'],
  );
});

test('policy and qos are judged by their ratios: many / few rules, each / bridge, measured / cap', (t) => {
  const records = mainRecords();
  t.deepEqual(
    policyScenario.checks!(records).map((c) => [c.what, c.value, c.met]),
    [
      ['policy: vsw TCP with 10000 / with 10 rules per port', 0.9, true],
      ['policy: vsw TCP with 10 rules per port / bridge', 0.5, true],
      ['policy: vsw TCP with 10000 rules per port / bridge', 0.45, false],
    ],
  );
  const qos = qosScenario.checks!(records);
  t.deepEqual(qos.map((c) => c.what), ['qos: TCP measured / egress cap 100mbit', 'qos: TCP measured / egress cap 1gbit']);
  t.like(qos[0], { bar: '0.9 - 1.1', met: true });
  t.like(qos[1], { met: false });
  t.is(qos[1].value?.toFixed(2), '1.20');
});

// ---------------------------------------------------------------- nat

function natRecords(): NatRunRecord[] {
  const conn = (perSecond: number, p50: number) => ({
    connRate: {
      proto: 'tcp' as const,
      total: 20000,
      ok: 20000,
      failed: 0,
      errors: {},
      warmup: 500,
      warmupSeconds: 0.1,
      warmupFailed: 0,
      warmupErrors: {},
      concurrency: 128,
      seconds: 1,
      perSecond,
      sourcePortsReused: 0,
      latencyMs: { p50, p90: p50, p99: p50 * 2, max: p50 * 3 },
    },
  });
  return [
    { ...rec('nat', 'nat', { variant: 'tcp', ...tcp(6, 1), daemonCpuPercent: 90 }) },
    { ...rec('nat', 'vsw', { variant: 'tcp', ...tcp(8, 0) }) },
    { ...rec('nat', 'nat', { variant: 'tcp -R', reverse: true, ...tcp(4, 10) }), hostTapDrops: { txDropped: 12, rxDropped: 0 } },
    { ...rec('nat', 'vsw', { variant: 'tcp -R', reverse: true, ...tcp(8, 0) }) },
    { ...rec('nat', 'nat', { variant: 'conn tcp', ...conn(15000, 2) }), daemonCpuUsPerExchange: 40, daemonCpuUsPerExchangeSplit: { user: 30, system: 10 }, natDelta: { created: 20500, refused: 0 } },
    { ...rec('nat', 'vsw', { variant: 'conn tcp', ...conn(20000, 1) }) },
    { ...rec('nat', 'loopback', { variant: 'conn tcp', ...conn(30000, 0.5) }) },
    { ...rec('nat', 'nat', { variant: 'conn udp', ...conn(25000, 1) }) },
    { ...rec('nat', 'vsw', { variant: 'conn udp', ...conn(25000, 1) }) },
  ];
}

test('nat: its own table, NAT against vsw without NAT and the generator over loopback', (t) => {
  t.deepEqual(natSummary(mainRecords()), []);
  t.is(natScenario.table!(mainRecords()), null);
  const rows = natSummary(natRecords());
  t.is(rows.length, 6 + 2 * 9);
  t.deepEqual(rows.slice(0, 8).map((r) => `${r.scenario} | ${r.unit}`), [
    'TCP 1 stream, container -> outside | Gbit/s',
    'TCP retransmits | per run',
    'TCP 1 stream, outside -> container (-R) | Gbit/s',
    'TCP retransmits (-R) | per run',
    'host TAP drops toward vsw (-R) | per run',
    'daemon CPU during TCP | % of a core',
    'new TCP connections | per s',
    'new TCP connections: time to answer, median p50 | ms',
  ]);
  const row = (name: string) => rows.find((r) => r.scenario === name)!;
  t.like(row('TCP 1 stream, container -> outside'), { nat: 6, noNat: 8, ratio: 0.75, loopback: null });
  t.like(row('host TAP drops toward vsw (-R)'), { nat: 12 });
  t.like(row('new TCP connections'), { nat: 15000, noNat: 20000, ratio: 0.75, loopback: 30000 });
  t.like(row('new TCP connections: daemon CPU per connection, kernel'), { nat: 10 });
  t.like(row('new UDP flows: daemon CPU per flow'), { nat: null });
  t.like(row('new TCP connections: NAT translations created'), { nat: 20500 });

  const table = natScenario.table!(natRecords())!;
  t.deepEqual(table.lines[0].split(/\s{2,}/), ['nat scenario', 'unit', 'through NAT', 'vsw, no NAT', 'NAT/no NAT', 'loopback']);
  t.is(table.summary.length, rows.length);

  const checks = natChecks(natRecords());
  t.deepEqual(checks.slice(0, 3).map((c) => [c.what, c.value, c.met]), [
    ['nat: TCP through the NAT / vsw without NAT', 0.75, false],
    ['nat: TCP -R through the NAT / vsw without NAT', 0.5, false],
    ['nat: new TCP connections/s through the NAT', 15000, false],
  ]);
  t.is(checks.find((c) => c.what === 'nat: new TCP connections/s, NAT / loopback (no switch)')?.value, 0.5);
});

test('nat: source ports move on by a block per run and wrap within 10000-65535; the network\'s counters out of GET /v1/nat', (t) => {
  t.deepEqual(sourcePorts(1, 20500), { first: 10000, block: 0 });
  t.deepEqual(sourcePorts(2, 20500), { first: 30500, block: 1 });
  t.deepEqual(sourcePorts(3, 20500), { first: 10000, block: 0 });
  t.deepEqual(sourcePorts(5, 60000), { first: 10000, block: 0 });

  const body = [
    { network: 'other', counters: { created: 1, active: 1, poolSize: 1 } },
    {
      network: 'vswt1234-nat',
      counters: { created: 10, expired: 2, refused: 1, active: 8, poolSize: 64512 },
      hostPort: { drops: 0 },
      translations: [{ protocol: 'tcp' }, { protocol: 'tcp' }, { protocol: 'udp' }],
    },
  ];
  t.deepEqual(natState(body, 'vswt1234-nat'), {
    counters: { created: 10, expired: 2, refused: 1, active: 8, poolSize: 64512 },
    hostPort: { drops: 0 },
    live: { tcp: 2, udp: 1 },
  });
  t.throws(() => natState([], 'vswt1234-nat'), { instanceOf: BenchError, message: /^GET \/v1\/nat\?network=vswt1234-nat has no counters for the network/ });
});

// ---------------------------------------------------------------- overlay

test('overlay: vsw VXLAN against the kernel\'s, the 0.25 bar on one TCP stream, a failed setup gives empty rows', (t) => {
  const records: RunRecord[] = [
    rec('overlay', 'vsw', { variant: 'tcp', ...tcp(8, 0), daemonCpuPercent: 130, daemonCpuByHost: [80, 50] } as Fields),
    rec('overlay', 'kernel', { variant: 'tcp', ...tcp(12, 300) }),
    rec('overlay', 'vsw', { variant: 'udp 64 B', ...udp(80, 90, 11) }),
    rec('overlay', 'kernel', { variant: 'udp 64 B', ...udp(100, 100, 0) }),
    rec('overlay', 'vsw', { variant: 'tcp, kernel -> vsw', ...tcp(9, 40), daemonCpuPercent: 70, daemonCpuByHost: [70] } as Fields),
    rec('overlay', 'vsw', { variant: 'tcp, vsw -> kernel', ...tcp(6, 0) }),
  ];
  const rows = overlaySummary(records);
  t.deepEqual(rows.map((r) => r.scenario), [
    'TCP 1 stream',
    'TCP 1 stream retransmits',
    'TCP 1 stream, MTU-sized on the underlay',
    'TCP 1 stream, MTU-sized on the underlay, retransmits',
    'TCP 4 streams',
    'TCP 4 streams retransmits',
    'UDP 64 B received',
    'UDP 64 B sent',
    'UDP 64 B lost',
    'TCP 1 stream, kernel VXLAN -> vsw',
    'TCP 1 stream, kernel VXLAN -> vsw, retransmits',
    'TCP 1 stream, vsw -> kernel VXLAN',
    'TCP 1 stream, vsw -> kernel VXLAN, retransmits',
    'TCP 1 stream, MTU-sized, kernel VXLAN -> vsw',
    'TCP 1 stream, MTU-sized, kernel VXLAN -> vsw, retransmits',
    'TCP 1 stream, MTU-sized, vsw -> kernel VXLAN',
    'TCP 1 stream, MTU-sized, vsw -> kernel VXLAN, retransmits',
    'daemons CPU during TCP 1 stream, h1 + h2',
    "  sender's daemon (h1)",
    "  receiver's daemon (h2)",
    'daemons CPU during TCP 1 stream, MTU-sized, h1 + h2',
    'daemons CPU during TCP 4 streams, h1 + h2',
    'daemons CPU during UDP 64 B, h1 + h2',
    "h1's daemon CPU, kernel VXLAN -> vsw",
    "h1's daemon CPU, MTU-sized, kernel VXLAN -> vsw",
  ]);
  t.like(rows[0], { vsw: 8, kernel: 12 });
  t.is(rows[0].ratio?.toFixed(3), '0.667');
  t.like(rows[6], { vsw: 80, kernel: 100, ratio: 0.8 });
  t.like(rows[9], { vsw: 9, kernel: 12, ratio: 0.75 }, 'kernel -> vsw beside kernel -> kernel');
  t.like(rows[10], { vsw: 40, kernel: null });
  t.like(rows[11], { vsw: 6, kernel: 12, ratio: 0.5 });
  t.like(rows[13], { vsw: null, kernel: null, ratio: null }, 'no MTU-sized legs measured');
  t.like(rows[18], { vsw: 80, kernel: null, ratio: null });
  t.like(rows[23], { vsw: 70 });
  const checks = overlayChecks(records);
  t.like(checks[0], { what: 'overlay: vsw VXLAN TCP 1 stream / kernel VXLAN', bar: '>= 0.25', met: true });
  t.like(checks.find((c) => c.what.includes('kernel VXLAN -> vsw')), { value: 0.75, bar: null, met: null });
  t.deepEqual(overlayScenario.table!(records)!.lines[0].split(/\s{2,}/), ['overlay scenario', 'unit', 'vsw VXLAN', 'kernel VXLAN', 'vsw/kernel']);

  const setupFailed = overlaySummary([rec('overlay', 'vsw', { variant: 'setup', run: 0, error: 'no overlay networks' } as Fields, false)]);
  t.is(setupFailed.length, 25);
  t.true(setupFailed.every((r) => r.vsw === null && r.kernel === null));
});

test('transparent: vsw against macvlan, TCP judged by the 0.5 bar, UDP for reference, nothing without records', (t) => {
  const rec = (side: 'vsw' | 'macvlan', variant: string, fields: Partial<RunRecord>, run = 1): RunRecord => ({ test: 'transparent', side, variant, run, ok: true, ...fields });
  const tcp = (gbit: number) => ({ tcp: { bitsPerSecond: gbit * 1e9, retransmits: 0 } }) as Partial<RunRecord>;
  const udp = (kpps: number) => ({ udp: { packetsPerSecond: kpps * 1e3, sentPacketsPerSecond: kpps * 1e3, lostPercent: 0 } }) as Partial<RunRecord>;
  const records = [
    rec('vsw', 'tcp', { ...tcp(6), daemonCpuPercent: 90 }),
    rec('macvlan', 'tcp', tcp(20)),
    rec('vsw', 'udp 64 B', udp(150)),
    rec('macvlan', 'udp 64 B', udp(600)),
  ];
  const rows = transparentSummary(records);
  t.is(rows[0].ratio, 0.3);
  t.is(rows[1].ratio, 0.25);
  t.is(rows[2].vsw, 90);
  const [bar, reference] = transparentChecks(records);
  t.is(bar.bar, `>= ${UPLINK_BAR}`);
  t.false(bar.met);
  t.is(reference.bar, null);
  t.deepEqual(transparentSummary([]), []);
  t.is(transparentScenario.table!([]), null);
});

test('l2bridge: vsw against ipvlan L2, its own records only, TCP judged by the same bar', (t) => {
  const rec = (test: 'l2bridge' | 'transparent', side: 'vsw' | 'ipvlan' | 'macvlan', variant: string, gbit: number): RunRecord => ({ test, side, variant, run: 1, ok: true, tcp: { bitsPerSecond: gbit * 1e9, retransmits: 0 } }) as RunRecord;
  const records = [rec('l2bridge', 'vsw', 'tcp', 8), rec('l2bridge', 'ipvlan', 'tcp', 10), rec('transparent', 'vsw', 'tcp', 1), rec('transparent', 'macvlan', 'tcp', 10)];
  const rows = l2bridgeSummary(records);
  t.is(rows[0].vsw, 8, 'the transparent records are not mixed in');
  t.is(rows[0].ratio, 0.8);
  const [bar] = l2bridgeChecks(records);
  t.true(bar.met);
  t.regex(bar.what, /ipvlan L2/);
  t.regex(l2bridgeScenario.table!(records)!.lines[0], /vsw l2bridge\s+ipvlan L2\s+vsw\/ipvlan/);
});
