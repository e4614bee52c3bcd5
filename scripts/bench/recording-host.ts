/**
 * A recording data plane for the controller's scale bench
 * (scripts/bench-controller.ts): an AgentHost (src/controller/host.ts) that
 * keeps networks, endpoints, remote endpoints, groups and load balancers in
 * memory, applies every change at once and never touches the kernel. The
 * real Agent runs against it (scripts/bench/sim-agent.ts), so a simulated
 * host costs the control plane what a real one does (its etcd watch, its copy
 * of the state, its reconciliations and status writes) without a daemon,
 * TAPs or namespaces; what a real daemon adds on top (state saves, the data
 * plane) is what the bench's real hosts measure.
 *
 * It answers like the daemon's service where the agent can tell the
 * difference: a second endpoint with the same owner, network and namespace is
 * the first one; names, networks and remotes that do not exist are refused
 * with one sentence. MACs are derived from the host and endpoint name, so two
 * runs (and the agent's realized keys) are comparable.
 */
import { createHash } from 'node:crypto';
import type { AgentHost, HostEndpoint, HostNetwork } from '../../src/controller/host.js';
import type { CreateEndpointRequest, CreateLoadBalancerRequest, CreateNetworkRequest, LbBackend, LoadBalancer, RemoteEndpointRequest } from '../../src/service/api-types.js';
import type { GroupSpec } from '../../src/vfp/policy.js';

/** The AgentHost methods, each counted when called. */
export type HostMethod = keyof AgentHost;

interface RecordedNetwork {
  name: string;
  owner?: string;
  driver: string;
  subnet: string;
  vni?: number;
  vtep?: string;
  peers: string[];
  /** By MAC, as the daemon's overlay keeps them; handed to the agent by reference (it reads it once per network per reconciliation). */
  remotes: Map<string, { ip?: string; vtep: string }>;
}

/** What the bench reads of a recording host (sim-agent writes it to its --stats file). */
export interface RecordingStats {
  host: string;
  calls: Record<string, number>;
  networks: number;
  endpoints: number;
  /** Remote endpoints over all networks. */
  remotes: number;
  /** Groups over all endpoints. */
  groups: number;
  loadBalancers: number;
  /** Mutating calls so far: changes when anything was applied. */
  changes: number;
}

export class RecordingHost implements AgentHost {
  /** Calls per method, reads included: host.endpoints() and host.networks() run a few times in every reconciliation, so they show how often the agent reconciled. */
  readonly calls = new Map<HostMethod, number>();
  changes = 0;
  private readonly nets = new Map<string, RecordedNetwork>();
  /** By id; the HostEndpoint objects are handed out as they are (the agent only reads them). */
  private readonly eps = new Map<string, HostEndpoint & { netns: string }>();
  /** Endpoint id -> "LAYER/GROUP" -> the group as the agent put it. */
  private readonly groups = new Map<string, Map<string, Omit<GroupSpec, 'name'>>>();
  private readonly lbs = new Map<string, LoadBalancer>();
  private nextId = 1;

  constructor(private readonly hostName: string) {}

  private count(method: HostMethod, mutates = true): void {
    this.calls.set(method, (this.calls.get(method) ?? 0) + 1);
    if (mutates) this.changes++;
  }

  private network(name: string): RecordedNetwork {
    const n = this.nets.get(name);
    if (!n) throw new Error(`network ${name} not found on recording host ${this.hostName}.`);
    return n;
  }

  private endpoint(id: string): HostEndpoint & { netns: string } {
    const e = this.eps.get(id);
    if (!e) throw new Error(`endpoint ${id} not found on recording host ${this.hostName}.`);
    return e;
  }

  /** 02:xx:... (locally administered, unicast) from a hash of host and endpoint name: the same endpoint gets the same MAC in every run. */
  private macOf(name: string): string {
    const h = createHash('sha256').update(`${this.hostName}/${name}`).digest();
    return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
  }

  // ---------------------------------------------------------------- reads

  networks(): HostNetwork[] {
    this.count('networks', false);
    return [...this.nets.values()].map((n) => ({
      name: n.name,
      driver: n.driver,
      ...(n.owner === undefined ? {} : { owner: n.owner }),
      ...(n.driver === 'overlay' ? { peers: n.peers, remotes: n.remotes } : {}),
    }));
  }

  endpoints(): HostEndpoint[] {
    this.count('endpoints', false);
    return [...this.eps.values()];
  }

  async uplinks(): Promise<string[]> {
    return ['eth1'];
  }

  hasGroup(endpointId: string, layer: string, group: string): boolean {
    return this.groups.get(endpointId)?.has(`${layer}/${group}`) ?? false;
  }

  loadBalancers(): LoadBalancer[] {
    this.count('loadBalancers', false);
    return [...this.lbs.values()];
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(req: CreateNetworkRequest): Promise<unknown> {
    this.count('createNetwork');
    if (this.nets.has(req.name)) throw new Error(`network ${req.name} exists already on recording host ${this.hostName}.`);
    const n: RecordedNetwork = {
      name: req.name,
      driver: req.driver,
      subnet: req.subnet,
      peers: [...(req.peers ?? [])],
      remotes: new Map(),
      ...(req.owner === undefined ? {} : { owner: req.owner }),
      ...(req.vni === undefined ? {} : { vni: req.vni }),
      ...(req.vtep === undefined ? {} : { vtep: req.vtep }),
    };
    this.nets.set(n.name, n);
    return { name: n.name, driver: n.driver, subnet: n.subnet };
  }

  async deleteNetwork(name: string): Promise<void> {
    this.count('deleteNetwork');
    this.network(name);
    const left = [...this.eps.values()].filter((e) => e.network === name);
    if (left.length > 0) throw new Error(`network ${name} still has endpoints ${left.map((e) => e.name).join(', ')} on recording host ${this.hostName}: remove them first.`);
    this.nets.delete(name);
    for (const lb of [...this.lbs.values()]) if (lb.network === name) this.lbs.delete(lb.name);
  }

  async setOverlayPeers(network: string, peers: string[]): Promise<unknown> {
    this.count('setOverlayPeers');
    const n = this.network(network);
    const added = peers.filter((p) => !n.peers.includes(p));
    const removed = n.peers.filter((p) => !peers.includes(p));
    n.peers = [...peers];
    return { added, removed };
  }

  async setOverlayRemotes(network: string, remotes: RemoteEndpointRequest[]): Promise<unknown> {
    this.count('setOverlayRemotes');
    const n = this.network(network);
    n.remotes.clear();
    for (const r of remotes) n.remotes.set(r.mac, { vtep: r.vtep, ...(r.ip === undefined ? {} : { ip: r.ip }) });
    return { remotes: remotes.length };
  }

  // ---------------------------------------------------------------- endpoints

  async createEndpoint(req: CreateEndpointRequest): Promise<HostEndpoint> {
    this.count('createEndpoint');
    this.network(req.network);
    if (req.owner !== undefined) {
      // As the daemon: the same owner asking again for the same network and namespace gets the endpoint it has.
      const same = [...this.eps.values()].find((e) => e.owner === req.owner);
      if (same && same.network === req.network && same.netns === req.netns) return same;
      if (same) throw new Error(`${req.owner} already has endpoint ${same.name} on recording host ${this.hostName}: remove it first.`);
    }
    // The agent always passes the address the controller allocated; a recording host has no IPAM to fall back on.
    if (req.ip === undefined) throw new Error(`recording host ${this.hostName} makes endpoints with the address asked for only: pass ip.`);
    const id = `rec${this.nextId++}`;
    const name = req.name ?? id;
    if ([...this.eps.values()].some((e) => e.name === name)) throw new Error(`an endpoint named ${name} exists already on recording host ${this.hostName}.`);
    const e: HostEndpoint & { netns: string } = {
      id,
      name,
      network: req.network,
      ip: req.ip.split('/')[0],
      mac: req.mac ?? this.macOf(name),
      ifname: req.ifname ?? 'eth0',
      netns: req.netns ?? '',
      ...(req.owner === undefined ? {} : { owner: req.owner }),
    };
    this.eps.set(id, e);
    return e;
  }

  async deleteEndpoint(id: string): Promise<void> {
    this.count('deleteEndpoint');
    this.endpoint(id);
    this.eps.delete(id);
    this.groups.delete(id);
  }

  async putGroups(groups: readonly { endpointId: string; layer: string; group: string; spec: Omit<GroupSpec, 'name'> }[]): Promise<(string | null)[]> {
    this.count('putGroups');
    return groups.map((g) => {
      if (!this.eps.has(g.endpointId)) return `endpoint ${g.endpointId} not found on recording host ${this.hostName}.`;
      let mine = this.groups.get(g.endpointId);
      if (!mine) this.groups.set(g.endpointId, (mine = new Map()));
      mine.set(`${g.layer}/${g.group}`, g.spec);
      return null;
    });
  }

  async removeGroup(endpointId: string, layer: string, group: string): Promise<void> {
    this.count('removeGroup');
    this.endpoint(endpointId);
    if (!this.groups.get(endpointId)?.delete(`${layer}/${group}`)) throw new Error(`endpoint ${endpointId} has no group ${group} in layer ${layer} on recording host ${this.hostName}.`);
  }

  // ---------------------------------------------------------------- load balancers

  async createLoadBalancer(req: CreateLoadBalancerRequest): Promise<unknown> {
    this.count('createLoadBalancer');
    this.network(req.network);
    if (this.lbs.has(req.name)) throw new Error(`load balancer ${req.name} exists already on recording host ${this.hostName}.`);
    if (req.vip === undefined) throw new Error(`recording host ${this.hostName} makes load balancers with the VIP asked for only: pass vip.`);
    const lb: LoadBalancer = {
      id: `reclb${this.nextId++}`,
      name: req.name,
      network: req.network,
      vip: req.vip,
      vipMac: this.macOf(`lb:${req.name}`),
      protocol: req.protocol ?? 'tcp',
      port: req.port,
      affinity: req.affinity ?? 'none',
      backends: req.backends.map((b) => this.backend(b, req.port)),
      created: new Date().toISOString(),
    };
    this.lbs.set(lb.name, lb);
    return lb;
  }

  async deleteLoadBalancer(name: string): Promise<void> {
    this.count('deleteLoadBalancer');
    this.balancer(name);
    this.lbs.delete(name);
  }

  async addBackend(balancer: string, backend: string): Promise<unknown> {
    this.count('addBackend');
    const lb = this.balancer(balancer);
    if (lb.backends.some((b) => b.name === backend)) throw new Error(`load balancer ${balancer} has backend ${backend} already on recording host ${this.hostName}.`);
    const b = this.backend(backend, lb.port);
    lb.backends.push(b);
    return b;
  }

  async removeBackend(balancer: string, backend: string): Promise<void> {
    this.count('removeBackend');
    const lb = this.balancer(balancer);
    const i = lb.backends.findIndex((b) => b.name === backend);
    if (i < 0) throw new Error(`load balancer ${balancer} has no backend ${backend} on recording host ${this.hostName}.`);
    lb.backends.splice(i, 1);
  }

  async drainBackend(balancer: string, backend: string, draining: boolean): Promise<unknown> {
    this.count('drainBackend');
    const b = this.balancer(balancer).backends.find((x) => x.name === backend);
    if (!b) throw new Error(`load balancer ${balancer} has no backend ${backend} on recording host ${this.hostName}.`);
    b.draining = draining;
    return b;
  }

  private balancer(name: string): LoadBalancer {
    const lb = this.lbs.get(name);
    if (!lb) throw new Error(`load balancer ${name} not found on recording host ${this.hostName}.`);
    return lb;
  }

  /** "NAME[:PORT]" of a local endpoint, or "IP:PORT" of a remote one, as the daemon's backends are named. */
  private backend(text: string, defaultPort: number): LbBackend {
    const [who, port] = text.split(':');
    const local = [...this.eps.values()].find((e) => e.name === who);
    return {
      name: text,
      ip: local?.ip ?? who,
      port: port === undefined ? defaultPort : Number(port),
      draining: false,
      ...(local ? { endpoint: local.id } : {}),
    };
  }

  // ---------------------------------------------------------------- what was recorded

  stats(): RecordingStats {
    let remotes = 0;
    for (const n of this.nets.values()) remotes += n.remotes.size;
    let groups = 0;
    for (const g of this.groups.values()) groups += g.size;
    return {
      host: this.hostName,
      calls: Object.fromEntries([...this.calls].sort(([a], [b]) => a.localeCompare(b))),
      networks: this.nets.size,
      endpoints: this.eps.size,
      remotes,
      groups,
      loadBalancers: this.lbs.size,
      changes: this.changes,
    };
  }
}
