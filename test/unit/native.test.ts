import test from 'ava';
import { closeFd, flowHashBatch, internetChecksum as nativeChecksum, packetSendBatch, RX_BATCH, RX_HEADROOM, RX_SLOT_SIZE, RxEngine, VNET_HDR_LEN, writeBatch } from '../../src/native/index.js';
import { buildTcp4, buildUdp4, buildUdp6, filler } from '../../src/packet/builders.js';
import { internetChecksum as referenceChecksum } from '../../src/packet/checksum.js';

test('layout constants leave room for the vnet header and a TSO super-frame', (t) => {
  t.is(VNET_HDR_LEN, 10);
  t.true(RX_HEADROOM >= 64 + VNET_HDR_LEN);
  t.true(RX_SLOT_SIZE - RX_HEADROOM >= 65_535 + 14);
  t.is(RX_BATCH, 64);
});

test('native checksum agrees with the JS reference on every length and offset', (t) => {
  const data = Buffer.from(filler(1600, 7));
  for (let len = 0; len <= 1600; len += 37) {
    for (const off of [0, 1, 3]) {
      const l = Math.min(len, 1600 - off);
      t.is(nativeChecksum(data, off, l), referenceChecksum(data, off, l), `len ${l} off ${off}`);
      t.is(nativeChecksum(data, off, l, 0x1abcd), referenceChecksum(data, off, l, 0x1abcd), `len ${l} off ${off} with initial`);
    }
  }
});

test('a checksummed IPv4 header verifies to zero', (t) => {
  const frame = buildUdp4({ payload: filler(20) });
  t.is(nativeChecksum(frame, 14, 20), 0);
});

test('native calls refuse ranges outside their buffers instead of reading them', (t) => {
  const buf = Buffer.alloc(100);
  t.throws(() => nativeChecksum(buf, 90, 20), { message: /outside the buffer/ });
  t.throws(() => flowHashBatch(buf, new Uint32Array(1), new Uint32Array(1), 2, new Uint32Array(2)), { message: /exceeds the descriptor arrays/ });
  t.throws(() => writeBatch(-1, buf, new Uint32Array([10]), new Uint32Array([5]), 1, 'x' as unknown as number), { message: /vnetHdrLen/ });
  t.throws(() => closeFd(-1), { message: /close fd -1/ });
});

function hashes(frames: Buffer[]): Uint32Array {
  const buf = Buffer.concat(frames);
  const offsets = new Uint32Array(frames.length);
  const lengths = new Uint32Array(frames.length);
  let off = 0;
  frames.forEach((f, i) => {
    offsets[i] = off;
    lengths[i] = f.length;
    off += f.length;
  });
  const out = new Uint32Array(frames.length);
  flowHashBatch(buf, offsets, lengths, frames.length, out);
  return out;
}

test('writeBatch reports refused frames by count and by zeroed length', (t) => {
  const buf = Buffer.alloc(200);
  const lengths = new Uint32Array([50, 60, 500]);
  // fd -1 refuses every write; the third descriptor is also outside the buffer.
  t.is(writeBatch(-1, buf, new Uint32Array([10, 80, 100]), lengths, 3, VNET_HDR_LEN), 0);
  t.deepEqual([...lengths], [0, 0, 0]);
});

test('packetSendBatch refuses as writeBatch does, and only with the vnet header a packet socket takes', (t) => {
  const buf = Buffer.alloc(200);
  // The first frame's header would start before the buffer, the third ends past it: refused
  // without a syscall; the second reaches sendmmsg, which fd -1 fails with EBADF (not a full queue, so the rest still goes).
  const lengths = new Uint32Array([50, 60, 500, 20]);
  t.is(packetSendBatch(-1, buf, new Uint32Array([4, 80, 100, 150]), lengths, 4, VNET_HDR_LEN), 0);
  t.deepEqual([...lengths], [0, 0, 0, 0]);
  t.throws(() => packetSendBatch(-1, buf, new Uint32Array([10]), new Uint32Array([5]), 1, 0), { message: /vnetHdrLen must be 10/ });
  t.throws(() => packetSendBatch(-1, buf, new Uint32Array(1), new Uint32Array(1), 2, VNET_HDR_LEN), { message: /exceeds the descriptor arrays/ });
});

test('addPacketPort reaches the engine as a kind of its own, which refuses an fd libuv cannot poll', (t) => {
  const rx = new RxEngine(() => {});
  try {
    t.throws(() => rx.addPacketPort(1, -1), { message: /uv_poll_init on fd -1/ });
  } finally {
    rx.close();
  }
});

test('flow hash: same 5-tuple same hash, any field changed a different one', (t) => {
  const base = { srcIp: '10.1.0.2', dstIp: '10.1.0.3', srcPort: 40000, dstPort: 80 };
  const h = hashes([
    buildTcp4(base),
    buildTcp4({ ...base, payload: filler(100) }),
    buildTcp4({ ...base, srcPort: 40001 }),
    buildTcp4({ ...base, dstIp: '10.1.0.4' }),
    buildUdp4(base),
    buildUdp6({ srcPort: 40000, dstPort: 80 }),
  ]);
  t.is(h[0], h[1], 'payload does not matter');
  t.is(new Set(h).size, 5, 'port, address, protocol and family all change the hash');
});

test('flow hash of a runt is 0 and does not read past it', (t) => {
  t.deepEqual([...hashes([Buffer.alloc(5)])], [0]);
});
