/**
 * Turns a validated PortPolicy into what the slow path runs: layers in
 * outbound order, groups in priority order, and per group and direction one
 * Classifier over the rules that apply in that direction. Compiling happens
 * once per policy change, on the data-plane thread, so evaluation never looks
 * at strings or JSON.
 */
import { EtherType } from '../packet/ethernet.js';
import { Classifier, ruleMatches, type ClassifierRule } from './classifier.js';

export { ruleMatches };
import { KEY_WORDS, KeyWord, VLAN_PRESENT } from './key.js';
import {
  directionIncludes,
  parseMatch,
  parseMeter,
  parseRewrite,
  prefixMaskWord,
  type ParsedMatch,
  type ParsedRewrite,
  type PortPolicy,
  type RuleAction,
} from './policy.js';

export const Action = { allow: 0, block: 1, count: 2, rewrite: 3, meter: 4 } as const;
export const DIR_OUT = 0;
export const DIR_IN = 1;

export interface CompiledRule {
  id: string;
  action: number;
  actionName: RuleAction;
  terminating: boolean;
  priority: number;
  rewrite: ParsedRewrite | null;
  /** Token bucket id of a meter rule, -1 otherwise. */
  meterBucket: number;
  meter: { rateBps: number; burstBytes: number } | null;
  /** Flows whose setup matched this rule (the slow path counts; cached packets are counted per flow). */
  hits: number;
}

export interface CompiledGroup {
  name: string;
  priority: number;
  /** Per direction (DIR_OUT, DIR_IN): null when the group does not apply in it. */
  classifiers: [Classifier | null, Classifier | null];
  /** Same index space as the classifier ids. */
  rules: CompiledRule[];
  /** The group's own condition, or null for none. */
  condition: ClassifierRule | null;
}

export interface CompiledLayer {
  name: string;
  priority: number;
  /** Default verdict per direction: Action.allow or Action.block. */
  defaults: [number, number];
  groups: CompiledGroup[];
}

export interface CompiledPolicy {
  /** In outbound order (priority ascending); inbound walks it backwards. */
  layers: CompiledLayer[];
  spoofGuard: { enabled: boolean; macHi: number; macLo: number; ipv4: Uint32Array };
  qos: { rateBps: number; burstBytes: number } | null;
  /** Meter buckets this policy holds, to release when it is replaced. */
  meterBuckets: number[];
}

/** Builds the value/mask/ranges a ClassifierRule needs from a parsed match. */
export function matchToClassifierRule(m: ParsedMatch, id: number, priority: number): ClassifierRule {
  const value = new Uint32Array(KEY_WORDS);
  const mask = new Uint32Array(KEY_WORDS);
  const set = (w: number, v: number, msk: number) => {
    mask[w] = (mask[w] | msk) >>> 0;
    value[w] = ((value[w] & ~msk) | (v & msk)) >>> 0;
  };
  if (m.srcMac) {
    set(KeyWord.SRC_MAC_HI, m.srcMac.hi, 0xffff);
    set(KeyWord.SRC_MAC_LO, m.srcMac.lo, 0xffffffff);
  }
  if (m.dstMac) {
    set(KeyWord.DST_MAC_HI, m.dstMac.hi, 0xffff);
    set(KeyWord.DST_MAC_LO, m.dstMac.lo, 0xffffffff);
  }
  const prefixVersion = m.srcPrefix?.version ?? m.dstPrefix?.version;
  const etherType = m.etherType ?? (prefixVersion === 4 ? EtherType.IPv4 : prefixVersion === 6 ? EtherType.IPv6 : undefined);
  if (etherType !== undefined) set(KeyWord.ETH_VLAN, etherType << 16, 0xffff0000);
  if (m.vlan !== undefined) set(KeyWord.ETH_VLAN, m.vlan === 0 ? 0 : VLAN_PRESENT | m.vlan, 0x1fff);
  if (m.protocol !== undefined) set(KeyWord.PROTO, m.protocol << 24, 0xff000000);
  if (m.icmpType !== undefined) set(KeyWord.PROTO, m.icmpType << 16, 0x00ff0000);
  for (const [p, base] of [
    [m.srcPrefix, KeyWord.SRC_IP],
    [m.dstPrefix, KeyWord.DST_IP],
  ] as const) {
    if (!p) continue;
    p.words.forEach((w, i) => set(base + i, w, prefixMaskWord(p.length - i * 32)));
    // An IPv4 key leaves words 1-3 of an address zero: pin them, so a v4 rule cannot match a v6 key by accident.
    if (p.version === 4) for (let i = 1; i < 4; i++) set(base + i, 0, 0xffffffff);
  }
  const rule: ClassifierRule = { id, priority, value, mask };
  if (m.srcPorts && !(m.srcPorts[0] === 0 && m.srcPorts[1] === 65535)) rule.srcPorts = m.srcPorts;
  if (m.dstPorts && !(m.dstPorts[0] === 0 && m.dstPorts[1] === 65535)) rule.dstPorts = m.dstPorts;
  return rule;
}

export interface MeterAllocator {
  allocate(rateBps: number, burstBytes: number): number;
  release(bucket: number): void;
}

export function compilePolicy(policy: PortPolicy, meters: MeterAllocator): CompiledPolicy {
  const meterBuckets: number[] = [];
  try {
    return compileWith(policy, meters, meterBuckets);
  } catch (err) {
    // A policy that fails to compile must not keep the meters it took on the way.
    for (const m of meterBuckets) meters.release(m);
    throw err;
  }
}

function compileWith(policy: PortPolicy, meters: MeterAllocator, meterBuckets: number[]): CompiledPolicy {
  const layers = [...policy.layers]
    .sort((a, b) => a.priority - b.priority)
    .map((layer): CompiledLayer => {
      const groups = [...layer.groups]
        .sort((a, b) => a.priority - b.priority)
        .map((group): CompiledGroup => {
          const rules: CompiledRule[] = [];
          const perDir: [ClassifierRule[], ClassifierRule[]] = [[], []];
          group.rules.forEach((spec, index) => {
            const meter = spec.action === 'meter' ? parseMeter(spec.meter) : null;
            const meterBucket = meter ? meters.allocate(meter.rateBps, meter.burstBytes) : -1;
            if (meterBucket >= 0) meterBuckets.push(meterBucket);
            rules.push({
              id: spec.id ?? `${group.name}#${index}`,
              action: Action[spec.action],
              actionName: spec.action,
              terminating: spec.terminating ?? (spec.action === 'allow' || spec.action === 'block'),
              priority: spec.priority,
              rewrite: spec.action === 'rewrite' ? parseRewrite(spec.rewrite) : null,
              meterBucket,
              meter,
              hits: 0,
            });
            const cr = matchToClassifierRule(parseMatch(spec.match), index, spec.priority);
            if (directionIncludes(spec.direction, 'out')) perDir[DIR_OUT].push(cr);
            if (directionIncludes(spec.direction, 'in')) perDir[DIR_IN].push(cr);
          });
          const applies = (dir: 'in' | 'out') => directionIncludes(group.direction, dir);
          return {
            name: group.name,
            priority: group.priority,
            classifiers: [applies('out') ? new Classifier(perDir[DIR_OUT]) : null, applies('in') ? new Classifier(perDir[DIR_IN]) : null],
            rules,
            condition: group.match && Object.keys(group.match).length > 0 ? matchToClassifierRule(parseMatch(group.match), 0, 0) : null,
          };
        });
      return {
        name: layer.name,
        priority: layer.priority,
        defaults: [Action[layer.defaultOut], Action[layer.defaultIn]],
        groups,
      };
    });
  const sg = policy.spoofGuard;
  const mac = parseMacLoose(sg.mac);
  const ipv4 = new Uint32Array(sg.ips.filter((ip) => ip.includes('.')).map(ipv4ToInt));
  const qos = policy.qos ? { rateBps: policy.qos.maxEgressBps, burstBytes: policy.qos.burstBytes } : null;
  return { layers, spoofGuard: { enabled: sg.enabled, macHi: mac.hi, macLo: mac.lo, ipv4 }, qos, meterBuckets };
}

function parseMacLoose(mac: string): { hi: number; lo: number } {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  return { hi: (b[0] << 8) | b[1], lo: ((b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]) >>> 0 };
}

function ipv4ToInt(ip: string): number {
  const p = ip.split('/')[0].split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}
