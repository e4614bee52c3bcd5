/**
 * The VTEP table of one host: (VNI, inner MAC) -> the remote VTEP (underlay
 * IPv4 address) behind which that MAC lives. One table serves every overlay
 * network of the host, so its bound is the host's, as the MAC table's is.
 *
 * Entries come from two places (RFC 7348 section 4):
 *   - static, pushed through the API (a controller that knows where every
 *     endpoint is): never aged, never evicted, never overwritten by learning;
 *   - learned, flood-and-learn style, from the inner source MAC of every frame
 *     decapsulated from a peer VTEP. A learned MAC that shows up behind another
 *     VTEP moves there (counted: a VM migrated, or a loop, or a liar); one not
 *     refreshed for agingSeconds (default 300, as bridges age) is forgotten,
 *     and frames to it are flooded to the peers again until it speaks.
 *
 * Bounds: maxStatic (default 16384) and maxLearned (default 16384) apart, so
 * learning cannot crowd out what the control plane configured; at the learned
 * bound a new MAC evicts an approximately least recently seen learned one, or
 * is refused (counted) when none is near its home slot. Mechanics, memory
 * layout and the seeded hash: src/tunnel/aging-table.ts. A full table of the
 * defaults is 64 Ki slots of 29 bytes, about 1.9 MB.
 *
 * The data path gets a slot, not the address: lookup() returns a slot number
 * (a small integer, never boxed) and vtepAt(slot) reads the address; a slot is
 * valid until the next call that changes the table. MACs travel as two
 * numbers, the high 16 and the low 32 bits (src/packet/ethernet.ts), and VTEP
 * addresses as host-order u32, as RxEngine.sourceAddress and udpSendBatch
 * have them. Arguments that can reach 2^31 (a MAC's low half, an address) may
 * also be given as their int32 bit pattern (`x | 0`), and the data path should
 * do so: V8 boxes a number at or above 2^31 whenever it crosses a call it did
 * not inline (measured: one 16-byte allocation per datagram through
 * OverlaySegments.admit with a u32 sender, none with `| 0`).
 */
import { formatMac, MAC_LEN } from '../packet/ethernet.js';
import { formatIpv4Addr } from '../packet/ipv4.js';
import { AgingTable, EntryKind, Learn, type AgingTableCounters } from './aging-table.js';
import { assertVni } from './vxlan-encap.js';

export { Learn } from './aging-table.js';

export interface VtepTableOptions {
  /** Static entries at most; default 16384. */
  maxStatic?: number;
  /** Learned entries at most; default 16384; 0 turns learning off. */
  maxLearned?: number;
  /** A learned entry not refreshed for this long is forgotten; default 300 s. */
  agingSeconds?: number;
  /** Hash seed; random unless given (tests). */
  seed?: number;
}

export type VtepTableCounters = AgingTableCounters;

export interface VtepEntry {
  vni: number;
  mac: string;
  /** Dotted quad of the remote VTEP. */
  vtep: string;
  kind: 'static' | 'learned';
  /** Since a learned entry was last refreshed; null for static entries. */
  ageSeconds: number | null;
}

export interface VtepFlushFilter {
  vni?: number;
  /** Only entries pointing at this VTEP (host-order u32), e.g. a peer that was removed. */
  vtep?: number;
  /** Only this kind; both when absent. */
  kind?: 'static' | 'learned';
}

/** A unicast IPv4 address that can be a VTEP: not 0.0.0.0/8, not multicast or reserved (224/3), not the broadcast. */
export function isUnicastVtep(addr: number): boolean {
  return Number.isInteger(addr) && addr >= 0x0100_0000 && addr < 0xe000_0000;
}

function assertVtep(addr: number): void {
  if (!isUnicastVtep(addr)) {
    const shown = Number.isInteger(addr) && addr >= 0 && addr <= 0xffff_ffff ? formatIpv4Addr(addr) : String(addr);
    throw new RangeError(`not a unicast IPv4 VTEP address: ${shown}`);
  }
}

/** A MAC no frame can come from: multicast (I/G bit), broadcast, or all zeros. */
function isBadSourceMac(macHi16: number, macLo32: number): boolean {
  return (macHi16 & 0x0100) !== 0 || (macHi16 === 0 && macLo32 === 0);
}

export class VtepTable {
  private readonly t: AgingTable;

  constructor(opts: VtepTableOptions = {}) {
    this.t = new AgingTable({
      keyWords: 3,
      valueWords: 1,
      maxStatic: opts.maxStatic ?? 16384,
      maxLearned: opts.maxLearned ?? 16384,
      agingSeconds: opts.agingSeconds ?? 300,
      seed: opts.seed,
    });
  }

  get size(): number {
    return this.t.size;
  }

  /** Changes when a mapping moved or went away: see AgingTable.epoch. */
  get epoch(): number {
    return this.t.epoch;
  }

  get agingMs(): number {
    return this.t.agingMs;
  }

  counters(): VtepTableCounters {
    return this.t.counters();
  }

  private setKey(vni: number, macHi16: number, macLo32: number): void {
    const k = this.t.key;
    k[0] = vni;
    k[1] = macHi16;
    k[2] = macLo32;
  }

  /**
   * The slot of the entry for `mac` in `vni`, or -1. An expired learned entry
   * is removed and counted as aged. Allocates nothing.
   */
  lookup(vni: number, macHi16: number, macLo32: number, nowMs: number): number {
    this.setKey(vni, macHi16, macLo32);
    return this.t.lookup(nowMs);
  }

  /** The remote VTEP (host-order u32) of a slot lookup() returned. */
  vtepAt(slot: number): number {
    return this.t.valueAt(slot, 0);
  }

  isStaticAt(slot: number): boolean {
    return this.t.kindAt(slot) === EntryKind.STATIC;
  }

  /**
   * The inner source MAC `mac` of a frame decapsulated in `vni` came from
   * `vtep` (the caller has checked that `vtep` is a peer of that network).
   * Returns a Learn code; a multicast or zero MAC is never learned (INVALID).
   */
  learn(vni: number, macHi16: number, macLo32: number, vtep: number, nowMs: number): Learn {
    if (isBadSourceMac(macHi16, macLo32)) return Learn.INVALID;
    this.setKey(vni, macHi16, macLo32);
    this.t.value[0] = vtep;
    return this.t.learn(nowMs);
  }

  /**
   * Static `mac` in `vni` -> `vtep`, replacing a learned entry or a static
   * one's address. False when maxStatic entries are already static. Throws
   * RangeError for a VNI outside 1..16777215, a VTEP that is not unicast, or
   * a multicast/zero MAC.
   */
  addStatic(vni: number, macHi16: number, macLo32: number, vtep: number): boolean {
    assertVni(vni);
    assertVtep(vtep);
    if (isBadSourceMac(macHi16, macLo32)) throw new RangeError('a static VTEP entry needs a unicast MAC');
    this.setKey(vni, macHi16, macLo32);
    this.t.value[0] = vtep;
    return this.t.addStatic();
  }

  /** Removes a static entry; false when there is none (a learned entry of that MAC stays). */
  removeStatic(vni: number, macHi16: number, macLo32: number): boolean {
    this.setKey(vni, macHi16, macLo32);
    return this.t.remove(EntryKind.STATIC) !== EntryKind.EMPTY;
  }

  /** Forgets a learned entry (e.g. an operator clearing one); false when there is none. */
  forget(vni: number, macHi16: number, macLo32: number): boolean {
    this.setKey(vni, macHi16, macLo32);
    return this.t.remove(EntryKind.LEARNED) !== EntryKind.EMPTY;
  }

  /** Forgets every learned entry past the aging time; returns how many. About once a second. */
  sweep(nowMs: number): number {
    return this.t.sweep(nowMs);
  }

  /** Removes the entries matching every given field of `filter`; returns how many. O(slots): control plane. */
  flush(filter: VtepFlushFilter = {}): number {
    const { vni, vtep } = filter;
    const kind = filter.kind === undefined ? EntryKind.EMPTY : filter.kind === 'static' ? EntryKind.STATIC : EntryKind.LEARNED;
    const t = this.t;
    return t.removeWhere(
      (i) =>
        (vni === undefined || t.keyAt(i, 0) === vni) &&
        (vtep === undefined || t.valueAt(i, 0) === vtep) &&
        (kind === EntryKind.EMPTY || t.kindAt(i) === kind),
    );
  }

  /** Forgets a whole network, static entries included (it was removed from this host). */
  flushVni(vni: number): number {
    return this.flush({ vni });
  }

  /** A snapshot for operators (expired learned entries left out), sorted by VNI then MAC; allocates, so never on the data path. */
  entries(nowMs: number, vni?: number): VtepEntry[] {
    const t = this.t;
    const out: VtepEntry[] = [];
    const mac = new Uint8Array(MAC_LEN);
    for (let i = 0; i < t.capacity; i++) {
      const kind = t.kindAt(i);
      if (kind === EntryKind.EMPTY || (vni !== undefined && t.keyAt(i, 0) !== vni)) continue;
      if (kind === EntryKind.LEARNED && nowMs - t.seenAt(i) > t.agingMs) continue;
      const hi = t.keyAt(i, 1);
      const lo = t.keyAt(i, 2);
      mac[0] = hi >>> 8;
      mac[1] = hi;
      mac[2] = lo >>> 24;
      mac[3] = lo >>> 16;
      mac[4] = lo >>> 8;
      mac[5] = lo;
      out.push({
        vni: t.keyAt(i, 0),
        mac: formatMac(mac),
        vtep: formatIpv4Addr(t.valueAt(i, 0)),
        kind: kind === EntryKind.STATIC ? 'static' : 'learned',
        ageSeconds: kind === EntryKind.STATIC ? null : Math.max(0, (nowMs - t.seenAt(i)) / 1000),
      });
    }
    out.sort((a, b) => a.vni - b.vni || (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0));
    return out;
  }
}
