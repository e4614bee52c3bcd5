import test from 'ava';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { Learn, VtepTable } from '../../src/tunnel/vtep-table.js';
import { mulberry32 } from './helpers/random.js';

const S = 1000; // ms per second
const VNI = 5001;
const HI = 0x0276;
const A = mustParseIpv4Addr('192.0.2.1');
const B = mustParseIpv4Addr('192.0.2.2');
const C = mustParseIpv4Addr('198.51.100.3');

function macLo(i: number): number {
  return (0x0a000000 + i) >>> 0;
}

/** The VTEP for a MAC, or -1. */
function vtepOf(table: VtepTable, vni: number, lo: number, now: number, hi = HI): number {
  const slot = table.lookup(vni, hi, lo, now);
  return slot < 0 ? -1 : table.vtepAt(slot);
}

test('learns a MAC behind a VTEP and looks it up', (t) => {
  const table = new VtepTable({ seed: 1 });
  t.is(table.learn(VNI, HI, macLo(1), A, 0), Learn.NEW);
  t.is(vtepOf(table, VNI, macLo(1), 1), A);
  t.is(vtepOf(table, VNI, macLo(2), 1), -1);
  t.is(table.learn(VNI, HI, macLo(1), A, 5), Learn.REFRESHED);
  t.is(table.size, 1);
  t.like(table.counters(), { entries: 1, learnedEntries: 1, staticEntries: 0, learned: 1, moved: 0 });
});

test('VTEP addresses above 2^31 come back unsigned', (t) => {
  const table = new VtepTable({ seed: 1 });
  t.is(table.learn(VNI, HI, macLo(1), C, 0), Learn.NEW);
  t.true(C > 0x7fffffff);
  t.is(vtepOf(table, VNI, macLo(1), 0), C);
  // The int32 bit patterns the data path passes name the same MAC and VTEP.
  const lo = 0xfedcba98;
  t.is(table.learn(VNI, HI, lo | 0, C | 0, 0), Learn.NEW);
  t.is(vtepOf(table, VNI, lo, 0), C, 'stored as the u32');
  t.is(table.learn(VNI, HI, lo, C, 1), Learn.REFRESHED);
  t.is(table.lookup(VNI, HI, lo | 0, 1), table.lookup(VNI, HI, lo, 1));
});

test('the same MAC on two VNIs is two entries (tenant isolation)', (t) => {
  const table = new VtepTable({ seed: 2 });
  table.learn(1, HI, macLo(7), A, 0);
  table.learn(2, HI, macLo(7), B, 0);
  t.is(vtepOf(table, 1, macLo(7), 0), A);
  t.is(vtepOf(table, 2, macLo(7), 0), B);
  t.is(vtepOf(table, 3, macLo(7), 0), -1);
  t.is(table.counters().moved, 0, 'no move across VNIs');
  t.is(table.flushVni(1), 1);
  t.is(vtepOf(table, 1, macLo(7), 0), -1);
  t.is(vtepOf(table, 2, macLo(7), 0), B, 'the other VNI keeps its entry');
});

test('a MAC that shows up behind another VTEP moves, counted, and the epoch changes', (t) => {
  const table = new VtepTable({ seed: 3 });
  table.learn(VNI, HI, macLo(1), A, 0);
  const epoch = table.epoch;
  t.is(table.learn(VNI, HI, macLo(1), B, 1), Learn.MOVED);
  t.is(vtepOf(table, VNI, macLo(1), 2), B);
  t.is(table.counters().moved, 1);
  t.not(table.epoch, epoch);
  const e2 = table.epoch;
  table.learn(VNI, HI, macLo(2), A, 2);
  t.is(table.epoch, e2, 'a new MAC needs no epoch bump');
});

test('learned entries age out on lookup, on sweep, and start afresh when learned again', (t) => {
  const table = new VtepTable({ agingSeconds: 10, seed: 4 });
  table.learn(VNI, HI, macLo(1), A, 0);
  table.learn(VNI, HI, macLo(2), A, 0);
  table.learn(VNI, HI, macLo(3), A, 5 * S);
  t.is(vtepOf(table, VNI, macLo(1), 10 * S), A, 'exactly the aging time is still alive');
  t.is(vtepOf(table, VNI, macLo(1), 10 * S + 1), -1);
  t.is(table.counters().aged, 1);
  t.is(table.sweep(10 * S + 1), 1, 'the other stale one');
  t.is(vtepOf(table, VNI, macLo(3), 10 * S + 1), A);
  t.is(table.counters().aged, 2);
  t.is(table.sweep(16 * S), 1);
  t.is(table.size, 0);
  // Learned again after expiry without a sweep: aged, then new.
  table.learn(VNI, HI, macLo(4), A, 0);
  t.is(table.learn(VNI, HI, macLo(4), B, 20 * S), Learn.NEW);
  t.like(table.counters(), { aged: 4, moved: 0 });
  t.is(vtepOf(table, VNI, macLo(4), 20 * S), B);
});

test('refreshing keeps a learned entry alive; the listing leaves expired ones out', (t) => {
  const table = new VtepTable({ agingSeconds: 1, seed: 5 });
  table.learn(VNI, HI, macLo(1), A, 0);
  table.learn(VNI, HI, macLo(2), A, 0);
  table.learn(VNI, HI, macLo(1), A, 800);
  t.deepEqual(
    table.entries(1700).map((e) => e.mac),
    ['02:76:0a:00:00:01'],
  );
  t.is(vtepOf(table, VNI, macLo(1), 1700), A);
});

test('static entries win over learning, never age, and replace learned ones', (t) => {
  const table = new VtepTable({ agingSeconds: 1, seed: 6 });
  t.true(table.addStatic(VNI, HI, macLo(1), A));
  t.is(table.learn(VNI, HI, macLo(1), B, 0), Learn.STATIC_HELD);
  t.is(table.learn(VNI, HI, macLo(1), A, 0), Learn.STATIC_HELD);
  t.is(table.counters().conflicts, 1, 'only the disagreeing claim is a conflict');
  t.is(vtepOf(table, VNI, macLo(1), 3600 * S), A, 'never ages');
  t.is(table.sweep(3600 * S), 0);

  table.learn(VNI, HI, macLo(2), B, 0);
  const epoch = table.epoch;
  t.true(table.addStatic(VNI, HI, macLo(2), C), 'a learned entry turns static');
  t.not(table.epoch, epoch, 'its VTEP changed');
  t.like(table.counters(), { staticEntries: 2, learnedEntries: 0 });
  t.is(vtepOf(table, VNI, macLo(2), 3600 * S), C);

  t.true(table.addStatic(VNI, HI, macLo(1), B), 'a static entry can be re-pointed');
  t.is(vtepOf(table, VNI, macLo(1), 0), B);

  t.false(table.forget(VNI, HI, macLo(1)), 'forget leaves static entries alone');
  t.true(table.removeStatic(VNI, HI, macLo(1)));
  t.false(table.removeStatic(VNI, HI, macLo(1)));
  table.learn(VNI, HI, macLo(3), A, 0);
  t.false(table.removeStatic(VNI, HI, macLo(3)), 'removeStatic leaves learned entries alone');
  t.true(table.forget(VNI, HI, macLo(3)));
  t.is(table.size, 1);
});

test('input checks of the control-plane calls', (t) => {
  const table = new VtepTable({ seed: 7 });
  t.throws(() => table.addStatic(0, HI, 1, A), { instanceOf: RangeError, message: /VNI/ });
  t.throws(() => table.addStatic(0x1000000, HI, 1, A), { instanceOf: RangeError });
  t.true(table.addStatic(0xffffff, HI, 1, A));
  t.throws(() => table.addStatic(VNI, HI, 1, 0), { instanceOf: RangeError, message: /0\.0\.0\.0/ });
  t.throws(() => table.addStatic(VNI, HI, 1, mustParseIpv4Addr('239.1.1.1')), { instanceOf: RangeError });
  t.throws(() => table.addStatic(VNI, HI, 1, 0xffffffff), { instanceOf: RangeError });
  t.throws(() => table.addStatic(VNI, 0x0100, 1, A), { instanceOf: RangeError, message: /unicast MAC/ });
  t.throws(() => new VtepTable({ maxStatic: 0, maxLearned: 0 }), { instanceOf: RangeError });
  t.throws(() => new VtepTable({ agingSeconds: 0 }), { instanceOf: RangeError });
});

test('multicast and zero source MACs are never learned', (t) => {
  const table = new VtepTable({ seed: 8 });
  t.is(table.learn(VNI, 0xffff, 0xffffffff, A, 0), Learn.INVALID);
  t.is(table.learn(VNI, 0x0100, 0x5e000001, A, 0), Learn.INVALID);
  t.is(table.learn(VNI, 0, 0, A, 0), Learn.INVALID);
  t.is(table.size, 0);
  t.is(table.counters().learned, 0);
});

test('the learned bound holds: the newest stay, evictions and refusals are counted', (t) => {
  const table = new VtepTable({ maxStatic: 10, maxLearned: 100, agingSeconds: 3600, seed: 9 });
  for (let i = 0; i < 1000; i++) table.learn(VNI, HI, macLo(i), A, i);
  const c = table.counters();
  t.is(c.learnedEntries, 100);
  t.is(c.learned + c.refused, 1000);
  t.is(c.evicted, c.learned - 100);
  t.true(c.evicted > 800, `most new MACs evict an old one (evicted ${c.evicted}, refused ${c.refused})`);
  let recent = 0;
  for (let i = 900; i < 1000; i++) if (vtepOf(table, VNI, macLo(i), 1000) >= 0) recent++;
  t.true(recent >= 60, `most of the 100 newest MACs survive approximate LRU (got ${recent})`);
});

test('static entries are never evicted; beyond maxStatic they are refused', (t) => {
  const table = new VtepTable({ maxStatic: 50, maxLearned: 20, agingSeconds: 3600, seed: 10 });
  for (let i = 0; i < 50; i++) t.true(table.addStatic(VNI, 0x0200, macLo(i), A));
  t.false(table.addStatic(VNI, 0x0200, macLo(50), A), 'the 51st static entry is refused');
  t.true(table.addStatic(VNI, 0x0200, macLo(0), B), 're-pointing an existing static entry needs no room');
  for (let i = 0; i < 500; i++) table.learn(VNI, HI, macLo(i), C, i);
  for (let i = 0; i < 50; i++) t.is(vtepOf(table, VNI, macLo(i), 500, 0x0200), i === 0 ? B : A);
  const c = table.counters();
  t.like(c, { staticEntries: 50, learnedEntries: 20 });
  t.is(c.learned + c.refused, 500);
  // A learned entry cannot turn static past the static bound, and stays learned.
  const learnedLo = [...Array(500).keys()].map(macLo).find((lo) => table.lookup(VNI, HI, lo, 500) >= 0)!;
  t.false(table.addStatic(VNI, HI, learnedLo, A));
  t.false(table.isStaticAt(table.lookup(VNI, HI, learnedLo, 500)));
});

test('maxLearned 0 turns learning off', (t) => {
  const table = new VtepTable({ maxStatic: 4, maxLearned: 0, seed: 11 });
  t.is(table.learn(VNI, HI, macLo(1), A, 0), Learn.REFUSED);
  t.is(table.counters().refused, 1);
  t.true(table.addStatic(VNI, HI, macLo(1), A));
});

test('flush by VNI, by VTEP and by kind', (t) => {
  const table = new VtepTable({ seed: 12 });
  table.addStatic(1, HI, macLo(1), A);
  table.learn(1, HI, macLo(2), A, 0);
  table.learn(1, HI, macLo(3), B, 0);
  table.learn(2, HI, macLo(4), A, 0);
  table.addStatic(2, HI, macLo(5), B);
  t.is(table.flush({ vni: 1, vtep: A, kind: 'learned' }), 1);
  t.is(table.flush({ vtep: A }), 2, 'the static one of VNI 1 and the learned one of VNI 2');
  t.is(table.flush({ kind: 'static' }), 1);
  t.deepEqual(
    table.entries(0).map((e) => [e.vni, e.mac, e.vtep, e.kind]),
    [[1, '02:76:0a:00:00:03', '192.0.2.2', 'learned']],
  );
});

test('entries() lists for operators, sorted, with ages', (t) => {
  const table = new VtepTable({ seed: 13 });
  table.learn(7, HI, macLo(2), C, 1 * S);
  table.addStatic(7, HI, macLo(1), A);
  table.learn(3, 0xaabb, 0xccddeeff, B, 2 * S);
  t.deepEqual(table.entries(4 * S), [
    { vni: 3, mac: 'aa:bb:cc:dd:ee:ff', vtep: '192.0.2.2', kind: 'learned', ageSeconds: 2 },
    { vni: 7, mac: '02:76:0a:00:00:01', vtep: '192.0.2.1', kind: 'static', ageSeconds: null },
    { vni: 7, mac: '02:76:0a:00:00:02', vtep: '198.51.100.3', kind: 'learned', ageSeconds: 3 },
  ]);
  t.is(table.entries(4 * S, 3).length, 1);
});

test('every remaining entry stays reachable after heavy deletion (backward shift)', (t) => {
  const table = new VtepTable({ maxStatic: 600, maxLearned: 600, seed: 14 });
  for (let i = 0; i < 1000; i++) {
    if (i % 2 === 0) table.addStatic(1 + (i % 3), HI, macLo(i), A);
    else table.learn(1 + (i % 3), HI, macLo(i), B, 0);
  }
  t.is(table.size, 1000);
  t.is(table.flushVni(2), 333);
  for (let i = 0; i < 1000; i += 7) table.forget(1 + (i % 3), HI, macLo(i));
  for (let i = 0; i < 1000; i++) {
    const vni = 1 + (i % 3);
    const gone = vni === 2 || (i % 7 === 0 && i % 2 === 1);
    const expected = gone ? -1 : i % 2 === 0 ? A : B;
    if (vtepOf(table, vni, macLo(i), 0) !== expected) {
      t.fail(`MAC ${i} in VNI ${vni}: expected ${expected}`);
      return;
    }
  }
  t.pass();
});

// ---- property test against a Map ------------------------------------------------

interface RefEntry {
  vtep: number;
  isStatic: boolean;
  seen: number;
}

/** The semantics of VtepTable without bounds, in the plainest code. */
class Reference {
  readonly m = new Map<string, RefEntry>();
  learned = 0;
  moved = 0;
  aged = 0;
  conflicts = 0;
  constructor(readonly agingMs: number) {}
  private expired(e: RefEntry, now: number): boolean {
    return !e.isStatic && now - e.seen > this.agingMs;
  }
  learn(k: string, vtep: number, now: number): number {
    const e = this.m.get(k);
    if (e === undefined) {
      this.m.set(k, { vtep, isStatic: false, seen: now });
      this.learned++;
      return Learn.NEW;
    }
    if (e.isStatic) {
      if (e.vtep !== vtep) this.conflicts++;
      return Learn.STATIC_HELD;
    }
    if (this.expired(e, now)) {
      this.aged++;
      this.learned++;
      this.m.set(k, { vtep, isStatic: false, seen: now });
      return Learn.NEW;
    }
    e.seen = now;
    if (e.vtep === vtep) return Learn.REFRESHED;
    e.vtep = vtep;
    this.moved++;
    return Learn.MOVED;
  }
  addStatic(k: string, vtep: number): void {
    this.m.set(k, { vtep, isStatic: true, seen: 0 });
  }
  remove(k: string, isStatic: boolean): boolean {
    const e = this.m.get(k);
    if (e === undefined || e.isStatic !== isStatic) return false;
    this.m.delete(k);
    return true;
  }
  lookup(k: string, now: number): number {
    const e = this.m.get(k);
    if (e === undefined) return -1;
    if (this.expired(e, now)) {
      this.m.delete(k);
      this.aged++;
      return -1;
    }
    return e.vtep;
  }
  sweep(now: number): number {
    let n = 0;
    for (const [k, e] of this.m) {
      if (this.expired(e, now)) {
        this.m.delete(k);
        n++;
      }
    }
    this.aged += n;
    return n;
  }
  flush(pred: (vni: number, e: RefEntry) => boolean): number {
    let n = 0;
    for (const [k, e] of this.m) {
      if (pred(Number(k.split(':')[0]), e)) {
        this.m.delete(k);
        n++;
      }
    }
    return n;
  }
  live(now: number): string[] {
    const out: string[] = [];
    for (const [k, e] of this.m) if (!this.expired(e, now)) out.push(`${k}=${e.vtep}/${e.isStatic ? 's' : 'l'}`);
    return out.sort();
  }
}

const VTEPS = [A, B, C, mustParseIpv4Addr('10.0.0.4')];

for (const seed of [1, 2, 3, 4, 5]) {
  test(`random operations agree with a Map (seed ${seed})`, (t) => {
    const rnd = mulberry32(seed);
    const pick = (n: number) => Math.floor(rnd() * n);
    const table = new VtepTable({ maxStatic: 200, maxLearned: 200, agingSeconds: 60, seed });
    const ref = new Reference(60 * S);
    let now = 0;
    for (let step = 0; step < 20_000; step++) {
      const vni = 1 + pick(3);
      const hi = pick(2) === 0 ? 0x0200 : 0x0276;
      const lo = macLo(pick(40));
      const k = `${vni}:${hi}:${lo}`;
      const vtep = VTEPS[pick(VTEPS.length)];
      const op = pick(100);
      let got: unknown;
      let want: unknown;
      if (op < 5) {
        now += pick(30 * S);
        continue;
      } else if (op < 45) {
        got = table.learn(vni, hi, lo, vtep, now);
        want = ref.learn(k, vtep, now);
      } else if (op < 52) {
        got = table.addStatic(vni, hi, lo, vtep);
        ref.addStatic(k, vtep);
        want = true;
      } else if (op < 57) {
        got = table.removeStatic(vni, hi, lo);
        want = ref.remove(k, true);
      } else if (op < 60) {
        got = table.forget(vni, hi, lo);
        want = ref.remove(k, false);
      } else if (op < 95) {
        got = vtepOf(table, vni, lo, now, hi);
        want = ref.lookup(k, now);
      } else if (op < 98) {
        got = table.sweep(now);
        want = ref.sweep(now);
      } else if (op < 99) {
        got = table.flush({ vni, kind: 'learned' });
        want = ref.flush((v, e) => v === vni && !e.isStatic);
      } else {
        got = table.flush({ vtep });
        want = ref.flush((_, e) => e.vtep === vtep);
      }
      if (got !== want || table.size !== ref.m.size) {
        t.fail(`step ${step} op ${op} on ${k}: got ${String(got)} (size ${table.size}), want ${String(want)} (size ${ref.m.size})`);
        return;
      }
    }
    const live = table
      .entries(now)
      .map((e) => `${e.vni}:${parseInt(e.mac.slice(0, 5).replace(':', ''), 16)}:${parseInt(e.mac.slice(6).replace(/:/g, ''), 16)}=${mustParseIpv4Addr(e.vtep)}/${e.kind[0]}`)
      .sort();
    t.deepEqual(live, ref.live(now));
    t.like(table.counters(), { learned: ref.learned, moved: ref.moved, aged: ref.aged, conflicts: ref.conflicts, evicted: 0, refused: 0 });
  });
}

test('random operations at a small bound: statics are exact, learned entries are right or gone', (t) => {
  const rnd = mulberry32(42);
  const pick = (n: number) => Math.floor(rnd() * n);
  const table = new VtepTable({ maxStatic: 30, maxLearned: 30, agingSeconds: 60, seed: 42 });
  const statics = new Map<string, number>();
  const learned = new Map<string, number>();
  let now = 0;
  for (let step = 0; step < 20_000; step++) {
    const vni = 1 + pick(2);
    const lo = macLo(pick(100));
    const k = `${vni}:${lo}`;
    const vtep = VTEPS[pick(VTEPS.length)];
    const op = pick(100);
    if (op < 2) now += pick(10 * S);
    else if (op < 50) {
      const r = table.learn(vni, HI, lo, vtep, now);
      if (r === Learn.NEW || r === Learn.MOVED || r === Learn.REFRESHED) learned.set(k, vtep);
      if (r === Learn.STATIC_HELD && !statics.has(k)) return void t.fail(`step ${step}: STATIC_HELD without a static entry`);
    } else if (op < 56) {
      if (table.addStatic(vni, HI, lo, vtep)) {
        statics.set(k, vtep);
        learned.delete(k);
      } else if (statics.size < 30 && !statics.has(k)) return void t.fail(`step ${step}: static refused below the bound`);
    } else if (op < 60) {
      if (table.removeStatic(vni, HI, lo) !== statics.delete(k)) return void t.fail(`step ${step}: removeStatic disagrees`);
    } else {
      const got = vtepOf(table, vni, lo, now);
      const s = statics.get(k);
      if (s !== undefined) {
        if (got !== s) return void t.fail(`step ${step}: static ${k} reads ${got}, want ${s}`);
      } else if (got === -1) {
        learned.delete(k);
      } else if (got !== learned.get(k)) {
        return void t.fail(`step ${step}: learned ${k} reads ${got}, want ${learned.get(k)}`);
      }
    }
    const c = table.counters();
    if (c.staticEntries !== statics.size || c.learnedEntries > 30) return void t.fail(`step ${step}: bounds or static count wrong`);
  }
  const c = table.counters();
  t.true(c.evicted > 0, 'the bound was exercised');
  t.true(c.learnedEntries <= 30);
});
