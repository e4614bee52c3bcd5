/**
 * A VM's virtio-net NIC over vhost-user (native/src/vhost.rs). The native
 * device drains the guest's transmit queue into the rx slots exactly as a TAP
 * read fills them (vnet header before the frame), so frames enter as a TAP's
 * do; the frames queued for it are copied into the guest's receive queue with
 * one native call per batch, which interrupts the guest at most once.
 */
import type { SwitchNetwork } from '../network.js';
import { FlushPhase, PortKind, SwitchPort, type PortHost } from './port.js';
import { countTransmitted, TapDriver } from './tap-port.js';

class VhostUserDriver extends TapDriver {
  constructor(private readonly device: object) {
    super();
  }

  override flush(port: SwitchPort, host: PortHost): void {
    const n = port.txCount;
    if (n === 0) return;
    const written = host.io.transmitVhost!(this.device, host.io.buffer, port.txOffsets, port.txLengths, n);
    countTransmitted(host, port, port.txLengths, n, written, port.txBytes);
    port.txCount = 0;
    port.txBytes = 0;
  }
}

/** `device` is the native handle (VhostDevice.handle); the port has no fd of its own. */
export function vhostUserPort(id: number, network: SwitchNetwork, device: object, name: string, maxFrame: number, queueSize: number): SwitchPort {
  return new SwitchPort(id, PortKind.VHOST_USER, network, -1, name, maxFrame, FlushPhase.WRITE, true, true, new VhostUserDriver(device), queueSize);
}
