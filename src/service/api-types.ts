/**
 * The JSON shapes of the daemon's REST API. This is the one file the CLI
 * imports from `service`, so it holds types and constants only: importing it
 * must not load fastify, the data plane or the native addon.
 */

export const API_PREFIX = '/v1';
export const DEFAULT_SOCKET_PATH = '/run/vsw/vsw.sock';

/** Every driver name the API knows; only the ones in IMPLEMENTED_DRIVERS work today. */
export const NETWORK_DRIVERS = ['internal', 'nat', 'transparent', 'l2bridge', 'l2tunnel', 'overlay'] as const;
export type NetworkDriver = (typeof NETWORK_DRIVERS)[number];
export const IMPLEMENTED_DRIVERS: readonly NetworkDriver[] = ['internal'];

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
}

export interface CreateNetworkRequest {
  name: string;
  driver: NetworkDriver;
  subnet: string;
  gateway?: string;
}

export interface Endpoint {
  /** 12 lowercase hex characters. */
  id: string;
  name: string;
  /** Network name. */
  network: string;
  /** Network namespace name (under /run/netns). */
  netns: string;
  ifname: string;
  mac: string;
  ip: string;
  prefixLength: number;
  portId: number;
  created: string;
  /** True when the namespace is a compartment vsw created (vsw run) and removes with the endpoint. */
  ownedCompartment: boolean;
}

export interface CreateEndpointRequest {
  network: string;
  netns: string;
  /** An address, or an address with the network's prefix length (10.88.0.5/24). */
  ip?: string;
  mac?: string;
  ifname?: string;
  name?: string;
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
