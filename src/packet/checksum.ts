/**
 * The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * These are the JS reference implementations, for the control plane, builders
 * and tests. The per-packet path uses the native addon's `internetChecksum`,
 * which must agree with this file bit for bit (same argument meaning: `initial`
 * is an uncomplemented partial sum, the result is the value to store in the
 * field).
 *
 * Conventions: a "sum" is the folded 16-bit one's complement sum, not
 * complemented (what a pseudo-header contributes, and what the L4 field holds
 * under VIRTIO_NET_HDR_F_NEEDS_CSUM). A "checksum" is the complement of a sum,
 * the value stored in a header; verifying a header that includes its checksum
 * field yields 0.
 */

import { read16, read32 } from './bytes.js';

/**
 * Folds a non-negative integer of up to 2^53 into 16 bits with end-around
 * carry. Division instead of `>>> 16` because unfolded sums of large buffers
 * exceed 32 bits.
 */
export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/** One's complement sum of buf[off, off+len) plus `initial`, folded, not complemented. An odd last byte is padded with zero. */
export function onesComplementSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  // Words accumulate unfolded: 2^53 / 0xffff leaves room for ~2^37 bytes.
  let sum = initial;
  const end = off + (len & ~1);
  let i = off;
  for (; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[i] << 8;
  return foldChecksum(sum);
}

/** RFC 1071 checksum of buf[off, off+len) with `initial` (e.g. a pseudo-header sum) added in. */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~onesComplementSum(buf, off, len, initial) & 0xffff;
}

/**
 * RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): the checksum after one 16-bit word
 * of the covered data changed from oldWord to newWord. Eqn. 3 rather than the
 * RFC 1141 form, which can give 0xffff where a full recompute gives 0x0000.
 * It differs from a recompute only when every covered byte becomes zero
 * (0x0000 here, 0xffff recomputed; the same one's complement number), which
 * no IP header or pseudo-header can be.
 */
export function checksumAdjust16(oldCsum: number, oldWord: number, newWord: number): number {
  const sum = (~oldCsum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~foldChecksum(sum) & 0xffff;
}

/** As checksumAdjust16 for a 32-bit value at an even offset, e.g. an IPv4 address rewritten by NAT. */
export function checksumAdjust32(oldCsum: number, oldValue: number, newValue: number): number {
  const sum =
    (~oldCsum & 0xffff) +
    (~(oldValue >>> 16) & 0xffff) +
    (~oldValue & 0xffff) +
    ((newValue >>> 16) & 0xffff) +
    (newValue & 0xffff);
  return ~foldChecksum(sum) & 0xffff;
}

/** Sum of the IPv4 pseudo-header (RFC 793/768): addresses as u32, protocol, L4 length. */
export function pseudoSumV4(src: number, dst: number, protocol: number, l4Length: number): number {
  return foldChecksum((src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + l4Length);
}

/** Sum of the IPv4 pseudo-header, addresses and protocol read from the IPv4 header at ipOffset. */
export function pseudoSumV4At(buf: Uint8Array, ipOffset: number, l4Length: number): number {
  return pseudoSumV4(read32(buf, ipOffset + 12), read32(buf, ipOffset + 16), buf[ipOffset + 9], l4Length);
}

/**
 * Sum of the IPv6 pseudo-header (RFC 8200 8.1). nextHeader is the upper-layer
 * protocol, which differs from the fixed header's field when extension headers
 * sit in between.
 */
export function pseudoSumV6(
  srcBuf: Uint8Array,
  srcOff: number,
  dstBuf: Uint8Array,
  dstOff: number,
  nextHeader: number,
  l4Length: number,
): number {
  let sum = nextHeader + Math.floor(l4Length / 0x10000) + (l4Length % 0x10000);
  for (let i = 0; i < 16; i += 2) sum += read16(srcBuf, srcOff + i) + read16(dstBuf, dstOff + i);
  return foldChecksum(sum);
}

/** Sum of the IPv6 pseudo-header, addresses read from the IPv6 header at ipOffset. */
export function pseudoSumV6At(buf: Uint8Array, ipOffset: number, nextHeader: number, l4Length: number): number {
  return pseudoSumV6(buf, ipOffset + 8, buf, ipOffset + 24, nextHeader, l4Length);
}
