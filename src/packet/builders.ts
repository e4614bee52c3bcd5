/**
 * Whole frames from a few options, for tests, benchmarks and control-plane
 * replies (ARP, ICMP errors). Each call allocates its Buffer: never use these
 * per packet in the data path.
 *
 * Defaults give a valid unicast frame between two locally administered MACs
 * and two addresses of 10.0.0.0/24 (fd00::/64 for IPv6), checksums filled.
 */

import { emitArp, ArpOp, ARP_LEN } from './arp.js';
import { pseudoSumV4, pseudoSumV6 } from './checksum.js';
import { ETH_HEADER_LEN, EthField, EtherType, emitEthernet } from './ethernet.js';
import { emitIcmp, icmpLength } from './icmp.js';
import { IPV4_HEADER_LEN, IpProtocol, emitIpv4, mustParseIpv4Addr, type Ipv4Repr } from './ipv4.js';
import { IPV6_HEADER_LEN, emitIpv6, mustParseIpv6Addr, type Ipv6Repr } from './ipv6.js';
import { emitTcp, tcpLength, TcpFlags } from './tcp.js';
import { emitUdp, udpLength } from './udp.js';
import { VLAN_TAG_LEN, emitVlan } from './vlan.js';
import { VNET_HDR_LEN, emitVnet, type VnetRepr } from './vnet.js';

export const DEFAULT_SRC_MAC = '02:00:00:00:00:01';
export const DEFAULT_DST_MAC = '02:00:00:00:00:02';
export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';
export const DEFAULT_SRC_IP = '10.0.0.1';
export const DEFAULT_DST_IP = '10.0.0.2';
export const DEFAULT_SRC_IP6 = 'fd00::1';
export const DEFAULT_DST_IP6 = 'fd00::2';
/** Shortest Ethernet frame without FCS; shorter ones are padded on a real wire (TAPs do not pad). */
export const ETH_MIN_FRAME = 60;

export interface VlanTagOptions {
  vid: number;
  pcp?: number;
  dei?: boolean;
  /** Default: 0x88a8 for the outer of two tags, 0x8100 otherwise. */
  tpid?: number;
}

export interface L2Options {
  srcMac?: string;
  dstMac?: string;
  /** Outermost first; a number is a VLAN id. */
  vlans?: readonly (number | VlanTagOptions)[];
  /** Zero-pad to 60 bytes like a physical NIC would. */
  pad?: boolean;
}

export interface Ipv4Options extends L2Options {
  srcIp?: string;
  dstIp?: string;
  ttl?: number;
  ident?: number;
  dontFrag?: boolean;
  dscp?: number;
  ecn?: number;
}

export interface Ipv6Options extends L2Options {
  srcIp?: string;
  dstIp?: string;
  hopLimit?: number;
  trafficClass?: number;
  flowLabel?: number;
}

export interface UdpOptions {
  srcPort?: number;
  dstPort?: number;
  payload?: Uint8Array;
  /** IPv4 only: false leaves the checksum field 0 ("none"). Default true. */
  checksum?: boolean;
}

export interface TcpOptions {
  srcPort?: number;
  dstPort?: number;
  seq?: number;
  ack?: number;
  /** TcpFlags bits; default SYN. */
  flags?: number;
  window?: number;
  urgent?: number;
  options?: Uint8Array;
  payload?: Uint8Array;
}

function l2HeaderLength(opts: L2Options): number {
  return ETH_HEADER_LEN + (opts.vlans?.length ?? 0) * VLAN_TAG_LEN;
}

/** Ethernet header and tags; returns where the payload starts. */
function writeL2(buf: Uint8Array, opts: L2Options, etherType: number): number {
  const tags = (opts.vlans ?? []).map((t) => (typeof t === 'number' ? { vid: t } : t));
  const firstType = tags.length === 0 ? etherType : (tags[0].tpid ?? (tags.length > 1 ? EtherType.QinQ : EtherType.VLAN));
  emitEthernet({ dst: opts.dstMac ?? DEFAULT_DST_MAC, src: opts.srcMac ?? DEFAULT_SRC_MAC, etherType: firstType }, buf, 0);
  let at = EthField.ETHERTYPE + 2;
  for (let i = 0; i < tags.length; i++) {
    const next = i + 1 < tags.length ? (tags[i + 1].tpid ?? EtherType.VLAN) : etherType;
    at += emitVlan({ vid: tags[i].vid, pcp: tags[i].pcp ?? 0, dei: tags[i].dei ?? false, etherType: next }, buf, at);
  }
  return at;
}

function frameBuffer(opts: L2Options, l3Length: number): Buffer {
  const len = l2HeaderLength(opts) + l3Length;
  return Buffer.alloc(opts.pad ? Math.max(len, ETH_MIN_FRAME) : len);
}

/** Ethernet (and tags) around an arbitrary payload. */
export function buildEthernet(opts: L2Options & { etherType: number; payload: Uint8Array }): Buffer {
  const buf = frameBuffer(opts, opts.payload.length);
  buf.set(opts.payload, writeL2(buf, opts, opts.etherType));
  return buf;
}

type L4Writer = (buf: Buffer, off: number, pseudo: number) => void;

/**
 * The frame skeleton both IP versions share: L2 header and tags, the IP header
 * that emitIp writes from repr, then writeL4 right after it, given the
 * pseudo-header sum for its checksum. pseudoSum is a callback so that, as
 * before, a bad MAC or VLAN is reported ahead of a bad IP address.
 */
function buildIp<R extends { payloadLength: number }>(
  opts: L2Options,
  etherType: number,
  ipHeaderLen: number,
  emitIp: (repr: R, buf: Uint8Array, offset: number) => number,
  repr: R,
  pseudoSum: () => number,
  writeL4: L4Writer,
): Buffer {
  const buf = frameBuffer(opts, ipHeaderLen + repr.payloadLength);
  const ip = writeL2(buf, opts, etherType);
  emitIp(repr, buf, ip);
  writeL4(buf, ip + ipHeaderLen, pseudoSum());
  return buf;
}

function buildV4(opts: Ipv4Options, protocol: number, l4Length: number, writeL4: L4Writer): Buffer {
  const ip: Ipv4Repr = {
    src: opts.srcIp ?? DEFAULT_SRC_IP,
    dst: opts.dstIp ?? DEFAULT_DST_IP,
    protocol,
    payloadLength: l4Length,
    ttl: opts.ttl ?? 64,
    dscp: opts.dscp ?? 0,
    ecn: opts.ecn ?? 0,
    ident: opts.ident ?? 0,
    dontFrag: opts.dontFrag ?? true,
    moreFrags: false,
    fragOffset: 0,
  };
  const pseudoSum = () => pseudoSumV4(mustParseIpv4Addr(ip.src), mustParseIpv4Addr(ip.dst), protocol, l4Length);
  return buildIp(opts, EtherType.IPv4, IPV4_HEADER_LEN, emitIpv4, ip, pseudoSum, writeL4);
}

/** `protocol` is the fixed header's next header; builders write no extension headers, so it is also the pseudo-header's. */
function buildV6(opts: Ipv6Options, protocol: number, l4Length: number, writeL4: L4Writer): Buffer {
  const ip: Ipv6Repr = {
    src: opts.srcIp ?? DEFAULT_SRC_IP6,
    dst: opts.dstIp ?? DEFAULT_DST_IP6,
    nextHeader: protocol,
    payloadLength: l4Length,
    hopLimit: opts.hopLimit ?? 64,
    trafficClass: opts.trafficClass ?? 0,
    flowLabel: opts.flowLabel ?? 0,
  };
  const pseudoSum = () => pseudoSumV6(mustParseIpv6Addr(ip.src), 0, mustParseIpv6Addr(ip.dst), 0, protocol, l4Length);
  return buildIp(opts, EtherType.IPv6, IPV6_HEADER_LEN, emitIpv6, ip, pseudoSum, writeL4);
}

/** IPv4 around an arbitrary payload (no L4 checksum is computed). */
export function buildIpv4(opts: Ipv4Options & { protocol: number; payload: Uint8Array }): Buffer {
  return buildV4(opts, opts.protocol, opts.payload.length, (buf, off) => buf.set(opts.payload, off));
}

/** IPv6 around an arbitrary payload (no L4 checksum is computed). */
export function buildIpv6(opts: Ipv6Options & { nextHeader: number; payload: Uint8Array }): Buffer {
  return buildV6(opts, opts.nextHeader, opts.payload.length, (buf, off) => buf.set(opts.payload, off));
}

function udpRepr(opts: UdpOptions) {
  return { srcPort: opts.srcPort ?? 40000, dstPort: opts.dstPort ?? 5000, payload: opts.payload ?? new Uint8Array(0) };
}

function tcpRepr(opts: TcpOptions) {
  return {
    srcPort: opts.srcPort ?? 40000,
    dstPort: opts.dstPort ?? 80,
    seq: opts.seq ?? 1000,
    ack: opts.ack ?? 0,
    flags: opts.flags ?? TcpFlags.SYN,
    window: opts.window ?? 65535,
    urgent: opts.urgent ?? 0,
    options: opts.options ?? new Uint8Array(0),
    payload: opts.payload ?? new Uint8Array(0),
  };
}

export function buildUdp4(opts: Ipv4Options & UdpOptions = {}): Buffer {
  const repr = udpRepr(opts);
  return buildV4(opts, IpProtocol.UDP, udpLength(repr), (buf, off, pseudo) => {
    emitUdp(repr, buf, off, opts.checksum === false ? undefined : pseudo);
  });
}

export function buildUdp6(opts: Ipv6Options & Omit<UdpOptions, 'checksum'> = {}): Buffer {
  const repr = udpRepr(opts);
  return buildV6(opts, IpProtocol.UDP, udpLength(repr), (buf, off, pseudo) => {
    emitUdp(repr, buf, off, pseudo);
  });
}

export function buildTcp4(opts: Ipv4Options & TcpOptions = {}): Buffer {
  const repr = tcpRepr(opts);
  return buildV4(opts, IpProtocol.TCP, tcpLength(repr), (buf, off, pseudo) => {
    emitTcp(repr, buf, off, pseudo);
  });
}

export function buildTcp6(opts: Ipv6Options & TcpOptions = {}): Buffer {
  const repr = tcpRepr(opts);
  return buildV6(opts, IpProtocol.TCP, tcpLength(repr), (buf, off, pseudo) => {
    emitTcp(repr, buf, off, pseudo);
  });
}

export function buildIcmp4Echo(opts: Ipv4Options & { ident?: number; seq?: number; data?: Uint8Array; reply?: boolean } = {}): Buffer {
  const repr = {
    kind: opts.reply ? ('echoReply' as const) : ('echoRequest' as const),
    ident: opts.ident ?? 1,
    seq: opts.seq ?? 1,
    data: opts.data ?? new Uint8Array(0),
  };
  return buildV4(opts, IpProtocol.ICMP, icmpLength(repr), (buf, off) => {
    emitIcmp(repr, buf, off);
  });
}

/** Who-has targetIp, broadcast, target MAC zero. */
export function buildArpRequest(opts: { srcMac?: string; srcIp?: string; targetIp?: string; vlans?: L2Options['vlans']; pad?: boolean } = {}): Buffer {
  const srcMac = opts.srcMac ?? DEFAULT_SRC_MAC;
  const buf = frameBuffer(opts, ARP_LEN);
  const at = writeL2(buf, { ...opts, srcMac, dstMac: BROADCAST_MAC }, EtherType.ARP);
  emitArp(
    {
      operation: ArpOp.Request,
      senderMac: srcMac,
      senderIp: opts.srcIp ?? DEFAULT_SRC_IP,
      targetMac: '00:00:00:00:00:00',
      targetIp: opts.targetIp ?? DEFAULT_DST_IP,
    },
    buf,
    at,
  );
  return buf;
}

/** srcIp is-at srcMac, unicast to dstMac/dstIp. */
export function buildArpReply(
  opts: { srcMac?: string; srcIp?: string; dstMac?: string; dstIp?: string; vlans?: L2Options['vlans']; pad?: boolean } = {},
): Buffer {
  const srcMac = opts.srcMac ?? DEFAULT_SRC_MAC;
  const dstMac = opts.dstMac ?? DEFAULT_DST_MAC;
  const buf = frameBuffer(opts, ARP_LEN);
  const at = writeL2(buf, { ...opts, srcMac, dstMac }, EtherType.ARP);
  emitArp(
    {
      operation: ArpOp.Reply,
      senderMac: srcMac,
      senderIp: opts.srcIp ?? DEFAULT_SRC_IP,
      targetMac: dstMac,
      targetIp: opts.dstIp ?? DEFAULT_DST_IP,
    },
    buf,
    at,
  );
  return buf;
}

/**
 * The frame behind a virtio_net_hdr, as a TAP with IFF_VNET_HDR reads and
 * writes it: the vnet header at 0, the frame at VNET_HDR_LEN. Unset fields are 0.
 */
export function withVnetHeader(frame: Uint8Array, vnet: Partial<VnetRepr> = {}): Buffer {
  const buf = Buffer.alloc(VNET_HDR_LEN + frame.length);
  emitVnet(
    {
      flags: vnet.flags ?? 0,
      gsoType: vnet.gsoType ?? 0,
      hdrLen: vnet.hdrLen ?? 0,
      gsoSize: vnet.gsoSize ?? 0,
      csumStart: vnet.csumStart ?? 0,
      csumOffset: vnet.csumOffset ?? 0,
    },
    buf,
    0,
  );
  buf.set(frame, VNET_HDR_LEN);
  return buf;
}

/** n deterministic filler bytes (i * 31 + seed, mod 256), so a corrupted copy shows. */
export function filler(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}
