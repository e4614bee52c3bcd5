/**
 * The host interface a transparent or l2bridge network rides on (its uplink):
 * checked when the network is created, opened as an AF_PACKET socket
 * (packetOpen) that joins the data plane as the network's uplink port, closed
 * when the network goes, opened again when the daemon restarts. A transparent
 * uplink is promiscuous while the socket lasts (containers have MACs of their
 * own); an l2bridge one is not (the LAN sends to the interface's own MAC).
 *
 * The host's stack never answers or forwards for container addresses: an
 * nftables table of family netdev (installUplinkGuard) drops, at the
 * interface's ingress hook, IPv4 to them and ARP naming them, after vsw's
 * socket has had its copy. It follows the network's endpoints. Without it an
 * l2bridge container's frames, which come to the host's own MAC, would be
 * forwarded by a host with ip_forward on, with ICMP redirects to the sender.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { validateIfName } from '../host/index.js';
import { installUplinkGuard, removeNftTable, uplinkGuardTableName } from '../host/nat.js';
import { hostIpv4Addresses } from '../host/underlay.js';
import { closeFd, packetOpen, tapLinkInfo } from '../native/index.js';
import type { DataPlane } from '../switch/dataplane.js';
import type { CreateNetworkRequest, UplinkInfo } from './api-types.js';
import { badRequest, conflict } from './errors.js';
import { subnetContains } from './ipam.js';
import type { Rollback } from './rollback.js';
import { endpointPort } from './endpoint-config.js';
import { closeQuietly } from './taps.js';
import type { NetworkRecord, State, UplinkRecord } from './state.js';

/** linux/if_arp.h: what /sys/class/net/IF/type says of an Ethernet interface. */
const ARPHRD_ETHER = 1;

/** The interface's hardware type, or -1 when it cannot be read. */
function linkType(name: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/type`, 'utf8').trim());
  } catch {
    return -1;
  }
}

/** What the uplinks need of the data plane. */
export type UplinkDataPlane = Pick<DataPlane, 'addPort' | 'removePort'>;

export class UplinkService {
  constructor(
    private readonly state: State,
    private readonly dataPlane: UplinkDataPlane,
    private readonly logger: Logger,
    /** Saves the state: the guard's table is recorded before it is installed. */
    private readonly commit: () => Promise<void> = async () => undefined,
  ) {}

  /**
   * The uplink a create request names, checked: an interface of this host
   * that is up and that no other vsw network rides on with the same VLAN (or
   * untagged); for an untagged l2bridge network, with an IPv4 address of the
   * host in the subnet (the one MAC on the wire is the host's, so the host is
   * on that LAN), which containers never get. On a VLAN the host has no
   * address (vsw tags the frames itself; no VLAN device is made).
   */
  async check(req: CreateNetworkRequest, subnet: string): Promise<UplinkInfo> {
    const name = req.uplink;
    if (name === undefined) throw badRequest(`${req.driver === 'transparent' ? 'a' : 'an'} ${req.driver} network rides on a host interface: pass --uplink IFNAME (one of \`ip link\`).`);
    const vlan = req.vlan;
    if (vlan !== undefined && (!Number.isInteger(vlan) || vlan < 1 || vlan > 4094)) {
      throw badRequest(`VLAN ${vlan} is out of range: pass --vlan with a whole number from 1 to 4094 (0 and 4095 are reserved by 802.1Q), or leave it out for untagged.`);
    }
    try {
      validateIfName(name);
    } catch {
      throw badRequest(`--uplink ${name} is not an interface name: pass 1 to 15 characters without / or spaces.`);
    }
    for (const other of this.state.networks.values()) {
      if (other.uplink?.info.interface === name && other.uplink.info.vlan === vlan) {
        const on = vlan === undefined ? 'untagged' : `on VLAN ${vlan}`;
        throw conflict(`interface ${name} already carries network ${other.network.name} ${on}: remove that network, or pass another --uplink or --vlan.`);
      }
    }
    const link = this.usableInterface(name, '--uplink', true);
    const own = vlan === undefined ? (await hostIpv4Addresses()).find((a) => a.ifname === name && subnetContains(subnet, a.address)) : undefined;
    if (req.driver !== 'transparent' && vlan === undefined && own === undefined) {
      throw badRequest(`interface ${name} has no IPv4 address in ${subnet}: an ${req.driver} network's containers share the host's MAC on its LAN, so give the host an address there (ip addr add ADDR/PREFIX dev ${name}) or pass the subnet it is on.`);
    }
    return { interface: name, mac: link.mac, mtu: link.mtu, ...(own === undefined ? {} : { hostAddress: own.address }), ...(vlan === undefined ? {} : { vlan }) };
  }

  /** An Ethernet interface of this host that is up and that no vsw network uses otherwise (uplinks on other VLANs aside, when `sharedUplink`). */
  private usableInterface(name: string, option: string, sharedUplink = false): { mac: string; mtu: number } {
    const link = tapLinkInfo(name);
    if (link === null) throw badRequest(`interface ${name} does not exist on this host: pass ${option} with one of \`ip link\`.`);
    if (linkType(name) !== ARPHRD_ETHER) throw badRequest(`interface ${name} is not an Ethernet interface: pass ${option} with a NIC, a veth or a bond.`);
    if (!link.up) throw badRequest(`interface ${name} is down: bring it up (ip link set ${name} up) and try again.`);
    for (const other of this.state.networks.values()) {
      if (!sharedUplink && other.uplink?.info.interface === name) throw conflict(`interface ${name} is the uplink of network ${other.network.name}: pass another ${option}.`);
      if (other.fabric?.info.interface === name) throw conflict(`interface ${name} is the fabric port of network ${other.network.name}: pass another ${option}.`);
      if (other.nat?.info.hostInterface === name) throw badRequest(`interface ${name} is the host interface of nat network ${other.network.name}: pass ${option} with a physical interface.`);
      if (other.overlay?.info.underlayInterface === name) throw conflict(`interface ${name} carries the VXLAN underlay of overlay network ${other.network.name}: pass another ${option}.`);
    }
    return link;
  }

  /**
   * Puts the table that keeps the host's stack off the containers' addresses
   * in line with the network's endpoints (one nft transaction); recorded as
   * vsw's first, so a reset after a crash removes it.
   */
  async guard(record: NetworkRecord): Promise<void> {
    for (const ifname of guardedInterfaces(record)) {
      const table = uplinkGuardTableName(ifname);
      await this.state.ownNftTable(table, this.commit);
      await installUplinkGuard(table, ifname, this.guardedAddresses(ifname));
    }
  }

  /** The endpoint addresses of every network on the interface (VLANs share an uplink, and its one table). */
  private guardedAddresses(ifname: string, leaving?: NetworkRecord): string[] {
    const out: string[] = [];
    for (const r of this.state.networks.values()) {
      if (r === leaving || !guardedInterfaces(r).includes(ifname)) continue;
      for (const e of this.state.endpointsOn(r.network.name)) out.push(e.endpoint.ip);
    }
    return out;
  }

  /** The guard tables the networks want (after a restart, the others in the ledger go). */
  wantedTables(): Set<string> {
    const wanted = new Set<string>();
    for (const r of this.state.networks.values()) for (const ifname of guardedInterfaces(r)) wanted.add(uplinkGuardTableName(ifname));
    return wanted;
  }

  /** Opens the uplink's socket and adds it to the network's switch (on restore and when it comes back, with the port id it had). */
  async attach(record: NetworkRecord, rollback?: Rollback): Promise<void> {
    const uplink = record.uplink!;
    const vlan = uplink.info.vlan;
    await this.open(record, uplink, { promisc: record.network.driver === 'transparent', vlan: vlan ?? 0, name: vlan === undefined ? uplink.info.interface : `${uplink.info.interface}.${vlan}` }, rollback);
  }

  /** An AF_PACKET socket on `sock`'s interface as a port of the network (an uplink, or a fabric port). */
  private async open(record: NetworkRecord, sock: UplinkRecord, how: { promisc: boolean; vlan: number; name: string; fabric?: boolean }, rollback?: Rollback): Promise<void> {
    const ifname = sock.info.interface;
    const fd = packetOpen(ifname, how.promisc, how.vlan);
    rollback?.add(`close the socket on ${ifname}`, () => closeFd(fd));
    const portId = sock.portId >= 0 ? sock.portId : this.state.portIds.allocate();
    if (sock.portId < 0) rollback?.add(`release port id ${portId}`, () => this.state.portIds.release(portId));
    const mtu = tapLinkInfo(ifname)?.mtu;
    try {
      await this.dataPlane.addPort({
        portId,
        networkId: record.network.id,
        fd,
        name: how.name,
        uplinkMac: sock.info.mac,
        ...(how.vlan === 0 ? {} : { vlan: how.vlan }),
        ...(how.fabric === true ? { fabric: true } : {}),
        ...(mtu === undefined ? {} : { mtu }),
      });
    } catch (err) {
      // Without a rollback (a restore, a comeback) nobody else would close it.
      if (!rollback) closeQuietly(fd, this.logger, `the socket on ${ifname}`);
      throw err;
    }
    rollback?.add(`remove port ${portId} from the data plane`, () => this.dataPlane.removePort(portId));
    sock.fd = fd;
    sock.portId = portId;
    sock.down = null;
  }

  /**
   * The fabric port a create request names (--fabric, l2bridge networks): an
   * Ethernet interface of this host that is up, not the uplink, and used by
   * no other vsw network.
   */
  checkFabric(req: CreateNetworkRequest): UplinkInfo {
    const name = req.fabric!;
    if (name === req.uplink) throw badRequest(`--fabric ${name} is the uplink too: the fabric port faces the container hosts, the uplink the rest of the network; pass two interfaces.`);
    const link = this.usableInterface(name, '--fabric');
    return { interface: name, mac: link.mac, mtu: link.mtu };
  }

  /** Opens the fabric port (promiscuous: its container hosts send to LAN MACs through it) and adds it to the network's switch. */
  async attachFabric(record: NetworkRecord, rollback?: Rollback): Promise<void> {
    const fabric = record.fabric!;
    await this.open(record, fabric, { promisc: true, vlan: 0, name: `fabric/${fabric.info.interface}`, fabric: true }, rollback);
  }

  /** After a restart: the fabric port again, or down with the reason (its addresses stay; the network is still served on the LAN). */
  async restoreFabric(record: NetworkRecord): Promise<void> {
    try {
      await this.attachFabric(record);
    } catch (err) {
      record.fabric!.down = (err as Error).message;
      this.logger.error({ err, network: record.network.name, fabric: record.fabric!.info.interface }, 'the fabric port could not be opened again: restart the daemon once the interface is up');
    }
  }

  /**
   * The fabric port stopped receiving (its interface went down or away): its
   * addresses' ports go first (they write to its socket), then the port; the
   * endpoints are down until bringUpFabric.
   */
  async takeDownFabric(record: NetworkRecord, reason: string): Promise<void> {
    const fabric = record.fabric!;
    fabric.down = reason;
    for (const e of this.state.endpointsOn(record.network.name)) {
      if (e.endpoint.fabric === undefined || e.down !== null) continue;
      e.down = 'its fabric port is down';
      await this.dataPlane.removePort(e.endpoint.portId).catch((err) => this.logger.warn({ err, endpoint: e.endpoint.id }, 'data plane could not remove a fabric endpoint'));
    }
    await this.dataPlane.removePort(fabric.portId).catch((err) => this.logger.warn({ err, network: record.network.name }, 'data plane could not remove the fabric port'));
    if (fabric.fd >= 0) closeQuietly(fabric.fd, this.logger, `the socket on ${fabric.info.interface}`);
    fabric.fd = -1;
    this.logger.warn({ network: record.network.name, fabric: fabric.info.interface, reason }, 'fabric port is down; vsw keeps trying to bring it back');
  }

  /** Opens the fabric port again when its interface is up, and puts its addresses back; throws, staying down, when it cannot yet. */
  async bringUpFabric(record: NetworkRecord): Promise<void> {
    const fabric = record.fabric!;
    const link = tapLinkInfo(fabric.info.interface);
    if (link === null || !link.up) {
      fabric.down = link === null ? 'the interface does not exist' : 'the interface is down';
      throw new Error(`interface ${fabric.info.interface}: ${fabric.down}`);
    }
    fabric.info.mac = link.mac;
    await this.attachFabric(record);
    for (const e of this.state.endpointsOn(record.network.name)) {
      if (e.endpoint.fabric === undefined || e.down === null) continue;
      await this.dataPlane.addPort(endpointPort(e, record));
      e.down = null;
    }
    await this.guard(record);
    this.logger.info({ network: record.network.name, fabric: fabric.info.interface }, 'fabric port attached');
  }

  async tearDownFabric(record: NetworkRecord): Promise<void> {
    if (record.fabric) await this.close(record, record.fabric, 'fabric');
  }

  /** Takes the uplink out of the switch and closes its socket; keeps going past failures. */
  async tearDown(record: NetworkRecord): Promise<void> {
    if (!record.uplink) return;
    await this.close(record, record.uplink, 'uplink');
    await this.removeGuard(record);
  }

  /** A socket port out of the switch, its port id freed and its socket closed; keeps going past failures. */
  private async close(record: NetworkRecord, sock: UplinkRecord, what: 'uplink' | 'fabric'): Promise<void> {
    if (sock.portId >= 0) {
      await this.dataPlane.removePort(sock.portId).catch((err) => this.logger.warn({ err, network: record.network.name }, `data plane could not remove the ${what} port`));
      this.state.portIds.release(sock.portId);
      sock.portId = -1;
    }
    if (sock.fd >= 0) closeQuietly(sock.fd, this.logger, `the socket on ${sock.info.interface}`);
    sock.fd = -1;
  }

  /**
   * The network leaves its interfaces' guards: a table goes with the last
   * network on its interface, and is forgotten (saved with the next commit);
   * a failure is logged and the ledger keeps it for the next start.
   */
  async removeGuard(record: NetworkRecord): Promise<void> {
    for (const ifname of guardedInterfaces(record)) {
      const table = uplinkGuardTableName(ifname);
      const others = [...this.state.networks.values()].some((r) => r !== record && guardedInterfaces(r).includes(ifname));
      if (others) {
        await installUplinkGuard(table, ifname, this.guardedAddresses(ifname, record)).catch((err) => this.logger.warn({ err, network: record.network.name, table }, 'could not update the uplink guard'));
        continue;
      }
      try {
        await removeNftTable(table);
        this.state.host.nftTables = this.state.host.nftTables.filter((t) => t !== table);
      } catch (err) {
        this.logger.warn({ err, network: record.network.name, table }, 'could not remove the uplink guard table');
      }
    }
  }

  /** After a restart: the uplink again, or down with the reason (the network stays; the health check keeps trying). */
  async restore(record: NetworkRecord): Promise<void> {
    try {
      // Not the guard yet: it is made once the endpoints are back (an empty one now would open a window).
      await this.bringUp(record, false);
    } catch (err) {
      record.uplink!.down = (err as Error).message;
      this.logger.error({ err, network: record.network.name, uplink: record.uplink!.info.interface }, 'transparent network has no uplink; vsw keeps trying to open it');
    }
  }

  /** Opens the uplink again when its interface is there and up (and its guard, unless `guard` is false); throws, staying down, when it cannot yet. */
  async bringUp(record: NetworkRecord, guard = true): Promise<void> {
    const uplink = record.uplink!;
    const link = tapLinkInfo(uplink.info.interface);
    if (link === null || !link.up) {
      uplink.down = link === null ? 'the interface does not exist' : 'the interface is down';
      throw new Error(`interface ${uplink.info.interface}: ${uplink.down}`);
    }
    uplink.info.mac = link.mac;
    uplink.info.mtu = link.mtu;
    await this.attach(record);
    // An interface that went away took the guard's hook with it: the table is made again.
    if (guard) await this.guard(record);
    this.logger.info({ network: record.network.name, uplink: uplink.info.interface }, 'uplink attached');
  }

  /** The uplink stopped receiving (its interface went down or away): out of the switch until bringUp. */
  async takeDown(record: NetworkRecord, reason: string): Promise<void> {
    const uplink = record.uplink!;
    uplink.down = reason;
    await this.dataPlane.removePort(uplink.portId).catch((err) => this.logger.warn({ err, network: record.network.name }, 'data plane could not remove the uplink port'));
    if (uplink.fd >= 0) closeQuietly(uplink.fd, this.logger, `the socket on ${uplink.info.interface}`);
    uplink.fd = -1;
    this.logger.warn({ network: record.network.name, uplink: uplink.info.interface, reason }, 'uplink is down; vsw keeps trying to bring it back');
  }
}

/** The interfaces a network's guard covers: its uplink's, and its fabric port's (hairpinned frames come to that port's MAC). */
function guardedInterfaces(r: NetworkRecord): string[] {
  const out: string[] = [];
  if (r.uplink) out.push(r.uplink.info.interface);
  if (r.fabric) out.push(r.fabric.info.interface);
  return out;
}
