/**
 * A scenario of `npm run bench`: one file in scripts/bench/ (scenario-*.ts),
 * listed in SCENARIOS (scripts/bench/scenarios.ts). The runner builds the sides
 * every scenario shares (the daemon's internal network, and the bridge if a
 * chosen scenario uses it), then, scenario by scenario in the order of
 * TEST_NAMES: setup, run, describe, teardown; a setup that fails is one failed
 * record and the next scenario runs. What a scenario builds for itself it
 * removes through ctx.cleanup, which runs also after a failure or an
 * interrupt; teardown undoes what it changed on the shared sides.
 *
 * The report is the runner's: the main table (vsw against the bridge) holds
 * the rows of every scenario, then the daemon's CPU and memory rows the
 * scenarios name; a scenario with a baseline of its own (nat, overlay) prints
 * a table of its own; the checks of all are printed last.
 */
import { medianOf, ratio, type Check } from '../bench-lib.js';
import { kibToMiB } from './measure.js';
import type { BenchContext, BenchOptions, RunRecord, TestName } from './context.js';
import { reportTable, rowsJson, type Column, type ReportRow, type Tool } from './runner.js';

/** A row of the main table: vsw against the Linux bridge. */
export interface SummaryRow extends ReportRow {
  vsw: number | null;
  bridge: number | null;
  /** vsw/bridge, for the rows where a ratio means something (rates, not counts of losses). */
  ratio: number | null;
}

export const SUMMARY_COLUMNS: readonly Column<SummaryRow>[] = [
  { header: 'vsw', value: (r) => r.vsw },
  { header: 'bridge', value: (r) => r.bridge },
  { header: 'vsw/bridge', value: (r) => r.ratio, digits: 2 },
];

/** A table of a scenario's own, against its own baseline: printed lines and the rows for the JSON result. */
export interface ScenarioTable {
  lines: string[];
  summary: object[];
}

/** The table of a scenario's own rows under `title`; null when it has none (it did not run). */
export function ownTable<R extends ReportRow>(title: string, columns: readonly Column<R>[], rows: readonly R[]): ScenarioTable | null {
  return rows.length === 0 ? null : { lines: reportTable(title, columns, rows), summary: rowsJson(rows) };
}

export interface Scenario<State = unknown> {
  readonly name: TestName;
  /** Compares against the Linux bridge side (built only when a chosen scenario does). */
  readonly usesBridge?: boolean;
  /** Tools it runs beyond the bench's own (ip, iperf3, ping, ss). */
  readonly tools?: readonly Tool[];
  /** Checks what it needs before anything is built; throws a BenchError that says what to do. */
  preflight?(): Promise<void>;
  /** Builds what only it uses, registering each removal with ctx.cleanup before the thing exists. */
  setup?(ctx: BenchContext): Promise<State>;
  /** --runs runs of each of its legs. */
  run(ctx: BenchContext, state: State): Promise<RunRecord[]>;
  /** After the runs: what the JSON result keeps besides the records (topology.NAME, and NAME beside its table's rows). */
  describe?(ctx: BenchContext, state: State): Promise<{ topology?: unknown; details?: Record<string, unknown> }>;
  /** Undoes what it changed on the shared sides (rules, caps), also after a failed run. */
  teardown?(ctx: BenchContext, state: State): Promise<void>;
  /** Its options as the JSON result records them. */
  resultOptions?(opts: BenchOptions): Record<string, unknown>;

  /** Its rows of the main table, given the records of every scenario. */
  rows?(records: readonly RunRecord[]): SummaryRow[];
  /** "daemon CPU during X": the median of its vsw runs' daemon CPU, under this X. */
  readonly daemonCpuDuring?: string;
  /** "daemon RSS after X": the daemon's VmRSS once it finished, under this X. */
  readonly rssAfter?: string;
  /** A table of its own; null when it has no records. */
  table?(records: readonly RunRecord[]): ScenarioTable | null;
  /** Ratios and rates it is judged by, next to their bars. */
  checks?(records: readonly RunRecord[]): Check[];
}

/**
 * A main-table row of `test`: the median of f over the vsw runs and over the
 * bridge runs, and their ratio for rates (not for counts such as retransmits).
 */
export function vswBridgeRow(
  records: readonly RunRecord[],
  test: TestName,
  scenario: string,
  unit: string,
  f: (r: RunRecord) => number | null | undefined,
  withRatio: boolean,
  digits: number,
): SummaryRow {
  const vsw = medianOf(records, { test, side: 'vsw' }, f);
  const bridge = medianOf(records, { test, side: 'bridge' }, f);
  return { scenario, unit, vsw, bridge, ratio: withRatio ? ratio(vsw, bridge) : null, digits };
}

/** A main-table row with a vsw value only (the bridge has no daemon, the cap is no bridge). */
export function vswOnlyRow(scenario: string, unit: string, vsw: number | null, digits: number): SummaryRow {
  return { scenario, unit, vsw, bridge: null, ratio: null, digits };
}

export const gbps = (r: { tcp?: { bitsPerSecond: number } }): number | null => (r.tcp ? r.tcp.bitsPerSecond / 1e9 : null);

/** The key of the daemon's VmRSS after scenario s in the result's `daemon` record (rssAfterTcpKiB ...). */
export const rssKey = (s: Scenario): string => `rssAfter${s.name[0].toUpperCase()}${s.name.slice(1)}KiB`;

/**
 * The main table: the rows of every scenario that has records, then the
 * daemon's CPU during the scenarios that name it, its memory idle, after each
 * scenario that names it and at its peak, then `tail` (the soak's rows).
 */
export function mainTable(chosen: readonly Scenario[], records: readonly RunRecord[], memory: Record<string, number | null>, tail: readonly SummaryRow[]): SummaryRow[] {
  const ran = chosen.filter((s) => records.some((r) => r.test === s.name));
  const rows = ran.flatMap((s) => s.rows?.(records) ?? []);
  for (const s of ran) {
    if (s.daemonCpuDuring) rows.push(vswOnlyRow(`daemon CPU during ${s.daemonCpuDuring}`, '% of a core', medianOf(records, { test: s.name, side: 'vsw' }, (r) => r.daemonCpuPercent), 0));
  }
  rows.push(vswOnlyRow('daemon RSS idle, 2 ports', 'MiB', kibToMiB(memory.rssIdleKiB), 1));
  for (const s of chosen) {
    const rss = memory[rssKey(s)];
    if (s.rssAfter && rss !== undefined) rows.push(vswOnlyRow(`daemon RSS after ${s.rssAfter}`, 'MiB', kibToMiB(rss), 1));
  }
  rows.push(vswOnlyRow('daemon peak RSS (VmHWM)', 'MiB', kibToMiB(memory.hwmKiB), 1));
  return [...rows, ...tail];
}
