/**
 * The per-frame sanity check at ingress, before the switch trusts a single
 * field: it runs on every frame of every batch, so it allocates nothing,
 * throws nothing and reads a handful of bytes.
 *
 * What passes is safe to parse with the views (every length field the switch
 * will follow stays inside the frame) and safe to hand to a TAP with its vnet
 * header (the kernel would refuse the rest, after we had spent the work).
 * L4 headers are not checked: policy reads them through views that refuse
 * truncation.
 *
 * Checks run cheapest first, so a frame with several faults reports the first
 * in this order: runt, vnet header, oversize, source MAC, VLAN tags, L3.
 */

import { read16, read16le } from './bytes.js';
import { DropReason, FRAME_OK } from './drop-reasons.js';
import { ARP_HTYPE_ETHERNET, ARP_LEN } from './arp.js';
import { ETH_HEADER_LEN, EthField, EtherType } from './ethernet.js';
import { IPV4_HEADER_LEN } from './ipv4.js';
import { IPV6_HEADER_LEN } from './ipv6.js';
import { innerEtherTypeOffset } from './vlan.js';
import { GsoType, VNET_HDR_LEN, VnetField, VnetFlags } from './vnet.js';

export { FRAME_OK };

/**
 * FRAME_OK (0) or a DropReason code.
 *
 * @param frameOffset  where the Ethernet header starts in buf
 * @param frameLength  bytes of frame, vnet header excluded
 * @param vnetOffset   where the virtio_net_hdr starts, or -1 for a port without one
 * @param maxNonGsoFrame  the largest frame the port accepts unless it is a GSO super-frame (MTU + L2 headers)
 */
export function classifyFrame(
  buf: Uint8Array,
  frameOffset: number,
  frameLength: number,
  vnetOffset: number,
  maxNonGsoFrame: number,
): number {
  if (frameLength < ETH_HEADER_LEN) return DropReason.runt;
  // A descriptor past the buffer is a length the rx slot could not hold.
  if (frameOffset < 0 || frameOffset + frameLength > buf.length) return DropReason.oversize;

  if (vnetOffset >= 0) {
    if (vnetOffset + VNET_HDR_LEN > buf.length) return DropReason.runt;
    const gso = buf[vnetOffset + VnetField.GSO_TYPE] & ~GsoType.ECN;
    if (gso !== GsoType.NONE && gso !== GsoType.TCPV4 && gso !== GsoType.UDP && gso !== GsoType.TCPV6) {
      return DropReason.badVnetHdr;
    }
    if ((buf[vnetOffset + VnetField.FLAGS] & VnetFlags.NEEDS_CSUM) !== 0) {
      const end = read16le(buf, vnetOffset + VnetField.CSUM_START) + read16le(buf, vnetOffset + VnetField.CSUM_OFFSET) + 2;
      if (end > frameLength) return DropReason.badVnetHdr;
    }
    if (gso === GsoType.NONE) {
      if (frameLength > maxNonGsoFrame) return DropReason.oversize;
    } else if (read16le(buf, vnetOffset + VnetField.GSO_SIZE) === 0 || read16le(buf, vnetOffset + VnetField.HDR_LEN) > frameLength) {
      return DropReason.badVnetHdr;
    }
  } else if (frameLength > maxNonGsoFrame) {
    return DropReason.oversize;
  }

  // Multicast (group bit, broadcast included) or zero: learning it would poison the MAC table.
  const s = frameOffset + EthField.SRC;
  if ((buf[s] & 1) !== 0 || (buf[s] | buf[s + 1] | buf[s + 2] | buf[s + 3] | buf[s + 4] | buf[s + 5]) === 0) {
    return DropReason.badSrcMac;
  }

  const typeAt = innerEtherTypeOffset(buf, frameOffset, frameLength);
  if (typeAt < 0) return DropReason.badVlan;
  const l3 = frameOffset + typeAt + 2;
  const avail = frameLength - typeAt - 2;

  switch (read16(buf, frameOffset + typeAt)) {
    case EtherType.IPv4: {
      if (avail < IPV4_HEADER_LEN) return DropReason.badIpv4;
      const b0 = buf[l3];
      const hl = (b0 & 0x0f) << 2;
      const total = read16(buf, l3 + 2);
      // Bytes after `total` are Ethernet padding and allowed.
      if (b0 >>> 4 !== 4 || hl < IPV4_HEADER_LEN || hl > avail || total < hl || total > avail) return DropReason.badIpv4;
      return FRAME_OK;
    }
    case EtherType.IPv6: {
      if (avail < IPV6_HEADER_LEN || buf[l3] >>> 4 !== 6) return DropReason.badIpv6;
      const payloadLength = read16(buf, l3 + 4);
      if (IPV6_HEADER_LEN + payloadLength > avail) return DropReason.badIpv6;
      // Zero with a hop-by-hop header next announces a jumbogram (RFC 2675), which no port here can carry.
      if (payloadLength === 0 && buf[l3 + 6] === 0) return DropReason.badIpv6;
      return FRAME_OK;
    }
    case EtherType.ARP:
      if (
        avail < ARP_LEN ||
        read16(buf, l3) !== ARP_HTYPE_ETHERNET ||
        read16(buf, l3 + 2) !== EtherType.IPv4 ||
        buf[l3 + 4] !== 6 ||
        buf[l3 + 5] !== 4
      ) {
        return DropReason.badArp;
      }
      return FRAME_OK;
    default:
      return FRAME_OK;
  }
}
