import test from 'ava';
import { FlowTable } from '../../src/vfp/flow-table.js';
import { KEY_WORDS, KeyWord } from '../../src/vfp/key.js';
import { mulberry32 as prng } from './helpers/random.js';


interface Flow {
  port: number;
  key: Uint32Array;
  id: string;
}

/** The key words only an IPv6 address fills: the table keeps them apart. */
const WIDE_WORDS = [1, 2, 3].flatMap((w) => [KeyWord.SRC_IP + w, KeyWord.DST_IP + w]);

/**
 * A universe of distinct flows; some differ from another only in the port or
 * in one word. A share of `narrow` of the fresh keys has zero in the words
 * beyond each address's first, as an IPv4 flow has.
 */
function universe(n: number, rnd: () => number, narrow = 0): Flow[] {
  const flows: Flow[] = [];
  const seen = new Set<string>();
  while (flows.length < n) {
    const key = new Uint32Array(KEY_WORDS);
    if (flows.length > 0 && rnd() < 0.3) {
      // A near-twin of an existing flow: same key, another word or port changed.
      key.set(flows[Math.floor(rnd() * flows.length)].key);
      key[Math.floor(rnd() * KEY_WORDS)] ^= 1 << Math.floor(rnd() * 32);
    } else {
      for (let w = 0; w < KEY_WORDS; w++) key[w] = rnd() < 0.3 ? 0 : Math.floor(rnd() * 2 ** 32);
      if (narrow > 0 && rnd() < narrow) for (const w of WIDE_WORDS) key[w] = 0;
    }
    const port = Math.floor(rnd() * 4);
    const id = `${port}:${key.join(',')}`;
    if (seen.has(id)) continue;
    seen.add(id);
    flows.push({ port, key, id });
  }
  return flows;
}

/**
 * Random insert/lookup/remove against a Map. `hashOf` lets a test force
 * collisions: the table must be right whatever the hash quality.
 */
function churn(
  t: import('ava').ExecutionContext,
  opts: { capacity: number; flows: number; ops: number; seed: number; hashOf?: (ft: FlowTable, f: Flow) => number; narrow?: number },
) {
  const rnd = prng(opts.seed);
  const ft = new FlowTable(opts.capacity);
  const hashOf = opts.hashOf ?? ((table: FlowTable, f: Flow) => table.hash(f.port, f.key));
  const flows = universe(opts.flows, rnd, opts.narrow);
  const ref = new Map<string, number>(); // flow id -> entry number
  const owner = new Map<number, string>(); // entry number -> flow id
  const out = new Uint32Array(KEY_WORDS);
  let inserts = 0;
  let removes = 0;
  let fulls = 0;
  const fail = (msg: string) => {
    t.fail(msg);
    return false;
  };
  const checkAll = (): boolean => {
    if (ft.size !== ref.size) return fail(`size ${ft.size}, reference ${ref.size}`);
    for (const f of flows) {
      const e = ft.lookup(f.port, f.key, hashOf(ft, f));
      const want = ref.get(f.id) ?? -1;
      if (e !== want) return fail(`lookup of ${f.id}: ${e}, want ${want}`);
    }
    const live = ft.liveEntries().sort((a, b) => a - b);
    const want = [...owner.keys()].sort((a, b) => a - b);
    if (live.join() !== want.join()) return fail('liveEntries differs from the reference');
    return true;
  };
  for (let op = 0; op < opts.ops; op++) {
    const f = flows[Math.floor(rnd() * flows.length)];
    const h = hashOf(ft, f);
    const e = ft.lookup(f.port, f.key, h);
    const want = ref.get(f.id);
    if (e !== (want ?? -1)) {
      fail(`op ${op}: lookup ${e}, want ${want ?? -1}`);
      return;
    }
    if (want === undefined) {
      if (rnd() < 0.6) {
        const n = ft.insert(f.port, f.key, h, op);
        if (ref.size >= opts.capacity) {
          if (n !== -1) {
            fail(`op ${op}: insert into a full table gave ${n}`);
            return;
          }
          fulls++;
          continue;
        }
        if (n < 0 || n >= opts.capacity || owner.has(n)) {
          fail(`op ${op}: insert gave ${n} (in use: ${owner.has(n)})`);
          return;
        }
        ref.set(f.id, n);
        owner.set(n, f.id);
        inserts++;
        if (ft.ingressPort(n) !== f.port || ft.keyOf(n, out).join() !== f.key.join()) {
          fail(`op ${op}: entry ${n} does not hold its key`);
          return;
        }
      }
    } else if (rnd() < 0.5) {
      ft.remove(want);
      ref.delete(f.id);
      owner.delete(want);
      removes++;
    }
    if (op % 5000 === 0 && !checkAll()) return;
  }
  if (!checkAll()) return;
  t.true(inserts > opts.ops / 10 && removes > opts.ops / 10, `inserts ${inserts}, removes ${removes}`);
  return { inserts, removes, fulls };
}

test('100k random inserts, lookups and removals agree with a Map', (t) => {
  const r = churn(t, { capacity: 2048, flows: 5000, ops: 100_000, seed: 1 });
  t.truthy(r);
  t.true(r!.fulls > 0, 'the table ran full along the way');
});

test('the same with a hash that collides all the time (long probe runs, backward-shift deletion)', (t) => {
  // 8 distinct hashes, all landing in one corner of the index: every probe run is long and wraps.
  const r = churn(t, { capacity: 256, flows: 400, ops: 40_000, seed: 2, hashOf: (ft, f) => ft.hash(f.port, f.key) & 7 });
  t.truthy(r);
  const s = churn(t, { capacity: 64, flows: 100, ops: 20_000, seed: 3, hashOf: () => 0xffffffff });
  t.truthy(s);
});

test('IPv4-shaped and IPv6-shaped keys side by side, including twins that differ only beyond the first address word', (t) => {
  const r = churn(t, { capacity: 2048, flows: 5000, ops: 100_000, seed: 4, narrow: 0.7 });
  t.truthy(r);
  const s = churn(t, { capacity: 256, flows: 400, ops: 40_000, seed: 5, narrow: 0.5, hashOf: (ft, f) => ft.hash(f.port, f.key) & 7 });
  t.truthy(s);
});

test('an IPv4 key is not the IPv6 key with the same first address words, and a reused entry forgets its IPv6 words', (t) => {
  const ft = new FlowTable(16);
  const v4 = new Uint32Array(KEY_WORDS);
  v4[KeyWord.ETH_VLAN] = 0x0800 << 16;
  v4[KeyWord.SRC_IP] = 0x0a000002;
  v4[KeyWord.DST_IP] = 0x0a000003;
  const v6 = Uint32Array.from(v4);
  v6[KeyWord.ETH_VLAN] = 0x86dd << 16;
  const v6Twin = Uint32Array.from(v4);
  v6Twin[KeyWord.DST_IP + 3] = 1;
  const a = ft.insert(1, v4, 7, 0);
  t.is(ft.lookup(1, v6Twin, 7), -1, 'same hash, same first words, one more address word: a miss');
  const b = ft.insert(1, v6Twin, 7, 0);
  t.is(ft.lookup(1, v4, 7), a);
  t.is(ft.lookup(1, v6Twin, 7), b);
  t.deepEqual(Array.from(ft.keyOf(b, new Uint32Array(KEY_WORDS))), Array.from(v6Twin));
  ft.remove(b);
  const c = ft.insert(1, v6, 7, 0);
  t.is(c, b, 'the freed entry is reused');
  t.deepEqual(Array.from(ft.keyOf(c, new Uint32Array(KEY_WORDS).fill(9))), Array.from(v6), 'no address word of the old key is left');
  t.is(ft.lookup(1, v6Twin, 7), -1);
  t.is(ft.lookup(1, v6, 7), c);
  t.is(ft.ingressPort(c), 1);
});

test('a decision starts over cleanly: a drop after a forward and a forward after a drop read only their own columns', (t) => {
  const ft = new FlowTable(16);
  const ct = { serial: (slot: number) => slot * 10, alive: () => true };
  const key = new Uint32Array(KEY_WORDS);
  const e = ft.insert(3, key, ft.hash(3, key), 0);
  ft.begin(e, 1, 1);
  ft.recordForward(e, 5, 2, 4, 6, ct, 9, 12, 100);
  t.is(ft.meterBucket[e], 12);
  t.is(ft.dropPort[e], -1);
  t.is(ft.ctOutSerial[e], 40);
  t.true(ft.connectionsValid(e, ct, 0));
  ft.begin(e, 1, 1);
  ft.recordDrop(e, 7, 3, 5, 2, 0xfffffffe, 60);
  t.is(ft.egress[e], -1);
  t.is(ft.connectionEpoch[e], 0xfffffffe, 'a whole 32-bit epoch');
  t.is(ft.transposition[e], -1);
  t.is(ft.ctOut[e], -1);
  t.is(ft.ctIn[e], -1);
  const noConnection = {
    serial: () => {
      t.fail('a drop has no connection to check');
      return 0;
    },
    alive: () => false,
  };
  t.true(ft.connectionsValid(e, noConnection, 0));
  t.is(ft.dropPort[e], 3);
  t.is(ft.dropReason[e], 7);
  ft.begin(e, 1, 1);
  ft.recordForward(e, 5, 2, -1, -1, ct, -1, -1, 100);
  t.is(ft.meterBucket[e], -1, 'no meter');
  t.is(ft.dropPort[e], -1);
  t.is(ft.packets[e], 1);
  t.is(ft.bytes[e], 100);
});

test('a full table returns -1; a removal makes room, and the freed entry number is reused', (t) => {
  const ft = new FlowTable(16);
  const key = new Uint32Array(KEY_WORDS);
  const got: number[] = [];
  for (let i = 0; i < 16; i++) {
    key[6] = i;
    got.push(ft.insert(1, key, ft.hash(1, key), 0));
  }
  t.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => i));
  t.is(ft.size, 16);
  key[6] = 99;
  t.is(ft.insert(1, key, ft.hash(1, key), 0), -1);
  t.is(ft.size, 16);
  t.is(ft.lookup(1, key, ft.hash(1, key)), -1, 'the refused key is not findable');
  ft.remove(got[5]);
  t.is(ft.size, 15);
  const e = ft.insert(1, key, ft.hash(1, key), 0);
  t.is(e, got[5]);
  t.is(ft.lookup(1, key, ft.hash(1, key)), e);
  key[6] = 5;
  t.is(ft.lookup(1, key, ft.hash(1, key)), -1, 'the removed key is gone');
});

test('the port is part of the key', (t) => {
  const ft = new FlowTable(16);
  const key = new Uint32Array(KEY_WORDS).fill(7);
  const a = ft.insert(1, key, ft.hash(1, key), 0);
  t.is(ft.lookup(2, key, ft.hash(2, key)), -1);
  t.is(ft.lookup(2, key, ft.hash(1, key)), -1, 'same hash, other port: still a miss');
  const b = ft.insert(2, key, ft.hash(2, key), 0);
  t.not(a, b);
  t.is(ft.lookup(1, key, ft.hash(1, key)), a);
  t.is(ft.lookup(2, key, ft.hash(2, key)), b);
  t.not(ft.hash(1, key), ft.hash(2, key));
});

test('entry numbers are stable while other entries come and go', (t) => {
  const rnd = prng(9);
  const ft = new FlowTable(1024);
  const flows = universe(1000, rnd);
  const numbers = flows.map((f) => ft.insert(f.port, f.key, ft.hash(f.port, f.key), 0));
  t.false(numbers.includes(-1));
  // Data stored per entry, to prove nothing moved.
  numbers.forEach((e, i) => (ft.egress[e] = i));
  const removed = new Set<number>();
  for (let i = 0; i < flows.length; i++) if (rnd() < 0.5) removed.add(i);
  for (const i of removed) ft.remove(numbers[i]);
  // Fill the holes with new flows.
  const more = universe(1400, prng(10)).filter((f) => !flows.some((g) => g.id === f.id)).slice(0, removed.size);
  for (const f of more) t.true(ft.insert(f.port, f.key, ft.hash(f.port, f.key), 0) >= 0);
  for (let i = 0; i < flows.length; i++) {
    if (removed.has(i)) continue;
    const f = flows[i];
    const e = ft.lookup(f.port, f.key, ft.hash(f.port, f.key));
    if (e !== numbers[i] || ft.egress[e] !== i) {
      t.fail(`flow ${i}: entry ${e}, was ${numbers[i]}`);
      return;
    }
  }
  t.is(ft.size, flows.length);
});

test('sweep visits at most budget entries per call, resumes where it stopped, and removes what is expired', (t) => {
  const ft = new FlowTable(64);
  const key = new Uint32Array(KEY_WORDS);
  const entries: number[] = [];
  for (let i = 0; i < 40; i++) {
    key[6] = i;
    entries.push(ft.insert(0, key, ft.hash(0, key), i));
  }
  const visited: number[] = [];
  const released: number[] = [];
  // Expired: the even entries. onRemove runs before the entry is freed, while its data is still there.
  const expired = (e: number) => {
    visited.push(e);
    return ft.created[e] % 2 === 0;
  };
  const onRemove = (e: number) => {
    t.is(ft.inUse[e], 1, 'still in use when onRemove runs');
    released.push(e);
  };
  t.is(ft.sweep(10, expired, onRemove), 5);
  t.is(visited.length, 10);
  t.is(ft.size, 35);
  t.is(ft.sweep(10, expired, onRemove), 5);
  t.deepEqual(new Set(visited).size, 20, 'the second call went on from where the first stopped');
  t.is(ft.sweep(100, expired, onRemove), 10, 'a budget beyond the slab visits each entry at most once');
  t.is(ft.size, 20);
  t.is(released.length, 20);
  for (let i = 0; i < 40; i++) {
    key[6] = i;
    t.is(ft.lookup(0, key, ft.hash(0, key)) >= 0, i % 2 === 1, `flow ${i}`);
  }
  // The 40-entry visit above went 20..39 and wrapped through 0..19: the cursor is back at 20.
  t.is(ft.sweep(5, () => true, () => {}), 2, 'entries 20-24, of which 21 and 23 are live');
  t.is(ft.size, 18);
  key[6] = 21;
  t.is(ft.lookup(0, key, ft.hash(0, key)), -1);
  key[6] = 25;
  t.not(ft.lookup(0, key, ft.hash(0, key)), -1);
  t.is(new FlowTable(16).sweep(10, () => true, () => t.fail('nothing to visit')), 0);
});

test('capacity is checked', (t) => {
  t.throws(() => new FlowTable(15), { instanceOf: RangeError });
  t.throws(() => new FlowTable(100.5), { instanceOf: RangeError });
  const ft = new FlowTable(100);
  t.is(ft.capacity, 100);
  t.true(ft.byteSize > 100 * 64);
});

test('an entry of capacity costs at most 160 bytes of typed arrays: 126 for an IPv4 flow, 24 more of IPv6 address words, 8 of index', (t) => {
  const ft = new FlowTable(1 << 16);
  t.true(ft.byteSize <= 160 * ft.capacity, `${ft.byteSize / ft.capacity} bytes per entry`);
});
