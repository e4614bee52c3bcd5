import test from 'ava';
import { BenchError, intOption, median, parseIperfJson, parsePrefix, prefixesOverlap, ratio, tcpResult } from '../../scripts/bench-lib.js';

test('intOption: the default when absent, digits (with _ separators) within the range, else one sentence naming the option', (t) => {
  t.is(intOption('runs', undefined, 3, 1, 100), 3);
  t.is(intOption('runs', '7', 3, 1, 100), 7);
  t.is(intOption('mem-flows', '1_000_000', 0, 0, 1 << 20), 1_000_000);
  t.is(intOption('soak', '0', 5, 0, 3600), 0);
  for (const bad of ['0', '101', '1.5', '-3', '', 'abc', '1e2', ' 5', '0x10', '_1']) {
    t.throws(() => intOption('runs', bad, 3, 1, 100), { instanceOf: BenchError, message: `--runs takes a whole number from 1 to 100, not "${bad}".` }, bad);
  }
});

test('median of the finite values, null when there are none; ratio null without a baseline', (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.is(median([null, undefined, Number.NaN, 5]), 5);
  t.is(median([]), null);
  t.is(ratio(1, 4), 0.25);
  t.is(ratio(null, 4), null);
  t.is(ratio(1, 0), null);
});

test('parsePrefix masks the host bits; prefixesOverlap compares at the shorter length', (t) => {
  t.deepEqual(parsePrefix('10.1.2.3/24'), { base: 0x0a010200, len: 24 });
  t.deepEqual(parsePrefix('10.1.2.3'), { base: 0x0a010203, len: 32 });
  for (const bad of ['10.1.2/24', '10.1.2.3/33', '300.1.2.3/8', 'x/8']) t.is(parsePrefix(bad), null, bad);
  t.true(prefixesOverlap(parsePrefix('10.0.0.0/8')!, parsePrefix('10.9.0.0/16')!));
  t.false(prefixesOverlap(parsePrefix('10.9.0.0/16')!, parsePrefix('10.10.0.0/16')!));
  t.true(prefixesOverlap(parsePrefix('0.0.0.0/0')!, parsePrefix('192.0.2.1')!));
});

test('iperf3 JSON: the received rate of a TCP run; its error and non-JSON as one sentence', (t) => {
  const doc = parseIperfJson(JSON.stringify({ end: { sum_received: { bits_per_second: 9.5e9, seconds: 5 }, sum_sent: { retransmits: 3 } } }));
  t.deepEqual(tcpResult(doc), { bitsPerSecond: 9.5e9, retransmits: 3, seconds: 5 });
  t.throws(() => parseIperfJson('{"error":"unable to connect to server: Connection refused"}'), { message: 'iperf3: unable to connect to server: Connection refused.' });
  t.throws(() => parseIperfJson('iperf3: error'), { instanceOf: BenchError, message: /^iperf3 printed no JSON: iperf3: error\.$/ });
  t.throws(() => tcpResult(parseIperfJson('{}')), { message: /no end\.sum_received/ });
});
