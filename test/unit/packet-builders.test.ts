import test from 'ava';
import { ArpOp, ArpView, parseArp } from '../../src/packet/arp.js';
import {
  BROADCAST_MAC,
  DEFAULT_SRC_MAC,
  buildArpReply,
  buildArpRequest,
  buildEthernet,
  buildIcmp4Echo,
  buildTcp4,
  buildTcp6,
  buildUdp4,
  buildUdp6,
  filler,
  withVnetHeader,
} from '../../src/packet/builders.js';
import { pseudoSumV4At, pseudoSumV6At } from '../../src/packet/checksum.js';
import { EtherType, EthernetView, formatMac, parseEthernet } from '../../src/packet/ethernet.js';
import { IcmpView, parseIcmp } from '../../src/packet/icmp.js';
import * as packet from '../../src/packet/index.js';
import { IpProtocol, Ipv4View, parseIpv4 } from '../../src/packet/ipv4.js';
import { Ipv6View, parseIpv6 } from '../../src/packet/ipv6.js';
import { TcpFlags, TcpView, parseTcp } from '../../src/packet/tcp.js';
import { UdpView, parseUdp } from '../../src/packet/udp.js';
import { VlanView } from '../../src/packet/vlan.js';
import { GsoType, VNET_HDR_LEN, VnetFlags, VnetView, parseVnet } from '../../src/packet/vnet.js';

const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

test('buildUdp4: a valid frame that the views read back', (t) => {
  const frame = buildUdp4({ srcIp: '192.168.1.10', dstIp: '192.168.1.20', srcPort: 1234, dstPort: 53, payload: filler(5), ttl: 7 });
  t.is(frame.length, 14 + 20 + 8 + 5);
  const eth = new EthernetView();
  t.true(eth.reset(frame, 0, frame.length));
  t.deepEqual(parseEthernet(eth), { dst: '02:00:00:00:00:02', src: DEFAULT_SRC_MAC, etherType: EtherType.IPv4 });
  const ip = new Ipv4View();
  t.true(ip.reset(frame, eth.payloadOffset(), eth.payloadLength()));
  const ipRepr = parseIpv4(ip);
  t.like(ipRepr, { src: '192.168.1.10', dst: '192.168.1.20', protocol: IpProtocol.UDP, payloadLength: 13, ttl: 7, dontFrag: true });
  const udp = new UdpView();
  t.true(udp.reset(frame, ip.payloadOffset(), ip.payloadLength()));
  t.true(udp.verifyChecksum(pseudoSumV4At(frame, ip.off, udp.length())));
  t.deepEqual(parseUdp(udp), { srcPort: 1234, dstPort: 53, payload: filler(5) });
});

test('buildUdp4 without a checksum leaves the field 0', (t) => {
  const frame = buildUdp4({ checksum: false });
  t.is(toHex(frame.subarray(40, 42)), '0000');
});

test('VLAN tags: outer 802.1ad for two, 802.1Q otherwise, TPID overridable', (t) => {
  const two = buildUdp4({ vlans: [10, { vid: 20, pcp: 6, dei: true }] });
  t.is(two.readUInt16BE(12), EtherType.QinQ);
  const tag = new VlanView();
  t.true(tag.reset(two, 14, two.length - 14));
  t.is(tag.vid(), 10);
  t.is(tag.etherType(), EtherType.VLAN);
  t.true(tag.reset(two, 18, two.length - 18));
  t.is(tag.vid(), 20);
  t.is(tag.pcp(), 6);
  t.true(tag.dei());
  t.is(tag.etherType(), EtherType.IPv4);
  const ip = new Ipv4View();
  t.true(ip.reset(two, 22, two.length - 22));
  t.not(parseIpv4(ip), null);

  const one = buildArpRequest({ vlans: [4094] });
  t.is(one.readUInt16BE(12), EtherType.VLAN);
  t.is(one.readUInt16BE(16), EtherType.ARP);

  const custom = buildEthernet({ vlans: [{ vid: 1, tpid: EtherType.VLAN }, 2], etherType: 0x88b5, payload: filler(2) });
  t.is(custom.readUInt16BE(12), EtherType.VLAN);
  t.is(custom.readUInt16BE(16), EtherType.VLAN);
  t.is(custom.readUInt16BE(20), 0x88b5);
});

test('pad: zero-filled to 60 bytes, IP lengths unchanged', (t) => {
  const frame = buildUdp4({ pad: true });
  t.is(frame.length, 60);
  t.is(frame.readUInt16BE(16), 28);
  t.true(frame.subarray(42).every((b) => b === 0));
  t.is(buildTcp4({ pad: true, payload: filler(100) }).length, 154, 'longer frames are left alone');
});

test('buildTcp4 and buildTcp6: checksums verify, fields as asked', (t) => {
  const opts = { srcPort: 443, dstPort: 50000, seq: 0xfffffff0, ack: 7, flags: TcpFlags.SYN | TcpFlags.ACK, window: 1024, options: Uint8Array.of(2, 4, 5, 0xb4), payload: filler(9) };
  const v4 = buildTcp4(opts);
  const ip = new Ipv4View();
  t.true(ip.reset(v4, 14, v4.length - 14));
  const tcp = new TcpView();
  t.true(tcp.reset(v4, ip.payloadOffset(), ip.payloadLength()));
  t.true(tcp.verifyChecksum(pseudoSumV4At(v4, 14, tcp.len)));
  t.deepEqual(parseTcp(tcp), { ...opts, urgent: 0 });

  const v6 = buildTcp6(opts);
  const ip6 = new Ipv6View();
  t.true(ip6.reset(v6, 14, v6.length - 14));
  t.like(parseIpv6(ip6), { src: 'fd00::1', dst: 'fd00::2', nextHeader: IpProtocol.TCP, payloadLength: 33 });
  t.true(tcp.reset(v6, ip6.payloadOffset(), ip6.payloadLength()));
  t.true(tcp.verifyChecksum(pseudoSumV6At(v6, 14, IpProtocol.TCP, tcp.len)));
  t.false(tcp.verifyChecksum(pseudoSumV6At(v6, 14, IpProtocol.UDP, tcp.len)));
});

test('buildUdp6: checksum verifies', (t) => {
  const frame = buildUdp6({ srcIp: '2001:db8::a', dstIp: 'ff02::1', payload: filler(3) });
  const ip6 = new Ipv6View();
  t.true(ip6.reset(frame, 14, frame.length - 14));
  t.true(ip6.dstIsMulticast());
  const udp = new UdpView();
  t.true(udp.reset(frame, ip6.payloadOffset(), ip6.payloadLength()));
  t.true(udp.verifyChecksum(pseudoSumV6At(frame, 14, IpProtocol.UDP, udp.length())));
});

test('buildIcmp4Echo: request and reply', (t) => {
  const icmp = new IcmpView();
  const req = buildIcmp4Echo({ ident: 99, seq: 3, data: filler(56) });
  t.true(icmp.reset(req, 34, req.length - 34));
  t.deepEqual(parseIcmp(icmp), { kind: 'echoRequest', ident: 99, seq: 3, data: filler(56) });
  const rep = buildIcmp4Echo({ reply: true });
  t.true(icmp.reset(rep, 34, rep.length - 34));
  t.is(parseIcmp(icmp)?.kind, 'echoReply');
});

test('buildArpRequest and buildArpReply', (t) => {
  const arp = new ArpView();
  const req = buildArpRequest({ srcMac: '02:aa:00:00:00:01', srcIp: '10.1.0.5', targetIp: '10.1.0.1' });
  t.is(formatMac(req, 0), BROADCAST_MAC);
  t.is(formatMac(req, 6), '02:aa:00:00:00:01');
  t.true(arp.reset(req, 14, req.length - 14));
  t.deepEqual(parseArp(arp), { operation: ArpOp.Request, senderMac: '02:aa:00:00:00:01', senderIp: '10.1.0.5', targetMac: '00:00:00:00:00:00', targetIp: '10.1.0.1' });
  const rep = buildArpReply({ srcMac: '02:aa:00:00:00:09', srcIp: '10.1.0.1', dstMac: '02:aa:00:00:00:01', dstIp: '10.1.0.5' });
  t.is(formatMac(rep, 0), '02:aa:00:00:00:01');
  t.true(arp.reset(rep, 14, rep.length - 14));
  t.like(parseArp(arp), { operation: ArpOp.Reply, senderIp: '10.1.0.1', targetMac: '02:aa:00:00:00:01', targetIp: '10.1.0.5' });
});

test('withVnetHeader: the header first, little-endian, then the frame', (t) => {
  const frame = buildTcp4();
  const buf = withVnetHeader(frame, { flags: VnetFlags.NEEDS_CSUM, gsoType: GsoType.TCPV4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 });
  t.is(buf.length, VNET_HDR_LEN + frame.length);
  t.is(toHex(buf.subarray(0, 10)), '01013600a80522001000');
  t.is(toHex(buf.subarray(10)), toHex(frame));
  const v = new VnetView();
  t.true(v.reset(buf, 0, buf.length));
  t.like(parseVnet(v), { hdrLen: 54, gsoSize: 1448 });
  t.is(toHex(withVnetHeader(frame).subarray(0, 10)), '00000000000000000000');
});

test('filler is deterministic and seedable', (t) => {
  t.deepEqual(Array.from(filler(4)), [0, 31, 62, 93]);
  t.deepEqual(Array.from(filler(2, 1)), [1, 32]);
});

test('the index re-exports every file', (t) => {
  for (const name of ['classifyFrame', 'FRAME_OK', 'DropReason', 'internetChecksum', 'EthernetView', 'VlanView', 'ArpView', 'Ipv4View', 'Ipv6View', 'IcmpView', 'UdpView', 'TcpView', 'VnetView', 'buildUdp4']) {
    t.true(name in packet, name);
  }
});
