/**
 * What the API does: networks, endpoints and compartments, applied to the
 * host (namespaces, TAPs, addresses) and to the data plane, and recorded in
 * State. Every mutation runs under one mutex: a mutation awaits host commands
 * midway, and two interleaved ones could otherwise pick the same address,
 * interface name or port id.
 *
 * Every mutation ends with commit(): the state is on disk before the API
 * answers. The order of host changes and saves is chosen so that a crash at
 * any point leaves nothing vsw cannot find again (docs/STATE.md):
 * - what dies with the daemon (TAPs until persistent, sockets, listeners) is
 *   made first and saved after;
 * - what outlives it (a compartment, an nftables table, ip_forward) is
 *   recorded first and made after, so a restart can remove it if unwanted;
 * - removals are done first and saved after, so a crash in between leaves a
 *   record that the restart brings back or cleans up, never a stray object.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import type { Logger } from 'pino';
import {
  canonicalNetns,
  configureInterface,
  createNetns,
  deleteNetns,
  linkExists,
  netnsExists,
  netnsMounted,
  netnsPath,
  isNetnsPath,
  isNetworkNamespace,
  netnsInode,
  pickFreeIfName,
  prepareInterface,
  validateIfName,
  validateNetnsName,
  validateNetnsRef,
} from '../host/index.js';
import { closeFd, tapSetPersist, tcpSocketIn, VhostEvent } from '../native/index.js';
import type { DataPlane } from '../switch/dataplane.js';
import {
  type Compartment,
  type CreateCompartmentRequest,
  type CreateEndpointRequest,
  type CreateFabricEndpointRequest,
  type CreateNetworkRequest,
  type Endpoint,
  type EndpointLease,
  type Network,
  type RemoteEndpointRequest,
  type StatsResponse,
  type UplinkStats,
  type VhostEndpointState,
} from './api-types.js';
import { hostnameProblem, type DhcpLease } from '../dhcp/index.js';
import { DhcpService, type DhcpDataPlane } from './dhcp.js';
import { ApiError, badRequest, conflict, notFound, sentence, upstreamTimeout } from './errors.js';
import { Ipam, IpamError, macForIp, normalizeMac, parseIpOrCidr, parseRange, randomLocalMac, subnetContains, subnetsOverlap } from './ipam.js';
import { Mutex } from './mutex.js';
import { PolicyService, type PolicyDataPlane, type PolicyReads } from './policies.js';
import { NatService, type NatDataPlane } from './nat.js';
import { LbService, type LbDataPlane } from './lb.js';
import { DnsService, hostUpstreams, type DnsDataPlane, type Upstream } from './dns.js';
import type { SocketMaker } from './lb-probe.js';
import { OverlayService, type OverlayDataPlane, type OverlayPlan } from './overlay.js';
import { UplinkService } from './uplink.js';
import { CaptureService, type CaptureDataPlane } from './capture.js';
import { defaultPortPolicy } from '../vfp/policy.js';
import { Rollback } from './rollback.js';
import { State, type EndpointRecord, type NetworkRecord, type UplinkRecord } from './state.js';
import type { RuntimeState, SavedState } from './state-file.js';
import { attachEndpointTap, closeQuietly, openTap, releaseTap, removeEndpointTap } from './taps.js';
import { restoreState, type RestoreDataPlane, type RestoreReport } from './restore.js';
import { DAEMON_NETNS, endpointInterface, endpointNetnsPresent, endpointPort, hasTap, networkSpec } from './endpoint-config.js';
import { checkVhostUser, socketProblem, vhostStateAfter, vhostStateOf, type VhostUser } from './vhost.js';
import { readFailure } from './health.js';

/**
 * The part of DataPlane the service drives: what each sub-service declares it
 * uses, and the service's own calls. Tests can pass a fake.
 */
export type DataPlaneHandle = NatDataPlane &
  CaptureDataPlane &
  OverlayDataPlane &
  PolicyDataPlane &
  RestoreDataPlane &
  DhcpDataPlane &
  LbDataPlane &
  DnsDataPlane &
  Pick<DataPlane, 'maxPorts' | 'addNetwork' | 'removeNetwork' | 'addPort' | 'removePort' | 'portCounters' | 'switchCounters' | 'announce' | 'stages' | 'vhostStatus'>;

export interface NetworkServiceOptions {
  /** Writes the state durably (src/service/state-file.ts); absent, nothing is saved. */
  save?: (state: SavedState) => Promise<void>;
  /** Makes a TCP socket in a network namespace, for load balancer probes; default the native addon's tcpSocketIn. */
  probeSocket?: SocketMaker;
  /** Where the resolvers forward names that are not the networks' own; default the host's /etc/resolv.conf nameservers (read each time). */
  dnsUpstreams?: Upstream[];
}

const now = (): string => new Date().toISOString();

export class NetworkService {
  readonly state: State;
  /** Reads only: a policy change goes through changePolicy, under the mutex. */
  readonly policies: PolicyReads;
  private readonly policyService: PolicyService;
  readonly nat: NatService;
  readonly overlay: OverlayService;
  readonly uplinks: UplinkService;
  readonly dhcp: DhcpService;
  readonly capture: CaptureService;
  /** Reads only: changes go through changeLoadBalancers, under the mutex. */
  readonly lb: LbService;
  readonly dns: DnsService;
  private readonly mutex = new Mutex();
  private readonly save?: (state: SavedState) => Promise<void>;

  constructor(
    private readonly dataPlane: DataPlaneHandle,
    private readonly logger: Logger,
    opts: NetworkServiceOptions = {},
  ) {
    this.save = opts.save;
    this.state = new State(dataPlane.maxPorts);
    const commit = (): Promise<void> => this.commit();
    this.policies = this.policyService = new PolicyService(this.state, dataPlane, logger, commit);
    this.nat = new NatService(this.state, dataPlane, logger, commit);
    this.overlay = new OverlayService(this.state, dataPlane, logger);
    this.uplinks = new UplinkService(this.state, dataPlane, logger, commit);
    this.dhcp = new DhcpService(dataPlane, logger, { readdress: (id, lease) => this.readdress(id, lease) });
    this.capture = new CaptureService(this.state, dataPlane, logger);
    const upstreams = opts.dnsUpstreams;
    this.dns = new DnsService(this.state, dataPlane, logger, upstreams === undefined ? () => hostUpstreams() : () => upstreams);
    this.lb = new LbService(this.state, dataPlane, logger, commit, opts.probeSocket ?? tcpSocketIn, this.dns, this.nat);
  }

  /** Load balancer changes run under the service's mutex like every other mutation; LbService saves each before it resolves. */
  changeLoadBalancers<T>(change: (lb: LbService) => Promise<T>): Promise<T> {
    return this.mutex.run(() => change(this.lb));
  }

  /**
   * Writes the state as it is now and resolves once it is on disk. A failure
   * is a 500 saying so; the caller undoes what it can (creates) or leaves the
   * change to be saved with the next one (removals, which are done already).
   */
  async commit(after: 'undone' | 'done' = 'undone'): Promise<void> {
    if (!this.save) return;
    const saved = this.state.toSaved();
    try {
      await this.save(saved);
    } catch (err) {
      const reason = (err as Error).message.replace(/\.$/, '');
      throw new ApiError(
        500,
        after === 'undone'
          ? `the daemon could not save its state (${reason}): the change was not kept; free space or fix permissions in the state directory and retry.`
          : `the daemon could not save its state (${reason}): the removal is done but not saved, so a restart before the next saved change would bring it back; free space or fix permissions in the state directory.`,
      );
    }
    this.state.generation = saved.generation;
  }

  /** Endpoint policy changes run under the service's mutex like every other mutation; PolicyService saves each before it resolves. */
  changePolicy<T>(change: (policies: PolicyService) => Promise<T>): Promise<T> {
    return this.mutex.run(() => change(this.policyService));
  }

  /** Overlay mutations run under the service's mutex like every other one, and are saved before they are answered. */
  setOverlayPeers(name: string, peers: string[]): Promise<{ added: string[]; removed: string[] }> {
    return this.mutex.run(async () => {
      const before = this.overlay.snapshot(name);
      const result = await this.overlay.setPeers(name, peers);
      await this.commitOr(() => this.overlay.putBack(name, before));
      await this.lb.refresh(name);
      return result;
    });
  }

  addOverlayRemote(name: string, req: RemoteEndpointRequest): Promise<RemoteEndpointRequest> {
    return this.mutex.run(async () => {
      const before = this.overlay.snapshot(name);
      const remote = await this.overlay.addRemote(name, req);
      await this.commitOr(() => this.overlay.putBack(name, before));
      await this.lb.refresh(name);
      return remote;
    });
  }

  /**
   * The network's remote endpoints made exactly `remotes` (by MAC), saved
   * once for all of them: a controller's agent pushes thousands at a time,
   * and one save per remote would write the growing state once for each.
   * All or nothing: a remote refused puts the set back as it was.
   */
  setOverlayRemotes(name: string, remotes: RemoteEndpointRequest[]): Promise<{ added: number; removed: number }> {
    return this.mutex.run(async () => {
      const before = this.overlay.snapshot(name);
      let result: { added: number; removed: number };
      try {
        result = await this.overlay.setRemotes(name, remotes);
      } catch (err) {
        await this.overlay.putBack(name, before).catch((e: unknown) => this.logger.error({ err: e }, 'could not put the remote endpoints back'));
        throw err;
      }
      if (result.added + result.removed === 0) return result;
      await this.commitOr(() => this.overlay.putBack(name, before));
      await this.lb.refresh(name);
      return result;
    });
  }

  removeOverlayRemote(name: string, mac: string): Promise<void> {
    return this.mutex.run(async () => {
      await this.overlay.removeRemote(name, mac);
      await this.commit('done');
      await this.lb.refresh(name);
    });
  }

  /** commit(), and when the save fails, `undo` (logged if it fails too) before the 500 goes out. */
  private async commitOr(undo: () => Promise<void>): Promise<void> {
    try {
      await this.commit();
    } catch (err) {
      await undo().catch((e: unknown) => this.logger.error({ err: e }, 'could not undo a change that could not be saved'));
      throw err;
    }
  }

  createNetwork(req: CreateNetworkRequest): Promise<Network> {
    return this.mutex.run(() => this.addNetwork(req));
  }

  deleteNetwork(name: string): Promise<void> {
    return this.mutex.run(async () => {
      await this.removeNetwork(name);
      await this.commit('done');
    });
  }

  /** `created` false: the request named the owner of an endpoint that exists, which is the answer (a runtime's retry). */
  createEndpoint(req: CreateEndpointRequest): Promise<{ endpoint: Endpoint; created: boolean }> {
    return this.mutex.run(() => this.addEndpoint(req));
  }

  /**
   * The runtime moved an endpoint's TAP (docker: into its container at Join,
   * back to the daemon's namespace at Leave): vsw follows it there, so health
   * checks, repairs and restarts look for it where it is.
   */
  relocateEndpoint(id: string, to: { netns: string; ifname: string; unplaced: boolean; handedTo?: string }): Promise<Endpoint> {
    return this.mutex.run(async () => {
      const record = this.state.requireEndpoint(id);
      const before = { ...record.endpoint };
      record.endpoint.netns = canonicalNetns(to.netns);
      record.endpoint.ifname = to.ifname;
      delete record.endpoint.unplaced;
      delete record.endpoint.handedTo;
      delete record.endpoint.netnsInode;
      // A container's namespace known by path is pinned by its inode; the daemon's own is whatever it runs in.
      const inode = isNetnsPath(record.endpoint.netns) && to.netns !== DAEMON_NETNS ? await netnsInode(record.endpoint.netns) : null;
      if (inode !== null) record.endpoint.netnsInode = inode;
      if (to.unplaced) record.endpoint.unplaced = true;
      if (to.unplaced && to.handedTo !== undefined) record.endpoint.handedTo = to.handedTo;
      try {
        await this.commit();
      } catch (err) {
        record.endpoint = before;
        throw err;
      }
      this.logger.info({ endpoint: id, endpointName: record.endpoint.name, netns: record.endpoint.netns, ifname: to.ifname }, 'endpoint moved by its runtime');
      return this.state.endpointView(record);
    });
  }

  deleteEndpoint(idOrName: string): Promise<void> {
    return this.mutex.run(async () => {
      await this.detach(this.state.requireEndpoint(idOrName));
      await this.commit('done');
    });
  }

  createCompartment(req: CreateCompartmentRequest): Promise<Compartment> {
    return this.mutex.run(() => this.addCompartment(req.name));
  }

  deleteCompartment(name: string): Promise<void> {
    return this.mutex.run(async () => {
      await this.removeCompartment(name);
      await this.commit('done');
    });
  }

  /**
   * A clean stop: lets go of what dies with the daemon (listeners, sockets,
   * fds) and leaves on the host what outlives it (persistent TAPs,
   * compartments, host TAPs, nftables tables, ip_forward), for the next
   * daemon to take over. The data plane must have stopped receiving.
   */
  release(): Promise<void> {
    return this.mutex.run(async () => {
      // Leases stay the endpoints': the next daemon asks for the same addresses again.
      this.dhcp.stopAll();
      await this.lb.stop();
      for (const record of this.state.endpoints.values()) {
        await this.nat.stopProxies(record);
        if (record.fd >= 0) closeQuietly(record.fd, this.logger);
      }
      for (const record of this.state.networks.values()) {
        if (record.nat && record.nat.fd >= 0) closeQuietly(record.nat.fd, this.logger);
        if (record.uplink && record.uplink.fd >= 0) closeQuietly(record.uplink.fd, this.logger);
      }
      await this.overlay.closeAll();
    });
  }

  /** A daemon start: the saved state rebuilt on the host and in the data plane (restore.ts), then saved as found. */
  restore(saved: SavedState, ipams: Map<string, Ipam>, runtime: RuntimeState | null): Promise<RestoreReport> {
    return this.mutex.run(async () => {
      const report = await restoreState({ state: this.state, dataPlane: this.dataPlane, nat: this.nat, overlay: this.overlay, uplinks: this.uplinks, logger: this.logger }, saved, ipams, runtime);
      for (const { endpoint, networkId } of this.state.endpoints.values()) {
        if (endpoint.dhcp === undefined) continue;
        this.dhcp.resume(dhcpIdentity(endpoint), endpoint.portId, networkId, endpoint.ip);
      }
      for (const lb of saved.loadBalancers ?? []) this.state.loadBalancers.set(lb.name, { ...lb, backends: lb.backends.filter((b) => b.endpoint === undefined || this.state.endpoints.has(b.endpoint)) });
      await this.lb.restoreAll();
      await this.dns.syncAll();
      this.announce([...this.state.endpoints.values()].filter((r) => r.down === null));
      await this.commit();
      return report;
    });
  }

  /** Endpoints whose TAP was away tell their networks they are back (gratuitous ARP); not awaited: nothing waits on it. */
  private announce(records: EndpointRecord[]): void {
    if (records.length === 0) return;
    const endpoints = records.map((r) => ({ portId: r.endpoint.portId, ip: r.endpoint.ip, mac: r.endpoint.mac }));
    this.dataPlane.announce(endpoints).catch((err: unknown) => this.logger.warn({ err }, 'could not announce the endpoints that came back'));
  }

  /**
   * The data plane stopped receiving on a port (its TAP vanished, or read()
   * failed): the endpoint, or the nat network's host TAP, is down with the
   * reason until checkHealth brings it back.
   */
  portDown(portId: number, fd: number, errno: number): Promise<void> {
    const reason = readFailure(errno);
    return this.mutex.run(async () => {
      // The fd too: the port may have been removed and its id given to another since the event was sent.
      const record = [...this.state.endpoints.values()].find((r) => r.endpoint.portId === portId && r.fd === fd);
      if (record && record.down === null) {
        record.down = reason;
        await this.dataPlane.removePort(portId).catch((err) => this.logger.warn({ err, portId }, 'data plane could not remove the port'));
        if (record.fd >= 0) closeQuietly(record.fd, this.logger);
        record.fd = -1;
        this.logger.warn({ endpoint: record.endpoint.id, endpointName: record.endpoint.name, reason }, 'endpoint is down; vsw keeps trying to bring it back');
        await this.lb.refresh(record.endpoint.network);
        return;
      }
      const net = [...this.state.networks.values()].find((r) => r.nat?.portId === portId && r.nat.fd === fd);
      if (net?.nat && net.nat.down === null) {
        await this.nat.takeDownHostPort(net, reason);
        return;
      }
      const fabricked = [...this.state.networks.values()].find((r) => r.fabric?.portId === portId && r.fabric.fd === fd);
      if (fabricked && fabricked.fabric!.down === null) {
        await this.uplinks.takeDownFabric(fabricked, reason);
        return;
      }
      const uplinked = [...this.state.networks.values()].find((r) => r.uplink?.portId === portId && r.uplink.fd === fd);
      if (uplinked && uplinked.uplink!.down === null) {
        await this.uplinks.takeDown(uplinked, reason);
        return;
      }
      const overlay = [...this.state.networks.values()].find((r) => r.overlay?.uplinkId === portId);
      if (overlay && !record) {
        // The underlay socket of an overlay: nothing to reattach from here; the daemon's restart opens it anew.
        this.logger.error({ uplinkId: portId, vtep: overlay.overlay!.info.vtep, errno }, 'an overlay underlay socket stopped receiving: restart the daemon to open it again');
      }
    });
  }

  /** A VM endpoint's device changed state: kept for the API and logged; nothing to do, the VMM and the guest drive it. */
  vhostEvent(portId: number, socket: string, code: number, detail: string): void {
    const record = [...this.state.endpoints.values()].find((r) => r.endpoint.portId === portId && r.endpoint.vhostUser?.socket === socket);
    if (record === undefined) return;
    record.vhost = vhostStateAfter(record.vhost, code, detail);
    const fields = { endpoint: record.endpoint.id, endpointName: record.endpoint.name, socket, state: record.vhost.state, ...(detail === '' ? {} : { detail }) };
    if (code === VhostEvent.BROKEN) this.logger.warn(fields, "the guest broke its virtio ring: vsw stopped the endpoint's queues");
    else this.logger.info(fields, 'VM endpoint device changed state');
    if (code === VhostEvent.RUNNING) this.announce([record]);
  }

  /** Every VM endpoint's device as the data plane reports it now (metrics). */
  async vmEndpoints(): Promise<{ name: string; network: string; device: VhostEndpointState }[]> {
    const statuses = new Map((await this.dataPlane.vhostStatus()).map((s) => [s.portId, s]));
    const out: { name: string; network: string; device: VhostEndpointState }[] = [];
    for (const record of this.state.endpoints.values()) {
      const status = statuses.get(record.endpoint.portId);
      if (record.endpoint.vhostUser === undefined || status === undefined || status.socket !== record.endpoint.vhostUser.socket) continue;
      record.vhost = vhostStateOf(status);
      out.push({ name: record.endpoint.name, network: record.endpoint.network, device: record.vhost });
    }
    return out;
  }

  /** An endpoint as the API shows it, a VM endpoint's device counters read now. */
  async inspectEndpoint(idOrName: string): Promise<Endpoint> {
    const record = this.state.requireEndpoint(idOrName);
    if (record.endpoint.vhostUser !== undefined) {
      const [status] = await this.dataPlane.vhostStatus(record.endpoint.portId);
      if (status !== undefined && status.socket === record.endpoint.vhostUser.socket) record.vhost = vhostStateOf(status);
    }
    return this.state.endpointView(record);
  }

  /**
   * The periodic look at the host (src/service/health.ts): endpoints and
   * compartments whose namespace is gone are removed (their container
   * exited), and what is down is brought back when it can be.
   */
  checkHealth(): Promise<void> {
    return this.mutex.run(async () => {
      let changed = false;
      for (const record of [...this.state.endpoints.values()]) {
        const { endpoint } = record;
        if (endpoint.vhostUser !== undefined && record.down !== null) await this.bringUpVm(record);
        if (!hasTap(endpoint)) continue;
        if (await endpointNetnsPresent(endpoint)) {
          if (record.down !== null) await this.bringUp(record);
          continue;
        }
        this.logger.info({ endpoint: endpoint.id, endpointName: endpoint.name, netns: endpoint.netns }, 'endpoint removed: its network namespace is gone (its container exited)');
        await this.detach(record);
        changed = true;
      }
      for (const name of [...this.state.compartments.keys()]) {
        if (await netnsMounted(name)) continue;
        this.state.compartments.delete(name);
        this.logger.info({ compartment: name }, 'compartment removed: its network namespace is gone');
        changed = true;
      }
      for (const net of this.state.networks.values()) {
        if (!net.nat || net.nat.down === null) continue;
        await this.nat.bringUpHostPort(net).catch((err) => this.logger.debug({ err, network: net.network.name }, 'nat network host interface is still down'));
      }
      for (const net of this.state.networks.values()) {
        if (net.fabric && net.fabric.down !== null) {
          await this.uplinks.bringUpFabric(net).catch((err) => this.logger.debug({ err, network: net.network.name }, 'fabric port is still down'));
        }
        if (!net.uplink || net.uplink.down === null) continue;
        await this.uplinks.bringUp(net).catch((err) => this.logger.debug({ err, network: net.network.name }, 'uplink is still down'));
      }
      if (changed) await this.commit('done');
    });
  }

  /** A VM endpoint whose port could not be made (its socket's directory missing after a reboot, the path taken) tried again. */
  private async bringUpVm(record: EndpointRecord): Promise<void> {
    const problem = await socketProblem(record.endpoint.vhostUser!);
    if (problem !== null) {
      record.down = `${problem.text}; vsw tries again every second`;
      return;
    }
    try {
      await this.dataPlane.addPort(endpointPort(record, this.state.networks.get(record.endpoint.network)!));
    } catch (err) {
      record.down = `the data plane refused its port: ${(err as Error).message.replace(/\.$/, '')}`;
      return;
    }
    record.down = null;
    this.logger.info({ endpoint: record.endpoint.id, endpointName: record.endpoint.name, socket: record.endpoint.vhostUser!.socket }, 'VM endpoint is up again: vsw serves its socket');
  }

  /** A down endpoint attached again: its TAP (found, set right, or recreated) and its port, with the policy it has now. */
  private async bringUp(record: EndpointRecord): Promise<void> {
    const net = this.state.networks.get(record.endpoint.network)!;
    let tap;
    try {
      tap = await attachEndpointTap({ ...endpointInterface(record.endpoint, net), ip: record.endpoint.ip });
    } catch (err) {
      record.down = `its TAP could not be attached again: ${(err as Error).message.replace(/\.$/, '')}`;
      this.logger.debug({ err, endpoint: record.endpoint.id }, 'endpoint is still down');
      return;
    }
    try {
      await this.dataPlane.addPort(endpointPort({ ...record, fd: tap.fd }, net));
    } catch (err) {
      closeQuietly(tap.fd, this.logger);
      record.down = `the data plane refused its port: ${(err as Error).message.replace(/\.$/, '')}`;
      this.logger.debug({ err, endpoint: record.endpoint.id }, 'endpoint is still down');
      return;
    }
    record.fd = tap.fd;
    record.down = null;
    await this.lb.refresh(record.endpoint.network).catch((err: unknown) => this.logger.warn({ err, endpoint: record.endpoint.id }, 'could not bring the endpoint back into its load balancers'));
    this.announce([record]);
    this.logger.info({ endpoint: record.endpoint.id, endpointName: record.endpoint.name, tap: tap.how }, 'endpoint is up again');
  }

  async stats(): Promise<StatsResponse> {
    const ports = [...this.state.endpoints.values()].map(({ endpoint }) => ({
      endpoint: endpoint.id,
      name: endpoint.name,
      network: endpoint.network,
      netns: endpoint.netns,
      ifname: endpoint.ifname,
      ...this.dataPlane.portCounters(endpoint.portId),
    }));
    const row = (sock: UplinkRecord, network: string, extra: { vlan?: number; fabric?: true }): UplinkStats => ({
      interface: sock.info.interface,
      ...extra,
      network,
      ...(sock.down === null ? {} : { down: sock.down }),
      ...(sock.down === null && sock.portId >= 0 ? this.dataPlane.portCounters(sock.portId) : NO_COUNTERS),
    });
    const uplinks = [...this.state.networks.values()].flatMap(({ network, uplink, fabric }) => [
      ...(uplink ? [row(uplink, network.name, uplink.info.vlan === undefined ? {} : { vlan: uplink.info.vlan })] : []),
      ...(fabric ? [row(fabric, network.name, { fabric: true })] : []),
    ]);
    const counters = await this.dataPlane.switchCounters();
    return { ports, uplinks, switch: { ...counters, macTable: { ...counters.macTable } } };
  }

  // --- networks ---

  private async addNetwork(req: CreateNetworkRequest): Promise<Network> {
    if (req.owner !== undefined) {
      const holder = this.state.networkByOwner(req.owner);
      if (holder) throw conflict(`network ${holder.network.name} already belongs to ${req.owner}: remove it first.`);
    }
    if (this.state.networks.has(req.name)) {
      throw conflict(`network ${req.name} already exists: pick another name or remove it with \`vsw network rm ${req.name}\`.`);
    }
    const isNat = req.driver === 'nat';
    const isOverlay = req.driver === 'overlay';
    // The modes on a physical uplink: containers on the host's LAN.
    const onUplink = req.driver === 'transparent' || req.driver === 'l2bridge' || req.driver === 'l2tunnel';
    if (!onUplink && (req.uplink !== undefined || req.vlan !== undefined)) {
      throw badRequest(`--uplink and --vlan belong to transparent, l2bridge and l2tunnel networks, not ${req.driver} ones: leave them out or pass one of those with -d.`);
    }
    if (!isNat && (req.transit !== undefined || req.externalIp !== undefined || req.natPorts !== undefined)) {
      throw badRequest(`--transit, --external-ip and --nat-ports belong to nat networks, not ${req.driver} ones: leave them out or pass -d nat.`);
    }
    if (!isOverlay && [req.vni, req.vtep, req.peers, req.vxlanPort, req.mtu].some((v) => v !== undefined)) {
      throw badRequest(`--vni, --vtep, --peer, --vxlan-port and --mtu belong to overlay networks, not ${req.driver} ones: leave them out or pass -d overlay.`);
    }
    if (req.fabric !== undefined && req.driver !== 'l2bridge') {
      throw badRequest(`--fabric belongs to l2bridge networks (a fabric host's), not ${req.driver} ones: leave it out or pass -d l2bridge.`);
    }
    if (req.ipam === 'dhcp' && req.driver !== 'transparent') {
      throw badRequest(`--ipam dhcp belongs to transparent networks, not ${req.driver} ones (a DHCP server tells clients apart by MAC, and only transparent endpoints show theirs on the LAN): leave it out or pass -d transparent.`);
    }
    if (req.ipam === 'dhcp' && req.ipRange !== undefined) {
      throw badRequest(`--ip-range does not go with --ipam dhcp: the LAN's DHCP server picks the addresses; leave it out.`);
    }
    if (req.resolver !== undefined && req.driver !== 'internal' && !isOverlay) {
      throw badRequest(`--resolver belongs to internal and overlay networks, not ${req.driver} ones (a nat network's resolver is its gateway; a LAN has its own DNS): leave it out.`);
    }
    if (req.resolver !== undefined && req.gateway !== undefined) {
      throw badRequest(`--resolver and --gateway do not go together: a network with a gateway has its resolver at the gateway's address; leave one out.`);
    }
    if (!isOverlay && !onUplink && req.ipRange !== undefined) {
      throw badRequest(`--ip-range belongs to overlay, transparent, l2bridge and l2tunnel networks, not ${req.driver} ones: leave it out.`);
    }
    // The subnet first: the overlay's checks need it well-formed, and the IPAM needs the overlay's share of it.
    const subnetCidr = new Ipam(req.subnet).cidr;
    this.checkNoOverlap(subnetCidr);
    const plan: OverlayPlan | undefined = isOverlay ? await this.overlay.plan({ ...req, subnet: subnetCidr }) : undefined;
    const uplink = onUplink ? await this.uplinks.check(req, subnetCidr) : undefined;
    const fabric = req.fabric === undefined ? undefined : this.uplinks.checkFabric(req);
    // A network on an uplink shares its LAN with hosts vsw does not know: --ip-range keeps the containers to their part of it.
    const range = plan ? plan.range : onUplink && req.ipRange !== undefined ? parseRange(req.ipRange, subnetCidr) : undefined;
    const ipam = new Ipam(req.subnet, { ...(req.gateway === undefined ? {} : { gateway: req.gateway }), ...(range ? { range } : {}) });
    // The host's own address on the LAN is never a container's.
    if (uplink?.hostAddress !== undefined && uplink.hostAddress !== ipam.reservedGateway) ipam.reserve(uplink.hostAddress);
    const resolverIp = req.resolver === undefined ? undefined : parseIpOrCidr(req.resolver, ipam.subnet);
    if (resolverIp !== undefined) ipam.reserve(resolverIp);
    const id = this.state.networkIds.allocate();
    const rollback = new Rollback(this.logger);
    rollback.add(`release network id ${id}`, () => this.state.networkIds.release(id));
    try {
      // A nat network always has a gateway: the NAT gateway itself, at --gateway or the first host address.
      const gateway = ipam.gateway ?? (isNat ? ipam.reservedGateway : null);
      // DNS in the switch: at the gateway, or the --resolver address; the LAN's own on a physical uplink.
      const resolver = isNat || ((req.driver === 'internal' || isOverlay) && gateway !== null) ? (gateway ?? undefined) : resolverIp;
      const prepared = isNat ? await this.nat.prepare(req, ipam, id, rollback) : undefined;
      const tunnel = plan ? await this.overlay.attach(plan, rollback) : undefined;
      await this.dataPlane.addNetwork(id, req.name, networkSpec({ driver: req.driver, ...(req.ipam === 'dhcp' ? { ipam: 'dhcp' as const } : {}), ...(resolver === undefined ? {} : { resolver }) }, prepared?.spec, tunnel?.spec));
      rollback.add(`remove network ${req.name} from the data plane`, () => this.dataPlane.removeNetwork(id));
      const network: Network = {
        name: req.name,
        id,
        driver: req.driver,
        subnet: ipam.cidr,
        gateway,
        ...(resolver === undefined ? {} : { resolver }),
        created: now(),
        ...(req.owner === undefined ? {} : { owner: req.owner }),
        ...(req.ipam === 'dhcp' ? { ipam: 'dhcp' as const } : {}),
      };
      const record: NetworkRecord = { network, ipam, nat: prepared?.nat };
      if (plan && tunnel) record.overlay = { info: plan.info, tunnelPortId: tunnel.tunnelPortId, uplinkKey: tunnel.uplinkKey, uplinkId: tunnel.uplinkId, remotes: new Map() };
      if (record.nat) await this.nat.attachHostPort(record, rollback);
      if (uplink) {
        record.uplink = { info: uplink, fd: -1, portId: -1, down: null };
        await this.uplinks.attach(record, rollback);
      }
      if (fabric) {
        record.fabric = { info: fabric, fd: -1, portId: -1, down: null };
        await this.uplinks.attachFabric(record, rollback);
      }
      if (uplink) {
        rollback.add(`remove the guards of ${uplink.interface}${fabric ? ` and ${fabric.interface}` : ''}`, () => this.uplinks.removeGuard(record));
        await this.uplinks.guard(record);
      }
      this.state.networks.set(network.name, record);
      rollback.add(`forget network ${network.name}`, () => this.state.networks.delete(network.name));
      await this.commit();
      // Saved: from now on the host TAP outlives the daemon, and the next one finds it by name.
      if (record.nat) persistQuietly(record.nat.fd, `host TAP ${record.nat.info.hostInterface}`, this.logger);
      this.logger.info({ network: network.name, networkId: id, driver: network.driver, subnet: network.subnet, gateway: network.gateway, nat: record.nat?.info, overlay: record.overlay?.info, uplink: record.uplink?.info }, 'network created');
      return this.state.networkView(record);
    } catch (err) {
      await rollback.run();
      throw err;
    }
  }

  /** A network as `vsw network inspect` shows it: its record and its stages' counters from the data plane. */
  async inspectNetwork(name: string): Promise<Network> {
    const record = this.state.requireNetwork(name);
    return { ...this.state.networkView(record), stages: await this.dataPlane.stages(record.network.id) };
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
    this.lb.checkNetworkRemovable(name);
    await this.nat.tearDown(record);
    await this.uplinks.tearDownFabric(record);
    await this.uplinks.tearDown(record);
    await this.dataPlane.removeNetwork(record.network.id);
    await this.overlay.tearDown(record);
    this.state.networkIds.release(record.network.id);
    this.state.networks.delete(name);
    this.logger.info({ network: name, networkId: record.network.id }, 'network removed');
  }

  // --- endpoints ---

  private async addEndpoint(request: CreateEndpointRequest): Promise<{ endpoint: Endpoint; created: boolean }> {
    const net = this.state.requireNetwork(request.network);
    let req: CreateEndpointRequest;
    let netnsInode: number | undefined;
    let vhostUser: VhostUser | undefined;
    if (request.vhostUser !== undefined) {
      // A VM's endpoint: a vhost-user port instead of a TAP in a namespace.
      const same = request.owner === undefined ? undefined : this.state.endpointByOwner(request.owner);
      // A runtime (or an agent) asking again gets the endpoint it was given.
      if (same && same.endpoint.network === net.network.name && same.endpoint.vhostUser?.socket === request.vhostUser.socket) return { endpoint: this.state.endpointView(same), created: false };
      if (same) throw conflict(`${request.owner} already has endpoint ${describe(same)} on network ${same.endpoint.network}: remove it first.`);
      vhostUser = await checkVhostUser(request, this.state);
      if (net.network.ipam === 'dhcp') {
        throw badRequest(`network ${net.network.name} takes its addresses from the LAN's DHCP server, which vsw asks on a TAP's behalf; a VM's guest asks for itself: attach it with a static --ip on another network, or run the guest's DHCP client on a transparent network without --ipam dhcp.`);
      }
      req = request;
    } else {
      if (request.netns === undefined) throw badRequest('an endpoint needs a network namespace for its TAP: pass --netns NAME, or --vhost-user PATH for a VM\'s NIC.');
      req = { ...request, netns: canonicalNetns(request.netns) };
      netnsInode = await this.requireNetns(req.netns!, req.configure !== false);
      if (req.owner !== undefined) {
        const same = this.state.endpointByOwner(req.owner);
        if (same && same.endpoint.network === net.network.name && same.endpoint.netns === req.netns) {
          // A runtime asking again expects the interface it was promised: set it right if it drifted (replace converges).
          if (same.down === null && !same.endpoint.unplaced) await configureInterface(endpointInterface(same.endpoint, net));
          return { endpoint: this.state.endpointView(same), created: false };
        }
        if (same) {
          throw conflict(`${req.owner} already has endpoint ${describe(same)} on network ${same.endpoint.network} in network namespace ${same.endpoint.netns}: remove it first.`);
        }
      }
    }
    if (req.name !== undefined) this.checkEndpointNameFree(req.name);
    if (req.name !== undefined) this.dns.checkName(net, 'a new endpoint', req.name);
    const rollback = new Rollback(this.logger);
    try {
      return { endpoint: await this.attach(req, net, rollback, netnsInode, vhostUser), created: true };
    } catch (err) {
      await rollback.run();
      throw err;
    }
  }

  /** The steps of an endpoint create; each one registers its undo before the next may fail. A VM's (vhostUser) has no TAP, namespace or interface to set up. */
  private async attach(req: CreateEndpointRequest, net: NetworkRecord, rollback: Rollback, netnsInode: number | undefined, vhostUser?: VhostUser): Promise<Endpoint> {
    const publishVia = req.publishVia ?? 'proxy';
    const publish = this.nat.checkPublish(net, req.publish, publishVia);
    const dhcp = net.network.ipam === 'dhcp';
    if (dhcp) checkDhcpEndpoint(req, net);
    const staticIp = dhcp ? null : this.takeIp(net, req.ip);
    if (staticIp !== null) rollback.add(`release ${staticIp}`, () => net.ipam.release(staticIp));
    const mac = this.pickMac(net, req.mac, staticIp);
    const netns = vhostUser === undefined ? req.netns! : '';
    const ifname = vhostUser === undefined ? await this.pickIfName(netns, req.ifname) : '';
    // Not persistent until the endpoint is saved: a crash before that takes the TAP with it.
    const fd = vhostUser === undefined ? openTap(ifname, netnsPath(netns), true) : -1;
    if (fd >= 0) rollback.add(`close the TAP ${netns}/${ifname}`, () => closeFd(fd));
    const unplaced = req.configure === false;
    const portId = this.state.portIds.allocate();
    rollback.add(`release port id ${portId}`, () => this.state.portIds.release(portId));
    const id = this.newEndpointId();
    const endpoint: Endpoint = {
      id,
      name: req.name ?? (vhostUser === undefined ? this.defaultEndpointName(netns, ifname, id) : this.defaultVmEndpointName(vhostUser.socket, id)),
      network: net.network.name,
      netns,
      ...(netnsInode === undefined ? {} : { netnsInode }),
      ifname,
      mac,
      // A DHCP network's endpoint has its address once the lease is in (leaseAddress).
      ip: staticIp ?? '0.0.0.0',
      prefixLength: net.ipam.subnet.prefix,
      portId,
      created: now(),
      ownedCompartment: this.state.compartments.has(netns),
      ...(req.owner === undefined ? {} : { owner: req.owner }),
      ...(unplaced ? { unplaced: true } : {}),
      ...(vhostUser === undefined ? {} : { vhostUser }),
    };
    const policy = defaultPortPolicy(mac, endpoint.ip);
    if (req.spoofGuard === false) policy.spoofGuard.enabled = false;
    if (dhcp) {
      // The port first: the DHCP exchange goes through it, from no address (which the spoof guard lets DHCP do).
      await prepareInterface(endpointInterface(endpoint, net));
      policy.spoofGuard.ips = [];
      await this.dataPlane.addPort(endpointPort({ endpoint, fd, policy }, net));
      rollback.add(`remove port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
      await this.leaseAddress(endpoint, net, rollback);
      await configureInterface(endpointInterface(endpoint, net));
      policy.spoofGuard.ips = [endpoint.ip];
      await this.dataPlane.setPolicy(portId, policy);
    } else {
      if (vhostUser === undefined) {
        const config = endpointInterface(endpoint, net);
        await (unplaced ? prepareInterface(config) : configureInterface(config));
      }
      await this.dataPlane.addPort(endpointPort({ endpoint, fd, policy }, net));
      rollback.add(`remove port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
    }
    const ip = endpoint.ip;
    if (net.nat) endpoint.publish = publish;
    if (net.nat && publishVia === 'dnat' && publish.length > 0) endpoint.publishVia = 'dnat';
    const proxies = publishVia === 'dnat' ? [] : await this.nat.startProxies(net, publish, rollback);
    const record: EndpointRecord = { endpoint, fd, networkId: net.network.id, policy, proxies, down: null };
    if (endpoint.publishVia === 'dnat') await this.nat.claimPublishedTable(net);
    if (publish.length > 0) rollback.add('unpublish the ports again', () => this.nat.syncPublished(net));
    // Undone after it is forgotten: the guard then goes back to the addresses without it.
    if (net.uplink) rollback.add(`take ${ip} out of the uplink guard`, () => this.uplinks.guard(net));
    this.state.endpoints.set(id, record);
    rollback.add(`forget endpoint ${id}`, () => this.state.endpoints.delete(id));
    // Before the container can be reached: from now on the host's stack never answers or forwards for its address.
    if (net.uplink) await this.uplinks.guard(net);
    if (publish.length > 0) await this.nat.syncPublished(net);
    await this.commit();
    if (fd >= 0) persistQuietly(fd, `TAP ${netns}/${ifname}`, this.logger);
    await this.dns.sync(net.network.name).catch((err: unknown) => this.logger.warn({ err, endpoint: id }, "could not give the network's resolver the endpoint's name"));
    if (vhostUser === undefined) await this.dns.writeResolvConf(netns, net.network.name).catch((err: unknown) => this.logger.warn({ err, netns }, 'could not write the compartment\'s resolv.conf'));
    this.logger.info({ endpoint: id, endpointName: endpoint.name, network: endpoint.network, netns: endpoint.netns, ifname, ip, mac, portId, ...(vhostUser === undefined ? {} : { vhostUser }) }, 'endpoint created');
    return this.state.endpointView(record);
  }

  /**
   * A fabric endpoint (vsw fabric add): a container address behind an l2bridge
   * network's fabric port, at its container host's MAC. No TAP and no
   * namespace: a port of its own in the switch, so the address has its own
   * policy (vsw policy ... ENDPOINT), counters, trace and flows.
   */
  addFabricEndpoint(networkName: string, req: CreateFabricEndpointRequest): Promise<Endpoint> {
    return this.mutex.run(async () => {
      const net = this.state.requireNetwork(networkName);
      if (!net.fabric) throw badRequest(`network ${networkName} has no fabric port: fabric endpoints belong to an l2bridge network made with --fabric IFNAME.`);
      if (net.fabric.down !== null) throw conflict(`the fabric port ${net.fabric.info.interface} of network ${networkName} is down (${net.fabric.down}): bring the interface up (vsw reattaches it within seconds) and try again.`);
      if (req.name !== undefined) this.checkEndpointNameFree(req.name);
      const mac = normalizeMac(req.mac);
      const rollback = new Rollback(this.logger);
      try {
        const ip = this.takeIp(net, req.ip);
        rollback.add(`release ${ip}`, () => net.ipam.release(ip));
        const portId = this.state.portIds.allocate();
        rollback.add(`release port id ${portId}`, () => this.state.portIds.release(portId));
        const id = this.newEndpointId();
        const endpoint: Endpoint = {
          id,
          name: req.name ?? `fabric-${ip}`,
          network: networkName,
          netns: '',
          ifname: '',
          mac,
          ip,
          prefixLength: net.ipam.subnet.prefix,
          portId,
          created: now(),
          ownedCompartment: false,
          fabric: net.fabric.info.interface,
        };
        const policy = defaultPortPolicy(mac, ip);
        await this.dataPlane.addPort(endpointPort({ endpoint, fd: -1, policy }, net));
        rollback.add(`remove port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
        const record: EndpointRecord = { endpoint, fd: -1, networkId: net.network.id, policy, proxies: [], down: null };
        if (net.uplink) rollback.add(`take ${ip} out of the uplink guard`, () => this.uplinks.guard(net));
        this.state.endpoints.set(id, record);
        rollback.add(`forget endpoint ${id}`, () => this.state.endpoints.delete(id));
        if (net.uplink) await this.uplinks.guard(net);
        await this.commit();
        this.logger.info({ endpoint: id, endpointName: endpoint.name, network: networkName, ip, hostMac: mac, fabric: endpoint.fabric }, 'fabric endpoint created');
        return this.state.endpointView(record);
      } catch (err) {
        await rollback.run();
        throw err;
      }
    });
  }

  /**
   * A DHCP network's endpoint gets its address: a lease from the LAN's DHCP
   * server, asked for through the endpoint's port with its MAC, within
   * DHCP_ACQUIRE_TIMEOUT_MS. The address must lie in the network's subnet and
   * be nobody else's; it is the endpoint's from then on.
   */
  private async leaseAddress(endpoint: Endpoint, net: NetworkRecord, rollback: Rollback): Promise<void> {
    let lease: DhcpLease;
    try {
      lease = await this.dhcp.acquire(dhcpIdentity(endpoint), endpoint.portId, net.network.id);
    } catch (err) {
      throw upstreamTimeout(sentence((err as Error).message));
    }
    rollback.add(`release the DHCP lease of ${lease.address}`, () => this.dhcp.release(endpoint.id));
    const ip = lease.address;
    if (!subnetContains(net.ipam.subnet, ip)) {
      throw badRequest(`the LAN's DHCP server leased ${ip}, outside network ${net.network.name}'s subnet ${net.network.subnet}: create the network with the LAN's subnet as --subnet.`);
    }
    const holder = this.state.endpointsOn(net.network.name).find((r) => r.endpoint.ip === ip);
    if (holder) throw conflict(`the LAN's DHCP server leased ${ip}, which endpoint ${describe(holder)} has: check the server's leases (two clients with one client id?).`);
    try {
      net.ipam.reserve(ip);
    } catch (err) {
      if (!(err instanceof IpamError)) throw err;
      throw conflict(`the LAN's DHCP server leased ${ip}, which network ${net.network.name} keeps for its gateway or cannot hand out: give the network the LAN's router as --gateway, or exclude it from the server's range.`);
    }
    rollback.add(`release ${ip}`, () => net.ipam.release(ip));
    endpoint.ip = ip;
    endpoint.prefixLength = lease.prefixLength;
    endpoint.dhcp = leaseView(lease);
  }

  /** A later lease of a DHCP endpoint (after a restart or a lost lease): if it brought another address, the endpoint moves to it. */
  private readdress(id: string, lease: DhcpLease): Promise<void> {
    return this.mutex.run(async () => {
      const record = this.state.endpoints.get(id);
      if (!record) return;
      const { endpoint } = record;
      const net = this.state.networks.get(endpoint.network)!;
      const moved = lease.address !== endpoint.ip || lease.prefixLength !== endpoint.prefixLength || (lease.router ?? undefined) !== endpoint.dhcp?.router;
      endpoint.dhcp = leaseView(lease);
      if (moved) {
        if (!subnetContains(net.ipam.subnet, lease.address) || (lease.address !== endpoint.ip && net.ipam.has(lease.address))) {
          this.logger.error({ endpoint: id, address: lease.address, subnet: net.network.subnet }, "the DHCP server leased an address outside the network's subnet or taken by another endpoint; the endpoint keeps its old one");
          return;
        }
        const old = endpoint.ip;
        try {
          // The new address first: a refusal leaves the endpoint its old one, still reserved.
          net.ipam.reserve(lease.address);
        } catch (err) {
          this.logger.error({ err, endpoint: id, address: lease.address }, 'the DHCP server leased an address vsw cannot give the endpoint; it keeps its old one');
          return;
        }
        net.ipam.release(old);
        endpoint.ip = lease.address;
        endpoint.prefixLength = lease.prefixLength;
        record.policy.spoofGuard.ips = [lease.address];
        if (record.down === null) {
          await configureInterface({ ...endpointInterface(endpoint, net), flushAddresses: true });
          await this.dataPlane.setPolicy(endpoint.portId, record.policy);
        }
        await this.uplinks.guard(net);
        this.logger.info({ endpoint: id, from: old, to: lease.address }, 'endpoint moved to the address its new DHCP lease gave');
      }
      await this.commit('done');
    });
  }

  /**
   * The namespace exists and is a container's; for one known by path, its inode
   * (saved, see Endpoint.netnsInode). The daemon's own namespace is refused
   * unless vsw leaves the interface alone (configure false): an address and a
   * default route there would be the host's.
   */
  private async requireNetns(netns: string, configure: boolean): Promise<number | undefined> {
    validateNetnsRef(netns);
    const inode = await netnsInode(netns);
    if (inode === null || (isNetnsPath(netns) && !(await isNetworkNamespace(netns)))) {
      if (isNetnsPath(netns)) throw badRequest(`network namespace ${netns} does not exist (the path is not a network namespace): check the path the runtime passed, or that its container is still running.`);
      throw badRequest(`network namespace ${netns} does not exist: create it with \`ip netns add ${netns}\` or use \`vsw run\`.`);
    }
    if (configure && inode === (await netnsInode(DAEMON_NETNS))) {
      throw badRequest(`network namespace ${netns} is the daemon's own (the host's): give a container's namespace, whose address and default route vsw may set.`);
    }
    return isNetnsPath(netns) ? inode : undefined;
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

  /** The endpoint's MAC: asked for, derived from its address, or (no address yet: DHCP) random. */
  private pickMac(net: NetworkRecord, requested: string | undefined, ip: string | null): string {
    const mac = requested !== undefined ? normalizeMac(requested) : ip !== null ? macForIp(ip) : randomLocalMac();
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

  private newEndpointId(): string {
    let id: string;
    do id = randomBytes(6).toString('hex');
    while (this.state.endpoints.has(id));
    return id;
  }

  /** A VM endpoint's default name: its socket's file name without .sock (/run/vsw/vm1.sock: vm1), unless taken. */
  private defaultVmEndpointName(socket: string, id: string): string {
    const name = basename(socket).replace(/\.sock$/, '').replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
    return name === '' || this.state.endpointNamed(name) ? id : name;
  }

  private defaultEndpointName(netns: string, ifname: string, id: string): string {
    // A namespace known by path is named by its file: /proc/123/ns/net would make a poor name.
    const base = isNetnsPath(netns) ? netns.split('/').filter((p) => p !== '' && p !== 'ns' && p !== 'net').pop() ?? 'ns' : netns;
    const name = `${base}-${ifname}`.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
    if (name === '') return id;
    return this.state.endpointNamed(name) ? id : name;
  }

  /** Takes an endpoint off the switch and the host; keeps going past failures so nothing stays half-attached. */
  private async detach(record: EndpointRecord): Promise<void> {
    const { endpoint } = record;
    // While its port is still there: the RELEASE goes out through it.
    this.dhcp.release(endpoint.id);
    await this.nat.stopProxies(record);
    const net = this.state.networks.get(endpoint.network);
    if (net && endpoint.publish?.length) {
      await this.nat.syncPublished(net, record).catch((err) => this.logger.warn({ err, endpoint: endpoint.id }, 'data plane could not unpublish the ports'));
    }
    await this.lb.endpointRemoved(endpoint.id, endpoint.network).catch((err: unknown) => this.logger.warn({ err, endpoint: endpoint.id }, 'could not take the endpoint out of its load balancers'));
    try {
      await this.dataPlane.removePort(endpoint.portId);
    } catch (err) {
      // The data plane is gone or never knew the port: either way nothing polls the fd any more.
      this.logger.warn({ err, endpoint: endpoint.id, portId: endpoint.portId }, 'data plane could not remove the port');
    }
    if (!hasTap(endpoint)) {
      // A fabric endpoint or a VM's has no TAP: its port was all (a VM's device took its socket with it).
    } else if (record.fd >= 0) {
      try {
        releaseTap(record.fd);
      } catch (err) {
        this.logger.warn({ err, endpoint: endpoint.id }, 'could not release the TAP');
      }
      record.fd = -1;
    } else {
      // Down: vsw holds no fd, but the TAP may be there (persistent); it must not outlive its endpoint.
      await removeEndpointTap(endpoint).catch((err: unknown) => this.logger.warn({ err, endpoint: endpoint.id }, 'could not remove the TAP of an endpoint that was down'));
    }
    this.state.networks.get(endpoint.network)?.ipam.release(endpoint.ip);
    this.state.portIds.release(endpoint.portId);
    this.state.endpoints.delete(endpoint.id);
    if (net?.uplink) await this.uplinks.guard(net).catch((err) => this.logger.warn({ err, endpoint: endpoint.id }, "could not take the endpoint's address out of the uplink guard"));
    await this.dns.sync(endpoint.network).catch((err: unknown) => this.logger.warn({ err, endpoint: endpoint.id }, "could not take the endpoint's name out of the network's resolver"));
    this.logger.info({ endpoint: endpoint.id, endpointName: endpoint.name, network: endpoint.network, netns: endpoint.netns, portId: endpoint.portId }, 'endpoint removed');
  }

  // --- compartments ---

  private async addCompartment(name: string): Promise<Compartment> {
    validateNetnsName(name);
    if (this.state.compartments.has(name) || (await netnsExists(name))) {
      throw conflict(`network namespace ${name} already exists: pick another name or remove it with \`ip netns delete ${name}\`.`);
    }
    // Recorded before it exists: a namespace outlives the daemon, and a restart must know it is vsw's to remove.
    const compartment: Compartment = { name, created: now() };
    this.state.compartments.set(name, compartment);
    try {
      await this.commit();
      await createNetns(name);
    } catch (err) {
      this.state.compartments.delete(name);
      await this.commit().catch((e: unknown) => this.logger.error({ err: e, compartment: name }, 'could not save the state after a failed compartment create'));
      throw err;
    }
    this.logger.info({ compartment: name }, 'compartment created');
    return compartment;
  }

  private async removeCompartment(name: string): Promise<void> {
    if (!this.state.compartments.has(name)) {
      throw notFound(`compartment ${name} not found: only namespaces vsw created (vsw run) can be removed this way; others go with \`ip netns delete ${name}\`.`);
    }
    for (const record of this.state.endpointsIn(name)) await this.detach(record);
    await deleteNetns(name, { killProcesses: true });
    await this.dns.removeResolvConf(name).catch((err: unknown) => this.logger.warn({ err, compartment: name }, 'could not remove the compartment\'s resolv.conf'));
    this.state.compartments.delete(name);
    this.logger.info({ compartment: name }, 'compartment removed');
  }

}

function describe(record: EndpointRecord): string {
  const { id, name } = record.endpoint;
  return name === id ? id : `${name} (${id})`;
}

/** The counters of a port that is not in the data plane (an uplink that could not be opened). */
const NO_COUNTERS = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {}, dropsTotal: 0 };

/** The object is saved: it may outlive the daemon now. A failure leaves it working until the daemon stops, and is logged. */
function persistQuietly(fd: number, what: string, logger: Logger): void {
  try {
    tapSetPersist(fd, true);
  } catch (err) {
    logger.error({ err }, `could not make ${what} persistent: it will vanish when the daemon stops, and the next start recreates it`);
  }
}

/** What an endpoint create on a --ipam dhcp network may not ask for: the server picks the address, and vsw configures the interface with it. */
function checkDhcpEndpoint(req: CreateEndpointRequest, net: NetworkRecord): void {
  if (req.ip !== undefined) throw badRequest(`--ip does not go with network ${net.network.name}: its addresses come from the LAN's DHCP server (--ipam dhcp); leave it out.`);
  if (req.configure === false) throw badRequest(`network ${net.network.name} takes its addresses from the LAN's DHCP server, which vsw asks and then configures the interface with: create the endpoint without configure false.`);
}

/** The lease as the endpoint keeps it (saved with the state, shown by inspect). */
function leaseView(lease: DhcpLease): EndpointLease {
  return { server: lease.serverId, ...(lease.router === null ? {} : { router: lease.router }), leaseSeconds: lease.leaseSeconds, granted: new Date(lease.obtainedAt).toISOString() };
}

/** Who the endpoint is to the LAN's DHCP server: its MAC, and its name as host name when it is a valid one. */
function dhcpIdentity(endpoint: Endpoint): { id: string; mac: string; hostname?: string } {
  return { id: endpoint.id, mac: endpoint.mac, ...(hostnameProblem(endpoint.name) === null ? { hostname: endpoint.name } : {}) };
}
