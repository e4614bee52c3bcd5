/**
 * The names of one network, as its resolver (src/switch/stages/dns-stage.ts)
 * answers them: endpoint names and load balancer names, each to its IPv4
 * addresses (and IPv6 ones, if it has them), answered as NAME and as
 * NAME.NETWORK; and the other way, an address's PTR name (in-addr.arpa,
 * ip6.arpa) to NAME.NETWORK.
 *
 * Names are compared without case, a trailing dot tolerated. They are held by
 * owner (an endpoint id, a load balancer id): added, replaced and removed by
 * owner, so a name follows its endpoint. A name that exists already on the
 * network is refused with a sentence the control plane turns into a 409; the
 * check covers both forms, so "web" and an endpoint named "web.mynet" on
 * network mynet cannot both exist (each would answer for web.mynet).
 *
 * Under NETWORK the network is authoritative: a name there that is no one's
 * is NXDOMAIN, not a question for the host's resolvers (inZone). NETWORK is
 * the network's name in lowercase; a network whose name is not a valid DNS
 * name (an empty label) serves bare names only.
 *
 * One instance lives in the data plane with the stage (looked up per query,
 * a Map lookup on the name's string) and one may live in the control plane
 * for the checks before an endpoint is created; both are fed the same
 * records. Nothing here runs per frame but lookup and reverse.
 */
import { encodeDnsName } from '../packet/dns.js';
import { parseIpv4Addr } from '../packet/ipv4.js';
import { parseIpv6Addr } from '../packet/ipv6.js';

/** One name of an owner: what the control plane pushes. */
export interface NameRecord {
  /** An endpoint id or a load balancer id: whose name this is. */
  owner: string;
  /** The name without the network's suffix ("web"), any case, a trailing dot tolerated. */
  name: string;
  /** Dotted quads. */
  ipv4?: string[];
  ipv6?: string[];
}

/** A name as the resolver answers it: addresses ready to be written, the PTR target in wire form. */
export class NameEntry {
  constructor(
    readonly owner: string,
    /** Lowercase, no trailing dot. */
    readonly name: string,
    /** NAME.NETWORK, or NAME where the network has no zone: what a PTR answers. */
    readonly fqdn: string,
    readonly ipv4: Uint32Array,
    /** 16 bytes per address. */
    readonly ipv6: Uint8Array,
    /** fqdn in wire form (encodeDnsName). */
    readonly fqdnWire: Uint8Array,
    /** The record it was made from, with its name lowercased. */
    readonly record: NameRecord,
  ) {}

  get ipv6Count(): number {
    return this.ipv6.length >>> 4;
  }
}

/** A name's labels: letters, digits, '-' and '_', 1 to 63 each. */
const LABEL = /^[a-z0-9_-]{1,63}$/;
/** Presentation length of a name whose wire form is 255 bytes. */
const MAX_NAME_TEXT = 253;
const IN_ADDR_ARPA = '.in-addr.arpa';
const IP6_ARPA = '.ip6.arpa';

/** Lowercase, without a trailing dot. */
export function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function validName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_TEXT) return false;
  for (const label of name.split('.')) if (!LABEL.test(label)) return false;
  return true;
}

/** The key of an IPv6 address in the reverse map: 32 lowercase hex digits. */
function ipv6Key(bytes: Uint8Array, at: number): string {
  let s = '';
  for (let i = 0; i < 16; i++) s += bytes[at + i].toString(16).padStart(2, '0');
  return s;
}

/** "d.c.b.a.in-addr.arpa" (already normalized) to a.b.c.d as u32; -1 when it names no single address. */
export function reverseIpv4(qname: string): number {
  if (!qname.endsWith(IN_ADDR_ARPA)) return -1;
  const end = qname.length - IN_ADDR_ARPA.length;
  let addr = 0;
  let octets = 0;
  let value = -1;
  let digits = 0;
  // Labels from the first (the address's last octet) to the fourth.
  for (let i = 0; i <= end; i++) {
    const c = i < end ? qname.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (value < 0 || octets === 4) return -1;
      addr += value * 2 ** (8 * octets);
      octets++;
      value = -1;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // No leading zeros: "010" is not the label a resolver writes for 10.
      if (value === 0 || ++digits > 3) return -1;
      value = value < 0 ? c - 0x30 : value * 10 + (c - 0x30);
      if (value > 255) return -1;
    } else {
      return -1;
    }
  }
  return octets === 4 ? addr : -1;
}

/** "b.a.9.8....ip6.arpa" (32 nibble labels, normalized) to its reverse-map key (32 hex digits, in address order); null otherwise. */
export function reverseIpv6Key(qname: string): string | null {
  if (!qname.endsWith(IP6_ARPA) || qname.length !== 64 + IP6_ARPA.length - 1) return null;
  let key = '';
  for (let i = 62; i >= 0; i -= 2) {
    const c = qname.charCodeAt(i);
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return null;
    if (i < 62 && qname.charCodeAt(i + 1) !== 0x2e) return null;
    key += qname[i];
  }
  return qname.charCodeAt(63) === 0x2e ? key : null;
}

export class NetworkNames {
  /** NETWORK: the suffix names are answered under, lowercase; null when the network's name is no DNS name. */
  readonly zone: string | null;
  private readonly byName = new Map<string, NameEntry>();
  private readonly byOwner = new Map<string, NameEntry[]>();
  private readonly byIpv4 = new Map<number, NameEntry[]>();
  private readonly byIpv6 = new Map<string, NameEntry[]>();

  constructor(readonly network: string) {
    const zone = normalizeName(network);
    this.zone = validName(zone) ? zone : null;
  }

  /** Names held (each counted once, not per form). */
  get size(): number {
    let n = 0;
    for (const list of this.byOwner.values()) n += list.length;
    return n;
  }

  /** The keys a name is answered by: NAME and NAME.NETWORK. */
  private keys(name: string): string[] {
    return this.zone === null ? [name] : [name, `${name}.${this.zone}`];
  }

  /**
   * Why `record` could not be added beside the names held now, leaving
   * `ignoreOwner`'s out of account (a replace); null when it could. Also
   * what the control plane asks before it creates an endpoint.
   */
  refusal(record: NameRecord, ignoreOwner?: string): string | null {
    const name = normalizeName(record.name);
    const where = `network ${this.network}`;
    if (!validName(name)) return `the name ${JSON.stringify(record.name)} is not a DNS name: use labels of 1 to 63 letters, digits, '-' or '_', separated by dots`;
    if (this.zone !== null && name.length + 1 + this.zone.length > MAX_NAME_TEXT) return `the name ${JSON.stringify(record.name)} is too long with the network's suffix .${this.zone}: use a shorter name`;
    for (const a of record.ipv4 ?? []) if (parseIpv4Addr(a) === null) return `the address ${JSON.stringify(a)} of name ${name} is not an IPv4 address`;
    for (const a of record.ipv6 ?? []) if (parseIpv6Addr(a) === null) return `the address ${JSON.stringify(a)} of name ${name} is not an IPv6 address`;
    for (const key of this.keys(name)) {
      const held = this.byName.get(key);
      if (held !== undefined && held.owner !== ignoreOwner) {
        if (held.name === name) return `the name ${name} is taken on ${where} by ${held.owner}: choose another name`;
        return `the name ${name} would answer for ${key}, which ${held.owner}'s name ${held.name} answers for on ${where}: choose another name`;
      }
    }
    return null;
  }

  /** Adds one name; the sentence saying why not when it is refused (nothing changes then), else null. */
  add(record: NameRecord): string | null {
    const why = this.refusal(record);
    if (why !== null) return why;
    this.insert(this.entry(record));
    return null;
  }

  /** Removes every name of `owner`; returns how many. */
  remove(owner: string): number {
    const list = this.byOwner.get(owner);
    if (list === undefined) return 0;
    for (const e of list) this.unindex(e);
    this.byOwner.delete(owner);
    return list.length;
  }

  /** The names of `owner` become `records` (their own owner fields are ignored), all or nothing; a sentence when refused. */
  replace(owner: string, records: Omit<NameRecord, 'owner'>[]): string | null {
    const seen = new Set<string>();
    for (const r of records) {
      const why = this.refusal({ ...r, owner }, owner);
      if (why !== null) return why;
      for (const key of this.keys(normalizeName(r.name))) {
        if (seen.has(key)) return `the name ${normalizeName(r.name)} is given twice for ${owner} on network ${this.network}`;
        seen.add(key);
      }
    }
    this.remove(owner);
    for (const r of records) this.insert(this.entry({ ...r, owner }));
    return null;
  }

  /** Every name at once (what the control plane pushes to the data plane): the old names go; all or nothing, a sentence when refused. */
  load(records: NameRecord[]): string | null {
    const next = new NetworkNames(this.network);
    for (const r of records) {
      const why = next.add(r);
      if (why !== null) return why;
    }
    this.byName.clear();
    this.byOwner.clear();
    this.byIpv4.clear();
    this.byIpv6.clear();
    for (const list of next.byOwner.values()) for (const e of list) this.insert(e);
    return null;
  }

  /** What is held, by owner then name. */
  records(): NameRecord[] {
    const out: NameRecord[] = [];
    for (const list of this.byOwner.values()) for (const e of list) out.push(e.record);
    return out;
  }

  /** The entry answering `qname` (normalized: lowercase, no trailing dot, as DnsQueryParser.qname is), or undefined. */
  lookup(qname: string): NameEntry | undefined {
    return this.byName.get(qname);
  }

  /** Whether `qname` (normalized) is NETWORK or under it: the network answers for it, NXDOMAIN when no one has it. */
  inZone(qname: string): boolean {
    const zone = this.zone;
    if (zone === null) return false;
    return qname === zone || (qname.length > zone.length && qname.endsWith(zone) && qname.charCodeAt(qname.length - zone.length - 1) === 0x2e);
  }

  /** The entries whose address a PTR name (normalized) asks for, or undefined when it is not one of the network's addresses (or no reverse name). */
  reverse(qname: string): readonly NameEntry[] | undefined {
    const v4 = reverseIpv4(qname);
    if (v4 >= 0) return this.byIpv4.get(v4);
    const v6 = reverseIpv6Key(qname);
    return v6 === null ? undefined : this.byIpv6.get(v6);
  }

  private entry(record: NameRecord): NameEntry {
    const name = normalizeName(record.name);
    const fqdn = this.zone === null ? name : `${name}.${this.zone}`;
    const v4 = (record.ipv4 ?? []).map((a) => parseIpv4Addr(a)!);
    const v6 = new Uint8Array(16 * (record.ipv6 ?? []).length);
    (record.ipv6 ?? []).forEach((a, i) => v6.set(parseIpv6Addr(a)!, 16 * i));
    const copy: NameRecord = { owner: record.owner, name, ipv4: [...(record.ipv4 ?? [])] };
    if (record.ipv6 !== undefined) copy.ipv6 = [...record.ipv6];
    return new NameEntry(record.owner, name, fqdn, Uint32Array.from(v4), v6, encodeDnsName(fqdn), copy);
  }

  private insert(e: NameEntry): void {
    for (const key of this.keys(e.name)) this.byName.set(key, e);
    push(this.byOwner, e.owner, e);
    for (const a of e.ipv4) push(this.byIpv4, a, e);
    for (let i = 0; i < e.ipv6Count; i++) push(this.byIpv6, ipv6Key(e.ipv6, 16 * i), e);
  }

  private unindex(e: NameEntry): void {
    for (const key of this.keys(e.name)) if (this.byName.get(key) === e) this.byName.delete(key);
    for (const a of e.ipv4) pull(this.byIpv4, a, e);
    for (let i = 0; i < e.ipv6Count; i++) pull(this.byIpv6, ipv6Key(e.ipv6, 16 * i), e);
  }
}

function push<K>(map: Map<K, NameEntry[]>, key: K, e: NameEntry): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [e]);
  else list.push(e);
}

function pull<K>(map: Map<K, NameEntry[]>, key: K, e: NameEntry): void {
  const list = map.get(key);
  if (list === undefined) return;
  const i = list.indexOf(e);
  if (i >= 0) list.splice(i, 1);
  if (list.length === 0) map.delete(key);
}
