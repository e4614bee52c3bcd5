/**
 * l2tunnel, both ends: the container host sends every container frame to the
 * fabric host, even one for its own other container; the fabric host takes
 * them in per container address (each with its own policy), hairpins those
 * for another address behind the same port, answers ARP for them, and
 * reaches the LAN for the rest.
 */
import test from 'ava';
import { ArpField } from '../../src/packet/arp.js';
import { buildArpRequest, buildUdp4, filler } from '../../src/packet/builders.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { readPortCounters } from '../../src/switch/counters.js';
import { defaultPortPolicy } from '../../src/vfp/policy.js';
import type { Sent } from './helpers/recording-io.js';
import { frameOf, switchRig } from './helpers/switch-rig.js';

const UPLINK = 7;
const FABRIC = 8;
const HOST_MAC = '02:00:00:00:0d:01'; // the container host's uplink
const FABRIC_MAC = '02:00:00:00:0d:02'; // the fabric host's port toward it
const LAN_MAC = '02:00:00:00:0d:03'; // the fabric host's LAN uplink
const LAN_HOST = '02:00:00:00:0d:04';
const A = { mac: '02:76:0d:00:00:10', ip: '192.168.80.10' };
const B = { mac: '02:76:0d:00:00:11', ip: '192.168.80.11' };

const fds = (sent: Sent[]): number[] => sent.map((s) => s.fd);

test('container host: every container frame leaves by the uplink with its MAC, also one for the other local container; replies come back by address', (t) => {
  const { sw, send } = switchRig();
  sw.addNetwork(1, 'tun', { l2tunnel: true });
  sw.addPort({ portId: 0, networkId: 1, fd: 100, name: 'a', ...A });
  sw.addPort({ portId: 1, networkId: 1, fd: 101, name: 'b', ...B });
  sw.addPort({ portId: UPLINK, networkId: 1, fd: 107, name: 'eth1', uplinkMac: HOST_MAC });
  send(1, buildArpRequest({ srcMac: B.mac, srcIp: B.ip, targetIp: A.ip }));
  const arp = send(0, buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip }));
  t.deepEqual(fds(arp), [107], "A's ARP for B goes only to the fabric host, not to B");
  t.is(formatMac(frameOf(arp[0]), ETH_SHA), HOST_MAC, "with the host's MAC as sender");
  for (let i = 0; i < 2; i++) {
    const out = send(0, buildUdp4({ srcMac: A.mac, dstMac: FABRIC_MAC, srcIp: A.ip, dstIp: B.ip, payload: filler(20) }));
    t.deepEqual(fds(out), [107], `A -> B goes out of the uplink (${i === 0 ? 'slow path' : 'flow cache'})`);
    t.is(formatMac(frameOf(out[0]), 6), HOST_MAC);
  }
  const back = send(UPLINK, buildUdp4({ srcMac: FABRIC_MAC, dstMac: HOST_MAC, srcIp: A.ip, dstIp: B.ip, payload: filler(20) }));
  t.deepEqual(fds(back), [101], 'and comes back from the fabric host to B, by address');
  t.is(formatMac(frameOf(back[0]), 0), B.mac);
  t.is(sw.stages(1)[0].counters.tunneled, 3);
  t.deepEqual(send(UPLINK, buildArpRequest({ srcMac: '02:00:00:00:0d:77', srcIp: '192.168.80.30', targetIp: A.ip })), [], "ARP for a container is not answered here: the fabric host answers for it (a neighbour must not reach A past the fabric's policy)");
});

const ETH_SHA = 14 + ArpField.SHA;

test('fabric host: per-address ports, hairpin with each address\'s policy, ARP answered, the LAN both ways, unknown sources dropped', (t) => {
  const { sw, send, drops, counters } = switchRig();
  sw.addNetwork(2, 'fab', { l2bridge: true });
  sw.addPort({ portId: UPLINK, networkId: 2, fd: 107, name: 'eth1', uplinkMac: LAN_MAC });
  sw.addPort({ portId: FABRIC, networkId: 2, fd: 108, name: 'eth2', uplinkMac: FABRIC_MAC, fabric: true });
  sw.addPort({ portId: 0, networkId: 2, fd: -1, name: 'fabric/a', fabricOf: FABRIC, ip: A.ip, mac: HOST_MAC, policy: defaultPortPolicy(HOST_MAC, A.ip) });
  sw.addPort({ portId: 1, networkId: 2, fd: -1, name: 'fabric/b', fabricOf: FABRIC, ip: B.ip, mac: HOST_MAC, policy: defaultPortPolicy(HOST_MAC, B.ip) });

  const arp = send(FABRIC, buildArpRequest({ srcMac: HOST_MAC, srcIp: A.ip, targetIp: B.ip }));
  t.deepEqual(fds(arp), [108], "ARP from A for B is answered back toward the container host");
  t.is(formatMac(frameOf(arp[0]), ETH_SHA), FABRIC_MAC, "B is at the fabric port's MAC");

  const ab = buildUdp4({ srcMac: HOST_MAC, dstMac: FABRIC_MAC, srcIp: A.ip, dstIp: B.ip, payload: filler(20) });
  const hair = send(FABRIC, ab);
  t.deepEqual(fds(hair), [108], 'A -> B hairpins back to the container host');
  t.is(formatMac(frameOf(hair[0]), 0), HOST_MAC, "to the container host's MAC");
  t.is(formatMac(frameOf(hair[0]), 6), FABRIC_MAC, "from the fabric port's (a switch on the way must not learn the host's MAC on the fabric side)");
  t.is(formatMac(frameOf(send(FABRIC, ab)[0]), 6), FABRIC_MAC, 'also from the flow cache');
  t.is(readPortCounters(counters, 0).rxFrames, 3, "the ARP and the two frames counted on A's address port");
  t.is(readPortCounters(counters, 1).txFrames, 2, "and the frames on B's");

  // B's own policy: nothing in from A.
  const blockA = defaultPortPolicy(HOST_MAC, B.ip);
  blockA.layers[0].groups.push({ name: 'g', priority: 100, rules: [{ id: 'no-a', priority: 10, action: 'block', direction: 'in', match: { srcPrefix: `${A.ip}/32` } }] });
  sw.setPolicy(1, blockA);
  t.deepEqual(fds(send(FABRIC, ab)), [], "B's policy on the fabric host stops A");
  t.is(drops(1, DropReason.policyBlock), 1, "counted on B's address port");
  const lan = send(FABRIC, buildUdp4({ srcMac: HOST_MAC, dstMac: LAN_HOST, srcIp: A.ip, dstIp: '192.168.80.2', payload: filler(20) }));
  t.deepEqual(fds(lan), [107], 'A still reaches the LAN (flooded: the LAN host is not learned yet, and never to the addresses)');

  const fromLan = send(UPLINK, buildUdp4({ srcMac: LAN_HOST, dstMac: LAN_MAC, srcIp: '192.168.80.2', dstIp: A.ip, payload: filler(20) }));
  t.deepEqual(fds(fromLan), [108], 'the LAN reaches A through the fabric port');
  t.is(formatMac(frameOf(fromLan[0]), 0), HOST_MAC);
  const lanArp = send(UPLINK, buildArpRequest({ srcMac: LAN_HOST, srcIp: '192.168.80.2', targetIp: B.ip }));
  t.is(formatMac(frameOf(lanArp[0]), ETH_SHA), LAN_MAC, "the LAN's ARP for B is answered with the LAN uplink's MAC");

  t.deepEqual(send(FABRIC, buildUdp4({ srcMac: HOST_MAC, dstMac: FABRIC_MAC, srcIp: '192.168.80.99', dstIp: B.ip, payload: filler(20) })), []);
  t.is(drops(FABRIC, DropReason.fabricUnknownSource), 1, 'a source that is no fabric address is dropped on the fabric port');
});
