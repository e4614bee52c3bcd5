import test, { type ExecutionContext } from 'ava';
import { completeChecksum, internetChecksum, SegmentError, segmentTso, VNET_HDR_LEN } from '../../src/native/index.js';
import { buildTcp4, buildTcp6, buildUdp4, buildUdp6, filler } from '../../src/packet/builders.js';
import { onesComplementSum, pseudoSumV4At, pseudoSumV6At } from '../../src/packet/checksum.js';
import { IpProtocol, Ipv4View } from '../../src/packet/ipv4.js';
import { Ipv6View } from '../../src/packet/ipv6.js';
import { TcpFlags, TcpView } from '../../src/packet/tcp.js';
import { GsoType, VnetFlags, VnetView } from '../../src/packet/vnet.js';
import { mulberry32 } from './helpers/random.js';

/** Where the frame sits in its input buffer, as in an rx slot: the vnet header in the 10 bytes before. */
const FRAME_OFF = 128;
const MSS = 1448;
const SLOTS = 64;
const STRIDE = 2048;
const OUT_HEADROOM = 64;
/** NOP, NOP, timestamp: what Linux puts on every data segment. */
const TS_OPTIONS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

interface Layout {
  v6: boolean;
  /** Offset of the IP header in the frame. */
  ip: number;
  /** Offset of the TCP header in the frame. */
  l4: number;
}

/**
 * The super-frame as a TAP with TSO hands it over: vnet header (NEEDS_CSUM,
 * TCPV4/6, gso_size, hdr_len), and in the TCP checksum field only the
 * pseudo-header sum.
 */
function superFrame(frame: Buffer, layout: Layout, vnet: { gsoType?: number; gsoSize?: number; hdrLen?: number } = {}): Buffer {
  const buf = Buffer.alloc(FRAME_OFF + frame.length + 32);
  buf.set(frame, FRAME_OFF);
  const f = FRAME_OFF;
  const tcpLen = frame.length - layout.l4;
  const pseudo = layout.v6 ? pseudoSumV6At(buf, f + layout.ip, IpProtocol.TCP, tcpLen) : pseudoSumV4At(buf, f + layout.ip, tcpLen);
  buf.writeUInt16BE(pseudo, f + layout.l4 + 16);
  const v = new VnetView();
  v.reset(buf, f - VNET_HDR_LEN, VNET_HDR_LEN);
  v.setFlags(VnetFlags.NEEDS_CSUM);
  v.setGsoType(vnet.gsoType ?? (layout.v6 ? GsoType.TCPV6 : GsoType.TCPV4));
  v.setGsoSize(vnet.gsoSize ?? MSS);
  v.setHdrLen(vnet.hdrLen ?? layout.l4 + ((frame[layout.l4 + 12] >> 4) << 2));
  v.setCsumStart(layout.l4);
  v.setCsumOffset(16);
  return buf;
}

function output(stride = STRIDE) {
  const out = Buffer.alloc(SLOTS * stride).fill(0xa5);
  const offsets = new Uint32Array(SLOTS).map((_, i) => i * stride + OUT_HEADROOM);
  return { out, offsets, lengths: new Uint32Array(SLOTS) };
}

function segment(input: Buffer, frameLength: number, o = output(), max = SLOTS, outVnetLen = VNET_HDR_LEN): number {
  return segmentTso(input, FRAME_OFF, frameLength, o.out, o.offsets, o.lengths, max, outVnetLen);
}

/** Checks every segment against the super-frame and returns the reassembled payload. */
function verifySegments(t: ExecutionContext, original: Buffer, layout: Layout, o: ReturnType<typeof output>, n: number, mss = MSS): Buffer {
  const ip4 = new Ipv4View();
  const ip6 = new Ipv6View();
  const tcp = new TcpView();
  const orig = new TcpView();
  t.true(orig.reset(original, layout.l4, original.length - layout.l4));
  const hdrEnd = layout.l4 + orig.headerLength();
  const payloads: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const off = o.offsets[i];
    const len = o.lengths[i];
    const last = i === n - 1;
    t.is(internetChecksum(o.out, off - VNET_HDR_LEN, VNET_HDR_LEN, 0), 0xffff, `segment ${i}: zeroed vnet header`);
    t.true(o.out.subarray(off, off + layout.ip).equals(original.subarray(0, layout.ip)), `segment ${i}: L2 unchanged`);
    let pseudo: number;
    if (layout.v6) {
      t.true(ip6.reset(o.out, off + layout.ip, len - layout.ip));
      t.is(ip6.payloadLength(), len - layout.l4, `segment ${i}: IPv6 payload length`);
      pseudo = pseudoSumV6At(o.out, off + layout.ip, IpProtocol.TCP, len - layout.l4);
    } else {
      t.true(ip4.reset(o.out, off + layout.ip, len - layout.ip));
      t.is(ip4.totalLength(), len - layout.ip, `segment ${i}: IPv4 total length`);
      t.is(ip4.ident(), (original.readUInt16BE(layout.ip + 4) + i) & 0xffff, `segment ${i}: IPv4 id`);
      t.true(ip4.verifyChecksum(), `segment ${i}: IPv4 header checksum`);
      pseudo = pseudoSumV4At(o.out, off + layout.ip, len - layout.l4);
    }
    t.true(tcp.reset(o.out, off + layout.l4, len - layout.l4));
    t.true(tcp.verifyChecksum(pseudo), `segment ${i}: TCP checksum`);
    t.is(tcp.seqNumber(), (orig.seqNumber() + i * mss) >>> 0, `segment ${i}: sequence number`);
    t.is(tcp.headerLength(), orig.headerLength(), `segment ${i}: options kept`);
    t.true(o.out.subarray(off + layout.l4 + 20, off + hdrEnd).equals(original.subarray(layout.l4 + 20, hdrEnd)));
    const expectFlags = orig.flags() & ~(last ? 0 : TcpFlags.FIN | TcpFlags.PSH) & ~(i === 0 ? 0 : TcpFlags.CWR);
    t.is(tcp.flags(), expectFlags, `segment ${i}: flags`);
    t.true(tcp.payloadLength() === mss || (last && tcp.payloadLength() <= mss), `segment ${i}: payload ${tcp.payloadLength()}`);
    payloads.push(Buffer.from(o.out.subarray(tcp.payloadOffset(), off + len)));
  }
  return Buffer.concat(payloads);
}

const V4: Layout = { v6: false, ip: 14, l4: 34 };
const V6: Layout = { v6: true, ip: 14, l4: 54 };
const ALL_FLAGS = TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN | TcpFlags.CWR | TcpFlags.ECE;

test('TSO4: MSS-sized segments with lengths, ids, sequence numbers, flags and checksums', (t) => {
  const payload = Buffer.from(filler(10_000, 3));
  // Sequence number and IPv4 id both wrap inside the burst.
  const frame = buildTcp4({ payload, seq: 0xffff_f000, ack: 77, ident: 0xfffe, flags: ALL_FLAGS, options: TS_OPTIONS });
  const o = output();
  const n = segment(superFrame(frame, V4), frame.length, o);
  t.is(n, Math.ceil(10_000 / MSS));
  t.is(o.lengths[0], 34 + 32 + MSS);
  t.is(o.lengths[n - 1], 34 + 32 + (10_000 % MSS));
  t.true(verifySegments(t, frame, V4, o, n).equals(payload));
  t.is(o.out[o.offsets[n] - VNET_HDR_LEN], 0xa5, 'nothing written past the last segment');
});

test('TSO6: payload lengths and checksums over the IPv6 pseudo-header', (t) => {
  const payload = Buffer.from(filler(64_000, 9));
  const frame = buildTcp6({ payload, seq: 12345, flags: TcpFlags.ACK | TcpFlags.PSH, options: TS_OPTIONS });
  const o = output();
  const n = segment(superFrame(frame, V6), frame.length, o);
  t.is(n, Math.ceil(64_000 / MSS));
  t.true(verifySegments(t, frame, V6, o, n).equals(payload));
});

test('VLAN-tagged frames, an exact multiple of the MSS, and a payload shorter than one MSS', (t) => {
  const tagged: Layout = { v6: false, ip: 18, l4: 38 };
  for (const [size, expected] of [
    [MSS * 4, 4],
    [100, 1],
    [0, 1],
  ]) {
    const payload = Buffer.from(filler(size, size));
    const frame = buildTcp4({ vlans: [100], payload, flags: TcpFlags.ACK | TcpFlags.FIN });
    const o = output();
    const n = segment(superFrame(frame, tagged), frame.length, o);
    t.is(n, expected, `payload ${size}`);
    t.true(verifySegments(t, frame, tagged, o, n).equals(payload));
  }
  const qinq: Layout = { v6: true, ip: 22, l4: 62 };
  const frame = buildTcp6({ vlans: [10, 20], payload: filler(5000), flags: TcpFlags.ACK });
  const o = output();
  const n = segment(superFrame(frame, qinq), frame.length, o);
  t.is(n, 4);
  t.true(verifySegments(t, frame, qinq, o, n).equals(Buffer.from(filler(5000))));
});

test('a small gso_size and bare frames (no vnet header in the output)', (t) => {
  const frame = buildTcp4({ payload: filler(1000), flags: TcpFlags.ACK });
  const o = output();
  const n = segmentTso(superFrame(frame, V4, { gsoSize: 100 }), FRAME_OFF, frame.length, o.out, o.offsets, o.lengths, SLOTS, 0);
  t.is(n, 10);
  t.is(o.out[o.offsets[0] - 1], 0xa5, 'the headroom is left alone');
  // Rewrite the (untouched) vnet area to zeros so the shared verifier applies.
  for (let i = 0; i < n; i++) o.out.fill(0, o.offsets[i] - VNET_HDR_LEN, o.offsets[i]);
  t.true(verifySegments(t, frame, V4, o, n, 100).equals(Buffer.from(filler(1000))));
});

test('hdr_len is a hint: a larger one (the kernel reports its linear length) still segments by the parsed headers', (t) => {
  const frame = buildTcp4({ payload: filler(3000), flags: TcpFlags.ACK });
  const o = output();
  const n = segment(superFrame(frame, V4, { hdrLen: 200 }), frame.length, o);
  t.is(n, 3);
  t.true(verifySegments(t, frame, V4, o, n).equals(Buffer.from(filler(3000))));
});

test('inconsistent input returns an error code and writes nothing', (t) => {
  const frame = buildTcp4({ payload: filler(5000), flags: TcpFlags.ACK });
  const frame6 = buildTcp6({ payload: filler(5000), flags: TcpFlags.ACK });
  const cases: [string, Buffer, number, number][] = [
    ['gso_size 0', superFrame(frame, V4, { gsoSize: 0 }), frame.length, SegmentError.MALFORMED],
    ['hdr_len beyond the frame', superFrame(frame, V4, { hdrLen: frame.length + 1 }), frame.length, SegmentError.MALFORMED],
    ['truncated inside the TCP header', superFrame(frame, V4), 40, SegmentError.MALFORMED],
    ['truncated inside the Ethernet header', superFrame(frame, V4), 10, SegmentError.MALFORMED],
    ['empty', superFrame(frame, V4), 0, SegmentError.MALFORMED],
    ['IPv4 total length beyond the frame', superFrame(frame, V4), frame.length - 1, SegmentError.MALFORMED],
    ['IPv6 payload length beyond the frame', superFrame(frame6, V6), frame6.length - 1, SegmentError.MALFORMED],
    ['TCPV6 on an IPv4 frame', superFrame(frame, V4, { gsoType: GsoType.TCPV6 }), frame.length, SegmentError.MALFORMED],
    ['GSO NONE', superFrame(frame, V4, { gsoType: GsoType.NONE }), frame.length, SegmentError.UNSUPPORTED],
    ['UFO', superFrame(frame, V4, { gsoType: GsoType.UDP }), frame.length, SegmentError.UNSUPPORTED],
  ];
  const notTcp = superFrame(frame, V4);
  notTcp[FRAME_OFF + 14 + 9] = IpProtocol.UDP;
  cases.push(['IPv4 protocol not TCP', notTcp, frame.length, SegmentError.MALFORMED]);
  const fragment = superFrame(frame, V4);
  fragment[FRAME_OFF + 14 + 6] |= 0x20; // MF
  cases.push(['an IPv4 fragment', fragment, frame.length, SegmentError.MALFORMED]);
  const shortDataOffset = superFrame(frame, V4);
  shortDataOffset[FRAME_OFF + 34 + 12] = 0x40; // 16-byte TCP header
  cases.push(['TCP data offset below 5', shortDataOffset, frame.length, SegmentError.MALFORMED]);
  const extHeader = superFrame(frame6, V6);
  extHeader[FRAME_OFF + 14 + 6] = 0; // hop-by-hop options
  cases.push(['IPv6 extension header', extHeader, frame6.length, SegmentError.UNSUPPORTED]);
  for (const [name, input, len, code] of cases) {
    const o = output();
    t.is(segment(input, len, o), code, name);
    t.true(o.out.every((b) => b === 0xa5), `${name}: output untouched`);
  }
});

test('too little room: more segments than maxSegments, or an offset too close to either end', (t) => {
  const frame = buildTcp4({ payload: filler(5000), flags: TcpFlags.ACK });
  const input = superFrame(frame, V4);
  t.is(segment(input, frame.length, output(), 3), SegmentError.TOO_MANY_SEGMENTS);
  t.is(segment(input, frame.length, output(), 4), 4);
  const o = output();
  o.offsets[2] = o.out.length - 100;
  t.is(segment(input, frame.length, o), SegmentError.NO_ROOM);
  o.offsets[2] = 4;
  t.is(segment(input, frame.length, o), SegmentError.NO_ROOM, 'no room for the vnet header');
  t.true(o.out.every((b) => b === 0xa5));
  t.is(segmentTso(input, FRAME_OFF, frame.length, o.out, o.offsets, o.lengths, SLOTS, 0), 4, 'without a vnet header it fits');
});

test('argument errors throw instead of reading outside the buffers', (t) => {
  const frame = buildTcp4({ payload: filler(100) });
  const input = superFrame(frame, V4);
  const o = output();
  t.throws(() => segmentTso(input, 5, 50, o.out, o.offsets, o.lengths, SLOTS, 0), { message: /outside the buffer/ });
  t.throws(() => segmentTso(input, FRAME_OFF, input.length, o.out, o.offsets, o.lengths, SLOTS, 0), { message: /outside the buffer/ });
  t.throws(() => segmentTso(input, FRAME_OFF, frame.length, o.out, o.offsets, o.lengths, SLOTS + 1, 0), { message: /exceeds the descriptor arrays/ });
  t.throws(() => segmentTso(input, FRAME_OFF, frame.length, o.out, o.offsets, o.lengths, SLOTS, 4), { message: /outVnetLen/ });
  t.throws(() => segmentTso(input, FRAME_OFF, frame.length, o.out, o.offsets, o.offsets, SLOTS, 0), { message: /share memory/ });
  t.throws(() => completeChecksum(input, 9, 10), { message: /outside the buffer/ });
});

test('fuzz: mutated headers never fault, and every reported segment verifies', (t) => {
  const rand = mulberry32(4242);
  const bases: [Buffer, Layout][] = [
    [buildTcp4({ payload: filler(4000), flags: ALL_FLAGS, options: TS_OPTIONS }), V4],
    [buildTcp6({ payload: filler(4000), flags: ALL_FLAGS }), V6],
    [buildTcp4({ vlans: [5], payload: filler(300), flags: TcpFlags.ACK }), { v6: false, ip: 18, l4: 38 }],
  ];
  // Slots that hold any segment, since flips may raise gso_size (overlapping outputs are the caller's bug).
  const o = output(66_000);
  let ok = 0;
  for (let round = 0; round < 20_000; round++) {
    const [frame, layout] = bases[round % bases.length];
    const input = superFrame(frame, layout, { gsoSize: 1 + Math.floor(rand() * 2000) });
    const flips = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < flips; k++) {
      // Anywhere in the vnet header or the first 80 bytes of the frame.
      const at = FRAME_OFF - VNET_HDR_LEN + Math.floor(rand() * (VNET_HDR_LEN + 80));
      input[at] = Math.floor(rand() * 256);
    }
    const len = rand() < 0.7 ? frame.length : Math.floor(rand() * (frame.length + 1));
    const n = segment(input, len, o);
    t.true(n >= SegmentError.NO_ROOM && n <= SLOTS, `round ${round}: ${n}`);
    for (let i = 0; i < n; i++) {
      // Each segment is a self-consistent frame, whatever the mutation did to the addresses or ports.
      // Untagged ones are checked here (the tagged base keeps its tag unless a flip hit it).
      const off = o.offsets[i];
      const seg = o.out.subarray(off, off + o.lengths[i]);
      const etherType = seg.readUInt16BE(12);
      if (etherType === 0x0800) {
        const ihl = (seg[14] & 15) * 4;
        if (internetChecksum(seg, 14, ihl) !== 0) t.fail(`round ${round} segment ${i}: IPv4 header checksum`);
        const l4 = 14 + ihl;
        const pseudo = pseudoSumV4At(seg, 14, seg.length - l4);
        if (internetChecksum(seg, l4, seg.length - l4, pseudo) !== 0) t.fail(`round ${round} segment ${i}: TCP checksum`);
      } else if (etherType === 0x86dd) {
        const pseudo = pseudoSumV6At(seg, 14, IpProtocol.TCP, seg.length - 54);
        if (internetChecksum(seg, 54, seg.length - 54, pseudo) !== 0) t.fail(`round ${round} segment ${i}: TCP checksum`);
      }
    }
    if (n > 0) ok++;
  }
  t.true(ok > 1000, `${ok} mutated frames still segmented`);
});

test('completeChecksum fills a partial UDP/TCP checksum in place and clears NEEDS_CSUM', (t) => {
  const cases: [string, Buffer, number, number, number][] = [
    ['UDP4', buildUdp4({ payload: filler(333) }), 34, 6, 14],
    ['UDP6', buildUdp6({ payload: filler(1000) }), 54, 6, 14],
    ['TCP4', buildTcp4({ payload: filler(77), flags: TcpFlags.ACK }), 34, 16, 14],
    ['TCP6', buildTcp6({ payload: filler(1), flags: TcpFlags.ACK }), 54, 16, 14],
  ];
  for (const [name, frame, l4, field, ip] of cases) {
    const buf = Buffer.alloc(FRAME_OFF + frame.length);
    buf.set(frame, FRAME_OFF);
    const l4Len = frame.length - l4;
    const pseudo = name.endsWith('6')
      ? pseudoSumV6At(buf, FRAME_OFF + ip, name.startsWith('UDP') ? IpProtocol.UDP : IpProtocol.TCP, l4Len)
      : pseudoSumV4At(buf, FRAME_OFF + ip, l4Len);
    buf.writeUInt16BE(pseudo, FRAME_OFF + l4 + field);
    const v = new VnetView();
    v.reset(buf, FRAME_OFF - VNET_HDR_LEN, VNET_HDR_LEN);
    v.setFlags(VnetFlags.NEEDS_CSUM | VnetFlags.DATA_VALID);
    v.setCsumStart(l4);
    v.setCsumOffset(field);
    t.is(completeChecksum(buf, FRAME_OFF, frame.length), 1, name);
    t.true(buf.subarray(FRAME_OFF).equals(frame), `${name}: the builder's full checksum`);
    t.is(v.flags(), VnetFlags.DATA_VALID, `${name}: NEEDS_CSUM cleared, other flags kept`);
    t.is(completeChecksum(buf, FRAME_OFF, frame.length), 0, `${name}: nothing left to do`);
  }
});

test('completeChecksum writes 0xffff for a UDP sum of zero, and refuses bad offsets and GSO frames', (t) => {
  // A datagram whose complete sum is 0xffff: the checksum would be 0, which means "none" for UDP.
  const frame = buildUdp4({ payload: Uint8Array.from([0, 0]) });
  const buf = Buffer.alloc(FRAME_OFF + frame.length);
  buf.set(frame, FRAME_OFF);
  const pseudo = pseudoSumV4At(buf, FRAME_OFF + 14, frame.length - 34);
  buf.writeUInt16BE(pseudo, FRAME_OFF + 40);
  const partial = onesComplementSum(buf, FRAME_OFF + 34, frame.length - 34);
  buf.writeUInt16BE((0xffff - partial) & 0xffff, FRAME_OFF + 42);
  const v = new VnetView();
  v.reset(buf, FRAME_OFF - VNET_HDR_LEN, VNET_HDR_LEN);
  const arm = (start: number, offset: number, gso: number = GsoType.NONE) => {
    v.setFlags(VnetFlags.NEEDS_CSUM);
    v.setGsoType(gso);
    v.setCsumStart(start);
    v.setCsumOffset(offset);
  };
  arm(34, 6);
  t.is(completeChecksum(buf, FRAME_OFF, frame.length), 1);
  t.is(buf.readUInt16BE(FRAME_OFF + 40), 0xffff);
  arm(34, frame.length - 34 - 1);
  t.is(completeChecksum(buf, FRAME_OFF, frame.length), SegmentError.MALFORMED, 'field runs past the frame');
  arm(0xffff, 0xffff);
  t.is(completeChecksum(buf, FRAME_OFF, frame.length), SegmentError.MALFORMED);
  arm(34, 6, GsoType.TCPV4);
  t.is(completeChecksum(buf, FRAME_OFF, frame.length), SegmentError.UNSUPPORTED);
  t.is(v.flags(), VnetFlags.NEEDS_CSUM, 'a refused frame keeps its flag');
});
