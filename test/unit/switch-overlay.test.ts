/**
 * The overlay data path of the Switch over synthetic buffers: frames from
 * local TAPs into VXLAN datagrams (head-end replication, learned unicast,
 * TSO super-frames as UDP GSO runs, too-big frames answered with ICMP, ARP
 * suppression), and datagrams from the uplink back into frames (decap
 * verdicts, learning, split horizon). No kernel objects: the tunnel's
 * sendUdp records what it is given; segmentation, checksum completion and
 * GRO are the real addon functions.
 */
import test, { type ExecutionContext } from 'ava';
import { buildArpRequest, buildTcp4, buildTcp6, buildUdp4, buildUdp6, filler } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4, pseudoSumV4At, pseudoSumV6At } from '../../src/packet/checksum.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { GsoType, VNET_HDR_LEN, VnetFlags, VnetView } from '../../src/packet/vnet.js';
import { allocateCounters, COUNTER_COLUMNS, DROP_BASE, readPortCounters } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { Switch } from '../../src/switch/switch.js';
import { BATCH, OverlayIo, VXLAN_PORT, vxlanGro, writeVxlanHeader, type Datagram, type Sent } from './helpers/overlay-io.js';
import { SOURCE_WORDS } from '../../src/switch/frame-io.js';

// ---------------------------------------------------------------------------
// Harness

/** One slot holds a 64 KiB super-frame, as RX_SLOT_SIZE does. */
const RX_MALFORMED = -1;
const START_MS = 1e7;

const NET = 1;
const VNI = 4096;
const MTU = 1450;
const P0 = 0;
const P1 = 1;
const TUNNEL = 5;
const UPLINK = 6;
const FD0 = 10;
const FD1 = 11;
const UPLINK_FDS = [100, 101, 102];
const LOCAL_VTEP = '192.168.56.11';
const PEER12 = '192.168.56.12';
const PEER13 = '192.168.56.13';
const STRANGER = '192.168.56.99';

const A = '02:76:0a:00:00:02'; // local, port 0
const B = '02:76:0a:00:00:03'; // local, port 1
const X = '02:76:0a:00:01:02'; // remote, behind .12
const Y = '02:76:0a:00:01:03'; // remote, static, behind .12
const IP_A = '10.0.0.2';
const IP_B = '10.0.0.3';
const IP_X = '10.0.0.20';
const IP_Y = '10.0.0.30';

/** NOP, NOP, timestamp: what Linux puts on every data segment. */
const TS_OPTIONS = Uint8Array.from([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);

const ip32 = mustParseIpv4Addr;

function vxlanHeader(vni = VNI): Buffer {
  const b = Buffer.alloc(8);
  writeVxlanHeader(b, 0, vni);
  return b;
}

function setup() {
  const io = new OverlayIo(VNI);
  const counters = new Float64Array(allocateCounters(16));
  const stopped: number[] = [];
  let now = START_MS;
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: (p) => stopped.push(p) }, () => now, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  sw.addUplink({ uplinkId: UPLINK, vtep: ip32(LOCAL_VTEP), fds: UPLINK_FDS, dstPort: VXLAN_PORT });
  sw.addNetwork(NET, 'ovl', { overlay: { vni: VNI, uplinkId: UPLINK, tunnelPortId: TUNNEL, peers: [PEER12, PEER13], mtu: MTU, learnArp: true } });
  sw.addPort({ portId: P0, networkId: NET, fd: FD0, name: 'c0' });
  sw.addPort({ portId: P1, networkId: NET, fd: FD1, name: 'c1' });
  return {
    io,
    sw,
    counters,
    stopped,
    now: () => now,
    tick: (ms: number) => (now += ms),
    /** Frames read from a local TAP, one batch. */
    fromTap(port: number, ...frames: Uint8Array[]) {
      frames.forEach((f, i) => io.placeTap(i, f));
      sw.receive(port, frames.length);
      return io.take();
    },
    /** Inner frames in datagrams from `from`, one batch. */
    fromPeer(from: string, ...frames: Uint8Array[]) {
      frames.forEach((f, i) => io.placeUdp(i, f, from));
      sw.receive(UPLINK, frames.length);
      return io.take();
    },
    drop: (port: number, reason: number) => counters[port * COUNTER_COLUMNS + DROP_BASE + reason],
    overlay: () => sw.overlayState(now)[0],
  };
}

type Env = ReturnType<typeof setup>;

/** A learned MAC on each side: A on port 0 (it spoke), X behind .12 (a frame from it came through the tunnel). */
function learnBoth(env: Env): void {
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  env.fromPeer(PEER12, buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, payload: filler(16) }));
}

const frameOf = (s: Sent) => s.wire.subarray(VNET_HDR_LEN);
const macText = (b: Buffer, at: number) => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
const addrText = (a: number) => `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;

// ---------------------------------------------------------------------------
// Tests

test('a broadcast from a local port goes to the other local port and, replicated, to every peer', (t) => {
  const env = setup();
  const arp = buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_X });
  const { sent, datagrams } = env.fromTap(P0, arp);

  t.deepEqual(
    sent.map((s) => s.fd),
    [FD1],
  );
  t.true(sent[0].wire.equals(Buffer.concat([Buffer.alloc(VNET_HDR_LEN), arp])), 'the local copy is the frame behind its untouched vnet header');

  t.is(datagrams.length, 2, 'one datagram per peer');
  t.deepEqual(datagrams.map((d) => addrText(d.addr)).sort(), [PEER12, PEER13]);
  const expected = Buffer.concat([vxlanHeader(), arp]);
  for (const d of datagrams) {
    t.true(d.bytes.equals(expected), `to ${addrText(d.addr)}: VXLAN header (I flag, VNI ${VNI}) then the frame`);
    t.is(d.bytes[0], 0x08);
    t.is(d.bytes.readUIntBE(4, 3), VNI);
    t.is(d.port, VXLAN_PORT);
    t.is(d.segmentSize, 0);
    t.true(UPLINK_FDS.includes(d.fd));
  }
  t.is(datagrams[0].fd, datagrams[1].fd, 'both copies go out on one socket');

  const tunnel = readPortCounters(env.counters, TUNNEL);
  t.is(tunnel.txFrames, 1, 'the tunnel port counts the frame once');
  t.is(tunnel.txBytes, arp.length);
  const uplink = readPortCounters(env.counters, UPLINK);
  t.is(uplink.txFrames, 2, 'the uplink counts datagrams');
  t.is(uplink.txBytes, 2 * (arp.length + 8));
  const o = env.overlay();
  t.is(o.segment.replicated, 2);
  t.is(o.egress.flooded, 1);
  t.is(o.uplink.datagramsSent, 2);
});

test('a datagram from a peer is delivered decapsulated, its source learned, and the reply goes to that peer alone', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B })); // A is learned on port 0

  const inner = buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, srcPort: 5000, dstPort: 6000, payload: filler(100, 1) });
  const { sent, datagrams } = env.fromPeer(PEER12, inner);
  t.is(datagrams.length, 0, 'nothing goes back into the tunnel');
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'to the port A was learned on, only',
  );
  t.true(sent[0].wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), 'an all-zero vnet header');
  t.true(frameOf(sent[0]).equals(inner), 'the inner frame, unchanged');

  const o = env.overlay();
  t.deepEqual(
    o.vteps.map((v) => ({ mac: v.mac, vtep: v.vtep, kind: v.kind, vni: v.vni })),
    [{ mac: X, vtep: PEER12, kind: 'learned', vni: VNI }],
  );
  const uplink = readPortCounters(env.counters, UPLINK);
  t.is(uplink.rxFrames, 1);
  t.is(uplink.rxBytes, inner.length + 8);
  t.is(uplink.dropsTotal, 0);
  const tunnel = readPortCounters(env.counters, TUNNEL);
  t.is(tunnel.rxFrames, 1);
  t.is(tunnel.rxBytes, inner.length);
  t.is(env.sw.decapCounters().ok, 1);

  const reply = buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 6000, dstPort: 5000, payload: filler(50, 2) });
  const back = env.fromTap(P0, reply);
  t.is(back.sent.length, 0, 'not flooded to the other local port');
  t.is(back.datagrams.length, 1, 'one datagram, not one per peer');
  const [d] = back.datagrams;
  t.is(addrText(d.addr), PEER12);
  t.is(d.port, VXLAN_PORT);
  t.is(d.segmentSize, 0);
  t.true(d.bytes.equals(Buffer.concat([vxlanHeader(), reply])));
  t.is(env.overlay().egress.flooded, 1, 'only the first ARP was flooded');

  // The flow is cached now: the next frame of it takes the fast path and still goes to .12 alone.
  const slow = env.sw.vfp.stats.slowPathRuns;
  const again = env.fromTap(P0, reply);
  t.is(env.sw.vfp.stats.slowPathRuns, slow, 'from the flow table');
  t.is(again.sent.length, 0);
  t.deepEqual(
    again.datagrams.map((x) => addrText(x.addr)),
    [PEER12],
  );
  t.is(again.datagrams[0].fd, d.fd, 'one flow, one socket (its outer source port)');
});

/** The TSO super-frame a TAP hands over: NEEDS_CSUM, TCPV4, gso_size, the pseudo-header sum in the TCP checksum field. */
function superFrame(frame: Buffer, gsoSize: number): { frame: Buffer; vnet: Buffer } {
  const f = Buffer.from(frame);
  const l4 = 34;
  const tcpLen = f.length - l4;
  f.writeUInt16BE(pseudoSumV4At(f, 14, tcpLen), l4 + 16);
  const vnet = Buffer.alloc(VNET_HDR_LEN);
  const v = new VnetView();
  v.reset(vnet, 0, VNET_HDR_LEN);
  v.setFlags(VnetFlags.NEEDS_CSUM);
  v.setGsoType(GsoType.TCPV4);
  v.setGsoSize(gsoSize);
  v.setHdrLen(l4 + ((f[l4 + 12] >> 4) << 2));
  v.setCsumStart(l4);
  v.setCsumOffset(16);
  return { frame: f, vnet };
}

/** Sends a TSO super-frame of `payloadLen` to X and checks the UDP GSO run(s) it became; returns the datagrams. */
function checkTsoToTunnel(t: ExecutionContext, env: Env, payloadLen: number, gsoSize: number, expectedMss: number): Datagram[] {
  const payload = Buffer.from(filler(payloadLen, 7));
  const seq0 = 0xffff_e000; // wraps inside the burst
  const original = buildTcp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 40000, dstPort: 80, seq: seq0, ack: 99, flags: TcpFlags.ACK | TcpFlags.PSH, options: TS_OPTIONS, payload });
  const { frame, vnet } = superFrame(original, gsoSize);
  env.io.placeTap(0, frame, vnet);
  env.sw.receive(P0, 1);
  const { sent, datagrams } = env.io.take();
  t.is(sent.length, 0, 'nothing to the local ports');
  t.true(datagrams.length >= 1);

  const headers = 14 + 20 + 32;
  const stride = 8 + headers + expectedMss;
  const segments: Buffer[] = [];
  for (const d of datagrams) {
    t.is(addrText(d.addr), PEER12, 'to the VTEP X is behind, only');
    t.is(d.port, VXLAN_PORT);
    if (d.bytes.length > stride) t.is(d.segmentSize, stride, 'a UDP GSO run of datagrams of the segment size');
    else t.true(d.segmentSize === 0 || d.segmentSize === stride);
    for (let at = 0; at < d.bytes.length; at += stride) segments.push(d.bytes.subarray(at, Math.min(at + stride, d.bytes.length)));
  }
  t.is(segments.length, Math.ceil(payloadLen / expectedMss));

  const payloads: Buffer[] = [];
  segments.forEach((s, k) => {
    const last = k === segments.length - 1;
    t.true(s.subarray(0, 8).equals(vxlanHeader()), `segment ${k}: VXLAN header`);
    const f = s.subarray(8);
    t.true(f.subarray(0, 14).equals(original.subarray(0, 14)), `segment ${k}: Ethernet header`);
    const totalLength = f.readUInt16BE(16);
    t.is(totalLength, f.length - 14, `segment ${k}: IP total length matches`);
    t.true(totalLength <= MTU, `segment ${k}: IP total length ${totalLength} within the overlay MTU`);
    if (!last) t.is(totalLength, 20 + 32 + expectedMss, `segment ${k}: full size`);
    t.is(internetChecksum(f, 14, 20), 0, `segment ${k}: IPv4 header checksum`);
    const tcpLen = totalLength - 20;
    const pseudo = pseudoSumV4(f.readUInt32BE(26), f.readUInt32BE(30), 6, tcpLen);
    t.is(internetChecksum(f, 34, tcpLen, pseudo), 0, `segment ${k}: TCP checksum`);
    t.is(f.readUInt32BE(34 + 4), (seq0 + k * expectedMss) >>> 0, `segment ${k}: sequence number`);
    t.is(f[34 + 13] & TcpFlags.PSH, last ? TcpFlags.PSH : 0, `segment ${k}: PSH only on the last`);
    t.true(f.subarray(34 + 20, 34 + 32).equals(Buffer.from(TS_OPTIONS)), `segment ${k}: options kept`);
    const p = f.subarray(headers);
    t.true(p.length === expectedMss || (last && p.length <= expectedMss), `segment ${k}: payload ${p.length}`);
    payloads.push(Buffer.from(p));
  });
  t.true(Buffer.concat(payloads).equals(payload), 'the payload reassembles to the original');

  const o = env.overlay();
  t.is(o.egress.segmented, 1);
  t.is(o.egress.segments, segments.length);
  t.is(o.egress.encapFailed, 0);
  t.is(readPortCounters(env.counters, TUNNEL).dropsTotal, 0);
  return datagrams;
}

test('a TSO super-frame to a remote MAC leaves as a UDP GSO run of MTU-sized, checksummed segments', (t) => {
  const env = setup();
  learnBoth(env);
  const tunnelBefore = readPortCounters(env.counters, TUNNEL).txFrames;
  const uplinkBefore = readPortCounters(env.counters, UPLINK).txFrames;
  const datagrams = checkTsoToTunnel(t, env, 20_000, 1398, 1398);
  t.is(datagrams.length, 1, '15 segments of 1472 bytes fit one run');
  t.is(datagrams[0].segmentSize, 8 + 14 + 20 + 32 + 1398);
  t.is(datagrams[0].bytes.length, 14 * 1472 + 8 + 66 + (20_000 - 14 * 1398));
  t.is(readPortCounters(env.counters, TUNNEL).txFrames - tunnelBefore, 1, 'the super-frame counts once on the tunnel port');
  t.is(readPortCounters(env.counters, UPLINK).txFrames - uplinkBefore, 1, 'the uplink counts one run (what sendUdp returned)');
});

test('a TSO super-frame whose gso_size exceeds the overlay MTU is cut to fit it', (t) => {
  const env = setup();
  learnBoth(env);
  // A sender with MTU 1500: 1448 bytes of payload per segment would make 1500-byte packets; the overlay carries 1450.
  checkTsoToTunnel(t, env, 10_000, 1448, MTU - 52);
});

test('a super-frame of more than 44 segments goes as several GSO runs of at most 65,000 bytes', (t) => {
  const env = setup();
  learnBoth(env);
  // 46 segments of 1472-byte datagrams; a run holds floor(65000 / 1472) = 44 of them.
  const datagrams = checkTsoToTunnel(t, env, 64_000, 1398, 1398);
  t.deepEqual(
    datagrams.map((d) => [d.bytes.length, d.segmentSize]),
    [
      [44 * 1472, 1472],
      [1472 + 8 + 66 + (64_000 - 45 * 1398), 1472],
    ],
  );
  t.true(datagrams.every((d) => d.fd === datagrams[0].fd), 'one flow, one socket');
});

test('a frame too big for the tunnel, with DF, is answered with ICMP fragmentation-needed; without DF it is dropped', (t) => {
  const env = setup();
  learnBoth(env);
  const big = buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 7000, dstPort: 8000, dontFrag: true, ident: 0x1234, payload: filler(1500 - 28, 3) });
  t.is(big.length, 14 + 1500);
  t.is(big.readUInt16BE(20) & 0x4000, 0x4000, 'DF is set');
  const { sent, datagrams } = env.fromTap(P0, big);
  t.is(datagrams.length, 0, 'nothing to the tunnel');
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'the answer goes back out the ingress port',
  );
  t.true(sent[0].wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), 'a plain frame: all-zero vnet header');
  const f = frameOf(sent[0]);
  t.is(macText(f, 0), A, 'to the sender');
  t.is(macText(f, 6), X, 'from the MAC it was sent to');
  t.is(f.readUInt16BE(12), 0x0800);
  t.is(f[14], 0x45);
  t.is(f.readUInt16BE(16), f.length - 14, 'IP total length');
  t.is(f[23], 1, 'ICMP');
  t.is(f.readUInt32BE(26), ip32(IP_X), "from the frame's destination");
  t.is(f.readUInt32BE(30), ip32(IP_A), "to the frame's source");
  t.is(internetChecksum(f, 14, 20), 0, 'IPv4 header checksum');
  t.is(f[34], 3, 'destination unreachable');
  t.is(f[35], 4, 'fragmentation needed');
  t.is(f.readUInt16BE(40), MTU, 'next-hop MTU');
  t.is(internetChecksum(f, 34, f.length - 34), 0, 'ICMP checksum');
  t.true(f.subarray(42, 62).equals(big.subarray(14, 34)), 'quotes the original IP header');
  t.true(f.subarray(62, 70).equals(big.subarray(34, 42)), 'and the first 8 bytes of its payload');
  t.is(f.length, 14 + 20 + 8 + 20 + 8);
  t.is(env.drop(TUNNEL, DropReason.tunnelTooBig), 1, 'counted on the tunnel port');
  t.is(env.overlay().egress.tooBig, 1);

  const noDf = buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 7001, dstPort: 8000, dontFrag: false, payload: filler(1500 - 28, 4) });
  t.is(noDf.readUInt16BE(20) & 0x4000, 0);
  const quiet = env.fromTap(P0, noDf);
  t.is(quiet.datagrams.length, 0, 'nothing to the tunnel');
  t.is(quiet.sent.length, 0, 'nothing back');
  t.is(env.drop(TUNNEL, DropReason.tunnelTooBig), 2);

  // A frame exactly at the MTU passes.
  const fits = buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 7002, dstPort: 8000, payload: filler(MTU - 28, 5) });
  const ok = env.fromTap(P0, fits);
  t.is(ok.sent.length, 0);
  t.is(ok.datagrams.length, 1);
  t.true(ok.datagrams[0].bytes.equals(Buffer.concat([vxlanHeader(), fits])));
});

test('a too-big frame of a cached flow is answered again from the fast path', (t) => {
  const env = setup();
  learnBoth(env);
  const big = () => buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 7000, dstPort: 8000, payload: filler(1500 - 28, 3) });
  let slow = 0;
  for (let i = 0; i < 3; i++) {
    if (i === 1) slow = env.sw.vfp.stats.slowPathRuns;
    const { sent, datagrams } = env.fromTap(P0, big());
    t.is(datagrams.length, 0);
    t.is(sent.length, 1, `frame ${i}: answered`);
    t.is(frameOf(sent[0])[34], 3);
  }
  t.is(env.sw.vfp.stats.slowPathRuns, slow, 'frames 1 and 2 came from the flow table');
  t.is(env.drop(TUNNEL, DropReason.tunnelTooBig), 3);
});

test('ARP suppression: a request for a known remote address is answered on the ingress port, nothing is flooded', (t) => {
  const env = setup();
  t.true(env.sw.addRemote(NET, { mac: Y, ip: IP_Y, vtep: PEER12 }));
  const req = buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_Y });
  const { sent, datagrams } = env.fromTap(P0, req);
  t.is(datagrams.length, 0, 'nothing to the tunnel');
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'only back to the asker',
  );
  const r = frameOf(sent[0]);
  t.is(r.length, req.length);
  t.is(macText(r, 0), A, 'Ethernet destination: the asker');
  t.is(macText(r, 6), Y, 'Ethernet source: the answer');
  t.is(r.readUInt16BE(12), 0x0806);
  t.is(r.readUInt16BE(20), 2, 'ARP reply');
  t.is(macText(r, 22), Y, 'sender hardware address');
  t.is(r.readUInt32BE(28), ip32(IP_Y), 'sender protocol address');
  t.is(macText(r, 32), A, 'target hardware address');
  t.is(r.readUInt32BE(38), ip32(IP_A), 'target protocol address');
  const o = env.overlay();
  t.is(o.segment.arpReplied, 1);
  t.is(o.segment.replicated, 0);
  t.deepEqual(
    o.arp.map((e) => ({ ip: e.ip, mac: e.mac, kind: e.kind })),
    [{ ip: IP_Y, mac: Y, kind: 'static' }],
  );
  t.deepEqual(
    o.vteps.map((e) => ({ mac: e.mac, vtep: e.vtep, kind: e.kind })),
    [{ mac: Y, vtep: PEER12, kind: 'static' }],
  );

  // An address nobody knows is flooded as usual.
  const unknown = env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: '10.0.0.77' }));
  t.deepEqual(
    unknown.sent.map((s) => s.fd),
    [FD1],
  );
  t.is(unknown.datagrams.length, 2);
  t.is(env.overlay().segment.arpUnknown, 1);

  // The static entry makes unicast to Y go to .12 without any learning.
  const toY = buildUdp4({ srcMac: A, dstMac: Y, srcIp: IP_A, dstIp: IP_Y, payload: filler(20) });
  const uni = env.fromTap(P0, toY);
  t.is(uni.sent.length, 1, 'Y is not in the MAC table: flooded locally');
  t.deepEqual(
    uni.datagrams.map((d) => addrText(d.addr)),
    [PEER12],
    'but the tunnel sends it to the one VTEP the static entry names',
  );
});

test('decap verdicts are counted on the uplink row and dropped; a good datagram in the same batch is delivered', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const inner = (src: string) => buildUdp4({ srcMac: src, dstMac: A, srcIp: IP_X, dstIp: IP_A, payload: filler(30) });
  const io = env.io;
  io.placeUdp(0, inner('02:76:0a:00:02:01'), PEER12, { length: RX_MALFORMED });
  io.placeUdp(1, inner('02:76:0a:00:02:02'), PEER12, { flags: 0 });
  io.placeUdp(2, inner('02:76:0a:00:02:03'), PEER12, { length: 5 });
  io.placeUdp(3, inner('02:76:0a:00:02:04'), PEER12, { vni: 9999 });
  io.placeUdp(4, inner('02:76:0a:00:02:05'), STRANGER);
  const good = inner(X);
  io.placeUdp(5, good, PEER13);
  env.sw.receive(UPLINK, 6);
  const { sent, datagrams } = io.take();

  t.is(datagrams.length, 0);
  t.is(sent.length, 1, 'only the good one');
  t.is(sent[0].fd, FD0);
  t.true(frameOf(sent[0]).equals(good));

  const u = readPortCounters(env.counters, UPLINK);
  t.is(u.rxFrames, 6);
  t.deepEqual(u.drops, { vxlanShortHeader: 1, vxlanBadFlags: 1, vxlanTruncated: 1, vxlanUnknownVni: 1, vxlanNotPeer: 1 });
  t.is(readPortCounters(env.counters, TUNNEL).rxFrames, 1);
  t.deepEqual(env.sw.decapCounters(), { ok: 1, shortHeader: 1, badFlags: 1, truncatedInner: 1, unknownVni: 1, notPeer: 1 });
  const o = env.overlay();
  t.is(o.segment.notPeer, 1);
  t.deepEqual(
    o.vteps.map((v) => `${v.mac}@${v.vtep}`),
    [`${X}@${PEER13}`],
    'nothing learned from the refused datagrams',
  );
  t.is(readPortCounters(env.counters, P0).txFrames, 1);
  t.is(readPortCounters(env.counters, P1).txFrames, 1, 'port 1 got only the first ARP');
});

test('split horizon: a broadcast from the tunnel reaches the local ports only, never a peer', (t) => {
  const env = setup();
  const arp = buildArpRequest({ srcMac: X, srcIp: IP_X, targetIp: IP_A });
  const { sent, datagrams } = env.fromPeer(PEER12, arp);
  t.is(datagrams.length, 0, 'not sent back into the tunnel');
  t.deepEqual(sent.map((s) => s.fd).sort(), [FD0, FD1]);
  for (const s of sent) {
    t.true(s.wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), 'all-zero vnet header, not the stale bytes');
    t.true(frameOf(s).equals(arp));
  }
  t.is(env.overlay().segment.replicated, 0);
  t.is(readPortCounters(env.counters, UPLINK).txFrames, 0);

  // Unknown unicast from the tunnel: local ports only too.
  const unknown = env.fromPeer(PEER13, buildUdp4({ srcMac: Y, dstMac: '02:76:0a:00:09:09', payload: filler(10) }));
  t.is(unknown.datagrams.length, 0);
  t.deepEqual(unknown.sent.map((s) => s.fd).sort(), [FD0, FD1]);

  // A frame from the tunnel to a MAC learned behind the tunnel is not hairpinned back out.
  const hairpin = env.fromPeer(PEER13, buildUdp4({ srcMac: Y, dstMac: X, payload: filler(10) }));
  t.is(hairpin.datagrams.length, 0);
  t.is(hairpin.sent.length, 0);
  t.is(env.drop(TUNNEL, DropReason.sameSegment), 1);
});

test('learnArp: a gratuitous ARP from a peer fills the suppression table, which then answers locally', (t) => {
  const env = setup();
  // Gratuitous: sender and target address the same.
  env.fromPeer(PEER13, buildArpRequest({ srcMac: Y, srcIp: IP_Y, targetIp: IP_Y }));
  const o = env.overlay();
  t.is(o.segment.arpLearned, 1);
  t.deepEqual(
    o.arp.map((e) => `${e.ip}=${e.mac}/${e.kind}`),
    [`${IP_Y}=${Y}/learned`],
  );
  const { sent, datagrams } = env.fromTap(P1, buildArpRequest({ srcMac: B, srcIp: IP_B, targetIp: IP_Y }));
  t.is(datagrams.length, 0);
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD1],
  );
  t.is(macText(frameOf(sent[0]), 22), Y);
});

test('removing an overlay network needs its local ports gone first; then the uplink can go', (t) => {
  const env = setup();
  learnBoth(env);
  t.is(env.sw.overlayState(env.now()).length, 1);
  t.throws(() => env.sw.removeNetwork(NET), { message: /still has 2 ports/ });
  t.throws(() => env.sw.removeUplink(UPLINK), { message: /still carries network/ });
  t.is(env.sw.overlayState(env.now()).length, 1, 'a refused removal changes nothing');

  env.sw.removePort(P0);
  t.throws(() => env.sw.removeNetwork(NET), { message: /still has 1 ports/ });
  env.sw.removePort(P1);
  t.notThrows(() => env.sw.removeNetwork(NET));
  t.deepEqual(env.sw.overlayState(env.now()), []);
  t.false(env.sw.segments.has(VNI));
  t.is(env.sw.segments.vteps.size, 0, 'the learned VTEP entries went with the network');
  t.false(env.sw.hasPort(TUNNEL));

  // Datagrams for the VNI are now unknown.
  const late = env.fromPeer(PEER12, buildArpRequest({ srcMac: X }));
  t.is(late.sent.length + late.datagrams.length, 0);
  t.is(readPortCounters(env.counters, UPLINK).drops.vxlanUnknownVni, 1);

  t.notThrows(() => env.sw.removeUplink(UPLINK));
  t.throws(() => env.sw.addNetwork(NET, 'again', { overlay: { vni: VNI, uplinkId: UPLINK, tunnelPortId: TUNNEL, peers: [PEER12], mtu: MTU, learnArp: false } }), {
    message: /uplink 6 does not exist/,
  });
  // The ids are free again.
  t.notThrows(() => env.sw.addUplink({ uplinkId: UPLINK, vtep: ip32(LOCAL_VTEP), fds: [200], dstPort: VXLAN_PORT }));
  t.notThrows(() => env.sw.addNetwork(NET, 'again', { overlay: { vni: VNI, uplinkId: UPLINK, tunnelPortId: TUNNEL, peers: [PEER12], mtu: MTU, learnArp: false } }));
  t.is(env.sw.overlayState(env.now())[0].peers.length, 1);
});

test('a read error on the uplink stops it through the event', (t) => {
  const env = setup();
  env.sw.receive(UPLINK, -9);
  t.deepEqual(env.stopped, [UPLINK]);
});

// ---------------------------------------------------------------------------
// Beyond the basic cases: GRO receive, floods of offloaded frames, moves, configuration.

/** Datagrams back to back from the slot's VXLAN header on, as the kernel hands over a UDP GRO blob; sources say the size. */
function placeBlob(io: OverlayIo, slot: number, datagrams: Buffer[], from: string, segmentSize: number): number {
  const off = io.frameOffset(slot);
  const blob = Buffer.concat(datagrams);
  io.buffer.fill(0xee, off - VNET_HDR_LEN, off - 8);
  io.buffer.set(blob, off - 8);
  io.lengths[slot] = blob.length - 8;
  io.sources[SOURCE_WORDS * slot] = ip32(from);
  io.sources[SOURCE_WORDS * slot + 1] = VXLAN_PORT;
  io.sources[SOURCE_WORDS * slot + 2] = segmentSize;
  io.sources[SOURCE_WORDS * slot + 3] = 0;
  return blob.length;
}

const GRO_MSS = 1398;
const HDRS = 14 + 20 + 32;

/** Inner segment i of a flow X -> A: seq, IP id and payload follow i, as the sender's TSO cut them. */
function groSegment(i: number, payload = GRO_MSS): Buffer {
  return buildTcp4({
    srcMac: X,
    dstMac: A,
    srcIp: IP_X,
    dstIp: IP_A,
    srcPort: 80,
    dstPort: 40000,
    seq: (0x1000 + i * GRO_MSS) >>> 0,
    ack: 555,
    ident: 100 + i,
    flags: TcpFlags.ACK,
    window: 501,
    options: TS_OPTIONS,
    payload: filler(payload, i),
  });
}

test('a UDP GRO blob of consecutive TCP segments is delivered as one TSO super-frame', (t) => {
  t.not(vxlanGro.length, 0, 'the addon has vxlanGro');
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B })); // A is learned on port 0
  const segs = [0, 1, 2].map((i) => groSegment(i, i === 2 ? 700 : GRO_MSS));
  const seg = 8 + HDRS + GRO_MSS;
  const blobLen = placeBlob(
    env.io,
    0,
    segs.map((s) => Buffer.concat([vxlanHeader(), s])),
    PEER12,
    seg,
  );
  env.sw.receive(UPLINK, 1);
  const { sent, datagrams } = env.io.take();
  t.is(datagrams.length, 0);
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'one write',
  );
  const vnet = new VnetView();
  vnet.reset(sent[0].wire, 0, VNET_HDR_LEN);
  t.is(vnet.flags(), VnetFlags.NEEDS_CSUM);
  t.is(vnet.gsoType(), GsoType.TCPV4);
  t.is(vnet.gsoSize(), GRO_MSS);
  t.is(vnet.csumStart(), 34);
  t.is(vnet.csumOffset(), 16);
  const f = frameOf(sent[0]);
  t.is(f.length, HDRS + 2 * GRO_MSS + 700);
  t.true(f.subarray(0, 14).equals(segs[0].subarray(0, 14)));
  t.is(f.readUInt32BE(34 + 4), 0x1000, 'the first segment’s sequence number');
  t.true(
    f.subarray(HDRS).equals(Buffer.concat(segs.map((s) => s.subarray(HDRS)))),
    'the payloads in order',
  );
  const u = readPortCounters(env.counters, UPLINK);
  t.is(u.rxFrames, 3, 'the uplink counts datagrams');
  t.is(u.rxBytes, blobLen);
  t.is(u.dropsTotal, 0);
  t.is(readPortCounters(env.counters, TUNNEL).rxFrames, 1, 'the tunnel port counts the frame');
  t.deepEqual(
    env.overlay().vteps.map((v) => `${v.mac}@${v.vtep}`),
    [`${X}@${PEER12}`],
    'the source is learned from a GRO frame too',
  );
});

test('a UDP GRO blob: each datagram is admitted on its own header, a short tail is counted', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const udp = (i: number) => buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, srcPort: 5000 + i, payload: filler(200, i) });
  const frames = [0, 1, 2].map(udp);
  const size = 8 + frames[0].length;
  placeBlob(
    env.io,
    0,
    [Buffer.concat([vxlanHeader(), frames[0]]), Buffer.concat([vxlanHeader(9999), frames[1]]), Buffer.concat([vxlanHeader(), frames[2]]), Buffer.from([8, 0, 0])],
    PEER12,
    size,
  );
  env.sw.receive(UPLINK, 1);
  const { sent, datagrams } = env.io.take();
  t.is(datagrams.length, 0);
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0, FD0],
  );
  t.true(frameOf(sent[0]).equals(frames[0]));
  t.true(frameOf(sent[1]).equals(frames[2]));
  for (const s of sent) t.true(s.wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)));
  const u = readPortCounters(env.counters, UPLINK);
  t.is(u.rxFrames, 4);
  t.deepEqual(u.drops, { vxlanUnknownVni: 1, vxlanShortHeader: 1 });
});

test('a UDP GRO blob of consecutive TCP segments with partial checksums (a kernel peer on a veth) still merges into one super-frame', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const segs = [0, 1, 2].map((i) => {
    const s = groSegment(i, i === 2 ? 700 : GRO_MSS);
    s.writeUInt16BE(pseudoSumV4At(s, 14, s.length - 34), 34 + 16);
    return s;
  });
  placeBlob(
    env.io,
    0,
    segs.map((s) => Buffer.concat([vxlanHeader(), s])),
    PEER12,
    8 + HDRS + GRO_MSS,
  );
  env.sw.receive(UPLINK, 1);
  const { sent } = env.io.take();
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'one write',
  );
  const vnet = new VnetView();
  vnet.reset(sent[0].wire, 0, VNET_HDR_LEN);
  t.is(vnet.gsoType(), GsoType.TCPV4);
  t.is(frameOf(sent[0]).length, HDRS + 2 * GRO_MSS + 700);
});

test('a frame from a peer with a partial TCP checksum (a kernel peer on a veth with tx offload) reaches the TAP marked NEEDS_CSUM; a corrupt one is left alone', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const segment = () => buildTcp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, srcPort: 5001, dstPort: 40000, seq: 1, flags: TcpFlags.ACK, payload: filler(100, 3) });
  const partial = segment();
  const l4Length = partial.length - 34;
  partial.writeUInt16BE(pseudoSumV4At(partial, 14, l4Length), 34 + 16);
  const corrupt = segment();
  corrupt.writeUInt16BE((corrupt.readUInt16BE(34 + 16) + 1) & 0xffff, 34 + 16);
  const { sent } = env.fromPeer(PEER12, partial, corrupt);
  t.is(sent.length, 2);
  const vnet = new VnetView();
  t.true(vnet.reset(sent[0].wire, 0, VNET_HDR_LEN));
  t.true(vnet.needsCsum(), 'the partial one is marked NEEDS_CSUM');
  t.is(vnet.csumStart(), 34);
  t.is(vnet.csumOffset(), 16);
  t.true(frameOf(sent[0]).equals(partial), 'its bytes untouched');
  t.true(sent[1].wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), 'the corrupt one keeps an all-zero vnet header, for the receiver to drop');
});

/** The TCP checksum field of an IPv4 frame set to its pseudo-header sum: partial, as a kernel peer on a veth leaves it. */
function partial4(f: Buffer): Buffer {
  f.writeUInt16BE(pseudoSumV4At(f, 14, f.length - 34), 34 + 16);
  return f;
}

test('single datagrams of consecutive TCP segments in one batch (no UDP GRO on the way) reach the TAP as one super-frame', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  // Complete checksums (a vsw peer) and partial ones (a kernel peer) merge alike.
  const segs = [0, 1, 2, 3].map((i) => (i % 2 === 0 ? groSegment(i, i === 3 ? 500 : GRO_MSS) : partial4(groSegment(i, i === 3 ? 500 : GRO_MSS))));
  const { sent } = env.fromPeer(PEER12, ...segs);
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD0],
    'one write',
  );
  const vnet = new VnetView();
  vnet.reset(sent[0].wire, 0, VNET_HDR_LEN);
  t.is(vnet.flags(), VnetFlags.NEEDS_CSUM);
  t.is(vnet.gsoType(), GsoType.TCPV4);
  t.is(vnet.gsoSize(), GRO_MSS);
  t.is(vnet.hdrLen(), HDRS);
  t.is(vnet.csumStart(), 34);
  t.is(vnet.csumOffset(), 16);
  const f = frameOf(sent[0]);
  t.is(f.length, HDRS + 3 * GRO_MSS + 500);
  t.true(f.subarray(0, 34 + 16).equals(Buffer.concat([segs[0].subarray(0, 16), Buffer.from([(f.length - 14) >> 8, (f.length - 14) & 0xff]), f.subarray(18, 50)])));
  t.is(internetChecksum(f, 14, 20), 0, 'the IP header checksum is right for the new length');
  t.is(f.readUInt16BE(34 + 16), pseudoSumV4At(f, 14, f.length - 34), 'the TCP checksum field is the pseudo-header sum');
  t.true(
    f.subarray(HDRS).equals(Buffer.concat(segs.map((s) => s.subarray(HDRS)))),
    'the payloads in order',
  );
  const u = readPortCounters(env.counters, UPLINK);
  t.is(u.rxFrames, 4, 'the uplink counts datagrams');
  t.is(u.rxBytes, segs.reduce((n, s) => n + s.length + 8, 0));
  t.is(readPortCounters(env.counters, TUNNEL).rxFrames, 1, 'the tunnel port counts the frame');
  t.is(readPortCounters(env.counters, P0).txFrames, 1);
});

test('single datagrams merge only while they continue one flow from one sender; the rest goes as it came', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const udp = buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, payload: filler(100) });
  // 0,1 merge; a UDP datagram; 3 from another peer (a different VTEP, same inner flow) stays alone; 4 out of sequence.
  const segs = [groSegment(0), groSegment(1), udp, groSegment(2), groSegment(5)];
  segs.forEach((f, i) => env.io.placeUdp(i, f, i === 3 ? PEER13 : PEER12));
  env.sw.receive(UPLINK, segs.length);
  const { sent } = env.io.take();
  t.deepEqual(
    sent.map((s) => frameOf(s).length),
    [HDRS + 2 * GRO_MSS, udp.length, segs[3].length, segs[4].length],
  );
  t.is(sent[0].wire[1], GsoType.TCPV4);
  for (const [i, s] of sent.slice(1).entries()) {
    t.true(s.wire.subarray(0, VNET_HDR_LEN).equals(Buffer.alloc(VNET_HDR_LEN)), `frame ${i + 1}: a plain frame`);
    t.true(frameOf(s).equals(segs[i + 2]), `frame ${i + 1}: unchanged`);
  }
  t.is(readPortCounters(env.counters, UPLINK).rxFrames, 5);
});

test('a merged run from a sender that is not a peer is dropped whole, every datagram counted', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const { sent } = env.fromPeer(STRANGER, groSegment(0), groSegment(1), groSegment(2));
  t.is(sent.length, 0);
  t.deepEqual(readPortCounters(env.counters, UPLINK).drops, { vxlanNotPeer: 3 });
});

test("a kernel peer's VXLAN GSO packet (one datagram, an inner TCP super-frame with a partial checksum) reaches the TAP as one super-frame cut to the overlay MTU", (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  const tcp = { srcMac: X, dstMac: A, srcPort: 80, dstPort: 40000, seq: 7, ack: 9, flags: TcpFlags.ACK | TcpFlags.PSH, options: TS_OPTIONS, payload: filler(10_000, 4) };
  const v4 = partial4(buildTcp4({ ...tcp, srcIp: IP_X, dstIp: IP_A }));
  const v6 = buildTcp6({ ...tcp, srcIp: 'fd00::20', dstIp: 'fd00::2' });
  v6.writeUInt16BE(pseudoSumV6At(v6, 14, 6, v6.length - 54), 54 + 16);
  const corrupt = partial4(buildTcp4({ ...tcp, srcIp: IP_X, dstIp: IP_A }));
  corrupt.writeUInt16BE(corrupt.readUInt16BE(50) ^ 1, 50);
  const { sent } = env.fromPeer(PEER12, v4, v6, corrupt);
  t.is(sent.length, 2, 'the two super-frames; the one whose checksum is neither partial nor anything checked is dropped');
  const vnet = new VnetView();
  for (const [i, [frame, gso, l3]] of ([
    [v4, GsoType.TCPV4, 20],
    [v6, GsoType.TCPV6, 40],
  ] as const).entries()) {
    t.true(vnet.reset(sent[i].wire, 0, VNET_HDR_LEN));
    t.is(vnet.flags(), VnetFlags.NEEDS_CSUM);
    t.is(vnet.gsoType(), gso);
    t.is(vnet.gsoSize(), MTU - l3 - 32, 'segments that fit the overlay MTU');
    t.is(vnet.hdrLen(), 14 + l3 + 32);
    t.is(vnet.csumStart(), 14 + l3);
    t.is(vnet.csumOffset(), 16);
    t.true(frameOf(sent[i]).equals(frame), 'the frame itself untouched');
  }
  t.is(env.drop(TUNNEL, DropReason.oversize), 1, 'the corrupt one, too big for the tunnel without GSO, is dropped as oversize');
});

test("consecutive super-frames from a kernel peer in one batch merge into one whose gso_size still fits the overlay MTU", (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  // Two VXLAN GSO packets of two segments each, then a last segment: 2 * 2796 + 1398 bytes of payload.
  const big = (i: number, payload: number) =>
    partial4(buildTcp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, srcPort: 80, dstPort: 40000, seq: 0x1000 + i * GRO_MSS, ack: 555, flags: TcpFlags.ACK, window: 501, options: TS_OPTIONS, payload: filler(payload, i) }));
  const frames = [big(0, 2 * GRO_MSS), big(2, 2 * GRO_MSS), big(4, GRO_MSS)];
  const { sent } = env.fromPeer(PEER12, ...frames);
  t.is(sent.length, 1, 'one write');
  const vnet = new VnetView();
  vnet.reset(sent[0].wire, 0, VNET_HDR_LEN);
  t.is(vnet.gsoType(), GsoType.TCPV4);
  t.is(vnet.gsoSize(), GRO_MSS, 'not the first super-frame’s whole payload');
  t.is(frameOf(sent[0]).length, HDRS + 5 * GRO_MSS);
});

test('a UDP GRO blob of more small datagrams than a batch holds: all reach the local port, in order', (t) => {
  const env = setup();
  env.fromTap(P0, buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: IP_B }));
  // Not TCP, so nothing merges: one frame per datagram, several times the TAP's queue of BATCH.
  const count = BATCH * 5 + 3;
  const frames = Array.from({ length: count }, (_, i) => buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, srcPort: 6000 + i, payload: filler(64, i) }));
  placeBlob(
    env.io,
    0,
    frames.map((f) => Buffer.concat([vxlanHeader(), f])),
    PEER12,
    8 + frames[0].length,
  );
  env.sw.receive(UPLINK, 1);
  const { sent } = env.io.take();
  t.is(sent.length, count, 'every datagram delivered');
  t.true(sent.every((s, i) => s.fd === FD0 && frameOf(s).equals(frames[i])), 'each one whole, in the order they came');
  const p0 = readPortCounters(env.counters, P0);
  t.is(p0.txFrames, count);
  t.is(p0.dropsTotal, 0);
});

test('a flooded TSO super-frame: the local port gets it whole, every peer the same UDP GSO run', (t) => {
  const env = setup();
  const payload = Buffer.from(filler(5000, 9));
  const original = buildTcp4({ srcMac: A, dstMac: '02:76:0a:00:07:07', srcIp: IP_A, dstIp: '10.0.0.77', seq: 1, flags: TcpFlags.ACK, options: TS_OPTIONS, payload });
  const { frame, vnet } = superFrame(original, 1398);
  env.io.placeTap(0, frame, vnet);
  env.sw.receive(P0, 1);
  const { sent, datagrams } = env.io.take();
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD1],
  );
  t.true(sent[0].wire.equals(Buffer.concat([vnet, frame])), 'the local copy is the super-frame with its vnet header, untouched');
  t.is(datagrams.length, 2);
  t.deepEqual(datagrams.map((d) => addrText(d.addr)).sort(), [PEER12, PEER13]);
  t.true(datagrams[0].bytes.equals(datagrams[1].bytes), 'the same bytes to both');
  t.true(datagrams.every((d) => d.segmentSize === 8 + HDRS + 1398));
  t.is(datagrams[0].bytes.length, 3 * (8 + HDRS + 1398) + 8 + HDRS + (5000 - 3 * 1398));
  const o = env.overlay();
  t.is(o.egress.segmented, 1);
  t.is(o.egress.segments, 4);
  t.is(o.egress.flooded, 1);
  t.is(o.segment.replicated, 2);
});

test('a flooded frame with a partial checksum: the local port gets it as it came, the tunnel a complete checksum', (t) => {
  const env = setup();
  const original = buildUdp4({ srcMac: A, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: IP_A, dstIp: '10.0.0.255', srcPort: 68, dstPort: 67, payload: filler(300, 4) });
  const partial = Buffer.from(original);
  const udpLen = partial.length - 34;
  partial.writeUInt16BE(pseudoSumV4At(partial, 14, udpLen), 34 + 6);
  const vnet = Buffer.alloc(VNET_HDR_LEN);
  const v = new VnetView();
  v.reset(vnet, 0, VNET_HDR_LEN);
  v.setFlags(VnetFlags.NEEDS_CSUM);
  v.setCsumStart(34);
  v.setCsumOffset(6);
  env.io.placeTap(0, partial, vnet);
  env.sw.receive(P0, 1);
  const { sent, datagrams } = env.io.take();
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD1],
  );
  t.true(sent[0].wire.equals(Buffer.concat([vnet, partial])), 'NEEDS_CSUM and the partial sum for the local TAP');
  t.is(datagrams.length, 2);
  for (const d of datagrams) {
    const inner = d.bytes.subarray(8);
    t.is(internetChecksum(inner, 34, udpLen, pseudoSumV4(ip32(IP_A), ip32('10.0.0.255'), 17, udpLen)), 0, 'a complete UDP checksum');
    t.true(inner.equals(original), 'the frame as if the sender had completed its checksum');
  }
});

test('a remote MAC that shows up behind another peer moves there', (t) => {
  const env = setup();
  learnBoth(env); // X behind .12
  env.fromPeer(PEER13, buildUdp4({ srcMac: X, dstMac: A, srcIp: IP_X, dstIp: IP_A, payload: filler(16) }));
  t.deepEqual(
    env.overlay().vteps.map((v) => `${v.mac}@${v.vtep}`),
    [`${X}@${PEER13}`],
  );
  const { sent, datagrams } = env.fromTap(P0, buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, payload: filler(16) }));
  t.is(sent.length, 0);
  t.deepEqual(
    datagrams.map((d) => addrText(d.addr)),
    [PEER13],
  );
});

test('a peer that leaves takes its MACs along: frames to them are flooded to the remaining peers', (t) => {
  const env = setup();
  learnBoth(env); // X behind .12
  t.deepEqual(env.sw.setPeers(NET, [PEER13]), { added: [], removed: [PEER12] });
  t.deepEqual(env.overlay().vteps, []);
  const { datagrams } = env.fromTap(P0, buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, payload: filler(16) }));
  t.deepEqual(
    datagrams.map((d) => addrText(d.addr)),
    [PEER13],
  );
  // And a datagram from the departed peer is refused.
  const late = env.fromPeer(PEER12, buildUdp4({ srcMac: X, dstMac: A, payload: filler(16) }));
  t.is(late.sent.length, 0);
  t.is(readPortCounters(env.counters, UPLINK).drops.vxlanNotPeer, 1);
});

test('several frames of one batch into the tunnel: unicast and flood, one send per socket', (t) => {
  const env = setup();
  learnBoth(env);
  const uni = buildUdp4({ srcMac: A, dstMac: X, srcIp: IP_A, dstIp: IP_X, srcPort: 1, payload: filler(40, 1) });
  const bcast = buildArpRequest({ srcMac: A, srcIp: IP_A, targetIp: '10.0.0.99' });
  const before = env.overlay().uplink.sends;
  const { sent, datagrams } = env.fromTap(P0, uni, bcast);
  t.deepEqual(
    sent.map((s) => s.fd),
    [FD1],
  );
  t.is(datagrams.length, 3);
  t.is(datagrams.filter((d) => d.bytes.equals(Buffer.concat([vxlanHeader(), uni]))).length, 1);
  t.deepEqual(
    datagrams
      .filter((d) => d.bytes.equals(Buffer.concat([vxlanHeader(), bcast])))
      .map((d) => addrText(d.addr))
      .sort(),
    [PEER12, PEER13],
  );
  const sockets = new Set(datagrams.map((d) => d.fd));
  t.is(env.overlay().uplink.sends - before, sockets.size, 'one sendUdp per socket used');
});

test('an IPv6 frame too big for the tunnel is dropped and counted (no ICMPv6 answer is written)', (t) => {
  const env = setup();
  learnBoth(env);
  const v6 = buildUdp6({ srcMac: A, dstMac: X, payload: filler(1500 - 48, 6) });
  t.is(v6.length, 14 + 1500);
  const { sent, datagrams } = env.fromTap(P0, v6);
  t.is(datagrams.length, 0);
  t.is(sent.length, 0);
  t.is(env.drop(TUNNEL, DropReason.tunnelTooBig), 1);
});

test('a port id that an uplink holds is refused, as an uplink id that a port holds is', (t) => {
  const env = setup();
  t.throws(() => env.sw.addUplink({ uplinkId: P0, vtep: ip32(LOCAL_VTEP), fds: [300], dstPort: VXLAN_PORT }), { instanceOf: RangeError });
  t.throws(() => env.sw.addUplink({ uplinkId: TUNNEL, vtep: ip32(LOCAL_VTEP), fds: [300], dstPort: VXLAN_PORT }), { instanceOf: RangeError });
  // addUplink and addNetwork check both ports and uplinks; addPort checks ports only.
  t.throws(() => env.sw.addPort({ portId: UPLINK, networkId: NET, fd: 12, name: 'c2' }), undefined, 'the uplink id is taken');
  t.throws(() => env.sw.addPort({ portId: TUNNEL, networkId: NET, fd: 12, name: 'c2' }), { message: /exists already/ });
});
