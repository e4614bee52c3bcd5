/**
 * Ethernet II header and MAC address helpers.
 *
 * MACs travel through the hot path as two numbers, the high 16 and low 32
 * bits, so that reading, comparing and hashing one allocates nothing. Strings
 * ("02:00:5e:10:00:01") are for configuration, reprs and logs only.
 */

import { copyBytes, fits, hex16, read16, read32, write16, write32 } from './bytes.js';
import { PacketView } from './view.js';

export const EthField = {
  DST: 0,
  SRC: 6,
  ETHERTYPE: 12,
} as const;

export const ETH_HEADER_LEN = 14;
export const MAC_LEN = 6;

export const EtherType = {
  IPv4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100,
  QinQ: 0x88a8,
  IPv6: 0x86dd,
} as const;

const ETHERTYPE_NAMES: Record<number, string> = {
  [EtherType.IPv4]: 'IPv4',
  [EtherType.ARP]: 'ARP',
  [EtherType.VLAN]: '802.1Q',
  [EtherType.QinQ]: '802.1ad',
  [EtherType.IPv6]: 'IPv6',
};

export function etherTypeName(type: number): string {
  return ETHERTYPE_NAMES[type] ?? hex16(type);
}

// ---- MAC helpers ----------------------------------------------------------

const MAC_RE = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i;

/** "aa:bb:cc:dd:ee:ff" (any case) to 6 bytes; null for anything else. */
export function parseMac(str: string): Uint8Array | null {
  const m = MAC_RE.exec(str);
  if (m === null) return null;
  const out = new Uint8Array(MAC_LEN);
  for (let i = 0; i < MAC_LEN; i++) out[i] = parseInt(m[i + 1], 16);
  return out;
}

/** The MAC at buf[off..off+6) as lower-case "aa:bb:cc:dd:ee:ff". */
export function formatMac(buf: Uint8Array, off = 0): string {
  let s = '';
  for (let i = 0; i < MAC_LEN; i++) {
    if (i > 0) s += ':';
    s += buf[off + i].toString(16).padStart(2, '0');
  }
  return s;
}

/** Group bit (I/G) set: multicast, including broadcast. */
export function isMulticastMac(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 1) !== 0;
}

export function isBroadcast(buf: Uint8Array, off: number): boolean {
  return (buf[off] & buf[off + 1] & buf[off + 2] & buf[off + 3] & buf[off + 4] & buf[off + 5]) === 0xff;
}

export function isZeroMac(buf: Uint8Array, off: number): boolean {
  return (buf[off] | buf[off + 1] | buf[off + 2] | buf[off + 3] | buf[off + 4] | buf[off + 5]) === 0;
}

export function macEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  return (
    a[aOff] === b[bOff] &&
    a[aOff + 1] === b[bOff + 1] &&
    a[aOff + 2] === b[bOff + 2] &&
    a[aOff + 3] === b[bOff + 3] &&
    a[aOff + 4] === b[bOff + 4] &&
    a[aOff + 5] === b[bOff + 5]
  );
}

/** First two bytes of the MAC at off. */
export function macHi16(buf: Uint8Array, off: number): number {
  return read16(buf, off);
}

/** Last four bytes of the MAC at off, unsigned. */
export function macLo32(buf: Uint8Array, off: number): number {
  return read32(buf, off + 2);
}

export function writeMac(buf: Uint8Array, off: number, hi16: number, lo32: number): void {
  write16(buf, off, hi16);
  write32(buf, off + 2, lo32);
}

// ---- view -----------------------------------------------------------------

/** A reusable view over an Ethernet II header. */
export class EthernetView extends PacketView {
  /** Points the view at a frame; false (and the view detached) when it is shorter than a header. */
  reset(buf: Uint8Array, offset: number, length: number): boolean {
    return fits(buf, offset, length, ETH_HEADER_LEN) ? this.attach(buf, offset, length) : this.detach();
  }

  dstHi16(): number {
    return read16(this.buf, this.off);
  }
  dstLo32(): number {
    return read32(this.buf, this.off + 2);
  }
  srcHi16(): number {
    return read16(this.buf, this.off + EthField.SRC);
  }
  srcLo32(): number {
    return read32(this.buf, this.off + EthField.SRC + 2);
  }
  etherType(): number {
    return read16(this.buf, this.off + EthField.ETHERTYPE);
  }
  dstIsMulticast(): boolean {
    return (this.buf[this.off] & 1) !== 0;
  }
  srcIsMulticast(): boolean {
    return (this.buf[this.off + EthField.SRC] & 1) !== 0;
  }
  payloadOffset(): number {
    return this.off + ETH_HEADER_LEN;
  }
  payloadLength(): number {
    return this.len - ETH_HEADER_LEN;
  }

  setDst(hi16: number, lo32: number): void {
    writeMac(this.buf, this.off, hi16, lo32);
  }
  setSrc(hi16: number, lo32: number): void {
    writeMac(this.buf, this.off + EthField.SRC, hi16, lo32);
  }
  /** Copies 6 bytes from mac[macOff..]. */
  setDstFrom(mac: Uint8Array, macOff = 0): void {
    copyBytes(this.buf, this.off, mac, macOff, MAC_LEN);
  }
  setSrcFrom(mac: Uint8Array, macOff = 0): void {
    copyBytes(this.buf, this.off + EthField.SRC, mac, macOff, MAC_LEN);
  }
  setEtherType(type: number): void {
    write16(this.buf, this.off + EthField.ETHERTYPE, type);
  }
}

// ---- representation -------------------------------------------------------

export interface EthernetRepr {
  dst: string;
  src: string;
  etherType: number;
}

export function parseEthernet(view: EthernetView): EthernetRepr {
  return {
    dst: formatMac(view.buf, view.off),
    src: formatMac(view.buf, view.off + EthField.SRC),
    etherType: view.etherType(),
  };
}

/** Writes the 14-byte header at buf[offset]; returns the bytes written. Throws RangeError on a bad MAC or a short buffer. */
export function emitEthernet(repr: EthernetRepr, buf: Uint8Array, offset: number): number {
  const dst = mustParseMac(repr.dst);
  const src = mustParseMac(repr.src);
  if (!fits(buf, offset, buf.length - offset, ETH_HEADER_LEN)) throw new RangeError('buffer too short for an Ethernet header');
  copyBytes(buf, offset, dst, 0, MAC_LEN);
  copyBytes(buf, offset + EthField.SRC, src, 0, MAC_LEN);
  write16(buf, offset + EthField.ETHERTYPE, repr.etherType);
  return ETH_HEADER_LEN;
}

export function formatEthernet(repr: EthernetRepr): string {
  return `EthernetII src=${repr.src} dst=${repr.dst} type=${etherTypeName(repr.etherType)}`;
}

/** parseMac that throws, for emitters and builders whose input is a programming error when wrong. */
export function mustParseMac(str: string): Uint8Array {
  const mac = parseMac(str);
  if (mac === null) throw new RangeError(`not a MAC address: ${JSON.stringify(str)}`);
  return mac;
}
