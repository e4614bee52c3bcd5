/**
 * Header transpositions: the compiled form of a flow's rewrites. Because a
 * flow's original header fields are constant (they are its key), the change a
 * rewrite makes to every checksum is constant too: it is computed once, when
 * the slow path compiles the flow, and the fast path adds it with one one's
 * complement addition per checksum (RFC 1624), whatever the frame's length.
 *
 * Three checksums move (four with ICMP echo, whose identifier NAT rewrites as
 * its "port"; the ICMP checksum covers no pseudo-header):
 * - the IPv4 header checksum, by the address change;
 * - a complete TCP/UDP checksum, by the address change (pseudo-header) plus the port change;
 * - a partial one (virtio NEEDS_CSUM, which every TSO super-frame has), which
 *   holds only the pseudo-header sum, uncomplemented: by the address change
 *   alone, with the opposite sign convention; the ports are in the bytes the
 *   device or kernel will sum later.
 *
 * Entries live in a slab of typed arrays; only flows with a rewrite use one.
 */
import { foldChecksum } from '../packet/checksum.js';
import { IpProtocol } from '../packet/ipv4.js';
import { VnetField, VnetFlags } from '../packet/vnet.js';
import { KeyWord, Meta } from './key.js';
import { Rewrite, type Decision } from './pipeline.js';

const F = {
  FLAGS: 0,
  SRC_MAC_HI: 1,
  SRC_MAC_LO: 2,
  DST_MAC_HI: 3,
  DST_MAC_LO: 4,
  SRC_IP: 5,
  DST_IP: 6,
  PORTS: 7,
  /** One's complement sum to add for the address change (pseudo-header and IPv4 header alike). */
  ADDR_DELTA: 8,
  /** The same plus the port change: for a complete L4 checksum. */
  FULL_DELTA: 9,
} as const;
const WORDS = 10;

function delta32(oldV: number, newV: number): number {
  return (~oldV >>> 16) + (~oldV & 0xffff) + (newV >>> 16) + (newV & 0xffff);
}

function delta16(oldV: number, newV: number): number {
  return (~oldV & 0xffff) + (newV & 0xffff);
}

export class Transpositions {
  private readonly data: Uint32Array;
  private readonly free: Int32Array;
  private freeCount = 0;
  private bump = 0;

  /** An entry outside the allocator, for frames whose rewrite is applied once and not cached (floods, a full slab). */
  readonly scratch: number;

  constructor(readonly capacity: number) {
    this.data = new Uint32Array((capacity + 1) * WORDS);
    this.free = new Int32Array(capacity);
    this.scratch = capacity;
  }

  get used(): number {
    return this.bump - this.freeCount;
  }

  get byteSize(): number {
    return this.data.byteLength + this.free.byteLength;
  }

  /**
   * Compiles the rewrites in `d` for a flow whose original key is `orig`.
   * Returns the entry, or -1 when the slab is full (the caller then leaves the
   * flow uncached, so it still works, through the slow path).
   */
  compile(d: Decision, orig: Uint32Array): number {
    let t: number;
    if (this.freeCount > 0) t = this.free[--this.freeCount];
    else if (this.bump < this.capacity) t = this.bump++;
    else return -1;
    this.compileAt(t, d, orig);
    return t;
  }

  compileAt(t: number, d: Decision, orig: Uint32Array): void {
    const o = t * WORDS;
    const data = this.data;
    const flags = d.rwFlags;
    data[o + F.FLAGS] = flags;
    data[o + F.SRC_MAC_HI] = d.srcMacHi;
    data[o + F.SRC_MAC_LO] = d.srcMacLo;
    data[o + F.DST_MAC_HI] = d.dstMacHi;
    data[o + F.DST_MAC_LO] = d.dstMacLo;
    const srcIp = flags & Rewrite.SRC_IP ? d.srcIp : orig[KeyWord.SRC_IP];
    const dstIp = flags & Rewrite.DST_IP ? d.dstIp : orig[KeyWord.DST_IP];
    data[o + F.SRC_IP] = srcIp;
    data[o + F.DST_IP] = dstIp;
    let addr = 0;
    if (flags & Rewrite.SRC_IP) addr += delta32(orig[KeyWord.SRC_IP], srcIp);
    if (flags & Rewrite.DST_IP) addr += delta32(orig[KeyWord.DST_IP], dstIp);
    data[o + F.ADDR_DELTA] = foldChecksum(addr);
    if (orig[KeyWord.PROTO] >>> 24 === IpProtocol.ICMP) {
      // ICMP echo: the identifier is the one "port" (NAT rewrites it either way), and the ICMP
      // checksum covers no pseudo-header, so only the identifier moves it.
      const oldId = orig[KeyWord.PROTO] & 0xffff;
      const id = flags & Rewrite.SRC_PORT ? d.srcPort : flags & Rewrite.DST_PORT ? d.dstPort : oldId;
      data[o + F.PORTS] = id;
      data[o + F.FULL_DELTA] = foldChecksum(delta16(oldId, id));
      return;
    }
    const oldPorts = orig[KeyWord.PORTS];
    const srcPort = flags & Rewrite.SRC_PORT ? d.srcPort : oldPorts >>> 16;
    const dstPort = flags & Rewrite.DST_PORT ? d.dstPort : oldPorts & 0xffff;
    data[o + F.PORTS] = ((srcPort << 16) | dstPort) >>> 0;
    let ports = 0;
    if (flags & Rewrite.SRC_PORT) ports += delta16(oldPorts >>> 16, srcPort);
    if (flags & Rewrite.DST_PORT) ports += delta16(oldPorts & 0xffff, dstPort);
    data[o + F.FULL_DELTA] = foldChecksum(addr + ports);
  }

  release(t: number): void {
    if (t >= 0 && t !== this.scratch) this.free[this.freeCount++] = t;
  }

  /**
   * Rewrites the frame at buf[off...] in place. `vnetOff` is where its
   * virtio_net_hdr starts (-1 for none); `meta` is what extractKey filled.
   */
  apply(t: number, buf: Uint8Array, off: number, vnetOff: number, meta: Int32Array): void {
    const data = this.data;
    const o = t * WORDS;
    const flags = data[o + F.FLAGS];
    if (flags & Rewrite.DST_MAC) writeMac(buf, off, data[o + F.DST_MAC_HI], data[o + F.DST_MAC_LO]);
    if (flags & Rewrite.SRC_MAC) writeMac(buf, off + 6, data[o + F.SRC_MAC_HI], data[o + F.SRC_MAC_LO]);
    const l3 = meta[Meta.L3_OFFSET];
    const version = meta[Meta.IP_VERSION];
    if (l3 < 0 || version === 0) return;
    // Address rewrites are IPv4 only (the pipeline never flags them for IPv6); port rewrites are both.
    const addrDelta = data[o + F.ADDR_DELTA];
    if (version === 4 && flags & (Rewrite.SRC_IP | Rewrite.DST_IP)) {
      if (flags & Rewrite.SRC_IP) write32(buf, l3 + 12, data[o + F.SRC_IP]);
      if (flags & Rewrite.DST_IP) write32(buf, l3 + 16, data[o + F.DST_IP]);
      addToChecksum(buf, l3 + 10, addrDelta);
    }
    const l4 = meta[Meta.L4_OFFSET];
    const proto = version === 4 ? buf[l3 + 9] : buf[l3 + 6];
    if (l4 < 0) return;
    if (proto === IpProtocol.ICMP && version === 4) {
      if (flags & (Rewrite.SRC_PORT | Rewrite.DST_PORT)) {
        const id = data[o + F.PORTS];
        buf[l4 + 4] = id >>> 8;
        buf[l4 + 5] = id & 0xff;
        addToChecksum(buf, l4 + 2, data[o + F.FULL_DELTA]);
      }
      return;
    }
    if (proto !== 6 && proto !== 17) return;
    if (flags & (Rewrite.SRC_PORT | Rewrite.DST_PORT)) write32(buf, l4, data[o + F.PORTS]);
    const csumAt = l4 + (proto === 6 ? 16 : 6);
    const partial =
      vnetOff >= 0 &&
      (buf[vnetOff + VnetField.FLAGS] & VnetFlags.NEEDS_CSUM) !== 0 &&
      off + (buf[vnetOff + VnetField.CSUM_START] | (buf[vnetOff + VnetField.CSUM_START + 1] << 8)) === l4;
    if (partial) {
      // The field holds the pseudo-header sum itself, not its complement.
      const s = foldChecksum(((buf[csumAt] << 8) | buf[csumAt + 1]) + addrDelta);
      buf[csumAt] = s >>> 8;
      buf[csumAt + 1] = s & 0xff;
    } else if (proto === 17 && version === 4 && buf[csumAt] === 0 && buf[csumAt + 1] === 0) {
      // UDP over IPv4 without a checksum stays without one.
    } else {
      addToChecksum(buf, csumAt, data[o + F.FULL_DELTA]);
      if (proto === 17 && buf[csumAt] === 0 && buf[csumAt + 1] === 0) buf[csumAt] = buf[csumAt + 1] = 0xff;
    }
  }
}

/** HC' = ~(~HC + delta), RFC 1624 eqn. 3. */
function addToChecksum(buf: Uint8Array, at: number, delta: number): void {
  const hc = (buf[at] << 8) | buf[at + 1];
  const c = ~foldChecksum((~hc & 0xffff) + delta) & 0xffff;
  buf[at] = c >>> 8;
  buf[at + 1] = c & 0xff;
}

function write32(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v >>> 24;
  buf[at + 1] = (v >>> 16) & 0xff;
  buf[at + 2] = (v >>> 8) & 0xff;
  buf[at + 3] = v & 0xff;
}

function writeMac(buf: Uint8Array, at: number, hi: number, lo: number): void {
  buf[at] = hi >>> 8;
  buf[at + 1] = hi & 0xff;
  write32(buf, at + 2, lo);
}
