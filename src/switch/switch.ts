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
import { DropReason, DROP_REASON_NAMES, FRAME_OK } from '../packet/drop-reasons.js';
import { macHi16, macLo32, mustParseMac } from '../packet/ethernet.js';
import { mustParseIpv4Addr } from '../packet/ipv4.js';
import { classifyFrame } from '../packet/validate.js';
import { DIR_IN, DIR_OUT } from '../vfp/compile.js';
import { CT_RESTART } from '../vfp/conntrack.js';
import { FLOW_TAGS, NO_PORT } from '../vfp/flow-table.js';
import { extractKey, KEY_WORDS, KeyWord, Meta, META_WORDS } from '../vfp/key.js';
import { Decision, spoofCheck, Verdict, type TraceStep } from '../vfp/pipeline.js';
import type { PortPolicy } from '../vfp/policy.js';
import { PendingConnections, Vfp, type VfpOptions } from '../vfp/vfp.js';
import { COUNTER_COLUMNS, DROP_BASE, resetPortCounters } from './counters.js';
import { MacTable } from './mac-table.js';
import { NatGateway, type NatCounters, type NatGatewaySpec, type NatPublishSpec } from '../nat/gateway.js';
import { OverlaySegments, type RemoteEndpoint } from '../tunnel/overlay-segment.js';
import { TunnelTx, VxlanEgress, VxlanUplink } from '../tunnel/vxlan-egress.js';
import { CapturePoint, CaptureRecorder } from './capture.js';
import { FrameContext, Outcome } from './frame-context.js';
import type { FrameIo } from './frame-io.js';
import { describeRewrite, flowViews, natView, overlayView, type SwitchFlow, type SwitchNat, type SwitchOverlay, type SwitchTrace } from './inspect.js';
import { SwitchNetwork } from './network.js';
import { FLUSH_PHASES, FlushPhase, PortKind, SwitchPort, type Flushable, type PortHost } from './ports/port.js';
import { tapPort } from './ports/tap-port.js';
import { vhostUserPort } from './ports/vhost-user-port.js';
import { natHostPort } from './ports/nat-host-port.js';
import { packetUplinkPort } from './ports/packet-uplink-port.js';
import { l2bridgeUplinkPort } from './ports/l2bridge-uplink-port.js';
import { fabricAddressPort, fabricPort } from './ports/fabric-port.js';
import type { AddressTable } from './address-table.js';
import { VxlanTunnelDriver, vxlanTunnelPort } from './ports/vxlan-tunnel-port.js';
import { UnderlaySender, VxlanUnderlayDriver, vxlanUnderlayPort } from './ports/vxlan-underlay-port.js';
import { ArpSuppressionStage } from './stages/arp-suppression-stage.js';
import { L2BridgeStage } from './stages/l2bridge-stage.js';
import { NatGatewayStage } from './stages/nat-gateway-stage.js';
import { DhcpReplyStage } from './stages/dhcp-reply-stage.js';
import { LbStage } from './stages/lb-stage.js';
import { DnsStage, type DnsStageSpec } from './stages/dns-stage.js';
import type { NameRecord } from '../dns/names.js';
import { LbTags, type LbCounters, type LbSpec } from '../lb/balancer.js';
import { StageResult, type NetworkStage, type StageHost } from './stages/stage.js';

export type { FrameIo } from './frame-io.js';
export type { SwitchFlow, SwitchNat, SwitchOverlay, SwitchTrace } from './inspect.js';

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

/** What makes a network more than a learning switch: its stages and port kinds (at most one of nat, overlay, l2bridge). */
export interface NetworkSpec {
  nat?: NatGatewaySpec;
  overlay?: OverlayNetworkSpec;
  /** One MAC on the wire: frames from the uplink delivered by address (L2BridgeStage). */
  l2bridge?: boolean;
  /** l2bridge's one MAC, and every container frame to the uplink, nothing switched locally (a container host of a fabric). */
  l2tunnel?: boolean;
  /** Addresses by DHCP from the LAN: the server's replies go to the control plane, not to the containers (DhcpReplyStage). */
  dhcp?: boolean;
  /** The network's resolver: DNS to this address is answered from the network's names (DnsStage). */
  dns?: DnsStageSpec;
}

export interface SwitchEvents {
  portStopped(portId: number, errno: number): void;
  /** A DHCP server's reply from the LAN of a network with DHCP addresses (a copy; `partial`: its UDP checksum is left to complete). */
  dhcpReply?(networkId: number, frame: Uint8Array, partial: boolean): void;
  /** The port is over its egress cap: stop reading it for `ms` milliseconds. */
  pausePort?(portId: number, ms: number): void;
  /** A DNS query for a name that is not its network's (a copy, Ethernet on): the control plane answers it through deliver(). */
  dnsQuery?(networkId: number, portId: number, frame: Uint8Array): void;
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
  /** A host interface the network rides on, read and written through an AF_PACKET fd (packetOpen): its own MAC, whose frames are the host's. */
  uplinkMac?: string;
  /** An uplink on a VLAN (1..4094): the fd reads that VLAN's frames untagged, and what the port sends gets its tag. */
  vlan?: number;
  /** An l2bridge network's fabric port (fabric-port.ts): the AF_PACKET fd toward l2tunnel container hosts; `uplinkMac` is its interface's MAC. */
  fabric?: boolean;
  /** A container address behind the fabric port with this port id: `ip`, and `mac` its container host's. */
  fabricOf?: number;
  /** A container's address and MAC on a nat network (the gateway delivers translated frames for `ip` here) or an l2bridge one (frames from the LAN for `ip` come here). */
  ip?: string;
  mac?: string;
  /** A VM's NIC over vhost-user (vhost-user-port.ts): the socket vsw serves (`server`) or connects to; fd is -1. The worker makes the device. */
  vhostUser?: { socket: string; server: boolean };
}

const ETH_AND_VLAN_OVERHEAD = 18;

/** No layers, no spoof guard, no cap: a port of a plain learning switch. */
export const OPEN_POLICY: PortPolicy = {
  layers: [],
  spoofGuard: { enabled: false, mac: '00:00:00:00:00:00', ips: [] },
  qos: null,
};

export interface SwitchOptions {
  vfp?: Partial<VfpOptions>;
}

export class Switch implements PortHost, StageHost {
  private readonly networks = new Map<number, SwitchNetwork>();
  /** Every port by id, whatever its kind: one id space for TAPs, host TAPs, tunnel ports and underlay sockets. */
  private readonly ports: (SwitchPort | undefined)[] = [];
  /** Per flush phase, what has work queued in this batch. */
  private readonly pending: Flushable[][] = Array.from({ length: FLUSH_PHASES }, () => []);
  private readonly pendingCount = new Int32Array(FLUSH_PHASES);
  private batchCount = 0;
  /** The clock at the start of the batch being switched: the time frames are captured with. */
  private now = 0;
  readonly vfp: Vfp;
  /** `vsw capture`: records frames at ingress, egress and drops of the ports being captured; one boolean when idle. */
  readonly capture: CaptureRecorder;

  // Per-frame scratch, reused: nothing on the frame path allocates.
  readonly key = new Uint32Array(KEY_WORDS);
  private readonly origKey = new Uint32Array(KEY_WORDS);
  private readonly sideKey = new Uint32Array(KEY_WORDS);
  readonly meta = new Int32Array(META_WORDS);
  readonly decision = new Decision();
  /** A flood's receivers are evaluated into this one, so the ingress's decision (its rewrite, its meter) stays whole. */
  private readonly receiverDecision = new Decision();
  private readonly conns: PendingConnections;
  readonly frame = new FrameContext();

  /** The overlay state of the host: segments by VNI, the VTEP and ARP suppression tables. */
  readonly segments = new OverlaySegments();
  /** The stages of the nat networks and the tunnel ports of the overlay networks, by network id: the control path's handles. */
  private readonly natStages = new Map<number, NatGatewayStage>();
  private readonly l2bridgeStages = new Map<number, L2BridgeStage>();
  /** Every network's load balancers (a stage that lets everything pass while it has none). */
  private readonly lbStages = new Map<number, LbStage>();
  /** Flow-table accounting tags of every network's backends. */
  private readonly lbTags: LbTags;
  /** The resolvers of the networks that have one. */
  private readonly dnsStages = new Map<number, DnsStage>();
  /** The addresses behind each fabric port, by the fabric port's id. */
  private readonly fabrics = new Map<number, AddressTable>();
  private readonly tunnels = new Map<number, { port: SwitchPort; driver: VxlanTunnelDriver }>();
  private readonly underlays = new Map<number, VxlanUnderlayDriver>();
  private readonly sender: UnderlaySender | null;

  constructor(
    readonly io: FrameIo,
    readonly counters: Float64Array,
    readonly macTable: MacTable,
    private readonly events: SwitchEvents,
    private readonly clock: () => number = () => performance.now(),
    opts: SwitchOptions = {},
  ) {
    const maxPorts = counters.length / COUNTER_COLUMNS;
    this.vfp = new Vfp({ maxPorts, clock, ...opts.vfp });
    this.conns = new PendingConnections(maxPorts + 1);
    this.capture = new CaptureRecorder(maxPorts);
    this.sender = io.tunnel ? new UnderlaySender(new TunnelTx(io.tunnel, io.buffer)) : null;
    this.lbTags = new LbTags(FLOW_TAGS, (tag) => this.vfp.flows.clearTag(tag));
  }

  get buffer(): Uint8Array {
    return this.io.buffer;
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

  port(portId: number): SwitchPort | undefined {
    return this.ports[portId];
  }

  private freeId(id: number, what: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.maxPorts || this.ports[id]) throw new RangeError(`${what} id ${id} is taken or out of range`);
  }

  /** Registers a port of any kind under its id; its counters start at zero. */
  private register(port: SwitchPort, policy: PortPolicy): void {
    this.vfp.setPolicy(port.id, policy);
    resetPortCounters(this.counters, port.id);
    this.ports[port.id] = port;
    if (port.member) port.network!.addMember(port);
  }

  private unregister(port: SwitchPort): void {
    if (port.member) port.network!.removeMember(port);
    this.ports[port.id] = undefined;
    this.macTable.flushPort(port.id);
    this.vfp.removePort(port.id);
  }

  /**
   * A network and its stages: a nat network has the NAT gateway, an overlay
   * network ARP suppression and a tunnel port, an l2bridge network delivery
   * by address from its uplink, a network with DHCP addresses the stage that
   * takes the server's replies.
   */
  addNetwork(networkId: number, name: string, spec: NetworkSpec = {}): void {
    if (!Number.isInteger(networkId) || networkId < 0 || networkId > 0xffff) throw new RangeError(`network id ${networkId} must be an integer from 0 to 65535`);
    if (this.networks.has(networkId)) throw new Error(`network id ${networkId} exists already`);
    const { nat, overlay } = spec;
    const lb = new LbStage(this.vfp.conntrack, this.lbTags);
    // Before the NAT gateway, which claims every frame to the gateway's MAC, the resolver's on a nat network.
    const dns = spec.dns === undefined ? null : new DnsStage(networkId, name, spec.dns, this.io.slotSize, this.events);
    if (dns !== null) this.dnsStages.set(networkId, dns);
    if (overlay === undefined) {
      const stages: NetworkStage[] = [];
      if (spec.dhcp === true) stages.push(new DhcpReplyStage(networkId, this.events));
      if (dns !== null) stages.push(dns);
      // An l2tunnel host switches nothing itself: balancing, like policy, is the fabric host's.
      if (spec.l2tunnel !== true) {
        stages.push(lb);
        this.lbStages.set(networkId, lb);
      }
      if (nat) {
        const gateway = new NatGateway(nat, this.vfp.conntrack);
        gateway.vipMac = (ip) => {
          const b = lb.balancers.vipMac(ip);
          return b === undefined ? null : { hi: b.spec.vipMacHi, lo: b.spec.vipMacLo };
        };
        const stage = new NatGatewayStage(gateway, lb);
        this.natStages.set(networkId, stage);
        stages.push(stage);
      }
      if (spec.l2bridge === true || spec.l2tunnel === true) {
        const stage = new L2BridgeStage(spec.l2tunnel === true);
        this.l2bridgeStages.set(networkId, stage);
        stages.push(stage);
      }
      this.networks.set(networkId, new SwitchNetwork(networkId, name, stages));
      return;
    }
    const underlay = this.underlays.get(overlay.uplinkId);
    if (!underlay || !this.sender) throw new Error(`uplink ${overlay.uplinkId} does not exist`);
    this.freeId(overlay.tunnelPortId, 'tunnel port');
    const segment = this.segments.add(overlay.vni, { peers: overlay.peers, learnArp: overlay.learnArp });
    const net = new SwitchNetwork(networkId, name, [...(dns === null ? [] : [dns]), lb, new ArpSuppressionStage(segment)]);
    this.lbStages.set(networkId, lb);
    const egress = new VxlanEgress(segment, underlay.uplink, overlay.mtu, this.io.batchSize);
    const driver = new VxlanTunnelDriver(segment, egress, overlay.uplinkId, this.sender.tx, this.sender);
    const tunnel = vxlanTunnelPort(overlay.tunnelPortId, net, driver, overlay.mtu + ETH_AND_VLAN_OVERHEAD, this.io.batchSize);
    this.register(tunnel, OPEN_POLICY);
    underlay.tunnels.set(overlay.vni, tunnel);
    this.networks.set(networkId, net);
    this.tunnels.set(networkId, { port: tunnel, driver });
  }

  removeNetwork(networkId: number): void {
    const net = this.networks.get(networkId);
    if (!net) return;
    const tunnel = this.tunnels.get(networkId);
    const local = net.ports.length - (tunnel ? 1 : 0);
    if (local > 0) throw new Error(`network ${net.name} still has ${local} ports`);
    if (tunnel) {
      const vni = tunnel.driver.segment.vni;
      this.unregister(tunnel.port);
      this.underlays.get(tunnel.driver.underlayId)!.tunnels.delete(vni);
      this.segments.remove(vni);
      this.tunnels.delete(networkId);
    }
    this.natStages.delete(networkId);
    // Its backends give their accounting tags back.
    this.lbStages.get(networkId)?.balancers.configure([]);
    this.lbStages.delete(networkId);
    this.dnsStages.delete(networkId);
    this.l2bridgeStages.delete(networkId);
    this.macTable.flushNetwork(networkId);
    this.networks.delete(networkId);
  }

  /** An underlay socket set (src/tunnel/vxlan-egress.ts VxlanUplink); the caller polls its first fd as a UDP port with id uplinkId. */
  addUplink(cfg: UplinkConfig): void {
    if (!this.sender) throw new Error('this switch has no tunnel I/O');
    this.freeId(cfg.uplinkId, 'uplink');
    const driver = new VxlanUnderlayDriver(new VxlanUplink(cfg.uplinkId, cfg.vtep >>> 0, cfg.fds, cfg.dstPort), this.segments);
    this.ports[cfg.uplinkId] = vxlanUnderlayPort(driver);
    this.underlays.set(cfg.uplinkId, driver);
    this.sender.add(driver.uplink);
    resetPortCounters(this.counters, cfg.uplinkId);
  }

  removeUplink(uplinkId: number): void {
    const driver = this.underlays.get(uplinkId);
    if (!driver) return;
    const carried = driver.tunnels.values().next();
    if (!carried.done) throw new Error(`uplink ${uplinkId} still carries network ${carried.value.network!.name}`);
    this.ports[uplinkId] = undefined;
    this.underlays.delete(uplinkId);
    this.sender!.remove(driver.uplink);
  }

  private overlayNetwork(networkId: number): VxlanTunnelDriver {
    const tunnel = this.tunnels.get(networkId);
    if (!tunnel) throw new Error(`network id ${networkId} is not an overlay network`);
    return tunnel.driver;
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

  /**
   * Every overlay network's peers, tables and counters, optionally of one network (control path).
   * With countersOnly the VTEP and ARP tables are left empty (metrics: nothing per learned entry on this thread).
   */
  overlayState(now: number, networkId?: number, countersOnly = false): SwitchOverlay[] {
    const out: SwitchOverlay[] = [];
    for (const [id, { port, driver }] of this.tunnels) if (networkId === undefined || id === networkId) out.push(overlayView(id, port.id, driver.egress, now, countersOnly));
    return out;
  }

  /** Datagrams by decapsulation verdict, host-wide. */
  decapCounters(): Record<string, number> {
    return this.segments.counters().decap;
  }

  /** `vhostDevice`: the native handle of the port's device, for a port with `vhostUser` (made by the caller on this thread). */
  addPort(cfg: PortConfig, vhostDevice?: object): void {
    const net = this.networks.get(cfg.networkId);
    if (!net) throw new Error(`network id ${cfg.networkId} does not exist`);
    if (!Number.isInteger(cfg.portId) || cfg.portId < 0 || cfg.portId >= this.maxPorts) throw new RangeError(`port id ${cfg.portId} must be an integer below ${this.maxPorts}`);
    if (this.ports[cfg.portId]) throw new Error(`port id ${cfg.portId} exists already`);
    const nat = this.natStages.get(cfg.networkId)?.gateway ?? null;
    const maxFrame = (cfg.mtu ?? 1500) + ETH_AND_VLAN_OVERHEAD;
    if (cfg.external === true) {
      if (nat === null || nat.externalPortId >= 0) throw new Error(`network ${net.name} has no NAT gateway or has its host port already`);
      this.register(natHostPort(cfg.portId, net, cfg.fd, cfg.name, maxFrame, this.io.batchSize), cfg.policy ?? OPEN_POLICY);
      nat.externalPortId = cfg.portId;
      return;
    }
    const l2bridge = this.l2bridgeStages.get(cfg.networkId);
    if (cfg.fabric === true || cfg.fabricOf !== undefined) {
      this.addFabricPort(cfg, net, l2bridge, maxFrame);
      return;
    }
    if (cfg.uplinkMac !== undefined) {
      if (l2bridge === undefined) {
        this.register(packetUplinkPort(cfg.portId, net, cfg.fd, cfg.name, cfg.uplinkMac, cfg.vlan ?? 0, maxFrame, this.io.batchSize), cfg.policy ?? OPEN_POLICY);
        return;
      }
      const uplink = l2bridgeUplinkPort(cfg.portId, net, cfg.fd, cfg.name, cfg.uplinkMac, l2bridge.addresses, cfg.vlan ?? 0, maxFrame, this.io.batchSize);
      l2bridge.setUplink(uplink, mustParseMac(cfg.uplinkMac));
      this.register(uplink, cfg.policy ?? OPEN_POLICY);
      return;
    }
    if (cfg.vhostUser !== undefined && vhostDevice === undefined) throw new Error(`port ${cfg.portId} is a vhost-user port and needs its device`);
    const port = vhostDevice !== undefined ? vhostUserPort(cfg.portId, net, vhostDevice, cfg.name, maxFrame, this.io.batchSize) : tapPort(cfg.portId, net, cfg.fd, cfg.name, maxFrame, this.io.batchSize);
    if (cfg.mac !== undefined) {
      const mac = mustParseMac(cfg.mac);
      port.deviceMacHi = macHi16(mac, 0);
      port.deviceMacLo = macLo32(mac, 0);
    }
    this.register(port, cfg.policy ?? OPEN_POLICY);
    if (nat !== null && cfg.ip !== undefined && cfg.mac !== undefined) nat.setNeighbor({ ip: cfg.ip, mac: cfg.mac, portId: cfg.portId });
    if (l2bridge !== undefined && cfg.ip !== undefined && cfg.mac !== undefined) l2bridge.addresses.set(mustParseIpv4Addr(cfg.ip), port);
  }

  /** A fabric port (the socket) or one of its addresses, on an l2bridge network. */
  private addFabricPort(cfg: PortConfig, net: SwitchNetwork, l2bridge: L2BridgeStage | undefined, maxFrame: number): void {
    if (l2bridge === undefined || l2bridge.tunnelAll) throw new Error(`network ${net.name} is not an l2bridge network: only those have fabric ports`);
    if (cfg.fabric === true) {
      if (cfg.uplinkMac === undefined) throw new Error('a fabric port needs its interface MAC (uplinkMac)');
      const { port, addresses } = fabricPort(cfg.portId, net, cfg.fd, cfg.name, maxFrame, this.io.batchSize);
      l2bridge.setFabricMac(mustParseMac(cfg.uplinkMac));
      this.fabrics.set(cfg.portId, addresses);
      this.register(port, OPEN_POLICY);
      return;
    }
    const fabric = this.ports[cfg.fabricOf!];
    const addresses = this.fabrics.get(cfg.fabricOf!);
    if (fabric === undefined || addresses === undefined || fabric.network !== net) throw new Error(`port ${cfg.fabricOf} is not a fabric port of network ${net.name}`);
    if (cfg.ip === undefined || cfg.mac === undefined) throw new Error('a fabric address needs its ip and its container host\'s mac');
    const port = fabricAddressPort(cfg.portId, net, fabric, cfg.name, cfg.mac, maxFrame, this.io.batchSize);
    this.register(port, cfg.policy ?? OPEN_POLICY);
    const ip = mustParseIpv4Addr(cfg.ip);
    addresses.set(ip, port);
    l2bridge.addresses.set(ip, port);
  }

  removePort(portId: number): void {
    const port = this.ports[portId];
    if (!port || port.network === null) return;
    if (port.kind === PortKind.FABRIC_ADDRESS) for (const addresses of this.fabrics.values()) addresses.deletePort(port);
    if (port.kind === PortKind.FABRIC) this.fabrics.delete(portId);
    // The port's own network's gateway, found through the network object: an id may have been reused since.
    const nat = port.network.stages.find((s): s is NatGatewayStage => s instanceof NatGatewayStage)?.gateway;
    if (nat) {
      if (port.kind === PortKind.NAT_HOST) nat.externalPortId = -1;
      else nat.removeNeighbor(portId);
    }
    const l2bridge = port.network.stages.find((s): s is L2BridgeStage => s instanceof L2BridgeStage);
    l2bridge?.addresses.deletePort(port);
    if (l2bridge !== undefined && port.kind === PortKind.PACKET_UPLINK) l2bridge.setUplink(null);
    this.unregister(port);
  }

  /** Whether a port of a network (not an underlay socket) has this id. */
  hasPort(portId: number): boolean {
    return this.ports[portId]?.network != null;
  }

  /**
   * Switches `frame` as if the port had sent it, without counting it as
   * received: the control plane's gratuitous ARP for an endpoint that came
   * back. Uses the first rx slot, which no batch holds between callbacks.
   */
  inject(portId: number, frame: Uint8Array): boolean {
    const ingress = this.ports[portId];
    if (ingress === undefined || ingress.kind !== PortKind.TAP) return false;
    const off = this.placeInFirstSlot(frame);
    if (off < 0) return false;
    const now = this.clock();
    this.now = now;
    this.switchFrame(ingress, off, frame.length, now);
    this.flush(now);
    return true;
  }

  /** Copies a frame into the first rx slot with a clean vnet header; its offset, or -1 when it does not fit. */
  private placeInFirstSlot(frame: Uint8Array): number {
    const io = this.io;
    if (frame.length > io.slotSize - io.headroom) return -1;
    const off = io.headroom;
    io.buffer.fill(0, off - io.vnetHdrLen, off);
    io.buffer.set(frame, off);
    return off;
  }

  /** How many ports a broadcast from this port reaches (its network's, itself excluded). */
  floodSize(portId: number): number {
    const port = this.ports[portId];
    return port === undefined || port.network === null ? 0 : Math.max(1, port.network.ports.length - 1);
  }

  /** The fd a port (or uplink) reads, or -1: names the port unambiguously in events, as ids are reused. */
  portFd(portId: number): number {
    return this.ports[portId]?.fd ?? -1;
  }

  /** Replaces the ports a nat network publishes on its external address; cached flows of the network are re-evaluated. */
  setPublished(networkId: number, list: NatPublishSpec[]): void {
    const stage = this.natStages.get(networkId);
    if (!stage) throw new Error(`network id ${networkId} is not a nat network`);
    const gw = stage.gateway;
    gw.setPublished(list);
    this.invalidateNetworkFlows(networkId);
  }

  /** Replaces a network's load balancers; its cached flows are re-evaluated (established connections keep their backends). */
  setBalancers(networkId: number, specs: LbSpec[]): void {
    const stage = this.lbStages.get(networkId);
    if (!stage) throw new Error(`network id ${networkId} does not exist or takes no load balancers (l2tunnel)`);
    stage.balancers.configure(specs);
    this.invalidateNetworkFlows(networkId);
  }

  /** Replaces a network's DNS names, all or nothing: the sentence saying why not, or null. */
  setNames(networkId: number, records: NameRecord[]): string | null {
    const stage = this.dnsStages.get(networkId);
    if (!stage) throw new Error(`network id ${networkId} does not exist or has no resolver`);
    return stage.names.load(records);
  }

  /**
   * Sends `frame` out of port `portId` as if the switch had forwarded it
   * there (the control plane's answer to a DNS query it was handed). Uses
   * the first rx slot, which no batch holds between callbacks.
   */
  deliver(portId: number, frame: Uint8Array): boolean {
    const port = this.ports[portId];
    if (port === undefined || port.network === null) return false;
    const off = this.placeInFirstSlot(frame);
    if (off < 0) return false;
    this.now = this.clock();
    this.queue(port, off, frame.length, 0, -1);
    this.flush(this.now);
    return true;
  }

  /** Every network's balancers with their backends' counters, optionally of one network (control path). */
  lbState(now: number, networkId?: number): { networkId: number; balancers: LbCounters[] }[] {
    const out: { networkId: number; balancers: LbCounters[] }[] = [];
    let bytes: Float64Array | undefined;
    for (const [id, stage] of this.lbStages) {
      if ((networkId !== undefined && id !== networkId) || stage.balancers.size === 0) continue;
      bytes ??= this.vfp.flows.bytesByTag();
      out.push({ networkId: id, balancers: stage.balancers.counters(now, bytes) });
    }
    return out;
  }

  /** Frees balanced connections that ended, a slice at a time. */
  sweepLb(now: number, budget: number): void {
    for (const stage of this.lbStages.values()) if (stage.balancers.size > 0) stage.balancers.sweep(now, budget);
  }

  /** Bumps the generation of every port of a network (its tunnel and host ports too): each cached flow through it goes the slow way once. */
  private invalidateNetworkFlows(networkId: number): void {
    const gen = this.vfp.generation;
    for (const p of this.networks.get(networkId)!.ports) gen[p.id] = (gen[p.id] + 1) >>> 0;
    const external = this.natStages.get(networkId)?.gateway.externalPortId ?? -1;
    if (external >= 0) gen[external] = (gen[external] + 1) >>> 0;
  }

  /** The NAT gateways of the nat networks, by network id (control path: snapshots of the translations). */
  natGateways(): { networkId: number; gateway: NatGateway }[] {
    return Array.from(this.natStages, ([networkId, stage]) => ({ networkId, gateway: stage.gateway }));
  }

  /** Ids of the ports the native engine reads: TAPs, host TAPs and underlay sockets. */
  receivingPortIds(): number[] {
    const ids: number[] = [];
    for (const p of this.ports) if (p !== undefined && p.receives) ids.push(p.id);
    return ids;
  }

  /** Frees NAT mappings whose connection ended, a slice at a time. */
  sweepNat(now: number, budget: number): void {
    for (const stage of this.natStages.values()) stage.gateway.table.sweep(now, budget);
  }

  /** Every nat network's counters, without the translations (cheap enough for a periodic log). */
  natCounters(): { networkId: number; counters: NatCounters }[] {
    return Array.from(this.natStages, ([networkId, stage]) => ({ networkId, counters: stage.gateway.counters() }));
  }

  /** Every nat network's translations and counters, optionally of one network (control path). */
  natState(now: number, networkId?: number, countersOnly = false): SwitchNat[] {
    const out: SwitchNat[] = [];
    for (const [id, stage] of this.natStages) if (networkId === undefined || id === networkId) out.push(natView(id, stage.gateway, this.vfp.conntrack, now, countersOnly));
    return out;
  }

  /** Replaces a port's policy at once; cached flows through it are re-evaluated on their next frame. */
  setPolicy(portId: number, policy: PortPolicy): void {
    if (!this.hasPort(portId)) throw new Error(`port id ${portId} does not exist`);
    this.vfp.setPolicy(portId, policy);
  }

  /** One batch drained from `portId`: slots 0..count-1 of the io buffer. A negative count is -errno: the port stopped. */
  receive(portId: number, count: number): void {
    const port = this.ports[portId];
    if (port === undefined) return;
    if (count < 0) {
      this.events.portStopped(portId, -count);
      return;
    }
    this.batchCount++;
    const now = this.clock();
    this.now = now;
    if (this.capture.active && port.network !== null) this.captureBatch(port, count);
    const bytes = port.driver.receive(port, this, count, now);
    this.flush(now);
    const qos = this.vfp.qos;
    if (qos.isConfigured(portId)) {
      const waitMs = qos.debit(portId, bytes, now);
      if (waitMs > 0 && this.events.pausePort) this.events.pausePort(portId, waitMs);
    }
  }

  /** One frame that entered at `ingress` (a TAP, or an overlay's tunnel port after decapsulation), its vnet header before it. */
  switchFrame(ingress: SwitchPort, off: number, len: number, now: number): void {
    const buf = this.io.buffer;
    const vnet = this.io.vnetHdrLen;
    const vnetOff = vnet > 0 ? off - vnet : -1;
    const verdict = classifyFrame(buf, off, len, vnetOff, ingress.maxFrame);
    if (verdict !== FRAME_OK) {
      this.dropped(ingress.id, verdict, off, len);
      return;
    }
    const key = this.key;
    extractKey(buf, off, len, key, this.meta);
    // The fast path needs only the ingress and the hash (what enqueue records); the rest is filled for the slow path.
    const f = this.frame;
    f.ingress = ingress;
    let e = -1;
    if (this.meta[Meta.IP_VERSION] !== 0 && (buf[off] & 1) === 0) {
      const flows = this.vfp.flows;
      const portId = ingress.id;
      const hash = flows.hash(portId, key);
      f.hash = hash;
      e = flows.lookup(portId, key, hash);
      if (e >= 0) {
        const vfp = this.vfp;
        if (flows.valid(e, portId, vfp.generation, this.macTable.epoch, vfp.connectionEpoch, vfp.conntrack, now) && this.fastPath(e, ingress, off, len, vnetOff, now)) return;
      }
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
    f.holder = null;
    f.tag = -1;
    this.slowPath(f);
  }

  /** Applies cached entry e to the frame. False when the frame must take the slow path after all (a TCP restart). */
  private fastPath(e: number, ingress: SwitchPort, off: number, len: number, vnetOff: number, now: number): boolean {
    const vfp = this.vfp;
    const flows = vfp.flows;
    const egressId = flows.egress[e];
    flows.hit(e, len, now);
    if (egressId === NO_PORT) {
      this.dropped(flows.dropPort[e], flows.dropReason[e], off, len);
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
      this.dropped(ingress.id, DropReason.meter, off, len);
      return true;
    }
    const ct = vfp.conntrack;
    if (a >= 0 && ct.update(a, DIR_OUT, tcpFlags, now) === CT_RESTART) return false;
    if (b >= 0 && ct.update(b, DIR_IN, tcpFlags, now) === CT_RESTART) return false;
    const key = this.key;
    if (ingress.learnsSource) this.macTable.learn(ingress.network!.id, key[KeyWord.SRC_MAC_HI], key[KeyWord.SRC_MAC_LO], ingress.id, now);
    const t = flows.transposition[e];
    if (t >= 0) vfp.transpositions.apply(t, this.io.buffer, off, vnetOff, this.meta);
    const egress = this.ports[egressId];
    if (egress !== undefined) this.enqueue(egress, off, len);
    return true;
  }

  /**
   * Everything the flow table does not answer: spoof guard and the ingress
   * port's outbound layers, MAC learning, the network's stages in order, then
   * MAC forwarding; its stale entry (or -1) is reused when the result can be
   * cached. In a dry run (f.dryRun) the same steps decide, and nothing is
   * committed: see FrameContext.dryRun.
   */
  private slowPath(f: FrameContext): void {
    const ingress = f.ingress!;
    const vfp = this.vfp;
    const key = this.key;
    const meta = this.meta;
    const portId = ingress.id;
    const dry = f.dryRun;
    if (!dry) vfp.stats.slowPathRuns++;
    const orig = this.origKey;
    for (let w = 0; w < KEY_WORDS; w++) orig[w] = key[w];
    this.decision.reset();
    this.conns.count = 0;

    const ingressPolicy = vfp.policies[portId]!;
    const spoofed = spoofCheck(ingressPolicy, this.io.buffer, f.off, key, meta);
    if (spoofed !== 0) {
      // Not cached: the sender picks spoofed keys at will, and each would take a flow-table entry.
      f.cacheable = false;
      if (f.steps !== null) f.steps.push({ port: ingress.name, direction: 'out', action: 'block', detail: "spoof guard: the source is not the endpoint's own" });
      this.drop(f, portId, -1, spoofed);
      return;
    }
    f.ctOut = this.evaluate(f, portId, DIR_OUT, key, true);
    if (this.decision.verdict === Verdict.BLOCK) {
      this.drop(f, portId, -1, this.decision.dropReason);
      return;
    }
    const net = ingress.network!;
    if (ingress.learnsSource && !dry) this.macTable.learn(net.id, orig[KeyWord.SRC_MAC_HI], orig[KeyWord.SRC_MAC_LO], portId, f.now);
    const stages = net.stages;
    for (let i = 0; i < stages.length; i++) if (stages[i].process(this, f) === StageResult.DONE) return;
    if (!ingress.member) {
      // A port outside the network's switching (a nat host TAP) whose frame no stage took.
      this.dropAtIngress(f, DropReason.noEgress);
      return;
    }

    const dstHi = key[KeyWord.DST_MAC_HI];
    const dstLo = key[KeyWord.DST_MAC_LO];
    const group = (dstHi & 0x0100) !== 0;
    // Unicast from a port that must not flood what the table cannot place (a physical uplink).
    const placedOnly = !group && !ingress.floodsUnknownUnicast;
    let egressId = group ? -1 : this.macTable.lookup(net.id, dstHi, dstLo, f.now);
    // Forwarding learned the source just before this lookup; a dry run did not, but must answer the same.
    if (dry && ingress.learnsSource && dstHi === orig[KeyWord.SRC_MAC_HI] && dstLo === orig[KeyWord.SRC_MAC_LO]) egressId = portId;
    if (egressId < 0 && placedOnly) egressId = deviceWithMac(net, dstHi, dstLo);
    const egress = egressId >= 0 ? this.ports[egressId] : undefined;
    if (egress === undefined) {
      // Not cached: the destination may be learned any moment, and a new MAC does not move the MAC table's epoch.
      if (placedOnly) this.countDrop(f, portId, DropReason.uplinkNotLocal);
      else this.flood(f);
      return;
    }
    if (egressId === portId) {
      this.countDrop(f, portId, DropReason.sameSegment);
      return;
    }
    if (f.steps !== null) f.step('forward', `destination MAC learned on ${egress.name}`);
    this.forward(f, egress);
  }

  /**
   * The layers of one side (the port's outbound ones for the ingress, inbound
   * for an egress) on `key`; returns the connection found, or -1. New
   * connections are proposed in this.conns when `stateful` (IP, and not a
   * dry run). Steps are recorded, named by port, while tracing.
   */
  private evaluate(f: FrameContext, portId: number, dir: number, key: Uint32Array, stateful: boolean, d: Decision = this.decision): number {
    const vfp = this.vfp;
    const meta = this.meta;
    const pending = stateful && !f.dryRun && meta[Meta.IP_VERSION] !== 0 ? this.conns : null;
    const steps = f.steps;
    if (steps === null) return vfp.evaluateSide(vfp.policies[portId]!, portId, dir, key, meta, f.now, d, pending, null);
    const mark = steps.length;
    const slot = vfp.evaluateSide(vfp.policies[portId]!, portId, dir, key, meta, f.now, d, pending, steps);
    for (let i = mark; i < steps.length; i++) {
      steps[i].port = this.ports[portId]?.name;
      steps[i].direction = dir === DIR_OUT ? 'out' : 'in';
    }
    return slot;
  }

  /** StageHost: the frame, now an answer, goes back out of its ingress. */
  reply(f: FrameContext): void {
    this.output(f, f.ingress!);
  }

  /** StageHost: drops the frame on its ingress port, uncached. */
  dropAtIngress(f: FrameContext, reason: number): void {
    this.countDrop(f, f.ingress!.id, reason);
  }

  /**
   * The second half of the slow path, once the egress is known: its inbound
   * layers, the meter, connections at both ends, the rewrite, and the flow
   * entry. A stage that took something for the frame (f.holder: a NAT
   * mapping) has it bound to the connection at the ingress, or given back.
   */
  forward(f: FrameContext, egress: SwitchPort): void {
    const ingress = f.ingress!;
    const { off, len, vnetOff, now, ctOut } = f;
    let cacheable = f.cacheable;
    const vfp = this.vfp;
    const d = this.decision;
    const portId = ingress.id;
    const egressId = egress.id;
    const holder = f.holder;
    const ctIn = this.evaluate(f, egressId, DIR_IN, this.key, true);
    if (d.verdict === Verdict.BLOCK) {
      holder?.abandon();
      this.drop(f, egressId, egressId, d.dropReason);
      return;
    }
    if (f.dryRun) {
      holder?.abandon();
      this.output(f, egress);
      return;
    }
    // The meter before connections are created: a policed frame leaves no state behind, and is not cached.
    const meter = d.meterBucket;
    if (meter >= 0 && !vfp.meters.tryConsume(meter, len, now)) {
      holder?.abandon();
      this.dropped(portId, DropReason.meter, off, len);
      return;
    }
    if (!this.commitConnections(now)) {
      holder?.abandon();
      return;
    }
    const a = ctOut >= 0 ? ctOut : this.createdSlot(portId, DIR_OUT);
    // The connection a NAT mapping lives by is the one at the container's side: here, the ingress.
    if (holder !== null && !holder.commit(a)) cacheable = false;

    const transpositions = vfp.transpositions;
    const buf = this.io.buffer;
    let t = -1;
    if (d.rwFlags !== 0) {
      t = cacheable ? transpositions.compile(d, this.origKey) : -1;
      if (t < 0) {
        // Not cached (not unicast IP, or the slab is full): this frame is rewritten, the next one comes back here.
        transpositions.compileAt(transpositions.scratch, d, this.origKey);
        transpositions.apply(transpositions.scratch, buf, off, vnetOff, this.meta);
      } else {
        transpositions.apply(t, buf, off, vnetOff, this.meta);
      }
    }
    if (cacheable && (d.rwFlags === 0 || t >= 0)) {
      const entry = this.entryFor(f.entry, portId, f.hash, now);
      if (entry >= 0) {
        const b = ctIn >= 0 ? ctIn : this.createdSlot(egressId, DIR_IN);
        vfp.flows.recordForward(entry, egressId, vfp.generation[egressId], a, b, vfp.conntrack, t, meter, len, f.tag);
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
    this.dropped(refusedAt, DropReason.connLimit, this.frame.off, this.frame.len);
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

  // Capture works per batch, so a switch that captures nothing pays one boolean per batch for it and
  // nothing per frame: what entered a port is recorded as the engine handed it over, what leaves one
  // as its queue is flushed (after policy and rewrites; for a tunnel, before encapsulation).

  /** The frames of a batch read from `port`, as they entered (also those about to be dropped as malformed). */
  private captureBatch(port: SwitchPort, count: number): void {
    const cap = this.capture;
    if ((cap.mask[port.id] & CapturePoint.INGRESS) === 0) return;
    const io = this.io;
    for (let slot = 0; slot < count; slot++) cap.record(CapturePoint.INGRESS, port.id, 0, io.buffer, slot * io.slotSize + io.headroom, io.lengths[slot], this.now);
  }

  /** PortHost: a frame that entered at `port` other than from its own fd (decapsulated into a tunnel port). */
  captureIngress(port: SwitchPort, off: number, len: number): void {
    const cap = this.capture;
    if ((cap.mask[port.id] & CapturePoint.INGRESS) !== 0) cap.record(CapturePoint.INGRESS, port.id, 0, this.io.buffer, off, len, this.now);
  }

  /** What is queued on `port`, about to be flushed. */
  private captureQueued(port: SwitchPort): void {
    const cap = this.capture;
    if ((cap.mask[port.id] & CapturePoint.EGRESS) === 0) return;
    for (let i = 0; i < port.txCount; i++) cap.record(CapturePoint.EGRESS, port.id, 0, this.io.buffer, port.txOffsets[i], port.txLengths[i], this.now);
  }

  /**
   * PortHost: a drop of the frame at buf[off, off+len) counted on `portId` by
   * `reason`, and recorded when that port's drops are being captured.
   */
  dropped(portId: number, reason: number, off: number, len: number): void {
    this.counters[portId * COUNTER_COLUMNS + DROP_BASE + reason]++;
    const cap = this.capture;
    if (cap.active && (cap.mask[portId] & CapturePoint.DROP) !== 0) cap.record(CapturePoint.DROP, portId, reason, this.io.buffer, off, len, this.now);
  }

  /** Slow path: the frame leaves on `port` (in a dry run, that is recorded instead, or the drop the port's flush would give it). */
  private output(f: FrameContext, port: SwitchPort): void {
    if (!f.dryRun) {
      this.enqueue(port, f.off, f.len);
      return;
    }
    const refused = port.driver.refuses(port, this.io.buffer, f.off, f.len);
    if (refused !== 0) {
      this.countDrop(f, port.id, refused);
      return;
    }
    if (f.outcome === Outcome.NONE) {
      f.outcome = Outcome.FORWARD;
      f.outcomePort = port.id;
    }
  }

  /** Slow path: a drop counted on `portId`, not cached (in a dry run, recorded instead). */
  private countDrop(f: FrameContext, portId: number, reason: number): void {
    if (f.dryRun) {
      if (f.outcome === Outcome.NONE) {
        f.outcome = Outcome.DROP;
        f.outcomePort = portId;
        f.outcomeReason = reason;
      }
      return;
    }
    this.dropped(portId, reason, f.off, f.len);
  }

  /** Counts the frame's drop on `dropPort` and, when it may be cached, caches it with the peer whose policy took part (or -1). */
  private drop(f: FrameContext, dropPort: number, peer: number, reason: number): void {
    this.countDrop(f, dropPort, reason);
    if (!f.cacheable || f.dryRun) return;
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
  private flood(f: FrameContext): void {
    const ingress = f.ingress!;
    const { off, len, vnetOff, now } = f;
    const vfp = this.vfp;
    const d = this.decision;
    const rd = this.receiverDecision;
    const key = this.key;
    const side = this.sideKey;
    const meta = this.meta;
    const dry = f.dryRun;
    if (d.rwFlags !== 0 && !dry) vfp.transpositions.compileAt(vfp.transpositions.scratch, d, this.origKey);
    const ports = ingress.network!.ports;
    if (f.steps !== null) f.step('flood', 'destination MAC not learned (or group address): every other port of the network, each through its inbound layers');
    let allowed = 0;
    let eligible = 0;
    let blockedReason = 0;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      p.lastQueuedOffset = -1;
      // A fabric address's frames all go to one container host: a flood would reach it once per address.
      if (p === ingress || p.kind === PortKind.FABRIC_ADDRESS) continue;
      eligible++;
      for (let w = 0; w < KEY_WORDS; w++) side[w] = key[w];
      // Receivers of a flood start no connection (a broadcast is not one, and one receiver at its
      // bound must not stop the frame for the others); replies to a tracked connection still pass.
      rd.reset();
      this.evaluate(f, p.id, DIR_IN, side, false, rd);
      let refused = rd.verdict === Verdict.BLOCK ? rd.dropReason : 0;
      if (refused === 0 && dry) refused = p.driver.refuses(p, this.io.buffer, off, len);
      if (refused !== 0) {
        if (!dry) this.dropped(p.id, refused, off, len);
        blockedReason = refused;
        continue;
      }
      p.lastQueuedOffset = off;
      allowed++;
      if (dry) f.floodPorts?.push(p.id);
    }
    if (allowed === 0) {
      // None to flood to is noEgress; every receiver refusing it is a drop for the last one's reason.
      if (eligible === 0) this.countDrop(f, ingress.id, DropReason.noEgress);
      else if (dry) this.countDrop(f, ingress.id, blockedReason);
      return;
    }
    if (dry) {
      if (f.outcome === Outcome.NONE) f.outcome = Outcome.FLOOD;
      return;
    }
    if (d.meterBucket >= 0 && !vfp.meters.tryConsume(d.meterBucket, len, now)) {
      this.dropped(ingress.id, DropReason.meter, off, len);
      return;
    }
    if (meta[Meta.IP_VERSION] !== 0 && !this.commitConnections(now)) return;
    if (d.rwFlags !== 0) vfp.transpositions.apply(vfp.transpositions.scratch, this.io.buffer, off, vnetOff, meta);
    f.flooding = true;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      if (p.lastQueuedOffset === off) this.enqueue(p, off, len);
    }
    f.flooding = false;
  }

  /**
   * Queues the frame being switched on `port`, with its flow hash and the
   * port an answer about it may go to (its ingress, unless it is flooded:
   * an answer written over it would spoil the other copies).
   */
  private enqueue(port: SwitchPort, off: number, len: number): void {
    const f = this.frame;
    this.queue(port, off, len, f.hash, f.flooding ? -1 : f.ingress!.id);
  }

  /** PortHost: one descriptor on the port's queue; a full queue of a TAP is written at once, a full one of any other kind refuses. */
  queue(port: SwitchPort, off: number, len: number, hash: number, replyTo: number): void {
    let n = port.txCount;
    if (n === port.txOffsets.length) {
      if (port.flushPhase !== FlushPhase.WRITE) {
        this.dropped(port.id, DropReason.txFailed, off, len);
        return;
      }
      // More frames than a batch for one TAP (a UDP GRO slot split into many): write what is queued now.
      if (this.capture.active) this.captureQueued(port);
      port.driver.flush(port, this, this.now);
      n = 0;
    }
    if (!port.scheduled) this.schedule(port);
    port.txOffsets[n] = off;
    port.txLengths[n] = len;
    port.txHashes[n] = hash;
    port.txReplyTo[n] = replyTo;
    port.txCount = n + 1;
    port.txBytes += len;
  }

  /** PortHost: the flushable gets a flush after this batch, in its phase. */
  schedule(item: Flushable): void {
    item.scheduled = true;
    const phase = item.flushPhase;
    this.pending[phase][this.pendingCount[phase]++] = item;
  }

  /**
   * After a batch, phase by phase: TAP writes, then encapsulation, then the
   * underlay sends. A later phase may queue on a TAP again (an ICMP answer
   * from a tunnel), so the phases run again until nothing is pending.
   */
  private flush(now: number): void {
    const counts = this.pendingCount;
    do {
      for (let phase = 0; phase < FLUSH_PHASES; phase++) {
        const list = this.pending[phase];
        for (let i = 0; i < counts[phase]; i++) {
          const item = list[i];
          item.scheduled = false;
          if (this.capture.active && item instanceof SwitchPort) this.captureQueued(item);
          item.flush(this, now);
        }
        counts[phase] = 0;
      }
    } while (counts[FlushPhase.WRITE] > 0);
  }

  /** A network's stages in the order frames meet them: names, the drop reasons each may give, their counters (control path). */
  stages(networkId: number): { name: string; dropReasons: string[]; counters: Record<string, number> }[] {
    const net = this.networks.get(networkId);
    if (!net) throw new Error(`network id ${networkId} does not exist`);
    return net.stages.map((stage) => ({ name: stage.name, dropReasons: stage.dropReasons.map((r) => DROP_REASON_NAMES[r]), counters: stage.counters() }));
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
   * What the switch would do with `frame` entering at `portId` (dir OUT: the
   * port sends it; IN: it is delivered to the port, through its inbound
   * layers only): the real slow path and stages, run dry, so nothing is sent,
   * learned, committed or counted. Runs between batches, in the first rx slot.
   */
  trace(portId: number, dir: number, frame: Uint8Array): SwitchTrace {
    const port = this.ports[portId];
    if (!port || !this.vfp.policies[portId] || port.network === null) throw new Error(`port id ${portId} does not exist`);
    const f = this.frame;
    const off = this.placeInFirstSlot(frame);
    const vnet = this.io.vnetHdrLen;
    const verdict = off < 0 ? DropReason.oversize : classifyFrame(this.io.buffer, off, frame.length, vnet > 0 ? off - vnet : -1, port.maxFrame);
    if (verdict !== FRAME_OK) return { steps: [{ action: 'block', detail: 'malformed frame' }], verdict: 'block', reason: verdict, egressPort: null, rewrite: null };
    extractKey(this.io.buffer, off, frame.length, this.key, this.meta);
    const steps: TraceStep[] = [];
    f.ingress = port;
    f.off = off;
    f.len = frame.length;
    f.vnetOff = vnet > 0 ? off - vnet : -1;
    f.hash = 0;
    f.entry = -1;
    f.ctOut = -1;
    f.cacheable = false;
    f.now = this.clock();
    f.holder = null;
    f.tag = -1;
    f.dryRun = true;
    f.steps = steps;
    f.floodPorts = [];
    f.outcome = Outcome.NONE;
    f.outcomePort = -1;
    f.outcomeReason = 0;
    const floodPorts = f.floodPorts;
    try {
      if (dir === DIR_IN) {
        const orig = this.origKey;
        for (let w = 0; w < KEY_WORDS; w++) orig[w] = this.key[w];
        this.decision.reset();
        this.evaluate(f, portId, DIR_IN, this.key, false);
        if (this.decision.verdict === Verdict.BLOCK) this.countDrop(f, portId, this.decision.dropReason);
        else this.output(f, port);
      } else {
        this.slowPath(f);
      }
    } finally {
      // Whatever a stage took must not outlive the trace, even one cut short by an exception.
      f.release();
      f.dryRun = false;
      f.steps = null;
      f.floodPorts = null;
      f.flooding = false;
    }
    const rewrite = describeRewrite(this.decision, this.origKey);
    if (f.outcome === Outcome.DROP) return { steps, verdict: 'block', reason: f.outcomeReason, egressPort: null, rewrite };
    if (f.outcome === Outcome.FLOOD) return { steps, verdict: 'allow', reason: 0, egressPort: 'flood', floodPorts, rewrite };
    return { steps, verdict: 'allow', reason: 0, egressPort: f.outcomePort, rewrite };
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
    return flowViews(this.vfp.flows, now, portId);
  }
}

/**
 * The member of `net` whose device has this MAC, or -1: what a port that does
 * not flood unknown unicast (a physical uplink) falls back on when the MAC
 * table has no entry, so an idle container whose entry aged out, or one that
 * has not sent yet, is still reached from the LAN. A scan of the members: it
 * runs on the slow path, for frames the table cannot place.
 */
function deviceWithMac(net: SwitchNetwork, hi: number, lo: number): number {
  const ports = net.ports;
  for (let i = 0; i < ports.length; i++) {
    const p = ports[i];
    if (p.deviceMacHi === hi && p.deviceMacLo === lo) return p.id;
  }
  return -1;
}
