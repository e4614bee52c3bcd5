/**
 * The JSON shapes of the daemon's REST API. This is the one file the CLI
 * imports from `service`, so it holds types and constants only: importing it
 * must not load fastify, TypeBox, the data plane or the native addon. The
 * requests' types are derived from their schemas (schemas.ts) by type-only
 * imports, which vanish from the compiled JS.
 */

import type { Static } from '@sinclair/typebox';
import type { Direction, GroupSpec, LayerSpec, RuleAction, RuleMatch, RuleSpec } from '../vfp/policy.js';
import type { TraceStep } from '../vfp/pipeline.js';
import type { VfpCounters } from '../vfp/vfp.js';
import type { NetworkDriver } from './api-constants.js';
import type {
  AddAclRuleBody,
  AddBackendBody,
  CreateLoadBalancerBody,
  LbProbeSchema,
  CreateCompartmentBody,
  CreateEndpointBody,
  CreateFabricEndpointBody,
  CreateNetworkBody,
  PortMappingSchema,
  PublishViaSchema,
  PutGroupBody,
  PutLayerBody,
  PutPeersBody,
  QosBody,
  RemoteEndpointBody,
  SpoofGuardBody,
  TraceBody,
} from './schemas.js';

export * from './api-constants.js';

// Requests: the types of their schemas in schemas.ts, which say what each field means.
export type CreateNetworkRequest = Static<typeof CreateNetworkBody>;
/** A container address behind a fabric port: POST /v1/networks/NAME/fabric-endpoints. */
export type CreateFabricEndpointRequest = Static<typeof CreateFabricEndpointBody>;
/** A remote endpoint behind a peer VTEP, pushed by an operator or a controller: POST /v1/networks/NAME/remotes. */
export type RemoteEndpointRequest = Static<typeof RemoteEndpointBody>;
export type PutPeersRequest = Static<typeof PutPeersBody>;
export type PublishVia = Static<typeof PublishViaSchema>;
/** A port published by an endpoint on a nat network (-p [IP:]HOSTPORT:CONTAINERPORT[/PROTO]). */
export type PortMapping = Static<typeof PortMappingSchema>;
export type CreateEndpointRequest = Static<typeof CreateEndpointBody>;
export type CreateCompartmentRequest = Static<typeof CreateCompartmentBody>;
/** POST /v1/endpoints/:endpoint/acl: one rule into a layer's group (both created as needed). */
export type AddAclRuleRequest = Static<typeof AddAclRuleBody>;
/** PUT /v1/endpoints/:endpoint/layers/:layer/groups/:group replaces the whole group at once. */
export type PutGroupRequest = Static<typeof PutGroupBody>;
/** PUT /v1/endpoints/:endpoint/layers/:layer creates or updates a layer (its groups stay). */
export type PutLayerRequest = Static<typeof PutLayerBody>;
export type QosPolicy = Static<typeof QosBody>;
export type SpoofGuardPolicy = Static<typeof SpoofGuardBody>;
/** POST /v1/trace */
export type TraceRequest = Static<typeof TraceBody>;
/** POST /v1/loadbalancers */
export type CreateLoadBalancerRequest = Static<typeof CreateLoadBalancerBody>;
export type LbProbe = Static<typeof LbProbeSchema>;
/** POST /v1/loadbalancers/:name/backends */
export type AddBackendRequest = Static<typeof AddBackendBody>;

/** A load balancer (VIP -> backends), balanced in the switch at each client's port (docs/LOADBALANCER.md). */
export interface LoadBalancer {
  id: string;
  name: string;
  network: string;
  vip: string;
  /** The MAC vsw answers ARP for the VIP with. */
  vipMac: string;
  protocol: 'tcp' | 'udp';
  port: number;
  affinity: 'none' | 'client-ip';
  /** nat networks: the host port published for the VIP (outside traffic to it is balanced too). */
  publish?: number;
  /** Absent: backends are never probed, and count as up. */
  probe?: Required<Pick<LbProbe, 'kind' | 'intervalMs' | 'timeoutMs' | 'unhealthyThreshold' | 'healthyThreshold'>> & { path?: string };
  backends: LbBackend[];
  created: string;
}

export interface LbBackend {
  /** How it was named when added ("web1", "web1:8080", "10.0.0.9:80"), and how it is named to rm or drain it. */
  name: string;
  /** The local endpoint's id; absent for a remote endpoint of an overlay network. */
  endpoint?: string;
  ip: string;
  port: number;
  /** Drained: no new connections; established ones finish. */
  draining: boolean;
  /** What the data plane does with it now: active (takes new connections), draining, or down (its probe fails, or its endpoint is down). */
  state?: 'active' | 'draining' | 'down';
  health?: LbBackendHealth;
  /** Connections balanced to it; of those, the ones whose connection-tracking entry is alive (TCP's TIME_WAIT included); bytes of its connections, both ways. */
  counters?: { connections: number; active: number; bytes: number };
}

export interface LbBackendHealth {
  /** up, down, or unknown before its first probe (counts as up), or unprobed (no probe, or a remote backend: probed where it runs). */
  status: 'up' | 'down' | 'unknown' | 'unprobed';
  /** Why the last probe failed. */
  lastError?: string;
  probes: number;
  failures: number;
  since?: string;
}

export interface Network {
  name: string;
  /** Small integer naming the network in the data plane; freed ids are reused. */
  id: number;
  driver: NetworkDriver;
  /** CIDR, e.g. 10.88.0.0/24. */
  subnet: string;
  gateway: string | null;
  /**
   * The address vsw answers DNS at for the network's endpoints (docs/DNS.md):
   * the gateway's, or the one given with --resolver on an internal or overlay
   * network without a gateway. Absent: no DNS in the switch (transparent,
   * l2bridge and l2tunnel networks use their LAN's).
   */
  resolver?: string;
  /** ISO 8601. */
  created: string;
  /** Ids of the endpoints attached to the network. */
  endpoints?: string[];
  /** Who made it, when not a person: "docker:NETWORKID" for a network created through the docker driver. */
  owner?: string;
  /** nat networks: the external side. */
  nat?: NatInfo;
  /** overlay networks: the tunnel. */
  overlay?: OverlayInfo;
  /** transparent, l2bridge and l2tunnel networks: the host interface they ride on. */
  uplink?: UplinkInfo;
  /** l2bridge networks of a fabric host: the port toward l2tunnel container hosts (--fabric), whose container addresses are fabric endpoints. */
  fabric?: UplinkInfo;
  /** "dhcp": endpoints get their addresses from the LAN's DHCP server (transparent networks); absent: vsw's own IPAM. */
  ipam?: 'dhcp';
  /** GET /v1/networks/NAME only: the data path's stages of the network, in the order frames meet them, with their counters. */
  stages?: NetworkStageView[];
}

export interface NetworkStageView {
  name: string;
  /** The drop reasons it can give (counted on ports, see vsw stats). */
  dropReasons: string[];
  counters: Record<string, number>;
}

export interface UplinkInfo {
  /** The host interface, read and written through an AF_PACKET socket. */
  interface: string;
  /** Its own MAC: frames to it are the host's. */
  mac: string;
  /** Its MTU when the network was made (or the daemon last opened it): the endpoints get it too. */
  mtu?: number;
  /** The host's own IPv4 address on it inside the network's subnet, when it has one: never handed to a container (untagged l2bridge requires it). */
  hostAddress?: string;
  /** The 802.1Q VLAN the network is on, or absent for untagged. */
  vlan?: number;
  /** Why the uplink is not attached, or null when it is. */
  down?: string;
}

export interface OverlayInfo {
  vni: number;
  /** This host's underlay address, where the tunnel starts and ends. */
  vtep: string;
  /** The underlay interface holding the VTEP address, and its MTU. */
  underlayInterface: string;
  underlayMtu: number;
  /** UDP port of VXLAN, here and at the peers. */
  vxlanPort: number;
  /** The other hosts' VTEPs. */
  peers: string[];
  /** IP MTU of the network's endpoints: the underlay's minus 50 bytes of encapsulation unless set lower. */
  mtu: number;
  /** The addresses this host hands out (FIRST-LAST): its share of the subnet, so that hosts never hand out the same one. */
  ipRange: string;
}

export interface NatInfo {
  /** The host TAP: the network's one interface in the host namespace. */
  hostInterface: string;
  /** The transit subnet between the host and vsw, e.g. 100.127.0.0/30. */
  transit: string;
  /** The kernel's address on the host interface. */
  hostIp: string;
  /** vsw's address on it: every container's traffic leaves from here. */
  externalIp: string;
  /** The external ports handed out to outbound flows, per protocol, e.g. "1024-65535". */
  ports: string;
  /** Interfaces (those of the host's default routes) whose traffic from externalIp the kernel masquerades. */
  masqueradeVia: string[];
  /** Every change made to the host for this network; all are undone when it is removed. */
  hostChanges: string[];
  /** Only while the host interface is down (it vanished, or read() failed): why. vsw keeps trying to bring it back. */
  hostInterfaceDown?: string;
}

/** GET /v1/overlay: one overlay network's tunnel, tables and counters. */
export interface OverlayNetworkState {
  network: string;
  vni: number;
  vtep: string;
  vxlanPort: number;
  mtu: number;
  peers: string[];
  /** The remote endpoints pushed through the API. */
  remotes: RemoteEndpointRequest[];
  /** MAC -> VTEP: static (pushed) and learned (from decapsulated frames) entries. */
  vteps: { mac: string; vtep: string; kind: 'static' | 'learned'; ageSeconds: number | null }[];
  /** IP -> MAC entries ARP suppression answers from. */
  arp: { ip: string; mac: string; kind: 'static' | 'learned'; ageSeconds: number | null }[];
  counters: {
    /** Frames into the tunnel (super-frames once), their segments, floods to every peer, datagrams written per peer, ARP answered locally. */
    /** drops: the tunnel port's, by reason (a decapsulated frame too large for the port, a frame refused at encapsulation...). */
    tunnel: { framesIn: number; framesOut: number; segmented: number; segments: number; flooded: number; replicated: number; arpSuppressed: number; arpUnknown: number; tooBig: number; encapFailed: number; notPeer: number; drops: Record<string, number> };
    /** The underlay socket, shared by the networks on the same VTEP and port: datagrams sent and received, and drops by reason. */
    underlay: { datagramsIn: number; datagramsOut: number; sendFailed: number; drops: Record<string, number> };
  };
}

export interface EndpointLease {
  /** The DHCP server that leased the address. */
  server: string;
  /** The default route the lease gave, if any. */
  router?: string;
  leaseSeconds: number;
  /** ISO 8601: when the server last granted or extended it. */
  granted: string;
}

export interface Endpoint {
  /** 12 lowercase hex characters. */
  id: string;
  name: string;
  /** Network name. */
  network: string;
  /** Network namespace: a name under /run/netns, or the path of one (CNI_NETNS, a docker sandbox). */
  netns: string;
  /**
   * For a namespace known by path: its inode when the endpoint was made there. A path such as
   * /proc/PID/ns/net names another namespace once the PID is reused; this tells them apart.
   */
  netnsInode?: number;
  ifname: string;
  mac: string;
  ip: string;
  prefixLength: number;
  portId: number;
  created: string;
  /** True when the namespace is a compartment vsw created (vsw run) and removes with the endpoint. */
  ownedCompartment: boolean;
  /** Published ports (nat networks). */
  publish?: PortMapping[];
  /** How the host ports reach the network (see CreateEndpointRequest.publishVia); absent: proxy. */
  publishVia?: PublishVia;
  /** On a --ipam dhcp network: the lease its address came with (vsw renews it, and releases it with the endpoint). */
  dhcp?: EndpointLease;
  /**
   * A VM's endpoint: no TAP and no namespace (netns and ifname are empty), a virtio-net NIC over
   * vhost-user. `socket` is the unix socket vsw serves (mode server) or connects to (client).
   */
  vhostUser?: { socket: string; mode: 'server' | 'client' };
  /** A VM endpoint's device as the switch sees it now (not saved). */
  vhost?: VhostEndpointState;
  /** A fabric endpoint (vsw fabric add): no TAP and no namespace, a container address behind the network's fabric port (this interface), with its own policy. */
  fabric?: string;
  /** Who made it, when a runtime did: "cni:CONTAINERID/IFNAME" or "docker:ENDPOINTID"; unique, so a runtime's repeated request finds it. */
  owner?: string;
  /**
   * True while the TAP waits in the daemon's namespace for its runtime (docker) to move it into the
   * container and configure it there: vsw sets only its MAC and MTU.
   */
  unplaced?: boolean;
  /** While unplaced: the container namespace the runtime said it moves the TAP into (docker's sandbox, at Join). */
  handedTo?: string;
  /** Whether the switch is moving its frames ('down': its TAP vanished or read() failed; vsw keeps trying to bring it back). Not saved: it is what the daemon sees now. */
  state?: 'up' | 'down';
  /** Why it is down, one sentence. */
  stateReason?: string;
}

/** What `vsw endpoint inspect` shows of a VM endpoint's vhost-user device. */
export interface VhostEndpointState {
  /** waiting: no VMM connected; connected: the guest's driver has not started the queues; running: frames move; broken: the guest broke a ring rule and its queues are stopped. */
  state: 'waiting' | 'connected' | 'running' | 'broken';
  /** The virtio features the VMM acked (hex), while connected. */
  features?: string;
  /** While connected: whether the guest's memory files are sealed against shrinking (a memfd, which vsw seals if QEMU did not); otherwise the VMM is trusted not to truncate them under vsw. */
  memorySealed?: boolean;
  /** Why the queues were stopped, while broken. */
  broken?: string;
  /** Connections since the daemon started. */
  connections: number;
  /** Times the guest broke a ring since the daemon started. */
  brokenCount: number;
  /** Frames for the guest dropped because it had posted no receive buffer. */
  rxNoBuffer: number;
  /** Frames for the guest dropped because they did not fit its buffers whole. */
  rxUnfit: number;
}

/** GET /v1/nat[?network=N]: one entry per nat network. */
export interface NatNetworkState {
  network: string;
  externalIp: string;
  counters: {
    /** Dynamic translations created since the network was. */
    created: number;
    /** Translations freed because their connection ended or idled out. */
    expired: number;
    /** New flows dropped because the port pool was exhausted. */
    refused: number;
    active: number;
    poolSize: number;
  };
  published: { protocol: 'tcp' | 'udp'; external: string; target: string; endpoint: string | null }[];
  /** Counters of the host TAP (drops by reason: natNoMapping counts what came from the host with no translation). */
  hostPort: Omit<PortStats, 'endpoint' | 'name' | 'network' | 'netns'>;
  /** Absent with ?counters=only. */
  translations?: NatTranslation[];
}

export interface NatTranslation {
  protocol: string;
  /** Container address:port (ICMP: the echo identifier). */
  inside: string;
  /** External address:port it is seen as. */
  external: string;
  remote: string;
  endpoint: string | null;
  /** The connection state the translation lives by. */
  state: string;
  idleSeconds: number;
}

export interface Compartment {
  name: string;
  created: string;
}

export interface VersionResponse {
  version: string;
}

export interface PortStats {
  /** Endpoint id. */
  endpoint: string;
  /** Endpoint name. */
  name: string;
  network: string;
  netns: string;
  ifname: string;
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Drop counts by reason name (src/packet/drop-reasons.ts); only reasons that happened. */
  drops: Record<string, number>;
  dropsTotal: number;
}

export interface SwitchStats {
  /** MAC table counters: learned, moved, aged, evicted, and whatever else the data plane reports. */
  macTable: Record<string, number>;
  /** Receive batches handled since the start. */
  batches: number;
  /** Ports attached to the data plane. */
  ports: number;
  vfp: VfpStats;
}

export interface StatsResponse {
  ports: PortStats[];
  /** The host interfaces networks ride on (uplinks and fabric ports, one row each), with their port counters. */
  uplinks: UplinkStats[];
  switch: SwitchStats;
}

export type UplinkStats = Omit<PortStats, 'endpoint' | 'name' | 'netns' | 'ifname'> & {
  interface: string;
  /** The network's VLAN on it, when tagged. */
  vlan?: number;
  /** A fabric port (toward l2tunnel container hosts), not an uplink. */
  fabric?: true;
  /** Why it is not attached, when it is not. */
  down?: string;
};

/** The body of every 4xx and 5xx answer. */
export interface ErrorBody {
  /** One sentence: what is wrong and what to do. */
  error: string;
}

// ---------------------------------------------------------------- VFP policy

// The policy model is src/vfp/policy.ts; these names are its JSON as the API speaks it.
// Type-only imports: the CLI loads this file, and they vanish from the compiled JS.
export type PolicyDirection = Direction;
export type PolicyAction = RuleAction;
export type PolicyMatch = RuleMatch;
export type PolicyRule = RuleSpec;

/** A rule as listed, with where it lives and how many flows matched it. */
export interface AclRule extends PolicyRule {
  id: string;
  endpoint: string;
  layer: string;
  group: string;
  /** Flows whose setup matched this rule since it was installed. */
  hits: number;
}

export type PolicyGroup = GroupSpec;

export type PolicyLayer = LayerSpec;

/** GET /v1/endpoints/:endpoint/policy */
export interface EndpointPolicy {
  endpoint: string;
  layers: PolicyLayer[];
  spoofGuard: SpoofGuardPolicy;
  qos: QosPolicy | null;
}

export interface FlowEntry {
  /** Endpoint id the flow came in from. */
  endpoint: string;
  /** Endpoint id it goes to, or null for a dropped flow. */
  egress: string | null;
  action: 'forward' | 'drop';
  /** Drop reason name for dropped flows. */
  dropReason?: string;
  /** One line: proto src:port > dst:port (MACs in brackets). */
  flow: string;
  protocol: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  packets: number;
  bytes: number;
  ageSeconds: number;
  idleSeconds: number;
  /** What the cached transposition rewrites, or null. */
  rewrite: Record<string, string | number> | null;
}

export type VfpStats = VfpCounters;

/** GET /v1/flows[?endpoint=E] */
export interface FlowsResponse {
  flows: FlowEntry[];
  stats: VfpStats;
}

/** A step of the slow path (src/vfp/pipeline.ts), with the port named by its endpoint. */
export type TraceStepView = Omit<TraceStep, 'port'> & {
  /** Endpoint the step ran at. */
  endpoint?: string;
};

export interface TraceResponse {
  packet: string;
  steps: TraceStepView[];
  verdict: 'allow' | 'block';
  dropReason?: string;
  /** Where the frame would go: an endpoint id, "flood", a port of the network by kind ("host/IF", "tunnel/vniN", "uplink/IF", "fabric/IF"), or null when dropped. */
  egress: string | null;
  /** Header fields the flow's transposition would rewrite. */
  rewrite: Record<string, string | number> | null;
}
