/**
 * The control-plane half of the load balancers: what `vsw lb` and
 * /v1/loadbalancers create, check and save, the health probes of their
 * backends, and the spec each network's balancers get in the data plane
 * (src/lb/balancer.ts, src/switch/stages/lb-stage.ts).
 *
 * A VIP is an address of the network's subnet, taken from its IPAM so no
 * endpoint gets it; its MAC is derived from it as an endpoint's would be. A
 * backend is a local endpoint (by name or id, optionally :PORT) or, on an
 * overlay network, a remote endpoint pushed with `vsw overlay remote add`
 * (by address; its frames go through the tunnel port). Whether a backend
 * takes new connections is worked out on every change: drained, its probe
 * failing or its endpoint down take it out; its established connections stay.
 *
 * Every change is pushed to the data plane before it is saved; a save that
 * fails puts the data plane back (the caller's rollback) and answers 500.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { hasTap } from './endpoint-config.js';
import { macHi16, macLo32, mustParseMac } from '../packet/ethernet.js';
import type { LbBackendSpec, LbSpec } from '../lb/balancer.js';
import { parseBackendName } from '../lb/backend-name.js';
import type { DataPlane } from '../switch/dataplane.js';
import { netnsPath } from '../host/index.js';
import type { CreateLoadBalancerRequest, LbBackend, LoadBalancer } from './api-types.js';
import { badRequest, conflict, notFound } from './errors.js';
import { ipToInt, macForIp, parseIpOrCidr, subnetContains } from './ipam.js';
import { LbProber, type ProbeTarget, type SocketMaker } from './lb-probe.js';
import type { NatService } from './nat.js';
import type { PortProxy } from '../nat/proxy.js';
import type { NetworkRecord, State } from './state.js';

export type LbDataPlane = Pick<DataPlane, 'setBalancers' | 'lb'>;

type BackendCounters = NonNullable<LbBackend['counters']>;

/** Drivers whose networks take load balancers; l2tunnel hosts switch nothing (their fabric host balances), l2bridge has one MAC on the wire. */
const LB_DRIVERS = new Set(['internal', 'nat', 'overlay', 'transparent']);

export const PROBE_DEFAULTS = { intervalMs: 2000, timeoutMs: 1000, unhealthyThreshold: 2, healthyThreshold: 2 } as const;

export class LbService {
  private readonly prober: LbProber;
  /** The host-side listeners of published VIPs, by balancer id. */
  private readonly proxies = new Map<string, PortProxy>();

  constructor(
    private readonly state: State,
    private readonly dataPlane: LbDataPlane,
    private readonly logger: Logger,
    private readonly commit: () => Promise<void>,
    makeSocket: SocketMaker,
    /** The networks' DNS names: a balancer's name answers with its VIP. */
    private readonly names?: { checkName(net: NetworkRecord, owner: string, name: string): void; sync(network: string): Promise<void> },
    /** nat networks: a balancer's VIP published on a host port. */
    private readonly nat?: Pick<NatService, 'startProxy' | 'publisherOf' | 'syncPublished'>,
  ) {
    this.prober = new LbProber(makeSocket, (key) => this.probeChanged(key), logger);
  }

  requireLb(nameOrId: string): LoadBalancer {
    const lb = this.state.loadBalancers.get(nameOrId) ?? [...this.state.loadBalancers.values()].find((l) => l.id === nameOrId);
    if (!lb) throw notFound(`load balancer ${nameOrId} not found: list them with \`vsw lb ls\`.`);
    return lb;
  }

  async create(req: CreateLoadBalancerRequest): Promise<LoadBalancer> {
    if (this.state.loadBalancers.has(req.name)) throw conflict(`a load balancer named ${req.name} exists already: pick another name, or remove it with \`vsw lb rm ${req.name}\`.`);
    const net = this.state.requireNetwork(req.network);
    if (!LB_DRIVERS.has(net.network.driver)) {
      throw badRequest(`network ${req.network} is a ${net.network.driver} network, which takes no load balancers: use an internal, nat, overlay or transparent network.`);
    }
    if (net.network.ipam === 'dhcp') throw badRequest(`network ${req.network} gets its addresses by DHCP, so vsw cannot reserve a VIP there: use a network with static addresses.`);
    const protocol = req.protocol ?? 'tcp';
    const { vip, reserved } = this.takeVip(net, req.vip);
    try {
      for (const other of this.state.loadBalancers.values()) {
        if (other.network === req.network && other.vip === vip && other.protocol === protocol && other.port === req.port) {
          throw conflict(`load balancer ${other.name} already balances ${vip}:${req.port}/${protocol}: pick another --vip or --port.`);
        }
      }
      const lb: LoadBalancer = {
        id: randomBytes(6).toString('hex'),
        name: req.name,
        network: req.network,
        vip,
        vipMac: macForIp(vip),
        protocol,
        port: req.port,
        affinity: req.affinity ?? 'none',
        backends: [],
        created: new Date().toISOString(),
      };
      if (req.probe !== undefined) {
        lb.probe = {
          kind: req.probe.kind,
          ...(req.probe.kind === 'http' ? { path: req.probe.path ?? '/' } : {}),
          intervalMs: req.probe.intervalMs ?? PROBE_DEFAULTS.intervalMs,
          timeoutMs: req.probe.timeoutMs ?? PROBE_DEFAULTS.timeoutMs,
          unhealthyThreshold: req.probe.unhealthyThreshold ?? PROBE_DEFAULTS.unhealthyThreshold,
          healthyThreshold: req.probe.healthyThreshold ?? PROBE_DEFAULTS.healthyThreshold,
        };
        if (lb.probe.timeoutMs >= lb.probe.intervalMs) throw badRequest(`the probe timeout (${lb.probe.timeoutMs} ms) must be shorter than its interval (${lb.probe.intervalMs} ms).`);
      }
      for (const b of req.backends) this.addBackendTo(lb, net, b);
      this.names?.checkName(net, `load balancer ${lb.name}`, lb.name);
      if (req.publish !== undefined) await this.publish(lb, net, req.publish);
      try {
        await this.apply(lb.network, () => this.state.loadBalancers.set(lb.name, lb), () => this.state.loadBalancers.delete(lb.name));
      } catch (err) {
        await this.unpublish(lb);
        throw err;
      }
      if (lb.publish !== undefined) await this.nat!.syncPublished(net);
      await this.names?.sync(lb.network).catch((err: unknown) => this.logger.warn({ err, loadBalancer: lb.name }, "could not give the network's resolver the balancer's name"));
      this.logger.info({ loadBalancer: lb.name, network: lb.network, vip: lb.vip, port: lb.port, protocol, backends: lb.backends.map((b) => b.name) }, 'load balancer created');
      return this.view(lb);
    } catch (err) {
      if (reserved) net.ipam.release(vip);
      throw err;
    }
  }

  async remove(nameOrId: string): Promise<void> {
    const lb = this.requireLb(nameOrId);
    await this.apply(lb.network, () => this.state.loadBalancers.delete(lb.name), () => this.state.loadBalancers.set(lb.name, lb));
    const net = this.state.networks.get(lb.network);
    if (lb.publish !== undefined && net) {
      await this.unpublish(lb);
      await this.nat!.syncPublished(net).catch((err: unknown) => this.logger.warn({ err, loadBalancer: lb.name }, 'could not unpublish the VIP in the data plane'));
    }
    if (!this.vipShared(lb.network, lb.vip)) net?.ipam.release(lb.vip);
    await this.names?.sync(lb.network).catch((err: unknown) => this.logger.warn({ err, loadBalancer: lb.name }, "could not take the balancer's name out of the network's resolver"));
    this.logger.info({ loadBalancer: lb.name }, 'load balancer removed');
  }

  async addBackend(nameOrId: string, backend: string): Promise<LoadBalancer> {
    const lb = this.requireLb(nameOrId);
    const net = this.state.requireNetwork(lb.network);
    const before = lb.backends;
    const after = { ...lb, backends: [...before] };
    this.addBackendTo(after, net, backend);
    await this.apply(lb.network, () => (lb.backends = after.backends), () => (lb.backends = before));
    return this.view(lb);
  }

  async removeBackend(nameOrId: string, backend: string): Promise<void> {
    const lb = this.requireLb(nameOrId);
    const at = this.backendIndex(lb, backend);
    const before = lb.backends;
    await this.apply(lb.network, () => (lb.backends = before.filter((_, i) => i !== at)), () => (lb.backends = before));
  }

  /** Drain (no new connections; established ones finish) or undrain a backend. */
  async drain(nameOrId: string, backend: string, draining: boolean): Promise<LoadBalancer> {
    const lb = this.requireLb(nameOrId);
    const at = this.backendIndex(lb, backend);
    const before = lb.backends;
    await this.apply(lb.network, () => (lb.backends = before.map((b, i) => (i === at ? { ...b, draining } : b))), () => (lb.backends = before));
    return this.view(lb);
  }

  /** A network with load balancers cannot go: they hold its VIPs. */
  checkNetworkRemovable(name: string): void {
    const lbs = [...this.state.loadBalancers.values()].filter((l) => l.network === name).map((l) => l.name);
    if (lbs.length > 0) throw conflict(`network ${name} still has load balancers ${lbs.join(', ')}: remove them first (vsw lb rm ${lbs.join(' ')}).`);
  }

  /**
   * An endpoint is gone: it is no backend any more. Pushed to the data plane
   * now; saved by the caller with the endpoint's removal.
   */
  async endpointRemoved(endpointId: string, network: string): Promise<void> {
    let changed = false;
    for (const lb of this.state.loadBalancers.values()) {
      const kept = lb.backends.filter((b) => b.endpoint !== endpointId);
      if (kept.length !== lb.backends.length) {
        lb.backends = kept;
        changed = true;
      }
    }
    if (changed) await this.sync(network);
  }

  /** An endpoint went down or came back, or the overlay's remote endpoints changed: the backends' state and whereabouts follow. */
  async refresh(network: string): Promise<void> {
    if ([...this.state.loadBalancers.values()].some((l) => l.network === network)) await this.sync(network);
  }

  /** Starts the host-side listener of a published VIP (nat networks only); the data plane learns of it with the network's published ports. */
  private async publish(lb: LoadBalancer, net: NetworkRecord, hostPort: number): Promise<void> {
    if (!net.nat || !this.nat) throw badRequest(`--publish belongs to load balancers on nat networks, and ${net.network.name} is a ${net.network.driver} network: leave it out.`);
    const holder = this.nat.publisherOf(publishMapping(lb, hostPort));
    if (holder) throw conflict(`host port ${hostPort}/${lb.protocol} is already published by ${holder}: pick another --publish port.`);
    this.proxies.set(lb.id, await this.nat.startProxy(net, publishMapping(lb, hostPort)));
    lb.publish = hostPort;
  }

  private async unpublish(lb: LoadBalancer): Promise<void> {
    const proxy = this.proxies.get(lb.id);
    this.proxies.delete(lb.id);
    await proxy?.stop().catch((err: unknown) => this.logger.warn({ err, loadBalancer: lb.name }, 'could not stop the listener of a published VIP'));
  }

  /** After a restore: every network's balancers into the data plane, and their probes started. */
  async restoreAll(): Promise<void> {
    const networks = new Set([...this.state.loadBalancers.values()].map((l) => l.network));
    for (const network of networks) {
      if (!this.state.networks.has(network)) {
        this.logger.warn({ network }, 'load balancers of a network that is gone were dropped');
        for (const lb of [...this.state.loadBalancers.values()]) if (lb.network === network) this.state.loadBalancers.delete(lb.name);
        continue;
      }
      await this.sync(network);
    }
    const published = new Set<NetworkRecord>();
    for (const lb of this.state.loadBalancers.values()) {
      const net = this.state.networks.get(lb.network);
      if (lb.publish === undefined || !net?.nat || !this.nat) continue;
      try {
        this.proxies.set(lb.id, await this.nat.startProxy(net, publishMapping(lb, lb.publish)));
      } catch (err) {
        this.logger.warn({ err, loadBalancer: lb.name, hostPort: lb.publish }, 'could not listen on the published port of a load balancer again');
      }
      published.add(net);
    }
    for (const net of published) await this.nat!.syncPublished(net);
  }

  /** The daemon stops: probes end, and the listeners of published VIPs close (the next daemon opens them again). */
  async stop(): Promise<void> {
    this.prober.stopAll();
    for (const lb of this.state.loadBalancers.values()) await this.unpublish(lb);
  }

  async list(): Promise<LoadBalancer[]> {
    const counted = await this.countersByLb();
    return [...this.state.loadBalancers.values()].map((lb) => this.view(lb, counted.get(lb.id)));
  }

  async inspect(nameOrId: string): Promise<LoadBalancer> {
    const lb = this.requireLb(nameOrId);
    return this.view(lb, (await this.countersByLb(this.state.networks.get(lb.network)?.network.id)).get(lb.id));
  }

  // --- inside ---

  /** Makes the change, pushes the network's balancers and saves; undoes both when either fails. */
  private async apply(network: string, change: () => void, undo: () => void): Promise<void> {
    change();
    try {
      await this.sync(network);
      await this.commit();
    } catch (err) {
      undo();
      await this.sync(network).catch((e: unknown) => this.logger.error({ err: e, network }, 'could not put the load balancers back in the data plane'));
      throw err;
    }
  }

  private vipShared(network: string, vip: string): boolean {
    return [...this.state.loadBalancers.values()].some((l) => l.network === network && l.vip === vip);
  }

  /** The VIP, and whether this call took it from the IPAM (balancers of one VIP on several ports share the address). */
  private takeVip(net: NetworkRecord, requested: string | undefined): { vip: string; reserved: boolean } {
    if (requested === undefined) return { vip: net.ipam.allocate(), reserved: true };
    const ip = parseIpOrCidr(requested, net.ipam.subnet);
    if (!subnetContains(net.ipam.subnet, ip)) throw badRequest(`VIP ${ip} is outside network ${net.network.name} (${net.network.subnet}): pick an address inside it.`);
    const holder = this.state.endpointsOn(net.network.name).find((r) => r.endpoint.ip === ip);
    if (holder) throw conflict(`${ip} is the address of endpoint ${holder.endpoint.name}: pick another --vip or leave it out to get a free one.`);
    if (this.vipShared(net.network.name, ip)) return { vip: ip, reserved: false };
    net.ipam.reserve(ip);
    return { vip: ip, reserved: true };
  }

  /** Resolves BACKEND (ENDPOINT[:PORT], or a remote overlay endpoint's IP[:PORT]) into lb.backends. */
  private addBackendTo(lb: LoadBalancer, net: NetworkRecord, text: string): void {
    const parsed = parseBackendName(text, lb.port);
    if (!parsed) throw badRequest(`backend ${text} is not ENDPOINT[:PORT] with a port from 1 to 65535: pass an endpoint name or id such as web1 or web1:8080.`);
    const { who, port } = parsed;
    let backend: LbBackend;
    const local = this.state.findEndpoint(who);
    if (local !== undefined) {
      if (local.endpoint.network !== lb.network) throw badRequest(`endpoint ${local.endpoint.name} is on network ${local.endpoint.network}, not ${lb.network}: a backend must be on the load balancer's network.`);
      backend = { name: text, endpoint: local.endpoint.id, ip: local.endpoint.ip, port, draining: false };
    } else {
      const remote = net.overlay ? [...net.overlay.remotes.values()].find((r) => r.ip === who) : undefined;
      if (remote === undefined) {
        throw badRequest(
          net.overlay
            ? `backend ${who} is neither an endpoint nor the address of a remote endpoint of network ${lb.network}: pass an endpoint name, or add the remote first (vsw overlay remote add ${lb.network} --mac MAC --ip ${who} --vtep VTEP).`
            : `backend ${who} is not an endpoint of this host: pass an endpoint name or id (see \`vsw endpoint ls --network ${lb.network}\`).`,
        );
      }
      backend = { name: text, ip: who, port, draining: false };
    }
    if (lb.backends.some((b) => b.ip === backend.ip && b.port === backend.port)) throw conflict(`${backend.ip}:${backend.port} is a backend of ${lb.name} already.`);
    if (backend.ip === lb.vip) throw badRequest(`a backend cannot be the VIP ${lb.vip} itself.`);
    lb.backends.push(backend);
  }

  private backendIndex(lb: LoadBalancer, name: string): number {
    let at = lb.backends.findIndex((b) => b.name === name);
    if (at < 0) {
      const local = this.state.findEndpoint(name);
      at = lb.backends.findIndex((b) => (local !== undefined && b.endpoint === local.endpoint.id) || `${b.ip}:${b.port}` === name || b.ip === name);
    }
    if (at < 0) throw notFound(`${name} is not a backend of load balancer ${lb.name}: see its backends with \`vsw lb inspect ${lb.name}\`.`);
    return at;
  }

  private probeKey(lb: LoadBalancer, b: LbBackend): string {
    return `${lb.id}/${b.ip}:${b.port}`;
  }

  /** Whether a backend takes new connections, and if not why. */
  private backendState(lb: LoadBalancer, b: LbBackend): 'active' | 'draining' | 'down' {
    if (b.endpoint !== undefined) {
      const record = this.state.endpoints.get(b.endpoint);
      if (record === undefined || record.down !== null) return 'down';
    } else {
      // A remote backend the overlay no longer knows (vsw overlay remote rm, or its peer removed) has no MAC to send to.
      const net = this.state.networks.get(lb.network);
      if (net === undefined || this.whereIs(net, b) === undefined) return 'down';
    }
    if (b.draining) return 'draining';
    return this.prober.isUp(this.probeKey(lb, b)) ? 'active' : 'down';
  }

  private probeChanged(key: string): void {
    const id = key.slice(0, key.indexOf('/'));
    const lb = [...this.state.loadBalancers.values()].find((l) => l.id === id);
    if (lb) void this.sync(lb.network).catch((err: unknown) => this.logger.error({ err, loadBalancer: lb.name }, 'could not push a backend health change to the data plane'));
  }

  /** Pushes every balancer of the network to the data plane and (re)sets their probes. */
  private async sync(network: string): Promise<void> {
    const net = this.state.networks.get(network);
    if (!net) return;
    this.prober.set(this.probeTargets());
    await this.dataPlane.setBalancers(net.network.id, this.specs(net));
  }

  private probeTargets(): ProbeTarget[] {
    const targets: ProbeTarget[] = [];
    for (const lb of this.state.loadBalancers.values()) {
      if (lb.probe === undefined) continue;
      for (const b of lb.backends) {
        const record = b.endpoint === undefined ? undefined : this.state.endpoints.get(b.endpoint);
        // A remote backend is probed on its own host; a fabric endpoint or a VM's has no namespace here to probe from.
        if (record === undefined || !hasTap(record.endpoint)) continue;
        targets.push({ key: this.probeKey(lb, b), netnsPath: netnsPath(record.endpoint.netns), ip: b.ip, port: b.port, spec: lb.probe });
      }
    }
    return targets;
  }

  private specs(net: NetworkRecord): LbSpec[] {
    const out: LbSpec[] = [];
    for (const lb of this.state.loadBalancers.values()) {
      if (lb.network !== net.network.name) continue;
      const vipMac = mustParseMac(lb.vipMac);
      const backends: LbBackendSpec[] = [];
      for (const b of lb.backends) {
        const where = this.whereIs(net, b);
        if (where === undefined) continue;
        const mac = mustParseMac(where.mac);
        backends.push({ key: `${b.ip}:${b.port}`, ip: ipToInt(b.ip), port: b.port, macHi: macHi16(mac, 0), macLo: macLo32(mac, 0), portId: where.portId, state: this.backendState(lb, b) });
      }
      out.push({ id: lb.id, name: lb.name, vip: ipToInt(lb.vip), vipMacHi: macHi16(vipMac, 0), vipMacLo: macLo32(vipMac, 0), protocol: lb.protocol, port: lb.port, affinity: lb.affinity, backends });
    }
    return out;
  }

  /** The backend's MAC and the port its frames leave by: its TAP, or the overlay's tunnel. */
  private whereIs(net: NetworkRecord, b: LbBackend): { mac: string; portId: number } | undefined {
    if (b.endpoint !== undefined) {
      const record = this.state.endpoints.get(b.endpoint);
      return record === undefined ? undefined : { mac: record.endpoint.mac, portId: record.endpoint.portId };
    }
    const remote = net.overlay ? [...net.overlay.remotes.values()].find((r) => r.ip === b.ip) : undefined;
    return remote === undefined || net.overlay === undefined ? undefined : { mac: remote.mac, portId: net.overlay.tunnelPortId };
  }

  private async countersByLb(networkId?: number): Promise<Map<string, Map<string, BackendCounters>>> {
    const out = new Map<string, Map<string, BackendCounters>>();
    for (const net of await this.dataPlane.lb(networkId)) {
      for (const b of net.balancers) out.set(b.id, new Map(b.backends.map((x) => [x.key, { connections: x.connections, active: x.active, bytes: x.bytes }])));
    }
    return out;
  }

  /** The balancer as the API shows it: saved fields, and each backend's state, health and counters now. */
  private view(lb: LoadBalancer, counters?: Map<string, BackendCounters>): LoadBalancer {
    return {
      ...lb,
      backends: lb.backends.map((b) => {
        const health = this.prober.health(this.probeKey(lb, b)) ?? { status: 'unprobed' as const, probes: 0, failures: 0 };
        return { ...b, state: this.backendState(lb, b), health, counters: counters?.get(`${b.ip}:${b.port}`) ?? { connections: 0, active: 0, bytes: 0 } };
      }),
    };
  }
}

/** A published VIP as the NAT service knows published ports: the host port, on every host address, to the VIP's port. */
function publishMapping(lb: LoadBalancer, hostPort: number): { protocol: LoadBalancer['protocol']; hostIp: string; hostPort: number; containerPort: number } {
  return { protocol: lb.protocol, hostIp: '0.0.0.0', hostPort, containerPort: lb.port };
}
