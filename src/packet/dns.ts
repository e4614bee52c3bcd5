/**
 * DNS messages (RFC 1035 4.1) as vsw's resolver meets them: a query from a
 * container, read without trusting a byte of it, and the answer written in
 * its place. EDNS (RFC 6891) is understood as far as a stub resolver uses it:
 * one OPT record in a query's additional section, whose payload size sets how
 * big a UDP answer may be. Over TCP (RFC 7766) a message is preceded by its
 * length in two bytes.
 *
 * Layout of a message: a 12-byte header (id, flags, four section counts),
 * then the question (a name, QTYPE, QCLASS) and the answer, authority and
 * additional records (a name, TYPE, CLASS, TTL, RDLENGTH, RDATA). A name is a
 * run of labels, each a length byte (0-63) and that many bytes, ending in a
 * zero byte or in a two-byte compression pointer (its top two bits set) to an
 * earlier name in the message.
 *
 * Three parts:
 * - DnsQueryParser: a reusable parser of one query, for the data path. It
 *   never throws on wire input and allocates nothing but the question name's
 *   string; what it finds wrong is a verdict (DnsVerdict). A query has one
 *   question, no answer or authority records and at most one additional
 *   record, an OPT. Names are checked for everything a hostile sender can
 *   try: compression pointers that loop, point forward or past the end,
 *   label lengths over 63 (the extended label types), names over 255 bytes,
 *   a message cut short anywhere.
 * - DnsAnswerWriter: writes an answer to a parsed query at any place of a
 *   buffer, the query's own place included (the question is copied first, so
 *   an answer may be written over the query it answers): the question, the
 *   records (A, AAAA, PTR, each named by a compression pointer to the
 *   question's name), an OPT when the query had one. It never writes past
 *   the limit it is given: a record that does not fit is left out and TC is
 *   set, so the client asks again over TCP.
 * - Reprs with parse/emit/format for the control plane and tests (they
 *   allocate), and the TCP framing helpers.
 *
 * Never amplify: the answer to a query the parser refused is at most its
 * header and question (emitDnsError), never more bytes than the query had,
 * and nothing when not even the header could be read.
 */

import { copyBytes, EMPTY, fits, read16, read32, write16, write32 } from './bytes.js';
import { formatIpv4Addr } from './ipv4.js';
import { formatIpv6Addr } from './ipv6.js';
import { PacketView } from './view.js';

export const DnsField = {
  ID: 0,
  FLAGS: 2,
  QDCOUNT: 4,
  ANCOUNT: 6,
  NSCOUNT: 8,
  ARCOUNT: 10,
} as const;

export const DNS_HEADER_LEN = 12;
export const DNS_PORT = 53;
export const DNS_MAX_LABEL_LEN = 63;
/** In wire form: every label with its length byte, and the final zero byte. */
export const DNS_MAX_NAME_LEN = 255;
/** A UDP answer's limit when the query has no OPT record (RFC 1035 4.2.1). */
export const DNS_UDP_LIMIT = 512;
/** The largest UDP answer vsw sends whatever an OPT record offers: the DNS flag day 2020 figure, which fits an IPv6 minimum MTU without fragments. */
export const DNS_EDNS_LIMIT = 1232;
/** Over TCP, the message's length in two bytes before it. */
export const DNS_TCP_PREFIX_LEN = 2;
/** An OPT record without options: root name, TYPE, CLASS (payload size), TTL (extended RCODE, version, flags), RDLENGTH. */
export const DNS_OPT_LEN = 11;
/** Name (as a pointer), TYPE, CLASS, TTL, RDLENGTH: what an answer record takes before its data. */
const RR_FIXED_LEN = 12;
/** A compression pointer to offset 12, where the question's name starts. */
const QUESTION_NAME_POINTER = 0xc000 | DNS_HEADER_LEN;
/** Jumps a name may take; the "strictly backwards" rule bounds them anyway, this bounds the work. */
const MAX_POINTER_HOPS = 64;

export const DnsFlag = {
  /** A response. */
  QR: 0x8000,
  /** Authoritative answer. */
  AA: 0x0400,
  /** Truncated: the answer did not fit; ask over TCP. */
  TC: 0x0200,
  /** Recursion desired (set by the client, echoed). */
  RD: 0x0100,
  /** Recursion available. */
  RA: 0x0080,
  /** Authentic data (DNSSEC). */
  AD: 0x0020,
  /** Checking disabled (DNSSEC; echoed). */
  CD: 0x0010,
} as const;

const OPCODE_SHIFT = 11;
const OPCODE_MASK = 0xf;
const RCODE_MASK = 0xf;
/** The DNSSEC OK bit in the OPT record's flags. */
const EDNS_DO = 0x8000;

export const DnsOpcode = {
  QUERY: 0,
  IQUERY: 1,
  STATUS: 2,
  NOTIFY: 4,
  UPDATE: 5,
} as const;

export const DnsType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;

const TYPE_NAMES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 41: 'OPT', 255: 'ANY' };

export function dnsTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`;
}

export const DnsClass = {
  IN: 1,
  CH: 3,
  ANY: 255,
} as const;

export const DnsRcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  /** EDNS version not supported (RFC 6891): 16, carried in the OPT record's extended RCODE. */
  BADVERS: 16,
} as const;

const RCODE_NAMES: Record<number, string> = { 0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED', 16: 'BADVERS' };

export function dnsRcodeName(rcode: number): string {
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

/** What DnsQueryParser.parse found. Every verdict but OK and NOT_IMPLEMENTED is a malformed query. */
export const DnsVerdict = {
  OK: 0,
  /** Shorter than the 12-byte header: nothing can be answered, not even an error. */
  SHORT: 1,
  /** QR is set: a response, never answered (two resolvers would answer each other forever). */
  RESPONSE: 2,
  /** An opcode other than QUERY (UPDATE, NOTIFY...): well formed maybe, answered NOTIMP with the header alone. */
  NOT_IMPLEMENTED: 3,
  /** QDCOUNT is not 1, or a query carries answer or authority records, or more than one additional record. */
  BAD_COUNTS: 4,
  /** The name runs past the end of the message. */
  NAME_TRUNCATED: 5,
  /** A label length byte over 63 that is not a pointer (the obsolete extended label types 01 and 10). */
  LABEL_TOO_LONG: 6,
  /** The name is longer than 255 bytes in wire form. */
  NAME_TOO_LONG: 7,
  /** A compression pointer past the end of the message. */
  POINTER_OUT_OF_BOUNDS: 8,
  /** A compression pointer to itself or to a later offset. */
  POINTER_FORWARD: 9,
  /** A compression pointer that does not go back further than the name has been already: a loop, or a path to one. */
  POINTER_LOOP: 10,
  /** QTYPE and QCLASS do not fit after the name. */
  QUESTION_TRUNCATED: 11,
  /** The additional record is not a well-formed OPT with the root name. */
  BAD_OPT: 12,
} as const;

const VERDICT_NAMES = [
  'ok',
  'short',
  'response',
  'notImplemented',
  'badCounts',
  'nameTruncated',
  'labelTooLong',
  'nameTooLong',
  'pointerOutOfBounds',
  'pointerForward',
  'pointerLoop',
  'questionTruncated',
  'badOpt',
] as const;

export function dnsVerdictName(verdict: number): string {
  return VERDICT_NAMES[verdict] ?? `verdict${verdict}`;
}

// ---- header view ------------------------------------------------------------

/** A reusable view over a DNS message's header (and the message it starts). */
export class DnsView extends PacketView {
  /** False (view detached) when shorter than the 12-byte header. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, DNS_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  id(): number {
    return read16(this.buf, this.off);
  }
  flags(): number {
    return read16(this.buf, this.off + DnsField.FLAGS);
  }
  qr(): boolean {
    return (this.flags() & DnsFlag.QR) !== 0;
  }
  opcode(): number {
    return (this.flags() >>> OPCODE_SHIFT) & OPCODE_MASK;
  }
  aa(): boolean {
    return (this.flags() & DnsFlag.AA) !== 0;
  }
  tc(): boolean {
    return (this.flags() & DnsFlag.TC) !== 0;
  }
  rd(): boolean {
    return (this.flags() & DnsFlag.RD) !== 0;
  }
  ra(): boolean {
    return (this.flags() & DnsFlag.RA) !== 0;
  }
  /** The header's four bits (an EDNS answer may extend them in its OPT record). */
  rcode(): number {
    return this.flags() & RCODE_MASK;
  }
  qdcount(): number {
    return read16(this.buf, this.off + DnsField.QDCOUNT);
  }
  ancount(): number {
    return read16(this.buf, this.off + DnsField.ANCOUNT);
  }
  nscount(): number {
    return read16(this.buf, this.off + DnsField.NSCOUNT);
  }
  arcount(): number {
    return read16(this.buf, this.off + DnsField.ARCOUNT);
  }

  setId(id: number): void {
    write16(this.buf, this.off, id);
  }
  setFlags(flags: number): void {
    write16(this.buf, this.off + DnsField.FLAGS, flags);
  }
  setTc(tc: boolean): void {
    const f = this.flags();
    this.setFlags(tc ? f | DnsFlag.TC : f & ~DnsFlag.TC);
  }
  setRcode(rcode: number): void {
    this.setFlags((this.flags() & ~RCODE_MASK) | (rcode & RCODE_MASK));
  }
  setCounts(qd: number, an: number, ns: number, ar: number): void {
    write16(this.buf, this.off + DnsField.QDCOUNT, qd);
    write16(this.buf, this.off + DnsField.ANCOUNT, an);
    write16(this.buf, this.off + DnsField.NSCOUNT, ns);
    write16(this.buf, this.off + DnsField.ARCOUNT, ar);
  }
}

// ---- names --------------------------------------------------------------------

/** Bytes of a name that stand for themselves in its text form (after lowercasing): letters, digits, '-' and '_'. */
function plainNameByte(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
}

/**
 * Reads names with every guard a hostile message needs. One per parser, so
 * the only allocation is the text of a name, when it is asked for.
 */
export class DnsNameReader {
  /** The last name read, lowercase, labels joined by '.', no trailing dot ('' for the root); other bytes as \DDD. */
  text = '';
  /** Its length in wire form, the final zero byte included. */
  wireLength = 0;

  /**
   * Reads the name at msg[at] of the message buf[base, base+len) (at is
   * relative to base, as pointers are). Returns the offset right after the
   * name where it was written (after its zero byte, or after its first
   * pointer), or the negative of a DnsVerdict. Pointers must go strictly
   * backwards, each before any place the name has visited, which rules out
   * loops by construction. With `withText` the name's text is built in `text`.
   */
  read(buf: Uint8Array, base: number, len: number, at: number, withText: boolean): number {
    let pos = at;
    let end = -1;
    let lowest = at;
    let wire = 1;
    let hops = 0;
    let s = '';
    this.text = '';
    this.wireLength = 0;
    for (;;) {
      if (pos >= len) return -DnsVerdict.NAME_TRUNCATED;
      const b = buf[base + pos];
      if (b === 0) {
        if (end < 0) end = pos + 1;
        break;
      }
      const kind = b & 0xc0;
      if (kind === 0xc0) {
        if (pos + 1 >= len) return -DnsVerdict.NAME_TRUNCATED;
        const target = ((b & 0x3f) << 8) | buf[base + pos + 1];
        if (target >= len) return -DnsVerdict.POINTER_OUT_OF_BOUNDS;
        if (target >= pos) return -DnsVerdict.POINTER_FORWARD;
        if (target >= lowest || ++hops > MAX_POINTER_HOPS) return -DnsVerdict.POINTER_LOOP;
        if (end < 0) end = pos + 2;
        lowest = target;
        pos = target;
        continue;
      }
      if (kind !== 0) return -DnsVerdict.LABEL_TOO_LONG;
      wire += b + 1;
      if (wire > DNS_MAX_NAME_LEN) return -DnsVerdict.NAME_TOO_LONG;
      if (pos + 1 + b > len) return -DnsVerdict.NAME_TRUNCATED;
      if (withText) {
        if (s.length > 0) s += '.';
        for (let i = base + pos + 1, e = i + b; i < e; i++) {
          let c = buf[i];
          if (c >= 0x41 && c <= 0x5a) c += 0x20;
          if (plainNameByte(c)) s += String.fromCharCode(c);
          else s += '\\' + String(c).padStart(3, '0');
        }
      }
      pos += 1 + b;
    }
    this.text = s;
    this.wireLength = wire;
    return end;
  }
}

/**
 * A name's text ("web.mynet", a trailing dot tolerated, "" or "." for the
 * root) in wire form. Labels are taken as written (no \DDD escapes: names
 * vsw serves are hostnames). Throws RangeError for an empty label, a label
 * over 63 bytes, a name over 255, or a character outside printable ASCII.
 */
export function encodeDnsName(name: string): Uint8Array {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  const labels = trimmed === '' ? [] : trimmed.split('.');
  let total = 1;
  for (const l of labels) {
    if (l.length === 0) throw new RangeError(`DNS name ${JSON.stringify(name)} has an empty label`);
    if (l.length > DNS_MAX_LABEL_LEN) throw new RangeError(`DNS name ${JSON.stringify(name)} has a label over ${DNS_MAX_LABEL_LEN} bytes`);
    if (!/^[\x21-\x7e]+$/.test(l)) throw new RangeError(`DNS name ${JSON.stringify(name)} has characters outside printable ASCII`);
    total += l.length + 1;
  }
  if (total > DNS_MAX_NAME_LEN) throw new RangeError(`DNS name ${JSON.stringify(name)} is over ${DNS_MAX_NAME_LEN} bytes`);
  const out = new Uint8Array(total);
  let i = 0;
  for (const l of labels) {
    out[i++] = l.length;
    for (let k = 0; k < l.length; k++) out[i++] = l.charCodeAt(k);
  }
  out[i] = 0;
  return out;
}

// ---- query parser -------------------------------------------------------------

/**
 * Parses one query, reused for every query (its fields are plain data
 * written by parse, one hidden class). After a parse, the fields hold what
 * was read before the verdict was reached: `id` and `flags` whenever the
 * header was readable, the question once questionEnd > 0.
 */
export class DnsQueryParser {
  verdict: number = DnsVerdict.SHORT;
  /** The message parsed: buf[off, off+len). */
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;
  id = 0;
  flags = 0;
  opcode = 0;
  /** The question's name, lowercase, no trailing dot (DnsNameReader.text). */
  qname = '';
  qtype = 0;
  qclass = 0;
  /** The question (name, QTYPE, QCLASS) as offsets into the message: always 12 and the byte after QCLASS; questionEnd 0 when not read. */
  questionEnd = 0;
  /** An OPT record was present. */
  edns = false;
  ednsPayload = 0;
  ednsVersion = 0;
  ednsDo = false;
  /** Where the message really ends (after its last record); bytes beyond it are ignored. */
  end = 0;
  readonly names = new DnsNameReader();

  /** Parses buf[off, off+len); returns the verdict (also kept in `verdict`). Never throws. */
  parse(buf: Uint8Array, off: number, len: number): number {
    this.buf = buf;
    this.off = off;
    this.len = len;
    this.id = 0;
    this.flags = 0;
    this.opcode = 0;
    this.qname = '';
    this.qtype = 0;
    this.qclass = 0;
    this.questionEnd = 0;
    this.edns = false;
    this.ednsPayload = 0;
    this.ednsVersion = 0;
    this.ednsDo = false;
    this.end = 0;
    return (this.verdict = this.run(buf, off, len));
  }

  private run(buf: Uint8Array, off: number, len: number): number {
    if (!fits(buf, off, len, DNS_HEADER_LEN)) return DnsVerdict.SHORT;
    this.id = read16(buf, off);
    const flags = read16(buf, off + DnsField.FLAGS);
    this.flags = flags;
    if ((flags & DnsFlag.QR) !== 0) return DnsVerdict.RESPONSE;
    this.opcode = (flags >>> OPCODE_SHIFT) & OPCODE_MASK;
    if (this.opcode !== DnsOpcode.QUERY) return DnsVerdict.NOT_IMPLEMENTED;
    const ar = read16(buf, off + DnsField.ARCOUNT);
    if (read16(buf, off + DnsField.QDCOUNT) !== 1 || read16(buf, off + DnsField.ANCOUNT) !== 0 || read16(buf, off + DnsField.NSCOUNT) !== 0 || ar > 1) {
      return DnsVerdict.BAD_COUNTS;
    }
    const names = this.names;
    const nameEnd = names.read(buf, off, len, DNS_HEADER_LEN, true);
    if (nameEnd < 0) return -nameEnd;
    if (nameEnd + 4 > len) return DnsVerdict.QUESTION_TRUNCATED;
    this.qname = names.text;
    this.qtype = read16(buf, off + nameEnd);
    this.qclass = read16(buf, off + nameEnd + 2);
    this.questionEnd = nameEnd + 4;
    this.end = this.questionEnd;
    if (ar === 0) return DnsVerdict.OK;
    // The one additional record must be an OPT: the root name, TYPE 41, and RDATA that is a run of options.
    const p = this.questionEnd;
    if (p + DNS_OPT_LEN > len || buf[off + p] !== 0 || read16(buf, off + p + 1) !== DnsType.OPT) return DnsVerdict.BAD_OPT;
    const rdlen = read16(buf, off + p + 9);
    const rdEnd = p + DNS_OPT_LEN + rdlen;
    if (rdEnd > len) return DnsVerdict.BAD_OPT;
    for (let o = p + DNS_OPT_LEN; o < rdEnd; ) {
      if (o + 4 > rdEnd) return DnsVerdict.BAD_OPT;
      o += 4 + read16(buf, off + o + 2);
      if (o > rdEnd) return DnsVerdict.BAD_OPT;
    }
    this.edns = true;
    this.ednsPayload = read16(buf, off + p + 3);
    this.ednsVersion = buf[off + p + 6];
    this.ednsDo = (read16(buf, off + p + 7) & EDNS_DO) !== 0;
    this.end = rdEnd;
    return DnsVerdict.OK;
  }

  /** The largest UDP answer the query allows: 512 without EDNS, its payload size with it, between 512 and DNS_EDNS_LIMIT. */
  udpLimit(): number {
    if (!this.edns) return DNS_UDP_LIMIT;
    return Math.min(Math.max(this.ednsPayload, DNS_UDP_LIMIT), DNS_EDNS_LIMIT);
  }
}

// ---- answer writer ------------------------------------------------------------

/**
 * Writes an answer to a parsed query, reused for every answer. begin(), then
 * the records, then finish(), which returns the answer's length. Nothing is
 * ever written at or past off + limit.
 */
export class DnsAnswerWriter {
  buf: Uint8Array = EMPTY;
  off = 0;
  limit = 0;
  /** Where the next record goes. */
  pos = 0;
  answers = 0;
  /** A record was left out for want of room: TC is set. */
  truncated = false;
  /** Room kept for the OPT record finish() writes (0 without EDNS). */
  private reserve = 0;
  private extRcode = 0;

  /**
   * Starts the answer at buf[off]: the question copied from the query (which
   * may sit at the same place: it is copied before the header is written),
   * the header with the query's id, QR, its opcode, RD and CD echoed, RA,
   * AA when `authoritative`, and `rcode` (BADVERS and above go in the OPT
   * record, so they need a query with EDNS). `limit` is cut to the buffer's
   * end. False, with nothing written, when the header, question and OPT do
   * not fit in it or the query was not parsed OK.
   */
  begin(buf: Uint8Array, off: number, limit: number, q: DnsQueryParser, rcode: number, authoritative: boolean): boolean {
    const qlen = q.questionEnd - DNS_HEADER_LEN;
    const reserve = q.edns ? DNS_OPT_LEN : 0;
    if (limit > buf.length - off) limit = buf.length - off;
    if (q.verdict !== DnsVerdict.OK || off < 0 || DNS_HEADER_LEN + qlen + reserve > limit) return false;
    if (rcode > RCODE_MASK && !q.edns) rcode = DnsRcode.SERVFAIL;
    const src = q.off + DNS_HEADER_LEN;
    const dst = off + DNS_HEADER_LEN;
    if (q.buf === buf) {
      if (src !== dst) buf.copyWithin(dst, src, src + qlen);
    } else {
      copyBytes(buf, dst, q.buf, src, qlen);
    }
    this.buf = buf;
    this.off = off;
    this.limit = limit;
    this.pos = dst + qlen;
    this.answers = 0;
    this.truncated = false;
    this.reserve = reserve;
    this.extRcode = rcode >>> 4;
    let flags = DnsFlag.QR | (q.opcode << OPCODE_SHIFT) | DnsFlag.RA | (rcode & RCODE_MASK) | (q.flags & (DnsFlag.RD | DnsFlag.CD));
    if (authoritative) flags |= DnsFlag.AA;
    write16(buf, off, q.id);
    write16(buf, off + DnsField.FLAGS, flags);
    write16(buf, off + DnsField.QDCOUNT, 1);
    write16(buf, off + DnsField.ANCOUNT, 0);
    write16(buf, off + DnsField.NSCOUNT, 0);
    write16(buf, off + DnsField.ARCOUNT, 0);
    return true;
  }

  /** Room for n more bytes (and the OPT); otherwise TC is set and false returned. */
  private room(n: number): boolean {
    if (!this.truncated && this.pos + n + this.reserve <= this.off + this.limit) return true;
    if (!this.truncated) {
      this.truncated = true;
      const i = this.off + DnsField.FLAGS;
      write16(this.buf, i, read16(this.buf, i) | DnsFlag.TC);
    }
    return false;
  }

  /** The record's owner (the question's name), TYPE, CLASS IN, TTL and RDLENGTH. */
  private recordHead(type: number, ttl: number, rdlen: number): void {
    const b = this.buf;
    const p = this.pos;
    write16(b, p, QUESTION_NAME_POINTER);
    write16(b, p + 2, type);
    write16(b, p + 4, DnsClass.IN);
    write32(b, p + 6, ttl);
    write16(b, p + 10, rdlen);
    this.pos = p + RR_FIXED_LEN;
    this.answers++;
  }

  /** An A record for the question's name; false when it did not fit (TC set). */
  addA(ttl: number, addr: number): boolean {
    if (!this.room(RR_FIXED_LEN + 4)) return false;
    this.recordHead(DnsType.A, ttl, 4);
    write32(this.buf, this.pos, addr);
    this.pos += 4;
    return true;
  }

  /** An AAAA record, its address the 16 bytes at src[at]. */
  addAaaa(ttl: number, src: Uint8Array, at: number): boolean {
    if (!this.room(RR_FIXED_LEN + 16)) return false;
    this.recordHead(DnsType.AAAA, ttl, 16);
    copyBytes(this.buf, this.pos, src, at, 16);
    this.pos += 16;
    return true;
  }

  /** A PTR record whose target is the wire-form name src[at, at+n) (encodeDnsName). */
  addPtr(ttl: number, src: Uint8Array, at: number, n: number): boolean {
    if (!this.room(RR_FIXED_LEN + n)) return false;
    this.recordHead(DnsType.PTR, ttl, n);
    copyBytes(this.buf, this.pos, src, at, n);
    this.pos += n;
    return true;
  }

  /** Writes the answer count and the OPT record (payload DNS_EDNS_LIMIT, version 0, no flags); returns the answer's length. */
  finish(): number {
    const b = this.buf;
    write16(b, this.off + DnsField.ANCOUNT, this.answers);
    if (this.reserve > 0) {
      const p = this.pos;
      b[p] = 0;
      write16(b, p + 1, DnsType.OPT);
      write16(b, p + 3, DNS_EDNS_LIMIT);
      b[p + 5] = this.extRcode;
      b[p + 6] = 0;
      write16(b, p + 7, 0);
      write16(b, p + 9, 0);
      this.pos = p + DNS_OPT_LEN;
      write16(b, this.off + DnsField.ARCOUNT, 1);
    }
    return this.pos - this.off;
  }
}

/**
 * An error answer to a query that could be read at least as far as its
 * header, at buf[off]: the header (id, QR, opcode, RD echoed, `rcode`) and,
 * when the parser got through it, the question copied from the query; no
 * records, no OPT. Never longer than the query. Returns its length, or 0
 * when the header was unreadable or a response (nothing is answered then),
 * or when `limit` bytes cannot hold it.
 */
export function emitDnsError(q: DnsQueryParser, rcode: number, buf: Uint8Array, off: number, limit: number): number {
  if (q.verdict === DnsVerdict.SHORT || q.verdict === DnsVerdict.RESPONSE) return 0;
  const qlen = q.questionEnd > 0 ? q.questionEnd - DNS_HEADER_LEN : 0;
  const n = DNS_HEADER_LEN + qlen;
  if (n > limit || !fits(buf, off, n, n)) return 0;
  if (qlen > 0) {
    const src = q.off + DNS_HEADER_LEN;
    const dst = off + DNS_HEADER_LEN;
    if (q.buf === buf) buf.copyWithin(dst, src, src + qlen);
    else copyBytes(buf, dst, q.buf, src, qlen);
  }
  write16(buf, off, q.id);
  write16(buf, off + DnsField.FLAGS, DnsFlag.QR | (q.opcode << OPCODE_SHIFT) | DnsFlag.RA | (q.flags & DnsFlag.RD) | (rcode & RCODE_MASK));
  write16(buf, off + DnsField.QDCOUNT, qlen > 0 ? 1 : 0);
  write16(buf, off + DnsField.ANCOUNT, 0);
  write16(buf, off + DnsField.NSCOUNT, 0);
  write16(buf, off + DnsField.ARCOUNT, 0);
  return n;
}

/**
 * Fits an answer (from elsewhere: the host's resolvers) at buf[off, off+len)
 * into `limit` bytes, in place: as it is when it fits; otherwise cut to its
 * header and question with TC set and no records. Returns the new length, or
 * 0 when it is no readable response or not even its question fits.
 */
export function truncateDnsAnswer(buf: Uint8Array, off: number, len: number, limit: number): number {
  if (!fits(buf, off, len, DNS_HEADER_LEN) || (read16(buf, off + DnsField.FLAGS) & DnsFlag.QR) === 0) return 0;
  if (len <= limit) return len;
  const qd = read16(buf, off + DnsField.QDCOUNT);
  let end = DNS_HEADER_LEN;
  if (qd === 1) {
    const nameEnd = new DnsNameReader().read(buf, off, len, DNS_HEADER_LEN, false);
    if (nameEnd < 0 || nameEnd + 4 > len) return 0;
    end = nameEnd + 4;
  } else if (qd !== 0) {
    return 0;
  }
  if (end > limit) return 0;
  write16(buf, off + DnsField.FLAGS, read16(buf, off + DnsField.FLAGS) | DnsFlag.TC);
  write16(buf, off + DnsField.ANCOUNT, 0);
  write16(buf, off + DnsField.NSCOUNT, 0);
  write16(buf, off + DnsField.ARCOUNT, 0);
  return end;
}

// ---- TCP framing --------------------------------------------------------------

/**
 * The length of the message a TCP stream's bytes buf[off, off+len) begin
 * with, when the 2-byte prefix and the whole message are there; -1 when
 * they are not (a message split over segments, or no prefix).
 */
export function dnsTcpMessageLength(buf: Uint8Array, off: number, len: number): number {
  if (!fits(buf, off, len, DNS_TCP_PREFIX_LEN)) return -1;
  const n = read16(buf, off);
  return DNS_TCP_PREFIX_LEN + n <= len ? n : -1;
}

/** Writes the 2-byte length prefix of an n-byte message at buf[off]. */
export function writeDnsTcpLength(buf: Uint8Array, off: number, n: number): void {
  write16(buf, off, n);
}

/** The message with its TCP length prefix, in a new buffer (control plane, tests). */
export function frameDnsTcp(message: Uint8Array): Uint8Array {
  if (message.length > 0xffff) throw new RangeError(`a DNS message over TCP is at most 65535 bytes: ${message.length}`);
  const out = new Uint8Array(DNS_TCP_PREFIX_LEN + message.length);
  writeDnsTcpLength(out, 0, message.length);
  out.set(message, DNS_TCP_PREFIX_LEN);
  return out;
}

// ---- representations ------------------------------------------------------------

export interface DnsEdnsRepr {
  payloadSize: number;
  version: number;
  dnssecOk: boolean;
}

export interface DnsQueryRepr {
  id: number;
  recursionDesired: boolean;
  /** Lowercase text, no trailing dot. */
  name: string;
  type: number;
  class: number;
  edns: DnsEdnsRepr | null;
}

/** Null unless the parser's last verdict was OK. */
export function parseDnsQuery(q: DnsQueryParser): DnsQueryRepr | null {
  if (q.verdict !== DnsVerdict.OK) return null;
  return {
    id: q.id,
    recursionDesired: (q.flags & DnsFlag.RD) !== 0,
    name: q.qname,
    type: q.qtype,
    class: q.qclass,
    edns: q.edns ? { payloadSize: q.ednsPayload, version: q.ednsVersion, dnssecOk: q.ednsDo } : null,
  };
}

export function dnsQueryLength(repr: DnsQueryRepr): number {
  return DNS_HEADER_LEN + encodeDnsName(repr.name).length + 4 + (repr.edns ? DNS_OPT_LEN : 0);
}

/** Writes the query at buf[offset]; returns its length. Throws RangeError for a bad name or a short buffer. */
export function emitDnsQuery(repr: DnsQueryRepr, buf: Uint8Array, offset: number): number {
  const name = encodeDnsName(repr.name);
  const len = DNS_HEADER_LEN + name.length + 4 + (repr.edns ? DNS_OPT_LEN : 0);
  if (!fits(buf, offset, buf.length - offset, len)) throw new RangeError('buffer too short for the DNS query');
  write16(buf, offset, repr.id);
  write16(buf, offset + DnsField.FLAGS, repr.recursionDesired ? DnsFlag.RD : 0);
  write16(buf, offset + DnsField.QDCOUNT, 1);
  write16(buf, offset + DnsField.ANCOUNT, 0);
  write16(buf, offset + DnsField.NSCOUNT, 0);
  write16(buf, offset + DnsField.ARCOUNT, repr.edns ? 1 : 0);
  let p = offset + DNS_HEADER_LEN;
  buf.set(name, p);
  p += name.length;
  write16(buf, p, repr.type);
  write16(buf, p + 2, repr.class);
  p += 4;
  if (repr.edns) {
    buf[p] = 0;
    write16(buf, p + 1, DnsType.OPT);
    write16(buf, p + 3, repr.edns.payloadSize);
    buf[p + 5] = 0;
    buf[p + 6] = repr.edns.version;
    write16(buf, p + 7, repr.edns.dnssecOk ? EDNS_DO : 0);
    write16(buf, p + 9, 0);
  }
  return len;
}

export function formatDnsQuery(repr: DnsQueryRepr): string {
  let s = `DNS query id=${repr.id} ${dnsTypeName(repr.type)}? ${repr.name === '' ? '.' : repr.name}`;
  if (repr.class !== DnsClass.IN) s += ` class=${repr.class}`;
  if (repr.recursionDesired) s += ' rd';
  if (repr.edns) s += ` edns=${repr.edns.payloadSize}${repr.edns.version !== 0 ? ` v${repr.edns.version}` : ''}${repr.edns.dnssecOk ? ' do' : ''}`;
  return s;
}

export interface DnsRecordRepr {
  name: string;
  type: number;
  class: number;
  ttl: number;
  /** A and AAAA: the address; PTR, CNAME, NS: the name (text); otherwise the RDATA as hex. */
  data: string;
}

export interface DnsResponseRepr {
  id: number;
  opcode: number;
  /** With an OPT record's extended bits. */
  rcode: number;
  authoritative: boolean;
  truncated: boolean;
  recursionDesired: boolean;
  recursionAvailable: boolean;
  question: { name: string; type: number; class: number } | null;
  answers: DnsRecordRepr[];
  authority: DnsRecordRepr[];
  /** Without the OPT record, which is `edns`. */
  additional: DnsRecordRepr[];
  edns: DnsEdnsRepr | null;
}

/**
 * Reads a whole response (any sections, compressed names) from
 * buf[off, off+len): for tests and the control plane, allocating. Null for
 * anything malformed, never a throw. At most one question.
 */
export function parseDnsResponse(buf: Uint8Array, off: number, len: number): DnsResponseRepr | null {
  if (!fits(buf, off, len, DNS_HEADER_LEN)) return null;
  const flags = read16(buf, off + DnsField.FLAGS);
  if ((flags & DnsFlag.QR) === 0) return null;
  const qd = read16(buf, off + DnsField.QDCOUNT);
  if (qd > 1) return null;
  const names = new DnsNameReader();
  let p = DNS_HEADER_LEN;
  let question: DnsResponseRepr['question'] = null;
  if (qd === 1) {
    const e = names.read(buf, off, len, p, true);
    if (e < 0 || e + 4 > len) return null;
    question = { name: names.text, type: read16(buf, off + e), class: read16(buf, off + e + 2) };
    p = e + 4;
  }
  const repr: DnsResponseRepr = {
    id: read16(buf, off),
    opcode: (flags >>> OPCODE_SHIFT) & OPCODE_MASK,
    rcode: flags & RCODE_MASK,
    authoritative: (flags & DnsFlag.AA) !== 0,
    truncated: (flags & DnsFlag.TC) !== 0,
    recursionDesired: (flags & DnsFlag.RD) !== 0,
    recursionAvailable: (flags & DnsFlag.RA) !== 0,
    question,
    answers: [],
    authority: [],
    additional: [],
    edns: null,
  };
  const sections = [repr.answers, repr.authority, repr.additional];
  const counts = [read16(buf, off + DnsField.ANCOUNT), read16(buf, off + DnsField.NSCOUNT), read16(buf, off + DnsField.ARCOUNT)];
  for (let s = 0; s < 3; s++) {
    for (let i = 0; i < counts[s]; i++) {
      const e = names.read(buf, off, len, p, true);
      if (e < 0 || e + 10 > len) return null;
      const owner = names.text;
      const type = read16(buf, off + e);
      const cls = read16(buf, off + e + 2);
      const ttl = read32(buf, off + e + 4);
      const rdlen = read16(buf, off + e + 8);
      const rd = e + 10;
      if (rd + rdlen > len) return null;
      p = rd + rdlen;
      if (type === DnsType.OPT) {
        if (s !== 2 || repr.edns !== null) return null;
        repr.edns = { payloadSize: cls, version: (ttl >>> 16) & 0xff, dnssecOk: (ttl & EDNS_DO) !== 0 };
        repr.rcode |= (ttl >>> 24) << 4;
        continue;
      }
      let data: string;
      if (type === DnsType.A && rdlen === 4) data = formatIpv4Addr(read32(buf, off + rd));
      else if (type === DnsType.AAAA && rdlen === 16) data = formatIpv6Addr(buf, off + rd);
      else if (type === DnsType.PTR || type === DnsType.CNAME || type === DnsType.NS) {
        const ne = names.read(buf, off, len, rd, true);
        if (ne < 0 || ne !== p) return null;
        data = names.text;
      } else {
        data = Buffer.from(buf.subarray(off + rd, off + p)).toString('hex');
      }
      sections[s].push({ name: owner, type, class: cls, ttl, data });
    }
  }
  return repr;
}

export function formatDnsResponse(repr: DnsResponseRepr): string {
  const q = repr.question;
  let s = `DNS response id=${repr.id} ${dnsRcodeName(repr.rcode)}`;
  if (q) s += ` ${dnsTypeName(q.type)}? ${q.name === '' ? '.' : q.name}`;
  const flags = [repr.authoritative && 'aa', repr.truncated && 'tc', repr.recursionDesired && 'rd', repr.recursionAvailable && 'ra'].filter(Boolean);
  if (flags.length > 0) s += ` ${flags.join(',')}`;
  for (const a of repr.answers) s += ` ${dnsTypeName(a.type)} ${a.data} ttl=${a.ttl}`;
  return s;
}
