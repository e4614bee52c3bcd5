/**
 * ARP suppression on an overlay network: a local container asking for a
 * remote address vsw knows (src/tunnel/arp-suppression.ts) is answered here,
 * in place, instead of the request being flooded to every peer VTEP. Frames
 * decapsulated from peers are left alone: their peers answer for themselves.
 */
import { ArpVerdict } from '../../tunnel/arp-suppression.js';
import type { OverlaySegment } from '../../tunnel/overlay-segment.js';
import { Meta } from '../../vfp/key.js';
import type { FrameContext } from '../frame-context.js';
import { PortKind } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

export class ArpSuppressionStage implements NetworkStage {
  readonly name = 'arp-suppression';
  /** It answers or lets go; it never drops. */
  readonly dropReasons: readonly number[] = [];

  constructor(readonly segment: OverlaySegment) {}

  process(host: StageHost, f: FrameContext): number {
    const meta = host.meta;
    if (meta[Meta.IP_VERSION] !== 0 || f.ingress!.kind === PortKind.VXLAN_TUNNEL) return StageResult.CONTINUE;
    const buf = host.buffer;
    const et = f.off + meta[Meta.ETHERTYPE_AT];
    if (buf[et] !== 0x08 || buf[et + 1] !== 0x06) return StageResult.CONTINUE;
    const verdict = this.segment.suppressArp(buf, f.off, f.len, et + 2, f.now, !f.dryRun);
    if (verdict !== ArpVerdict.REPLIED) {
      if (f.steps !== null && verdict === ArpVerdict.UNKNOWN) f.step('arp-suppression', 'target address not known from the control plane or learned from peers: the request is flooded');
      return StageResult.CONTINUE;
    }
    if (f.steps !== null) f.step('arp-suppression', `answered from the VNI ${this.segment.vni} ARP table: the reply goes back out of the asking port`);
    host.reply(f);
    return StageResult.DONE;
  }

  commit(): boolean {
    return true;
  }

  abandon(): void {}

  counters(): Record<string, number> {
    const c = this.segment.counters();
    return { arpReplied: c.arpReplied, arpUnknown: c.arpUnknown };
  }
}
