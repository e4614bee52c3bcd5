/**
 * The host TAP of a nat network: the switch's side of the link to the host,
 * where translated frames leave and the host's answers come in. A TAP in how
 * it reads and writes, but not a member of its network: it is never flooded
 * to or found by MAC, its sources are never learned, and everything it sends
 * goes to the network's NAT stage (stages/nat-gateway-stage.ts), which
 * translates it or drops it.
 *
 * Made as a TapPort of kind NAT_HOST rather than a subclass, so the TAP's
 * per-frame code keeps seeing one hidden class.
 */
import type { SwitchNetwork } from '../network.js';
import { PortKind } from './port.js';
import { TapPort } from './tap-port.js';

export function natHostPort(id: number, network: SwitchNetwork, fd: number, name: string, maxFrame: number, batchSize: number): TapPort {
  return new TapPort(id, network, fd, name, maxFrame, batchSize, PortKind.NAT_HOST, false);
}
