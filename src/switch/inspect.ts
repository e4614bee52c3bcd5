/**
 * Inspection of a switch, apart from forwarding: the views of its cached
 * flows, NAT translations and overlay tables for the control plane, and the
 * shape of a trace. None of it runs per frame; a trace itself is the slow
 * path run dry (Switch.trace), so it cannot drift from forwarding.
 */
import { formatMac, writeMac } from '../packet/ethernet.js';
import { formatIpv4Addr } from '../packet/ipv4.js';
import type { VtepEntry } from '../tunnel/vtep-table.js';
import type { ArpSuppressionEntry } from '../tunnel/arp-suppression.js';
import { UplinkStat } from '../tunnel/vxlan-egress.js';
import type { OverlaySegmentCounters } from '../tunnel/overlay-segment.js';
import type { VxlanEgress, VxlanEgressCounters } from '../tunnel/vxlan-egress.js';
import { ctStateName, type Conntrack } from '../vfp/conntrack.js';
import { NO_PORT, type FlowTable } from '../vfp/flow-table.js';
import { KEY_WORDS, KeyWord } from '../vfp/key.js';
import { Rewrite, type Decision, type TraceStep } from '../vfp/pipeline.js';
import type { NatCounters, NatGateway, NatPublishSpec } from '../nat/gateway.js';

export interface SwitchTrace {
  steps: TraceStep[];
  verdict: 'allow' | 'block';
  reason: number;
  egressPort: number | 'flood' | null;
  /** For a flood: the ports whose inbound layers (and queue) would take the frame. */
  floodPorts?: number[];
  rewrite: Record<string, string | number> | null;
}

export interface SwitchNat {
  networkId: number;
  externalIp: string;
  counters: NatCounters;
  published: NatPublishSpec[];
  translations: {
    protocol: string;
    /** Container address:port (ICMP: the echo identifier as the port). */
    inside: string;
    external: string;
    remote: string;
    portId: number;
    /** The connection state the mapping lives by. */
    state: string;
    idleSeconds: number;
  }[];
}

export interface SwitchOverlay {
  networkId: number;
  vni: number;
  tunnelPortId: number;
  uplinkId: number;
  mtu: number;
  peers: string[];
  segment: OverlaySegmentCounters;
  egress: VxlanEgressCounters;
  uplink: { datagramsSent: number; bytesSent: number; sendFailed: number; sends: number };
  vteps: VtepEntry[];
  arp: ArpSuppressionEntry[];
}

export interface SwitchFlow {
  ingressPort: number;
  egressPort: number | null;
  dropReason: number;
  /** The flow key words (src/vfp/key.ts). */
  key: number[];
  packets: number;
  bytes: number;
  ageSeconds: number;
  idleSeconds: number;
  rewrite: boolean;
}

/** A nat network's translations and counters; with countersOnly, no translations (metrics: nothing per mapping). */
export function natView(networkId: number, gw: NatGateway, ct: Conntrack, now: number, countersOnly: boolean): SwitchNat {
  const ext = formatIpv4Addr(gw.externalIp);
  return {
    networkId,
    externalIp: ext,
    counters: gw.counters(),
    published: [...gw.published],
    translations: (countersOnly ? [] : gw.table.mappings(now)).map((m) => ({
      protocol: m.protocol,
      inside: `${formatIpv4Addr(m.insideIp)}:${m.insidePort}`,
      external: `${ext}:${m.externalPort}`,
      remote: m.protocol === 'icmp' ? formatIpv4Addr(m.remoteIp) : `${formatIpv4Addr(m.remoteIp)}:${m.remotePort}`,
      portId: m.portId,
      state: ctStateName(ct.state(m.ctSlot)),
      idleSeconds: ct.idleSeconds(m.ctSlot, now),
    })),
  };
}

/** An overlay network's peers, tables and counters; with countersOnly the VTEP and ARP tables are left empty. */
export function overlayView(networkId: number, tunnelPortId: number, egress: VxlanEgress, now: number, countersOnly: boolean): SwitchOverlay {
  const seg = egress.segment;
  const uplink = egress.uplink;
  return {
    networkId,
    vni: seg.vni,
    tunnelPortId,
    uplinkId: uplink.id,
    mtu: egress.mtu,
    peers: Array.from(seg.peers, (v) => formatIpv4Addr(v)),
    segment: seg.counters(),
    egress: egress.counters(),
    uplink: { datagramsSent: uplink.stats[UplinkStat.DATAGRAMS], bytesSent: uplink.stats[UplinkStat.BYTES], sendFailed: uplink.stats[UplinkStat.FAILED], sends: uplink.stats[UplinkStat.SENDS] },
    vteps: countersOnly ? [] : seg.vteps.entries(now, seg.vni),
    arp: countersOnly ? [] : seg.arp.entries(now, seg.vni),
  };
}

/** The cached flows, optionally only those entering, leaving or dropped at one port. */
export function flowViews(flows: FlowTable, now: number, portId?: number): SwitchFlow[] {
  const key = new Uint32Array(KEY_WORDS);
  const out: SwitchFlow[] = [];
  for (const e of flows.liveEntries()) {
    const ingress = flows.ingressPort(e);
    const egress = flows.egress[e];
    if (portId !== undefined && ingress !== portId && egress !== portId && flows.dropPort[e] !== portId) continue;
    out.push({
      ingressPort: ingress,
      egressPort: egress === NO_PORT ? null : egress,
      dropReason: egress === NO_PORT ? flows.dropReason[e] : 0,
      key: Array.from(flows.keyOf(e, key)),
      packets: flows.packets[e],
      bytes: flows.bytes[e],
      ageSeconds: Math.round((now - flows.created[e]) / 100) / 10,
      idleSeconds: Math.round((now - flows.lastSeen[e]) / 100) / 10,
      rewrite: flows.transposition[e] >= 0,
    });
  }
  return out;
}

/** The header rewrites a decision makes, for a trace: new MACs, and addresses as "old -> new". */
export function describeRewrite(d: Decision, orig: Uint32Array): Record<string, string | number> | null {
  if (d.rwFlags === 0) return null;
  const mac = (hi: number, lo: number) => {
    const b = new Uint8Array(6);
    writeMac(b, 0, hi, lo);
    return formatMac(b);
  };
  const ip = formatIpv4Addr;
  const out: Record<string, string | number> = {};
  if (d.rwFlags & Rewrite.SRC_MAC) out.srcMac = mac(d.srcMacHi, d.srcMacLo);
  if (d.rwFlags & Rewrite.DST_MAC) out.dstMac = mac(d.dstMacHi, d.dstMacLo);
  if (d.rwFlags & Rewrite.SRC_IP) out.srcIp = `${ip(orig[KeyWord.SRC_IP])} -> ${ip(d.srcIp)}`;
  if (d.rwFlags & Rewrite.DST_IP) out.dstIp = `${ip(orig[KeyWord.DST_IP])} -> ${ip(d.dstIp)}`;
  if (d.rwFlags & Rewrite.SRC_PORT) out.srcPort = d.srcPort;
  if (d.rwFlags & Rewrite.DST_PORT) out.dstPort = d.dstPort;
  return out;
}
