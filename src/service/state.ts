/**
 * The daemon's desired state, in memory: networks with their IPAM, endpoints
 * with the TAP fds vsw holds, and the compartments (namespaces) vsw created.
 * Lookups and bookkeeping only; the side effects live in service.ts.
 */
import type { PortPolicy } from '../vfp/policy.js';
import type { Compartment, Endpoint, NatInfo, Network, OverlayInfo, RemoteEndpointRequest } from './api-types.js';
import type { PortProxy } from '../nat/proxy.js';
import { notFound } from './errors.js';
import { IdPool } from './id-pool.js';
import type { Ipam } from './ipam.js';

/** Ids start at 1 for networks and ports: 0 never names a live object in the data plane's tables. */
const MAX_NETWORK_ID = 4095;

export interface NetworkRecord {
  network: Network;
  ipam: Ipam;
  /** nat networks: the external side (src/service/nat.ts). */
  nat?: NatRecord;
  /** overlay networks: the tunnel (src/service/overlay.ts). */
  overlay?: OverlayRecord;
}

export interface OverlayRecord {
  info: OverlayInfo;
  /** The data plane's tunnel port of the network. */
  tunnelPortId: number;
  /** The underlay socket set it rides on, shared by key VTEP:PORT. */
  uplinkKey: string;
  /** Remote endpoints pushed through the API, by MAC. */
  remotes: Map<string, RemoteEndpointRequest>;
}

export interface NatRecord {
  info: NatInfo;
  /** The host TAP's fd; closing it removes the TAP. */
  fd: number;
  /** The host TAP's port in the data plane; -1 until attached. */
  portId: number;
  /** The nftables table vsw installed, or null when there was no default route to masquerade through. */
  table: string | null;
}

export interface EndpointRecord {
  endpoint: Endpoint;
  /** The TAP's fd; closing it removes the (non-persistent) TAP. */
  fd: number;
  networkId: number;
  /** The VFP policy running on the endpoint's port. */
  policy: PortPolicy;
  /** Host-side listeners of its published ports. */
  proxies?: PortProxy[];
}

export class State {
  readonly networks = new Map<string, NetworkRecord>();
  readonly endpoints = new Map<string, EndpointRecord>();
  readonly compartments = new Map<string, Compartment>();
  readonly networkIds = new IdPool(1, MAX_NETWORK_ID, 'network');
  readonly portIds: IdPool;

  constructor(maxPorts: number) {
    this.portIds = new IdPool(1, maxPorts - 1, 'port');
  }

  requireNetwork(name: string): NetworkRecord {
    const record = this.networks.get(name);
    if (!record) throw notFound(`network ${name} not found: list networks with \`vsw network ls\`.`);
    return record;
  }

  /** An endpoint by id, by name, or by a unique id prefix (as docker accepts short ids). */
  findEndpoint(idOrName: string): EndpointRecord | undefined {
    const exact = this.endpoints.get(idOrName) ?? this.endpointNamed(idOrName);
    if (exact) return exact;
    const byPrefix = [...this.endpoints.values()].filter((r) => r.endpoint.id.startsWith(idOrName));
    return idOrName.length >= 4 && byPrefix.length === 1 ? byPrefix[0] : undefined;
  }

  requireEndpoint(idOrName: string): EndpointRecord {
    const record = this.findEndpoint(idOrName);
    if (!record) throw notFound(`endpoint ${idOrName} not found: list endpoints with \`vsw endpoint ls\`.`);
    return record;
  }

  endpointNamed(name: string): EndpointRecord | undefined {
    return [...this.endpoints.values()].find((r) => r.endpoint.name === name);
  }

  endpointsOn(network: string): EndpointRecord[] {
    return [...this.endpoints.values()].filter((r) => r.endpoint.network === network);
  }

  endpointsIn(netns: string): EndpointRecord[] {
    return [...this.endpoints.values()].filter((r) => r.endpoint.netns === netns);
  }

  /** The network as the API shows it, with the ids of its endpoints. */
  networkView(record: NetworkRecord): Network {
    const view: Network = { ...record.network, endpoints: this.endpointsOn(record.network.name).map((r) => r.endpoint.id) };
    if (record.nat) view.nat = { ...record.nat.info };
    if (record.overlay) view.overlay = { ...record.overlay.info, peers: [...record.overlay.info.peers] };
    return view;
  }

  listNetworks(): Network[] {
    return [...this.networks.values()].map((r) => this.networkView(r));
  }

  listEndpoints(network?: string): Endpoint[] {
    const records = network === undefined ? [...this.endpoints.values()] : this.endpointsOn(network);
    return records.map((r) => r.endpoint);
  }
}
