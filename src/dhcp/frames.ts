/**
 * DHCP client messages as whole Ethernet/IPv4/UDP frames, and server replies
 * read back from frames. The client owns no IP stack (it speaks for a
 * container endpoint, from the switch), so it writes the link and IP headers
 * itself: broadcast to ff:ff:ff:ff:ff:ff / 255.255.255.255 from 0.0.0.0 while
 * it has no address, unicast to the server from its leased address once it
 * has one (RFC 2131 4.1 and 4.4, table 4).
 */

import { EtherType, EthernetView, formatMac, mustParseMac } from '../packet/ethernet.js';
import { buildUdp4, BROADCAST_MAC } from '../packet/builders.js';
import { pseudoSumV4At } from '../packet/checksum.js';
import { IpProtocol, Ipv4View, formatIpv4Addr } from '../packet/ipv4.js';
import { UdpView } from '../packet/udp.js';
import {
  BootpOp,
  CHADDR_LEN,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  DhcpMessageType,
  DhcpOption,
  HTYPE_ETHERNET,
  emitDhcpMessage,
  ipv4Option,
  messageTypeOf,
  parseDhcpMessage,
  readIpv4,
  readIpv4List,
  readText,
  readU16,
  readU32,
  textOption,
  type DhcpMessage,
} from './message.js';

export const IPV4_ANY = '0.0.0.0';
export const IPV4_BROADCAST = '255.255.255.255';

/**
 * What the client asks servers for (option 55): subnet mask, router, DNS
 * servers, domain name, lease time, T1, T2, interface MTU. Servers send the
 * mask and times anyway; asking makes the intent plain in a capture.
 */
export const PARAMETER_REQUEST_LIST = Uint8Array.from([
  DhcpOption.SUBNET_MASK,
  DhcpOption.ROUTER,
  DhcpOption.DNS_SERVERS,
  DhcpOption.DOMAIN_NAME,
  DhcpOption.LEASE_TIME,
  DhcpOption.RENEWAL_TIME,
  DhcpOption.REBINDING_TIME,
  DhcpOption.INTERFACE_MTU,
]);

const IP_TTL = 64;
const HOSTNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Null when acceptable as option 12, otherwise the sentence saying why not. */
export function hostnameProblem(hostname: string): string | null {
  return HOSTNAME_RE.test(hostname)
    ? null
    : `DHCP hostname ${JSON.stringify(hostname)} must be 1 to 63 letters, digits, dots, hyphens or underscores, starting with a letter or digit`;
}

/** Option 61 as RFC 2132 9.14 suggests for Ethernet: hardware type 1, then the MAC. */
export function clientIdForMac(mac: Uint8Array): Uint8Array {
  const id = new Uint8Array(1 + mac.length);
  id[0] = HTYPE_ETHERNET;
  id.set(mac, 1);
  return id;
}

/** What every client message carries. */
export interface ClientMessageBase {
  /** The endpoint's MAC: the frame's source, chaddr and the client identifier. */
  mac: string;
  xid: number;
  /** Seconds since this acquisition or renewal began (0 when absent). */
  secs?: number;
  /** Option 12, in DISCOVER and REQUEST only; the server may register it in DNS. */
  hostname?: string;
}

/** The four occasions for a REQUEST (RFC 2131 4.3.2, table 4): they differ in ciaddr, options 50/54 and addressing. */
export type RequestTarget =
  /** Answering an OFFER: broadcast, naming the chosen server so the others withdraw theirs. */
  | { kind: 'selecting'; requestedAddress: string; serverId: string }
  /** After a restart, asking to keep a remembered address: broadcast, no server named. */
  | { kind: 'init-reboot'; requestedAddress: string }
  /**
   * At T1: unicast to the server that granted the lease. serverMac is the
   * next hop towards it: the source MAC of its ACK, which is the server or,
   * behind a relay, the relay (the router on this LAN).
   */
  | { kind: 'renewing'; clientAddress: string; serverId: string; serverMac: string }
  /** At T2: broadcast, so that any server that knows the lease may extend it. */
  | { kind: 'rebinding'; clientAddress: string };

interface Addressing {
  srcIp: string;
  dstIp: string;
  dstMac: string;
  ciaddr: string;
  /** Only a client without an address needs replies broadcast (RFC 2131 4.1). */
  broadcast: boolean;
}

const BROADCAST_ADDRESSING: Addressing = {
  srcIp: IPV4_ANY,
  dstIp: IPV4_BROADCAST,
  dstMac: BROADCAST_MAC,
  ciaddr: IPV4_ANY,
  broadcast: true,
};

function clientFrame(base: ClientMessageBase, type: number, addressing: Addressing, extra: [number, Uint8Array][]): Uint8Array {
  const mac = mustParseMac(base.mac);
  if (base.hostname !== undefined) {
    const problem = hostnameProblem(base.hostname);
    if (problem !== null) throw new RangeError(problem);
  }
  const chaddr = new Uint8Array(CHADDR_LEN);
  chaddr.set(mac, 0);
  const options = new Map<number, Uint8Array>([
    [DhcpOption.MESSAGE_TYPE, Uint8Array.of(type)],
    [DhcpOption.CLIENT_ID, clientIdForMac(mac)],
  ]);
  for (const [code, value] of extra) options.set(code, value);
  const message: DhcpMessage = {
    op: BootpOp.REQUEST,
    htype: HTYPE_ETHERNET,
    hlen: mac.length,
    hops: 0,
    xid: base.xid >>> 0,
    secs: base.secs ?? 0,
    broadcast: addressing.broadcast,
    ciaddr: addressing.ciaddr,
    yiaddr: IPV4_ANY,
    siaddr: IPV4_ANY,
    giaddr: IPV4_ANY,
    chaddr,
    serverName: '',
    bootFile: '',
    options,
  };
  return buildUdp4({
    srcMac: base.mac,
    dstMac: addressing.dstMac,
    srcIp: addressing.srcIp,
    dstIp: addressing.dstIp,
    srcPort: DHCP_CLIENT_PORT,
    dstPort: DHCP_SERVER_PORT,
    ttl: IP_TTL,
    payload: emitDhcpMessage(message),
  });
}

/** Options 12 and 55, which DISCOVER and every REQUEST carry. */
function askingOptions(base: ClientMessageBase): [number, Uint8Array][] {
  const out: [number, Uint8Array][] = [];
  if (base.hostname !== undefined) out.push([DhcpOption.HOSTNAME, textOption(base.hostname)]);
  out.push([DhcpOption.PARAMETER_REQUEST_LIST, PARAMETER_REQUEST_LIST]);
  return out;
}

/** DHCPDISCOVER, broadcast; `requestedAddress` (option 50) suggests the address the client had before. */
export function buildDiscover(base: ClientMessageBase & { requestedAddress?: string }): Uint8Array {
  const extra: [number, Uint8Array][] = [];
  if (base.requestedAddress !== undefined) extra.push([DhcpOption.REQUESTED_ADDRESS, ipv4Option(base.requestedAddress)]);
  return clientFrame(base, DhcpMessageType.DISCOVER, BROADCAST_ADDRESSING, [...extra, ...askingOptions(base)]);
}

/** DHCPREQUEST for one of the four occasions of RequestTarget. */
export function buildRequest(base: ClientMessageBase & RequestTarget): Uint8Array {
  switch (base.kind) {
    case 'selecting':
      return clientFrame(base, DhcpMessageType.REQUEST, BROADCAST_ADDRESSING, [
        [DhcpOption.REQUESTED_ADDRESS, ipv4Option(base.requestedAddress)],
        [DhcpOption.SERVER_ID, ipv4Option(base.serverId)],
        ...askingOptions(base),
      ]);
    case 'init-reboot':
      return clientFrame(base, DhcpMessageType.REQUEST, BROADCAST_ADDRESSING, [
        [DhcpOption.REQUESTED_ADDRESS, ipv4Option(base.requestedAddress)],
        ...askingOptions(base),
      ]);
    case 'renewing':
      return clientFrame(
        base,
        DhcpMessageType.REQUEST,
        { srcIp: base.clientAddress, dstIp: base.serverId, dstMac: base.serverMac, ciaddr: base.clientAddress, broadcast: false },
        askingOptions(base),
      );
    case 'rebinding':
      return clientFrame(
        base,
        DhcpMessageType.REQUEST,
        { srcIp: base.clientAddress, dstIp: IPV4_BROADCAST, dstMac: BROADCAST_MAC, ciaddr: base.clientAddress, broadcast: false },
        askingOptions(base),
      );
  }
}

/** DHCPRELEASE: unicast to the server that granted the lease (serverMac as in RequestTarget 'renewing'). */
export function buildRelease(base: { mac: string; xid: number; clientAddress: string; serverId: string; serverMac: string }): Uint8Array {
  return clientFrame(
    base,
    DhcpMessageType.RELEASE,
    { srcIp: base.clientAddress, dstIp: base.serverId, dstMac: base.serverMac, ciaddr: base.clientAddress, broadcast: false },
    [[DhcpOption.SERVER_ID, ipv4Option(base.serverId)]],
  );
}

/** DHCPDECLINE: the offered address is in use by someone else. Broadcast, since the client has no address it may use. */
export function buildDecline(base: { mac: string; xid: number; requestedAddress: string; serverId: string; message?: string }): Uint8Array {
  const extra: [number, Uint8Array][] = [
    [DhcpOption.REQUESTED_ADDRESS, ipv4Option(base.requestedAddress)],
    [DhcpOption.SERVER_ID, ipv4Option(base.serverId)],
  ];
  if (base.message !== undefined) extra.push([DhcpOption.MESSAGE, textOption(base.message)]);
  return clientFrame(base, DhcpMessageType.DECLINE, BROADCAST_ADDRESSING, extra);
}

// ---- reading frames -------------------------------------------------------------------

/** A DHCP message and the headers it came in. */
export interface DhcpFrame {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  message: DhcpMessage;
}

export interface FrameReadOptions {
  /**
   * The UDP checksum field holds only the pseudo-header sum, to be completed
   * by hardware that never ran: what a veth or TAP hands over with tx
   * checksum offload on, flagged VIRTIO_NET_HDR_F_NEEDS_CSUM in the vnet
   * header. The checksum is then not verified (there is nothing to verify).
   */
  checksumPartial?: boolean;
}

/**
 * The DHCP message in an untagged Ethernet/IPv4/UDP frame, or null when the
 * frame is anything else or malformed: truncated at any layer, an IPv4 header
 * checksum that fails, an IP fragment, a UDP checksum that is set and fails
 * (see FrameReadOptions), or a DHCP message parseDhcpMessage refuses. Bytes
 * after the IP total length (Ethernet padding) are ignored. Never throws.
 */
export function parseDhcpFrame(frame: Uint8Array, opts: FrameReadOptions = {}): DhcpFrame | null {
  const eth = new EthernetView();
  if (!eth.reset(frame, 0, frame.length) || eth.etherType() !== EtherType.IPv4) return null;
  const ip = new Ipv4View();
  if (!ip.reset(frame, eth.payloadOffset(), eth.payloadLength())) return null;
  if (ip.version() !== 4 || !ip.verifyChecksum() || ip.isFragment() || ip.protocol() !== IpProtocol.UDP) return null;
  const udp = new UdpView();
  if (!udp.reset(frame, ip.payloadOffset(), ip.payloadLength())) return null;
  // A zero field means the sender computed no checksum, which IPv4 allows.
  if (udp.checksum() !== 0 && !opts.checksumPartial && !udp.verifyChecksum(pseudoSumV4At(frame, ip.off, udp.length()))) return null;
  const message = parseDhcpMessage(frame, udp.payloadOffset(), udp.payloadLength());
  if (message === null) return null;
  return {
    srcMac: formatMac(frame, eth.off + 6),
    dstMac: formatMac(frame, eth.off),
    srcIp: formatIpv4Addr(ip.src()),
    dstIp: formatIpv4Addr(ip.dst()),
    srcPort: udp.srcPort(),
    dstPort: udp.dstPort(),
    message,
  };
}

export type DhcpReplyType = 'offer' | 'ack' | 'nak';

/** A server's OFFER, ACK or NAK with the options the client asked for already read. */
export interface DhcpReply {
  type: DhcpReplyType;
  xid: number;
  /** yiaddr: the address offered or granted ('0.0.0.0' in a NAK). */
  yourAddress: string;
  /** Option 54, or null when absent (RFC 2131 requires it in OFFER and ACK; NAKs from old servers lack it). */
  serverId: string | null;
  /** The Ethernet source: the server or the relay that forwarded the reply, i.e. the next hop towards the server. */
  serverMac: string;
  /** The IP source: the server or the relay. */
  sourceIp: string;
  subnetMask: string | null;
  routers: string[];
  dnsServers: string[];
  leaseSeconds: number | null;
  t1Seconds: number | null;
  t2Seconds: number | null;
  /** Option 15; null when absent or not a plain DNS name (letters, digits, '-', '_', dots). */
  domain: string | null;
  /** Option 26; null when absent or below IPv4's minimum of 68. */
  mtu: number | null;
  /** Option 56: a NAK's reason, for the log. */
  message: string | null;
}

const REPLY_TYPES: Record<number, DhcpReplyType> = {
  [DhcpMessageType.OFFER]: 'offer',
  [DhcpMessageType.ACK]: 'ack',
  [DhcpMessageType.NAK]: 'nak',
};

const IPV4_MIN_MTU = 68;
const DOMAIN_RE = /^(?=.{1,253}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/;

/**
 * The server reply to one of this client's messages, or null when the frame
 * is not one: not a DHCP frame from port 67 to port 68 (parseDhcpFrame), not
 * a BOOTREPLY for an Ethernet chaddr, another xid or chaddr, a message type
 * other than OFFER/ACK/NAK, an OFFER or ACK without yiaddr, or an option the
 * client reads with a length it cannot have (a 3-byte mask, a 5-byte router
 * list, a 3-byte lease time): such a reply is malformed, not partly usable.
 */
export function parseServerReply(frame: Uint8Array, expect: { xid: number; mac: Uint8Array }, opts: FrameReadOptions = {}): DhcpReply | null {
  const parsed = parseDhcpFrame(frame, opts);
  if (parsed === null || parsed.srcPort !== DHCP_SERVER_PORT || parsed.dstPort !== DHCP_CLIENT_PORT) return null;
  const m = parsed.message;
  if (m.op !== BootpOp.REPLY || m.htype !== HTYPE_ETHERNET || m.hlen !== expect.mac.length || m.xid !== expect.xid >>> 0) return null;
  for (let i = 0; i < expect.mac.length; i++) if (m.chaddr[i] !== expect.mac[i]) return null;
  const typeCode = messageTypeOf(m);
  const type = typeCode === null ? undefined : REPLY_TYPES[typeCode];
  if (type === undefined) return null;
  if (type !== 'nak' && m.yiaddr === IPV4_ANY) return null;

  // Each option the client reads is read strictly: present with an impossible length makes the whole reply malformed.
  const o = m.options;
  const serverId = readOptional(o, DhcpOption.SERVER_ID, readIpv4);
  const subnetMask = readOptional(o, DhcpOption.SUBNET_MASK, readIpv4);
  const routers = readOptional(o, DhcpOption.ROUTER, readIpv4List);
  const dnsServers = readOptional(o, DhcpOption.DNS_SERVERS, readIpv4List);
  const leaseSeconds = readOptional(o, DhcpOption.LEASE_TIME, readU32);
  const t1Seconds = readOptional(o, DhcpOption.RENEWAL_TIME, readU32);
  const t2Seconds = readOptional(o, DhcpOption.REBINDING_TIME, readU32);
  const mtu = readOptional(o, DhcpOption.INTERFACE_MTU, readU16);
  if (
    serverId === MALFORMED ||
    subnetMask === MALFORMED ||
    routers === MALFORMED ||
    dnsServers === MALFORMED ||
    leaseSeconds === MALFORMED ||
    t1Seconds === MALFORMED ||
    t2Seconds === MALFORMED ||
    mtu === MALFORMED
  ) {
    return null;
  }
  const domain = readOptional(o, DhcpOption.DOMAIN_NAME, readText);
  const message = readOptional(o, DhcpOption.MESSAGE, readText);
  return {
    type,
    xid: m.xid,
    yourAddress: m.yiaddr,
    serverId,
    serverMac: parsed.srcMac,
    sourceIp: parsed.srcIp,
    subnetMask,
    routers: routers ?? [],
    dnsServers: dnsServers ?? [],
    // Checked because it ends up in the container's resolv.conf, where a newline would add lines of the server's choosing.
    domain: typeof domain === 'string' && DOMAIN_RE.test(domain) ? domain : null,
    leaseSeconds,
    t1Seconds,
    t2Seconds,
    mtu: mtu !== null && mtu >= IPV4_MIN_MTU ? mtu : null,
    message: typeof message === 'string' ? message : null,
  };
}

const MALFORMED = Symbol('malformed');

/** Option `code` read with `read`: null when absent, MALFORMED when present but `read` refuses it. */
function readOptional<T>(options: Map<number, Uint8Array>, code: number, read: (value: Uint8Array) => T | null): T | null | typeof MALFORMED {
  const value = options.get(code);
  if (value === undefined) return null;
  return read(value) ?? MALFORMED;
}
