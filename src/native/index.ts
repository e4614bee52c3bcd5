/**
 * The only module that loads the Rust addon (native/). Everything above talks
 * to these typed wrappers; see docs/ARCHITECTURE.md for the contract.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NativeAddon {
  VNET_HDR_LEN: number;
  tapOpen(name: string, netns: string | undefined, exclusive: boolean, persist: boolean): number;
  packetOpen(name: string, promisc: boolean, vlan: number): number;
  packetSendBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  tcpSocketIn(netnsPath: string): number;
  tapSetPersist(fd: number, persist: boolean): void;
  closeFd(fd: number): void;
  tapLinkInfo(name: string, netns: string | undefined): LinkInfo | null;
  lockFile(path: string): number;
  internetChecksum(buf: Uint8Array, offset: number, length: number, initial?: number): number;
  flowHashBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, out: Uint32Array): void;
  writeBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  rxCreate(
    buffer: Uint8Array,
    lengths: Int32Array,
    slotSize: number,
    slotCount: number,
    headroom: number,
    vnetHdrLen: number,
    onBatch: (portId: number, count: number) => void,
    sources?: Uint32Array,
  ): object;
  rxAddPort(engine: object, portId: number, fd: number, kind?: number): void;
  rxRemovePort(engine: object, portId: number): number;
  rxPausePort(engine: object, portId: number, paused: number): number;
  rxClose(engine: object): void;
  rxAddVhostPort(engine: object, portId: number, device: object): void;
  vhostOpen(path: string, server: boolean, onEvent: (code: number, detail: string) => void): object;
  vhostConnect(device: object): boolean;
  vhostClose(device: object): void;
  vhostStatus(device: object): VhostStatus;
  vhostTransmit(device: object, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  udpOpen(bindAddress: string, port: number, netns: string | undefined, gro?: boolean): number;
  udpLocalPort(fd: number): number;
  udpSendBatch(
    fd: number,
    buf: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    count: number,
    dstAddrs: Uint32Array,
    dstPorts: Uint16Array | Uint32Array,
    segmentSizes?: Uint16Array | Uint32Array,
  ): number;
  segmentTso(buf: Uint8Array, frameOffset: number, frameLength: number, out: Uint8Array, outOffsets: Uint32Array, outLengths: Uint32Array, maxSegments: number, outVnetLen: number): number;
  completeChecksum(buf: Uint8Array, frameOffset: number, frameLength: number): number;
  vxlanGro(
    buf: Uint8Array,
    blobOffset: number,
    blobLength: number,
    segmentSize: number,
    outOffset: number,
    outLimit: number,
    frameOffsets: Uint32Array,
    frameLengths: Uint32Array,
    headerOffsets: Uint32Array,
    maxFrames: number,
  ): number;
  vxlanGroSlots(buf: Uint8Array, slotSize: number, headroom: number, count: number, lengths: Int32Array, sources: Uint32Array, info: Uint32Array): number;
}

// dist/src/native/index.js -> <package>/native/vsw_native.node
const addonPath = fileURLToPath(new URL('../../../native/vsw_native.node', import.meta.url));

function load(): NativeAddon {
  if (!existsSync(addonPath)) {
    throw new Error(`the native addon is not built (${addonPath} is missing): run \`npm run build:native\`.`);
  }
  return createRequire(import.meta.url)(addonPath) as NativeAddon;
}

const addon = load();

/** struct virtio_net_hdr without num_buffers: what TUNSETVNETHDRSZ 10 puts before every frame. */
export const VNET_HDR_LEN: number = addon.VNET_HDR_LEN;
/** Room before each received frame, so encapsulation can prepend headers in place. */
export const RX_HEADROOM = 128;
/** One slot holds the largest TSO super-frame (64 KiB of IP plus Ethernet) with its headroom. */
export const RX_SLOT_SIZE = 65_536 + 256;
/** Frames drained per readiness event; measured: more gained nothing, 8 cost 25%. */
export const RX_BATCH = 64;
/** The VXLAN header (RFC 7348) that a UDP port's datagrams carry in front of the inner frame. */
export const RX_UDP_PREFIX = 8;
/** lengths[slot] of a UDP datagram too short to hold the VXLAN header, or too large for its slot: count it as malformed. */
export const RX_MALFORMED = -1;
/** Words per slot in RxEngine.sources: sender address, sender port, coalesced datagram size, spare. */
export const SOURCE_WORDS = 4;

const PORT_KIND_TAP = 0;
const PORT_KIND_UDP = 1;
const PORT_KIND_PACKET = 2;

export interface TapOpenOptions {
  /** Interface name inside the namespace, at most 15 bytes. */
  name: string;
  /** Path of a network namespace file such as /run/netns/NAME; absent means the caller's namespace. */
  netns?: string;
  /** Refuse to attach to an existing TAP of that name. Default true. */
  exclusive?: boolean;
  /** Keep the device when the fd closes. Default false. */
  persist?: boolean;
}

/** Creates (or attaches to a persistent) TAP with the vnet header and TSO offloads; returns a non-blocking fd. */
export function tapOpen(opts: TapOpenOptions): number {
  return addon.tapOpen(opts.name, opts.netns, opts.exclusive ?? true, opts.persist ?? false);
}

/**
 * An AF_PACKET socket on host interface `name` (in the caller's namespace) whose frames look like a
 * TAP's, each behind a 10-byte vnet header, but which is read and written in batches:
 * RxEngine.addPacketPort drains it with one recvmmsg per readiness event, packetSendBatch writes
 * with one sendmmsg per 64 frames. Frames the host itself sends there are not read back; with `promisc`
 * the interface is promiscuous while the fd is open (frames for the containers' own MACs). With
 * `vlan` 0 it reads untagged frames only; with 1..4094 only that VLAN's, handed over untagged (the
 * writer tags what it sends: src/switch/ports/uplink-egress.ts).
 */
export function packetOpen(name: string, promisc: boolean, vlan = 0): number {
  return addon.packetOpen(name, promisc, vlan);
}

/**
 * writeBatch for a packet socket (packetOpen): the same descriptors and return value, but one
 * sendmmsg per 64 frames (each its vnet header and frame; the socket is bound, so no address)
 * instead of a write() per frame. vnetHdrLen must be VNET_HDR_LEN. A refused frame gets
 * lengths[i] = 0: one outside the buffer, one the kernel rejects by itself (too big for the
 * interface, a vnet header it does not take) and, once the socket or device queue is full
 * (EAGAIN, ENOBUFS), every frame after it in the batch. Never blocks.
 */
export function packetSendBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number {
  return addon.packetSendBatch(fd, buf, offsets, lengths, count, vnetHdrLen);
}

/** A non-blocking TCP socket made inside the network namespace at `netnsPath` (it stays there): the caller owns the fd. */
export function tcpSocketIn(netnsPath: string): number {
  return addon.tcpSocketIn(netnsPath);
}

export function tapSetPersist(fd: number, persist: boolean): void {
  addon.tapSetPersist(fd, persist);
}

export function closeFd(fd: number): void {
  addon.closeFd(fd);
}

/** What an interface looks like from inside its namespace (read with ioctls, no ip(8) process). */
export interface LinkInfo {
  /** aa:bb:cc:dd:ee:ff, lower case. */
  mac: string;
  /** IFF_UP: administratively up. */
  up: boolean;
  mtu: number;
  /** The primary IPv4 address, or null when it has none. */
  ipv4: string | null;
}

/** The interface `name` in the namespace at `netns` (a path such as /run/netns/NAME), or null when it does not exist. */
export function tapLinkInfo(name: string, netns?: string): LinkInfo | null {
  return addon.tapLinkInfo(name, netns);
}

/**
 * Opens `path` (created with mode 0600 if missing) and takes an exclusive
 * flock on it; returns the fd, which holds the lock until it is closed or the
 * process ends in any way. A lock held elsewhere throws a message naming EWOULDBLOCK.
 */
export function lockFile(path: string): number {
  return addon.lockFile(path);
}

/** RFC 1071 checksum of buf[offset, offset+length) plus `initial` (an unfolded partial sum): the value for the header field. */
export function internetChecksum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  return addon.internetChecksum(buf, offset, length, initial);
}

/** out[i] = 5-tuple hash of the frame at offsets[i] (MACs and EtherType for non-IP frames). */
export function flowHashBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, out: Uint32Array): void {
  addon.flowHashBatch(buf, offsets, lengths, count, out);
}

/** Writes `count` frames to fd (a TAP: one write() each), each preceded by the vnetHdrLen bytes before its offset; returns how many were accepted. */
export function writeBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number {
  return addon.writeBatch(fd, buf, offsets, lengths, count, vnetHdrLen);
}

/**
 * The receive side of one thread: readiness on that thread's libuv loop, up to
 * RX_BATCH frames drained into `buffer` per event, one `onBatch` call per batch.
 * Slot i's frame starts at frameOffset(i); its length is lengths[i]. A negative
 * count passed to onBatch is -errno: that port stopped and should be removed.
 *
 * Three kinds of port feed the same slots, one port per batch:
 * - addPort (a TAP): the frame's virtio_net_hdr is in the VNET_HDR_LEN bytes before frameOffset(i).
 * - addPacketPort (a packet socket, packetOpen): one recvmmsg per event, each frame laid out as a
 *   TAP's. lengths[i] is 0 (a runt) for a message shorter than the vnet header or cut short
 *   because it did not fit its slot, as for a TAP read shorter than the header.
 * - addUdpPort (a VXLAN socket): one recvmmsg per event. The datagram starts at
 *   frameOffset(i) - RX_UDP_PREFIX, so the VXLAN header is in the 8 bytes before the inner
 *   frame (there is no vnet header: the 2 bytes before those are stale). lengths[i] is the
 *   inner frame length (datagram - 8), or RX_MALFORMED. The sender is in `sources`:
 *   sourceAddress(i) (IPv4 as a host-order u32) and sourcePort(i). The VXLAN header itself is
 *   not checked here: flags and VNI are policy for src/tunnel.
 */
export class RxEngine {
  readonly buffer: Buffer;
  readonly lengths: Int32Array;
  /** SOURCE_WORDS per slot for UDP ports: [IPv4 address (host order), port, coalesced datagram size, 0]; untouched by TAP and packet batches. */
  readonly sources: Uint32Array;
  private readonly handle: object;
  private closed = false;

  /** Where the bytes after the rx slots start: `txBytes` of them, for the caller's own frames (the tunnel's segments). */
  readonly txOffset = RX_BATCH * RX_SLOT_SIZE;

  constructor(onBatch: (portId: number, count: number) => void, txBytes = 0) {
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared pool.
    this.buffer = Buffer.allocUnsafeSlow(RX_BATCH * RX_SLOT_SIZE + txBytes);
    this.lengths = new Int32Array(RX_BATCH);
    this.sources = new Uint32Array(SOURCE_WORDS * RX_BATCH);
    this.handle = addon.rxCreate(this.buffer, this.lengths, RX_SLOT_SIZE, RX_BATCH, RX_HEADROOM, VNET_HDR_LEN, onBatch, this.sources);
  }

  frameOffset(slot: number): number {
    return slot * RX_SLOT_SIZE + RX_HEADROOM;
  }

  /** UDP ports: the sender's IPv4 address of slot's datagram, as a host-order u32. */
  sourceAddress(slot: number): number {
    return this.sources[SOURCE_WORDS * slot];
  }

  /** UDP ports: the sender's UDP port of slot's datagram. */
  sourcePort(slot: number): number {
    return this.sources[SOURCE_WORDS * slot + 1];
  }

  /**
   * UDP ports on a socket opened with `gro`: when the kernel coalesced several datagrams of one
   * flow into the slot, their size (each is that long but the last, which may be shorter); 0 for a
   * single datagram. The slot then holds them back to back from frameOffset - 8, each with its own
   * VXLAN header, and lengths[slot] is the total minus 8 (see vxlanGro).
   */
  coalescedSize(slot: number): number {
    return this.sources[SOURCE_WORDS * slot + 2];
  }

  /** A TAP fd (with IFF_VNET_HDR, as tapOpen makes it). */
  addPort(portId: number, fd: number): void {
    addon.rxAddPort(this.handle, portId, fd, PORT_KIND_TAP);
  }

  /** A packet socket fd (packetOpen): frames laid out as a TAP's, read with one recvmmsg per event. */
  addPacketPort(portId: number, fd: number): void {
    addon.rxAddPort(this.handle, portId, fd, PORT_KIND_PACKET);
  }

  /** A vhost-user device (VhostDevice): the guest's transmitted frames enter laid out as a TAP's. */
  addVhostPort(portId: number, device: VhostDevice): void {
    addon.rxAddVhostPort(this.handle, portId, device.handle);
  }

  /** A UDP socket fd (udpOpen) carrying VXLAN: see the class comment for the slot layout. */
  addUdpPort(portId: number, fd: number): void {
    addon.rxAddPort(this.handle, portId, fd, PORT_KIND_UDP);
  }

  removePort(portId: number): boolean {
    return addon.rxRemovePort(this.handle, portId) === 1;
  }

  /** Stops or restarts reading a port without forgetting it (the egress shaper). False if the port is unknown. */
  setPaused(portId: number, paused: boolean): boolean {
    return addon.rxPausePort(this.handle, portId, paused ? 1 : 0) === 1;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    addon.rxClose(this.handle);
  }
}

export interface UdpOpenOptions {
  /** IPv4 address to bind, e.g. '0.0.0.0' or the VTEP's underlay address. */
  bindAddress: string;
  /** 4789 for VXLAN; 0 picks a free port (read it back with udpLocalPort). */
  port: number;
  /** Path of a network namespace file; the socket is created in it. Absent means the caller's namespace. */
  netns?: string;
  /** UDP_GRO: let the kernel hand over runs of datagrams of one flow as one message (see RxEngine.coalescedSize). */
  gro?: boolean;
}

/**
 * An AF_INET UDP socket for the VXLAN underlay: non-blocking, close-on-exec,
 * 4 MB receive and send buffers where the kernel allows, bound. No SO_REUSEADDR:
 * a port someone else holds (a kernel vxlan device, another daemon) is an EADDRINUSE.
 * Returns its fd; close it with closeFd.
 */
export function udpOpen(opts: UdpOpenOptions): number {
  return addon.udpOpen(opts.bindAddress, opts.port, opts.netns, opts.gro ?? false);
}

/** The port a UDP socket is bound to. */
export function udpLocalPort(fd: number): number {
  return addon.udpLocalPort(fd);
}

/**
 * Sends `count` datagrams with one sendmmsg per 64: datagram i is
 * buf[offsets[i], offsets[i] + lengths[i]) (for VXLAN: the 8-byte header the
 * caller wrote in the headroom, then the inner frame), sent to dstAddrs[i]
 * (IPv4, host-order u32) port dstPorts[i]. Returns how many the kernel took.
 *
 * Like writeBatch, a refused datagram gets lengths[i] = 0: one outside the
 * buffer or with a port above 65535, one the kernel rejects by itself (no
 * route, too big, firewall), and, once the socket or device queue is full
 * (EAGAIN, ENOBUFS), every datagram after it in the batch. Never blocks.
 *
 * UDP GSO: with `segmentSizes`, a descriptor whose entry is nonzero and smaller than its length
 * is a run of datagrams of that size (the last may be shorter) laid out back to back; the kernel
 * cuts it up (UDP_SEGMENT), so the run crosses the stack, and any veth or bridge on the way, as
 * one packet. The return value and refusals then count runs, not datagrams.
 */
export function udpSendBatch(
  fd: number,
  buf: Uint8Array,
  offsets: Uint32Array,
  lengths: Uint32Array,
  count: number,
  dstAddrs: Uint32Array,
  dstPorts: Uint16Array | Uint32Array,
  segmentSizes?: Uint16Array | Uint32Array,
): number {
  return addon.udpSendBatch(fd, buf, offsets, lengths, count, dstAddrs, dstPorts, segmentSizes);
}

/** Negative results of segmentTso and completeChecksum. */
export const SegmentError = {
  /** Inconsistent headers: gso_size 0, hdr_len beyond the frame, truncated headers, IP lengths beyond the frame, an IP fragment, GSO type and IP version disagree. */
  MALFORMED: -1,
  /** Valid but not handled: GSO NONE or UDP given to segmentTso, a GSO frame given to completeChecksum, IPv6 extension headers, jumbograms. */
  UNSUPPORTED: -2,
  /** The frame needs more segments than maxSegments. */
  TOO_MANY_SEGMENTS: -3,
  /** An outOffsets entry leaves no room for its segment (and vnet header) inside `out`. */
  NO_ROOM: -4,
} as const;

/**
 * Software TSO: splits the TCPV4/TCPV6 super-frame at buf[frameOffset, +frameLength)
 * (its virtio_net_hdr in the VNET_HDR_LEN bytes before frameOffset, as in an rx slot)
 * into complete frames of at most gso_size TCP payload bytes each. Segment i is
 * written at out[outOffsets[i]] (the caller picks offsets that leave headroom, e.g.
 * for a VXLAN header) and its length stored in outLengths[i], so the two arrays
 * are ready descriptors for udpSendBatch or writeBatch.
 *
 * outVnetLen 0 writes bare frames; VNET_HDR_LEN also writes a zeroed
 * virtio_net_hdr (a plain frame, checksums complete) before each segment, for a TAP.
 *
 * Each segment gets its IPv4 total length, identification (+1 per segment) and
 * header checksum, or its IPv6 payload length; its sequence number; FIN and PSH
 * only on the last segment, CWR only on the first; a complete TCP checksum.
 * Header lengths come from parsing the frame (Ethernet, up to two VLAN tags,
 * IPv4 or IPv6 without extension headers, TCP); the kernel's hdr_len may
 * include payload, so it is only checked to lie within the frame.
 *
 * Each output slot must hold the headers plus gso_size bytes. Segments that
 * overlap each other or the input produce garbage, never a fault.
 *
 * Returns the number of segments, or a SegmentError code (nothing written).
 * Throws only for arguments that are not what the signature says. Allocates nothing.
 */
export function segmentTso(
  buf: Uint8Array,
  frameOffset: number,
  frameLength: number,
  out: Uint8Array,
  outOffsets: Uint32Array,
  outLengths: Uint32Array,
  maxSegments: number,
  outVnetLen: number,
): number {
  return addon.segmentTso(buf, frameOffset, frameLength, out, outOffsets, outLengths, maxSegments, outVnetLen);
}

/**
 * Completes, in place, the partial L4 checksum of a frame without GSO whose
 * virtio_net_hdr (the VNET_HDR_LEN bytes before frameOffset) has NEEDS_CSUM:
 * sums from csum_start to the end of the frame into the field at csum_start +
 * csum_offset (which holds the pseudo-header sum), then clears NEEDS_CSUM.
 * Returns 1 when it completed a checksum, 0 when the flag was not set, or a
 * SegmentError code (MALFORMED: the field is outside the frame; UNSUPPORTED: a GSO frame).
 */
export function completeChecksum(buf: Uint8Array, frameOffset: number, frameLength: number): number {
  return addon.completeChecksum(buf, frameOffset, frameLength);
}

/** Negative results of vxlanGro. */
export const GroError = {
  /** Arguments that make no sense: segmentSize 0, a range outside the buffer, the blob and output region overlapping, maxFrames beyond an array, arrays sharing memory with each other or with the blob or output. */
  MALFORMED: -1,
  /** The output region or maxFrames cannot hold the result (the output is then garbage). */
  NO_ROOM: -4,
} as const;

/** headerOffsets[i] of a datagram shorter than the VXLAN header (its frameLengths[i] and frameOffsets[i] are 0): count it as malformed. */
export const GRO_SHORT_DATAGRAM = 0xffff_ffff;

/**
 * Software GRO for a VXLAN socket with UDP_GRO: one received "GRO blob" at
 * buf[blobOffset, +blobLength) holds datagrams back to back, each segmentSize
 * bytes but the last (1..segmentSize); each is a VXLAN header and an inner
 * Ethernet frame. Runs of consecutive IPv4/TCP segments of one inner flow
 * (same VXLAN header, MACs, addresses, ports, ack, window, options; ACK or
 * ACK|PSH; in-order sequence numbers; MSS-sized but the last; valid IP and TCP
 * checksums, each verified) are merged back into one TSO super-frame with a
 * virtio_net_hdr (NEEDS_CSUM, TCPV4, gso_size = the first segment's payload,
 * the TCP checksum field holding the pseudo-header sum), so the TAP takes one
 * write and the container's stack one receive instead of one per segment.
 * Everything else (other protocols, a corrupt or out-of-order segment, a
 * single segment) comes out unchanged behind an all-zero vnet header.
 *
 * Output frames are packed into buf[outOffset, outLimit), each behind its
 * VNET_HDR_LEN-byte vnet header; that region must not overlap the blob. For
 * each output frame i < the returned count, the caller:
 * - checks the VXLAN header at headerOffsets[i] (flags, VNI, which peer sent
 *   the blob): it is the header of the first datagram the frame was made of,
 *   still intact in the blob, and all others in the frame had the same bytes;
 *   GRO_SHORT_DATAGRAM there means a datagram too short for a VXLAN header
 *   (frameLengths[i] is 0): count it and skip it;
 * - switches buf[frameOffsets[i], +frameLengths[i]) as a frame read from a
 *   TAP: its vnet header is in the VNET_HDR_LEN bytes before frameOffsets[i],
 *   so writeBatch(fd, buf, ..., VNET_HDR_LEN) to a TAP passes the super-frame
 *   on as is, and segmentTso/completeChecksum handle it for other egresses.
 * Every datagram of the blob is in exactly one output frame, in order.
 *
 * Enough room, always: maxFrames >= the datagram count ceil(blobLength /
 * segmentSize) (1 for an empty blob) and outLimit - outOffset >= blobLength +
 * 2 * that count. Returns the number of frames, or a GroError code. Throws
 * only for arguments of the wrong type. Allocates nothing.
 */
export function vxlanGro(
  buf: Uint8Array,
  blobOffset: number,
  blobLength: number,
  segmentSize: number,
  outOffset: number,
  outLimit: number,
  frameOffsets: Uint32Array,
  frameLengths: Uint32Array,
  headerOffsets: Uint32Array,
  maxFrames: number,
): number {
  return addon.vxlanGro(buf, blobOffset, blobLength, segmentSize, outOffset, outLimit, frameOffsets, frameLengths, headerOffsets, maxFrames);
}

/** vxlanGroSlots: info[2k] of a slot whose datagram now sits in an earlier slot's frame. */
export const GRO_SLOT_ABSORBED = 0xffff_ffff;

/**
 * Software GRO across the single datagrams of one rx batch of a VXLAN socket
 * (RxEngine UDP port), in place. Where nothing coalesced them on the way (a
 * veth underlay, a NIC without GRO: every datagram lands in a slot of its
 * own, sources[SOURCE_WORDS * k + 2] = 0), consecutive slots holding
 * consecutive IPv4/TCP segments of one inner flow from one sender, by the
 * rules vxlanGro applies inside a blob (checksums verified, or partial), are
 * made one TSO super-frame in the first slot of the run: the others'
 * payloads are appended after its own (a slot holds 64 KiB), its IP length
 * and checksum and its TCP checksum field (now the pseudo-header sum) are
 * rewritten, and its VXLAN header is left where it was, for the caller to
 * check. Slots whose sources say a blob, and malformed slots (lengths < 0),
 * are left alone and end a run.
 *
 * info (2 * count words at least) says what became of slot k: info[2k] = 0,
 * left as it came; GRO_SLOT_ABSORBED, its payload is now in an earlier
 * slot's frame (count it, switch nothing); otherwise the first slot of a
 * merged run, info[2k] = (header length << 16) | gso_size and info[2k + 1]
 * the new inner frame length, and the caller writes its vnet header
 * (NEEDS_CSUM, csum_start 34, csum_offset 16, GSO TCPV4) once it has read
 * the VXLAN header, which the vnet header overlaps. lengths and sources are
 * only read. Returns the number of merged runs, or GroError.MALFORMED for
 * arguments that make no sense (a buffer smaller than count slots, arrays
 * too short or sharing memory with the slots or info). Allocates nothing.
 */
export function vxlanGroSlots(buf: Uint8Array, slotSize: number, headroom: number, count: number, lengths: Int32Array, sources: Uint32Array, info: Uint32Array): number {
  return addon.vxlanGroSlots(buf, slotSize, headroom, count, lengths, sources, info);
}

/** What a vhost-user device reports (VhostDevice's onEvent). */
export const VhostEvent = {
  CONNECTED: 1,
  /** Both queues are live: frames move. */
  RUNNING: 2,
  /** The VMM stopped the queues (a guest driver reset, the VM paused or shutting down). */
  STOPPED: 3,
  DISCONNECTED: 4,
  /** The guest broke the ring rules; its queues are stopped until it sets them up again. */
  BROKEN: 5,
} as const;

export interface VhostStatus {
  connected: boolean;
  running: boolean;
  /** The virtio features the VMM acked, in hex. */
  features: string;
  /** Why the guest's queues were stopped, or null. */
  broken: string | null;
  regions: number;
  memoryBytes: number;
  /** Whether the guest's memory files are sealed against shrinking (a memfd); otherwise the VMM is trusted not to truncate them. */
  memorySealed: boolean;
  connections: number;
  brokenCount: number;
  /** Frames for the guest dropped: it had posted no receive buffer. */
  rxNoBuffer: number;
  /** Frames for the guest dropped: they did not fit its buffers whole. */
  rxUnfit: number;
  kicks: number;
  calls: number;
}

/**
 * A VM's virtio-net NIC over vhost-user (native/src/vhost.rs): vsw serves a
 * unix socket the VMM connects to (`server`), or connects to one the VMM
 * serves (call connect() until it returns true). Lives on the thread that
 * made it; its receive side is a port of that thread's RxEngine.
 */
export class VhostDevice {
  readonly handle: object;
  private closed = false;

  constructor(readonly path: string, readonly server: boolean, onEvent: (code: number, detail: string) => void) {
    this.handle = addon.vhostOpen(path, server, onEvent);
  }

  /** Client mode: one attempt; false while nothing serves the path. */
  connect(): boolean {
    return addon.vhostConnect(this.handle);
  }

  status(): VhostStatus {
    return addon.vhostStatus(this.handle);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    addon.vhostClose(this.handle);
  }
}

/** Copies frames into the guest's receive buffers: writeBatch's contract for a VhostDevice's handle. */
export function vhostTransmit(device: object, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
  return addon.vhostTransmit(device, buf, offsets, lengths, count);
}
