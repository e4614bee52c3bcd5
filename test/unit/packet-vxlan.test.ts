import test from 'ava';
import { VXLAN_HEADER_LEN, VXLAN_MAX_VNI, VxlanView, emitVxlan, formatVxlan, parseVxlan, type VxlanRepr } from '../../src/packet/vxlan.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// I flag, VNI 0x123456 (1193046), then the first bytes of an inner frame.
const HEADER = hex('08 00 00 00  12 34 56 00');
const PACKET = hex('08 00 00 00  12 34 56 00  02 00 00 00 00 02');
const REPR: VxlanRepr = { vni: 0x123456 };

test('deconstruct', (t) => {
  const v = new VxlanView();
  t.true(v.reset(PACKET, 0, PACKET.length));
  t.is(v.flags(), 0x08);
  t.true(v.hasVni());
  t.is(v.vni(), 0x123456);
  t.is(v.payloadOffset(), 8);
  t.is(v.payloadLength(), 6);
});

test('construct', (t) => {
  const buf = new Uint8Array(VXLAN_HEADER_LEN).fill(0xff);
  const v = new VxlanView();
  t.true(v.reset(buf, 0, buf.length));
  v.writeHeader(0x123456);
  t.is(toHex(buf), toHex(HEADER), 'reserved bytes cleared');
  v.setVni(VXLAN_MAX_VNI);
  t.is(v.vni(), VXLAN_MAX_VNI);
  t.is(v.flags(), 0x08, 'setVni leaves the flags alone');
  v.setFlags(0);
  t.false(v.hasVni());
});

test('parse', (t) => {
  const v = new VxlanView();
  t.true(v.reset(HEADER, 0, HEADER.length));
  t.deepEqual(parseVxlan(v), REPR);
});

test('parse ignores reserved bits but requires the I flag', (t) => {
  const v = new VxlanView();
  const noisy = hex('ff ff ff ff  00 00 2a ff');
  t.true(v.reset(noisy, 0, noisy.length));
  t.deepEqual(parseVxlan(v), { vni: 42 });
  const noI = hex('f7 00 00 00  00 00 2a 00');
  t.true(v.reset(noI, 0, noI.length));
  t.is(parseVxlan(v), null);
});

test('emit', (t) => {
  const buf = new Uint8Array(10).fill(0xee);
  t.is(emitVxlan(REPR, buf, 2), VXLAN_HEADER_LEN);
  t.is(toHex(buf), 'eeee' + toHex(HEADER));
  t.is(emitVxlan({ vni: 0 }, buf, 0), 8);
  t.throws(() => emitVxlan({ vni: VXLAN_MAX_VNI + 1 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitVxlan({ vni: -1 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitVxlan({ vni: 1.5 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitVxlan(REPR, buf, 3), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatVxlan(REPR), 'VXLAN vni=1193046');
});

test('truncated buffers are refused', (t) => {
  const v = new VxlanView();
  t.false(v.reset(HEADER, 0, 7));
  t.false(v.reset(HEADER, 1, 8));
  t.true(v.reset(HEADER, 0, 8));
  t.is(v.payloadLength(), 0);
});
