/**
 * The load balancers of one network, as the data path sees them: VIPs
 * (address, protocol, port) with their backends, the Maglev table of each,
 * and the connections balanced so far.
 *
 * Distributed, as in the Azure host agent and kube-proxy: the decision is
 * made where the client's frame enters the switch. A new connection to a VIP
 * gets a backend from the Maglev table (by its 5-tuple, or by the client
 * address alone with client-ip affinity) and the frame is rewritten to it
 * (destination MAC, address and port). The connection remembers its backend,
 * so it stays there when the table changes (a backend added, drained or
 * failing its probes) until it ends; only a backend removed outright loses
 * its connections. The backend's replies are rewritten back (source VIP and
 * port, VIP MAC) by the reverse tuple.
 *
 * Hairpin: a backend reaching its own VIP and balanced to itself would see
 * its own address as the source, which Linux drops as a martian; its source
 * becomes the VIP, so the reply comes back through here.
 *
 * A connection entry lives as long as the connection-tracking entry of the
 * client's side (slot and serial, src/vfp/conntrack.ts): nothing here has a
 * clock. Entries are typed arrays with two hash chains each, by the forward
 * tuple (client -> VIP) and by the reply tuple (backend -> client), so
 * nothing is allocated per connection and a dead one is reclaimed lazily.
 */
import type { Conntrack } from '../vfp/conntrack.js';
import { buildMaglevTable, MAGLEV_TABLE_SIZE } from './maglev.js';

export type LbProtocol = 'tcp' | 'udp';
export type BackendState = 'active' | 'draining' | 'down';

/** What the control plane tells the data plane about one backend. */
export interface LbBackendSpec {
  /** A stable name (the Maglev seed): "ip:port". */
  key: string;
  ip: number;
  port: number;
  macHi: number;
  macLo: number;
  /** The switch port its frames leave by: its TAP, or the overlay's tunnel port. */
  portId: number;
  state: BackendState;
}

export interface LbSpec {
  id: string;
  name: string;
  vip: number;
  vipMacHi: number;
  vipMacLo: number;
  protocol: LbProtocol;
  port: number;
  affinity: 'none' | 'client-ip';
  backends: LbBackendSpec[];
}

export interface LbBackendCounters {
  key: string;
  state: BackendState;
  /** Connections balanced to it. */
  connections: number;
  /** Of those, the ones whose connection-tracking entry is alive (TCP's TIME_WAIT included). */
  active: number;
  /** Bytes of its connections, both ways, as the flow table counted them. */
  bytes: number;
}

/** Accounting tags (FlowTable.tag) for backends: one per backend of the whole switch while it exists. */
export class LbTags {
  private readonly free: number[] = [];
  private next = 0;

  constructor(
    private readonly limit: number,
    /** A tag given back: its bytes are forgotten, so the next backend starts at zero. */
    private readonly cleared: (tag: number) => void,
  ) {}

  /** A tag, or -1 when every one is taken (the backend's bytes are then not counted). */
  take(): number {
    return this.free.pop() ?? (this.next < this.limit ? this.next++ : -1);
  }

  give(tag: number): void {
    if (tag < 0) return;
    this.cleared(tag);
    this.free.push(tag);
  }
}

export interface LbCounters {
  id: string;
  name: string;
  /** New connections refused: no backend eligible, or the connection table full. */
  noBackend: number;
  tableFull: number;
  backends: LbBackendCounters[];
}

const PROTO_TCP = 6;
const PROTO_UDP = 17;
/** Buckets of each chain index: a power of two, above the entries so chains stay short. */
const NO_ENTRY = -1;
/** Entries a full table looks at for a dead one before it refuses: bounded work per refused connection. */
const RECLAIM_BUDGET = 64;

class Backend {
  connections = 0;
  constructor(
    public spec: LbBackendSpec,
    /** Unique per backend for the balancer's life: entries holding another serial lost their backend. */
    readonly serial: number,
    /** Its flow-table accounting tag, or -1. */
    readonly tag: number,
  ) {}
}

class Balancer {
  table: Int16Array = new Int16Array(MAGLEV_TABLE_SIZE).fill(-1);
  eligible: Backend[] = [];
  backends = new Map<string, Backend>();
  noBackend = 0;
  tableFull = 0;
  readonly proto: number;

  constructor(
    public spec: LbSpec,
    /** Its index in the network's balancers: what a connection entry records. */
    readonly index: number,
  ) {
    this.proto = spec.protocol === 'tcp' ? PROTO_TCP : PROTO_UDP;
  }
}

export function lbProtocolNumber(p: LbProtocol): number {
  return p === 'tcp' ? PROTO_TCP : PROTO_UDP;
}

/** What lookups leave for the stage to apply. */
export class LbVerdict {
  backendIp = 0;
  backendPort = 0;
  backendMacHi = 0;
  backendMacLo = 0;
  egressPortId = -1;
  vip = 0;
  vipPort = 0;
  vipMacHi = 0;
  vipMacLo = 0;
  hairpin = false;
  clientIp = 0;
  clientMacHi = 0;
  clientMacLo = 0;
  /** Maglev entry chosen, or -1 when an existing connection kept its backend. */
  tableEntry = -1;
  /** The backend's flow-table accounting tag, or -1. */
  tag = -1;
  balancerName = '';
  backendKey = '';
}

export const LbResult = {
  /** Not a VIP of this network, nor a reply to a balanced connection. */
  NONE: 0,
  /** A connection to a VIP: rewrite to the backend in the verdict. */
  FORWARD: 1,
  /** A backend's reply: rewrite from the VIP in the verdict. */
  REPLY: 2,
  /** A new connection with no backend to take it. */
  NO_BACKEND: 3,
  /** A new connection the connection table has no room for. */
  TABLE_FULL: 4,
} as const;

export class NetworkBalancers {
  private readonly balancers: (Balancer | undefined)[] = [];
  private readonly byName = new Map<string, Balancer>();
  /** VIP address -> its balancers (one per protocol and port). */
  private readonly byVip = new Map<number, Balancer[]>();
  private backendSerial = 1;

  // Connection entries.
  private readonly capacity: number;
  private readonly buckets: number;
  private readonly fwdHead: Int32Array;
  private readonly revHead: Int32Array;
  private readonly fwdNext: Int32Array;
  private readonly revNext: Int32Array;
  private readonly proto: Uint8Array;
  private readonly clientIp: Uint32Array;
  private readonly clientPort: Uint16Array;
  private readonly clientMacHi: Uint32Array;
  private readonly clientMacLo: Uint32Array;
  private readonly clientPortId: Int32Array;
  private readonly vip: Uint32Array;
  private readonly vipPort: Uint16Array;
  private readonly backendIp: Uint32Array;
  private readonly backendPort: Uint16Array;
  private readonly balancer: Int32Array;
  private readonly backendSerialOf: Uint32Array;
  private readonly hairpin: Uint8Array;
  private readonly entryTag: Int32Array;
  private readonly ctSlot: Int32Array;
  private readonly ctSerial: Uint32Array;
  private readonly free: Int32Array;
  private freeCount: number;
  private reclaimCursor = 0;
  /** The entry the frame in the slow path filled in, bound or given back before that frame is done. */
  private pending = NO_ENTRY;
  private pendingBackend: Backend | null = null;

  readonly verdict = new LbVerdict();

  constructor(
    private readonly ct: Conntrack,
    private readonly tags: LbTags | null = null,
    capacity = 65536,
  ) {
    this.capacity = capacity;
    let b = 1;
    while (b < capacity * 2) b <<= 1;
    this.buckets = b;
    this.fwdHead = new Int32Array(b).fill(NO_ENTRY);
    this.revHead = new Int32Array(b).fill(NO_ENTRY);
    this.fwdNext = new Int32Array(capacity).fill(NO_ENTRY);
    this.revNext = new Int32Array(capacity).fill(NO_ENTRY);
    this.proto = new Uint8Array(capacity);
    this.clientIp = new Uint32Array(capacity);
    this.clientPort = new Uint16Array(capacity);
    this.clientMacHi = new Uint32Array(capacity);
    this.clientMacLo = new Uint32Array(capacity);
    this.clientPortId = new Int32Array(capacity);
    this.vip = new Uint32Array(capacity);
    this.vipPort = new Uint16Array(capacity);
    this.backendIp = new Uint32Array(capacity);
    this.backendPort = new Uint16Array(capacity);
    this.balancer = new Int32Array(capacity).fill(-1);
    this.backendSerialOf = new Uint32Array(capacity);
    this.hairpin = new Uint8Array(capacity);
    this.entryTag = new Int32Array(capacity).fill(-1);
    this.ctSlot = new Int32Array(capacity).fill(-1);
    this.ctSerial = new Uint32Array(capacity);
    this.free = new Int32Array(capacity);
    for (let i = 0; i < capacity; i++) this.free[i] = capacity - 1 - i;
    this.freeCount = capacity;
  }

  get size(): number {
    return this.byName.size;
  }

  /** Whether `ip` is a VIP here (ARP for it is answered with its MAC). */
  vipMac(ip: number): Balancer | undefined {
    return this.byVip.get(ip)?.[0];
  }

  /**
   * Replaces every balancer of the network. A backend that stays (same key)
   * keeps its connections whatever its new state; one that is gone takes
   * its connections with it (their next frame is balanced again).
   */
  configure(specs: LbSpec[]): void {
    const old = this.byName;
    const fresh = new Map<string, Balancer>();
    this.balancers.length = 0;
    this.byVip.clear();
    for (const spec of specs) {
      const prev = old.get(spec.id);
      // A balancer whose VIP, protocol or port changed is another balancer: its connections end.
      const same = prev !== undefined && prev.spec.vip === spec.vip && prev.spec.protocol === spec.protocol && prev.spec.port === spec.port;
      const b = new Balancer(spec, this.balancers.length);
      for (const bs of spec.backends) {
        const kept = same ? prev!.backends.get(bs.key) : undefined;
        const backend = kept !== undefined && kept.spec.ip === bs.ip && kept.spec.port === bs.port ? kept : new Backend(bs, this.backendSerial++, this.tags?.take() ?? -1);
        backend.spec = bs;
        b.backends.set(bs.key, backend);
      }
      if (same) this.renumber(prev!.index, b.index);
      else if (prev !== undefined) this.renumber(prev.index, -1);
      b.eligible = Array.from(b.backends.values()).filter((x) => x.spec.state === 'active');
      b.table = buildMaglevTable(b.eligible.map((x) => x.spec.key));
      this.balancers.push(b);
      fresh.set(spec.id, b);
      const list = this.byVip.get(spec.vip);
      if (list) list.push(b);
      else this.byVip.set(spec.vip, [b]);
    }
    for (const [id, b] of old) if (!fresh.has(id)) this.renumber(b.index, -1);
    // Backends no balancer kept give their tags back.
    const kept = new Set<Backend>();
    for (const b of fresh.values()) for (const x of b.backends.values()) kept.add(x);
    for (const b of old.values()) for (const x of b.backends.values()) if (!kept.has(x)) this.tags?.give(x.tag);
    this.byName.clear();
    for (const [id, b] of fresh) this.byName.set(id, b);
    this.renumberDone();
  }

  private readonly renumbering = new Map<number, number>();

  private renumber(from: number, to: number): void {
    this.renumbering.set(from, to);
  }

  /** Entries follow their balancer to its new index, or are freed with it. */
  private renumberDone(): void {
    const map = this.renumbering;
    if (map.size === 0) return;
    for (let e = 0; e < this.capacity; e++) {
      const b = this.balancer[e];
      if (b < 0) continue;
      const to = map.get(b);
      if (to === undefined) continue;
      if (to < 0) this.release(e);
      else this.balancer[e] = to;
    }
    map.clear();
  }

  /**
   * A frame from a client or a backend (IPv4 TCP or UDP, fields from the key,
   * host order). Leaves what to rewrite in `verdict`. A FORWARD of a new
   * connection holds an entry until commit() or abandon(); `take` false (a
   * trace) holds nothing.
   */
  route(proto: number, srcIp: number, srcPort: number, dstIp: number, dstPort: number, srcMacHi: number, srcMacLo: number, ingressPortId: number, now: number, take: boolean): number {
    this.pending = NO_ENTRY;
    const vips = this.byVip.get(dstIp);
    if (vips !== undefined) {
      for (let i = 0; i < vips.length; i++) {
        const b = vips[i];
        if (b.proto === proto && b.spec.port === dstPort) return this.toBackend(b, proto, srcIp, srcPort, srcMacHi, srcMacLo, ingressPortId, now, take);
      }
    }
    return this.fromBackend(proto, srcIp, srcPort, dstIp, dstPort, now);
  }

  private toBackend(b: Balancer, proto: number, srcIp: number, srcPort: number, srcMacHi: number, srcMacLo: number, ingressPortId: number, now: number, take: boolean): number {
    const v = this.verdict;
    v.vip = b.spec.vip;
    v.vipPort = b.spec.port;
    v.vipMacHi = b.spec.vipMacHi;
    v.vipMacLo = b.spec.vipMacLo;
    v.balancerName = b.spec.name;
    v.clientIp = srcIp;
    v.clientMacHi = srcMacHi;
    v.clientMacLo = srcMacLo;
    // A connection balanced before keeps its backend while that backend exists.
    const e = this.findForward(proto, srcIp, srcPort, b.spec.vip, b.spec.port, now);
    if (e !== NO_ENTRY) {
      const kept = this.backendOf(b, e);
      if (kept !== undefined) {
        this.fill(kept, -1);
        v.hairpin = this.hairpin[e] === 1;
        return LbResult.FORWARD;
      }
      this.release(e);
    }
    const n = b.eligible.length;
    if (n === 0) {
      if (take) b.noBackend++;
      return LbResult.NO_BACKEND;
    }
    const h = b.spec.affinity === 'client-ip' ? mix(srcIp, 0, 0) : mix(srcIp, (srcPort << 8) | proto, 0x5bd1e995);
    const slot = h % b.table.length;
    const backend = b.eligible[b.table[slot]];
    this.fill(backend, slot);
    v.hairpin = backend.spec.ip === srcIp;
    if (!take) return LbResult.FORWARD;
    const fresh = this.allocate(now);
    if (fresh === NO_ENTRY) {
      b.tableFull++;
      return LbResult.TABLE_FULL;
    }
    this.proto[fresh] = proto;
    this.clientIp[fresh] = srcIp;
    this.clientPort[fresh] = srcPort;
    this.clientMacHi[fresh] = srcMacHi;
    this.clientMacLo[fresh] = srcMacLo;
    this.clientPortId[fresh] = ingressPortId;
    this.vip[fresh] = b.spec.vip;
    this.vipPort[fresh] = b.spec.port;
    this.backendIp[fresh] = backend.spec.ip;
    this.backendPort[fresh] = backend.spec.port;
    this.balancer[fresh] = b.index;
    this.backendSerialOf[fresh] = backend.serial;
    this.hairpin[fresh] = v.hairpin ? 1 : 0;
    this.entryTag[fresh] = backend.tag;
    this.pending = fresh;
    this.pendingBackend = backend;
    return LbResult.FORWARD;
  }

  private fill(backend: Backend, tableEntry: number): void {
    const v = this.verdict;
    const s = backend.spec;
    v.backendIp = s.ip;
    v.backendPort = s.port;
    v.backendMacHi = s.macHi;
    v.backendMacLo = s.macLo;
    v.egressPortId = s.portId;
    v.backendKey = s.key;
    v.tableEntry = tableEntry;
    v.tag = backend.tag;
  }

  /** The entry's backend, if the balancer still has it (a backend removed and added again is a new one). */
  private backendOf(b: Balancer, e: number): Backend | undefined {
    const serial = this.backendSerialOf[e];
    for (const backend of b.backends.values()) if (backend.serial === serial) return backend;
    return undefined;
  }

  /** A backend's frame to a client it was balanced for: the reply tuple's entry, if any. */
  private fromBackend(proto: number, srcIp: number, srcPort: number, dstIp: number, dstPort: number, now: number): number {
    let e = this.revHead[revHash(proto, srcIp, srcPort, dstIp, dstPort) & (this.buckets - 1)];
    while (e !== NO_ENTRY) {
      const next = this.revNext[e];
      const replyTo = this.hairpin[e] === 1 ? this.vip[e] : this.clientIp[e];
      if (this.proto[e] === proto && this.backendIp[e] === srcIp && this.backendPort[e] === srcPort && replyTo === dstIp && this.clientPort[e] === dstPort) {
        if (!this.alive(e, now)) {
          this.release(e);
          return LbResult.NONE;
        }
        const v = this.verdict;
        const b = this.balancers[this.balancer[e]]!;
        v.vip = this.vip[e];
        v.vipPort = this.vipPort[e];
        v.vipMacHi = b.spec.vipMacHi;
        v.vipMacLo = b.spec.vipMacLo;
        v.hairpin = this.hairpin[e] === 1;
        v.clientIp = this.clientIp[e];
        v.clientMacHi = this.clientMacHi[e];
        v.clientMacLo = this.clientMacLo[e];
        v.egressPortId = this.clientPortId[e];
        v.balancerName = b.spec.name;
        v.backendKey = `${this.backendIp[e]}:${this.backendPort[e]}`;
        v.tag = this.entryTag[e];
        return LbResult.REPLY;
      }
      e = next;
    }
    return LbResult.NONE;
  }

  private findForward(proto: number, ip: number, port: number, vip: number, vipPort: number, now: number): number {
    let e = this.fwdHead[fwdHash(proto, ip, port, vip, vipPort) & (this.buckets - 1)];
    while (e !== NO_ENTRY) {
      const next = this.fwdNext[e];
      if (this.proto[e] === proto && this.clientIp[e] === ip && this.clientPort[e] === port && this.vip[e] === vip && this.vipPort[e] === vipPort) {
        if (this.alive(e, now)) return e;
        this.release(e);
        return NO_ENTRY;
      }
      e = next;
    }
    return NO_ENTRY;
  }

  private alive(e: number, now: number): boolean {
    const slot = this.ctSlot[e];
    return slot >= 0 && this.ct.serial(slot) === this.ctSerial[e] && this.ct.alive(slot, now);
  }

  /**
   * The frame's connection at the client's port exists now (`slot`): the
   * entry taken for it is bound to it. -1 (no connection was started, as
   * for a bare RST) gives it back, and false says: do not cache.
   */
  commit(slot: number): boolean {
    const e = this.pending;
    if (e === NO_ENTRY) return true;
    this.pending = NO_ENTRY;
    if (slot < 0) {
      this.freeEntry(e);
      return false;
    }
    this.ctSlot[e] = slot;
    this.ctSerial[e] = this.ct.serial(slot);
    const fb = fwdHash(this.proto[e], this.clientIp[e], this.clientPort[e], this.vip[e], this.vipPort[e]) & (this.buckets - 1);
    this.fwdNext[e] = this.fwdHead[fb];
    this.fwdHead[fb] = e;
    const replyTo = this.hairpin[e] === 1 ? this.vip[e] : this.clientIp[e];
    const rb = revHash(this.proto[e], this.backendIp[e], this.backendPort[e], replyTo, this.clientPort[e]) & (this.buckets - 1);
    this.revNext[e] = this.revHead[rb];
    this.revHead[rb] = e;
    this.pendingBackend!.connections++;
    this.pendingBackend = null;
    return true;
  }

  abandon(): void {
    if (this.pending !== NO_ENTRY) this.freeEntry(this.pending);
    this.pending = NO_ENTRY;
    this.pendingBackend = null;
  }

  private allocate(now: number): number {
    if (this.freeCount > 0) return this.free[--this.freeCount];
    for (let i = 0; i < RECLAIM_BUDGET; i++) {
      const e = this.reclaimCursor;
      this.reclaimCursor = (e + 1) % this.capacity;
      if (this.balancer[e] >= 0 && this.ctSlot[e] >= 0 && !this.alive(e, now)) {
        this.release(e);
        return this.free[--this.freeCount];
      }
    }
    return NO_ENTRY;
  }

  /** Unlinks a bound entry from both chains and frees it. */
  private release(e: number): void {
    if (this.ctSlot[e] >= 0) {
      unlink(this.fwdHead, this.fwdNext, fwdHash(this.proto[e], this.clientIp[e], this.clientPort[e], this.vip[e], this.vipPort[e]) & (this.buckets - 1), e);
      const replyTo = this.hairpin[e] === 1 ? this.vip[e] : this.clientIp[e];
      unlink(this.revHead, this.revNext, revHash(this.proto[e], this.backendIp[e], this.backendPort[e], replyTo, this.clientPort[e]) & (this.buckets - 1), e);
    }
    this.freeEntry(e);
  }

  private freeEntry(e: number): void {
    this.balancer[e] = -1;
    this.ctSlot[e] = -1;
    this.free[this.freeCount++] = e;
  }

  /** Frees entries whose connection ended, a slice at a time. */
  sweep(now: number, budget: number): void {
    for (let i = 0; i < budget; i++) {
      const e = this.reclaimCursor;
      this.reclaimCursor = (e + 1) % this.capacity;
      if (this.balancer[e] >= 0 && this.ctSlot[e] >= 0 && !this.alive(e, now)) this.release(e);
    }
  }

  /** Connections balanced and refused, over every balancer (cheap: no walk of the entries). */
  totals(): { connections: number; noBackend: number; tableFull: number } {
    let connections = 0;
    let noBackend = 0;
    let tableFull = 0;
    for (const b of this.balancers) {
      noBackend += b!.noBackend;
      tableFull += b!.tableFull;
      for (const x of b!.backends.values()) connections += x.connections;
    }
    return { connections, noBackend, tableFull };
  }

  /** `bytes`: FlowTable.bytesByTag(), or absent for no bytes. */
  counters(now: number, bytes?: Float64Array): LbCounters[] {
    const active = new Map<string, number>();
    for (let e = 0; e < this.capacity; e++) {
      const b = this.balancer[e];
      if (b < 0 || this.ctSlot[e] < 0 || !this.alive(e, now)) continue;
      const k = `${b}/${this.backendSerialOf[e]}`;
      active.set(k, (active.get(k) ?? 0) + 1);
    }
    return this.balancers.map((b) => ({
      id: b!.spec.id,
      name: b!.spec.name,
      noBackend: b!.noBackend,
      tableFull: b!.tableFull,
      backends: Array.from(b!.backends.values(), (x) => ({
        key: x.spec.key,
        state: x.spec.state,
        connections: x.connections,
        active: active.get(`${b!.index}/${x.serial}`) ?? 0,
        bytes: x.tag >= 0 && bytes !== undefined ? bytes[x.tag] : 0,
      })),
    }));
  }
}

function unlink(head: Int32Array, next: Int32Array, bucket: number, e: number): void {
  let at = head[bucket];
  if (at === e) {
    head[bucket] = next[e];
    next[e] = NO_ENTRY;
    return;
  }
  while (at !== NO_ENTRY) {
    const n = next[at];
    if (n === e) {
      next[at] = next[e];
      next[e] = NO_ENTRY;
      return;
    }
    at = n;
  }
}

function mix(a: number, b: number, seed: number): number {
  let h = seed ^ Math.imul(a ^ (a >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) ^ b;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

function fwdHash(proto: number, ip: number, port: number, vip: number, vipPort: number): number {
  return mix(ip ^ Math.imul(vip, 31), (port << 16) | vipPort, proto);
}

function revHash(proto: number, backendIp: number, backendPort: number, dstIp: number, dstPort: number): number {
  return mix(backendIp ^ Math.imul(dstIp, 31), (backendPort << 16) | dstPort, proto ^ 0x77);
}
