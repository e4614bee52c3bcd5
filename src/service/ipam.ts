/**
 * Address management for vsw networks: subnet parsing, per-network address
 * allocation, and the MAC addresses vsw derives from IPs. IPv4 only for now.
 *
 * Policy: the network and broadcast addresses are never handed out, and one
 * host address is always held back for the gateway (the first host address,
 * or the network's configured gateway), so a network created without a
 * gateway can gain one later without renumbering anybody.
 */
import { randomBytes } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { badRequest } from './errors.js';

export class IpamError extends Error {
  override name = 'IpamError';
}

export interface Subnet {
  /** Network address as an unsigned 32-bit integer. */
  readonly network: number;
  readonly prefix: number;
  /** Broadcast address as an unsigned 32-bit integer. */
  readonly broadcast: number;
}

/** Longest prefix accepted: a /30 is the smallest network with room for a gateway and one endpoint. */
export const MAX_PREFIX = 30;
/** Shortest prefix accepted: beyond a /8 the allocation bitmap and the broadcast domain become silly. */
export const MIN_PREFIX = 8;

const EXAMPLE_MAC = '02:76:0a:32:00:05';

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function ipToInt(ip: string): number {
  const o = ipaddr.IPv4.parse(ip).octets;
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/**
 * Parse a dotted-quad IPv4 address strictly: ipaddr.js alone would also take
 * "10.1", "0x0a.0.0.1" or "010.0.0.1", which are legal to inet_aton but almost
 * always typos here.
 */
function parseIpv4(text: string, what = ''): number {
  if (typeof text === 'string' && ipaddr.IPv4.isValidFourPartDecimal(text)) return ipToInt(text);
  const label = what ? `${what} ` : '';
  if (typeof text === 'string' && ipaddr.IPv6.isValid(text)) {
    throw new IpamError(`${label}${text} is an IPv6 address, which vsw does not support yet: use an IPv4 address such as 10.50.0.5.`);
  }
  throw new IpamError(`${label}${JSON.stringify(String(text))} is not an IPv4 address: write four decimal numbers separated by dots, such as 10.50.0.5.`);
}

export function parseSubnet(cidr: string): Subnet {
  if (typeof cidr === 'string' && cidr.includes(':') && ipaddr.IPv6.isValidCIDR(cidr)) {
    throw new IpamError(`${cidr} is an IPv6 subnet, which vsw does not support yet: use an IPv4 subnet such as 10.50.0.0/24.`);
  }
  const m = typeof cidr === 'string' ? cidr.match(/^([0-9.]+)\/(\d{1,2})$/) : null;
  if (!m || !ipaddr.IPv4.isValidFourPartDecimal(m[1]) || Number(m[2]) > 32) {
    throw new IpamError(`${JSON.stringify(String(cidr))} is not an IPv4 subnet: write it as address/prefix, such as 10.50.0.0/24.`);
  }
  const prefix = Number(m[2]);
  if (prefix > MAX_PREFIX) {
    throw new IpamError(
      `${cidr} is too small: a network needs at least a /${MAX_PREFIX} (network, gateway, one endpoint, broadcast), so use a prefix of ${MAX_PREFIX} or less.`,
    );
  }
  if (prefix < MIN_PREFIX) {
    throw new IpamError(`${cidr} is too large: use a prefix between /${MIN_PREFIX} and /${MAX_PREFIX}, such as /16 or /24.`);
  }
  const addr = ipToInt(m[1]);
  const mask = maskOf(prefix);
  const network = (addr & mask) >>> 0;
  if (network !== addr) {
    throw new IpamError(`${cidr} is not a network address: did you mean ${intToIp(network)}/${prefix}?`);
  }
  return { network, prefix, broadcast: (network | ~mask) >>> 0 };
}

function toSubnet(s: Subnet | string): Subnet {
  return typeof s === 'string' ? parseSubnet(s) : s;
}

export function formatSubnet(s: Subnet): string {
  return `${intToIp(s.network)}/${s.prefix}`;
}

/** True when the two subnets share an address, i.e. one contains the other. */
export function subnetsOverlap(a: Subnet | string, b: Subnet | string): boolean {
  const x = toSubnet(a);
  const y = toSubnet(b);
  const mask = maskOf(Math.min(x.prefix, y.prefix));
  return ((x.network & mask) >>> 0) === ((y.network & mask) >>> 0);
}

export function subnetContains(s: Subnet | string, ip: string): boolean {
  const subnet = toSubnet(s);
  const n = parseIpv4(ip);
  return ((n & maskOf(subnet.prefix)) >>> 0) === subnet.network;
}

/**
 * Parse "10.50.0.5" or "10.50.0.5/24" as an address for `subnet`; a prefix,
 * when given, must be the subnet's own. Returns the address without prefix.
 * Whether the address lies inside the subnet is left to Ipam.reserve, which
 * says so in its own words.
 */
export function parseIpOrCidr(text: string, subnet: Subnet | string): string {
  const s = toSubnet(subnet);
  if (typeof text !== 'string') parseIpv4(text);
  const slash = text.indexOf('/');
  if (slash < 0) return intToIp(parseIpv4(text));
  const addr = intToIp(parseIpv4(text.slice(0, slash)));
  const prefixText = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(prefixText)) {
    throw new IpamError(`${JSON.stringify(text)} is not an IPv4 address with a prefix: write it like ${addr}/${s.prefix} or just ${addr}.`);
  }
  if (Number(prefixText) !== s.prefix) {
    throw new IpamError(`${text} does not match the prefix of network ${formatSubnet(s)}: write ${addr}/${s.prefix} or just ${addr}.`);
  }
  return addr;
}

/**
 * The addresses of one network. Allocation state is a bitmap over the
 * subnet's addresses (bit i = network + i) plus a cursor below which every
 * address is known to be taken: allocate() skips full 32-address words and
 * never re-parses strings, and even a /8 costs only 2 MiB.
 */
export class Ipam {
  readonly subnet: Subnet;
  /** The subnet as text, e.g. 10.50.0.0/24. */
  readonly cidr: string;
  /** The network's configured gateway, if it has one. */
  readonly gateway?: string;
  /** The address held back for the gateway: `gateway` when set, else the first host address. */
  readonly reservedGateway: string;
  /** How many addresses can be handed out (all but network, broadcast and gateway). */
  readonly size: number;

  private readonly bits: Uint32Array;
  private readonly total: number;
  private readonly gatewayIndex: number;
  private usedCount = 0;
  /** Every index below this one (and at or above rangeFirst) is taken; allocate() starts its search here. */
  private cursor = 1;
  /** allocate() hands out only indexes in [rangeFirst, rangeLast]; reserve() takes any host address. */
  private readonly rangeFirst: number;
  private readonly rangeLast: number;
  /** The allocation range as text, when it is not the whole subnet. */
  readonly range?: string;
  /** The allocation range as given, for saving. */
  readonly rangeBounds?: { first: string; last: string };

  constructor(subnet: string, opts: { gateway?: string; range?: { first: string; last: string } } = {}) {
    this.subnet = parseSubnet(subnet);
    this.cidr = formatSubnet(this.subnet);
    this.total = this.subnet.broadcast - this.subnet.network + 1;
    this.bits = new Uint32Array(Math.ceil(this.total / 32));

    if (opts.gateway !== undefined) {
      const gw = parseIpv4(opts.gateway, 'gateway');
      const idx = this.indexOf(gw);
      if (idx < 0) {
        throw new IpamError(`gateway ${opts.gateway} is outside network ${this.cidr}: pick an address inside it, such as ${intToIp(this.subnet.network + 1)}.`);
      }
      if (idx === 0 || idx === this.total - 1) {
        const which = idx === 0 ? 'network' : 'broadcast';
        throw new IpamError(`gateway ${opts.gateway} is the ${which} address of ${this.cidr}: pick a host address such as ${intToIp(this.subnet.network + 1)}.`);
      }
      this.gateway = intToIp(gw);
      this.gatewayIndex = idx;
    } else {
      this.gatewayIndex = 1;
    }
    this.reservedGateway = intToIp(this.subnet.network + this.gatewayIndex);

    this.mark(0);
    this.mark(this.total - 1);
    this.mark(this.gatewayIndex);
    // Bits past the end of the subnet in the last word (only for subnets smaller than 32 addresses).
    for (let i = this.total; i < this.bits.length * 32; i++) this.mark(i);
    this.size = this.total - 3;
    this.rangeFirst = 1;
    this.rangeLast = this.total - 2;
    if (opts.range !== undefined) {
      const first = this.indexOf(parseIpv4(opts.range.first, 'range start'));
      const last = this.indexOf(parseIpv4(opts.range.last, 'range end'));
      if (first < 1 || last < 1 || first > this.total - 2 || last > this.total - 2 || first > last) {
        throw new IpamError(`address range ${opts.range.first}-${opts.range.last} is not a range of host addresses inside ${this.cidr}: pick one inside it, such as ${intToIp(this.subnet.network + 2)}-${intToIp(this.subnet.broadcast - 1)}.`);
      }
      this.rangeFirst = first;
      this.rangeLast = last;
      this.cursor = first;
      this.range = `${opts.range.first}-${opts.range.last}`;
      this.rangeBounds = { first: opts.range.first, last: opts.range.last };
    }
  }

  /** Addresses currently handed out by allocate() or reserve(). */
  get used(): number {
    return this.usedCount;
  }

  get free(): number {
    return this.size - this.usedCount;
  }

  /** The lowest free host address. */
  allocate(): string {
    const words = this.bits.length;
    for (let w = this.cursor >>> 5; w < words; w++) {
      let freeBits = ~this.bits[w] >>> 0;
      if (w === this.cursor >>> 5) freeBits = (freeBits & (0xffffffff << (this.cursor & 31))) >>> 0;
      if (freeBits === 0) continue;
      const lowest = (freeBits & -freeBits) >>> 0;
      const idx = w * 32 + (31 - Math.clz32(lowest));
      if (idx > this.rangeLast) break;
      this.mark(idx);
      this.usedCount++;
      this.cursor = idx + 1;
      return intToIp(this.subnet.network + idx);
    }
    this.cursor = this.rangeLast + 1;
    if (this.range !== undefined) {
      throw new IpamError(
        `network ${this.cidr} has no free addresses left in this host's range ${this.range}: remove endpoints that are no longer needed, pass --ip, or create the network with a wider --ip-range.`,
      );
    }
    throw new IpamError(
      `network ${this.cidr} has no free addresses left (all ${this.size} are in use): remove endpoints that are no longer needed or create a network with a larger subnet.`,
    );
  }

  /** Take a specific address, e.g. one a user asked for or one restored from saved state. */
  reserve(ip: string): void {
    const n = parseIpv4(ip);
    const idx = this.indexOf(n);
    const text = intToIp(n);
    if (idx < 0) throw new IpamError(`${text} is outside network ${this.cidr}: pick an address inside it, or omit it to get a free one.`);
    if (idx === 0) throw new IpamError(`${text} is the network address of ${this.cidr} and cannot be assigned: pick a host address, or omit it to get a free one.`);
    if (idx === this.total - 1) {
      throw new IpamError(`${text} is the broadcast address of ${this.cidr} and cannot be assigned: pick a host address, or omit it to get a free one.`);
    }
    if (idx === this.gatewayIndex) {
      throw new IpamError(`${text} is reserved for the gateway of ${this.cidr}: pick another address, or omit it to get a free one.`);
    }
    if (this.isMarked(idx)) throw new IpamError(`${text} is already in use in ${this.cidr}: pick another address, or omit it to get a free one.`);
    this.mark(idx);
    this.usedCount++;
  }

  /** Give an address back; releasing one that is not held does nothing, so callers can clean up blindly. */
  release(ip: string): void {
    const idx = this.indexOf(parseIpv4(ip));
    if (!this.isAssignable(idx) || !this.isMarked(idx)) return;
    this.bits[idx >>> 5] &= ~(1 << (idx & 31));
    this.usedCount--;
    if (idx < this.cursor && idx >= this.rangeFirst) this.cursor = idx;
  }

  /** Whether the address is handed out (by allocate or reserve); the gateway address is not counted. */
  has(ip: string): boolean {
    const idx = this.indexOf(parseIpv4(ip));
    return this.isAssignable(idx) && this.isMarked(idx);
  }

  /** The addresses handed out, in ascending order (for saving state and for inspection). */
  allocated(): string[] {
    const out: string[] = [];
    for (let w = 0; w < this.bits.length; w++) {
      if (this.bits[w] === 0) continue;
      for (let b = 0; b < 32; b++) {
        const idx = w * 32 + b;
        if (this.isAssignable(idx) && this.isMarked(idx)) out.push(intToIp(this.subnet.network + idx));
      }
    }
    return out;
  }

  private indexOf(n: number): number {
    return n >= this.subnet.network && n <= this.subnet.broadcast ? n - this.subnet.network : -1;
  }

  private isAssignable(idx: number): boolean {
    return idx > 0 && idx < this.total - 1 && idx !== this.gatewayIndex;
  }

  private isMarked(idx: number): boolean {
    return (this.bits[idx >>> 5] & (1 << (idx & 31))) !== 0;
  }

  private mark(idx: number): void {
    this.bits[idx >>> 5] |= 1 << (idx & 31);
  }
}

/**
 * A locally administered unicast MAC derived from an IPv4 address:
 * 02:76 followed by the four octets in hex (10.50.0.5 -> 02:76:0a:32:00:05).
 * Deterministic so an endpoint keeps its MAC across daemon restarts and
 * neighbours' ARP caches stay valid.
 */
export function macForIp(ip: string): string {
  const n = parseIpv4(ip);
  const hex = (b: number) => b.toString(16).padStart(2, '0');
  return `02:76:${hex(n >>> 24)}:${hex((n >>> 16) & 255)}:${hex((n >>> 8) & 255)}:${hex(n & 255)}`;
}

/**
 * A random locally administered unicast MAC, for an endpoint whose address is
 * not known yet (a DHCP network's: the server picks the address by the MAC).
 */
export function randomLocalMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Validate a MAC address an interface can use; returns it lower-case with colons. */
export function normalizeMac(text: string): string {
  const m = typeof text === 'string' ? text.match(/^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/) : null;
  if (!m) {
    throw new IpamError(`${JSON.stringify(String(text))} is not a MAC address: write six hex bytes separated by colons, such as ${EXAMPLE_MAC}.`);
  }
  const mac = text.toLowerCase().replaceAll('-', ':');
  if (mac === '00:00:00:00:00:00') {
    throw new IpamError(`${mac} (all zeros) cannot be given to an interface: use a unicast MAC such as ${EXAMPLE_MAC}, or omit it to get one.`);
  }
  if (mac === 'ff:ff:ff:ff:ff:ff') {
    throw new IpamError(`${mac} is the broadcast MAC address and cannot be given to an interface: use a unicast MAC such as ${EXAMPLE_MAC}, or omit it to get one.`);
  }
  if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) {
    throw new IpamError(
      `${mac} is a multicast MAC address (its first byte is odd) and cannot be given to an interface: use a unicast MAC such as ${EXAMPLE_MAC}, or omit it to get one.`,
    );
  }
  return mac;
}

/** --ip-range as CIDR or FIRST-LAST, cut to the subnet's host addresses. */
export function parseRange(text: string, subnet: string): { first: string; last: string } {
  const s = parseSubnet(subnet);
  const bad = () => badRequest(`--ip-range ${JSON.stringify(text)} is not a range: write a subnet inside ${subnet} such as ${subnet.replace(/\/\d+$/, '/25')}, or FIRST-LAST addresses.`);
  let first: number;
  let last: number;
  const cidr = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  try {
    if (cidr) {
      const len = Number(cidr[2]);
      if (len > 32) throw bad();
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      first = (ipToInt(cidr[1]) & mask) >>> 0;
      last = (first | ~mask) >>> 0;
    } else {
      const parts = text.split('-');
      if (parts.length !== 2) throw bad();
      first = ipToInt(parts[0].trim());
      last = ipToInt(parts[1].trim());
    }
  } catch {
    throw bad();
  }
  first = Math.max(first, s.network + 1);
  last = Math.min(last, s.broadcast - 1);
  if (first > last) throw badRequest(`--ip-range ${text} holds no host address of ${subnet}: give a range inside the subnet.`);
  return { first: intToIp(first), last: intToIp(last) };
}
