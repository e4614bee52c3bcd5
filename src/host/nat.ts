/**
 * The host side of a nat network: what the kernel needs so that the
 * network's external address (vsw's end of the host TAP) reaches beyond the
 * host, and nothing more.
 *
 * Changes made on the host, and undone when the network is removed:
 * 1. the host TAP (one per nat network) gets the kernel's transit address and
 *    is brought up; IPv6 is off on it (nothing of vsw's speaks IPv6 there);
 * 2. net.ipv4.ip_forward is set to 1 if it was 0, and set back to 0 when the
 *    last nat network that needed it goes;
 * 3. one nftables table per network, `ip vsw_nat_<ifname>`, with one
 *    postrouting rule: traffic from the external address that leaves through
 *    an interface of the host's default route is masqueraded to that
 *    interface's address (as a home router does). Traffic to other hosts'
 *    routes (a lab's namespaces, a VPN) keeps the external address, so the
 *    far side sees who talks, and can route back through this host.
 * Nothing else (no iptables chains, no policy changes, no other tables).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { HostError } from './errors.js';
import { ip, ipJson, run } from './exec.js';
import { validateIfName } from './names.js';

const FORWARDING = '/proc/sys/net/ipv4/ip_forward';

export interface HostPortConfig {
  ifname: string;
  /** The kernel's transit address with its prefix, e.g. 100.127.0.1/30. */
  cidr: string;
  mac: string;
}

/** Addresses, MAC and link state of a host TAP vsw opened in the host namespace. */
export async function configureHostPort(c: HostPortConfig): Promise<void> {
  validateIfName(c.ifname);
  await writeFile(`/proc/sys/net/ipv6/conf/${c.ifname}/disable_ipv6`, '1').catch(() => undefined);
  await ip(['link', 'set', 'dev', c.ifname, 'address', c.mac]);
  // replace, not add: a restarted daemon re-runs this on a TAP that may still have its address.
  await ip(['address', 'replace', c.cidr, 'dev', c.ifname]);
  await ip(['link', 'set', 'dev', c.ifname, 'up']);
}

interface IpRoute {
  dst: string;
  dev?: string;
}

/** The interfaces the host's IPv4 default routes leave through. */
export async function defaultRouteInterfaces(): Promise<string[]> {
  const routes = await ipJson<IpRoute[]>(['-4', 'route', 'show', 'default']);
  return [...new Set(routes.map((r) => r.dev).filter((d): d is string => typeof d === 'string'))];
}

/** Every IPv4 prefix the host routes or holds in its main table, as CIDR text ("default" left out). */
export async function hostIpv4Prefixes(): Promise<string[]> {
  const routes = await ipJson<IpRoute[]>(['-4', 'route', 'show']);
  const out: string[] = [];
  for (const r of routes) {
    if (r.dst === 'default') continue;
    out.push(r.dst.includes('/') ? r.dst : `${r.dst}/32`);
  }
  return out;
}

export async function forwardingEnabled(): Promise<boolean> {
  return (await readFile(FORWARDING, 'utf8')).trim() === '1';
}

export async function setForwarding(on: boolean): Promise<void> {
  try {
    await writeFile(FORWARDING, on ? '1' : '0');
  } catch (err) {
    throw new HostError(`cannot set net.ipv4.ip_forward (${(err as Error).message}): run the daemon as root with a writable /proc/sys.`, { system: true });
  }
}

/** The nftables table of one nat network. */
export function natTableName(ifname: string): string {
  return `vsw_nat_${ifname.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** Installs the masquerade rule, replacing the table if it exists (one nft transaction). */
export async function installMasquerade(table: string, externalIp: string, via: string[]): Promise<void> {
  const rules = via.map((dev) => `add rule ip ${table} postrouting ip saddr ${externalIp} oifname ${JSON.stringify(dev)} masquerade`);
  const script = [
    `add table ip ${table}`,
    `delete table ip ${table}`,
    `add table ip ${table}`,
    `add chain ip ${table} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    ...rules,
  ].join('; ');
  await nft([script]);
}

/** The nftables table of a nat network's ports published by the kernel (publishVia "dnat"). */
export function publishedTableName(ifname: string): string {
  return `vsw_pub_${ifname.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

export interface KernelPublished {
  protocol: 'tcp' | 'udp';
  /** Only this host address; absent: every local address. */
  hostIp?: string;
  port: number;
}

/**
 * Redirects host ports to the network's external address, where the gateway
 * publishes them, as the CNI portmap plugin does: for runtimes that hold the
 * host port open themselves so nobody else takes it (podman), a listener
 * cannot be used. Replaces the table (one nft transaction). Connections from
 * the host to 127.0.0.1 reach it too: the host TAP may route loopback
 * sources (route_localnet), and they leave it masqueraded.
 */
export async function installPublished(table: string, hostIf: string, externalIp: string, ports: readonly KernelPublished[]): Promise<void> {
  const rules: string[] = [];
  for (const p of ports) {
    const match = `${p.hostIp === undefined || p.hostIp === '0.0.0.0' ? 'fib daddr type local' : `ip daddr ${p.hostIp}`} ${p.protocol} dport ${p.port}`;
    for (const chain of ['prerouting', 'output']) rules.push(`add rule ip ${table} ${chain} ${match} dnat to ${externalIp}:${p.port}`);
  }
  const script = [
    `add table ip ${table}`,
    `delete table ip ${table}`,
    `add table ip ${table}`,
    `add chain ip ${table} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `add chain ip ${table} output { type nat hook output priority -100; policy accept; }`,
    `add chain ip ${table} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `add rule ip ${table} postrouting oifname ${JSON.stringify(hostIf)} ip saddr 127.0.0.0/8 masquerade`,
    ...rules,
  ].join('; ');
  await nft([script]);
  try {
    await writeFile(`/proc/sys/net/ipv4/conf/${hostIf}/route_localnet`, '1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new HostError(`the host interface ${hostIf} is missing (the network's host side is down): publish the port once it is back (vsw brings it back by itself; see vsw network inspect).`);
    }
    throw new HostError(`cannot set route_localnet on ${hostIf} (${(err as Error).message}): run the daemon as root with a writable /proc/sys.`, { system: true });
  }
}

/** The nftables table that keeps the host's stack away from the container addresses on an uplink (family netdev). */
export function uplinkGuardTableName(ifname: string): string {
  return `${GUARD_TABLE_PREFIX}${ifname.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

const GUARD_TABLE_PREFIX = 'vsw_guard_';

/**
 * Drops, at the uplink's ingress hook, what the host's own stack would
 * otherwise see of the containers' traffic: IPv4 to their addresses and ARP
 * naming them. vsw's AF_PACKET socket has its copy already (packet taps run
 * before the ingress hook), so the containers lose nothing; the host cannot
 * answer for them, send redirects about them, or forward frames addressed to
 * them (an l2bridge container's frames come to the host's own MAC), whatever
 * ip_forward, proxy_arp or arp_ignore say. Replaces the table (one nft
 * transaction); no addresses: the table with an empty set.
 */
export async function installUplinkGuard(table: string, ifname: string, addresses: readonly string[]): Promise<void> {
  const script = [
    `add table netdev ${table}`,
    `delete table netdev ${table}`,
    `add table netdev ${table}`,
    `add chain netdev ${table} ingress { type filter hook ingress device ${JSON.stringify(ifname)} priority -500; policy accept; }`,
    `add set netdev ${table} containers { type ipv4_addr; }`,
    ...(addresses.length > 0 ? [`add element netdev ${table} containers { ${addresses.join(', ')} }`] : []),
    `add rule netdev ${table} ingress ip daddr @containers drop`,
    `add rule netdev ${table} ingress arp daddr ip @containers drop`,
  ].join('; ');
  await nft([script]);
}

/** The nftables family of one of vsw's tables: netdev for an uplink guard, ip for the rest. */
export function nftTableFamily(table: string): 'ip' | 'netdev' {
  return table.startsWith(GUARD_TABLE_PREFIX) ? 'netdev' : 'ip';
}

/** Removes one of vsw's tables; a missing one is not an error. */
export async function removeNftTable(table: string): Promise<void> {
  const family = nftTableFamily(table);
  await nft([`add table ${family} ${table}; delete table ${family} ${table}`]);
}

/**
 * nftables' own nft, looked up in the system's directories only: under npm,
 * PATH starts with node_modules/.bin, where a JavaScript tool of the same
 * name (@vercel/nft, pulled in by the test runner) accepts anything and exits 0.
 */
const NFT_PATHS = ['/usr/sbin/nft', '/sbin/nft', '/usr/local/sbin/nft', '/usr/bin/nft', '/bin/nft'];

function nftPath(): string {
  const found = NFT_PATHS.find((p) => existsSync(p));
  if (!found) throw new HostError('the "nft" command was not found: install nftables (apt-get install nftables) so nat networks can reach beyond the host.', { system: true });
  return found;
}

async function nft(args: string[]): Promise<void> {
  await run(nftPath(), args);
}

/** Whether the table exists (after an install, to be sure the rule is really there). */
export async function masqueradeInstalled(table: string): Promise<boolean> {
  try {
    await run(nftPath(), ['list', 'table', 'ip', table]);
    return true;
  } catch {
    return false;
  }
}
