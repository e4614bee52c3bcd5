import ipaddr from 'ipaddr.js';
import { HostError } from './errors.js';
import { ip, ipJson } from './exec.js';
import { validateIfName, validateNetnsRef } from './names.js';
import { linkExists } from './link.js';
import { netnsExists } from './netns.js';

export interface InterfaceConfig {
  netns: string;
  ifname: string;
  mac: string;
  /** Address and prefix, e.g. 10.50.0.5/24. */
  cidr: string;
  /** Default route via this address; it must lie inside `cidr`. */
  gateway?: string;
  mtu?: number;
  /** Remove the interface's other IPv4 addresses first (a repair: someone changed it). */
  flushAddresses?: boolean;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

function parseCidr(cidr: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  try {
    if (typeof cidr !== 'string' || !cidr.includes('/')) throw new Error('no prefix');
    return ipaddr.parseCIDR(cidr);
  } catch {
    throw new HostError(`${JSON.stringify(String(cidr))} is not an address with a prefix: write it like 10.50.0.5/24.`);
  }
}

function parseIp(text: string, what: string): ipaddr.IPv4 | ipaddr.IPv6 {
  if (typeof text === 'string' && ipaddr.isValid(text)) return ipaddr.parse(text);
  throw new HostError(`${what} ${JSON.stringify(String(text))} is not an IP address: write it like 10.50.0.1.`);
}

function checkConfig(c: InterfaceConfig): { family: 4 | 6 } {
  validateNetnsRef(c.netns);
  validateIfName(c.ifname);
  if (typeof c.mac !== 'string' || !MAC.test(c.mac)) {
    throw new HostError(`${JSON.stringify(String(c.mac))} is not a MAC address: write six hex bytes separated by colons, such as 02:76:0a:32:00:05.`);
  }
  // The kernel refuses these with a bare EADDRNOTAVAIL; say why instead.
  if ((parseInt(c.mac.slice(0, 2), 16) & 1) === 1 || /^(00:){5}00$/.test(c.mac)) {
    throw new HostError(`MAC address ${c.mac} cannot be given to an interface: use a unicast, non-zero one such as 02:76:0a:32:00:05.`);
  }
  if (c.mtu !== undefined && (!Number.isInteger(c.mtu) || c.mtu < 68 || c.mtu > 65535)) {
    throw new HostError(`MTU ${String(c.mtu)} is invalid: use a whole number between 68 and 65535 (1500 is the usual value).`);
  }
  const [addr, prefix] = parseCidr(c.cidr);
  if (c.gateway !== undefined) {
    const gw = parseIp(c.gateway, 'gateway');
    if (gw.kind() !== addr.kind() || !gw.match(addr, prefix)) {
      throw new HostError(`gateway ${c.gateway} is outside ${c.cidr}: the gateway must be an address in the interface's subnet.`);
    }
    if (gw.toNormalizedString() === addr.toNormalizedString()) {
      throw new HostError(`gateway ${c.gateway} is the interface's own address: use the address of the router instead.`);
    }
  }
  return { family: addr.kind() === 'ipv4' ? 4 : 6 };
}

/**
 * Give an interface inside a namespace its identity: MAC, MTU, link up,
 * address, and a default route via the gateway; also brings up loopback.
 * Uses "replace" for the address and route so that re-running it (the daemon
 * re-attaching after a restart) converges instead of failing.
 */
export async function configureInterface(c: InterfaceConfig): Promise<void> {
  const { family } = checkConfig(c);
  if (!(await netnsExists(c.netns))) {
    throw new HostError(`network namespace "${c.netns}" does not exist: create it first or check the name with "ip netns list".`);
  }
  if (!(await linkExists(c.ifname, c.netns))) {
    throw new HostError(`interface "${c.ifname}" does not exist in network namespace "${c.netns}": create or move it there first.`);
  }
  const dev = ['dev', c.ifname];
  // MAC and MTU before "up": some drivers refuse to change the address of a running device.
  await ip(['link', 'set', ...dev, 'address', c.mac.toLowerCase()], c.netns);
  if (c.mtu !== undefined) await ip(['link', 'set', ...dev, 'mtu', String(c.mtu)], c.netns);
  await ip(['link', 'set', ...dev, 'up'], c.netns);
  await ip(['link', 'set', 'dev', 'lo', 'up'], c.netns);
  if (c.flushAddresses) await ip(['-4', 'address', 'flush', ...dev], c.netns);
  await ip(['address', 'replace', c.cidr, ...dev], c.netns);
  // The route needs the link up and the address in place: the kernel checks
  // the gateway against the connected routes the address creates.
  if (c.gateway !== undefined) {
    await ip([family === 6 ? '-6' : '-4', 'route', 'replace', 'default', 'via', c.gateway, ...dev], c.netns);
  }
}

/**
 * The part of configureInterface a runtime leaves to vsw when it configures
 * the interface itself after moving it into its container (docker): MAC and
 * MTU, link left as it is, no address or route.
 */
export async function prepareInterface(c: Pick<InterfaceConfig, 'netns' | 'ifname' | 'mac' | 'mtu'>): Promise<void> {
  validateNetnsRef(c.netns);
  validateIfName(c.ifname);
  await ip(['link', 'set', 'dev', c.ifname, 'address', c.mac.toLowerCase()], c.netns);
  if (c.mtu !== undefined) await ip(['link', 'set', 'dev', c.ifname, 'mtu', String(c.mtu)], c.netns);
}

interface IpAddrLink {
  ifname: string;
  addr_info?: { family: string; local?: string }[];
}

/** Whether any interface in the namespace (the host's when netns is absent) carries this address. */
export async function addressInUse(address: string, netns?: string): Promise<boolean> {
  const wanted = parseIp(address, 'address').toNormalizedString();
  const links = await ipJson<IpAddrLink[]>(['address', 'show'], netns);
  for (const link of links) {
    for (const a of link.addr_info ?? []) {
      if (a.local !== undefined && ipaddr.isValid(a.local) && ipaddr.parse(a.local).toNormalizedString() === wanted) return true;
    }
  }
  return false;
}
