/**
 * An overlay network's tunnel port: the member of the network behind which
 * all its remote endpoints sit. Frames queued on it become VXLAN datagrams to
 * the peer VTEPs (src/tunnel/vxlan-egress.ts): encapsulated in the
 * ENCAPSULATE phase, after the batch's TAP writes, and sent by the underlay
 * sender. Frames the underlay port decapsulates enter the network through it.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { writeFragNeededInPlace } from '../../packet/icmp.js';
import type { OverlaySegment } from '../../tunnel/overlay-segment.js';
import { EgressResult, type TunnelTx, type VxlanEgress } from '../../tunnel/vxlan-egress.js';
import { COUNTER_COLUMNS, DROP_BASE, TX_BYTES, TX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type Flushable, type PortDriver, type PortHost } from './port.js';

export class VxlanTunnelDriver implements PortDriver {
  constructor(
    readonly segment: OverlaySegment,
    readonly egress: VxlanEgress,
    /** The underlay port whose sockets carry this network. */
    readonly underlayId: number,
    private readonly tx: TunnelTx,
    /** Sends what encapsulation queued on the underlay sockets, once per batch. */
    private readonly sender: Flushable,
  ) {}

  /** Never read by the engine: its frames come from the underlay port. */
  receive(): number {
    return 0;
  }

  flush(port: SwitchPort, host: PortHost, now: number): void {
    const egress = this.egress;
    const buf = host.io.buffer;
    const n = port.txCount;
    for (let i = 0; i < n; i++) {
      const off = port.txOffsets[i];
      const len = port.txLengths[i];
      if (egress.enqueue(buf, off, len, port.txHashes[i]) === EgressResult.TOO_BIG) this.tooBig(port, host, off, len, port.txReplyTo[i]);
    }
    port.txCount = 0;
    port.txBytes = 0;
    const queued = egress.encapsulate(buf, this.tx, now);
    const counters = host.counters;
    const row = port.id * COUNTER_COLUMNS;
    counters[row + TX_FRAMES] += queued;
    counters[row + TX_BYTES] += egress.lastBytes;
    counters[row + DROP_BASE + DropReason.tunnelEncapFailed] += egress.lastFailed;
    if (!this.sender.scheduled) host.schedule(this.sender);
  }

  /**
   * A frame too large for the tunnel, without GSO: dropped and counted; when
   * it has DF and someone may be answered for it (not a flood: the answer is
   * written over the one buffer every copy shares; not from a peer: the
   * tunnel does not answer into itself), an ICMP fragmentation-needed goes
   * back to its sender, from its destination, as a router at the tunnel
   * entrance would send it. The TAP writes of the batch are done by now, so
   * the frame is this port's alone to overwrite.
   */
  private tooBig(port: SwitchPort, host: PortHost, off: number, len: number, replyTo: number): void {
    host.dropped(port.id, DropReason.tunnelTooBig, off, len);
    const sender = replyTo >= 0 ? host.port(replyTo) : undefined;
    if (sender === undefined || sender.kind === PortKind.VXLAN_TUNNEL) return;
    const io = host.io;
    const n = writeFragNeededInPlace(io.buffer, off, len, this.egress.mtu);
    if (n < 0) return;
    if (io.vnetHdrLen > 0) io.buffer.fill(0, off - io.vnetHdrLen, off);
    host.queue(sender, off, n, 0, -1);
  }

  refuses(_port: SwitchPort, buf: Uint8Array, off: number, len: number): number {
    return this.egress.tooBig(buf, off, len) ? DropReason.tunnelTooBig : 0;
  }
}

export function vxlanTunnelPort(id: number, network: SwitchNetwork, driver: VxlanTunnelDriver, maxFrame: number, queueSize: number): SwitchPort {
  return new SwitchPort(id, PortKind.VXLAN_TUNNEL, network, -1, `vxlan${driver.segment.vni}`, maxFrame, FlushPhase.ENCAPSULATE, true, true, driver, queueSize);
}
