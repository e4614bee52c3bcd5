/**
 * The switch of one data-plane thread: networks (broadcast domains), ports, a
 * MAC table, and the batch forwarding loop.
 *
 * receive() runs once per batch that the native engine drained from a port.
 * Per frame it validates the headers in place, learns the source MAC, picks the
 * egress (learned port, or flood within the network) and queues an (offset,
 * length) descriptor on that port; after the batch, each egress port gets one
 * native writeBatch. Frames never move: they are written out of the rx buffer
 * they landed in, vnet header and all, so TSO super-frames and partial
 * checksums pass between TAPs untouched.
 *
 * Nothing here allocates per frame. Ports and networks are objects, but they
 * are created by the control plane, not per packet.
 */
import { FRAME_OK, DropReason } from '../packet/drop-reasons.js';
import { classifyFrame } from '../packet/validate.js';
import { DROP_BASE, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES, COUNTER_COLUMNS, resetPortCounters } from './counters.js';
import { MacTable } from './mac-table.js';

/** Where frames come from and go to: the native engine in production, synthetic buffers in unit tests. */
export interface FrameIo {
  readonly buffer: Uint8Array;
  readonly lengths: Int32Array;
  readonly slotSize: number;
  readonly headroom: number;
  readonly vnetHdrLen: number;
  readonly batchSize: number;
  /** Writes count frames; sets lengths[i] to 0 for each frame the device refused; returns how many were accepted. */
  transmit(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
}

export interface SwitchEvents {
  portStopped(portId: number, errno: number): void;
}

export interface PortConfig {
  portId: number;
  networkId: number;
  fd: number;
  name: string;
  /** IP MTU of the device; frames that are not GSO super-frames may be this plus Ethernet and one VLAN tag. */
  mtu?: number;
}

const ETH_AND_VLAN_OVERHEAD = 18;

class SwitchNetwork {
  readonly ports: SwitchPort[] = [];
  constructor(
    readonly id: number,
    readonly name: string,
  ) {}
}

class SwitchPort {
  readonly txOffsets: Uint32Array;
  readonly txLengths: Uint32Array;
  txCount = 0;
  txBytes = 0;
  constructor(
    readonly id: number,
    readonly network: SwitchNetwork,
    readonly fd: number,
    readonly name: string,
    readonly maxFrame: number,
    batchSize: number,
  ) {
    // A flood queues each frame of a batch on a port at most once, so one batch's worth suffices.
    this.txOffsets = new Uint32Array(batchSize);
    this.txLengths = new Uint32Array(batchSize);
  }
}

export class Switch {
  private readonly networks = new Map<number, SwitchNetwork>();
  private readonly ports: (SwitchPort | undefined)[] = [];
  private readonly pending: SwitchPort[] = [];
  private pendingCount = 0;
  private batchCount = 0;

  constructor(
    private readonly io: FrameIo,
    private readonly counters: Float64Array,
    readonly macTable: MacTable,
    private readonly events: SwitchEvents,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  get batches(): number {
    return this.batchCount;
  }

  get portCount(): number {
    let n = 0;
    for (const net of this.networks.values()) n += net.ports.length;
    return n;
  }

  get maxPorts(): number {
    return this.counters.length / COUNTER_COLUMNS;
  }

  addNetwork(networkId: number, name: string): void {
    if (!Number.isInteger(networkId) || networkId < 0 || networkId > 0xffff) throw new RangeError(`network id ${networkId} must be an integer from 0 to 65535`);
    if (this.networks.has(networkId)) throw new Error(`network id ${networkId} exists already`);
    this.networks.set(networkId, new SwitchNetwork(networkId, name));
  }

  removeNetwork(networkId: number): void {
    const net = this.networks.get(networkId);
    if (!net) return;
    if (net.ports.length > 0) throw new Error(`network ${net.name} still has ${net.ports.length} ports`);
    this.macTable.flushNetwork(networkId);
    this.networks.delete(networkId);
  }

  addPort(cfg: PortConfig): void {
    const net = this.networks.get(cfg.networkId);
    if (!net) throw new Error(`network id ${cfg.networkId} does not exist`);
    if (!Number.isInteger(cfg.portId) || cfg.portId < 0 || cfg.portId >= this.maxPorts) throw new RangeError(`port id ${cfg.portId} must be an integer below ${this.maxPorts}`);
    if (this.ports[cfg.portId]) throw new Error(`port id ${cfg.portId} exists already`);
    const maxFrame = (cfg.mtu ?? 1500) + ETH_AND_VLAN_OVERHEAD;
    const port = new SwitchPort(cfg.portId, net, cfg.fd, cfg.name, maxFrame, this.io.batchSize);
    resetPortCounters(this.counters, cfg.portId);
    this.ports[cfg.portId] = port;
    net.ports.push(port);
  }

  removePort(portId: number): void {
    const port = this.ports[portId];
    if (!port) return;
    const list = port.network.ports;
    list.splice(list.indexOf(port), 1);
    this.ports[portId] = undefined;
    this.macTable.flushPort(portId);
  }

  hasPort(portId: number): boolean {
    return this.ports[portId] !== undefined;
  }

  /** One batch drained from `portId`: slots 0..count-1 of the io buffer. A negative count is -errno: the port stopped. */
  receive(portId: number, count: number): void {
    const ingress = this.ports[portId];
    if (ingress === undefined) return;
    if (count < 0) {
      this.events.portStopped(portId, -count);
      return;
    }
    this.batchCount++;
    const io = this.io;
    const buf = io.buffer;
    const lengths = io.lengths;
    const slotSize = io.slotSize;
    const vnet = io.vnetHdrLen;
    const counters = this.counters;
    const row = portId * COUNTER_COLUMNS;
    const network = ingress.network;
    const networkId = network.id;
    const macTable = this.macTable;
    const now = this.clock();

    for (let slot = 0; slot < count; slot++) {
      const off = slot * slotSize + io.headroom;
      const len = lengths[slot];
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      const verdict = classifyFrame(buf, off, len, vnet > 0 ? off - vnet : -1, ingress.maxFrame);
      if (verdict !== FRAME_OK) {
        counters[row + DROP_BASE + verdict]++;
        continue;
      }
      const srcHi = (buf[off + 6] << 8) | buf[off + 7];
      const srcLo = ((buf[off + 8] << 24) | (buf[off + 9] << 16) | (buf[off + 10] << 8) | buf[off + 11]) >>> 0;
      macTable.learn(networkId, srcHi, srcLo, portId, now);

      if ((buf[off] & 1) !== 0) {
        this.flood(ingress, off, len, row);
        continue;
      }
      const dstHi = (buf[off] << 8) | buf[off + 1];
      const dstLo = ((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0;
      const egressId = macTable.lookup(networkId, dstHi, dstLo, now);
      if (egressId < 0) {
        this.flood(ingress, off, len, row);
      } else if (egressId === portId) {
        counters[row + DROP_BASE + DropReason.sameSegment]++;
      } else {
        const egress = this.ports[egressId];
        if (egress !== undefined) this.enqueue(egress, off, len);
        else this.flood(ingress, off, len, row);
      }
    }
    this.flush();
  }

  private flood(ingress: SwitchPort, off: number, len: number, ingressRow: number): void {
    const ports = ingress.network.ports;
    let queued = 0;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i];
      if (p !== ingress) {
        this.enqueue(p, off, len);
        queued++;
      }
    }
    if (queued === 0) this.counters[ingressRow + DROP_BASE + DropReason.noEgress]++;
  }

  private enqueue(port: SwitchPort, off: number, len: number): void {
    if (port.txCount === 0) this.pending[this.pendingCount++] = port;
    port.txOffsets[port.txCount] = off;
    port.txLengths[port.txCount] = len;
    port.txCount++;
    port.txBytes += len;
  }

  private flush(): void {
    const counters = this.counters;
    const io = this.io;
    for (let i = 0; i < this.pendingCount; i++) {
      const port = this.pending[i];
      const n = port.txCount;
      const written = io.transmit(port.fd, io.buffer, port.txOffsets, port.txLengths, n, io.vnetHdrLen);
      const row = port.id * COUNTER_COLUMNS;
      counters[row + TX_FRAMES] += written;
      if (written === n) {
        counters[row + TX_BYTES] += port.txBytes;
      } else {
        // Refused frames had their length zeroed by transmit(): the sum is what went out.
        let bytes = 0;
        for (let k = 0; k < n; k++) bytes += port.txLengths[k];
        counters[row + TX_BYTES] += bytes;
        counters[row + DROP_BASE + DropReason.txFailed] += n - written;
      }
      port.txCount = 0;
      port.txBytes = 0;
    }
    this.pendingCount = 0;
  }
}
