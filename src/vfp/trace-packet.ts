/**
 * The packet language of `vsw trace`, in tcpdump's word order:
 *
 *   tcp 10.0.0.2:1234 > 10.0.0.3:80 syn
 *   udp 10.0.0.2:5000 > 10.0.0.3:53
 *   icmp 10.0.0.2 > 10.0.0.3 [echo-request|echo-reply|type N]
 *   tcp [fd00::2]:1234 > [fd00::3]:80 syn,ack
 *
 * It becomes a real frame (src/packet/builders.ts), so trace runs the same
 * key extraction and slow path as a frame from a TAP would.
 */
import { buildIcmp4Echo, buildIpv4, buildIpv6, buildTcp4, buildTcp6, buildUdp4, buildUdp6 } from '../packet/builders.js';
import { parseStrictIp, PolicyError } from './policy.js';

export interface TracePacket {
  protocol: 'tcp' | 'udp' | 'icmp' | 'icmpv6';
  version: 4 | 6;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  /** TCP flags byte. */
  tcpFlags: number;
  icmpType: number;
}

const TCP_FLAG_BITS: Record<string, number> = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 };
const USAGE = 'write it as "tcp 10.0.0.2:1234 > 10.0.0.3:80 syn", "udp A:P > B:P" or "icmp A > B echo-request"';

function endpoint(text: string, needsPort: boolean, what: string): { ip: string; version: 4 | 6; port: number } {
  let host = text;
  let port = '';
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) {
    host = bracket[1];
    port = bracket[2] ?? '';
  } else if ((text.match(/:/g) ?? []).length === 1) {
    [host, port] = text.split(':');
  }
  const addr = parseStrictIp(host);
  if (addr === null) throw new PolicyError(`the ${what} address "${host}" is not an IP address: ${USAGE}.`);
  if (needsPort && port === '') throw new PolicyError(`the ${what} "${text}" has no port: ${USAGE}.`);
  if (!needsPort && port !== '') throw new PolicyError(`ICMP has no ports, but the ${what} "${text}" names one: ${USAGE}.`);
  if (port !== '' && !/^\d{1,5}$/.test(port)) throw new PolicyError(`the ${what} port "${port}" is not a port: write a number from 0 to 65535.`);
  const n = port === '' ? 0 : Number(port);
  if (n > 65535) throw new PolicyError(`the ${what} port ${port} is out of range: ports go from 0 to 65535.`);
  return { ip: addr.toString(), version: addr.kind() === 'ipv4' ? 4 : 6, port: n };
}

export function parseTracePacket(text: string): TracePacket {
  const words = text.trim().split(/\s+/);
  if (words.length < 4 || words[2] !== '>') throw new PolicyError(`"${text}" is not a packet: ${USAGE}.`);
  const protocol = words[0].toLowerCase();
  if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'icmp' && protocol !== 'icmpv6') {
    throw new PolicyError(`protocol "${words[0]}" cannot be traced: use tcp, udp, icmp or icmpv6.`);
  }
  const ports = protocol === 'tcp' || protocol === 'udp';
  const src = endpoint(words[1], ports, 'source');
  const dst = endpoint(words[3], ports, 'destination');
  if (src.version !== dst.version) throw new PolicyError(`the source and destination of "${text}" mix IPv4 and IPv6: use one family.`);
  if (protocol === 'icmp' && src.version === 6) throw new PolicyError('icmp is IPv4: use icmpv6 for IPv6 addresses.');
  if (protocol === 'icmpv6' && src.version === 4) throw new PolicyError('icmpv6 is IPv6: use icmp for IPv4 addresses.');
  const rest = words.slice(4).join(' ').toLowerCase();
  let tcpFlags = 0;
  let icmpType = protocol === 'icmp' ? 8 : 128;
  if (protocol === 'tcp') {
    tcpFlags = rest === '' ? TCP_FLAG_BITS.syn : 0;
    for (const f of rest.split(/[\s,]+/).filter(Boolean)) {
      const bit = TCP_FLAG_BITS[f];
      if (bit === undefined) throw new PolicyError(`TCP flag "${f}" is not known: use syn, ack, fin, rst, psh or urg, separated by commas.`);
      tcpFlags |= bit;
    }
  } else if (protocol === 'icmp' || protocol === 'icmpv6') {
    if (rest === 'echo-reply') icmpType = protocol === 'icmp' ? 0 : 129;
    else if (/^type \d{1,3}$/.test(rest) && Number(rest.slice(5)) <= 255) icmpType = Number(rest.slice(5));
    else if (rest !== '' && rest !== 'echo-request') throw new PolicyError(`"${rest}" is not an ICMP kind: use echo-request, echo-reply or type N.`);
  } else if (rest !== '') {
    throw new PolicyError(`UDP has no flags, but "${rest}" follows the destination: ${USAGE}.`);
  }
  return { protocol, version: src.version, src: src.ip, dst: dst.ip, srcPort: src.port, dstPort: dst.port, tcpFlags, icmpType };
}

export function formatTracePacket(p: TracePacket): string {
  const host = (ip: string, port: number) => (p.protocol === 'tcp' || p.protocol === 'udp' ? (p.version === 6 ? `[${ip}]:${port}` : `${ip}:${port}`) : ip);
  const flags =
    p.protocol === 'tcp'
      ? ' ' + Object.entries(TCP_FLAG_BITS).filter(([, b]) => p.tcpFlags & b).map(([n]) => n).join(',')
      : p.protocol === 'udp'
        ? ''
        : ` type ${p.icmpType}`;
  return `${p.protocol} ${host(p.src, p.srcPort)} > ${host(p.dst, p.dstPort)}${flags}`.trimEnd();
}

/** The frame a container would send for this packet, between the given MACs. */
export function buildTraceFrame(p: TracePacket, srcMac: string, dstMac: string): Buffer {
  const l2 = { srcMac, dstMac, srcIp: p.src, dstIp: p.dst };
  if (p.protocol === 'tcp') {
    const opts = { ...l2, srcPort: p.srcPort, dstPort: p.dstPort, flags: p.tcpFlags };
    return p.version === 4 ? buildTcp4(opts) : buildTcp6(opts);
  }
  if (p.protocol === 'udp') {
    const opts = { ...l2, srcPort: p.srcPort, dstPort: p.dstPort };
    return p.version === 4 ? buildUdp4(opts) : buildUdp6(opts);
  }
  if (p.protocol === 'icmp' && (p.icmpType === 8 || p.icmpType === 0)) return buildIcmp4Echo({ ...l2, ident: 1, seq: 1, reply: p.icmpType === 0 });
  // Any other ICMP type: an 8-byte header (type, code 0, checksum left zero: policy does not look at it).
  const icmp = new Uint8Array(8);
  icmp[0] = p.icmpType;
  if (p.icmpType === 128 || p.icmpType === 129) icmp[5] = 1;
  return p.version === 4 ? buildIpv4({ ...l2, protocol: 1, payload: icmp }) : buildIpv6({ ...l2, nextHeader: 58, payload: icmp });
}
