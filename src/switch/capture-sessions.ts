/**
 * The data-plane worker's side of `vsw capture`: which ports each session
 * captures (an endpoint's port, or every port of a network, the nat host TAP
 * and the overlay tunnel port included, also those that join later), when the
 * recorder's buffer is drained and posted to the control plane, and the end of
 * a session whose port or network goes away.
 *
 * Draining: every DRAIN_INTERVAL_MS while a session runs, so a person watching
 * sees frames within a fraction of a second and a slow trickle never waits for
 * the buffer to fill; and at the end of a batch once the buffer is half full,
 * so a busy port drains between batches instead of losing frames until the
 * next tick. The control plane acknowledges what it has written in a shared
 * counter; past MAX_IN_FLIGHT_BYTES unacknowledged, drains wait and the
 * recorder counts what does not fit as lost, rather than queueing without
 * bound in the messages between the threads.
 */
import { CAPTURE_BUFFER_BYTES, type CaptureRecorder } from './capture.js';
import type { CaptureEndReason, CaptureStart, CaptureTarget, DataPlaneCapture } from './messages.js';

const DRAIN_INTERVAL_MS = 50;
const MAX_IN_FLIGHT_BYTES = 32 << 20;

interface Session {
  target: CaptureTarget;
  points: number;
}

export class CaptureSessions {
  /** The network of every port the switch has (endpoints, nat host TAPs, overlay tunnel ports). */
  private readonly networkOf = new Map<number, number>();
  private readonly networks = new Set<number>();
  private readonly sessions = new Map<number, Session>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly recorder: CaptureRecorder,
    private readonly clock: () => number,
    private readonly post: (message: DataPlaneCapture, transfer?: ArrayBuffer[]) => void,
    /** Bytes posted and not yet acknowledged by the control plane (Atomics), or null for no flow control. */
    private readonly inFlight: Int32Array | null,
  ) {}

  networkAdded(networkId: number): void {
    this.networks.add(networkId);
  }

  /** Ends the network's sessions; its ports are gone already, but for an overlay's tunnel port, which goes with it. */
  networkRemoved(networkId: number): void {
    for (const [slot, s] of this.sessions) if ('networkId' in s.target && s.target.networkId === networkId) this.end(slot, 'networkRemoved');
    for (const [portId, net] of this.networkOf) if (net === networkId) this.networkOf.delete(portId);
    this.networks.delete(networkId);
  }

  portAdded(portId: number, networkId: number): void {
    this.networkOf.set(portId, networkId);
    for (const [slot, s] of this.sessions) if ('networkId' in s.target && s.target.networkId === networkId) this.recorder.setPort(slot, portId, s.points);
  }

  /** Ends the sessions of this port; network sessions stop capturing it. */
  portRemoved(portId: number): void {
    if (!this.networkOf.delete(portId)) return;
    for (const [slot, s] of this.sessions) {
      if ('portId' in s.target) {
        if (s.target.portId === portId) this.end(slot, 'portRemoved');
      } else {
        this.recorder.setPort(slot, portId, 0);
      }
    }
  }

  /** Starts capturing; the session's slot names it in records and in stop(). */
  start(target: CaptureTarget, points: number, snaplen: number): CaptureStart {
    if ('portId' in target ? !this.networkOf.has(target.portId) : !this.networks.has(target.networkId)) return { refused: 'noTarget' };
    const slot = this.recorder.openSlot(snaplen, this.clock());
    if (slot < 0) return { refused: 'full' };
    this.sessions.set(slot, { target, points });
    if ('portId' in target) this.recorder.setPort(slot, target.portId, points);
    else for (const [portId, net] of this.networkOf) if (net === target.networkId) this.recorder.setPort(slot, portId, points);
    this.timer ??= setInterval(() => this.drain(false), DRAIN_INTERVAL_MS);
    return { slot };
  }

  stop(slot: number): void {
    if (!this.sessions.has(slot)) return;
    // Records in the buffer carry the slot's bit: they go out before the slot can be taken again.
    this.drain(true);
    this.sessions.delete(slot);
    this.recorder.closeSlot(slot);
    if (this.sessions.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** After each batch while capturing: drain early when the buffer is half full. */
  afterBatch(): void {
    if (this.recorder.pending > CAPTURE_BUFFER_BYTES / 2) this.drain(false);
  }

  /** Posts what the recorder holds; unless forced, not while the control plane is behind. */
  drain(force: boolean): void {
    const inFlight = this.inFlight;
    if (!force && inFlight !== null && Atomics.load(inFlight, 0) > MAX_IN_FLIGHT_BYTES) return;
    const taken = this.recorder.drain();
    if (taken === null) return;
    if (inFlight !== null) Atomics.add(inFlight, 0, taken.records.byteLength);
    this.post({ capture: 'records', records: taken.records, lost: taken.lost }, [taken.records]);
  }

  close(): void {
    for (const slot of [...this.sessions.keys()]) this.stop(slot);
  }

  private end(slot: number, reason: CaptureEndReason): void {
    this.stop(slot);
    this.post({ capture: 'end', slot, reason });
  }
}
