import test from 'ava';
import { closeFd, RX_MALFORMED, RX_UDP_PREFIX, RxEngine, udpLocalPort, udpOpen, udpSendBatch } from '../../src/native/index.js';
import { buildUdp4, filler } from '../../src/packet/builders.js';
import { VXLAN_HEADER_LEN, VxlanView } from '../../src/packet/vxlan.js';

// Loopback only: two sockets on 127.0.0.1, real sendmmsg and recvmmsg, the real rx engine.
const LOOPBACK = 0x7f000001;

interface Received {
  portId: number;
  length: number;
  bytes: Buffer;
  srcAddr: number;
  srcPort: number;
}

/** An rx engine whose batches are copied out (slots are reused by the next batch). */
function receiver() {
  const got: Received[] = [];
  const batches: number[] = [];
  let wake: (() => void) | undefined;
  const rx = new RxEngine((portId, count) => {
    batches.push(count);
    for (let i = 0; i < count; i++) {
      const length = rx.lengths[i];
      // The whole datagram: from the VXLAN header in the headroom to the end of the inner frame.
      const start = rx.frameOffset(i) - RX_UDP_PREFIX;
      const bytes = Buffer.from(rx.buffer.subarray(start, length >= 0 ? rx.frameOffset(i) + length : start));
      got.push({ portId, length, bytes, srcAddr: rx.sourceAddress(i), srcPort: rx.sourcePort(i) });
    }
    wake?.();
  });
  const until = async (n: number, ms = 5000) => {
    const deadline = Date.now() + ms;
    while (got.length < n && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  };
  return { rx, got, batches, until };
}

/** Datagrams laid out as the switch would: each at its own offset with headroom in front. */
function txBatch(datagrams: Uint8Array[], dstPort: number) {
  const stride = 66_000;
  const buf = Buffer.alloc(stride * datagrams.length);
  const offsets = new Uint32Array(datagrams.length);
  const lengths = new Uint32Array(datagrams.length);
  const addrs = new Uint32Array(datagrams.length).fill(LOOPBACK);
  const ports = new Uint16Array(datagrams.length).fill(dstPort);
  datagrams.forEach((d, i) => {
    offsets[i] = i * stride + 64;
    lengths[i] = d.length;
    buf.set(d, offsets[i]);
  });
  return { buf, offsets, lengths, addrs, ports };
}

function vxlanDatagram(vni: number, inner: Uint8Array): Buffer {
  const d = Buffer.alloc(VXLAN_HEADER_LEN + inner.length);
  const v = new VxlanView();
  v.reset(d, 0, d.length);
  v.writeHeader(vni);
  d.set(inner, VXLAN_HEADER_LEN);
  return d;
}

function sockets(t: { teardown(fn: () => void): void }) {
  const a = udpOpen({ bindAddress: '127.0.0.1', port: 0 });
  const b = udpOpen({ bindAddress: '127.0.0.1', port: 0 });
  t.teardown(() => {
    closeFd(a);
    closeFd(b);
  });
  return { a, b, aPort: udpLocalPort(a), bPort: udpLocalPort(b) };
}

test('a sendmmsg batch arrives through the rx engine with the VXLAN layout and its sources', async (t) => {
  const { a, b, aPort, bPort } = sockets(t);
  t.not(aPort, 0);
  const { rx, got, batches, until } = receiver();
  t.teardown(() => rx.close());
  rx.addUdpPort(9, b);

  // 150 datagrams: more than one sendmmsg chunk and more than one rx batch. Every 10th is a
  // runt (0 to 7 bytes), one is a 60 KB frame, one is exactly the VXLAN header (empty inner frame).
  const datagrams: Buffer[] = [];
  for (let i = 0; i < 150; i++) {
    if (i % 10 === 3) datagrams.push(Buffer.from(filler(i % 8, i)));
    else if (i === 77) datagrams.push(vxlanDatagram(i, new Uint8Array(0)));
    else if (i === 100) datagrams.push(vxlanDatagram(i, buildUdp4({ payload: filler(60_000, i) })));
    else datagrams.push(vxlanDatagram(i, buildUdp4({ srcPort: 1000 + i, payload: filler(i * 7, i) })));
  }
  const tx = txBatch(datagrams, bPort);
  t.is(udpSendBatch(a, tx.buf, tx.offsets, tx.lengths, datagrams.length, tx.addrs, tx.ports), 150);
  await until(150);

  t.is(got.length, 150);
  t.true(batches.length >= 3, `150 datagrams in ${batches.length} batches of at most 64`);
  t.true(batches.every((n) => n > 0 && n <= 64));
  got.forEach((r, i) => {
    t.is(r.portId, 9);
    t.is(r.srcAddr, LOOPBACK, `datagram ${i} source address`);
    t.is(r.srcPort, aPort, `datagram ${i} source port`);
    if (datagrams[i].length < VXLAN_HEADER_LEN) {
      t.is(r.length, RX_MALFORMED, `runt ${i} of ${datagrams[i].length} bytes`);
    } else {
      t.is(r.length, datagrams[i].length - VXLAN_HEADER_LEN, `datagram ${i} inner length`);
      t.true(r.bytes.equals(datagrams[i]), `datagram ${i} bytes`);
    }
  });
  const v = new VxlanView();
  t.true(v.reset(got[100].bytes, 0, got[100].bytes.length));
  t.is(v.vni(), 100);
  t.is(v.payloadLength(), 60_000 + 42);
});

test('udpSendBatch refuses bad descriptors like writeBatch and sends the rest', async (t) => {
  const { a, b, bPort } = sockets(t);
  const { rx, got, until } = receiver();
  t.teardown(() => rx.close());
  rx.addUdpPort(1, b);
  const datagrams = [0, 1, 2, 3].map((i) => vxlanDatagram(i, buildUdp4({ payload: filler(10, i) })));
  const tx = txBatch(datagrams, bPort);
  tx.offsets[1] = tx.buf.length - 5; // runs past the buffer
  const ports = new Uint32Array([bPort, bPort, 70_000, bPort]); // a Uint32Array of ports works too; 70000 does not
  t.is(udpSendBatch(a, tx.buf, tx.offsets, tx.lengths, 4, tx.addrs, ports), 2);
  t.deepEqual([...tx.lengths], [datagrams[0].length, 0, 0, datagrams[3].length]);
  await until(2);
  t.deepEqual(
    got.map((r) => r.bytes),
    [datagrams[0], datagrams[3]],
  );
});

test('udpSendBatch on a closed fd refuses everything and never throws', (t) => {
  const tx = txBatch([Buffer.alloc(20), Buffer.alloc(30)], 4789);
  t.is(udpSendBatch(-1, tx.buf, tx.offsets, tx.lengths, 2, tx.addrs, tx.ports), 0);
  t.deepEqual([...tx.lengths], [0, 0]);
});

test('udp calls check their arguments', (t) => {
  const buf = Buffer.alloc(100);
  const one = new Uint32Array(1);
  t.throws(() => udpOpen({ bindAddress: 'localhost', port: 0 }), { message: /not an IPv4 address/ });
  t.throws(() => udpOpen({ bindAddress: '127.0.0.1', port: 65_536 }), { message: /above 65535/ });
  t.throws(() => udpOpen({ bindAddress: '127.0.0.1', port: 0, netns: '/nonexistent/netns' }), { message: /open network namespace/ });
  t.throws(() => udpSendBatch(-1, buf, one, one, 2, one, new Uint16Array(2)), { message: /exceeds the descriptor arrays/ });
  t.throws(() => udpSendBatch(-1, buf, one, one, 1, new Uint32Array(0), new Uint16Array(1)), { message: /destination arrays/ });
  t.throws(() => udpSendBatch(-1, buf, one, one, 1, one, new Int32Array(1) as unknown as Uint32Array), { message: /Uint16Array or a Uint32Array/ });
  t.throws(() => udpLocalPort(-1), { message: /getsockname/ });
});

test('a port already bound is refused (no SO_REUSEADDR: a second VXLAN owner must not split the traffic); a failed bind names the address', (t) => {
  const a = udpOpen({ bindAddress: '127.0.0.1', port: 0 });
  const port = udpLocalPort(a);
  t.throws(() => udpOpen({ bindAddress: '127.0.0.1', port }), { message: new RegExp(`bind 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`) });
  // Once closed, the port is free again at once (UDP has no TIME_WAIT): a restarted daemon rebinds it.
  closeFd(a);
  closeFd(udpOpen({ bindAddress: '127.0.0.1', port }));
  t.throws(() => udpOpen({ bindAddress: '192.0.2.1', port: 0 }), { message: /bind 192\.0\.2\.1:0: .*EADDRNOTAVAIL/ });
});
