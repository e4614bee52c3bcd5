/**
 * The underlay as an overlay network sees it: which interface holds a VTEP
 * address (and its MTU), which addresses the host has, and which address the
 * kernel would send from toward a peer. Read from the namespace the daemon
 * runs in, since that is where its VXLAN sockets live.
 */
import { ipJson } from './exec.js';

interface IpAddrEntry {
  ifname: string;
  mtu: number;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

interface IpRouteGet {
  prefsrc?: string;
  dev?: string;
}

export interface UnderlayInterface {
  ifname: string;
  mtu: number;
}

/** Every IPv4 address of the host with its interface and that interface's MTU. */
export async function hostIpv4Addresses(): Promise<{ address: string; ifname: string; mtu: number }[]> {
  const links = await ipJson<IpAddrEntry[]>(['-4', 'addr', 'show']);
  const out: { address: string; ifname: string; mtu: number }[] = [];
  for (const link of links) for (const a of link.addr_info ?? []) if (a.family === 'inet') out.push({ address: a.local, ifname: link.ifname, mtu: link.mtu });
  return out;
}

/** The interface holding `address`, or null when no interface of this host has it. */
export async function interfaceOfAddress(address: string): Promise<UnderlayInterface | null> {
  const hit = (await hostIpv4Addresses()).find((a) => a.address === address);
  return hit ? { ifname: hit.ifname, mtu: hit.mtu } : null;
}

/** The source address the kernel picks toward `destination`, or null when there is no route. */
export async function routeSource(destination: string): Promise<string | null> {
  try {
    const routes = await ipJson<IpRouteGet[]>(['-4', 'route', 'get', destination]);
    return routes[0]?.prefsrc ?? null;
  } catch {
    return null;
  }
}
