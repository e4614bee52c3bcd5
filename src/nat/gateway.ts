/**
 * The NAT gateway of one nat network: the router the containers see as their
 * default gateway, and the one address (the external address) the host sees
 * behind the network's host TAP. Container addresses never leave the switch.
 *
 * The switch hands it two kinds of frames, after the ingress port's policy:
 * - from a container, addressed to the gateway's MAC (or an ARP request for
 *   the gateway address): fromInside;
 * - from the host TAP (the external port): fromOutside.
 * It answers ARP and ICMP echo for its own addresses in place (the request
 * buffer becomes the reply), and translates everything else:
 *   outbound   container ip:port -> external ip:port, a port from the pool
 *              (or the published port, when the source is a published target)
 *   inbound    external ip:port -> container ip:port, by the live mapping or
 *              by a published port
 *   hairpin    a container reaching the external address: both at once, so
 *              the reply comes back through the gateway too
 * TCP, UDP and ICMP echo are translated as flows: the decision goes into the
 * Decision as rewrites, the switch compiles them into a transposition and the
 * flow table applies it to every later frame without coming back here. ICMP
 * errors (unreachable, time exceeded, parameter problem) carry the header of
 * the packet they answer; they are translated here, in place, embedded header
 * included, and never cached.
 *
 * The gateway does not decrement the TTL: it is a translator in front of the
 * host's routing, which does, so loops still end and traceroute shows the
 * host as the first hop.
 */
import { checksumAdjust16, checksumAdjust32, internetChecksum } from '../packet/checksum.js';
import { read16, read32, write16, write32 } from '../packet/bytes.js';
import { DropReason } from '../packet/drop-reasons.js';
import { EtherType, macHi16, macLo32, mustParseMac, writeMac } from '../packet/ethernet.js';
import { IpProtocol, mustParseIpv4Addr } from '../packet/ipv4.js';
import { ArpField, ArpOp, writeArpReply } from '../packet/arp.js';
import type { Conntrack } from '../vfp/conntrack.js';
import { KeyWord, KEY_WORDS, Meta } from '../vfp/key.js';
import { Rewrite, type Decision } from '../vfp/pipeline.js';
import { NatTable, natProtocolIndex, type NatTableCounters } from './nat-table.js';

/** egressPort of a FORWARD to a load balancer's VIP (a published VIP): the network's balancer takes the frame on. */
export const VIA_BALANCER = -2;

export const GatewayResult = {
  /** Translated: rewrites are in the Decision and the key; the frame goes to `egressPort`. */
  FORWARD: 0,
  /** Translated in place (an ICMP error): send to `egressPort`, do not cache. */
  FORWARD_ONCE: 1,
  /** The frame is now the gateway's answer: send it back out of the port it came in on. */
  REPLIED: 2,
  /** Drop and count `dropReason` on the ingress port. */
  DROP: 3,
} as const;

/** How the control plane describes a gateway (addresses as dotted quads, MACs as aa:bb:...). */
export interface NatGatewaySpec {
  subnet: string;
  gatewayIp: string;
  gatewayMac: string;
  externalIp: string;
  externalMac: string;
  /** The kernel side of the host TAP, where translated frames are addressed. */
  hostMac: string;
  portFirst: number;
  portLast: number;
}

export interface NatNeighbor {
  ip: string;
  mac: string;
  portId: number;
}

export interface NatPublishSpec {
  protocol: 'tcp' | 'udp';
  /** The port on the external address (and, by the proxy, on the host). */
  externalPort: number;
  ip: string;
  port: number;
}

export interface NatCounters extends NatTableCounters {
  /** Size of each protocol's port pool. */
  poolSize: number;
}

const ICMP_ECHO_REPLY = 0;
const ICMP_UNREACHABLE = 3;
const ICMP_ECHO_REQUEST = 8;
const ICMP_TIME_EXCEEDED = 11;
const ICMP_PARAMETER_PROBLEM = 12;
const ICMP_ERROR_MIN = 8 + 20 + 8;
const ICMP_INDEX = 2;

export class NatGateway {
  readonly table: NatTable;
  readonly gatewayIp: number;
  readonly externalIp: number;
  private readonly subnetBase: number;
  private readonly subnetMask: number;
  private readonly gwMacHi: number;
  private readonly gwMacLo: number;
  private readonly extMacHi: number;
  private readonly extMacLo: number;
  private readonly hostMacHi: number;
  private readonly hostMacLo: number;
  /** The host TAP's port id in the switch, once attached. */
  externalPortId = -1;
  /** The MAC of a load balancer VIP of the network, or null when `ip` is no VIP: a published port may target a VIP. Set by the switch. */
  vipMac: ((ip: number) => { hi: number; lo: number } | null) | null = null;

  /** Container address -> port and MAC (the control plane knows them; the gateway never ARPs). */
  private readonly neighborPort = new Map<number, number>();
  private readonly neighborMacHi = new Map<number, number>();
  private readonly neighborMacLo = new Map<number, number>();
  /** (protocol index << 16 | external port) -> target address and port (port in the low 16 bits of a second map). */
  private readonly publishedIp = new Map<number, number>();
  private readonly publishedPort = new Map<number, number>();
  /** protocol index * 2^48 + address * 2^16 + port -> external port: the reverse, for replies. */
  private readonly publishedBy = new Map<number, number>();
  private publishedList: NatPublishSpec[] = [];

  // Outputs of the last route call; the switch reads them at once.
  egressPort = -1;
  dropReason = 0;
  private pendingProtocol = -1;
  private pendingPort = -1;
  private resolvedIp = 0;
  private resolvedPort = 0;
  private readonly scratchKey = new Uint32Array(KEY_WORDS);

  constructor(
    spec: NatGatewaySpec,
    private readonly ct: Conntrack,
  ) {
    const [base, prefix] = spec.subnet.split('/');
    this.subnetMask = Number(prefix) === 0 ? 0 : (0xffffffff << (32 - Number(prefix))) >>> 0;
    this.subnetBase = (ipv4(base) & this.subnetMask) >>> 0;
    this.gatewayIp = ipv4(spec.gatewayIp);
    this.externalIp = ipv4(spec.externalIp);
    [this.gwMacHi, this.gwMacLo] = mac(spec.gatewayMac);
    [this.extMacHi, this.extMacLo] = mac(spec.externalMac);
    [this.hostMacHi, this.hostMacLo] = mac(spec.hostMac);
    this.table = new NatTable(spec.portFirst, spec.portLast, ct);
  }

  setNeighbor(n: NatNeighbor): void {
    const ip = ipv4(n.ip);
    const [hi, lo] = mac(n.mac);
    this.neighborPort.set(ip, n.portId);
    this.neighborMacHi.set(ip, hi);
    this.neighborMacLo.set(ip, lo);
  }

  removeNeighbor(portId: number): void {
    for (const [ip, p] of this.neighborPort) {
      if (p !== portId) continue;
      this.neighborPort.delete(ip);
      this.neighborMacHi.delete(ip);
      this.neighborMacLo.delete(ip);
    }
  }

  /** Replaces the published ports at once. */
  setPublished(list: NatPublishSpec[]): void {
    for (const p of this.publishedList) this.table.unreserve(natProtocolIndex(protocolNumber(p.protocol)), p.externalPort);
    this.publishedIp.clear();
    this.publishedPort.clear();
    this.publishedBy.clear();
    for (const p of list) {
      const pi = natProtocolIndex(protocolNumber(p.protocol));
      const ip = ipv4(p.ip);
      this.publishedIp.set((pi << 16) | p.externalPort, ip);
      this.publishedPort.set((pi << 16) | p.externalPort, p.port);
      this.publishedBy.set(pi * 2 ** 48 + ip * 65536 + p.port, p.externalPort);
      this.table.reserve(pi, p.externalPort);
    }
    this.publishedList = list.map((p) => ({ ...p }));
  }

  get published(): readonly NatPublishSpec[] {
    return this.publishedList;
  }

  counters(): NatCounters {
    return { ...this.table.counters(), poolSize: this.table.size };
  }

  /** Is this frame from a container meant for the gateway (its MAC, or an ARP request for its address)? */
  claims(buf: Uint8Array, off: number, key: Uint32Array, meta: Int32Array): boolean {
    if (key[KeyWord.DST_MAC_HI] === this.gwMacHi && key[KeyWord.DST_MAC_LO] === this.gwMacLo) return true;
    if (key[KeyWord.ETH_VLAN] >>> 16 !== EtherType.ARP || key[KeyWord.DST_MAC_HI] !== 0xffff) return false;
    const arp = off + meta[Meta.ETHERTYPE_AT] + 2;
    return read32(buf, arp + ArpField.TPA) === this.gatewayIp;
  }

  /**
   * A frame from a container. `insideSlot` is its connection at the
   * container's port (or -1), which finds a mapping it already has.
   */
  fromInside(buf: Uint8Array, off: number, len: number, key: Uint32Array, meta: Int32Array, portId: number, insideSlot: number, d: Decision, now: number): number {
    this.pendingProtocol = -1;
    const etherType = key[KeyWord.ETH_VLAN] >>> 16;
    if (etherType === EtherType.ARP) return this.answerArp(buf, off, meta, this.gatewayIp, this.gwMacHi, this.gwMacLo);
    if (meta[Meta.IP_VERSION] !== 4) return this.drop(DropReason.natNoMapping);
    const dst = key[KeyWord.DST_IP];
    const proto = key[KeyWord.PROTO] >>> 24;
    const icmpType = (key[KeyWord.PROTO] >>> 16) & 0xff;
    if (dst === this.gatewayIp || (dst === this.externalIp && proto === IpProtocol.ICMP && icmpType === ICMP_ECHO_REQUEST)) {
      if (proto === IpProtocol.ICMP && icmpType === ICMP_ECHO_REQUEST) return this.answerEcho(buf, off, meta, this.gwMacHi, this.gwMacLo);
      return this.drop(DropReason.natNoMapping);
    }
    if (this.inSubnet(dst)) return this.drop(DropReason.natNoMapping);
    const pi = natProtocolIndex(proto);
    if (pi === ICMP_INDEX && isIcmpError(icmpType)) return this.errorFromInside(buf, off, len, key, meta, portId, now);
    if (pi < 0 || (pi === ICMP_INDEX && icmpType !== ICMP_ECHO_REQUEST && icmpType !== ICMP_ECHO_REPLY)) return this.drop(DropReason.natNoMapping);

    // Destination: the external address is a hairpin, anything else leaves through the host.
    if (dst === this.externalIp) {
      const r = this.translateInbound(pi, key, d, now);
      if (r !== GatewayResult.FORWARD) return r;
    } else {
      this.egressPort = this.externalPortId;
      if (this.egressPort < 0) return this.drop(DropReason.noEgress);
      setMacs(key, d, this.extMacHi, this.extMacLo, this.hostMacHi, this.hostMacLo);
    }

    // Source: a published target answers from its published port; anything else maps dynamically.
    const srcIp = key[KeyWord.SRC_IP];
    const srcPort = l4Source(key, pi);
    let external = pi === ICMP_INDEX ? undefined : this.publishedBy.get(pi * 2 ** 48 + srcIp * 65536 + srcPort);
    if (external === undefined && insideSlot >= 0) {
      const found = this.table.findByConnection(pi, insideSlot, now);
      if (found >= 0) external = found;
    }
    if (external === undefined) {
      // An echo reply with no mapping answers a request that never came through here.
      if (pi === ICMP_INDEX && icmpType !== ICMP_ECHO_REQUEST) return this.drop(DropReason.natNoMapping);
      const port = this.table.allocate(pi, srcIp, srcPort, key[KeyWord.DST_IP], l4Destination(key, pi), portId, now);
      if (port < 0) return this.drop(DropReason.natPoolExhausted);
      this.pendingProtocol = pi;
      this.pendingPort = port;
      external = port;
    }
    translate(key, d, pi, true, this.externalIp, srcPort, external);
    return GatewayResult.FORWARD;
  }

  /** A frame from the host TAP. */
  fromOutside(buf: Uint8Array, off: number, len: number, key: Uint32Array, meta: Int32Array, d: Decision, now: number): number {
    this.pendingProtocol = -1;
    const etherType = key[KeyWord.ETH_VLAN] >>> 16;
    if (etherType === EtherType.ARP) return this.answerArp(buf, off, meta, this.externalIp, this.extMacHi, this.extMacLo);
    if (meta[Meta.IP_VERSION] !== 4 || key[KeyWord.DST_IP] !== this.externalIp) return this.drop(DropReason.natNoMapping);
    const proto = key[KeyWord.PROTO] >>> 24;
    const icmpType = (key[KeyWord.PROTO] >>> 16) & 0xff;
    const pi = natProtocolIndex(proto);
    if (pi === ICMP_INDEX) {
      if (icmpType === ICMP_ECHO_REQUEST) return this.answerEcho(buf, off, meta, this.extMacHi, this.extMacLo);
      if (isIcmpError(icmpType)) return this.errorFromOutside(buf, off, len, key, meta, now);
      if (icmpType !== ICMP_ECHO_REPLY) return this.drop(DropReason.natNoMapping);
    }
    if (pi < 0) return this.drop(DropReason.natNoMapping);
    return this.translateInbound(pi, key, d, now);
  }

  /**
   * The frame's connection at the container's port now exists (created or
   * found at `slot`): a mapping taken for it becomes bound to it. A slot of -1
   * (no connection was started, e.g. a bare RST) gives the port back, and
   * false says the translation must not be cached: its port is no longer held.
   */
  commit(slot: number): boolean {
    if (this.pendingProtocol < 0) return true;
    const backed = slot >= 0;
    if (backed) this.table.bind(this.pendingProtocol, this.pendingPort, slot);
    else this.table.abandon(this.pendingProtocol, this.pendingPort);
    this.pendingProtocol = -1;
    return backed;
  }

  /** The frame was dropped after route: give back what it took. */
  abandon(): void {
    if (this.pendingProtocol >= 0) this.table.abandon(this.pendingProtocol, this.pendingPort);
    this.pendingProtocol = -1;
  }

  /** Destination external ip:port -> container, by live mapping first, then by published port. */
  private translateInbound(pi: number, key: Uint32Array, d: Decision, now: number): number {
    const dstPort = l4Destination(key, pi);
    if (!this.resolve(pi, dstPort, key[KeyWord.SRC_IP], l4Source(key, pi), now)) return this.drop(DropReason.natNoMapping);
    const ip = this.resolvedIp;
    const port = this.resolvedPort;
    const egress = this.neighborPort.get(ip);
    if (egress === undefined) {
      // A published VIP: translated to it here, balanced to a backend by the network's load balancer next.
      const vip = this.vipMac?.(ip) ?? null;
      if (vip === null) return this.drop(DropReason.natNoMapping);
      this.egressPort = VIA_BALANCER;
      setMacs(key, d, this.gwMacHi, this.gwMacLo, vip.hi, vip.lo);
      translate(key, d, pi, false, ip, dstPort, port);
      return GatewayResult.FORWARD;
    }
    this.egressPort = egress;
    setMacs(key, d, this.gwMacHi, this.gwMacLo, this.neighborMacHi.get(ip)!, this.neighborMacLo.get(ip)!);
    translate(key, d, pi, false, ip, dstPort, port);
    return GatewayResult.FORWARD;
  }

  /**
   * The container behind external port `port` for a packet from
   * remoteIp:remotePort: a live mapping first, then a published port (TCP and
   * UDP). Leaves the answer in resolvedIp and resolvedPort.
   */
  private resolve(pi: number, port: number, remoteIp: number, remotePort: number, now: number): boolean {
    const i = this.table.findByExternal(pi, port, remoteIp, remotePort, now);
    if (i >= 0) {
      this.resolvedIp = this.table.insideIpOf(pi, i);
      this.resolvedPort = this.table.insidePortOf(pi, i);
      return true;
    }
    const target = pi === ICMP_INDEX ? undefined : this.publishedIp.get((pi << 16) | port);
    if (target === undefined) return false;
    this.resolvedIp = target;
    this.resolvedPort = this.publishedPort.get((pi << 16) | port)!;
    return true;
  }

  private drop(reason: number): number {
    this.abandon();
    this.dropReason = reason;
    return GatewayResult.DROP;
  }

  private inSubnet(ip: number): boolean {
    return ((ip & this.subnetMask) >>> 0) === this.subnetBase;
  }

  // --- answers, in place ---

  private answerArp(buf: Uint8Array, off: number, meta: Int32Array, ip: number, macHi: number, macLo: number): number {
    const arp = off + meta[Meta.ETHERTYPE_AT] + 2;
    if (read16(buf, arp + ArpField.OPER) !== ArpOp.Request || read32(buf, arp + ArpField.TPA) !== ip) return this.drop(DropReason.natNoMapping);
    writeArpReply(buf, off, arp, macHi, macLo);
    return GatewayResult.REPLIED;
  }

  private answerEcho(buf: Uint8Array, off: number, meta: Int32Array, macHi: number, macLo: number): number {
    const l3 = meta[Meta.L3_OFFSET];
    const l4 = meta[Meta.L4_OFFSET];
    if (l4 < 0) return this.drop(DropReason.natNoMapping);
    buf.copyWithin(off, off + 6, off + 12);
    writeMac(buf, off + 6, macHi, macLo);
    const src = read32(buf, l3 + 12);
    write32(buf, l3 + 12, read32(buf, l3 + 16));
    write32(buf, l3 + 16, src);
    buf[l4] = ICMP_ECHO_REPLY;
    write16(buf, l4 + 2, checksumAdjust16(read16(buf, l4 + 2), ICMP_ECHO_REQUEST << 8, ICMP_ECHO_REPLY << 8));
    return GatewayResult.REPLIED;
  }

  // --- ICMP errors: the embedded header names the flow ---

  /**
   * From the host: an error about a packet we sent out (its embedded source is
   * the external address and a mapped port). Everything that names the
   * external side is put back to the container's address and port.
   */
  private errorFromOutside(buf: Uint8Array, off: number, len: number, key: Uint32Array, meta: Int32Array, now: number): number {
    const l3 = meta[Meta.L3_OFFSET];
    const l4 = meta[Meta.L4_OFFSET];
    const end = icmpEnd(buf, l3, off + len);
    const emb = l4 + 8;
    if (l4 < 0 || end - l4 < ICMP_ERROR_MIN || buf[emb] >>> 4 !== 4 || read32(buf, emb + 12) !== this.externalIp) return this.drop(DropReason.natNoMapping);
    const embL4 = emb + ((buf[emb] & 0x0f) << 2);
    if (embL4 + 8 > end) return this.drop(DropReason.natNoMapping);
    const pi = natProtocolIndex(buf[emb + 9]);
    if (pi < 0) return this.drop(DropReason.natNoMapping);
    const remoteIp = read32(buf, emb + 16);
    const isEcho = pi === ICMP_INDEX;
    if (isEcho && buf[embL4] !== ICMP_ECHO_REQUEST) return this.drop(DropReason.natNoMapping);
    const externalPort = isEcho ? read16(buf, embL4 + 4) : read16(buf, embL4);
    const remotePort = isEcho ? 0 : read16(buf, embL4 + 2);
    if (!this.resolve(pi, externalPort, remoteIp, remotePort, now)) return this.drop(DropReason.natNoMapping);
    const ip = this.resolvedIp;
    const port = this.resolvedPort;
    const egress = this.neighborPort.get(ip);
    if (egress === undefined) return this.drop(DropReason.natNoMapping);

    // Outer destination, and the embedded source that the container sent.
    rewriteAddress(buf, l3, l3 + 16, ip);
    rewriteAddress(buf, emb, emb + 12, ip);
    rewriteEmbeddedPort(buf, embL4, end, pi, this.externalIp, ip, externalPort, port, true);
    finishIcmpError(buf, l4, end);
    writeMac(buf, off, this.neighborMacHi.get(ip)!, this.neighborMacLo.get(ip)!);
    writeMac(buf, off + 6, this.gwMacHi, this.gwMacLo);
    key[KeyWord.DST_IP] = ip;
    this.egressPort = egress;
    return GatewayResult.FORWARD_ONCE;
  }

  /**
   * From a container: an error about a packet it received through the NAT
   * (the embedded destination is its own address and port), for example a
   * port unreachable for a published UDP port with nothing listening.
   */
  private errorFromInside(buf: Uint8Array, off: number, len: number, key: Uint32Array, meta: Int32Array, portId: number, now: number): number {
    const l3 = meta[Meta.L3_OFFSET];
    const l4 = meta[Meta.L4_OFFSET];
    const end = icmpEnd(buf, l3, off + len);
    const emb = l4 + 8;
    const insideIp = key[KeyWord.SRC_IP];
    if (l4 < 0 || end - l4 < ICMP_ERROR_MIN || buf[emb] >>> 4 !== 4 || read32(buf, emb + 16) !== insideIp) return this.drop(DropReason.natNoMapping);
    const embL4 = emb + ((buf[emb] & 0x0f) << 2);
    const pi = natProtocolIndex(buf[emb + 9]);
    if (embL4 + 8 > end || pi < 0 || pi === ICMP_INDEX) return this.drop(DropReason.natNoMapping);
    const remoteIp = read32(buf, emb + 12);
    const remotePort = read16(buf, embL4);
    const insidePort = read16(buf, embL4 + 2);
    let external = this.publishedBy.get(pi * 2 ** 48 + insideIp * 65536 + insidePort);
    if (external === undefined) {
      // The connection at this port, keyed as the embedded packet arrived (remote -> container).
      const k = this.scratchKey;
      k.fill(0);
      k[KeyWord.ETH_VLAN] = EtherType.IPv4 << 16;
      k[KeyWord.PROTO] = buf[emb + 9] << 24;
      k[KeyWord.PORTS] = ((remotePort << 16) | insidePort) >>> 0;
      k[KeyWord.SRC_IP] = remoteIp;
      k[KeyWord.DST_IP] = insideIp;
      const slot = this.ct.lookup(portId, k, 1);
      const found = slot >= 0 ? this.table.findByConnection(pi, slot, now) : -1;
      if (found < 0) return this.drop(DropReason.natNoMapping);
      external = found;
    }
    if (this.externalPortId < 0) return this.drop(DropReason.noEgress);
    rewriteAddress(buf, l3, l3 + 12, this.externalIp);
    rewriteAddress(buf, emb, emb + 16, this.externalIp);
    rewriteEmbeddedPort(buf, embL4, end, pi, insideIp, this.externalIp, insidePort, external, false);
    finishIcmpError(buf, l4, end);
    writeMac(buf, off, this.hostMacHi, this.hostMacLo);
    writeMac(buf, off + 6, this.extMacHi, this.extMacLo);
    key[KeyWord.SRC_IP] = this.externalIp;
    this.egressPort = this.externalPortId;
    return GatewayResult.FORWARD_ONCE;
  }
}

function isIcmpError(type: number): boolean {
  return type === ICMP_UNREACHABLE || type === ICMP_TIME_EXCEEDED || type === ICMP_PARAMETER_PROBLEM;
}

/** The source "port" of a flow: the TCP/UDP port, or the echo identifier. */
function l4Source(key: Uint32Array, pi: number): number {
  return pi === ICMP_INDEX ? key[KeyWord.PROTO] & 0xffff : key[KeyWord.PORTS] >>> 16;
}

function l4Destination(key: Uint32Array, pi: number): number {
  return pi === ICMP_INDEX ? key[KeyWord.PROTO] & 0xffff : key[KeyWord.PORTS] & 0xffff;
}

function setMacs(key: Uint32Array, d: Decision, srcHi: number, srcLo: number, dstHi: number, dstLo: number): void {
  d.rwFlags |= Rewrite.SRC_MAC | Rewrite.DST_MAC;
  d.srcMacHi = key[KeyWord.SRC_MAC_HI] = srcHi;
  d.srcMacLo = key[KeyWord.SRC_MAC_LO] = srcLo;
  d.dstMacHi = key[KeyWord.DST_MAC_HI] = dstHi;
  d.dstMacLo = key[KeyWord.DST_MAC_LO] = dstLo;
}

/** Rewrites the flow's source (or destination) address and port: in the key, and as the Decision's rewrite. */
function translate(key: Uint32Array, d: Decision, pi: number, source: boolean, ip: number, oldPort: number, port: number): void {
  d.rwFlags |= source ? Rewrite.SRC_IP : Rewrite.DST_IP;
  if (source) d.srcIp = ip;
  else d.dstIp = ip;
  key[source ? KeyWord.SRC_IP : KeyWord.DST_IP] = ip;
  if (port === oldPort) return;
  d.rwFlags |= source ? Rewrite.SRC_PORT : Rewrite.DST_PORT;
  if (source) d.srcPort = port;
  else d.dstPort = port;
  if (pi === ICMP_INDEX) key[KeyWord.PROTO] = ((key[KeyWord.PROTO] & 0xffff0000) | port) >>> 0;
  else key[KeyWord.PORTS] = (source ? (port << 16) | (key[KeyWord.PORTS] & 0xffff) : (key[KeyWord.PORTS] & 0xffff0000) | port) >>> 0;
}

/** Where the ICMP message ends: the IPv4 total length, or the frame, whichever is shorter. */
function icmpEnd(buf: Uint8Array, l3: number, frameEnd: number): number {
  return Math.min(frameEnd, l3 + read16(buf, l3 + 2));
}

/** Writes an IPv4 address at `at` in the header at `ip` and fixes that header's checksum. */
function rewriteAddress(buf: Uint8Array, ip: number, at: number, addr: number): void {
  const old = read32(buf, at);
  write32(buf, at, addr);
  write16(buf, ip + 10, checksumAdjust32(read16(buf, ip + 10), old, addr));
}

/**
 * The embedded transport header: the port (or echo identifier) that named
 * the NAT side, and its checksum where the quoted bytes include it (the
 * address changed too, through the pseudo-header). `source` says which of the
 * two ports is rewritten.
 */
function rewriteEmbeddedPort(buf: Uint8Array, l4: number, end: number, pi: number, oldIp: number, newIp: number, oldPort: number, newPort: number, source: boolean): void {
  if (pi === ICMP_INDEX) {
    write16(buf, l4 + 4, newPort);
    write16(buf, l4 + 2, checksumAdjust16(read16(buf, l4 + 2), oldPort, newPort));
    return;
  }
  write16(buf, source ? l4 : l4 + 2, newPort);
  const csumAt = l4 + (pi === 0 ? 16 : 6);
  if (csumAt + 2 > end) return;
  const csum = read16(buf, csumAt);
  if (pi === 1 && csum === 0) return; // UDP without a checksum
  write16(buf, csumAt, checksumAdjust16(checksumAdjust32(csum, oldIp, newIp), oldPort, newPort));
}

/** The ICMP checksum covers the whole message, quoted bytes included: recomputed (errors are small and rare). */
function finishIcmpError(buf: Uint8Array, l4: number, end: number): void {
  write16(buf, l4 + 2, 0);
  write16(buf, l4 + 2, internetChecksum(buf, l4, end - l4));
}

function protocolNumber(name: 'tcp' | 'udp'): number {
  return name === 'tcp' ? IpProtocol.TCP : IpProtocol.UDP;
}

function ipv4(s: string): number {
  return mustParseIpv4Addr(s);
}

function mac(s: string): [number, number] {
  const b = mustParseMac(s);
  return [macHi16(b, 0), macLo32(b, 0)];
}
