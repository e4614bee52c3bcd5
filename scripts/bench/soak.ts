/**
 * --soak S: one long TCP run on vsw after the scenarios, with the daemon's
 * RSS sampled every 5 s, to show that the data path does not leak per packet.
 */
import { CpuMeter, Interrupted, procStatusKiB, sleep, tcpResult, type TcpResult } from '../bench-lib.js';
import { runIperf } from '../lab-lib.js';
import type { BenchContext } from './context.js';
import { fmtMiB, kibToMiB } from './measure.js';
import { vswOnlyRow, type SummaryRow } from './scenario.js';

const SOAK_SAMPLE_MS = 5000;

interface RssSample {
  /** Seconds since the soak test started. */
  t: number;
  rssKiB: number | null;
}

export interface SoakResult {
  seconds: number;
  error?: string;
  tcp?: TcpResult;
  daemonCpuPercent?: number | null;
  rssBeforeKiB: number | null;
  rssAfterKiB?: number | null;
  rssMaxKiB?: number | null;
  /** Last sample minus first sample under load. */
  rssGrowthKiB?: number | null;
  samples: RssSample[];
}

export async function soak(ctx: BenchContext, seconds: number): Promise<SoakResult> {
  console.error(`bench: soak: one ${seconds} s TCP run on vsw, daemon RSS every ${SOAK_SAMPLE_MS / 1000} s`);
  const pid = ctx.daemon.pid;
  const side = ctx.vsw;
  const samples: RssSample[] = [];
  const rssBefore = await procStatusKiB(pid, 'VmRSS');
  const meter = new CpuMeter(pid, ctx.clkTck);
  const t0 = performance.now();
  let tcp: TcpResult;
  try {
    const { doc } = await runIperf({
      clientNs: side.clientNs,
      serverNs: side.serverNs,
      serverIp: side.serverIp,
      seconds,
      during: async (client) => {
        await meter.begin();
        const finished = client.then(() => true, () => true);
        for (;;) {
          if (await Promise.race([sleep(SOAK_SAMPLE_MS).then(() => false), finished])) break;
          const rss = await procStatusKiB(pid, 'VmRSS');
          samples.push({ t: Math.round((performance.now() - t0) / 1000), rssKiB: rss });
          console.error(`bench: soak: t=${samples.at(-1)!.t}s RSS ${fmtMiB(rss)} MiB`);
        }
      },
    });
    tcp = tcpResult(doc);
  } catch (err) {
    if (err instanceof Interrupted) throw err;
    console.error(`bench: soak failed: ${(err as Error).message}`);
    return { seconds, error: (err as Error).message, rssBeforeKiB: rssBefore, samples };
  }
  const cpu = await meter.end();
  const rssAfter = await procStatusKiB(pid, 'VmRSS');
  const values = samples.map((s) => s.rssKiB).filter((v): v is number => v !== null);
  // Growth is taken from the first in-load sample: the step from idle to loaded is buffers filling once, not a leak.
  const growth = values.length >= 2 ? values[values.length - 1] - values[0] : null;
  return {
    seconds,
    tcp,
    daemonCpuPercent: cpu,
    rssBeforeKiB: rssBefore,
    rssAfterKiB: rssAfter,
    rssMaxKiB: values.length ? Math.max(...values) : null,
    rssGrowthKiB: growth,
    samples,
  };
}

/** The soak's rows of the main table. */
export function soakRows(s: SoakResult): SummaryRow[] {
  return [
    vswOnlyRow(`soak ${s.seconds} s TCP`, 'Gbit/s', s.tcp ? s.tcp.bitsPerSecond / 1e9 : null, 2),
    vswOnlyRow('soak RSS growth, first to last sample', 'MiB', kibToMiB(s.rssGrowthKiB), 1),
    vswOnlyRow('soak RSS max', 'MiB', kibToMiB(s.rssMaxKiB), 1),
  ];
}
