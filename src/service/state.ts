/**
 * The daemon's desired state, in memory: networks with their IPAM, endpoints
 * with the TAP fds vsw holds, and the compartments (namespaces) vsw created.
 * Lookups and bookkeeping only; the side effects live in service.ts, and
 * toSaved() is what goes to disk (src/service/state-file.ts).
 */
import { randomBytes } from 'node:crypto';
import type { PortPolicy } from '../vfp/policy.js';
import type { Compartment, Endpoint, LoadBalancer, NatInfo, Network, OverlayInfo, RemoteEndpointRequest, UplinkInfo, VhostEndpointState } from './api-types.js';
import type { PortProxy } from '../nat/proxy.js';
import { notFound } from './errors.js';
import { IdPool } from './id-pool.js';
import { vhostDownReason, vhostStateAfter } from './vhost.js';
import type { Ipam } from './ipam.js';
import { currentNetns, STATE_VERSION, type HostLedger, type SavedState } from './state-file.js';

/** Ids start at 1 for networks and ports: 0 never names a live object in the data plane's tables. */
const MAX_NETWORK_ID = 4095;

export interface NetworkRecord {
  network: Network;
  ipam: Ipam;
  /** nat networks: the external side (src/service/nat.ts). */
  nat?: NatRecord;
  /** overlay networks: the tunnel (src/service/overlay.ts). */
  overlay?: OverlayRecord;
  /** transparent, l2bridge and l2tunnel networks: the host interface they ride on (src/service/uplink.ts). */
  uplink?: UplinkRecord;
  /** An l2bridge network of a fabric host: its port toward l2tunnel container hosts (--fabric). */
  fabric?: UplinkRecord;
}

export interface UplinkRecord {
  info: UplinkInfo;
  /** The AF_PACKET socket on it, or -1 while it is not open. */
  fd: number;
  /** Its port in the data plane; -1 until attached. */
  portId: number;
  /** Why it is not attached, or null when it is. */
  down: string | null;
}

export interface OverlayRecord {
  info: OverlayInfo;
  /** The data plane's tunnel port of the network. */
  tunnelPortId: number;
  /** The underlay socket set it rides on, shared by key VTEP:PORT. */
  uplinkKey: string;
  /** Remote endpoints pushed through the API, by MAC. */
  remotes: Map<string, RemoteEndpointRequest>;
  /** The port id of the underlay sockets it rides on (shared by the networks on the same VTEP and port). */
  uplinkId: number;
}

export interface NatRecord {
  info: NatInfo;
  /** The host TAP's fd; closing it removes the TAP. */
  fd: number;
  /** The host TAP's port in the data plane; -1 until attached. */
  portId: number;
  /** The nftables table vsw installed, or null when there was no default route to masquerade through. */
  table: string | null;
  /** Why the host TAP is not attached (it vanished, or read() failed), or null when it is. */
  down: string | null;
}

export interface EndpointRecord {
  endpoint: Endpoint;
  /** The TAP's fd, or -1 while the endpoint is down. The TAP is persistent once the endpoint is saved. */
  fd: number;
  /** Why the switch is not moving the endpoint's frames, or null when it is. */
  down: string | null;
  networkId: number;
  /** The VFP policy running on the endpoint's port. */
  policy: PortPolicy;
  /** Host-side listeners of its published ports. */
  proxies?: PortProxy[];
  /** A VM endpoint's device as the data plane last reported it. */
  vhost?: VhostEndpointState;
}

export class State {
  readonly networks = new Map<string, NetworkRecord>();
  readonly endpoints = new Map<string, EndpointRecord>();
  readonly compartments = new Map<string, Compartment>();
  /** Load balancers by name (src/service/lb.ts). */
  readonly loadBalancers = new Map<string, LoadBalancer>();
  readonly networkIds = new IdPool(1, MAX_NETWORK_ID, 'network');
  readonly portIds: IdPool;
  /** Host changes vsw owns beyond the networks (written to disk before they are made). */
  host: HostLedger = { forwardingSetByVsw: false, nftTables: [] };

  /** Records an nftables table as vsw's (saved by `commit`) before it is installed, so a restart or a reset after a crash removes it. */
  async ownNftTable(table: string, commit: () => Promise<void>): Promise<void> {
    if (this.host.nftTables.includes(table)) return;
    this.host.nftTables.push(table);
    try {
      await commit();
    } catch (err) {
      this.host.nftTables = this.host.nftTables.filter((t) => t !== table);
      throw err;
    }
  }
  /** Of the last state written or read: one more with every write. */
  generation = 0;
  /** The state's identity, kept across writes and restarts (a new one only for a new state). */
  id = randomBytes(8).toString('hex');

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

  /** The network a runtime made under this owner key (Network.owner), if any. */
  networkByOwner(owner: string): NetworkRecord | undefined {
    for (const r of this.networks.values()) if (r.network.owner === owner) return r;
    return undefined;
  }

  /** The endpoint a runtime made under this owner key (Endpoint.owner), if any. */
  endpointByOwner(owner: string): EndpointRecord | undefined {
    for (const r of this.endpoints.values()) if (r.endpoint.owner === owner) return r;
    return undefined;
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
    if (record.nat) view.nat = { ...record.nat.info, ...(record.nat.down === null ? {} : { hostInterfaceDown: record.nat.down }) };
    if (record.overlay) view.overlay = { ...record.overlay.info, peers: [...record.overlay.info.peers] };
    if (record.uplink) view.uplink = { ...record.uplink.info, ...(record.uplink.down === null ? {} : { down: record.uplink.down }) };
    if (record.fabric) view.fabric = { ...record.fabric.info, ...(record.fabric.down === null ? {} : { down: record.fabric.down }) };
    return view;
  }

  listNetworks(): Network[] {
    return [...this.networks.values()].map((r) => this.networkView(r));
  }

  listEndpoints(network?: string): Endpoint[] {
    const records = network === undefined ? [...this.endpoints.values()] : this.endpointsOn(network);
    return records.map((r) => this.endpointView(r));
  }

  /** The endpoint as the API shows it: what is saved, and whether it is up now. */
  endpointView(record: EndpointRecord): Endpoint {
    const { endpoint } = record;
    const down = record.down ?? (endpoint.vhostUser === undefined ? null : vhostDownReason(endpoint.vhostUser, record.vhost));
    return {
      ...endpoint,
      state: down === null ? 'up' : 'down',
      ...(down === null ? {} : { stateReason: down }),
      ...(endpoint.vhostUser === undefined ? {} : { vhost: record.vhost ?? vhostStateAfter(undefined, 0, '') }),
    };
  }

  /** The next state to write: everything desired, nothing the daemon only sees now (fds, proxies, status). */
  toSaved(): SavedState {
    return {
      version: STATE_VERSION,
      id: this.id,
      generation: this.generation + 1,
      written: new Date().toISOString(),
      networks: [...this.networks.values()].map(({ network, ipam, nat, overlay, uplink, fabric }) => ({
        network: { name: network.name, id: network.id, driver: network.driver, subnet: network.subnet, gateway: network.gateway, created: network.created, ...(network.owner === undefined ? {} : { owner: network.owner }), ...(network.ipam === undefined ? {} : { ipam: network.ipam }), ...(network.resolver === undefined ? {} : { resolver: network.resolver }) },
        ipam: {
          ...(ipam.gateway === undefined ? {} : { gateway: ipam.gateway }),
          ...(ipam.rangeBounds === undefined ? {} : { range: ipam.rangeBounds }),
          allocated: ipam.allocated(),
        },
        ...(nat ? { nat: { info: nat.info, portId: nat.portId, table: nat.table } } : {}),
        ...(overlay ? { overlay: { info: overlay.info, tunnelPortId: overlay.tunnelPortId, uplinkId: overlay.uplinkId, remotes: [...overlay.remotes.values()] } } : {}),
        ...(uplink ? { uplink: { info: uplink.info, portId: uplink.portId } } : {}),
        ...(fabric ? { fabric: { info: fabric.info, portId: fabric.portId } } : {}),
      })),
      endpoints: [...this.endpoints.values()].map(({ endpoint, policy }) => ({ endpoint, policy })),
      compartments: [...this.compartments.values()],
      loadBalancers: [...this.loadBalancers.values()].map(savedLoadBalancer),
      host: { forwardingSetByVsw: this.host.forwardingSetByVsw, nftTables: [...this.host.nftTables], netns: currentNetns() },
    };
  }
}

/** What is saved of a load balancer: no state, health or counters (those are now, not desired). */
function savedLoadBalancer(lb: LoadBalancer): LoadBalancer {
  return { ...lb, backends: lb.backends.map(({ name, endpoint, ip, port, draining }) => ({ name, ...(endpoint === undefined ? {} : { endpoint }), ip, port, draining })) };
}
