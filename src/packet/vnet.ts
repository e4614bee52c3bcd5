/**
 * struct virtio_net_hdr (10 bytes), the offload metadata that precedes every
 * frame on a TAP opened with IFF_VNET_HDR. Fields are in the host's byte
 * order (legacy virtio, TUNSETVNETHDRSZ 10); vsw runs on little-endian hosts,
 * so they are read little-endian.
 *
 * src/native exports the same length as VNET_HDR_LEN; this layer does not
 * import the addon, hence the duplicate constant.
 */

import { fits, read16le, write16le } from './bytes.js';
import { PacketView } from './view.js';

export const VnetField = {
  FLAGS: 0,
  GSO_TYPE: 1,
  HDR_LEN: 2,
  GSO_SIZE: 4,
  CSUM_START: 6,
  CSUM_OFFSET: 8,
} as const;

export const VNET_HDR_LEN = 10;

export const VnetFlags = {
  /** The L4 checksum is partial: fold bytes from csumStart to the end into the field at csumStart + csumOffset. */
  NEEDS_CSUM: 1,
  /** The checksum was already verified; the receiver may skip it. */
  DATA_VALID: 2,
} as const;

export const GsoType = {
  NONE: 0,
  TCPV4: 1,
  /** UFO: one UDP datagram to be IP-fragmented. */
  UDP: 3,
  TCPV6: 4,
  /** Modifier bit: the TCP super-frame carries CWR, so segmentation must honour ECN. */
  ECN: 0x80,
} as const;

const GSO_NAMES: Record<number, string> = { 0: 'NONE', 1: 'TCPV4', 3: 'UDP', 4: 'TCPV6' };

/** True for NONE, TCPV4, UDP, TCPV6 with or without the ECN bit. */
export function isKnownGsoType(gsoType: number): boolean {
  const kind = gsoType & ~GsoType.ECN;
  return kind === GsoType.NONE || kind === GsoType.TCPV4 || kind === GsoType.UDP || kind === GsoType.TCPV6;
}

/** A reusable view over a virtio_net_hdr. */
export class VnetView extends PacketView {
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, VNET_HDR_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  flags(): number {
    return this.buf[this.off];
  }
  needsCsum(): boolean {
    return (this.buf[this.off] & VnetFlags.NEEDS_CSUM) !== 0;
  }
  dataValid(): boolean {
    return (this.buf[this.off] & VnetFlags.DATA_VALID) !== 0;
  }
  /** The raw field, ECN bit included. */
  gsoType(): number {
    return this.buf[this.off + VnetField.GSO_TYPE];
  }
  /** The GSO type without the ECN bit. */
  gsoKind(): number {
    return this.buf[this.off + VnetField.GSO_TYPE] & ~GsoType.ECN;
  }
  gsoEcn(): boolean {
    return (this.buf[this.off + VnetField.GSO_TYPE] & GsoType.ECN) !== 0;
  }
  /** Length of the headers (Ethernet to L4) copied in front of every segment. */
  hdrLen(): number {
    return read16le(this.buf, this.off + VnetField.HDR_LEN);
  }
  /** Payload bytes per segment (the MSS for TCP). */
  gsoSize(): number {
    return read16le(this.buf, this.off + VnetField.GSO_SIZE);
  }
  /** From the start of the Ethernet frame. */
  csumStart(): number {
    return read16le(this.buf, this.off + VnetField.CSUM_START);
  }
  /** From csumStart to the checksum field. */
  csumOffset(): number {
    return read16le(this.buf, this.off + VnetField.CSUM_OFFSET);
  }

  setFlags(flags: number): void {
    this.buf[this.off] = flags;
  }
  setGsoType(gsoType: number): void {
    this.buf[this.off + VnetField.GSO_TYPE] = gsoType;
  }
  setHdrLen(v: number): void {
    write16le(this.buf, this.off + VnetField.HDR_LEN, v);
  }
  setGsoSize(v: number): void {
    write16le(this.buf, this.off + VnetField.GSO_SIZE, v);
  }
  setCsumStart(v: number): void {
    write16le(this.buf, this.off + VnetField.CSUM_START, v);
  }
  setCsumOffset(v: number): void {
    write16le(this.buf, this.off + VnetField.CSUM_OFFSET, v);
  }
  /** All zero: a plain frame with a complete checksum and no segmentation. */
  clear(): void {
    for (let i = 0; i < VNET_HDR_LEN; i++) this.buf[this.off + i] = 0;
  }
}

export interface VnetRepr {
  flags: number;
  /** ECN bit included. */
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Null for an unknown GSO type. Offsets are checked against a frame by classifyFrame, not here. */
export function parseVnet(view: VnetView): VnetRepr | null {
  if (!isKnownGsoType(view.gsoType())) return null;
  return {
    flags: view.flags(),
    gsoType: view.gsoType(),
    hdrLen: view.hdrLen(),
    gsoSize: view.gsoSize(),
    csumStart: view.csumStart(),
    csumOffset: view.csumOffset(),
  };
}

/** Writes the 10-byte header at buf[offset]; returns 10. */
export function emitVnet(repr: VnetRepr, buf: Uint8Array, offset: number): number {
  const v = new VnetView();
  if (!v.reset(buf, offset, buf.length - offset)) throw new RangeError('buffer too short for a virtio_net_hdr');
  v.setFlags(repr.flags);
  v.setGsoType(repr.gsoType);
  v.setHdrLen(repr.hdrLen);
  v.setGsoSize(repr.gsoSize);
  v.setCsumStart(repr.csumStart);
  v.setCsumOffset(repr.csumOffset);
  return VNET_HDR_LEN;
}

export function formatVnet(repr: VnetRepr): string {
  const flags: string[] = [];
  if (repr.flags & VnetFlags.NEEDS_CSUM) flags.push('NEEDS_CSUM');
  if (repr.flags & VnetFlags.DATA_VALID) flags.push('DATA_VALID');
  const kind = repr.gsoType & ~GsoType.ECN;
  let s = `vnet flags=${flags.length > 0 ? flags.join(',') : 'none'} gso=${GSO_NAMES[kind] ?? kind}`;
  if (repr.gsoType & GsoType.ECN) s += '+ECN';
  if (kind !== GsoType.NONE) s += ` hdr_len=${repr.hdrLen} gso_size=${repr.gsoSize}`;
  if (repr.flags & VnetFlags.NEEDS_CSUM) s += ` csum=${repr.csumStart}+${repr.csumOffset}`;
  return s;
}
