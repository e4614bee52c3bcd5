/**
 * The load balancers of a network (src/lb/balancer.ts) as a stage: ARP for a
 * VIP is answered with the VIP's MAC; a client's frame to a VIP is rewritten
 * to its backend (destination MAC, address, port; with the VIP as source on a
 * hairpin) and sent on through the rest of the slow path, so the flow table
 * caches the rewrite and later frames never come here; a backend's reply is
 * rewritten back from the VIP. A new connection's entry is bound to its
 * connection at the client's port when the frame commits.
 *
 * On an overlay, ARP from the tunnel is left to the peers: every host with
 * the balancer answers its own containers.
 */
import { ArpField, ArpOp, writeArpReply } from '../../packet/arp.js';
import { read16, read32 } from '../../packet/bytes.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { formatIpv4Addr } from '../../packet/ipv4.js';
import { KeyWord, Meta } from '../../vfp/key.js';
import { Rewrite, type Decision } from '../../vfp/pipeline.js';
import { LbResult, NetworkBalancers, type LbTags } from '../../lb/balancer.js';
import type { Conntrack } from '../../vfp/conntrack.js';
import type { FrameContext } from '../frame-context.js';
import { PortKind } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

const TCP = 6;
const UDP = 17;

export class LbStage implements NetworkStage {
  readonly name = 'lb';
  readonly dropReasons: readonly number[] = [DropReason.lbNoBackend, DropReason.lbTableFull, DropReason.noEgress];
  readonly balancers: NetworkBalancers;
  private arpAnswered = 0;

  constructor(ct: Conntrack, tags: LbTags | null = null) {
    this.balancers = new NetworkBalancers(ct, tags);
  }

  process(host: StageHost, f: FrameContext): number {
    const lb = this.balancers;
    if (lb.size === 0) return StageResult.CONTINUE;
    const meta = host.meta;
    const key = host.key;
    const ipVersion = meta[Meta.IP_VERSION];
    if (ipVersion === 0) return this.answerArp(host, f);
    if (ipVersion !== 4) return StageResult.CONTINUE;
    const proto = key[KeyWord.PROTO] >>> 24;
    if (proto !== TCP && proto !== UDP) return StageResult.CONTINUE;
    const ports = key[KeyWord.PORTS];
    const r = lb.route(proto, key[KeyWord.SRC_IP], ports >>> 16, key[KeyWord.DST_IP], ports & 0xffff, key[KeyWord.SRC_MAC_HI], key[KeyWord.SRC_MAC_LO], f.ingress!.id, f.now, !f.dryRun);
    if (r === LbResult.NONE) return StageResult.CONTINUE;
    const v = lb.verdict;
    if (r === LbResult.NO_BACKEND || r === LbResult.TABLE_FULL) {
      if (f.steps !== null) f.step('lb', r === LbResult.NO_BACKEND ? `${v.balancerName}: no backend is up (all down, draining or removed)` : `${v.balancerName}: the connection table is full`);
      host.dropAtIngress(f, r === LbResult.NO_BACKEND ? DropReason.lbNoBackend : DropReason.lbTableFull);
      return StageResult.DONE;
    }
    const d = host.decision;
    if (r === LbResult.FORWARD) {
      rewriteDestination(key, d, v.backendMacHi, v.backendMacLo, v.backendIp);
      d.dstPort = v.backendPort;
      key[KeyWord.PORTS] = ((ports & 0xffff0000) | v.backendPort) >>> 0;
      d.rwFlags |= Rewrite.DST_PORT;
      if (v.hairpin) rewriteSource(key, d, v.vipMacHi, v.vipMacLo, v.vip);
      if (f.steps !== null) {
        const why = v.tableEntry >= 0 ? `Maglev entry ${v.tableEntry}` : 'the backend this connection already has';
        f.step('lb', `${v.balancerName}: ${formatIpv4Addr(v.vip)}:${v.vipPort} balanced to ${v.backendKey} (${why})${v.hairpin ? ', source rewritten to the VIP (hairpin)' : ''}`);
      }
    } else {
      rewriteSource(key, d, v.vipMacHi, v.vipMacLo, v.vip);
      d.srcPort = v.vipPort;
      key[KeyWord.PORTS] = ((v.vipPort << 16) | (ports & 0xffff)) >>> 0;
      d.rwFlags |= Rewrite.SRC_PORT;
      if (v.hairpin) rewriteDestination(key, d, v.clientMacHi, v.clientMacLo, v.clientIp);
      if (f.steps !== null) f.step('lb', `${v.balancerName}: a reply from backend ${v.backendKey}, rewritten to come from ${formatIpv4Addr(v.vip)}:${v.vipPort}`);
      // To a client outside a nat network (a published VIP): the NAT gateway, next, translates the VIP to the published port.
      if (host.port(v.egressPortId)?.kind === PortKind.NAT_HOST) {
        f.tag = v.tag;
        return StageResult.CONTINUE;
      }
    }
    // Its cached flow counts toward the backend's bytes; for a reply through the NAT gateway too.
    f.tag = v.tag;
    const egress = host.port(v.egressPortId);
    if (egress === undefined) {
      lb.abandon();
      host.dropAtIngress(f, DropReason.noEgress);
      return StageResult.DONE;
    }
    f.holder = this;
    host.forward(f, egress);
    return StageResult.DONE;
  }

  /** ARP requests for a VIP, from the network's own ports. */
  private answerArp(host: StageHost, f: FrameContext): number {
    if (f.ingress!.kind === PortKind.VXLAN_TUNNEL) return StageResult.CONTINUE;
    const buf = host.buffer;
    const et = f.off + host.meta[Meta.ETHERTYPE_AT];
    if (buf[et] !== 0x08 || buf[et + 1] !== 0x06) return StageResult.CONTINUE;
    const arp = et + 2;
    if (read16(buf, arp + ArpField.OPER) !== ArpOp.Request) return StageResult.CONTINUE;
    const b = this.balancers.vipMac(read32(buf, arp + ArpField.TPA));
    if (b === undefined) return StageResult.CONTINUE;
    if (f.steps !== null) f.step('lb', `ARP for VIP ${formatIpv4Addr(b.spec.vip)} of ${b.spec.name}: answered with the VIP's MAC`);
    writeArpReply(buf, f.off, arp, b.spec.vipMacHi, b.spec.vipMacLo);
    if (!f.dryRun) this.arpAnswered++;
    host.reply(f);
    return StageResult.DONE;
  }

  commit(slot: number): boolean {
    return this.balancers.commit(slot);
  }

  abandon(): void {
    this.balancers.abandon();
  }

  counters(): Record<string, number> {
    const t = this.balancers.totals();
    return { lbConnections: t.connections, lbNoBackend: t.noBackend, lbTableFull: t.tableFull, lbArpAnswered: this.arpAnswered };
  }
}

/** The frame's source MAC and address become these: in the key (what the rest of the slow path sees) and in the Decision (what the flow caches). */
function rewriteSource(key: Uint32Array, d: Decision, macHi: number, macLo: number, ip: number): void {
  key[KeyWord.SRC_MAC_HI] = d.srcMacHi = macHi;
  key[KeyWord.SRC_MAC_LO] = d.srcMacLo = macLo;
  key[KeyWord.SRC_IP] = d.srcIp = ip;
  d.rwFlags |= Rewrite.SRC_MAC | Rewrite.SRC_IP;
}

function rewriteDestination(key: Uint32Array, d: Decision, macHi: number, macLo: number, ip: number): void {
  key[KeyWord.DST_MAC_HI] = d.dstMacHi = macHi;
  key[KeyWord.DST_MAC_LO] = d.dstMacLo = macLo;
  key[KeyWord.DST_IP] = d.dstIp = ip;
  d.rwFlags |= Rewrite.DST_MAC | Rewrite.DST_IP;
}
