/**
 * A container's TAP (the host end of its vNIC): the native engine reads
 * batches from its fd, and frames queued for it are written back with one
 * writeBatch per batch, vnet header and all.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { COUNTER_COLUMNS, DROP_BASE, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type PortHost } from './port.js';

export class TapPort extends SwitchPort {
  readonly txOffsets: Uint32Array;
  readonly txLengths: Uint32Array;
  txCount = 0;
  txBytes = 0;

  constructor(id: number, network: SwitchNetwork, fd: number, name: string, maxFrame: number, batchSize: number, kind: number = PortKind.TAP, member = true) {
    // The host TAP of a nat network (member false) must never be learned: containers would reach the host around the NAT.
    super(id, kind, network, fd, name, maxFrame, FlushPhase.WRITE, member, member);
    this.txOffsets = new Uint32Array(batchSize);
    this.txLengths = new Uint32Array(batchSize);
  }

  receive(host: PortHost, count: number, now: number): number {
    const io = host.io;
    const lengths = io.lengths;
    const slotSize = io.slotSize;
    const headroom = io.headroom;
    const counters = host.counters;
    const row = this.id * COUNTER_COLUMNS;
    let bytes = 0;
    for (let slot = 0; slot < count; slot++) {
      const len = lengths[slot];
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      bytes += len;
      host.switchFrame(this, slot * slotSize + headroom, len, now);
    }
    return bytes;
  }

  enqueue(host: PortHost, off: number, len: number): void {
    const n = this.txCount;
    if (n === 0) host.schedule(this);
    this.txOffsets[n] = off;
    this.txLengths[n] = len;
    this.txCount = n + 1;
    this.txBytes += len;
  }

  flush(host: PortHost): void {
    const io = host.io;
    const counters = host.counters;
    const n = this.txCount;
    const written = io.transmit(this.fd, io.buffer, this.txOffsets, this.txLengths, n, io.vnetHdrLen);
    const row = this.id * COUNTER_COLUMNS;
    counters[row + TX_FRAMES] += written;
    if (written === n) {
      counters[row + TX_BYTES] += this.txBytes;
    } else {
      // Refused frames had their length zeroed by transmit(): the sum is what went out.
      let bytes = 0;
      for (let k = 0; k < n; k++) bytes += this.txLengths[k];
      counters[row + TX_BYTES] += bytes;
      counters[row + DROP_BASE + DropReason.txFailed] += n - written;
    }
    this.txCount = 0;
    this.txBytes = 0;
  }
}
