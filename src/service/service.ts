/**
 * What the API does: networks, endpoints and compartments, applied to the
 * host (namespaces, TAPs, addresses) and to the data plane, and recorded in
 * State. Every mutation runs under one mutex: a mutation awaits host commands
 * midway, and two interleaved ones could otherwise pick the same address,
 * interface name or port id.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  configureInterface,
  createNetns,
  deleteNetns,
  linkExists,
  netnsExists,
  netnsPath,
  pickFreeIfName,
  validateIfName,
  validateNetnsName,
} from '../host/index.js';
import { closeFd, tapOpen } from '../native/index.js';
import type { DataPlane } from '../switch/dataplane.js';
import {
  IMPLEMENTED_DRIVERS,
  type Compartment,
  type CreateCompartmentRequest,
  type CreateEndpointRequest,
  type CreateNetworkRequest,
  type Endpoint,
  type Network,
  type RemoteEndpointRequest,
  type StatsResponse,
} from './api-types.js';
import { badRequest, conflict, notFound } from './errors.js';
import { Ipam, IpamError, macForIp, normalizeMac, parseIpOrCidr, subnetsOverlap } from './ipam.js';
import { Mutex } from './mutex.js';
import { PolicyService } from './policies.js';
import { NatService } from './nat.js';
import { OverlayService, type OverlayPlan } from './overlay.js';
import { defaultPortPolicy } from '../vfp/policy.js';
import { Rollback } from './rollback.js';
import { State, type EndpointRecord, type NetworkRecord } from './state.js';

/** The part of DataPlane the service drives; tests can pass a fake. */
export type DataPlaneHandle = Pick<
  DataPlane,
  | 'maxPorts'
  | 'addNetwork'
  | 'removeNetwork'
  | 'addPort'
  | 'removePort'
  | 'portCounters'
  | 'switchCounters'
  | 'setPolicy'
  | 'flows'
  | 'trace'
  | 'ruleHits'
  | 'setPublished'
  | 'nat'
  | 'addUplink'
  | 'removeUplink'
  | 'setPeers'
  | 'addRemote'
  | 'removeRemote'
  | 'overlay'
>;

const now = (): string => new Date().toISOString();

export class NetworkService {
  readonly state: State;
  readonly policies: PolicyService;
  readonly nat: NatService;
  readonly overlay: OverlayService;
  private readonly mutex = new Mutex();

  constructor(
    private readonly dataPlane: DataPlaneHandle,
    private readonly logger: Logger,
  ) {
    this.state = new State(dataPlane.maxPorts);
    this.policies = new PolicyService(this.state, dataPlane, this.mutex, logger);
    this.nat = new NatService(this.state, dataPlane, logger);
    this.overlay = new OverlayService(this.state, dataPlane, logger);
  }

  /** Overlay mutations run under the service's mutex like every other one. */
  setOverlayPeers(name: string, peers: string[]): Promise<{ added: string[]; removed: string[] }> {
    return this.mutex.run(() => this.overlay.setPeers(name, peers));
  }

  addOverlayRemote(name: string, req: RemoteEndpointRequest): Promise<RemoteEndpointRequest> {
    return this.mutex.run(() => this.overlay.addRemote(name, req));
  }

  removeOverlayRemote(name: string, mac: string): Promise<void> {
    return this.mutex.run(() => this.overlay.removeRemote(name, mac));
  }

  createNetwork(req: CreateNetworkRequest): Promise<Network> {
    return this.mutex.run(() => this.addNetwork(req));
  }

  deleteNetwork(name: string): Promise<void> {
    return this.mutex.run(() => this.removeNetwork(name));
  }

  createEndpoint(req: CreateEndpointRequest): Promise<Endpoint> {
    return this.mutex.run(() => this.addEndpoint(req));
  }

  deleteEndpoint(idOrName: string): Promise<void> {
    return this.mutex.run(() => this.detach(this.state.requireEndpoint(idOrName)));
  }

  createCompartment(req: CreateCompartmentRequest): Promise<Compartment> {
    return this.mutex.run(() => this.addCompartment(req.name));
  }

  deleteCompartment(name: string): Promise<void> {
    return this.mutex.run(() => this.removeCompartment(name));
  }

  /** Removes every endpoint and owned compartment; networks go with the data plane. */
  shutdown(): Promise<void> {
    return this.mutex.run(() => this.removeEverything());
  }

  async stats(): Promise<StatsResponse> {
    const ports = [...this.state.endpoints.values()].map(({ endpoint }) => ({
      endpoint: endpoint.id,
      network: endpoint.network,
      netns: endpoint.netns,
      ifname: endpoint.ifname,
      ...this.dataPlane.portCounters(endpoint.portId),
    }));
    const counters = await this.dataPlane.switchCounters();
    return { ports, switch: { ...counters, macTable: { ...counters.macTable } } };
  }

  // --- networks ---

  private async addNetwork(req: CreateNetworkRequest): Promise<Network> {
    if (!IMPLEMENTED_DRIVERS.includes(req.driver)) {
      throw badRequest(`driver ${req.driver} is not implemented yet: this version supports ${IMPLEMENTED_DRIVERS.join(', ')}.`);
    }
    if (this.state.networks.has(req.name)) {
      throw conflict(`network ${req.name} already exists: pick another name or remove it with \`vsw network rm ${req.name}\`.`);
    }
    const isNat = req.driver === 'nat';
    const isOverlay = req.driver === 'overlay';
    if (!isNat && (req.transit !== undefined || req.externalIp !== undefined || req.natPorts !== undefined)) {
      throw badRequest(`--transit, --external-ip and --nat-ports belong to nat networks, not ${req.driver} ones: leave them out or pass -d nat.`);
    }
    if (!isOverlay && [req.vni, req.vtep, req.peers, req.vxlanPort, req.mtu, req.ipRange].some((v) => v !== undefined)) {
      throw badRequest(`--vni, --vtep, --peer, --vxlan-port, --mtu and --ip-range belong to overlay networks, not ${req.driver} ones: leave them out or pass -d overlay.`);
    }
    // The subnet first: the overlay's checks need it well-formed, and the IPAM needs the overlay's share of it.
    const subnetCidr = new Ipam(req.subnet).cidr;
    this.checkNoOverlap(subnetCidr);
    const plan: OverlayPlan | undefined = isOverlay ? await this.overlay.plan({ ...req, subnet: subnetCidr }) : undefined;
    const ipam = new Ipam(req.subnet, { ...(req.gateway === undefined ? {} : { gateway: req.gateway }), ...(plan ? { range: plan.range } : {}) });
    const id = this.state.networkIds.allocate();
    const rollback = new Rollback(this.logger);
    rollback.add(`release network id ${id}`, () => this.state.networkIds.release(id));
    try {
      // A nat network always has a gateway: the NAT gateway itself, at --gateway or the first host address.
      const gateway = ipam.gateway ?? (isNat ? ipam.reservedGateway : null);
      const prepared = isNat ? await this.nat.prepare(req, ipam, id, rollback) : undefined;
      const tunnel = plan ? await this.overlay.attach(plan, rollback) : undefined;
      await this.dataPlane.addNetwork(id, req.name, prepared?.spec, tunnel?.spec);
      rollback.add(`remove network ${req.name} from the data plane`, () => this.dataPlane.removeNetwork(id));
      const network: Network = { name: req.name, id, driver: req.driver, subnet: ipam.cidr, gateway, created: now() };
      const record: NetworkRecord = { network, ipam, nat: prepared?.nat };
      if (plan && tunnel) record.overlay = { info: plan.info, tunnelPortId: tunnel.tunnelPortId, uplinkKey: tunnel.uplinkKey, remotes: new Map() };
      if (record.nat) await this.nat.attachHostPort(record, rollback);
      this.state.networks.set(network.name, record);
      this.logger.info({ network: network.name, networkId: id, driver: network.driver, subnet: network.subnet, gateway: network.gateway, nat: record.nat?.info, overlay: record.overlay?.info }, 'network created');
      return this.state.networkView(record);
    } catch (err) {
      await rollback.run();
      throw err;
    }
  }

  private checkNoOverlap(cidr: string): void {
    for (const { network, nat } of this.state.networks.values()) {
      if (subnetsOverlap(cidr, network.subnet)) {
        throw conflict(`subnet ${cidr} overlaps network ${network.name} (${network.subnet}): pick another --subnet.`);
      }
      if (nat && subnetsOverlap(cidr, nat.info.transit)) {
        throw conflict(`subnet ${cidr} overlaps the transit subnet ${nat.info.transit} of network ${network.name}: pick another --subnet.`);
      }
    }
  }

  private async removeNetwork(name: string): Promise<void> {
    const record = this.state.requireNetwork(name);
    const names = this.state.endpointsOn(name).map((r) => r.endpoint.name);
    if (names.length > 0) {
      throw conflict(`network ${name} still has endpoints ${names.join(', ')}: remove them first (vsw endpoint rm ${names.join(' ')}).`);
    }
    await this.nat.tearDown(record);
    await this.dataPlane.removeNetwork(record.network.id);
    await this.overlay.tearDown(record);
    this.state.networkIds.release(record.network.id);
    this.state.networks.delete(name);
    this.logger.info({ network: name, networkId: record.network.id }, 'network removed');
  }

  // --- endpoints ---

  private async addEndpoint(req: CreateEndpointRequest): Promise<Endpoint> {
    const net = this.state.requireNetwork(req.network);
    await this.requireNetns(req.netns);
    if (req.name !== undefined) this.checkEndpointNameFree(req.name);
    const rollback = new Rollback(this.logger);
    try {
      return await this.attach(req, net, rollback);
    } catch (err) {
      await rollback.run();
      throw err;
    }
  }

  /** The steps of an endpoint create; each one registers its undo before the next may fail. */
  private async attach(req: CreateEndpointRequest, net: NetworkRecord, rollback: Rollback): Promise<Endpoint> {
    const publish = this.nat.checkPublish(net, req.publish);
    const ip = this.takeIp(net, req.ip);
    rollback.add(`release ${ip}`, () => net.ipam.release(ip));
    const mac = this.pickMac(net, req.mac, ip);
    const ifname = await this.pickIfName(req.netns, req.ifname);
    const fd = this.openTap(ifname, req.netns);
    rollback.add(`close the TAP ${req.netns}/${ifname}`, () => closeFd(fd));
    const prefixLength = net.ipam.subnet.prefix;
    const mtu = net.overlay?.info.mtu;
    await configureInterface({ netns: req.netns, ifname, mac, cidr: `${ip}/${prefixLength}`, gateway: net.network.gateway ?? undefined, mtu });
    const portId = this.state.portIds.allocate();
    rollback.add(`release port id ${portId}`, () => this.state.portIds.release(portId));
    const policy = defaultPortPolicy(mac, ip);
    if (req.spoofGuard === false) policy.spoofGuard.enabled = false;
    // An overlay port takes frames up to 1500 whatever its MTU: one larger than the tunnel's is answered with ICMP frag-needed, not dropped unseen.
    await this.dataPlane.addPort({ portId, networkId: net.network.id, fd, name: `${req.netns}/${ifname}`, policy, ip, mac, mtu: mtu === undefined ? undefined : Math.max(1500, mtu) });
    rollback.add(`remove port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
    const proxies = await this.nat.startProxies(net, publish, rollback);

    const id = this.newEndpointId();
    const endpoint: Endpoint = {
      id,
      name: req.name ?? this.defaultEndpointName(req.netns, ifname, id),
      network: net.network.name,
      netns: req.netns,
      ifname,
      mac,
      ip,
      prefixLength,
      portId,
      created: now(),
      ownedCompartment: this.state.compartments.has(req.netns),
    };
    if (net.nat) endpoint.publish = publish;
    this.state.endpoints.set(id, { endpoint, fd, networkId: net.network.id, policy, proxies });
    if (publish.length > 0) {
      rollback.add(`forget endpoint ${id}`, () => this.state.endpoints.delete(id));
      await this.nat.syncPublished(net);
    }
    this.logger.info({ endpoint: id, endpointName: endpoint.name, network: endpoint.network, netns: endpoint.netns, ifname, ip, mac, portId }, 'endpoint created');
    return endpoint;
  }

  private async requireNetns(netns: string): Promise<void> {
    validateNetnsName(netns);
    if (!(await netnsExists(netns))) {
      throw badRequest(`network namespace ${netns} does not exist: create it with \`ip netns add ${netns}\` or use \`vsw run\`.`);
    }
  }

  private checkEndpointNameFree(name: string): void {
    const holder = this.state.endpointNamed(name);
    if (holder) throw conflict(`endpoint name ${name} is taken by endpoint ${holder.endpoint.id}: pick another --name.`);
  }

  private takeIp(net: NetworkRecord, requested: string | undefined): string {
    if (requested === undefined) return this.allocateIp(net);
    const ip = parseIpOrCidr(requested, net.ipam.subnet);
    const holder = this.state.endpointsOn(net.network.name).find((r) => r.endpoint.ip === ip);
    if (holder) {
      throw conflict(`${ip} is already used by endpoint ${describe(holder)} on network ${net.network.name}: pick another --ip or leave it out to get a free one.`);
    }
    net.ipam.reserve(ip);
    return ip;
  }

  private allocateIp(net: NetworkRecord): string {
    try {
      return net.ipam.allocate();
    } catch (err) {
      // allocate() fails only when the subnet is full: a conflict with the endpoints there, not a bad request.
      if (err instanceof IpamError) throw conflict(err.message);
      throw err;
    }
  }

  private pickMac(net: NetworkRecord, requested: string | undefined, ip: string): string {
    const mac = requested === undefined ? macForIp(ip) : normalizeMac(requested);
    const holder = this.state.endpointsOn(net.network.name).find((r) => r.endpoint.mac === mac);
    if (holder) {
      throw conflict(`MAC ${mac} is already used by endpoint ${describe(holder)} on network ${net.network.name}: pick another --mac or leave it out.`);
    }
    return mac;
  }

  private async pickIfName(netns: string, requested: string | undefined): Promise<string> {
    if (requested === undefined) return pickFreeIfName(netns);
    validateIfName(requested);
    if (await linkExists(requested, netns)) {
      throw conflict(`interface ${requested} already exists in network namespace ${netns}: pass another --ifname or leave it out.`);
    }
    return requested;
  }

  private openTap(ifname: string, netns: string): number {
    try {
      return tapOpen({ name: ifname, netns: netnsPath(netns), exclusive: true });
    } catch (err) {
      const message = (err as Error).message.replace(/\.$/, '');
      // EBUSY/EEXIST: an interface of that name appeared since pickIfName looked.
      if (/\b(EBUSY|EEXIST)\b/.test(message)) throw conflict(`cannot create TAP ${ifname} in network namespace ${netns} (${message}): pass another --ifname.`);
      throw err;
    }
  }

  private newEndpointId(): string {
    let id: string;
    do id = randomBytes(6).toString('hex');
    while (this.state.endpoints.has(id));
    return id;
  }

  private defaultEndpointName(netns: string, ifname: string, id: string): string {
    const name = `${netns}-${ifname}`;
    return this.state.endpointNamed(name) ? id : name;
  }

  /** Takes an endpoint off the switch and the host; keeps going past failures so nothing stays half-attached. */
  private async detach(record: EndpointRecord): Promise<void> {
    const { endpoint } = record;
    await this.nat.stopProxies(record);
    const net = this.state.networks.get(endpoint.network);
    if (net && endpoint.publish?.length) {
      await this.nat.syncPublished(net, record).catch((err) => this.logger.warn({ err, endpoint: endpoint.id }, 'data plane could not unpublish the ports'));
    }
    try {
      await this.dataPlane.removePort(endpoint.portId);
    } catch (err) {
      // The data plane is gone or never knew the port: either way nothing polls the fd any more.
      this.logger.warn({ err, endpoint: endpoint.id, portId: endpoint.portId }, 'data plane could not remove the port');
    }
    try {
      closeFd(record.fd);
    } catch (err) {
      this.logger.warn({ err, endpoint: endpoint.id }, 'could not close the TAP fd');
    }
    this.state.networks.get(endpoint.network)?.ipam.release(endpoint.ip);
    this.state.portIds.release(endpoint.portId);
    this.state.endpoints.delete(endpoint.id);
    this.logger.info({ endpoint: endpoint.id, endpointName: endpoint.name, network: endpoint.network, netns: endpoint.netns, portId: endpoint.portId }, 'endpoint removed');
  }

  // --- compartments ---

  private async addCompartment(name: string): Promise<Compartment> {
    validateNetnsName(name);
    if (this.state.compartments.has(name) || (await netnsExists(name))) {
      throw conflict(`network namespace ${name} already exists: pick another name or remove it with \`ip netns delete ${name}\`.`);
    }
    await createNetns(name);
    const compartment: Compartment = { name, created: now() };
    this.state.compartments.set(name, compartment);
    this.logger.info({ compartment: name }, 'compartment created');
    return compartment;
  }

  private async removeCompartment(name: string): Promise<void> {
    if (!this.state.compartments.has(name)) {
      throw notFound(`compartment ${name} not found: only namespaces vsw created (vsw run) can be removed this way; others go with \`ip netns delete ${name}\`.`);
    }
    for (const record of this.state.endpointsIn(name)) await this.detach(record);
    await deleteNetns(name, { killProcesses: true });
    this.state.compartments.delete(name);
    this.logger.info({ compartment: name }, 'compartment removed');
  }

  private async removeEverything(): Promise<void> {
    for (const record of [...this.state.endpoints.values()]) await this.detach(record);
    // The host changes of nat networks would outlive the daemon; the networks themselves go with the data plane.
    for (const record of this.state.networks.values()) await this.nat.tearDown(record);
    for (const name of [...this.state.compartments.keys()]) {
      try {
        await deleteNetns(name, { killProcesses: true });
        this.state.compartments.delete(name);
        this.logger.info({ compartment: name }, 'compartment removed');
      } catch (err) {
        this.logger.error({ err, compartment: name }, 'could not remove the compartment');
      }
    }
  }
}

function describe(record: EndpointRecord): string {
  const { id, name } = record.endpoint;
  return name === id ? id : `${name} (${id})`;
}
