import test from 'ava';
import { buildArpRequest, buildEthernet, buildIcmp4Echo, buildIpv4, buildIpv6, buildTcp4, buildTcp6, buildUdp4, filler } from '../../src/packet/builders.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { mustParseIpv6Addr } from '../../src/packet/ipv6.js';
import {
  extractKey,
  KEY_WORDS,
  KeyWord,
  keyDstPort,
  keyEtherType,
  keyIcmpType,
  keyProtocol,
  keySrcPort,
  Meta,
  META_WORDS,
  VLAN_PRESENT,
} from '../../src/vfp/key.js';

const A = '02:76:0a:00:00:02';
const B = '0e:ff:10:20:30:81';

/** The two key words of a MAC, computed from its text (independently of key.ts). */
function macWords(mac: string): [number, number] {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  return [b[0] * 256 + b[1], ((b[2] * 256 + b[3]) * 256 + b[4]) * 256 + b[5]];
}

function v6Words(addr: string): number[] {
  const b = mustParseIpv6Addr(addr);
  const out: number[] = [];
  for (let i = 0; i < 16; i += 4) out.push(((b[i] * 256 + b[i + 1]) * 256 + b[i + 2]) * 256 + b[i + 3]);
  return out;
}

/** Extracts from the frame copied at `at` inside a larger buffer filled with junk, so offsets must be absolute. */
function extract(frame: Uint8Array, at = 0, len = frame.length) {
  const buf = new Uint8Array(at + frame.length + 32).fill(0xa5);
  buf.set(frame, at);
  const key = new Uint32Array(KEY_WORDS).fill(0xdeadbeef); // stale content must not survive
  const meta = new Int32Array(META_WORDS).fill(12345);
  extractKey(buf, at, len, key, meta);
  return { key, meta };
}

function expectedMacs(t: import('ava').ExecutionContext, key: Uint32Array, src: string, dst: string) {
  const [sh, sl] = macWords(src);
  const [dh, dl] = macWords(dst);
  t.is(key[KeyWord.SRC_MAC_HI], sh, 'source MAC, high 16 bits');
  t.is(key[KeyWord.SRC_MAC_LO], sl, 'source MAC, low 32 bits');
  t.is(key[KeyWord.DST_MAC_HI], dh, 'destination MAC, high 16 bits');
  t.is(key[KeyWord.DST_MAC_LO], dl, 'destination MAC, low 32 bits');
}

test('IPv4 TCP: MACs, EtherType, protocol, ports, addresses and TCP flags', (t) => {
  const frame = buildTcp4({
    srcMac: B,
    dstMac: A,
    srcIp: '192.168.7.200',
    dstIp: '10.250.0.3',
    srcPort: 54321,
    dstPort: 443,
    flags: TcpFlags.SYN | TcpFlags.ACK,
    payload: filler(11),
  });
  const at = 70;
  const { key, meta } = extract(frame, at);
  expectedMacs(t, key, B, A);
  t.is(key[KeyWord.ETH_VLAN], 0x0800 << 16, 'untagged: VLAN field 0');
  t.is(key[KeyWord.PROTO], 6 * 2 ** 24, 'TCP, no ICMP fields');
  t.is(key[KeyWord.PORTS], 54321 * 65536 + 443);
  t.is(key[KeyWord.SRC_IP], mustParseIpv4Addr('192.168.7.200'));
  t.is(key[KeyWord.DST_IP], mustParseIpv4Addr('10.250.0.3'));
  for (const w of [8, 9, 10, 12, 13, 14]) t.is(key[w], 0, `word ${w} is zero for IPv4`);
  t.is(meta[Meta.L3_OFFSET], at + 14, 'absolute offset in the buffer');
  t.is(meta[Meta.L4_OFFSET], at + 34);
  t.is(meta[Meta.TCP_FLAGS], 0x12);
  t.is(meta[Meta.IP_VERSION], 4);
  t.is(meta[Meta.ETHERTYPE_AT], 12, 'relative to the frame start');
  t.is(keyEtherType(key), 0x0800);
  t.is(keyProtocol(key), 6);
  t.is(keySrcPort(key), 54321);
  t.is(keyDstPort(key), 443);
  t.is(keyIcmpType(key), 0);
});

test('IPv4 UDP: ports, no TCP flags', (t) => {
  const frame = buildUdp4({ srcMac: A, dstMac: B, srcIp: '10.0.0.2', dstIp: '255.255.255.255', srcPort: 68, dstPort: 67, payload: filler(5) });
  const { key, meta } = extract(frame);
  expectedMacs(t, key, A, B);
  t.is(key[KeyWord.PROTO], 17 * 2 ** 24);
  t.is(key[KeyWord.PORTS], (68 << 16) | 67);
  t.is(key[KeyWord.DST_IP], 0xffffffff, 'an address with the top bit set is stored unsigned');
  t.is(meta[Meta.TCP_FLAGS], 0);
  t.is(meta[Meta.L4_OFFSET], 34);
});

test('ICMP echo: type and identifier in word 5, no ports', (t) => {
  const req = extract(buildIcmp4Echo({ srcIp: '10.0.0.2', dstIp: '10.0.0.3', ident: 0xbeef, seq: 7 }));
  t.is(req.key[KeyWord.PROTO], 1 * 2 ** 24 + (8 << 16) + 0xbeef);
  t.is(req.key[KeyWord.PORTS], 0);
  t.is(req.meta[Meta.L4_OFFSET], 34);
  t.is(keyIcmpType(req.key), 8);

  const rep = extract(buildIcmp4Echo({ ident: 0x0102, reply: true }));
  t.is(rep.key[KeyWord.PROTO], 1 * 2 ** 24 + (0 << 16) + 0x0102, 'echo reply carries the identifier too');

  // Destination unreachable (type 3): bytes 4-5 are not an identifier and must not leak into the key.
  const unreach = Uint8Array.from([3, 1, 0, 0, 0xab, 0xcd, 0x12, 0x34]);
  const u = extract(buildIpv4({ protocol: 1, payload: unreach }));
  t.is(u.key[KeyWord.PROTO], 1 * 2 ** 24 + (3 << 16));
});

test('IPv6 TCP and ICMPv6 echo: all four address words', (t) => {
  const src = '2001:db8:1:2::abcd';
  const dst = 'fe80::1:ff:fe00:9';
  const { key, meta } = extract(buildTcp6({ srcMac: A, dstMac: B, srcIp: src, dstIp: dst, srcPort: 1, dstPort: 65535, flags: TcpFlags.FIN | TcpFlags.ACK }), 3);
  expectedMacs(t, key, A, B);
  t.is(key[KeyWord.ETH_VLAN], 0x86dd * 65536);
  t.is(key[KeyWord.PROTO], 6 * 2 ** 24);
  t.is(key[KeyWord.PORTS], (1 << 16) + 65535);
  t.deepEqual(Array.from(key.subarray(7, 11)), v6Words(src));
  t.deepEqual(Array.from(key.subarray(11, 15)), v6Words(dst));
  t.is(meta[Meta.IP_VERSION], 6);
  t.is(meta[Meta.L3_OFFSET], 3 + 14);
  t.is(meta[Meta.L4_OFFSET], 3 + 54);
  t.is(meta[Meta.TCP_FLAGS], 0x11);

  const echo = Uint8Array.from([128, 0, 0, 0, 0x77, 0x66, 0, 1]);
  const e = extract(buildIpv6({ nextHeader: 58, payload: echo }));
  t.is(e.key[KeyWord.PROTO], 58 * 2 ** 24 + (128 << 16) + 0x7766);
  const ns = Uint8Array.from([135, 0, 0, 0, 0x77, 0x66, 0, 1]);
  t.is(extract(buildIpv6({ nextHeader: 58, payload: ns })).key[KeyWord.PROTO], 58 * 2 ** 24 + (135 << 16), 'neighbour solicitation: no identifier');
});

test('ARP: EtherType only, words 5-14 zero, no L3 metadata', (t) => {
  const arp = buildArpRequest({ srcMac: A, srcIp: '10.0.0.2', targetIp: '10.0.0.3' });
  // Extract an IPv4 frame into the same arrays first: ARP must clear what it left.
  const key = new Uint32Array(KEY_WORDS);
  const meta = new Int32Array(META_WORDS);
  const tcp = buildTcp4({ flags: TcpFlags.SYN });
  extractKey(tcp, 0, tcp.length, key, meta);
  t.not(key[KeyWord.SRC_IP], 0);
  extractKey(arp, 0, arp.length, key, meta);
  expectedMacs(t, key, A, 'ff:ff:ff:ff:ff:ff');
  t.is(key[KeyWord.ETH_VLAN], 0x0806 << 16);
  for (let w = 5; w < KEY_WORDS; w++) t.is(key[w], 0, `word ${w}`);
  t.is(meta[Meta.L3_OFFSET], -1);
  t.is(meta[Meta.L4_OFFSET], -1);
  t.is(meta[Meta.TCP_FLAGS], 0);
  t.is(meta[Meta.IP_VERSION], 0);
  t.is(meta[Meta.ETHERTYPE_AT], 12);

  const lldp = extract(buildEthernet({ srcMac: A, dstMac: '01:80:c2:00:00:0e', etherType: 0x88cc, payload: filler(40) }));
  t.is(lldp.key[KeyWord.ETH_VLAN], 0x88cc * 65536);
  for (let w = 5; w < KEY_WORDS; w++) t.is(lldp.key[w], 0);
});

test('VLAN tags: the field is 0x1000 | VID of the innermost tag; PCP and DEI are not part of it', (t) => {
  const one = extract(buildUdp4({ vlans: [100], srcPort: 7, dstPort: 9 }));
  t.is(one.key[KeyWord.ETH_VLAN], (0x0800 << 16) + 0x1000 + 100);
  t.is(one.key[KeyWord.PORTS], (7 << 16) | 9, 'L3/L4 found behind the tag');
  t.is(one.meta[Meta.ETHERTYPE_AT], 16);
  t.is(one.meta[Meta.L3_OFFSET], 18);
  t.is(one.meta[Meta.L4_OFFSET], 38);

  const pcp = extract(buildUdp4({ vlans: [{ vid: 4095, pcp: 7, dei: true }] }));
  t.is(pcp.key[KeyWord.ETH_VLAN], (0x0800 << 16) + 0x1000 + 4095);

  const prio = extract(buildUdp4({ vlans: [0] }));
  t.is(prio.key[KeyWord.ETH_VLAN], (0x0800 << 16) + VLAN_PRESENT, 'a priority tag (VID 0) is still "tagged", unlike untagged');

  const qinq = extract(buildTcp4({ vlans: [200, 300], srcIp: '10.9.9.9' }));
  t.is(qinq.key[KeyWord.ETH_VLAN], (0x0800 << 16) + 0x1000 + 300, 'inner (C-tag) VID');
  t.is(qinq.key[KeyWord.SRC_IP], mustParseIpv4Addr('10.9.9.9'));
  t.is(qinq.meta[Meta.ETHERTYPE_AT], 20);
  t.is(qinq.meta[Meta.L4_OFFSET], 42);

  const arp = extract(buildArpRequest({ vlans: [5] }));
  t.is(arp.key[KeyWord.ETH_VLAN], (0x0806 << 16) + 0x1000 + 5);
});

test('IPv4 fragments: a non-first fragment has no ports and no L4 offset; the first one has them', (t) => {
  const frame = buildUdp4({ srcPort: 1111, dstPort: 2222, payload: filler(64) });
  const later = Buffer.from(frame);
  later[14 + 6] = 0x20 | 0x00; // MF
  later[14 + 7] = 0xb9; // fragment offset 185 (1480 bytes)
  const l = extract(later);
  t.is(l.key[KeyWord.PORTS], 0);
  t.is(l.key[KeyWord.PROTO], 17 * 2 ** 24);
  t.is(l.meta[Meta.L4_OFFSET], -1);
  t.is(l.meta[Meta.L3_OFFSET], 14);

  const high = Buffer.from(frame);
  high[14 + 6] = 0x01; // offset bits in the flags byte: 0x100 * 8 bytes, no MF (last fragment)
  high[14 + 7] = 0x00;
  t.is(extract(high).key[KeyWord.PORTS], 0);

  const first = Buffer.from(frame);
  first[14 + 6] = 0x20; // MF, offset 0: carries the L4 header
  first[14 + 7] = 0;
  t.is(extract(first).key[KeyWord.PORTS], (1111 << 16) | 2222);

  const tcpFrag = Buffer.from(buildTcp4({ flags: TcpFlags.SYN }));
  tcpFrag[14 + 7] = 3;
  const f = extract(tcpFrag);
  t.is(f.meta[Meta.TCP_FLAGS], 0, 'no TCP flags read from a later fragment');

  const icmpFrag = Buffer.from(buildIcmp4Echo({ ident: 9 }));
  icmpFrag[14 + 7] = 1;
  t.is(extract(icmpFrag).key[KeyWord.PROTO], 1 * 2 ** 24, 'no type or identifier in a later ICMP fragment');
});

test('IPv4 options move the L4 header', (t) => {
  const plain = buildUdp4({ srcPort: 4242, dstPort: 53, payload: filler(8) });
  // Insert 4 option bytes (NOP NOP NOP EOL) after the 20-byte header: IHL 6, total length + 4.
  const withOpts = Buffer.alloc(plain.length + 4);
  plain.copy(withOpts, 0, 0, 34);
  withOpts.set([1, 1, 1, 0], 34);
  plain.copy(withOpts, 38, 34);
  withOpts[14] = 0x46;
  withOpts.writeUInt16BE(plain.readUInt16BE(16) + 4, 16);
  const { key, meta } = extract(withOpts);
  t.is(meta[Meta.L4_OFFSET], 38);
  t.is(key[KeyWord.PORTS], (4242 << 16) | 53);
});

test('a truncated L4 header yields no ports, no flags, no ICMP fields', (t) => {
  // IP total length covers only what is there: the frame is valid, its L4 header is not complete.
  const tcp = extract(buildIpv4({ protocol: 6, srcIp: '10.1.1.1', payload: Uint8Array.from([0x12, 0x34, 0x00, 0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x02, 0, 0, 0, 0, 0]) }));
  t.is(tcp.key[KeyWord.PROTO], 6 * 2 ** 24);
  t.is(tcp.key[KeyWord.PORTS], 0, '19 bytes are not a TCP header');
  t.is(tcp.key[KeyWord.SRC_IP], mustParseIpv4Addr('10.1.1.1'), 'L3 fields are still there');
  t.is(tcp.meta[Meta.L4_OFFSET], -1);
  t.is(tcp.meta[Meta.TCP_FLAGS], 0);

  const udp = extract(buildIpv4({ protocol: 17, payload: Uint8Array.from([0x12, 0x34, 0x00, 0x35, 0, 8, 0]) }));
  t.is(udp.key[KeyWord.PORTS], 0, '7 bytes are not a UDP header');
  t.is(udp.meta[Meta.L4_OFFSET], -1);

  const icmp = extract(buildIpv4({ protocol: 1, payload: Uint8Array.from([8, 0, 0, 0, 0, 1, 0]) }));
  t.is(icmp.key[KeyWord.PROTO], 1 * 2 ** 24);

  const v6 = extract(buildIpv6({ nextHeader: 6, payload: filler(12) }));
  t.is(v6.key[KeyWord.PORTS], 0);
  t.is(v6.meta[Meta.L4_OFFSET], -1);

  // The frame length given to extractKey bounds the read, not the buffer: a full TCP frame cut at 40 bytes.
  const full = buildTcp4({ srcPort: 1000, dstPort: 2000 });
  const cut = extract(full, 0, 14 + 20 + 19);
  t.is(cut.key[KeyWord.PORTS], 0);
  t.is(extract(full, 0, 14 + 20 + 20).key[KeyWord.PORTS], (1000 << 16) | 2000, 'exactly 20 bytes is enough');
});

test('an unknown IP protocol is in the key without ports', (t) => {
  const gre = extract(buildIpv4({ protocol: 47, payload: filler(24) }));
  t.is(gre.key[KeyWord.PROTO], 47 * 2 ** 24);
  t.is(gre.key[KeyWord.PORTS], 0);
  t.is(gre.meta[Meta.L4_OFFSET], -1);
  t.is(gre.meta[Meta.L3_OFFSET], 14);
});
