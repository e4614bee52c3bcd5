import test from 'ava';
import { ICMP_HEADER_LEN, IcmpType, IcmpView, UnreachableCode, emitIcmp, formatIcmp, parseIcmp, type IcmpRepr } from '../../src/packet/icmp.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const ECHO = hex('08 00 21 04  12 34 00 01  61 62 63 64');
const ECHO_REPR: IcmpRepr = { kind: 'echoRequest', ident: 0x1234, seq: 1, data: hex('61 62 63 64') };

// Fragmentation needed, next-hop MTU 1500, quoting the start of the offending IPv4 header.
const UNREACH = hex('03 04 72 03  00 00 05 dc  45 00 00 1c 00 00 40 00');
const UNREACH_REPR: IcmpRepr = { kind: 'destUnreachable', code: UnreachableCode.FragNeeded, nextHopMtu: 1500, data: hex('45 00 00 1c 00 00 40 00') };

test('deconstruct', (t) => {
  const v = new IcmpView();
  t.true(v.reset(ECHO, 0, ECHO.length));
  t.is(v.msgType(), IcmpType.EchoRequest);
  t.is(v.code(), 0);
  t.is(v.checksum(), 0x2104);
  t.is(v.echoIdent(), 0x1234);
  t.is(v.echoSeq(), 1);
  t.is(v.dataOffset(), 8);
  t.is(v.dataLength(), 4);
  t.true(v.verifyChecksum());

  t.true(v.reset(UNREACH, 0, UNREACH.length));
  t.is(v.msgType(), IcmpType.DestUnreachable);
  t.is(v.code(), 4);
  t.is(v.nextHopMtu(), 1500);
  t.true(v.verifyChecksum());
});

test('construct', (t) => {
  const buf = new Uint8Array(ECHO.length);
  const v = new IcmpView();
  t.true(v.reset(buf, 0, buf.length));
  v.setMsgType(IcmpType.EchoRequest);
  v.setCode(0);
  v.setEchoIdent(0x1234);
  v.setEchoSeq(1);
  buf.set(hex('61 62 63 64'), v.dataOffset());
  v.fillChecksum();
  t.is(toHex(buf), toHex(ECHO));

  const buf2 = new Uint8Array(UNREACH.length).fill(0xff);
  t.true(v.reset(buf2, 0, buf2.length));
  v.setMsgType(IcmpType.DestUnreachable);
  v.setCode(UnreachableCode.FragNeeded);
  v.setNextHopMtu(1500);
  buf2.set(hex('45 00 00 1c 00 00 40 00'), 8);
  v.fillChecksum();
  t.is(toHex(buf2), toHex(UNREACH));
});

test('parse', (t) => {
  const v = new IcmpView();
  t.true(v.reset(ECHO, 0, ECHO.length));
  t.deepEqual(parseIcmp(v), ECHO_REPR);
  t.true(v.reset(UNREACH, 0, UNREACH.length));
  t.deepEqual(parseIcmp(v), UNREACH_REPR);
});

test('parse copies the data out of the buffer', (t) => {
  const buf = Uint8Array.from(ECHO);
  const v = new IcmpView();
  t.true(v.reset(buf, 0, buf.length));
  const repr = parseIcmp(v)!;
  buf[8] = 0;
  t.is(repr.data[0], 0x61);
});

test('parse refuses a bad checksum and unsupported types', (t) => {
  const v = new IcmpView();
  const bad = Uint8Array.from(ECHO);
  bad[11] ^= 0x80;
  t.true(v.reset(bad, 0, bad.length));
  t.is(parseIcmp(v), null);
  const timestamp = Uint8Array.from(ECHO);
  timestamp[0] = 13;
  t.true(v.reset(timestamp, 0, timestamp.length));
  v.fillChecksum();
  t.is(parseIcmp(v), null);
});

test('emit', (t) => {
  const buf = new Uint8Array(ECHO.length);
  t.is(emitIcmp(ECHO_REPR, buf, 0), ECHO.length);
  t.is(toHex(buf), toHex(ECHO));
  const buf2 = new Uint8Array(UNREACH.length + 3).fill(0xaa);
  t.is(emitIcmp(UNREACH_REPR, buf2, 3), UNREACH.length);
  t.is(toHex(buf2.subarray(3)), toHex(UNREACH));
  t.throws(() => emitIcmp(ECHO_REPR, new Uint8Array(ECHO.length - 1), 0), { instanceOf: RangeError });
});

test('echo reply, port unreachable and time exceeded round-trip', (t) => {
  const v = new IcmpView();
  for (const repr of [
    { kind: 'echoReply', ident: 7, seq: 0xffff, data: hex('00 01 02') },
    { kind: 'destUnreachable', code: UnreachableCode.Port, nextHopMtu: 0, data: hex('45 00 00 1c 00 00 40 00') },
    { kind: 'timeExceeded', code: 0, data: hex('45 00 00 1c 00 00 40 00') },
  ] as IcmpRepr[]) {
    const buf = new Uint8Array(ICMP_HEADER_LEN + repr.data.length).fill(0x55);
    emitIcmp(repr, buf, 0);
    t.true(v.reset(buf, 0, buf.length));
    t.true(v.verifyChecksum(), repr.kind);
    t.deepEqual(parseIcmp(v), repr);
  }
});

test('format', (t) => {
  t.is(formatIcmp(ECHO_REPR), 'ICMPv4 echo request id=4660 seq=1 len=4');
  t.is(formatIcmp(UNREACH_REPR), 'ICMPv4 unreachable code=4 (frag-needed) mtu=1500 len=8');
  t.is(formatIcmp({ kind: 'timeExceeded', code: 1, data: new Uint8Array(28) }), 'ICMPv4 time exceeded code=1 len=28');
});

test('truncated buffers are refused', (t) => {
  const v = new IcmpView();
  t.false(v.reset(ECHO, 0, 7));
  t.false(v.reset(ECHO, 5, 8));
  t.true(v.reset(ECHO, 0, 8));
});
