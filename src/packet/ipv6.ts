/**
 * IPv6 fixed header (RFC 8200) and IPv6 addresses. Extension headers are not
 * walked here; nextHeader is whatever the fixed header says.
 */

import { copyBytes, fits, read16, read32, write16, write32 } from './bytes.js';
import { ipProtocolName } from './ipv4.js';
import { PacketView } from './view.js';

export const Ipv6Field = {
  VER_TC_FLOW: 0,
  PAYLOAD_LEN: 4,
  NEXT_HEADER: 6,
  HOP_LIMIT: 7,
  SRC: 8,
  DST: 24,
} as const;

export const IPV6_HEADER_LEN = 40;
export const IPV6_ADDR_LEN = 16;

// ---- addresses ------------------------------------------------------------

const HEX_GROUP = /^[0-9a-f]{1,4}$/i;
const DOTTED = /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;

/** Parses the groups of one side of "::"; the last group may be a dotted quad when `last`. Null on a bad group. */
function parseGroups(part: string, last: boolean): number[] | null {
  if (part === '') return [];
  const words: number[] = [];
  const groups = part.split(':');
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i];
    if (HEX_GROUP.test(g)) {
      words.push(parseInt(g, 16));
      continue;
    }
    const m = last && i === groups.length - 1 ? DOTTED.exec(g) : null;
    if (m === null) return null;
    const b = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
    if (b.some((x) => x > 255)) return null;
    words.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
  }
  return words;
}

/** Text form (RFC 4291 2.2, including "::" and a trailing dotted quad) to 16 bytes; null otherwise. Zone ids are refused. */
export function parseIpv6Addr(str: string): Uint8Array | null {
  const halves = str.split('::');
  if (halves.length > 2) return null;
  let words: number[];
  if (halves.length === 1) {
    const all = parseGroups(str, true);
    if (all === null || all.length !== 8) return null;
    words = all;
  } else {
    const head = parseGroups(halves[0], false);
    const tail = parseGroups(halves[1], true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = new Uint8Array(IPV6_ADDR_LEN);
  for (let i = 0; i < 8; i++) write16(out, i * 2, words[i]);
  return out;
}

export function mustParseIpv6Addr(str: string): Uint8Array {
  const a = parseIpv6Addr(str);
  if (a === null) throw new RangeError(`not an IPv6 address: ${JSON.stringify(str)}`);
  return a;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (>= 2) of zero groups as "::", IPv4-mapped as ::ffff:a.b.c.d. */
export function formatIpv6Addr(buf: Uint8Array, off = 0): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(read16(buf, off + i * 2));
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) {
    return `::ffff:${buf[off + 12]}.${buf[off + 13]}.${buf[off + 14]}.${buf[off + 15]}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number, b: number) => w.slice(a, b).map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

// ---- view -----------------------------------------------------------------

/** A reusable view over an IPv6 fixed header and the packet it starts. Addresses read as four u32 words. */
export class Ipv6View extends PacketView {
  /** False (view detached) unless the fixed header and the payload length it announces fit. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    if (fits(buf, offset, length, IPV6_HEADER_LEN) && IPV6_HEADER_LEN + read16(buf, offset + Ipv6Field.PAYLOAD_LEN) <= length) {
      return this.attach(buf, offset, length);
    }
    return this.detach();
  }

  /** For building a header: checks only that 40 bytes fit. */
  resetRaw(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, IPV6_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  version(): number {
    return this.buf[this.off] >>> 4;
  }
  trafficClass(): number {
    return (read16(this.buf, this.off) >>> 4) & 0xff;
  }
  flowLabel(): number {
    return read32(this.buf, this.off) & 0xfffff;
  }
  payloadLength(): number {
    return read16(this.buf, this.off + Ipv6Field.PAYLOAD_LEN);
  }
  nextHeader(): number {
    return this.buf[this.off + Ipv6Field.NEXT_HEADER];
  }
  hopLimit(): number {
    return this.buf[this.off + Ipv6Field.HOP_LIMIT];
  }
  /** Word i (0-3, most significant first) of the source address. */
  srcWord(i: number): number {
    return read32(this.buf, this.off + Ipv6Field.SRC + (i << 2));
  }
  dstWord(i: number): number {
    return read32(this.buf, this.off + Ipv6Field.DST + (i << 2));
  }
  /** ff00::/8 */
  dstIsMulticast(): boolean {
    return this.buf[this.off + Ipv6Field.DST] === 0xff;
  }
  payloadOffset(): number {
    return this.off + IPV6_HEADER_LEN;
  }

  setVersion(version: number): void {
    this.buf[this.off] = (this.buf[this.off] & 0x0f) | (version << 4);
  }
  setTrafficClass(tc: number): void {
    const v = read16(this.buf, this.off);
    write16(this.buf, this.off, (v & 0xf00f) | ((tc & 0xff) << 4));
  }
  setFlowLabel(label: number): void {
    const v = read32(this.buf, this.off);
    write32(this.buf, this.off, ((v & 0xfff00000) | (label & 0xfffff)) >>> 0);
  }
  setPayloadLength(length: number): void {
    write16(this.buf, this.off + Ipv6Field.PAYLOAD_LEN, length);
  }
  setNextHeader(nh: number): void {
    this.buf[this.off + Ipv6Field.NEXT_HEADER] = nh;
  }
  setHopLimit(hl: number): void {
    this.buf[this.off + Ipv6Field.HOP_LIMIT] = hl;
  }
  setSrcWord(i: number, word: number): void {
    write32(this.buf, this.off + Ipv6Field.SRC + (i << 2), word);
  }
  setDstWord(i: number, word: number): void {
    write32(this.buf, this.off + Ipv6Field.DST + (i << 2), word);
  }
  /** Copies 16 bytes from addr[addrOff..]. */
  setSrcFrom(addr: Uint8Array, addrOff = 0): void {
    copyBytes(this.buf, this.off + Ipv6Field.SRC, addr, addrOff, IPV6_ADDR_LEN);
  }
  setDstFrom(addr: Uint8Array, addrOff = 0): void {
    copyBytes(this.buf, this.off + Ipv6Field.DST, addr, addrOff, IPV6_ADDR_LEN);
  }
}

// ---- representation -------------------------------------------------------

export interface Ipv6Repr {
  src: string;
  dst: string;
  nextHeader: number;
  payloadLength: number;
  hopLimit: number;
  trafficClass: number;
  flowLabel: number;
}

/** Null unless version 6. */
export function parseIpv6(view: Ipv6View): Ipv6Repr | null {
  if (view.version() !== 6) return null;
  return {
    src: formatIpv6Addr(view.buf, view.off + Ipv6Field.SRC),
    dst: formatIpv6Addr(view.buf, view.off + Ipv6Field.DST),
    nextHeader: view.nextHeader(),
    payloadLength: view.payloadLength(),
    hopLimit: view.hopLimit(),
    trafficClass: view.trafficClass(),
    flowLabel: view.flowLabel(),
  };
}

/** Writes the 40-byte fixed header at buf[offset]; returns 40. */
export function emitIpv6(repr: Ipv6Repr, buf: Uint8Array, offset: number): number {
  const src = mustParseIpv6Addr(repr.src);
  const dst = mustParseIpv6Addr(repr.dst);
  if (repr.payloadLength < 0 || repr.payloadLength > 0xffff) throw new RangeError(`IPv6 payload length out of range: ${repr.payloadLength}`);
  const v = new Ipv6View();
  if (!v.resetRaw(buf, offset, buf.length - offset)) throw new RangeError('buffer too short for an IPv6 header');
  write32(buf, offset, ((6 << 28) | ((repr.trafficClass & 0xff) << 20) | (repr.flowLabel & 0xfffff)) >>> 0);
  v.setPayloadLength(repr.payloadLength);
  v.setNextHeader(repr.nextHeader);
  v.setHopLimit(repr.hopLimit);
  v.setSrcFrom(src);
  v.setDstFrom(dst);
  return IPV6_HEADER_LEN;
}

export function formatIpv6(repr: Ipv6Repr): string {
  let s = `IPv6 src=${repr.src} dst=${repr.dst} nxt=${ipProtocolName(repr.nextHeader)} len=${repr.payloadLength} hop=${repr.hopLimit}`;
  if (repr.trafficClass !== 0 || repr.flowLabel !== 0) s += ` tc=${repr.trafficClass} flow=0x${repr.flowLabel.toString(16)}`;
  return s;
}
