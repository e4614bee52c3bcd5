/**
 * The VFP state of one data-plane thread: every port's compiled policy and
 * generation number, connection tracking, meters and egress caps, the unified
 * flow table and its transpositions. The switch composes these on its frame
 * path (src/switch/switch.ts); this class owns their lifetimes and the
 * stateful half of the slow path.
 *
 * Stateful semantics, per port and as a cloud security group has them:
 * - A frame allowed through a port creates a connection there (TCP unless it
 *   is a bare RST, UDP, ICMP echo requests), with the frame's direction as the
 *   connection's origin.
 * - A frame in the reply direction of a live connection is allowed if the
 *   layers allow it in its own direction, or if they allow the connection's
 *   origin packet (its key reversed) in the origin direction. So an
 *   outbound-only policy admits replies, and a block rule that now matches the
 *   origin direction stops the connection at its next frame (the generation
 *   bump forces that frame through here).
 * - The per-port bound on connections refuses new connections (their frames
 *   are dropped and counted as connLimit); existing ones are untouched.
 */
import { compilePolicy, DIR_IN, DIR_OUT, type CompiledPolicy, type MeterAllocator } from './compile.js';
import { Conntrack, CT_REFUSED, CT_RESTART, type ConntrackOptions } from './conntrack.js';
import { FlowTable } from './flow-table.js';
import { KeyWord, KEY_WORDS, Meta } from './key.js';
import { Decision, evaluateLayers, Verdict, type TraceStep } from './pipeline.js';
import type { PortPolicy } from './policy.js';
import { TokenBuckets } from './token-bucket.js';
import { Transpositions } from './transposition.js';

export interface VfpOptions {
  maxPorts: number;
  /** Unified flow table entries. Default 1,048,576. */
  maxFlows?: number;
  conntrack?: ConntrackOptions;
  /** Flows with a rewrite that can be cached at once. Default 65,536. */
  maxTranspositions?: number;
  /** Meter rules across all ports. Default 16,384. */
  maxMeters?: number;
  /** Milliseconds; the switch's clock, so token buckets and frames agree on time. */
  clock?: () => number;
}

export interface VfpCounters {
  flows: number;
  flowCapacity: number;
  flowsCreated: number;
  flowsRevalidated: number;
  flowsExpired: number;
  /** New flows that could not be cached because the table was full (they still pass, slowly). */
  flowTableFull: number;
  slowPathRuns: number;
  connections: ReturnType<Conntrack['counters']>;
}

/** A pending conntrack creation, committed only once the whole path allowed the frame. */
export class PendingConnections {
  count = 0;
  readonly ports: Int32Array;
  readonly dirs: Uint8Array;
  readonly keys: Uint32Array[];
  /** Slot created for entry i by commit(), or CT_REFUSED. */
  readonly slots: Int32Array;

  /** A frame can start a connection at its ingress and at every port it floods to. */
  constructor(capacity: number) {
    this.ports = new Int32Array(capacity);
    this.dirs = new Uint8Array(capacity);
    this.slots = new Int32Array(capacity);
    this.keys = Array.from({ length: capacity }, () => new Uint32Array(KEY_WORDS));
  }
}

const TRACKED = 1;
const NOT_TRACKED = 0;

export class Vfp {
  readonly policies: (CompiledPolicy | undefined)[] = [];
  readonly generation: Uint32Array;
  readonly conntrack: Conntrack;
  readonly flows: FlowTable;
  readonly transpositions: Transpositions;
  readonly meters: TokenBuckets;
  /** Egress caps: bucket id = port id. */
  readonly qos: TokenBuckets;
  private readonly freeMeters: number[] = [];
  private nextMeter = 0;
  private readonly maxMeters: number;
  readonly stats = { flowsCreated: 0, flowsRevalidated: 0, flowsExpired: 0, flowTableFull: 0, slowPathRuns: 0 };
  private readonly reversed = new Uint32Array(KEY_WORDS);
  private readonly saved = new Uint32Array(KEY_WORDS);
  /** The origin-direction evaluation of a reply: only its verdict is used, its rewrites are not this frame's. */
  private readonly originDecision = new Decision();
  /**
   * Bumped at a port whenever a connection is created there. A cached drop
   * records it: the drop was decided with no connection to admit the frame,
   * and a new connection at that port (opened from the other side) may be one.
   */
  readonly connectionEpoch: Uint32Array;
  private readonly clock: () => number;

  constructor(opts: VfpOptions) {
    this.clock = opts.clock ?? (() => performance.now());
    this.connectionEpoch = new Uint32Array(opts.maxPorts);
    this.generation = new Uint32Array(opts.maxPorts);
    this.conntrack = new Conntrack({ maxPorts: opts.maxPorts, ...opts.conntrack });
    this.flows = new FlowTable(opts.maxFlows ?? 1 << 20);
    this.transpositions = new Transpositions(opts.maxTranspositions ?? 65536);
    this.maxMeters = opts.maxMeters ?? 16384;
    this.meters = new TokenBuckets(this.maxMeters);
    this.qos = new TokenBuckets(opts.maxPorts);
  }

  private readonly meterAllocator: MeterAllocator = {
    allocate: (rateBps, burstBytes) => {
      const id = this.freeMeters.pop() ?? (this.nextMeter < this.maxMeters ? this.nextMeter++ : -1);
      if (id < 0) throw new Error(`all ${this.maxMeters} meters are in use: remove meter rules before adding more`);
      this.meters.configure(id, rateBps / 8, burstBytes, this.clock());
      return id;
    },
    release: (id) => {
      this.meters.clear(id);
      this.freeMeters.push(id);
    },
  };

  /**
   * Installs a port's policy, replacing the old one at once. Compiling may
   * throw (a policy the control plane validated should not); the old policy
   * then stays.
   */
  setPolicy(portId: number, policy: PortPolicy): CompiledPolicy {
    const compiled = compilePolicy(policy, this.meterAllocator);
    const old = this.policies[portId];
    if (old) for (const m of old.meterBuckets) this.meterAllocator.release(m);
    this.policies[portId] = compiled;
    this.generation[portId] = (this.generation[portId] + 1) >>> 0;
    if (compiled.qos) this.qos.configure(portId, compiled.qos.rateBps / 8, compiled.qos.burstBytes, this.clock());
    else this.qos.clear(portId);
    return compiled;
  }

  removePort(portId: number): void {
    const old = this.policies[portId];
    if (old) for (const m of old.meterBuckets) this.meterAllocator.release(m);
    this.policies[portId] = undefined;
    this.generation[portId] = (this.generation[portId] + 1) >>> 0;
    this.qos.clear(portId);
    this.conntrack.flushPort(portId);
    for (const e of this.flows.liveEntries()) {
      if (this.flows.ingressPort(e) === portId || this.flows.egress[e] === portId || this.flows.dropPort[e] === portId) this.removeFlow(e);
    }
  }

  removeFlow(e: number): void {
    this.transpositions.release(this.flows.transposition[e]);
    this.flows.transposition[e] = -1;
    this.flows.remove(e);
  }

  /**
   * One side of the slow path: port `portId`, direction `dir`, for a frame
   * whose key (as it stands at this port) is `key`. Leaves the verdict in `d`
   * and, if the frame would start a connection here, queues it in `pending`.
   * Returns the live connection slot the frame belongs to, or -1.
   */
  evaluateSide(
    policy: CompiledPolicy,
    portId: number,
    dir: number,
    key: Uint32Array,
    meta: Int32Array,
    now: number,
    d: Decision,
    pending: PendingConnections | null,
    trace: TraceStep[] | null,
  ): number {
    d.verdict = Verdict.ALLOW;
    d.dropReason = 0;
    const isIp = meta[Meta.IP_VERSION] !== 0;
    const ct = this.conntrack;
    let slot = isIp ? ct.lookup(portId, key, dir as 0 | 1) : -1;
    if (slot >= 0 && !ct.alive(slot, now)) {
      ct.remove(slot);
      slot = -1;
    }
    if (slot >= 0 && pending !== null && ct.update(slot, dir as 0 | 1, meta[Meta.TCP_FLAGS], now) === CT_RESTART) {
      ct.remove(slot);
      slot = -1;
    }
    const save = this.saved;
    for (let w = 0; w < KEY_WORDS; w++) save[w] = key[w];
    evaluateLayers(policy, dir, key, isIp, d, trace);
    if (slot >= 0) {
      if (d.verdict === Verdict.BLOCK && ct.origin(slot) !== dir) {
        const rev = reverseKey(save, this.reversed);
        const origin = this.originDecision;
        origin.reset();
        if (trace) trace.push({ action: 'reply', detail: 'reply direction of a tracked connection: evaluating its origin packet' });
        evaluateLayers(policy, dir ^ 1, rev, isIp, origin, trace);
        if (origin.verdict === Verdict.ALLOW) {
          d.verdict = Verdict.ALLOW;
          d.dropReason = 0;
        }
      }
      return slot;
    }
    if (d.verdict === Verdict.ALLOW && pending !== null && tracked(save, meta) === TRACKED) {
      const i = pending.count++;
      pending.ports[i] = portId;
      pending.dirs[i] = dir;
      const k = pending.keys[i];
      for (let w = 0; w < KEY_WORDS; w++) k[w] = save[w];
    }
    return -1;
  }

  /**
   * Creates the queued connections. Returns -1, or the port whose bound
   * refused one; the frame is then dropped and what was created is rolled
   * back, so a refused connection leaves no half-state behind.
   */
  commit(pending: PendingConnections, tcpFlags: number, now: number): number {
    const ct = this.conntrack;
    for (let i = 0; i < pending.count; i++) {
      const slot = ct.create(pending.ports[i], pending.keys[i], pending.dirs[i] as 0 | 1, tcpFlags, now);
      pending.slots[i] = slot;
      if (slot !== CT_REFUSED) this.connectionEpoch[pending.ports[i]]++;
      if (slot === CT_REFUSED) {
        for (let j = 0; j < i; j++) ct.remove(pending.slots[j]);
        pending.count = 0;
        return pending.ports[i];
      }
    }
    return -1;
  }

  counters(): VfpCounters {
    return {
      flows: this.flows.size,
      flowCapacity: this.flows.capacity,
      ...this.stats,
      connections: this.conntrack.counters(),
    };
  }
}

/** Which frames start a connection: TCP (not a bare RST), UDP, ICMP echo requests. */
function tracked(key: Uint32Array, meta: Int32Array): number {
  const proto = key[KeyWord.PROTO] >>> 24;
  if (proto === 6) return (meta[Meta.TCP_FLAGS] & 0x04) !== 0 ? NOT_TRACKED : TRACKED;
  if (proto === 17) return TRACKED;
  const icmpType = (key[KeyWord.PROTO] >>> 16) & 0xff;
  if (proto === 1) return icmpType === 8 ? TRACKED : NOT_TRACKED;
  if (proto === 58) return icmpType === 128 ? TRACKED : NOT_TRACKED;
  return NOT_TRACKED;
}

/** The key of a packet travelling the other way: MACs, addresses and ports swapped; an echo reply becomes its request. */
export function reverseKey(key: Uint32Array, out: Uint32Array): Uint32Array {
  out[KeyWord.SRC_MAC_HI] = key[KeyWord.DST_MAC_HI];
  out[KeyWord.SRC_MAC_LO] = key[KeyWord.DST_MAC_LO];
  out[KeyWord.DST_MAC_HI] = key[KeyWord.SRC_MAC_HI];
  out[KeyWord.DST_MAC_LO] = key[KeyWord.SRC_MAC_LO];
  out[KeyWord.ETH_VLAN] = key[KeyWord.ETH_VLAN];
  let proto = key[KeyWord.PROTO];
  const p = proto >>> 24;
  const type = (proto >>> 16) & 0xff;
  if (p === 1 && type === 0) proto = (proto & 0xff00ffff) | (8 << 16);
  else if (p === 58 && type === 129) proto = (proto & 0xff00ffff) | (128 << 16);
  out[KeyWord.PROTO] = proto >>> 0;
  const ports = key[KeyWord.PORTS];
  out[KeyWord.PORTS] = ((ports << 16) | (ports >>> 16)) >>> 0;
  for (let i = 0; i < 4; i++) {
    out[KeyWord.SRC_IP + i] = key[KeyWord.DST_IP + i];
    out[KeyWord.DST_IP + i] = key[KeyWord.SRC_IP + i];
  }
  return out;
}

export { DIR_IN, DIR_OUT };
