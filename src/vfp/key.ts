/**
 * The flow key: the header fields policy can look at, extracted from a frame
 * into a fixed vector of 32-bit words. One layout serves the classifier (rules
 * are a value and a mask per word), connection tracking and the unified flow
 * table (exact match on the words), so a frame is parsed once.
 *
 * Word layout (KEY_WORDS words):
 *   0 SRC_MAC_HI  upper 16 bits of the source MAC
 *   1 SRC_MAC_LO  lower 32 bits
 *   2 DST_MAC_HI
 *   3 DST_MAC_LO
 *   4 ETH_VLAN    EtherType << 16 | VLAN field; the VLAN field is 0 untagged, 0x1000 | VID with a tag
 *                 (the innermost tag's EtherType is what names L3)
 *   5 PROTO       IP protocol << 24 | ICMP type << 16 | ICMP echo identifier
 *                 (type and identifier are zero for anything but ICMP/ICMPv6; the identifier is set
 *                 only for echo request/reply, so connection tracking can pair them)
 *   6 PORTS       source port << 16 | destination port, TCP and UDP only (zero otherwise, and zero
 *                 for non-first IPv4 fragments, which carry no L4 header)
 *   7-10 SRC_IP   IPv4 in word 7 with 8-10 zero; IPv6 in all four, network order
 *   11-14 DST_IP
 *
 * Non-IP frames (ARP and the rest) have words 5-14 zero. Rules that name an IP
 * prefix or a protocol therefore never match them: the rule compiler adds the
 * EtherType to any rule with an IP condition.
 *
 * Alongside the key, extraction fills a small metadata vector (META_*) with
 * what the fast path needs but must not match on: header offsets and TCP flags.
 */
import { EtherType } from '../packet/ethernet.js';
import { formatIpv4Addr, IpProtocol } from '../packet/ipv4.js';
import { formatIpv6Addr } from '../packet/ipv6.js';
import { innerEtherTypeOffset } from '../packet/vlan.js';

export const KeyWord = {
  SRC_MAC_HI: 0,
  SRC_MAC_LO: 1,
  DST_MAC_HI: 2,
  DST_MAC_LO: 3,
  ETH_VLAN: 4,
  PROTO: 5,
  PORTS: 6,
  SRC_IP: 7,
  DST_IP: 11,
} as const;

export const KEY_WORDS = 15;

/** VLAN field bit that says "tagged"; the low 12 bits are then the VID. */
export const VLAN_PRESENT = 0x1000;

export const Meta = {
  /** Offset of the L3 header in the buffer, or -1 for non-IP. */
  L3_OFFSET: 0,
  /** Offset of the L4 header, or -1 when there is none (non-IP, later fragments, unknown IPv6 extension chains). */
  L4_OFFSET: 1,
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10), 0 for anything else. */
  TCP_FLAGS: 2,
  /** 4, 6, or 0 for non-IP. */
  IP_VERSION: 3,
  /** Offset of the innermost EtherType, relative to the frame start. */
  ETHERTYPE_AT: 4,
} as const;

export const META_WORDS = 5;

const ICMP_ECHO_REQUEST = 8;
const ICMP_ECHO_REPLY = 0;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;

/**
 * Fills key and meta from the frame at buf[off, off+len). The frame must have
 * passed classifyFrame (src/packet/validate.ts): the L2 and L3 headers are
 * known to fit. L4 headers are read only when they fit. Allocates nothing.
 */
export function extractKey(buf: Uint8Array, off: number, len: number, key: Uint32Array, meta: Int32Array): void {
  key[KeyWord.SRC_MAC_HI] = (buf[off + 6] << 8) | buf[off + 7];
  key[KeyWord.SRC_MAC_LO] = ((buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) | buf[off + 11]) >>> 0;
  key[KeyWord.DST_MAC_HI] = (buf[off] << 8) | buf[off + 1];
  key[KeyWord.DST_MAC_LO] = ((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0;
  for (let w = KeyWord.PROTO; w < KEY_WORDS; w++) key[w] = 0;
  meta[Meta.L3_OFFSET] = -1;
  meta[Meta.L4_OFFSET] = -1;
  meta[Meta.TCP_FLAGS] = 0;
  meta[Meta.IP_VERSION] = 0;

  const typeAt = innerEtherTypeOffset(buf, off, len);
  meta[Meta.ETHERTYPE_AT] = typeAt;
  if (typeAt < 0) {
    key[KeyWord.ETH_VLAN] = 0;
    return;
  }
  const etherType = (buf[off + typeAt] << 8) | buf[off + typeAt + 1];
  // With one or two tags the VID that matters for policy is the innermost (the C-tag).
  const vlan = typeAt > 12 ? VLAN_PRESENT | (((buf[off + typeAt - 2] << 8) | buf[off + typeAt - 1]) & 0x0fff) : 0;
  key[KeyWord.ETH_VLAN] = ((etherType << 16) | vlan) >>> 0;

  const l3 = off + typeAt + 2;
  const end = off + len;
  let proto: number;
  let l4: number;
  if (etherType === EtherType.IPv4) {
    meta[Meta.IP_VERSION] = 4;
    meta[Meta.L3_OFFSET] = l3;
    proto = buf[l3 + 9];
    key[KeyWord.SRC_IP] = ((buf[l3 + 12] << 24) | (buf[l3 + 13] << 16) | (buf[l3 + 14] << 8) | buf[l3 + 15]) >>> 0;
    key[KeyWord.DST_IP] = ((buf[l3 + 16] << 24) | (buf[l3 + 17] << 16) | (buf[l3 + 18] << 8) | buf[l3 + 19]) >>> 0;
    const fragmentOffset = ((buf[l3 + 6] & 0x1f) << 8) | buf[l3 + 7];
    l4 = fragmentOffset === 0 ? l3 + ((buf[l3] & 0x0f) << 2) : -1;
  } else if (etherType === EtherType.IPv6) {
    meta[Meta.IP_VERSION] = 6;
    meta[Meta.L3_OFFSET] = l3;
    proto = buf[l3 + 6];
    for (let i = 0; i < 4; i++) {
      const s = l3 + 8 + i * 4;
      const d = l3 + 24 + i * 4;
      key[KeyWord.SRC_IP + i] = ((buf[s] << 24) | (buf[s + 1] << 16) | (buf[s + 2] << 8) | buf[s + 3]) >>> 0;
      key[KeyWord.DST_IP + i] = ((buf[d] << 24) | (buf[d + 1] << 16) | (buf[d + 2] << 8) | buf[d + 3]) >>> 0;
    }
    // Extension headers are not walked: their next-header value stands as the protocol and
    // there are no ports, so a rule on ports never matches a packet whose ports policy cannot see.
    l4 = l3 + 40;
  } else {
    return;
  }

  let proto24 = proto << 24;
  if (l4 >= 0) {
    if (proto === IpProtocol.TCP && l4 + 20 <= end) {
      meta[Meta.L4_OFFSET] = l4;
      key[KeyWord.PORTS] = ((buf[l4] << 24) | (buf[l4 + 1] << 16) | (buf[l4 + 2] << 8) | buf[l4 + 3]) >>> 0;
      meta[Meta.TCP_FLAGS] = buf[l4 + 13];
    } else if (proto === IpProtocol.UDP && l4 + 8 <= end) {
      meta[Meta.L4_OFFSET] = l4;
      key[KeyWord.PORTS] = ((buf[l4] << 24) | (buf[l4 + 1] << 16) | (buf[l4 + 2] << 8) | buf[l4 + 3]) >>> 0;
    } else if ((proto === IpProtocol.ICMP || proto === IpProtocol.ICMPv6) && l4 + 8 <= end) {
      meta[Meta.L4_OFFSET] = l4;
      const type = buf[l4];
      proto24 |= type << 16;
      const echo =
        proto === IpProtocol.ICMP
          ? type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY
          : type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY;
      if (echo) proto24 |= (buf[l4 + 4] << 8) | buf[l4 + 5];
    }
  }
  key[KeyWord.PROTO] = proto24 >>> 0;
}

export function keyEtherType(key: Uint32Array): number {
  return key[KeyWord.ETH_VLAN] >>> 16;
}

export function keyProtocol(key: Uint32Array): number {
  return key[KeyWord.PROTO] >>> 24;
}

export function keyIcmpType(key: Uint32Array): number {
  return (key[KeyWord.PROTO] >>> 16) & 0xff;
}

export function keySrcPort(key: Uint32Array): number {
  return key[KeyWord.PORTS] >>> 16;
}

export function keyDstPort(key: Uint32Array): number {
  return key[KeyWord.PORTS] & 0xffff;
}

/**
 * The address held in words[at...] as people write it: the layout of the key's
 * SRC_IP/DST_IP (IPv4 in the first word, IPv6 in four). Allocates: listings only.
 */
export function formatKeyAddress(words: ArrayLike<number>, at: number, v6: boolean): string {
  if (!v6) return formatIpv4Addr(words[at]);
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 4; i++) {
    const w = words[at + i];
    bytes[i * 4] = w >>> 24;
    bytes[i * 4 + 1] = (w >>> 16) & 0xff;
    bytes[i * 4 + 2] = (w >>> 8) & 0xff;
    bytes[i * 4 + 3] = w & 0xff;
  }
  return formatIpv6Addr(bytes);
}
