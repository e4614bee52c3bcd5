/**
 * An overlay network's tunnel port: the member of the network behind which
 * all its remote endpoints sit. Frames queued here become VXLAN datagrams to
 * the peer VTEPs (src/tunnel/vxlan-egress.ts), encapsulated after the batch's
 * TAP writes and sent by the underlay's sender; frames decapsulated by the
 * underlay port enter the network through it.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { writeFragNeededInPlace } from '../../packet/icmp.js';
import type { OverlaySegment } from '../../tunnel/overlay-segment.js';
import { EgressResult, type TunnelTx, type VxlanEgress } from '../../tunnel/vxlan-egress.js';
import { COUNTER_COLUMNS, DROP_BASE, TX_BYTES, TX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type Flushable, type PortHost } from './port.js';

export class VxlanTunnelPort extends SwitchPort {
  constructor(
    id: number,
    network: SwitchNetwork,
    readonly segment: OverlaySegment,
    readonly egress: VxlanEgress,
    private readonly tx: TunnelTx,
    /** Sends what encapsulation queued on the underlay sockets, once per batch. */
    private readonly sender: Flushable,
    maxFrame: number,
  ) {
    super(id, PortKind.VXLAN_TUNNEL, network, -1, `vxlan${segment.vni}`, maxFrame, FlushPhase.ENCAPSULATE, true, true);
  }

  /** Never read by the engine: its frames come from the underlay port. */
  receive(): number {
    return 0;
  }

  enqueue(host: PortHost, off: number, len: number): void {
    const egress = this.egress;
    if (egress.enqueue(host.io.buffer, off, len, host.frame.hash) === EgressResult.TOO_BIG) {
      this.tooBig(host, off, len);
      return;
    }
    if (!this.scheduled) host.schedule(this);
  }

  /**
   * A frame too large for the tunnel, without GSO: dropped and counted; when
   * it has DF and is not being flooded (the answer is written over it), an
   * ICMP fragmentation-needed goes back to its sender, from its destination,
   * as a router at the tunnel entrance would send it.
   */
  private tooBig(host: PortHost, off: number, len: number): void {
    host.counters[this.id * COUNTER_COLUMNS + DROP_BASE + DropReason.tunnelTooBig]++;
    const f = host.frame;
    const ingress = f.ingress;
    if (f.flooding || ingress === null || ingress.kind === PortKind.VXLAN_TUNNEL) return;
    const io = host.io;
    const n = writeFragNeededInPlace(io.buffer, off, len, this.egress.mtu);
    if (n < 0) return;
    if (io.vnetHdrLen > 0) io.buffer.fill(0, off - io.vnetHdrLen, off);
    host.enqueue(ingress, off, n);
  }

  flush(host: PortHost, now: number): void {
    const egress = this.egress;
    const queued = egress.encapsulate(host.io.buffer, this.tx, now);
    const counters = host.counters;
    const row = this.id * COUNTER_COLUMNS;
    counters[row + TX_FRAMES] += queued;
    counters[row + TX_BYTES] += egress.lastBytes;
    counters[row + DROP_BASE + DropReason.tunnelEncapFailed] += egress.lastFailed;
    if (!this.sender.scheduled) host.schedule(this.sender);
  }
}
