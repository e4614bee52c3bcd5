/**
 * MurmurHash3's 32-bit mix over a run of key words, for the typed-array hash
 * tables of the frame path (flow table, conntrack). Math.imul keeps every step
 * in 32-bit integers, so nothing is allocated and V8 stays on small integers.
 * The result has 30 bits, more than any table here indexes.
 * Tables pass a random seed: a sender who cannot guess it cannot pick keys
 * that pile up in one probe chain.
 */
export function hashWords(words: Uint32Array, from: number, to: number, seed: number): number {
  let h = seed | 0;
  for (let w = from; w < to; w++) {
    let k = Math.imul(words[w], 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  // 30 bits: a small integer in V8 (a Smi), so returning it from a call that is not inlined
  // allocates nothing; a full 32-bit result would be boxed on every new flow.
  return h & 0x3fffffff;
}

export function randomSeed(): number {
  return (Math.random() * 0x100000000) >>> 0;
}
