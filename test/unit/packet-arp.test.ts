import test from 'ava';
import { ARP_LEN, ArpOp, ArpView, emitArp, formatArp, parseArp, type ArpRepr } from '../../src/packet/arp.js';
import { EtherType } from '../../src/packet/ethernet.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const REQUEST = hex(`
  00 01 08 00 06 04 00 01
  02 00 00 00 00 01  0a 00 00 01
  00 00 00 00 00 00  0a 00 00 02`);

const REPLY = hex(`
  00 01 08 00 06 04 00 02
  02 00 00 00 00 02  c0 a8 64 fe
  02 00 00 00 00 01  c0 a8 64 01`);

const REQUEST_REPR: ArpRepr = {
  operation: ArpOp.Request,
  senderMac: '02:00:00:00:00:01',
  senderIp: '10.0.0.1',
  targetMac: '00:00:00:00:00:00',
  targetIp: '10.0.0.2',
};

const REPLY_REPR: ArpRepr = {
  operation: ArpOp.Reply,
  senderMac: '02:00:00:00:00:02',
  senderIp: '192.168.100.254',
  targetMac: '02:00:00:00:00:01',
  targetIp: '192.168.100.1',
};

test('deconstruct', (t) => {
  const v = new ArpView();
  t.true(v.reset(REPLY, 0, REPLY.length));
  t.is(v.htype(), 1);
  t.is(v.ptype(), 0x0800);
  t.is(v.hlen(), 6);
  t.is(v.plen(), 4);
  t.true(v.isEthernetIpv4());
  t.is(v.operation(), ArpOp.Reply);
  t.is(v.shaHi16(), 0x0200);
  t.is(v.shaLo32(), 0x00000002);
  t.is(v.spa(), 0xc0a864fe);
  t.is(v.thaHi16(), 0x0200);
  t.is(v.thaLo32(), 0x00000001);
  t.is(v.tpa(), 0xc0a86401);
});

test('construct', (t) => {
  const buf = new Uint8Array(ARP_LEN);
  const v = new ArpView();
  t.true(v.reset(buf, 0, buf.length));
  v.setHtype(1);
  v.setPtype(EtherType.IPv4);
  v.setHlen(6);
  v.setPlen(4);
  v.setOperation(ArpOp.Reply);
  v.setSha(0x0200, 0x00000002);
  v.setSpa(0xc0a864fe);
  v.setThaFrom(hex('02 00 00 00 00 01'));
  v.setTpa(0xc0a86401);
  t.is(toHex(buf), toHex(REPLY));

  const buf2 = new Uint8Array(ARP_LEN);
  t.true(v.reset(buf2, 0, buf2.length));
  v.setEthernetIpv4();
  v.setOperation(ArpOp.Request);
  v.setShaFrom(hex('02 00 00 00 00 01'));
  v.setSpa(0x0a000001);
  v.setTha(0, 0);
  v.setTpa(0x0a000002);
  t.is(toHex(buf2), toHex(REQUEST));
});

test('parse', (t) => {
  const v = new ArpView();
  t.true(v.reset(REQUEST, 0, REQUEST.length));
  t.deepEqual(parseArp(v), REQUEST_REPR);
  t.true(v.reset(REPLY, 0, REPLY.length));
  t.deepEqual(parseArp(v), REPLY_REPR);
});

test('parse refuses other address families and operations', (t) => {
  const v = new ArpView();
  for (const [at, value] of [
    [1, 6], // htype 6 (IEEE 802)
    [2, 0x86], // ptype 0x8600
    [4, 8], // hlen
    [5, 16], // plen
    [7, 3], // op 3 (RARP request)
  ] as const) {
    const bad = Uint8Array.from(REQUEST);
    bad[at] = value;
    t.true(v.reset(bad, 0, bad.length));
    t.is(parseArp(v), null, `byte ${at} = ${value}`);
  }
});

test('emit', (t) => {
  const buf = new Uint8Array(ARP_LEN + 2).fill(0xee);
  t.is(emitArp(REQUEST_REPR, buf, 1), ARP_LEN);
  t.is(toHex(buf.subarray(1, 1 + ARP_LEN)), toHex(REQUEST));
  t.is(buf[0], 0xee);
  t.is(buf[ARP_LEN + 1], 0xee);
  const buf2 = new Uint8Array(ARP_LEN);
  emitArp(REPLY_REPR, buf2, 0);
  t.is(toHex(buf2), toHex(REPLY));
  t.throws(() => emitArp({ ...REPLY_REPR, senderIp: '10.0.0' }, buf2, 0), { instanceOf: RangeError });
  t.throws(() => emitArp(REPLY_REPR, new Uint8Array(27), 0), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatArp(REQUEST_REPR), 'ARP request who-has 10.0.0.2 tell 10.0.0.1 (02:00:00:00:00:01)');
  t.is(formatArp(REPLY_REPR), 'ARP reply 192.168.100.254 is-at 02:00:00:00:00:02 to 192.168.100.1 (02:00:00:00:00:01)');
});

test('truncated buffers are refused', (t) => {
  const v = new ArpView();
  t.false(v.reset(REQUEST, 0, 27));
  t.false(v.reset(REQUEST, 1, 28));
  t.is(v.len, 0);
});
