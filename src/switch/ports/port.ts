/**
 * A port of the switch. Every port is one class, SwitchPort, so the code that
 * runs per frame (reading the ingress, queueing on the egress) sees one hidden
 * class whatever the kinds on the host; what differs by kind is its driver,
 * called once per batch: how a batch read from the port enters the switch
 * (receive) and how the frames queued on it leave (flush, in its phase).
 *
 * Each kind is a file in this folder, with its driver and a function that
 * makes its ports:
 *   tap-port.ts             a container's TAP: reads and writes of its fd
 *   nat-host-port.ts        a nat network's host TAP: a TAP whose frames all go to the NAT stage
 *   vxlan-tunnel-port.ts    an overlay network's way to its peers: frames queued there are encapsulated
 *   vxlan-underlay-port.ts  an underlay UDP socket: datagrams in, decapsulated into their network
 *   packet-uplink-port.ts   a host interface the network rides on, through an AF_PACKET socket
 *   l2bridge-uplink-port.ts the same for an l2bridge or l2tunnel network: one MAC on the wire
 *   fabric-port.ts          a fabric host's port toward l2tunnel container hosts, and its per-address ports
 *   vhost-user-port.ts      a VM's virtio-net NIC: its rings in the guest's memory, shared over vhost-user
 * A new kind is one more file here plus its native side, and a Switch method
 * that registers its ports; the forwarding loop does not change.
 */
import type { FrameIo } from '../frame-io.js';
import type { SwitchNetwork } from '../network.js';

export const PortKind = {
  TAP: 0,
  NAT_HOST: 1,
  VXLAN_TUNNEL: 2,
  VXLAN_UNDERLAY: 3,
  PACKET_UPLINK: 4,
  /** A fabric host's port toward container hosts in l2tunnel mode: an AF_PACKET socket whose frames enter through the fabric addresses. */
  FABRIC: 5,
  /** One container address behind a FABRIC port, with a policy of its own: what the socket reads from that address enters here. Never flooded to. */
  FABRIC_ADDRESS: 6,
  /** A VM's NIC over vhost-user: the native device fills the slots from the guest's transmit queue and copies into its receive queue. */
  VHOST_USER: 7,
} as const;

/**
 * Flush phases, in order: TAP writes first; then encapsulation (it completes
 * checksums and writes outer headers in the bytes around a frame that a TAP
 * write may also carry, so it goes after them); then the underlay sockets'
 * sends.
 */
export const FlushPhase = { WRITE: 0, ENCAPSULATE: 1, SEND: 2 } as const;
export const FLUSH_PHASES = 3;

/** Something flushed once after a batch in which it was given work: a port, or the underlay sender. */
export interface Flushable {
  readonly flushPhase: number;
  /** Set by the switch when it schedules the flush, cleared just before the flush. */
  scheduled: boolean;
  flush(host: PortHost, now: number): void;
}

/** What a port's driver needs of the switch. */
export interface PortHost {
  readonly io: FrameIo;
  readonly counters: Float64Array;
  port(portId: number): SwitchPort | undefined;
  /** Switches one frame that entered at `ingress` (its vnet header, if any, right before `off`). */
  switchFrame(ingress: SwitchPort, off: number, len: number, now: number): void;
  /** Flushes `item` after this batch, in its phase (also when its phase has run already in this batch). */
  schedule(item: Flushable): void;
  /** `vsw capture`'s recorder: `active` is the one thing to look at while nothing is captured. */
  readonly capture: { readonly active: boolean };
  /** Records a frame entering `port` that the driver made (a decapsulated one), when that port's ingress is captured. */
  captureIngress(port: SwitchPort, off: number, len: number): void;
  /** Counts a drop of the frame at buf[off, off+len) on `portId` by `reason` (and records it when that port's drops are captured). */
  dropped(portId: number, reason: number, off: number, len: number): void;
  /** Queues a frame of the driver's own making (an ICMP answer) on a port; nobody is answered for it in turn. */
  queue(port: SwitchPort, off: number, len: number, hash: number, replyTo: number): void;
}

/** What makes a kind a kind: called once per batch, never per frame. */
export interface PortDriver {
  /** A batch the native engine drained from the port: slots 0..count-1 of the io buffer. Returns the bytes read (for the port's QoS cap). */
  receive(port: SwitchPort, host: PortHost, count: number, now: number): number;
  /** Sends what is queued on the port (txCount descriptors) and empties its queue. */
  flush(port: SwitchPort, host: PortHost, now: number): void;
  /** For a dry run: the drop reason the port's flush would give the frame at buf[off, off+len), or 0 when it would take it. */
  refuses(port: SwitchPort, buf: Uint8Array, off: number, len: number): number;
}

export class SwitchPort implements Flushable {
  // The frames queued for it in this batch: where they are, their flow hash (a tunnel picks its
  // outer source port by it), and the port an answer about them would go to (-1: none, e.g. a flood).
  readonly txOffsets: Uint32Array;
  readonly txLengths: Uint32Array;
  readonly txHashes: Uint32Array;
  readonly txReplyTo: Int32Array;
  txCount = 0;
  txBytes = 0;
  /** The last frame queued here, so a flood never queues one frame twice on a port. */
  lastQueuedOffset = -1;
  scheduled = false;
  /**
   * The MAC the control plane gave the port's device (a container's eth0), as macHi16/macLo32, or
   * -1: a port that a physical uplink reaches without flooding, learned or not (an idle container
   * whose entry aged out must not become unreachable from the LAN).
   */
  deviceMacHi = -1;
  deviceMacLo = -1;

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
    readonly driver: PortDriver,
    /** Descriptors it queues per batch before it is flushed early (TAPs) or refuses more. */
    queueSize: number,
    /**
     * Whether a unicast frame from it to a MAC the network has not learned is flooded. Not from a
     * physical uplink: it hears the whole LAN's traffic, and containers must not.
     */
    readonly floodsUnknownUnicast = true,
  ) {
    this.txOffsets = new Uint32Array(queueSize);
    this.txLengths = new Uint32Array(queueSize);
    this.txHashes = new Uint32Array(queueSize);
    this.txReplyTo = new Int32Array(queueSize);
  }

  /** Whether frames of its own (read from its fd) enter the switch: the fds the native engine polls. */
  get receives(): boolean {
    return this.fd >= 0 || this.kind === PortKind.VHOST_USER;
  }

  flush(host: PortHost, now: number): void {
    this.driver.flush(this, host, now);
  }
}
