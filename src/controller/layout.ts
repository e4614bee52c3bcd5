/**
 * Where the controller keeps desired state in etcd, and what each key holds
 * (docs/CONTROLLER.md has the table). Every value is JSON. Under one prefix
 * with a schema version, so a controller or an agent that finds a version it
 * does not know stops with one sentence instead of misreading the state.
 *
 *   /vsw/schema                                  "1"
 *   /vsw/v1/networks/NET                         ControllerNetwork: desired (northbound writes)
 *   /vsw/v1/endpoints/NET/NAME                   ControllerEndpoint: desired placement (northbound writes)
 *   /vsw/v1/addresses/NET/IP                     the endpoint NAME holding IP (allocation by transaction)
 *   /vsw/v1/policies/NAME                        ControllerPolicy: a group of rules for an endpoint, or for a prefix's
 *   /vsw/v1/loadbalancers/NAME                   ControllerLoadBalancer: a VIP and its backends on one network's hosts
 *   /vsw/v1/hosts/HOST                           HostRecord, under the agent's lease (gone when it dies)
 *   /vsw/v1/realized/NET/NAME                    RealizedEndpoint, under its host's agent's lease
 *   /vsw/v1/status/HOST/KIND/NAME                ObjectStatus: what the agent applied, or why it failed
 *
 * Desired keys are written only by controllers, the rest only by agents, so
 * nothing needs a lock: address allocation is a create-if-absent transaction
 * on the address's key, which two controllers side by side can race safely.
 */
import type { GroupSpec } from '../vfp/policy.js';

export const SCHEMA_KEY = '/vsw/schema';
export const SCHEMA_VERSION = '1';
export const ROOT = '/vsw/v1/';

export const Keys = {
  networks: `${ROOT}networks/`,
  network: (name: string): string => `${ROOT}networks/${name}`,
  endpoints: `${ROOT}endpoints/`,
  endpointsOf: (network: string): string => `${ROOT}endpoints/${network}/`,
  endpoint: (network: string, name: string): string => `${ROOT}endpoints/${network}/${name}`,
  addressesOf: (network: string): string => `${ROOT}addresses/${network}/`,
  address: (network: string, ip: string): string => `${ROOT}addresses/${network}/${ip}`,
  policies: `${ROOT}policies/`,
  policy: (name: string): string => `${ROOT}policies/${name}`,
  loadBalancers: `${ROOT}loadbalancers/`,
  loadBalancer: (name: string): string => `${ROOT}loadbalancers/${name}`,
  hosts: `${ROOT}hosts/`,
  host: (name: string): string => `${ROOT}hosts/${name}`,
  realized: `${ROOT}realized/`,
  realizedOf: (network: string): string => `${ROOT}realized/${network}/`,
  realizedEndpoint: (network: string, name: string): string => `${ROOT}realized/${network}/${name}`,
  status: `${ROOT}status/`,
  statusOf: (host: string): string => `${ROOT}status/${host}/`,
  objectStatus: (host: string, kind: StatusKind, name: string): string => `${ROOT}status/${host}/${kind}/${name}`,
} as const;

/** The network modes the controller makes on its hosts. */
export const CONTROLLER_DRIVERS = ['overlay', 'nat', 'internal', 'transparent', 'l2bridge'] as const;
export type ControllerDriver = (typeof CONTROLLER_DRIVERS)[number];

/**
 * Whether the network's hosts share one segment (an overlay's VNI, the LAN
 * of transparent and l2bridge networks), so an address must be unique across
 * all of them and the controller hands it out; a nat or internal network is
 * each host's own, with the same subnet on each, and each host's daemon
 * allocates its addresses.
 */
export function sharedSegment(driver: ControllerDriver): boolean {
  return driver !== 'nat' && driver !== 'internal';
}

/**
 * A network on chosen hosts: an overlay with the same subnet and VNI on
 * each (every member the others' VTEP peer), or a network of one of the
 * per-host modes made alike on each host.
 */
export interface ControllerNetwork {
  name: string;
  driver: ControllerDriver;
  subnet: string;
  /** Overlay networks only. */
  vni?: number;
  /** The hosts it spans (their agents create it). */
  hosts: string[];
  mtu?: number;
  /** The rest of a host's network request (gateway, uplink, ipRange, NAT options...), given to each host's daemon as it was given here. */
  options?: Record<string, unknown>;
  created: string;
}

/** An endpoint placed on a host: the agent there makes it in `netns`. */
export interface ControllerEndpoint {
  name: string;
  network: string;
  host: string;
  /** The namespace on its host; empty for a VM endpoint. */
  netns: string;
  /** A VM endpoint: its vhost-user socket on its host (docs/VM.md). */
  vhostUser?: { socket: string; mode: 'server' | 'client' };
  /** Allocated by the controller from the network's subnet on a shared segment, or asked for; else the host's daemon allocates it (its realized key has it). */
  ip?: string;
  created: string;
}

/** What an agent says of its host while it lives. */
export interface HostRecord {
  name: string;
  /** The underlay address its overlay networks' VXLAN comes from. */
  vtep: string;
  /** Its Ethernet interfaces when it registered: what a transparent or l2bridge network's --uplink can name. */
  uplinks?: string[];
  /** When the agent (re)registered. */
  since: string;
}

/** An endpoint as its host made it: where the other members send its frames. */
export interface RealizedEndpoint {
  network: string;
  name: string;
  host: string;
  ip: string;
  mac: string;
  vtep: string;
  /** Its interface in its namespace. */
  ifname?: string;
}

/**
 * A group of VFP rules (the same as one host's: src/vfp/policy.ts) put into
 * a layer of every endpoint it addresses: one endpoint by name, or every
 * endpoint of the network whose address is in a prefix (policy specific to
 * an IP address, as the brief has it).
 */
export interface ControllerPolicy {
  name: string;
  network: string;
  endpoint?: string;
  prefix?: string;
  layer: string;
  group: string;
  spec: Omit<GroupSpec, 'name'>;
  created: string;
}

/**
 * A load balancer on every host of its network (src/service/lb.ts there):
 * the balancing is done at each client's port, so each host needs it. On a
 * shared segment the controller allocates the VIP (an address key of the
 * network, so no endpoint gets it); backends are the controller's endpoint
 * names (or IP:PORT), each host taking those it reaches: its own, and on an
 * overlay the other members' by address.
 */
export interface ControllerLoadBalancer {
  name: string;
  network: string;
  vip?: string;
  protocol: 'tcp' | 'udp';
  port: number;
  affinity?: 'none' | 'client-ip';
  probe?: Record<string, unknown>;
  publish?: number;
  backends: { name: string; draining: boolean }[];
  created: string;
}

export type StatusKind = 'networks' | 'endpoints' | 'groups' | 'loadbalancers';

/** Like a Kubernetes object's status: per host and object, what the agent did with the revision it saw. */
export interface ObjectStatus {
  state: 'applied' | 'failed';
  /** Why it failed, one sentence. */
  reason?: string;
  /** The etcd revision of the desired object it applied. */
  revision: number;
  at: string;
}

/** The name part after a prefix ("/vsw/v1/endpoints/blue/web1" under endpoints/ is ["blue", "web1"]). */
export function keyParts(key: string, prefix: string): string[] {
  return key.slice(prefix.length).split('/');
}

/** Whether dotted-quad `ip` is inside `prefix` ("10.10.0.0/24", network address and length). */
export function inPrefix(ip: string, prefix: string): boolean {
  const [net, bits] = prefix.split('/');
  const mask = Number(bits) === 0 ? 0 : (0xffffffff << (32 - Number(bits))) >>> 0;
  const toInt = (a: string): number => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  return ((toInt(ip) & mask) >>> 0) === toInt(net);
}
