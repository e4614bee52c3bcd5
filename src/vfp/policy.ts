/**
 * The policy model of a port, as the API accepts it and the data plane
 * receives it: plain JSON, validated here once, so everything downstream
 * (compile.ts, the classifier, the fast path) may trust it.
 *
 * A port has layers ordered by priority (lower first). Outbound traffic (sent
 * by the container) walks them top-down, inbound traffic bottom-up, as in VFP.
 * A layer has groups ordered by priority, each with an optional condition that
 * must match before its rules are looked at. Within a group the rule with the
 * lowest priority number that matches wins (one per group). allow and block
 * decide the layer's verdict; count, rewrite and meter do not. A terminating
 * rule ends the layer (allow and block are terminating unless told otherwise).
 * A layer nobody decided falls to its default for the direction; non-IP frames
 * (ARP and the like) are not subject to layer defaults, only to rules that name
 * them, because a port that cannot ARP is a port nobody can reach.
 *
 * Validation errors are one sentence that says what is wrong and what to write
 * instead; the service turns them into a 400 and leaves the old policy alone.
 */
import ipaddr from 'ipaddr.js';
import { EtherType } from '../packet/ethernet.js';
import { parseRate, parseSize } from './rate.js';

export const DIRECTIONS = ['in', 'out', 'both'] as const;
export type Direction = (typeof DIRECTIONS)[number];
export const RULE_ACTIONS = ['allow', 'block', 'count', 'rewrite', 'meter'] as const;
export type RuleAction = (typeof RULE_ACTIONS)[number];
export type Verdict = 'allow' | 'block';

export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 65535;
export const DEFAULT_LAYER = 'acl';
export const DEFAULT_GROUP = 'default';
/** Layers and groups are named like endpoints: short, printable, no spaces. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

export interface RuleMatch {
  srcMac?: string;
  dstMac?: string;
  /** A number (0x0800) or ipv4, ipv6, arp. */
  etherType?: number | string;
  /** 0-4095; 0 means untagged frames only. */
  vlan?: number;
  /** An IPv4 or IPv6 prefix or address: 10.0.0.0/24, fd00::/64, 10.0.0.5. */
  srcPrefix?: string;
  dstPrefix?: string;
  /** tcp, udp, icmp, icmpv6, or a protocol number 0-255. */
  protocol?: string | number;
  /** A port (80) or an inclusive range (1024-65535); needs protocol tcp or udp. */
  srcPorts?: string | number;
  dstPorts?: string | number;
  /** 0-255; needs protocol icmp or icmpv6. */
  icmpType?: number;
}

export interface RewriteSpec {
  srcMac?: string;
  dstMac?: string;
  srcIp?: string;
  dstIp?: string;
  srcPort?: number;
  dstPort?: number;
}

export interface MeterSpec {
  /** A rate such as 10mbit. */
  rate: string;
  /** Bucket size such as 64kb; default: 10 ms of the rate, at least 64 KiB (one TSO super-frame). */
  burst?: string;
}

export interface RuleSpec {
  /** Assigned by the service when absent. */
  id?: string;
  priority: number;
  direction?: Direction;
  action: RuleAction;
  terminating?: boolean;
  match?: RuleMatch;
  rewrite?: RewriteSpec;
  meter?: MeterSpec;
  description?: string;
}

export interface GroupSpec {
  name: string;
  priority: number;
  direction?: Direction;
  /** The group's condition; its rules are looked at only when it matches. */
  match?: RuleMatch;
  rules: RuleSpec[];
}

export interface LayerSpec {
  name: string;
  priority: number;
  defaultIn: Verdict;
  defaultOut: Verdict;
  groups: GroupSpec[];
}

/** A port's whole VFP configuration, as sent to the data plane. */
export interface PortPolicy {
  layers: LayerSpec[];
  spoofGuard: SpoofGuardSpec;
  qos: QosSpec | null;
}

export interface SpoofGuardSpec {
  enabled: boolean;
  /** The MAC the endpoint may send from (its own). */
  mac: string;
  /** Addresses it may send from: its own, plus any the operator allowed. */
  ips: string[];
}

export interface QosSpec {
  /** Maximum rate the endpoint may send at, bits per second. */
  maxEgressBps: number;
  /** Bucket size in bytes. */
  burstBytes: number;
}

export class PolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PolicyError';
  }
}

/** The parsed, checked form of a RuleMatch: what compile.ts turns into masks. */
export interface ParsedMatch {
  srcMac?: { hi: number; lo: number };
  dstMac?: { hi: number; lo: number };
  etherType?: number;
  vlan?: number;
  srcPrefix?: ParsedPrefix;
  dstPrefix?: ParsedPrefix;
  protocol?: number;
  srcPorts?: readonly [number, number];
  dstPorts?: readonly [number, number];
  icmpType?: number;
}

export interface ParsedPrefix {
  version: 4 | 6;
  /** 1 word for IPv4, 4 for IPv6, network order. */
  words: number[];
  length: number;
}

export interface ParsedRewrite {
  srcMac?: { hi: number; lo: number };
  dstMac?: { hi: number; lo: number };
  srcIp?: number;
  dstIp?: number;
  srcPort?: number;
  dstPort?: number;
}

const PROTOCOLS: Record<string, number> = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58 };
const ETHERTYPES: Record<string, number> = { ipv4: EtherType.IPv4, ipv6: EtherType.IPv6, arp: EtherType.ARP };

/** tcp, udp, icmp or icmpv6; undefined for a protocol without a name here. */
export function protocolName(n: number): string | undefined {
  return Object.keys(PROTOCOLS).find((k) => PROTOCOLS[k] === n);
}

export function parseMacWords(text: unknown, what: string): { hi: number; lo: number } {
  const m = typeof text === 'string' ? /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text) : null;
  if (!m) throw new PolicyError(`${what} "${String(text)}" is not a MAC address: write six hex pairs such as 02:76:0a:58:00:02.`);
  const b = m.slice(1).map((h) => parseInt(h, 16));
  return { hi: (b[0] << 8) | b[1], lo: ((b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]) >>> 0 };
}

/**
 * An address as people write them in policy: dotted-quad IPv4 with no
 * leading zeros, or IPv6. ipaddr.js alone also takes inet_aton's old forms
 * ("010.0.0.5" is octal 8.0.0.5, "10.5" is 10.0.0.5), which in a security
 * rule would be a trap.
 */
export function parseStrictIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  if (text.includes(':')) return ipaddr.IPv6.isValid(text) ? ipaddr.IPv6.parse(text) : null;
  return ipaddr.IPv4.isValidFourPartDecimal(text) ? ipaddr.IPv4.parse(text) : null;
}

export function parsePrefix(text: unknown, what: string): ParsedPrefix {
  if (typeof text !== 'string' || text.length === 0) throw new PolicyError(`${what} must be an IP prefix such as 10.0.0.0/24 or fd00::/64.`);
  const slash = text.indexOf('/');
  const parsed = parseStrictIp(slash < 0 ? text : text.slice(0, slash));
  const lengthText = slash < 0 ? undefined : text.slice(slash + 1);
  if (parsed === null || (lengthText !== undefined && !/^\d{1,3}$/.test(lengthText))) {
    throw new PolicyError(`${what} "${text}" is not an IP prefix: write an address with a prefix length such as 10.0.0.0/24 or fd00::/64.`);
  }
  let addr: ipaddr.IPv4 | ipaddr.IPv6 = parsed;
  const maxLength = addr.kind() === 'ipv4' ? 32 : 128;
  let length = lengthText === undefined ? maxLength : Number(lengthText);
  if (length > maxLength) throw new PolicyError(`${what} "${text}" has a prefix length above ${maxLength}: write /0 to /${maxLength}.`);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    addr = (addr as ipaddr.IPv6).toIPv4Address();
    length = Math.max(0, length - 96);
  }
  const bytes = addr.toByteArray();
  const words: number[] = [];
  for (let i = 0; i < bytes.length; i += 4) words.push(((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0);
  // Host bits set under the mask are a typo more often than intent: refuse rather than guess.
  const masked = maskWords(words, length);
  if (masked.some((w, i) => w !== words[i])) {
    const net = ipaddr.fromByteArray(wordsToBytes(masked)).toString();
    throw new PolicyError(`${what} "${text}" has host bits set: write ${net}/${length}.`);
  }
  return { version: addr.kind() === 'ipv4' ? 4 : 6, words, length };
}

export function maskWords(words: readonly number[], length: number): number[] {
  return words.map((w, i) => (w & prefixMaskWord(length - i * 32)) >>> 0);
}

/** The mask of one 32-bit word of a prefix that has `bits` bits left at that word. */
export function prefixMaskWord(bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return 0xffffffff;
  return (0xffffffff << (32 - bits)) >>> 0;
}

function wordsToBytes(words: readonly number[]): number[] {
  const out: number[] = [];
  for (const w of words) out.push(w >>> 24, (w >>> 16) & 0xff, (w >>> 8) & 0xff, w & 0xff);
  return out;
}


export function parsePortRange(value: unknown, what: string): readonly [number, number] {
  const text = typeof value === 'number' ? String(value) : value;
  const m = typeof text === 'string' ? /^\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?$/.exec(text) : null;
  if (!m) throw new PolicyError(`${what} "${String(value)}" is not a port or range: write a port such as 80 or a range such as 1024-65535.`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw new PolicyError(`${what} "${String(value)}" is out of range: ports go from 0 to 65535.`);
  if (lo > hi) throw new PolicyError(`${what} "${String(value)}" runs backwards: write the lower port first, as ${hi}-${lo}.`);
  return [lo, hi];
}

function parseProtocol(value: unknown): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 255) return value;
  if (typeof value === 'string') {
    const named = PROTOCOLS[value.toLowerCase()];
    if (named !== undefined) return named;
    if (/^\d{1,3}$/.test(value) && Number(value) <= 255) return Number(value);
  }
  throw new PolicyError(`protocol "${String(value)}" is not known: write tcp, udp, icmp, icmpv6 or a protocol number from 0 to 255.`);
}

function parseEtherType(value: unknown): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0x600 && value <= 0xffff) return value;
  if (typeof value === 'string') {
    const named = ETHERTYPES[value.toLowerCase()];
    if (named !== undefined) return named;
    const n = Number(value);
    if (Number.isInteger(n) && n >= 0x600 && n <= 0xffff) return n;
  }
  throw new PolicyError(`etherType "${String(value)}" is not known: write ipv4, ipv6, arp or a number from 0x0600 to 0xffff.`);
}

function intIn(value: unknown, lo: number, hi: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) {
    throw new PolicyError(`${what} ${JSON.stringify(value)} is out of range: write a whole number from ${lo} to ${hi}.`);
  }
  return value;
}

const MATCH_KEYS = new Set(['srcMac', 'dstMac', 'etherType', 'vlan', 'srcPrefix', 'dstPrefix', 'protocol', 'srcPorts', 'dstPorts', 'icmpType']);

export function parseMatch(match: RuleMatch | undefined): ParsedMatch {
  const out: ParsedMatch = {};
  if (match === undefined) return out;
  for (const k of Object.keys(match)) {
    if (!MATCH_KEYS.has(k)) throw new PolicyError(`match condition "${k}" is not known: use ${[...MATCH_KEYS].join(', ')}.`);
  }
  if (match.srcMac !== undefined) out.srcMac = parseMacWords(match.srcMac, 'srcMac');
  if (match.dstMac !== undefined) out.dstMac = parseMacWords(match.dstMac, 'dstMac');
  if (match.etherType !== undefined) out.etherType = parseEtherType(match.etherType);
  if (match.vlan !== undefined) out.vlan = intIn(match.vlan, 0, 4095, 'vlan');
  if (match.srcPrefix !== undefined) out.srcPrefix = parsePrefix(match.srcPrefix, 'srcPrefix');
  if (match.dstPrefix !== undefined) out.dstPrefix = parsePrefix(match.dstPrefix, 'dstPrefix');
  if (match.protocol !== undefined) out.protocol = parseProtocol(match.protocol);
  if (match.srcPorts !== undefined) out.srcPorts = parsePortRange(match.srcPorts, 'srcPorts');
  if (match.dstPorts !== undefined) out.dstPorts = parsePortRange(match.dstPorts, 'dstPorts');
  if (match.icmpType !== undefined) out.icmpType = intIn(match.icmpType, 0, 255, 'icmpType');

  const v4 = [out.srcPrefix, out.dstPrefix].some((p) => p?.version === 4);
  const v6 = [out.srcPrefix, out.dstPrefix].some((p) => p?.version === 6);
  if (v4 && v6) throw new PolicyError('srcPrefix and dstPrefix mix IPv4 and IPv6: a packet has one or the other, so write two rules.');
  const ipType = v4 ? EtherType.IPv4 : v6 ? EtherType.IPv6 : undefined;
  if (ipType !== undefined && out.etherType !== undefined && out.etherType !== ipType) {
    throw new PolicyError(`etherType 0x${out.etherType.toString(16)} contradicts the ${v4 ? 'IPv4' : 'IPv6'} prefix of the same rule: drop one of them.`);
  }
  if ((out.srcPorts || out.dstPorts) && out.protocol !== 6 && out.protocol !== 17) {
    throw new PolicyError('a port condition needs protocol tcp or udp: add "protocol": "tcp" (or udp) to the rule.');
  }
  if (out.icmpType !== undefined && out.protocol !== 1 && out.protocol !== 58) {
    throw new PolicyError('an icmpType condition needs protocol icmp or icmpv6: add "protocol": "icmp" to the rule.');
  }
  if (out.protocol === 1 && v6) throw new PolicyError('protocol icmp does not run over IPv6: use icmpv6 with IPv6 prefixes.');
  if (out.protocol === 58 && v4) throw new PolicyError('protocol icmpv6 does not run over IPv4: use icmp with IPv4 prefixes.');
  return out;
}

function parseIpv4(value: unknown, what: string): number {
  if (typeof value === 'string' && ipaddr.IPv4.isValidFourPartDecimal(value)) {
    const b = ipaddr.IPv4.parse(value).toByteArray();
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  }
  throw new PolicyError(`${what} "${String(value)}" is not an IPv4 address: write four numbers such as 10.0.0.5 (IPv6 rewrites are not supported).`);
}

export function parseRewrite(rw: RewriteSpec | undefined): ParsedRewrite {
  if (rw === undefined || Object.keys(rw).length === 0) {
    throw new PolicyError('a rewrite rule needs a "rewrite" object naming at least one of srcMac, dstMac, srcIp, dstIp, srcPort, dstPort.');
  }
  const out: ParsedRewrite = {};
  for (const k of Object.keys(rw)) {
    if (!['srcMac', 'dstMac', 'srcIp', 'dstIp', 'srcPort', 'dstPort'].includes(k)) {
      throw new PolicyError(`rewrite field "${k}" is not known: use srcMac, dstMac, srcIp, dstIp, srcPort or dstPort.`);
    }
  }
  if (rw.srcMac !== undefined) out.srcMac = parseMacWords(rw.srcMac, 'rewrite srcMac');
  if (rw.dstMac !== undefined) out.dstMac = parseMacWords(rw.dstMac, 'rewrite dstMac');
  if (rw.srcIp !== undefined) out.srcIp = parseIpv4(rw.srcIp, 'rewrite srcIp');
  if (rw.dstIp !== undefined) out.dstIp = parseIpv4(rw.dstIp, 'rewrite dstIp');
  if (rw.srcPort !== undefined) out.srcPort = intIn(rw.srcPort, 1, 65535, 'rewrite srcPort');
  if (rw.dstPort !== undefined) out.dstPort = intIn(rw.dstPort, 1, 65535, 'rewrite dstPort');
  return out;
}

/** Default meter burst: 10 ms at the rate, never below one 64 KiB TSO super-frame. */
export function defaultBurstBytes(rateBps: number): number {
  return Math.max(65536, Math.ceil(rateBps / 8 / 100));
}

export function parseMeter(spec: MeterSpec | undefined): { rateBps: number; burstBytes: number } {
  if (spec === undefined || typeof spec.rate !== 'string') throw new PolicyError('a meter rule needs "meter": {"rate": "10mbit"}.');
  const rateBps = policyParse(() => parseRate(spec.rate));
  const burstBytes = spec.burst === undefined ? defaultBurstBytes(rateBps) : policyParse(() => parseSize(spec.burst!));
  if (burstBytes < 1500) throw new PolicyError(`meter burst ${spec.burst} is smaller than one frame: make it at least 1500 bytes (64kb is a good start).`);
  return { rateBps, burstBytes };
}

function policyParse<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new PolicyError((err as Error).message);
  }
}

function checkName(name: unknown, what: string): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new PolicyError(`${what} name ${JSON.stringify(name)} is not valid: use 1-32 letters, digits, dots, dashes or underscores.`);
  }
  return name;
}

function checkDirection(d: unknown, what: string): Direction {
  if (d === undefined) return 'both';
  if (typeof d === 'string' && (DIRECTIONS as readonly string[]).includes(d)) return d as Direction;
  throw new PolicyError(`${what} direction "${String(d)}" is not known: write in, out or both.`);
}

function checkVerdict(v: unknown, what: string): Verdict {
  if (v === undefined) return 'allow';
  if (v === 'allow' || v === 'block') return v;
  throw new PolicyError(`${what} "${String(v)}" is not a default action: write allow or block.`);
}

/** Checks one rule and returns it with defaults filled in. Throws PolicyError. */
export function validateRule(rule: RuleSpec): RuleSpec {
  if (typeof rule !== 'object' || rule === null) throw new PolicyError('a rule must be a JSON object.');
  if (!(RULE_ACTIONS as readonly string[]).includes(rule.action)) {
    throw new PolicyError(`action "${String(rule.action)}" is not known: write allow, block, count, rewrite or meter.`);
  }
  const priority = intIn(rule.priority, MIN_PRIORITY, MAX_PRIORITY, 'priority');
  const direction = checkDirection(rule.direction, 'rule');
  parseMatch(rule.match);
  if (rule.action === 'rewrite') parseRewrite(rule.rewrite);
  else if (rule.rewrite !== undefined) throw new PolicyError('"rewrite" belongs only to rules whose action is rewrite.');
  if (rule.action === 'meter') parseMeter(rule.meter);
  else if (rule.meter !== undefined) throw new PolicyError('"meter" belongs only to rules whose action is meter.');
  if (rule.terminating !== undefined && typeof rule.terminating !== 'boolean') throw new PolicyError('terminating must be true or false.');
  const terminating = rule.terminating ?? (rule.action === 'allow' || rule.action === 'block');
  const out: RuleSpec = { ...rule, priority, direction, terminating };
  return out;
}

export function validateGroup(group: GroupSpec): GroupSpec {
  checkName(group.name, 'group');
  const priority = intIn(group.priority ?? 100, MIN_PRIORITY, MAX_PRIORITY, 'group priority');
  const direction = checkDirection(group.direction, 'group');
  parseMatch(group.match);
  if (!Array.isArray(group.rules)) throw new PolicyError(`group ${group.name} needs a "rules" array (it may be empty).`);
  const rules = group.rules.map(validateRule);
  const ids = new Set<string>();
  for (const r of rules) {
    if (r.id !== undefined) {
      if (ids.has(r.id)) throw new PolicyError(`rule id ${r.id} appears twice in group ${group.name}: give each rule its own id.`);
      ids.add(r.id);
    }
  }
  return { ...group, priority, direction, rules };
}

export function validateLayer(layer: LayerSpec): LayerSpec {
  checkName(layer.name, 'layer');
  const priority = intIn(layer.priority ?? 100, MIN_PRIORITY, MAX_PRIORITY, 'layer priority');
  const groups = (layer.groups ?? []).map(validateGroup);
  const names = new Set<string>();
  for (const g of groups) {
    if (names.has(g.name)) throw new PolicyError(`group ${g.name} appears twice in layer ${layer.name}: give each group its own name.`);
    names.add(g.name);
  }
  return {
    name: layer.name,
    priority,
    defaultIn: checkVerdict(layer.defaultIn, 'defaultIn'),
    defaultOut: checkVerdict(layer.defaultOut, 'defaultOut'),
    groups,
  };
}

export function validateQos(maxEgress: string, burst?: string): QosSpec {
  const maxEgressBps = policyParse(() => parseRate(maxEgress));
  const burstBytes = burst === undefined ? defaultBurstBytes(maxEgressBps) : policyParse(() => parseSize(burst));
  if (burstBytes < 1500) throw new PolicyError(`burst ${burst} is smaller than one frame: make it at least 1500 bytes.`);
  return { maxEgressBps, burstBytes };
}

/** The policy of a new endpoint: one ACL layer that allows everything, spoof guard on. */
export function defaultPortPolicy(mac: string, ip: string): PortPolicy {
  return {
    layers: [{ name: DEFAULT_LAYER, priority: 100, defaultIn: 'allow', defaultOut: 'allow', groups: [] }],
    spoofGuard: { enabled: true, mac, ips: [ip] },
    qos: null,
  };
}

export function directionIncludes(d: Direction | undefined, dir: 'in' | 'out'): boolean {
  return d === undefined || d === 'both' || d === dir;
}
