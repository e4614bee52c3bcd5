/**
 * A new daemon takes over from the last one. The saved state says what
 * should exist; the host says what does. For every object vsw made, restore
 * adopts what exists and matches, sets right what drifted, recreates what is
 * missing, and removes what it made and no longer wants; it never creates a
 * second copy of anything.
 *
 * The order matters for the connections handed over by a clean stop:
 * networks (and their gateways) first, then the saved connections and NAT
 * translations, and only then the ports, so no frame can take a new port
 * from the pool for a connection that already has one.
 *
 * What cannot come back is said, not hidden: an endpoint whose namespace is
 * gone (its container exited) is removed with a log line and its address
 * returns to the pool; an endpoint whose TAP cannot be attached is kept and
 * shown down with the reason, and the health check keeps trying. A network
 * that cannot be rebuilt (its VTEP address is gone, its host interface name
 * is taken) stops the start with one sentence, leaving the host as it was.
 */
import type { Logger } from 'pino';
import { netnsMounted } from '../host/index.js';
import { uplinkGuardTableName } from '../host/nat.js';
import { closeFd } from '../native/index.js';
import type { SnapshotImport } from '../switch/snapshot.js';
import { validateLayer, PolicyError } from '../vfp/policy.js';
import { Ipam, IpamError } from './ipam.js';
import type { NatService } from './nat.js';
import type { OverlayService } from './overlay.js';
import type { UplinkService } from './uplink.js';
import { Rollback } from './rollback.js';
import type { DataPlane } from '../switch/dataplane.js';
import { endpointInterface, endpointNetnsPresent, endpointPort, hasTap, networkSpec } from './endpoint-config.js';
import { socketProblem } from './vhost.js';
import type { EndpointRecord, NetworkRecord, State } from './state.js';
import { currentNetns, StateFileError, type RuntimeState, type SavedState } from './state-file.js';
import { attachEndpointTap, removeEndpointTap } from './taps.js';

/** The part of the data plane a restore drives beyond what the nat and overlay services do. */
export type RestoreDataPlane = Pick<DataPlane, 'importState' | 'addPort' | 'addNetwork' | 'addRemote'>;

export interface RestoreContext {
  state: State;
  dataPlane: RestoreDataPlane;
  nat: NatService;
  overlay: OverlayService;
  uplinks: UplinkService;
  logger: Logger;
}

export interface RestoreReport {
  networks: number;
  /** Endpoints by what their TAP needed: nothing, a fix, a new TAP; down: kept but not attached; removed: their namespace is gone. */
  endpoints: { adopted: number; repaired: number; recreated: number; down: number; removed: number };
  compartments: { kept: number; removed: number };
  /** The connections and translations of the last clean stop, or null after a crash (or with none saved). */
  connections: SnapshotImport | null;
  /** nftables tables vsw had recorded but no network wants any more, now removed. */
  tablesRemoved: string[];
}

/** Checks what restore will rely on before anything on the host is touched; a problem is a refusal of the file. */
export function checkSaved(saved: SavedState, path: string, maxPorts: number): Map<string, Ipam> {
  const damaged = (what: string): StateFileError =>
    new StateFileError(`the state file ${path} is damaged (${what}); it was left untouched: restore it from a backup, or move it away to start with no networks.`);
  const ipams = new Map<string, Ipam>();
  const ports = new Map<number, string>();
  const claim = (id: number, what: string, shared = false): void => {
    if (!Number.isInteger(id) || id < 1 || id >= maxPorts) throw damaged(`${what} has port id ${id}, outside 1-${maxPorts - 1}`);
    const holder = ports.get(id);
    if (holder !== undefined && !(shared && holder === what)) throw damaged(`${what} and ${holder} have the same port id ${id}`);
    ports.set(id, what);
  };
  const networkIds = new Set<number>();
  for (const { network, ipam, nat, overlay, uplink } of saved.networks) {
    if (ipams.has(network.name) || networkIds.has(network.id)) throw damaged(`network ${network.name} or its id ${network.id} appears twice`);
    networkIds.add(network.id);
    try {
      const pool = new Ipam(network.subnet, { ...(ipam.gateway === undefined ? {} : { gateway: ipam.gateway }), ...(ipam.range === undefined ? {} : { range: ipam.range }) });
      for (const ip of ipam.allocated) pool.reserve(ip);
      ipams.set(network.name, pool);
    } catch (err) {
      if (err instanceof IpamError) throw damaged(`network ${network.name}: ${err.message.replace(/\.$/, '').split(':')[0]}`);
      throw err;
    }
    if (nat) claim(nat.portId, `the host port of network ${network.name}`);
    if (uplink) claim(uplink.portId, `the uplink port of network ${network.name}`);
    if (overlay) {
      claim(overlay.tunnelPortId, `the tunnel port of network ${network.name}`);
      claim(overlay.uplinkId, `the underlay ${overlay.info.vtep}:${overlay.info.vxlanPort}`, true);
    }
  }
  for (const { endpoint, policy } of saved.endpoints) {
    claim(endpoint.portId, `endpoint ${endpoint.id}`);
    if (!ipams.get(endpoint.network)!.has(endpoint.ip)) throw damaged(`endpoint ${endpoint.id} has address ${endpoint.ip}, which network ${endpoint.network} does not list as allocated`);
    try {
      policy.layers.forEach(validateLayer);
    } catch (err) {
      if (err instanceof PolicyError) throw damaged(`the policy of endpoint ${endpoint.id}: ${err.message.replace(/\.$/, '').split(':')[0]}`);
      throw err;
    }
    if (typeof policy.spoofGuard?.enabled !== 'boolean' || !Array.isArray(policy.spoofGuard.ips)) throw damaged(`the spoof guard of endpoint ${endpoint.id} is malformed`);
  }
  return ipams;
}

export async function restoreState(ctx: RestoreContext, saved: SavedState, ipams: Map<string, Ipam>, runtime: RuntimeState | null): Promise<RestoreReport> {
  const { state, dataPlane, logger } = ctx;
  const report: RestoreReport = {
    networks: 0,
    endpoints: { adopted: 0, repaired: 0, recreated: 0, down: 0, removed: 0 },
    compartments: { kept: 0, removed: 0 },
    connections: null,
    tablesRemoved: [],
  };
  state.generation = saved.generation;
  state.id = saved.id;
  state.host = { forwardingSetByVsw: saved.host.forwardingSetByVsw, nftTables: [...saved.host.nftTables] };
  const here = currentNetns();
  if (saved.host.netns !== undefined && saved.host.netns !== here) {
    // Possible after a reboot (namespaces other than the host's get new numbers); the objects named are looked for here.
    logger.warn({ savedIn: saved.host.netns, runningIn: here }, 'the state was saved by a daemon in another network namespace: restoring it in this one');
  }

  for (const network of savedNetworks(saved)) {
    const record = await restoreNetwork(ctx, network, ipams.get(network.network.name)!);
    state.networks.set(record.network.name, record);
    report.networks++;
  }

  for (const c of saved.compartments) {
    if (await netnsMounted(c.name)) {
      state.compartments.set(c.name, { ...c });
      report.compartments.kept++;
    } else {
      logger.info({ compartment: c.name }, 'compartment removed: its network namespace is gone');
      report.compartments.removed++;
    }
  }

  for (const { endpoint, policy } of saved.endpoints) {
    const net = state.networks.get(endpoint.network)!;
    if (!hasTap(endpoint)) {
      // A fabric endpoint or a VM's: no TAP, no namespace; its port is added with the others below.
      state.portIds.take(endpoint.portId);
      state.endpoints.set(endpoint.id, { endpoint: { ...endpoint }, fd: -1, networkId: net.network.id, policy, proxies: [], down: null });
      report.endpoints.adopted++;
      continue;
    }
    if (!(await endpointNetnsPresent(endpoint))) {
      // Its runtime may have handed the TAP back to the daemon's namespace before its namespace went (docker's Leave).
      await removeEndpointTap(endpoint).catch((err: unknown) => logger.warn({ err, endpoint: endpoint.id }, 'could not remove the TAP of an endpoint whose namespace is gone'));
      net.ipam.release(endpoint.ip);
      logger.info({ endpoint: endpoint.id, endpointName: endpoint.name, netns: endpoint.netns, ip: endpoint.ip }, 'endpoint removed: its network namespace is gone (its container exited)');
      report.endpoints.removed++;
      continue;
    }
    state.portIds.take(endpoint.portId);
    const record: EndpointRecord = { endpoint: { ...endpoint }, fd: -1, networkId: net.network.id, policy, proxies: [], down: null };
    try {
      const tap = await attachEndpointTap({ ...endpointInterface(record.endpoint, net), ip: endpoint.ip });
      record.fd = tap.fd;
      report.endpoints[tap.how]++;
      if (tap.how !== 'adopted') logger.warn({ endpoint: endpoint.id, netns: endpoint.netns, ifname: endpoint.ifname }, tap.how === 'recreated' ? 'endpoint TAP was gone: recreated' : 'endpoint TAP had changed: set right again');
    } catch (err) {
      record.down = `its TAP could not be attached: ${(err as Error).message.replace(/\.$/, '')}`;
      report.endpoints.down++;
      logger.error({ err, endpoint: endpoint.id }, 'endpoint is down: its TAP could not be attached; vsw keeps trying');
    }
    state.endpoints.set(endpoint.id, record);
  }

  if (runtime) {
    const portIds = [...state.endpoints.values()].filter((r) => r.fd >= 0 || !hasTap(r.endpoint)).map((r) => r.endpoint.portId);
    for (const r of state.networks.values()) {
      if (r.nat) portIds.push(r.nat.portId);
      if (r.overlay) portIds.push(r.overlay.tunnelPortId);
      if (r.uplink && r.uplink.fd >= 0) portIds.push(r.uplink.portId);
      if (r.fabric && r.fabric.fd >= 0) portIds.push(r.fabric.portId);
    }
    try {
      report.connections = await dataPlane.importState(runtime.snapshot, runtime.downtimeMs, portIds);
    } catch (err) {
      // Connections are a bonus on top of the state: without them, new flows start afresh.
      logger.error({ err }, 'the connections saved by the last stop could not be restored');
    }
  }

  // The published ports are reserved in the pools before any frame can take one of them for a new flow.
  for (const record of state.networks.values()) await ctx.nat.syncPublished(record);
  for (const record of state.networks.values()) {
    if (!record.nat) continue;
    try {
      await ctx.nat.attachHostPort(record);
    } catch (err) {
      // Down, not fatal: the health check attaches it again (with the same port id).
      await ctx.nat.takeDownHostPort(record, `the data plane refused the host port: ${(err as Error).message.replace(/\.$/, '')}`);
    }
  }
  for (const record of state.endpoints.values()) {
    const fabricPortless = record.endpoint.fabric !== undefined && (state.networks.get(record.endpoint.network)!.fabric?.fd ?? -1) < 0;
    // Down with its fabric port: the health check puts it back with the port.
    if (fabricPortless) record.down = 'its fabric port is down';
    if ((record.fd < 0 && hasTap(record.endpoint)) || fabricPortless) continue;
    const problem = record.endpoint.vhostUser === undefined ? null : await socketProblem(record.endpoint.vhostUser);
    if (problem !== null) {
      // Down, not fatal: the health check makes its port once the path is usable.
      record.down = `${problem.text}; vsw tries again every second`;
      logger.error({ endpoint: record.endpoint.id, socket: record.endpoint.vhostUser!.socket }, `VM endpoint is down: ${record.down}`);
      continue;
    }
    const net = state.networks.get(record.endpoint.network)!;
    try {
      await dataPlane.addPort(endpointPort(record, net));
    } catch (err) {
      // The fd goes: vsw must not hold the TAP it will try to attach again.
      if (record.fd >= 0) closeFd(record.fd);
      record.fd = -1;
      record.down = `the data plane refused its port: ${(err as Error).message.replace(/\.$/, '')}`;
      logger.error({ err, endpoint: record.endpoint.id }, 'endpoint is down: the data plane refused its port');
    }
  }

  for (const record of state.endpoints.values()) {
    const publish = record.endpoint.publish ?? [];
    // Published by DNAT: the kernel's rules are back with syncPublished, and no listener is vsw's.
    if (publish.length === 0 || record.endpoint.publishVia === 'dnat') continue;
    const net = state.networks.get(record.endpoint.network)!;
    try {
      record.proxies = await ctx.nat.startProxies(net, publish, new Rollback(logger));
    } catch (err) {
      // The container is reachable through the external address; only the host-side listener is missing.
      logger.error({ err, endpoint: record.endpoint.id }, 'a published port has no host listener: its host port is taken by another program');
    }
  }

  // The guards follow the endpoints, which are back only now.
  for (const record of state.networks.values()) {
    if (!record.uplink || record.uplink.down !== null) continue;
    await ctx.uplinks.guard(record).catch((err) => logger.error({ err, network: record.network.name }, "could not install the uplink guard: the host's stack may answer for container addresses"));
  }
  const wanted = new Set([...ctx.nat.wantedTables(), ...ctx.uplinks.wantedTables()]);
  for (const table of [...state.host.nftTables]) {
    if (wanted.has(table)) continue;
    try {
      await ctx.nat.removeTable(table);
      report.tablesRemoved.push(table);
      logger.info({ table }, 'nftables table removed: no nat network wants it any more');
    } catch (err) {
      // Kept in the ledger: the next start tries again.
      logger.error({ err, table }, 'could not remove an nftables table no nat network wants any more');
    }
  }
  await ctx.nat.restoreForwarding('');
  return report;
}

function savedNetworks(saved: SavedState): SavedState['networks'] {
  return [...saved.networks].sort((a, b) => a.network.id - b.network.id);
}

async function restoreNetwork(ctx: RestoreContext, saved: SavedState['networks'][number], ipam: Ipam): Promise<NetworkRecord> {
  const { state, dataPlane } = ctx;
  const { network } = saved;
  state.networkIds.take(network.id);
  const record: NetworkRecord = { network: { ...network }, ipam };
  const fail = (err: unknown): never => {
    throw new StateFileError(`network ${network.name} cannot be restored (${(err as Error).message.replace(/\.$/, '')}); fix that and start the daemon again, or remove what vsw made with \`vsw system reset\`.`);
  };
  try {
    let natSpec;
    let overlaySpec;
    if (saved.nat) {
      record.nat = { info: saved.nat.info, fd: -1, portId: saved.nat.portId, table: saved.nat.table, down: null };
      natSpec = await ctx.nat.restore(record);
    }
    if (saved.overlay) {
      const { info, tunnelPortId, uplinkId, remotes } = saved.overlay;
      const range = ipam.rangeBounds ?? { first: '', last: '' };
      const tunnel = await ctx.overlay.attach({ info, range }, new Rollback(ctx.logger), { tunnelPortId, uplinkId });
      record.overlay = { info, tunnelPortId, uplinkKey: tunnel.uplinkKey, uplinkId: tunnel.uplinkId, remotes: new Map(remotes.map((r) => [r.mac, r])) };
      overlaySpec = tunnel.spec;
    }
    await dataPlane.addNetwork(network.id, network.name, networkSpec(network, natSpec, overlaySpec));
    for (const remote of saved.overlay?.remotes ?? []) await dataPlane.addRemote(network.id, remote);
    if (saved.uplink) {
      record.uplink = { info: { ...saved.uplink.info }, fd: -1, portId: saved.uplink.portId, down: null };
      state.portIds.take(saved.uplink.portId);
      // Known as vsw's before it is made again (a state from before guards had none): nothing is saved mid-restore.
      const guard = uplinkGuardTableName(saved.uplink.info.interface);
      if (!state.host.nftTables.includes(guard)) state.host.nftTables.push(guard);
      await ctx.uplinks.restore(record);
    }
    if (saved.fabric) {
      record.fabric = { info: { ...saved.fabric.info }, fd: -1, portId: saved.fabric.portId, down: null };
      state.portIds.take(saved.fabric.portId);
      const guard = uplinkGuardTableName(saved.fabric.info.interface);
      if (!state.host.nftTables.includes(guard)) state.host.nftTables.push(guard);
      await ctx.uplinks.restoreFabric(record);
    }
  } catch (err) {
    fail(err);
  }
  return record;
}
