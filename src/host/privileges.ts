import { readFileSync } from 'node:fs';
import { HostError } from './errors.js';

const CAP_NET_ADMIN = 12n;

/** CapEff from /proc/self/status, or undefined when it cannot be read (not Linux, /proc not mounted). */
function effectiveCaps(): bigint | undefined {
  try {
    const m = readFileSync('/proc/self/status', 'utf8').match(/^CapEff:\s*([0-9a-fA-F]+)$/m);
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

export function hasNetAdmin(): boolean {
  if (process.geteuid?.() === 0) return true;
  const caps = effectiveCaps();
  return caps !== undefined && ((caps >> CAP_NET_ADMIN) & 1n) === 1n;
}

/**
 * Throw unless the process can administer networking. `what` names the
 * command that needs it, e.g. "vsw daemon"; `purpose` completes "... needs
 * root privileges (CAP_NET_ADMIN) ___".
 */
export function requireNetAdmin(what: string, purpose = 'to create namespaces and TAP devices'): void {
  if (hasNetAdmin()) return;
  throw new HostError(`${what} needs root privileges (CAP_NET_ADMIN) ${purpose}: run it as root or with sudo -E.`);
}
