/**
 * The slow path of one port in one direction: spoof guard, then the layers
 * (top-down outbound, bottom-up inbound), each group's classifier, the rule
 * actions. It runs once per new flow (and per frame only for broadcast and
 * non-IP traffic, which the flow table does not cache); what it decides is
 * compiled into a flow-table entry by the switch.
 *
 * A rewrite changes the key as it goes, so lower layers see the headers the
 * upper ones produced, as in VFP. Rewrites are stateless header transpositions:
 * replies are not translated back (that is NAT's job, in src/nat).
 *
 * With a trace array, every step is recorded for `vsw trace`; without one,
 * nothing is allocated.
 */
import { DropReason } from '../packet/drop-reasons.js';
import { Action, DIR_IN, DIR_OUT, ruleMatches, type CompiledPolicy } from './compile.js';
import { KeyWord, Meta } from './key.js';

export const Verdict = { ALLOW: 0, BLOCK: 1 } as const;

export const Rewrite = {
  SRC_MAC: 1,
  DST_MAC: 2,
  SRC_IP: 4,
  DST_IP: 8,
  SRC_PORT: 16,
  DST_PORT: 32,
} as const;

/** The outcome of the slow path: reused across calls, never allocated per packet. */
export class Decision {
  verdict = 0;
  /** DropReason code when blocked. */
  dropReason = 0;
  rwFlags = 0;
  srcMacHi = 0;
  srcMacLo = 0;
  dstMacHi = 0;
  dstMacLo = 0;
  srcIp = 0;
  dstIp = 0;
  srcPort = 0;
  dstPort = 0;
  meterBucket = -1;

  reset(): void {
    this.verdict = Verdict.ALLOW;
    this.dropReason = 0;
    this.rwFlags = 0;
    this.meterBucket = -1;
  }
}

export interface TraceStep {
  port?: string;
  direction?: 'in' | 'out';
  layer?: string;
  group?: string;
  rule?: string;
  action: string;
  detail?: string;
}

/**
 * Spoof guard, on frames a container sends: the source MAC must be its own,
 * an IPv4 source one of its addresses, ARP sender fields likewise. IPv6 is
 * allowed from link-local and unspecified sources only (vsw assigns no global
 * IPv6 yet). Returns 0 or the DropReason.
 */
export function spoofCheck(policy: CompiledPolicy, buf: Uint8Array, off: number, key: Uint32Array, meta: Int32Array): number {
  const sg = policy.spoofGuard;
  if (!sg.enabled) return 0;
  if (key[KeyWord.SRC_MAC_HI] !== sg.macHi || key[KeyWord.SRC_MAC_LO] !== sg.macLo) return DropReason.spoofMac;
  const version = meta[Meta.IP_VERSION];
  if (version === 4) {
    const src = key[KeyWord.SRC_IP];
    if (containsU32(sg.ipv4, src)) return 0;
    // DHCP discovery goes out before the container has an address.
    if (src === 0 && key[KeyWord.PROTO] >>> 24 === 17 && key[KeyWord.PORTS] === ((68 << 16) | 67)) return 0;
    return DropReason.spoofIp;
  }
  if (version === 6) {
    const w0 = key[KeyWord.SRC_IP];
    const linkLocal = w0 >>> 22 === 0x3fa; // fe80::/10
    const unspecified = (w0 | key[KeyWord.SRC_IP + 1] | key[KeyWord.SRC_IP + 2] | key[KeyWord.SRC_IP + 3]) === 0;
    return linkLocal || unspecified ? 0 : DropReason.spoofIp;
  }
  if (key[KeyWord.ETH_VLAN] >>> 16 === 0x0806) {
    const at = meta[Meta.ETHERTYPE_AT];
    if (at < 0) return DropReason.spoofArp;
    const arp = off + at + 2;
    const shaHi = (buf[arp + 8] << 8) | buf[arp + 9];
    const shaLo = ((buf[arp + 10] << 24) | (buf[arp + 11] << 16) | (buf[arp + 12] << 8) | buf[arp + 13]) >>> 0;
    if (shaHi !== sg.macHi || shaLo !== sg.macLo) return DropReason.spoofArp;
    const spa = ((buf[arp + 14] << 24) | (buf[arp + 15] << 16) | (buf[arp + 16] << 8) | buf[arp + 17]) >>> 0;
    // 0.0.0.0 is an ARP probe (RFC 5227), which claims nothing.
    if (spa !== 0 && !containsU32(sg.ipv4, spa)) return DropReason.spoofArp;
  }
  return 0;
}

function containsU32(list: Uint32Array, v: number): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === v) return true;
  return false;
}

/**
 * Walks the layers for one direction and leaves the outcome in `d` (which the
 * caller reset). `key` is rewritten in place by rewrite rules.
 */
export function evaluateLayers(
  policy: CompiledPolicy,
  dir: number,
  key: Uint32Array,
  isIp: boolean,
  d: Decision,
  trace: TraceStep[] | null,
): void {
  const layers = policy.layers;
  const n = layers.length;
  for (let li = 0; li < n; li++) {
    const layer = layers[dir === DIR_OUT ? li : n - 1 - li];
    let layerVerdict = -1;
    const groups = layer.groups;
    groupLoop: for (let gi = 0; gi < groups.length; gi++) {
      const group = groups[gi];
      const classifier = group.classifiers[dir];
      if (classifier === null) continue;
      if (group.condition !== null && !ruleMatches(group.condition, key)) {
        if (trace) trace.push({ layer: layer.name, group: group.name, action: 'skip', detail: 'group condition does not match' });
        continue;
      }
      const id = classifier.lookup(key);
      if (id < 0) continue;
      const rule = group.rules[id];
      rule.hits++;
      switch (rule.action) {
        case Action.allow:
          layerVerdict = Verdict.ALLOW;
          break;
        case Action.block:
          layerVerdict = Verdict.BLOCK;
          break;
        case Action.rewrite:
          applyRewriteToKey(rule.rewrite!, key, d);
          break;
        case Action.meter:
          d.meterBucket = rule.meterBucket;
          break;
        default:
          break;
      }
      if (trace) {
        trace.push({
          layer: layer.name,
          group: group.name,
          rule: rule.id,
          action: rule.actionName,
          detail: `priority ${rule.priority}${rule.terminating ? ', terminating' : ''}`,
        });
      }
      if (rule.terminating) break groupLoop;
    }
    if (layerVerdict < 0) {
      // Layer defaults govern IP traffic; ARP and other non-IP frames pass unless a rule named them.
      layerVerdict = isIp && layer.defaults[dir] === Action.block ? Verdict.BLOCK : Verdict.ALLOW;
      if (trace) trace.push({ layer: layer.name, action: layerVerdict === Verdict.BLOCK ? 'block' : 'allow', detail: isIp ? 'layer default' : 'non-IP frame passes the layer default' });
    }
    if (layerVerdict === Verdict.BLOCK) {
      d.verdict = Verdict.BLOCK;
      d.dropReason = DropReason.policyBlock;
      return;
    }
  }
}

function applyRewriteToKey(rw: NonNullable<import('./compile.js').CompiledRule['rewrite']>, key: Uint32Array, d: Decision): void {
  if (rw.srcMac) {
    key[KeyWord.SRC_MAC_HI] = d.srcMacHi = rw.srcMac.hi;
    key[KeyWord.SRC_MAC_LO] = d.srcMacLo = rw.srcMac.lo;
    d.rwFlags |= Rewrite.SRC_MAC;
  }
  if (rw.dstMac) {
    key[KeyWord.DST_MAC_HI] = d.dstMacHi = rw.dstMac.hi;
    key[KeyWord.DST_MAC_LO] = d.dstMacLo = rw.dstMac.lo;
    d.rwFlags |= Rewrite.DST_MAC;
  }
  const ipv4 = key[KeyWord.ETH_VLAN] >>> 16 === 0x0800;
  if (ipv4 && rw.srcIp !== undefined) {
    key[KeyWord.SRC_IP] = d.srcIp = rw.srcIp;
    d.rwFlags |= Rewrite.SRC_IP;
  }
  if (ipv4 && rw.dstIp !== undefined) {
    key[KeyWord.DST_IP] = d.dstIp = rw.dstIp;
    d.rwFlags |= Rewrite.DST_IP;
  }
  const proto = key[KeyWord.PROTO] >>> 24;
  if (proto === 6 || proto === 17) {
    if (rw.srcPort !== undefined) {
      d.srcPort = rw.srcPort;
      key[KeyWord.PORTS] = ((rw.srcPort << 16) | (key[KeyWord.PORTS] & 0xffff)) >>> 0;
      d.rwFlags |= Rewrite.SRC_PORT;
    }
    if (rw.dstPort !== undefined) {
      d.dstPort = rw.dstPort;
      key[KeyWord.PORTS] = ((key[KeyWord.PORTS] & 0xffff0000) | rw.dstPort) >>> 0;
      d.rwFlags |= Rewrite.DST_PORT;
    }
  }
}

export { DIR_IN, DIR_OUT };
