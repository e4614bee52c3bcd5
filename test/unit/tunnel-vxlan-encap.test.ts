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
  markTsoFrame,
  readVni,
  writeTcp4GsoHeader,
} from '../../src/tunnel/vxlan-encap.js';
import { buildTcp4, buildTcp6, buildUdp4, filler } from '../../src/packet/builders.js';
import { pseudoSumV4At, pseudoSumV6At } from '../../src/packet/checksum.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { GsoType, VNET_HDR_LEN, VnetFlags, VnetView } from '../../src/packet/vnet.js';
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

// ---------------------------------------------------------------------------
// markTsoFrame: a kernel peer's VXLAN GSO packet, decapsulated

const MTU = 1450;
/** NOP, NOP, timestamp. */
const TS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

/** An inner TCP super-frame as a kernel vxlan device sends it whole: IP length over all of it, the TCP checksum partial. */
function superFrame(o: { payload?: number; v6?: boolean; flags?: number; vlan?: number } = {}): Buffer {
  const tcp = { srcPort: 5001, dstPort: 40000, seq: 1, ack: 2, flags: o.flags ?? TcpFlags.ACK, options: TS, payload: filler(o.payload ?? 5000), vlans: o.vlan === undefined ? undefined : [o.vlan] };
  const f = o.v6 ? buildTcp6({ ...tcp, srcIp: 'fd00::1', dstIp: 'fd00::2' }) : buildTcp4({ ...tcp, srcIp: '10.0.0.1', dstIp: '10.0.0.2' });
  const l3 = o.vlan === undefined ? 14 : 18;
  const l4 = l3 + (o.v6 ? 40 : 20);
  f.writeUInt16BE(o.v6 ? pseudoSumV6At(f, l3, 6, f.length - l4) : pseudoSumV4At(f, l3, f.length - l4), l4 + 16);
  return f;
}

/** The frame behind an all-zero vnet header, as decap leaves it after clearVnetHeader. */
function placed(frame: Uint8Array): { buf: Buffer; at: number } {
  const buf = Buffer.alloc(VNET_HDR_LEN + frame.length);
  buf.set(frame, VNET_HDR_LEN);
  return { buf, at: VNET_HDR_LEN };
}

test('markTsoFrame makes an IPv4, IPv6 or tagged TCP super-frame with a partial checksum a TSO frame whose segments fit the MTU', (t) => {
  const cases = [
    { f: superFrame(), gso: GsoType.TCPV4, l4: 34 },
    { f: superFrame({ v6: true }), gso: GsoType.TCPV6, l4: 54 },
    { f: superFrame({ vlan: 7 }), gso: GsoType.TCPV4, l4: 38 },
    { f: superFrame({ flags: TcpFlags.ACK | 0x80 }), gso: GsoType.TCPV4 | GsoType.ECN, l4: 34 },
  ];
  const vnet = new VnetView();
  for (const [i, c] of cases.entries()) {
    const { buf, at } = placed(c.f);
    t.true(markTsoFrame(buf, at, c.f.length, MTU), `case ${i}`);
    t.true(vnet.reset(buf, 0, VNET_HDR_LEN));
    t.is(vnet.flags(), VnetFlags.NEEDS_CSUM);
    t.is(vnet.gsoType(), c.gso, `case ${i}`);
    t.is(vnet.hdrLen(), c.l4 + 32);
    t.is(vnet.gsoSize(), MTU - (c.l4 - (c.l4 === 38 ? 18 : 14)) - 32, `case ${i}: the MTU less the IP and TCP headers`);
    t.is(vnet.csumStart(), c.l4);
    t.is(vnet.csumOffset(), 16);
    t.true(buf.subarray(at).equals(c.f), 'the frame itself is untouched');
  }
});

test('markTsoFrame takes nothing but such a super-frame, and writes nothing when it refuses', (t) => {
  const complete = buildTcp4({ srcIp: '10.0.0.1', dstIp: '10.0.0.2', flags: TcpFlags.ACK, options: TS, payload: filler(5000) });
  const padded = Buffer.concat([superFrame(), Buffer.alloc(4)]);
  const fragment = superFrame();
  fragment.writeUInt16BE(0x2000, 14 + 6); // more fragments
  fragment.writeUInt16BE(pseudoSumV4At(fragment, 14, fragment.length - 34), 50);
  const udp = buildUdp4({ srcIp: '10.0.0.1', dstIp: '10.0.0.2', payload: filler(5000) });
  const refused: [string, Uint8Array, number][] = [
    ['a complete checksum (a super-frame is always partial)', complete, MTU],
    ['an IP length that ends before the frame', padded, MTU],
    ['a fragment', fragment, MTU],
    ['UDP', udp, MTU],
    ['a payload that fits one segment', superFrame({ payload: 1398 }), MTU],
    ['an MTU smaller than its headers', superFrame(), 40],
    ['a frame cut short', superFrame().subarray(0, 40), MTU],
  ];
  for (const [what, f, mtu] of refused) {
    const { buf, at } = placed(f);
    t.false(markTsoFrame(buf, at, f.length, mtu), what);
    t.true(buf.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), `${what}: the vnet header stays zero`);
  }
  const f = superFrame();
  t.false(markTsoFrame(Buffer.from(f), 4, f.length - 4, MTU), 'no room for the vnet header');
});

test('writeTcp4GsoHeader: NEEDS_CSUM at the TCP checksum, GSO TCPV4, the sizes given', (t) => {
  const buf = Buffer.alloc(20).fill(0xee);
  writeTcp4GsoHeader(buf, 10, 66, 1398);
  t.is(toHex(buf.subarray(0, 10)), '01' + '01' + '4200' + '7605' + '2200' + '1000');
  t.is(buf[10], 0xee);
});
