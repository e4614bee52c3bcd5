/**
 * TCP header (RFC 9293). The view covers the whole segment (header, options,
 * payload), since the checksum does; its length is the IP payload length.
 * Options stay raw bytes: the switch only needs to skip them.
 */

import { copyBytes, copyOut, fits, read16, read32, write16, write32 } from './bytes.js';
import { internetChecksum } from './checksum.js';
import { PacketView } from './view.js';

export const TcpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  SEQ: 4,
  ACK: 8,
  /** Data offset in the high nibble; the low nibble is reserved bits and AE (RFC 9768), preserved by setters. */
  DATA_OFF: 12,
  FLAGS: 13,
  WINDOW: 14,
  CHECKSUM: 16,
  URGENT: 18,
  OPTIONS: 20,
} as const;

export const TCP_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;

export const TcpFlags = {
  FIN: 0x01,
  SYN: 0x02,
  RST: 0x04,
  PSH: 0x08,
  ACK: 0x10,
  URG: 0x20,
  ECE: 0x40,
  CWR: 0x80,
} as const;

const FLAG_NAMES: readonly [number, string][] = [
  [TcpFlags.SYN, 'SYN'],
  [TcpFlags.FIN, 'FIN'],
  [TcpFlags.RST, 'RST'],
  [TcpFlags.PSH, 'PSH'],
  [TcpFlags.ACK, 'ACK'],
  [TcpFlags.URG, 'URG'],
  [TcpFlags.ECE, 'ECE'],
  [TcpFlags.CWR, 'CWR'],
];

/** "SYN,ACK"; "none" for 0. */
export function formatTcpFlags(flags: number): string {
  const names = FLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
  return names.length > 0 ? names.join(',') : 'none';
}

/** A reusable view over a TCP segment. */
export class TcpView extends PacketView {
  /** False (view detached) unless the data offset is at least 5 words and the header it announces fits. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    if (fits(buf, offset, length, TCP_HEADER_LEN)) {
      const hl = (buf[offset + TcpField.DATA_OFF] >>> 4) << 2;
      if (hl >= TCP_HEADER_LEN && hl <= length) {
        return this.attach(buf, offset, length);
      }
    }
    return this.detach();
  }

  /** For building a segment: checks only that 20 bytes fit. */
  resetRaw(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, TCP_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  srcPort(): number {
    return read16(this.buf, this.off);
  }
  dstPort(): number {
    return read16(this.buf, this.off + TcpField.DST_PORT);
  }
  seqNumber(): number {
    return read32(this.buf, this.off + TcpField.SEQ);
  }
  ackNumber(): number {
    return read32(this.buf, this.off + TcpField.ACK);
  }
  /** In bytes, options included. */
  headerLength(): number {
    return (this.buf[this.off + TcpField.DATA_OFF] >>> 4) << 2;
  }
  flags(): number {
    return this.buf[this.off + TcpField.FLAGS];
  }
  fin(): boolean {
    return (this.buf[this.off + TcpField.FLAGS] & TcpFlags.FIN) !== 0;
  }
  syn(): boolean {
    return (this.buf[this.off + TcpField.FLAGS] & TcpFlags.SYN) !== 0;
  }
  rst(): boolean {
    return (this.buf[this.off + TcpField.FLAGS] & TcpFlags.RST) !== 0;
  }
  psh(): boolean {
    return (this.buf[this.off + TcpField.FLAGS] & TcpFlags.PSH) !== 0;
  }
  ack(): boolean {
    return (this.buf[this.off + TcpField.FLAGS] & TcpFlags.ACK) !== 0;
  }
  window(): number {
    return read16(this.buf, this.off + TcpField.WINDOW);
  }
  checksum(): number {
    return read16(this.buf, this.off + TcpField.CHECKSUM);
  }
  urgentPointer(): number {
    return read16(this.buf, this.off + TcpField.URGENT);
  }
  optionsOffset(): number {
    return this.off + TcpField.OPTIONS;
  }
  optionsLength(): number {
    return this.headerLength() - TCP_HEADER_LEN;
  }
  payloadOffset(): number {
    return this.off + this.headerLength();
  }
  payloadLength(): number {
    return this.len - this.headerLength();
  }
  /** Over the whole view (its length is the segment length). */
  verifyChecksum(pseudoSum: number): boolean {
    return internetChecksum(this.buf, this.off, this.len, pseudoSum) === 0;
  }

  setSrcPort(port: number): void {
    write16(this.buf, this.off, port);
  }
  setDstPort(port: number): void {
    write16(this.buf, this.off + TcpField.DST_PORT, port);
  }
  setSeqNumber(seq: number): void {
    write32(this.buf, this.off + TcpField.SEQ, seq);
  }
  setAckNumber(ack: number): void {
    write32(this.buf, this.off + TcpField.ACK, ack);
  }
  /** In bytes, a multiple of 4. */
  setHeaderLength(bytes: number): void {
    const i = this.off + TcpField.DATA_OFF;
    this.buf[i] = (this.buf[i] & 0x0f) | (((bytes >>> 2) & 0x0f) << 4);
  }
  setFlags(flags: number): void {
    this.buf[this.off + TcpField.FLAGS] = flags;
  }
  setWindow(window: number): void {
    write16(this.buf, this.off + TcpField.WINDOW, window);
  }
  setChecksum(csum: number): void {
    write16(this.buf, this.off + TcpField.CHECKSUM, csum);
  }
  setUrgentPointer(ptr: number): void {
    write16(this.buf, this.off + TcpField.URGENT, ptr);
  }
  fillChecksum(pseudoSum: number): void {
    this.setChecksum(0);
    this.setChecksum(internetChecksum(this.buf, this.off, this.len, pseudoSum));
  }
}

export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  urgent: number;
  /** Raw option bytes, padded by the sender to a multiple of 4. */
  options: Uint8Array;
  payload: Uint8Array;
}

/** Checksums are not verified here (partial sums under NEEDS_CSUM, as for UDP). options and payload are copies. */
export function parseTcp(view: TcpView): TcpRepr {
  return {
    srcPort: view.srcPort(),
    dstPort: view.dstPort(),
    seq: view.seqNumber(),
    ack: view.ackNumber(),
    flags: view.flags(),
    window: view.window(),
    urgent: view.urgentPointer(),
    options: copyOut(view.buf, view.optionsOffset(), view.optionsLength()),
    payload: copyOut(view.buf, view.payloadOffset(), view.payloadLength()),
  };
}

export function tcpLength(repr: TcpRepr): number {
  return TCP_HEADER_LEN + repr.options.length + repr.payload.length;
}

/** Writes the segment with its checksum at buf[offset]; returns its length. pseudoSum covers the IP pseudo-header for tcpLength(repr). */
export function emitTcp(repr: TcpRepr, buf: Uint8Array, offset: number, pseudoSum: number): number {
  const optLen = repr.options.length;
  if (optLen % 4 !== 0 || optLen > TCP_MAX_HEADER_LEN - TCP_HEADER_LEN) throw new RangeError(`TCP options must be a multiple of 4 bytes up to 40: ${optLen}`);
  const len = tcpLength(repr);
  const v = new TcpView();
  if (!v.resetRaw(buf, offset, len)) throw new RangeError('buffer too short for the TCP segment');
  v.setSrcPort(repr.srcPort);
  v.setDstPort(repr.dstPort);
  v.setSeqNumber(repr.seq);
  v.setAckNumber(repr.ack);
  buf[offset + TcpField.DATA_OFF] = 0;
  v.setHeaderLength(TCP_HEADER_LEN + optLen);
  v.setFlags(repr.flags);
  v.setWindow(repr.window);
  v.setUrgentPointer(repr.urgent);
  copyBytes(buf, offset + TCP_HEADER_LEN, repr.options, 0, optLen);
  copyBytes(buf, offset + TCP_HEADER_LEN + optLen, repr.payload, 0, repr.payload.length);
  v.fillChecksum(pseudoSum);
  return len;
}

export function formatTcp(repr: TcpRepr): string {
  let s = `TCP src=${repr.srcPort} dst=${repr.dstPort} seq=${repr.seq}`;
  if (repr.flags & TcpFlags.ACK) s += ` ack=${repr.ack}`;
  s += ` flags=${formatTcpFlags(repr.flags)} win=${repr.window}`;
  if (repr.flags & TcpFlags.URG) s += ` urg=${repr.urgent}`;
  if (repr.options.length > 0) s += ` opts=${repr.options.length}`;
  return s + ` len=${repr.payload.length}`;
}
