/**
 * What an endpoint looks like to the host and to the data plane, derived
 * from its record: the same at creation, after a restart and after a repair,
 * so the three can never disagree.
 */
import { netnsInode, netnsMounted, type InterfaceConfig } from '../host/index.js';
import type { DataPlanePort, NatGatewaySpec, NetworkSpec, OverlayNetworkSpec } from '../switch/dataplane.js';
import type { DnsStageSpec } from '../switch/stages/dns-stage.js';
import { macForIp } from './ipam.js';
import type { Endpoint, Network } from './api-types.js';
import type { EndpointRecord, NetworkRecord } from './state.js';

/** The container's interface: MAC, address, default route via the gateway, and the overlay's MTU. */
export function endpointInterface(
  endpoint: Pick<Endpoint, 'netns' | 'ifname' | 'mac' | 'ip' | 'prefixLength' | 'unplaced' | 'handedTo' | 'dhcp'>,
  net: NetworkRecord,
): InterfaceConfig & { unplaced?: boolean; handedTo?: string } {
  return {
    ...(endpoint.unplaced ? { unplaced: true } : {}),
    ...(endpoint.handedTo === undefined ? {} : { handedTo: endpoint.handedTo }),
    netns: endpoint.netns,
    ifname: endpoint.ifname,
    mac: endpoint.mac,
    cidr: `${endpoint.ip}/${endpoint.prefixLength}`,
    // A leased address comes with its router; otherwise the network's gateway.
    gateway: (endpoint.dhcp ? endpoint.dhcp.router : net.network.gateway) ?? undefined,
    mtu: net.overlay?.info.mtu ?? net.uplink?.info.mtu,
  };
}

/** Where a TAP waits for docker to move it (and where docker puts it back): the daemon's own namespace. */
export const DAEMON_NETNS = '/proc/self/ns/net';

/** The name of a docker endpoint's TAP while it is in the daemon's namespace (15 bytes at most). */
export function dockerTapName(dockerEndpointId: string): string {
  return `vsw${dockerEndpointId.slice(0, 12)}`;
}

/** The TAP name an endpoint has in the daemon's namespace when its runtime hands it back, if its runtime does that. */
export function homeTapName(endpoint: Pick<Endpoint, 'owner'>): string | undefined {
  return endpoint.owner?.startsWith('docker:') ? dockerTapName(endpoint.owner.slice('docker:'.length)) : undefined;
}

/** Whether the endpoint's namespace is still there, and still the one it was made in (see Endpoint.netnsInode). */
export async function endpointNetnsPresent(endpoint: Pick<Endpoint, 'netns' | 'netnsInode'>): Promise<boolean> {
  if (endpoint.netnsInode === undefined) return netnsMounted(endpoint.netns);
  return (await netnsInode(endpoint.netns)) === endpoint.netnsInode;
}

/** Whether the endpoint has a TAP of vsw's: not a fabric endpoint (an address behind the fabric port) nor a VM's (vhost-user). */
export function hasTap(endpoint: Pick<Endpoint, 'fabric' | 'vhostUser'>): boolean {
  return endpoint.fabric === undefined && endpoint.vhostUser === undefined;
}

/** The endpoint's switch port. */
export function endpointPort(record: Pick<EndpointRecord, 'endpoint' | 'fd' | 'policy'>, net: NetworkRecord): DataPlanePort {
  const { endpoint } = record;
  if (endpoint.fabric !== undefined) {
    // A container address behind the fabric port: its port writes to the fabric port's socket.
    return { portId: endpoint.portId, networkId: net.network.id, fd: -1, name: `fabric/${endpoint.ip}`, policy: record.policy, ip: endpoint.ip, mac: endpoint.mac, fabricOf: net.fabric!.portId };
  }
  const mtu = net.overlay?.info.mtu;
  const uplinkMtu = net.uplink?.info.mtu;
  const vhost = endpoint.vhostUser;
  return {
    portId: endpoint.portId,
    networkId: net.network.id,
    fd: record.fd,
    name: vhost === undefined ? `${endpoint.netns}/${endpoint.ifname}` : `vhost-user/${endpoint.name}`,
    ...(vhost === undefined ? {} : { vhostUser: { socket: vhost.socket, server: vhost.mode === 'server' } }),
    policy: record.policy,
    ip: endpoint.ip,
    mac: endpoint.mac,
    // An overlay port takes frames up to 1500 whatever its MTU: one larger than the tunnel's is answered with ICMP frag-needed, not dropped unseen.
    mtu: mtu === undefined ? uplinkMtu : Math.max(1500, mtu),
  };
}

/** A network as the data plane builds it (its stages), the same at creation and after a restart. */
export function networkSpec(network: Pick<Network, 'driver' | 'ipam' | 'resolver'>, nat?: NatGatewaySpec, overlay?: OverlayNetworkSpec): NetworkSpec {
  return { nat, overlay, l2bridge: network.driver === 'l2bridge', l2tunnel: network.driver === 'l2tunnel', dhcp: network.ipam === 'dhcp', dns: resolverSpec(network, nat) };
}

/**
 * The network's resolver in the switch: on a nat network the gateway (which
 * the NAT gateway answers ARP for), on internal and overlay networks the
 * resolver address, which the stage owns (answers ARP for, and nothing
 * routes behind); none on the networks of a physical LAN, whose own DNS the
 * containers use.
 */
function resolverSpec(network: Pick<Network, 'resolver'>, nat?: NatGatewaySpec): DnsStageSpec | undefined {
  if (nat !== undefined) return { resolverIp: nat.gatewayIp, resolverMac: nat.gatewayMac };
  if (network.resolver === undefined) return undefined;
  return { resolverIp: network.resolver, resolverMac: macForIp(network.resolver), ownsAddress: true };
}
