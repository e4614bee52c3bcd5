/**
 * UDP header (RFC 768). Checksums take the pseudo-header sum as an argument
 * (pseudoSumV4At / pseudoSumV6At from checksum.ts) so one view serves both IP
 * versions.
 */

import { copyBytes, copyOut, fits, read16, write16 } from './bytes.js';
import { internetChecksum } from './checksum.js';
import { PacketView } from './view.js';

export const UdpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  LENGTH: 4,
  CHECKSUM: 6,
} as const;

export const UDP_HEADER_LEN = 8;

/** A reusable view over a UDP datagram. */
export class UdpView extends PacketView {
  /** False (view detached) unless the header fits and the length field covers the header and fits. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    if (fits(buf, offset, length, UDP_HEADER_LEN)) {
      const l = read16(buf, offset + UdpField.LENGTH);
      if (l >= UDP_HEADER_LEN && l <= length) {
        return this.attach(buf, offset, length);
      }
    }
    return this.detach();
  }

  /** For building a datagram: checks only that 8 bytes fit. */
  resetRaw(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, UDP_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  srcPort(): number {
    return read16(this.buf, this.off);
  }
  dstPort(): number {
    return read16(this.buf, this.off + UdpField.DST_PORT);
  }
  /** The length field: header plus payload. */
  length(): number {
    return read16(this.buf, this.off + UdpField.LENGTH);
  }
  checksum(): number {
    return read16(this.buf, this.off + UdpField.CHECKSUM);
  }
  payloadOffset(): number {
    return this.off + UDP_HEADER_LEN;
  }
  payloadLength(): number {
    return this.length() - UDP_HEADER_LEN;
  }
  /**
   * Over the bytes the length field covers. A zero field ("no checksum") fails
   * here; it is legal over IPv4 only, so accepting it is the caller's call.
   */
  verifyChecksum(pseudoSum: number): boolean {
    return internetChecksum(this.buf, this.off, this.length(), pseudoSum) === 0;
  }

  setSrcPort(port: number): void {
    write16(this.buf, this.off, port);
  }
  setDstPort(port: number): void {
    write16(this.buf, this.off + UdpField.DST_PORT, port);
  }
  setLength(length: number): void {
    write16(this.buf, this.off + UdpField.LENGTH, length);
  }
  setChecksum(csum: number): void {
    write16(this.buf, this.off + UdpField.CHECKSUM, csum);
  }
  /** A computed 0 goes out as 0xffff, since 0 on the wire means "none" (RFC 768). */
  fillChecksum(pseudoSum: number): void {
    this.setChecksum(0);
    this.setChecksum(internetChecksum(this.buf, this.off, this.length(), pseudoSum) || 0xffff);
  }
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

/** Checksums are not verified here: under VIRTIO_NET_HDR_F_NEEDS_CSUM the field legitimately holds a partial sum. `payload` is a copy. */
export function parseUdp(view: UdpView): UdpRepr {
  return {
    srcPort: view.srcPort(),
    dstPort: view.dstPort(),
    payload: copyOut(view.buf, view.payloadOffset(), view.payloadLength()),
  };
}

export function udpLength(repr: UdpRepr): number {
  return UDP_HEADER_LEN + repr.payload.length;
}

/**
 * Writes header and payload at buf[offset]; returns the datagram length. With
 * a pseudo-header sum the checksum is filled, without it the field is 0 (no
 * checksum, IPv4 only).
 */
export function emitUdp(repr: UdpRepr, buf: Uint8Array, offset: number, pseudoSum?: number): number {
  const len = udpLength(repr);
  if (len > 0xffff) throw new RangeError(`UDP payload too long: ${repr.payload.length}`);
  const v = new UdpView();
  if (!v.resetRaw(buf, offset, len)) throw new RangeError('buffer too short for the UDP datagram');
  v.setSrcPort(repr.srcPort);
  v.setDstPort(repr.dstPort);
  v.setLength(len);
  copyBytes(buf, offset + UDP_HEADER_LEN, repr.payload, 0, repr.payload.length);
  if (pseudoSum === undefined) v.setChecksum(0);
  else v.fillChecksum(pseudoSum);
  return len;
}

export function formatUdp(repr: UdpRepr): string {
  return `UDP src=${repr.srcPort} dst=${repr.dstPort} len=${repr.payload.length}`;
}
