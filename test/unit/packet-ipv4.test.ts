import test from 'ava';
import {
  IPV4_HEADER_LEN,
  IpProtocol,
  Ipv4View,
  emitIpv4,
  formatIpv4,
  formatIpv4Addr,
  ipProtocolName,
  parseIpv4,
  parseIpv4Addr,
  type Ipv4Repr,
} from '../../src/packet/ipv4.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// DSCP 46 (EF), ECN 1, total 24, id 0x1234, DF, TTL 64, UDP, checksum 0x13e6.
const PACKET = hex(`
  45 b9 00 18
  12 34 40 00
  40 11 13 e6
  0a 00 00 01
  0a 00 00 02
  aa 00 00 ff`);
const PAYLOAD = hex('aa 00 00 ff');

const REPR: Ipv4Repr = {
  src: '10.0.0.1',
  dst: '10.0.0.2',
  protocol: IpProtocol.UDP,
  payloadLength: 4,
  ttl: 64,
  dscp: 46,
  ecn: 1,
  ident: 0x1234,
  dontFrag: true,
  moreFrags: false,
  fragOffset: 0,
};

test('deconstruct', (t) => {
  const v = new Ipv4View();
  t.true(v.reset(PACKET, 0, PACKET.length));
  t.is(v.version(), 4);
  t.is(v.headerLength(), 20);
  t.is(v.dscp(), 46);
  t.is(v.ecn(), 1);
  t.is(v.totalLength(), 24);
  t.is(v.ident(), 0x1234);
  t.true(v.dontFrag());
  t.false(v.moreFrags());
  t.is(v.fragOffset(), 0);
  t.false(v.isFragment());
  t.is(v.ttl(), 64);
  t.is(v.protocol(), 17);
  t.is(v.checksum(), 0x13e6);
  t.is(v.src(), 0x0a000001);
  t.is(v.dst(), 0x0a000002);
  t.true(v.verifyChecksum());
  t.is(v.payloadOffset(), 20);
  t.is(v.payloadLength(), 4);
});

test('construct', (t) => {
  const buf = new Uint8Array(PACKET.length);
  const v = new Ipv4View();
  t.false(v.reset(buf, 0, buf.length), 'a zeroed header has IHL 0');
  t.true(v.resetRaw(buf, 0, buf.length));
  v.setVersion(4);
  v.setHeaderLength(20);
  v.setDscp(46);
  v.setEcn(1);
  v.setTotalLength(24);
  v.setIdent(0x1234);
  v.setDontFrag(true);
  v.setTtl(64);
  v.setProtocol(IpProtocol.UDP);
  v.setSrc(0x0a000001);
  v.setDst(0x0a000002);
  v.setChecksum(0xffff);
  v.fillChecksum();
  buf.set(PAYLOAD, v.payloadOffset());
  t.is(toHex(buf), toHex(PACKET));
  t.true(v.reset(buf, 0, buf.length));
});

test('parse', (t) => {
  const v = new Ipv4View();
  t.true(v.reset(PACKET, 0, PACKET.length));
  t.deepEqual(parseIpv4(v), REPR);
});

test('parse refuses a bad checksum or version', (t) => {
  const v = new Ipv4View();
  const badSum = Uint8Array.from(PACKET);
  badSum[11] ^= 1;
  t.true(v.reset(badSum, 0, badSum.length));
  t.is(parseIpv4(v), null);
  const v6 = Uint8Array.from(PACKET);
  v6[0] = 0x65;
  v.resetRaw(v6, 0, v6.length);
  v.fillChecksum();
  t.true(v.reset(v6, 0, v6.length));
  t.is(parseIpv4(v), null);
});

test('emit', (t) => {
  const buf = new Uint8Array(PACKET.length);
  t.is(emitIpv4(REPR, buf, 0), IPV4_HEADER_LEN);
  buf.set(PAYLOAD, IPV4_HEADER_LEN);
  t.is(toHex(buf), toHex(PACKET));
  t.throws(() => emitIpv4({ ...REPR, dst: '10.0.0.256' }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitIpv4({ ...REPR, payloadLength: 65516 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitIpv4(REPR, buf, 5), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatIpv4(REPR), 'IPv4 src=10.0.0.1 dst=10.0.0.2 proto=UDP len=4 ttl=64 dscp=46 ecn=1 DF');
  t.is(
    formatIpv4({ ...REPR, dscp: 0, ecn: 0, dontFrag: false, moreFrags: true, fragOffset: 1480, protocol: 99 }),
    'IPv4 src=10.0.0.1 dst=10.0.0.2 proto=99 len=4 ttl=64 frag=1480+',
  );
});

test('options: the header length follows IHL', (t) => {
  // IHL 6 with one 4-byte option (NOP NOP NOP EOL), total 28.
  const buf = hex('46 00 00 1c 00 00 00 00 40 06 00 00 0a 00 00 01 0a 00 00 02 01 01 01 00 de ad be ef');
  const v = new Ipv4View();
  t.true(v.reset(buf, 0, buf.length));
  v.fillChecksum();
  t.is(v.headerLength(), 24);
  t.is(v.payloadOffset(), 24);
  t.is(v.payloadLength(), 4);
  t.true(v.verifyChecksum());
  const repr = parseIpv4(v);
  t.is(repr?.payloadLength, 4);
  t.is(repr?.protocol, IpProtocol.TCP);
});

test('truncated and inconsistent buffers are refused', (t) => {
  const v = new Ipv4View();
  t.false(v.reset(PACKET, 0, 19), 'shorter than a header');
  t.false(v.reset(PACKET, 0, 23), 'total length beyond the buffer');
  t.false(v.reset(PACKET, 1, 24), 'runs past the end');
  const ihl4 = Uint8Array.from(PACKET);
  ihl4[0] = 0x44;
  t.false(v.reset(ihl4, 0, ihl4.length), 'IHL below 5');
  const ihl15 = Uint8Array.from(PACKET);
  ihl15[0] = 0x4f;
  t.false(v.reset(ihl15, 0, ihl15.length), 'IHL beyond the buffer');
  const shortTotal = Uint8Array.from(PACKET);
  shortTotal[3] = 19;
  t.false(v.reset(shortTotal, 0, shortTotal.length), 'total length below the header');
  t.is(v.len, 0);
});

test('Ethernet padding after the total length is allowed and excluded', (t) => {
  const padded = new Uint8Array(46);
  padded.set(PACKET);
  const v = new Ipv4View();
  t.true(v.reset(padded, 0, padded.length));
  t.is(v.payloadLength(), 4);
  t.true(v.verifyChecksum());
});

test('fragment fields', (t) => {
  const buf = Uint8Array.from(PACKET);
  const v = new Ipv4View();
  t.true(v.reset(buf, 0, buf.length));
  v.setDontFrag(false);
  v.setMoreFrags(true);
  v.setFragOffset(1480);
  t.is(toHex(buf.subarray(6, 8)), '20b9');
  t.true(v.moreFrags());
  t.false(v.dontFrag());
  t.is(v.fragOffset(), 1480);
  t.true(v.isFragment());
  v.setMoreFrags(false);
  t.true(v.isFragment(), 'the last fragment has an offset');
  v.setFragOffset(0);
  t.false(v.isFragment());
});

test('decrementTtl updates the checksum incrementally', (t) => {
  const buf = Uint8Array.from(PACKET);
  const v = new Ipv4View();
  t.true(v.reset(buf, 0, buf.length));
  for (let expected = 63; expected >= 0; expected--) {
    t.is(v.decrementTtl(), expected);
    t.true(v.verifyChecksum(), `ttl ${expected}`);
  }
  t.is(v.decrementTtl(), 0, 'stays at 0');
  const before = v.checksum();
  v.fillChecksum();
  t.is(v.checksum(), before);
});

test('IPv4 address text', (t) => {
  t.is(parseIpv4Addr('10.0.0.1'), 0x0a000001);
  t.is(parseIpv4Addr('255.255.255.255'), 0xffffffff);
  t.is(parseIpv4Addr('0.0.0.0'), 0);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', ' 1.2.3.4', '1.2.3.-4', '1..3.4', 'a.b.c.d', '1.2.3.4/24']) {
    t.is(parseIpv4Addr(bad), null, bad);
  }
  t.is(formatIpv4Addr(0xc0a80001), '192.168.0.1');
  t.is(formatIpv4Addr(0xffffffff), '255.255.255.255');
  t.is(ipProtocolName(IpProtocol.ICMPv6), 'ICMPv6');
});
