/**
 * VXLAN header (RFC 7348 section 5): 8 bytes in a UDP datagram to port 4789,
 * in front of the inner Ethernet frame.
 *
 *   byte 0    flags: R R R R I R R R; I (0x08) says the VNI is valid
 *   bytes 1-3 reserved
 *   bytes 4-6 VNI (24 bits)
 *   byte 7    reserved
 *
 * Reserved bits are written as zero and ignored on receipt, as the RFC asks;
 * a header without the I flag carries no VNI and parses to null. The view
 * covers the header and the inner frame after it.
 */

import { fits } from './bytes.js';
import { PacketView } from './view.js';

export const VxlanField = {
  FLAGS: 0,
  VNI: 4,
} as const;

export const VXLAN_HEADER_LEN = 8;
/** IANA-assigned destination port. */
export const VXLAN_PORT = 4789;
export const VXLAN_MAX_VNI = 0xff_ffff;

export const VxlanFlags = {
  /** The VNI field is valid (RFC 7348: must be set). */
  I: 0x08,
} as const;

/** A reusable view over a VXLAN header and the frame it carries. */
export class VxlanView extends PacketView {
  /** False (view detached) unless the 8-byte header fits. The I flag is checked by hasVni/parseVxlan, not here. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, VXLAN_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  flags(): number {
    return this.buf[this.off];
  }
  hasVni(): boolean {
    return (this.buf[this.off] & VxlanFlags.I) !== 0;
  }
  /** The 24-bit field, whatever the I flag says. */
  vni(): number {
    const b = this.buf;
    const i = this.off + VxlanField.VNI;
    return (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
  }
  /** Where the inner Ethernet frame starts. */
  payloadOffset(): number {
    return this.off + VXLAN_HEADER_LEN;
  }
  payloadLength(): number {
    return this.len - VXLAN_HEADER_LEN;
  }

  setFlags(flags: number): void {
    this.buf[this.off] = flags;
  }
  /** Writes the VNI field only; reserved byte 7 is left as it is. */
  setVni(vni: number): void {
    const i = this.off + VxlanField.VNI;
    this.buf[i] = vni >>> 16;
    this.buf[i + 1] = vni >>> 8;
    this.buf[i + 2] = vni;
  }
  /** The whole header for encapsulation: I flag, VNI, reserved bytes zero. The per-packet path uses this, not emitVxlan. */
  writeHeader(vni: number): void {
    const b = this.buf;
    const o = this.off;
    b[o] = VxlanFlags.I;
    b[o + 1] = b[o + 2] = b[o + 3] = 0;
    this.setVni(vni);
    b[o + 7] = 0;
  }
}

export interface VxlanRepr {
  vni: number;
}

/** Null when the I flag is clear: such a header names no segment, and RFC 7348 receivers drop it. */
export function parseVxlan(view: VxlanView): VxlanRepr | null {
  return view.hasVni() ? { vni: view.vni() } : null;
}

/** Writes the 8-byte header at buf[offset]; returns 8. Throws RangeError for a VNI outside 24 bits or a short buffer. */
export function emitVxlan(repr: VxlanRepr, buf: Uint8Array, offset: number): number {
  if (!Number.isInteger(repr.vni) || repr.vni < 0 || repr.vni > VXLAN_MAX_VNI) throw new RangeError(`VXLAN VNI out of range: ${repr.vni}`);
  const v = new VxlanView();
  if (!v.reset(buf, offset, buf.length - offset)) throw new RangeError('buffer too short for a VXLAN header');
  v.writeHeader(repr.vni);
  return VXLAN_HEADER_LEN;
}

export function formatVxlan(repr: VxlanRepr): string {
  return `VXLAN vni=${repr.vni}`;
}
