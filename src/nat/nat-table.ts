/**
 * The translations of one NAT address: a pool of external ports per protocol
 * (TCP, UDP, and ICMP echo identifiers), each port either free, published
 * (reserved for a port mapping) or bound to one dynamic mapping.
 *
 * A mapping has no clock and no TCP state of its own: it is bound to the
 * connection-tracking entry of the flow it translates, at the container's
 * port (slot and serial, src/vfp/conntrack.ts). The flow table's fast path
 * updates that entry for every frame in both directions, so a mapping lives
 * exactly as long as its connection does (TCP by state, UDP and ICMP idle) and
 * a dead connection is a free port, found lazily or by sweep(). The reverse
 * link, connection to mapping, is the connection's aux word, which is how an
 * outbound frame that took the slow path again (its cached flow went stale)
 * finds the mapping it already has instead of taking a second port.
 *
 * Filtering is address and port dependent (RFC 4787 terms): a mapped port
 * admits traffic only from the remote address and port it was opened to.
 *
 * Everything is typed arrays indexed by (port - first), allocated once; the
 * bound on mappings is the pool size.
 */
import { IpProtocol } from '../packet/ipv4.js';
import type { Conntrack } from '../vfp/conntrack.js';

/** Pool index per protocol; -1 for protocols NAT does not translate. */
export function natProtocolIndex(protocol: number): number {
  if (protocol === IpProtocol.TCP) return 0;
  if (protocol === IpProtocol.UDP) return 1;
  if (protocol === IpProtocol.ICMP) return 2;
  return -1;
}

export const NAT_PROTOCOL_NAMES = ['tcp', 'udp', 'icmp'] as const;

/** Words of one mapping in exportMappings(). */
export const NAT_EXPORT_WORDS = 8;

const FREE = -1;
const PUBLISHED = -2;
/** Taken by a frame still in the slow path; bound or freed before that frame is done. */
const PENDING = -3;

/** Slots a full pool looks at for a dead mapping before it refuses: bounded work per refused flow. */
const RECLAIM_BUDGET = 64;

class Pool {
  readonly ctSlot: Int32Array;
  readonly ctSerial: Uint32Array;
  readonly insideIp: Uint32Array;
  readonly insidePort: Uint16Array;
  readonly remoteIp: Uint32Array;
  readonly remotePort: Uint16Array;
  readonly portId: Int32Array;
  /** Ports not free: published ones included. */
  used = 0;
  published = 0;
  cursor = 0;
  sweepCursor = 0;

  constructor(readonly size: number) {
    this.ctSlot = new Int32Array(size).fill(FREE);
    this.ctSerial = new Uint32Array(size);
    this.insideIp = new Uint32Array(size);
    this.insidePort = new Uint16Array(size);
    this.remoteIp = new Uint32Array(size);
    this.remotePort = new Uint16Array(size);
    this.portId = new Int32Array(size);
  }
}

export interface NatTableCounters {
  /** Dynamic mappings created. */
  created: number;
  /** Dynamic mappings freed because their connection ended or timed out. */
  expired: number;
  /** New flows refused because the pool was exhausted. */
  refused: number;
  /** Dynamic mappings alive now (the last sweep's view of expired ones may lag). */
  active: number;
}

export interface NatMapping {
  protocol: (typeof NAT_PROTOCOL_NAMES)[number];
  externalPort: number;
  insideIp: number;
  insidePort: number;
  remoteIp: number;
  remotePort: number;
  portId: number;
  ctSlot: number;
}

export class NatTable {
  private readonly pools: Pool[];
  readonly size: number;
  private createdCount = 0;
  private expiredCount = 0;
  private refusedCount = 0;

  constructor(
    readonly first: number,
    readonly last: number,
    private readonly ct: Conntrack,
  ) {
    if (!Number.isInteger(first) || !Number.isInteger(last) || first < 1 || last > 65535 || first > last) {
      throw new RangeError(`port range ${first}-${last} must satisfy 1 <= first <= last <= 65535`);
    }
    this.size = last - first + 1;
    this.pools = [new Pool(this.size), new Pool(this.size), new Pool(this.size)];
  }

  /** A published port is never handed out dynamically. Ports outside the range need no reservation. */
  reserve(protocolIndex: number, port: number): void {
    const i = port - this.first;
    if (i < 0 || i >= this.size) return;
    const pool = this.pools[protocolIndex];
    if (pool.ctSlot[i] === PUBLISHED) return;
    // A dynamic mapping on that port now loses it: the port mapping wins, as the operator asked.
    if (pool.ctSlot[i] !== FREE) this.release(protocolIndex, i);
    pool.ctSlot[i] = PUBLISHED;
    pool.used++;
    pool.published++;
  }

  unreserve(protocolIndex: number, port: number): void {
    const i = port - this.first;
    if (i < 0 || i >= this.size) return;
    const pool = this.pools[protocolIndex];
    if (pool.ctSlot[i] !== PUBLISHED) return;
    pool.ctSlot[i] = FREE;
    pool.used--;
    pool.published--;
  }

  private live(pool: Pool, i: number, now: number): boolean {
    const slot = pool.ctSlot[i];
    return slot >= 0 && this.ct.serial(slot) === pool.ctSerial[i] && this.ct.alive(slot, now);
  }

  /**
   * The mapping of the connection at conntrack slot `slot` (the container
   * side), as an external port, or -1 when it has none or it is gone.
   */
  findByConnection(protocolIndex: number, slot: number, now: number): number {
    const ref = this.ct.aux(slot) - 1;
    if (ref < 0 || ref >>> 16 !== protocolIndex) return -1;
    const i = ref & 0xffff;
    const pool = this.pools[protocolIndex];
    if (i >= this.size || pool.ctSlot[i] !== slot || !this.live(pool, i, now)) return -1;
    return this.first + i;
  }

  /**
   * The live mapping on external port `port` that admits a packet from
   * remoteIp:remotePort (remotePort is ignored for ICMP); its index, or -1.
   */
  findByExternal(protocolIndex: number, port: number, remoteIp: number, remotePort: number, now: number): number {
    const i = port - this.first;
    if (i < 0 || i >= this.size) return -1;
    const pool = this.pools[protocolIndex];
    if (!this.live(pool, i, now) || pool.remoteIp[i] !== remoteIp) return -1;
    if (protocolIndex !== 2 && pool.remotePort[i] !== remotePort) return -1;
    return i;
  }

  insideIpOf(protocolIndex: number, i: number): number {
    return this.pools[protocolIndex].insideIp[i];
  }

  insidePortOf(protocolIndex: number, i: number): number {
    return this.pools[protocolIndex].insidePort[i];
  }

  /**
   * Takes a free port for a new mapping, which stays pending until bind().
   * Returns the external port, or -1 when the pool is exhausted (counted).
   */
  allocate(protocolIndex: number, insideIp: number, insidePort: number, remoteIp: number, remotePort: number, portId: number, now: number): number {
    const pool = this.pools[protocolIndex];
    const size = this.size;
    // With the pool full only dead mappings can be reused; look at a bounded number of them.
    const budget = pool.used < size ? size : Math.min(size, RECLAIM_BUDGET);
    let i = pool.cursor;
    let found = -1;
    for (let k = 0; k < budget; k++) {
      const slot = pool.ctSlot[i];
      if (slot === FREE) {
        found = i;
        break;
      }
      if (slot >= 0 && !this.live(pool, i, now)) {
        this.release(protocolIndex, i);
        this.expiredCount++;
        found = i;
        break;
      }
      if (++i === size) i = 0;
    }
    if (found < 0) {
      this.refusedCount++;
      return -1;
    }
    pool.cursor = found + 1 === size ? 0 : found + 1;
    pool.ctSlot[found] = PENDING;
    pool.insideIp[found] = insideIp;
    pool.insidePort[found] = insidePort;
    pool.remoteIp[found] = remoteIp;
    pool.remotePort[found] = remotePort;
    pool.portId[found] = portId;
    pool.used++;
    return this.first + found;
  }

  /** Ties a pending mapping to the connection it translates. */
  bind(protocolIndex: number, port: number, slot: number): void {
    const i = port - this.first;
    const pool = this.pools[protocolIndex];
    pool.ctSlot[i] = slot;
    pool.ctSerial[i] = this.ct.serial(slot);
    this.ct.setAux(slot, ((protocolIndex << 16) | i) + 1);
    this.createdCount++;
  }

  /** Gives back a pending mapping whose frame was dropped after all. */
  abandon(protocolIndex: number, port: number): void {
    const i = port - this.first;
    const pool = this.pools[protocolIndex];
    if (pool.ctSlot[i] !== PENDING) return;
    this.release(protocolIndex, i);
    // The port just taken goes back where the next allocation looks first: a trace, which takes
    // one and gives it back, shows the port the frame itself would get.
    if (pool.cursor === (i + 1 === this.size ? 0 : i + 1)) pool.cursor = i;
  }

  private release(protocolIndex: number, i: number): void {
    const pool = this.pools[protocolIndex];
    pool.ctSlot[i] = FREE;
    pool.used--;
  }

  /** Frees mappings whose connection is gone, visiting at most `budget` ports per protocol. */
  sweep(now: number, budget: number): number {
    let expired = 0;
    for (let p = 0; p < 3; p++) {
      const pool = this.pools[p];
      if (pool.used === 0) continue;
      let i = pool.sweepCursor;
      for (let k = Math.min(budget, this.size); k > 0; k--) {
        if (pool.ctSlot[i] >= 0 && !this.live(pool, i, now)) {
          this.release(p, i);
          expired++;
        }
        if (++i === this.size) i = 0;
      }
      pool.sweepCursor = i;
    }
    this.expiredCount += expired;
    return expired;
  }

  /**
   * Live dynamic mappings as NAT_EXPORT_WORDS words each, for a restarting
   * daemon: protocol index, external port, inside and remote address and
   * port, the container's port id, and the index of its connection in the
   * conntrack export (`exportIndexOf(slot)`, -1 leaves the mapping out).
   */
  exportMappings(now: number, exportIndexOf: (ctSlot: number) => number): Uint32Array {
    const out: number[] = [];
    for (let p = 0; p < 3; p++) {
      const pool = this.pools[p];
      for (let i = 0; i < this.size; i++) {
        if (!this.live(pool, i, now)) continue;
        const index = exportIndexOf(pool.ctSlot[i]);
        if (index < 0) continue;
        out.push(p, this.first + i, pool.insideIp[i], pool.insidePort[i], pool.remoteIp[i], pool.remotePort[i], pool.portId[i], index);
      }
    }
    return Uint32Array.from(out);
  }

  /**
   * Binds exported mappings again, each to the connection its export index
   * now lives in (`slots`, from Conntrack.importLive). A mapping whose
   * connection was not restored, or whose port is outside this pool or taken,
   * is left out. Returns how many were restored.
   */
  importMappings(records: Uint32Array, slots: Int32Array): number {
    let restored = 0;
    for (let o = 0; o + NAT_EXPORT_WORDS <= records.length; o += NAT_EXPORT_WORDS) {
      const p = records[o];
      const i = records[o + 1] - this.first;
      const index = records[o + 7];
      if (p > 2 || i < 0 || i >= this.size || index >= slots.length) continue;
      const slot = slots[index];
      const pool = this.pools[p];
      if (slot < 0 || pool.ctSlot[i] !== FREE) continue;
      pool.insideIp[i] = records[o + 2];
      pool.insidePort[i] = records[o + 3];
      pool.remoteIp[i] = records[o + 4];
      pool.remotePort[i] = records[o + 5];
      pool.portId[i] = records[o + 6];
      pool.ctSlot[i] = slot;
      pool.ctSerial[i] = this.ct.serial(slot);
      this.ct.setAux(slot, ((p << 16) | i) + 1);
      pool.used++;
      restored++;
    }
    return restored;
  }

  counters(): NatTableCounters {
    let active = 0;
    for (const pool of this.pools) active += pool.used - pool.published;
    return { created: this.createdCount, expired: this.expiredCount, refused: this.refusedCount, active };
  }

  /** Live dynamic mappings, for listings (allocates). */
  mappings(now: number): NatMapping[] {
    const out: NatMapping[] = [];
    for (let p = 0; p < 3; p++) {
      const pool = this.pools[p];
      for (let i = 0; i < this.size; i++) {
        if (!this.live(pool, i, now)) continue;
        out.push({
          protocol: NAT_PROTOCOL_NAMES[p],
          externalPort: this.first + i,
          insideIp: pool.insideIp[i],
          insidePort: pool.insidePort[i],
          remoteIp: pool.remoteIp[i],
          remotePort: pool.remotePort[i],
          portId: pool.portId[i],
          ctSlot: pool.ctSlot[i],
        });
      }
    }
    return out;
  }
}
