/**
 * The frame being switched: where it is in the batch buffer, the port it came
 * in on, its flow (hash and flow-table entry) and what the slow path has
 * decided so far. One per switch, reused for every frame: one hidden class,
 * nothing allocated, and the slow path's steps and the stages read it instead
 * of passing ten arguments each.
 */
import type { TraceStep } from '../vfp/pipeline.js';
import type { SwitchPort } from './ports/port.js';
import type { NetworkStage } from './stages/stage.js';

/** What a dry run (a trace) found the switch would do with the frame. */
export const Outcome = {
  /** Nothing decided yet. */
  NONE: 0,
  /** Queued on `outcomePort`. */
  FORWARD: 1,
  /** Flooded to every other port of the network whose inbound layers allow it. */
  FLOOD: 2,
  /** Dropped with `outcomeReason`, counted on `outcomePort`. */
  DROP: 3,
} as const;

export class FrameContext {
  ingress: SwitchPort | null = null;
  off = 0;
  len = 0;
  /** Where its vnet header starts, or -1 without one. */
  vnetOff = -1;
  /** Its flow hash, 0 when it has none (not unicast IP): the tunnel picks the outer source port by it. */
  hash = 0;
  /** Its flow-table entry when one was found (stale, or not usable by the fast path), else -1. */
  entry = -1;
  /** Its connection at the ingress (direction out), found by the ingress side, or -1. */
  ctOut = -1;
  /** Whether the decision may be cached: unicast IP, and nothing one of a kind happened to it. */
  cacheable = false;
  /** While it is flooded: an answer written over it in place would spoil the copies. */
  flooding = false;
  now = 0;
  /** The stage that took something for this frame (a NAT port) to be committed with its connection or given back. */
  holder: NetworkStage | null = null;
  /** The flow-table accounting tag its cached flow gets (a load balancer backend's, FlowTable.tag), or -1. */
  tag = -1;

  /**
   * A dry run (trace): the real layers and stages decide, but nothing is
   * committed: no connection, no NAT port kept (one is taken and given back),
   * no MAC learned, no meter debited, no flow cached, no frame counted or
   * sent. The outcome is recorded instead. What a lookup does anyway stays:
   * rule hit counts, and aged entries (MACs, connections) removed when found.
   * Not modelled: a TCP connection that a SYN would restart (evaluateSide
   * updates connection state only when it may create connections).
   */
  dryRun = false;
  /** While tracing: the steps the layers and stages took, and the ports a flood would reach. */
  steps: TraceStep[] | null = null;
  floodPorts: number[] | null = null;
  outcome: number = Outcome.NONE;
  outcomePort = -1;
  outcomeReason = 0;

  /** Gives back what a stage holds for the frame, if anything. */
  release(): void {
    this.holder?.abandon();
    this.holder = null;
  }

  /** Records a stage's step while tracing (the caller checks `steps` first, so building the step costs nothing otherwise). */
  step(action: string, detail: string): void {
    this.steps?.push({ action, detail });
  }
}
