/**
 * The control-plane half of nat networks: choosing the external addresses,
 * the host TAP and the host changes it needs (src/host/nat.ts), the ports
 * endpoints publish with their host-side listeners (src/nat/proxy.ts), and
 * the view of the translations. The data-plane half is src/nat/gateway.ts.
 *
 * Every step registers its undo with the caller's Rollback, so a failed
 * create leaves the host as it found it.
 */
import { readFileSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import {
  configureHostPort,
  defaultRouteInterfaces,
  forwardingEnabled,
  hostIpv4Prefixes,
  installMasquerade,
  installPublished,
  masqueradeInstalled,
  natTableName,
  publishedTableName,
  removeNftTable,
  setForwarding,
  type KernelPublished,
} from '../host/nat.js';
import { HostError, linkExists, validateIfName } from '../host/index.js';
import { closeFd } from '../native/index.js';
import type { NatGatewaySpec, NatPublishSpec } from '../nat/gateway.js';
import { PortProxy, ProxyError } from '../nat/proxy.js';
import { DEFAULT_NAT_PORTS, DEFAULT_TRANSIT_POOL, type CreateNetworkRequest, type NatInfo, type NatNetworkState, type PortMapping } from './api-types.js';
import { ApiError, badRequest, conflict } from './errors.js';
import { intToIp, ipToInt, macForIp, parseSubnet, subnetContains, subnetsOverlap, type Ipam, type Subnet } from './ipam.js';
import type { Rollback } from './rollback.js';
import type { DataPlane } from '../switch/dataplane.js';
import type { EndpointRecord, NatRecord, NetworkRecord, State } from './state.js';
import { attachTap, closeQuietly, openTap, releaseTap, removePersistentTap } from './taps.js';

/** The part of the data plane nat networks drive. */
export type NatDataPlane = Pick<DataPlane, 'addPort' | 'removePort' | 'setPublished' | 'nat' | 'portCounters'>;

export class NatService {
  constructor(
    private readonly state: State,
    private readonly dataPlane: NatDataPlane,
    private readonly logger: Logger,
    /** Saves the state: host changes that outlive the daemon are recorded (state.host) before they are made. */
    private readonly commit: () => Promise<void> = async () => undefined,
  ) {}

  /**
   * Everything a new nat network needs before the data plane gets it: the
   * gateway's spec, and the host side. Returns the record to keep; the host
   * port is attached to the data plane by attachHostPort once the network exists.
   */
  async prepare(req: CreateNetworkRequest, ipam: Ipam, networkId: number, rollback: Rollback): Promise<{ spec: NatGatewaySpec; nat: NatRecord }> {
    const [portFirst, portLast] = parsePortRange(req.natPorts ?? DEFAULT_NAT_PORTS);
    const { transit, hostIp, externalIp } = await this.pickTransit(req, ipam.cidr);
    const ifname = await this.pickHostIfName(req.name, networkId);
    const gatewayIp = ipam.gateway ?? ipam.reservedGateway;
    const spec: NatGatewaySpec = {
      subnet: ipam.cidr,
      gatewayIp,
      gatewayMac: macForIp(gatewayIp),
      externalIp,
      externalMac: macForIp(externalIp),
      hostMac: macForIp(hostIp),
      portFirst,
      portLast,
    };

    // Not persistent until the network is saved (service.ts): a crash before that takes the TAP with it.
    const fd = openTap(ifname, undefined, true);
    rollback.add(`close the host TAP ${ifname}`, () => closeFd(fd));
    const prefix = transit.split('/')[1];
    await configureHostPort({ ifname, cidr: `${hostIp}/${prefix}`, mac: spec.hostMac });
    const changes = [`interface ${ifname} (a TAP vsw holds; it disappears with the network) with address ${hostIp}/${prefix}`];

    if (!(await forwardingEnabled())) {
      await this.recordForwarding();
      rollback.add('restore net.ipv4.ip_forward', () => this.restoreForwarding(req.name));
      await setForwarding(true);
      changes.push('net.ipv4.ip_forward=1 (it was 0; set back to 0 when the last nat network is removed)');
    } else {
      changes.push(this.state.host.forwardingSetByVsw ? 'net.ipv4.ip_forward=1 (set by vsw for the nat networks)' : 'none to net.ipv4.ip_forward: it was 1 already');
    }

    const table = natTableName(ifname);
    const masqueradeVia = (await defaultRouteInterfaces()).filter((dev) => !this.isHostTap(dev) && dev !== ifname);
    if (masqueradeVia.length > 0) {
      await this.own(table);
      rollback.add(`remove nftables table ${table}`, () => this.removeTable(table));
      await installMasquerade(table, externalIp, masqueradeVia);
      if (!(await masqueradeInstalled(table))) throw new HostError(`nft reported success but table ip ${table} is not there: check the nftables installation (nft list tables).`, { system: true });
      changes.push(`nftables table ip ${table}: masquerade traffic from ${externalIp} leaving through ${masqueradeVia.join(', ')}`);
    }

    const info: NatInfo = { hostInterface: ifname, transit, hostIp, externalIp, ports: `${portFirst}-${portLast}`, masqueradeVia, hostChanges: changes };
    return { spec, nat: { info, fd, portId: -1, table: masqueradeVia.length > 0 ? table : null, down: null } };
  }

  /** The host TAP joins the data plane as the gateway's external port (on restore, with the port id it had). */
  async attachHostPort(record: NetworkRecord, rollback?: Rollback): Promise<void> {
    const nat = record.nat!;
    const portId = nat.portId >= 0 ? nat.portId : this.state.portIds.allocate();
    if (nat.portId < 0) rollback?.add(`release port id ${portId}`, () => this.state.portIds.release(portId));
    await this.dataPlane.addPort({ portId, networkId: record.network.id, fd: nat.fd, name: `host/${nat.info.hostInterface}`, external: true });
    // Before the fd is closed by an earlier undo: nothing may poll it then.
    rollback?.add(`remove the host port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
    nat.portId = portId;
  }

  /** Undoes prepare and attachHostPort; keeps going past failures so nothing is left behind that could be removed. */
  async tearDown(record: NetworkRecord): Promise<void> {
    const nat = record.nat;
    if (!nat) return;
    const name = record.network.name;
    if (nat.portId >= 0) {
      await this.dataPlane.removePort(nat.portId).catch((err) => this.logger.warn({ err, network: name }, 'data plane could not remove the host port'));
      this.state.portIds.release(nat.portId);
      nat.portId = -1;
    }
    try {
      if (nat.fd >= 0) releaseTap(nat.fd);
      else removePersistentTap(nat.info.hostInterface, undefined);
      nat.fd = -1;
    } catch (err) {
      this.logger.warn({ err, network: name }, 'could not remove the host TAP');
    }
    if (nat.table) await this.removeTable(nat.table).catch((err) => this.logger.error({ err, network: name, table: nat.table }, 'could not remove the nftables table'));
    const published = publishedTableName(nat.info.hostInterface);
    if (this.state.host.nftTables.includes(published)) {
      await this.removeTable(published).catch((err) => this.logger.error({ err, network: name, table: published }, 'could not remove the nftables table'));
    }
    await this.restoreForwarding(name, record);
  }

  /** Turns ip_forward back off if vsw turned it on and no other nat network remains. */
  async restoreForwarding(name: string, leaving?: NetworkRecord): Promise<void> {
    if (!this.state.host.forwardingSetByVsw) return;
    const others = [...this.state.networks.values()].some((r) => r.nat && r !== leaving && r.network.name !== name);
    if (others) return;
    try {
      await setForwarding(false);
      this.state.host.forwardingSetByVsw = false;
    } catch (err) {
      this.logger.error({ err }, 'could not set net.ipv4.ip_forward back to 0');
    }
  }

  /** Records a table as vsw's before it is installed, so a restart after a crash can remove it. */
  private own(table: string): Promise<void> {
    return this.state.ownNftTable(table, this.commit);
  }

  /** Records that vsw turns ip_forward on, before it does, so that a restart or a reset after a crash turns it off again. */
  private async recordForwarding(): Promise<void> {
    if (this.state.host.forwardingSetByVsw) return;
    this.state.host.forwardingSetByVsw = true;
    try {
      await this.commit();
    } catch (err) {
      this.state.host.forwardingSetByVsw = false;
      throw err;
    }
  }

  /** Removes a table vsw installed and forgets it (saved with the next commit). */
  async removeTable(table: string): Promise<void> {
    await removeNftTable(table);
    this.state.host.nftTables = this.state.host.nftTables.filter((t) => t !== table);
  }

  /**
   * A saved nat network on a new daemon: the host TAP attached again (or
   * recreated and configured when it is gone), the masquerade table and
   * ip_forward checked and put back. Returns the gateway spec for the data
   * plane; the host port is attached by attachHostPort, after the restored
   * connections are in.
   */
  async restore(record: NetworkRecord): Promise<NatGatewaySpec> {
    const nat = record.nat!;
    const { info } = nat;
    const name = record.network.name;
    this.state.portIds.take(nat.portId);
    await this.attachHostTap(record);
    if (!(await forwardingEnabled())) {
      // Someone turned it off while vsw was down (or it never was vsw's): the network needs it.
      await this.recordForwarding();
      await setForwarding(true);
      this.logger.warn({ network: name }, 'net.ipv4.ip_forward was 0: set to 1 again for the nat networks');
    }
    if (nat.table) {
      if (!this.state.host.nftTables.includes(nat.table)) this.state.host.nftTables.push(nat.table);
      if (!(await masqueradeInstalled(nat.table))) {
        await installMasquerade(nat.table, info.externalIp, info.masqueradeVia);
        this.logger.warn({ network: name, table: nat.table }, 'nftables table was gone: installed again');
      }
    }
    const [portFirst, portLast] = parsePortRange(info.ports);
    const gatewayIp = record.network.gateway ?? record.ipam.reservedGateway;
    return {
      subnet: record.network.subnet,
      gatewayIp,
      gatewayMac: macForIp(gatewayIp),
      externalIp: info.externalIp,
      externalMac: macForIp(info.externalIp),
      hostMac: macForIp(info.hostIp),
      portFirst,
      portLast,
    };
  }

  /** The saved network's host TAP: the one there (set right if it drifted), or a new one configured as saved; persistent. */
  private async attachHostTap(record: NetworkRecord): Promise<void> {
    const nat = record.nat!;
    const { info } = nat;
    const hostMac = macForIp(info.hostIp);
    const tap = await attachTap(info.hostInterface, undefined, { mac: hostMac, ip: info.hostIp }, () =>
      configureHostPort({ ifname: info.hostInterface, cidr: `${info.hostIp}/${info.transit.split('/')[1]}`, mac: hostMac }),
    );
    if (tap.how !== 'adopted') this.logger.warn({ network: record.network.name, ifname: info.hostInterface }, tap.how === 'recreated' ? 'host TAP was gone: recreated' : 'host TAP had changed: set right again');
    nat.fd = tap.fd;
  }

  /** The host TAP stopped receiving (it vanished, or read() failed): out of the switch until bringUpHostPort. */
  async takeDownHostPort(record: NetworkRecord, reason: string): Promise<void> {
    const nat = record.nat!;
    nat.down = reason;
    await this.dataPlane.removePort(nat.portId).catch((err) => this.logger.warn({ err, network: record.network.name }, 'data plane could not remove the host port'));
    if (nat.fd >= 0) closeQuietly(nat.fd, this.logger, `the host TAP of network ${record.network.name}`);
    nat.fd = -1;
    this.logger.warn({ network: record.network.name, ifname: nat.info.hostInterface, reason }, 'nat network host interface is down; vsw keeps trying to bring it back');
  }

  /** Attaches the host TAP again, with the port id it had; throws (and stays down) when it cannot yet. */
  async bringUpHostPort(record: NetworkRecord): Promise<void> {
    const nat = record.nat!;
    await this.attachHostTap(record);
    try {
      await this.attachHostPort(record);
    } catch (err) {
      closeFd(nat.fd);
      nat.fd = -1;
      throw err;
    }
    nat.down = null;
    // A recreated host TAP lost its route_localnet: the DNAT table is put back with it.
    await this.syncPublished(record).catch((err) => this.logger.warn({ err, network: record.network.name }, 'could not publish the ports again'));
    this.logger.info({ network: record.network.name, ifname: nat.info.hostInterface }, 'nat network host interface is up again');
  }

  private isHostTap(dev: string): boolean {
    return [...this.state.networks.values()].some((r) => r.nat?.info.hostInterface === dev);
  }

  private async pickTransit(req: CreateNetworkRequest, subnet: string): Promise<{ transit: string; hostIp: string; externalIp: string }> {
    const taken = [...this.state.networks.values()].flatMap((r) => [r.network.subnet, ...(r.nat ? [r.nat.info.transit] : [])]);
    taken.push(subnet);
    const hostPrefixes = await hostIpv4Prefixes();
    if (req.transit === undefined) {
      if (req.externalIp !== undefined) throw badRequest('--external-ip needs --transit: give the transit subnet it belongs to as well.');
      const pool = parseSubnet(DEFAULT_TRANSIT_POOL);
      for (let net = pool.network; net + 3 <= pool.broadcast; net += 4) {
        const cidr = `${intToIp(net)}/30`;
        if (taken.some((t) => subnetsOverlap(t, cidr)) || hostPrefixes.some((h) => overlapsAny(h, cidr))) continue;
        return { transit: cidr, hostIp: intToIp(net + 1), externalIp: intToIp(net + 2) };
      }
      throw conflict(`no free /30 is left in ${DEFAULT_TRANSIT_POOL} for the transit subnet: pass --transit CIDR.`);
    }
    let t;
    try {
      t = parseSubnet(req.transit);
    } catch (err) {
      throw badRequest(`--transit ${req.transit} is not a subnet: write it like 100.127.0.0/30 (${(err as Error).message.replace(/\.$/, '')}).`);
    }
    const transit = `${intToIp(t.network)}/${t.prefix}`;
    const clash = taken.find((x) => subnetsOverlap(x, transit));
    if (clash) throw conflict(`transit ${transit} overlaps ${clash}, which a vsw network uses: pick another --transit.`);
    const route = hostPrefixes.find((h) => overlapsAny(h, transit));
    if (route) throw conflict(`transit ${transit} overlaps the host's route to ${route}: pick another --transit.`);
    const hostIp = intToIp(t.network + 1);
    const externalIp = req.externalIp ?? intToIp(t.network + 2);
    if (!ipaddr.IPv4.isValidFourPartDecimal(externalIp)) throw badRequest(`--external-ip ${externalIp} is not an IPv4 address: write it like ${intToIp(t.network + 2)}.`);
    const ext = ipToInt(externalIp);
    if (!subnetContains(t, externalIp) || ext === t.network || ext === t.broadcast || externalIp === hostIp) {
      throw badRequest(`--external-ip ${externalIp} must be a host address of ${transit} other than the host's ${hostIp}: use for example ${intToIp(t.network + 2)}.`);
    }
    return { transit, hostIp, externalIp };
  }

  /** The network's own name when it can be an interface name nobody uses; otherwise vsw-nat<id>. */
  private async pickHostIfName(name: string, networkId: number): Promise<string> {
    try {
      validateIfName(name);
      if (!(await linkExists(name))) return name;
    } catch {
      // Not a valid interface name: fall through.
    }
    const fallback = `vsw-nat${networkId}`;
    if (await linkExists(fallback)) throw conflict(`interface ${fallback} already exists on the host: remove it or name the network differently.`);
    return fallback;
  }

  // --- published ports ---

  /** Checks the mappings of a new endpoint against each other and everything published already. */
  checkPublish(net: NetworkRecord, list: PortMapping[] | undefined, via: 'proxy' | 'dnat' = 'proxy'): PortMapping[] {
    if (!list || list.length === 0) return [];
    if (!net.nat) throw badRequest(`network ${net.network.name} is not a nat network (its driver is ${net.network.driver}): publish ports (-p) on a nat network.`);
    const out: PortMapping[] = [];
    for (const m of list) {
      // Host port 0: vsw picks one when it starts the listener (startProxies).
      if (!Number.isInteger(m.hostPort) || m.hostPort < 0 || m.hostPort > 65535) throw badRequest(`host port ${m.hostPort} is out of range: ports are 1 to 65535, or 0 for one vsw picks.`);
      if (!Number.isInteger(m.containerPort) || m.containerPort < 1 || m.containerPort > 65535) throw badRequest(`container port ${m.containerPort} is out of range: ports are 1 to 65535.`);
      const hostIp = m.hostIp ?? '0.0.0.0';
      if (!ipaddr.IPv4.isValidFourPartDecimal(hostIp)) throw badRequest(`host address ${hostIp} is not an IPv4 address: write it like 127.0.0.1, or leave it out to listen on all.`);
      const mapping: PortMapping = { protocol: m.protocol, hostIp, hostPort: m.hostPort, containerPort: m.containerPort };
      if (mapping.hostPort === 0 && via === 'dnat') throw badRequest(`container port ${m.containerPort} has no host port: ports published by DNAT name theirs (the runtime picks it).`);
      // The gateway answers for a container port from one published port: a second would get the replies of the first.
      const same = out.find((o) => o.protocol === mapping.protocol && o.containerPort === mapping.containerPort);
      if (same) {
        const on = (port: number): string => (port === 0 ? 'a host port vsw picks' : `host port ${port}`);
        throw badRequest(`container port ${m.containerPort}/${m.protocol} is published twice (on ${on(same.hostPort)} and on ${on(m.hostPort)}): vsw publishes a container port on one host port; drop one mapping.`);
      }
      if (mapping.hostPort !== 0) {
        const twin = out.find((o) => clashes(o, mapping));
        if (twin) throw badRequest(`host port ${m.hostPort}/${m.protocol} is published twice in this request: give each mapping its own host port.`);
        const holder = this.publisherOf(mapping);
        if (holder) throw conflict(`host port ${m.hostPort}/${m.protocol} is already published by ${holder}: pick another host port or remove it.`);
      }
      out.push(mapping);
    }
    return out;
  }

  /** The endpoint that publishes a host port clashing with `mapping`, if any. */
  private publishedClash(mapping: PortMapping): EndpointRecord | undefined {
    for (const record of this.state.endpoints.values()) if (record.endpoint.publish?.some((o) => clashes(o, mapping))) return record;
    return undefined;
  }

  /** Who publishes a host port clashing with `mapping` (an endpoint or a load balancer), as words for a sentence; undefined when nobody does. */
  publisherOf(mapping: PortMapping): string | undefined {
    const endpoint = this.publishedClash(mapping);
    if (endpoint) return `endpoint ${endpoint.endpoint.name} on network ${endpoint.endpoint.network}`;
    const lb = [...this.state.loadBalancers.values()].find((l) => l.publish !== undefined && clashes({ protocol: l.protocol, hostIp: '0.0.0.0', hostPort: l.publish, containerPort: l.port }, mapping));
    return lb === undefined ? undefined : `load balancer ${lb.name} on network ${lb.network}`;
  }

  /**
   * Starts the host-side listeners of an endpoint's mappings; each is stopped by the rollback. A mapping
   * with host port 0 gets a free one from the host's ephemeral range, written into the mapping.
   */
  async startProxies(net: NetworkRecord, mappings: PortMapping[], rollback: Rollback): Promise<PortProxy[]> {
    const proxies: PortProxy[] = [];
    for (const m of mappings) {
      const proxy = m.hostPort === 0 ? await this.startDynamicProxy(net, m, mappings) : await this.startProxy(net, m);
      rollback.add(`stop the listener on ${proxy.spec.hostIp}:${proxy.spec.hostPort}/${proxy.spec.protocol}`, () => proxy.stop());
      proxies.push(proxy);
    }
    return proxies;
  }

  async startProxy(net: NetworkRecord, m: PortMapping): Promise<PortProxy> {
    const spec = { protocol: m.protocol, hostIp: m.hostIp ?? '0.0.0.0', hostPort: m.hostPort, targetIp: net.nat!.info.externalIp, targetPort: m.hostPort };
    try {
      return await PortProxy.start(spec, this.logger.child({ component: 'proxy', network: net.network.name }));
    } catch (err) {
      if (err instanceof ProxyError) throw err.code === 'EADDRINUSE' ? conflict(err.message) : err.code === 'EPROXY' ? err : badRequest(err.message);
      throw err;
    }
  }

  /**
   * Tries the ephemeral range from a random place on: a port that no endpoint publishes, that no
   * other mapping of this request took, and that the host lets vsw listen on.
   */
  private async startDynamicProxy(net: NetworkRecord, m: PortMapping, siblings: PortMapping[]): Promise<PortProxy> {
    const [first, last] = ephemeralRange();
    const size = last - first + 1;
    const start = Math.floor(Math.random() * size);
    let tries = 0;
    for (let i = 0; i < size && tries < DYNAMIC_PORT_TRIES; i++) {
      const candidate: PortMapping = { ...m, hostPort: first + ((start + i) % size) };
      if (siblings.some((o) => o !== m && clashes(o, candidate)) || this.publisherOf(candidate) !== undefined) continue;
      tries++;
      try {
        const proxy = await this.startProxy(net, candidate);
        m.hostPort = candidate.hostPort;
        return proxy;
      } catch (err) {
        if (err instanceof ApiError && err.statusCode === 409) continue;
        throw err;
      }
    }
    throw conflict(`no free host port for ${m.containerPort}/${m.protocol} in the ephemeral range ${first}-${last} after ${tries} tries: name a host port (-p HOSTPORT:${m.containerPort}) or free some.`);
  }

  /**
   * Tells the gateway what the network publishes now (after an endpoint came or went), and the
   * kernel which host ports it redirects for endpoints published by DNAT.
   */
  async syncPublished(net: NetworkRecord, leaving?: EndpointRecord): Promise<void> {
    if (!net.nat) return;
    const list: NatPublishSpec[] = [];
    const kernel: KernelPublished[] = [];
    for (const record of this.state.endpointsOn(net.network.name)) {
      if (record === leaving) continue;
      for (const m of record.endpoint.publish ?? []) {
        list.push({ protocol: m.protocol, externalPort: m.hostPort, ip: record.endpoint.ip, port: m.containerPort });
        if (publishesByDnat(record)) kernel.push({ protocol: m.protocol, port: m.hostPort, ...(m.hostIp === undefined ? {} : { hostIp: m.hostIp }) });
      }
    }
    // A published VIP: the gateway hands its traffic to the network's load balancer.
    for (const lb of this.state.loadBalancers.values()) {
      if (lb.network === net.network.name && lb.publish !== undefined) list.push({ protocol: lb.protocol, externalPort: lb.publish, ip: lb.vip, port: lb.port });
    }
    await this.dataPlane.setPublished(net.network.id, list);
    await this.syncKernelPublished(net, kernel);
  }

  /**
   * Records the network's DNAT table as vsw's (saving the state) before an endpoint that needs it
   * joins the state: the table outlives the daemon, and a crash after it is installed must find it.
   */
  async claimPublishedTable(net: NetworkRecord): Promise<void> {
    await this.own(publishedTableName(net.nat!.info.hostInterface));
  }

  /** The network's DNAT table, installed as the endpoints need it, removed when nothing is published by DNAT. */
  private async syncKernelPublished(net: NetworkRecord, kernel: KernelPublished[]): Promise<void> {
    const { hostInterface, externalIp } = net.nat!.info;
    const table = publishedTableName(hostInterface);
    if (kernel.length === 0) {
      if (this.state.host.nftTables.includes(table)) await this.removeTable(table);
      return;
    }
    await this.own(table);
    await installPublished(table, hostInterface, externalIp, kernel);
  }

  /** The nftables tables the nat networks need now: masquerade, and DNAT where endpoints publish through the kernel. */
  wantedTables(): Set<string> {
    const wanted = new Set<string>();
    for (const r of this.state.networks.values()) {
      if (!r.nat) continue;
      if (r.nat.table) wanted.add(r.nat.table);
      if (this.state.endpointsOn(r.network.name).some((e) => publishesByDnat(e))) wanted.add(publishedTableName(r.nat.info.hostInterface));
    }
    return wanted;
  }

  async stopProxies(record: EndpointRecord): Promise<void> {
    for (const proxy of record.proxies ?? []) {
      await proxy.stop().catch((err) => this.logger.warn({ err, endpoint: record.endpoint.id }, 'could not stop a port listener'));
    }
    record.proxies = [];
  }

  // --- listings ---

  /** With countersOnly, no translation is listed (nor copied out of the data plane): cheap at any table size. */
  async list(network?: string, countersOnly = false): Promise<NatNetworkState[]> {
    const net = network === undefined ? undefined : this.state.requireNetwork(network);
    if (net && !net.nat) throw badRequest(`network ${network} is not a nat network (its driver is ${net.network.driver}): only nat networks have translations.`);
    const byPort = new Map<number, string>();
    for (const r of this.state.endpoints.values()) byPort.set(r.endpoint.portId, r.endpoint.name);
    const names = new Map<number, string>();
    for (const r of this.state.networks.values()) names.set(r.network.id, r.network.name);
    const byIp = (netName: string, ip: string): string | null => this.state.endpointsOn(netName).find((r) => r.endpoint.ip === ip)?.endpoint.name ?? null;
    const states = await this.dataPlane.nat(net?.network.id, countersOnly);
    return states.map((s) => {
      const name = names.get(s.networkId) ?? String(s.networkId);
      const nat = this.state.networks.get(name)?.nat;
      return {
        network: name,
        externalIp: s.externalIp,
        counters: s.counters,
        hostPort: { ifname: nat?.info.hostInterface ?? '-', ...this.dataPlane.portCounters(nat?.portId ?? 0) },
        published: s.published.map((p) => ({ protocol: p.protocol, external: `${s.externalIp}:${p.externalPort}`, target: `${p.ip}:${p.port}`, endpoint: byIp(name, p.ip) })),
        ...(countersOnly ? {} : { translations: s.translations.map(({ portId, ...t }) => ({ ...t, endpoint: byPort.get(portId) ?? null })) }),
      };
    });
  }
}

function publishesByDnat(record: EndpointRecord): boolean {
  return record.endpoint.publishVia === 'dnat' && (record.endpoint.publish?.length ?? 0) > 0;
}

/** Listen attempts on taken ports before a dynamic mapping gives up. */
const DYNAMIC_PORT_TRIES = 64;
const EPHEMERAL_RANGE_FILE = '/proc/sys/net/ipv4/ip_local_port_range';

/** The host's ephemeral port range (net.ipv4.ip_local_port_range), where dynamic host ports come from. */
function ephemeralRange(): [number, number] {
  try {
    const [first, last] = readFileSync(EPHEMERAL_RANGE_FILE, 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(first) && Number.isInteger(last) && first >= 1 && first <= last && last <= 65535) return [first, last];
  } catch {
    // Not Linux, or /proc not mounted: the kernel's default range.
  }
  return [32768, 60999];
}

function clashes(a: PortMapping, b: PortMapping): boolean {
  if (a.protocol !== b.protocol || a.hostPort !== b.hostPort) return false;
  const ia = a.hostIp ?? '0.0.0.0';
  const ib = b.hostIp ?? '0.0.0.0';
  return ia === ib || ia === '0.0.0.0' || ib === '0.0.0.0';
}

function overlapsAny(prefix: string, cidr: string): boolean {
  try {
    return subnetsOverlap(prefixToSubnet(prefix), cidr);
  } catch {
    return false;
  }
}

/** Host routes can be /31 or /32, which parseSubnet (made for networks) refuses; compare them by hand. */
function prefixToSubnet(prefix: string): Subnet {
  const [addr, len] = prefix.split('/');
  const bits = Number(len);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const network = (ipToInt(addr) & mask) >>> 0;
  return { network, broadcast: (network | (~mask >>> 0)) >>> 0, prefix: bits };
}

function parsePortRange(text: string): [number, number] {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text);
  const first = m ? Number(m[1]) : NaN;
  const last = m ? Number(m[2]) : NaN;
  if (!m || first < 1 || last > 65535 || first > last) {
    throw badRequest(`--nat-ports ${text} is not a port range: write FIRST-LAST with 1 <= FIRST <= LAST <= 65535, such as ${DEFAULT_NAT_PORTS}.`);
  }
  return [first, last];
}
