/**
 * Ports by IPv4 address, for delivery by address (an l2bridge network's
 * containers, a fabric port's container addresses). Keys are the address as
 * a signed 32-bit integer, so a lookup on the frame path boxes nothing.
 */
import type { SwitchPort } from './ports/port.js';

export class AddressTable {
  private readonly byIp = new Map<number, SwitchPort>();

  set(ip: number, port: SwitchPort): void {
    this.byIp.set(ip | 0, port);
  }

  /** Forgets every address of `port` (control path: a scan). */
  deletePort(port: SwitchPort): void {
    for (const [ip, p] of this.byIp) if (p === port) this.byIp.delete(ip);
  }

  /** The port with IPv4 address `ip` (host order), or undefined. */
  get(ip: number): SwitchPort | undefined {
    return this.byIp.get(ip | 0);
  }

  get size(): number {
    return this.byIp.size;
  }
}
