import test from 'ava';
import { buildArpRequest, buildIcmp4Echo, buildTcp4, buildTcp6, buildUdp4, filler, withVnetHeader } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4, pseudoSumV6 } from '../../src/packet/checksum.js';
import { formatIpv4Addr } from '../../src/packet/ipv4.js';
import { VNET_HDR_LEN, VnetFlags } from '../../src/packet/vnet.js';
import { extractKey, KEY_WORDS, Meta, META_WORDS } from '../../src/vfp/key.js';
import { Decision, Rewrite } from '../../src/vfp/pipeline.js';
import { Transpositions } from '../../src/vfp/transposition.js';
import { mulberry32 as prng } from './helpers/random.js';


const u32 = (rnd: () => number) => Math.floor(rnd() * 2 ** 32) >>> 0;
const u16 = (rnd: () => number) => Math.floor(rnd() * 65536);
const r16 = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];
const r32 = (b: Uint8Array, at: number) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
function w16(b: Uint8Array, at: number, v: number) {
  b[at] = v >>> 8;
  b[at + 1] = v & 0xff;
}
function w32(b: Uint8Array, at: number, v: number) {
  w16(b, at, v >>> 16);
  w16(b, at + 2, v & 0xffff);
}

interface Rw {
  flags: number;
  srcMac?: [number, number];
  dstMac?: [number, number];
  srcIp?: number;
  dstIp?: number;
  srcPort?: number;
  dstPort?: number;
}

function decision(rw: Rw): Decision {
  const d = new Decision();
  d.reset();
  d.rwFlags = rw.flags;
  if (rw.srcMac) [d.srcMacHi, d.srcMacLo] = rw.srcMac;
  if (rw.dstMac) [d.dstMacHi, d.dstMacLo] = rw.dstMac;
  d.srcIp = rw.srcIp ?? 0;
  d.dstIp = rw.dstIp ?? 0;
  d.srcPort = rw.srcPort ?? 0;
  d.dstPort = rw.dstPort ?? 0;
  return d;
}

interface Placed {
  buf: Uint8Array;
  off: number;
  vnetOff: number;
  key: Uint32Array;
  meta: Int32Array;
}

/** Puts the frame (optionally behind a vnet header) at an offset of a larger buffer and extracts its key. */
function place(frame: Uint8Array, at: number, vnet?: { csumStart: number; csumOffset: number; flags: number }): Placed {
  const wire = vnet ? withVnetHeader(frame, vnet) : frame;
  const buf = new Uint8Array(at + wire.length + 16).fill(0x5a);
  buf.set(wire, at);
  const off = vnet ? at + VNET_HDR_LEN : at;
  const key = new Uint32Array(KEY_WORDS);
  const meta = new Int32Array(META_WORDS);
  extractKey(buf, off, frame.length, key, meta);
  return { buf, off, vnetOff: vnet ? at : -1, key, meta };
}

/**
 * What the frame must look like after the rewrite, computed from scratch:
 * fields written, IPv4 header checksum and L4 checksum fully recomputed (or,
 * for a partial checksum, the new pseudo-header sum).
 */
function expected(p: Placed, rw: Rw, partial: boolean): Uint8Array {
  const out = Uint8Array.from(p.buf);
  const { off } = p;
  if (rw.flags & Rewrite.DST_MAC) {
    w16(out, off, rw.dstMac![0]);
    w32(out, off + 2, rw.dstMac![1]);
  }
  if (rw.flags & Rewrite.SRC_MAC) {
    w16(out, off + 6, rw.srcMac![0]);
    w32(out, off + 8, rw.srcMac![1]);
  }
  const l3 = p.meta[Meta.L3_OFFSET];
  if (l3 < 0 || p.meta[Meta.IP_VERSION] !== 4) return out;
  const ihl = (out[l3] & 0x0f) * 4;
  if (rw.flags & Rewrite.SRC_IP) w32(out, l3 + 12, rw.srcIp!);
  if (rw.flags & Rewrite.DST_IP) w32(out, l3 + 16, rw.dstIp!);
  if (rw.flags & (Rewrite.SRC_IP | Rewrite.DST_IP)) {
    w16(out, l3 + 10, 0);
    w16(out, l3 + 10, internetChecksum(out, l3, ihl));
  }
  const l4 = p.meta[Meta.L4_OFFSET];
  const proto = out[l3 + 9];
  if (l4 < 0 || (proto !== 6 && proto !== 17)) return out;
  if (rw.flags & Rewrite.SRC_PORT) w16(out, l4, rw.srcPort!);
  if (rw.flags & Rewrite.DST_PORT) w16(out, l4 + 2, rw.dstPort!);
  const csumAt = l4 + (proto === 6 ? 16 : 6);
  const l4Len = r16(out, l3 + 2) - ihl;
  const pseudo = pseudoSumV4(r32(out, l3 + 12), r32(out, l3 + 16), proto, l4Len);
  if (partial) {
    w16(out, csumAt, pseudo);
  } else if (proto === 17 && r16(p.buf, csumAt) === 0) {
    // no checksum stays no checksum
  } else {
    w16(out, csumAt, 0);
    let c = internetChecksum(out, l4, l4Len, pseudo);
    if (proto === 17 && c === 0) c = 0xffff;
    w16(out, csumAt, c);
  }
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return `byte ${i}: got ${a[i].toString(16)}, want ${b[i].toString(16)}`;
  return 'none';
}

/** Independent check that a frame's IPv4 header and L4 checksums verify. */
function checksumsVerify(buf: Uint8Array, l3: number, l4: number): boolean {
  const ihl = (buf[l3] & 0x0f) * 4;
  if (internetChecksum(buf, l3, ihl) !== 0) return false;
  const proto = buf[l3 + 9];
  const len = r16(buf, l3 + 2) - ihl;
  if (proto === 17 && r16(buf, l4 + 6) === 0) return true;
  return internetChecksum(buf, l4, len, pseudoSumV4(r32(buf, l3 + 12), r32(buf, l3 + 16), proto, len)) === 0;
}

function randomRewrite(rnd: () => number): Rw {
  const all = [Rewrite.SRC_IP, Rewrite.DST_IP, Rewrite.SRC_PORT, Rewrite.DST_PORT, Rewrite.SRC_MAC, Rewrite.DST_MAC];
  let flags = 0;
  while (flags === 0) for (const f of all) if (rnd() < 0.5) flags |= f;
  return {
    flags,
    srcMac: [u16(rnd) & 0xfeff, u32(rnd)],
    dstMac: [u16(rnd), u32(rnd)],
    srcIp: u32(rnd),
    dstIp: u32(rnd),
    srcPort: 1 + Math.floor(rnd() * 65535),
    dstPort: 1 + Math.floor(rnd() * 65535),
  };
}

function randomFrame(rnd: () => number, udpChecksum = true): Uint8Array {
  const common = {
    srcIp: formatIpv4Addr(u32(rnd)),
    dstIp: formatIpv4Addr(u32(rnd)),
    srcPort: u16(rnd),
    dstPort: u16(rnd),
    payload: filler(Math.floor(rnd() * 300), Math.floor(rnd() * 256)),
    vlans: rnd() < 0.25 ? [1 + Math.floor(rnd() * 4094)] : undefined,
  };
  return rnd() < 0.5 ? buildTcp4({ ...common, seq: u32(rnd), ack: u32(rnd), flags: 0x18 }) : buildUdp4({ ...common, checksum: udpChecksum });
}

test('randomized IPv4 TCP/UDP rewrites: every byte as a full recompute would leave it', (t) => {
  const rnd = prng(0x5eed1);
  const tp = new Transpositions(8);
  const iterations = 5000;
  for (let i = 0; i < iterations; i++) {
    const frame = randomFrame(rnd);
    const p = place(frame, Math.floor(rnd() * 64));
    const rw = randomRewrite(rnd);
    const want = expected(p, rw, false);
    const e = tp.compile(decision(rw), p.key);
    t.true(e >= 0);
    tp.apply(e, p.buf, p.off, -1, p.meta);
    tp.release(e);
    if (!Buffer.from(p.buf).equals(Buffer.from(want))) {
      t.fail(`iteration ${i}, flags ${rw.flags}: ${firstDifference(p.buf, want)}`);
      return;
    }
    if (!checksumsVerify(p.buf, p.meta[Meta.L3_OFFSET], p.meta[Meta.L4_OFFSET])) {
      t.fail(`iteration ${i}: checksums do not verify`);
      return;
    }
  }
  t.is(tp.used, 0);
  t.pass(`${iterations} frames`);
});

test('one compiled transposition serves every frame of the flow (different payloads, same headers)', (t) => {
  const rnd = prng(77);
  const tp = new Transpositions(4);
  const rw: Rw = { flags: Rewrite.SRC_IP | Rewrite.DST_PORT, srcIp: 0xc0a80101, dstPort: 8443 };
  const first = place(buildTcp4({ srcIp: '10.0.0.2', dstIp: '10.0.0.3', srcPort: 40000, dstPort: 443, payload: filler(10) }), 0);
  const e = tp.compile(decision(rw), first.key);
  for (let i = 0; i < 200; i++) {
    const frame = buildTcp4({ srcIp: '10.0.0.2', dstIp: '10.0.0.3', srcPort: 40000, dstPort: 443, seq: u32(rnd), flags: 0x10, payload: filler(Math.floor(rnd() * 1400), i) });
    const p = place(frame, 10);
    const want = expected(p, rw, false);
    tp.apply(e, p.buf, p.off, -1, p.meta);
    if (!Buffer.from(p.buf).equals(Buffer.from(want))) {
      t.fail(`frame ${i}: ${firstDifference(p.buf, want)}`);
      return;
    }
  }
  t.pass();
});

test('UDP without a checksum (0) stays without one; the IPv4 header checksum still moves', (t) => {
  const rnd = prng(4242);
  const tp = new Transpositions(1);
  for (let i = 0; i < 500; i++) {
    const frame = buildUdp4({ srcIp: formatIpv4Addr(u32(rnd)), dstIp: formatIpv4Addr(u32(rnd)), srcPort: u16(rnd), dstPort: u16(rnd), payload: filler(i % 97), checksum: false });
    const p = place(frame, 3);
    const l4 = p.meta[Meta.L4_OFFSET];
    t.is(r16(p.buf, l4 + 6), 0);
    const rw: Rw = { flags: Rewrite.SRC_IP | Rewrite.DST_IP | Rewrite.SRC_PORT | Rewrite.DST_PORT, srcIp: u32(rnd), dstIp: u32(rnd), srcPort: 1 + (i % 65535), dstPort: 53 };
    const e = tp.compile(decision(rw), p.key);
    tp.apply(e, p.buf, p.off, -1, p.meta);
    tp.release(e);
    if (r16(p.buf, l4 + 6) !== 0) {
      t.fail(`frame ${i}: checksum became ${r16(p.buf, l4 + 6).toString(16)}`);
      return;
    }
    const l3 = p.meta[Meta.L3_OFFSET];
    if (internetChecksum(p.buf, l3, 20) !== 0 || r32(p.buf, l3 + 16) !== rw.dstIp || r16(p.buf, l4) !== rw.srcPort) {
      t.fail(`frame ${i}: IPv4 header or ports wrong`);
      return;
    }
  }
  t.pass();
});

test('a UDP checksum that would come out 0 is sent as 0xffff', (t) => {
  const tp = new Transpositions(1);
  const frame = buildUdp4({ srcIp: '10.0.0.2', dstIp: '10.0.0.3', srcPort: 1000, dstPort: 2000, payload: filler(4) });
  const p0 = place(frame, 0);
  const l3 = p0.meta[Meta.L3_OFFSET];
  const l4 = p0.meta[Meta.L4_OFFSET];
  // Solve for the destination port that makes the one's complement sum 0xffff (checksum 0).
  for (let dstPort = 1; dstPort < 65536; dstPort++) {
    const trial = Uint8Array.from(p0.buf);
    w16(trial, l4 + 2, dstPort);
    w16(trial, l4 + 6, 0);
    const c = internetChecksum(trial, l4, 12, pseudoSumV4(r32(trial, l3 + 12), r32(trial, l3 + 16), 17, 12));
    if (c !== 0) continue;
    const p = place(frame, 0);
    const e = tp.compile(decision({ flags: Rewrite.DST_PORT, dstPort }), p.key);
    tp.apply(e, p.buf, p.off, -1, p.meta);
    t.is(r16(p.buf, l4 + 2), dstPort);
    t.is(r16(p.buf, l4 + 6), 0xffff);
    t.true(checksumsVerify(p.buf, l3, l4));
    return;
  }
  t.fail('no destination port gives checksum 0');
});

test('partial checksums (vnet NEEDS_CSUM): the field ends as the new pseudo-header sum', (t) => {
  const rnd = prng(0xc5);
  const tp = new Transpositions(2);
  for (let i = 0; i < 3000; i++) {
    const frame = Buffer.from(randomFrame(rnd));
    // Turn the complete checksum into a partial one, as a TAP with offloads hands it over.
    const l3 = frame[12] === 0x81 ? 18 : 14;
    const l4 = l3 + 20;
    const proto = frame[l3 + 9];
    const l4Len = frame.readUInt16BE(l3 + 2) - 20;
    const csumOffset = proto === 6 ? 16 : 6;
    frame.writeUInt16BE(pseudoSumV4(frame.readUInt32BE(l3 + 12), frame.readUInt32BE(l3 + 16), proto, l4Len), l4 + csumOffset);
    const p = place(frame, Math.floor(rnd() * 40), { flags: VnetFlags.NEEDS_CSUM, csumStart: l4, csumOffset });
    const rw = randomRewrite(rnd);
    const want = expected(p, rw, true);
    const e = tp.compile(decision(rw), p.key);
    tp.apply(e, p.buf, p.off, p.vnetOff, p.meta);
    tp.release(e);
    if (!Buffer.from(p.buf).equals(Buffer.from(want))) {
      t.fail(`iteration ${i}, proto ${proto}, flags ${rw.flags}: ${firstDifference(p.buf, want)}`);
      return;
    }
  }
  t.pass();
});

test('a vnet header without NEEDS_CSUM means a complete checksum', (t) => {
  const frame = buildTcp4({ srcIp: '10.0.0.2', dstIp: '10.0.0.3', payload: filler(99) });
  const p = place(frame, 0, { flags: VnetFlags.DATA_VALID, csumStart: 0, csumOffset: 0 });
  const rw: Rw = { flags: Rewrite.DST_IP | Rewrite.DST_PORT, dstIp: 0x0a000063, dstPort: 8080 };
  const want = expected(p, rw, false);
  const tp = new Transpositions(1);
  tp.apply(tp.compile(decision(rw), p.key), p.buf, p.off, p.vnetOff, p.meta);
  t.is(firstDifference(p.buf, want), 'none');
  t.true(checksumsVerify(p.buf, p.meta[Meta.L3_OFFSET], p.meta[Meta.L4_OFFSET]));
});

test('MAC rewrite: only the MAC bytes change (no checksum covers them), on IP and non-IP frames', (t) => {
  const tp = new Transpositions(2);
  const rw: Rw = { flags: Rewrite.SRC_MAC | Rewrite.DST_MAC, srcMac: [0x0276, 0x0a0000aa], dstMac: [0x0e00, 0xdeadbeef] };
  for (const frame of [buildTcp4({ payload: filler(20) }), buildArpRequest(), buildTcp6(), buildIcmp4Echo({ vlans: [3] })]) {
    const p = place(frame, 12);
    const before = Uint8Array.from(p.buf);
    const e = tp.compile(decision(rw), p.key);
    tp.apply(e, p.buf, p.off, -1, p.meta);
    tp.release(e);
    t.deepEqual(Array.from(p.buf.subarray(p.off, p.off + 12)), [0x0e, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x02, 0x76, 0x0a, 0x00, 0x00, 0xaa]);
    t.deepEqual(p.buf.subarray(p.off + 12), before.subarray(p.off + 12), 'nothing after the MACs moved');
    t.deepEqual(p.buf.subarray(0, p.off), before.subarray(0, p.off));
  }
  const src = { flags: Rewrite.SRC_MAC, srcMac: [0x0276, 0x01020304] as [number, number] };
  const p = place(buildUdp4({ dstMac: '02:00:00:00:00:99' }), 0);
  tp.apply(tp.compile(decision(src), p.key), p.buf, p.off, -1, p.meta);
  t.deepEqual(Array.from(p.buf.subarray(0, 6)), [2, 0, 0, 0, 0, 0x99], 'destination untouched');
  t.deepEqual(Array.from(p.buf.subarray(6, 12)), [0x02, 0x76, 1, 2, 3, 4]);
});

test('ICMP and later fragments: the IPv4 header is rewritten, the bytes after it are not', (t) => {
  const tp = new Transpositions(2);
  const rw: Rw = { flags: Rewrite.SRC_IP | Rewrite.DST_IP, srcIp: 0x0b0b0b0b, dstIp: 0x0c0c0c0c };
  const icmp = place(buildIcmp4Echo({ ident: 5, data: filler(9) }), 0);
  const icmpBefore = Uint8Array.from(icmp.buf);
  tp.apply(tp.compile(decision(rw), icmp.key), icmp.buf, icmp.off, -1, icmp.meta);
  t.is(internetChecksum(icmp.buf, 14, 20), 0);
  t.is(r32(icmp.buf, 14 + 12), 0x0b0b0b0b);
  t.deepEqual(icmp.buf.subarray(34), icmpBefore.subarray(34), 'ICMP has no pseudo-header: its checksum stays');
  t.is(internetChecksum(icmp.buf, 34, 17), 0, 'and still verifies');

  const frag = Buffer.from(buildUdp4({ payload: filler(40) }));
  frag[14 + 7] = 4; // offset 32 bytes: a later fragment, no UDP header here
  frag.writeUInt16BE(0, 14 + 10);
  frag.writeUInt16BE(internetChecksum(frag, 14, 20), 14 + 10);
  const f = place(frag, 0);
  t.is(f.meta[Meta.L4_OFFSET], -1);
  const fragBefore = Uint8Array.from(f.buf);
  tp.apply(tp.compile(decision({ ...rw, flags: rw.flags | Rewrite.DST_PORT, dstPort: 1 }), f.key), f.buf, f.off, -1, f.meta);
  t.is(internetChecksum(f.buf, 14, 20), 0);
  t.is(r32(f.buf, 14 + 16), 0x0c0c0c0c);
  t.deepEqual(f.buf.subarray(34), fragBefore.subarray(34), 'payload bytes of a later fragment are not a UDP header');
});

test('the slab: -1 when full, released entries are reused, the scratch entry is outside it', (t) => {
  const tp = new Transpositions(4);
  const p = place(buildUdp4(), 0);
  const d = decision({ flags: Rewrite.DST_PORT, dstPort: 9 });
  const got = [tp.compile(d, p.key), tp.compile(d, p.key), tp.compile(d, p.key), tp.compile(d, p.key)];
  t.deepEqual([...got].sort(), [0, 1, 2, 3]);
  t.is(tp.used, 4);
  t.is(tp.compile(d, p.key), -1);
  tp.release(got[2]);
  t.is(tp.used, 3);
  t.is(tp.compile(d, p.key), got[2]);
  tp.release(tp.scratch);
  tp.release(-1);
  t.is(tp.used, 4, 'releasing the scratch entry or -1 frees nothing');
  t.is(tp.compile(d, p.key), -1);
  tp.compileAt(tp.scratch, decision({ flags: Rewrite.DST_PORT, dstPort: 4321 }), p.key);
  tp.apply(tp.scratch, p.buf, p.off, -1, p.meta);
  t.is(r16(p.buf, 36), 4321);
  t.true(checksumsVerify(p.buf, 14, 34));
});

// Regression test.
// pipeline.ts applyRewriteToKey rewrites TCP/UDP ports for IPv6 as well (the policy validator accepts a
// port rewrite with no family), so the flow key, conntrack and the cached decision say the port changed,
// but apply() returns before touching an IPv6 frame: the port goes out unchanged.
test('IPv6 TCP: a port rewrite reaches the frame, with a valid checksum', (t) => {
  const frame = buildTcp6({ srcIp: 'fd00::2', dstIp: 'fd00::3', srcPort: 40000, dstPort: 80, payload: filler(21) });
  const p = place(frame, 0);
  const tp = new Transpositions(1);
  tp.apply(tp.compile(decision({ flags: Rewrite.DST_PORT, dstPort: 8080 }), p.key), p.buf, p.off, -1, p.meta);
  const l4 = 14 + 40;
  t.is(r16(p.buf, l4 + 2), 8080);
  const len = frame.length - l4;
  t.is(internetChecksum(p.buf, l4, len, pseudoSumV6(p.buf, 14 + 8, p.buf, 14 + 24, 6, len)), 0);
});
