/**
 * Networks on a VLAN of an uplink (--vlan): what the uplink sends gets the
 * network's 802.1Q tag, in place when the frame goes to the uplink alone and
 * on a copy when it is flooded (the containers see it untagged), with the
 * vnet header's offsets moved by the tag; l2bridge's MAC rewrite and the tag
 * together.
 */
import test from 'ava';
import { ArpField } from '../../src/packet/arp.js';
import { buildArpRequest, buildUdp4, filler } from '../../src/packet/builders.js';
import { read16, read16le, write16le } from '../../src/packet/bytes.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { VnetField, VnetFlags } from '../../src/packet/vnet.js';
import { readPortCounters } from '../../src/switch/counters.js';
import type { Sent } from './helpers/recording-io.js';
import { frameOf, switchRig } from './helpers/switch-rig.js';

const UPLINK = 7;
const UPLINK_MAC = '02:00:00:00:0c:01';
const LAN_HOST = '02:00:00:00:0c:02';
const C0 = { mac: '02:76:0c:00:00:10', ip: '192.168.79.10' };
const C1 = { mac: '02:76:0c:00:00:11', ip: '192.168.79.11' };
const VLAN = 100;

function setup(l2bridge: boolean) {
  const rig = switchRig();
  rig.sw.addNetwork(1, 'v100', { l2bridge });
  rig.sw.addPort({ portId: 0, networkId: 1, fd: 100, name: 'c0', ...C0 });
  rig.sw.addPort({ portId: 1, networkId: 1, fd: 101, name: 'c1', ...C1 });
  rig.sw.addPort({ portId: UPLINK, networkId: 1, fd: 100 + UPLINK, name: 'eth1', uplinkMac: UPLINK_MAC, vlan: VLAN });
  return rig;
}

const ports = (sent: Sent[]): number[] => sent.map((s) => s.fd - 100);

test('transparent on a VLAN: a frame to the uplink alone leaves tagged, its partial checksum offset moved with the tag', (t) => {
  const { send, io, counters } = setup(false);
  send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: '192.168.79.2', targetIp: C0.ip }));
  const udp = buildUdp4({ srcMac: C0.mac, dstMac: LAN_HOST, srcIp: C0.ip, dstIp: '192.168.79.2', payload: filler(40) });
  const out = send(0, udp, (vnetAt) => {
    io.buffer[vnetAt + VnetField.FLAGS] = VnetFlags.NEEDS_CSUM;
    write16le(io.buffer, vnetAt + VnetField.CSUM_START, 34);
    write16le(io.buffer, vnetAt + VnetField.CSUM_OFFSET, 6);
  });
  t.deepEqual(ports(out), [UPLINK]);
  const wire = frameOf(out[0]);
  t.is(wire.length, udp.length + 4, 'four bytes longer');
  t.is(formatMac(wire, 0), LAN_HOST);
  t.is(formatMac(wire, 6), C0.mac, 'transparent: the container keeps its MAC');
  t.is(read16(wire, 12), 0x8100, 'an 802.1Q tag after the MACs');
  t.is(read16(wire, 14) & 0x0fff, VLAN);
  t.deepEqual(wire.subarray(16), udp.subarray(12), 'and the frame as it was after them');
  t.is(read16le(out[0].wire, VnetField.CSUM_START), 38, 'csum_start counts the tag');
  t.is(read16le(out[0].wire, VnetField.CSUM_OFFSET), 6);
  t.is(readPortCounters(counters, UPLINK).txBytes, udp.length + 4);
});

test('transparent on a VLAN: a flood reaches the containers untagged and the LAN tagged', (t) => {
  const { send } = setup(false);
  const arp = buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: '192.168.79.2' });
  const out = send(0, arp);
  t.deepEqual(ports(out), [1, UPLINK]);
  t.deepEqual(frameOf(out[0]), arp, 'the other container gets the frame as sent');
  const wire = frameOf(out[1]);
  t.is(read16(wire, 12), 0x8100);
  t.is(read16(wire, 14), VLAN);
  t.deepEqual(wire.subarray(16), arp.subarray(12));
});

test('l2bridge on a VLAN: the uplink MAC and the tag together, ARP sender included', (t) => {
  const { send } = setup(true);
  const arp = buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: '192.168.79.2' });
  const wire = frameOf(send(0, arp).find((s) => s.fd === 100 + UPLINK)!);
  t.is(formatMac(wire, 6), UPLINK_MAC);
  t.is(read16(wire, 12), 0x8100);
  t.is(read16(wire, 16), 0x0806);
  t.is(formatMac(wire, 16 + 2 + ArpField.SHA), UPLINK_MAC, 'the ARP sender, past the tag');
  const answer = send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: '192.168.79.2', targetIp: C1.ip }));
  t.deepEqual(ports(answer), [UPLINK], "vsw's ARP answer from the uplink...");
  t.is(read16(frameOf(answer[0]), 14), VLAN, '...is tagged too');
});
