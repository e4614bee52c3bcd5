import test from 'ava';
import {
  checksumAdjust16,
  checksumAdjust32,
  foldChecksum,
  internetChecksum,
  onesComplementSum,
  pseudoSumV4,
  pseudoSumV4At,
  pseudoSumV6,
  pseudoSumV6At,
} from '../../src/packet/checksum.js';
import { mulberry32 as rng } from './helpers/random.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));


function randomBytes(next: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(next() * 256);
  return b;
}

/** Reference: folds after every word, the textbook way. */
function referenceSum(buf: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) {
    sum += (buf[off + i] << 8) | (i + 1 < len ? buf[off + i + 1] : 0);
    if (sum > 0xffff) sum = (sum & 0xffff) + 1;
  }
  return sum;
}

test('RFC 1071 section 3 example', (t) => {
  const b = hex('00 01 f2 03 f4 f5 f6 f7');
  t.is(onesComplementSum(b, 0, b.length), 0xddf2);
  t.is(internetChecksum(b, 0, b.length), 0x220d);
});

test('a real IPv4 header verifies and recomputes', (t) => {
  const h = hex('45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7');
  t.is(internetChecksum(h, 0, 20), 0);
  h[10] = h[11] = 0;
  t.is(internetChecksum(h, 0, 20), 0xb861);
});

test('odd lengths pad the last byte with zero', (t) => {
  t.is(onesComplementSum(hex('ab'), 0, 1), 0xab00);
  t.is(onesComplementSum(hex('00 01 f2'), 0, 3), 0xf201);
  t.is(onesComplementSum(hex('ff 00 01 f2 ff'), 1, 3), 0xf201, 'honours the offset');
  t.is(internetChecksum(new Uint8Array(0), 0, 0), 0xffff);
});

test('initial carries a partial sum across buffers', (t) => {
  const next = rng(1);
  const a = randomBytes(next, 40);
  const b = randomBytes(next, 27);
  const whole = new Uint8Array(67);
  whole.set(a);
  whole.set(b, 40);
  t.is(internetChecksum(b, 0, b.length, onesComplementSum(a, 0, a.length)), internetChecksum(whole, 0, whole.length));
  t.is(internetChecksum(b, 0, b.length, 0x1234 + 0xfedc + 0x10000 * 3), internetChecksum(b, 0, b.length, foldChecksum(0x1234 + 0xfedc + 0x30000)));
});

test('large buffers: unfolded accumulation agrees with per-word folding', (t) => {
  const ones = new Uint8Array(1 << 20).fill(0xff);
  t.is(onesComplementSum(ones, 0, ones.length), 0xffff);
  t.is(internetChecksum(ones, 0, ones.length), 0);
  const next = rng(2);
  const big = randomBytes(next, 65_537);
  t.is(onesComplementSum(big, 0, big.length), referenceSum(big, 0, big.length));
  t.is(onesComplementSum(big, 3, 60_000), referenceSum(big, 3, 60_000));
});

test('foldChecksum', (t) => {
  t.is(foldChecksum(0), 0);
  t.is(foldChecksum(0xffff), 0xffff);
  t.is(foldChecksum(0x10000), 1);
  t.is(foldChecksum(0x2fffd), 0xffff);
  // 2^40 + 5 = 0x100_0000_0005: words 0x0100, 0x0000, 0x0005.
  t.is(foldChecksum(2 ** 40 + 5), 0x0105);
  t.is(foldChecksum(2 ** 48 - 1), 0xffff);
  // 0xf_ffff_ffff_ffff: 0x000f + 3 * 0xffff = 0x3000c, then 0x3 + 0xc.
  t.is(foldChecksum(2 ** 52 - 1), 0x000f);
});

test('checksumAdjust16 agrees with a full recompute (10,000 random cases)', (t) => {
  const next = rng(0x1624);
  let mismatches = 0;
  for (let n = 0; n < 10_000; n++) {
    const len = 2 + 2 * Math.floor(next() * 100);
    const data = randomBytes(next, len);
    // Make the all-zero and all-ones words common, where naive formulas go wrong.
    const w = 2 * Math.floor(next() * (len / 2));
    const choice = next();
    const newWord = choice < 0.1 ? 0 : choice < 0.2 ? 0xffff : Math.floor(next() * 0x10000);
    const csum = internetChecksum(data, 0, len);
    const oldWord = (data[w] << 8) | data[w + 1];
    data[w] = newWord >>> 8;
    data[w + 1] = newWord & 0xff;
    if (data.every((b) => b === 0)) continue; // the documented degenerate case, tested below
    if (checksumAdjust16(csum, oldWord, newWord) !== internetChecksum(data, 0, len)) mismatches++;
  }
  t.is(mismatches, 0);
});

test('checksumAdjust32 agrees with a full recompute (10,000 random cases)', (t) => {
  const next = rng(0x32);
  let mismatches = 0;
  for (let n = 0; n < 10_000; n++) {
    const len = 4 + 2 * Math.floor(next() * 100);
    const data = randomBytes(next, len);
    const at = 2 * Math.floor(next() * ((len - 4) / 2 + 1));
    const newValue = next() < 0.1 ? 0 : Math.floor(next() * 2 ** 32);
    const csum = internetChecksum(data, 0, len);
    const oldValue = ((data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]) >>> 0;
    data[at] = newValue >>> 24;
    data[at + 1] = (newValue >>> 16) & 0xff;
    data[at + 2] = (newValue >>> 8) & 0xff;
    data[at + 3] = newValue & 0xff;
    if (data.every((b) => b === 0)) continue;
    if (checksumAdjust32(csum, oldValue, newValue) !== internetChecksum(data, 0, len)) mismatches++;
  }
  t.is(mismatches, 0);
});

test('incremental update of data that becomes all zero yields 0x0000, a recompute 0xffff', (t) => {
  const data = hex('12 34');
  const csum = internetChecksum(data, 0, 2);
  t.is(checksumAdjust16(csum, 0x1234, 0), 0x0000);
  t.is(internetChecksum(new Uint8Array(2), 0, 2), 0xffff);
});

test('pseudo-header sums equal the sum of a written-out pseudo-header', (t) => {
  // IPv4: src, dst, zero, protocol, length.
  const v4 = hex('c0 a8 00 01  c0 a8 00 c7  00 11  00 5f');
  t.is(pseudoSumV4(0xc0a80001, 0xc0a800c7, 17, 0x5f), onesComplementSum(v4, 0, v4.length));
  const ipHeader = hex('45 00 00 73 00 00 40 00 40 11 b8 61 c0 a8 00 01 c0 a8 00 c7');
  t.is(pseudoSumV4At(ipHeader, 0, 0x5f), onesComplementSum(v4, 0, v4.length));

  // IPv6: src, dst, 32-bit length, 3 zero bytes, next header.
  const src = hex('20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01');
  const dst = hex('fe 80 00 00 00 00 00 00 02 02 b3 ff fe 1e 83 29');
  for (const length of [8, 1500, 0x12345]) {
    const v6 = new Uint8Array(40);
    v6.set(src, 0);
    v6.set(dst, 16);
    new DataView(v6.buffer).setUint32(32, length);
    v6[39] = 6;
    t.is(pseudoSumV6(src, 0, dst, 0, 6, length), onesComplementSum(v6, 0, 40), `length ${length}`);
    const ip6 = new Uint8Array(40);
    ip6.set(src, 8);
    ip6.set(dst, 24);
    t.is(pseudoSumV6At(ip6, 0, 6, length), onesComplementSum(v6, 0, 40));
  }
});

test('NAT rewrite: incremental IPv4 and UDP checksum updates verify', (t) => {
  // 10.0.0.1:40000 -> 10.0.0.2:5000 with a valid UDP checksum.
  const ip = hex('45 00 00 20 00 00 40 00 40 11 00 00 0a 00 00 01 0a 00 00 02');
  const ipCsum = internetChecksum(ip, 0, 20);
  ip[10] = ipCsum >>> 8;
  ip[11] = ipCsum & 0xff;
  const udp = hex('9c 40 13 88 00 0c 00 00 de ad be ef');
  const udpCsum = internetChecksum(udp, 0, 12, pseudoSumV4At(ip, 0, 12));
  udp[6] = udpCsum >>> 8;
  udp[7] = udpCsum & 0xff;

  const newSrc = 0xc0a8fe0a; // 192.168.254.10
  const newIpCsum = checksumAdjust32(ipCsum, 0x0a000001, newSrc);
  const newUdpCsum = checksumAdjust16(checksumAdjust32(udpCsum, 0x0a000001, newSrc), 40000, 61000);
  ip.set(hex('c0 a8 fe 0a'), 12);
  ip[10] = newIpCsum >>> 8;
  ip[11] = newIpCsum & 0xff;
  udp[0] = 61000 >>> 8;
  udp[1] = 61000 & 0xff;
  udp[6] = newUdpCsum >>> 8;
  udp[7] = newUdpCsum & 0xff;
  t.is(internetChecksum(ip, 0, 20), 0);
  t.is(internetChecksum(udp, 0, 12, pseudoSumV4At(ip, 0, 12)), 0);
});
