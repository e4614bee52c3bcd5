/**
 * An l2bridge network's switch: one MAC (the uplink's) on the wire. The LAN
 * reaches containers by address, vsw answers ARP for them with the uplink's
 * MAC, nothing a container sends leaves with its MAC, the host's own traffic
 * stays the host's, and containers of the host reach each other with their
 * own MACs.
 */
import test from 'ava';
import { ArpField } from '../../src/packet/arp.js';
import { buildArpReply, buildArpRequest, buildEthernet, buildUdp4, buildUdp6, filler } from '../../src/packet/builders.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { readPortCounters } from '../../src/switch/counters.js';
import { DIR_OUT } from '../../src/vfp/compile.js';
import type { Sent } from './helpers/recording-io.js';
import { frameOf, switchRig } from './helpers/switch-rig.js';

const UPLINK = 7;
const UPLINK_MAC = '02:00:00:00:0b:01';
const LAN_HOST = '02:00:00:00:0b:02';
const LAN_IP = '192.168.78.2';
const HOST_IP = '192.168.78.3';
const C0 = { mac: '02:76:0b:00:00:10', ip: '192.168.78.10' };
const C1 = { mac: '02:76:0b:00:00:11', ip: '192.168.78.11' };
const ETH = 14;

function setup() {
  const rig = switchRig();
  rig.sw.addNetwork(1, 'l2b', { l2bridge: true });
  rig.sw.addPort({ portId: 0, networkId: 1, fd: 100, name: 'c0', ...C0 });
  rig.sw.addPort({ portId: 1, networkId: 1, fd: 101, name: 'c1', ...C1 });
  rig.sw.addPort({ portId: UPLINK, networkId: 1, fd: 100 + UPLINK, name: 'eth1', uplinkMac: UPLINK_MAC });
  return rig;
}

const srcMac = (s: Sent): string => formatMac(frameOf(s), 6);
const dstMac = (s: Sent): string => formatMac(frameOf(s), 0);
const ports = (sent: Sent[]): number[] => sent.map((s) => s.fd - 100);

test('the LAN reaches containers by address at the uplink MAC, and their answers leave with it', (t) => {
  const { send, counters } = setup();
  const toC0 = buildUdp4({ srcMac: LAN_HOST, dstMac: UPLINK_MAC, srcIp: LAN_IP, dstIp: C0.ip, payload: filler(32) });
  for (let i = 0; i < 3; i++) {
    const out = send(UPLINK, toC0);
    t.deepEqual(ports(out), [0], `frame ${i} goes to the container with that address (flow cache ${i === 0 ? 'miss' : 'hit'})`);
    t.is(dstMac(out[0]), C0.mac, "with the container's own MAC written in");
  }
  for (let i = 0; i < 3; i++) {
    const out = send(0, buildUdp4({ srcMac: C0.mac, dstMac: LAN_HOST, srcIp: C0.ip, dstIp: LAN_IP, payload: filler(32) }));
    t.deepEqual(ports(out), [UPLINK], 'the answer goes to the LAN host, learned on the uplink');
    t.is(srcMac(out[0]), UPLINK_MAC, "from the uplink's MAC, not the container's");
  }
  t.is(readPortCounters(counters, UPLINK).rxFrames, 3);
});

test("vsw answers the LAN's ARP for container addresses with the uplink MAC, and nothing else of the LAN reaches the containers", (t) => {
  const { send, drops, counters } = setup();
  const answer = send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: LAN_IP, targetIp: C1.ip }));
  t.deepEqual(ports(answer), [UPLINK], 'answered back out of the uplink');
  const arp = frameOf(answer[0]);
  t.is(formatMac(arp, ETH + ArpField.SHA), UPLINK_MAC, "the container's address is at the uplink's MAC");
  t.is(dstMac(answer[0]), LAN_HOST);

  t.deepEqual(send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: LAN_IP, targetIp: HOST_IP })), [], "ARP for the host's address is the host's to answer");
  t.deepEqual(send(UPLINK, buildUdp4({ srcMac: LAN_HOST, dstMac: UPLINK_MAC, srcIp: LAN_IP, dstIp: HOST_IP, payload: filler(8) })), [], "the host's own traffic stays out of the switch");
  t.is(readPortCounters(counters, UPLINK).rxFrames, 1, 'and is not counted by it: only the container ARP was');
  t.deepEqual(send(UPLINK, buildUdp4({ srcMac: LAN_HOST, dstMac: '02:00:00:00:0b:99', srcIp: LAN_IP, dstIp: C0.ip, payload: filler(8) })), [], 'unicast to another MAC is the LAN\'s');
  t.deepEqual(ports(send(UPLINK, buildUdp4({ srcMac: LAN_HOST, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: LAN_IP, dstIp: '255.255.255.255', payload: filler(8) }))), [0, 1], 'an IPv4 broadcast reaches every container');
  const ipv6 = buildUdp6({ srcMac: LAN_HOST, dstMac: '33:33:00:00:00:01', srcIp: 'fe80::1', dstIp: 'ff02::1', payload: filler(8) });
  t.deepEqual(send(UPLINK, ipv6), [], 'IPv6 from the LAN does not');
  t.is(readPortCounters(counters, UPLINK).rxFrames, 2, 'the LAN traffic that is not the containers\' was not even counted');
  t.is(drops(UPLINK, DropReason.uplinkNotLocal) + drops(UPLINK, DropReason.l2bridgeNotIpv4), 0);
});

test("a container's ARP leaves with the uplink MAC as sender, the other containers get it unchanged, and the LAN's reply comes back to it", (t) => {
  const { send, io } = setup();
  const out = send(0, buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: LAN_IP }));
  t.deepEqual(ports(out), [1, UPLINK], 'a broadcast reaches the other container and the LAN');
  const local = frameOf(out[0]);
  const wire = frameOf(out[1]);
  t.is(formatMac(local, 6), C0.mac, 'the other container sees the sender as it is');
  t.is(formatMac(local, ETH + ArpField.SHA), C0.mac);
  t.is(formatMac(wire, 6), UPLINK_MAC, 'the LAN sees the uplink MAC as the source');
  t.is(formatMac(wire, ETH + ArpField.SHA), UPLINK_MAC, 'and as the sender hardware address');
  t.is(formatMac(io.buffer, 128 + 6), C0.mac, 'the rx buffer itself was not rewritten (the uplink got a copy)');

  const reply = send(UPLINK, buildArpReply({ srcMac: LAN_HOST, srcIp: LAN_IP, dstMac: UPLINK_MAC, dstIp: C0.ip }));
  t.deepEqual(ports(reply), [0], "the LAN's reply goes to the container that asked");
  t.is(dstMac(reply[0]), C0.mac);
  t.is(formatMac(frameOf(reply[0]), ETH + ArpField.THA), C0.mac, 'with its own MAC as the target hardware address');
});

test('containers of the host reach each other locally with their own MACs; IPv6 never leaves by the uplink', (t) => {
  const { send, drops } = setup();
  send(1, buildArpRequest({ srcMac: C1.mac, srcIp: C1.ip, targetIp: C0.ip }));
  const out = send(0, buildUdp4({ srcMac: C0.mac, dstMac: C1.mac, srcIp: C0.ip, dstIp: C1.ip, payload: filler(8) }));
  t.deepEqual(ports(out), [1]);
  t.is(srcMac(out[0]), C0.mac);
  const ns = buildUdp6({ srcMac: C0.mac, dstMac: '33:33:00:00:00:01', srcIp: 'fe80::10', dstIp: 'ff02::1', payload: filler(8) });
  t.deepEqual(ports(send(0, ns)), [1], 'IPv6 multicast reaches the other container, not the LAN');
  t.is(drops(UPLINK, DropReason.l2bridgeNotIpv4), 1);
  const other = buildEthernet({ srcMac: C0.mac, dstMac: 'ff:ff:ff:ff:ff:ff', etherType: 0x88b5, payload: filler(46) });
  t.deepEqual(ports(send(0, other)), [1]);
  t.is(drops(UPLINK, DropReason.l2bridgeNotIpv4), 2);
});

test('trace names the container a LAN frame is delivered to, and that the uplink refuses IPv6', (t) => {
  const { sw } = setup();
  const tr = sw.trace(UPLINK, DIR_OUT, buildUdp4({ srcMac: LAN_HOST, dstMac: UPLINK_MAC, srcIp: LAN_IP, dstIp: C1.ip, payload: filler(8) }));
  t.is(tr.egressPort, 1);
  t.truthy(tr.steps.find((s) => s.action === 'l2bridge'));
  t.deepEqual(tr.rewrite?.dstMac, C1.mac);
  const v6 = sw.trace(0, DIR_OUT, buildUdp6({ srcMac: C0.mac, dstMac: LAN_HOST, srcIp: 'fe80::10', dstIp: 'fe80::2', payload: filler(8) }));
  t.is(v6.verdict, 'allow', 'flooded: the LAN host is not learned');
  t.false((v6.floodPorts ?? []).includes(UPLINK), 'but not to the uplink');
});

test('a removed container is no longer reached by its address', (t) => {
  const { sw, send, drops } = setup();
  sw.removePort(1);
  t.deepEqual(send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: LAN_IP, targetIp: C1.ip })), []);
  t.is(drops(UPLINK, DropReason.uplinkNotLocal), 0, "the uplink's driver no longer lets a frame for it in: it is no longer the containers'");
  t.deepEqual(send(UPLINK, buildUdp4({ srcMac: LAN_HOST, dstMac: UPLINK_MAC, srcIp: LAN_IP, dstIp: C1.ip, payload: filler(8) })), [], 'nor IPv4 for it');
  t.is(sw.stages(1).find((s) => s.name === 'l2bridge')!.counters.containers, 1);
});
