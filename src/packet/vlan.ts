/**
 * 802.1Q / 802.1ad tags. The view covers the 4 bytes that follow a TPID
 * (0x8100 or 0x88a8) in the EtherType position: the TCI and the next
 * EtherType. The TPID itself belongs to the header before it.
 */

import { fits, read16, write16 } from './bytes.js';
import { ETH_HEADER_LEN, EthField, EtherType, etherTypeName } from './ethernet.js';
import { PacketView } from './view.js';

export const VlanField = {
  TCI: 0,
  ETHERTYPE: 2,
} as const;

export const VLAN_TAG_LEN = 4;
/** Stacked tags we look through: QinQ (S-tag + C-tag). */
export const MAX_VLAN_TAGS = 2;

export function isVlanTpid(etherType: number): boolean {
  return etherType === EtherType.VLAN || etherType === EtherType.QinQ;
}

/**
 * Offset, relative to the frame start, of the EtherType that names the L3
 * protocol: 12 untagged, 16 with one tag, 20 with two. The L3 header starts 2
 * bytes later. -1 when the frame is shorter than its header plus tags, or when
 * a third tag follows: an unparsed tag would hide the payload from policy, so
 * callers treat that as malformed rather than as "not IP".
 */
export function innerEtherTypeOffset(buf: Uint8Array, off: number, len: number): number {
  if (len < ETH_HEADER_LEN) return -1;
  let at = EthField.ETHERTYPE;
  let type = read16(buf, off + at);
  for (let tags = 0; isVlanTpid(type); tags++) {
    if (tags === MAX_VLAN_TAGS || at + 2 + VLAN_TAG_LEN > len) return -1;
    at += VLAN_TAG_LEN;
    type = read16(buf, off + at);
  }
  return at;
}

/** A reusable view over one VLAN tag (TCI and inner EtherType). */
export class VlanView extends PacketView {
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, VLAN_TAG_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  tci(): number {
    return read16(this.buf, this.off);
  }
  /** Priority code point, 0-7. */
  pcp(): number {
    return this.buf[this.off] >>> 5;
  }
  /** Drop eligible indicator (formerly CFI). */
  dei(): boolean {
    return (this.buf[this.off] & 0x10) !== 0;
  }
  /** VLAN id, 0-4095 (0: priority tag only; 4095 reserved). */
  vid(): number {
    return read16(this.buf, this.off) & 0x0fff;
  }
  etherType(): number {
    return read16(this.buf, this.off + VlanField.ETHERTYPE);
  }
  payloadOffset(): number {
    return this.off + VLAN_TAG_LEN;
  }
  payloadLength(): number {
    return this.len - VLAN_TAG_LEN;
  }

  setTci(tci: number): void {
    write16(this.buf, this.off, tci);
  }
  setPcp(pcp: number): void {
    this.buf[this.off] = (this.buf[this.off] & 0x1f) | ((pcp & 7) << 5);
  }
  setDei(dei: boolean): void {
    this.buf[this.off] = dei ? this.buf[this.off] | 0x10 : this.buf[this.off] & ~0x10;
  }
  setVid(vid: number): void {
    write16(this.buf, this.off, (read16(this.buf, this.off) & 0xf000) | (vid & 0x0fff));
  }
  setEtherType(type: number): void {
    write16(this.buf, this.off + VlanField.ETHERTYPE, type);
  }
}

export interface VlanRepr {
  pcp: number;
  dei: boolean;
  vid: number;
  /** The EtherType after this tag. */
  etherType: number;
}

export function parseVlan(view: VlanView): VlanRepr {
  return { pcp: view.pcp(), dei: view.dei(), vid: view.vid(), etherType: view.etherType() };
}

/** Writes TCI and inner EtherType at buf[offset]; returns 4. Throws RangeError on out-of-range fields or a short buffer. */
export function emitVlan(repr: VlanRepr, buf: Uint8Array, offset: number): number {
  if (!Number.isInteger(repr.vid) || repr.vid < 0 || repr.vid > 0xfff) throw new RangeError(`VLAN id out of range: ${repr.vid}`);
  if (!Number.isInteger(repr.pcp) || repr.pcp < 0 || repr.pcp > 7) throw new RangeError(`VLAN priority out of range: ${repr.pcp}`);
  if (!fits(buf, offset, buf.length - offset, VLAN_TAG_LEN)) throw new RangeError('buffer too short for a VLAN tag');
  write16(buf, offset, (repr.pcp << 13) | (repr.dei ? 0x1000 : 0) | repr.vid);
  write16(buf, offset + VlanField.ETHERTYPE, repr.etherType);
  return VLAN_TAG_LEN;
}

export function formatVlan(repr: VlanRepr): string {
  return `802.1Q vid=${repr.vid} pcp=${repr.pcp} dei=${repr.dei ? 1 : 0} type=${etherTypeName(repr.etherType)}`;
}
