/**
 * The switch of one data-plane thread: networks (broadcast domains), ports, a
 * MAC table, the VFP policy of every port, and the batch forwarding loop.
 *
 * receive() runs once per batch that the native engine drained from a port.
 * Per frame:
 *   validate the headers in place (src/packet/validate.ts)
 *   extract the flow key (src/vfp/key.ts)
 *   unicast IP: look the key up in the unified flow table; a valid hit applies
 *     the cached decision (transposition, meter, egress or drop) and is done
 *   otherwise the slow path: spoof guard and the ingress port's layers
 *     (outbound), the forwarding decision on the rewritten key, the egress
 *     port's layers (inbound), connection tracking at both ends, and, for a
 *     unicast IP frame with a known egress, one flow-table entry
 *   queue an (offset, length) descriptor on each egress port
 * After the batch each egress port gets one native writeBatch, and a port with
 * an egress cap is paused until its token bucket is out of debt.
 *
 * Frames never move: they are written out of the rx buffer they landed in,
 * vnet header and all, so TSO super-frames and partial checksums pass between
 * TAPs untouched (rewrites patch them in place, checksums incrementally).
 *
 * Broadcast, multicast and unknown-unicast frames are never cached: a flood
 * reaches every port of the network, each with its own inbound policy, and
 * the frame is one buffer, so rewrites on a flood apply at the ingress only.
 *
 * Nothing here allocates per frame. Ports and networks are objects, but they
 * are created by the control plane, not per packet.
 */
import { DropReason, FRAME_OK } from '../packet/drop-reasons.js';
import { formatMac, writeMac } from '../packet/ethernet.js';
import { formatIpv4Addr } from '../packet/ipv4.js';
import { classifyFrame } from '../packet/validate.js';
import { DIR_IN, DIR_OUT } from '../vfp/compile.js';
import { CT_RESTART, ctStateName } from '../vfp/conntrack.js';
import { NO_PORT } from '../vfp/flow-table.js';
import { extractKey, KEY_WORDS, KeyWord, Meta, META_WORDS } from '../vfp/key.js';
import { Decision, Rewrite, spoofCheck, Verdict, type TraceStep } from '../vfp/pipeline.js';
import type { PortPolicy } from '../vfp/policy.js';
import { PendingConnections, Vfp, type VfpOptions } from '../vfp/vfp.js';
import { COUNTER_COLUMNS, DROP_BASE, resetPortCounters, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from './counters.js';
import { MacTable } from './mac-table.js';
import { GatewayResult, NatGateway, type NatCounters, type NatGatewaySpec, type NatPublishSpec } from '../nat/gateway.js';
import { writeFragNeededInPlace } from '../packet/icmp.js';
import { ArpVerdict } from '../tunnel/arp-suppression.js';
import { OverlaySegments, type OverlaySegment, type RemoteEndpoint, type OverlaySegmentCounters } from '../tunnel/overlay-segment.js';
import { DECAP_DROP_REASON, DecapVerdict, clearVnetHeader } from '../tunnel/vxlan-encap.js';
import { EgressResult, TunnelTx, UplinkStat, VxlanEgress, VxlanUplink, type TunnelIo, type VxlanEgressCounters } from '../tunnel/vxlan-egress.js';
import type { VtepEntry } from '../tunnel/vtep-table.js';
import type { ArpSuppressionEntry } from '../tunnel/arp-suppression.js';

/** Where frames come from and go to: the native engine in production, synthetic buffers in unit tests. */
export interface FrameIo {
  readonly buffer: Uint8Array;
  readonly lengths: Int32Array;
  readonly slotSize: number;
  readonly headroom: number;
  readonly vnetHdrLen: number;
  readonly batchSize: number;
  /** Writes count frames; sets lengths[i] to 0 for each frame the device refused; returns how many were accepted. */
  transmit(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  /** Overlay networks: the batched UDP, segmentation and the segment arena (src/tunnel/vxlan-egress.ts). */
  readonly tunnel?: TunnelIo;
  /** Overlay networks: SOURCE_WORDS per slot, the sender's IPv4 address and port of a datagram an uplink received, and the size of the datagrams the kernel coalesced into it (0: one). */
  readonly sources?: Uint32Array;
}

/** An underlay address and its UDP sockets (the first one receives), shared by the overlay networks that name it. */
export interface UplinkConfig {
  /** A port id of its own: the receive engine knows the socket by it, and its counters row counts datagrams. */
  uplinkId: number;
  /** The VTEP address, host-order u32. */
  vtep: number;
  fds: number[];
  /** The peers' VXLAN port. */
  dstPort: number;
}

/** What makes a network an overlay network. */
export interface OverlayNetworkSpec {
  vni: number;
  uplinkId: number;
  /** The port id of the network's tunnel port, the one through which frames go to and come from peers. */
  tunnelPortId: number;
  /** Peer VTEPs, dotted quads. */
  peers: string[];
  /** IP MTU inside the tunnel. */
  mtu: number;
  /** Learn remote IP -> MAC from ARP replies and announcements decapsulated from peers. */
  learnArp: boolean;
}

export interface SwitchEvents {
  portStopped(portId: number, errno: number): void;
  /** The port is over its egress cap: stop reading it for `ms` milliseconds. */
  pausePort?(portId: number, ms: number): void;
}

export interface PortConfig {
  portId: number;
  networkId: number;
  fd: number;
  name: string;
  /** IP MTU of the device; frames that are not GSO super-frames may be this plus Ethernet and one VLAN tag. */
  mtu?: number;
  /** The port's VFP policy; absent means no layers and no spoof guard (a plain switch port). */
  policy?: PortPolicy;
  /** The host TAP of a nat network: everything it receives goes to the network's NAT gateway, and it is never flooded to. */
  external?: boolean;
  /** A container's address and MAC on a nat network: the gateway delivers translated frames for `ip` here. */
  ip?: string;
  mac?: string;
}

const ETH_AND_VLAN_OVERHEAD = 18;
/** Words per slot of FrameIo.sources (RxEngine's layout): address, port, coalesced datagram size, spare. */
const SOURCE_WORDS = 4;
/** Frames vxlanGro may make of one coalesced slot: every datagram alone at worst (64 KiB of 1-byte payloads is not a real case; 1024 is plenty). */
const GRO_MAX_FRAMES = 1024;
/** vxlanGro's header offset for a datagram shorter than a VXLAN header. */
const GRO_SHORT = 0xffffffff;

/**
 * The frame being switched: where it is in the batch buffer, the port it came
 * in on, its flow (hash and flow-table entry) and what the slow path has
 * decided so far. One per switch, reused for every frame: one hidden class,
 * nothing allocated, and the slow path's steps read it instead of passing ten
 * arguments each.
 */
class FrameContext {
  ingress: SwitchPort | null = null;
  off = 0;
  len = 0;
  /** Where its vnet header starts, or -1 without one. */
  vnetOff = -1;
  /** Its flow hash, 0 when it has none (not unicast IP): the tunnel picks the outer source port by it. */
  hash = 0;
  /** Its flow-table entry when one was found (stale, or not usable by the fast path), else -1. */
  entry = -1;
  /** Its connection at the ingress (direction out), found by the ingress side, or -1. */
  ctOut = -1;
  /** Whether the decision may be cached: unicast IP, and nothing one of a kind happened to it. */
  cacheable = false;
  /** While it is flooded: an answer written over it in place would spoil the copies. */
  flooding = false;
  now = 0;
}

/** No layers, no spoof guard, no cap: a port of a plain learning switch. */
export const OPEN_POLICY: PortPolicy = {
  layers: [],
  spoofGuard: { enabled: false, mac: '00:00:00:00:00:00', ips: [] },
  qos: null,
};

class SwitchNetwork {
  /** The ports frames are switched and flooded between (a nat network's host TAP is not one; an overlay's tunnel port is). */
  readonly ports: SwitchPort[] = [];
  /** Overlay networks: the tunnel port. */
  tunnelPort: SwitchPort | null = null;
  constructor(
    readonly id: number,
    readonly name: string,
    readonly gateway: NatGateway | null,
    readonly segment: OverlaySegment | null,
  ) {}
}

class SwitchPort {
  readonly txOffsets: Uint32Array;
  readonly txLengths: Uint32Array;
  txCount = 0;
  txBytes = 0;
  /** The last frame queued here, so a flood never queues one frame twice on a port. */
  lastQueuedOffset = -1;
  constructor(
    readonly id: number,
    readonly network: SwitchNetwork,
    readonly fd: number,
    readonly name: string,
    readonly maxFrame: number,
    batchSize: number,
    /** The host TAP of a nat network. */
    readonly external: boolean,
    /** The tunnel port of an overlay network: frames queued here become VXLAN datagrams. */
    readonly egress: VxlanEgress | null = null,
  ) {
    this.txOffsets = new Uint32Array(batchSize);
    this.txLengths = new Uint32Array(batchSize);
  }
}

export interface SwitchOptions {
  vfp?: Partial<VfpOptions>;
}

export class Switch {
  private readonly networks = new Map<number, SwitchNetwork>();
  private readonly ports: (SwitchPort | undefined)[] = [];
  private readonly pending: SwitchPort[] = [];
  private pendingCount = 0;
  private readonly pendingTunnels: SwitchPort[] = [];
  private pendingTunnelCount = 0;
  private batchNow = 0;
  private batchCount = 0;
  readonly vfp: Vfp;

  // Per-frame scratch, reused: nothing on the frame path allocates.
  private readonly key = new Uint32Array(KEY_WORDS);
  private readonly origKey = new Uint32Array(KEY_WORDS);
  private readonly sideKey = new Uint32Array(KEY_WORDS);
  private readonly meta = new Int32Array(META_WORDS);
  private readonly decision = new Decision();
  private readonly conns: PendingConnections;
  private readonly frame = new FrameContext();

  /** The overlay state of the host: segments by VNI, the VTEP and ARP suppression tables. */
  readonly segments = new OverlaySegments();
  private readonly uplinks: (VxlanUplink | undefined)[] = [];
  private readonly overlayByVni = new Map<number, SwitchNetwork>();
  private readonly tunnelTx: TunnelTx | null;
  // vxlanGro's output descriptors, reused.
  private readonly groOffsets = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groLengths = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groHeaders = new Uint32Array(GRO_MAX_FRAMES);

  constructor(
    private readonly io: FrameIo,
    private readonly counters: Float64Array,
    readonly macTable: MacTable,
    private readonly events: SwitchEvents,
    private readonly clock: () => number = () => performance.now(),
    opts: SwitchOptions = {},
  ) {
    const maxPorts = counters.length / COUNTER_COLUMNS;
    this.vfp = new Vfp({ maxPorts, clock, ...opts.vfp });
    this.conns = new PendingConnections(maxPorts + 1);
    this.tunnelTx = io.tunnel ? new TunnelTx(io.tunnel, io.buffer) : null;
  }

  get batches(): number {
    return this.batchCount;
  }

  get portCount(): number {
    let n = 0;
    for (const net of this.networks.values()) n += net.ports.length;
    return n;
  }

  get maxPorts(): number {
    return this.counters.length / COUNTER_COLUMNS;
  }

  addNetwork(networkId: number, name: string, nat?: NatGatewaySpec, overlay?: OverlayNetworkSpec): void {
    if (!Number.isInteger(networkId) || networkId < 0 || networkId > 0xffff) throw new RangeError(`network id ${networkId} must be an integer from 0 to 65535`);
    if (this.networks.has(networkId)) throw new Error(`network id ${networkId} exists already`);
    if (overlay === undefined) {
      const gateway = nat ? new NatGateway(nat, this.vfp.conntrack) : null;
      this.networks.set(networkId, new SwitchNetwork(networkId, name, gateway, null));
      return;
    }
    const uplink = this.uplinks[overlay.uplinkId];
    if (!uplink || !this.tunnelTx) throw new Error(`uplink ${overlay.uplinkId} does not exist`);
    const id = overlay.tunnelPortId;
    if (!Number.isInteger(id) || id < 0 || id >= this.maxPorts || this.ports[id] || this.uplinks[id]) throw new RangeError(`tunnel port id ${id} is taken or out of range`);
    const segment = this.segments.add(overlay.vni, { peers: overlay.peers, learnArp: overlay.learnArp });
    const net = new SwitchNetwork(networkId, name, null, segment);
    const egress = new VxlanEgress(segment, uplink, overlay.mtu, this.io.batchSize);
    const tunnel = new SwitchPort(id, net, -1, `vxlan${overlay.vni}`, overlay.mtu + ETH_AND_VLAN_OVERHEAD, this.io.batchSize, false, egress);
    this.vfp.setPolicy(id, OPEN_POLICY);
    resetPortCounters(this.counters, id);
    this.ports[id] = tunnel;
    net.ports.push(tunnel);
    net.tunnelPort = tunnel;
    this.networks.set(networkId, net);
    this.overlayByVni.set(overlay.vni, net);
  }

  removeNetwork(networkId: number): void {
    const net = this.networks.get(networkId);
    if (!net) return;
    const local = net.ports.length - (net.tunnelPort ? 1 : 0);
    if (local > 0) throw new Error(`network ${net.name} still has ${local} ports`);
    if (net.tunnelPort) {
      const id = net.tunnelPort.id;
      this.ports[id] = undefined;
      this.macTable.flushPort(id);
      this.vfp.removePort(id);
      this.segments.remove(net.segment!.vni);
      this.overlayByVni.delete(net.segment!.vni);
    }
    this.macTable.flushNetwork(networkId);
    this.networks.delete(networkId);
  }

  /** An underlay socket set (src/tunnel/vxlan-egress.ts VxlanUplink); the caller polls its first fd as a UDP port with id uplinkId. */
  addUplink(cfg: UplinkConfig): void {
    const id = cfg.uplinkId;
    if (!this.tunnelTx) throw new Error('this switch has no tunnel I/O');
    if (!Number.isInteger(id) || id < 0 || id >= this.maxPorts || this.ports[id] || this.uplinks[id]) throw new RangeError(`uplink id ${id} is taken or out of range`);
    const uplink = new VxlanUplink(id, cfg.vtep >>> 0, cfg.fds, cfg.dstPort);
    this.uplinks[id] = uplink;
    this.tunnelTx.uplinks.push(uplink);
    resetPortCounters(this.counters, id);
  }

  removeUplink(uplinkId: number): void {
    const uplink = this.uplinks[uplinkId];
    if (!uplink) return;
    for (const net of this.overlayByVni.values()) {
      if (net.tunnelPort!.egress!.uplink === uplink) throw new Error(`uplink ${uplinkId} still carries network ${net.name}`);
    }
    this.uplinks[uplinkId] = undefined;
    const list = this.tunnelTx!.uplinks;
    list.splice(list.indexOf(uplink), 1);
  }

  private overlayNetwork(networkId: number): SwitchNetwork & { segment: OverlaySegment } {
    const net = this.networks.get(networkId);
    if (!net?.segment) throw new Error(`network id ${networkId} is not an overlay network`);
    return net as SwitchNetwork & { segment: OverlaySegment };
  }

  /** Replaces an overlay network's peers; returns who came and went. Entries behind a departed peer go with it. */
  setPeers(networkId: number, peers: string[]): { added: string[]; removed: string[] } {
    return this.overlayNetwork(networkId).segment.setPeers(peers);
  }

  /** A remote endpoint's static MAC (and IP) -> VTEP entries; false when a table is at its static bound. */
  addRemote(networkId: number, remote: RemoteEndpoint): boolean {
    return this.overlayNetwork(networkId).segment.addEndpoint(remote);
  }

  removeRemote(networkId: number, remote: { mac: string; ip?: string }): boolean {
    return this.overlayNetwork(networkId).segment.removeEndpoint(remote);
  }

  /** Ages out learned VTEP and ARP entries. */
  sweepOverlay(now: number): number {
    return this.segments.sweep(now);
  }

  /** Every overlay network's peers, tables and counters, optionally of one network (control path). */
  /** With countersOnly the VTEP and ARP tables are left empty (metrics: nothing per learned entry on this thread). */
  overlayState(now: number, networkId?: number, countersOnly = false): SwitchOverlay[] {
    const out: SwitchOverlay[] = [];
    for (const net of this.overlayByVni.values()) {
      if (networkId !== undefined && net.id !== networkId) continue;
      const seg = net.segment!;
      const egress = net.tunnelPort!.egress!;
      const uplink = egress.uplink;
      out.push({
        networkId: net.id,
        vni: seg.vni,
        tunnelPortId: net.tunnelPort!.id,
        uplinkId: uplink.id,
        mtu: egress.mtu,
        peers: Array.from(seg.peers, (v) => formatIpv4Addr(v)),
        segment: seg.counters(),
        egress: egress.counters(),
        uplink: { datagramsSent: uplink.stats[UplinkStat.DATAGRAMS], bytesSent: uplink.stats[UplinkStat.BYTES], sendFailed: uplink.stats[UplinkStat.FAILED], sends: uplink.stats[UplinkStat.SENDS] },
        vteps: countersOnly ? [] : seg.vteps.entries(now, seg.vni),
        arp: countersOnly ? [] : seg.arp.entries(now, seg.vni),
      });
    }
    return out;
  }

  /** Datagrams by decapsulation verdict, host-wide. */
  decapCounters(): Record<string, number> {
    return this.segments.counters().decap;
  }

  addPort(cfg: PortConfig): void {
    const net = this.networks.get(cfg.networkId);
    if (!net) throw new Error(`network id ${cfg.networkId} does not exist`);
    if (!Number.isInteger(cfg.portId) || cfg.portId < 0 || cfg.portId >= this.maxPorts) throw new RangeError(`port id ${cfg.portId} must be an integer below ${this.maxPorts}`);
    if (this.ports[cfg.portId] || this.uplinks[cfg.portId]) throw new Error(`port id ${cfg.portId} exists already`);
    const gw = net.gateway;
    const external = cfg.external === true;
    if (external && (gw === null || gw.externalPortId >= 0)) throw new Error(`network ${net.name} has no NAT gateway or has its host port already`);
    this.vfp.setPolicy(cfg.portId, cfg.policy ?? OPEN_POLICY);
    const maxFrame = (cfg.mtu ?? 1500) + ETH_AND_VLAN_OVERHEAD;
    const port = new SwitchPort(cfg.portId, net, cfg.fd, cfg.name, maxFrame, this.io.batchSize, external);
    resetPortCounters(this.counters, cfg.portId);
    this.ports[cfg.portId] = port;
    if (external) {
      gw!.externalPortId = cfg.portId;
      return;
    }
    net.ports.push(port);
    if (gw !== null && cfg.ip !== undefined && cfg.mac !== undefined) gw.setNeighbor({ ip: cfg.ip, mac: cfg.mac, portId: cfg.portId });
  }

  removePort(portId: number): void {
    const port = this.ports[portId];
    if (!port) return;
    const list = port.network.ports;
    if (!port.external) list.splice(list.indexOf(port), 1);
    const gw = port.network.gateway;
    if (gw !== null) {
      if (port.external) gw.externalPortId = -1;
      else gw.removeNeighbor(portId);
    }
    this.ports[portId] = undefined;
    this.macTable.flushPort(portId);
    this.vfp.removePort(portId);
  }

  hasPort(portId: number): boolean {
    return this.ports[portId] !== undefined;
  }

  /**
   * Switches `frame` as if the port had sent it, without counting it as
   * received: the control plane's gratuitous ARP for an endpoint that came
   * back. Uses the first rx slot, which no batch holds between callbacks.
   */
  inject(portId: number, frame: Uint8Array): boolean {
    const ingress = this.ports[portId];
    const io = this.io;
    if (ingress === undefined || ingress.external || frame.length > io.slotSize - io.headroom) return false;
    const off = io.headroom;
    io.buffer.fill(0, off - io.vnetHdrLen, off);
    io.buffer.set(frame, off);
    const now = this.clock();
    this.batchNow = now;
    this.switchFrame(ingress, off, frame.length, now);
    this.flush();
    return true;
  }

  /** How many ports a broadcast from this port reaches (its network's, itself excluded). */
  floodSize(portId: number): number {
    const port = this.ports[portId];
    return port === undefined ? 0 : Math.max(1, port.network.ports.length - 1);
  }

  /** The fd a port (or uplink) reads, or -1: names the port unambiguously in events, as ids are reused. */
  portFd(portId: number): number {
    return this.ports[portId]?.fd ?? this.uplinks[portId]?.fds[0] ?? -1;
  }

  /** Replaces the ports a nat network publishes on its external address; cached flows of the network are re-evaluated. */
  setPublished(networkId: number, list: NatPublishSpec[]): void {
    const net = this.networks.get(networkId);
    if (!net?.gateway) throw new Error(`network id ${networkId} is not a nat network`);
    net.gateway.setPublished(list);
    const gen = this.vfp.generation;
    for (const p of net.ports) gen[p.id] = (gen[p.id] + 1) >>> 0;
    if (net.gateway.externalPortId >= 0) gen[net.gateway.externalPortId] = (gen[net.gateway.externalPortId] + 1) >>> 0;
  }

  /** The NAT gateways of the nat networks, by network id (control path: snapshots of the translations). */
  natGateways(): { networkId: number; gateway: NatGateway }[] {
    const out: { networkId: number; gateway: NatGateway }[] = [];
    for (const net of this.networks.values()) if (net.gateway) out.push({ networkId: net.id, gateway: net.gateway });
    return out;
  }

  /** Ids of the TAP ports (endpoints, host TAPs) and the uplinks being received from. */
  receivingPortIds(): number[] {
    const ids: number[] = [];
    for (const p of this.ports) if (p !== undefined && p.egress === null) ids.push(p.id);
    for (const u of this.uplinks) if (u !== undefined) ids.push(u.id);
    return ids;
  }

  /** Frees NAT mappings whose connection ended, a slice at a time. */
  sweepNat(now: number, budget: number): void {
    for (const net of this.networks.values()) net.gateway?.table.sweep(now, budget);
  }

  /** Every nat network's counters, without the translations (cheap enough for a periodic log). */
  natCounters(): { networkId: number; counters: NatCounters }[] {
    const out: { networkId: number; counters: NatCounters }[] = [];
    for (const net of this.networks.values()) if (net.gateway) out.push({ networkId: net.id, counters: net.gateway.counters() });
    return out;
  }

  /** Every nat network's translations and counters, optionally of one network (control path). */
  natState(now: number, networkId?: number, countersOnly = false): SwitchNat[] {
    const ct = this.vfp.conntrack;
    const out: SwitchNat[] = [];
    for (const net of this.networks.values()) {
      const gw = net.gateway;
      if (!gw || (networkId !== undefined && net.id !== networkId)) continue;
      const ext = formatIpv4Addr(gw.externalIp);
      out.push({
        networkId: net.id,
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
      });
    }
    return out;
  }

  /** Replaces a port's policy at once; cached flows through it are re-evaluated on their next frame. */
  setPolicy(portId: number, policy: PortPolicy): void {
    if (!this.ports[portId]) throw new Error(`port id ${portId} does not exist`);
    this.vfp.setPolicy(portId, policy);
  }

  /** One batch drained from `portId`: slots 0..count-1 of the io buffer. A negative count is -errno: the port stopped. */
  receive(portId: number, count: number): void {
    const uplink = this.uplinks[portId];
    if (uplink !== undefined) {
      this.receiveTunnel(uplink, count);
      return;
    }
    const ingress = this.ports[portId];
    if (ingress === undefined) return;
    if (count < 0) {
      this.events.portStopped(portId, -count);
      return;
    }
    this.batchCount++;
    const io = this.io;
    const lengths = io.lengths;
    const slotSize = io.slotSize;
    const counters = this.counters;
    const row = portId * COUNTER_COLUMNS;
    const now = this.clock();
    this.batchNow = now;
    let batchBytes = 0;

    for (let slot = 0; slot < count; slot++) {
      const off = slot * slotSize + io.headroom;
      const len = lengths[slot];
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      batchBytes += len;
      this.switchFrame(ingress, off, len, now);
    }
    this.flush();

    const qos = this.vfp.qos;
    if (qos.isConfigured(portId)) {
      const waitMs = qos.debit(portId, batchBytes, now);
      if (waitMs > 0 && this.events.pausePort) this.events.pausePort(portId, waitMs);
    }
  }

  /** One frame that entered at `ingress` (a TAP, or an overlay's tunnel port after decapsulation), its vnet header before it. */
  private switchFrame(ingress: SwitchPort, off: number, len: number, now: number): void {
    const buf = this.io.buffer;
    const vnet = this.io.vnetHdrLen;
    const vnetOff = vnet > 0 ? off - vnet : -1;
    const verdict = classifyFrame(buf, off, len, vnetOff, ingress.maxFrame);
    if (verdict !== FRAME_OK) {
      this.counters[ingress.id * COUNTER_COLUMNS + DROP_BASE + verdict]++;
      return;
    }
    const key = this.key;
    extractKey(buf, off, len, key, this.meta);
    // The fast path needs only the ingress and the hash (enqueue, tooBig); the rest is filled for the slow path.
    const f = this.frame;
    f.ingress = ingress;
    let e = -1;
    if (this.meta[Meta.IP_VERSION] !== 0 && (buf[off] & 1) === 0) {
      const flows = this.vfp.flows;
      const portId = ingress.id;
      const hash = flows.hash(portId, key);
      f.hash = hash;
      e = flows.lookup(portId, key, hash);
      if (e >= 0 && this.cachedValid(e, portId, now) && this.fastPath(e, ingress, off, len, vnetOff, now)) return;
      f.cacheable = true;
    } else {
      f.hash = 0;
      f.cacheable = false;
    }
    f.entry = e;
    f.off = off;
    f.len = len;
    f.vnetOff = vnetOff;
    f.now = now;
    f.ctOut = -1;
    this.slowPath();
  }

  /**
   * A batch of VXLAN datagrams from an uplink socket: each inner frame is at
   * its slot's frame offset, the VXLAN header in the 8 bytes before it. Admitted
   * (sound header, a served VNI, from a peer of it), its source learned, it
   * enters its network through the tunnel port; everything else is counted on
   * the uplink's row by reason and dropped.
   */
  private receiveTunnel(uplink: VxlanUplink, count: number): void {
    if (count < 0) {
      this.events.portStopped(uplink.id, -count);
      return;
    }
    this.batchCount++;
    const io = this.io;
    const lengths = io.lengths;
    const sources = io.sources!;
    const counters = this.counters;
    const row = uplink.id * COUNTER_COLUMNS;
    const now = this.clock();
    this.batchNow = now;
    let arena = io.tunnel!.txOffset;
    const arenaEnd = arena + io.tunnel!.txSize;
    for (let slot = 0; slot < count; slot++) {
      const off = slot * io.slotSize + io.headroom;
      const len = lengths[slot];
      const src = sources[SOURCE_WORDS * slot] | 0;
      const size = sources[SOURCE_WORDS * slot + 2];
      if (size === 0 || len + 8 <= size) {
        counters[row + RX_FRAMES]++;
        if (len > 0) counters[row + RX_BYTES] += len + 8;
        this.decap(uplink, off - 8, off, len, src, true, now);
        continue;
      }
      // The kernel coalesced a run of datagrams into the slot (UDP GRO): merged back into TCP
      // super-frames where they are consecutive segments, each written to the tunnel arena.
      const n = io.tunnel!.vxlanGro(io.buffer, off - 8, len + 8, size, arena, arenaEnd, this.groOffsets, this.groLengths, this.groHeaders, GRO_MAX_FRAMES);
      counters[row + RX_FRAMES] += Math.ceil((len + 8) / size);
      counters[row + RX_BYTES] += len + 8;
      if (n < 0) {
        counters[row + DROP_BASE + DropReason.tunnelEncapFailed]++;
        continue;
      }
      for (let i = 0; i < n; i++) {
        const header = this.groHeaders[i];
        const frame = this.groOffsets[i];
        const frameLen = this.groLengths[i];
        if (frame + frameLen > arena) arena = frame + frameLen;
        if (header === GRO_SHORT) {
          counters[row + DROP_BASE + DECAP_DROP_REASON[DecapVerdict.SHORT_HEADER]]++;
          continue;
        }
        this.decap(uplink, header, frame, frameLen, src, false, now);
      }
      arena = (arena + 64) & ~7;
    }
    this.flush();
  }

  /**
   * One inner frame from an uplink: its VXLAN header at buf[header], the frame at buf[frame]
   * (right after the header, or elsewhere after GRO). Admitted (sound header, a served VNI, from
   * a peer of it), its source learned, it enters its network through the tunnel port; anything
   * else is counted on the uplink's row by reason and dropped.
   */
  private decap(uplink: VxlanUplink, header: number, frame: number, len: number, src: number, clearVnet: boolean, now: number): void {
    const buf = this.io.buffer;
    const counters = this.counters;
    const verdict = this.segments.admit(buf, header, len + 8, src);
    if (verdict !== DecapVerdict.OK) {
      counters[uplink.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[verdict]]++;
      return;
    }
    const seg = this.segments.matched!;
    const tunnel = this.overlayByVni.get(seg.vni)!.tunnelPort!;
    if (tunnel.egress!.uplink !== uplink) {
      // Served here, but on another underlay address.
      this.segments.overrule(DecapVerdict.UNKNOWN_VNI);
      counters[uplink.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[DecapVerdict.UNKNOWN_VNI]]++;
      return;
    }
    seg.learnSource(buf, frame, src, now);
    if (seg.learnArp && buf[frame + 12] === 0x08 && buf[frame + 13] === 0x06) seg.learnFromArp(buf, frame, len, frame + 14, now);
    if (clearVnet) clearVnetHeader(buf, frame);
    const trow = tunnel.id * COUNTER_COLUMNS;
    counters[trow + RX_FRAMES]++;
    counters[trow + RX_BYTES] += len;
    this.switchFrame(tunnel, frame, len, now);
  }

  /** Is the cached decision of entry e still what the slow path would say? */
  private cachedValid(e: number, portId: number, now: number): boolean {
    const vfp = this.vfp;
    const flows = vfp.flows;
    const gen = vfp.generation;
    if (flows.genIngress[e] !== gen[portId] || flows.macEpoch[e] !== this.macTable.epoch) return false;
    const peer = flows.peerPort[e];
    if (peer >= 0 && flows.genEgress[e] !== gen[peer]) return false;
    if (flows.egress[e] === NO_PORT) return flows.connectionEpoch[e] === vfp.connectionEpoch[flows.dropPort[e]];
    return flows.connectionsValid(e, vfp.conntrack, now);
  }

  /** Applies cached entry e to the frame. False when the frame must take the slow path after all (a TCP restart). */
  private fastPath(e: number, ingress: SwitchPort, off: number, len: number, vnetOff: number, now: number): boolean {
    const vfp = this.vfp;
    const flows = vfp.flows;
    const egressId = flows.egress[e];
    flows.packets[e]++;
    flows.bytes[e] += len;
    flows.lastSeen[e] = now;
    if (egressId === NO_PORT) {
      this.counters[flows.dropPort[e] * COUNTER_COLUMNS + DROP_BASE + flows.dropReason[e]]++;
      return true;
    }
    const tcpFlags = this.meta[Meta.TCP_FLAGS];
    const a = flows.ctOut[e];
    const b = flows.ctIn[e];
    // A TCP flow cached without a connection at one end (its first frame was a RST, which starts
    // none) must not carry a new SYN past connection tracking: that SYN goes the slow way.
    if ((a < 0 || b < 0) && (tcpFlags & 0x06) === 0x02 && this.key[KeyWord.PROTO] >>> 24 === 6) return false;
    // The meter first: a frame it drops must not advance connection state.
    const meter = flows.meterBucket[e];
    if (meter >= 0 && !vfp.meters.tryConsume(meter, len, now)) {
      this.counters[ingress.id * COUNTER_COLUMNS + DROP_BASE + DropReason.meter]++;
      return true;
    }
    const ct = vfp.conntrack;
    if (a >= 0 && ct.update(a, DIR_OUT, tcpFlags, now) === CT_RESTART) return false;
    if (b >= 0 && ct.update(b, DIR_IN, tcpFlags, now) === CT_RESTART) return false;
    const key = this.key;
    // The host's MAC must never be learned into a nat network: containers would reach it around the NAT.
    if (!ingress.external) this.macTable.learn(ingress.network.id, key[KeyWord.SRC_MAC_HI], key[KeyWord.SRC_MAC_LO], ingress.id, now);
    const t = flows.transposition[e];
    if (t >= 0) vfp.transpositions.apply(t, this.io.buffer, off, vnetOff, this.meta);
    const egress = this.ports[egressId];
    if (egress !== undefined) this.enqueue(egress, off, len);
    return true;
  }

  /**
   * Everything the flow table does not answer, for the frame in `this.frame`;
   * its stale entry (or -1) is reused when the result can be cached.
   */
  private slowPath(): void {
    const f = this.frame;
    const ingress = f.ingress!;
    const { off, len, now } = f;
    const vfp = this.vfp;
    const buf = this.io.buffer;
    const key = this.key;
    const meta = this.meta;
    const d = this.decision;
    const conns = this.conns;
    const portId = ingress.id;
    const isIp = meta[Meta.IP_VERSION] !== 0;
    vfp.stats.slowPathRuns++;
    const orig = this.origKey;
    for (let w = 0; w < KEY_WORDS; w++) orig[w] = key[w];
    d.reset();
    conns.count = 0;
    const stateful = isIp ? conns : null;

    const ingressPolicy = vfp.policies[portId]!;
    const spoofed = spoofCheck(ingressPolicy, buf, off, key, meta);
    if (spoofed !== 0) {
      // Not cached: the sender picks spoofed keys at will, and each would take a flow-table entry.
      f.cacheable = false;
      this.drop(portId, -1, spoofed);
      return;
    }
    const ctOut = vfp.evaluateSide(ingressPolicy, portId, DIR_OUT, key, meta, now, d, stateful, null);
    f.ctOut = ctOut;
    if (d.verdict === Verdict.BLOCK) {
      this.drop(portId, -1, d.dropReason);
      return;
    }
    const gw = ingress.network.gateway;
    if (ingress.external) {
      this.viaGateway(gw!, gw!.fromOutside(buf, off, len, key, meta, d, now));
      return;
    }
    const networkId = ingress.network.id;
    this.macTable.learn(networkId, orig[KeyWord.SRC_MAC_HI], orig[KeyWord.SRC_MAC_LO], portId, now);
    const seg = ingress.network.segment;
    if (seg !== null && !isIp && ingress.egress === null) {
      // ARP suppression: a local container asking for a remote address vsw knows is answered here, not flooded to every peer.
      const et = off + meta[Meta.ETHERTYPE_AT];
      if (buf[et] === 0x08 && buf[et + 1] === 0x06 && seg.suppressArp(buf, off, len, et + 2, now) === ArpVerdict.REPLIED) {
        this.enqueue(ingress, off, len);
        return;
      }
    }
    if (gw !== null && gw.claims(buf, off, key, meta)) {
      this.viaGateway(gw, gw.fromInside(buf, off, len, key, meta, portId, ctOut, d, now));
      return;
    }

    const dstHi = key[KeyWord.DST_MAC_HI];
    const dstLo = key[KeyWord.DST_MAC_LO];
    const multicast = (dstHi & 0x0100) !== 0;
    const egressId = multicast ? -1 : this.macTable.lookup(networkId, dstHi, dstLo, now);
    const egress = egressId >= 0 ? this.ports[egressId] : undefined;
    if (egress === undefined) {
      this.flood();
      return;
    }
    if (egressId === portId) {
      this.counters[portId * COUNTER_COLUMNS + DROP_BASE + DropReason.sameSegment]++;
      return;
    }
    this.toEgress(egress, null);
  }

  /** What the NAT gateway decided about a frame (src/nat/gateway.ts), carried out. */
  private viaGateway(gw: NatGateway, result: number): void {
    const f = this.frame;
    const ingress = f.ingress!;
    const { off, len } = f;
    if (result === GatewayResult.REPLIED) {
      this.enqueue(ingress, off, len);
      return;
    }
    const egress = result === GatewayResult.DROP ? undefined : this.ports[gw.egressPort];
    if (egress === undefined) {
      gw.abandon();
      this.counters[ingress.id * COUNTER_COLUMNS + DROP_BASE + (result === GatewayResult.DROP ? gw.dropReason : DropReason.noEgress)]++;
      return;
    }
    // An error translated in place was rewritten already, and is one of a kind: nothing to cache.
    if (result === GatewayResult.FORWARD_ONCE) this.decision.rwFlags = 0;
    if (result !== GatewayResult.FORWARD) f.cacheable = false;
    this.toEgress(egress, gw);
  }

  /**
   * The second half of the slow path, once the egress is known: its inbound
   * layers, the meter, connections at both ends, the rewrite, and the flow
   * entry. `gw` is the NAT gateway that translated the frame, whose new
   * mapping (if it took one) is bound to the connection at the ingress.
   */
  private toEgress(egress: SwitchPort, gw: NatGateway | null): void {
    const f = this.frame;
    const ingress = f.ingress!;
    const { off, len, vnetOff, now, ctOut } = f;
    let cacheable = f.cacheable;
    const vfp = this.vfp;
    const buf = this.io.buffer;
    const d = this.decision;
    const meta = this.meta;
    const portId = ingress.id;
    const egressId = egress.id;
    const stateful = meta[Meta.IP_VERSION] !== 0 ? this.conns : null;
    const ctIn = vfp.evaluateSide(vfp.policies[egressId]!, egressId, DIR_IN, this.key, meta, now, d, stateful, null);
    if (d.verdict === Verdict.BLOCK) {
      gw?.abandon();
      this.drop(egressId, egressId, d.dropReason);
      return;
    }
    // The meter before connections are created: a policed frame leaves no state behind, and is not cached.
    const meter = d.meterBucket;
    if (meter >= 0 && !vfp.meters.tryConsume(meter, len, now)) {
      gw?.abandon();
      this.counters[portId * COUNTER_COLUMNS + DROP_BASE + DropReason.meter]++;
      return;
    }
    if (!this.commitConnections(now)) {
      gw?.abandon();
      return;
    }
    const a = ctOut >= 0 ? ctOut : this.createdSlot(portId, DIR_OUT);
    // The connection a NAT mapping lives by is the one at the container's side: here, the ingress.
    if (gw !== null && !gw.commit(a)) cacheable = false;

    const transpositions = vfp.transpositions;
    let t = -1;
    if (d.rwFlags !== 0) {
      t = cacheable ? transpositions.compile(d, this.origKey) : -1;
      if (t < 0) {
        // Not cached (not unicast IP, or the slab is full): this frame is rewritten, the next one comes back here.
        transpositions.compileAt(transpositions.scratch, d, this.origKey);
        transpositions.apply(transpositions.scratch, buf, off, vnetOff, meta);
      } else {
        transpositions.apply(t, buf, off, vnetOff, meta);
      }
    }
    if (cacheable && (d.rwFlags === 0 || t >= 0)) {
      const entry = this.entryFor(f.entry, portId, f.hash, now);
      if (entry >= 0) {
        const b = ctIn >= 0 ? ctIn : this.createdSlot(egressId, DIR_IN);
        vfp.flows.recordForward(entry, egressId, vfp.generation[egressId], a, b, vfp.conntrack, t, meter, len);
      } else {
        transpositions.release(t);
      }
    }
    this.enqueue(egress, off, len);
  }

  private createdSlot(portId: number, dir: number): number {
    const conns = this.conns;
    for (let i = 0; i < conns.count; i++) if (conns.ports[i] === portId && conns.dirs[i] === dir) return conns.slots[i];
    return -1;
  }

  private commitConnections(now: number): boolean {
    const refusedAt = this.vfp.commit(this.conns, this.meta[Meta.TCP_FLAGS], now);
    if (refusedAt < 0) return true;
    this.counters[refusedAt * COUNTER_COLUMNS + DROP_BASE + DropReason.connLimit]++;
    return false;
  }

  /** A flow-table entry for this frame's flow: the stale one, or a new one; -1 when the table is full. */
  private entryFor(e: number, portId: number, hash: number, now: number): number {
    const vfp = this.vfp;
    const flows = vfp.flows;
    if (e >= 0) {
      vfp.transpositions.release(flows.transposition[e]);
      vfp.stats.flowsRevalidated++;
    } else {
      e = flows.insert(portId, this.origKey, hash, now);
      if (e < 0) {
        vfp.stats.flowTableFull++;
        return -1;
      }
      vfp.stats.flowsCreated++;
    }
    flows.begin(e, vfp.generation[portId], this.macTable.epoch);
    return e;
  }

  /** Counts the frame's drop on `dropPort` and, when it may be cached, caches it with the peer whose policy took part (or -1). */
  private drop(dropPort: number, peer: number, reason: number): void {
    this.counters[dropPort * COUNTER_COLUMNS + DROP_BASE + reason]++;
    const f = this.frame;
    if (!f.cacheable) return;
    const entry = this.entryFor(f.entry, f.ingress!.id, f.hash, f.now);
    if (entry < 0) return;
    const vfp = this.vfp;
    vfp.flows.recordDrop(entry, reason, dropPort, peer, peer >= 0 ? vfp.generation[peer] : 0, vfp.connectionEpoch[dropPort], f.len);
  }

  /**
   * Broadcast, multicast and unknown unicast: every other port of the network
   * whose inbound policy allows the frame. The ingress side has been evaluated
   * already; its rewrites are applied once, to the one buffer all ports share.
   */
  private flood(): void {
    const f = this.frame;
    const ingress = f.ingress!;
    const { off, len, vnetOff, now } = f;
    const vfp = this.vfp;
    const d = this.decision;
    const key = this.key;
    const side = this.sideKey;
    const meta = this.meta;
    const isIp = meta[Meta.IP_VERSION] !== 0;
    const ingressRw = d.rwFlags;
    if (ingressRw !== 0) {
      vfp.transpositions.compileAt(vfp.transpositions.scratch, d, this.origKey);
    }
    const ingressMeter = d.meterBucket;
    const ports = ingress.network.ports;
    f.flooding = true;
    let allowed = 0;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      p.lastQueuedOffset = -1;
      if (p === ingress) continue;
      for (let w = 0; w < KEY_WORDS; w++) side[w] = key[w];
      // Receivers of a flood start no connection (a broadcast is not one, and one receiver at its
      // bound must not stop the frame for the others); replies to a tracked connection still pass.
      vfp.evaluateSide(vfp.policies[p.id]!, p.id, DIR_IN, side, meta, now, d, null, null);
      if (d.verdict === Verdict.BLOCK) {
        this.counters[p.id * COUNTER_COLUMNS + DROP_BASE + d.dropReason]++;
        continue;
      }
      p.lastQueuedOffset = off;
      allowed++;
    }
    if (allowed === 0) {
      f.flooding = false;
      if (ports.length <= 1) this.counters[ingress.id * COUNTER_COLUMNS + DROP_BASE + DropReason.noEgress]++;
      return;
    }
    if (ingressMeter >= 0 && !vfp.meters.tryConsume(ingressMeter, len, now)) {
      f.flooding = false;
      this.counters[ingress.id * COUNTER_COLUMNS + DROP_BASE + DropReason.meter]++;
      return;
    }
    if (isIp && !this.commitConnections(now)) {
      f.flooding = false;
      return;
    }
    if (ingressRw !== 0) vfp.transpositions.apply(vfp.transpositions.scratch, this.io.buffer, off, vnetOff, meta);
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      if (p.lastQueuedOffset === off) this.enqueue(p, off, len);
    }
    f.flooding = false;
  }

  private enqueue(port: SwitchPort, off: number, len: number): void {
    const egress = port.egress;
    if (egress !== null) {
      const was = egress.pending;
      if (egress.enqueue(this.io.buffer, off, len, this.frame.hash) === EgressResult.TOO_BIG) {
        this.tooBig(port, off, len);
        return;
      }
      if (was === 0) this.pendingTunnels[this.pendingTunnelCount++] = port;
      return;
    }
    if (port.txCount === 0) this.pending[this.pendingCount++] = port;
    port.txOffsets[port.txCount] = off;
    port.txLengths[port.txCount] = len;
    port.txCount++;
    port.txBytes += len;
  }

  /**
   * A frame too large for the tunnel, without GSO: dropped and counted; when
   * it has DF and is not being flooded (the answer is written over it), an
   * ICMP fragmentation-needed goes back to its sender, from its destination,
   * as a router at the tunnel entrance would send it.
   */
  private tooBig(tunnel: SwitchPort, off: number, len: number): void {
    this.counters[tunnel.id * COUNTER_COLUMNS + DROP_BASE + DropReason.tunnelTooBig]++;
    const ingress = this.frame.ingress;
    if (this.frame.flooding || ingress === null || ingress.egress !== null) return;
    const buf = this.io.buffer;
    const n = writeFragNeededInPlace(buf, off, len, tunnel.egress!.mtu);
    if (n < 0) return;
    const vnet = this.io.vnetHdrLen;
    if (vnet > 0) buf.fill(0, off - vnet, off);
    this.enqueue(ingress, off, n);
  }

  private flush(): void {
    const counters = this.counters;
    const io = this.io;
    for (let i = 0; i < this.pendingCount; i++) {
      const port = this.pending[i];
      const n = port.txCount;
      const written = io.transmit(port.fd, io.buffer, port.txOffsets, port.txLengths, n, io.vnetHdrLen);
      const row = port.id * COUNTER_COLUMNS;
      counters[row + TX_FRAMES] += written;
      if (written === n) {
        counters[row + TX_BYTES] += port.txBytes;
      } else {
        // Refused frames had their length zeroed by transmit(): the sum is what went out.
        let bytes = 0;
        for (let k = 0; k < n; k++) bytes += port.txLengths[k];
        counters[row + TX_BYTES] += bytes;
        counters[row + DROP_BASE + DropReason.txFailed] += n - written;
      }
      port.txCount = 0;
      port.txBytes = 0;
    }
    this.pendingCount = 0;
    if (this.pendingTunnelCount > 0) this.flushTunnels();
  }

  /** After the TAPs (whose frames may share bytes with these): encapsulate, then one send per uplink socket. */
  private flushTunnels(): void {
    const counters = this.counters;
    const tx = this.tunnelTx!;
    const buf = this.io.buffer;
    for (let i = 0; i < this.pendingTunnelCount; i++) {
      const port = this.pendingTunnels[i];
      const egress = port.egress!;
      const queued = egress.encapsulate(buf, tx, this.batchNow);
      const row = port.id * COUNTER_COLUMNS;
      counters[row + TX_FRAMES] += queued;
      counters[row + TX_BYTES] += egress.lastBytes;
      counters[row + DROP_BASE + DropReason.tunnelEncapFailed] += egress.lastFailed;
    }
    this.pendingTunnelCount = 0;
    tx.sendAll();
    const uplinks = tx.uplinks;
    for (let i = 0; i < uplinks.length; i++) {
      const u = uplinks[i];
      const row = u.id * COUNTER_COLUMNS;
      counters[row + TX_FRAMES] = u.stats[UplinkStat.DATAGRAMS];
      counters[row + TX_BYTES] = u.stats[UplinkStat.BYTES];
      counters[row + DROP_BASE + DropReason.txFailed] = u.stats[UplinkStat.FAILED];
    }
  }

  /** Flows matched per rule id of a port's policy. */
  ruleHits(portId: number): Record<string, number> {
    const hits: Record<string, number> = {};
    for (const layer of this.vfp.policies[portId]?.layers ?? []) {
      for (const group of layer.groups) for (const rule of group.rules) hits[rule.id] = (hits[rule.id] ?? 0) + rule.hits;
    }
    return hits;
  }

  /**
   * Explains what the slow path would do with `frame` entering at `portId`
   * (dir OUT: the container sends it; IN: it is delivered to the container),
   * without sending it or creating state.
   */
  trace(portId: number, dir: number, frame: Uint8Array): SwitchTrace {
    const port = this.ports[portId];
    const policy = this.vfp.policies[portId];
    if (!port || !policy) throw new Error(`port id ${portId} does not exist`);
    const key = new Uint32Array(KEY_WORDS);
    const meta = new Int32Array(META_WORDS);
    const verdict = classifyFrame(frame, 0, frame.length, -1, 65535);
    if (verdict !== FRAME_OK) return { steps: [{ action: 'block', detail: 'malformed frame' }], verdict: 'block', reason: verdict, egressPort: null, rewrite: null };
    extractKey(frame, 0, frame.length, key, meta);
    const orig = key.slice();
    const steps: TraceStep[] = [];
    const d = new Decision();
    d.reset();
    const side = (id: number, direction: number): boolean => {
      const mark = steps.length;
      this.vfp.evaluateSide(this.vfp.policies[id]!, id, direction, key, meta, this.clock(), d, null, steps);
      for (let i = mark; i < steps.length; i++) {
        steps[i].port = this.ports[id]?.name;
        steps[i].direction = direction === DIR_OUT ? 'out' : 'in';
      }
      return d.verdict === Verdict.ALLOW;
    };
    const result = (verdict: 'allow' | 'block', reason: number, egressPort: number | 'flood' | null): SwitchTrace => ({
      steps,
      verdict,
      reason,
      egressPort,
      rewrite: d.rwFlags !== 0 ? describeRewrite(d, orig) : null,
    });
    if (dir === DIR_IN) {
      if (!side(portId, DIR_IN)) return result('block', d.dropReason, null);
      return result('allow', 0, portId);
    }
    const spoofed = spoofCheck(policy, frame, 0, key, meta);
    if (spoofed !== 0) {
      steps.push({ port: port.name, direction: 'out', action: 'block', detail: "spoof guard: the source is not the endpoint's own" });
      return result('block', spoofed, null);
    }
    if (!side(portId, DIR_OUT)) return result('block', d.dropReason, null);
    const gw = port.network.gateway;
    if (gw !== null && gw.claims(frame, 0, key, meta)) {
      // Not run for real: a translation would take a port from the pool.
      steps.push({
        action: 'nat',
        detail: `to the NAT gateway: answered by it (its own address), or translated to ${formatIpv4Addr(gw.externalIp)} (a published port or one from the pool) and sent to the host, or to a container for the external address (hairpin)`,
      });
      return result('allow', 0, gw.externalPortId);
    }
    const dstHi = key[KeyWord.DST_MAC_HI];
    const egressId = (dstHi & 0x0100) !== 0 ? -1 : this.macTable.lookup(port.network.id, dstHi, key[KeyWord.DST_MAC_LO], this.clock());
    if (egressId < 0 || !this.ports[egressId]) {
      steps.push({ action: 'flood', detail: 'destination MAC not learned (or group address): every other port of the network, each through its inbound layers' });
      return result('allow', 0, 'flood');
    }
    if (egressId === portId) return result('block', DropReason.sameSegment, null);
    steps.push({ action: 'forward', detail: `destination MAC learned on ${this.ports[egressId]!.name}` });
    if (!side(egressId, DIR_IN)) return result('block', d.dropReason, null);
    return result('allow', 0, egressId);
  }

  /** Expires cached flows that are idle or whose connections are gone; a cache, so dropping an entry costs one slow path. */
  sweepFlows(now: number, budget: number, idleMs: number): number {
    const vfp = this.vfp;
    const flows = vfp.flows;
    const ct = vfp.conntrack;
    const removed = flows.sweep(
      budget,
      (e) => now - flows.lastSeen[e] > idleMs || !flows.connectionsValid(e, ct, now),
      (e) => vfp.transpositions.release(flows.transposition[e]),
    );
    vfp.stats.flowsExpired += removed;
    return removed;
  }

  /** The cached flows, optionally only those entering or leaving through one port (control path). */
  flowEntries(now: number, portId?: number): SwitchFlow[] {
    const flows = this.vfp.flows;
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
}

export interface SwitchTrace {
  steps: TraceStep[];
  verdict: 'allow' | 'block';
  reason: number;
  egressPort: number | 'flood' | null;
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

function describeRewrite(d: Decision, orig: Uint32Array): Record<string, string | number> {
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
