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
  hosts: `${ROOT}hosts/`,
  host: (name: string): string => `${ROOT}hosts/${name}`,
  realized: `${ROOT}realized/`,
  realizedOf: (network: string): string => `${ROOT}realized/${network}/`,
  realizedEndpoint: (network: string, name: string): string => `${ROOT}realized/${network}/${name}`,
  status: `${ROOT}status/`,
  statusOf: (host: string): string => `${ROOT}status/${host}/`,
  objectStatus: (host: string, kind: StatusKind, name: string): string => `${ROOT}status/${host}/${kind}/${name}`,
} as const;

/** An overlay network across chosen hosts: the same subnet and VNI on each. */
export interface ControllerNetwork {
  name: string;
  driver: 'overlay';
  subnet: string;
  vni: number;
  /** The hosts it spans (their agents create it). */
  hosts: string[];
  mtu?: number;
  created: string;
}

/** An endpoint placed on a host: the agent there makes it in `netns`. */
export interface ControllerEndpoint {
  name: string;
  network: string;
  host: string;
  netns: string;
  /** Allocated by the controller from the network's subnet (or asked for). */
  ip: string;
  created: string;
}

/** What an agent says of its host while it lives. */
export interface HostRecord {
  name: string;
  /** The underlay address its overlay networks' VXLAN comes from. */
  vtep: string;
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

export type StatusKind = 'networks' | 'endpoints' | 'groups';

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
