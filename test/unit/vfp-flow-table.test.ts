import test from 'ava';
import { FlowTable } from '../../src/vfp/flow-table.js';
import { KEY_WORDS } from '../../src/vfp/key.js';
import { mulberry32 as prng } from './helpers/random.js';


interface Flow {
  port: number;
  key: Uint32Array;
  id: string;
}

/** A universe of distinct flows; some differ from another only in the port or in one word. */
function universe(n: number, rnd: () => number): Flow[] {
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
function churn(t: import('ava').ExecutionContext, opts: { capacity: number; flows: number; ops: number; seed: number; hashOf?: (ft: FlowTable, f: Flow) => number }) {
  const rnd = prng(opts.seed);
  const ft = new FlowTable(opts.capacity);
  const hashOf = opts.hashOf ?? ((table: FlowTable, f: Flow) => table.hash(f.port, f.key));
  const flows = universe(opts.flows, rnd);
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
