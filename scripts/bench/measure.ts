/**
 * One iperf3 run between the two namespaces of a side, as a run record, with
 * the bench daemon's CPU over it; and the checks around it (the path answers
 * before, the topology is still there after a failure).
 */
import { existsSync } from 'node:fs';

import { BenchError, CpuMeter, Interrupted, alternate, tcpResult, udpResult, waitFor } from '../bench-lib.js';
import { runIperf } from '../lab-lib.js';
import { sh, type BenchContext, type RunRecord, type Side, type TestName } from './context.js';

/** One ping through the path before measuring: ARP resolved, MACs learned, ports up. */
export async function waitReachable(side: Side): Promise<void> {
  await waitFor(`a ping from ${side.clientNs} to ${side.serverIp} (${side.name})`, 20_000, async () => {
    const r = await sh('ip', ['netns', 'exec', side.clientNs, 'ping', '-c', '1', '-W', '1', side.serverIp], {
      allowFail: true,
      timeoutMs: 5000,
    });
    return r.code === 0 ? true : undefined;
  }, 200);
}

/**
 * Stops the bench when its topology is gone (the daemon died, or another
 * process such as an unscoped `scripts/cleanup.sh` removed the namespaces):
 * every later run would fail too, and numbers around the loss mean nothing.
 */
export async function checkIntact(ctx: BenchContext, sides: readonly Side[]): Promise<void> {
  if (!ctx.daemon.alive()) throw await ctx.daemon.died();
  checkNamespaces(sides);
}

/** Throws when a namespace of these paths is gone. */
export function checkNamespaces(paths: readonly { clientNs: string; serverNs: string }[]): void {
  for (const p of paths) {
    for (const ns of [p.clientNs, p.serverNs]) {
      if (!existsSync(`/run/netns/${ns}`)) {
        throw new BenchError(`network namespace ${ns} disappeared while the bench ran: something else removed it (another vswt cleanup?).`);
      }
    }
  }
}

/** Gbit/s with two decimals, or Mbit/s with one below 1 Gbit/s (the qos caps). */
export function fmtBps(bps: number): string {
  return bps >= 1e9 ? `${(bps / 1e9).toFixed(2)} Gbit/s` : `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

export const kibToMiB = (kib: number | null | undefined): number | null => (typeof kib === 'number' ? kib / 1024 : null);

export function fmtMiB(kib: number | null | undefined): string {
  return typeof kib === 'number' ? (kib / 1024).toFixed(1) : '-';
}

/**
 * A leg that failed before it could be measured (its setup, installing its
 * rules, setting its cap) as a failed record, logged as the runs are; unless
 * the bench cannot go on (an interrupt, the daemon gone): then it throws.
 */
export function failedLeg<R extends Omit<RunRecord, 'ok'>>(ctx: BenchContext, rec: R, err: unknown): R & { ok: false; error: string } {
  if (err instanceof Interrupted || !ctx.daemon.alive()) throw err;
  const failed = { ...rec, ok: false as const, error: (err as Error).message };
  console.error(`bench: ${rec.test} run ${rec.run} ${rec.side} ${rec.variant ?? ''}: failed: ${failed.error}`);
  return failed;
}

/**
 * One iperf3 run on `side`: TCP one stream, or 64-byte UDP datagrams at full
 * rate for the udp test. A run may fail on its own (an iperf3 hiccup) and the
 * next one be fine, so a failure is a record; a lost topology fails all the
 * rest, so that throws.
 */
export async function measure(ctx: BenchContext, side: Side, test: TestName, run: number, leg: { variant?: string; reverse?: boolean } = {}): Promise<RunRecord> {
  const udp = test === 'udp';
  const rec: RunRecord = { test, side: side.name, ...leg, run, ok: false };
  // Both vsw paths (with and without NAT) run through the daemon; the bridge does not.
  const meter = side.name === 'vsw' || side.name === 'nat' ? new CpuMeter(ctx.daemon.pid, ctx.clkTck) : null;
  try {
    const { doc } = await runIperf({
      clientNs: side.clientNs,
      serverNs: side.serverNs,
      serverIp: side.serverIp,
      seconds: ctx.opts.time,
      udp,
      len: 64,
      during: meter ? async () => meter.begin() : undefined,
      reverse: leg.reverse === true,
    });
    if (meter) rec.daemonCpuPercent = await meter.end();
    if (udp) rec.udp = udpResult(doc);
    else rec.tcp = tcpResult(doc);
    rec.ok = true;
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    rec.error = (err as Error).message;
  }
  const what =
    rec.tcp ? `${fmtBps(rec.tcp.bitsPerSecond)}, ${rec.tcp.retransmits ?? '?'} retransmits`
    : rec.udp ? `${(rec.udp.packetsPerSecond / 1e3).toFixed(0)} kpps received, ${rec.udp.lostPercent.toFixed(1)}% lost`
    : `failed: ${rec.error}`;
  const cpu = typeof rec.daemonCpuPercent === 'number' ? `, daemon CPU ${rec.daemonCpuPercent.toFixed(0)}%` : '';
  const label = rec.variant && rec.variant !== side.name ? `${side.name} ${rec.variant}` : side.name;
  console.error(`bench: ${test} run ${run} ${label}: ${what}${cpu}`);
  if (!rec.ok) await checkIntact(ctx, [side]);
  return rec;
}

/** --runs runs of `test` on vsw and on the bridge, alternating which goes first. */
export async function vswAgainstBridge(ctx: BenchContext, test: TestName): Promise<RunRecord[]> {
  const bridge = ctx.bridge;
  if (!bridge) throw new BenchError(`the ${test} scenario needs the bridge side, which was not built.`);
  const out: RunRecord[] = [];
  for (let run = 1; run <= ctx.opts.runs; run++) {
    for (const side of alternate(run, [ctx.vsw, bridge])) out.push(await measure(ctx, side, test, run));
  }
  return out;
}
