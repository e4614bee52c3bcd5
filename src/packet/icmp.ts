/**
 * ICMPv4 (RFC 792): echo request/reply, destination unreachable (with the
 * RFC 1191 next-hop MTU), time exceeded. The view covers the whole message,
 * since the checksum does.
 */

import { copyBytes, copyOut, fits, read16, write16 } from './bytes.js';
import { internetChecksum } from './checksum.js';
import { PacketView } from './view.js';

export const IcmpField = {
  TYPE: 0,
  CODE: 1,
  CHECKSUM: 2,
  /** Echo. */
  IDENT: 4,
  SEQ: 6,
  /** Destination unreachable, code FragNeeded; bytes 4-5 are unused. */
  MTU: 6,
  DATA: 8,
} as const;

export const ICMP_HEADER_LEN = 8;

export const IcmpType = {
  EchoReply: 0,
  DestUnreachable: 3,
  EchoRequest: 8,
  TimeExceeded: 11,
} as const;

export const UnreachableCode = {
  Net: 0,
  Host: 1,
  Protocol: 2,
  Port: 3,
  FragNeeded: 4,
  SourceRouteFailed: 5,
  AdminProhibited: 13,
} as const;

const UNREACHABLE_NAMES: Record<number, string> = {
  0: 'net',
  1: 'host',
  2: 'protocol',
  3: 'port',
  4: 'frag-needed',
  5: 'source-route-failed',
  13: 'admin-prohibited',
};

/** A reusable view over an ICMPv4 message. */
export class IcmpView extends PacketView {
  /** False (view detached) when shorter than the 8-byte header. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, ICMP_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  msgType(): number {
    return this.buf[this.off];
  }
  code(): number {
    return this.buf[this.off + IcmpField.CODE];
  }
  checksum(): number {
    return read16(this.buf, this.off + IcmpField.CHECKSUM);
  }
  echoIdent(): number {
    return read16(this.buf, this.off + IcmpField.IDENT);
  }
  echoSeq(): number {
    return read16(this.buf, this.off + IcmpField.SEQ);
  }
  nextHopMtu(): number {
    return read16(this.buf, this.off + IcmpField.MTU);
  }
  dataOffset(): number {
    return this.off + ICMP_HEADER_LEN;
  }
  dataLength(): number {
    return this.len - ICMP_HEADER_LEN;
  }
  verifyChecksum(): boolean {
    return internetChecksum(this.buf, this.off, this.len) === 0;
  }

  setMsgType(type: number): void {
    this.buf[this.off] = type;
  }
  setCode(code: number): void {
    this.buf[this.off + IcmpField.CODE] = code;
  }
  setChecksum(csum: number): void {
    write16(this.buf, this.off + IcmpField.CHECKSUM, csum);
  }
  setEchoIdent(ident: number): void {
    write16(this.buf, this.off + IcmpField.IDENT, ident);
  }
  setEchoSeq(seq: number): void {
    write16(this.buf, this.off + IcmpField.SEQ, seq);
  }
  /** Also clears the unused bytes 4-5. */
  setNextHopMtu(mtu: number): void {
    write16(this.buf, this.off + 4, 0);
    write16(this.buf, this.off + IcmpField.MTU, mtu);
  }
  fillChecksum(): void {
    this.setChecksum(0);
    this.setChecksum(internetChecksum(this.buf, this.off, this.len));
  }
}

export type IcmpRepr =
  | { kind: 'echoRequest' | 'echoReply'; ident: number; seq: number; data: Uint8Array }
  /** data: the offending datagram's IP header and at least 8 bytes of its payload. */
  | { kind: 'destUnreachable'; code: number; nextHopMtu: number; data: Uint8Array }
  | { kind: 'timeExceeded'; code: number; data: Uint8Array };

/** Null on a bad checksum or a type not listed in IcmpRepr. `data` is a copy. */
export function parseIcmp(view: IcmpView): IcmpRepr | null {
  if (!view.verifyChecksum()) return null;
  const data = copyOut(view.buf, view.dataOffset(), view.dataLength());
  switch (view.msgType()) {
    case IcmpType.EchoRequest:
    case IcmpType.EchoReply:
      return {
        kind: view.msgType() === IcmpType.EchoRequest ? 'echoRequest' : 'echoReply',
        ident: view.echoIdent(),
        seq: view.echoSeq(),
        data,
      };
    case IcmpType.DestUnreachable:
      return {
        kind: 'destUnreachable',
        code: view.code(),
        nextHopMtu: view.code() === UnreachableCode.FragNeeded ? view.nextHopMtu() : 0,
        data,
      };
    case IcmpType.TimeExceeded:
      return { kind: 'timeExceeded', code: view.code(), data };
    default:
      return null;
  }
}

export function icmpLength(repr: IcmpRepr): number {
  return ICMP_HEADER_LEN + repr.data.length;
}

/** Writes the message (header, data, checksum) at buf[offset]; returns its length. */
export function emitIcmp(repr: IcmpRepr, buf: Uint8Array, offset: number): number {
  const len = icmpLength(repr);
  const v = new IcmpView();
  if (!v.reset(buf, offset, len)) throw new RangeError('buffer too short for the ICMP message');
  switch (repr.kind) {
    case 'echoRequest':
    case 'echoReply':
      v.setMsgType(repr.kind === 'echoRequest' ? IcmpType.EchoRequest : IcmpType.EchoReply);
      v.setCode(0);
      v.setEchoIdent(repr.ident);
      v.setEchoSeq(repr.seq);
      break;
    case 'destUnreachable':
      v.setMsgType(IcmpType.DestUnreachable);
      v.setCode(repr.code);
      v.setNextHopMtu(repr.code === UnreachableCode.FragNeeded ? repr.nextHopMtu : 0);
      break;
    case 'timeExceeded':
      v.setMsgType(IcmpType.TimeExceeded);
      v.setCode(repr.code);
      write16(buf, offset + 4, 0);
      write16(buf, offset + 6, 0);
      break;
  }
  copyBytes(buf, offset + ICMP_HEADER_LEN, repr.data, 0, repr.data.length);
  v.fillChecksum();
  return len;
}

export function formatIcmp(repr: IcmpRepr): string {
  switch (repr.kind) {
    case 'echoRequest':
    case 'echoReply':
      return `ICMPv4 echo ${repr.kind === 'echoRequest' ? 'request' : 'reply'} id=${repr.ident} seq=${repr.seq} len=${repr.data.length}`;
    case 'destUnreachable':
      return (
        `ICMPv4 unreachable code=${repr.code} (${UNREACHABLE_NAMES[repr.code] ?? '?'})` +
        (repr.code === UnreachableCode.FragNeeded ? ` mtu=${repr.nextHopMtu}` : '') +
        ` len=${repr.data.length}`
      );
    case 'timeExceeded':
      return `ICMPv4 time exceeded code=${repr.code} len=${repr.data.length}`;
  }
}

/** What writeFragNeededInPlace leaves of the quoted datagram: its IP header and 8 bytes (RFC 792). */
const QUOTED_PAYLOAD = 8;

/**
 * Turns the untagged Ethernet/IPv4 frame at buf[off, off + len) into the ICMP
 * "fragmentation needed" (RFC 1191, next-hop `mtu`) that answers it, in
 * place: MACs swapped, from its destination address to its source, quoting
 * its IP header and first 8 payload bytes. What a tunnel entrance does for a
 * frame with DF set that the tunnel cannot carry. Returns the new frame's
 * length, or -1 (nothing written) when the frame is not such an IPv4 frame,
 * has no DF, or is itself an ICMP error or a non-first fragment (RFC 1122:
 * never answer those with an error).
 * Allocates nothing.
 */
export function writeFragNeededInPlace(buf: Uint8Array, off: number, len: number, mtu: number): number {
  const ip = off + 14;
  if (len < 14 + 20 || read16(buf, off + 12) !== 0x0800 || buf[ip] >>> 4 !== 4) return -1;
  const ihl = (buf[ip] & 15) * 4;
  if (ihl < 20 || len < 14 + ihl) return -1;
  const flagsFrag = read16(buf, ip + 6);
  if ((flagsFrag & 0x4000) === 0 || (flagsFrag & 0x1fff) !== 0) return -1;
  const protocol = buf[ip + 9];
  if (protocol === 1 && len >= 14 + ihl + 1) {
    const t = buf[ip + ihl];
    if (t !== IcmpType.EchoRequest && t !== IcmpType.EchoReply) return -1;
  }
  const quoted = Math.min(ihl + QUOTED_PAYLOAD, len - 14);
  // The quote moves 28 bytes down (a new IPv4 and ICMP header go before it); copyWithin handles the overlap.
  const replyIp = ip;
  const icmp = replyIp + 20;
  buf.copyWithin(icmp + ICMP_HEADER_LEN, ip, ip + quoted);
  const q = icmp + ICMP_HEADER_LEN;
  // MACs swapped.
  for (let i = 0; i < 6; i++) {
    const t = buf[off + i];
    buf[off + i] = buf[off + 6 + i];
    buf[off + 6 + i] = t;
  }
  const icmpLen = ICMP_HEADER_LEN + quoted;
  buf[replyIp] = 0x45;
  buf[replyIp + 1] = 0xc0; // DSCP CS6, as routers send control messages
  write16(buf, replyIp + 2, 20 + icmpLen);
  write16(buf, replyIp + 4, 0);
  write16(buf, replyIp + 6, 0x4000);
  buf[replyIp + 8] = 64;
  buf[replyIp + 9] = 1;
  write16(buf, replyIp + 10, 0);
  // Source: the quoted datagram's destination; destination: its source.
  for (let i = 0; i < 4; i++) {
    buf[replyIp + 12 + i] = buf[q + 16 + i];
    buf[replyIp + 16 + i] = buf[q + 12 + i];
  }
  write16(buf, replyIp + 10, internetChecksum(buf, replyIp, 20));
  buf[icmp] = IcmpType.DestUnreachable;
  buf[icmp + 1] = UnreachableCode.FragNeeded;
  write16(buf, icmp + 2, 0);
  write16(buf, icmp + 4, 0);
  write16(buf, icmp + 6, mtu);
  write16(buf, icmp + 2, internetChecksum(buf, icmp, icmpLen));
  return 14 + 20 + icmpLen;
}
