/**
 * packetOpen: an AF_PACKET socket on a host interface whose frames look like
 * a TAP's (a vnet header before each), read by the receive engine with one
 * recvmmsg per readiness event (addPacketPort) and written with one sendmmsg
 * per batch (packetSendBatch). Checked on a veth whose host end is the
 * "uplink" and whose other end is in a namespace of the test's own: what the
 * namespace sends is read with a vnet header, a burst of it whole and in
 * batches, what is written reaches the namespace, and what the socket itself
 * sent is not read back. And on a veth pair in the host's namespace, a socket
 * at each end: offloads (a TSO super-frame, a partial checksum) cross a batch
 * both ways intact, a frame the kernel refuses does not stop the batch, and a
 * frame too long for its slot is reported as a runt, not as a shorter frame.
 */
import test from 'ava';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { createNetns } from '../../src/host/index.js';
import { closeFd, packetOpen, packetSendBatch, RxEngine, VNET_HDR_LEN } from '../../src/native/index.js';
import { buildArpRequest, buildTcp4, buildUdp4, filler } from '../../src/packet/builders.js';
import { pseudoSumV4At } from '../../src/packet/checksum.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { GsoType, VnetFlags, VnetView } from '../../src/packet/vnet.js';
import { injectFrames, removeEverything, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const ns = `${prefix}-lan`;
const uplink = `${prefix}-up`;
const FAKE_MAC = '02:00:00:00:77:01';
const NS_IP = '192.168.213.1';
/** A veth pair in the host's namespace: frames sent on one end's socket are read on the other's. */
const PAIR_A = `${prefix}-pa`;
const PAIR_B = `${prefix}-pb`;

test.before(async () => {
  await createNetns(ns);
  const steps: string[][] = [
    ['link', 'add', uplink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns],
    ['link', 'set', uplink, 'up'],
    ['-n', ns, 'link', 'set', 'eth0', 'up'],
    ['-n', ns, 'addr', 'add', `${NS_IP}/24`, 'dev', 'eth0'],
    ['link', 'add', PAIR_A, 'type', 'veth', 'peer', 'name', PAIR_B],
  ];
  for (const args of steps) {
    const r = await sh('ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  }
  // No IPv6 on the pair: its router solicitations would be read with the test's frames.
  for (const link of [PAIR_A, PAIR_B]) {
    await sh('sysctl', ['-qw', `net.ipv6.conf.${link}.disable_ipv6=1`]);
    const r = await sh('ip', ['link', 'set', link, 'up']);
    if (r.code !== 0) throw new Error(`ip link set ${link} up: ${r.stderr}`);
  }
});

test.after.always(async () => {
  await removeEverything(prefix);
});

test.serial('frames written on a packet socket reach the wire, answers are read back with a vnet header, its own frames are not', async (t) => {
  const fd = packetOpen(uplink, true);
  const frames: { src: string; dst: string; etherType: number; vnetZero: boolean }[] = [];
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      const b = engine.buffer;
      frames.push({
        dst: formatMac(b.subarray(off, off + 6)),
        src: formatMac(b.subarray(off + 6, off + 12)),
        etherType: b.readUInt16BE(off + 12),
        vnetZero: b.subarray(off - VNET_HDR_LEN, off).every((x) => x === 0),
      });
    }
  });
  try {
    engine.addPacketPort(1, fd);
    // Who has NS_IP? asked from a MAC the host does not have: only the namespace can answer, to that MAC.
    const request = buildArpRequest({ srcMac: FAKE_MAC, srcIp: '192.168.213.77', targetIp: NS_IP });
    const buf = Buffer.alloc(VNET_HDR_LEN + request.length);
    request.copy(buf, VNET_HDR_LEN);
    const lengths = new Uint32Array([request.length]);
    t.is(packetSendBatch(fd, buf, new Uint32Array([VNET_HDR_LEN]), lengths, 1, VNET_HDR_LEN), 1);
    const deadline = Date.now() + 5000;
    while (!frames.some((f) => f.dst === FAKE_MAC) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const reply = frames.find((f) => f.dst === FAKE_MAC);
    t.truthy(reply, `the namespace's ARP reply was read: ${JSON.stringify(frames)}`);
    t.is(reply?.etherType, 0x0806);
    t.true(reply?.vnetZero, 'behind a vnet header (all zero: a plain frame from the wire)');
    t.false(
      frames.some((f) => f.src === FAKE_MAC),
      'the request the socket sent is not read back',
    );
    const promisc = await sh('ip', ['-d', 'link', 'show', uplink]);
    t.regex(promisc.stdout, /promiscuity 1\b/, 'promiscuous while the socket is open');
  } finally {
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  }
  t.regex((await sh('ip', ['-d', 'link', 'show', uplink])).stdout, /promiscuity 0\b/, 'and not after it is closed');
});

test.serial("frames with another VLAN's tag are not read; untagged ones are", async (t) => {
  const fd = packetOpen(uplink, true);
  const seen: string[] = [];
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      seen.push(formatMac(engine.buffer.subarray(off + 6, off + 12)));
    }
  });
  try {
    engine.addPacketPort(1, fd);
    const untagged = buildArpRequest({ srcMac: '02:00:00:00:78:01', srcIp: '192.168.213.1', targetIp: '192.168.213.9' });
    // The same request behind an 802.1Q tag (VLAN 7), from another source MAC.
    const tagged = Buffer.concat([Buffer.from('ffffffffffff020000007802', 'hex'), Buffer.from([0x81, 0x00, 0x00, 0x07]), untagged.subarray(12)]);
    const sent = await injectFrames(ns, 'eth0', [tagged.toString('hex'), untagged.toString('hex')]);
    t.is(sent.sent, 2);
    const deadline = Date.now() + 5000;
    while (!seen.includes('02:00:00:00:78:01') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.true(seen.includes('02:00:00:00:78:01'), `the untagged frame was read: ${seen.join(', ')}`);
    t.false(seen.includes('02:00:00:00:78:02'), 'the tagged one was not');
  } finally {
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  }
});

test.serial('an interface that does not exist is refused with the reason', (t) => {
  t.throws(() => packetOpen(`${prefix}-none`, false), { message: /interface vswt.*-none: No such device \(ENODEV\)/ });
});

/** Waits until `done` or 5 s. */
async function until(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

test.serial('a burst of 200 frames from the LAN is read whole and in order, 64 to a readiness event', async (t) => {
  const fd = packetOpen(uplink, true);
  const SRC = '02:00:00:00:78:10';
  const seqs: number[] = [];
  const batches: number[] = [];
  let resumed = false;
  const engine = new RxEngine((_port, count) => {
    if (resumed) batches.push(count);
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      const b = engine.buffer;
      // The sequence number is the UDP destination port; each frame is 100 + its number bytes long.
      if (formatMac(b.subarray(off + 6, off + 12)) === SRC && engine.lengths[i] === 100 + (b.readUInt16BE(off + 36) - 10000)) seqs.push(b.readUInt16BE(off + 36) - 10000);
    }
  });
  try {
    engine.addPacketPort(1, fd);
    // Not read while the burst is queued: the socket holds it, so the drain after the resume is one full batch after another.
    t.true(engine.setPaused(1, true));
    const frames: string[] = [];
    for (let k = 0; k < 200; k++) {
      const f = buildUdp4({ srcMac: SRC, dstMac: '02:00:00:00:78:11', srcIp: '192.168.213.1', dstIp: '192.168.213.2', dstPort: 10000 + k, payload: filler(100 + k - 42, k) });
      frames.push(f.toString('hex'));
    }
    t.is((await injectFrames(ns, 'eth0', frames)).sent, 200);
    resumed = true;
    t.true(engine.setPaused(1, false));
    await until(() => seqs.length >= 200);
    t.deepEqual(seqs, [...Array(200).keys()], 'all 200, each its own length, in the order sent');
    t.deepEqual(batches.slice(0, 3), [64, 64, 64], `drained 64 frames per readiness event (batches: ${batches.join(', ')})`);
  } finally {
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  }
});

/** Frames as the engine handed them over: the vnet header and the frame, copied out of the slot. */
interface Read {
  vnet: Buffer;
  frame: Buffer;
}

const PAIR_SRC = '02:00:00:00:79:01';
const PAIR_DST = '02:00:00:00:79:02';

/** A socket on each end of the pair; what the B end reads, from PAIR_SRC. */
function pair() {
  const tx = packetOpen(PAIR_A, false);
  const rxFd = packetOpen(PAIR_B, true);
  const got: Read[] = [];
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      const len = engine.lengths[i];
      if (len < 12 || formatMac(engine.buffer.subarray(off + 6, off + 12)) !== PAIR_SRC) continue;
      got.push({ vnet: Buffer.from(engine.buffer.subarray(off - VNET_HDR_LEN, off)), frame: Buffer.from(engine.buffer.subarray(off, off + len)) });
    }
  });
  engine.addPacketPort(1, rxFd);
  const close = () => {
    engine.removePort(1);
    engine.close();
    closeFd(rxFd);
    closeFd(tx);
  };
  return { tx, got, close };
}

/** Frames back to back, each behind its vnet header (all zero unless given): the descriptors packetSendBatch takes. */
function batchOf(frames: { frame: Buffer; vnet?: (v: VnetView) => void }[]) {
  const buf = Buffer.alloc(frames.reduce((n, f) => n + VNET_HDR_LEN + f.frame.length, 0));
  const offsets = new Uint32Array(frames.length);
  const lengths = new Uint32Array(frames.length);
  const v = new VnetView();
  let at = 0;
  frames.forEach((f, i) => {
    v.reset(buf, at, VNET_HDR_LEN);
    f.vnet?.(v);
    offsets[i] = at + VNET_HDR_LEN;
    lengths[i] = f.frame.length;
    buf.set(f.frame, offsets[i]);
    at = offsets[i] + f.frame.length;
  });
  return { buf, offsets, lengths };
}

test.serial('one packetSendBatch of 100 frames, a TSO super-frame and a partial checksum among them, is read back intact by a packet port', async (t) => {
  const { tx, got, close } = pair();
  try {
    const addrs = { srcMac: PAIR_SRC, dstMac: PAIR_DST, srcIp: '192.168.214.1', dstIp: '192.168.214.2' };
    // 30,000 bytes of TCP payload to be cut into 1448-byte segments, its checksum field holding the pseudo-header sum only.
    const tso = buildTcp4({ ...addrs, flags: TcpFlags.ACK | TcpFlags.PSH, payload: filler(30_000, 3) });
    tso.writeUInt16BE(pseudoSumV4At(tso, 14, tso.length - 34), 34 + 16);
    const partial = buildUdp4({ ...addrs, dstPort: 5000, payload: filler(300, 4) });
    partial.writeUInt16BE(pseudoSumV4At(partial, 14, partial.length - 34), 34 + 6);
    const frames = [
      {
        frame: tso,
        vnet: (v: VnetView) => {
          v.setFlags(VnetFlags.NEEDS_CSUM);
          v.setGsoType(GsoType.TCPV4);
          v.setHdrLen(54);
          v.setGsoSize(1448);
          v.setCsumStart(34);
          v.setCsumOffset(16);
        },
      },
      {
        frame: partial,
        vnet: (v: VnetView) => {
          v.setFlags(VnetFlags.NEEDS_CSUM);
          v.setCsumStart(34);
          v.setCsumOffset(6);
        },
      },
      ...[...Array(98).keys()].map((k) => ({ frame: buildUdp4({ ...addrs, dstPort: 6000 + k, payload: filler(18 + k, k) }) })),
    ];
    const b = batchOf(frames);
    t.is(packetSendBatch(tx, b.buf, b.offsets, b.lengths, frames.length, VNET_HDR_LEN), 100, 'the kernel took all 100 (two sendmmsg of 64 and 36)');
    t.deepEqual([...b.lengths], frames.map((f) => f.frame.length), 'none refused');
    await until(() => got.length >= 100);
    t.is(got.length, 100, 'all 100 read');
    t.true(got.every((r, i) => r.frame.equals(frames[i].frame)), 'each frame byte for byte, in the order sent');

    const v = new VnetView();
    v.reset(got[0].vnet, 0, VNET_HDR_LEN);
    t.is(got[0].frame.length, tso.length, 'the super-frame whole, not cut into segments');
    t.deepEqual(
      { needsCsum: v.needsCsum(), gsoType: v.gsoType(), gsoSize: v.gsoSize(), csumStart: v.csumStart(), csumOffset: v.csumOffset() },
      { needsCsum: true, gsoType: GsoType.TCPV4, gsoSize: 1448, csumStart: 34, csumOffset: 16 },
      'with its offload metadata: TCPV4, gso_size 1448, a partial checksum at 34+16',
    );
    v.reset(got[1].vnet, 0, VNET_HDR_LEN);
    t.deepEqual(
      { needsCsum: v.needsCsum(), gsoType: v.gsoType(), csumStart: v.csumStart(), csumOffset: v.csumOffset() },
      { needsCsum: true, gsoType: GsoType.NONE, csumStart: 34, csumOffset: 6 },
      'the UDP frame still has its partial checksum to complete',
    );
    t.true(
      got.slice(2).every((r) => (r.vnet[0] & VnetFlags.NEEDS_CSUM) === 0 && r.vnet[1] === GsoType.NONE),
      'the plain frames come plain',
    );
  } finally {
    close();
  }
});

test.serial('packetSendBatch: a frame the kernel refuses (too long for the link, no GSO) gets length 0 and the rest of the batch still goes', async (t) => {
  const { tx, got, close } = pair();
  try {
    const addrs = { srcMac: PAIR_SRC, dstMac: PAIR_DST, srcIp: '192.168.214.1', dstIp: '192.168.214.2' };
    const frames = [100, 3000, 200].map((n, k) => ({ frame: buildUdp4({ ...addrs, dstPort: 7000 + k, payload: filler(n - 42, k) }) }));
    const b = batchOf(frames);
    t.is(packetSendBatch(tx, b.buf, b.offsets, b.lengths, 3, VNET_HDR_LEN), 2);
    t.deepEqual([...b.lengths], [100, 0, 200], 'the 3000-byte frame is refused (EMSGSIZE), by its length');
    await until(() => got.length >= 2);
    t.deepEqual(
      got.map((r) => r.frame.length),
      [100, 200],
      'the frames before and after it arrive',
    );
  } finally {
    close();
  }
});

test.serial('a frame longer than its slot is reported as a runt (length 0), never as the part that fit', async (t) => {
  // The engine with slots of 1 KiB, through the addon itself: RxEngine's slots hold any frame a link can carry.
  const addon = createRequire(import.meta.url)(fileURLToPath(new URL('../../../native/vsw_native.node', import.meta.url))) as {
    rxCreate(buffer: Buffer, lengths: Int32Array, slotSize: number, slotCount: number, headroom: number, vnet: number, onBatch: (port: number, count: number) => void): object;
    rxAddPort(engine: object, portId: number, fd: number, kind: number): void;
    rxRemovePort(engine: object, portId: number): number;
    rxClose(engine: object): void;
  };
  const SLOT = 1024;
  const HEADROOM = 128;
  // Room for the frame: the slot after its headroom.
  const ROOM = SLOT - HEADROOM;
  const buffer = Buffer.alloc(4 * SLOT);
  const lengths = new Int32Array(4);
  const seen: { dstPort: number; length: number }[] = [];
  const engine = addon.rxCreate(buffer, lengths, SLOT, 4, HEADROOM, VNET_HDR_LEN, (_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = i * SLOT + HEADROOM;
      // The bytes that landed are there even for a runt: enough to tell the test's frames apart.
      if (formatMac(buffer.subarray(off + 6, off + 12)) === PAIR_SRC) seen.push({ dstPort: buffer.readUInt16BE(off + 36), length: lengths[i] });
    }
  });
  const tx = packetOpen(PAIR_A, false);
  const rxFd = packetOpen(PAIR_B, true);
  try {
    addon.rxAddPort(engine, 1, rxFd, 2);
    const addrs = { srcMac: PAIR_SRC, dstMac: PAIR_DST, srcIp: '192.168.214.1', dstIp: '192.168.214.2' };
    const sizes = [200, ROOM + 100, ROOM, ROOM + 1, 300];
    const frames = sizes.map((n, k) => ({ frame: buildUdp4({ ...addrs, dstPort: 8000 + k, payload: filler(n - 42, k) }) }));
    const b = batchOf(frames);
    t.is(packetSendBatch(tx, b.buf, b.offsets, b.lengths, frames.length, VNET_HDR_LEN), frames.length);
    await until(() => seen.length >= frames.length);
    t.deepEqual(
      seen,
      sizes.map((n, k) => ({ dstPort: 8000 + k, length: n > ROOM ? 0 : n })),
      `frames up to ${ROOM} bytes whole; longer ones (MSG_TRUNC) as runts`,
    );
  } finally {
    addon.rxRemovePort(engine, 1);
    addon.rxClose(engine);
    closeFd(rxFd);
    closeFd(tx);
  }
});
