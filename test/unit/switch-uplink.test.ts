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
