import { HostError } from './errors.js';
import { ip, ipJson } from './exec.js';
import { IFNAME_MAX_BYTES, validateIfName } from './names.js';

export { validateIfName, IFNAME_MAX_BYTES } from './names.js';

interface IpLink {
  ifname: string;
  link_type?: string;
}

/** Names of all interfaces in a namespace (the host's when netns is absent). */
export async function listLinks(netns?: string): Promise<string[]> {
  const links = await ipJson<IpLink[]>(['link', 'show'], netns);
  return links.map((l) => l.ifname);
}

/** Names of the Ethernet interfaces in a namespace (what a transparent or l2bridge network can ride on): loopback, tunnels and the like left out. */
export async function listEthernetLinks(netns?: string): Promise<string[]> {
  const links = await ipJson<IpLink[]>(['link', 'show'], netns);
  return links.filter((l) => l.link_type === 'ether').map((l) => l.ifname);
}

export async function linkExists(name: string, netns?: string): Promise<boolean> {
  validateIfName(name);
  return (await listLinks(netns)).includes(name);
}

/** The first `${base}N` (N = 0, 1, ...) that no interface in the namespace uses. */
export async function pickFreeIfName(netns: string, base = 'eth'): Promise<string> {
  validateIfName(`${base}0`);
  const taken = new Set(await listLinks(netns));
  for (let n = 0; ; n++) {
    const name = `${base}${n}`;
    if (Buffer.byteLength(name, 'utf8') > IFNAME_MAX_BYTES) {
      throw new HostError(
        `no free interface name of the form ${base}N fits in ${IFNAME_MAX_BYTES} bytes in network namespace "${netns}": remove unused interfaces or use a shorter base name.`,
      );
    }
    if (!taken.has(name)) return name;
  }
}

/** Delete an interface (a veth takes its peer with it); a missing one is not an error. */
export async function deleteLink(name: string, netns?: string): Promise<void> {
  validateIfName(name);
  try {
    await ip(['link', 'delete', 'dev', name], netns);
  } catch (err) {
    if (err instanceof HostError && /Cannot find device|does not exist/.test(err.stderr ?? '')) return;
    throw err;
  }
}
