/**
 * Token buckets for rate limits: per-endpoint egress caps (a shaper, which
 * delays) and per-rule meters (a policer, which drops).
 *
 * Buckets live in typed arrays indexed by id, so the data path holds a number,
 * not an object, and checking a limit allocates nothing. Refill is lazy: a
 * bucket is brought up to date only when a packet touches it, so idle buckets
 * cost nothing and no timer walks them.
 *
 * The two uses differ in what happens when tokens run out. A policer must not
 * go into debt (a dropped packet took nothing), so tryConsume() is
 * all-or-nothing. A shaper has already decided to send, so debit() always
 * takes the bytes and says how long to hold the queue: the debt is what makes
 * the long-run average equal the rate even with 64 KiB TSO super-frames
 * against a small bucket.
 *
 * Clock: milliseconds from the caller (performance.now(), read once per
 * batch). A clock that goes backwards refills nothing rather than draining.
 * Float64 throughout: bucket counts are per endpoint or per rule, not per
 * flow, and fractional tokens keep slow rates exact.
 */
export class TokenBuckets {
  readonly capacity: number;
  /** Bytes per millisecond. */
  private readonly rate: Float64Array;
  private readonly burst: Float64Array;
  private readonly level: Float64Array;
  private readonly last: Float64Array;
  private readonly configured: Uint8Array;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
    this.capacity = capacity;
    this.rate = new Float64Array(capacity);
    this.burst = new Float64Array(capacity);
    this.level = new Float64Array(capacity);
    this.last = new Float64Array(capacity);
    this.configured = new Uint8Array(capacity);
  }

  /** Sets a bucket's rate and size; it starts full. */
  configure(id: number, rateBytesPerSecond: number, burstBytes: number, now: number): void {
    this.check(id);
    if (!(rateBytesPerSecond > 0) || !Number.isFinite(rateBytesPerSecond)) throw new RangeError('rate must be a positive number of bytes per second');
    if (!(burstBytes > 0) || !Number.isFinite(burstBytes)) throw new RangeError('burst must be a positive number of bytes');
    this.rate[id] = rateBytesPerSecond / 1000;
    this.burst[id] = burstBytes;
    this.level[id] = burstBytes;
    this.last[id] = now;
    this.configured[id] = 1;
  }

  clear(id: number): void {
    this.check(id);
    this.configured[id] = 0;
    this.rate[id] = 0;
    this.burst[id] = 0;
    this.level[id] = 0;
  }

  isConfigured(id: number): boolean {
    return this.configured[id] === 1;
  }

  /** Policer: takes `bytes` if the bucket holds them. An unconfigured bucket limits nothing. */
  tryConsume(id: number, bytes: number, now: number): boolean {
    if (this.configured[id] !== 1) return true;
    const level = this.refill(id, now);
    if (level < bytes) return false;
    this.level[id] = level - bytes;
    return true;
  }

  /**
   * Shaper: takes `bytes` unconditionally and returns the milliseconds until
   * the bucket is out of debt (0 when it is not in debt). The caller holds
   * further traffic that long; debt is unbounded if it does not.
   */
  debit(id: number, bytes: number, now: number): number {
    if (this.configured[id] !== 1) return 0;
    const level = this.refill(id, now) - bytes;
    this.level[id] = level;
    return level >= 0 ? 0 : -level / this.rate[id];
  }

  /** The bucket's level at `now` (negative in debt). */
  tokens(id: number, now: number): number {
    if (this.configured[id] !== 1) return 0;
    return this.refill(id, now);
  }

  private refill(id: number, now: number): number {
    let level = this.level[id];
    const elapsed = now - this.last[id];
    if (elapsed > 0) {
      level += elapsed * this.rate[id];
      const burst = this.burst[id];
      if (level > burst) level = burst;
      this.level[id] = level;
      this.last[id] = now;
    }
    return level;
  }

  private check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.capacity) throw new RangeError(`bucket id ${id} is not in 0..${this.capacity - 1}`);
  }
}
