import test from 'ava';
import {
  ETH_HEADER_LEN,
  EtherType,
  EthernetView,
  emitEthernet,
  etherTypeName,
  formatEthernet,
  formatMac,
  isBroadcast,
  isMulticastMac,
  isZeroMac,
  macEquals,
  macHi16,
  macLo32,
  parseEthernet,
  parseMac,
  writeMac,
  type EthernetRepr,
} from '../../src/packet/ethernet.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const FRAME = hex(`
  02 42 ac 11 00 02
  52 54 00 ab cd ef
  08 00
  aa 00 00 ff`);
const PAYLOAD = hex('aa 00 00 ff');

const REPR: EthernetRepr = { dst: '02:42:ac:11:00:02', src: '52:54:00:ab:cd:ef', etherType: EtherType.IPv4 };

test('deconstruct', (t) => {
  const v = new EthernetView();
  t.true(v.reset(FRAME, 0, FRAME.length));
  t.is(v.dstHi16(), 0x0242);
  t.is(v.dstLo32(), 0xac110002);
  t.is(v.srcHi16(), 0x5254);
  t.is(v.srcLo32(), 0x00abcdef);
  t.is(v.etherType(), 0x0800);
  t.false(v.dstIsMulticast());
  t.false(v.srcIsMulticast());
  t.is(v.payloadOffset(), 14);
  t.is(v.payloadLength(), 4);
});

test('deconstruct at an offset inside a larger buffer', (t) => {
  const buf = new Uint8Array(40).fill(0xee);
  buf.set(FRAME, 7);
  const v = new EthernetView();
  t.true(v.reset(buf, 7, FRAME.length));
  t.is(v.dstLo32(), 0xac110002);
  t.is(v.srcHi16(), 0x5254);
  t.is(v.etherType(), 0x0800);
  t.is(v.payloadOffset(), 21);
});

test('construct', (t) => {
  const buf = new Uint8Array(FRAME.length);
  const v = new EthernetView();
  t.true(v.reset(buf, 0, buf.length));
  v.setDst(0x0242, 0xac110002);
  v.setSrcFrom(hex('5254 00ab cdef'));
  v.setEtherType(EtherType.IPv4);
  buf.set(PAYLOAD, v.payloadOffset());
  t.is(toHex(buf), toHex(FRAME));

  v.setSrc(0x5254, 0x00abcdef);
  v.setDstFrom(hex('ffff 0242 ac11 0002 ffff'), 2);
  t.is(toHex(buf), toHex(FRAME));
});

test('parse', (t) => {
  const v = new EthernetView();
  t.true(v.reset(FRAME, 0, FRAME.length));
  t.deepEqual(parseEthernet(v), REPR);
});

test('emit', (t) => {
  const buf = new Uint8Array(FRAME.length);
  t.is(emitEthernet(REPR, buf, 0), ETH_HEADER_LEN);
  buf.set(PAYLOAD, ETH_HEADER_LEN);
  t.is(toHex(buf), toHex(FRAME));
  t.throws(() => emitEthernet({ ...REPR, src: 'nope' }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitEthernet(REPR, new Uint8Array(13), 0), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatEthernet(REPR), 'EthernetII src=52:54:00:ab:cd:ef dst=02:42:ac:11:00:02 type=IPv4');
  t.is(etherTypeName(0x88cc), '0x88cc');
  t.is(etherTypeName(EtherType.QinQ), '802.1ad');
});

test('truncated buffers are refused and detach the view', (t) => {
  const v = new EthernetView();
  t.true(v.reset(FRAME, 0, FRAME.length));
  t.false(v.reset(FRAME, 0, 13));
  t.is(v.len, 0);
  t.is(v.buf.length, 0);
  t.false(v.reset(FRAME, 5, 14), 'length runs past the buffer');
  t.false(v.reset(FRAME, -1, 14));
  t.true(v.reset(FRAME, 4, 14));
});

test('parseMac accepts any case and refuses everything else', (t) => {
  t.is(toHex(parseMac('AA:bb:CC:dd:EE:0f')!), 'aabbccddee0f');
  for (const bad of ['', 'aa:bb:cc:dd:ee', 'aa:bb:cc:dd:ee:ff:00', 'aa-bb-cc-dd-ee-ff', 'aa:bb:cc:dd:ee:fg', 'aaa:bb:cc:dd:ee:ff', 'a:bb:cc:dd:ee:ff', ' aa:bb:cc:dd:ee:ff']) {
    t.is(parseMac(bad), null, bad);
  }
});

test('formatMac reads at an offset, lower case, zero-padded', (t) => {
  t.is(formatMac(hex('00 0a 0b 0c 0d 0e 0f'), 1), '0a:0b:0c:0d:0e:0f');
  t.is(formatMac(parseMac('FF:00:5E:00:00:FB')!), 'ff:00:5e:00:00:fb');
});

test('multicast, broadcast and zero MACs', (t) => {
  const m = (s: string) => parseMac(s)!;
  t.true(isMulticastMac(m('01:00:5e:00:00:fb'), 0));
  t.true(isMulticastMac(m('33:33:00:00:00:01'), 0));
  t.true(isMulticastMac(m('ff:ff:ff:ff:ff:ff'), 0));
  t.false(isMulticastMac(m('02:00:00:00:00:01'), 0));
  t.true(isBroadcast(m('ff:ff:ff:ff:ff:ff'), 0));
  t.false(isBroadcast(m('ff:ff:ff:ff:ff:fe'), 0));
  t.false(isBroadcast(m('7f:ff:ff:ff:ff:ff'), 0));
  t.true(isZeroMac(m('00:00:00:00:00:00'), 0));
  t.false(isZeroMac(m('00:00:00:00:00:01'), 0));
  t.false(isZeroMac(m('80:00:00:00:00:00'), 0));
  const buf = hex('99 ff ff ff ff ff ff');
  t.true(isBroadcast(buf, 1));
  t.false(isBroadcast(buf, 0));
});

test('MACs as two numbers round-trip, unsigned', (t) => {
  const a = parseMac('fe:dc:ff:ff:ff:fe')!;
  t.is(macHi16(a, 0), 0xfedc);
  t.is(macLo32(a, 0), 0xfffffffe);
  const buf = new Uint8Array(8);
  writeMac(buf, 1, macHi16(a, 0), macLo32(a, 0));
  t.is(formatMac(buf, 1), 'fe:dc:ff:ff:ff:fe');
  t.true(macEquals(buf, 1, a, 0));
  buf[6] ^= 1;
  t.false(macEquals(buf, 1, a, 0));
});
