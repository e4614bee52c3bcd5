/**
 * Overlay segments: the per-VNI state of a host's overlay networks, and the
 * registry that answers for the whole host which VNIs it serves.
 *
 * A segment (one VNI, one tenant L2 network stretched across hosts) has:
 *   - its static peer list: the VTEPs (underlay IPv4, host-order u32) of the
 *     other hosts serving the VNI. Broadcast, multicast and unknown unicast go
 *     to each of them (head-end replication: one datagram per peer, the same
 *     bytes, so fillReplication writes udpSendBatch descriptors that all point
 *     at the one encapsulated frame). Datagrams for the VNI from anyone else
 *     are dropped (NOT_PEER): the peer list is the network's membership, and
 *     learning from a stranger would let it steal MACs.
 *     Kept sorted in a Uint32Array: isPeer is a binary search, replication a
 *     walk, and neither allocates. A host is not its own peer (the service
 *     leaves its own address out).
 *   - a view of the host's two tables for its VNI: (MAC) -> VTEP
 *     (src/tunnel/vtep-table.ts), learned from decapsulated frames' source
 *     MACs or static, and (IPv4) -> MAC for ARP suppression
 *     (src/tunnel/arp-suppression.ts), static or, when learnArp is on,
 *     learned from ARP replies and gratuitous ARP from peers.
 *
 * The registry (OverlaySegments) owns the two host-wide tables and the
 * segments; its admit() is the first step of the decapsulation path: header
 * checks (decapCheck), the VNI served, the sender a peer of it; every refusal
 * counted by verdict, NOT_PEER also on the segment.
 *
 * Removing a peer forgets every VTEP entry behind it, static ones too: frames
 * for those MACs must not keep going to a host that left the network (they
 * are flooded to the remaining peers until someone answers for the MAC).
 */
import { macHi16, macLo32, mustParseMac } from '../packet/ethernet.js';
import { formatIpv4Addr, mustParseIpv4Addr } from '../packet/ipv4.js';
import { Learn } from './aging-table.js';
import { ArpSuppressionTable, ArpVerdict, isHostIpv4, type ArpSuppressionCounters, type ArpSuppressionOptions } from './arp-suppression.js';
import { isUnicastVtep, VtepTable, type VtepTableCounters, type VtepTableOptions } from './vtep-table.js';
import { assertVni, DECAP_VERDICT_COUNT, DECAP_VERDICT_NAMES, decapCheck, DecapVerdict, type VniFilter } from './vxlan-encap.js';

export interface OverlaySegmentOptions {
  /** Peer VTEPs (host-order u32 or dotted quads). */
  peers?: Iterable<number | string>;
  /** At most this many peers; default 1024. */
  maxPeers?: number;
  /** Learn IP -> MAC from ARP replies and gratuitous ARP decapsulated from peers; default false (static entries only). */
  learnArp?: boolean;
}

export interface OverlaySegmentCounters {
  vni: number;
  peers: number;
  /** Datagrams for this VNI from a VTEP that is not a peer, dropped. */
  notPeer: number;
  /** Replication descriptors written (one per peer per flooded frame). */
  replicated: number;
  /** ARP requests answered locally. */
  arpReplied: number;
  /** ARP requests for an address not in the table (flooded). */
  arpUnknown: number;
  /** IP -> MAC entries learned or moved from ARP from peers. */
  arpLearned: number;
}

/** A remote endpoint pushed by the control plane: its MAC (and IPv4, for ARP suppression) behind a peer VTEP. */
export interface RemoteEndpoint {
  mac: string;
  ip?: string;
  vtep: string;
}

function toVtep(v: number | string): number {
  const addr = typeof v === 'string' ? mustParseIpv4Addr(v) : v;
  if (!isUnicastVtep(addr)) throw new RangeError(`not a unicast IPv4 VTEP address: ${typeof v === 'string' ? v : String(v)}`);
  return addr;
}

export class OverlaySegment {
  readonly vni: number;
  readonly maxPeers: number;
  learnArp: boolean;
  private peerList: Uint32Array = new Uint32Array(0);
  /** The same peers as int32 bit patterns, sorted as signed numbers: what isPeer searches. */
  private peerBits: Int32Array = new Int32Array(0);
  private notPeerCount = 0;
  private replicatedCount = 0;
  private arpRepliedCount = 0;
  private arpUnknownCount = 0;
  private arpLearnedCount = 0;

  /** Usually made by OverlaySegments.add, which shares its tables. */
  constructor(
    vni: number,
    readonly vteps: VtepTable,
    readonly arp: ArpSuppressionTable,
    opts: OverlaySegmentOptions = {},
  ) {
    assertVni(vni);
    this.vni = vni;
    this.maxPeers = opts.maxPeers ?? 1024;
    if (!Number.isInteger(this.maxPeers) || this.maxPeers < 0) throw new RangeError('maxPeers must be a non-negative integer');
    this.learnArp = opts.learnArp ?? false;
    if (opts.peers !== undefined) this.setPeers(opts.peers);
  }

  /** The peers, sorted ascending; replaced (never mutated) when they change, so a caller may hold it for a batch. */
  get peers(): Uint32Array {
    return this.peerList;
  }

  get peerCount(): number {
    return this.peerList.length;
  }

  counters(): OverlaySegmentCounters {
    return {
      vni: this.vni,
      peers: this.peerList.length,
      notPeer: this.notPeerCount,
      replicated: this.replicatedCount,
      arpReplied: this.arpRepliedCount,
      arpUnknown: this.arpUnknownCount,
      arpLearned: this.arpLearnedCount,
    };
  }

  /**
   * Binary search of the peers; allocates nothing. Takes the address as a u32
   * or as its int32 bit pattern (`addr | 0`); the data path should pass the
   * latter, since a u32 at or above 2^31 (any address from 128.0.0.0) is a
   * boxed number when it crosses a call that V8 did not inline.
   */
  isPeer(vtep: number): boolean {
    const p = this.peerBits;
    const x = vtep | 0;
    let lo = 0;
    let hi = p.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = p[mid];
      if (v === x) return true;
      if (v < x) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  /**
   * Replaces the peer list (duplicates collapse). Peers that left take their
   * VTEP entries with them. Returns who came and went, as dotted quads. Throws
   * RangeError (changing nothing) for an address that cannot be a VTEP or
   * more than maxPeers peers.
   */
  setPeers(peers: Iterable<number | string>): { added: string[]; removed: string[] } {
    const next = [...new Set([...peers].map(toVtep))].sort((a, b) => a - b);
    if (next.length > this.maxPeers) throw new RangeError(`VNI ${this.vni}: ${next.length} peers, at most ${this.maxPeers}`);
    const before = this.peerList;
    const list = Uint32Array.from(next);
    this.peerList = list;
    this.peerBits = Int32Array.from(next, (v) => v | 0).sort();
    const added: string[] = [];
    const removed: string[] = [];
    for (const v of list) if (!includes(before, v)) added.push(formatIpv4Addr(v));
    for (const v of before) {
      if (includes(list, v)) continue;
      removed.push(formatIpv4Addr(v));
      this.vteps.flush({ vni: this.vni, vtep: v });
    }
    return { added, removed };
  }

  /** Adds one peer; false if it already was one. Throws like setPeers. */
  addPeer(vtep: number | string): boolean {
    const v = toVtep(vtep);
    if (this.isPeer(v)) return false;
    this.setPeers([...this.peerList, v]);
    return true;
  }

  /** Removes one peer and every VTEP entry behind it; false if it was not one. */
  removePeer(vtep: number | string): boolean {
    const v = typeof vtep === 'string' ? mustParseIpv4Addr(vtep) : vtep >>> 0;
    if (!this.isPeer(v)) return false;
    this.setPeers([...this.peerList].filter((p) => p !== v));
    return true;
  }

  /**
   * Head-end replication: descriptors at [at, at + n) of the four arrays, one
   * per peer, each the datagram buf[offset, offset + length) (the frame with
   * its VXLAN header, see encapHeader) to that peer's `dstPort`. Stops at the
   * end of the shortest array; returns n. Allocates nothing.
   */
  fillReplication(
    offset: number,
    length: number,
    dstPort: number,
    offsets: Uint32Array,
    lengths: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array | Uint32Array,
    at: number,
  ): number {
    const p = this.peerList;
    const room = Math.min(offsets.length, lengths.length, addrs.length, ports.length) - at;
    const n = p.length < room ? p.length : room > 0 ? room : 0;
    for (let i = 0; i < n; i++) {
      offsets[at + i] = offset;
      lengths[at + i] = length;
      addrs[at + i] = p[i];
      ports[at + i] = dstPort;
    }
    this.replicatedCount += n;
    return n;
  }

  /** The slot in the VTEP table of `mac` in this segment, or -1: see VtepTable.lookup/vtepAt. */
  lookupVtep(macHi: number, macLo: number, nowMs: number): number {
    return this.vteps.lookup(this.vni, macHi, macLo, nowMs);
  }

  /**
   * Flood-and-learn: the frame decapsulated at buf[innerOff] came from peer
   * `vtep` (u32 or `| 0`, as isPeer); learns its source MAC. A Learn code.
   */
  learnSource(buf: Uint8Array, innerOff: number, vtep: number, nowMs: number): Learn {
    return this.vteps.learn(this.vni, macHi16(buf, innerOff + 6), macLo32(buf, innerOff + 6) | 0, vtep, nowMs);
  }

  /** ARP suppression for a request from a local port: see ArpSuppressionTable.suppress. Counts replies and misses. */
  suppressArp(buf: Uint8Array, off: number, len: number, arpOff: number, nowMs: number, count = true): ArpVerdict {
    const v = this.arp.suppress(this.vni, buf, off, len, arpOff, nowMs);
    if (!count) return v;
    if (v === ArpVerdict.REPLIED) this.arpRepliedCount++;
    else if (v === ArpVerdict.UNKNOWN) this.arpUnknownCount++;
    return v;
  }

  /**
   * An ARP decapsulated from a peer: learns its sender's IP -> MAC if learnArp
   * is on (REFUSED when it is off). See ArpSuppressionTable.learnFromArp.
   */
  learnFromArp(buf: Uint8Array, off: number, len: number, arpOff: number, nowMs: number): Learn {
    if (!this.learnArp) return Learn.REFUSED;
    const r = this.arp.learnFromArp(this.vni, buf, off, len, arpOff, nowMs);
    if (r === Learn.NEW || r === Learn.MOVED) this.arpLearnedCount++;
    return r;
  }

  /**
   * A remote endpoint from the control plane: static MAC -> VTEP and, with an
   * IP, static IP -> MAC. The VTEP must be a peer. False when a table's
   * static bound is reached (the MAC's previous static entry is restored; a
   * learned one is forgotten, to be learned again); RangeError for bad input.
   */
  addEndpoint(ep: RemoteEndpoint): boolean {
    const mac = mustParseMac(ep.mac);
    const hi = macHi16(mac, 0);
    const lo = macLo32(mac, 0);
    const vtep = toVtep(ep.vtep);
    if (!this.isPeer(vtep)) throw new RangeError(`VNI ${this.vni}: VTEP ${ep.vtep} is not a peer of this network`);
    const ip = ep.ip === undefined ? -1 : mustParseIpv4Addr(ep.ip);
    if (ip >= 0 && !isHostIpv4(ip)) throw new RangeError(`not an endpoint's IPv4 address: ${ep.ip}`);
    const slot = this.vteps.lookup(this.vni, hi, lo, 0);
    const previous = slot >= 0 && this.vteps.isStaticAt(slot) ? this.vteps.vtepAt(slot) : -1;
    if (!this.vteps.addStatic(this.vni, hi, lo, vtep)) return false;
    if (ip >= 0 && !this.arp.addStatic(this.vni, ip, hi, lo)) {
      // Undo the first half: the ARP table is full.
      if (previous >= 0) this.vteps.addStatic(this.vni, hi, lo, previous);
      else this.vteps.removeStatic(this.vni, hi, lo);
      return false;
    }
    return true;
  }

  /** Removes a remote endpoint's static entries; false when it had none. */
  removeEndpoint(ep: { mac: string; ip?: string }): boolean {
    const mac = mustParseMac(ep.mac);
    let removed = this.vteps.removeStatic(this.vni, macHi16(mac, 0), macLo32(mac, 0));
    if (ep.ip !== undefined) removed = this.arp.removeStatic(this.vni, mustParseIpv4Addr(ep.ip)) || removed;
    return removed;
  }

  /** @internal OverlaySegments.admit counts a stranger here. */
  countNotPeer(): void {
    this.notPeerCount++;
  }
}

function includes(list: Uint32Array, v: number): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === v) return true;
  return false;
}

export interface OverlaySegmentsOptions {
  vtep?: VtepTableOptions;
  arp?: ArpSuppressionOptions;
}

export interface OverlaySegmentsCounters {
  /** Datagrams by decap verdict: ok (admitted) and every reason to drop. */
  decap: Record<string, number>;
  vtep: VtepTableCounters;
  arp: ArpSuppressionCounters;
  segments: OverlaySegmentCounters[];
}

/** The overlay state of one host: its segments by VNI, and the two tables they share. */
export class OverlaySegments implements VniFilter {
  readonly vteps: VtepTable;
  readonly arp: ArpSuppressionTable;
  /** After admit() returned OK: the segment of the datagram. A result register, as the NAT gateway's egressPort. */
  matched: OverlaySegment | null = null;
  private readonly byVni = new Map<number, OverlaySegment>();
  private readonly verdicts = new Float64Array(DECAP_VERDICT_COUNT);
  /** decapCheck's filter: a lookup that keeps what it found, so admit looks the VNI up once. */
  private readonly finder: VniFilter;

  constructor(opts: OverlaySegmentsOptions = {}) {
    this.vteps = new VtepTable(opts.vtep);
    this.arp = new ArpSuppressionTable(opts.arp);
    this.finder = {
      has: (vni: number): boolean => {
        const s = this.byVni.get(vni);
        this.matched = s === undefined ? null : s;
        return s !== undefined;
      },
    };
  }

  get size(): number {
    return this.byVni.size;
  }

  has(vni: number): boolean {
    return this.byVni.has(vni);
  }

  get(vni: number): OverlaySegment | undefined {
    return this.byVni.get(vni);
  }

  list(): OverlaySegment[] {
    return [...this.byVni.values()].sort((a, b) => a.vni - b.vni);
  }

  /** A new segment; throws RangeError for a VNI outside 1..16777215 or one already served. */
  add(vni: number, opts: OverlaySegmentOptions = {}): OverlaySegment {
    assertVni(vni);
    if (this.byVni.has(vni)) throw new RangeError(`VNI ${vni} is already served on this host`);
    const s = new OverlaySegment(vni, this.vteps, this.arp, opts);
    this.byVni.set(vni, s);
    return s;
  }

  /** Stops serving a VNI and forgets its table entries; false if it was not served. */
  remove(vni: number): boolean {
    const s = this.byVni.get(vni);
    if (s === undefined) return false;
    this.byVni.delete(vni);
    if (this.matched === s) this.matched = null;
    this.vteps.flushVni(vni);
    this.arp.flushVni(vni);
    return true;
  }

  /**
   * The decapsulation gate: the VXLAN datagram at buf[off, off + len) from
   * `srcVtep` (RxEngine.sourceAddress, best passed `| 0`: see isPeer) is OK when its header is sound, its VNI
   * served and its sender a peer of that segment; `matched` is then the
   * segment. Counts every verdict. Allocates nothing.
   */
  admit(buf: Uint8Array, off: number, len: number, srcVtep: number): DecapVerdict {
    this.matched = null;
    let v = decapCheck(buf, off, len, this.finder);
    const seg = this.matched as OverlaySegment | null;
    if (v === DecapVerdict.OK && seg !== null && !seg.isPeer(srcVtep)) {
      seg.countNotPeer();
      v = DecapVerdict.NOT_PEER;
    }
    if (v !== DecapVerdict.OK) this.matched = null;
    this.verdicts[v]++;
    return v;
  }

  /** The caller refused a datagram admit() passed (a VNI served here, but on another socket): count it under `verdict` instead of ok. */
  overrule(verdict: DecapVerdict): void {
    this.verdicts[DecapVerdict.OK]--;
    this.verdicts[verdict]++;
  }

  /** Ages out both tables; about once a second. Returns the entries forgotten. */
  sweep(nowMs: number): number {
    return this.vteps.sweep(nowMs) + this.arp.sweep(nowMs);
  }

  counters(): OverlaySegmentsCounters {
    const decap: Record<string, number> = {};
    for (let i = 0; i < DECAP_VERDICT_COUNT; i++) decap[DECAP_VERDICT_NAMES[i]] = this.verdicts[i];
    return { decap, vtep: this.vteps.counters(), arp: this.arp.counters(), segments: this.list().map((s) => s.counters()) };
  }
}
