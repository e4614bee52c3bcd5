/**
 * The control-plane half of overlay networks: checking what the user asked
 * for against the host (the VTEP is one of its addresses, the MTU fits the
 * underlay), the underlay sockets (one set per VTEP address and port, shared
 * by the networks that name it), the share of the subnet this host hands out,
 * and the peers and remote endpoints pushed through the API. The data-plane
 * half is src/tunnel and the switch's tunnel ports.
 *
 * Addresses: every host of an overlay network runs its own IPAM over the same
 * subnet, and nothing coordinates them (the controller will). So by default
 * each host hands out only its share: the subnet's host addresses cut into as
 * many equal parts as there are VTEPs (this one and its peers), this host
 * taking the part at its VTEP's place in ascending order. Hosts configured
 * with the same peer list therefore never collide; --ip-range overrides it.
 */
import type { Logger } from 'pino';
import { hostIpv4Addresses, interfaceOfAddress, routeSource } from '../host/index.js';
import { closeFd, udpLocalPort, udpOpen } from '../native/index.js';
import { mustParseIpv4Addr } from '../packet/ipv4.js';
import type { OverlayNetworkSpec } from '../switch/dataplane.js';
import { MAX_VNI, MIN_VNI } from '../tunnel/vxlan-encap.js';
import { VXLAN_OVERHEAD } from '../tunnel/vxlan-egress.js';
import { isUnicastVtep } from '../tunnel/vtep-table.js';
import { DEFAULT_VXLAN_PORT, type CreateNetworkRequest, type OverlayInfo, type OverlayNetworkState, type RemoteEndpointRequest } from './api-types.js';
import { badRequest, conflict, notFound } from './errors.js';
import { intToIp, ipToInt, normalizeMac, parseRange, parseSubnet, subnetContains } from './ipam.js';
import type { IdPool } from './id-pool.js';
import type { Rollback } from './rollback.js';
import type { DataPlane } from '../switch/dataplane.js';
import type { NetworkRecord, State } from './state.js';

/** Sockets per VTEP: the receiving one and the senders, one outer source port each (RFC 7348 entropy). */
const UPLINK_SOCKETS = 8;
/** Below this an IPv4 host need not accept datagrams (RFC 791). */
const MIN_MTU = 576;

/** What the service needs from the overlay before the network's IPAM exists. */
export interface OverlayPlan {
  info: OverlayInfo;
  /** The share of the subnet this host hands out. */
  range: { first: string; last: string };
}

interface Uplink {
  uplinkId: number;
  fds: number[];
  /** Networks riding on it. */
  refs: number;
}

/** The part of the data plane overlay networks drive. */
export type OverlayDataPlane = Pick<DataPlane, 'setPeers' | 'addRemote' | 'removeRemote' | 'overlay' | 'portCounters' | 'addUplink' | 'removeUplink'>;

export class OverlayService {
  private readonly uplinks = new Map<string, Uplink>();

  constructor(
    private readonly state: State,
    private readonly dataPlane: OverlayDataPlane,
    private readonly logger: Logger,
  ) {}

  /** Checks the overlay options of a create request against the host; throws a 4xx for anything wrong. */
  async plan(req: CreateNetworkRequest): Promise<OverlayPlan> {
    const vni = req.vni;
    if (vni === undefined) throw badRequest(`an overlay network needs a VNI: pass --vni with a whole number from ${MIN_VNI} to ${MAX_VNI}.`);
    if (!Number.isInteger(vni) || vni < MIN_VNI || vni > MAX_VNI) {
      throw badRequest(`VNI ${String(vni)} is out of range: pass --vni with a whole number from ${MIN_VNI} to ${MAX_VNI}.`);
    }
    for (const r of this.state.networks.values()) {
      if (r.overlay?.info.vni === vni) throw conflict(`VNI ${vni} is already used by network ${r.network.name} on this host: pick another --vni.`);
    }
    const vxlanPort = req.vxlanPort ?? DEFAULT_VXLAN_PORT;
    if (!Number.isInteger(vxlanPort) || vxlanPort < 1 || vxlanPort > 65535) throw badRequest(`VXLAN port ${String(vxlanPort)} is invalid: pass --vxlan-port with a port from 1 to 65535 (4789 is the standard one).`);
    const peerList = (req.peers ?? []).map((p) => checkVtepAddress(p, 'peer'));
    const vtep = req.vtep !== undefined ? checkVtepAddress(req.vtep, 'VTEP') : await this.defaultVtep(peerList);
    const underlay = await interfaceOfAddress(vtep);
    if (underlay === null) {
      const mine = (await hostIpv4Addresses()).filter((a) => isUnicastVtep(ipToInt(a.address))).map((a) => `${a.address} on ${a.ifname}`);
      throw badRequest(`VTEP ${vtep} is not an address of this host: pass --vtep with one of its addresses (${mine.length > 0 ? mine.join(', ') : 'it has none but loopback'}).`);
    }
    const peers = [...new Set(peerList)];
    if (peers.includes(vtep)) throw badRequest(`peer ${vtep} is this host's own VTEP: leave it out of --peer.`);
    const fits = underlay.mtu - VXLAN_OVERHEAD;
    const mtu = req.mtu ?? fits;
    if (!Number.isInteger(mtu) || mtu > fits) {
      throw badRequest(`MTU ${String(mtu)} is too large for the underlay: ${underlay.ifname} (the interface of VTEP ${vtep}) has MTU ${underlay.mtu} and VXLAN adds ${VXLAN_OVERHEAD} bytes, so pass --mtu ${fits} or less.`);
    }
    if (mtu < MIN_MTU) throw badRequest(`MTU ${mtu} is too small${req.mtu === undefined ? ` (the underlay ${underlay.ifname} has MTU ${underlay.mtu})` : ''}: an overlay network needs at least ${MIN_MTU}, so pass --mtu ${MIN_MTU} or more${req.mtu === undefined ? ' on an underlay with a larger MTU' : ''}.`);
    const range = req.ipRange !== undefined ? parseRange(req.ipRange, req.subnet) : shareOf(req.subnet, vtep, peers);
    const info: OverlayInfo = { vni, vtep, underlayInterface: underlay.ifname, underlayMtu: underlay.mtu, vxlanPort, peers, mtu, ipRange: `${range.first}-${range.last}` };
    return { info, range };
  }

  /**
   * The network's tunnel port and its uplink (opened, or shared with the
   * networks on the same VTEP and port). A restored network passes the port
   * ids it had (`saved`), so connections saved at its ports still match.
   */
  async attach(
    plan: OverlayPlan,
    rollback: Rollback,
    saved?: { tunnelPortId: number; uplinkId: number },
  ): Promise<{ spec: OverlayNetworkSpec; tunnelPortId: number; uplinkKey: string; uplinkId: number }> {
    const { info } = plan;
    const key = `${info.vtep}:${info.vxlanPort}`;
    let uplink = this.uplinks.get(key);
    if (uplink === undefined) {
      uplink = await this.openUplink(info.vtep, info.vxlanPort, rollback, saved?.uplinkId);
      this.uplinks.set(key, uplink);
      rollback.add(`forget uplink ${key}`, () => void this.uplinks.delete(key));
    }
    uplink.refs++;
    const held = uplink;
    rollback.add(`release uplink ${key}`, () => void held.refs--);
    const tunnelPortId = takeOrAllocate(this.state.portIds, saved?.tunnelPortId);
    rollback.add(`release port id ${tunnelPortId}`, () => this.state.portIds.release(tunnelPortId));
    const spec: OverlayNetworkSpec = { vni: info.vni, uplinkId: uplink.uplinkId, tunnelPortId, peers: info.peers, mtu: info.mtu, learnArp: true };
    return { spec, tunnelPortId, uplinkKey: key, uplinkId: uplink.uplinkId };
  }

  /** A clean stop: the underlay sockets are closed (the data plane stopped receiving from them already). */
  async closeAll(): Promise<void> {
    for (const [key, uplink] of this.uplinks) {
      for (const fd of uplink.fds) {
        try {
          closeFd(fd);
        } catch (err) {
          this.logger.warn({ err, uplink: key }, 'could not close an underlay socket');
        }
      }
    }
    this.uplinks.clear();
  }

  /** After the data plane dropped the network: its tunnel port id, and the uplink when no other network rides on it. */
  async tearDown(record: NetworkRecord): Promise<void> {
    const overlay = record.overlay;
    if (!overlay) return;
    this.state.portIds.release(overlay.tunnelPortId);
    const uplink = this.uplinks.get(overlay.uplinkKey);
    if (!uplink || --uplink.refs > 0) return;
    this.uplinks.delete(overlay.uplinkKey);
    await this.closeUplink(uplink, overlay.uplinkKey);
  }

  /** The peers and remote endpoints of a network as they are now, for putBack(). */
  snapshot(name: string): { peers: string[]; remotes: RemoteEndpointRequest[] } {
    const overlay = this.requireOverlay(name).overlay!;
    return { peers: [...overlay.info.peers], remotes: [...overlay.remotes.values()] };
  }

  /** Makes the network's peers and remote endpoints what `before` says again, in the data plane and here. */
  async putBack(name: string, before: { peers: string[]; remotes: RemoteEndpointRequest[] }): Promise<void> {
    const record = this.requireOverlay(name);
    const overlay = record.overlay!;
    await this.dataPlane.setPeers(record.network.id, before.peers);
    overlay.info.peers = [...before.peers];
    const wanted = new Map(before.remotes.map((r) => [r.mac, r]));
    for (const [mac, remote] of [...overlay.remotes]) {
      if (wanted.get(mac) === remote) continue;
      await this.dataPlane.removeRemote(record.network.id, { mac, ip: remote.ip });
      overlay.remotes.delete(mac);
    }
    for (const [mac, remote] of wanted) {
      if (overlay.remotes.get(mac) === remote) continue;
      await this.dataPlane.addRemote(record.network.id, remote);
      overlay.remotes.set(mac, remote);
    }
  }

  async setPeers(name: string, peers: string[]): Promise<{ added: string[]; removed: string[] }> {
    const record = this.requireOverlay(name);
    const overlay = record.overlay!;
    const list = [...new Set(peers.map((p) => checkVtepAddress(p, 'peer')))];
    if (list.includes(overlay.info.vtep)) throw badRequest(`peer ${overlay.info.vtep} is this host's own VTEP: leave it out of the peers.`);
    const result = await this.dataPlane.setPeers(record.network.id, list);
    overlay.info.peers = list;
    // Remote endpoints behind a departed peer went with it in the data plane.
    for (const [mac, remote] of overlay.remotes) if (!list.includes(remote.vtep)) overlay.remotes.delete(mac);
    this.logger.info({ network: name, peers: list, ...result }, 'overlay peers replaced');
    return result;
  }

  async addRemote(name: string, req: RemoteEndpointRequest): Promise<RemoteEndpointRequest> {
    const record = this.requireOverlay(name);
    const overlay = record.overlay!;
    const mac = normalizeMacOrThrow(req.mac);
    const vtep = checkVtepAddress(req.vtep, 'VTEP');
    if (!overlay.info.peers.includes(vtep)) {
      throw badRequest(`VTEP ${vtep} is not a peer of network ${name}: add it first (vsw overlay peer add ${name} ${vtep}) or pick one of ${overlay.info.peers.join(', ') || '(no peers yet)'}.`);
    }
    let ip: string | undefined;
    if (req.ip !== undefined) {
      checkVtepAddress(req.ip, 'endpoint address');
      if (!subnetContains(record.network.subnet, req.ip)) throw badRequest(`address ${req.ip} is outside network ${name} (${record.network.subnet}): give the remote endpoint's address in that subnet.`);
      ip = intToIp(ipToInt(req.ip));
    }
    const previous = overlay.remotes.get(mac);
    if (previous?.ip !== undefined && previous.ip !== ip) await this.dataPlane.removeRemote(record.network.id, { mac, ip: previous.ip });
    const remote: RemoteEndpointRequest = ip === undefined ? { mac, vtep } : { mac, ip, vtep };
    if (!(await this.dataPlane.addRemote(record.network.id, remote))) {
      throw conflict(`the static VTEP or ARP table is full (16384 entries): remove remote endpoints that are gone before adding more.`);
    }
    overlay.remotes.set(mac, remote);
    this.logger.info({ network: name, ...remote }, 'remote endpoint added');
    return remote;
  }

  /** Adds, changes and removes remote endpoints until the network has exactly `remotes`; how many were added (or changed) and removed. */
  async setRemotes(name: string, remotes: RemoteEndpointRequest[]): Promise<{ added: number; removed: number }> {
    const overlay = this.requireOverlay(name).overlay!;
    const wanted = new Map(remotes.map((r) => [normalizeMacOrThrow(r.mac), r]));
    let removed = 0;
    let added = 0;
    for (const mac of [...overlay.remotes.keys()]) {
      if (wanted.has(mac)) continue;
      await this.removeRemote(name, mac);
      removed++;
    }
    for (const [mac, r] of wanted) {
      const have = overlay.remotes.get(mac);
      if (have && have.vtep === r.vtep && have.ip === (r.ip === undefined ? undefined : intToIp(ipToInt(r.ip)))) continue;
      await this.addRemote(name, { ...r, mac });
      added++;
    }
    return { added, removed };
  }

  async removeRemote(name: string, macText: string): Promise<void> {
    const record = this.requireOverlay(name);
    const overlay = record.overlay!;
    const mac = normalizeMacOrThrow(macText);
    const remote = overlay.remotes.get(mac);
    if (!remote) throw notFound(`network ${name} has no remote endpoint with MAC ${mac}: list them with \`vsw overlay ls --network ${name}\`.`);
    await this.dataPlane.removeRemote(record.network.id, { mac, ip: remote.ip });
    overlay.remotes.delete(mac);
    this.logger.info({ network: name, mac }, 'remote endpoint removed');
  }

  /** GET /v1/overlay: every overlay network, or one; with countersOnly, without the VTEP and ARP tables (metrics). */
  async list(network?: string, countersOnly = false): Promise<OverlayNetworkState[]> {
    const records = network === undefined ? [...this.state.networks.values()].filter((r) => r.overlay) : [this.requireOverlay(network)];
    if (records.length === 0) return [];
    const dp = await this.dataPlane.overlay(undefined, countersOnly);
    const out: OverlayNetworkState[] = [];
    for (const record of records) {
      const overlay = record.overlay!;
      const s = dp.networks.find((n) => n.networkId === record.network.id);
      if (!s) continue;
      const tunnel = this.dataPlane.portCounters(s.tunnelPortId);
      const underlay = this.dataPlane.portCounters(s.uplinkId);
      out.push({
        network: record.network.name,
        vni: overlay.info.vni,
        vtep: overlay.info.vtep,
        vxlanPort: overlay.info.vxlanPort,
        mtu: overlay.info.mtu,
        peers: s.peers,
        remotes: [...overlay.remotes.values()],
        vteps: s.vteps.map((e) => ({ mac: e.mac, vtep: e.vtep, kind: e.kind, ageSeconds: tenths(e.ageSeconds) })),
        arp: s.arp.map((e) => ({ ip: e.ip, mac: e.mac, kind: e.kind, ageSeconds: tenths(e.ageSeconds) })),
        counters: {
          tunnel: {
            framesIn: tunnel.rxFrames,
            framesOut: tunnel.txFrames,
            segmented: s.egress.segmented,
            segments: s.egress.segments,
            flooded: s.egress.flooded,
            replicated: s.segment.replicated,
            arpSuppressed: s.segment.arpReplied,
            arpUnknown: s.segment.arpUnknown,
            tooBig: s.egress.tooBig,
            encapFailed: s.egress.encapFailed,
            notPeer: s.segment.notPeer,
            drops: { ...tunnel.drops },
          },
          underlay: { datagramsIn: underlay.rxFrames, datagramsOut: underlay.txFrames, sendFailed: s.uplink.sendFailed, drops: { ...underlay.drops } },
        },
      });
    }
    return out;
  }

  private requireOverlay(name: string): NetworkRecord {
    const record = this.state.requireNetwork(name);
    if (!record.overlay) throw badRequest(`network ${name} is a ${record.network.driver} network, not an overlay one: peers and remote endpoints belong to overlay networks.`);
    return record;
  }

  private async defaultVtep(peers: string[]): Promise<string> {
    if (peers.length === 0) throw badRequest('an overlay network needs this host\'s underlay address: pass --vtep ADDRESS (or --peer, and vsw takes the address the host would use to reach it).');
    const src = await routeSource(peers[0]);
    if (src === null) throw badRequest(`this host has no route to peer ${peers[0]}: pass --vtep with the underlay address to use.`);
    return src;
  }

  private async openUplink(vtep: string, port: number, rollback: Rollback, savedId?: number): Promise<Uplink> {
    const fds: number[] = [];
    const closeAll = () => {
      for (const fd of fds) closeFd(fd);
    };
    try {
      // The receiving socket takes coalesced runs (UDP GRO): the switch merges their TCP segments back into super-frames.
      fds.push(udpOpen({ bindAddress: vtep, port, gro: true }));
      for (let i = 1; i < UPLINK_SOCKETS; i++) fds.push(udpOpen({ bindAddress: vtep, port: 0 }));
    } catch (err) {
      closeAll();
      const message = (err as Error).message;
      if (/EADDRINUSE/.test(message)) {
        throw conflict(`UDP port ${port} on ${vtep} is taken by another program (a kernel vxlan device or another vsw daemon?): stop it, or pass another --vxlan-port to every host of the network.`);
      }
      if (/EADDRNOTAVAIL/.test(message)) throw badRequest(`VTEP ${vtep} is not an address of this host: pass --vtep with one of its addresses.`);
      throw err;
    }
    rollback.add(`close the sockets of ${vtep}:${port}`, closeAll);
    const uplinkId = takeOrAllocate(this.state.portIds, savedId);
    rollback.add(`release port id ${uplinkId}`, () => this.state.portIds.release(uplinkId));
    await this.dataPlane.addUplink({ uplinkId, vtep: mustParseIpv4Addr(vtep), fds, dstPort: port });
    rollback.add(`remove uplink ${uplinkId} from the data plane`, () => this.dataPlane.removeUplink(uplinkId));
    this.logger.info({ vtep, port, uplinkId, sourcePorts: fds.map((fd) => udpLocalPort(fd)) }, 'underlay sockets opened');
    return { uplinkId, fds, refs: 0 };
  }

  private async closeUplink(uplink: Uplink, key: string): Promise<void> {
    try {
      await this.dataPlane.removeUplink(uplink.uplinkId);
    } catch (err) {
      this.logger.warn({ err, uplink: key }, 'data plane could not remove the uplink');
    }
    for (const fd of uplink.fds) {
      try {
        closeFd(fd);
      } catch (err) {
        this.logger.warn({ err, uplink: key }, 'could not close an underlay socket');
      }
    }
    this.state.portIds.release(uplink.uplinkId);
    this.logger.info({ uplink: key }, 'underlay sockets closed');
  }
}

/** The saved id when there is one (a restore), else the lowest free one. */
function takeOrAllocate(pool: IdPool, saved: number | undefined): number {
  if (saved === undefined) return pool.allocate();
  pool.take(saved);
  return saved;
}

function tenths(seconds: number | null): number | null {
  return seconds === null ? null : Math.round(seconds * 10) / 10;
}

function checkVtepAddress(text: string, what: string): string {
  let n: number;
  try {
    n = mustParseIpv4Addr(text);
  } catch {
    throw badRequest(`${what} ${JSON.stringify(String(text))} is not an IPv4 address: write four decimal numbers separated by dots, such as 192.168.56.11.`);
  }
  if (!isUnicastVtep(n)) throw badRequest(`${what} ${text} cannot be used: give a unicast IPv4 address (not 0.0.0.0, loopback, multicast or broadcast).`);
  return intToIp(n);
}

function normalizeMacOrThrow(text: string): string {
  try {
    return normalizeMac(text);
  } catch (err) {
    throw badRequest((err as Error).message);
  }
}

/** This host's share of the subnet's host addresses: part i of n, i its VTEP's place among all VTEPs in ascending order. */
export function shareOf(subnet: string, vtep: string, peers: string[]): { first: string; last: string } {
  const s = parseSubnet(subnet);
  const all = [...new Set([vtep, ...peers])].map(ipToInt).sort((a, b) => a - b);
  const n = all.length;
  const i = all.indexOf(ipToInt(vtep));
  const hosts = s.broadcast - s.network - 1;
  const first = 1 + Math.floor((i * hosts) / n);
  const last = Math.floor(((i + 1) * hosts) / n);
  return { first: intToIp(s.network + first), last: intToIp(s.network + last) };
}

