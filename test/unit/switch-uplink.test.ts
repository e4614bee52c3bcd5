/**
 * A physical uplink port (AF_PACKET, transparent mode): the host's own frames
 * are left to the host, LAN unicast that is not the containers' is not flooded
 * into them, broadcasts go both ways, and container MACs are reached from the LAN.
 */
import test from 'ava';
import { buildArpRequest, buildUdp4, filler } from '../../src/packet/builders.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { COUNTER_COLUMNS, DROP_BASE, readPortCounters } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { Switch } from '../../src/switch/switch.js';
import { RecordingIo, type Sent } from './helpers/recording-io.js';
import { switchRig } from './helpers/switch-rig.js';

const UPLINK = 7;
const HOST_MAC = '02:00:00:00:0a:01';
const LAN_HOST = '02:00:00:00:0a:02';
const C0 = '02:76:0a:00:00:02';
const C1 = '02:76:0a:00:00:03';
const C2 = '02:76:0a:00:00:04';

function setup() {
  const io = new RecordingIo();
  const counters = new Float64Array(16 * COUNTER_COLUMNS);
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: () => {} }, () => 1e7, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  sw.addNetwork(1, 'lan');
  sw.addPort({ portId: 0, networkId: 1, fd: 100, name: 'c0' });
  sw.addPort({ portId: 1, networkId: 1, fd: 101, name: 'c1' });
  // A container whose device MAC the control plane gave: reachable from the LAN before it speaks, and after its entry ages out.
  sw.addPort({ portId: 2, networkId: 1, fd: 102, name: 'c2', mac: C2, ip: '192.168.77.12' });
  sw.addPort({ portId: UPLINK, networkId: 1, fd: 100 + UPLINK, name: 'eth1', uplinkMac: HOST_MAC });
  const send = (port: number, frame: Buffer): number[] => {
    io.place(0, frame);
    sw.receive(port, 1);
    return io.take().map((s: Sent) => s.fd - 100).sort((a, b) => a - b);
  };
  return { sw, counters, send };
}

test('a physical uplink: host frames left alone, LAN unicast not flooded to containers, broadcasts both ways, containers reached by MAC', (t) => {
  const { counters, send } = setup();
  const udp = (src: string, dst: string) => buildUdp4({ srcMac: src, dstMac: dst, srcIp: '192.168.77.2', dstIp: '192.168.77.3', payload: filler(16) });

  t.deepEqual(send(UPLINK, udp(LAN_HOST, HOST_MAC)), [], "the host's own frame goes nowhere in the switch");
  t.is(readPortCounters(counters, UPLINK).rxFrames, 0, "and is not counted: it is the host's");

  t.deepEqual(send(UPLINK, udp(LAN_HOST, '02:00:00:00:0a:99')), [], 'unicast between LAN hosts is not flooded into the containers');
  t.is(counters[UPLINK * COUNTER_COLUMNS + DROP_BASE + DropReason.uplinkNotLocal], 1);

  t.deepEqual(send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: '192.168.77.1', targetIp: '192.168.77.10' })), [0, 1, 2], 'a LAN broadcast reaches every container');
  t.deepEqual(send(0, buildArpRequest({ srcMac: C0, srcIp: '192.168.77.10', targetIp: '192.168.77.1' })), [1, 2, UPLINK], "a container's broadcast reaches the LAN and the other containers");
  t.deepEqual(send(UPLINK, udp(LAN_HOST, C2)), [2], 'a container the LAN has never heard from is reached by the MAC its device was given');
  t.deepEqual(send(UPLINK, udp(LAN_HOST, C0)), [0], 'the LAN reaches a learned container by its MAC');
  t.deepEqual(send(0, udp(C0, LAN_HOST)), [UPLINK], 'and it answers through the uplink, the LAN host learned there');
  t.deepEqual(send(UPLINK, udp(LAN_HOST, C1)), [], 'a port whose device MAC vsw was not given is not known from the LAN side before it speaks');
  send(1, buildArpRequest({ srcMac: C1, srcIp: '192.168.77.11', targetIp: '192.168.77.1' }));
  t.deepEqual(send(UPLINK, udp(LAN_HOST, C1)), [1], 'once it has, it is');
});

test('a network with DHCP addresses: the LAN server\'s replies go to the control plane, not to the containers; other LAN traffic is switched', (t) => {
  const replies: { networkId: number; frame: Uint8Array; partial: boolean }[] = [];
  const { sw, io, counters, send: sendFrom } = switchRig({ dhcpReply: (networkId, frame, partial) => replies.push({ networkId, frame, partial }) });
  sw.addNetwork(3, 'lan', { dhcp: true });
  sw.addPort({ portId: 0, networkId: 3, fd: 100, name: 'c0', mac: C0 });
  sw.addPort({ portId: UPLINK, networkId: 3, fd: 100 + UPLINK, name: 'eth1', uplinkMac: HOST_MAC });
  const send = (frame: Buffer): number[] => sendFrom(UPLINK, frame).map((s) => s.fd - 100);
  const offer = buildUdp4({ srcMac: LAN_HOST, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: '192.168.77.1', dstIp: '255.255.255.255', srcPort: 67, dstPort: 68, payload: filler(300) });
  for (let i = 0; i < 2; i++) t.deepEqual(send(offer), [], `reply ${i + 1} reaches no container`);
  t.is(replies.length, 2, 'both went to the control plane');
  t.is(replies[0].networkId, 3);
  t.deepEqual(Buffer.from(replies[0].frame), offer, 'a whole copy of the frame');
  t.not(replies[0].frame.buffer, io.buffer.buffer, 'in a buffer of its own, not the rx buffer');
  t.is(counters[UPLINK * COUNTER_COLUMNS + DROP_BASE + DropReason.dhcpReplyTaken], 2);
  const other = buildUdp4({ srcMac: LAN_HOST, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: '192.168.77.1', dstIp: '255.255.255.255', srcPort: 67, dstPort: 5353, payload: filler(20) });
  t.deepEqual(send(other), [0], 'other broadcasts from the LAN still reach the containers');
  t.is(sw.stages(3)[0].counters.repliesHanded, 2);
});

/**
 * The uplink and fabric ports' sockets take a batch in one sendmmsg
 * (FrameIo.transmitPackets): every way a frame leaves by one (as it is, tagged
 * for a VLAN, with the uplink's MAC, hairpinned by a fabric host) is one such
 * call per batch, and no TAP is written that way.
 */
test('what leaves by an uplink or a fabric port is one packet-socket batch per batch; TAPs keep their writes', (t) => {
  const A = { mac: '02:76:0a:00:00:20', ip: '192.168.77.20' };
  const B = { mac: '02:76:0a:00:00:21', ip: '192.168.77.21' };
  const broadcast = (src: { mac: string; ip: string }, k: number) => buildUdp4({ srcMac: src.mac, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: src.ip, dstIp: '192.168.77.255', dstPort: 9000 + k, payload: filler(40, k) });
  const batch = (rig: ReturnType<typeof switchRig>, port: number, frames: Buffer[]): Sent[] => {
    frames.forEach((f, slot) => rig.io.place(slot, f));
    rig.io.transmitCalls = 0;
    rig.io.packetTransmitCalls = 0;
    rig.io.packetFds.clear();
    rig.sw.receive(port, frames.length);
    return rig.io.take();
  };
  const to = (sent: Sent[], fd: number): number => sent.filter((s) => s.fd === fd).length;
  const frames = (src: { mac: string; ip: string }) => [0, 1, 2, 3, 4].map((k) => broadcast(src, k));

  for (const [mode, spec, vlan] of [
    ['transparent', {}, 0],
    ['transparent on VLAN 5', {}, 5],
    ['l2bridge', { l2bridge: true }, 0],
  ] as const) {
    const rig = switchRig();
    rig.sw.addNetwork(1, 'n', spec);
    rig.sw.addPort({ portId: 0, networkId: 1, fd: 100, name: 'a', ...A });
    rig.sw.addPort({ portId: 1, networkId: 1, fd: 101, name: 'b', ...B });
    rig.sw.addPort({ portId: UPLINK, networkId: 1, fd: 107, name: 'eth1', uplinkMac: HOST_MAC, ...(vlan === 0 ? {} : { vlan }) });
    const out = batch(rig, 0, frames(A));
    t.is(to(out, 107), 5, `${mode}: the five frames leave by the uplink`);
    t.is(to(out, 101), 5, `${mode}: and reach the other container`);
    t.is(rig.io.packetTransmitCalls, 1, `${mode}: in one packet-socket batch`);
    t.deepEqual([...rig.io.packetFds], [107], `${mode}: on the uplink's socket only`);
    t.is(rig.io.transmitCalls, 1, `${mode}: the container's TAP is written as a TAP`);
    t.is(readPortCounters(rig.counters, UPLINK).txFrames, 5, `${mode}: counted on the uplink`);
  }

  const rig = switchRig();
  rig.sw.addNetwork(2, 'fab', { l2bridge: true });
  rig.sw.addPort({ portId: UPLINK, networkId: 2, fd: 107, name: 'eth1', uplinkMac: HOST_MAC });
  rig.sw.addPort({ portId: 8, networkId: 2, fd: 108, name: 'eth2', uplinkMac: '02:00:00:00:0a:03', fabric: true });
  rig.sw.addPort({ portId: 0, networkId: 2, fd: -1, name: 'fabric/a', fabricOf: 8, ip: A.ip, mac: LAN_HOST });
  rig.sw.addPort({ portId: 1, networkId: 2, fd: -1, name: 'fabric/b', fabricOf: 8, ip: B.ip, mac: LAN_HOST });
  const hairpin = [0, 1, 2, 3, 4].map((k) => buildUdp4({ srcMac: LAN_HOST, dstMac: '02:00:00:00:0a:03', srcIp: A.ip, dstIp: B.ip, dstPort: 9000 + k, payload: filler(40, k) }));
  const out = batch(rig, 8, hairpin);
  t.is(to(out, 108), 5, 'fabric host: five frames from A to B hairpin through the fabric port');
  t.is(rig.io.packetTransmitCalls, 1, 'fabric host: in one packet-socket batch');
  t.deepEqual([...rig.io.packetFds], [108]);
  t.is(rig.io.transmitCalls, 0);
});
