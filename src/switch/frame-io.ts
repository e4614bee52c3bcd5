import type { TunnelIo } from '../tunnel/vxlan-egress.js';

/** Where frames come from and go to: the native engine in production, synthetic buffers in unit tests. */
export interface FrameIo {
  readonly buffer: Uint8Array;
  readonly lengths: Int32Array;
  readonly slotSize: number;
  readonly headroom: number;
  readonly vnetHdrLen: number;
  readonly batchSize: number;
  /** Writes count frames to a TAP; sets lengths[i] to 0 for each frame the device refused; returns how many were accepted. */
  transmit(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  /** The same for an AF_PACKET socket (an uplink, a fabric port): one sendmmsg per batch in production (packetSendBatch). */
  transmitPackets(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  /** vhost-user ports: copies frames into a guest's receive queue (vhostTransmit), with transmit's contract. */
  transmitVhost?(device: object, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  /** Overlay networks: the batched UDP, segmentation and the segment arena (src/tunnel/vxlan-egress.ts). */
  readonly tunnel?: TunnelIo;
  /** Overlay networks: SOURCE_WORDS per slot, the sender's IPv4 address and port of a datagram an uplink received, and the size of the datagrams the kernel coalesced into it (0: one). */
  readonly sources?: Uint32Array;
}

/** Words per slot of FrameIo.sources (RxEngine's layout): address, port, coalesced datagram size, spare. */
export const SOURCE_WORDS = 4;
