import test from 'ava';
import { IpProtocol } from '../../src/packet/ipv4.js';
import {
  IPV6_HEADER_LEN,
  Ipv6View,
  emitIpv6,
  formatIpv6,
  formatIpv6Addr,
  parseIpv6,
  parseIpv6Addr,
  type Ipv6Repr,
} from '../../src/packet/ipv6.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Traffic class 0xb8, flow label 0x12345, payload 4, UDP, hop limit 64.
const PACKET = hex(`
  6b 81 23 45  00 04 11 40
  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01
  fe 80 00 00 00 00 00 00 02 02 b3 ff fe 1e 83 29
  aa 00 00 ff`);
const PAYLOAD = hex('aa 00 00 ff');

const REPR: Ipv6Repr = {
  src: '2001:db8::1',
  dst: 'fe80::202:b3ff:fe1e:8329',
  nextHeader: IpProtocol.UDP,
  payloadLength: 4,
  hopLimit: 64,
  trafficClass: 0xb8,
  flowLabel: 0x12345,
};

test('deconstruct', (t) => {
  const v = new Ipv6View();
  t.true(v.reset(PACKET, 0, PACKET.length));
  t.is(v.version(), 6);
  t.is(v.trafficClass(), 0xb8);
  t.is(v.flowLabel(), 0x12345);
  t.is(v.payloadLength(), 4);
  t.is(v.nextHeader(), 17);
  t.is(v.hopLimit(), 64);
  t.deepEqual([0, 1, 2, 3].map((i) => v.srcWord(i)), [0x20010db8, 0, 0, 1]);
  t.deepEqual([0, 1, 2, 3].map((i) => v.dstWord(i)), [0xfe800000, 0, 0x0202b3ff, 0xfe1e8329]);
  t.false(v.dstIsMulticast());
  t.is(v.payloadOffset(), 40);
});

test('construct', (t) => {
  const buf = new Uint8Array(PACKET.length);
  const v = new Ipv6View();
  t.true(v.resetRaw(buf, 0, buf.length));
  v.setVersion(6);
  v.setTrafficClass(0xb8);
  v.setFlowLabel(0x12345);
  v.setPayloadLength(4);
  v.setNextHeader(IpProtocol.UDP);
  v.setHopLimit(64);
  v.setSrcFrom(parseIpv6Addr('2001:db8::1')!);
  v.setDstWord(0, 0xfe800000);
  v.setDstWord(2, 0x0202b3ff);
  v.setDstWord(3, 0xfe1e8329);
  buf.set(PAYLOAD, v.payloadOffset());
  t.is(toHex(buf), toHex(PACKET));
  // Traffic class and flow label setters share bytes; each must leave the other alone.
  v.setFlowLabel(0xfffff);
  t.is(v.trafficClass(), 0xb8);
  v.setTrafficClass(0);
  t.is(v.flowLabel(), 0xfffff);
  t.is(v.version(), 6);
  v.setSrcWord(3, 2);
  t.is(toHex(buf.subarray(20, 24)), '00000002');
});

test('parse', (t) => {
  const v = new Ipv6View();
  t.true(v.reset(PACKET, 0, PACKET.length));
  t.deepEqual(parseIpv6(v), REPR);
  const v4 = Uint8Array.from(PACKET);
  v4[0] = 0x4b;
  t.true(v.reset(v4, 0, v4.length));
  t.is(parseIpv6(v), null);
});

test('emit', (t) => {
  const buf = new Uint8Array(PACKET.length);
  t.is(emitIpv6(REPR, buf, 0), IPV6_HEADER_LEN);
  buf.set(PAYLOAD, IPV6_HEADER_LEN);
  t.is(toHex(buf), toHex(PACKET));
  t.throws(() => emitIpv6({ ...REPR, src: '2001:db8::g' }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitIpv6(REPR, new Uint8Array(39), 0), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatIpv6(REPR), 'IPv6 src=2001:db8::1 dst=fe80::202:b3ff:fe1e:8329 nxt=UDP len=4 hop=64 tc=184 flow=0x12345');
});

test('truncated buffers are refused', (t) => {
  const v = new Ipv6View();
  t.false(v.reset(PACKET, 0, 39));
  t.false(v.reset(PACKET, 0, 43), 'payload length beyond the buffer');
  t.false(v.reset(PACKET, 1, 44));
  t.false(v.resetRaw(PACKET, 0, 39));
  t.true(v.reset(PACKET, 0, 44));
  const padded = new Uint8Array(60);
  padded.set(PACKET);
  t.true(v.reset(padded, 0, 60), 'bytes after the payload are allowed');
});

test('IPv6 address text: RFC 5952 output', (t) => {
  const f = (s: string) => formatIpv6Addr(hex(s));
  t.is(f('00000000000000000000000000000000'), '::');
  t.is(f('00000000000000000000000000000001'), '::1');
  t.is(f('00010000000000000000000000000000'), '1::');
  t.is(f('20010db8000000000000000000000001'), '2001:db8::1');
  t.is(f('20010db8000000010001000100010001'), '2001:db8:0:1:1:1:1:1', 'a single zero group is not compressed');
  t.is(f('20010000000000010000000000000001'), '2001:0:0:1::1', 'the longest run wins');
  t.is(f('20010db8000000000001000000000001'), '2001:db8::1:0:0:1', 'the first of equal runs wins');
  t.is(f('00000000000000000000ffffc0000201'), '::ffff:192.0.2.1');
  t.is(f('ABCD000000000000000000000000EF01'.toLowerCase()), 'abcd::ef01');
  const buf = new Uint8Array(20);
  buf.set(hex('fe800000000000000000000000000001'), 3);
  t.is(formatIpv6Addr(buf, 3), 'fe80::1');
});

test('IPv6 address text: parsing', (t) => {
  const p = (s: string) => {
    const a = parseIpv6Addr(s);
    return a === null ? null : toHex(a);
  };
  t.is(p('::'), '00000000000000000000000000000000');
  t.is(p('::1'), '00000000000000000000000000000001');
  t.is(p('1::'), '00010000000000000000000000000000');
  t.is(p('2001:DB8::FF00:42:8329'), '20010db8000000000000ff0000428329');
  t.is(p('2001:db8:0:0:0:0:2:1'), '20010db8000000000000000000020001');
  t.is(p('::ffff:192.0.2.1'), '00000000000000000000ffffc0000201');
  t.is(p('64:ff9b::10.0.0.1'), '0064ff9b0000000000000000' + '0a000001');
  for (const bad of [
    '',
    ':',
    ':::',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8',
    '1::2::3',
    ':1::',
    '1:',
    ':1',
    'g::1',
    '12345::',
    'fe80::1%eth0',
    '::1.2.3',
    '::256.0.0.1',
    '1.2.3.4::',
    '10.0.0.1',
  ]) {
    t.is(parseIpv6Addr(bad), null, bad);
  }
});
