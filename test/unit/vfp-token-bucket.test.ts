import test from 'ava';
import { formatRate, parseRate, parseSize } from '../../src/vfp/rate.js';
import { TokenBuckets } from '../../src/vfp/token-bucket.js';

const MB = 1_000_000;

test('a configured bucket starts full and refills at the rate up to the burst', (t) => {
  const b = new TokenBuckets(4);
  b.configure(1, MB, 100_000, 0);
  t.true(b.isConfigured(1));
  t.false(b.isConfigured(0));
  t.is(b.tokens(1, 0), 100_000);
  t.true(b.tryConsume(1, 100_000, 0));
  t.is(b.tokens(1, 0), 0);
  t.is(b.tokens(1, 10), 10_000, '10 ms at 1 MB/s');
  t.is(b.tokens(1, 50), 50_000);
  t.is(b.tokens(1, 10_000), 100_000, 'never above the burst');
});

test('a clock that goes backwards refills nothing', (t) => {
  const b = new TokenBuckets(1);
  b.configure(0, MB, 10_000, 100);
  b.debit(0, 10_000, 100);
  t.is(b.tokens(0, 50), 0);
  t.is(b.tokens(0, 105), 5000);
});

test('policer: accepts what the bucket holds, refuses the rest without taking anything', (t) => {
  const b = new TokenBuckets(2);
  b.configure(0, 1500 * 1000, 3000, 0); // 1500 bytes per ms
  t.true(b.tryConsume(0, 1500, 0));
  t.true(b.tryConsume(0, 1500, 0));
  t.false(b.tryConsume(0, 1500, 0));
  t.false(b.tryConsume(0, 1500, 0.5));
  t.is(b.tokens(0, 0.5), 750, 'a refusal takes nothing');
  t.true(b.tryConsume(0, 1500, 1));
  t.false(b.tryConsume(0, 4000, 1000), 'more than the burst never passes');
  t.true(b.tryConsume(1, 1 << 30, 0), 'an unconfigured bucket limits nothing');
});

test('shaper: debit goes into debt and says how long until it is paid', (t) => {
  const b = new TokenBuckets(1);
  b.configure(0, MB, MB, 0); // 1 MB/s, 1 MB bucket, full
  t.is(b.debit(0, 500_000, 0), 0, 'within the bucket: no wait');
  t.is(b.debit(0, 1_500_000, 0), 1000, '1 MB of debt at 1 MB/s');
  t.is(b.tokens(0, 0), -MB);
  t.is(b.debit(0, 0, 400), 600, 'the debt shrinks with time');
  t.is(b.debit(0, 0, 1000), 0);
  t.is(b.tokens(0, 1000), 0);
});

test('shaper: 2 MB from a full 1 MB bucket at 1 MB/s waits about 1000 ms', (t) => {
  const b = new TokenBuckets(1);
  b.configure(0, MB, MB, 0);
  t.is(b.debit(0, 2 * MB, 0), 1000);
});

test('clear() removes the limit; configure() again starts full', (t) => {
  const b = new TokenBuckets(1);
  b.configure(0, 1000, 1000, 0);
  b.debit(0, 5000, 0);
  b.clear(0);
  t.false(b.isConfigured(0));
  t.is(b.debit(0, 5000, 0), 0);
  b.configure(0, 1000, 1000, 0);
  t.is(b.tokens(0, 0), 1000);
  t.throws(() => b.configure(1, 1000, 1000, 0), { instanceOf: RangeError });
  t.throws(() => b.configure(0, 0, 1000, 0), { instanceOf: RangeError });
  t.throws(() => b.configure(0, 1000, -1, 0), { instanceOf: RangeError });
});

test('policer: the long-run rate equals the configured rate within 1%', (t) => {
  const b = new TokenBuckets(1);
  const rate = 12.5 * MB; // 100 Mbit/s
  b.configure(0, rate, 64 * 1024, 0);
  let passed = 0;
  // Offer 1500-byte packets at twice the rate for 60 s, with jitter in spacing.
  let now = 0;
  let seed = 7;
  const end = 60_000;
  while (now < end) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    now += (0.06 * ((seed >>> 16) / 65536)) * 2; // mean gap 0.06 ms = 25 MB/s offered
    if (b.tryConsume(0, 1500, now)) passed += 1500;
  }
  const measured = passed / (end / 1000);
  t.true(Math.abs(measured - rate) / rate < 0.01, `${measured} B/s`);
});

test('shaper: sending whenever the debt is paid gives the configured rate within 1%, even with 64 KiB frames', (t) => {
  const b = new TokenBuckets(1);
  const rate = 1.25 * MB; // 10 Mbit/s
  b.configure(0, rate, 16 * 1024, 0);
  let now = 0;
  let sent = 0;
  let seed = 3;
  while (now < 100_000) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const bytes = seed & 1 ? 65536 : 1500;
    const wait = b.debit(0, bytes, now);
    sent += bytes;
    now += wait > 0 ? wait : 0.01;
  }
  const measured = sent / (now / 1000);
  t.true(Math.abs(measured - rate) / rate < 0.01, `${measured} B/s`);
});

test('parseRate accepts tc and docker forms', (t) => {
  const cases: Array<[string, number]> = [
    ['100mbit', 100e6],
    ['1gbit', 1e9],
    ['500kbit', 500e3],
    ['1.5gbit', 1.5e9],
    ['10mbps', 80e6],
    ['2000000', 2e6],
    ['100Mbit', 100e6],
    ['1GBIT', 1e9],
    ['100 mbit', 100e6],
    [' 100mbit/s ', 100e6],
    ['64kbps', 512e3],
    ['300bit', 300],
    ['1kibit', 1024],
    ['1mibps', 8 * 1024 * 1024],
    ['.5mbit', 5e5],
  ];
  for (const [text, bps] of cases) t.is(parseRate(text), bps, text);
});

test('parseRate refuses with a sentence that says what to write', (t) => {
  t.throws(() => parseRate('12 parsecs'), {
    message: '"12 parsecs" is not a rate: write a number with a unit such as 100mbit or 1gbit.',
  });
  t.throws(() => parseRate('0mbit'), { message: '"0mbit" is not a usable rate: write a rate above zero such as 100mbit.' });
  t.throws(() => parseRate('-5mbit'), { message: /above zero/ });
  t.throws(() => parseRate('0'), { message: /above zero/ });
  t.throws(() => parseRate('100mb'), {
    message: '"100mb" is a size, not a rate: write 100mbit for bits or 100mbps for bytes per second.',
  });
  for (const bad of ['', 'mbit', 'fast', '1.2.3mbit', '100mbps/s', '1e9', '10 mbit extra', '0x10mbit']) {
    t.throws(() => parseRate(bad), { message: /is not a rate|is a size/ }, bad);
  }
  t.throws(() => parseRate(100 as unknown as string), { message: /"100" is not a rate/ });
});

test('parseSize follows tc: binary units, bare number is bytes', (t) => {
  const cases: Array<[string, number]> = [
    ['64kb', 65536],
    ['1mb', 1048576],
    ['1500', 1500],
    ['2m', 2 * 1048576],
    ['64K', 65536],
    ['1.5kb', 1536],
    ['1gb', 1024 ** 3],
    ['100b', 100],
    ['8kbit', 1024],
    ['32 kib', 32768],
  ];
  for (const [text, bytes] of cases) t.is(parseSize(text), bytes, text);
  t.throws(() => parseSize('64 bananas'), {
    message: '"64 bananas" is not a size: write a number of bytes with an optional unit such as 1500, 64kb or 1mb.',
  });
  t.throws(() => parseSize('0'), { message: '"0" is not a usable size: write a size above zero such as 64kb.' });
  for (const bad of ['', 'kb', '-1kb', '10mbps', '1mb/s']) t.throws(() => parseSize(bad), undefined, bad);
});

test('formatRate writes the shortest tc form and round-trips', (t) => {
  t.is(formatRate(100e6), '100mbit');
  t.is(formatRate(1e9), '1gbit');
  t.is(formatRate(1.5e9), '1.5gbit');
  t.is(formatRate(64e3), '64kbit');
  t.is(formatRate(300), '300bit');
  t.is(formatRate(2_500_000), '2.5mbit');
  t.is(formatRate(1_234_567), '1234.567kbit');
  for (const bps of [1, 999, 1000, 56_000, 1e8, 1.5e9, 4e10, 1_234_567]) t.is(parseRate(formatRate(bps)), bps);
});
