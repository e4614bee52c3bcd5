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
import { ETH_HEADER_LEN } from '../../packet/ethernet.js';
import { clearVnetHeader, DECAP_DROP_REASON, DecapVerdict, markPartialChecksum, markTsoFrame, writeTcp4GsoHeader } from '../../tunnel/vxlan-encap.js';
import { UplinkStat, type TunnelTx, type VxlanUplink } from '../../tunnel/vxlan-egress.js';
import { COUNTER_COLUMNS, DROP_BASE, RX_BYTES, RX_FRAMES, TX_BYTES, TX_FRAMES } from '../counters.js';
import { SOURCE_WORDS } from '../frame-io.js';
import { FlushPhase, PortKind, SwitchPort, type Flushable, type PortDriver, type PortHost } from './port.js';
import type { VxlanTunnelDriver } from './vxlan-tunnel-port.js';

/** Frames vxlanGro may make of one coalesced slot: every datagram alone at worst (64 KiB of 1-byte payloads is not a real case; 1024 is plenty). */
const GRO_MAX_FRAMES = 1024;
/** vxlanGro's header offset for a datagram shorter than a VXLAN header. */
const GRO_SHORT = 0xffffffff;
/** vxlanGroSlots' info word for a slot whose payload joined an earlier slot's frame (GRO_SLOT_ABSORBED). */
const GRO_SLOT_ABSORBED = 0xffffffff;
/** decap's `vnet`: a datagram decapsulated where it landed, whose 10 bytes before the frame are still the VXLAN header's. */
const IN_PLACE = -1;
/** decap's `vnet`: a frame vxlanGro wrote behind a vnet header of its own. (Positive: a run vxlanGroSlots merged, its info word.) */
const OWN_VNET = 0;

export class VxlanUnderlayDriver implements PortDriver {
  /** The tunnel ports of the overlay networks carried on this address, by VNI. */
  readonly tunnels = new Map<number, SwitchPort>();
  // vxlanGro's output descriptors, reused.
  private readonly groOffsets = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groLengths = new Uint32Array(GRO_MAX_FRAMES);
  private readonly groHeaders = new Uint32Array(GRO_MAX_FRAMES);
  // vxlanGroSlots' verdict per rx slot (2 words each), reused; sized on the first batch.
  private slotInfo = new Uint32Array(0);

  constructor(
    readonly uplink: VxlanUplink,
    private readonly segments: OverlaySegments,
  ) {}

  /**
   * A batch of datagrams: each inner frame is at its slot's frame offset, the
   * VXLAN header in the 8 bytes before it. A slot into which the kernel
   * coalesced a run of datagrams (UDP GRO) is split back, and consecutive TCP
   * segments merged into super-frames, in the tunnel arena. Single datagrams
   * (what arrives when nothing on the way coalesced them: a veth underlay, a
   * NIC without GRO) that are consecutive TCP segments of one flow are merged
   * first, in place, into the first one's slot (vxlanGroSlots): one frame,
   * one TAP write and one trip through the container's stack per run.
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
    let info = this.slotInfo;
    if (info.length < 2 * io.batchSize) info = this.slotInfo = new Uint32Array(2 * io.batchSize);
    const merged = count > 1 ? tunnelIo.vxlanGroSlots(io.buffer, io.slotSize, io.headroom, count, lengths, sources, info) : 0;
    // What the last merged run's first datagram was dropped for (0: it was not): its other datagrams, identical headers from the same sender, share its fate.
    let runDrop = 0;
    for (let slot = 0; slot < count; slot++) {
      const off = slot * io.slotSize + io.headroom;
      const len = lengths[slot];
      const src = sources[SOURCE_WORDS * slot] | 0;
      const size = sources[SOURCE_WORDS * slot + 2];
      if (size === 0 || len + 8 <= size) {
        counters[row + RX_FRAMES]++;
        if (len > 0) counters[row + RX_BYTES] += len + 8;
        const state = merged > 0 ? info[2 * slot] : 0;
        if (state === 0) this.decap(port, host, off - 8, off, len, src, IN_PLACE, now);
        else if (state !== GRO_SLOT_ABSORBED) runDrop = this.decap(port, host, off - 8, off, info[2 * slot + 1], src, state, now);
        else if (runDrop !== 0) counters[row + DROP_BASE + runDrop]++;
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
        this.decap(port, host, header, frame, frameLen, src, OWN_VNET, now);
      }
      arena = (arena + 64) & ~7;
    }
    return 0;
  }

  /**
   * One inner frame: its VXLAN header at buf[header], the frame at buf[frame] (right after the
   * header, or elsewhere after vxlanGro). `vnet` says what the 10 bytes before the frame hold:
   * IN_PLACE, the end of the VXLAN header (a datagram where it landed); OWN_VNET, a vnet header
   * vxlanGro wrote; positive, vxlanGroSlots' info word for a run it merged in place (the header
   * length and gso_size of the super-frame, whose vnet header is written once the VXLAN header
   * under it has been read). Returns the drop reason it counted on the underlay's row, or 0.
   */
  private decap(port: SwitchPort, host: PortHost, header: number, frame: number, len: number, src: number, vnet: number, now: number): number {
    const buf = host.io.buffer;
    const counters = host.counters;
    const segments = this.segments;
    const verdict = segments.admit(buf, header, len + 8, src);
    if (verdict !== DecapVerdict.OK) {
      counters[port.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[verdict]]++;
      return DECAP_DROP_REASON[verdict];
    }
    const seg = segments.matched!;
    const tunnel = this.tunnels.get(seg.vni);
    if (tunnel === undefined) {
      // Served here, but on another underlay address.
      segments.overrule(DecapVerdict.UNKNOWN_VNI);
      counters[port.id * COUNTER_COLUMNS + DROP_BASE + DECAP_DROP_REASON[DecapVerdict.UNKNOWN_VNI]]++;
      return DECAP_DROP_REASON[DecapVerdict.UNKNOWN_VNI];
    }
    seg.learnSource(buf, frame, src, now);
    if (seg.learnArp && buf[frame + 12] === 0x08 && buf[frame + 13] === 0x06) seg.learnFromArp(buf, frame, len, frame + 14, now);
    const mtu = (tunnel.driver as VxlanTunnelDriver).egress.mtu;
    if (vnet !== OWN_VNET) {
      clearVnetHeader(buf, frame);
      if (vnet > 0) {
        // The run's first payload is its gso_size; when that first datagram was itself a kernel
        // peer's super-frame (below), it is cut down to what fits the overlay MTU.
        const headers = vnet >>> 16;
        const fit = mtu - (headers - ETH_HEADER_LEN);
        writeTcp4GsoHeader(buf, frame, headers, Math.min(vnet & 0xffff, fit));
      }
    }
    // A frame with a vnet header of its own (a GRO super-frame) has its checksum state said already.
    if (buf[frame - VNET_HDR_LEN] === 0) {
      // Larger than the overlay MTU: a kernel peer's VXLAN GSO packet, one inner TCP super-frame
      // without metadata (markTsoFrame says how it gets here). Anything else that large stays as it
      // is, and the switch drops it as oversize on the tunnel port.
      if (len - ETH_HEADER_LEN > mtu) markTsoFrame(buf, frame, len, mtu);
      else markPartialChecksum(buf, frame, len);
    }
    const trow = tunnel.id * COUNTER_COLUMNS;
    counters[trow + RX_FRAMES]++;
    counters[trow + RX_BYTES] += len;
    if (host.capture.active) host.captureIngress(tunnel, frame, len);
    host.switchFrame(tunnel, frame, len, now);
    return 0;
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
