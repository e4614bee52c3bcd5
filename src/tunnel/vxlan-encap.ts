/**
 * VXLAN encapsulation and decapsulation (RFC 7348) over the frame buffers of
 * the data path: functions of (buffer, offset, length), no allocation, results
 * as small integers. The header itself is src/packet/vxlan.ts.
 *
 * Encapsulation is in place: frames land with headroom (RX_HEADROOM, 128
 * bytes) and segmentTso writes its segments where the caller says, so the
 * 8-byte header goes in the bytes just before the inner frame, and the
 * datagram for udpSendBatch is buf[innerOffset - 8, innerOffset + innerLength).
 * The outer IPv4/UDP headers are the kernel's (a UDP socket sends it).
 *
 * Careful: in a TAP rx slot those 8 bytes are the end of the frame's
 * virtio_net_hdr. Read it first (segmentTso, completeChecksum: VXLAN carries
 * no offload metadata, so a super-frame must be segmented and a partial
 * checksum completed before it leaves), and a frame that is also written to a
 * TAP in the same batch needs its vnet header back (or a copy) after.
 *
 * Decapsulation: an RxEngine UDP port lands each datagram so the inner frame
 * starts at frameOffset(slot) and the VXLAN header sits in the 8 bytes before
 * it; lengths[slot] is the inner length or RX_MALFORMED (-1). decapCheck takes
 * the header's offset and the datagram's length, so the rx slot's
 * (frameOffset - 8, lengths + 8) go in as they are and a malformed slot
 * (-1 + 8 = 7 bytes) comes out as SHORT_HEADER. Verdicts other than OK are
 * drop reasons. Whether the sender is a peer of the VNI's network is the
 * segment's question (OverlaySegments.admit, NOT_PEER).
 *
 * RFC 7348 section 5: the I flag must be set; the other flag bits and the
 * reserved fields are ignored on receipt (extensions such as GBP use them).
 * VNI 0 is served by no network here (networks take 1..16777215).
 */
import { ETH_HEADER_LEN } from '../packet/ethernet.js';
import { read16, write16le } from '../packet/bytes.js';
import { pseudoSumV4At, pseudoSumV6At } from '../packet/checksum.js';
import { GsoType, VNET_HDR_LEN, VnetField, VnetFlags } from '../packet/vnet.js';
import { VXLAN_HEADER_LEN, VXLAN_MAX_VNI, VxlanField, VxlanFlags, VxlanView } from '../packet/vxlan.js';
import { DropReason } from '../packet/drop-reasons.js';

/** RFC 7348 section 5: the outer UDP source port "within the dynamic/private port range". */
export const ENTROPY_PORT_MIN = 49152;
export const ENTROPY_PORT_MAX = 65535;

export const MIN_VNI = 1;
export const MAX_VNI = VXLAN_MAX_VNI;

/** Why decapCheck (or OverlaySegments.admit) refused a datagram; 0 is OK. Dense: they index counter rows. */
export const DecapVerdict = {
  OK: 0,
  /** Fewer than 8 bytes of UDP payload (an RX_MALFORMED slot lands here), or a range outside the buffer. */
  SHORT_HEADER: 1,
  /** The I flag is clear: the header names no segment, and RFC 7348 receivers discard it. */
  BAD_FLAGS: 2,
  /** The inner frame is shorter than an Ethernet header. */
  TRUNCATED_INNER: 3,
  /** VNI 0, or one no network on this host serves. */
  UNKNOWN_VNI: 4,
  /** The sender is not a peer VTEP of the VNI's network (OverlaySegments.admit). */
  NOT_PEER: 5,
} as const;
export type DecapVerdict = (typeof DecapVerdict)[keyof typeof DecapVerdict];

/** The DropReason each verdict is counted as (index by verdict; OK keeps the datagram). The tunnel owns this mapping, not the numbering of either. */
export const DECAP_DROP_REASON: Readonly<Uint8Array> = (() => {
  const map = new Uint8Array(6);
  map[DecapVerdict.SHORT_HEADER] = DropReason.vxlanShortHeader;
  map[DecapVerdict.BAD_FLAGS] = DropReason.vxlanBadFlags;
  map[DecapVerdict.TRUNCATED_INNER] = DropReason.vxlanTruncated;
  map[DecapVerdict.UNKNOWN_VNI] = DropReason.vxlanUnknownVni;
  map[DecapVerdict.NOT_PEER] = DropReason.vxlanNotPeer;
  return map;
})();

/** Names indexed by verdict code: counter labels and drop reason names. */
export const DECAP_VERDICT_NAMES: readonly string[] = ['ok', 'shortHeader', 'badFlags', 'truncatedInner', 'unknownVni', 'notPeer'];
export const DECAP_VERDICT_COUNT = DECAP_VERDICT_NAMES.length;

/** The VNIs a host serves: a Map or Set keyed by VNI will do, as does OverlaySegments. */
export interface VniFilter {
  has(vni: number): boolean;
}

export function isValidVni(vni: number): boolean {
  return Number.isInteger(vni) && vni >= MIN_VNI && vni <= MAX_VNI;
}

/** Throws a RangeError that says what a VNI must be. For configuration, not the data path. */
export function assertVni(vni: number): void {
  if (!isValidVni(vni)) throw new RangeError(`a VNI must be an integer from ${MIN_VNI} to ${MAX_VNI}, not ${String(vni)}`);
}

// One view for the module: reset per call, nothing allocated.
const header = new VxlanView();

/**
 * Writes the VXLAN header (I flag, `vni`, reserved bytes zero) in the 8 bytes
 * before the inner frame at buf[innerOffset]; returns where it starts
 * (innerOffset - 8), the datagram's offset for udpSendBatch. Returns -1, and
 * writes nothing, when there is no room before innerOffset or the VNI is not
 * 1..16777215.
 */
export function encapHeader(buf: Uint8Array, innerOffset: number, vni: number): number {
  const at = innerOffset - VXLAN_HEADER_LEN;
  if (at < 0 || !isValidVni(vni) || !header.reset(buf, at, VXLAN_HEADER_LEN)) return -1;
  header.writeHeader(vni);
  return at;
}

/** The 24-bit VNI field of the header at buf[off], whatever the flags say. */
export function readVni(buf: Uint8Array, off: number): number {
  const i = off + VxlanField.VNI;
  return (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2];
}

/**
 * Checks the VXLAN datagram at buf[off, off + len) (header, then inner
 * frame): returns DecapVerdict.OK or the reason to drop it. Cheap checks come
 * first, the VNI lookup last. On OK the inner frame is buf[off + 8, off + len)
 * and readVni(buf, off) its segment.
 */
export function decapCheck(buf: Uint8Array, off: number, len: number, vnis: VniFilter): DecapVerdict {
  if (len < VXLAN_HEADER_LEN || off < 0 || off + len > buf.length) return DecapVerdict.SHORT_HEADER;
  if ((buf[off + VxlanField.FLAGS] & VxlanFlags.I) === 0) return DecapVerdict.BAD_FLAGS;
  if (len - VXLAN_HEADER_LEN < ETH_HEADER_LEN) return DecapVerdict.TRUNCATED_INNER;
  const vni = readVni(buf, off);
  if (vni === 0 || !vnis.has(vni)) return DecapVerdict.UNKNOWN_VNI;
  return DecapVerdict.OK;
}

/**
 * The outer UDP source port for a flow hash (flowHashBatch's output, or any
 * well-mixed u32): 49152..65535, so the underlay's ECMP and the receiver's
 * RSS spread overlay flows as they would the inner ones (RFC 7348 section 5).
 * The top bits are folded in so a hash that varies only there still spreads.
 */
export function entropyPort(hash: number): number {
  return ENTROPY_PORT_MIN | ((hash ^ (hash >>> 14) ^ (hash >>> 28)) & 0x3fff);
}

/**
 * After decapsulation, before writeBatch to a TAP: the 10 bytes before the
 * inner frame (the VXLAN header and 2 stale bytes) become an all-zero
 * virtio_net_hdr, a plain frame with complete checksums (the sender had to
 * complete them: VXLAN carries no offload metadata). False, writing nothing,
 * when there is no room before innerOffset.
 */
export function clearVnetHeader(buf: Uint8Array, innerOffset: number): boolean {
  const at = innerOffset - VNET_HDR_LEN;
  if (at < 0 || innerOffset > buf.length) return false;
  buf.fill(0, at, innerOffset);
  return true;
}

/**
 * A frame decapsulated with an all-zero vnet header whose TCP or UDP checksum
 * is partial: the field holds just the pseudo-header sum, as a sender's
 * kernel leaves it for the NIC to finish. A kernel VXLAN peer on the same
 * machine sends such frames when its underlay is a veth with tx checksum
 * offload on (the default): the veth hands the packet on still partial, and a
 * socket reads it as it is. Marked NEEDS_CSUM (csum_start at the L4 header),
 * the receiving stack treats it as the peer's own stack would, as a veth's
 * packet. A frame whose checksum is simply wrong is left alone, for the
 * receiver to drop: only one whose checksum field equals the pseudo-header
 * sum exactly (1 in 65536 of corrupt frames) is taken for partial. Plain
 * IPv4 (not a fragment) or IPv6 without extension headers, behind at most one
 * VLAN tag. True when it marked the frame.
 */
export function markPartialChecksum(buf: Uint8Array, frame: number, len: number): boolean {
  const end = frame + len;
  let l3 = frame + ETH_HEADER_LEN;
  if (l3 > end) return false;
  let etherType = read16(buf, frame + 12);
  if (etherType === 0x8100) {
    l3 += 4;
    if (l3 > end) return false;
    etherType = read16(buf, l3 - 2);
  }
  let l4: number;
  let l4End: number;
  let proto: number;
  let pseudo: number;
  if (etherType === 0x0800) {
    if (l3 + 20 > end) return false;
    const ihl = (buf[l3] & 0x0f) * 4;
    const total = read16(buf, l3 + 2);
    if (ihl < 20 || total < ihl || l3 + total > end || (read16(buf, l3 + 6) & 0x3fff) !== 0) return false;
    proto = buf[l3 + 9];
    l4 = l3 + ihl;
    l4End = l3 + total;
    pseudo = pseudoSumV4At(buf, l3, total - ihl);
  } else if (etherType === 0x86dd) {
    if (l3 + 40 > end) return false;
    proto = buf[l3 + 6];
    l4 = l3 + 40;
    const l4Length = read16(buf, l3 + 4);
    l4End = l4 + l4Length;
    if (l4End > end) return false;
    pseudo = pseudoSumV6At(buf, l3, proto, l4Length);
  } else {
    return false;
  }
  // The field inside the L4 header the IP length says there is (Ethernet padding is not it).
  const field = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (field < 0 || l4 + (proto === 6 ? 20 : 8) > l4End) return false;
  const value = read16(buf, l4 + field);
  if (value !== pseudo || value === 0) return false;
  const vnet = frame - VNET_HDR_LEN;
  buf[vnet + VnetField.FLAGS] = VnetFlags.NEEDS_CSUM;
  write16le(buf, vnet + VnetField.CSUM_START, l4 - frame);
  write16le(buf, vnet + VnetField.CSUM_OFFSET, field);
  return true;
}

/** TCP's CWR flag: a super-frame carrying it is segmented with ECN in mind (GsoType.ECN). */
const TCP_CWR = 0x80;

/**
 * A decapsulated frame larger than the overlay MTU that is a TCP super-frame
 * a kernel VXLAN peer sent whole: its vxlan device encapsulates a TSO frame
 * once, as a VXLAN GSO packet (SKB_GSO_UDP_TUNNEL), and when the underlay
 * can carry that (a veth, by default) the packet reaches vsw's socket
 * unsegmented. The socket hands it over as one datagram, with no UDP_GRO
 * size (the kernel reports one only for UDP GSO): one VXLAN header, then an
 * inner Ethernet/IP/TCP frame of up to 64 KB whose IP length covers all of
 * it and whose TCP checksum is partial (the pseudo-header sum over the whole
 * TCP length), exactly a TSO super-frame without its metadata. This writes
 * that metadata into the vnet header before the frame: NEEDS_CSUM at the TCP
 * checksum, GSO TCPV4 or TCPV6 (with ECN when CWR is set), and a gso_size
 * that fits `mtu` (the overlay's IP MTU; the sender's segments were no
 * larger), so the frame goes to a container as one TAP write, or is cut to
 * the MTU by whatever egress needs segments.
 *
 * Only a frame that is nothing else is taken: untagged or one VLAN tag,
 * plain IPv4 (no fragment) or IPv6 without extension headers, an IP length
 * that ends exactly at the frame's end, TCP with a sound header and payload
 * beyond one segment, and a checksum field equal to the pseudo-header sum
 * (a super-frame's checksum is always partial; any other value is not
 * trusted, and the frame stays oversized, for the switch to drop and count).
 * True when it marked the frame.
 */
export function markTsoFrame(buf: Uint8Array, frame: number, len: number, mtu: number): boolean {
  const end = frame + len;
  if (frame < VNET_HDR_LEN || end > buf.length) return false;
  let l3 = frame + ETH_HEADER_LEN;
  if (l3 > end) return false;
  let etherType = read16(buf, frame + 12);
  if (etherType === 0x8100) {
    l3 += 4;
    if (l3 > end) return false;
    etherType = read16(buf, l3 - 2);
  }
  let l4: number;
  let pseudo: number;
  let gso: number;
  if (etherType === 0x0800) {
    if (l3 + 20 > end) return false;
    const ihl = (buf[l3] & 0x0f) * 4;
    const total = read16(buf, l3 + 2);
    if (buf[l3] >> 4 !== 4 || ihl < 20 || l3 + total !== end || total < ihl || (read16(buf, l3 + 6) & 0x3fff) !== 0 || buf[l3 + 9] !== 6) return false;
    l4 = l3 + ihl;
    pseudo = pseudoSumV4At(buf, l3, total - ihl);
    gso = GsoType.TCPV4;
  } else if (etherType === 0x86dd) {
    if (l3 + 40 > end || buf[l3] >> 4 !== 6 || buf[l3 + 6] !== 6) return false;
    l4 = l3 + 40;
    const l4Length = read16(buf, l3 + 4);
    if (l4 + l4Length !== end) return false;
    pseudo = pseudoSumV6At(buf, l3, 6, l4Length);
    gso = GsoType.TCPV6;
  } else {
    return false;
  }
  if (l4 + 20 > end) return false;
  const tcpLen = (buf[l4 + 12] >> 4) * 4;
  const headers = l4 + tcpLen - frame;
  const mss = mtu - (l4 - l3) - tcpLen;
  if (tcpLen < 20 || mss <= 0 || len - headers <= mss) return false;
  const value = read16(buf, l4 + 16);
  if (value !== pseudo || value === 0) return false;
  if ((buf[l4 + 13] & TCP_CWR) !== 0) gso |= GsoType.ECN;
  const vnet = frame - VNET_HDR_LEN;
  buf[vnet + VnetField.FLAGS] = VnetFlags.NEEDS_CSUM;
  buf[vnet + VnetField.GSO_TYPE] = gso;
  write16le(buf, vnet + VnetField.HDR_LEN, headers);
  write16le(buf, vnet + VnetField.GSO_SIZE, mss);
  write16le(buf, vnet + VnetField.CSUM_START, l4 - frame);
  write16le(buf, vnet + VnetField.CSUM_OFFSET, 16);
  return true;
}

/**
 * The vnet header of an untagged IPv4/TCP super-frame with a 20-byte IP
 * header and a partial TCP checksum, such as vxlanGroSlots makes: NEEDS_CSUM
 * at the TCP checksum (csum_start 34, csum_offset 16), GSO TCPV4, the length
 * of the headers before the payload, and the payload bytes per segment.
 */
export function writeTcp4GsoHeader(buf: Uint8Array, frame: number, headerLength: number, gsoSize: number): void {
  const vnet = frame - VNET_HDR_LEN;
  buf[vnet + VnetField.FLAGS] = VnetFlags.NEEDS_CSUM;
  buf[vnet + VnetField.GSO_TYPE] = GsoType.TCPV4;
  write16le(buf, vnet + VnetField.HDR_LEN, headerLength);
  write16le(buf, vnet + VnetField.GSO_SIZE, gsoSize);
  write16le(buf, vnet + VnetField.CSUM_START, ETH_HEADER_LEN + 20);
  write16le(buf, vnet + VnetField.CSUM_OFFSET, 16);
}
