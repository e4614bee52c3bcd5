import test from 'ava';
import { pseudoSumV4 } from '../../src/packet/checksum.js';
import { IpProtocol } from '../../src/packet/ipv4.js';
import { TCP_HEADER_LEN, TcpFlags, TcpView, emitTcp, formatTcp, formatTcpFlags, parseTcp, tcpLength, type TcpRepr } from '../../src/packet/tcp.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// 192.168.1.1:50000 -> 192.168.1.2:80, PSH+ACK, an MSS option, 4 payload bytes.
const SEGMENT = hex(`
  c3 50 00 50
  01 02 03 04
  fe dc ba 98
  60 18 fa f0
  ed ab 00 00
  02 04 05 b4
  aa 00 00 ff`);
const PSEUDO = pseudoSumV4(0xc0a80101, 0xc0a80102, IpProtocol.TCP, 28);
const REPR: TcpRepr = {
  srcPort: 50000,
  dstPort: 80,
  seq: 0x01020304,
  ack: 0xfedcba98,
  flags: TcpFlags.PSH | TcpFlags.ACK,
  window: 64240,
  urgent: 0,
  options: hex('02 04 05 b4'),
  payload: hex('aa 00 00 ff'),
};

test('deconstruct', (t) => {
  const v = new TcpView();
  t.true(v.reset(SEGMENT, 0, SEGMENT.length));
  t.is(v.srcPort(), 50000);
  t.is(v.dstPort(), 80);
  t.is(v.seqNumber(), 0x01020304);
  t.is(v.ackNumber(), 0xfedcba98, 'unsigned above 2^31');
  t.is(v.headerLength(), 24);
  t.is(v.flags(), 0x18);
  t.true(v.psh());
  t.true(v.ack());
  t.false(v.syn());
  t.false(v.fin());
  t.false(v.rst());
  t.is(v.window(), 64240);
  t.is(v.checksum(), 0xedab);
  t.is(v.urgentPointer(), 0);
  t.is(v.optionsOffset(), 20);
  t.is(v.optionsLength(), 4);
  t.is(v.payloadOffset(), 24);
  t.is(v.payloadLength(), 4);
  t.true(v.verifyChecksum(PSEUDO));
  t.false(v.verifyChecksum(pseudoSumV4(0xc0a80101, 0xc0a80102, IpProtocol.TCP, 27)));
});

test('flag getters', (t) => {
  const buf = Uint8Array.from(SEGMENT);
  const v = new TcpView();
  t.true(v.reset(buf, 0, buf.length));
  v.setFlags(TcpFlags.SYN | TcpFlags.FIN | TcpFlags.RST);
  t.deepEqual([v.syn(), v.fin(), v.rst(), v.ack(), v.psh()], [true, true, true, false, false]);
  v.setFlags(TcpFlags.ACK);
  t.deepEqual([v.syn(), v.fin(), v.rst(), v.ack(), v.psh()], [false, false, false, true, false]);
  t.is(formatTcpFlags(TcpFlags.SYN | TcpFlags.ACK), 'SYN,ACK');
  t.is(formatTcpFlags(0xff), 'SYN,FIN,RST,PSH,ACK,URG,ECE,CWR');
  t.is(formatTcpFlags(0), 'none');
});

test('construct', (t) => {
  const buf = new Uint8Array(SEGMENT.length);
  const v = new TcpView();
  t.false(v.reset(buf, 0, buf.length), 'data offset 0');
  t.true(v.resetRaw(buf, 0, buf.length));
  v.setSrcPort(50000);
  v.setDstPort(80);
  v.setSeqNumber(0x01020304);
  v.setAckNumber(0xfedcba98);
  v.setHeaderLength(24);
  v.setFlags(TcpFlags.PSH | TcpFlags.ACK);
  v.setWindow(64240);
  v.setUrgentPointer(0);
  buf.set(hex('02 04 05 b4 aa 00 00 ff'), v.optionsOffset());
  v.fillChecksum(PSEUDO);
  t.is(toHex(buf), toHex(SEGMENT));
});

test('setHeaderLength keeps the reserved/AE bits', (t) => {
  const buf = Uint8Array.from(SEGMENT);
  buf[12] = 0x61;
  const v = new TcpView();
  t.true(v.reset(buf, 0, buf.length));
  v.setHeaderLength(20);
  t.is(buf[12], 0x51);
});

test('parse', (t) => {
  const v = new TcpView();
  t.true(v.reset(SEGMENT, 0, SEGMENT.length));
  t.deepEqual(parseTcp(v), REPR);
});

test('emit', (t) => {
  const buf = new Uint8Array(SEGMENT.length);
  t.is(tcpLength(REPR), 28);
  t.is(emitTcp(REPR, buf, 0, PSEUDO), 28);
  t.is(toHex(buf), toHex(SEGMENT));
  t.throws(() => emitTcp({ ...REPR, options: hex('01 01 01') }, buf, 0, PSEUDO), { instanceOf: RangeError });
  t.throws(() => emitTcp({ ...REPR, options: new Uint8Array(44) }, new Uint8Array(100), 0, PSEUDO), { instanceOf: RangeError });
  t.throws(() => emitTcp(REPR, new Uint8Array(27), 0, PSEUDO), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatTcp(REPR), 'TCP src=50000 dst=80 seq=16909060 ack=4275878552 flags=PSH,ACK win=64240 opts=4 len=4');
  t.is(
    formatTcp({ ...REPR, flags: TcpFlags.SYN, options: new Uint8Array(0), payload: new Uint8Array(0) }),
    'TCP src=50000 dst=80 seq=16909060 flags=SYN win=64240 len=0',
  );
});

test('truncated buffers are refused', (t) => {
  const v = new TcpView();
  t.false(v.reset(SEGMENT, 0, 19));
  t.false(v.reset(SEGMENT, 0, 23), 'options cut');
  t.false(v.reset(SEGMENT, 1, 28));
  const off4 = Uint8Array.from(SEGMENT);
  off4[12] = 0x40;
  t.false(v.reset(off4, 0, off4.length), 'data offset below 5');
  const off15 = Uint8Array.from(SEGMENT);
  off15[12] = 0xf0;
  t.false(v.reset(off15, 0, off15.length), 'data offset beyond the segment');
  t.true(v.reset(SEGMENT, 0, 24), 'no payload');
  t.is(v.payloadLength(), 0);
  t.true(v.resetRaw(SEGMENT, 0, TCP_HEADER_LEN));
});
