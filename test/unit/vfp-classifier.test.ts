import test from 'ava';
import {
  Classifier,
  linearLookup,
  portRangePrefixes,
  type ClassifierRule,
} from '../../src/vfp/classifier.js';
import { KEY_WORDS, KeyWord } from '../../src/vfp/key.js';
import { mulberry32 } from './helpers/random.js';

const TCP = 6;
const IPV4 = 0x0800;

function ip(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

function prefixMask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

interface RuleSpec {
  id: number;
  priority: number;
  /** word -> [value, mask]; the value is masked here. */
  fields?: Record<number, [number, number]>;
  src?: [number, number];
  dst?: [number, number];
}

function rule(spec: RuleSpec): ClassifierRule {
  const value = new Uint32Array(KEY_WORDS);
  const mask = new Uint32Array(KEY_WORDS);
  for (const [w, [v, m]] of Object.entries(spec.fields ?? {})) {
    value[Number(w)] = (v & m) >>> 0;
    mask[Number(w)] = m;
  }
  const r: ClassifierRule = { id: spec.id, priority: spec.priority, value, mask };
  if (spec.src) r.srcPorts = spec.src;
  if (spec.dst) r.dstPorts = spec.dst;
  return r;
}

interface KeySpec {
  proto?: number;
  src?: number;
  dst?: number;
  sport?: number;
  dport?: number;
}

function key(spec: KeySpec): Uint32Array {
  const k = new Uint32Array(KEY_WORDS);
  k[KeyWord.ETH_VLAN] = (IPV4 << 16) >>> 0;
  k[KeyWord.PROTO] = ((spec.proto ?? TCP) << 24) >>> 0;
  k[KeyWord.PORTS] = (((spec.sport ?? 40000) << 16) | (spec.dport ?? 80)) >>> 0;
  k[KeyWord.SRC_IP] = spec.src ?? ip(10, 0, 0, 1);
  k[KeyWord.DST_IP] = spec.dst ?? ip(10, 0, 0, 2);
  return k;
}

/** Checks the classifier against the reference as well as against the expected id. */
function both(rules: ClassifierRule[], k: Uint32Array): number {
  const c = new Classifier(rules);
  const got = c.lookup(k);
  const want = linearLookup(rules, k);
  if (got !== want) throw new Error(`classifier ${got} != linear ${want}`);
  return got;
}

test('exact match on protocol and destination address', (t) => {
  const rules = [
    rule({ id: 0, priority: 10, fields: { [KeyWord.PROTO]: [TCP << 24, 0xff000000], [KeyWord.DST_IP]: [ip(10, 0, 0, 2), 0xffffffff] } }),
  ];
  t.is(both(rules, key({})), 0);
  t.is(both(rules, key({ dst: ip(10, 0, 0, 3) })), -1);
  t.is(both(rules, key({ proto: 17 })), -1);
});

test('prefix match on the source address', (t) => {
  const rules = [rule({ id: 3, priority: 1, fields: { [KeyWord.SRC_IP]: [ip(10, 1, 2, 0), prefixMask(24)] } })];
  t.is(both(rules, key({ src: ip(10, 1, 2, 0) })), 3);
  t.is(both(rules, key({ src: ip(10, 1, 2, 255) })), 3);
  t.is(both(rules, key({ src: ip(10, 1, 3, 0) })), -1);
  t.is(both(rules, key({ src: ip(10, 1, 1, 255) })), -1);
});

test('port range boundaries', (t) => {
  const dstOnly = [rule({ id: 1, priority: 5, dst: [1000, 1999] })];
  t.is(both(dstOnly, key({ dport: 999 })), -1);
  t.is(both(dstOnly, key({ dport: 1000 })), 1);
  t.is(both(dstOnly, key({ dport: 1999 })), 1);
  t.is(both(dstOnly, key({ dport: 2000 })), -1);

  const srcAndDst = [rule({ id: 2, priority: 5, src: [1, 1023], dst: [443, 443] })];
  t.is(both(srcAndDst, key({ sport: 0, dport: 443 })), -1);
  t.is(both(srcAndDst, key({ sport: 1, dport: 443 })), 2);
  t.is(both(srcAndDst, key({ sport: 1023, dport: 443 })), 2);
  t.is(both(srcAndDst, key({ sport: 1024, dport: 443 })), -1);
  t.is(both(srcAndDst, key({ sport: 500, dport: 442 })), -1);
  t.is(both(srcAndDst, key({ sport: 500, dport: 444 })), -1);

  const edges = [rule({ id: 4, priority: 5, src: [65535, 65535], dst: [0, 0] })];
  t.is(both(edges, key({ sport: 65535, dport: 0 })), 4);
  t.is(both(edges, key({ sport: 65534, dport: 0 })), -1);
  t.is(both(edges, key({ sport: 65535, dport: 1 })), -1);
});

test('the lowest priority number wins whatever the order and ids', (t) => {
  const broad = rule({ id: 0, priority: 200, fields: { [KeyWord.DST_IP]: [ip(10, 0, 0, 0), prefixMask(8)] } });
  const narrow = rule({ id: 9, priority: 100, fields: { [KeyWord.DST_IP]: [ip(10, 0, 0, 2), 0xffffffff] }, dst: [80, 80] });
  t.is(both([broad, narrow], key({})), 9);
  t.is(both([narrow, broad], key({})), 9);
  t.is(both([broad, narrow], key({ dport: 81 })), 0);
});

test('a tie on priority goes to the lower id, across tuples too', (t) => {
  const a = rule({ id: 7, priority: 50, fields: { [KeyWord.DST_IP]: [ip(10, 0, 0, 2), 0xffffffff] } });
  const b = rule({ id: 3, priority: 50, fields: { [KeyWord.SRC_IP]: [ip(10, 0, 0, 0), prefixMask(16)] } });
  const c = rule({ id: 5, priority: 50 });
  t.is(both([a, b, c], key({})), 3);
  t.is(both([c, a, b], key({})), 3);
  t.is(both([a, c], key({})), 5);
  // Same tuple, same masked value: only the better one is kept.
  const d = rule({ id: 8, priority: 50, fields: { [KeyWord.DST_IP]: [ip(10, 0, 0, 2), 0xffffffff] } });
  const cl = new Classifier([d, a]);
  t.is(cl.lookup(key({})), 7);
  t.is(cl.entryCount, 1);
  t.is(cl.tupleCount, 1);
});

test('no match and no rules give -1', (t) => {
  t.is(both([], key({})), -1);
  const rules = [rule({ id: 0, priority: 1, fields: { [KeyWord.PROTO]: [17 << 24, 0xff000000] } })];
  t.is(both(rules, key({})), -1);
});

test('a wildcard-everything rule matches any key and loses to better rules', (t) => {
  const any = rule({ id: 1, priority: 65535 });
  t.is(both([any], key({})), 1);
  t.is(both([any], new Uint32Array(KEY_WORDS)), 1);
  t.is(both([any], new Uint32Array(KEY_WORDS).fill(0xffffffff)), 1);
  const specific = rule({ id: 2, priority: 0, fields: { [KeyWord.PROTO]: [TCP << 24, 0xff000000] } });
  t.is(both([any, specific], key({})), 2);
  t.is(both([any, specific], key({ proto: 17 })), 1);
  // Range 0-65535 is the same as no range.
  t.is(both([rule({ id: 3, priority: 0, src: [0, 65535], dst: [0, 65535] })], key({})), 3);
  t.is(new Classifier([rule({ id: 3, priority: 0, src: [0, 65535], dst: [0, 65535] })]).entryCount, 1);
});

test('port ranges expand into a minimal exact prefix cover', (t) => {
  t.deepEqual(portRangePrefixes(0, 65535), [{ value: 0, mask: 0 }]);
  t.deepEqual(portRangePrefixes(80, 80), [{ value: 80, mask: 0xffff }]);
  t.deepEqual(portRangePrefixes(1024, 2047), [{ value: 1024, mask: 0xfc00 }]);
  t.is(portRangePrefixes(1, 65534).length, 30);
  t.is(portRangePrefixes(0, 1023).length, 1);
  t.is(portRangePrefixes(1000, 1999).length, 7);
  const rand = mulberry32(99);
  for (let i = 0; i < 300; i++) {
    let lo = Math.floor(rand() * 65536);
    let hi = Math.floor(rand() * 65536);
    if (lo > hi) [lo, hi] = [hi, lo];
    if (i % 3 === 0) hi = Math.min(65535, lo + Math.floor(rand() * 40));
    const cover = portRangePrefixes(lo, hi);
    let covered = 0;
    for (const p of cover) {
      const size = (~p.mask & 0xffff) + 1;
      t.is(p.value & ~p.mask & 0xffff, 0);
      t.true(p.value >= lo && p.value + size - 1 <= hi, `[${lo}, ${hi}] block ${p.value}/${p.mask}`);
      covered += size;
    }
    t.is(covered, hi - lo + 1, `[${lo}, ${hi}] covered exactly`);
    t.true(cover.length <= 30);
  }
});

test('the constructor rejects malformed rules', (t) => {
  const bad = rule({ id: 0, priority: 0 });
  bad.value[KeyWord.DST_IP] = 1;
  t.throws(() => new Classifier([bad]), { instanceOf: RangeError });
  t.throws(() => new Classifier([rule({ id: 0, priority: 0 }), rule({ id: 0, priority: 1 })]), { message: /twice/ });
  t.throws(() => new Classifier([rule({ id: 0, priority: 65536 })]), { instanceOf: RangeError });
  t.throws(() => new Classifier([rule({ id: -1, priority: 0 })]), { instanceOf: RangeError });
  t.throws(() => new Classifier([rule({ id: 0, priority: 0, dst: [10, 9] })]), { instanceOf: RangeError });
  t.throws(() => new Classifier([rule({ id: 0, priority: 0, src: [0, 65536] })]), { instanceOf: RangeError });
});

// ---- Property test: lookup agrees with linearLookup on random rule sets ----


/** Candidate masks per word: few, so random rules share tuples and shadow each other. */
const MASK_CHOICES: number[][] = (() => {
  const ipv4 = [0, prefixMask(8), prefixMask(16), prefixMask(24), prefixMask(32)];
  const ipv6Tail = [0, 0, 0, 0xffffffff];
  return [
    [0, 0xffff],
    [0, 0xffffffff],
    [0, 0xffff],
    [0, 0xffffffff],
    [0, 0xffff0000, 0xffffffff],
    [0, 0xff000000, 0xffff0000],
    [0],
    ipv4,
    ipv6Tail,
    ipv6Tail,
    ipv6Tail,
    ipv4,
    ipv6Tail,
    ipv6Tail,
    ipv6Tail,
  ];
})();

function propertyRun(seed: number, keyCount: number): string | undefined {
  const rand = mulberry32(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const u32 = () => (int(0x10000) * 0x10000 + int(0x10000)) >>> 0;
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];

  const pools = Array.from({ length: KEY_WORDS }, () => [u32(), u32(), u32()]);
  const portPool = [0, 1, 1023, 1024, 65534, 65535, ...Array.from({ length: 6 }, () => int(65536))];
  const randomMaskVector = () => MASK_CHOICES.map((choices) => (rand() < 0.35 ? pick(choices) : 0));
  const shapes = Array.from({ length: 4 }, randomMaskVector);

  const randomRange = (): [number, number] | undefined => {
    const r = rand();
    if (r < 0.4) return undefined;
    if (r < 0.5) return [0, 65535];
    if (r < 0.65) {
      const p = pick(portPool);
      return [p, p];
    }
    if (r < 0.75) return rand() < 0.5 ? [0, pick(portPool)] : [pick(portPool), 65535];
    let lo = rand() < 0.7 ? pick(portPool) : int(65536);
    let hi = rand() < 0.7 ? pick(portPool) : int(65536);
    if (lo > hi) [lo, hi] = [hi, lo];
    return [lo, hi];
  };

  const n = 1 + int(300);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = int(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const rules: ClassifierRule[] = [];
  for (let i = 0; i < n; i++) {
    const masks = rand() < 0.7 ? pick(shapes) : randomMaskVector();
    const value = new Uint32Array(KEY_WORDS);
    const mask = new Uint32Array(masks);
    for (let w = 0; w < KEY_WORDS; w++) value[w] = (pick(pools[w]) & mask[w]) >>> 0;
    const r: ClassifierRule = {
      id: perm[i] * 2 + (seed & 1),
      priority: rand() < 0.5 ? int(8) : int(65536),
      value,
      mask,
    };
    const src = randomRange();
    const dst = randomRange();
    if (src) r.srcPorts = src;
    if (dst) r.dstPorts = dst;
    rules.push(r);
  }

  const cl = new Classifier(rules);
  const shuffled = [...rules].reverse();
  const cl2 = new Classifier(shuffled);

  const portNear = (range: readonly [number, number] | undefined): number => {
    if (!range) return rand() < 0.5 ? pick(portPool) : int(65536);
    const [lo, hi] = range;
    const p = pick([lo - 1, lo, hi, hi + 1, lo + int(hi - lo + 1)]);
    return Math.min(65535, Math.max(0, p));
  };

  const k = new Uint32Array(KEY_WORDS);
  for (let i = 0; i < keyCount; i++) {
    if (i % 2 === 0) {
      const r = pick(rules);
      for (let w = 0; w < KEY_WORDS; w++) {
        const fill = rand() < 0.5 ? pick(pools[w]) : u32();
        k[w] = (r.value[w] | (fill & ~r.mask[w])) >>> 0;
      }
      k[KeyWord.PORTS] = ((portNear(r.srcPorts) << 16) | portNear(r.dstPorts)) >>> 0;
    } else {
      for (let w = 0; w < KEY_WORDS; w++) k[w] = rand() < 0.7 ? pick(pools[w]) : rand() < 0.5 ? 0 : u32();
      const sp = Math.min(65535, Math.max(0, pick(portPool) + int(3) - 1));
      const dp = Math.min(65535, Math.max(0, pick(portPool) + int(3) - 1));
      k[KeyWord.PORTS] = ((sp << 16) | dp) >>> 0;
    }
    const want = linearLookup(rules, k);
    const got = cl.lookup(k);
    const got2 = cl2.lookup(k);
    if (got !== want || got2 !== want) {
      const hex = Array.from(k, (x) => x.toString(16)).join(' ');
      return `seed ${seed}: ${n} rules, key #${i} [${hex}]: lookup ${got} (reversed input ${got2}), linearLookup ${want}`;
    }
  }
  return undefined;
}

test('lookup agrees with linearLookup on random rule sets (property)', (t) => {
  const seeds = 300;
  for (let seed = 1; seed <= seeds; seed++) {
    const failure = propertyRun(seed, 400);
    if (failure !== undefined) {
      t.fail(failure);
      return;
    }
  }
  t.pass(`${seeds} seeds agree`);
});

test('the property test finds hits, not just misses', (t) => {
  // Guard against a generator that only ever produces -1 on both sides.
  const rand = mulberry32(7);
  let hits = 0;
  const rules = [rule({ id: 0, priority: 0, fields: { [KeyWord.DST_IP]: [ip(10, 0, 0, 0), prefixMask(8)] }, dst: [100, 200] })];
  const cl = new Classifier(rules);
  for (let i = 0; i < 1000; i++) {
    const k = key({ dst: ip(10, 0, 0, Math.floor(rand() * 256)), dport: Math.floor(rand() * 300) });
    const got = cl.lookup(k);
    t.is(got, linearLookup(rules, k));
    if (got >= 0) hits++;
  }
  t.true(hits > 200 && hits < 500);
});

// ---- Scale: 10,000 rules build and answer correctly ----

function sampleAgainstLinear(rules: ClassifierRule[], keys: Uint32Array[]): { mismatches: number; hits: number } {
  const cl = new Classifier(rules);
  let mismatches = 0;
  let hits = 0;
  for (const k of keys) {
    const want = linearLookup(rules, k);
    if (cl.lookup(k) !== want) mismatches++;
    if (want >= 0) hits++;
  }
  return { mismatches, hits };
}

test('10,000 rules blocking TCP to distinct /32s on distinct port ranges', (t) => {
  const rand = mulberry32(10000);
  const rules: ClassifierRule[] = [];
  for (let i = 0; i < 10000; i++) {
    const lo = 1 + ((i * 7) % 60000);
    rules.push(
      rule({
        id: i,
        priority: 100 + (i % 1000),
        fields: {
          [KeyWord.ETH_VLAN]: [IPV4 << 16, 0xffff0000],
          [KeyWord.PROTO]: [TCP << 24, 0xff000000],
          [KeyWord.DST_IP]: [(ip(10, 0, 0, 0) + i) >>> 0, 0xffffffff],
        },
        dst: [lo, lo + (i % 500)],
      }),
    );
  }
  rules.push(rule({ id: 10000, priority: 65535 }));
  const keys: Uint32Array[] = [];
  for (let i = 0; i < 1000; i++) {
    const r = rules[Math.floor(rand() * 10000)];
    const [lo, hi] = r.dstPorts!;
    const dport = [lo - 1, lo, hi, hi + 1, lo + Math.floor(rand() * (hi - lo + 1))][Math.floor(rand() * 5)];
    keys.push(key({ dst: r.value[KeyWord.DST_IP], dport, proto: rand() < 0.9 ? TCP : 17 }));
  }
  const cl = new Classifier(rules);
  t.true(cl.tupleCount <= 18, `tupleCount ${cl.tupleCount}`);
  const { mismatches, hits } = sampleAgainstLinear(rules, keys);
  t.is(mismatches, 0);
  t.true(hits === keys.length, 'the catch-all makes every key a hit');
});

test('10,000 distinct /24 source prefixes', (t) => {
  const rand = mulberry32(24);
  const rules: ClassifierRule[] = [];
  for (let i = 0; i < 10000; i++) {
    rules.push(
      rule({
        id: i,
        priority: Math.floor(rand() * 65536),
        fields: { [KeyWord.SRC_IP]: [(ip(172, 16, 0, 0) + (i << 8)) >>> 0, prefixMask(24)] },
      }),
    );
  }
  const cl = new Classifier(rules);
  t.is(cl.tupleCount, 1);
  t.is(cl.entryCount, 10000);
  const keys: Uint32Array[] = [];
  for (let i = 0; i < 1000; i++) {
    const src = (ip(172, 16, 0, 0) + Math.floor(rand() * 10500 * 256)) >>> 0;
    keys.push(key({ src }));
  }
  const { mismatches, hits } = sampleAgainstLinear(rules, keys);
  t.is(mismatches, 0);
  t.true(hits > 800 && hits < keys.length);
  t.is(cl.lookup(key({ src: ip(172, 16, 5, 9) })), 5);
});
