/**
 * The TAPs vsw holds, across daemon lives. A TAP is persistent once the state
 * that names it is on disk (TUNSETPERSIST): when the daemon stops or dies,
 * the container keeps its interface with its MAC, address and routes (the
 * carrier goes down, so the kernel drops what it sends meanwhile), and the
 * next daemon re-attaches to it by name. Until then it is not persistent, so
 * a crash between creating it and saving it cannot strand it.
 */
import { configureInterface, netnsPath, type InterfaceConfig } from '../host/index.js';
import { closeFd, tapLinkInfo, tapOpen, tapSetPersist, type LinkInfo } from '../native/index.js';
import { conflict } from './errors.js';

export interface AttachedTap {
  fd: number;
  /** What was done to get it: found as saved, found and set right, or made anew. */
  how: 'adopted' | 'repaired' | 'recreated';
}

/** Where the interface in its namespace differs from what is saved (empty when it matches). */
export function driftOf(link: LinkInfo, want: { mac: string; ip?: string; mtu?: number }): string[] {
  const drift: string[] = [];
  if (link.mac !== want.mac) drift.push(`MAC ${link.mac} instead of ${want.mac}`);
  if (!link.up) drift.push('down');
  if (want.ip !== undefined && link.ipv4 !== want.ip) drift.push(`address ${link.ipv4 ?? 'none'} instead of ${want.ip}`);
  if (want.mtu !== undefined && link.mtu !== want.mtu) drift.push(`MTU ${link.mtu} instead of ${want.mtu}`);
  return drift;
}

/**
 * The endpoint's TAP after a restart or when it vanished: the existing one if
 * it is there (set right again if someone changed it), otherwise a new one
 * configured as saved. Persistent either way.
 */
export async function attachEndpointTap(c: InterfaceConfig & { ip: string }): Promise<AttachedTap> {
  const ns = netnsPath(c.netns);
  const link = tapLinkInfo(c.ifname, ns);
  const fd = openTap(c.ifname, ns, link === null);
  try {
    tapSetPersist(fd, true);
    if (link === null) {
      await configureInterface(c);
      return { fd, how: 'recreated' };
    }
    const drift = driftOf(link, c);
    if (drift.length === 0) return { fd, how: 'adopted' };
    // An address that is not the saved one goes: the interface is vsw's, and its address is the endpoint's.
    await configureInterface({ ...c, flushAddresses: drift.some((d) => d.startsWith('address')) });
    return { fd, how: 'repaired' };
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/** A TAP vsw made, in the namespace at `ns` (a path; absent: the host's). `create` false attaches to an existing one. */
export function openTap(ifname: string, ns: string | undefined, create: boolean): number {
  try {
    return tapOpen({ name: ifname, netns: ns, exclusive: create, persist: false });
  } catch (err) {
    const message = (err as Error).message.replace(/\.$/, '');
    // EBUSY/EEXIST: the name is taken; EINVAL on attach: by an interface that is not a TAP.
    if (/\b(EBUSY|EEXIST|EINVAL)\b/.test(message)) {
      throw conflict(`cannot ${create ? 'create' : 'attach to'} TAP ${ifname}${ns === undefined ? '' : ` in ${ns}`} (${message}): an interface of that name that vsw does not hold is in the way; remove it or pick another name.`);
    }
    throw err;
  }
}

/** Stops holding a TAP and lets it go: not persistent any more, so closing the fd removes the device. */
export function releaseTap(fd: number): void {
  try {
    tapSetPersist(fd, false);
  } finally {
    closeFd(fd);
  }
}

/**
 * Removes a TAP vsw left persistent, without holding it (vsw system reset):
 * attaches, clears the persistence and closes. Returns false when there is no
 * such interface; an interface of that name that is not a TAP is not touched.
 */
export function removePersistentTap(ifname: string, ns: string | undefined): boolean {
  if (tapLinkInfo(ifname, ns) === null) return false;
  releaseTap(tapOpen({ name: ifname, netns: ns, exclusive: false, persist: false }));
  return true;
}
