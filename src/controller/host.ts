/**
 * What a host agent reads and changes on its host. On a real host that is
 * the daemon's NetworkService, through the same calls its REST API makes
 * (serviceHost); the controller's scale bench gives simulated hosts a stand-in
 * that only records what it was asked (scripts/bench-controller.ts), so the
 * agent's code is the same on both.
 */
import type { CreateEndpointRequest, CreateLoadBalancerRequest, CreateNetworkRequest, LoadBalancer, RemoteEndpointRequest } from '../service/api-types.js';
import { listEthernetLinks } from '../host/link.js';
import type { NetworkService } from '../service/service.js';
import type { GroupSpec } from '../vfp/policy.js';

export interface HostNetwork {
  name: string;
  owner?: string;
  driver: string;
  /** Overlay networks: the VTEPs it floods to, and the remote endpoints pushed to it by MAC. */
  peers?: readonly string[];
  remotes?: ReadonlyMap<string, { ip?: string; vtep: string }>;
}

export interface HostEndpoint {
  id: string;
  name: string;
  network: string;
  owner?: string;
  ip: string;
  mac: string;
  ifname: string;
}

export interface AgentHost {
  /** The host's Ethernet interfaces, registered with the host so the controller can check a network's --uplink. */
  uplinks(): Promise<string[]>;
  networks(): HostNetwork[];
  endpoints(): HostEndpoint[];
  loadBalancers(): LoadBalancer[];
  createNetwork(req: CreateNetworkRequest): Promise<unknown>;
  deleteNetwork(name: string): Promise<void>;
  setOverlayPeers(network: string, peers: string[]): Promise<unknown>;
  /** The network's remote endpoints made exactly these, in one change. */
  setOverlayRemotes(network: string, remotes: RemoteEndpointRequest[]): Promise<unknown>;
  createEndpoint(req: CreateEndpointRequest): Promise<HostEndpoint>;
  deleteEndpoint(id: string): Promise<void>;
  /** Groups put on many endpoints as one change: per group, null when it was put, else the sentence why not. */
  putGroups(groups: readonly { endpointId: string; layer: string; group: string; spec: Omit<GroupSpec, 'name'> }[]): Promise<(string | null)[]>;
  removeGroup(endpointId: string, layer: string, group: string): Promise<void>;
  /** Whether the endpoint's policy has the group now (a state reset or a lost host loses what a status says was applied). */
  hasGroup(endpointId: string, layer: string, group: string): boolean;
  createLoadBalancer(req: CreateLoadBalancerRequest): Promise<unknown>;
  deleteLoadBalancer(name: string): Promise<void>;
  addBackend(balancer: string, backend: string): Promise<unknown>;
  removeBackend(balancer: string, backend: string): Promise<void>;
  drainBackend(balancer: string, backend: string, draining: boolean): Promise<unknown>;
}

/** The daemon's service as an agent's host: every change under its mutex and saved, as through the REST API. */
export function serviceHost(service: NetworkService): AgentHost {
  const view = (e: { id: string; name: string; network: string; owner?: string; ip: string; mac: string; ifname: string }): HostEndpoint => ({
    id: e.id,
    name: e.name,
    network: e.network,
    ip: e.ip,
    mac: e.mac,
    ifname: e.ifname,
    ...(e.owner === undefined ? {} : { owner: e.owner }),
  });
  return {
    uplinks: () => listEthernetLinks(),
    networks: () =>
      [...service.state.networks.values()].map((r) => ({
        name: r.network.name,
        driver: r.network.driver,
        ...(r.network.owner === undefined ? {} : { owner: r.network.owner }),
        ...(r.overlay ? { peers: r.overlay.info.peers, remotes: r.overlay.remotes } : {}),
      })),
    endpoints: () => [...service.state.endpoints.values()].map((r) => view(r.endpoint)),
    loadBalancers: () => [...service.state.loadBalancers.values()],
    createNetwork: (req) => service.createNetwork(req),
    deleteNetwork: (name) => service.deleteNetwork(name),
    setOverlayPeers: (network, peers) => service.setOverlayPeers(network, peers),
    setOverlayRemotes: (network, remotes) => service.setOverlayRemotes(network, remotes),
    createEndpoint: async (req) => view((await service.createEndpoint(req)).endpoint),
    deleteEndpoint: (id) => service.deleteEndpoint(id),
    putGroups: (groups) => service.changePolicy((c) => c.putGroups(groups.map((g) => ({ endpoint: g.endpointId, layer: g.layer, group: g.group, req: g.spec })))),
    removeGroup: (id, layer, group) => service.changePolicy((c) => c.removeGroup(id, layer, group)),
    hasGroup: (id, layer, group) => service.state.endpoints.get(id)?.policy.layers.find((l) => l.name === layer)?.groups.some((g) => g.name === group) ?? false,
    createLoadBalancer: (req) => service.changeLoadBalancers((lb) => lb.create(req)),
    deleteLoadBalancer: (name) => service.changeLoadBalancers((lb) => lb.remove(name)),
    addBackend: (name, backend) => service.changeLoadBalancers((lb) => lb.addBackend(name, backend)),
    removeBackend: (name, backend) => service.changeLoadBalancers((lb) => lb.removeBackend(name, backend)),
    drainBackend: (name, backend, draining) => service.changeLoadBalancers((lb) => lb.drain(name, backend, draining)),
  };
}
