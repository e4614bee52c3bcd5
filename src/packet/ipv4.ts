/**
 * IPv4 header (RFC 791), IPv4 addresses, and the IP protocol numbers shared
 * with IPv6. Addresses are u32 numbers in the hot path, dotted strings in
 * reprs.
 */

import { fits, read16, read32, write16, write32 } from './bytes.js';
import { checksumAdjust16, internetChecksum } from './checksum.js';
import { PacketView } from './view.js';

export const Ipv4Field = {
  VER_IHL: 0,
  DSCP_ECN: 1,
  LENGTH: 2,
  IDENT: 4,
  FLAGS_FRAG: 6,
  TTL: 8,
  PROTOCOL: 9,
  CHECKSUM: 10,
  SRC: 12,
  DST: 16,
} as const;

/** Header without options. */
export const IPV4_HEADER_LEN = 20;
/** IHL is 4 bits of 32-bit words. */
export const IPV4_MAX_HEADER_LEN = 60;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;
const FRAG_MASK = 0x1fff;

export const IpProtocol = {
  HopByHop: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  IPv6Route: 43,
  IPv6Frag: 44,
  ICMPv6: 58,
  NoNext: 59,
  IPv6Opts: 60,
} as const;

const PROTOCOL_NAMES: Record<number, string> = {
  0: 'HopByHop',
  1: 'ICMP',
  6: 'TCP',
  17: 'UDP',
  43: 'IPv6Route',
  44: 'IPv6Frag',
  58: 'ICMPv6',
  59: 'NoNext',
  60: 'IPv6Opts',
};

export function ipProtocolName(protocol: number): string {
  return PROTOCOL_NAMES[protocol] ?? String(protocol);
}

// ---- addresses ------------------------------------------------------------

/** Strict dotted quad to u32; null otherwise. Leading zeros are refused because some tools read them as octal. */
export function parseIpv4Addr(str: string): number | null {
  const parts = str.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v;
}

export function formatIpv4Addr(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

export function mustParseIpv4Addr(str: string): number {
  const a = parseIpv4Addr(str);
  if (a === null) throw new RangeError(`not an IPv4 address: ${JSON.stringify(str)}`);
  return a;
}

// ---- view -----------------------------------------------------------------

/** A reusable view over an IPv4 header and the packet it starts. */
export class Ipv4View extends PacketView {
  /**
   * Points the view at a packet; false (view detached) unless the header
   * length is at least 20 and fits, and the total length covers the header
   * and fits. Bytes after the total length (Ethernet padding) are allowed.
   * The version is not checked here: parseIpv4 does, as does classifyFrame.
   */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    if (fits(buf, offset, length, IPV4_HEADER_LEN)) {
      const hl = (buf[offset] & 0x0f) << 2;
      const total = read16(buf, offset + Ipv4Field.LENGTH);
      if (hl >= IPV4_HEADER_LEN && hl <= length && total >= hl && total <= length) {
        return this.attach(buf, offset, length);
      }
    }
    return this.detach();
  }

  /** For building a header: checks only that 20 bytes fit, since the length fields are not written yet. */
  resetRaw(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, IPV4_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  version(): number {
    return this.buf[this.off] >>> 4;
  }
  /** In bytes. */
  headerLength(): number {
    return (this.buf[this.off] & 0x0f) << 2;
  }
  dscp(): number {
    return this.buf[this.off + Ipv4Field.DSCP_ECN] >>> 2;
  }
  ecn(): number {
    return this.buf[this.off + Ipv4Field.DSCP_ECN] & 3;
  }
  totalLength(): number {
    return read16(this.buf, this.off + Ipv4Field.LENGTH);
  }
  ident(): number {
    return read16(this.buf, this.off + Ipv4Field.IDENT);
  }
  dontFrag(): boolean {
    return (read16(this.buf, this.off + Ipv4Field.FLAGS_FRAG) & FLAG_DF) !== 0;
  }
  moreFrags(): boolean {
    return (read16(this.buf, this.off + Ipv4Field.FLAGS_FRAG) & FLAG_MF) !== 0;
  }
  /** In bytes (the field counts 8-byte units). */
  fragOffset(): number {
    return (read16(this.buf, this.off + Ipv4Field.FLAGS_FRAG) & FRAG_MASK) << 3;
  }
  /** A fragment other than the first, or a first fragment with more to come. */
  isFragment(): boolean {
    return (read16(this.buf, this.off + Ipv4Field.FLAGS_FRAG) & (FLAG_MF | FRAG_MASK)) !== 0;
  }
  ttl(): number {
    return this.buf[this.off + Ipv4Field.TTL];
  }
  protocol(): number {
    return this.buf[this.off + Ipv4Field.PROTOCOL];
  }
  checksum(): number {
    return read16(this.buf, this.off + Ipv4Field.CHECKSUM);
  }
  src(): number {
    return read32(this.buf, this.off + Ipv4Field.SRC);
  }
  dst(): number {
    return read32(this.buf, this.off + Ipv4Field.DST);
  }
  verifyChecksum(): boolean {
    return internetChecksum(this.buf, this.off, this.headerLength()) === 0;
  }
  payloadOffset(): number {
    return this.off + this.headerLength();
  }
  /** From the total length field, so Ethernet padding is excluded. */
  payloadLength(): number {
    return this.totalLength() - this.headerLength();
  }

  setVersion(version: number): void {
    this.buf[this.off] = (this.buf[this.off] & 0x0f) | (version << 4);
  }
  /** In bytes, a multiple of 4. */
  setHeaderLength(bytes: number): void {
    this.buf[this.off] = (this.buf[this.off] & 0xf0) | ((bytes >>> 2) & 0x0f);
  }
  setDscp(dscp: number): void {
    const i = this.off + Ipv4Field.DSCP_ECN;
    this.buf[i] = (this.buf[i] & 3) | (dscp << 2);
  }
  setEcn(ecn: number): void {
    const i = this.off + Ipv4Field.DSCP_ECN;
    this.buf[i] = (this.buf[i] & ~3) | (ecn & 3);
  }
  setTotalLength(length: number): void {
    write16(this.buf, this.off + Ipv4Field.LENGTH, length);
  }
  setIdent(ident: number): void {
    write16(this.buf, this.off + Ipv4Field.IDENT, ident);
  }
  setDontFrag(df: boolean): void {
    const i = this.off + Ipv4Field.FLAGS_FRAG;
    const v = read16(this.buf, i);
    write16(this.buf, i, df ? v | FLAG_DF : v & ~FLAG_DF);
  }
  setMoreFrags(mf: boolean): void {
    const i = this.off + Ipv4Field.FLAGS_FRAG;
    const v = read16(this.buf, i);
    write16(this.buf, i, mf ? v | FLAG_MF : v & ~FLAG_MF);
  }
  /** In bytes, a multiple of 8. */
  setFragOffset(bytes: number): void {
    const i = this.off + Ipv4Field.FLAGS_FRAG;
    write16(this.buf, i, (read16(this.buf, i) & ~FRAG_MASK) | ((bytes >>> 3) & FRAG_MASK));
  }
  setTtl(ttl: number): void {
    this.buf[this.off + Ipv4Field.TTL] = ttl;
  }
  setProtocol(protocol: number): void {
    this.buf[this.off + Ipv4Field.PROTOCOL] = protocol;
  }
  setChecksum(csum: number): void {
    write16(this.buf, this.off + Ipv4Field.CHECKSUM, csum);
  }
  setSrc(addr: number): void {
    write32(this.buf, this.off + Ipv4Field.SRC, addr);
  }
  setDst(addr: number): void {
    write32(this.buf, this.off + Ipv4Field.DST, addr);
  }
  fillChecksum(): void {
    this.setChecksum(0);
    this.setChecksum(internetChecksum(this.buf, this.off, this.headerLength()));
  }
  /** Routing step: TTL - 1 with an RFC 1624 checksum update instead of a recompute. Returns the new TTL; does nothing at 0. */
  decrementTtl(): number {
    const i = this.off + Ipv4Field.TTL;
    const ttl = this.buf[i];
    if (ttl === 0) return 0;
    const oldWord = read16(this.buf, i);
    this.buf[i] = ttl - 1;
    this.setChecksum(checksumAdjust16(this.checksum(), oldWord, read16(this.buf, i)));
    return ttl - 1;
  }
}

// ---- representation -------------------------------------------------------

export interface Ipv4Repr {
  src: string;
  dst: string;
  protocol: number;
  /** Bytes after the header, per the total length field. */
  payloadLength: number;
  ttl: number;
  dscp: number;
  ecn: number;
  ident: number;
  dontFrag: boolean;
  moreFrags: boolean;
  /** In bytes. */
  fragOffset: number;
}

/** Null unless version 4 with a valid header checksum. Options are skipped, not represented. */
export function parseIpv4(view: Ipv4View): Ipv4Repr | null {
  if (view.version() !== 4 || !view.verifyChecksum()) return null;
  return {
    src: formatIpv4Addr(view.src()),
    dst: formatIpv4Addr(view.dst()),
    protocol: view.protocol(),
    payloadLength: view.payloadLength(),
    ttl: view.ttl(),
    dscp: view.dscp(),
    ecn: view.ecn(),
    ident: view.ident(),
    dontFrag: view.dontFrag(),
    moreFrags: view.moreFrags(),
    fragOffset: view.fragOffset(),
  };
}

/** Writes a 20-byte header (no options) with its checksum at buf[offset]; returns 20. The payload is the caller's. */
export function emitIpv4(repr: Ipv4Repr, buf: Uint8Array, offset: number): number {
  const src = mustParseIpv4Addr(repr.src);
  const dst = mustParseIpv4Addr(repr.dst);
  const total = IPV4_HEADER_LEN + repr.payloadLength;
  if (total > 0xffff || repr.payloadLength < 0) throw new RangeError(`IPv4 payload length out of range: ${repr.payloadLength}`);
  if (repr.fragOffset % 8 !== 0 || repr.fragOffset > FRAG_MASK << 3) throw new RangeError(`IPv4 fragment offset invalid: ${repr.fragOffset}`);
  const v = new Ipv4View();
  if (!v.resetRaw(buf, offset, buf.length - offset)) throw new RangeError('buffer too short for an IPv4 header');
  v.setVersion(4);
  v.setHeaderLength(IPV4_HEADER_LEN);
  buf[offset + Ipv4Field.DSCP_ECN] = ((repr.dscp & 0x3f) << 2) | (repr.ecn & 3);
  v.setTotalLength(total);
  v.setIdent(repr.ident);
  write16(buf, offset + Ipv4Field.FLAGS_FRAG, (repr.dontFrag ? FLAG_DF : 0) | (repr.moreFrags ? FLAG_MF : 0) | (repr.fragOffset >>> 3));
  v.setTtl(repr.ttl);
  v.setProtocol(repr.protocol);
  v.setSrc(src);
  v.setDst(dst);
  v.fillChecksum();
  return IPV4_HEADER_LEN;
}

export function formatIpv4(repr: Ipv4Repr): string {
  let s = `IPv4 src=${repr.src} dst=${repr.dst} proto=${ipProtocolName(repr.protocol)} len=${repr.payloadLength} ttl=${repr.ttl}`;
  if (repr.dscp !== 0 || repr.ecn !== 0) s += ` dscp=${repr.dscp} ecn=${repr.ecn}`;
  if (repr.dontFrag) s += ' DF';
  if (repr.moreFrags || repr.fragOffset !== 0) s += ` frag=${repr.fragOffset}${repr.moreFrags ? '+' : ''}`;
  return s;
}
