/**
 * The VFP rule classifier: given a flow key, find the best rule that matches it.
 *
 * A rule is a value and a mask per key word plus optional inclusive source and
 * destination port ranges; it matches a key when every masked key word equals
 * the rule's value and both ports fall in range. "Best" is the lowest priority
 * number, ties going to the lower id, so a group of rules always has exactly
 * one answer and the answer does not depend on the order rules were given in.
 *
 *
 * Why tuple space search
 * ======================
 *
 * The slow path runs once per new flow, and a port may carry thousands of
 * rules; scanning them all makes connection setup cost grow with policy size,
 * which the VFP design rules out. Rule sets written by people and by
 * orchestrators are wide but not deep in their shapes: thousands of rules, yet
 * only a handful of distinct combinations of "which bits does this rule look
 * at" (exact destination /32 and protocol; a /24 source; a MAC; ...). Tuple
 * space search (Srinivasan, Suri and Varghese, SIGCOMM 1999; the basis of Open
 * vSwitch's classifier) exploits exactly that: rules sharing one mask vector
 * (a "tuple") are stored in one hash table keyed on the masked key, so all the
 * rules of a tuple are tested with one hash computation and, almost always, one
 * probe. A lookup costs one probe per tuple, independent of how many rules each
 * tuple holds.
 *
 * Within a tuple every entry has the same mask, so a key has exactly one masked
 * value there and can match at most one entry. When two rules produce the same
 * masked value in the same tuple only the better one can ever win, so the other
 * is dropped at build time: the classifier answers "the single best match",
 * never "all matches" (callers that need to explain a decision, as `vsw trace`
 * does, use linearLookup and ruleMatches, which are slow but complete).
 *
 *
 * Port ranges
 * ===========
 *
 * A hash table can only match masked equality, and a range such as 1000-1999
 * is not one mask. It is, however, a union of aligned power-of-two blocks, each
 * of which is a prefix of the 16-bit port (a value and a mask), and the
 * union is disjoint. The greedy cover used here (take the largest aligned block
 * starting at lo that does not pass hi, repeat) is the minimal prefix cover: at
 * most 2*16-2 = 30 prefixes for a 16-bit range, a single entry for 0-65535
 * (mask 0, which costs nothing) or for one port (full mask). A rule with both a
 * source and a destination range becomes the cross product of the two covers on
 * key word 6 (srcPort << 16 | dstPort), so at worst 900 entries; ranges in real
 * policy are mostly "any", one port, or a small aligned-ish span, which cover
 * in a few entries. The entries of one rule land in up to 17 x 17 tuples (one
 * per pair of prefix lengths); they are disjoint, so a key matches at most one
 * of them, and they all carry the rule's own rank, so which one matched does
 * not matter.
 *
 *
 * Priority order and early exit
 * =============================
 *
 * At build time the rules are sorted by (priority, id) and numbered 0..n-1; the
 * number is the rule's rank, and everything at lookup time compares ranks only.
 * Ranks are a strict total order that agrees with "better", so there are no
 * ties left to break: two entries with the same rank are the same rule.
 *
 * Each tuple knows the lowest rank it holds, and tuples are searched in
 * ascending order of that lowest rank. Suppose the best rank found so far is b
 * and the next tuple's lowest rank is m >= b. Every entry of that tuple has
 * rank >= m >= b, and every later tuple's entries have rank >= its own lowest
 * rank >= m. So no remaining entry can beat b (an entry with rank exactly b is
 * rule b itself), and the search stops. This is exact, not a heuristic, and it
 * is where priorities pay off: with a high-priority rule that matches, a lookup
 * touches only the tuples that hold rules at least as good. A key that matches
 * nothing still visits every tuple; that is the inherent cost of the method.
 *
 *
 * Hash tables
 * ===========
 *
 * Each tuple owns an open-addressing table in typed arrays, linear probing,
 * power-of-two capacity at least twice the entry count (load <= 0.5, so probe
 * chains stay short even for clustered keys such as consecutive /32s). Only the
 * words the tuple's mask touches are hashed, stored and compared: a tuple that
 * looks at protocol and destination IPv4 stores two words per entry, not
 * fifteen. The hash is MurmurHash3's 32-bit block mix and finaliser over the
 * masked words (a few Math.imul and shifts per word); the full 32-bit hash is
 * stored beside each entry so a probe compares words only when the hashes
 * agree. Masked words are kept as signed 32-bit values (Int32Array) because
 * that is what `&` yields in JavaScript, so the comparison needs no conversion.
 * Nothing in lookup creates an object, array, string or closure.
 *
 *
 * Complexity and memory
 * =====================
 *
 * Build: O(E log T + R log R) for R rules expanding into E entries in T tuples;
 * about E strings are made while grouping entries by mask, once.
 *
 * Lookup: O(T' * W) where T' <= T is the number of tuples visited before the
 * early exit and W the words a tuple looks at (at most 15); expected one probe
 * per tuple. Independent of R as long as T stays small, which is the case for
 * the rule sets the rule compiler produces (a rule's shape is set by which
 * conditions it names, and port ranges add at most 17 prefix lengths per side).
 *
 * Memory: per entry, at load 0.5 to 0.25, 2 to 4 slots of (W + 2) 32-bit words
 * (the masked words, the hash and the rank); plus one small object per tuple.
 * 10,000 single-entry rules of one shape looking at two key words take about
 * half a megabyte (32,768 slots of 16 bytes).
 */
import { KEY_WORDS, KeyWord } from './key.js';

export interface ClassifierRule {
  /** What lookup returns for this rule: an index into the caller's own rule array. Non-negative integer, unique. */
  id: number;
  /** 0..65535; lower wins; ties go to the lower id. */
  priority: number;
  /** KEY_WORDS values and masks; value[w] & ~mask[w] is 0 (the caller guarantees it; the constructor checks). */
  value: Uint32Array;
  mask: Uint32Array;
  /** Inclusive ranges; absent = any. */
  srcPorts?: readonly [number, number];
  dstPorts?: readonly [number, number];
}

const PORTS = KeyWord.PORTS;
const MAX_ID = 0x7fffffff;
const HASH_SEED = 0x3c6ef372;

/** One aligned block of 16-bit ports: the ports p with (p & mask) === value. */
export interface PortPrefix {
  value: number;
  mask: number;
}

/**
 * The minimal set of disjoint prefixes whose union is [lo, hi] (inclusive,
 * 0 <= lo <= hi <= 65535). Greedy from lo: the largest block aligned at lo
 * that stays within hi. Minimal: nested prefixes are redundant, so a minimal
 * cover is disjoint and some block of it starts exactly at lo; no aligned block
 * starting at lo and inside the range is larger than the greedy one, and a
 * smaller one only leaves more to cover, so by induction greedy is optimal.
 */
export function portRangePrefixes(lo: number, hi: number): PortPrefix[] {
  const out: PortPrefix[] = [];
  while (lo <= hi) {
    let size = lo === 0 ? 0x10000 : lo & -lo;
    while (lo + size - 1 > hi) size >>>= 1;
    out.push({ value: lo, mask: 0xffff & ~(size - 1) });
    lo += size;
  }
  return out;
}

/** The MurmurHash3 block step for one 32-bit word. */
function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3's finaliser: every input bit affects the low bits used as the slot index. */
function finishHash(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** Entries gathered for one mask vector before its table is sized. */
interface TupleBuilder {
  words: number[];
  masks: number[];
  /** Masked words, words.length per entry. */
  values: number[];
  ranks: number[];
}

/** All entries sharing one mask vector, in one hash table. */
class Tuple {
  /** The best (lowest) rank stored here; tuples are searched in ascending order of it. */
  readonly minRank: number;
  readonly size: number;
  private readonly nw: number;
  private readonly words: Int32Array;
  private readonly masks: Int32Array;
  private readonly capMask: number;
  private readonly keys: Int32Array;
  private readonly hashes: Int32Array;
  /** -1 marks an empty slot. */
  private readonly ranks: Int32Array;

  constructor(b: TupleBuilder) {
    const nw = b.words.length;
    this.nw = nw;
    this.words = Int32Array.from(b.words);
    this.masks = Int32Array.from(b.masks);
    const n = b.ranks.length;
    let cap = 2;
    while (cap < n * 2) cap *= 2;
    this.capMask = cap - 1;
    this.keys = new Int32Array(cap * nw);
    this.hashes = new Int32Array(cap);
    this.ranks = new Int32Array(cap).fill(-1);
    let size = 0;
    let minRank = MAX_ID;
    for (let e = 0; e < n; e++) {
      const base = e * nw;
      let h = HASH_SEED;
      for (let j = 0; j < nw; j++) h = mixWord(h, b.values[base + j]);
      h = finishHash(h);
      let i = h & this.capMask;
      for (;;) {
        const r = this.ranks[i];
        if (r < 0) {
          this.ranks[i] = b.ranks[e];
          this.hashes[i] = h;
          for (let j = 0; j < nw; j++) this.keys[i * nw + j] = b.values[base + j];
          size++;
          break;
        }
        if (this.hashes[i] === h && this.sameKey(i, b.values, base)) {
          // Same masked value as an entry already here: only the better rule can ever be the answer.
          if (b.ranks[e] < r) this.ranks[i] = b.ranks[e];
          break;
        }
        i = (i + 1) & this.capMask;
      }
      if (b.ranks[e] < minRank) minRank = b.ranks[e];
    }
    this.size = size;
    this.minRank = minRank;
  }

  private sameKey(slot: number, values: number[], base: number): boolean {
    for (let j = 0; j < this.nw; j++) if (this.keys[slot * this.nw + j] !== values[base + j]) return false;
    return true;
  }

  /** Rank of the entry matching key, or -1. */
  find(key: Uint32Array): number {
    const nw = this.nw;
    const words = this.words;
    const masks = this.masks;
    let h = HASH_SEED;
    for (let j = 0; j < nw; j++) h = mixWord(h, key[words[j]] & masks[j]);
    h = finishHash(h);
    const capMask = this.capMask;
    const ranks = this.ranks;
    const hashes = this.hashes;
    const keys = this.keys;
    let i = h & capMask;
    for (;;) {
      const r = ranks[i];
      if (r < 0) return -1;
      if (hashes[i] === h) {
        const base = i * nw;
        let j = 0;
        while (j < nw && (key[words[j]] & masks[j]) === keys[base + j]) j++;
        if (j === nw) return r;
      }
      i = (i + 1) & capMask;
    }
  }
}

function checkPortRange(r: readonly [number, number] | undefined, what: string, id: number): void {
  if (r === undefined) return;
  const [lo, hi] = r;
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 0 || hi > 0xffff || lo > hi) {
    throw new RangeError(`rule ${id}: ${what} port range [${lo}, ${hi}] is not within 0..65535 with lo <= hi`);
  }
}

function checkRule(rule: ClassifierRule): void {
  const { id, priority, value, mask } = rule;
  if (!Number.isInteger(id) || id < 0 || id > MAX_ID) throw new RangeError(`rule id ${id} is not a non-negative 31-bit integer`);
  if (!Number.isInteger(priority) || priority < 0 || priority > 0xffff) {
    throw new RangeError(`rule ${id}: priority ${priority} is not within 0..65535`);
  }
  if (value.length < KEY_WORDS || mask.length < KEY_WORDS) throw new RangeError(`rule ${id}: value and mask need ${KEY_WORDS} words`);
  for (let w = 0; w < KEY_WORDS; w++) {
    if ((value[w] & ~mask[w]) !== 0) throw new RangeError(`rule ${id}: value word ${w} has bits outside its mask`);
  }
  checkPortRange(rule.srcPorts, 'source', id);
  checkPortRange(rule.dstPorts, 'destination', id);
}

const ANY_PORT: readonly [number, number] = [0, 0xffff];

export class Classifier {
  /** How many distinct mask vectors the rules compiled into: the worst-case probes per lookup. */
  readonly tupleCount: number;
  /** Hash entries over all tuples, after port-range expansion and after dropping shadowed duplicates. */
  readonly entryCount: number;
  private readonly tuples: Tuple[];
  private readonly rankToId: Int32Array;

  constructor(rules: readonly ClassifierRule[]) {
    const ids = new Set<number>();
    for (const rule of rules) {
      checkRule(rule);
      if (ids.has(rule.id)) throw new RangeError(`rule id ${rule.id} appears twice`);
      ids.add(rule.id);
    }
    const order = rules.map((_, i) => i);
    order.sort((a, b) => rules[a].priority - rules[b].priority || rules[a].id - rules[b].id);
    this.rankToId = new Int32Array(order.length);

    const builders = new Map<string, TupleBuilder>();
    for (let rank = 0; rank < order.length; rank++) {
      const rule = rules[order[rank]];
      this.rankToId[rank] = rule.id;
      const { value, mask } = rule;
      let shape = '';
      for (let w = 0; w < KEY_WORDS; w++) if (w !== PORTS) shape += `${mask[w] >>> 0},`;
      const src = portRangePrefixes(...(rule.srcPorts ?? ANY_PORT));
      const dst = portRangePrefixes(...(rule.dstPorts ?? ANY_PORT));
      // The caller keeps word 6 at zero, but a rule that did mask it still means "and these port bits":
      // intersect it with each block, dropping blocks that contradict it.
      const ownMask = mask[PORTS] >>> 0;
      const ownValue = value[PORTS] >>> 0;
      for (const s of src) {
        for (const d of dst) {
          const pm = ((s.mask << 16) | d.mask) >>> 0;
          const pv = ((s.value << 16) | d.value) >>> 0;
          if (((pv ^ ownValue) & pm & ownMask) !== 0) continue;
          const m6 = (pm | ownMask) >>> 0;
          const v6 = (pv | ownValue) | 0;
          const tupleKey = shape + m6;
          let b = builders.get(tupleKey);
          if (b === undefined) {
            b = { words: [], masks: [], values: [], ranks: [] };
            for (let w = 0; w < KEY_WORDS; w++) {
              const m = w === PORTS ? m6 : mask[w];
              if (m !== 0) {
                b.words.push(w);
                b.masks.push(m | 0);
              }
            }
            builders.set(tupleKey, b);
          }
          for (const w of b.words) b.values.push(w === PORTS ? v6 : value[w] | 0);
          b.ranks.push(rank);
        }
      }
    }

    this.tuples = [...builders.values()].map((b) => new Tuple(b)).sort((a, b) => a.minRank - b.minRank);
    this.tupleCount = this.tuples.length;
    let entries = 0;
    for (const t of this.tuples) entries += t.size;
    this.entryCount = entries;
  }

  /** Id of the best matching rule, or -1. Allocates nothing. */
  lookup(key: Uint32Array): number {
    const tuples = this.tuples;
    const n = tuples.length;
    let best = MAX_ID;
    for (let t = 0; t < n; t++) {
      const tuple = tuples[t];
      // Sound and exact because ranks are a strict total order; see "Priority order and early exit" above.
      if (best <= tuple.minRank) break;
      const r = tuple.find(key);
      if (r >= 0 && r < best) best = r;
    }
    return best === MAX_ID ? -1 : this.rankToId[best];
  }
}

/** Whether rule matches key: every masked word equal and both ports in range. */
export function ruleMatches(rule: ClassifierRule, key: Uint32Array): boolean {
  const { value, mask } = rule;
  for (let w = 0; w < KEY_WORDS; w++) if (((key[w] & mask[w]) >>> 0) !== value[w]) return false;
  const ports = key[PORTS];
  const src = ports >>> 16;
  const dst = ports & 0xffff;
  if (rule.srcPorts !== undefined && (src < rule.srcPorts[0] || src > rule.srcPorts[1])) return false;
  if (rule.dstPorts !== undefined && (dst < rule.dstPorts[0] || dst > rule.dstPorts[1])) return false;
  return true;
}

/** The naive reference: scan every rule. Used by the property tests and by `vsw trace`-style explanations. */
export function linearLookup(rules: readonly ClassifierRule[], key: Uint32Array): number {
  let best: ClassifierRule | undefined;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i];
    if (best !== undefined && (rule.priority > best.priority || (rule.priority === best.priority && rule.id > best.id))) continue;
    if (ruleMatches(rule, key)) best = rule;
  }
  return best === undefined ? -1 : best.id;
}
