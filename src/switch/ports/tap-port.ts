/**
 * A container's TAP (the host end of its vNIC): the native engine reads
 * batches from its fd, and the frames queued for it are written back with
 * one writeBatch per batch, vnet header and all.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { COUNTER_COLUMNS, DROP_BASE, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type PortDriver, type PortHost } from './port.js';

export class TapDriver implements PortDriver {
  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    const io = host.io;
    const lengths = io.lengths;
    const slotSize = io.slotSize;
    const headroom = io.headroom;
    const counters = host.counters;
    const row = port.id * COUNTER_COLUMNS;
    let bytes = 0;
    for (let slot = 0; slot < count; slot++) {
      const len = lengths[slot];
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      bytes += len;
      host.switchFrame(port, slot * slotSize + headroom, len, now);
    }
    return bytes;
  }

  flush(port: SwitchPort, host: PortHost): void {
    const n = port.txCount;
    if (n === 0) return;
    transmitCounted(host, port, host.io.buffer, port.txOffsets, port.txLengths, n, port.txBytes);
    port.txCount = 0;
    port.txBytes = 0;
  }

  refuses(): number {
    return 0;
  }
}

/**
 * Writes `n` frames of `buf` (at offsets, lengths; `bytes` in all) to the
 * port's fd in one native call and counts them on the port: sent, or refused
 * by the device (txFailed). `packetSocket`: the fd is an AF_PACKET socket,
 * which takes the whole batch in one sendmmsg where a TAP takes a write() per frame.
 */
export function transmitCounted(host: PortHost, port: SwitchPort, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, n: number, bytes: number, packetSocket = false): void {
  const io = host.io;
  const written = packetSocket ? io.transmitPackets(port.fd, buf, offsets, lengths, n, io.vnetHdrLen) : io.transmit(port.fd, buf, offsets, lengths, n, io.vnetHdrLen);
  countTransmitted(host, port, lengths, n, written, bytes);
}

/** Counts on the port what a transmit of `n` frames (`bytes` in all) did: `written` went out, the rest (their lengths zeroed) failed. */
export function countTransmitted(host: PortHost, port: SwitchPort, lengths: Uint32Array, n: number, written: number, bytes: number): void {
  const counters = host.counters;
  const row = port.id * COUNTER_COLUMNS;
  counters[row + TX_FRAMES] += written;
  if (written === n) {
    counters[row + TX_BYTES] += bytes;
    return;
  }
  // Refused frames had their length zeroed by transmit(): the sum is what went out.
  let sent = 0;
  for (let k = 0; k < n; k++) sent += lengths[k];
  counters[row + TX_BYTES] += sent;
  counters[row + DROP_BASE + DropReason.txFailed] += n - written;
}

/** One driver for every TAP: it keeps no state of its own. */
export const TAP_DRIVER: PortDriver = new TapDriver();

export function tapPort(id: number, network: SwitchNetwork, fd: number, name: string, maxFrame: number, queueSize: number): SwitchPort {
  return new SwitchPort(id, PortKind.TAP, network, fd, name, maxFrame, FlushPhase.WRITE, true, true, TAP_DRIVER, queueSize);
}
