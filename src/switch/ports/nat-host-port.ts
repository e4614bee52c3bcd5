/**
 * The host TAP of a nat network: the switch's side of the link to the host,
 * where translated frames leave and the host's answers come in. A TAP in how
 * it reads and writes (the TAP driver), but not a member of its network: it
 * is never flooded to or found by MAC, its sources are never learned (the
 * containers would reach the host around the NAT), and everything it sends
 * goes to the network's NAT stage (stages/nat-gateway-stage.ts), which
 * translates it or drops it.
 */
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort } from './port.js';
import { TAP_DRIVER } from './tap-port.js';

export function natHostPort(id: number, network: SwitchNetwork, fd: number, name: string, maxFrame: number, queueSize: number): SwitchPort {
  return new SwitchPort(id, PortKind.NAT_HOST, network, fd, name, maxFrame, FlushPhase.WRITE, false, false, TAP_DRIVER, queueSize);
}
