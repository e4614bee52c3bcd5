/**
 * The TAPs vsw holds, across daemon lives. A TAP is persistent once the state
 * that names it is on disk (TUNSETPERSIST): when the daemon stops or dies,
 * the container keeps its interface with its MAC, address and routes (the
 * carrier goes down, so the kernel drops what it sends meanwhile), and the
 * next daemon re-attaches to it by name. Until then it is not persistent, so
 * a crash between creating it and saving it cannot strand it.
 */
import { configureInterface, ipJson, netnsMounted, netnsPath, prepareInterface, type InterfaceConfig } from '../host/index.js';
import type { Endpoint } from './api-types.js';
import { endpointNetnsPresent, homeTapName } from './endpoint-config.js';
import { closeFd, tapLinkInfo, tapOpen, tapSetPersist, type LinkInfo } from '../native/index.js';
import type { Logger } from 'pino';
import { conflict } from './errors.js';

/** What a TAP should look like; `up` false: its link state is not vsw's to set (a runtime brings it up). */
export interface TapWant {
  mac: string;
  ip?: string;
  mtu?: number;
  up?: boolean;
}

export interface AttachedTap {
  fd: number;
  /** What was done to get it: found as saved, found and set right, or made anew. */
  how: 'adopted' | 'repaired' | 'recreated';
}

/** Where the interface in its namespace differs from what is saved (empty when it matches). */
function driftOf(link: LinkInfo, want: TapWant): string[] {
  const drift: string[] = [];
  if (link.mac !== want.mac) drift.push(`MAC ${link.mac} instead of ${want.mac}`);
  if (!link.up && want.up !== false) drift.push('down');
  if (want.ip !== undefined && link.ipv4 !== want.ip) drift.push(`address ${link.ipv4 ?? 'none'} instead of ${want.ip}`);
  if (want.mtu !== undefined && link.mtu !== want.mtu) drift.push(`MTU ${link.mtu} instead of ${want.mtu}`);
  return drift;
}

/**
 * A saved TAP on a new daemon, or one that vanished: the existing one if it is
 * there (set right with `configure` if it drifted from `want`), otherwise a new
 * one configured as saved. Persistent either way. `configure` gets the drift,
 * or null for a new TAP.
 */
export async function attachTap(
  ifname: string,
  ns: string | undefined,
  want: TapWant,
  configure: (drift: string[] | null) => Promise<void>,
): Promise<AttachedTap> {
  const link = tapLinkInfo(ifname, ns);
  const fd = openTap(ifname, ns, link === null);
  try {
    tapSetPersist(fd, true);
    if (link === null) {
      await configure(null);
      return { fd, how: 'recreated' };
    }
    const drift = driftOf(link, want);
    if (drift.length === 0) return { fd, how: 'adopted' };
    await configure(drift);
    return { fd, how: 'repaired' };
  } catch (err) {
    closeFd(fd);
    throw err;
  }
}

/** An endpoint's TAP, attached as attachTap does, in the endpoint's namespace. */
export function attachEndpointTap(c: InterfaceConfig & { ip: string; unplaced?: boolean; handedTo?: string }): Promise<AttachedTap> {
  if (c.unplaced) {
    // Handed to its runtime and gone from here: it moved it (docker, into the container), so a new one here would be a twin.
    // Not handed yet, it went with a daemon that died before making it persistent: made again, as saved.
    if (c.handedTo !== undefined && tapLinkInfo(c.ifname, netnsPath(c.netns)) === null) {
      return Promise.reject(new Error(`its runtime moved TAP ${c.ifname} out of the daemon's namespace before vsw saw where; vsw waits for it`));
    }
    return attachTap(c.ifname, netnsPath(c.netns), { mac: c.mac, mtu: c.mtu, up: false }, () => prepareInterface(c));
  }
  // An address that is not the saved one goes: the interface is vsw's, and its address is the endpoint's.
  return attachTap(c.ifname, netnsPath(c.netns), c, (drift) => configureInterface({ ...c, flushAddresses: drift?.some((d) => d.startsWith('address')) ?? false }));
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
 * An endpoint's persistent TAP that vsw holds no fd of, removed wherever it
 * may be: where the endpoint records it (if that namespace is still the
 * endpoint's), in the container its runtime was moving it into (found by
 * MAC), and back in the daemon's namespace under the name the runtime gives
 * it back with. False when there was none.
 */
export async function removeEndpointTap(endpoint: Pick<Endpoint, 'netns' | 'netnsInode' | 'ifname' | 'mac' | 'unplaced' | 'handedTo' | 'owner'>): Promise<boolean> {
  let removed = (await endpointNetnsPresent(endpoint)) && removePersistentTap(endpoint.ifname, netnsPath(endpoint.netns));
  if (endpoint.unplaced && endpoint.handedTo !== undefined && (await netnsMounted(endpoint.handedTo))) {
    const links = await ipJson<{ ifname: string; address?: string }[]>(['link', 'show'], endpoint.handedTo).catch(() => []);
    for (const link of links) if (link.address === endpoint.mac) removed = removePersistentTap(link.ifname, endpoint.handedTo) || removed;
  }
  const home = homeTapName(endpoint);
  if (home !== undefined && home !== endpoint.ifname) removed = removePersistentTap(home, undefined) || removed;
  return removed;
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

/** Closes an fd vsw holds; a failure is logged, not thrown (the object it named is let go of either way). */
export function closeQuietly(fd: number, logger: Logger, what = 'a file descriptor'): void {
  try {
    closeFd(fd);
  } catch (err) {
    logger.warn({ err, fd }, `could not close ${what}`);
  }
}
