/**
 * qos: one TCP stream from the client endpoint while its egress is capped
 * (PUT /v1/endpoints/:ep/qos): the cap limits what the endpoint sends, and
 * the iperf3 client sends. Measured is the receiver's rate; the ratio to the
 * cap should be close to 1. The cap is its own baseline: no bridge.
 */
import { BenchError, alternate, judge, medianOf } from '../bench-lib.js';
import type { BenchContext, RunRecord, Side } from './context.js';
import { failedLeg, measure } from './measure.js';
import { vswOnlyRow, type Scenario } from './scenario.js';

/** Egress caps, as the API takes them and in bit/s. */
export const QOS_CAPS: readonly { rate: string; bps: number }[] = [
  { rate: '100mbit', bps: 100e6 },
  { rate: '1gbit', bps: 1e9 },
];

export interface QosRunRecord extends RunRecord {
  /** The client endpoint's egress cap in bit/s. */
  capBps?: number;
}

const qosPath = (side: Side): string => `/v1/endpoints/${side.clientEndpoint}/qos`;

/** Caps what the client endpoint sends. */
async function setQos(ctx: BenchContext, side: Side, rate: string): Promise<void> {
  const body = (await ctx.daemon.api('PUT', qosPath(side), { maxEgress: rate }, `capping endpoint ${side.clientEndpoint} at ${rate}`)) as { maxEgress?: unknown };
  if (typeof body?.maxEgress !== 'string') throw new BenchError(`PUT ${qosPath(side)} answered without maxEgress: ${JSON.stringify(body).slice(0, 120)}`);
}

export const qosScenario: Scenario = {
  name: 'qos',

  setup: (ctx) => ctx.daemon.checkPolicyApi(ctx.vsw),

  async run(ctx) {
    const out: QosRunRecord[] = [];
    for (let run = 1; run <= ctx.opts.runs; run++) {
      for (const cap of alternate(run, QOS_CAPS)) {
        const variant = cap.rate;
        try {
          await setQos(ctx, ctx.vsw, cap.rate);
        } catch (err) {
          out.push(failedLeg(ctx, { test: 'qos', side: 'vsw', variant, capBps: cap.bps, run }, err));
          continue;
        }
        out.push({ ...(await measure(ctx, ctx.vsw, 'qos', run, { variant })), capBps: cap.bps });
      }
    }
    return out;
  },

  async teardown(ctx) {
    if (ctx.daemon.alive()) await ctx.daemon.remove(qosPath(ctx.vsw), `the egress cap from endpoint ${ctx.vsw.clientEndpoint}`);
  },

  resultOptions: () => ({ qosCaps: QOS_CAPS.map((c) => c.rate) }),

  rows: (records) =>
    QOS_CAPS.flatMap((cap) => [
      vswOnlyRow(`TCP 1 stream, egress cap ${cap.rate}`, 'Mbit/s', medianOf(records, { test: 'qos', variant: cap.rate }, (r) => (r.tcp ? r.tcp.bitsPerSecond / 1e6 : null)), 1),
      vswOnlyRow(`TCP retransmits, egress cap ${cap.rate}`, 'per run', medianOf(records, { test: 'qos', variant: cap.rate }, (r) => r.tcp?.retransmits), 0),
    ]),

  rssAfter: 'qos runs',

  checks: (records) =>
    QOS_CAPS.map((cap) => {
      const m = medianOf(records, { test: 'qos', variant: cap.rate }, (r) => r.tcp?.bitsPerSecond);
      return judge(`qos: TCP measured / egress cap ${cap.rate}`, m === null ? null : m / cap.bps, '0.9 - 1.1', (v) => v >= 0.9 && v <= 1.1);
    }),
};
