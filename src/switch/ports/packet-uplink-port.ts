/**
 * A host interface the network rides on (transparent, l2bridge, l2tunnel),
 * through an AF_PACKET socket whose frames look like a TAP's (packetOpen: a
 * vnet header per frame, the host's own sends not read back). Unlike a TAP it
 * takes batches: the engine reads it with one recvmmsg per readiness event,
 * and flushPacketSocket writes a batch with one sendmmsg. Reading differs in
 * what is kept too: the socket sees everything the interface receives, and
 * frames for the host's own MAC are the host's, not the switch's, so they are
 * left out before anything counts them.
 */
import { macHi16, macLo32, mustParseMac } from '../../packet/ethernet.js';
import { COUNTER_COLUMNS, RX_BYTES, RX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type PortDriver, type PortHost } from './port.js';
import { transmitCounted } from './tap-port.js';
import { UplinkEgress } from './uplink-egress.js';

/** Which frames a physical uplink's socket reads are the network's (the rest is the host's or the LAN's). */
export interface UplinkFilter {
  accepts(buf: Uint8Array, off: number, len: number): boolean;
}

/** Writes what is queued on a packet-socket port as it is: one sendmmsg for the batch, counted as a TAP's write. */
export function flushPacketSocket(port: SwitchPort, host: PortHost): void {
  const n = port.txCount;
  if (n === 0) return;
  transmitCounted(host, port, host.io.buffer, port.txOffsets, port.txLengths, n, port.txBytes, true);
  port.txCount = 0;
  port.txBytes = 0;
}

/**
 * An uplink's batch: the frames `filter` accepts are counted on the port and
 * switched; the others were never the switch's business and are not counted.
 */
export function receiveAccepted(port: SwitchPort, host: PortHost, count: number, now: number, filter: UplinkFilter): number {
  const io = host.io;
  const buf = io.buffer;
  const lengths = io.lengths;
  const counters = host.counters;
  const row = port.id * COUNTER_COLUMNS;
  let bytes = 0;
  for (let slot = 0; slot < count; slot++) {
    const off = slot * io.slotSize + io.headroom;
    const len = lengths[slot];
    if (!filter.accepts(buf, off, len)) continue;
    counters[row + RX_FRAMES]++;
    counters[row + RX_BYTES] += len;
    bytes += len;
    host.switchFrame(port, off, len, now);
  }
  return bytes;
}

class PacketUplinkDriver implements PortDriver, UplinkFilter {
  constructor(
    /** The interface's own MAC, as its first two and last four bytes (macHi16, macLo32). */
    private readonly hostMacHi: number,
    private readonly hostMacLo: number,
    /** On a VLAN, what tags frames on their way out; untagged, null: frames leave as they are. */
    private readonly egress: UplinkEgress | null,
  ) {}

  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    return receiveAccepted(port, host, count, now, this);
  }

  /** Frames for the host's own MAC are the host's. */
  accepts(buf: Uint8Array, off: number, len: number): boolean {
    return len < 6 || macHi16(buf, off) !== this.hostMacHi || macLo32(buf, off) !== this.hostMacLo;
  }

  flush(port: SwitchPort, host: PortHost): void {
    if (this.egress === null) flushPacketSocket(port, host);
    else this.egress.flush(port, host);
  }

  refuses(): number {
    return 0;
  }
}

/** `mac`: the interface's own, aa:bb:cc:dd:ee:ff; `vlan`: 0, or the VLAN (1..4094) whose frames the socket reads and whose tag the frames sent get. */
export function packetUplinkPort(id: number, network: SwitchNetwork, fd: number, name: string, mac: string, vlan: number, maxFrame: number, queueSize: number): SwitchPort {
  const m = mustParseMac(mac);
  const driver = new PacketUplinkDriver(macHi16(m, 0), macLo32(m, 0), vlan === 0 ? null : new UplinkEgress({ ipv4Only: false, vlan }, queueSize));
  return new SwitchPort(id, PortKind.PACKET_UPLINK, network, fd, name, maxFrame, FlushPhase.WRITE, true, true, driver, queueSize, false);
}
