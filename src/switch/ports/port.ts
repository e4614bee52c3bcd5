/**
 * A port of the switch, by kind. Each kind is a file in this folder: how
 * frames enter the batch (receive), how a frame is queued for it (enqueue),
 * and how and in which phase its queue is flushed after the batch (flush).
 *
 *   tap-port.ts             a container's TAP: reads and writes of its fd
 *   nat-host-port.ts        a nat network's host TAP: a TAP whose frames all go to the NAT stage
 *   vxlan-tunnel-port.ts    an overlay network's way to its peers: frames queued here are encapsulated
 *   vxlan-underlay-port.ts  an underlay UDP socket: datagrams in, decapsulated into their network
 *
 * A new kind (an AF_PACKET uplink next) is one more file here plus its native
 * side, registered through Switch.addPort-like calls; the forwarding loop calls
 * ports only through this base class. The per-frame call (enqueue) sees the
 * kinds of one network at most, and receive and flush run once per batch.
 */
import type { FrameIo } from '../frame-io.js';
import type { FrameContext } from '../frame-context.js';
import type { SwitchNetwork } from '../network.js';

export const PortKind = {
  TAP: 0,
  NAT_HOST: 1,
  VXLAN_TUNNEL: 2,
  VXLAN_UNDERLAY: 3,
} as const;

/**
 * Flush phases, in order: TAP writes first; then encapsulation (an
 * encapsulated frame may share bytes with a frame just written to a TAP, so
 * it goes after them); then the underlay sockets' sends.
 */
export const FlushPhase = { WRITE: 0, ENCAPSULATE: 1, SEND: 2 } as const;
export const FLUSH_PHASES = 3;

/** Something flushed once after a batch in which it was given work. */
export interface Flushable {
  readonly flushPhase: number;
  /** Set by the switch when it schedules the flush, cleared after. */
  scheduled: boolean;
  flush(host: PortHost, now: number): void;
}

/** What a port needs of the switch it belongs to. */
export interface PortHost {
  readonly io: FrameIo;
  readonly counters: Float64Array;
  /** Switches one frame that entered at `ingress` (its vnet header, if any, right before `off`). */
  switchFrame(ingress: SwitchPort, off: number, len: number, now: number): void;
  /** The flushable gets a flush after this batch. */
  schedule(item: Flushable): void;
  /** The frame queued next goes back out of its ingress port (an answer written over it). */
  enqueue(port: SwitchPort, off: number, len: number): void;
  /** The frame being switched. */
  readonly frame: FrameContext;
}

export abstract class SwitchPort implements Flushable {
  /** The last frame queued here, so a flood never queues one frame twice on a port. */
  lastQueuedOffset = -1;
  scheduled = false;

  constructor(
    readonly id: number,
    readonly kind: number,
    /** Its broadcast domain; null for a port outside every network (an underlay socket). */
    readonly network: SwitchNetwork | null,
    /** What the native engine polls for it, or -1 (the port is fed by another). */
    readonly fd: number,
    readonly name: string,
    /** Longest frame it accepts that is not a GSO super-frame. */
    readonly maxFrame: number,
    readonly flushPhase: number,
    /** Whether the MAC table learns the sources of frames it sends. */
    readonly learnsSource: boolean,
    /** Whether it is a member of its network: switched to by MAC, flooded to. */
    readonly member: boolean,
  ) {}

  /** Whether frames of its own (read from its fd) enter the switch: the fds the native engine polls. */
  get receives(): boolean {
    return this.fd >= 0;
  }

  /**
   * A batch the native engine drained from the port: slots 0..count-1 of the
   * io buffer. Returns the bytes received (for the port's QoS cap).
   */
  abstract receive(host: PortHost, count: number, now: number): number;

  /** Queues the frame at buf[off, off+len) (the frame being switched, host.frame) for this port. */
  abstract enqueue(host: PortHost, off: number, len: number): void;

  abstract flush(host: PortHost, now: number): void;

  /** Called when the port leaves the switch. */
  detach(): void {}
}
