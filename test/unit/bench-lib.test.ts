import test from 'ava';
import {
  BenchError,
  alternate,
  choicesOption,
  formatTable,
  intListOption,
  intOption,
  judge,
  median,
  medianOf,
  parseIperfJson,
  parsePrefix,
  prefixesOverlap,
  ratio,
  rotate,
  tcpResult,
  udpResult,
} from '../../scripts/bench-lib.js';

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

test('intListOption: the default when absent, else every item a whole number within the range, else one sentence with an example', (t) => {
  t.deepEqual(intListOption('rules', undefined, [10, 10000], 0, 65535), [10, 10000]);
  t.deepEqual(intListOption('rules', '0, 5,10_000', [10, 10000], 0, 65535), [0, 5, 10000]);
  t.deepEqual(intListOption('endpoints', '7', [1, 100, 1000], 1, 4000), [7]);
  for (const bad of ['', '10,', '1,x', '0', '4001', '1.5', '-1']) {
    t.throws(() => intListOption('endpoints', bad, [1, 100, 1000], 1, 4000), { instanceOf: BenchError, message: `--endpoints takes whole numbers from 1 to 4000, comma-separated (such as 1,100,1000), not "${bad}".` }, bad);
  }
});

test('choicesOption: every choice when absent, else the named ones in the choices\' order, else one sentence listing the choices', (t) => {
  const tests = ['tcp', 'udp', 'nat'] as const;
  t.deepEqual(choicesOption('only', undefined, tests), ['tcp', 'udp', 'nat']);
  t.deepEqual(choicesOption('only', 'nat, tcp', tests), ['tcp', 'nat']);
  t.deepEqual(choicesOption('only', 'udp,udp,', tests), ['udp']);
  for (const bad of ['', ',', 'tcp,icmp', 'TCP']) {
    t.throws(() => choicesOption('only', bad, tests), { instanceOf: BenchError, message: `--only takes a comma-separated list of tcp, udp, nat, not "${bad}".` }, bad);
  }
});

test('alternate reverses the legs in even runs; rotate starts run r at leg r - 1', (t) => {
  t.deepEqual(alternate(1, ['vsw', 'bridge']), ['vsw', 'bridge']);
  t.deepEqual(alternate(2, ['vsw', 'bridge']), ['bridge', 'vsw']);
  t.deepEqual(alternate(3, ['vsw', 'bridge']), ['vsw', 'bridge']);
  t.deepEqual([1, 2, 3, 4].map((run) => rotate(run, [10, 10000, null])), [
    [10, 10000, null],
    [10000, null, 10],
    [null, 10, 10000],
    [10, 10000, null],
  ]);
  t.deepEqual(rotate(5, []), []);
});

test('medianOf: the median over the successful records matching every field given', (t) => {
  const records = [
    { test: 'tcp', side: 'vsw', ok: true, v: 1 },
    { test: 'tcp', side: 'vsw', ok: true, v: 3 },
    { test: 'tcp', side: 'vsw', ok: false, v: 100 },
    { test: 'tcp', side: 'bridge', ok: true, v: 7 },
    { test: 'udp', side: 'vsw', ok: true, v: 9 },
  ];
  t.is(medianOf(records, { test: 'tcp', side: 'vsw' }, (r) => r.v), 2);
  t.is(medianOf(records, { side: 'vsw' }, (r) => r.v), 3);
  t.is(medianOf(records, {}, (r) => r.v), 5);
  t.is(medianOf(records, { test: 'qos' }, (r) => r.v), null);
  t.is(medianOf(records, { test: 'tcp', side: 'vsw' }, () => undefined), null);
});

test('formatTable: widths from the widest cell, alignment by count or by letter, no trailing blanks', (t) => {
  t.deepEqual(formatTable(['name', 'unit', 'v'], [['TCP', 'Gbit/s', '9.50'], ['UDP 64 B lost', '%', '-']]), [
    'name           unit       v',
    '-------------  ------  ----',
    'TCP            Gbit/s  9.50',
    'UDP 64 B lost  %          -',
  ]);
  t.deepEqual(formatTable(['measurement', 'median', 'unit'], [['new flows', '432,512', 'flows/s'], ['ratio', '0.91', '']], 'lrl'), [
    'measurement   median  unit',
    '-----------  -------  -------',
    'new flows    432,512  flows/s',
    'ratio           0.91',
  ]);
});

test('iperf3 JSON: the UDP rate the server received, from end.sum_received or (older iperf3) end.sum', (t) => {
  const received = { packets: 1000, lost_packets: 100, lost_percent: 10, seconds: 2 };
  t.deepEqual(udpResult(parseIperfJson(JSON.stringify({ end: { sum_received: received } }))), {
    packetsPerSecond: 450,
    sentPacketsPerSecond: 500,
    lostPercent: 10,
    packets: 1000,
    lostPackets: 100,
    seconds: 2,
  });
  const old = udpResult(parseIperfJson(JSON.stringify({ end: { sum: { packets: 400, lost_percent: 25, seconds: 4 } } })));
  t.is(old.packetsPerSecond, 75);
  t.is(old.lostPackets, 100);
  t.throws(() => udpResult(parseIperfJson('{"end":{"sum":{"packets":1}}}')), { instanceOf: BenchError, message: /no end\.sum_received/ });
});

test('judge: met against the bar, null without a value', (t) => {
  t.deepEqual(judge('x', 0.9, '>= 0.8', (v) => v >= 0.8), { what: 'x', value: 0.9, bar: '>= 0.8', met: true });
  t.deepEqual(judge('x', 0.7, '>= 0.8', (v) => v >= 0.8, 0), { what: 'x', value: 0.7, bar: '>= 0.8', met: false, digits: 0 });
  t.is(judge('x', null, '>= 0.8', (v) => v >= 0.8).met, null);
});
