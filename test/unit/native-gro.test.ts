import test, { type ExecutionContext } from 'ava';
import { GRO_SHORT_DATAGRAM, GRO_SLOT_ABSORBED, GroError, internetChecksum, segmentTso, VNET_HDR_LEN, vxlanGro, vxlanGroSlots } from '../../src/native/index.js';
import { buildArpRequest, buildTcp4, buildTcp6, buildUdp4, filler } from '../../src/packet/builders.js';
import { pseudoSumV4At } from '../../src/packet/checksum.js';
import { Ipv4View } from '../../src/packet/ipv4.js';
import { TcpFlags, TcpView } from '../../src/packet/tcp.js';
import { GsoType, VnetFlags, VnetView } from '../../src/packet/vnet.js';
import { VXLAN_HEADER_LEN, VxlanView } from '../../src/packet/vxlan.js';

/** Inner TCP payload per segment: a 1500-byte underlay MTU less outer IP/UDP, VXLAN, Ethernet, IP and a 32-byte TCP header. */
const MSS = 1398;
/** Ethernet + IPv4 + TCP with timestamps. */
const HDRS = 14 + 20 + 32;
const FRAME_LEN = HDRS + MSS;
/** The UDP_GRO segment size: every datagram of a blob but the last is this long. */
const SEG = VXLAN_HEADER_LEN + FRAME_LEN;
const VNI = 4242;
const SEQ0 = 0xffff_f000; // wraps inside a run
const ID0 = 0xfffd;
const ACK = 777_777;
/** NOP, NOP, timestamp: what Linux puts on every data segment. */
const TS_OPTIONS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
/** Where the blob starts in the buffer, as in an rx slot after its headroom. */
const BLOB_OFF = 128;
const MAX = 64;

interface SegmentOptions {
  index: number;
  payload?: number;
  flags?: number;
  seq?: number;
  ack?: number;
  options?: Uint8Array;
}

/** Inner segment i of a flow: seq, IP id and payload bytes all follow i, as a sender's TSO cuts them. */
function segment(o: SegmentOptions): Buffer {
  return buildTcp4({
    seq: o.seq ?? (SEQ0 + o.index * MSS) >>> 0,
    ack: o.ack ?? ACK,
    ident: (ID0 + o.index) & 0xffff,
    flags: o.flags ?? TcpFlags.ACK,
    window: 501,
    options: o.options ?? TS_OPTIONS,
    payload: filler(o.payload ?? MSS, o.index),
  });
}

function vxlan(vni = VNI): Buffer {
  const b = Buffer.alloc(VXLAN_HEADER_LEN);
  const v = new VxlanView();
  v.reset(b, 0, b.length);
  v.writeHeader(vni);
  return b;
}

type Datagram = Buffer | { frame: Buffer; vni: number } | { raw: Buffer };

function bytesOf(d: Datagram): Buffer {
  if (Buffer.isBuffer(d)) return Buffer.concat([vxlan(), d]);
  if ('raw' in d) return d.raw;
  return Buffer.concat([vxlan(d.vni), d.frame]);
}

/** The blob at BLOB_OFF, then `room` bytes of output region (filled with 0xa5). */
function blobOf(datagrams: Datagram[], room = 70_000) {
  const parts = datagrams.map(bytesOf);
  parts.forEach((p, i) => {
    if (i < parts.length - 1 && p.length !== SEG) throw new Error(`datagram ${i} is ${p.length} bytes, not ${SEG}: not a UDP GRO blob`);
  });
  const blob = Buffer.concat(parts);
  const buf = Buffer.alloc(BLOB_OFF + blob.length + room).fill(0xa5);
  buf.set(blob, BLOB_OFF);
  return { buf, blobLength: blob.length, outOffset: BLOB_OFF + blob.length, outLimit: buf.length, parts };
}

interface Frame {
  buf: Buffer;
  offset: number;
  length: number;
  header: number;
  bytes: Buffer;
  vnet: VnetView;
}

function gro(b: ReturnType<typeof blobOf>, opts: { segmentSize?: number; outLimit?: number; max?: number } = {}): { n: number; frames: Frame[] } {
  const offsets = new Uint32Array(MAX);
  const lengths = new Uint32Array(MAX);
  const headers = new Uint32Array(MAX);
  const n = vxlanGro(b.buf, BLOB_OFF, b.blobLength, opts.segmentSize ?? SEG, b.outOffset, opts.outLimit ?? b.outLimit, offsets, lengths, headers, opts.max ?? MAX);
  const frames: Frame[] = [];
  for (let i = 0; i < n; i++) {
    const vnet = new VnetView();
    if (headers[i] !== GRO_SHORT_DATAGRAM) vnet.reset(b.buf, offsets[i] - VNET_HDR_LEN, VNET_HDR_LEN);
    frames.push({ buf: b.buf, offset: offsets[i], length: lengths[i], header: headers[i], bytes: b.buf.subarray(offsets[i], offsets[i] + lengths[i]), vnet });
  }
  return { n, frames };
}

const headerAt = (datagram: number) => BLOB_OFF + datagram * SEG;

function isPlain(t: ExecutionContext, f: Frame, original: Buffer, datagram: number, what: string): void {
  t.is(f.header, headerAt(datagram), `${what}: header offset`);
  t.is(internetChecksum(f.buf, f.offset - VNET_HDR_LEN, VNET_HDR_LEN), 0xffff, `${what}: all-zero vnet header`);
  t.true(f.bytes.equals(original), `${what}: bytes unchanged`);
}

/** Checks a merged frame against its segments, then segments it back with segmentTso and compares byte for byte. */
function isMerged(t: ExecutionContext, f: Frame, originals: Buffer[], datagram: number, what: string): void {
  const payload = Buffer.concat(originals.map((o) => o.subarray(HDRS)));
  t.is(f.header, headerAt(datagram), `${what}: header offset`);
  t.is(f.length, HDRS + payload.length, `${what}: length`);
  t.true(f.bytes.subarray(HDRS).equals(payload), `${what}: payloads in order`);
  t.is(f.vnet.flags(), VnetFlags.NEEDS_CSUM);
  t.is(f.vnet.gsoType(), GsoType.TCPV4);
  t.is(f.vnet.hdrLen(), HDRS);
  t.is(f.vnet.gsoSize(), originals[0].length - HDRS, `${what}: gso_size is the head's payload`);
  t.is(f.vnet.csumStart(), 34);
  t.is(f.vnet.csumOffset(), 16);
  const ip = new Ipv4View();
  t.true(ip.reset(f.bytes, 14, f.length - 14));
  t.is(ip.totalLength(), f.length - 14, `${what}: IP total length`);
  t.true(ip.verifyChecksum(), `${what}: IP header checksum`);
  t.is(ip.ident(), originals[0].readUInt16BE(18), `${what}: the head's IP id`);
  const tcp = new TcpView();
  t.true(tcp.reset(f.bytes, 34, f.length - 34));
  t.is(tcp.checksum(), pseudoSumV4At(f.bytes, 14, f.length - 34), `${what}: TCP checksum field holds the pseudo-header sum`);
  const lastFlags = originals[originals.length - 1][47];
  t.is(tcp.flags(), originals[0][47] | (lastFlags & TcpFlags.PSH), `${what}: flags`);
  // Everything but IP length/checksum and the TCP checksum and flags is the head's.
  const expect = Buffer.from(originals[0].subarray(0, HDRS));
  const got = Buffer.from(f.bytes.subarray(0, HDRS));
  for (const [at, n] of [
    [16, 2],
    [24, 2],
    [47, 1],
    [50, 2],
  ]) {
    expect.fill(0, at, at + n);
    got.fill(0, at, at + n);
  }
  t.true(got.equals(expect), `${what}: headers are the head's`);

  // Round trip: segmentTso cuts it back into the original frames (it numbers IP ids id0 + i, as the segments were built).
  const out = Buffer.alloc(originals.length * 2048);
  const offsets = new Uint32Array(originals.length).map((_, i) => i * 2048);
  const lengths = new Uint32Array(originals.length);
  const n = segmentTso(f.buf, f.offset, f.length, out, offsets, lengths, originals.length, 0);
  t.is(n, originals.length, `${what}: segmentTso count`);
  for (let i = 0; i < n; i++) {
    t.true(out.subarray(offsets[i], offsets[i] + lengths[i]).equals(originals[i]), `${what}: segment ${i} reproduced byte for byte`);
  }
}

test('five consecutive MSS segments become one TSO super-frame that segmentTso turns back into the five', (t) => {
  const segs = [0, 1, 2, 3, 4].map((index) => segment({ index }));
  const b = blobOf(segs);
  const { n, frames } = gro(b);
  t.is(n, 1);
  isMerged(t, frames[0], segs, 0, 'run');
  t.is(frames[0].offset, b.outOffset + VNET_HDR_LEN, 'packed from outOffset');
  t.is(b.buf[frames[0].offset + frames[0].length], 0xa5, 'nothing written past the frame');
  t.true(b.buf.subarray(BLOB_OFF, b.outOffset).equals(Buffer.concat(b.parts)), 'the blob is left intact');
});

test('a shorter last segment with PSH joins the run and the merged frame has PSH', (t) => {
  const segs = [0, 1, 2].map((index) => segment({ index }));
  segs.push(segment({ index: 3, payload: 500, flags: TcpFlags.ACK | TcpFlags.PSH }));
  const { n, frames } = gro(blobOf(segs));
  t.is(n, 1);
  isMerged(t, frames[0], segs, 0, 'run');
  t.is(frames[0].bytes[47], TcpFlags.ACK | TcpFlags.PSH);
});

test('PSH in the middle ends the run after that segment; a head with PSH takes nothing', (t) => {
  const segs = [0, 1, 2, 3, 4].map((index) => segment({ index, flags: index === 1 || index === 2 ? TcpFlags.ACK | TcpFlags.PSH : TcpFlags.ACK }));
  const { n, frames } = gro(blobOf(segs));
  t.is(n, 3);
  isMerged(t, frames[0], segs.slice(0, 2), 0, 'up to the PSH');
  isPlain(t, frames[1], segs[2], 2, 'a PSH head alone');
  isMerged(t, frames[2], segs.slice(3), 3, 'the rest');
});

test('a sequence hole splits the run where the hole is', (t) => {
  const segs = [0, 1, 3, 4, 5].map((index) => segment({ index }));
  const { n, frames } = gro(blobOf(segs));
  t.is(n, 2);
  isMerged(t, frames[0], segs.slice(0, 2), 0, 'before the hole');
  isMerged(t, frames[1], segs.slice(2), 2, 'after the hole');
});

/** Builders of a datagram that must not join the run before it, and must not head one with the next. */
const SPLITTERS: [string, (index: number) => Datagram][] = [
  ['a sequence number off by one', (index) => segment({ index, seq: (SEQ0 + index * MSS + 1) >>> 0 })],
  ['a different VNI', (index) => ({ frame: segment({ index }), vni: VNI + 1 })],
  ['a different ack', (index) => segment({ index, ack: ACK + 1 })],
  ['different options', (index) => segment({ index, options: Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 2]) })],
  [
    'a bad TCP checksum',
    (index) => {
      const f = segment({ index });
      f[HDRS + 100] ^= 1;
      return f;
    },
  ],
  [
    'a bad IP header checksum',
    (index) => {
      const f = segment({ index });
      f[24] ^= 1;
      return f;
    },
  ],
  ['a UDP inner packet', () => buildUdp4({ payload: filler(FRAME_LEN - 42) })],
  ['an ARP inner frame (padded to the segment size)', () => Buffer.concat([buildArpRequest(), Buffer.alloc(FRAME_LEN - 42)])],
  ['a SYN', (index) => segment({ index, flags: TcpFlags.SYN | TcpFlags.ACK })],
  ['a FIN', (index) => segment({ index, flags: TcpFlags.FIN | TcpFlags.ACK })],
  ['Ethernet padding after the IP packet', (index) => Buffer.concat([segment({ index, payload: MSS - 4 }), Buffer.alloc(4)])],
  ['IPv6 inner', (index) => buildTcp6({ seq: SEQ0 + index * MSS, ack: ACK, flags: TcpFlags.ACK, options: TS_OPTIONS, payload: filler(MSS - 20, index) })],
];

for (const [name, make] of SPLITTERS) {
  test(`split around ${name}`, (t) => {
    const segs = [0, 1, 2, 3, 4].map((index) => segment({ index }));
    const odd = make(2);
    const b = blobOf([segs[0], segs[1], odd, segs[3], segs[4]]);
    const { n, frames } = gro(b);
    t.is(n, 3);
    isMerged(t, frames[0], segs.slice(0, 2), 0, 'before');
    isPlain(t, frames[1], b.parts[2].subarray(VXLAN_HEADER_LEN), 2, name);
    isMerged(t, frames[2], segs.slice(3), 3, 'after');
  });
}

test('the merged IP total length stays within 65535', (t) => {
  const segs = Array.from({ length: 50 }, (_, index) => segment({ index }));
  const { n, frames } = gro(blobOf(segs, 200_000));
  // 46 * 1398 + 52 = 64360 fits; 47 segments would be 65758.
  t.is(n, 2);
  isMerged(t, frames[0], segs.slice(0, 46), 0, 'first 46');
  isMerged(t, frames[1], segs.slice(46), 46, 'last 4');
});

test('a datagram too short for a VXLAN header gets GRO_SHORT_DATAGRAM; one of just the header an empty frame', (t) => {
  const segs = [0, 1, 2].map((index) => segment({ index }));
  const { n, frames } = gro(blobOf([...segs, { raw: Buffer.from([8, 0, 0, 0, 0]) }]));
  t.is(n, 2);
  isMerged(t, frames[0], segs, 0, 'run');
  t.is(frames[1].header, GRO_SHORT_DATAGRAM);
  t.is(frames[1].length, 0);
  t.is(frames[1].offset, 0);

  const b = blobOf([segs[0], { raw: vxlan() }]);
  const r = gro(b);
  t.is(r.n, 2);
  isPlain(t, r.frames[0], segs[0], 0, 'alone');
  t.is(r.frames[1].header, headerAt(1), 'a header-only datagram keeps its header offset');
  t.is(r.frames[1].length, 0);
});

test('a blob of one datagram is copied unchanged', (t) => {
  const seg = segment({ index: 0, payload: 200 });
  const { n, frames } = gro(blobOf([seg]));
  t.is(n, 1);
  isPlain(t, frames[0], seg, 0, 'one TCP segment');
  const udp = buildUdp4({ payload: filler(100) });
  const r = gro(blobOf([udp]), { segmentSize: SEG });
  t.is(r.n, 1);
  isPlain(t, r.frames[0], udp, 0, 'one UDP packet');
});

test('NO_ROOM when the output region or maxFrames is too small; the documented bound always fits', (t) => {
  // Five standalone frames: the worst case, blobLength + 2 bytes per datagram.
  const udp = Array.from({ length: 5 }, (_, i) => buildUdp4({ payload: filler(FRAME_LEN - 42, i) }));
  const b = blobOf(udp);
  const exact = b.outOffset + b.blobLength + 2 * 5;
  t.is(gro(b, { outLimit: exact }).n, 5);
  t.is(gro(b, { outLimit: exact - 1 }).n, GroError.NO_ROOM);
  t.is(gro(b, { max: 4 }).n, GroError.NO_ROOM);
  t.is(gro(b, { max: 5 }).n, 5);
  const segs = [0, 1, 2, 3, 4].map((index) => segment({ index }));
  const m = blobOf(segs);
  t.is(gro(m, { outLimit: m.outOffset + 100 }).n, GroError.NO_ROOM);
  t.is(gro(m, { outLimit: m.outOffset + VNET_HDR_LEN + HDRS + 5 * MSS }).n, 1, 'a merged frame needs just its own bytes');
  t.is(gro(m, { max: 0 }).n, GroError.NO_ROOM);
});

test('MALFORMED for arguments that make no sense; a throw only for wrong types', (t) => {
  const b = blobOf([0, 1].map((index) => segment({ index })));
  const a = () => ({ o: new Uint32Array(MAX), l: new Uint32Array(MAX), h: new Uint32Array(MAX) });
  const call = (blobOffset: number, blobLength: number, segmentSize: number, outOffset: number, outLimit: number, max = MAX, arrays = a()) =>
    vxlanGro(b.buf, blobOffset, blobLength, segmentSize, outOffset, outLimit, arrays.o, arrays.l, arrays.h, max);
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset, b.outLimit), 1);
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset - 1, b.outLimit), GroError.MALFORMED, 'output overlaps the end of the blob');
  t.is(call(BLOB_OFF, b.blobLength, SEG, 0, BLOB_OFF + 1), GroError.MALFORMED, 'output overlaps the start of the blob');
  t.is(call(BLOB_OFF, b.blobLength, SEG, 0, BLOB_OFF), GroError.NO_ROOM, 'output right before the blob is fine (and too small here)');
  t.is(call(BLOB_OFF, b.blobLength, 0, b.outOffset, b.outLimit), GroError.MALFORMED, 'segmentSize 0');
  t.is(call(BLOB_OFF, b.buf.length, SEG, 0, 0), GroError.MALFORMED, 'blob beyond the buffer');
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset, b.buf.length + 1), GroError.MALFORMED, 'outLimit beyond the buffer');
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outLimit, b.outOffset), GroError.MALFORMED, 'outOffset after outLimit');
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset, b.outLimit, MAX + 1), GroError.MALFORMED, 'maxFrames beyond the arrays');
  const shared = new Uint32Array(MAX);
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset, b.outLimit, MAX, { o: shared, l: shared, h: new Uint32Array(MAX) }), GroError.MALFORMED, 'arrays share memory');
  const overBuffer = new Uint32Array(b.buf.buffer, b.buf.byteOffset + b.outOffset, 4);
  t.is(call(BLOB_OFF, b.blobLength, SEG, b.outOffset, b.outLimit, 4, { o: overBuffer, l: new Uint32Array(4), h: new Uint32Array(4) }), GroError.MALFORMED, 'an array inside the output region');
  const o = new Uint32Array(MAX);
  t.throws(() => vxlanGro('x' as unknown as Buffer, 0, 0, SEG, 0, 0, o, o, o, 0), { message: /buffer must be/ });
  t.throws(() => vxlanGro(b.buf, BLOB_OFF, b.blobLength, SEG, b.outOffset, b.outLimit, new Int32Array(MAX) as unknown as Uint32Array, o, o, 1), { message: /frameOffsets must be a Uint32Array/ });
  t.throws(() => vxlanGro(b.buf, '0' as unknown as number, b.blobLength, SEG, b.outOffset, b.outLimit, o, o, o, 1), { message: /blobOffset/ });
});

// ---------------------------------------------------------------------------
// vxlanGroSlots: the single datagrams of an rx batch, merged in place

const SLOT = 65_536 + 256;
const HEADROOM = 128;

/** An rx batch as the engine lands it: datagram k (VXLAN header + frame) at k * SLOT + HEADROOM - 8, its sender in sources. */
function slotsOf(datagrams: Datagram[], from: number[] = datagrams.map(() => 0x0a000001)) {
  const buf = Buffer.alloc(datagrams.length * SLOT).fill(0x5a);
  const lengths = new Int32Array(datagrams.length);
  const sources = new Uint32Array(4 * datagrams.length);
  const parts = datagrams.map(bytesOf);
  parts.forEach((p, k) => {
    buf.set(p, k * SLOT + HEADROOM - VXLAN_HEADER_LEN);
    lengths[k] = p.length - VXLAN_HEADER_LEN;
    sources[4 * k] = from[k];
    sources[4 * k + 1] = 4789;
  });
  return { buf, lengths, sources, parts, info: new Uint32Array(2 * datagrams.length) };
}

test('vxlanGroSlots merges a run of single datagrams into the first slot: a TSO super-frame, every byte accounted for', (t) => {
  const segs = [0, 1, 2, 3, 4].map((index) => segment({ index, payload: index === 4 ? 100 : MSS, flags: index === 4 ? TcpFlags.ACK | TcpFlags.PSH : TcpFlags.ACK }));
  segs[2].writeUInt16BE(pseudoSumV4At(segs[2], 14, segs[2].length - 34), 34 + 16); // one partial checksum, as from a kernel peer
  const b = slotsOf([...segs, buildArpRequest({})]);
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 6, b.lengths, b.sources, b.info), 1);
  t.deepEqual([...b.info], [(HDRS << 16) | MSS, HDRS + 4 * MSS + 100, GRO_SLOT_ABSORBED, 0, GRO_SLOT_ABSORBED, 0, GRO_SLOT_ABSORBED, 0, GRO_SLOT_ABSORBED, 0, 0, 0]);
  const f = b.buf.subarray(HEADROOM, HEADROOM + b.info[1]);
  const ip = new Ipv4View();
  t.true(ip.reset(f, 14, f.length - 14));
  t.is(ip.totalLength(), f.length - 14);
  t.is(internetChecksum(f, 14, 20), 0);
  const tcp = new TcpView();
  t.true(tcp.reset(f, 34, f.length - 34));
  t.is(tcp.seqNumber(), SEQ0);
  t.is(tcp.flags(), TcpFlags.ACK | TcpFlags.PSH, 'the last segment’s PSH');
  t.is(f.readUInt16BE(34 + 16), pseudoSumV4At(f, 14, f.length - 34), 'partial: the pseudo-header sum');
  t.true(f.subarray(HDRS).equals(Buffer.concat(segs.map((s) => s.subarray(HDRS)))), 'the payloads in order');
  t.true(b.buf.subarray(HEADROOM - 8, HEADROOM).equals(vxlan()), 'the first VXLAN header is where it was, for the caller');
  t.true(b.buf.subarray(5 * SLOT + HEADROOM - 8, 5 * SLOT + HEADROOM - 8 + b.parts[5].length).equals(b.parts[5]), 'the ARP slot untouched');
  t.deepEqual([...b.lengths], [...b.parts.map((p) => p.length - 8)], 'lengths only read');
});

test('vxlanGroSlots leaves alone what must not merge: other senders, blobs, malformed slots, corrupt or out-of-order segments', (t) => {
  const corrupt = segment({ index: 5 });
  corrupt[HDRS + 3] ^= 0xff;
  const datagrams: Datagram[] = [segment({ index: 0 }), segment({ index: 1 }), segment({ index: 2 }), segment({ index: 3 }), segment({ index: 4 }), corrupt, segment({ index: 7 }), segment({ index: 9 }), { frame: segment({ index: 10 }), vni: VNI + 1 }];
  const b = slotsOf(datagrams, [1, 1, 2, 1, 1, 1, 1, 1, 1]);
  b.sources[4 * 3 + 2] = SEG; // slot 3: a GRO blob (vxlanGro's)
  b.lengths[4] = -1; // slot 4: malformed
  const before = Buffer.from(b.buf);
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, datagrams.length, b.lengths, b.sources, b.info), 1);
  t.deepEqual([...b.info].filter((_, i) => i % 2 === 0), [(HDRS << 16) | MSS, GRO_SLOT_ABSORBED, 0, 0, 0, 0, 0, 0, 0]);
  t.true(b.buf.subarray(SLOT).equals(before.subarray(SLOT)), 'every other slot as it was');
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 1, b.lengths, b.sources, b.info), 0, 'one slot: nothing to merge');
});

test('vxlanGroSlots: MALFORMED for arguments that make no sense; a throw only for wrong types', (t) => {
  const b = slotsOf([segment({ index: 0 }), segment({ index: 1 })]);
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 3, b.lengths, b.sources, b.info), GroError.MALFORMED, 'more slots than the buffer holds');
  t.is(vxlanGroSlots(b.buf, SLOT, 4, 2, b.lengths, b.sources, b.info), GroError.MALFORMED, 'no room for the VXLAN header');
  t.is(vxlanGroSlots(b.buf, SLOT, SLOT, 2, b.lengths, b.sources, b.info), GroError.MALFORMED, 'headroom fills the slot');
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, b.lengths, b.sources, new Uint32Array(3)), GroError.MALFORMED, 'info too short');
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, b.lengths, new Uint32Array(7), b.info), GroError.MALFORMED, 'sources too short');
  const inside = new Uint32Array(b.buf.buffer, b.buf.byteOffset + 16, 4);
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, b.lengths, b.sources, inside), GroError.MALFORMED, 'info inside the slots');
  t.is(vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, b.lengths, b.sources, b.info), 1);
  t.throws(() => vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, new Uint32Array(2) as unknown as Int32Array, b.sources, b.info), { message: /lengths must be a Int32Array|lengths must be an Int32Array/ });
  t.throws(() => vxlanGroSlots(b.buf, SLOT, HEADROOM, 2, b.lengths, b.sources, new Int32Array(4) as unknown as Uint32Array), { message: /info must be a Uint32Array/ });
});
