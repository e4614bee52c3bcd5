/**
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
 * TABLE_SIZE entries, each naming a backend, filled so that every backend
 * owns about the same share and adding or removing one of N backends moves
 * about 1/N of the entries. A flow's hash picks an entry; the table is
 * rebuilt on the control path whenever the set of eligible backends changes.
 *
 * Each backend's preference list is a permutation of the table (an offset and
 * a skip, both from hashes of its name); backends take turns claiming their
 * next preferred free entry until the table is full. Names, not positions,
 * seed the permutations, so a backend keeps its entries across restarts and
 * whatever order the backends are listed in.
 */

/** A prime well above 100 times the backends a balancer has, as the paper advises. */
export const MAGLEV_TABLE_SIZE = 16381;

function fnv1a(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // A final avalanche: FNV leaves nearby names with nearby low bits.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}

/**
 * The table for backends named `names` (eligible ones only): entry -> index
 * into `names`, or all -1 when there is none. Weights are equal.
 */
export function buildMaglevTable(names: readonly string[], size = MAGLEV_TABLE_SIZE): Int16Array {
  if (new Set(names).size !== names.length) throw new Error('backend names must be distinct');
  const table = new Int16Array(size).fill(-1);
  const n = names.length;
  if (n === 0) return table;
  if (n > 0x7fff) throw new RangeError(`a balancer takes at most ${0x7fff} backends`);
  // Turns are taken in name order: the table must not depend on the order the backends were listed in.
  const order = Array.from(names.keys()).sort((a, b) => (names[a] < names[b] ? -1 : names[a] > names[b] ? 1 : 0));
  const offset = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const next = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    offset[i] = fnv1a(names[i], 0x2545f491) % size;
    skip[i] = (fnv1a(names[i], 0x9e3779b9) % (size - 1)) + 1;
  }
  let filled = 0;
  for (;;) {
    for (const i of order) {
      let c = (offset[i] + next[i] * skip[i]) % size;
      while (table[c] >= 0) {
        next[i]++;
        c = (offset[i] + next[i] * skip[i]) % size;
      }
      table[c] = i;
      next[i]++;
      if (++filled === size) return table;
    }
  }
}
