/**
 * The way into the tunnel: frames the switch sends to an overlay network's
 * tunnel port become VXLAN datagrams to peer VTEPs, sent in batches.
 *
 * Three objects, all made by the switch when the control plane configures
 * the overlay:
 *   - VxlanUplink: one underlay address (the VTEP) and its UDP sockets. The
 *     first socket is bound to the VXLAN port and also receives; the others
 *     are bound to ephemeral ports and only send. udpSendBatch sends from the
 *     socket's own port, so the outer source port (RFC 7348: entropy for ECMP
 *     and RSS) is chosen by choosing the socket from the inner flow's hash: as
 *     many distinct source ports as sockets, each flow always on one of them
 *     (so its datagrams never overtake each other). Per socket, a queue of
 *     udpSendBatch descriptors, sent once per batch.
 *   - TunnelTx: the switch's transmit arena for segments, a region of the
 *     frame buffer after the rx slots (so descriptors into it and into the rx
 *     slots share one buffer and one sendmmsg), and the uplinks to send when
 *     it fills up.
 *   - VxlanEgress: one overlay network's side: the frames queued for the
 *     tunnel in this batch and, at flush, their encapsulation.
 *
 * Why encapsulation waits for the flush: the VXLAN header goes in the 8
 * bytes before the inner frame, which in an rx slot are the end of the
 * frame's virtio_net_hdr. A flooded frame is also queued to local TAPs in the
 * same batch, which need that header intact; the switch writes its TAPs first
 * and then calls encapsulate().
 *
 * Per frame at encapsulate():
 *   - a TSO super-frame is segmented by the addon into the arena (the
 *     segments' TCP payload clamped to the overlay MTU, so nothing oversized
 *     leaves), each segment gets its VXLAN header in the 8 bytes before it;
 *   - any other frame has its partial checksum completed (VXLAN carries no
 *     offload metadata) and its header written in place;
 *   - the destination: the VTEP that the VTEP table holds for a unicast
 *     destination MAC, otherwise every peer (head-end replication: one
 *     descriptor per peer, all pointing at the same bytes).
 * Frames larger than the MTU without GSO never get this far: enqueue()
 * refuses them, and the switch answers with ICMP fragmentation-needed.
 *
 * Nothing allocates per frame.
 */
import type { completeChecksum, segmentTso, udpSendBatch, vxlanGro, vxlanGroSlots } from '../native/index.js';
import { ETH_HEADER_LEN, macHi16, macLo32 } from '../packet/ethernet.js';
import { innerEtherTypeOffset } from '../packet/vlan.js';
import { GsoType, VNET_HDR_LEN, VnetField, VnetFlags } from '../packet/vnet.js';
import { VXLAN_HEADER_LEN } from '../packet/vxlan.js';
import type { OverlaySegment } from './overlay-segment.js';
import { encapHeader } from './vxlan-encap.js';

/**
 * What the switch gives the tunnel: the addon's batched UDP (udpSendBatch, with
 * UDP GSO segment sizes), segmentation, checksum completion and receive GRO
 * (type-only: this module never loads the addon, so unit tests may pass fakes),
 * and the arena's place in the buffer.
 */
export interface TunnelIo {
  sendUdp: typeof udpSendBatch;
  segmentTso: typeof segmentTso;
  completeChecksum: typeof completeChecksum;
  vxlanGro: typeof vxlanGro;
  vxlanGroSlots: typeof vxlanGroSlots;
  /**
   * The arena: buffer bytes [txOffset, txOffset + txSize) that no rx slot uses. A batch from an
   * uplink uses it for the frames GRO makes (they never go back into a tunnel); a batch from a TAP
   * for the segments it sends.
   */
  readonly txOffset: number;
  readonly txSize: number;
}

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what the tunnel adds to an IP packet. */
export const VXLAN_OVERHEAD = 50;

/** Datagrams queued per socket before a send is forced. */
const QUEUE_CAPACITY = 4096;
/** Segments of one super-frame at most (64 KiB at a 64-byte MSS). */
const MAX_SEGMENTS = 1024;
/** One UDP GSO send carries at most this many datagrams (the kernel's UDP_MAX_SEGMENTS on older kernels) ... */
const GSO_MAX_DATAGRAMS = 64;
/** ... and at most this many bytes of UDP payload (a UDP length is 16 bits; the IP header comes on top). */
const GSO_MAX_BYTES = 65_000;

export const EgressResult = {
  QUEUED: 0,
  /** Larger than the overlay MTU and not a super-frame: the switch answers or drops it. */
  TOO_BIG: 1,
} as const;

/** Cumulative counters of an uplink (a Float64Array so the switch can copy them into its counter rows cheaply). */
export const UplinkStat = { DATAGRAMS: 0, BYTES: 1, FAILED: 2, SENDS: 3 } as const;

export class VxlanUplink {
  readonly stats = new Float64Array(4);
  private readonly offsets: Uint32Array[] = [];
  private readonly lengths: Uint32Array[] = [];
  private readonly addrs: Uint32Array[] = [];
  private readonly ports: Uint16Array[] = [];
  private readonly segmentSizes: Uint16Array[] = [];
  private readonly counts: Int32Array;

  /**
   * `fds`: the sockets, the receiving one (bound to the VXLAN port) first.
   * `dstPort`: the peers' VXLAN port.
   */
  constructor(
    readonly id: number,
    readonly vtep: number,
    readonly fds: readonly number[],
    readonly dstPort: number,
  ) {
    if (fds.length === 0) throw new RangeError('an uplink needs at least one socket');
    for (let i = 0; i < fds.length; i++) {
      this.offsets.push(new Uint32Array(QUEUE_CAPACITY));
      this.lengths.push(new Uint32Array(QUEUE_CAPACITY));
      this.addrs.push(new Uint32Array(QUEUE_CAPACITY));
      this.ports.push(new Uint16Array(QUEUE_CAPACITY));
      this.segmentSizes.push(new Uint16Array(QUEUE_CAPACITY));
    }
    this.counts = new Int32Array(fds.length);
  }

  /** The socket of a flow hash: fixed per flow, spread across flows. */
  socketOf(hash: number): number {
    return (hash >>> 0) % this.fds.length;
  }

  /** Room for n more datagrams on socket s. */
  hasRoom(s: number, n: number): boolean {
    return this.counts[s] + n <= QUEUE_CAPACITY;
  }

  /** A datagram, or with segmentSize > 0 a run of datagrams of that size back to back (UDP GSO). */
  add(s: number, offset: number, length: number, addr: number, segmentSize: number): void {
    const i = this.counts[s]++;
    this.offsets[s][i] = offset;
    this.lengths[s][i] = length;
    this.addrs[s][i] = addr;
    this.ports[s][i] = this.dstPort;
    this.segmentSizes[s][i] = segmentSize;
  }

  /** Head-end replication of one datagram (or GSO run) to every peer of the segment, on socket s. */
  replicate(s: number, seg: OverlaySegment, offset: number, length: number, segmentSize: number): void {
    const at = this.counts[s];
    const n = seg.fillReplication(offset, length, this.dstPort, this.offsets[s], this.lengths[s], this.addrs[s], this.ports[s], at);
    this.segmentSizes[s].fill(segmentSize, at, at + n);
    this.counts[s] = at + n;
  }

  /** One udpSendBatch per socket with anything queued. */
  send(io: TunnelIo, buf: Uint8Array): void {
    const stats = this.stats;
    for (let s = 0; s < this.fds.length; s++) {
      const n = this.counts[s];
      if (n === 0) continue;
      const lengths = this.lengths[s];
      const sent = io.sendUdp(this.fds[s], buf, this.offsets[s], lengths, n, this.addrs[s], this.ports[s], this.segmentSizes[s]);
      let bytes = 0;
      for (let i = 0; i < n; i++) bytes += lengths[i];
      stats[UplinkStat.DATAGRAMS] += sent;
      stats[UplinkStat.BYTES] += bytes;
      stats[UplinkStat.FAILED] += n - sent;
      stats[UplinkStat.SENDS]++;
      this.counts[s] = 0;
    }
  }
}

/** The segment arena and the uplinks that may hold descriptors into it. */
export class TunnelTx {
  readonly uplinks: VxlanUplink[] = [];
  private cursor: number;
  private readonly end: number;

  constructor(
    readonly io: TunnelIo,
    private readonly buf: Uint8Array,
  ) {
    this.cursor = io.txOffset;
    this.end = io.txOffset + io.txSize;
    if (this.end > buf.length) throw new RangeError('the tunnel arena lies outside the frame buffer');
  }

  /** n bytes of arena; sends everything queued first when it is full. -1 when n is more than the whole arena. */
  reserve(n: number): number {
    if (n > this.io.txSize) return -1;
    if (this.cursor + n > this.end) this.sendAll();
    const at = this.cursor;
    this.cursor = (at + n + 7) & ~7;
    return at;
  }

  /** Sends every uplink's queue; the arena is free again afterwards. */
  sendAll(): void {
    for (let i = 0; i < this.uplinks.length; i++) this.uplinks[i].send(this.io, this.buf);
    this.cursor = this.io.txOffset;
  }
}

export interface VxlanEgressCounters {
  /** Frames sent into the tunnel (super-frames count once). */
  frames: number;
  /** Super-frames segmented, and the segments they became. */
  segmented: number;
  segments: number;
  /** Frames sent to every peer because no VTEP was known for their destination. */
  flooded: number;
  tooBig: number;
  encapFailed: number;
}

export class VxlanEgress {
  readonly vni: number;
  /** IP MTU inside the tunnel. */
  readonly mtu: number;
  private readonly offsets: Uint32Array;
  private readonly lengths: Uint32Array;
  private readonly hashes: Uint32Array;
  private count = 0;
  private readonly segOffsets = new Uint32Array(MAX_SEGMENTS);
  private readonly segLengths = new Uint32Array(MAX_SEGMENTS);
  private framesCount = 0;
  private segmentedCount = 0;
  private segmentsCount = 0;
  private floodedCount = 0;
  private tooBigCount = 0;
  private encapFailedCount = 0;
  /** Of the last encapsulate(): frames that failed, and the bytes of those queued. */
  lastFailed = 0;
  lastBytes = 0;

  constructor(
    readonly segment: OverlaySegment,
    readonly uplink: VxlanUplink,
    mtu: number,
    batchSize: number,
  ) {
    this.vni = segment.vni;
    this.mtu = mtu;
    this.offsets = new Uint32Array(batchSize);
    this.lengths = new Uint32Array(batchSize);
    this.hashes = new Uint32Array(batchSize);
  }

  get pending(): number {
    return this.count;
  }

  counters(): VxlanEgressCounters {
    return {
      frames: this.framesCount,
      segmented: this.segmentedCount,
      segments: this.segmentsCount,
      flooded: this.floodedCount,
      tooBig: this.tooBigCount,
      encapFailed: this.encapFailedCount,
    };
  }

  /**
   * Queues the frame at buf[off, off + len) (its virtio_net_hdr before it)
   * for this batch. TOO_BIG, queueing nothing, for a frame that is not a
   * super-frame and whose L3 packet exceeds the MTU.
   */
  enqueue(buf: Uint8Array, off: number, len: number, hash: number): number {
    if (this.tooBig(buf, off, len)) {
      this.tooBigCount++;
      return EgressResult.TOO_BIG;
    }
    const i = this.count++;
    this.offsets[i] = off;
    this.lengths[i] = len;
    this.hashes[i] = hash;
    return EgressResult.QUEUED;
  }

  /** Whether the frame is not a super-frame and its L3 packet exceeds the MTU (its virtio_net_hdr before it). */
  tooBig(buf: Uint8Array, off: number, len: number): boolean {
    const gso = buf[off - VNET_HDR_LEN + VnetField.GSO_TYPE] & ~GsoType.ECN;
    return gso === GsoType.NONE && len - l2Length(buf, off, len) > this.mtu;
  }

  /**
   * Encapsulates the queued frames into their uplink's socket queues (the
   * arena's owner sends them). Returns how many frames were queued; lastFailed
   * and lastBytes tell the rest (a flood on a network without peers is neither).
   */
  encapsulate(buf: Uint8Array, tx: TunnelTx, nowMs: number): number {
    const uplink = this.uplink;
    const seg = this.segment;
    const peers = seg.peerCount;
    let failed = 0;
    let queued = 0;
    let bytes = 0;
    for (let i = 0; i < this.count; i++) {
      const off = this.offsets[i];
      const len = this.lengths[i];
      const s = uplink.socketOf(this.hashes[i]);
      // The destination VTEP, or 0 for every peer.
      let vtep = 0;
      const hi = macHi16(buf, off);
      if ((hi & 0x0100) === 0) {
        const slot = seg.lookupVtep(hi, macLo32(buf, off), nowMs);
        if (slot >= 0) vtep = seg.vteps.vtepAt(slot);
      }
      if (vtep === 0) {
        this.floodedCount++;
        if (peers === 0) continue;
      }
      const copies = vtep === 0 ? peers : 1;
      const vh = off - VNET_HDR_LEN;
      const gso = buf[vh + VnetField.GSO_TYPE] & ~GsoType.ECN;
      if (gso === GsoType.NONE) {
        if (!uplink.hasRoom(s, copies)) tx.sendAll();
        if ((buf[vh + VnetField.FLAGS] & VnetFlags.NEEDS_CSUM) !== 0 && tx.io.completeChecksum(buf, off, len) < 0) {
          failed++;
          continue;
        }
        const at = encapHeader(buf, off, this.vni);
        this.add(s, vtep, at, len + VXLAN_HEADER_LEN, 0);
        queued++;
        bytes += len;
        continue;
      }
      const n = this.segmentInto(buf, off, len, tx, s, copies);
      if (n < 0) {
        failed++;
        continue;
      }
      this.segmentedCount++;
      this.segmentsCount += n;
      this.queueSegments(s, vtep, n, buf);
      queued++;
      bytes += len;
    }
    this.count = 0;
    this.encapFailedCount += failed;
    this.framesCount += queued;
    this.lastFailed = failed;
    this.lastBytes = bytes;
    return queued;
  }

  private add(s: number, vtep: number, at: number, length: number, segmentSize: number): void {
    if (vtep !== 0) this.uplink.add(s, at, length, vtep, segmentSize);
    else this.uplink.replicate(s, this.segment, at, length, segmentSize);
  }

  /**
   * The n segments segmentInto wrote, each given its VXLAN header. They lie
   * back to back, all of one size but the last, so they go as UDP GSO runs:
   * one descriptor per run of up to 64 datagrams and 65,000 bytes.
   */
  private queueSegments(s: number, vtep: number, n: number, buf: Uint8Array): void {
    const so = this.segOffsets;
    const sl = this.segLengths;
    const size = sl[0] + VXLAN_HEADER_LEN;
    for (let k = 0; k < n; k++) encapHeader(buf, so[k], this.vni);
    const perRun = Math.min(GSO_MAX_DATAGRAMS, Math.floor(GSO_MAX_BYTES / size));
    for (let k = 0; k < n; k += perRun) {
      const last = Math.min(n, k + perRun) - 1;
      const start = so[k] - VXLAN_HEADER_LEN;
      const length = so[last] + sl[last] - start;
      this.add(s, vtep, start, length, last > k ? size : 0);
    }
  }

  /**
   * Segments the super-frame at buf[off] into the arena, leaving 8 bytes
   * before each segment for its VXLAN header; the segment offsets and lengths
   * are in segOffsets/segLengths. Returns the count, or -1.
   */
  private segmentInto(buf: Uint8Array, off: number, len: number, tx: TunnelTx, s: number, copies: number): number {
    const headers = tcpHeadersLength(buf, off, len);
    if (headers < 0) return -1;
    const vh = off - VNET_HDR_LEN;
    let gsoSize = buf[vh + VnetField.GSO_SIZE] | (buf[vh + VnetField.GSO_SIZE + 1] << 8);
    // A sender whose MTU is above the overlay's (raised by hand) would make segments the tunnel cannot carry: cut them smaller.
    const fit = this.mtu - (headers - l2Length(buf, off, len));
    if (fit <= 0) return -1;
    if (gsoSize === 0 || gsoSize > fit) {
      gsoSize = fit;
      buf[vh + VnetField.GSO_SIZE] = gsoSize & 0xff;
      buf[vh + VnetField.GSO_SIZE + 1] = gsoSize >>> 8;
    }
    // A super-frame without payload (the kernel should not make one) is still one segment.
    const n = Math.max(1, Math.ceil((len - headers) / gsoSize));
    if (n > MAX_SEGMENTS) return -1;
    if (!this.uplink.hasRoom(s, n * copies)) tx.sendAll();
    if (!this.uplink.hasRoom(s, n * copies)) return -1;
    // Back to back, each datagram (VXLAN header + segment) exactly `stride` long but the last: a UDP GSO run.
    const stride = VXLAN_HEADER_LEN + headers + gsoSize;
    const base = tx.reserve(n * stride);
    if (base < 0) return -1;
    const so = this.segOffsets;
    for (let k = 0; k < n; k++) so[k] = base + k * stride + VXLAN_HEADER_LEN;
    const made = tx.io.segmentTso(buf, off, len, buf, so, this.segLengths, n, 0);
    // segmentTso parses the headers as tcpHeadersLength does; if it ever disagreed, the run would not be uniform.
    if (made > 1 && this.segLengths[0] !== headers + gsoSize) return -1;
    return made;
  }
}

/** Ethernet header plus VLAN tags of the frame at buf[off] (it passed classifyFrame, so the tags parse). */
function l2Length(buf: Uint8Array, off: number, len: number): number {
  const at = innerEtherTypeOffset(buf, off, len);
  return at < 0 ? ETH_HEADER_LEN : at + 2;
}

/** Ethernet, VLAN tags, IPv4/IPv6 and TCP headers of a TCP frame; -1 when it is not one. */
function tcpHeadersLength(buf: Uint8Array, off: number, len: number): number {
  const l2 = l2Length(buf, off, len);
  const type = (buf[off + l2 - 2] << 8) | buf[off + l2 - 1];
  let l4: number;
  if (type === 0x0800) {
    if (l2 + 20 > len || buf[off + l2 + 9] !== 6) return -1;
    l4 = l2 + (buf[off + l2] & 15) * 4;
  } else if (type === 0x86dd) {
    if (l2 + 40 > len || buf[off + l2 + 6] !== 6) return -1;
    l4 = l2 + 40;
  } else {
    return -1;
  }
  if (l4 + 20 > len) return -1;
  return l4 + (buf[off + l4 + 12] >>> 4) * 4;
}
