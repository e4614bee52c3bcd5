/**
 * ARP suppression for overlay networks: when vsw knows which MAC holds an
 * IPv4 address in a segment, it answers a container's ARP request itself
 * instead of flooding it to every peer VTEP (the head-end replication of one
 * broadcast costs one datagram per peer). As the Linux VXLAN device's "proxy"
 * mode and EVPN's ARP suppression do.
 *
 * One table per host: (VNI, IPv4) -> MAC, the same engine and bounds policy as
 * the VTEP table (src/tunnel/aging-table.ts), so a thousand small networks do
 * not each reserve a table of their own. Entries are:
 *   - static, pushed through the API with the endpoint's MAC/IP -> VTEP entry:
 *     the normal case with a controller, never aged or evicted;
 *   - learned (optional, the segment decides) from ARP that arrives
 *     decapsulated from a peer: replies, and gratuitous ARP (a request whose
 *     sender and target addresses are the same), which is also how a moved or
 *     re-addressed endpoint corrects a learned entry. Learned entries age like
 *     the VTEP table's (default 300 s), so a stale answer has a bounded life.
 *     A static entry always wins.
 *
 * What is answered (suppress()), and what is left to flood:
 *   - only an Ethernet/IPv4 ARP request whose target address is in the table;
 *   - never a gratuitous request (SPA == TPA): it is an announcement for
 *     everyone's cache, so it is flooded, not answered;
 *   - never a request whose asker holds the target's MAC itself (an RFC 5227
 *     probe or announcement by the owner): an answer would look like an address
 *     conflict to it.
 * The reply is written over the request in place (writeArpReply in
 * src/packet/arp.ts) and goes back out the port it came in on.
 */
import { ArpField, ArpOp, ARP_HTYPE_ETHERNET, ARP_LEN, writeArpReply } from '../packet/arp.js';
import { read16, read32 } from '../packet/bytes.js';
import { EtherType, formatMac, MAC_LEN } from '../packet/ethernet.js';
import { formatIpv4Addr } from '../packet/ipv4.js';
import { AgingTable, EntryKind, Learn, type AgingTableCounters } from './aging-table.js';
import { assertVni } from './vxlan-encap.js';

export { Learn } from './aging-table.js';

export interface ArpSuppressionOptions {
  /** Static entries at most; default 16384. */
  maxStatic?: number;
  /** Learned entries at most; default 16384; 0 turns learning off. */
  maxLearned?: number;
  /** A learned entry not refreshed for this long is forgotten; default 300 s. */
  agingSeconds?: number;
  /** Hash seed; random unless given (tests). */
  seed?: number;
}

export type ArpSuppressionCounters = AgingTableCounters;

/** What suppress() did with a frame. */
export const ArpVerdict = {
  /** Rewritten in place into the reply: send it back out its ingress port. */
  REPLIED: 0,
  /** Not an Ethernet/IPv4 ARP request (a reply, another operation or size, or cut short): forward as usual. */
  NOT_REQUEST: 1,
  /** A gratuitous request (SPA == TPA): an announcement, flood it. */
  ANNOUNCEMENT: 2,
  /** The target address is not in the table: flood the request. */
  UNKNOWN: 3,
  /** The asker holds the target's MAC itself (its own probe or announcement): flood, never answer. */
  SELF: 4,
} as const;
export type ArpVerdict = (typeof ArpVerdict)[keyof typeof ArpVerdict];

export interface ArpSuppressionEntry {
  vni: number;
  ip: string;
  mac: string;
  kind: 'static' | 'learned';
  /** Since a learned entry was last refreshed; null for static entries. */
  ageSeconds: number | null;
}

/** An address one endpoint can hold: not 0.0.0.0/8, loopback, multicast, reserved or broadcast. */
export function isHostIpv4(ip: number): boolean {
  return Number.isInteger(ip) && ip >= 0x0100_0000 && ip < 0xe000_0000 && ip >>> 24 !== 127;
}

function isUnicastMac(macHi16: number, macLo32: number): boolean {
  return (macHi16 & 0x0100) === 0 && (macHi16 !== 0 || macLo32 !== 0);
}

/** The four fixed fields of the ARP at buf[arp] say Ethernet and IPv4. */
function isEthernetIpv4(buf: Uint8Array, arp: number): boolean {
  return (
    read16(buf, arp + ArpField.HTYPE) === ARP_HTYPE_ETHERNET &&
    read16(buf, arp + ArpField.PTYPE) === EtherType.IPv4 &&
    buf[arp + ArpField.HLEN] === MAC_LEN &&
    buf[arp + ArpField.PLEN] === 4
  );
}

export class ArpSuppressionTable {
  private readonly t: AgingTable;

  constructor(opts: ArpSuppressionOptions = {}) {
    this.t = new AgingTable({
      keyWords: 2,
      valueWords: 2,
      maxStatic: opts.maxStatic ?? 16384,
      maxLearned: opts.maxLearned ?? 16384,
      agingSeconds: opts.agingSeconds ?? 300,
      seed: opts.seed,
    });
  }

  get size(): number {
    return this.t.size;
  }

  get agingMs(): number {
    return this.t.agingMs;
  }

  counters(): ArpSuppressionCounters {
    return this.t.counters();
  }

  private setKey(vni: number, ip: number): void {
    this.t.key[0] = vni;
    this.t.key[1] = ip;
  }

  private setValue(macHi16: number, macLo32: number): void {
    this.t.value[0] = macHi16;
    this.t.value[1] = macLo32;
  }

  /** The slot of `ip`'s entry in `vni`, or -1 (an expired learned entry is removed and counted as aged). */
  lookup(vni: number, ip: number, nowMs: number): number {
    this.setKey(vni, ip);
    return this.t.lookup(nowMs);
  }

  macHiAt(slot: number): number {
    return this.t.valueAt(slot, 0);
  }

  macLoAt(slot: number): number {
    return this.t.valueAt(slot, 1);
  }

  isStaticAt(slot: number): boolean {
    return this.t.kindAt(slot) === EntryKind.STATIC;
  }

  /** `ip` in `vni` is held by `mac`, as ARP from a peer said. A Learn code; INVALID for an address or MAC no endpoint holds. */
  learn(vni: number, ip: number, macHi16: number, macLo32: number, nowMs: number): Learn {
    if (!isHostIpv4(ip >>> 0) || !isUnicastMac(macHi16, macLo32)) return Learn.INVALID;
    this.setKey(vni, ip);
    this.setValue(macHi16, macLo32);
    return this.t.learn(nowMs);
  }

  /**
   * Static `ip` -> `mac` in `vni`, replacing a learned entry or a static
   * one's MAC. False when maxStatic entries are already static. Throws
   * RangeError for a VNI outside 1..16777215, an address no endpoint can hold,
   * or a multicast/zero MAC.
   */
  addStatic(vni: number, ip: number, macHi16: number, macLo32: number): boolean {
    assertVni(vni);
    if (!isHostIpv4(ip)) throw new RangeError(`not an endpoint's IPv4 address: ${formatIpv4Addr(ip >>> 0)}`);
    if (!isUnicastMac(macHi16, macLo32)) throw new RangeError('an ARP suppression entry needs a unicast MAC');
    this.setKey(vni, ip);
    this.setValue(macHi16, macLo32);
    return this.t.addStatic();
  }

  /** Removes a static entry; false when there is none (a learned entry of that address stays). */
  removeStatic(vni: number, ip: number): boolean {
    this.setKey(vni, ip);
    return this.t.remove(EntryKind.STATIC) !== EntryKind.EMPTY;
  }

  /** Forgets a learned entry; false when there is none. */
  forget(vni: number, ip: number): boolean {
    this.setKey(vni, ip);
    return this.t.remove(EntryKind.LEARNED) !== EntryKind.EMPTY;
  }

  /**
   * The ARP request at buf[arpOff] in the frame buf[off, off + len) (arpOff is
   * off + 14 untagged; the switch's parse knows it for tagged frames), asked
   * in segment `vni`: answered in place when the target is known, see the
   * header comment. Returns an ArpVerdict; allocates nothing.
   */
  suppress(vni: number, buf: Uint8Array, off: number, len: number, arpOff: number, nowMs: number): ArpVerdict {
    if (arpOff < off || arpOff + ARP_LEN > off + len || off + len > buf.length) return ArpVerdict.NOT_REQUEST;
    if (read16(buf, arpOff + ArpField.OPER) !== ArpOp.Request || !isEthernetIpv4(buf, arpOff)) return ArpVerdict.NOT_REQUEST;
    // Addresses and MAC halves cross calls as int32 bit patterns: never boxed (see VtepTable).
    const tpa = read32(buf, arpOff + ArpField.TPA) | 0;
    if ((read32(buf, arpOff + ArpField.SPA) | 0) === tpa) return ArpVerdict.ANNOUNCEMENT;
    const slot = this.lookup(vni, tpa, nowMs);
    if (slot < 0) return ArpVerdict.UNKNOWN;
    const hi = this.t.valueAt(slot, 0);
    const lo = this.t.valueAt(slot, 1) | 0;
    if (read16(buf, arpOff + ArpField.SHA) === hi && (read32(buf, arpOff + ArpField.SHA + 2) | 0) === lo) return ArpVerdict.SELF;
    writeArpReply(buf, off, arpOff, hi, lo);
    return ArpVerdict.REPLIED;
  }

  /**
   * Learns from an ARP decapsulated in `vni` (at buf[arpOff] in the frame
   * buf[off, off + len)): a reply, or a gratuitous request, maps its sender
   * address to its sender MAC. Returns a Learn code, INVALID for anything
   * else (other requests, probes from 0.0.0.0, malformed ARP).
   */
  learnFromArp(vni: number, buf: Uint8Array, off: number, len: number, arpOff: number, nowMs: number): Learn {
    if (arpOff < off || arpOff + ARP_LEN > off + len || off + len > buf.length || !isEthernetIpv4(buf, arpOff)) return Learn.INVALID;
    const op = read16(buf, arpOff + ArpField.OPER);
    const spa = read32(buf, arpOff + ArpField.SPA) | 0;
    if (op !== ArpOp.Reply && !(op === ArpOp.Request && spa === (read32(buf, arpOff + ArpField.TPA) | 0))) return Learn.INVALID;
    return this.learn(vni, spa, read16(buf, arpOff + ArpField.SHA), read32(buf, arpOff + ArpField.SHA + 2) | 0, nowMs);
  }

  /** Forgets every learned entry past the aging time; returns how many. About once a second. */
  sweep(nowMs: number): number {
    return this.t.sweep(nowMs);
  }

  /** Removes the entries of `vni` (all VNIs when absent) of `kind` (both when absent); returns how many. Control plane. */
  flush(filter: { vni?: number; kind?: 'static' | 'learned' } = {}): number {
    const { vni } = filter;
    const kind = filter.kind === undefined ? EntryKind.EMPTY : filter.kind === 'static' ? EntryKind.STATIC : EntryKind.LEARNED;
    const t = this.t;
    return t.removeWhere((i) => (vni === undefined || t.keyAt(i, 0) === vni) && (kind === EntryKind.EMPTY || t.kindAt(i) === kind));
  }

  /** Forgets a whole network, static entries included. */
  flushVni(vni: number): number {
    return this.flush({ vni });
  }

  /** A snapshot for operators (expired learned entries left out), sorted by VNI then address; allocates. */
  entries(nowMs: number, vni?: number): ArpSuppressionEntry[] {
    const t = this.t;
    const rows: { vni: number; ip: number; entry: ArpSuppressionEntry }[] = [];
    const mac = new Uint8Array(MAC_LEN);
    for (let i = 0; i < t.capacity; i++) {
      const kind = t.kindAt(i);
      if (kind === EntryKind.EMPTY || (vni !== undefined && t.keyAt(i, 0) !== vni)) continue;
      if (kind === EntryKind.LEARNED && nowMs - t.seenAt(i) > t.agingMs) continue;
      const hi = t.valueAt(i, 0);
      const lo = t.valueAt(i, 1);
      mac[0] = hi >>> 8;
      mac[1] = hi;
      mac[2] = lo >>> 24;
      mac[3] = lo >>> 16;
      mac[4] = lo >>> 8;
      mac[5] = lo;
      const v = t.keyAt(i, 0);
      const ip = t.keyAt(i, 1);
      rows.push({
        vni: v,
        ip,
        entry: {
          vni: v,
          ip: formatIpv4Addr(ip),
          mac: formatMac(mac),
          kind: kind === EntryKind.STATIC ? 'static' : 'learned',
          ageSeconds: kind === EntryKind.STATIC ? null : Math.max(0, (nowMs - t.seenAt(i)) / 1000),
        },
      });
    }
    rows.sort((a, b) => a.vni - b.vni || a.ip - b.ip);
    return rows.map((r) => r.entry);
  }
}
