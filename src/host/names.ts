import { HostError } from './errors.js';

// Kept apart from netns.ts and link.ts so exec.ts can validate names without an import cycle.

const NETNS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** IFNAMSIZ is 16 including the terminating NUL. */
export const IFNAME_MAX_BYTES = 15;

export function validateNetnsName(name: string): void {
  // The name becomes a file under /run/netns and an argument to ip(8): a
  // conservative alphabet keeps both unambiguous (no '/', no leading '-').
  if (typeof name !== 'string' || !NETNS_NAME.test(name)) {
    throw new HostError(
      `network namespace name ${JSON.stringify(String(name))} is invalid: use letters, digits, '.', '_' or '-' (at most 64 characters).`,
    );
  }
}

/** How a namespace is named to vsw: a name under /run/netns, or the absolute path of any nsfs file (CNI_NETNS, docker's sandbox key). */
export function isNetnsPath(ref: string): boolean {
  return ref.startsWith('/');
}

const NETNS_PATH_MAX = 4095;

/** A name (validateNetnsName) or an absolute path without '..' segments, whitespace or control characters. */
export function validateNetnsRef(ref: string): void {
  if (typeof ref !== 'string' || !isNetnsPath(ref)) {
    validateNetnsName(ref);
    return;
  }
  // The path is handed to setns() and to nsenter(1) as one argument: nothing in it may be read as something else.
  if (ref.length > NETNS_PATH_MAX || /[\s\0-\x1f]/u.test(ref) || ref.split('/').includes('..')) {
    throw new HostError(`network namespace path ${JSON.stringify(ref)} is invalid: give an absolute path without '..', whitespace or control characters, such as /run/netns/NAME or /proc/PID/ns/net.`);
  }
}

export function validateIfName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) {
    throw new HostError('interface name is empty: give a name of 1 to 15 bytes, such as eth0.');
  }
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > IFNAME_MAX_BYTES) {
    throw new HostError(
      `interface name ${JSON.stringify(name)} is ${bytes} bytes long but Linux allows at most ${IFNAME_MAX_BYTES} (IFNAMSIZ - 1): pick a shorter name.`,
    );
  }
  // Mirrors the kernel's dev_valid_name(); the leading '-' check keeps the name
  // from being read as an option by ip(8).
  if (name === '.' || name === '..' || /[/:\s]/u.test(name) || name.startsWith('-')) {
    throw new HostError(
      `interface name ${JSON.stringify(name)} is invalid: it must not contain '/', ':' or whitespace, start with '-', or be "." or "..".`,
    );
  }
}
