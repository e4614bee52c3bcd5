import test from 'ava';
import { EtherType } from '../../src/packet/ethernet.js';
import { VLAN_TAG_LEN, VlanView, emitVlan, formatVlan, innerEtherTypeOffset, isVlanTpid, parseVlan, type VlanRepr } from '../../src/packet/vlan.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// TCI 0xb064: PCP 5, DEI 1, VID 100; then the inner EtherType (IPv4).
const TAG = hex('b0 64 08 00');
const REPR: VlanRepr = { pcp: 5, dei: true, vid: 100, etherType: EtherType.IPv4 };

const MACS = '02 00 00 00 00 02 02 00 00 00 00 01';

test('deconstruct', (t) => {
  const v = new VlanView();
  t.true(v.reset(TAG, 0, TAG.length));
  t.is(v.tci(), 0xb064);
  t.is(v.pcp(), 5);
  t.true(v.dei());
  t.is(v.vid(), 100);
  t.is(v.etherType(), 0x0800);
  t.is(v.payloadOffset(), 4);
  t.is(v.payloadLength(), 0);
});

test('construct', (t) => {
  const buf = new Uint8Array(4);
  const v = new VlanView();
  t.true(v.reset(buf, 0, 4));
  v.setVid(100);
  v.setPcp(5);
  v.setDei(true);
  v.setEtherType(EtherType.IPv4);
  t.is(toHex(buf), toHex(TAG));
  // Each field setter leaves the others alone.
  v.setVid(4095);
  t.is(v.pcp(), 5);
  t.true(v.dei());
  v.setPcp(0);
  v.setDei(false);
  t.is(v.vid(), 4095);
  t.is(v.tci(), 0x0fff);
  v.setTci(0xb064);
  t.is(toHex(buf), toHex(TAG));
});

test('parse', (t) => {
  const v = new VlanView();
  t.true(v.reset(TAG, 0, TAG.length));
  t.deepEqual(parseVlan(v), REPR);
});

test('emit', (t) => {
  const buf = new Uint8Array(4);
  t.is(emitVlan(REPR, buf, 0), VLAN_TAG_LEN);
  t.is(toHex(buf), toHex(TAG));
  t.throws(() => emitVlan({ ...REPR, vid: 4096 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitVlan({ ...REPR, pcp: 8 }, buf, 0), { instanceOf: RangeError });
  t.throws(() => emitVlan(REPR, buf, 1), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatVlan(REPR), '802.1Q vid=100 pcp=5 dei=1 type=IPv4');
});

test('truncated buffers are refused', (t) => {
  const v = new VlanView();
  t.false(v.reset(TAG, 0, 3));
  t.false(v.reset(TAG, 1, 4));
  t.true(v.reset(TAG, 0, 4));
});

test('TPIDs', (t) => {
  t.true(isVlanTpid(0x8100));
  t.true(isVlanTpid(0x88a8));
  t.false(isVlanTpid(0x0800));
  t.false(isVlanTpid(0x9100));
});

test('innerEtherTypeOffset looks through up to two tags', (t) => {
  const untagged = hex(`${MACS} 08 00 45`);
  t.is(innerEtherTypeOffset(untagged, 0, untagged.length), 12);
  const one = hex(`${MACS} 81 00 00 64 86 dd`);
  t.is(innerEtherTypeOffset(one, 0, one.length), 16);
  const two = hex(`${MACS} 88 a8 00 0a 81 00 00 14 08 06`);
  t.is(innerEtherTypeOffset(two, 0, two.length), 20);
  const inBuf = new Uint8Array(64);
  inBuf.set(two, 30);
  t.is(innerEtherTypeOffset(inBuf, 30, two.length), 20, 'relative to the frame start');
});

test('innerEtherTypeOffset refuses short tags and a third tag', (t) => {
  const one = hex(`${MACS} 81 00 00 64 86 dd`);
  t.is(innerEtherTypeOffset(one, 0, 17), -1, 'inner EtherType cut');
  t.is(innerEtherTypeOffset(one, 0, 15), -1, 'TCI cut');
  t.is(innerEtherTypeOffset(one, 0, 13), -1, 'no Ethernet header');
  const two = hex(`${MACS} 88 a8 00 0a 81 00 00 14 08 06`);
  t.is(innerEtherTypeOffset(two, 0, 21), -1);
  const three = hex(`${MACS} 88 a8 00 0a 81 00 00 14 81 00 00 1e 08 00`);
  t.is(innerEtherTypeOffset(three, 0, three.length), -1);
});
