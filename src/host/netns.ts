import { access, readdir, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostError } from './errors.js';
import { execRaw, ip } from './exec.js';
import { isNetnsPath, validateNetnsName, validateNetnsRef } from './names.js';

export { isNetnsPath, validateNetnsName, validateNetnsRef } from './names.js';

const NETNS_DIR = '/run/netns';

/** How long processes get to exit after SIGTERM before they get SIGKILL. */
const TERM_GRACE_MS = 1000;
/** After SIGKILL only a process stuck in the kernel (D state) survives; do not wait for it forever. */
const KILL_WAIT_MS = 2000;
const POLL_MS = 50;

/** The file of a namespace named by name (under /run/netns) or by path. */
export function netnsPath(ref: string): string {
  validateNetnsRef(ref);
  return isNetnsPath(ref) ? ref : `${NETNS_DIR}/${ref}`;
}

/**
 * The shortest reference to a namespace: a path into /run/netns (podman's and
 * containerd's CNI_NETNS) becomes the name `ip netns` knows it by.
 */
export function canonicalNetns(ref: string): string {
  const m = /^(?:\/var)?\/run\/netns\/([^/]+)$/.exec(ref);
  if (m) {
    try {
      validateNetnsName(m[1]);
      return m[1];
    } catch {
      return ref;
    }
  }
  return ref;
}

export async function netnsExists(name: string): Promise<boolean> {
  const path = netnsPath(name);
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a namespace is really there under its name: the file is a mount of
 * a namespace (nsfs), not only the empty file a mount point leaves behind. A
 * namespace created in another mount namespace (a daemon run with `ip netns
 * exec` has a private one) leaves such a file here once that mount namespace
 * is gone, and nothing can enter it by name any more.
 */
export async function netnsMounted(name: string): Promise<boolean> {
  const path = netnsPath(name);
  try {
    const [file, nsfs] = await Promise.all([stat(path), stat('/proc/self/ns/net')]);
    return file.dev === nsfs.dev;
  } catch {
    return false;
  }
}

/**
 * The namespace's inode (its identity while it lives), or null when the file
 * is not a namespace. A path such as /proc/PID/ns/net names another namespace
 * once the PID is reused: the inode tells.
 */
export async function netnsInode(ref: string): Promise<number | null> {
  try {
    const [file, nsfs] = await Promise.all([stat(netnsPath(ref)), stat('/proc/self/ns/net')]);
    return file.dev === nsfs.dev ? file.ino : null;
  } catch {
    return null;
  }
}

/** Whether a namespace file is a network namespace (nsfs files of every kind look alike to stat). */
export async function isNetworkNamespace(ref: string): Promise<boolean> {
  const r = await execRaw('nsenter', [`--net=${netnsPath(ref)}`, 'true'], {});
  return r.ok;
}

/** Create a named namespace with its loopback up. Fails if the name is taken. */
export async function createNetns(name: string): Promise<void> {
  validateNetnsName(name);
  // Checked here rather than left to ip(8) so the answer does not depend on its wording.
  if (await netnsExists(name)) {
    throw new HostError(`network namespace "${name}" already exists: delete it first or pick another name.`);
  }
  await ip(['netns', 'add', name]);
  try {
    await ip(['link', 'set', 'dev', 'lo', 'up'], name);
  } catch (err) {
    // A namespace without loopback breaks programs in surprising ways; do not leave one behind.
    await ip(['netns', 'delete', name]).catch(() => undefined);
    throw err;
  }
}

/** Names of the named namespaces (the files under /run/netns), sorted. */
export async function listNetns(): Promise<string[]> {
  try {
    return (await readdir(NETNS_DIR)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new HostError(`cannot list ${NETNS_DIR}: ${(err as Error).message}; check that /run is mounted and readable.`, { cause: err });
  }
}

/** Process ids whose network namespace is `name`; [] when the namespace is gone. */
export async function netnsPids(name: string): Promise<number[]> {
  let out: string;
  try {
    out = await ip(['netns', 'pids', name]);
  } catch (err) {
    if (!(await netnsExists(name))) return [];
    throw err;
  }
  return out
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    // Never signal ourselves: a thread of this process may have entered the namespace.
    .filter((pid) => pid !== process.pid);
}

function signal(pids: readonly number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch (err) {
      // ESRCH: it exited on its own meanwhile, which is what we want.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}

async function waitUntilEmpty(name: string, ms: number): Promise<number[]> {
  const deadline = Date.now() + ms;
  let pids = await netnsPids(name);
  while (pids.length > 0 && Date.now() < deadline) {
    await sleep(POLL_MS);
    pids = await netnsPids(name);
  }
  return pids;
}

export interface DeleteNetnsOptions {
  /**
   * Kill processes still inside first (default true). Without this, "ip netns
   * delete" only removes the name: the namespace, its interfaces and addresses
   * live on as long as one process stays inside.
   */
  killProcesses?: boolean;
}

/** Delete a named namespace; deleting one that does not exist does nothing. */
export async function deleteNetns(name: string, opts: DeleteNetnsOptions = {}): Promise<void> {
  validateNetnsName(name);
  if (!(await netnsExists(name))) return;
  if (opts.killProcesses ?? true) {
    let pids = await netnsPids(name);
    if (pids.length > 0) {
      signal(pids, 'SIGTERM');
      pids = await waitUntilEmpty(name, TERM_GRACE_MS);
    }
    if (pids.length > 0) {
      signal(pids, 'SIGKILL');
      await waitUntilEmpty(name, KILL_WAIT_MS);
    }
  }
  try {
    await ip(['netns', 'delete', name]);
  } catch (err) {
    // Someone else deleted it between our check and now: the goal is reached.
    if (await netnsExists(name)) throw err;
  }
}
