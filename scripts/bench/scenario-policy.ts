/**
 * policy: one TCP stream through vsw with POLICY_RULES[i] block rules on each
 * of the two ports (installed by one PUT of a group per endpoint before each
 * run, as an operator would), and through the bridge, in the same run. The
 * rules (scripts/bench-lib.ts benchAclRules) never match the stream, so every
 * new flow is looked up against all of them, and the established stream must
 * not look at any: the ratio many/few says whether rule count costs anything
 * once a flow is cached. (Per-flow setup cost with many rules is what
 * `npm run bench:vfp` measures, without the kernel.)
 */
import { BenchError, benchAclRules, judge, median, medianOf, ratio, rotate, type BenchRule } from '../bench-lib.js';
import type { BenchContext, RunRecord, Side } from './context.js';
import { failedLeg, measure } from './measure.js';
import { gbps, vswOnlyRow, type Scenario, type SummaryRow } from './scenario.js';

/** ACL rules per port: few, then many. */
export const POLICY_RULES = [10, 10_000] as const;
/** The group the scenario installs (and removes) on both endpoints. */
const POLICY_LAYER = 'acl';
const POLICY_GROUP = 'bench';

export interface PolicyRunRecord extends RunRecord {
  /** vsw: ACL rules on each of the two ports during the run. */
  rules?: number;
  /** vsw: seconds each endpoint's PUT of the rule group took before the run. */
  installSeconds?: number[];
}

const groupPath = (endpoint: string): string => `/v1/endpoints/${endpoint}/layers/${POLICY_LAYER}/groups/${POLICY_GROUP}`;

/**
 * Replaces the bench group on both endpoints with n block rules that the
 * iperf3 traffic does not match, in one PUT per endpoint. Returns the seconds
 * each PUT took.
 */
async function installRules(ctx: BenchContext, side: Side, n: number): Promise<number[]> {
  const rules = benchAclRules(n);
  const seconds: number[] = [];
  for (const ep of [side.clientEndpoint!, side.serverEndpoint!]) {
    const t0 = performance.now();
    const group = (await ctx.daemon.api('PUT', groupPath(ep), { priority: 100, rules }, `installing ${n} ACL rules on endpoint ${ep}`)) as { rules?: unknown[] };
    seconds.push((performance.now() - t0) / 1000);
    if (!Array.isArray(group?.rules) || group.rules.length !== n) {
      throw new BenchError(`the daemon accepted the ${n}-rule group on endpoint ${ep} but answered with ${Array.isArray(group?.rules) ? group.rules.length : 'no'} rules.`);
    }
  }
  await checkRulesActive(ctx, side, rules);
  return seconds;
}

/**
 * Asks the data plane (POST /v1/trace) what it does with a packet that the
 * last "tcp to a /32 and port range" rule of the set blocks, from the client
 * endpoint's own address (so spoof guard passes): a block by the bench group
 * shows the whole set got there, not only the API's copy of it.
 */
async function checkRulesActive(ctx: BenchContext, side: Side, rules: BenchRule[]): Promise<void> {
  const probe = [...rules].reverse().find((r) => r.match.dstPrefix && r.match.dstPorts && r.direction === undefined);
  if (!probe) return;
  const dst = probe.match.dstPrefix!.split('/')[0];
  const port = probe.match.dstPorts!.split('-')[0];
  const packet = `tcp ${side.clientIp}:40000 > ${dst}:${port} syn`;
  const t = (await ctx.daemon.api('POST', '/v1/trace', { endpoint: side.clientEndpoint, direction: 'out', packet }, `tracing "${packet}"`)) as {
    verdict?: string;
    steps?: { group?: string; action?: string }[];
  };
  const byGroup = t?.steps?.some((st) => st.group === POLICY_GROUP && st.action === 'block');
  if (t?.verdict !== 'block' || !byGroup) {
    throw new BenchError(`after installing ${rules.length} rules, a trace of "${packet}" (rule priority ${probe.priority}) says ${t?.verdict ?? 'nothing'}, not a block by group ${POLICY_GROUP}: the rules did not reach the data plane.`);
  }
}

const isPolicy = (r: RunRecord): r is PolicyRunRecord => r.test === 'policy';

export const policyScenario: Scenario = {
  name: 'policy',
  usesBridge: true,

  setup: (ctx) => ctx.daemon.checkPolicyApi(ctx.vsw),

  async run(ctx) {
    const bridge = ctx.bridge;
    if (!bridge) throw new BenchError('the policy scenario needs the bridge side, which was not built.');
    const out: PolicyRunRecord[] = [];
    for (let run = 1; run <= ctx.opts.runs; run++) {
      for (const rules of rotate<number | null>(run, [...POLICY_RULES, null])) {
        if (rules === null) {
          out.push(await measure(ctx, bridge, 'policy', run, { variant: 'bridge' }));
          continue;
        }
        const variant = `${rules} rules`;
        let installSeconds: number[];
        try {
          installSeconds = await installRules(ctx, ctx.vsw, rules);
        } catch (err) {
          out.push(failedLeg(ctx, { test: 'policy', side: 'vsw', variant, rules, run }, err));
          continue;
        }
        out.push({ ...(await measure(ctx, ctx.vsw, 'policy', run, { variant })), rules, installSeconds });
      }
    }
    return out;
  },

  async teardown(ctx) {
    if (!ctx.daemon.alive()) return;
    for (const ep of [ctx.vsw.clientEndpoint!, ctx.vsw.serverEndpoint!]) await ctx.daemon.remove(groupPath(ep), `the bench ACL group from endpoint ${ep}`);
  },

  resultOptions: () => ({ policyRules: POLICY_RULES }),

  rows(records) {
    const rows: SummaryRow[] = [];
    const bridge = medianOf(records, { test: 'policy', variant: 'bridge' }, gbps);
    for (const n of POLICY_RULES) {
      const v = medianOf(records, { test: 'policy', variant: `${n} rules` }, gbps);
      rows.push({ scenario: `TCP 1 stream, ${n} ACL rules/port`, unit: 'Gbit/s', vsw: v, bridge, ratio: ratio(v, bridge), digits: 2 });
    }
    const retransmits = (r: RunRecord): number | null | undefined => r.tcp?.retransmits;
    const bridgeRetr = medianOf(records, { test: 'policy', variant: 'bridge' }, retransmits);
    for (const n of POLICY_RULES) {
      const v = medianOf(records, { test: 'policy', variant: `${n} rules` }, retransmits);
      rows.push({ scenario: `TCP retransmits, ${n} ACL rules/port`, unit: 'per run', vsw: v, bridge: bridgeRetr, ratio: null, digits: 0 });
    }
    const many = POLICY_RULES[POLICY_RULES.length - 1];
    const put = median(records.filter(isPolicy).filter((r) => r.rules === many).flatMap((r) => r.installSeconds ?? []));
    rows.push(vswOnlyRow(`PUT of a ${many}-rule group`, 's per endpoint', put, 2));
    return rows;
  },

  rssAfter: `policy runs (${POLICY_RULES[POLICY_RULES.length - 1]} rules/port)`,

  checks(records) {
    const bps = (variant: string): number | null => medianOf(records, { test: 'policy', variant }, (r) => r.tcp?.bitsPerSecond);
    const few = POLICY_RULES[0];
    const many = POLICY_RULES[POLICY_RULES.length - 1];
    return [
      judge(`policy: vsw TCP with ${many} / with ${few} rules per port`, ratio(bps(`${many} rules`), bps(`${few} rules`)), '>= 0.9', (v) => v >= 0.9),
      ...POLICY_RULES.map((n) => judge(`policy: vsw TCP with ${n} rules per port / bridge`, ratio(bps(`${n} rules`), bps('bridge')), '>= 0.5', (v) => v >= 0.5)),
    ];
  },
};
