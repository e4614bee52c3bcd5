/**
 * What every benchmark program shares (`npm run bench`, `bench:vfp`,
 * `bench:restart`, `bench:runtimes`): its options, the checks before it
 * builds anything, the machine it ran on, the report (tables of medians and
 * ratios, the ratios against their bars), the JSON result in bench-results/,
 * and the main function that turns a failure into one sentence and an exit
 * status and unwinds through the bench's cleanup on SIGINT and SIGTERM.
 *
 * Parsing and arithmetic (intOption, median, medianOf, ratio, formatTable,
 * iperf3 JSON) live in scripts/bench-lib.ts, where the lab uses them too.
 */
import { constants as fsConstants, existsSync } from 'node:fs';
import { access, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { BenchError, Interrupted, formatTable, interrupt, liveChildren, type Check } from '../bench-lib.js';

/** The checkout: this file runs from dist/scripts/bench/. */
export const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));
export const CLI = path.join(REPO_ROOT, 'dist/src/cli/main.js');

// ---------------------------------------------------------------- options

type StringOptions = Record<string, { type: 'string' }>;

/**
 * parseArgs over string options plus --help (-h); an unknown option or a
 * missing value becomes one sentence pointing at --help. Null when --help was
 * asked for.
 */
export function parseBenchArgs<O extends StringOptions>(argv: string[], options: O): { [K in keyof O]?: string } | null {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new BenchError(`${(err as Error).message.replace(/\.$/, '')}: see --help.`);
  }
  if (values.help) return null;
  return values as { [K in keyof O]?: string };
}

/** --out as given, or bench-results/NAME-<ISO timestamp>.json in the checkout. */
export function resultPath(out: string | undefined, name: string, now = new Date()): string {
  if (out) return path.resolve(out);
  const stamp = now.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  return path.join(REPO_ROOT, 'bench-results', `${name}-${stamp}.json`);
}

// ---------------------------------------------------------------- before anything is built

/** A tool the bench runs, and the Debian package that has it. */
export type Tool = readonly [tool: string, pkg: string];

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

/** Throws one sentence naming the first missing tool and its package; `forWhat` says who needs it. */
export async function requireTools(tools: readonly Tool[], forWhat?: string): Promise<void> {
  for (const [tool, pkg] of tools) {
    if (!(await onPath(tool))) throw new BenchError(`${tool} was not found${forWhat ? ` (${forWhat} needs it)` : ''}: install it with \`apt-get install ${pkg}\`.`);
  }
}

/** `why`: what the bench does that takes root; `command`: how to run it as root. */
export function requireRoot(why: string, command: string): void {
  if (process.getuid?.() !== 0) throw new BenchError(`the bench must run as root (${why}): run it with \`sudo -E ${command}\`.`);
}

/** A file of the built tree; `what` names it for the user, `build` is the command that makes it. */
export function requireBuilt(file: string, what: string, build: string): void {
  if (!existsSync(file)) throw new BenchError(`${what} is not built (${path.relative(process.cwd(), file) || file} is missing): run \`${build}\` first.`);
}

// ---------------------------------------------------------------- the report

/** The machine, as every result records it (the numbers depend on it more than on vsw). */
export function machineInfo(): { nproc: number; cpuModel: string | null; memTotalMiB: number; kernel: string; node: string } {
  return {
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? null,
    memTotalMiB: Math.round(os.totalmem() / 2 ** 20),
    kernel: os.release(),
    node: process.version,
  };
}

/** A row of a report table: a measurement, its unit, and the decimals its values are printed with. */
export interface ReportRow {
  scenario: string;
  unit: string;
  digits: number;
}

/** A value column: its header, what it shows of a row, and fixed decimals (ratios) instead of the row's. */
export interface Column<R extends ReportRow> {
  header: string;
  value: (row: R) => number | null;
  digits?: number;
}

export const fmtCell = (v: number | null, digits: number): string => (v === null ? '-' : v.toFixed(digits));

/** The table of `rows` under a first header such as "scenario" or "nat scenario": name, unit, then the columns. */
export function reportTable<R extends ReportRow>(title: string, columns: readonly Column<R>[], rows: readonly R[]): string[] {
  const cells = rows.map((r) => [r.scenario, r.unit, ...columns.map((c) => fmtCell(c.value(r), c.digits ?? r.digits))]);
  return formatTable([title, 'unit', ...columns.map((c) => c.header)], cells);
}

/** Rows as the JSON result keeps them: the printing decimals left out. */
export function rowsJson<R extends ReportRow>(rows: readonly R[]): Omit<R, 'digits'>[] {
  return rows.map(({ digits: _digits, ...row }) => row);
}

/** Lines of the ratios against their bars (reported, never turned into a failure); none when there are no checks. */
export function checkLines(list: readonly Check[]): string[] {
  if (list.length === 0) return [];
  const w = Math.max(...list.map((c) => c.what.length));
  const values = list.map((c) => (c.value === null ? '-' : c.value.toFixed(c.digits ?? 2)));
  const vw = Math.max(5, ...values.map((v) => v.length));
  return [
    '',
    'ratios (medians):',
    ...list.map((c, i) => {
      const verdict = c.bar === null ? '(for reference)' : c.met === null ? 'no data' : c.met ? 'within the bar' : 'MISSES the bar';
      return `  ${c.what.padEnd(w)}  ${values[i].padStart(vw)}  ${c.bar === null ? ''.padEnd(12) : `bar ${c.bar.padEnd(8)}`}  ${verdict}`;
    }),
  ];
}

/** Writes the JSON result (creating its directory) and says where it went. */
export async function writeResult(out: string, result: unknown): Promise<void> {
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  const rel = path.relative(process.cwd(), out);
  console.log('');
  console.log(`results written to ${rel && !rel.startsWith('..') ? rel : out}`);
}

// ---------------------------------------------------------------- main

export interface BenchProgram<O> {
  /** Prefixes every message of the program ("bench", "bench-vfp"). */
  name: string;
  help: string;
  /** The options, or null when --help was asked for. */
  parse(argv: string[]): O | null;
  /** Measures and reports; resolves with the exit status (a run that failed: 1). */
  run(opts: O): Promise<number>;
  /** Runs last, after a failure and an interrupt too. */
  cleanup?(): Promise<void>;
  /**
   * SIGINT and SIGTERM abort `interrupt` (every command of bench-lib is tied to
   * it) so the bench unwinds through its cleanup; off for a bench that runs no
   * command and has nothing to undo, which the signal then simply ends.
   */
  interruptible: boolean;
}

/** Runs a bench program to its exit status: 0, 1 after a failure, 130 or 143 after SIGINT or SIGTERM. */
export async function runMain<O>(p: BenchProgram<O>): Promise<never> {
  // An object, not a let: the handler sets it, and the compiler would narrow a let to its initial null.
  const caught: { signal: NodeJS.Signals | null } = { signal: null };
  if (p.interruptible) {
    const onSignal = (sig: NodeJS.Signals): void => {
      if (caught.signal) return;
      caught.signal = sig;
      console.error(`${p.name}: ${sig}: stopping and removing everything the bench created`);
      interrupt.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  // Last resort if something escapes the cleanup: no orphaned iperf3 or daemon.
  process.on('exit', () => {
    for (const c of liveChildren) c.kill('SIGKILL');
  });

  let code = 1;
  try {
    const opts = p.parse(process.argv.slice(2));
    if (opts === null) {
      process.stdout.write(p.help);
      code = 0;
    } else {
      code = await p.run(opts);
    }
  } catch (err) {
    if (!(err instanceof Interrupted)) console.error(err instanceof BenchError ? `${p.name}: ${err.message}` : err);
    code = 1;
  } finally {
    try {
      await p.cleanup?.();
    } catch (err) {
      console.error(`${p.name}: cleanup: ${(err as Error).message}`);
      code ||= 1;
    }
  }
  if (caught.signal) code = caught.signal === 'SIGINT' ? 130 : 143;
  process.exit(code);
}
