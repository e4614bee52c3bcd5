import test from 'ava';
import type { ExecutionContext } from 'ava';
import {
  buildArpReply,
  buildArpRequest,
  buildEthernet,
  buildIcmp4Echo,
  buildIpv4,
  buildIpv6,
  buildTcp4,
  buildTcp6,
  buildUdp4,
  buildUdp6,
  filler,
  withVnetHeader,
} from '../../src/packet/builders.js';
import { DROP_REASON_NAMES, DropReason, type DropReasonName } from '../../src/packet/drop-reasons.js';
import { IpProtocol } from '../../src/packet/ipv4.js';
import { FRAME_OK, classifyFrame } from '../../src/packet/validate.js';
import { GsoType, VNET_HDR_LEN, VnetFlags, type VnetRepr } from '../../src/packet/vnet.js';

/** MTU 1500 plus Ethernet and one VLAN tag. */
const MAX = 1518;
const ETH = 14;

const name = (code: number) => (code === FRAME_OK ? 'ok' : DROP_REASON_NAMES[code]);

/** Classifies a frame as a port without a vnet header sees it, at an offset inside a larger buffer like an rx slot. */
function classifyPlain(frame: Uint8Array, max = MAX): string {
  const buf = new Uint8Array(128 + frame.length + 64).fill(0xa5);
  buf.set(frame, 128);
  return name(classifyFrame(buf, 128, frame.length, -1, max));
}

/** As a TAP with IFF_VNET_HDR delivers it: the vnet header right before the frame. */
function classifyVnet(frame: Uint8Array, vnet: Partial<VnetRepr> = {}, max = MAX): string {
  const withHdr = withVnetHeader(frame, vnet);
  const buf = new Uint8Array(128 + withHdr.length + 64).fill(0xa5);
  buf.set(withHdr, 128 - VNET_HDR_LEN);
  return name(classifyFrame(buf, 128, frame.length, 128 - VNET_HDR_LEN, max));
}

function expectBoth(t: ExecutionContext, frame: Uint8Array, expected: DropReasonName | 'ok', what: string): void {
  t.is(classifyPlain(frame), expected, `${what} (no vnet header)`);
  t.is(classifyVnet(frame), expected, `${what} (vnet header)`);
}

function patched(frame: Uint8Array, at: number, ...bytes: number[]): Uint8Array {
  const copy = Uint8Array.from(frame);
  copy.set(bytes, at);
  return copy;
}

test('drop reason codes used here are the published ones', (t) => {
  t.is(FRAME_OK, 0);
  t.deepEqual(
    [DropReason.runt, DropReason.oversize, DropReason.badVnetHdr, DropReason.badIpv4, DropReason.badIpv6, DropReason.badArp, DropReason.badSrcMac, DropReason.badVlan],
    [1, 2, 3, 4, 5, 6, 7, 11],
  );
});

test('valid frames of every kind pass', (t) => {
  expectBoth(t, buildUdp4({ payload: filler(100) }), 'ok', 'UDP/IPv4');
  expectBoth(t, buildTcp4({ payload: filler(1000) }), 'ok', 'TCP/IPv4');
  expectBoth(t, buildIcmp4Echo({ data: filler(56) }), 'ok', 'ICMP echo');
  expectBoth(t, buildArpRequest(), 'ok', 'ARP request');
  expectBoth(t, buildArpRequest({ pad: true }), 'ok', 'ARP request padded to 60');
  expectBoth(t, buildArpReply(), 'ok', 'ARP reply');
  expectBoth(t, buildUdp6({ payload: filler(100) }), 'ok', 'UDP/IPv6');
  expectBoth(t, buildTcp6({ payload: filler(1000) }), 'ok', 'TCP/IPv6');
  expectBoth(t, buildIpv6({ nextHeader: IpProtocol.NoNext, payload: new Uint8Array(0) }), 'ok', 'IPv6 with an empty payload');
  expectBoth(t, buildUdp4({ vlans: [100] }), 'ok', 'one VLAN tag');
  expectBoth(t, buildUdp4({ vlans: [10, 20] }), 'ok', 'QinQ');
  expectBoth(t, buildArpRequest({ vlans: [10, 20] }), 'ok', 'QinQ ARP');
  expectBoth(t, buildUdp6({ vlans: [{ vid: 7, pcp: 3 }] }), 'ok', 'tagged IPv6');
  expectBoth(t, buildEthernet({ dstMac: '01:80:c2:00:00:0e', etherType: 0x88cc, payload: filler(4) }), 'ok', 'LLDP (other EtherType)');
  expectBoth(t, buildUdp4({ pad: true }), 'ok', 'small IPv4 with Ethernet padding');
  expectBoth(t, buildUdp4({ dstMac: 'ff:ff:ff:ff:ff:ff' }), 'ok', 'broadcast destination');
  expectBoth(t, buildUdp4({ payload: filler(1472) }), 'ok', '1514 bytes, a full 1500-byte IP packet');
});

test('runt: shorter than an Ethernet header', (t) => {
  const frame = buildUdp4();
  for (const len of [0, 1, 13]) {
    t.is(name(classifyFrame(frame, 0, len, -1, MAX)), 'runt', `length ${len}`);
  }
  t.is(name(classifyFrame(frame, 0, 14, -1, MAX)), 'badIpv4', 'an Ethernet header alone gets past the runt check');
  t.is(name(classifyFrame(buildUdp4(), 0, 20, 30_000, MAX)), 'runt', 'vnet header outside the buffer');
});

test('oversize: a non-GSO frame above the port limit', (t) => {
  const frame = buildUdp4({ payload: filler(1500) });
  t.is(frame.length, 1542);
  t.is(classifyPlain(frame), 'oversize');
  t.is(classifyVnet(frame), 'oversize', 'gso_type NONE');
  t.is(classifyPlain(frame, 1542), 'ok', 'exactly the limit');
  t.is(classifyVnet(frame, {}, 1541), 'oversize', 'one above the limit');
  // A descriptor running past the buffer is a frame larger than its slot.
  t.is(name(classifyFrame(frame, 0, frame.length + 1, -1, 100_000)), 'oversize');
});

test('GSO super-frames may exceed the limit', (t) => {
  const frame = buildTcp4({ payload: filler(20_000), flags: 0x18 });
  const tso: Partial<VnetRepr> = { flags: VnetFlags.NEEDS_CSUM, gsoType: GsoType.TCPV4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 };
  t.is(classifyVnet(frame, tso), 'ok');
  t.is(classifyVnet(frame, { ...tso, gsoType: GsoType.TCPV4 | GsoType.ECN }), 'ok', 'ECN bit');
  const frame6 = buildTcp6({ payload: filler(20_000), flags: 0x18 });
  t.is(classifyVnet(frame6, { ...tso, gsoType: GsoType.TCPV6, hdrLen: 74, csumStart: 54 }), 'ok');
  t.is(classifyPlain(frame), 'oversize', 'without a vnet header nothing says it is GSO');
});

test('badVnetHdr: unknown GSO type', (t) => {
  const frame = buildUdp4();
  t.is(classifyVnet(frame, { gsoType: 2, gsoSize: 1000 }), 'badVnetHdr');
  t.is(classifyVnet(frame, { gsoType: 5, gsoSize: 1000 }), 'badVnetHdr', 'UDP_L4 (USO) is not negotiated');
  t.is(classifyVnet(frame, { gsoType: 0x82, gsoSize: 1000 }), 'badVnetHdr', 'ECN bit on an unknown type');
  t.is(classifyVnet(frame, { gsoType: GsoType.ECN }), 'ok', 'NONE with ECN');
  t.is(classifyVnet(frame, { gsoType: GsoType.UDP, gsoSize: 1000, hdrLen: 42 }), 'ok', 'UFO');
});

test('badVnetHdr: checksum offsets outside the frame', (t) => {
  const frame = buildUdp4({ payload: filler(10) });
  t.is(frame.length, 52);
  const csum = { flags: VnetFlags.NEEDS_CSUM, csumStart: 34, csumOffset: 6 };
  t.is(classifyVnet(frame, csum), 'ok');
  t.is(classifyVnet(frame, { ...csum, csumStart: 44 }), 'ok', 'field ends exactly at the frame end');
  t.is(classifyVnet(frame, { ...csum, csumStart: 45 }), 'badVnetHdr', 'field ends one byte past');
  t.is(classifyVnet(frame, { ...csum, csumOffset: 0xffff }), 'badVnetHdr');
  t.is(classifyVnet(frame, { csumStart: 0xffff }), 'ok', 'offsets are ignored without NEEDS_CSUM');
});

test('badVnetHdr: GSO with gso_size 0 or hdr_len beyond the frame', (t) => {
  const frame = buildTcp4({ payload: filler(3000) });
  t.is(classifyVnet(frame, { gsoType: GsoType.TCPV4, gsoSize: 0, hdrLen: 54 }), 'badVnetHdr');
  t.is(classifyVnet(frame, { gsoType: GsoType.TCPV4, gsoSize: 1448, hdrLen: frame.length + 1 }), 'badVnetHdr');
  t.is(classifyVnet(frame, { gsoType: GsoType.TCPV4, gsoSize: 1448, hdrLen: frame.length }), 'ok');
});

test('badSrcMac: multicast, broadcast or zero source', (t) => {
  expectBoth(t, buildUdp4({ srcMac: '01:00:5e:00:00:01' }), 'badSrcMac', 'IPv4 multicast MAC');
  expectBoth(t, buildUdp4({ srcMac: '03:00:00:00:00:01' }), 'badSrcMac', 'group bit on a local MAC');
  expectBoth(t, buildUdp4({ srcMac: 'ff:ff:ff:ff:ff:ff' }), 'badSrcMac', 'broadcast');
  expectBoth(t, buildUdp4({ srcMac: '00:00:00:00:00:00' }), 'badSrcMac', 'zero');
  expectBoth(t, buildUdp4({ srcMac: '00:00:00:00:00:01' }), 'ok', 'almost zero');
  expectBoth(t, buildEthernet({ srcMac: '33:33:00:00:00:01', etherType: 0x88cc, payload: filler(4) }), 'badSrcMac', 'before the EtherType is looked at');
});

test('badVlan: tags cut short or stacked three deep', (t) => {
  const one = buildUdp4({ vlans: [100] });
  t.is(name(classifyFrame(one, 0, 17, -1, MAX)), 'badVlan', 'inner EtherType cut');
  t.is(name(classifyFrame(one, 0, 15, -1, MAX)), 'badVlan', 'TCI cut');
  const two = buildUdp4({ vlans: [10, 20] });
  t.is(name(classifyFrame(two, 0, 21, -1, MAX)), 'badVlan', 'second tag cut');
  const three = buildUdp4({ vlans: [10, 20, 30] });
  expectBoth(t, three, 'badVlan', 'a third tag would hide the payload from policy');
  t.is(name(classifyFrame(one, 0, 18, -1, MAX)), 'badIpv4', 'a whole tag, then a missing IPv4 header');
});

test('badIpv4: header fields against the frame', (t) => {
  const frame = buildUdp4({ payload: filler(8) });
  const ip = ETH;
  expectBoth(t, patched(frame, ip, 0x55), 'badIpv4', 'version 5');
  expectBoth(t, patched(frame, ip, 0x65), 'badIpv4', 'version 6 under EtherType IPv4');
  expectBoth(t, patched(frame, ip, 0x44), 'badIpv4', 'IHL 4');
  expectBoth(t, patched(frame, ip, 0x4f), 'badIpv4', 'IHL 15 beyond the frame');
  expectBoth(t, patched(frame, ip + 2, 0, 19), 'badIpv4', 'total length below the header');
  expectBoth(t, patched(frame, ip + 2, 0, 37), 'badIpv4', 'total length one past the frame');
  expectBoth(t, patched(frame, ip + 2, 0, 36), 'ok', 'total length exactly the frame');
  expectBoth(t, patched(frame, ip + 2, 0, 20), 'ok', 'total length shorter: the rest is padding');
  expectBoth(t, frame.subarray(0, ETH + 19), 'badIpv4', 'header cut');
  const tagged = buildUdp4({ vlans: [5] });
  expectBoth(t, patched(tagged, 18, 0x48), 'badIpv4', 'under a tag, IHL 8: header longer than the 28-byte total');
  expectBoth(t, patched(tagged, 18, 0x46), 'ok', 'under a tag, IHL 6: the UDP header read as options is still inside');
  expectBoth(t, patched(tagged, 18 + 2, 0xff, 0xff), 'badIpv4', 'under a tag, total length');
});

test('badIpv6: version, payload length, jumbogram', (t) => {
  const frame = buildUdp6({ payload: filler(8) });
  const ip = ETH;
  expectBoth(t, patched(frame, ip, 0x40), 'badIpv6', 'version 4 under EtherType IPv6');
  expectBoth(t, patched(frame, ip + 4, 0, 17), 'badIpv6', 'payload length one past the frame');
  expectBoth(t, patched(frame, ip + 4, 0, 16), 'ok', 'payload length exactly the frame');
  expectBoth(t, patched(frame, ip + 4, 0, 0, IpProtocol.HopByHop), 'badIpv6', 'jumbogram');
  expectBoth(t, frame.subarray(0, ETH + 39), 'badIpv6', 'header cut');
  const tagged = buildUdp6({ vlans: [5, 6] });
  expectBoth(t, patched(tagged, 22, 0x50), 'badIpv6', 'under two tags');
});

test('badArp: short or not Ethernet/IPv4', (t) => {
  const frame = buildArpRequest();
  const arp = ETH;
  expectBoth(t, frame.subarray(0, ETH + 27), 'badArp', '27 bytes');
  expectBoth(t, patched(frame, arp, 0, 6), 'badArp', 'htype 6');
  expectBoth(t, patched(frame, arp + 2, 0x86, 0xdd), 'badArp', 'ptype IPv6');
  expectBoth(t, patched(frame, arp + 4, 8), 'badArp', 'hlen 8');
  expectBoth(t, patched(frame, arp + 5, 16), 'badArp', 'plen 16');
  expectBoth(t, patched(frame, arp + 7, 3), 'ok', 'the operation is not the switch\'s business');
  expectBoth(t, patched(buildArpRequest({ vlans: [9] }), 18 + 4, 8), 'badArp', 'under a tag');
});

test('classifyFrame ignores bytes outside the frame', (t) => {
  // A valid frame followed by garbage, and preceded by a hostile vnet-looking region.
  const frame = buildIpv4({ protocol: 253, payload: filler(30) });
  const buf = new Uint8Array(frame.length + 100).fill(0xff);
  buf.set(frame, 50);
  t.is(name(classifyFrame(buf, 50, frame.length, -1, MAX)), 'ok');
  t.is(name(classifyFrame(buf, 50, frame.length, 40, MAX)), 'badVnetHdr', 'but reads the vnet header where it is told');
});
