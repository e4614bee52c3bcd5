import test from 'ava';
import { GsoType, VNET_HDR_LEN, VnetFlags, VnetView, emitVnet, formatVnet, isKnownGsoType, parseVnet, type VnetRepr } from '../../src/packet/vnet.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// A TSO4 super-frame as a TAP hands it over: NEEDS_CSUM, TCPV4, hdr_len 66,
// gso_size 1448, checksum from byte 34 (TCP header) at offset 16. Little-endian.
const HDR = hex('01 01 42 00 a8 05 22 00 10 00');
const REPR: VnetRepr = { flags: VnetFlags.NEEDS_CSUM, gsoType: GsoType.TCPV4, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16 };

test('deconstruct', (t) => {
  const v = new VnetView();
  t.true(v.reset(HDR, 0, HDR.length));
  t.is(v.flags(), 1);
  t.true(v.needsCsum());
  t.false(v.dataValid());
  t.is(v.gsoType(), GsoType.TCPV4);
  t.is(v.gsoKind(), GsoType.TCPV4);
  t.false(v.gsoEcn());
  t.is(v.hdrLen(), 66);
  t.is(v.gsoSize(), 1448);
  t.is(v.csumStart(), 34);
  t.is(v.csumOffset(), 16);
});

test('construct', (t) => {
  const buf = new Uint8Array(VNET_HDR_LEN).fill(0xff);
  const v = new VnetView();
  t.true(v.reset(buf, 0, buf.length));
  v.clear();
  t.is(toHex(buf), '00000000000000000000');
  v.setFlags(VnetFlags.NEEDS_CSUM);
  v.setGsoType(GsoType.TCPV4);
  v.setHdrLen(66);
  v.setGsoSize(1448);
  v.setCsumStart(34);
  v.setCsumOffset(16);
  t.is(toHex(buf), toHex(HDR));
});

test('ECN rides on top of the GSO type', (t) => {
  const buf = Uint8Array.from(HDR);
  buf[1] = GsoType.TCPV6 | GsoType.ECN;
  const v = new VnetView();
  t.true(v.reset(buf, 0, buf.length));
  t.is(v.gsoType(), 0x84);
  t.is(v.gsoKind(), GsoType.TCPV6);
  t.true(v.gsoEcn());
  t.is(parseVnet(v)?.gsoType, 0x84);
});

test('parse', (t) => {
  const v = new VnetView();
  t.true(v.reset(HDR, 0, HDR.length));
  t.deepEqual(parseVnet(v), REPR);
});

test('parse refuses unknown GSO types', (t) => {
  const v = new VnetView();
  for (const type of [2, 5, 0x7f, 0x82]) {
    const buf = Uint8Array.from(HDR);
    buf[1] = type;
    t.true(v.reset(buf, 0, buf.length));
    t.is(parseVnet(v), null, `gso_type ${type}`);
  }
  t.deepEqual([0, 1, 3, 4, 0x80, 0x81, 0x83, 0x84].map(isKnownGsoType), new Array(8).fill(true));
});

test('emit', (t) => {
  const buf = new Uint8Array(12).fill(0xee);
  t.is(emitVnet(REPR, buf, 1), VNET_HDR_LEN);
  t.is(toHex(buf.subarray(1, 11)), toHex(HDR));
  t.is(buf[11], 0xee);
  t.throws(() => emitVnet(REPR, new Uint8Array(9), 0), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatVnet(REPR), 'vnet flags=NEEDS_CSUM gso=TCPV4 hdr_len=66 gso_size=1448 csum=34+16');
  t.is(formatVnet({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 }), 'vnet flags=none gso=NONE');
  t.is(formatVnet({ ...REPR, flags: VnetFlags.DATA_VALID, gsoType: GsoType.TCPV6 | GsoType.ECN }), 'vnet flags=DATA_VALID gso=TCPV6+ECN hdr_len=66 gso_size=1448');
});

test('truncated buffers are refused', (t) => {
  const v = new VnetView();
  t.false(v.reset(HDR, 0, 9));
  t.false(v.reset(HDR, 1, 10));
  t.true(v.reset(HDR, 0, 10));
});
