/**
 * An underlay address's UDP sockets (src/tunnel/vxlan-egress.ts VxlanUplink):
 * the native engine reads batches of VXLAN datagrams from the first socket,
 * and the UnderlaySender sends what the tunnel ports encapsulated.
 * A datagram admitted (sound header, a served VNI, from a peer of it) has its
 * source learned and enters its network through that network's tunnel port;
 * anything else is counted on this port's row by reason and dropped.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import type { OverlaySegments } from '../../tunnel/overlay-segment.js';
import { VNET_HDR_LEN } from '../../packet/vnet.js';
import { clearVnetHeader, DECAP_DROP_REASON, DecapVerdict, markPartialChecksum } from '../../tunnel/vxlan-encap.js';
import { UplinkStat, type TunnelTx, type VxlanUplink } from '../../tunnel/vxlan-egress.js';
import { COUNTER_COLUMNS, DROP_BASE, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from '../counters.js';
import { SOURCE_WORDS } from '../frame-io.js';
import { FlushPhase, PortKind, SwitchPort, type Flushable, type PortDriver, type PortHost } from './port.js';

/** Frames vxlanGro may make of one coalesced slot: every datagram alone at worst (64 KiB of 1-byte payloads is not a real case; 1024 is plenty). */
const GRO_MAX_FRAMES = 1024;
/** vxlanGro's header offset for a datagram shorter than a VXLAN header. */
const GRO_SHORT = 0xffffffff;

export class VxlanUnderlayDriver implements PortDriver {
  /** The tunnel ports of the overlay networks carried on this address, by VNI. */
  readonly tunnels = new Map<number, SwitchPort>();
  // vxlanGro's output descriptors, reused.
  private readonly groOffsets = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groLengths = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groHeaders = new Uint32Array(GRO_MAX_FRAMES);

  constructor(
    readonly uplink: VxlanUplink,
    private readonly segments: OverlaySegments,
  ) {}

  /**
   * A batch of datagrams: each inner frame is at its slot's frame offset, the
   * VXLAN header in the 8 bytes before it. A slot into which the kernel
   * coalesced a run of datagrams (UDP GRO) is split back, and consecutive TCP
   * segments merged into super-frames, in the tunnel arena.
   */
  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    const io = host.io;
    const lengths = io.lengths;
    const sources = io.sources!;
    const counters = host.counters;
    const row = port.id * COUNTER_COLUMNS;
    const tunnelIo = io.tunnel!;
    let arena = tunnelIo.txOffset;
    const arenaEnd = arena + tunnelIo.txSize;
    for (let slot = 0; slot < count; slot++) {
      const off = slot * io.slotSize + io.headroom;
      const len = lengths[slot];
      const src = sources[SOURCE_WORDS * slot] | 0;
      const size = sources[SOURCE_WORDS * slot + 2];
      if (size === 0 || len + 8 <= size) {
        counters[row + RX_FRAMES]++;
        if (len > 0) counters[row + RX_BYTES] += len + 8;
        this.decap(port, host, off - 8, off, len, src, true, now);
        continue;
      }
      const n = tunnelIo.vxlanGro(io.buffer, off - 8, len + 8, size, arena, arenaEnd, this.groOffsets, this.groLengths, this.groHeaders, GRO_MAX_FRAMES);
      counters[row + RX_FRAMES] += Math.ceil((len + 8) / size);
      counters[row + RX_BYTES] += len + 8;
      if (n < 0) {
        counters[row + DROP_BASE + DropReason.tunnelEncapFailed]++;
        continue;
      }
      for (let i = 0; i < n; i++) {
        const header = this.groHeaders[i];
        const frame = this.groOffsets[i];
        const frameLen = this.groLengths[i];
        if (frame + frameLen > arena) arena = frame + frameLen;
        if (header === GRO_SHORT) {
          counters[row + DROP_BASE + DECAP_DROP_REASON[DecapVerdict.SHORT_HEADER]]++;
          continue;
        }
        this.decap(port, host, header, frame, frameLen, src, false, now);
      }
      arena = (arena + 64) & ~7;
    }
    return 0;
  }

  /** One inner frame: its VXLAN header at buf[header], the frame at buf[frame] (right after the header, or elsewhere after GRO). */
  private decap(port: SwitchPort, host: PortHost, header: number, frame: number, len: number, src: number, clearVnet: boolean, now: number): void {
    const buf = host.io.buffer;
    const counters = host.counters;
    const segments = this.segments;
    const verdict = segments.admit(buf, header, len + 8, src);
    if (verdict !== DecapVerdict.OK) {
      counters[port.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[verdict]]++;
      return;
    }
    const seg = segments.matched!;
    const tunnel = this.tunnels.get(seg.vni);
    if (tunnel === undefined) {
      // Served here, but on another underlay address.
      segments.overrule(DecapVerdict.UNKNOWN_VNI);
      counters[port.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[DecapVerdict.UNKNOWN_VNI]]++;
      return;
    }
    seg.learnSource(buf, frame, src, now);
    if (seg.learnArp && buf[frame + 12] === 0x08 && buf[frame + 13] === 0x06) seg.learnFromArp(buf, frame, len, frame + 14, now);
    if (clearVnet) clearVnetHeader(buf, frame);
    // A frame with a vnet header of its own (a GRO super-frame) has its checksum state said already.
    if (buf[frame - VNET_HDR_LEN] === 0) markPartialChecksum(buf, frame, len);
    const trow = tunnel.id * COUNTER_COLUMNS;
    counters[trow + RX_FRAMES]++;
    counters[trow + RX_BYTES] += len;
    if (host.capture.active) host.captureIngress(tunnel, frame, len);
    host.switchFrame(tunnel, frame, len, now);
  }

  /** Its sends are the UnderlaySender's: all underlay addresses share the arena, so they are sent together. */
  flush(): void {}

  refuses(): number {
    return 0;
  }
}

/** An underlay port: in no network, so nothing is ever switched or queued to it. */
export function vxlanUnderlayPort(driver: VxlanUnderlayDriver): SwitchPort {
  return new SwitchPort(driver.uplink.id, PortKind.VXLAN_UNDERLAY, null, driver.uplink.fds[0], `vtep${driver.uplink.id}`, 0, FlushPhase.SEND, false, false, driver, 0);
}

/**
 * Sends every underlay socket's queue after the tunnel ports have
 * encapsulated, once per batch (after the TAP writes: the datagrams may
 * share bytes with frames written to TAPs), and mirrors the sockets' totals
 * into their ports' counter rows.
 */
export class UnderlaySender implements Flushable {
  readonly flushPhase = FlushPhase.SEND;
  scheduled = false;
  private readonly uplinks: VxlanUplink[] = [];

  constructor(readonly tx: TunnelTx) {}

  add(uplink: VxlanUplink): void {
    this.uplinks.push(uplink);
    this.tx.uplinks.push(uplink);
  }

  remove(uplink: VxlanUplink): void {
    this.uplinks.splice(this.uplinks.indexOf(uplink), 1);
    this.tx.uplinks.splice(this.tx.uplinks.indexOf(uplink), 1);
  }

  flush(host: PortHost): void {
    this.tx.sendAll();
    const counters = host.counters;
    for (let i = 0; i < this.uplinks.length; i++) {
      const stats = this.uplinks[i].stats;
      const row = this.uplinks[i].id * COUNTER_COLUMNS;
      counters[row + TX_FRAMES] = stats[UplinkStat.DATAGRAMS];
      counters[row + TX_BYTES] = stats[UplinkStat.BYTES];
      counters[row + DROP_BASE + DropReason.txFailed] = stats[UplinkStat.FAILED];
    }
  }
}
