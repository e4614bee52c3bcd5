/**
 * The MAC learning table: (network, MAC) -> port, bounded and aging.
 *
 * Open addressing with linear probing over typed arrays: no object per entry,
 * so a full table costs the garbage collector nothing. Capacity is twice the
 * bound (rounded to a power of two) so probe chains stay short even when full.
 * Deletion shifts later entries back instead of leaving tombstones, which keeps
 * lookups fast after heavy churn.
 *
 * At the bound, a new MAC evicts the least recently seen entry among the
 * EVICTION_WINDOW slots starting at its home slot: approximate LRU in O(1),
 * instead of a global scan per learn.
 *
 * Timestamps are milliseconds from the caller's clock (read once per batch).
 */

export interface MacTableOptions {
  /** At most this many entries; default 8192. */
  maxEntries?: number;
  /** An entry not refreshed for this long is forgotten; default 300 s, as on most switches. */
  agingSeconds?: number;
}

export interface MacTableCounters {
  entries: number;
  maxEntries: number;
  learned: number;
  moved: number;
  aged: number;
  evicted: number;
}

export interface MacEntry {
  networkId: number;
  mac: string;
  portId: number;
  ageSeconds: number;
}

const EVICTION_WINDOW = 16;
const EMPTY = 0;
const USED = 1;

export class MacTable {
  readonly maxEntries: number;
  readonly agingMs: number;
  private readonly mask: number;
  private readonly state: Uint8Array;
  /** networkId << 16 | first two MAC bytes. */
  private readonly keyHi: Uint32Array;
  /** Last four MAC bytes. */
  private readonly keyLo: Uint32Array;
  private readonly port: Int32Array;
  private readonly seen: Float64Array;
  private count = 0;
  /**
   * Bumped whenever a learned location changes or goes away (move, age-out,
   * eviction, flush). Cached forwarding decisions record it and are re-made
   * when it differs; learning a new MAC needs no bump, as nothing cached a
   * decision for a MAC it did not know (frames to it were flooded, uncached).
   */
  epoch = 0;
  private learnedCount = 0;
  private movedCount = 0;
  private agedCount = 0;
  private evictedCount = 0;

  constructor(opts: MacTableOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 8192;
    this.agingMs = (opts.agingSeconds ?? 300) * 1000;
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new RangeError('maxEntries must be a positive integer');
    if (!(this.agingMs > 0)) throw new RangeError('agingSeconds must be positive');
    let capacity = 16;
    while (capacity < this.maxEntries * 2) capacity *= 2;
    this.mask = capacity - 1;
    this.state = new Uint8Array(capacity);
    this.keyHi = new Uint32Array(capacity);
    this.keyLo = new Uint32Array(capacity);
    this.port = new Int32Array(capacity);
    this.seen = new Float64Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  counters(): MacTableCounters {
    return {
      entries: this.count,
      maxEntries: this.maxEntries,
      learned: this.learnedCount,
      moved: this.movedCount,
      aged: this.agedCount,
      evicted: this.evictedCount,
    };
  }

  private home(hi: number, lo: number): number {
    let h = Math.imul(hi ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(lo, 0xc2b2ae35);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
    return h & this.mask;
  }

  private find(hi: number, lo: number): number {
    let i = this.home(hi, lo);
    while (this.state[i] !== EMPTY) {
      if (this.keyHi[i] === hi && this.keyLo[i] === lo) return i;
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** The port that `mac` was learned on in `networkId`, or -1. An expired entry is removed and counts as aged. */
  lookup(networkId: number, macHi16: number, macLo32: number, nowMs: number): number {
    const hi = ((networkId << 16) | macHi16) >>> 0;
    const i = this.find(hi, macLo32 >>> 0);
    if (i < 0) return -1;
    if (nowMs - this.seen[i] > this.agingMs) {
      this.removeAt(i);
      this.agedCount++;
      return -1;
    }
    return this.port[i];
  }

  /** Records that `mac` was seen on `portId`. */
  learn(networkId: number, macHi16: number, macLo32: number, portId: number, nowMs: number): void {
    const hi = ((networkId << 16) | macHi16) >>> 0;
    const lo = macLo32 >>> 0;
    const found = this.find(hi, lo);
    if (found >= 0) {
      if (this.port[found] !== portId) {
        this.port[found] = portId;
        this.movedCount++;
        this.epoch = (this.epoch + 1) >>> 0;
      }
      this.seen[found] = nowMs;
      return;
    }
    if (this.count >= this.maxEntries) this.evictNear(this.home(hi, lo), nowMs);
    let i = this.home(hi, lo);
    while (this.state[i] !== EMPTY) i = (i + 1) & this.mask;
    this.state[i] = USED;
    this.keyHi[i] = hi;
    this.keyLo[i] = lo;
    this.port[i] = portId;
    this.seen[i] = nowMs;
    this.count++;
    this.learnedCount++;
  }

  private evictNear(start: number, nowMs: number): void {
    let oldest = -1;
    let i = start;
    for (let n = 0; n < EVICTION_WINDOW; n++, i = (i + 1) & this.mask) {
      if (this.state[i] === USED && (oldest < 0 || this.seen[i] < this.seen[oldest])) oldest = i;
    }
    if (oldest < 0) {
      // The window was empty: the table is sparse there, so any entry will do; take the globally oldest.
      for (let j = 0; j <= this.mask; j++) {
        if (this.state[j] === USED && (oldest < 0 || this.seen[j] < this.seen[oldest])) oldest = j;
      }
    }
    if (nowMs - this.seen[oldest] > this.agingMs) this.agedCount++;
    else this.evictedCount++;
    this.removeAt(oldest);
  }

  /** Backward-shift deletion: pull later members of the probe chain into the hole. */
  private removeAt(hole: number): void {
    this.epoch = (this.epoch + 1) >>> 0;
    this.state[hole] = EMPTY;
    this.count--;
    let i = (hole + 1) & this.mask;
    while (this.state[i] !== EMPTY) {
      const home = this.home(this.keyHi[i], this.keyLo[i]);
      // Move entry i into the hole if its home slot is not in (hole, i] cyclically.
      const between = hole <= i ? home > hole && home <= i : home > hole || home <= i;
      if (!between) {
        this.state[hole] = USED;
        this.keyHi[hole] = this.keyHi[i];
        this.keyLo[hole] = this.keyLo[i];
        this.port[hole] = this.port[i];
        this.seen[hole] = this.seen[i];
        this.state[i] = EMPTY;
        hole = i;
      }
      i = (i + 1) & this.mask;
    }
  }

  private removeWhere(predicate: (slot: number) => boolean): number {
    let removed = 0;
    for (let i = 0; i <= this.mask; ) {
      if (this.state[i] === USED && predicate(i)) {
        // removeAt may shift a not-yet-visited entry into slot i: look at i again.
        this.removeAt(i);
        removed++;
      } else {
        i++;
      }
    }
    return removed;
  }

  /** Forgets every entry older than the aging time; call about once a second. */
  sweep(nowMs: number): number {
    const aged = this.removeWhere((i) => nowMs - this.seen[i] > this.agingMs);
    this.agedCount += aged;
    return aged;
  }

  /** Forgets what was learned on a port (it went away). */
  flushPort(portId: number): number {
    return this.removeWhere((i) => this.port[i] === portId);
  }

  /** Forgets a whole network. */
  flushNetwork(networkId: number): number {
    return this.removeWhere((i) => this.keyHi[i] >>> 16 === networkId);
  }

  /** A snapshot for operators; allocates, so never on the data path. */
  entries(nowMs: number): MacEntry[] {
    const out: MacEntry[] = [];
    for (let i = 0; i <= this.mask; i++) {
      if (this.state[i] !== USED) continue;
      const hi = this.keyHi[i];
      const lo = this.keyLo[i];
      const bytes = [(hi >>> 8) & 0xff, hi & 0xff, lo >>> 24, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff];
      out.push({
        networkId: hi >>> 16,
        mac: bytes.map((b) => b.toString(16).padStart(2, '0')).join(':'),
        portId: this.port[i],
        ageSeconds: Math.max(0, (nowMs - this.seen[i]) / 1000),
      });
    }
    return out;
  }
}
