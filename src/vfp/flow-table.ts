/**
 * The unified flow table: for each (ingress port, flow key), what the slow
 * path decided for the whole trip through the switch: the egress port (or a
 * drop and who dropped it), the header transposition, the meter, and the
 * connection-tracking entries it leans on at both ends. Later frames of the
 * flow apply that decision without looking at a single rule.
 *
 * An entry stays valid while everything it was derived from is unchanged:
 * both ports' policy generations, the MAC table's epoch (a move, an age-out or
 * a flush bumps it) and the serials of its conntrack entries. The switch checks
 * those on every hit; a mismatch sends the frame through the slow path again,
 * which overwrites the entry. That is the lazy re-evaluation that lets a new
 * block rule stop an existing connection on its next frame.
 *
 * Layout: a slab of typed arrays indexed by entry number (stable while the
 * entry lives, so nothing else needs updating when the hash index moves), and
 * an open-addressing index of entry numbers with backward-shift deletion.
 * Entries are handed out by a bump pointer plus a free list chained through
 * the key slab, so the pages of a large, mostly unused table are never
 * touched. The key is stored in two parts: ten words every entry has (the
 * ingress port and the key words an IPv4 flow uses), and the six words that
 * only an IPv6 address fills, in a slab of their own that IPv4 flows never
 * touch. A drop has no meter and a forward no connection epoch, so those two
 * share a column.
 *
 * About 126 bytes per IPv4 flow (150 for IPv6) plus 8 bytes of index per entry
 * of capacity: 40 of key, 32 of the four Float64 counters and timestamps the
 * switch writes per frame, 54 of decision (see byteSize). docs/BENCHMARKS.md
 * has the measured numbers.
 */
import { hashWords, randomSeed } from './hash.js';
import { KEY_WORDS, KeyWord } from './key.js';

/** Key slab words per entry: the ingress port (and WIDE), key words 0..SRC_IP and DST_IP. */
const HEAD_WORDS = 10;
/** The key word stored last in the head: the first word of the destination address. */
const HEAD_DST = HEAD_WORDS - 1;
/** Wide slab words per entry: the source address's words 1-3, then the destination's. */
const WIDE_WORDS = 6;
/** Set in an entry's first key word when its wide words are stored; port ids stay below it. */
const WIDE = 0x80000000;
const PORT_MASK = 0x7fffffff;
const EMPTY = -1;

export const NO_PORT = -1;

/** What the flow table checks its connections against: conntrack's slot serial and liveness. */
export interface ConnectionCheck {
  serial(slot: number): number;
  alive(slot: number, now: number): boolean;
}

/** Whether the key's addresses need more than their first word (an IPv6 flow). */
function isWide(key: Uint32Array): boolean {
  const s = KeyWord.SRC_IP;
  const d = KeyWord.DST_IP;
  return (key[s + 1] | key[s + 2] | key[s + 3] | key[d + 1] | key[d + 2] | key[d + 3]) !== 0;
}

/** Accounting tags a flow table keeps bytes for (load balancer backends of the whole switch). */
export const FLOW_TAGS = 4096;

export class FlowTable {
  readonly capacity: number;
  readonly hashes: Uint32Array;
  /** Port to transmit on, or NO_PORT for a cached drop. */
  readonly egress: Int32Array;
  /** For a cached drop: the reason, and the port whose counters take it. */
  readonly dropReason: Uint8Array;
  readonly dropPort: Int32Array;
  /**
   * For a cached drop: the drop port's connection epoch when it was decided.
   * The same memory as meterBucket: read it only when egress is NO_PORT.
   */
  readonly connectionEpoch: Uint32Array;
  /** The port on the far side whose policy took part (egress, or the egress that blocked), -1 for none. */
  readonly peerPort: Int32Array;
  readonly genIngress: Uint32Array;
  readonly genEgress: Uint32Array;
  readonly macEpoch: Uint32Array;
  /** Conntrack slot at the ingress port (direction out) and its serial; -1 for none. */
  readonly ctOut: Int32Array;
  readonly ctOutSerial: Uint32Array;
  /** Conntrack slot at the egress port (direction in) and its serial; -1 for none. */
  readonly ctIn: Int32Array;
  readonly ctInSerial: Uint32Array;
  readonly transposition: Int32Array;
  /** For a forward: the meter bucket, -1 for none. The same memory as connectionEpoch: read it only when egress is a port. */
  readonly meterBucket: Int32Array;
  readonly packets: Float64Array;
  readonly bytes: Float64Array;
  readonly created: Float64Array;
  readonly lastSeen: Float64Array;
  /** Entries whose key sits in the slab, for the sweeper's scan. */
  readonly inUse: Uint8Array;
  /**
   * Bytes of accounting tags (a load balancer backend's) that entries carried
   * when they were removed or decided again; a tag's bytes are these plus its
   * live entries' (bytesByTag). A forward's tag lives in its dropPort column,
   * which forwards do not use, as -2 - tag (-1: none), so it costs no memory
   * per entry; everything that reads dropPort compares it with a port id.
   */
  readonly tagBytes = new Float64Array(FLOW_TAGS);

  /** HEAD_WORDS per entry; a free entry's first word links to the next free entry (+1, 0 ends the list). */
  private readonly keys: Uint32Array;
  /** WIDE_WORDS per entry, written only for entries marked WIDE. */
  private readonly wideKeys: Uint32Array;
  private readonly seed = randomSeed();
  private readonly index: Int32Array;
  private readonly indexMask: number;
  private freeHead = -1;
  private bump = 0;
  private live = 0;
  private sweepCursor = 0;

  constructor(capacity = 1 << 20) {
    if (!Number.isInteger(capacity) || capacity < 16) throw new RangeError(`flow table capacity ${capacity} must be an integer of at least 16`);
    this.capacity = capacity;
    let size = 16;
    while (size < capacity * 2) size *= 2;
    this.index = new Int32Array(size).fill(EMPTY);
    this.indexMask = size - 1;
    this.keys = new Uint32Array(capacity * HEAD_WORDS);
    this.wideKeys = new Uint32Array(capacity * WIDE_WORDS);
    this.hashes = new Uint32Array(capacity);
    this.egress = new Int32Array(capacity);
    this.dropReason = new Uint8Array(capacity);
    this.dropPort = new Int32Array(capacity);
    this.peerPort = new Int32Array(capacity);
    this.meterBucket = new Int32Array(capacity);
    this.connectionEpoch = new Uint32Array(this.meterBucket.buffer);
    this.genIngress = new Uint32Array(capacity);
    this.genEgress = new Uint32Array(capacity);
    this.macEpoch = new Uint32Array(capacity);
    this.ctOut = new Int32Array(capacity);
    this.ctOutSerial = new Uint32Array(capacity);
    this.ctIn = new Int32Array(capacity);
    this.ctInSerial = new Uint32Array(capacity);
    this.transposition = new Int32Array(capacity);
    this.packets = new Float64Array(capacity);
    this.bytes = new Float64Array(capacity);
    this.created = new Float64Array(capacity);
    this.lastSeen = new Float64Array(capacity);
    this.inUse = new Uint8Array(capacity);
  }

  /** Entry e's accounting tag, or -1. */
  tagOf(e: number): number {
    const d = this.dropPort[e];
    return this.egress[e] !== NO_PORT && d <= -2 ? -2 - d : -1;
  }

  /** Keeps the bytes of entry e for its tag before they are reset or the entry goes. */
  private retire(e: number): void {
    const t = this.tagOf(e);
    if (t < 0) return;
    this.tagBytes[t] += this.bytes[e];
    this.dropPort[e] = -1;
  }

  /** Every tag's bytes: retired ones and those of live entries (control path: one pass over the entries in use). */
  bytesByTag(): Float64Array {
    const out = this.tagBytes.slice();
    for (let e = 0; e < this.bump; e++) {
      if (this.inUse[e] !== 1) continue;
      const t = this.tagOf(e);
      if (t >= 0) out[t] += this.bytes[e];
    }
    return out;
  }

  /** A tag is given back: its bytes are forgotten and no entry counts toward it any more. */
  clearTag(t: number): void {
    this.tagBytes[t] = 0;
    for (let e = 0; e < this.bump; e++) if (this.tagOf(e) === t) this.dropPort[e] = -1;
  }

  get size(): number {
    return this.live;
  }

  /** Bytes of all typed arrays, touched or not (the wide slab is touched only by IPv6 flows). */
  get byteSize(): number {
    const columns = [
      this.keys, this.wideKeys, this.hashes, this.egress, this.dropReason, this.dropPort, this.peerPort,
      this.meterBucket, this.genIngress, this.genEgress, this.macEpoch, this.ctOut, this.ctOutSerial,
      this.ctIn, this.ctInSerial, this.transposition, this.packets, this.bytes, this.created, this.lastSeen,
      this.inUse, this.index, this.tagBytes,
    ];
    return columns.reduce((sum, c) => sum + c.byteLength, 0);
  }

  /** The hash of (port, key); the port is folded into the seed. No allocation. */
  hash(portId: number, key: Uint32Array): number {
    return hashWords(key, 0, KEY_WORDS, this.seed ^ Math.imul(portId + 1, 0x9e3779b9));
  }

  private keyEquals(e: number, portId: number, key: Uint32Array): boolean {
    const keys = this.keys;
    const o = e * HEAD_WORDS;
    const first = keys[o];
    if ((first & PORT_MASK) !== portId) return false;
    for (let w = 0; w < KeyWord.SRC_IP + 1; w++) if (keys[o + 1 + w] !== key[w]) return false;
    if (keys[o + HEAD_DST] !== key[KeyWord.DST_IP]) return false;
    if ((first & WIDE) === 0) return !isWide(key);
    const wide = this.wideKeys;
    const x = e * WIDE_WORDS;
    const s = KeyWord.SRC_IP;
    const d = KeyWord.DST_IP;
    return (
      wide[x] === key[s + 1] && wide[x + 1] === key[s + 2] && wide[x + 2] === key[s + 3] &&
      wide[x + 3] === key[d + 1] && wide[x + 4] === key[d + 2] && wide[x + 5] === key[d + 3]
    );
  }

  lookup(portId: number, key: Uint32Array, hash: number): number {
    const index = this.index;
    const mask = this.indexMask;
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const e = index[i];
      if (e === EMPTY) return -1;
      if (this.hashes[e] === hash && this.keyEquals(e, portId, key)) return e;
    }
  }

  /** A new entry for a key the caller just failed to look up; -1 when the table is full. Fields are the caller's to fill. */
  insert(portId: number, key: Uint32Array, hash: number, now: number): number {
    let e: number;
    if (this.freeHead >= 0) {
      e = this.freeHead;
      this.freeHead = this.keys[e * HEAD_WORDS] - 1;
    } else if (this.bump < this.capacity) e = this.bump++;
    else return -1;
    const keys = this.keys;
    const o = e * HEAD_WORDS;
    const wide = isWide(key);
    keys[o] = (portId | (wide ? WIDE : 0)) >>> 0;
    for (let w = 0; w < KeyWord.SRC_IP + 1; w++) keys[o + 1 + w] = key[w];
    keys[o + HEAD_DST] = key[KeyWord.DST_IP];
    if (wide) {
      const x = e * WIDE_WORDS;
      for (let w = 0; w < 3; w++) {
        this.wideKeys[x + w] = key[KeyWord.SRC_IP + 1 + w];
        this.wideKeys[x + 3 + w] = key[KeyWord.DST_IP + 1 + w];
      }
    }
    this.hashes[e] = hash;
    this.packets[e] = 0;
    this.bytes[e] = 0;
    this.created[e] = now;
    this.lastSeen[e] = now;
    this.inUse[e] = 1;
    const index = this.index;
    const mask = this.indexMask;
    let i = hash & mask;
    while (index[i] !== EMPTY) i = (i + 1) & mask;
    index[i] = e;
    this.live++;
    return e;
  }

  /** Frees the entry; the caller releases what it referenced (transposition). */
  remove(e: number): void {
    this.retire(e);
    const index = this.index;
    const mask = this.indexMask;
    let i = this.hashes[e] & mask;
    while (index[i] !== e) {
      if (index[i] === EMPTY) return;
      i = (i + 1) & mask;
    }
    // Backward-shift: pull later members of the probe run into the hole so lookups need no tombstones.
    let hole = i;
    for (let j = (i + 1) & mask; index[j] !== EMPTY; j = (j + 1) & mask) {
      const home = this.hashes[index[j]] & mask;
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        index[hole] = index[j];
        hole = j;
      }
    }
    index[hole] = EMPTY;
    this.inUse[e] = 0;
    this.keys[e * HEAD_WORDS] = this.freeHead + 1;
    this.freeHead = e;
    this.live--;
  }

  /**
   * Starts entry e over for a new decision: what every decision is checked
   * against (the ingress port's policy generation, the MAC table's epoch), and
   * nothing referenced yet. The caller has released the old transposition.
   */
  begin(e: number, genIngress: number, macEpoch: number): void {
    this.retire(e);
    this.genIngress[e] = genIngress;
    this.macEpoch[e] = macEpoch;
    this.dropReason[e] = 0;
    this.dropPort[e] = -1;
    this.transposition[e] = -1;
    this.meterBucket[e] = -1;
    this.ctOut[e] = -1;
    this.ctIn[e] = -1;
  }

  /**
   * Records a decision to transmit on egressId, with the connections at both
   * ends (slot or -1; their serials are taken from `ct`), the transposition and
   * meter to apply, and the first frame's length.
   */
  recordForward(e: number, egressId: number, genEgress: number, ctOut: number, ctIn: number, ct: ConnectionCheck, transposition: number, meter: number, len: number, tag = -1): void {
    this.dropPort[e] = tag >= 0 ? -2 - tag : -1;
    this.egress[e] = egressId;
    this.peerPort[e] = egressId;
    this.genEgress[e] = genEgress;
    this.ctOut[e] = ctOut;
    this.ctOutSerial[e] = ctOut >= 0 ? ct.serial(ctOut) : 0;
    this.ctIn[e] = ctIn;
    this.ctInSerial[e] = ctIn >= 0 ? ct.serial(ctIn) : 0;
    this.transposition[e] = transposition;
    this.meterBucket[e] = meter;
    this.packets[e] = 1;
    this.bytes[e] = len;
  }

  /** Records a drop: its reason, the port that counts it, the peer whose policy took part (or -1), and their epochs. */
  recordDrop(e: number, reason: number, dropPort: number, peer: number, genEgress: number, connectionEpoch: number, len: number): void {
    this.egress[e] = NO_PORT;
    this.dropReason[e] = reason;
    this.dropPort[e] = dropPort;
    this.peerPort[e] = peer;
    this.genEgress[e] = genEgress;
    this.connectionEpoch[e] = connectionEpoch;
    this.packets[e] = 1;
    this.bytes[e] = len;
  }

  /**
   * Whether entry e's decision still holds: both ports' policy generations
   * and the MAC table's epoch as they were, and for a drop the drop port's
   * connection epoch, for a forward its connections alive and the same.
   */
  valid(e: number, portId: number, generation: Uint32Array, macEpoch: number, connectionEpoch: Uint32Array, ct: ConnectionCheck, now: number): boolean {
    if (this.genIngress[e] !== generation[portId] || this.macEpoch[e] !== macEpoch) return false;
    const peer = this.peerPort[e];
    if (peer >= 0 && this.genEgress[e] !== generation[peer]) return false;
    if (this.egress[e] === NO_PORT) return this.connectionEpoch[e] === connectionEpoch[this.dropPort[e]];
    return this.connectionsValid(e, ct, now);
  }

  /** A frame of `len` bytes used entry e at `now`. */
  hit(e: number, len: number, now: number): void {
    this.packets[e]++;
    this.bytes[e] += len;
    this.lastSeen[e] = now;
  }

  /** Whether the connections entry e was decided with are still those (same serial) and alive. */
  connectionsValid(e: number, ct: ConnectionCheck, now: number): boolean {
    const a = this.ctOut[e];
    if (a >= 0 && (ct.serial(a) !== this.ctOutSerial[e] || !ct.alive(a, now))) return false;
    const b = this.ctIn[e];
    return b < 0 || (ct.serial(b) === this.ctInSerial[e] && ct.alive(b, now));
  }

  ingressPort(e: number): number {
    return this.keys[e * HEAD_WORDS] & PORT_MASK;
  }

  /** Copies entry e's flow key into out. */
  keyOf(e: number, out: Uint32Array): Uint32Array {
    const keys = this.keys;
    const o = e * HEAD_WORDS;
    for (let w = 0; w < KeyWord.SRC_IP + 1; w++) out[w] = keys[o + 1 + w];
    out[KeyWord.DST_IP] = keys[o + HEAD_DST];
    const wide = (keys[o] & WIDE) !== 0;
    const x = e * WIDE_WORDS;
    for (let w = 0; w < 3; w++) {
      out[KeyWord.SRC_IP + 1 + w] = wide ? this.wideKeys[x + w] : 0;
      out[KeyWord.DST_IP + 1 + w] = wide ? this.wideKeys[x + 3 + w] : 0;
    }
    return out;
  }

  /**
   * Visits up to `budget` slab entries from where the last call stopped and
   * removes those `expired` says are done; returns how many it removed.
   */
  sweep(budget: number, expired: (e: number) => boolean, onRemove: (e: number) => void): number {
    let removed = 0;
    const end = this.bump;
    if (end === 0) return 0;
    for (let n = 0; n < budget && n < end; n++) {
      if (this.sweepCursor >= end) this.sweepCursor = 0;
      const e = this.sweepCursor++;
      if (this.inUse[e] === 1 && expired(e)) {
        onRemove(e);
        this.remove(e);
        removed++;
      }
    }
    return removed;
  }

  /** Every live entry number (control path: listings, flushes). */
  liveEntries(): number[] {
    const out: number[] = [];
    for (let e = 0; e < this.bump; e++) if (this.inUse[e] === 1) out.push(e);
    return out;
  }
}
