/**
 * The NAT gateway of a nat network (src/nat/gateway.ts) as a stage: it takes
 * every frame from the network's host TAP (fromOutside) and the frames
 * containers address to the gateway (claims, then fromInside), and carries
 * out what the gateway decided: an answer back out of the ingress, a
 * translated frame on to its egress through the rest of the slow path, or a
 * drop on the ingress port.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { formatIpv4Addr } from '../../packet/ipv4.js';
import { GatewayResult, VIA_BALANCER, type NatGateway } from '../../nat/gateway.js';
import type { FrameContext } from '../frame-context.js';
import { PortKind } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

export class NatGatewayStage implements NetworkStage {
  readonly name = 'nat';
  readonly dropReasons: readonly number[] = [DropReason.natPoolExhausted, DropReason.natNoMapping, DropReason.noEgress];

  constructor(
    readonly gateway: NatGateway,
    /** The network's load balancers: a published port may lead to a VIP, which they balance. */
    private readonly balancer: NetworkStage | null = null,
  ) {}

  process(host: StageHost, f: FrameContext): number {
    const gw = this.gateway;
    const buf = host.buffer;
    const key = host.key;
    const meta = host.meta;
    const d = host.decision;
    const ingress = f.ingress!;
    let result: number;
    if (ingress.kind === PortKind.NAT_HOST) {
      result = gw.fromOutside(buf, f.off, f.len, key, meta, d, f.now);
    } else if (gw.claims(buf, f.off, key, meta)) {
      result = gw.fromInside(buf, f.off, f.len, key, meta, ingress.id, f.ctOut, d, f.now);
    } else {
      return StageResult.CONTINUE;
    }
    if (result === GatewayResult.REPLIED) {
      if (f.steps !== null) f.step('nat', 'answered by the gateway (ARP or echo for its own address): the reply goes back out of the ingress port');
      host.reply(f);
      return StageResult.DONE;
    }
    if (result === GatewayResult.FORWARD && gw.egressPort === VIA_BALANCER) {
      if (f.steps !== null) f.step('nat', 'translated to a published VIP: the load balancer takes it on');
      if (this.balancer !== null && this.balancer.process(host, f) === StageResult.DONE) return StageResult.DONE;
      host.dropAtIngress(f, DropReason.natNoMapping);
      return StageResult.DONE;
    }
    const egress = result === GatewayResult.DROP ? undefined : host.port(gw.egressPort);
    if (egress === undefined) {
      gw.abandon();
      if (f.steps !== null) f.step('nat', result === GatewayResult.DROP ? 'the gateway has no translation for it' : 'the translation leads to no port');
      host.dropAtIngress(f, result === GatewayResult.DROP ? gw.dropReason : DropReason.noEgress);
      return StageResult.DONE;
    }
    // An error translated in place was rewritten already, and is one of a kind: nothing to cache.
    if (result === GatewayResult.FORWARD_ONCE) d.rwFlags = 0;
    if (result !== GatewayResult.FORWARD) f.cacheable = false;
    if (f.steps !== null) {
      const toHost = ingress.kind !== PortKind.NAT_HOST && egress.kind === PortKind.NAT_HOST;
      f.step('nat', toHost ? `translated to ${formatIpv4Addr(gw.externalIp)} (a published port or one from the pool) and sent to the host` : `translated to the container behind ${formatIpv4Addr(gw.externalIp)}`);
    }
    f.holder = this;
    host.forward(f, egress);
    return StageResult.DONE;
  }

  commit(slot: number): boolean {
    return this.gateway.commit(slot);
  }

  abandon(): void {
    this.gateway.abandon();
  }

  counters(): Record<string, number> {
    return { ...this.gateway.counters() };
  }
}
