import test from 'ava';
import { buildArpRequest, buildIcmp4Echo, buildUdp4, filler } from '../../src/packet/builders.js';
import { emitVnet, VNET_HDR_LEN } from '../../src/packet/vnet.js';
import { COUNTER_COLUMNS, readPortCounters } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { Switch } from '../../src/switch/switch.js';
import { BATCH, HEADROOM, RecordingIo } from './helpers/recording-io.js';

const A = '02:76:0a:00:00:02';
const B = '02:76:0a:00:00:03';
const C = '02:76:0a:00:00:04';

function setup(ports = 3, networks: number[] = [1, 1, 1]) {
  const io = new RecordingIo();
  const counters = new Float64Array(16 * COUNTER_COLUMNS);
  const stopped: number[] = [];
  let now = 0;
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: (p) => stopped.push(p) }, () => now);
  for (const n of new Set(networks)) sw.addNetwork(n, `net${n}`);
  // fd = 100 + port id, so a recorded write tells which port it went to.
  for (let p = 0; p < ports; p++) sw.addPort({ portId: p, networkId: networks[p], fd: 100 + p, name: `p${p}` });
  return { io, sw, counters, stopped, tick: (ms: number) => (now += ms) };
}

function receiveOne(env: ReturnType<typeof setup>, port: number, frame: Uint8Array, length?: number) {
  env.io.place(0, frame, length);
  env.sw.receive(port, 1);
  return env.io.take();
}

test('broadcast floods to every other port of the network, then learned unicast goes to one port', (t) => {
  const env = setup();
  const arp = buildArpRequest({ srcMac: A, srcIp: '10.0.0.2', targetIp: '10.0.0.3' });
  const flooded = receiveOne(env, 0, arp);
  t.deepEqual(flooded.map((s) => s.fd).sort(), [101, 102]);

  const reply = buildUdp4({ srcMac: B, dstMac: A, payload: filler(32) });
  const unicast = receiveOne(env, 1, reply);
  t.deepEqual(unicast.map((s) => s.fd), [100], 'A was learned on port 0');

  const toB = buildUdp4({ srcMac: A, dstMac: B, payload: filler(32) });
  t.deepEqual(receiveOne(env, 0, toB).map((s) => s.fd), [101], 'B was learned on port 1; port 2 sees nothing');
  t.is(readPortCounters(env.counters, 2).txFrames, 1, 'port 2 got only the broadcast');
});

test('unknown unicast is flooded', (t) => {
  const env = setup();
  const frame = buildUdp4({ srcMac: A, dstMac: C });
  t.deepEqual(receiveOne(env, 0, frame).map((s) => s.fd).sort(), [101, 102]);
});

test('frames never cross into another network', (t) => {
  const env = setup(4, [1, 1, 2, 2]);
  const flooded = receiveOne(env, 0, buildArpRequest({ srcMac: A }));
  t.deepEqual(flooded.map((s) => s.fd), [101]);
  // B is learned in network 2 only; a frame to B from network 1 floods within network 1.
  receiveOne(env, 2, buildUdp4({ srcMac: B, dstMac: A }));
  const fromNet1 = receiveOne(env, 0, buildUdp4({ srcMac: A, dstMac: B }));
  t.deepEqual(fromNet1.map((s) => s.fd), [101]);
});

test('the vnet header travels with the frame untouched', (t) => {
  const env = setup(2, [1, 1]);
  const frame = buildUdp4({ srcMac: A, dstMac: B, payload: filler(100) });
  env.io.place(0, frame);
  const vnetAt = HEADROOM - VNET_HDR_LEN;
  emitVnet({ flags: 1, gsoType: 0, hdrLen: 42, gsoSize: 0, csumStart: 34, csumOffset: 6 }, env.io.buffer, vnetAt);
  const expected = Buffer.from(env.io.buffer.subarray(vnetAt, HEADROOM + frame.length));
  env.sw.receive(0, 1);
  const [sent] = env.io.take();
  t.deepEqual(sent.wire, expected);
});

test('runts (0-13 bytes), absurd lengths and malformed headers are counted and dropped', (t) => {
  const env = setup(2, [1, 1]);
  const good = buildIcmp4Echo({ srcMac: A, dstMac: B });
  let slot = 0;
  for (let len = 0; len < 14; len++) env.io.place(slot++, good, len);
  env.io.place(slot++, good, 9000); // longer than the MTU allows, and not a GSO frame
  const badIp = Buffer.from(good);
  badIp[14 + 2] = 0xff; // IPv4 total length 65535 in a 98-byte frame
  badIp[14 + 3] = 0xff;
  env.io.place(slot++, badIp);
  const shortIhl = Buffer.from(good);
  shortIhl[14] = 0x44; // IHL 4
  env.io.place(slot++, shortIhl);
  const multicastSource = buildUdp4({ srcMac: '01:00:5e:00:00:01', dstMac: B });
  env.io.place(slot++, multicastSource);
  env.io.place(slot++, good); // one good frame at the end of the batch still goes through
  env.sw.receive(0, slot);
  const c = readPortCounters(env.counters, 0);
  t.is(c.rxFrames, slot);
  t.is(c.drops.runt, 14);
  t.is(c.drops.oversize, 1);
  t.is(c.drops.badIpv4, 2);
  t.is(c.drops.badSrcMac, 1);
  t.is(c.dropsTotal, 18);
  t.is(env.io.take().length, 1, 'only the good frame was forwarded');
});

test('a destination learned on the ingress port is dropped as same-segment', (t) => {
  const env = setup(2, [1, 1]);
  receiveOne(env, 0, buildUdp4({ srcMac: B, dstMac: A }));
  t.is(receiveOne(env, 0, buildUdp4({ srcMac: A, dstMac: B })).length, 0);
  t.is(readPortCounters(env.counters, 0).drops.sameSegment, 1);
});

test('a lone port has nowhere to flood', (t) => {
  const env = setup(1, [1]);
  receiveOne(env, 0, buildArpRequest({ srcMac: A }));
  t.is(readPortCounters(env.counters, 0).drops.noEgress, 1);
});

test('refused writes count as txFailed on the egress port, with exact byte counts', (t) => {
  const env = setup(3);
  env.io.refusingFds.add(102);
  const arp = buildArpRequest({ srcMac: A });
  receiveOne(env, 0, arp);
  const p1 = readPortCounters(env.counters, 1);
  const p2 = readPortCounters(env.counters, 2);
  t.is(p1.txFrames, 1);
  t.is(p1.txBytes, arp.length);
  t.is(p2.txFrames, 0);
  t.is(p2.txBytes, 0);
  t.is(p2.drops.txFailed, 1);
});

test('one transmit call per egress port per batch', (t) => {
  const env = setup(2, [1, 1]);
  receiveOne(env, 1, buildUdp4({ srcMac: B, dstMac: A }));
  env.io.transmitCalls = 0;
  for (let i = 0; i < BATCH; i++) env.io.place(i, buildUdp4({ srcMac: A, dstMac: B, srcPort: 1000 + i }));
  env.sw.receive(0, BATCH);
  t.is(env.io.transmitCalls, 1);
  t.is(env.io.take().length, BATCH);
});

test('a removed port gets nothing and its MACs are forgotten', (t) => {
  const env = setup(3);
  receiveOne(env, 1, buildUdp4({ srcMac: B, dstMac: A }));
  env.sw.removePort(1);
  const sent = receiveOne(env, 0, buildUdp4({ srcMac: A, dstMac: B }));
  t.deepEqual(sent.map((s) => s.fd), [102], 'B is unknown again: flooded to the remaining port');
});

test('a read error stops the port through the event, not an exception', (t) => {
  const env = setup(2, [1, 1]);
  env.sw.receive(0, -5);
  t.deepEqual(env.stopped, [0]);
});

test('bad configuration is refused', (t) => {
  const env = setup(1, [1]);
  t.throws(() => env.sw.addPort({ portId: 0, networkId: 1, fd: 1, name: 'dup' }), { message: /exists already/ });
  t.throws(() => env.sw.addPort({ portId: 1, networkId: 9, fd: 1, name: 'x' }), { message: /does not exist/ });
  t.throws(() => env.sw.addNetwork(1, 'again'), { message: /exists already/ });
  t.throws(() => env.sw.removeNetwork(1), { message: /still has 1 ports/ });
});
