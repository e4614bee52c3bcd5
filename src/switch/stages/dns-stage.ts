/**
 * The network's resolver (docs/DNS.md): DNS that a container sends to the
 * resolver address (the gateway's, or a configured one), over UDP or TCP
 * port 53, is answered here, in the data path, for the network's own names
 * (src/dns/names.ts): NAME and NAME.NETWORK to A and AAAA records, the PTR
 * of a known address to NAME.NETWORK, NXDOMAIN for other names under
 * NETWORK. Every other name is handed to the control plane (a copy, through
 * the sink's dnsQuery, held to a rate), which asks the host's resolvers and
 * sends the answer back to the port; dnsAnswerFrame below builds that answer
 * frame from the query frame, so both transports come out right.
 *
 * UDP: the frame becomes its answer in place. The reply comes from the
 * resolver's MAC and address, to the asker's, ports swapped, IPv4 without
 * options, checksums complete (the vnet header is cleared: no partial
 * checksum, no segmentation); it may be longer than the query, up to what
 * the query allows (512 bytes, or its EDNS payload size up to 1232) and what
 * the rx slot holds past the frame.
 *
 * TCP, without a TCP stack and without state: a SYN gets a SYN-ACK whose
 * sequence number is a cookie, a keyed hash of the 4-tuple and a 64-second
 * period (the last two are accepted), its low two bits the client's MSS
 * class; a segment that acknowledges the cookie and carries one whole query
 * (its 2-byte length and the message, nothing more) gets one segment back:
 * the answer, ACK and FIN; a FIN gets an ACK; a bare acknowledgement is
 * absorbed; anything else (an ACK that matches no cookie, a query split over
 * segments or pipelined after another, a malformed query) gets a reset. The
 * answer must fit one segment of the client's MSS class (536 to 1460 bytes,
 * less the length prefix); a bigger one is cut with TC.
 *
 * Not answered here: ARP for the resolver address (on a nat network the NAT
 * gateway answers for the gateway's address; a configured resolver address
 * needs someone to answer for it), IPv6 transport, anything from a port that
 * is not a container's (uplinks, the nat host TAP, tunnels). Malformed DNS
 * (src/packet/dns.ts DnsVerdict) is dropped and counted, never answered; an
 * opcode other than QUERY gets NOTIMP with the header alone.
 *
 * The answered path allocates nothing but the question name's string; the
 * hand-over allocates the copy it posts.
 */
import { ARP_LEN, ArpField, ArpOp, writeArpReply } from '../../packet/arp.js';
import { read16, read32, write16, write32 } from '../../packet/bytes.js';
import { internetChecksum, pseudoSumV4 } from '../../packet/checksum.js';
import {
  DnsAnswerWriter,
  DnsClass,
  DnsQueryParser,
  DnsRcode,
  DnsType,
  DnsVerdict,
  dnsTcpMessageLength,
  dnsVerdictName,
  emitDnsError,
  truncateDnsAnswer,
  writeDnsTcpLength,
  DNS_PORT,
  DNS_TCP_PREFIX_LEN,
} from '../../packet/dns.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { EtherType, macHi16, macLo32, mustParseMac, writeMac } from '../../packet/ethernet.js';
import { formatIpv4Addr, IpProtocol, IPV4_HEADER_LEN, mustParseIpv4Addr } from '../../packet/ipv4.js';
import { TCP_HEADER_LEN, TcpFlags } from '../../packet/tcp.js';
import { UDP_HEADER_LEN } from '../../packet/udp.js';
import { innerEtherTypeOffset } from '../../packet/vlan.js';
import { VNET_HDR_LEN, VnetField } from '../../packet/vnet.js';
import { NetworkNames, type NameEntry } from '../../dns/names.js';
import { hashWords, randomSeed } from '../../vfp/hash.js';
import { KeyWord, Meta } from '../../vfp/key.js';
import type { FrameContext } from '../frame-context.js';
import { PortKind } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

/** What the control plane configures: plain data, so it crosses to the data-plane worker as part of the network's spec. */
export interface DnsStageSpec {
  /** The address containers send DNS to: the network's gateway, or a configured one. */
  resolverIp: string;
  /** The MAC answers come from (the gateway's on a nat network: the one containers' ARP learned for that address). */
  resolverMac: string;
  /** TTL of the network's own answers, in seconds. Default 10: names come and go with endpoints. */
  ttl?: number;
  /** Queries handed to the control plane per second at most, per network. Default 500. */
  forwardPerSecond?: number;
  /**
   * The address is the resolver's alone (no NAT gateway answers for it: an
   * internal or overlay network): ARP for it is answered here, and what else
   * is sent to its MAC is dropped (noEgress), since nothing routes behind it.
   */
  ownsAddress?: boolean;
}

/** Where queries for names that are not the network's go (the switch's events, as for DhcpReplyStage). */
export interface DnsQuerySink {
  /** A query for a name that is not the network's: a copy of its frame (Ethernet on, no vnet header) from `portId`. Answer it with dnsAnswerFrame. */
  dnsQuery?(networkId: number, portId: number, frame: Uint8Array): void;
}

const DEFAULT_TTL = 10;
const DEFAULT_FORWARD_PER_SECOND = 500;
/** What vsw's SYN-ACK announces: a query never needs more, and it fits any link a container has. */
const OUR_MSS = 1220;
/** The client MSS classes a cookie's low two bits name: the largest one at or below what the SYN offered (536 when it offered none). */
const MSS_CLASSES = [536, 1220, 1440, 1460] as const;
const TCP_WINDOW = 0xffff;
/** How long a cookie period lasts; a cookie of this period or the one before is accepted. */
const COOKIE_PERIOD_MS = 64_000;
/** How far past the cookie an acknowledgement may be: the MSS bits, the SYN, the longest answer with its prefix, the FIN. */
const COOKIE_WINDOW = 4 + 1 + DNS_TCP_PREFIX_LEN + 0xffff + 1;
const IPV4_DF = 0x4000;
const REPLY_TTL = 64;
/** Start of the reply's DNS message after the IPv4 header: UDP, or TCP with the length prefix. */
const UDP_DNS_AT = IPV4_HEADER_LEN + UDP_HEADER_LEN;
const TCP_DNS_AT = IPV4_HEADER_LEN + TCP_HEADER_LEN + DNS_TCP_PREFIX_LEN;

/** What the resolver does with a parsed query. */
const Answer = {
  /** Not the network's name: to the control plane. */
  FORWARD: 0,
  /** A name of the network: its addresses of the asked type (NODATA when it has none). */
  RECORDS: 1,
  /** The reverse name of a known address: PTR records. */
  PTR: 2,
  /** NETWORK itself: no records, but it exists. */
  NODATA: 3,
  NXDOMAIN: 4,
  REFUSED: 5,
  NOTIMP: 6,
  SERVFAIL: 7,
  BADVERS: 8,
} as const;

export class DnsStage implements NetworkStage {
  readonly name = 'dns';
  readonly dropReasons: readonly number[] = [DropReason.dnsMalformed, DropReason.dnsHandedOver, DropReason.dnsOverRate, DropReason.dnsTcpNoAnswer, DropReason.noEgress];
  /** The network's names: the control plane loads them (names.load) and keeps them current. */
  readonly names: NetworkNames;
  private resolverIp = 0;
  private macHi = 0;
  private macLo = 0;
  private readonly ttl: number;
  private readonly forwardPerSecond: number;
  private readonly ownsAddress: boolean;
  private arpAnswered = 0;
  private readonly parser = new DnsQueryParser();
  private readonly writer = new DnsAnswerWriter();
  /** The cookie hash's input: four secret words, then the 4-tuple and the period. */
  private readonly cookieWords = new Uint32Array(8);
  private readonly cookieSeed: number;
  /** What decide() found. */
  private entry: NameEntry | null = null;
  private ptrs: readonly NameEntry[] | null = null;
  private windowStart = 0;
  private inWindow = 0;

  private answered = 0;
  private nxdomain = 0;
  private forwarded = 0;
  private malformedCount = 0;
  private tcpAnswered = 0;
  private rateDropped = 0;
  private tcpSynAcks = 0;
  private tcpResets = 0;

  constructor(
    private readonly networkId: number,
    networkName: string,
    spec: DnsStageSpec,
    /** FrameIo.slotSize: an answer may grow the frame up to the end of its rx slot. */
    private readonly slotSize: number,
    private readonly sink: DnsQuerySink,
  ) {
    this.names = new NetworkNames(networkName);
    this.ttl = spec.ttl ?? DEFAULT_TTL;
    this.forwardPerSecond = spec.forwardPerSecond ?? DEFAULT_FORWARD_PER_SECOND;
    this.ownsAddress = spec.ownsAddress === true;
    this.setResolver(spec.resolverIp, spec.resolverMac);
    for (let i = 0; i < 4; i++) this.cookieWords[i] = randomSeed();
    this.cookieSeed = randomSeed();
  }

  /** A new resolver address or MAC (the gateway changed). */
  setResolver(ip: string, mac: string): void {
    const m = mustParseMac(mac);
    this.resolverIp = mustParseIpv4Addr(ip);
    this.macHi = macHi16(m, 0);
    this.macLo = macLo32(m, 0);
  }

  process(host: StageHost, f: FrameContext): number {
    const kind = f.ingress!.kind;
    if (kind !== PortKind.TAP && kind !== PortKind.FABRIC_ADDRESS) return StageResult.CONTINUE;
    const meta = host.meta;
    const key = host.key;
    const proto = key[KeyWord.PROTO] >>> 24;
    if (meta[Meta.IP_VERSION] !== 4 || key[KeyWord.DST_IP] !== this.resolverIp || (key[KeyWord.PORTS] & 0xffff) !== DNS_PORT || (proto !== IpProtocol.UDP && proto !== IpProtocol.TCP)) {
      return this.ownsAddress ? this.notDns(host, f) : StageResult.CONTINUE;
    }
    const buf = host.buffer;
    const l3 = meta[Meta.L3_OFFSET];
    const l4 = meta[Meta.L4_OFFSET];
    const ipEnd = l3 + read16(buf, l3 + 2);
    // A fragment (the query comes whole or not at all), or a segmentation offload super-frame.
    if (l4 < 0 || (read16(buf, l3 + 6) & 0x3fff) !== 0) return this.malformed(host, f, 'a fragment');
    if (f.vnetOff >= 0 && buf[f.vnetOff + VnetField.GSO_TYPE] !== 0) return this.malformed(host, f, 'a segmentation offload frame');
    return proto === IpProtocol.UDP ? this.udp(host, f, l3, l4, ipEnd) : this.tcp(host, f, l3, l4, ipEnd);
  }

  /** On an address the resolver owns: ARP for it is answered; anything else sent to its MAC has nowhere to go. */
  private notDns(host: StageHost, f: FrameContext): number {
    const key = host.key;
    const meta = host.meta;
    const buf = host.buffer;
    if (meta[Meta.IP_VERSION] === 0) {
      const et = f.off + meta[Meta.ETHERTYPE_AT];
      const arp = et + 2;
      if (read16(buf, et) !== EtherType.ARP || f.off + f.len < arp + ARP_LEN || read16(buf, arp + ArpField.OPER) !== ArpOp.Request || read32(buf, arp + ArpField.TPA) !== this.resolverIp) return StageResult.CONTINUE;
      if (f.steps !== null) f.step('dns', `ARP for the resolver address ${formatIpv4Addr(this.resolverIp)}: answered with its MAC`);
      writeArpReply(buf, f.off, arp, this.macHi, this.macLo);
      if (!f.dryRun) this.arpAnswered++;
      host.reply(f);
      return StageResult.DONE;
    }
    if (key[KeyWord.DST_MAC_HI] !== this.macHi || key[KeyWord.DST_MAC_LO] !== this.macLo) return StageResult.CONTINUE;
    if (f.steps !== null) f.step('dns', 'sent to the resolver\'s MAC but not DNS: nothing routes behind the resolver on this network');
    host.dropAtIngress(f, DropReason.noEgress);
    return StageResult.DONE;
  }

  private udp(host: StageHost, f: FrameContext, l3: number, l4: number, ipEnd: number): number {
    const buf = host.buffer;
    const udpLen = read16(buf, l4 + 4);
    if (udpLen < UDP_HEADER_LEN || l4 + udpLen > ipEnd) return this.malformed(host, f, 'a UDP length beyond the packet');
    const srcPort = read16(buf, l4);
    const p = this.parser;
    const v = p.parse(buf, l4 + UDP_HEADER_LEN, udpLen - UDP_HEADER_LEN);
    if (v !== DnsVerdict.OK && v !== DnsVerdict.NOT_IMPLEMENTED) return this.malformed(host, f, dnsVerdictName(v));
    const answer = this.decide(p);
    if (answer === Answer.FORWARD) return this.handOver(host, f);
    if (f.dryRun) return this.answeredDry(host, f, answer);
    const start = l3 + UDP_DNS_AT;
    const limit = Math.min(p.udpLimit(), this.roomEnd(host, f) - start);
    const n = this.writeAnswer(buf, start, limit, answer);
    if (n === 0) return this.malformed(host, f, 'no room for the answer');
    f.len = writeUdpReply(buf, f.off, l3, DNS_PORT, srcPort, n, this.macHi, this.macLo);
    this.sent(host, f);
    return StageResult.DONE;
  }

  private tcp(host: StageHost, f: FrameContext, l3: number, l4: number, ipEnd: number): number {
    const buf = host.buffer;
    const thl = (buf[l4 + 12] >>> 4) << 2;
    if (thl < TCP_HEADER_LEN || l4 + thl > ipEnd) return this.malformed(host, f, 'a TCP header beyond the packet');
    const flags = buf[l4 + 13];
    const srcPort = read16(buf, l4);
    const seq = read32(buf, l4 + 4);
    const ack = read32(buf, l4 + 8);
    const payOff = l4 + thl;
    const payLen = ipEnd - payOff;
    const fin = (flags & TcpFlags.FIN) !== 0 ? 1 : 0;
    const key = host.key;
    if ((flags & TcpFlags.RST) !== 0) return this.noAnswer(host, f, 'a reset');
    const period = Math.floor(f.now / COOKIE_PERIOD_MS);
    if ((flags & TcpFlags.SYN) !== 0) {
      if ((flags & (TcpFlags.ACK | TcpFlags.FIN)) !== 0) return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + 1 + fin, 'a SYN with ACK or FIN');
      if (f.steps !== null) f.step('dns', 'a TCP SYN to the resolver: a SYN-ACK with a cookie for a sequence number, no state kept');
      if (!f.dryRun) {
        const isn = ((this.cookie(key, period) << 2) | mssClass(buf, l4, thl)) >>> 0;
        f.len = writeTcpReply(buf, f.off, l3, DNS_PORT, srcPort, isn, (seq + 1) >>> 0, TcpFlags.SYN | TcpFlags.ACK, OUR_MSS, 0, this.macHi, this.macLo);
        this.tcpSynAcks++;
      }
      this.sent(host, f);
      return StageResult.DONE;
    }
    if ((flags & TcpFlags.ACK) === 0) return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + fin, 'a segment without ACK');
    const d = this.cookieOffset(key, period, ack);
    if (d < 0) return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + fin, 'an acknowledgement that matches no cookie');
    if (payLen === 0) {
      if (fin === 0) return this.noAnswer(host, f, 'an acknowledgement');
      if (f.steps !== null) f.step('dns', "the client's FIN: acknowledged");
      if (!f.dryRun) f.len = writeTcpReply(buf, f.off, l3, DNS_PORT, srcPort, ack, (seq + 1) >>> 0, TcpFlags.ACK, 0, 0, this.macHi, this.macLo);
      this.sent(host, f);
      return StageResult.DONE;
    }
    const msgLen = dnsTcpMessageLength(buf, payOff, payLen);
    if (msgLen < 0 || DNS_TCP_PREFIX_LEN + msgLen !== payLen) return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + fin, 'not one whole query in the segment');
    const p = this.parser;
    const v = p.parse(buf, payOff + DNS_TCP_PREFIX_LEN, msgLen);
    if (v !== DnsVerdict.OK && v !== DnsVerdict.NOT_IMPLEMENTED) {
      if (!f.dryRun) this.malformedCount++;
      return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + fin, dnsVerdictName(v));
    }
    const answer = this.decide(p);
    if (answer === Answer.FORWARD) return this.handOver(host, f);
    if (f.dryRun) return this.answeredDry(host, f, answer);
    const start = l3 + TCP_DNS_AT;
    const mss = MSS_CLASSES[d < 4 ? d : 0];
    const limit = Math.min(mss - DNS_TCP_PREFIX_LEN, this.roomEnd(host, f) - start);
    const n = this.writeAnswer(buf, start, limit, answer);
    if (n === 0) return this.reset(host, f, l3, srcPort, seq, ack, flags, payLen + fin, 'no room for the answer');
    writeDnsTcpLength(buf, start - DNS_TCP_PREFIX_LEN, n);
    const flagsOut = TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN;
    f.len = writeTcpReply(buf, f.off, l3, DNS_PORT, srcPort, ack, (seq + payLen + fin) >>> 0, flagsOut, 0, DNS_TCP_PREFIX_LEN + n, this.macHi, this.macLo);
    this.tcpAnswered++;
    this.sent(host, f);
    return StageResult.DONE;
  }

  /** What to answer; FORWARD when the name is not the network's (SERVFAIL when there is nowhere to forward to). */
  private decide(p: DnsQueryParser): number {
    this.entry = null;
    this.ptrs = null;
    if (p.verdict === DnsVerdict.NOT_IMPLEMENTED) return Answer.NOTIMP;
    if (p.qclass !== DnsClass.IN && p.qclass !== DnsClass.ANY) return Answer.REFUSED;
    if (p.edns && p.ednsVersion !== 0) return Answer.BADVERS;
    const names = this.names;
    const qname = p.qname;
    const entry = names.lookup(qname);
    if (entry !== undefined) {
      this.entry = entry;
      return Answer.RECORDS;
    }
    if (names.inZone(qname)) return qname === names.zone ? Answer.NODATA : Answer.NXDOMAIN;
    const ptrs = names.reverse(qname);
    if (ptrs !== undefined && ptrs.length > 0) {
      this.ptrs = ptrs;
      return Answer.PTR;
    }
    return this.sink.dnsQuery === undefined ? Answer.SERVFAIL : Answer.FORWARD;
  }

  /** Writes the answer decided on for the parsed query at buf[start], in `limit` bytes; its length, 0 when it does not fit. */
  private writeAnswer(buf: Uint8Array, start: number, limit: number, answer: number): number {
    const p = this.parser;
    const w = this.writer;
    const ttl = this.ttl;
    const qtype = p.qtype;
    const any = qtype === DnsType.ANY;
    let rcode: number = DnsRcode.NOERROR;
    let authoritative = true;
    switch (answer) {
      case Answer.NOTIMP: {
        const n = emitDnsError(p, DnsRcode.NOTIMP, buf, start, limit);
        if (n > 0) this.answered++;
        return n;
      }
      case Answer.REFUSED:
      case Answer.SERVFAIL:
      case Answer.BADVERS:
        rcode = answer === Answer.REFUSED ? DnsRcode.REFUSED : answer === Answer.SERVFAIL ? DnsRcode.SERVFAIL : DnsRcode.BADVERS;
        authoritative = false;
        break;
      case Answer.NXDOMAIN:
        rcode = DnsRcode.NXDOMAIN;
        break;
      default:
        break;
    }
    if (!w.begin(buf, start, limit, p, rcode, authoritative)) return 0;
    if (answer === Answer.RECORDS) {
      const e = this.entry!;
      if (qtype === DnsType.A || any) for (let i = 0; i < e.ipv4.length; i++) w.addA(ttl, e.ipv4[i]);
      if (qtype === DnsType.AAAA || any) for (let i = 0; i < e.ipv6Count; i++) w.addAaaa(ttl, e.ipv6, 16 * i);
    } else if (answer === Answer.PTR && (qtype === DnsType.PTR || any)) {
      const ptrs = this.ptrs!;
      for (let i = 0; i < ptrs.length; i++) w.addPtr(ttl, ptrs[i].fqdnWire, 0, ptrs[i].fqdnWire.length);
    }
    this.answered++;
    if (rcode === DnsRcode.NXDOMAIN) this.nxdomain++;
    return w.finish();
  }

  /** A dry run's answered query: what would be answered, nothing written or counted. */
  private answeredDry(host: StageHost, f: FrameContext, answer: number): number {
    if (f.steps !== null) {
      const what = answer === Answer.RECORDS || answer === Answer.PTR ? 'a name of the network' : answer === Answer.NXDOMAIN ? 'NXDOMAIN, a name under the network that no one has' : 'an answer without records';
      f.step('dns', `a query to the resolver ${formatIpv4Addr(this.resolverIp)} answered in place (${what}): the reply goes back out of the asking port`);
    }
    host.reply(f);
    return StageResult.DONE;
  }

  /** The frame, now an answer, goes back out of its ingress port with a clean vnet header. */
  private sent(host: StageHost, f: FrameContext): void {
    if (!f.dryRun && f.vnetOff >= 0) host.buffer.fill(0, f.vnetOff, f.vnetOff + VNET_HDR_LEN);
    host.reply(f);
  }

  /** Where an answer written over the frame must end: its rx slot's end, and no longer than the port's frames. */
  private roomEnd(host: StageHost, f: FrameContext): number {
    const bufLen = host.buffer.length;
    const slot = this.slotSize;
    let end = slot > 0 ? (Math.floor(f.off / slot) + 1) * slot : bufLen;
    if (end > bufLen) end = bufLen;
    const portEnd = f.off + f.ingress!.maxFrame;
    if (end > portEnd) end = portEnd;
    const frameEnd = f.off + f.len;
    return end < frameEnd ? frameEnd : end;
  }

  /** A name that is not the network's: a copy to the control plane, at most forwardPerSecond a second. */
  private handOver(host: StageHost, f: FrameContext): number {
    if (f.steps !== null) f.step('dns', 'a name that is not the network\'s: handed to the control plane, which asks the host\'s resolvers and answers');
    if (f.dryRun) {
      host.dropAtIngress(f, DropReason.dnsHandedOver);
      return StageResult.DONE;
    }
    if (f.now - this.windowStart >= 1000) {
      this.windowStart = f.now;
      this.inWindow = 0;
    }
    if (++this.inWindow > this.forwardPerSecond) {
      this.rateDropped++;
      host.dropAtIngress(f, DropReason.dnsOverRate);
      return StageResult.DONE;
    }
    // A copy in a buffer of its own (the rx buffer is a Buffer, whose slice() would share it), which the sink may transfer.
    const frame = new Uint8Array(f.len);
    frame.set(host.buffer.subarray(f.off, f.off + f.len));
    this.forwarded++;
    this.sink.dnsQuery!(this.networkId, f.ingress!.id, frame);
    host.dropAtIngress(f, DropReason.dnsHandedOver);
    return StageResult.DONE;
  }

  private malformed(host: StageHost, f: FrameContext, why: string): number {
    if (f.steps !== null) f.step('dns', `malformed DNS to the resolver (${why}): dropped`);
    if (!f.dryRun) this.malformedCount++;
    host.dropAtIngress(f, DropReason.dnsMalformed);
    return StageResult.DONE;
  }

  private noAnswer(host: StageHost, f: FrameContext, what: string): number {
    if (f.steps !== null) f.step('dns', `${what} over TCP to the resolver: nothing to answer`);
    host.dropAtIngress(f, DropReason.dnsTcpNoAnswer);
    return StageResult.DONE;
  }

  /**
   * A reset for a segment that belongs to no exchange the resolver can
   * finish (RFC 9293 3.10.7.1): from its acknowledgement number when it
   * has one, else acknowledging what it occupied (`segLen`).
   */
  private reset(host: StageHost, f: FrameContext, l3: number, srcPort: number, seq: number, ack: number, flags: number, segLen: number, why: string): number {
    if (f.steps !== null) f.step('dns', `TCP to the resolver: ${why}: answered with a reset`);
    if (!f.dryRun) {
      const withAck = (flags & TcpFlags.ACK) !== 0;
      const rstSeq = withAck ? ack : 0;
      const rstAck = withAck ? 0 : (seq + segLen) >>> 0;
      f.len = writeTcpReply(host.buffer, f.off, l3, DNS_PORT, srcPort, rstSeq, rstAck, withAck ? TcpFlags.RST : TcpFlags.RST | TcpFlags.ACK, 0, 0, this.macHi, this.macLo);
      this.tcpResets++;
    }
    this.sent(host, f);
    return StageResult.DONE;
  }

  /** The cookie of the frame's 4-tuple in `period`: 30 bits of a keyed hash. */
  private cookie(key: Uint32Array, period: number): number {
    const w = this.cookieWords;
    w[4] = key[KeyWord.SRC_IP];
    w[5] = key[KeyWord.DST_IP];
    w[6] = key[KeyWord.PORTS];
    w[7] = period;
    return hashWords(w, 0, 8, this.cookieSeed);
  }

  /** How far `ack` is past this period's or the last one's cookie (its MSS bits included), or -1 when it is no acknowledgement of either. */
  private cookieOffset(key: Uint32Array, period: number, ack: number): number {
    for (let back = 0; back < 2; back++) {
      const base = (this.cookie(key, period - back) << 2) >>> 0;
      const d = (ack - 1 - base) >>> 0;
      if (d < COOKIE_WINDOW) return d;
    }
    return -1;
  }

  commit(): boolean {
    return true;
  }

  abandon(): void {}

  counters(): Record<string, number> {
    return {
      queriesAnswered: this.answered,
      arpAnswered: this.arpAnswered,
      nxdomain: this.nxdomain,
      forwarded: this.forwarded,
      malformed: this.malformedCount,
      tcpAnswered: this.tcpAnswered,
      rateDropped: this.rateDropped,
      tcpSynAcks: this.tcpSynAcks,
      tcpResets: this.tcpResets,
      names: this.names.size,
    };
  }
}

/** The MSS class (index into MSS_CLASSES) of the MSS option in the SYN's header at buf[l4, l4+thl). */
function mssClass(buf: Uint8Array, l4: number, thl: number): number {
  let mss: number = MSS_CLASSES[0];
  const end = l4 + thl;
  for (let o = l4 + TCP_HEADER_LEN; o < end; ) {
    const kind = buf[o];
    if (kind === 0) break;
    if (kind === 1) {
      o++;
      continue;
    }
    if (o + 1 >= end) break;
    const len = buf[o + 1];
    if (len < 2 || o + len > end) break;
    if (kind === 2 && len === 4) mss = read16(buf, o + 2);
    o += len;
  }
  for (let i = MSS_CLASSES.length - 1; i > 0; i--) if (mss >= MSS_CLASSES[i]) return i;
  return 0;
}

// ---- the reply's headers ------------------------------------------------------------
//
// An answer's headers are written over the query's: Ethernet back to the
// asker from the resolver's MAC (VLAN tags between stay), a 20-byte IPv4
// header from the resolver's address to the asker's, then UDP or TCP at
// l3 + 20. The caller has read what it needs of the query's L4 header (ports,
// numbers) and written the payload where it goes (l3 + 28 for UDP, l3 + 40
// for TCP), since IPv4 options in the query move it.

function turnAround(buf: Uint8Array, frameOff: number, l3: number, protocol: number, l4Len: number, macHi: number, macLo: number): number {
  buf.copyWithin(frameOff, frameOff + 6, frameOff + 12);
  writeMac(buf, frameOff + 6, macHi, macLo);
  const asker = read32(buf, l3 + 12);
  const resolver = read32(buf, l3 + 16);
  buf[l3] = 0x45;
  buf[l3 + 1] = 0;
  write16(buf, l3 + 2, IPV4_HEADER_LEN + l4Len);
  write16(buf, l3 + 4, 0);
  write16(buf, l3 + 6, IPV4_DF);
  buf[l3 + 8] = REPLY_TTL;
  buf[l3 + 9] = protocol;
  write16(buf, l3 + 10, 0);
  write32(buf, l3 + 12, resolver);
  write32(buf, l3 + 16, asker);
  write16(buf, l3 + 10, internetChecksum(buf, l3, IPV4_HEADER_LEN));
  return pseudoSumV4(resolver, asker, protocol, l4Len);
}

/** The UDP answer around the dnsLen bytes at l3 + 28; returns the frame's new length. */
export function writeUdpReply(buf: Uint8Array, frameOff: number, l3: number, srcPort: number, dstPort: number, dnsLen: number, macHi: number, macLo: number): number {
  const udpLen = UDP_HEADER_LEN + dnsLen;
  const pseudo = turnAround(buf, frameOff, l3, IpProtocol.UDP, udpLen, macHi, macLo);
  const l4 = l3 + IPV4_HEADER_LEN;
  write16(buf, l4, srcPort);
  write16(buf, l4 + 2, dstPort);
  write16(buf, l4 + 4, udpLen);
  write16(buf, l4 + 6, 0);
  write16(buf, l4 + 6, internetChecksum(buf, l4, udpLen, pseudo) || 0xffff);
  return l4 + udpLen - frameOff;
}

/** A TCP segment with an MSS option when mss > 0 (then no payload), else the payLen bytes at l3 + 40; returns the frame's new length. */
export function writeTcpReply(
  buf: Uint8Array,
  frameOff: number,
  l3: number,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
  mss: number,
  payLen: number,
  macHi: number,
  macLo: number,
): number {
  const hl = TCP_HEADER_LEN + (mss > 0 ? 4 : 0);
  const tcpLen = hl + payLen;
  const pseudo = turnAround(buf, frameOff, l3, IpProtocol.TCP, tcpLen, macHi, macLo);
  const l4 = l3 + IPV4_HEADER_LEN;
  write16(buf, l4, srcPort);
  write16(buf, l4 + 2, dstPort);
  write32(buf, l4 + 4, seq);
  write32(buf, l4 + 8, (flags & TcpFlags.ACK) !== 0 ? ack : 0);
  buf[l4 + 12] = (hl >>> 2) << 4;
  buf[l4 + 13] = flags;
  write16(buf, l4 + 14, (flags & TcpFlags.RST) !== 0 ? 0 : TCP_WINDOW);
  write16(buf, l4 + 16, 0);
  write16(buf, l4 + 18, 0);
  if (mss > 0) {
    buf[l4 + 20] = 2;
    buf[l4 + 21] = 4;
    write16(buf, l4 + 22, mss);
  }
  write16(buf, l4 + 16, internetChecksum(buf, l4, tcpLen, pseudo));
  return l4 + tcpLen - frameOff;
}

// ---- for the control plane: the queries handed over, and their answers ----------------

interface DnsFrameParts {
  l3: number;
  tcp: boolean;
  srcPort: number;
  /** The DNS message (without the TCP prefix). */
  dnsOff: number;
  dnsLen: number;
  seq: number;
  ack: number;
  /** Bytes the TCP segment occupies in sequence space (payload and FIN). */
  segLen: number;
}

/** Where the DNS query is in a frame the stage handed over; null when the frame is not one. */
function dnsParts(frame: Uint8Array): DnsFrameParts | null {
  const typeAt = innerEtherTypeOffset(frame, 0, frame.length);
  if (typeAt < 0 || read16(frame, typeAt) !== EtherType.IPv4) return null;
  const l3 = typeAt + 2;
  if (l3 + IPV4_HEADER_LEN > frame.length || frame[l3] >>> 4 !== 4) return null;
  const ihl = (frame[l3] & 0x0f) << 2;
  const ipEnd = l3 + read16(frame, l3 + 2);
  const l4 = l3 + ihl;
  if (ihl < IPV4_HEADER_LEN || ipEnd > frame.length || (read16(frame, l3 + 6) & 0x3fff) !== 0) return null;
  const proto = frame[l3 + 9];
  if (proto === IpProtocol.UDP) {
    if (l4 + UDP_HEADER_LEN > ipEnd) return null;
    const udpLen = read16(frame, l4 + 4);
    if (udpLen < UDP_HEADER_LEN || l4 + udpLen > ipEnd || read16(frame, l4 + 2) !== DNS_PORT) return null;
    return { l3, tcp: false, srcPort: read16(frame, l4), dnsOff: l4 + UDP_HEADER_LEN, dnsLen: udpLen - UDP_HEADER_LEN, seq: 0, ack: 0, segLen: 0 };
  }
  if (proto !== IpProtocol.TCP || l4 + TCP_HEADER_LEN > ipEnd || read16(frame, l4 + 2) !== DNS_PORT) return null;
  const thl = (frame[l4 + 12] >>> 4) << 2;
  const payOff = l4 + thl;
  if (thl < TCP_HEADER_LEN || payOff > ipEnd || (frame[l4 + 13] & TcpFlags.ACK) === 0) return null;
  const msgLen = dnsTcpMessageLength(frame, payOff, ipEnd - payOff);
  if (msgLen < 0 || payOff + DNS_TCP_PREFIX_LEN + msgLen !== ipEnd) return null;
  const fin = (frame[l4 + 13] & TcpFlags.FIN) !== 0 ? 1 : 0;
  return {
    l3,
    tcp: true,
    srcPort: read16(frame, l4),
    dnsOff: payOff + DNS_TCP_PREFIX_LEN,
    dnsLen: msgLen,
    seq: read32(frame, l4 + 4),
    ack: read32(frame, l4 + 8),
    segLen: ipEnd - payOff + fin,
  };
}

/** The query a handed-over frame carries (a copy of the DNS message, without the TCP prefix) and its transport; null when it carries none. */
export function dnsQueryOfFrame(frame: Uint8Array): { transport: 'udp' | 'tcp'; message: Uint8Array } | null {
  const parts = dnsParts(frame);
  if (parts === null) return null;
  return { transport: parts.tcp ? 'tcp' : 'udp', message: frame.slice(parts.dnsOff, parts.dnsOff + parts.dnsLen) };
}

/**
 * The frame that answers a query the stage handed over (`query`, as the
 * sink got it) with `answer`, a DNS response from the host's resolvers: back
 * to the asking container from the resolver's MAC and address, the answer's
 * id set to the query's, cut to header and question with TC when it is
 * larger than the query allows (512 or its EDNS size over UDP; one segment of
 * the client's MSS class over TCP, where the segment also carries ACK and
 * FIN, as the stage's own TCP answers do). Null when the query frame is not
 * one the stage hands over, or the answer is no readable response.
 */
export function dnsAnswerFrame(query: Uint8Array, answer: Uint8Array, resolverMac: string): Uint8Array | null {
  const parts = dnsParts(query);
  if (parts === null) return null;
  const parser = new DnsQueryParser();
  if (parser.parse(query, parts.dnsOff, parts.dnsLen) !== DnsVerdict.OK) return null;
  const mac = mustParseMac(resolverMac);
  const { l3, tcp } = parts;
  const start = l3 + (tcp ? TCP_DNS_AT : UDP_DNS_AT);
  const out = new Uint8Array(start + answer.length);
  out.set(query.subarray(0, l3 + IPV4_HEADER_LEN));
  out.set(answer, start);
  const limit = tcp ? MSS_CLASSES[(parts.ack - 1) & 3] - DNS_TCP_PREFIX_LEN : parser.udpLimit();
  const n = truncateDnsAnswer(out, start, answer.length, limit);
  if (n === 0) return null;
  write16(out, start, parser.id);
  let len: number;
  if (tcp) {
    writeDnsTcpLength(out, start - DNS_TCP_PREFIX_LEN, n);
    const flags = TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN;
    len = writeTcpReply(out, 0, l3, DNS_PORT, parts.srcPort, parts.ack, (parts.seq + parts.segLen) >>> 0, flags, 0, DNS_TCP_PREFIX_LEN + n, macHi16(mac, 0), macLo32(mac, 0));
  } else {
    len = writeUdpReply(out, 0, l3, DNS_PORT, parts.srcPort, n, macHi16(mac, 0), macLo32(mac, 0));
  }
  return out.slice(0, len);
}
