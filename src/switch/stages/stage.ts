/**
 * A stage is a network-level step of the slow path (VPP's graph node, in
 * miniature): built per network when the network is configured, met by every
 * frame that misses the flow cache after the ingress port's outbound layers
 * and MAC learning, and before MAC forwarding. It may let the frame go on,
 * answer it in place, send it to a port of its choosing, or drop it. Each
 * stage declares the drop reasons it can give and keeps its own counters.
 *
 * A stage decides with the frame's key, metadata and Decision; what it takes
 * for the frame (a NAT port) is committed with the frame's connection, or
 * given back when the frame is dropped later, or when the run was a trace.
 *
 * The slow path calls stages through this interface: a call site that sees a
 * handful of stage classes, once per uncached frame, never on the fast path.
 * A new stage (the load balancer next) is a new file here plus one line where
 * the network's stages are built (Switch.addNetwork).
 */
import type { Decision } from '../../vfp/pipeline.js';
import type { FrameContext } from '../frame-context.js';
import type { SwitchPort } from '../ports/port.js';

export const StageResult = {
  /** Not this stage's frame: the next stage, then MAC forwarding. */
  CONTINUE: 0,
  /** The stage disposed of the frame (answered, forwarded or dropped it). */
  DONE: 1,
} as const;

/** What a stage may ask of the switch it runs in. */
export interface StageHost {
  readonly buffer: Uint8Array;
  readonly key: Uint32Array;
  readonly meta: Int32Array;
  readonly decision: Decision;
  port(portId: number): SwitchPort | undefined;
  /** The frame, rewritten in place into an answer, goes back out of its ingress port. */
  reply(f: FrameContext): void;
  /** The rest of the slow path toward `egress`: its inbound layers, the meter, connections, the rewrite, the flow cache. */
  forward(f: FrameContext, egress: SwitchPort): void;
  /** Drops the frame, counted on its ingress port by `reason`; not cached (a stage's drop depends on state the flow cache does not watch). */
  dropAtIngress(f: FrameContext, reason: number): void;
}

export interface NetworkStage {
  readonly name: string;
  /** The drop reasons (src/packet/drop-reasons.ts) this stage can give. */
  readonly dropReasons: readonly number[];
  /** Returns StageResult. Must honour f.dryRun: nothing it takes may outlive a dry run (give it back in abandon()). */
  process(host: StageHost, f: FrameContext): number;
  /** The frame's connection at the container's side exists now (slot, or -1 for none): bind what was taken. False: do not cache. */
  commit(slot: number): boolean;
  /** The frame was dropped after the stage, or it was a dry run: give back what was taken. */
  abandon(): void;
  /** Its counters, for the network's inspection. */
  counters(): Record<string, number>;
}
