/** Synthetic frame and datagram I/O for overlay switch tests: TAP writes and UDP sends are recorded, datagrams placed as an uplink would read them. */
import * as native from '../../../src/native/index.js';
import { completeChecksum, segmentTso, vxlanGroSlots } from '../../../src/native/index.js';
import { mustParseIpv4Addr } from '../../../src/packet/ipv4.js';
import { VNET_HDR_LEN } from '../../../src/packet/vnet.js';
import { SOURCE_WORDS, type FrameIo } from '../../../src/switch/frame-io.js';
import type { TunnelIo } from '../../../src/tunnel/vxlan-egress.js';

export const SLOT = 65_536 + 256;
export const HEADROOM = 128;
export const BATCH = 8;
export const ARENA = 256 * 1024;
export const VXLAN_PORT = 4789;
const ip32 = mustParseIpv4Addr;

export interface Sent {
  fd: number;
  /** vnet header + frame, as written to the TAP. */
  wire: Buffer;
}

export interface Datagram {
  fd: number;
  /** The UDP payload (VXLAN header + inner frame), or a UDP GSO run of them. */
  bytes: Buffer;
  addr: number;
  port: number;
  segmentSize: number;
}

/** The real vxlanGro when the addon has it, else a stub that refuses (-1): the tests here never coalesce. */
export const vxlanGro: TunnelIo['vxlanGro'] =
  typeof (native as Record<string, unknown>).vxlanGro === 'function'
    ? ((native as Record<string, unknown>).vxlanGro as TunnelIo['vxlanGro'])
    : () => -1;

export class OverlayIo implements FrameIo {
  readonly buffer = Buffer.alloc(BATCH * SLOT + ARENA);
  readonly lengths = new Int32Array(BATCH);
  readonly sources = new Uint32Array(SOURCE_WORDS * BATCH);
  readonly slotSize = SLOT;
  readonly headroom = HEADROOM;
  readonly vnetHdrLen = VNET_HDR_LEN;
  readonly batchSize = BATCH;
  readonly sent: Sent[] = [];
  readonly datagrams: Datagram[] = [];
  readonly tunnel: TunnelIo;

  /** `vni`: what placeUdp puts in the VXLAN header unless told otherwise. */
  constructor(readonly vni: number) {
    const datagrams = this.datagrams;
    this.tunnel = {
      sendUdp(fd, buf, offsets, lengths, count, addrs, ports, segmentSizes) {
        for (let i = 0; i < count; i++) {
          datagrams.push({
            fd,
            bytes: Buffer.from(buf.subarray(offsets[i], offsets[i] + lengths[i])),
            addr: addrs[i],
            port: ports[i],
            segmentSize: segmentSizes?.[i] ?? 0,
          });
        }
        return count;
      },
      segmentTso,
      completeChecksum,
      vxlanGro,
      vxlanGroSlots,
      txOffset: BATCH * SLOT,
      txSize: ARENA,
    };
  }

  transmit(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnet: number): number {
    for (let i = 0; i < count; i++) this.sent.push({ fd, wire: Buffer.from(buf.subarray(offsets[i] - vnet, offsets[i] + lengths[i])) });
    return count;
  }

  transmitPackets(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnet: number): number {
    return this.transmit(fd, buf, offsets, lengths, count, vnet);
  }

  frameOffset(slot: number): number {
    return slot * SLOT + HEADROOM;
  }

  /** A frame read from a TAP: its vnet header (all zero unless given) in the 10 bytes before it. */
  placeTap(slot: number, frame: Uint8Array, vnet?: Uint8Array): void {
    const off = this.frameOffset(slot);
    this.buffer.fill(0, off - VNET_HDR_LEN, off);
    if (vnet) this.buffer.set(vnet, off - VNET_HDR_LEN);
    this.buffer.set(frame, off);
    this.lengths[slot] = frame.length;
  }

  /** A datagram read from the uplink socket: VXLAN header in the 8 bytes before the inner frame, the sender in sources. */
  placeUdp(slot: number, frame: Uint8Array, from: string, opts: { vni?: number; flags?: number; length?: number } = {}): void {
    const off = this.frameOffset(slot);
    this.buffer.fill(0xee, off - VNET_HDR_LEN, off); // the 2 stale bytes before the VXLAN header
    writeVxlanHeader(this.buffer, off - 8, opts.vni ?? this.vni, opts.flags ?? 0x08);
    this.buffer.set(frame, off);
    this.lengths[slot] = opts.length ?? frame.length;
    this.sources[SOURCE_WORDS * slot] = ip32(from);
    this.sources[SOURCE_WORDS * slot + 1] = VXLAN_PORT;
    this.sources[SOURCE_WORDS * slot + 2] = 0;
    this.sources[SOURCE_WORDS * slot + 3] = 0;
  }

  take(): { sent: Sent[]; datagrams: Datagram[] } {
    return { sent: this.sent.splice(0), datagrams: this.datagrams.splice(0) };
  }
}

export function writeVxlanHeader(buf: Uint8Array, at: number, vni: number, flags = 0x08): void {
  buf.fill(0, at, at + 8);
  buf[at] = flags;
  buf[at + 4] = (vni >>> 16) & 0xff;
  buf[at + 5] = (vni >>> 8) & 0xff;
  buf[at + 6] = vni & 0xff;
}

