/**
 * What an endpoint looks like to the host and to the data plane, derived
 * from its record: the same at creation, after a restart and after a repair,
 * so the three can never disagree.
 */
import type { InterfaceConfig } from '../host/index.js';
import type { DataPlanePort } from '../switch/dataplane.js';
import type { Endpoint } from './api-types.js';
import type { EndpointRecord, NetworkRecord } from './state.js';

/** The container's interface: MAC, address, default route via the gateway, and the overlay's MTU. */
export function endpointInterface(endpoint: Pick<Endpoint, 'netns' | 'ifname' | 'mac' | 'ip' | 'prefixLength' | 'unplaced'>, net: NetworkRecord): InterfaceConfig & { unplaced?: boolean } {
  return {
    ...(endpoint.unplaced ? { unplaced: true } : {}),
    netns: endpoint.netns,
    ifname: endpoint.ifname,
    mac: endpoint.mac,
    cidr: `${endpoint.ip}/${endpoint.prefixLength}`,
    gateway: net.network.gateway ?? undefined,
    mtu: net.overlay?.info.mtu,
  };
}

/** The endpoint's switch port. */
export function endpointPort(record: Pick<EndpointRecord, 'endpoint' | 'fd' | 'policy'>, net: NetworkRecord): DataPlanePort {
  const { endpoint } = record;
  const mtu = net.overlay?.info.mtu;
  return {
    portId: endpoint.portId,
    networkId: net.network.id,
    fd: record.fd,
    name: `${endpoint.netns}/${endpoint.ifname}`,
    policy: record.policy,
    ip: endpoint.ip,
    mac: endpoint.mac,
    // An overlay port takes frames up to 1500 whatever its MTU: one larger than the tunnel's is answered with ICMP frag-needed, not dropped unseen.
    mtu: mtu === undefined ? undefined : Math.max(1500, mtu),
  };
}
