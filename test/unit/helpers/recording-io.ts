/** Synthetic frame I/O for switch tests: frames are placed into slots by the test, writes are recorded. */
import { VNET_HDR_LEN } from '../../../src/packet/vnet.js';
import type { FrameIo } from '../../../src/switch/switch.js';

export const SLOT = 4096;
export const HEADROOM = 128;
export const BATCH = 64;

export interface Sent {
  fd: number;
  wire: Buffer; // vnet header + frame, as written to the device
}

export class RecordingIo implements FrameIo {
  readonly buffer = Buffer.alloc(BATCH * SLOT);
  readonly lengths = new Int32Array(BATCH);
  readonly slotSize = SLOT;
  readonly headroom = HEADROOM;
  readonly vnetHdrLen = VNET_HDR_LEN;
  readonly batchSize = BATCH;
  readonly sent: Sent[] = [];
  readonly refusingFds = new Set<number>();
  transmitCalls = 0;
  /** Calls of transmitPackets (a packet socket's batch, one sendmmsg) and the fds they wrote to. */
  packetTransmitCalls = 0;
  readonly packetFds = new Set<number>();

  place(slot: number, frame: Uint8Array, length = frame.length): void {
    const off = slot * SLOT + HEADROOM;
    this.buffer.fill(0, off - VNET_HDR_LEN, off);
    this.buffer.set(frame.subarray(0, Math.min(frame.length, SLOT - HEADROOM)), off);
    this.lengths[slot] = length;
  }

  transmit(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnet: number): number {
    this.transmitCalls++;
    return this.record(fd, buf, offsets, lengths, count, vnet);
  }

  transmitPackets(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnet: number): number {
    this.packetTransmitCalls++;
    this.packetFds.add(fd);
    return this.record(fd, buf, offsets, lengths, count, vnet);
  }

  private record(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnet: number): number {
    let written = 0;
    for (let i = 0; i < count; i++) {
      if (this.refusingFds.has(fd)) {
        lengths[i] = 0;
        continue;
      }
      this.sent.push({ fd, wire: Buffer.from(buf.subarray(offsets[i] - vnet, offsets[i] + lengths[i])) });
      written++;
    }
    return written;
  }

  take(): Sent[] {
    return this.sent.splice(0);
  }
}
