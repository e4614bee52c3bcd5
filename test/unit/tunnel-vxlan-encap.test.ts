import test from 'ava';
import { VxlanView } from '../../src/packet/vxlan.js';
import {
  clearVnetHeader,
  DECAP_VERDICT_NAMES,
  decapCheck,
  DecapVerdict,
  encapHeader,
  ENTROPY_PORT_MAX,
  ENTROPY_PORT_MIN,
  entropyPort,
  isValidVni,
  readVni,
} from '../../src/tunnel/vxlan-encap.js';
import { mulberry32 } from './helpers/random.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const SERVED = new Set([100, 0x123456, 0xffffff]);
// An inner Ethernet header (dst, src, IPv4) and two payload bytes.
const INNER = hex('02 76 00 00 00 02  02 76 00 00 00 01  08 00  45 00');

/** A datagram (VXLAN header + INNER) at offset `at` of a larger buffer. */
function datagram(header: string, at = 0, inner = INNER): { buf: Uint8Array; off: number; len: number } {
  const h = hex(header);
  const buf = new Uint8Array(at + h.length + inner.length + 16).fill(0xee);
  buf.set(h, at);
  buf.set(inner, at + h.length);
  return { buf, off: at, len: h.length + inner.length };
}

test('encapHeader writes the RFC 7348 header in the headroom', (t) => {
  const buf = new Uint8Array(64).fill(0xff);
  buf.set(INNER, 32);
  t.is(encapHeader(buf, 32, 0x123456), 24);
  t.is(toHex(buf.subarray(24, 32)), '0800000012345600', 'I flag, reserved zero, VNI, reserved zero');
  t.is(toHex(buf.subarray(32, 32 + INNER.length)), toHex(INNER), 'the inner frame is untouched');
  t.is(buf[23], 0xff, 'nothing before the header');
  const v = new VxlanView();
  t.true(v.reset(buf, 24, 8 + INNER.length));
  t.true(v.hasVni());
  t.is(v.vni(), 0x123456);
  t.is(readVni(buf, 24), 0x123456);
  t.is(decapCheck(buf, 24, 8 + INNER.length, SERVED), DecapVerdict.OK, 'what we write, we accept');
});

test('encapHeader refuses no headroom and bad VNIs, writing nothing', (t) => {
  const buf = new Uint8Array(32).fill(0xaa);
  t.is(encapHeader(buf, 7, 100), -1);
  t.is(encapHeader(buf, 8, 0), -1);
  t.is(encapHeader(buf, 8, 0x1000000), -1);
  t.is(encapHeader(buf, 8, -5), -1);
  t.is(encapHeader(buf, 8, 1.5), -1);
  t.is(encapHeader(buf, 33, 100), -1, 'header beyond the buffer');
  t.true(buf.every((b) => b === 0xaa));
  t.is(encapHeader(buf, 8, 1), 0);
  t.is(encapHeader(buf, 32, 0xffffff), 24, 'an empty inner frame at the very end still gets its header');
  t.is(toHex(buf.subarray(24, 32)), '08000000ffffff00');
});

test('decapCheck verdicts on crafted headers', (t) => {
  const check = (d: { buf: Uint8Array; off: number; len: number }) => decapCheck(d.buf, d.off, d.len, SERVED);
  t.is(check(datagram('08 00 00 00  00 00 64 00')), DecapVerdict.OK);
  t.is(check(datagram('08 00 00 00  00 00 64 00', 40)), DecapVerdict.OK, 'at an offset');
  t.is(check(datagram('ff ff ff ff  00 00 64 ff')), DecapVerdict.OK, 'reserved bits are ignored on receipt');
  t.is(check(datagram('88 00 00 00  00 00 64 00')), DecapVerdict.OK, 'so is the GBP G bit');

  t.is(check(datagram('00 00 00 00  00 00 64 00')), DecapVerdict.BAD_FLAGS, 'no I flag');
  t.is(check(datagram('f7 ff ff ff  00 00 64 ff')), DecapVerdict.BAD_FLAGS, 'every bit but I');
  t.is(check(datagram('0c 00 00 03  00 00 64 00')), DecapVerdict.OK, 'a VXLAN-GPE-looking header with I is still VXLAN here');

  t.is(check(datagram('08 00 00 00  00 00 00 00')), DecapVerdict.UNKNOWN_VNI, 'VNI 0');
  t.is(check(datagram('08 00 00 00  00 00 65 00')), DecapVerdict.UNKNOWN_VNI, 'VNI 101 is not served');
  t.is(check(datagram('08 00 00 00  ff ff ff 00')), DecapVerdict.OK, 'VNI 16777215');
  t.is(check(datagram('08 00 00 00  12 34 56 00')), DecapVerdict.OK);

  const full = datagram('08 00 00 00  00 00 64 00');
  t.is(decapCheck(full.buf, 0, 7, SERVED), DecapVerdict.SHORT_HEADER, '7 bytes');
  t.is(decapCheck(full.buf, 0, 0, SERVED), DecapVerdict.SHORT_HEADER);
  t.is(decapCheck(full.buf, 0, -1 + 8 - 8, SERVED), DecapVerdict.SHORT_HEADER, 'negative lengths');
  t.is(decapCheck(full.buf, 0, 8, SERVED), DecapVerdict.TRUNCATED_INNER, 'a header and nothing else');
  t.is(decapCheck(full.buf, 0, 8 + 13, SERVED), DecapVerdict.TRUNCATED_INNER, '13 bytes of inner frame');
  t.is(decapCheck(full.buf, 0, 8 + 14, SERVED), DecapVerdict.OK, 'exactly an Ethernet header');
  t.is(decapCheck(full.buf, -1, 22, SERVED), DecapVerdict.SHORT_HEADER, 'before the buffer');
  t.is(decapCheck(full.buf, 0, full.buf.length + 1, SERVED), DecapVerdict.SHORT_HEADER, 'beyond the buffer');
  // Cheap checks first: a bad flag beats a bad VNI, a short inner frame beats an unknown VNI.
  t.is(check(datagram('00 00 00 00  00 00 00 00')), DecapVerdict.BAD_FLAGS);
  t.is(check(datagram('08 00 00 00  00 00 00 00', 0, INNER.subarray(0, 10))), DecapVerdict.TRUNCATED_INNER);
});

test('an rx slot goes in as it lands: (frameOffset - 8, length + 8); RX_MALFORMED is a short header', (t) => {
  const RX_HEADROOM = 128;
  const slot = new Uint8Array(RX_HEADROOM + 64);
  slot.set(hex('08 00 00 00 00 00 64 00'), RX_HEADROOM - 8);
  slot.set(INNER, RX_HEADROOM);
  t.is(decapCheck(slot, RX_HEADROOM - 8, INNER.length + 8, SERVED), DecapVerdict.OK);
  t.is(decapCheck(slot, RX_HEADROOM - 8, -1 + 8, SERVED), DecapVerdict.SHORT_HEADER);
});

test('verdict codes are dense and named', (t) => {
  const codes = Object.values(DecapVerdict).sort((a, b) => a - b);
  t.deepEqual(codes, [0, 1, 2, 3, 4, 5]);
  t.is(DECAP_VERDICT_NAMES.length, codes.length);
  t.is(DECAP_VERDICT_NAMES[DecapVerdict.UNKNOWN_VNI], 'unknownVni');
  t.is(DECAP_VERDICT_NAMES[DecapVerdict.NOT_PEER], 'notPeer');
});

test('isValidVni: 1..16777215', (t) => {
  t.false(isValidVni(0));
  t.true(isValidVni(1));
  t.true(isValidVni(0xffffff));
  t.false(isValidVni(0x1000000));
  t.false(isValidVni(2.5));
  t.false(isValidVni(Number.NaN));
});

test('entropyPort stays in 49152..65535 and spreads', (t) => {
  t.is(ENTROPY_PORT_MIN, 49152);
  t.is(ENTROPY_PORT_MAX, 65535);
  for (const h of [0, 1, 0x3fff, 0x4000, 0x7fffffff, 0x80000000, 0xffffffff, 0xdeadbeef]) {
    const p = entropyPort(h);
    t.true(p >= 49152 && p <= 65535, `hash ${h} -> ${p}`);
  }
  t.not(entropyPort(0x40000000), entropyPort(0), 'high bits are folded in');
  t.not(entropyPort(0x4000), entropyPort(0), 'middle bits too');
  const rnd = mulberry32(7);
  const buckets = new Uint32Array(16);
  const seen = new Set<number>();
  const N = 160_000;
  for (let i = 0; i < N; i++) {
    const p = entropyPort((rnd() * 0x100000000) >>> 0);
    if (p < 49152 || p > 65535 || !Number.isInteger(p)) return void t.fail(`port ${p}`);
    buckets[(p - 49152) >> 10]++;
    seen.add(p);
  }
  for (const b of buckets) t.true(Math.abs(b - N / 16) < N / 16 / 10, `bucket ${b} within 10% of ${N / 16}`);
  t.true(seen.size > 16000, `nearly all 16384 ports used (${seen.size})`);
  t.is(entropyPort(12345), entropyPort(12345), 'stable per flow');
});

test('clearVnetHeader zeroes the 10 bytes before the inner frame', (t) => {
  const buf = new Uint8Array(40).fill(0x77);
  t.true(clearVnetHeader(buf, 20));
  t.is(toHex(buf.subarray(10, 20)), '00'.repeat(10));
  t.is(buf[9], 0x77);
  t.is(buf[20], 0x77);
  t.false(clearVnetHeader(buf, 9));
  t.false(clearVnetHeader(buf, 41));
});

test('every decap verdict but OK is counted as its own vxlan drop reason', async (t) => {
  const { DECAP_DROP_REASON, DecapVerdict } = await import('../../src/tunnel/vxlan-encap.js');
  const { DROP_REASON_NAMES } = await import('../../src/packet/drop-reasons.js');
  t.is(DECAP_DROP_REASON[DecapVerdict.OK], 0);
  const names = Object.values(DecapVerdict)
    .filter((v) => v !== DecapVerdict.OK)
    .map((v) => DROP_REASON_NAMES[DECAP_DROP_REASON[v]]);
  t.deepEqual(names, ['vxlanShortHeader', 'vxlanBadFlags', 'vxlanTruncated', 'vxlanUnknownVni', 'vxlanNotPeer']);
});
