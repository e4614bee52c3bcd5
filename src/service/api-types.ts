/**
 * The JSON shapes of the daemon's REST API. This is the one file the CLI
 * imports from `service`, so it holds types and constants only: importing it
 * must not load fastify, the data plane or the native addon.
 */

import type { Direction, GroupSpec, LayerSpec, RuleAction, RuleMatch, RuleSpec } from '../vfp/policy.js';
import type { TraceStep } from '../vfp/pipeline.js';
import type { VfpCounters } from '../vfp/vfp.js';

export const API_PREFIX = '/v1';
export const DEFAULT_SOCKET_PATH = '/run/vsw/vsw.sock';
/** Where the daemon keeps its desired state (state.json), the connections it hands to its successor, and its lock. */
export const DEFAULT_STATE_DIR = '/var/lib/vsw';
/** `vsw daemon --docker` with no socket: where dockerd looks for the network driver named vsw. */
export const DEFAULT_DOCKER_SOCKET = '/run/docker/plugins/vsw.sock';
/** `vsw daemon --metrics` with no address: Prometheus metrics on loopback only. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9483';

/** Every driver name the API knows; only the ones in IMPLEMENTED_DRIVERS work today. */
export const NETWORK_DRIVERS = ['internal', 'nat', 'transparent', 'l2bridge', 'l2tunnel', 'overlay'] as const;
export type NetworkDriver = (typeof NETWORK_DRIVERS)[number];
export const IMPLEMENTED_DRIVERS: readonly NetworkDriver[] = ['internal', 'nat', 'overlay'];
/** RFC 7348's port for VXLAN. */
export const DEFAULT_VXLAN_PORT = 4789;

/** Where nat networks take their transit /30 from when --transit is not given (the top of RFC 6598 space). */
export const DEFAULT_TRANSIT_POOL = '100.127.0.0/16';
export const DEFAULT_NAT_PORTS = '1024-65535';

export interface Network {
  name: string;
  /** Small integer naming the network in the data plane; freed ids are reused. */
  id: number;
  driver: NetworkDriver;
  /** CIDR, e.g. 10.88.0.0/24. */
  subnet: string;
  gateway: string | null;
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

export interface CreateNetworkRequest {
  name: string;
  driver: NetworkDriver;
  subnet: string;
  gateway?: string;
  /** nat: the transit subnet (prefix /30 or shorter); default: a free /30 from 100.127.0.0/16. */
  transit?: string;
  /** nat: vsw's address in the transit subnet; default: its second host address. */
  externalIp?: string;
  /** nat: "FIRST-LAST", the external port pool per protocol; default 1024-65535. */
  natPorts?: string;
  /** overlay: the VXLAN network identifier, 1..16777215. */
  vni?: number;
  /** overlay: this host's underlay address; default the source address of the route to the first peer. */
  vtep?: string;
  /** overlay: the other hosts' VTEPs. */
  peers?: string[];
  /** overlay: the UDP port of VXLAN; default 4789. */
  vxlanPort?: number;
  /** overlay: the endpoints' MTU; default the underlay's minus 50. */
  mtu?: number;
  /** overlay: the part of the subnet this host hands out, as CIDR or FIRST-LAST; default a share by the VTEP's place among all VTEPs. */
  ipRange?: string;
  /** Who asks (a runtime's driver), e.g. "docker:NETWORKID"; unique among networks. */
  owner?: string;
}

/** A remote endpoint behind a peer VTEP, pushed by an operator or a controller: POST /v1/networks/NAME/remotes. */
export interface RemoteEndpointRequest {
  mac: string;
  ip?: string;
  vtep: string;
}

export interface PutPeersRequest {
  peers: string[];
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
    tunnel: { framesIn: number; framesOut: number; segmented: number; segments: number; flooded: number; replicated: number; arpSuppressed: number; arpUnknown: number; tooBig: number; encapFailed: number; notPeer: number };
    /** The underlay socket, shared by the networks on the same VTEP and port: datagrams sent and received, and drops by reason. */
    underlay: { datagramsIn: number; datagramsOut: number; sendFailed: number; drops: Record<string, number> };
  };
}

export type PublishVia = 'proxy' | 'dnat';

/** A port published by an endpoint on a nat network (-p [IP:]HOSTPORT:CONTAINERPORT[/PROTO]). */
export interface PortMapping {
  protocol: 'tcp' | 'udp';
  /** Host address the host-side listener binds; default 0.0.0.0 (all). */
  hostIp?: string;
  /** 0 in a request: vsw picks a free port from the host's ephemeral range (ip_local_port_range); the answer carries the one chosen. */
  hostPort: number;
  containerPort: number;
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

export interface CreateEndpointRequest {
  network: string;
  netns: string;
  /** An address, or an address with the network's prefix length (10.88.0.5/24). */
  ip?: string;
  mac?: string;
  ifname?: string;
  name?: string;
  /** Default true: the endpoint may send only from its own MAC and IP. */
  spoofGuard?: boolean;
  /** Ports to publish on the network's external address and the host (nat networks only). */
  publish?: PortMapping[];
  /**
   * How host ports reach the network. "proxy" (default): vsw listens on each host port and forwards.
   * "dnat": the kernel redirects them (nftables), for runtimes that hold the host port open
   * themselves so nothing else takes it (podman), as the CNI portmap plugin does.
   */
  publishVia?: PublishVia;
  /**
   * A runtime's key for the endpoint (see Endpoint.owner). A second request with the same owner,
   * network and namespace gets the endpoint made by the first (200 instead of 201).
   */
  owner?: string;
  /**
   * Default true. false: vsw makes the TAP with its MAC (and MTU) but no address, route or link up:
   * the runtime moves it into its container and configures it there (docker).
   */
  configure?: boolean;
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

export interface CreateCompartmentRequest {
  name: string;
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
  switch: SwitchStats;
}

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

/** POST /v1/endpoints/:endpoint/acl: one rule into a layer's group (both created as needed). */
export interface AddAclRuleRequest extends PolicyRule {
  /** Default "acl". */
  layer?: string;
  /** Default "default". */
  group?: string;
}

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

/** PUT /v1/endpoints/:endpoint/layers/:layer/groups/:group replaces the whole group at once. */
export type PutGroupRequest = Omit<PolicyGroup, 'name'>;

export type PolicyLayer = LayerSpec;

/** PUT /v1/endpoints/:endpoint/layers/:layer creates or updates a layer (its groups stay). */
export interface PutLayerRequest {
  priority?: number;
  defaultIn?: 'allow' | 'block';
  defaultOut?: 'allow' | 'block';
}

export interface QosPolicy {
  /** e.g. "100mbit". */
  maxEgress: string;
  /** Bucket size, e.g. "1mb"; default 10 ms at the rate, at least 64 KiB. */
  burst?: string;
}

export interface SpoofGuardPolicy {
  enabled: boolean;
  /** Addresses the endpoint may send from besides its own. */
  allowedIps?: string[];
}

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

/** POST /v1/trace */
export interface TraceRequest {
  endpoint: string;
  direction: 'in' | 'out';
  /** e.g. "tcp 10.0.0.2:1234 > 10.0.0.3:80 syn", "udp 10.0.0.2:5000 > 10.0.0.3:53", "icmp 10.0.0.2 > 10.0.0.3 echo-request". */
  packet: string;
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
  /** Where the frame would go: an endpoint id, "flood", or null when dropped. */
  egress: string | null;
  /** Header fields the flow's transposition would rewrite. */
  rewrite: Record<string, string | number> | null;
}
