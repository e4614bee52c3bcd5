/**
 * A fabric host's port toward container hosts whose networks are l2tunnel
 * (Windows' L2 Tunnel, Azure's model): a container host sends every frame of
 * its containers here, with its own MAC and the container's address, even
 * between two containers of its own, and the fabric host is where policy
 * runs. Policy is per address: each container address behind the port is a
 * port of its own (a fabric address), with its own policy, counters and
 * trace, as a TAP endpoint has.
 *
 * The FABRIC port is the AF_PACKET socket (promiscuous: the container host
 * sends to LAN MACs through it too). It is not a member of the network; its
 * receive hands each frame to the fabric address it came from, by IPv4
 * source or ARP sender address, and drops what comes from no address it
 * knows (fabricUnknownSource). A FABRIC_ADDRESS port is a member (frames are
 * delivered to it by address, see L2BridgeStage) that is never flooded to:
 * a broadcast would otherwise go back to the container host once per
 * address. What is queued on it moves to its FABRIC port's queue at its
 * flush, so the socket is written once per batch for all addresses.
 */
import { ArpField } from '../../packet/arp.js';
import { read16, read32 } from '../../packet/bytes.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { macHi16, macLo32, mustParseMac } from '../../packet/ethernet.js';
import { COUNTER_COLUMNS, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from '../counters.js';
import { AddressTable } from '../address-table.js';
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type PortDriver, type PortHost } from './port.js';
import { flushPacketSocket } from './packet-uplink-port.js';

const ETH_HEADER = 14;
const IPV4_SRC_AT = ETH_HEADER + 12;
const ARP_SPA_AT = ETH_HEADER + ArpField.SPA;

class FabricDriver implements PortDriver {
  constructor(readonly addresses: AddressTable) {}

  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    const io = host.io;
    const buf = io.buffer;
    const lengths = io.lengths;
    const counters = host.counters;
    let bytes = 0;
    for (let slot = 0; slot < count; slot++) {
      const off = slot * io.slotSize + io.headroom;
      const len = lengths[slot];
      const from = this.source(buf, off, len);
      if (from === undefined) {
        host.dropped(port.id, DropReason.fabricUnknownSource, off, len);
        continue;
      }
      const row = from.id * COUNTER_COLUMNS;
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      bytes += len;
      if (host.capture.active) host.captureIngress(from, off, len);
      host.switchFrame(from, off, len, now);
    }
    return bytes;
  }

  /** The fabric address a frame from the container host comes from: its IPv4 source, or its ARP sender address. */
  private source(buf: Uint8Array, off: number, len: number): SwitchPort | undefined {
    if (len < ETH_HEADER) return undefined;
    const type = read16(buf, off + 12);
    if (type === 0x0800) return len >= IPV4_SRC_AT + 4 ? this.addresses.get(read32(buf, off + IPV4_SRC_AT)) : undefined;
    if (type === 0x0806) return len >= ARP_SPA_AT + 4 ? this.addresses.get(read32(buf, off + ARP_SPA_AT)) : undefined;
    return undefined;
  }

  /** What the addresses moved onto the socket's queue this batch: one sendmmsg for all of them. */
  flush(port: SwitchPort, host: PortHost): void {
    flushPacketSocket(port, host);
  }

  refuses(): number {
    return 0;
  }
}

class FabricAddressDriver implements PortDriver {
  constructor(private readonly fabric: SwitchPort) {}

  receive(): number {
    return 0;
  }

  /** Counted here, written by the fabric port: its flush comes later in the same phase, with every address's frames. */
  flush(port: SwitchPort, host: PortHost): void {
    const n = port.txCount;
    if (n === 0) return;
    const row = port.id * COUNTER_COLUMNS;
    host.counters[row + TX_FRAMES] += n;
    host.counters[row + TX_BYTES] += port.txBytes;
    for (let i = 0; i < n; i++) host.queue(this.fabric, port.txOffsets[i], port.txLengths[i], port.txHashes[i], port.txReplyTo[i]);
    port.txCount = 0;
    port.txBytes = 0;
  }

  refuses(): number {
    return 0;
  }
}

/** The FABRIC port: the socket `fd` on interface `name`, whose own MAC is `mac`. */
export function fabricPort(id: number, network: SwitchNetwork, fd: number, name: string, maxFrame: number, queueSize: number): { port: SwitchPort; addresses: AddressTable } {
  const addresses = new AddressTable();
  const port = new SwitchPort(id, PortKind.FABRIC, network, fd, name, maxFrame, FlushPhase.WRITE, false, false, new FabricDriver(addresses), queueSize);
  return { port, addresses };
}

/** A container address behind `fabric`, whose container host has MAC `hostMac` (the frames to it get it as destination). */
export function fabricAddressPort(id: number, network: SwitchNetwork, fabric: SwitchPort, name: string, hostMac: string, maxFrame: number, queueSize: number): SwitchPort {
  const port = new SwitchPort(id, PortKind.FABRIC_ADDRESS, network, -1, name, maxFrame, FlushPhase.WRITE, false, true, new FabricAddressDriver(fabric), queueSize);
  const m = mustParseMac(hostMac);
  port.deviceMacHi = macHi16(m, 0);
  port.deviceMacLo = macLo32(m, 0);
  return port;
}
