/**
 * The engine under the overlay's two address tables (src/tunnel/vtep-table.ts:
 * (VNI, MAC) -> VTEP; src/tunnel/arp-suppression.ts: (VNI, IPv4) -> MAC): a
 * bounded hash table of fixed-width u32 keys and values, each entry either
 * static (pushed by the control plane) or learned (from traffic, aging).
 *
 * Layout, as in src/switch/mac-table.ts and src/vfp/conntrack.ts: open
 * addressing with linear probing over typed arrays, no object per entry.
 * Keys and values are strided Uint32Arrays (keyWords, valueWords per slot);
 * beside them a kind byte (0 empty, static, learned), a last-seen time
 * (Float64, milliseconds of the caller's clock, read once per batch) and the
 * key's 30-bit hash, kept so that a probe that is not ours is rejected without
 * comparing keys and so backward-shift deletion never rehashes.
 *
 * The hash is hashWords (src/vfp/hash.ts) with a random seed per table: keys
 * come from remote hosts and tenants, and a fixed hash would let them build
 * long probe chains.
 *
 * Bounds. Static and learned entries have bounds of their own, so no amount of
 * learning can push out what the control plane put there:
 *   - a static entry beyond maxStatic is refused (addStatic returns false: the
 *     API turns that into an error the operator sees);
 *   - a new learned entry beyond maxLearned evicts the least recently seen
 *     learned entry among the EVICTION_WINDOW slots from its home slot
 *     (approximate LRU in O(1), as the MAC table does); if that window holds
 *     no learned entry (only statics and holes), the new entry is refused and
 *     counted. Refusing is safe: what is not learned is flooded, as unknown
 *     unicast is, so it costs bandwidth, never reachability. A global scan
 *     instead would make every learn O(capacity) in a table full of statics.
 * Slots are the next power of two at or above twice maxStatic + maxLearned, so
 * the load never exceeds one half and probe chains stay short.
 *
 * Precedence: learning never overwrites a static entry (a claim that differs
 * is counted as a conflict); a static entry replaces a learned one in place.
 *
 * Aging: a learned entry not refreshed (learned again) for agingSeconds is
 * gone: lookup removes it when it finds it (counted as aged), sweep() removes
 * the rest, and learning it again starts it afresh (aged, then learned).
 * Static entries never age.
 *
 * The operation's key (and value) are passed through the scratch arrays `key`
 * and `value`, so no call allocates or takes more than a clock argument.
 */
import { hashWords, randomSeed } from '../vfp/hash.js';

export const EntryKind = {
  EMPTY: 0,
  STATIC: 1,
  LEARNED: 2,
} as const;
export type EntryKind = (typeof EntryKind)[keyof typeof EntryKind];

/** What learn() did. */
export const Learn = {
  /** A new learned entry (perhaps after evicting or aging out an older one). */
  NEW: 0,
  /** Known with this value: last-seen refreshed. */
  REFRESHED: 1,
  /** Known with another value: updated (a MAC moved to another VTEP, an IP to another MAC). */
  MOVED: 2,
  /** A static entry holds the key; nothing changed. */
  STATIC_HELD: 3,
  /** The learned bound is reached and nothing near the key's home slot could be evicted. */
  REFUSED: 4,
  /** Never learned (a multicast or zero MAC, a zero IP): the wrappers return it, uncounted; the frame's own checks count it. */
  INVALID: 5,
} as const;
export type Learn = (typeof Learn)[keyof typeof Learn];

export interface AgingTableOptions {
  keyWords: number;
  valueWords: number;
  /** At most this many static entries (>= 0). */
  maxStatic: number;
  /** At most this many learned entries (>= 0; 0 turns learning off). */
  maxLearned: number;
  /** A learned entry not refreshed for this long is forgotten (> 0). */
  agingSeconds: number;
  /** Hash seed; random unless given (tests). */
  seed?: number;
}

export interface AgingTableCounters {
  entries: number;
  staticEntries: number;
  learnedEntries: number;
  maxStatic: number;
  maxLearned: number;
  /** New learned entries, ever. */
  learned: number;
  /** Learned entries whose value changed. */
  moved: number;
  /** Learned entries forgotten for age. */
  aged: number;
  /** Learned entries pushed out at the bound. */
  evicted: number;
  /** New learned entries turned away at the bound. */
  refused: number;
  /** Learned claims that disagreed with a static entry (and lost). */
  conflicts: number;
}

const EVICTION_WINDOW = 16;

export class AgingTable {
  readonly keyWords: number;
  readonly valueWords: number;
  readonly maxStatic: number;
  readonly maxLearned: number;
  readonly agingMs: number;
  /** Scratch: the key of the next operation. */
  readonly key: Uint32Array;
  /** Scratch: the value of the next learn() or addStatic(). */
  readonly value: Uint32Array;
  /**
   * Bumped whenever an existing mapping changes or goes away (move, removal,
   * age-out, eviction, a static entry replacing a learned one with another
   * value). Anything that caches a lookup result records it and looks again
   * when it differs. A new entry needs no bump: nothing cached a lookup of a
   * key that was absent.
   */
  epoch = 0;
  private readonly mask: number;
  private readonly seed: number;
  private readonly keys: Uint32Array;
  private readonly values: Uint32Array;
  private readonly kinds: Uint8Array;
  private readonly seen: Float64Array;
  private readonly hashes: Uint32Array;
  private staticCount = 0;
  private learnedCount = 0;
  private learnedTotal = 0;
  private movedTotal = 0;
  private agedTotal = 0;
  private evictedTotal = 0;
  private refusedTotal = 0;
  private conflictTotal = 0;

  constructor(opts: AgingTableOptions) {
    const { keyWords, valueWords, maxStatic, maxLearned, agingSeconds } = opts;
    if (!Number.isInteger(keyWords) || keyWords < 1 || !Number.isInteger(valueWords) || valueWords < 1) {
      throw new RangeError('keyWords and valueWords must be positive integers');
    }
    if (!Number.isInteger(maxStatic) || maxStatic < 0) throw new RangeError('maxStatic must be a non-negative integer');
    if (!Number.isInteger(maxLearned) || maxLearned < 0) throw new RangeError('maxLearned must be a non-negative integer');
    if (maxStatic + maxLearned < 1) throw new RangeError('maxStatic and maxLearned cannot both be 0');
    if (maxStatic + maxLearned > 1 << 26) throw new RangeError('maxStatic + maxLearned must be at most 67108864');
    if (!(agingSeconds > 0) || !Number.isFinite(agingSeconds)) throw new RangeError('agingSeconds must be a positive number');
    this.keyWords = keyWords;
    this.valueWords = valueWords;
    this.maxStatic = maxStatic;
    this.maxLearned = maxLearned;
    this.agingMs = agingSeconds * 1000;
    this.seed = opts.seed ?? randomSeed();
    let capacity = 16;
    while (capacity < 2 * (maxStatic + maxLearned)) capacity *= 2;
    this.mask = capacity - 1;
    this.key = new Uint32Array(keyWords);
    this.value = new Uint32Array(valueWords);
    this.keys = new Uint32Array(capacity * keyWords);
    this.values = new Uint32Array(capacity * valueWords);
    this.kinds = new Uint8Array(capacity);
    this.seen = new Float64Array(capacity);
    this.hashes = new Uint32Array(capacity);
  }

  /** Slots (twice the bounds or more): slot numbers are below this. */
  get capacity(): number {
    return this.mask + 1;
  }

  get size(): number {
    return this.staticCount + this.learnedCount;
  }

  counters(): AgingTableCounters {
    return {
      entries: this.staticCount + this.learnedCount,
      staticEntries: this.staticCount,
      learnedEntries: this.learnedCount,
      maxStatic: this.maxStatic,
      maxLearned: this.maxLearned,
      learned: this.learnedTotal,
      moved: this.movedTotal,
      aged: this.agedTotal,
      evicted: this.evictedTotal,
      refused: this.refusedTotal,
      conflicts: this.conflictTotal,
    };
  }

  kindAt(slot: number): number {
    return this.kinds[slot];
  }
  keyAt(slot: number, word: number): number {
    return this.keys[slot * this.keyWords + word];
  }
  valueAt(slot: number, word: number): number {
    return this.values[slot * this.valueWords + word];
  }
  seenAt(slot: number): number {
    return this.seen[slot];
  }

  private hashKey(): number {
    return hashWords(this.key, 0, this.keyWords, this.seed);
  }

  private keyEquals(slot: number): boolean {
    const kw = this.keyWords;
    const base = slot * kw;
    for (let w = 0; w < kw; w++) if (this.keys[base + w] !== this.key[w]) return false;
    return true;
  }

  private valueEquals(slot: number): boolean {
    const vw = this.valueWords;
    const base = slot * vw;
    for (let w = 0; w < vw; w++) if (this.values[base + w] !== this.value[w]) return false;
    return true;
  }

  private storeValue(slot: number): void {
    const vw = this.valueWords;
    const base = slot * vw;
    for (let w = 0; w < vw; w++) this.values[base + w] = this.value[w];
  }

  private findHashed(h: number): number {
    let i = h & this.mask;
    while (this.kinds[i] !== EntryKind.EMPTY) {
      if (this.hashes[i] === h && this.keyEquals(i)) return i;
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** The slot of `key`, expired or not, or -1. Nothing changes. */
  find(): number {
    return this.findHashed(this.hashKey());
  }

  /** The slot of `key`, or -1. A learned entry past its age is removed (counted as aged) and reads as absent. */
  lookup(nowMs: number): number {
    const i = this.findHashed(this.hashKey());
    if (i < 0) return -1;
    if (this.kinds[i] === EntryKind.LEARNED && nowMs - this.seen[i] > this.agingMs) {
      this.removeAt(i);
      this.agedTotal++;
      return -1;
    }
    return i;
  }

  /** `key` was seen with `value` now. Returns a Learn code. */
  learn(nowMs: number): Learn {
    const h = this.hashKey();
    const found = this.findHashed(h);
    if (found >= 0) {
      if (this.kinds[found] === EntryKind.STATIC) {
        if (!this.valueEquals(found)) this.conflictTotal++;
        return Learn.STATIC_HELD;
      }
      if (nowMs - this.seen[found] > this.agingMs) {
        // It had expired: as if removed when it did, and learned anew.
        this.agedTotal++;
        this.learnedTotal++;
        this.epoch = (this.epoch + 1) >>> 0;
        this.storeValue(found);
        this.seen[found] = nowMs;
        return Learn.NEW;
      }
      this.seen[found] = nowMs;
      if (this.valueEquals(found)) return Learn.REFRESHED;
      this.storeValue(found);
      this.movedTotal++;
      this.epoch = (this.epoch + 1) >>> 0;
      return Learn.MOVED;
    }
    if (this.learnedCount >= this.maxLearned && !this.evictNear(h & this.mask, nowMs)) {
      this.refusedTotal++;
      return Learn.REFUSED;
    }
    this.insert(h, EntryKind.LEARNED, nowMs);
    this.learnedCount++;
    this.learnedTotal++;
    return Learn.NEW;
  }

  /**
   * Makes `key` -> `value` static: new, replacing a static one's value, or
   * turning a learned entry static. False (nothing changed) when that would
   * exceed maxStatic.
   */
  addStatic(): boolean {
    const h = this.hashKey();
    const found = this.findHashed(h);
    if (found >= 0 && this.kinds[found] === EntryKind.STATIC) {
      if (!this.valueEquals(found)) {
        this.storeValue(found);
        this.epoch = (this.epoch + 1) >>> 0;
      }
      return true;
    }
    if (this.staticCount >= this.maxStatic) return false;
    if (found >= 0) {
      if (!this.valueEquals(found)) {
        this.storeValue(found);
        this.epoch = (this.epoch + 1) >>> 0;
      }
      this.kinds[found] = EntryKind.STATIC;
      this.learnedCount--;
      this.staticCount++;
      return true;
    }
    this.insert(h, EntryKind.STATIC, 0);
    this.staticCount++;
    return true;
  }

  /** Removes `key` if it is an entry of that kind (0: any kind); returns the kind removed, or 0. */
  remove(kind: number = EntryKind.EMPTY): number {
    const i = this.find();
    if (i < 0) return EntryKind.EMPTY;
    const k = this.kinds[i];
    if (kind !== EntryKind.EMPTY && k !== kind) return EntryKind.EMPTY;
    this.removeAt(i);
    return k;
  }

  /** Forgets every learned entry older than the aging time; returns how many. Call about once a second. */
  sweep(nowMs: number): number {
    const n = this.removeWhere((i) => this.kinds[i] === EntryKind.LEARNED && nowMs - this.seen[i] > this.agingMs);
    this.agedTotal += n;
    return n;
  }

  /** Removes the entries whose slot satisfies `predicate`; control plane only (O(capacity)). */
  removeWhere(predicate: (slot: number) => boolean): number {
    let removed = 0;
    for (let i = 0; i <= this.mask; ) {
      if (this.kinds[i] !== EntryKind.EMPTY && predicate(i)) {
        // removeAt may shift a not-yet-visited entry into slot i: look at i again.
        this.removeAt(i);
        removed++;
      } else {
        i++;
      }
    }
    return removed;
  }

  private insert(h: number, kind: number, nowMs: number): void {
    let i = h & this.mask;
    while (this.kinds[i] !== EntryKind.EMPTY) i = (i + 1) & this.mask;
    this.kinds[i] = kind;
    this.hashes[i] = h;
    this.seen[i] = nowMs;
    const kw = this.keyWords;
    for (let w = 0; w < kw; w++) this.keys[i * kw + w] = this.key[w];
    this.storeValue(i);
  }

  /** Evicts the least recently seen learned entry in the window from `start`; false if the window holds none. */
  private evictNear(start: number, nowMs: number): boolean {
    let oldest = -1;
    let i = start;
    for (let n = 0; n < EVICTION_WINDOW; n++, i = (i + 1) & this.mask) {
      if (this.kinds[i] === EntryKind.LEARNED && (oldest < 0 || this.seen[i] < this.seen[oldest])) oldest = i;
    }
    if (oldest < 0) return false;
    if (nowMs - this.seen[oldest] > this.agingMs) this.agedTotal++;
    else this.evictedTotal++;
    this.removeAt(oldest);
    return true;
  }

  /** Backward-shift deletion: later members of the probe chain move into the hole, so no tombstones. */
  private removeAt(hole: number): void {
    this.epoch = (this.epoch + 1) >>> 0;
    if (this.kinds[hole] === EntryKind.STATIC) this.staticCount--;
    else this.learnedCount--;
    this.kinds[hole] = EntryKind.EMPTY;
    const kw = this.keyWords;
    const vw = this.valueWords;
    let i = (hole + 1) & this.mask;
    while (this.kinds[i] !== EntryKind.EMPTY) {
      const home = this.hashes[i] & this.mask;
      // Entry i may fill the hole unless its home lies cyclically in (hole, i].
      const stays = hole <= i ? home > hole && home <= i : home > hole || home <= i;
      if (!stays) {
        this.kinds[hole] = this.kinds[i];
        this.hashes[hole] = this.hashes[i];
        this.seen[hole] = this.seen[i];
        for (let w = 0; w < kw; w++) this.keys[hole * kw + w] = this.keys[i * kw + w];
        for (let w = 0; w < vw; w++) this.values[hole * vw + w] = this.values[i * vw + w];
        this.kinds[i] = EntryKind.EMPTY;
        hole = i;
      }
      i = (i + 1) & this.mask;
    }
  }
}
