/**
 * The connections and NAT translations a stopping daemon hands to the next
 * one (src/switch/snapshot.ts), on synthetic frames: a second switch, with
 * its own hash seeds and an empty pool, continues a TCP connection through
 * the NAT on the same external port, in both directions, as if nothing
 * happened; and what should not come back does not.
 */
import test from 'ava';
import { buildArpRequest, buildTcp4, buildUdp4, filler } from '../../src/packet/builders.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { VNET_HDR_LEN } from '../../src/packet/vnet.js';
import { COUNTER_COLUMNS, DROP_BASE, RX_FRAMES } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { exportSwitchState, importSwitchState, type SwitchSnapshot } from '../../src/switch/snapshot.js';
import { Switch } from '../../src/switch/switch.js';
import { Conntrack, CtState, CT_EXPORT_WORDS, Dir, TcpFlag } from '../../src/vfp/conntrack.js';
import { KEY_WORDS, KeyWord } from '../../src/vfp/key.js';
import { RecordingIo, type Sent } from './helpers/recording-io.js';

const START_MS = 1e8;
const GW_MAC = '02:76:ac:1a:00:01';
const EXT_MAC = '02:76:64:7f:00:06';
const HOST_MAC = '02:76:64:7f:00:05';
const EXT_IP = '100.127.0.6';
const REMOTE = '198.18.0.9';
const HOST_PORT = 9;
const macOf = (p: number) => `02:76:ac:1a:00:${(p + 2).toString(16).padStart(2, '0')}`;
const ipOf = (p: number) => `172.26.0.${p + 2}`;

/** A nat network 172.26.0.0/24 with containers on ports 0 and 1 and its host TAP on port 9; one clock shared by the test. */
function makeSwitch(clock: { now: number }, attach = true) {
  const io = new RecordingIo();
  const counters = new Float64Array(16 * COUNTER_COLUMNS);
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: () => {} }, () => clock.now, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  sw.addNetwork(1, 'mynat', { nat: {
    subnet: '172.26.0.0/24',
    gatewayIp: '172.26.0.1',
    gatewayMac: GW_MAC,
    externalIp: EXT_IP,
    externalMac: EXT_MAC,
    hostMac: HOST_MAC,
    portFirst: 1024,
    portLast: 65535,
  } });
  const attachPorts = (): void => {
    for (const p of [0, 1]) sw.addPort({ portId: p, networkId: 1, fd: 100 + p, name: `c${p}`, ip: ipOf(p), mac: macOf(p) });
    sw.addPort({ portId: HOST_PORT, networkId: 1, fd: 100 + HOST_PORT, name: 'host', external: true });
  };
  if (attach) attachPorts();
  return {
    sw,
    attachPorts,
    send(port: number, frame: Uint8Array): Sent[] {
      io.place(0, frame);
      sw.receive(port, 1);
      return io.take();
    },
    drops: (port: number, reason: number) => counters[port * COUNTER_COLUMNS + DROP_BASE + reason],
    rxFrames: (port: number) => counters[port * COUNTER_COLUMNS + RX_FRAMES],
  };
}

const out = (p: number, sport: number, flags: number, payload = filler(16)) =>
  buildTcp4({ srcMac: macOf(p), dstMac: GW_MAC, srcIp: ipOf(p), dstIp: REMOTE, srcPort: sport, dstPort: 443, flags, payload });
const back = (dport: number, flags: number, payload = filler(16)) =>
  buildTcp4({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: REMOTE, dstIp: EXT_IP, srcPort: 443, dstPort: dport, flags, payload });
const frame = (s: Sent) => s.wire.subarray(VNET_HDR_LEN);

/** Opens a TCP connection from container 0 through the NAT; returns its external port. */
function connect(env: ReturnType<typeof makeSwitch>, sport: number): number {
  const [syn] = env.send(0, out(0, sport, TcpFlags.SYN));
  const natPort = frame(syn).readUInt16BE(34);
  env.send(HOST_PORT, back(natPort, TcpFlags.SYN | TcpFlags.ACK));
  env.send(0, out(0, sport, TcpFlags.ACK));
  return natPort;
}

/** The old daemon: two connections through the NAT (the one that matters got the second port). */
function oldDaemon(clock: { now: number }): { snapshot: SwitchSnapshot; kept: number } {
  const a = makeSwitch(clock);
  connect(a, 41000);
  const kept = connect(a, 41001);
  return { snapshot: exportSwitchState(a.sw, clock.now), kept };
}

test('a new switch continues a NAT-ed TCP connection on the same external port, both ways, from the snapshot', (t) => {
  const clock = { now: START_MS };
  const { snapshot, kept } = oldDaemon(clock);
  t.is(snapshot.conntrack.length / CT_EXPORT_WORDS, 4, 'two connections, each tracked at the container port and at the host port');
  t.is(snapshot.nat.length, 1);

  clock.now += 1500;
  const b = makeSwitch(clock, false);
  const report = importSwitchState(b.sw, snapshot, clock.now, 1500, [0, 1, HOST_PORT]);
  t.deepEqual(report, { connections: 4, connectionsSkipped: 0, translations: 2, translationsSkipped: 0 });
  b.attachPorts();

  const [o] = b.send(0, out(0, 41001, TcpFlags.ACK | 0x08, filler(100, 1)));
  t.is(o?.fd, 100 + HOST_PORT, 'the mid-stream segment leaves through the host TAP');
  t.is(frame(o).readUInt16BE(34), kept, 'on the external port the connection had before the restart');
  const [r] = b.send(HOST_PORT, back(kept, TcpFlags.ACK, filler(50, 2)));
  t.is(r?.fd, 100, 'the remote end\'s answer reaches the container');
  t.is(frame(r).readUInt16BE(36), 41001);
  const [state] = b.sw.natState(clock.now);
  t.is(state.counters.created, 0, 'no new translation was made');
  t.like(state.translations.find((x) => x.external === `${EXT_IP}:${kept}`), { inside: `${ipOf(0)}:41001`, state: 'ESTABLISHED' });
});

test('without the snapshot the same segment takes a new port and the answer finds nothing (what the snapshot prevents)', (t) => {
  const clock = { now: START_MS };
  const { kept } = oldDaemon(clock);
  const b = makeSwitch(clock);
  const [o] = b.send(0, out(0, 41001, TcpFlags.ACK));
  t.not(frame(o).readUInt16BE(34), kept, 'a fresh pool hands out another port');
  t.deepEqual(b.send(HOST_PORT, back(kept, TcpFlags.ACK)), []);
  t.is(b.drops(HOST_PORT, DropReason.natNoMapping), 1);
});

test('connections that timed out while the daemon was down, and ports that are gone, are left out with their translations', (t) => {
  const clock = { now: START_MS };
  const a = makeSwitch(clock);
  const udpPort = frame(a.send(0, buildUdp4({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: REMOTE, srcPort: 5000, dstPort: 53, payload: filler(8) }))[0]).readUInt16BE(34);
  t.true(udpPort >= 1024);
  connect(a, 42000);
  const snapshot = exportSwitchState(a.sw, clock.now);

  // 31 s down: the unreplied UDP flow (30 s) is dead, the TCP one (2 h) is not.
  const b = makeSwitch(clock, false);
  const r1 = importSwitchState(b.sw, snapshot, clock.now, 31_000, [0, 1, HOST_PORT]);
  t.is(r1.connections, 2);
  t.is(r1.connectionsSkipped, 2);
  t.is(r1.translations, 1);
  t.is(r1.translationsSkipped, 1);

  // The container's port is not coming back: nothing of it, and no translation bound to nothing.
  const c = makeSwitch(clock, false);
  const r2 = importSwitchState(c.sw, snapshot, clock.now, 0, [1, HOST_PORT]);
  t.is(r2.translations, 0);
  t.is(r2.connections, 2, 'the host port\'s entries stay');
});

test('an injected gratuitous ARP is switched as the port\'s own frame: flooded to its network, learned, not counted as received', (t) => {
  const clock = { now: START_MS };
  const env = makeSwitch(clock);
  const io = (env.sw as unknown as { io: RecordingIo }).io;
  const garp = buildArpRequest({ srcMac: macOf(0), srcIp: ipOf(0), targetIp: ipOf(0) });
  t.true(env.sw.inject(0, garp));
  const sent = io.take();
  t.deepEqual(sent.map((x) => x.fd), [101], 'to the other container, never to the host TAP');
  t.deepEqual([...frame(sent[0])], [...garp]);
  t.is(env.sw.floodSize(0), 1);
  t.is(env.rxFrames(0), 0, 'the container did not send it');
  t.is(env.sw.macTable.lookup(1, 0x0276, 0xac1a0002, clock.now), 0, 'the MAC table learned the port');
  t.false(env.sw.inject(HOST_PORT, garp), 'not from the host TAP');
  t.false(env.sw.inject(7, garp), 'not from a port that does not exist');
});

/** A flow key as src/vfp/key.ts lays it out, for the conntrack table alone. */
function key(sport: number, dport: number): Uint32Array {
  const k = new Uint32Array(KEY_WORDS);
  k[KeyWord.ETH_VLAN] = 0x0800 << 16;
  k[KeyWord.PROTO] = 6 << 24;
  k[KeyWord.PORTS] = ((sport << 16) | dport) >>> 0;
  k[KeyWord.SRC_IP] = 0x0a000002;
  k[KeyWord.DST_IP] = 0xc0000207;
  return k;
}

test('conntrack export and import keep state, origin, aux word and age, and hold the bounds of the new table', (t) => {
  const a = new Conntrack({ capacity: 64 });
  const s1 = a.create(3, key(1000, 80), Dir.OUT, TcpFlag.SYN, START_MS);
  a.update(s1, Dir.IN, TcpFlag.SYN | TcpFlag.ACK, START_MS + 10);
  a.update(s1, Dir.OUT, TcpFlag.ACK, START_MS + 20);
  a.setAux(s1, 77);
  const s2 = a.create(4, key(1001, 80), Dir.IN, TcpFlag.SYN, START_MS + 20);
  const { records, slots } = a.exportLive(START_MS + 5020);
  t.deepEqual([...slots].sort(), [s1, s2].sort());

  const b = new Conntrack({ capacity: 64 });
  const now = 3 * START_MS;
  const at = b.importLive(records, now, 1000, () => true);
  t.true(at.every((slot) => slot >= 0));
  const n1 = b.lookup(3, key(1000, 80), Dir.OUT);
  t.true(n1 >= 0, 'found by its key under the new table\'s seed');
  t.is(b.state(n1), CtState.ESTABLISHED);
  t.is(b.origin(n1), Dir.OUT);
  t.is(b.aux(n1), 77);
  t.is(b.idleSeconds(n1, now), 6, '5 s idle at export plus 1 s down');
  const n2 = b.lookup(4, key(1001, 80), Dir.IN);
  t.is(b.origin(n2), Dir.IN);
  t.is(b.state(n2), CtState.SYN_SENT);
  t.is(b.size, 2);

  const small = new Conntrack({ capacity: 1 });
  const partial = small.importLive(records, now, 0, () => true);
  t.is([...partial].filter((s) => s >= 0).length, 1, 'a full table takes what fits');
  t.is(new Conntrack({ capacity: 64 }).importLive(records, now, 0, (p) => p === 4).filter((s) => s >= 0).length, 1, 'only accepted ports');
});
