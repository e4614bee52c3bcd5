/**
 * The DHCP message (RFC 2131 section 2, the BOOTP layout of RFC 951) and its
 * options (RFC 2132), without the UDP/IP/Ethernet around it (frames.ts).
 *
 * Layout: a fixed 236-byte BOOTP header, the magic cookie 99.130.83.99, then
 * options as code, length, value. Option 52 ("overload") says that the
 * header's `file` and/or `sname` fields carry more options; an option that
 * appears more than once is one value split in pieces, concatenated in the
 * order options field, file, sname (RFC 3396).
 *
 * Parsing is strict and never throws: anything that does not fit where it
 * claims to be gives null, since a DHCP reply comes from whatever is on the
 * LAN. Emitting throws RangeError, since a bad input there is the caller's bug.
 */

import { copyOut, fits, read16, read32, write16, write32 } from '../packet/bytes.js';
import { formatIpv4Addr, mustParseIpv4Addr } from '../packet/ipv4.js';

export const DhcpField = {
  OP: 0,
  HTYPE: 1,
  HLEN: 2,
  HOPS: 3,
  XID: 4,
  SECS: 8,
  FLAGS: 10,
  CIADDR: 12,
  YIADDR: 16,
  SIADDR: 20,
  GIADDR: 24,
  CHADDR: 28,
  SNAME: 44,
  FILE: 108,
  COOKIE: 236,
  OPTIONS: 240,
} as const;

export const CHADDR_LEN = 16;
export const SNAME_LEN = 64;
export const FILE_LEN = 128;
/** The fixed header and the magic cookie: the shortest DHCP message (no options at all). */
export const DHCP_HEADER_LEN = DhcpField.OPTIONS;
export const DHCP_MAGIC_COOKIE = 0x63825363;
/**
 * What sent messages are padded to: RFC 1542 section 2.1 asks for at least
 * 300 bytes of BOOTP message because some relay agents drop shorter ones.
 */
export const BOOTP_MIN_MESSAGE_LEN = 300;

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

export const BootpOp = {
  REQUEST: 1,
  REPLY: 2,
} as const;

/** ARP hardware type of Ethernet: the only one vsw's endpoints have. */
export const HTYPE_ETHERNET = 1;

/** The flags field's one defined bit: "answer me by broadcast, I cannot receive unicast yet". */
export const BROADCAST_FLAG = 0x8000;

/** Option 53 values (RFC 2132 9.6). */
export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

const MESSAGE_TYPE_NAMES: Record<number, string> = {
  1: 'DISCOVER',
  2: 'OFFER',
  3: 'REQUEST',
  4: 'DECLINE',
  5: 'ACK',
  6: 'NAK',
  7: 'RELEASE',
  8: 'INFORM',
};

export function dhcpMessageTypeName(type: number): string {
  return MESSAGE_TYPE_NAMES[type] ?? `type${type}`;
}

/** The option codes this client sends or reads (RFC 2132). */
export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS_SERVERS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  INTERFACE_MTU: 26,
  REQUESTED_ADDRESS: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_REQUEST_LIST: 55,
  MESSAGE: 56,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  CLIENT_ID: 61,
  END: 255,
} as const;

/** Option 52's bits: which header fields hold options. */
export const Overload = {
  FILE: 1,
  SNAME: 2,
} as const;

/**
 * A DHCP message. Addresses are dotted quads; options map a code to its value
 * (pieces of a split option already joined), in the order they were first
 * seen or are to be written. Option 52 is framing, not content: the parser
 * consumes it and the emitter never writes it.
 */
export interface DhcpMessage {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  /** Seconds since the client began acquiring or renewing. */
  secs: number;
  broadcast: boolean;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The client hardware address field, all 16 bytes; an Ethernet MAC is the first hlen (6) of them. */
  chaddr: Uint8Array;
  /** `sname` up to its first NUL; empty when the field carries options. */
  serverName: string;
  /** `file` up to its first NUL; empty when the field carries options. */
  bootFile: string;
  options: Map<number, Uint8Array>;
}

// ---- parse -------------------------------------------------------------------

/**
 * Reads the options in buf[start, end) into `into`, joining repeated codes.
 * Stops at END or at the end of the area (a missing END is tolerated: many
 * servers pad the options field to its end instead). Returns the overload
 * value found (0 when none), or -1 when an option runs past the area, or
 * option 52 is malformed or appears where it is not allowed.
 */
function readOptions(buf: Uint8Array, start: number, end: number, into: Map<number, Uint8Array>, overloadAllowed: boolean): number {
  let overload = 0;
  let i = start;
  while (i < end) {
    const code = buf[i];
    if (code === DhcpOption.PAD) {
      i++;
      continue;
    }
    if (code === DhcpOption.END) break;
    if (i + 2 > end) return -1;
    const len = buf[i + 1];
    const valueStart = i + 2;
    if (valueStart + len > end) return -1;
    if (code === DhcpOption.OVERLOAD) {
      // Only the options field may say where more options are, and only once.
      if (!overloadAllowed || overload !== 0 || len !== 1) return -1;
      overload = buf[valueStart];
      if (overload < 1 || overload > 3) return -1;
    } else {
      // copyOut, not slice: on a Buffer (a receive batch) slice aliases bytes the next batch overwrites.
      const piece = copyOut(buf, valueStart, len);
      const before = into.get(code);
      if (before === undefined) {
        into.set(code, piece);
      } else {
        const joined = new Uint8Array(before.length + len);
        joined.set(before, 0);
        joined.set(piece, before.length);
        into.set(code, joined);
      }
    }
    i = valueStart + len;
  }
  return overload;
}

/** Bytes up to the first NUL as Latin-1, so that no byte sequence can make decoding fail. */
function readCString(buf: Uint8Array, start: number, len: number): string {
  let s = '';
  for (let i = start; i < start + len && buf[i] !== 0; i++) s += String.fromCharCode(buf[i]);
  return s;
}

/**
 * The DHCP message in buf[offset, offset+length), or null when it is shorter
 * than header and cookie, the cookie is wrong, hlen exceeds the chaddr field,
 * or an option does not fit (see readOptions). Does not look at op, type or
 * xid: which messages make sense is the reader's business (frames.ts).
 */
export function parseDhcpMessage(buf: Uint8Array, offset: number, length: number): DhcpMessage | null {
  if (!fits(buf, offset, length, DHCP_HEADER_LEN)) return null;
  if (read32(buf, offset + DhcpField.COOKIE) !== DHCP_MAGIC_COOKIE) return null;
  const hlen = buf[offset + DhcpField.HLEN];
  if (hlen > CHADDR_LEN) return null;
  const options = new Map<number, Uint8Array>();
  const overload = readOptions(buf, offset + DhcpField.OPTIONS, offset + length, options, true);
  if (overload < 0) return null;
  if (overload & Overload.FILE) {
    if (readOptions(buf, offset + DhcpField.FILE, offset + DhcpField.FILE + FILE_LEN, options, false) < 0) return null;
  }
  if (overload & Overload.SNAME) {
    if (readOptions(buf, offset + DhcpField.SNAME, offset + DhcpField.SNAME + SNAME_LEN, options, false) < 0) return null;
  }
  return {
    op: buf[offset + DhcpField.OP],
    htype: buf[offset + DhcpField.HTYPE],
    hlen,
    hops: buf[offset + DhcpField.HOPS],
    xid: read32(buf, offset + DhcpField.XID),
    secs: read16(buf, offset + DhcpField.SECS),
    broadcast: (read16(buf, offset + DhcpField.FLAGS) & BROADCAST_FLAG) !== 0,
    ciaddr: formatIpv4Addr(read32(buf, offset + DhcpField.CIADDR)),
    yiaddr: formatIpv4Addr(read32(buf, offset + DhcpField.YIADDR)),
    siaddr: formatIpv4Addr(read32(buf, offset + DhcpField.SIADDR)),
    giaddr: formatIpv4Addr(read32(buf, offset + DhcpField.GIADDR)),
    chaddr: copyOut(buf, offset + DhcpField.CHADDR, CHADDR_LEN),
    serverName: overload & Overload.SNAME ? '' : readCString(buf, offset + DhcpField.SNAME, SNAME_LEN),
    bootFile: overload & Overload.FILE ? '' : readCString(buf, offset + DhcpField.FILE, FILE_LEN),
    options,
  };
}

/** Option 53's value, or null when it is absent or not one byte long. */
export function messageTypeOf(message: DhcpMessage): number | null {
  const value = message.options.get(DhcpOption.MESSAGE_TYPE);
  return value !== undefined && value.length === 1 ? value[0] : null;
}

// ---- emit --------------------------------------------------------------------

/** Bytes the options take on the wire: values over 255 bytes go out as several pieces (RFC 3396), plus END. */
function optionsLength(options: Map<number, Uint8Array>): number {
  let len = 1;
  for (const value of options.values()) len += 2 * Math.max(1, Math.ceil(value.length / 255)) + value.length;
  return len;
}

function writeCString(buf: Uint8Array, start: number, fieldLen: number, value: string, name: string): void {
  // The field must keep a terminating NUL, and only single bytes can be written.
  if (value.length >= fieldLen || /[^\x01-\xff]/.test(value)) throw new RangeError(`DHCP ${name} must be at most ${fieldLen - 1} non-NUL Latin-1 characters`);
  for (let i = 0; i < value.length; i++) buf[start + i] = value.charCodeAt(i);
}

/**
 * The message as bytes, zero-padded to BOOTP_MIN_MESSAGE_LEN. Throws
 * RangeError on a bad address, a chaddr over 16 bytes, an option code PAD,
 * END or OVERLOAD, or serverName/bootFile too long for their fields.
 */
export function emitDhcpMessage(message: DhcpMessage): Uint8Array {
  if (message.chaddr.length > CHADDR_LEN) throw new RangeError(`DHCP chaddr is at most ${CHADDR_LEN} bytes, got ${message.chaddr.length}`);
  for (const code of message.options.keys()) {
    if (code === DhcpOption.PAD || code === DhcpOption.END || code === DhcpOption.OVERLOAD || !(code > 0 && code < 255)) {
      throw new RangeError(`DHCP option code ${code} cannot be emitted as an option value`);
    }
  }
  const length = Math.max(DHCP_HEADER_LEN + optionsLength(message.options), BOOTP_MIN_MESSAGE_LEN);
  const buf = new Uint8Array(length);
  buf[DhcpField.OP] = message.op;
  buf[DhcpField.HTYPE] = message.htype;
  buf[DhcpField.HLEN] = message.hlen;
  buf[DhcpField.HOPS] = message.hops;
  write32(buf, DhcpField.XID, message.xid);
  write16(buf, DhcpField.SECS, Math.min(message.secs, 0xffff));
  write16(buf, DhcpField.FLAGS, message.broadcast ? BROADCAST_FLAG : 0);
  write32(buf, DhcpField.CIADDR, mustParseIpv4Addr(message.ciaddr));
  write32(buf, DhcpField.YIADDR, mustParseIpv4Addr(message.yiaddr));
  write32(buf, DhcpField.SIADDR, mustParseIpv4Addr(message.siaddr));
  write32(buf, DhcpField.GIADDR, mustParseIpv4Addr(message.giaddr));
  buf.set(message.chaddr, DhcpField.CHADDR);
  writeCString(buf, DhcpField.SNAME, SNAME_LEN, message.serverName, 'server name');
  writeCString(buf, DhcpField.FILE, FILE_LEN, message.bootFile, 'boot file name');
  write32(buf, DhcpField.COOKIE, DHCP_MAGIC_COOKIE);
  let at = DhcpField.OPTIONS;
  for (const [code, value] of message.options) {
    let done = 0;
    do {
      const piece = Math.min(255, value.length - done);
      buf[at] = code;
      buf[at + 1] = piece;
      buf.set(value.subarray(done, done + piece), at + 2);
      at += 2 + piece;
      done += piece;
    } while (done < value.length);
  }
  buf[at] = DhcpOption.END;
  return buf;
}

// ---- option values -------------------------------------------------------------

export function ipv4Option(...addresses: string[]): Uint8Array {
  const out = new Uint8Array(4 * addresses.length);
  addresses.forEach((a, i) => write32(out, 4 * i, mustParseIpv4Addr(a)));
  return out;
}

export function u32Option(value: number): Uint8Array {
  const out = new Uint8Array(4);
  write32(out, 0, value);
  return out;
}

export function u16Option(value: number): Uint8Array {
  const out = new Uint8Array(2);
  write16(out, 0, value);
  return out;
}

export function textOption(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text, 'latin1'));
}

/** Addresses of a list option (router, DNS), or null when its length is not a positive multiple of 4. */
export function readIpv4List(value: Uint8Array): string[] | null {
  if (value.length === 0 || value.length % 4 !== 0) return null;
  const out: string[] = [];
  for (let i = 0; i < value.length; i += 4) out.push(formatIpv4Addr(read32(value, i)));
  return out;
}

/** A single-address option (mask, server id), or null when it is not 4 bytes. */
export function readIpv4(value: Uint8Array): string | null {
  return value.length === 4 ? formatIpv4Addr(read32(value, 0)) : null;
}

export function readU32(value: Uint8Array): number | null {
  return value.length === 4 ? read32(value, 0) : null;
}

export function readU16(value: Uint8Array): number | null {
  return value.length === 2 ? read16(value, 0) : null;
}

/**
 * A text option (domain, message) as Latin-1, without the trailing NULs some
 * servers append (RFC 2132 3.0 says they should not, but they do).
 */
export function readText(value: Uint8Array): string {
  let end = value.length;
  while (end > 0 && value[end - 1] === 0) end--;
  let s = '';
  for (let i = 0; i < end; i++) s += String.fromCharCode(value[i]);
  return s;
}

// ---- display ---------------------------------------------------------------------

/** One line for logs: `DHCP ACK xid=0x1234abcd ciaddr=... yiaddr=... chaddr=aa:bb:...`. */
export function formatDhcpMessage(message: DhcpMessage): string {
  const type = messageTypeOf(message);
  const name = type === null ? (message.op === BootpOp.REPLY ? 'BOOTREPLY' : 'BOOTREQUEST') : dhcpMessageTypeName(type);
  const mac = Array.from(message.chaddr.subarray(0, message.hlen), (b) => b.toString(16).padStart(2, '0')).join(':');
  let s = `DHCP ${name} xid=0x${message.xid.toString(16).padStart(8, '0')} chaddr=${mac}`;
  if (message.ciaddr !== '0.0.0.0') s += ` ciaddr=${message.ciaddr}`;
  if (message.yiaddr !== '0.0.0.0') s += ` yiaddr=${message.yiaddr}`;
  if (message.giaddr !== '0.0.0.0') s += ` giaddr=${message.giaddr}`;
  if (message.broadcast) s += ' broadcast';
  return s;
}
