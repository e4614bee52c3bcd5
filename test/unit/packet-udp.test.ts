import test from 'ava';
import { onesComplementSum, pseudoSumV4 } from '../../src/packet/checksum.js';
import { IpProtocol } from '../../src/packet/ipv4.js';
import { UDP_HEADER_LEN, UdpView, emitUdp, formatUdp, parseUdp, udpLength, type UdpRepr } from '../../src/packet/udp.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// 10.0.0.1:53 -> 10.0.0.2:49152, checksum over the IPv4 pseudo-header.
const DATAGRAM = hex('00 35 c0 00  00 0c 8e 00  de ad be ef');
const PSEUDO = pseudoSumV4(0x0a000001, 0x0a000002, IpProtocol.UDP, 12);
const REPR: UdpRepr = { srcPort: 53, dstPort: 49152, payload: hex('de ad be ef') };

test('deconstruct', (t) => {
  const v = new UdpView();
  t.true(v.reset(DATAGRAM, 0, DATAGRAM.length));
  t.is(v.srcPort(), 53);
  t.is(v.dstPort(), 49152);
  t.is(v.length(), 12);
  t.is(v.checksum(), 0x8e00);
  t.is(v.payloadOffset(), 8);
  t.is(v.payloadLength(), 4);
  t.true(v.verifyChecksum(PSEUDO));
  t.false(v.verifyChecksum(pseudoSumV4(0x0a000001, 0x0a000003, IpProtocol.UDP, 12)), 'another destination');
});

test('construct', (t) => {
  const buf = new Uint8Array(DATAGRAM.length);
  const v = new UdpView();
  t.false(v.reset(buf, 0, buf.length), 'length field 0');
  t.true(v.resetRaw(buf, 0, buf.length));
  v.setSrcPort(53);
  v.setDstPort(49152);
  v.setLength(12);
  buf.set(hex('de ad be ef'), v.payloadOffset());
  v.fillChecksum(PSEUDO);
  t.is(toHex(buf), toHex(DATAGRAM));
  v.setChecksum(0);
  t.is(v.checksum(), 0);
});

test('parse', (t) => {
  const v = new UdpView();
  t.true(v.reset(DATAGRAM, 0, DATAGRAM.length));
  t.deepEqual(parseUdp(v), REPR);
});

test('parse follows the length field, not the view', (t) => {
  const padded = new Uint8Array(20);
  padded.set(DATAGRAM);
  const v = new UdpView();
  t.true(v.reset(padded, 0, padded.length));
  t.deepEqual(parseUdp(v), REPR);
  t.true(v.verifyChecksum(PSEUDO));
});

test('emit', (t) => {
  const buf = new Uint8Array(DATAGRAM.length);
  t.is(emitUdp(REPR, buf, 0, PSEUDO), 12);
  t.is(toHex(buf), toHex(DATAGRAM));
  t.is(udpLength(REPR), 12);
  t.is(emitUdp(REPR, buf, 0), 12);
  t.is(toHex(buf), '0035c000000c0000deadbeef', 'no pseudo-header sum: no checksum');
  t.throws(() => emitUdp(REPR, new Uint8Array(11), 0, PSEUDO), { instanceOf: RangeError });
});

test('a computed checksum of 0 is sent as 0xffff', (t) => {
  // Choose the last payload word so that the one's complement sum is 0xffff.
  const buf = hex('12 34 56 78  00 0c 00 00  ab cd 00 00');
  const partial = onesComplementSum(buf, 0, 12, PSEUDO);
  buf[10] = (0xffff - partial) >>> 8;
  buf[11] = (0xffff - partial) & 0xff;
  const v = new UdpView();
  t.true(v.reset(buf, 0, buf.length));
  v.fillChecksum(PSEUDO);
  t.is(v.checksum(), 0xffff);
  t.true(v.verifyChecksum(PSEUDO), '0xffff and 0 are the same one\'s complement number');
});

test('format', (t) => {
  t.is(formatUdp(REPR), 'UDP src=53 dst=49152 len=4');
});

test('truncated buffers are refused', (t) => {
  const v = new UdpView();
  t.false(v.reset(DATAGRAM, 0, 7));
  t.false(v.reset(DATAGRAM, 0, 11), 'length field beyond the view');
  t.false(v.reset(DATAGRAM, 1, 12));
  const short = Uint8Array.from(DATAGRAM);
  short[5] = 7;
  t.false(v.reset(short, 0, short.length), 'length field below the header');
  t.true(v.reset(DATAGRAM, 0, UDP_HEADER_LEN + 4));
});
