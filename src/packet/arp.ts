/**
 * ARP (RFC 826) for Ethernet and IPv4, the only pairing vsw forwards or
 * answers: the view assumes 6-byte hardware and 4-byte protocol addresses,
 * and parseArp refuses anything else.
 */

import { copyBytes, fits, read16, read32, write16, write32 } from './bytes.js';
import { EtherType, MAC_LEN, formatMac, mustParseMac, writeMac } from './ethernet.js';
import { formatIpv4Addr, mustParseIpv4Addr } from './ipv4.js';
import { PacketView } from './view.js';

export const ArpField = {
  HTYPE: 0,
  PTYPE: 2,
  HLEN: 4,
  PLEN: 5,
  OPER: 6,
  SHA: 8,
  SPA: 14,
  THA: 18,
  TPA: 24,
} as const;

/** Ethernet/IPv4 ARP; frames are padded beyond it to 60 bytes on the wire. */
export const ARP_LEN = 28;
export const ARP_HTYPE_ETHERNET = 1;

export const ArpOp = {
  Request: 1,
  Reply: 2,
} as const;

/** A reusable view over an Ethernet/IPv4 ARP packet. */
export class ArpView extends PacketView {
  /** False (view detached) when shorter than 28 bytes. Sizes and types are not checked: see isEthernetIpv4. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, ARP_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  htype(): number {
    return read16(this.buf, this.off);
  }
  ptype(): number {
    return read16(this.buf, this.off + ArpField.PTYPE);
  }
  hlen(): number {
    return this.buf[this.off + ArpField.HLEN];
  }
  plen(): number {
    return this.buf[this.off + ArpField.PLEN];
  }
  operation(): number {
    return read16(this.buf, this.off + ArpField.OPER);
  }
  /** The four fixed fields say Ethernet (6-byte) and IPv4 (4-byte) addresses. */
  isEthernetIpv4(): boolean {
    return this.htype() === ARP_HTYPE_ETHERNET && this.ptype() === EtherType.IPv4 && this.hlen() === MAC_LEN && this.plen() === 4;
  }
  shaHi16(): number {
    return read16(this.buf, this.off + ArpField.SHA);
  }
  shaLo32(): number {
    return read32(this.buf, this.off + ArpField.SHA + 2);
  }
  spa(): number {
    return read32(this.buf, this.off + ArpField.SPA);
  }
  thaHi16(): number {
    return read16(this.buf, this.off + ArpField.THA);
  }
  thaLo32(): number {
    return read32(this.buf, this.off + ArpField.THA + 2);
  }
  tpa(): number {
    return read32(this.buf, this.off + ArpField.TPA);
  }

  setHtype(v: number): void {
    write16(this.buf, this.off, v);
  }
  setPtype(v: number): void {
    write16(this.buf, this.off + ArpField.PTYPE, v);
  }
  setHlen(v: number): void {
    this.buf[this.off + ArpField.HLEN] = v;
  }
  setPlen(v: number): void {
    this.buf[this.off + ArpField.PLEN] = v;
  }
  /** htype 1, ptype IPv4, hlen 6, plen 4. */
  setEthernetIpv4(): void {
    this.setHtype(ARP_HTYPE_ETHERNET);
    this.setPtype(EtherType.IPv4);
    this.setHlen(MAC_LEN);
    this.setPlen(4);
  }
  setOperation(op: number): void {
    write16(this.buf, this.off + ArpField.OPER, op);
  }
  setSha(hi16: number, lo32: number): void {
    writeMac(this.buf, this.off + ArpField.SHA, hi16, lo32);
  }
  setShaFrom(mac: Uint8Array, macOff = 0): void {
    copyBytes(this.buf, this.off + ArpField.SHA, mac, macOff, MAC_LEN);
  }
  setSpa(addr: number): void {
    write32(this.buf, this.off + ArpField.SPA, addr);
  }
  setTha(hi16: number, lo32: number): void {
    writeMac(this.buf, this.off + ArpField.THA, hi16, lo32);
  }
  setThaFrom(mac: Uint8Array, macOff = 0): void {
    copyBytes(this.buf, this.off + ArpField.THA, mac, macOff, MAC_LEN);
  }
  setTpa(addr: number): void {
    write32(this.buf, this.off + ArpField.TPA, addr);
  }
}

export interface ArpRepr {
  /** ArpOp.Request or ArpOp.Reply. */
  operation: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

/** Null unless Ethernet/IPv4 with a request or reply. */
export function parseArp(view: ArpView): ArpRepr | null {
  const op = view.operation();
  if (!view.isEthernetIpv4() || (op !== ArpOp.Request && op !== ArpOp.Reply)) return null;
  return {
    operation: op,
    senderMac: formatMac(view.buf, view.off + ArpField.SHA),
    senderIp: formatIpv4Addr(view.spa()),
    targetMac: formatMac(view.buf, view.off + ArpField.THA),
    targetIp: formatIpv4Addr(view.tpa()),
  };
}

/** Writes the 28-byte packet at buf[offset]; returns 28. */
export function emitArp(repr: ArpRepr, buf: Uint8Array, offset: number): number {
  const sha = mustParseMac(repr.senderMac);
  const tha = mustParseMac(repr.targetMac);
  const spa = mustParseIpv4Addr(repr.senderIp);
  const tpa = mustParseIpv4Addr(repr.targetIp);
  const v = new ArpView();
  if (!v.reset(buf, offset, ARP_LEN)) throw new RangeError('buffer too short for an ARP packet');
  v.setEthernetIpv4();
  v.setOperation(repr.operation);
  v.setShaFrom(sha);
  v.setSpa(spa);
  v.setThaFrom(tha);
  v.setTpa(tpa);
  return ARP_LEN;
}

export function formatArp(repr: ArpRepr): string {
  if (repr.operation === ArpOp.Request) return `ARP request who-has ${repr.targetIp} tell ${repr.senderIp} (${repr.senderMac})`;
  if (repr.operation === ArpOp.Reply) return `ARP reply ${repr.senderIp} is-at ${repr.senderMac} to ${repr.targetIp} (${repr.targetMac})`;
  return `ARP op=${repr.operation} ${repr.senderIp} (${repr.senderMac}) -> ${repr.targetIp} (${repr.targetMac})`;
}

/**
 * Rewrites, in place, the ARP request at buf[arpOff] (inside the Ethernet
 * frame at buf[ethOff]) into the reply the owner of its target address would
 * send, with `macHi16:macLo32` as that owner's MAC: Ethernet back to the
 * asker (its source) and from the owner; operation Reply; sender = (owner's
 * MAC, the requested address); target = the asker's (SHA, SPA). Any VLAN
 * tags between ethOff and arpOff, and any padding, stay as they were; the
 * frame keeps its length. Checks nothing (the caller has: a request, Ethernet/
 * IPv4, 28 bytes at arpOff); allocates nothing. Used by the NAT gateway and
 * by overlay ARP suppression.
 */
export function writeArpReply(buf: Uint8Array, ethOff: number, arpOff: number, macHi16: number, macLo32: number): void {
  const tpa = read32(buf, arpOff + ArpField.TPA);
  // Ethernet: to the asker, from the owner.
  buf.copyWithin(ethOff, ethOff + MAC_LEN, ethOff + 2 * MAC_LEN);
  writeMac(buf, ethOff + MAC_LEN, macHi16, macLo32);
  write16(buf, arpOff + ArpField.OPER, ArpOp.Reply);
  // The asker's (SHA, SPA) become (THA, TPA): the 10 bytes move as one block.
  buf.copyWithin(arpOff + ArpField.THA, arpOff + ArpField.SHA, arpOff + ArpField.SPA + 4);
  writeMac(buf, arpOff + ArpField.SHA, macHi16, macLo32);
  write32(buf, arpOff + ArpField.SPA, tpa);
}
