/**
 * Connection tracking per switch port, as a cloud security group does it: a
 * connection that policy allowed once carries its return traffic, and TCP
 * state (SYN, FIN, RST) plus idle timeouts decide when it is gone.
 *
 * One table serves every port and the port id is part of the key, so the
 * bound is global and a port's share is only a counter. A connection is keyed
 * from the port's point of view (local = the container's side), which makes a
 * packet and its reply land on the same entry without a second lookup or a
 * second entry per direction.
 *
 * Memory layout, chosen so a million connections cost the garbage collector
 * nothing and little memory:
 *   - a slab of fixed 24-byte records (6 u32 words: port and protocol, L4
 *     ports, the two IPv4 addresses or the first words of the IPv6 ones, the
 *     idle clock, and state, flags and serial in one word) in one
 *     Uint32Array; a slot number is stable for the life of a connection, so
 *     the flow table can cache (slot, serial) instead of the key;
 *   - the other 24 bytes of IPv6 addresses in a second slab indexed by slot,
 *     written only for IPv6 connections (slabs are handed out by a bump
 *     pointer, so IPv4-only traffic never touches its pages);
 *   - a separate open-addressing index (linear probing, load <= 0.5,
 *     backward-shift deletion as in src/switch/mac-table.ts) of slot numbers,
 *     each tagged with high hash bits so a probe that is not ours is rejected
 *     without reading the record. The record keeps no hash: the key is at most
 *     ten words, and hashing it again when an index entry moves is cheaper
 *     than four bytes on every connection;
 *   - free slots are chained through their clock word, so the free list costs
 *     no memory of its own;
 *   - the aux word of the layer above (NAT) in its own array, kept zero for
 *     every free slot, so only the pages where NAT writes become resident.
 * That is 24 bytes of record (48 for IPv6, 4 more for a connection NAT binds)
 * plus 8 bytes of index per slot of capacity; the serial has 24 bits (see
 * R_META).
 *
 * Timestamps are deciseconds (u32) of the caller's clock: every timeout is
 * whole seconds, so a tenth of a second is precision enough, and 2^32 of them
 * last 13.6 years, so the data plane's clock (which starts a day in) does not
 * wrap within any uptime.
 *
 * The hash is seeded at random per table: remote ports are chosen by whoever
 * sends the traffic, and a fixed hash would let them build long probe chains.
 *
 * TCP is followed by flags only, not sequence numbers: enough to give a
 * closed connection a short life and a half-open one a bounded life, which is
 * what a security group needs; it is not a firewall's window tracking.
 */
import { hashWords, randomSeed } from './hash.js';
import { IpProtocol } from '../packet/ipv4.js';
import { EtherType } from '../packet/ethernet.js';
import { formatKeyAddress, KeyWord } from './key.js';

export const Dir = { OUT: 0, IN: 1 } as const;
export type Dir = (typeof Dir)[keyof typeof Dir];

/** 0 means a free slot. TCP states are 1..7 so update() tells TCP apart with one compare. */
export const CtState = {
  SYN_SENT: 1,
  SYN_RECV: 2,
  ESTABLISHED: 3,
  FIN_WAIT: 4,
  CLOSING: 5,
  TIME_WAIT: 6,
  CLOSED: 7,
  UDP_UNREPLIED: 8,
  UDP_REPLIED: 9,
  ICMP: 10,
  OTHER: 11,
} as const;

const STATE_NAMES: string[] = [];
for (const [name, value] of Object.entries(CtState)) STATE_NAMES[value] = name;

export function ctStateName(state: number): string {
  return STATE_NAMES[state] ?? 'NONE';
}

/** Idle timeouts in seconds. */
export interface ConntrackTimeouts {
  tcpEstablished: number;
  /** Half-open (SYN_SENT, SYN_RECV) and closing (FIN_WAIT, CLOSING). */
  tcpTransitory: number;
  tcpTimeWait: number;
  /** After a RST. */
  tcpClosed: number;
  /** UDP once the reply direction has been seen. */
  udp: number;
  /** UDP that has only been seen in its first direction (a scan or a lost reply ties up less). */
  udpUnreplied: number;
  icmp: number;
  other: number;
}

export const DEFAULT_TIMEOUTS: Readonly<ConntrackTimeouts> = Object.freeze({
  tcpEstablished: 7200,
  tcpTransitory: 30,
  tcpTimeWait: 10,
  tcpClosed: 5,
  udp: 60,
  udpUnreplied: 30,
  icmp: 30,
  other: 60,
});

export interface ConntrackOptions {
  /** Total entries across all ports; default 1_048_576. */
  capacity?: number;
  /** Entries one port may hold; default 500_000. */
  maxPerPort?: number;
  /** Port ids are below this; default 4096. */
  maxPorts?: number;
  timeouts?: Partial<ConntrackTimeouts>;
}

export interface ConntrackCounters {
  created: number;
  expired: number;
  refused: number;
  restarted: number;
  live: number;
  /** Entries the table holds at most, across all ports. */
  capacity: number;
}

export interface ConntrackEntry {
  portId: number;
  origin: 'out' | 'in';
  state: string;
  protocol: number;
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
  /** ICMP/ICMPv6 echo identifier, present only for echo connections. */
  echoId?: number;
  idleSeconds: number;
}

/** create() at the table's or the port's bound. */
export const CT_REFUSED = -1;
/** update(): a new connection reuses a dead tuple; the caller removes the entry and starts over. */
export const CT_RESTART = -2;

export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, ACK: 0x10 } as const;

// Record layout (u32 words).
const STRIDE = 6;
/** IPV6 | portId << 8 | IP protocol */
const R_PORT_PROTO = 0;
/** TCP/UDP: local port << 16 | remote port; ICMP echo: ECHO | identifier; else 0 */
const R_L4 = 1;
/** The IPv4 address, or the first word of the IPv6 address (the other three are in the wide slab). */
const R_LOCAL = 2;
const R_REMOTE = 3;
/** The record's key is its words before this one. */
const KEY_END = 4;
/** Live: deciseconds of the last packet. Free: next free slot + 1 (0 ends the list). */
const R_LAST = 4;
/**
 * serial << SERIAL_SHIFT | F_* flags | state. The serial changes each time the
 * slot is freed and wraps after 2^24 reuses of one slot. Whoever caches
 * (slot, serial) (a flow-table entry, a NAT mapping) is swept within seconds
 * of its connection's end, and 2^24 reuses of one slot in that time would take
 * millions of new connections a second, so a wrapped serial never meets a
 * stale holder.
 */
const R_META = 5;
const STATE_MASK = 0x0f;
const SERIAL_SHIFT = 8;
const SERIAL_BITS = ~0xff;

/** Set in R_PORT_PROTO: the addresses are IPv6. Port ids therefore stay below 2^23. */
const IPV6 = 0x80000000;
const MAX_PORTS = 1 << 23;
/** Per slot in the wide slab: words 1-3 of the local IPv6 address, then words 1-3 of the remote one. */
const WIDE_STRIDE = 6;
/** The canonical key of a packet: the record's key words, then its wide words (IPv6 only). */
const CANON_WORDS = KEY_END + WIDE_STRIDE;

/**
 * Words of one connection in exportLive(): port << 8 | protocol, the L4 word,
 * the EtherType, the local and the remote address (4 words each, IPv4 in the
 * first), then these. The layout of the 64-byte records this table had before;
 * snapshots of either read alike.
 */
export const CT_EXPORT_WORDS = 15;
const X_PORT_PROTO = 0;
const X_L4 = 1;
const X_ETHERTYPE = 2;
const X_LOCAL = 3;
const X_REMOTE = 7;
const X_STATE = 11;
const X_FLAGS = 12;
const X_AGE = 13;
const X_AUX = 14;

/** Set in R_L4 for echo so an echo with identifier 0 is not the addresses-only ICMP connection. */
const ECHO = 0x10000;

// Flags in R_META; exportLive() shifts them down by FLAGS_SHIFT.
const FLAGS_SHIFT = 4;
const F_ORIGIN_IN = 0x10;
const F_FIN_ORIGIN = 0x20;
const F_FIN_REPLY = 0x40;
/** The first FIN came from the reply side; the final ACK is expected from that side. */
const F_FIRST_FIN_REPLY = 0x80;
const FLAGS_MASK = 0xf0;

/** Slots a full create() looks at for dead entries before it refuses: bounded work per refused packet. */
const RECLAIM_BUDGET = 64;

const MAX_CAPACITY = 1 << 26;

/** The direction of a connection's first packet, from its R_META word. */
function originOf(meta: number): number {
  return (meta >>> FLAGS_SHIFT) & 1;
}

export class Conntrack {
  readonly capacity: number;
  readonly maxPerPort: number;
  readonly maxPorts: number;
  readonly timeouts: Readonly<ConntrackTimeouts>;
  private readonly rec: Uint32Array;
  /** IPv6 address words beyond the first, WIDE_STRIDE per slot; IPv4 slots leave theirs untouched. */
  private readonly wide: Uint32Array;
  /**
   * One word per slot for the layer that builds on a connection (NAT keeps its
   * mapping there); zero for every free slot, so a connection starts with 0.
   */
  private readonly auxWord: Int32Array;
  private readonly index: Int32Array;
  private readonly mask: number;
  private readonly slotBits: number;
  private readonly slotMask: number;
  private readonly tagShift: number;
  private readonly perPort: Uint32Array;
  /** Idle timeout in deciseconds, by state. */
  private readonly timeoutDs: Uint32Array;
  /** The canonical key of the packet at hand (CANON_WORDS). */
  private readonly s = new Uint32Array(CANON_WORDS);
  /** A record's key while its index entry moves; apart from `s`, which may hold the key being created. */
  private readonly rehashKey = new Uint32Array(CANON_WORDS);
  private readonly seed: number;
  private freeHead = -1;
  /** Slots below this have been handed out at least once. */
  private bump = 0;
  private count = 0;
  private cursor = 0;
  private createdCount = 0;
  private expiredCount = 0;
  private refusedCount = 0;
  private restartedCount = 0;

  constructor(opts: ConntrackOptions = {}) {
    this.capacity = opts.capacity ?? 1_048_576;
    this.maxPerPort = opts.maxPerPort ?? 500_000;
    this.maxPorts = opts.maxPorts ?? 4096;
    if (!Number.isInteger(this.capacity) || this.capacity < 1 || this.capacity > MAX_CAPACITY) {
      throw new RangeError(`capacity must be an integer from 1 to ${MAX_CAPACITY}`);
    }
    if (!Number.isInteger(this.maxPerPort) || this.maxPerPort < 1) throw new RangeError('maxPerPort must be a positive integer');
    if (!Number.isInteger(this.maxPorts) || this.maxPorts < 1 || this.maxPorts > MAX_PORTS) {
      throw new RangeError(`maxPorts must be an integer from 1 to ${MAX_PORTS}`);
    }
    const t: ConntrackTimeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    for (const [name, v] of Object.entries(t)) {
      if (!(v > 0) || v > 400_000_000) throw new RangeError(`timeouts.${name} must be a positive number of seconds`);
    }
    this.timeouts = Object.freeze(t);
    const ds = (sec: number) => Math.round(sec * 10);
    this.timeoutDs = new Uint32Array(16);
    this.timeoutDs[CtState.SYN_SENT] = ds(t.tcpTransitory);
    this.timeoutDs[CtState.SYN_RECV] = ds(t.tcpTransitory);
    this.timeoutDs[CtState.ESTABLISHED] = ds(t.tcpEstablished);
    this.timeoutDs[CtState.FIN_WAIT] = ds(t.tcpTransitory);
    this.timeoutDs[CtState.CLOSING] = ds(t.tcpTransitory);
    this.timeoutDs[CtState.TIME_WAIT] = ds(t.tcpTimeWait);
    this.timeoutDs[CtState.CLOSED] = ds(t.tcpClosed);
    this.timeoutDs[CtState.UDP_UNREPLIED] = ds(t.udpUnreplied);
    this.timeoutDs[CtState.UDP_REPLIED] = ds(t.udp);
    this.timeoutDs[CtState.ICMP] = ds(t.icmp);
    this.timeoutDs[CtState.OTHER] = ds(t.other);

    this.rec = new Uint32Array(this.capacity * STRIDE);
    this.wide = new Uint32Array(this.capacity * WIDE_STRIDE);
    this.auxWord = new Int32Array(this.capacity);
    let bits = 1;
    while (1 << bits < this.capacity) bits++;
    this.slotBits = bits;
    this.slotMask = (1 << bits) - 1;
    // The index has 2^(bits+1) >= 2 * capacity entries: home uses the low bits+1 hash bits,
    // the tag the top 31-bits, so the two never overlap and an entry stays non-negative.
    this.index = new Int32Array(1 << (bits + 1)).fill(-1);
    this.mask = this.index.length - 1;
    this.tagShift = bits + 1;
    this.perPort = new Uint32Array(this.maxPorts);
    // Slots are handed out by a bump pointer before the free list is used, so the pages of a
    // large, young table are never written (and never become resident) until they are needed.
    this.freeHead = -1;
    this.seed = randomSeed();
  }

  get size(): number {
    return this.count;
  }

  /** Bytes of all typed arrays, touched or not (the wide slab is touched only by IPv6 connections). */
  get byteSize(): number {
    return (
      this.rec.byteLength +
      this.wide.byteLength +
      this.auxWord.byteLength +
      this.index.byteLength +
      this.perPort.byteLength +
      this.timeoutDs.byteLength +
      this.s.byteLength +
      this.rehashKey.byteLength
    );
  }

  counters(): ConntrackCounters {
    return {
      created: this.createdCount,
      expired: this.expiredCount,
      refused: this.refusedCount,
      restarted: this.restartedCount,
      live: this.count,
      capacity: this.capacity,
    };
  }

  countForPort(portId: number): number {
    return portId >= 0 && portId < this.maxPorts ? this.perPort[portId] : 0;
  }

  /** The slot of the connection this packet belongs to, or -1. It may be past its timeout: check alive(). */
  lookup(portId: number, key: Uint32Array, dir: 0 | 1): number {
    if (portId >>> 0 >= this.maxPorts) return -1;
    const at = this.find(this.canon(portId, key, dir));
    return at < 0 ? -1 : this.index[at] & this.slotMask;
  }

  /**
   * Creates the connection with this packet as its first (origin) packet. An
   * entry with the same key is replaced (its serial changes). Returns the slot,
   * or CT_REFUSED at the table's or the port's bound; live connections are never evicted.
   */
  create(portId: number, key: Uint32Array, dir: 0 | 1, tcpFlags: number, now: number): number {
    if (portId >>> 0 >= this.maxPorts) throw new RangeError(`port id ${portId} is not below maxPorts ${this.maxPorts}`);
    const h = this.canon(portId, key, dir);
    const nowDs = toDs(now);
    const at = this.find(h);
    if (at >= 0) {
      const old = this.index[at] & this.slotMask;
      if (!this.aliveDs(old, nowDs)) this.expiredCount++;
      this.removeAt(at);
    }
    if ((this.freeHead < 0 && this.bump >= this.capacity) || this.perPort[portId] >= this.maxPerPort) {
      this.sweepDs(nowDs, RECLAIM_BUDGET);
      if ((this.freeHead < 0 && this.bump >= this.capacity) || this.perPort[portId] >= this.maxPerPort) {
        this.refusedCount++;
        return CT_REFUSED;
      }
    }
    const slot = this.place(h, portId);
    const rec = this.rec;
    const r = slot * STRIDE;
    rec[r + R_LAST] = nowDs;
    let flags = dir === Dir.IN ? F_ORIGIN_IN : 0;
    const proto = this.s[R_PORT_PROTO] & 0xff;
    let state: number;
    if (proto === IpProtocol.TCP) {
      if (tcpFlags & TcpFlag.RST) state = CtState.CLOSED;
      else if ((tcpFlags & (TcpFlag.SYN | TcpFlag.ACK)) === TcpFlag.SYN) state = CtState.SYN_SENT;
      else if (tcpFlags & TcpFlag.FIN) {
        state = CtState.FIN_WAIT;
        flags |= F_FIN_ORIGIN;
      } else state = CtState.ESTABLISHED; // picked up mid-stream, e.g. after a restart
    } else if (proto === IpProtocol.UDP) {
      state = CtState.UDP_UNREPLIED;
    } else if (proto === IpProtocol.ICMP || proto === IpProtocol.ICMPv6) {
      state = CtState.ICMP;
    } else {
      state = CtState.OTHER;
    }
    rec[r + R_META] = (rec[r + R_META] & SERIAL_BITS) | flags | state;
    this.createdCount++;
    return slot;
  }

  /**
   * Takes a free slot for the key in this.s (hash h) and indexes it; the
   * caller writes its clock, state and flags (the slot keeps its serial). The
   * table must have room.
   */
  private place(h: number, portId: number): number {
    const rec = this.rec;
    let slot: number;
    if (this.freeHead >= 0) {
      slot = this.freeHead;
      this.freeHead = rec[slot * STRIDE + R_LAST] - 1;
    } else {
      slot = this.bump++;
    }
    const r = slot * STRIDE;
    const s = this.s;
    for (let w = 0; w < KEY_END; w++) rec[r + w] = s[w];
    if ((s[R_PORT_PROTO] & IPV6) !== 0) {
      const x = slot * WIDE_STRIDE;
      for (let w = 0; w < WIDE_STRIDE; w++) this.wide[x + w] = s[KEY_END + w];
    }
    let i = h & this.mask;
    while (this.index[i] !== -1) i = (i + 1) & this.mask;
    this.index[i] = this.tag(h) | slot;
    this.perPort[portId]++;
    this.count++;
    return slot;
  }

  /**
   * Every live connection as CT_EXPORT_WORDS words: the key (port, protocol,
   * ports, EtherType, addresses), state, flags, age in deciseconds and the
   * aux word. What a restarting daemon hands to its successor; the hash seed
   * and slot numbers are this table's own and are not part of it.
   */
  exportLive(now: number): { records: Uint32Array; slots: Int32Array } {
    const nowDs = toDs(now);
    const rec = this.rec;
    const wide = this.wide;
    let live = 0;
    for (let slot = 0; slot < this.bump; slot++) if (this.aliveDs(slot, nowDs)) live++;
    const records = new Uint32Array(live * CT_EXPORT_WORDS);
    const slots = new Int32Array(live);
    let n = 0;
    for (let slot = 0; slot < this.bump && n < live; slot++) {
      if (!this.aliveDs(slot, nowDs)) continue;
      const r = slot * STRIDE;
      const o = n * CT_EXPORT_WORDS;
      const portProto = rec[r + R_PORT_PROTO];
      const v6 = (portProto & IPV6) !== 0;
      records[o + X_PORT_PROTO] = portProto & ~IPV6;
      records[o + X_L4] = rec[r + R_L4];
      records[o + X_ETHERTYPE] = v6 ? EtherType.IPv6 : EtherType.IPv4;
      records[o + X_LOCAL] = rec[r + R_LOCAL];
      records[o + X_REMOTE] = rec[r + R_REMOTE];
      if (v6) {
        const x = slot * WIDE_STRIDE;
        for (let w = 0; w < 3; w++) {
          records[o + X_LOCAL + 1 + w] = wide[x + w];
          records[o + X_REMOTE + 1 + w] = wide[x + 3 + w];
        }
      }
      const meta = rec[r + R_META];
      records[o + X_STATE] = meta & STATE_MASK;
      records[o + X_FLAGS] = (meta & FLAGS_MASK) >>> FLAGS_SHIFT;
      records[o + X_AGE] = nowDs - rec[r + R_LAST];
      records[o + X_AUX] = this.auxWord[slot];
      slots[n++] = slot;
    }
    return { records, slots };
  }

  /**
   * Re-creates exported connections (exportLive of another table, possibly of
   * another process) aged by `downtime` milliseconds more. Returns each
   * record's new slot, or -1 for one left out: its port not accepted, dead by
   * now, a key already present, an IPv4 record with IPv6-sized addresses, or no
   * room (the bounds hold as for create()).
   */
  importLive(records: Uint32Array, now: number, downtimeMs: number, acceptPort: (portId: number) => boolean): Int32Array {
    const count = Math.floor(records.length / CT_EXPORT_WORDS);
    const slots = new Int32Array(count).fill(-1);
    const nowDs = toDs(now);
    const extraDs = Math.max(0, Math.round(downtimeMs / 100));
    const s = this.s;
    for (let n = 0; n < count; n++) {
      const o = n * CT_EXPORT_WORDS;
      const state = records[o + X_STATE];
      const portId = records[o + X_PORT_PROTO] >>> 8;
      if (state === 0 || state > CtState.OTHER || portId >= this.maxPorts || !acceptPort(portId)) continue;
      const age = records[o + X_AGE] + extraDs;
      if (age > this.timeoutDs[state]) continue;
      const v6 = records[o + X_ETHERTYPE] === EtherType.IPv6;
      s[R_PORT_PROTO] = (records[o + X_PORT_PROTO] | (v6 ? IPV6 : 0)) >>> 0;
      s[R_L4] = records[o + X_L4];
      s[R_LOCAL] = records[o + X_LOCAL];
      s[R_REMOTE] = records[o + X_REMOTE];
      let upper = 0;
      for (let w = 0; w < 3; w++) {
        s[KEY_END + w] = records[o + X_LOCAL + 1 + w];
        s[KEY_END + 3 + w] = records[o + X_REMOTE + 1 + w];
        upper |= s[KEY_END + w] | s[KEY_END + 3 + w];
      }
      if (!v6 && upper !== 0) continue;
      const h = this.hashCanon(s);
      if (this.find(h) >= 0) continue;
      if ((this.freeHead < 0 && this.bump >= this.capacity) || this.perPort[portId] >= this.maxPerPort) continue;
      const slot = this.place(h, portId);
      const r = slot * STRIDE;
      // A young process's clock may be younger than the connection: it then counts as new from the start of the clock.
      this.rec[r + R_LAST] = nowDs > age ? nowDs - age : 0;
      const flags = (records[o + X_FLAGS] << FLAGS_SHIFT) & FLAGS_MASK;
      this.rec[r + R_META] = (this.rec[r + R_META] & SERIAL_BITS) | flags | state;
      const aux = records[o + X_AUX] | 0;
      if (aux !== 0) this.auxWord[slot] = aux;
      slots[n] = slot;
    }
    return slots;
  }

  /**
   * Per packet of a known connection: follows TCP flags, refreshes the idle
   * clock, returns the new state, or CT_RESTART when a SYN from the reply side
   * opens a new connection on a dead tuple (the clock is then left alone).
   */
  update(slot: number, dir: 0 | 1, tcpFlags: number, now: number): number {
    const rec = this.rec;
    const r = slot * STRIDE;
    const meta = rec[r + R_META];
    let st = meta & STATE_MASK;
    if (st === 0) return 0;
    if (st <= CtState.CLOSED) {
      st = this.tcp(r, meta, st, dir, tcpFlags);
      if (st < 0) {
        this.restartedCount++;
        return st;
      }
      // Read again: tcp() may have rewritten the flags.
      rec[r + R_META] = (rec[r + R_META] & ~STATE_MASK) | st;
    } else if (st === CtState.UDP_UNREPLIED && dir !== originOf(meta)) {
      st = CtState.UDP_REPLIED;
      rec[r + R_META] = (meta & ~STATE_MASK) | st;
    }
    rec[r + R_LAST] = toDs(now);
    return st;
  }

  private tcp(r: number, meta: number, st: number, dir: number, tcpFlags: number): number {
    if (tcpFlags & TcpFlag.RST) return CtState.CLOSED;
    const fromOrigin = dir === originOf(meta);
    const synOnly = (tcpFlags & (TcpFlag.SYN | TcpFlag.ACK)) === TcpFlag.SYN;
    switch (st) {
      case CtState.TIME_WAIT:
      case CtState.CLOSED:
        if (!synOnly) return st;
        if (!fromOrigin) return CT_RESTART;
        // A reopen forgets the FIN history.
        this.rec[r + R_META] = meta & (SERIAL_BITS | F_ORIGIN_IN | STATE_MASK);
        return CtState.SYN_SENT;
      case CtState.SYN_SENT:
        return !fromOrigin && (tcpFlags & (TcpFlag.SYN | TcpFlag.ACK)) === (TcpFlag.SYN | TcpFlag.ACK) ? CtState.SYN_RECV : st;
      case CtState.SYN_RECV:
        if (!fromOrigin || (tcpFlags & (TcpFlag.SYN | TcpFlag.ACK)) !== TcpFlag.ACK) return st;
        return tcpFlags & TcpFlag.FIN ? this.fin(r, meta, fromOrigin) : CtState.ESTABLISHED;
      case CtState.ESTABLISHED:
      case CtState.FIN_WAIT:
        return tcpFlags & TcpFlag.FIN ? this.fin(r, meta, fromOrigin) : st;
      default: {
        // CLOSING: both FINs seen; the ACK of the second comes from the side that sent the first.
        const firstFinFromOrigin = (meta & F_FIRST_FIN_REPLY) === 0;
        return tcpFlags & TcpFlag.ACK && fromOrigin === firstFinFromOrigin ? CtState.TIME_WAIT : st;
      }
    }
  }

  private fin(r: number, meta: number, fromOrigin: boolean): number {
    if ((meta & (F_FIN_ORIGIN | F_FIN_REPLY)) === 0 && !fromOrigin) meta |= F_FIRST_FIN_REPLY;
    meta |= fromOrigin ? F_FIN_ORIGIN : F_FIN_REPLY;
    this.rec[r + R_META] = meta;
    return (meta & (F_FIN_ORIGIN | F_FIN_REPLY)) === (F_FIN_ORIGIN | F_FIN_REPLY) ? CtState.CLOSING : CtState.FIN_WAIT;
  }

  /** Changes every time the slot is freed, so a holder of (slot, serial) can tell that its connection is gone. */
  serial(slot: number): number {
    return this.rec[slot * STRIDE + R_META] >>> SERIAL_SHIFT;
  }

  /** Is the slot live and not past its idle timeout at `now`? */
  alive(slot: number, now: number): boolean {
    return this.aliveDs(slot, toDs(now));
  }

  private aliveDs(slot: number, nowDs: number): boolean {
    const r = slot * STRIDE;
    const st = this.rec[r + R_META] & STATE_MASK;
    return st !== 0 && nowDs - this.rec[r + R_LAST] <= this.timeoutDs[st];
  }

  /** Seconds since the connection's last packet (listings). */
  idleSeconds(slot: number, now: number): number {
    return Math.max(0, toDs(now) - this.rec[slot * STRIDE + R_LAST]) / 10;
  }

  /** The word a higher layer attached to the connection; 0 until set. */
  aux(slot: number): number {
    return this.auxWord[slot];
  }

  setAux(slot: number, value: number): void {
    this.auxWord[slot] = value;
  }

  /** Direction of the first packet, relative to the port. */
  origin(slot: number): 0 | 1 {
    return originOf(this.rec[slot * STRIDE + R_META]) as 0 | 1;
  }

  state(slot: number): number {
    return this.rec[slot * STRIDE + R_META] & STATE_MASK;
  }

  portOf(slot: number): number {
    return (this.rec[slot * STRIDE + R_PORT_PROTO] & ~IPV6) >>> 8;
  }

  remove(slot: number): void {
    if (slot < 0 || slot >= this.capacity || this.state(slot) === 0) return;
    this.removeAt(this.positionOf(slot));
  }

  /** Expires idle connections, visiting at most `budget` slots and resuming where the last call stopped. */
  sweep(now: number, budget: number): number {
    return this.sweepDs(toDs(now), budget);
  }

  private sweepDs(nowDs: number, budget: number): number {
    const rec = this.rec;
    // Only slots the bump pointer has handed out can be live.
    const end = this.bump;
    const n = Math.min(budget, end);
    let expired = 0;
    let slot = this.cursor < end ? this.cursor : 0;
    for (let k = 0; k < n; k++) {
      const r = slot * STRIDE;
      const st = rec[r + R_META] & STATE_MASK;
      if (st !== 0 && nowDs - rec[r + R_LAST] > this.timeoutDs[st]) {
        this.removeAt(this.positionOf(slot));
        expired++;
      }
      if (++slot >= end) slot = 0;
    }
    this.cursor = slot;
    this.expiredCount += expired;
    return expired;
  }

  /** Forgets every connection of a port (the port was removed). */
  flushPort(portId: number): number {
    if (portId >>> 0 >= this.maxPorts) return 0;
    let removed = 0;
    for (let slot = 0; slot < this.bump && this.perPort[portId] > 0; slot++) {
      if (this.state(slot) !== 0 && this.portOf(slot) === portId) {
        this.removeAt(this.positionOf(slot));
        removed++;
      }
    }
    return removed;
  }

  /** A listing for operators and tests; allocates, so never on the data path. */
  entries(portId?: number, now: number = performance.now()): ConntrackEntry[] {
    const out: ConntrackEntry[] = [];
    const nowDs = toDs(now);
    const rec = this.rec;
    const address = new Uint32Array(4);
    const addr = (first: number, wideAt: number, v6: boolean): string => {
      address[0] = first;
      for (let w = 0; w < 3; w++) address[1 + w] = v6 ? this.wide[wideAt + w] : 0;
      return formatKeyAddress(address, 0, v6);
    };
    for (let slot = 0; slot < this.bump; slot++) {
      const r = slot * STRIDE;
      const meta = rec[r + R_META];
      const st = meta & STATE_MASK;
      if (st === 0) continue;
      const port = this.portOf(slot);
      if (portId !== undefined && port !== portId) continue;
      const protocol = rec[r + R_PORT_PROTO] & 0xff;
      const l4 = rec[r + R_L4];
      const v6 = (rec[r + R_PORT_PROTO] & IPV6) !== 0;
      const ports = protocol === IpProtocol.TCP || protocol === IpProtocol.UDP;
      const x = slot * WIDE_STRIDE;
      const e: ConntrackEntry = {
        portId: port,
        origin: originOf(meta) === Dir.IN ? 'in' : 'out',
        state: ctStateName(st),
        protocol,
        local: addr(rec[r + R_LOCAL], x, v6),
        remote: addr(rec[r + R_REMOTE], x + 3, v6),
        localPort: ports ? l4 >>> 16 : 0,
        remotePort: ports ? l4 & 0xffff : 0,
        idleSeconds: Math.max(0, nowDs - rec[r + R_LAST]) / 10,
      };
      if (!ports && l4 & ECHO) e.echoId = l4 & 0xffff;
      out.push(e);
    }
    return out;
  }

  /** Fills this.s with the canonical key of a packet at `portId` going `dir`; returns its hash. */
  private canon(portId: number, key: Uint32Array, dir: number): number {
    const s = this.s;
    const protoWord = key[KeyWord.PROTO];
    const proto = protoWord >>> 24;
    const v6 = key[KeyWord.ETH_VLAN] >>> 16 === EtherType.IPv6;
    s[R_PORT_PROTO] = ((v6 ? IPV6 : 0) | (portId << 8) | proto) >>> 0;
    let l4 = 0;
    if (proto === IpProtocol.TCP || proto === IpProtocol.UDP) {
      const p = key[KeyWord.PORTS];
      l4 = dir === Dir.OUT ? p : ((p << 16) | (p >>> 16)) >>> 0;
    } else if (proto === IpProtocol.ICMP || proto === IpProtocol.ICMPv6) {
      // The type decides whether this is echo; it is not part of the key, so request and reply pair.
      const type = (protoWord >>> 16) & 0xff;
      const echo = proto === IpProtocol.ICMP ? type === 8 || type === 0 : type === 128 || type === 129;
      if (echo) l4 = ECHO | (protoWord & 0xffff);
    }
    s[R_L4] = l4;
    const local = dir === Dir.OUT ? KeyWord.SRC_IP : KeyWord.DST_IP;
    const remote = dir === Dir.OUT ? KeyWord.DST_IP : KeyWord.SRC_IP;
    s[R_LOCAL] = key[local];
    s[R_REMOTE] = key[remote];
    if (!v6) return hashWords(s, 0, KEY_END, this.seed);
    s[KEY_END] = key[local + 1];
    s[KEY_END + 1] = key[local + 2];
    s[KEY_END + 2] = key[local + 3];
    s[KEY_END + 3] = key[remote + 1];
    s[KEY_END + 4] = key[remote + 2];
    s[KEY_END + 5] = key[remote + 3];
    return hashWords(s, 0, CANON_WORDS, this.seed);
  }

  /** The hash of a canonical key laid out as this.s. */
  private hashCanon(k: Uint32Array): number {
    return hashWords(k, 0, (k[R_PORT_PROTO] & IPV6) !== 0 ? CANON_WORDS : KEY_END, this.seed);
  }

  /** The hash of a live slot's key, which the record does not keep: an index entry moves rarely. */
  private slotHash(slot: number): number {
    const rec = this.rec;
    const r = slot * STRIDE;
    if ((rec[r + R_PORT_PROTO] & IPV6) === 0) return hashWords(rec, r, r + KEY_END, this.seed);
    const k = this.rehashKey;
    for (let w = 0; w < KEY_END; w++) k[w] = rec[r + w];
    const x = slot * WIDE_STRIDE;
    for (let w = 0; w < WIDE_STRIDE; w++) k[KEY_END + w] = this.wide[x + w];
    return hashWords(k, 0, CANON_WORDS, this.seed);
  }

  private tag(h: number): number {
    return (h >>> this.tagShift) << this.slotBits;
  }

  /** Index position of the key in this.s (hash h), or -1. */
  private find(h: number): number {
    const index = this.index;
    const rec = this.rec;
    const s = this.s;
    const tag = this.tag(h);
    const tagMask = ~this.slotMask;
    const v6 = (s[R_PORT_PROTO] & IPV6) !== 0;
    let i = h & this.mask;
    for (;;) {
      const e = index[i];
      if (e === -1) return -1;
      if ((e & tagMask) === tag) {
        const slot = e & this.slotMask;
        const r = slot * STRIDE;
        if (rec[r] === s[0] && rec[r + 1] === s[1] && rec[r + 2] === s[2] && rec[r + 3] === s[3] && (!v6 || this.wideEquals(slot))) return i;
      }
      i = (i + 1) & this.mask;
    }
  }

  private wideEquals(slot: number): boolean {
    const wide = this.wide;
    const s = this.s;
    const x = slot * WIDE_STRIDE;
    for (let w = 0; w < WIDE_STRIDE; w++) if (wide[x + w] !== s[KEY_END + w]) return false;
    return true;
  }

  private positionOf(slot: number): number {
    let i = this.slotHash(slot) & this.mask;
    while ((this.index[i] & this.slotMask) !== slot || this.index[i] === -1) i = (i + 1) & this.mask;
    return i;
  }

  /** Frees the slot at index position `hole` and closes the gap by shifting later chain members back. */
  private removeAt(hole: number): void {
    const index = this.index;
    const rec = this.rec;
    const slot = index[hole] & this.slotMask;
    const r = slot * STRIDE;
    this.perPort[this.portOf(slot)]--;
    // State 0 (free), flags cleared, serial + 1 (wrapping at 2^24).
    rec[r + R_META] = ((rec[r + R_META] >>> SERIAL_SHIFT) + 1) << SERIAL_SHIFT;
    rec[r + R_LAST] = this.freeHead + 1;
    this.freeHead = slot;
    if (this.auxWord[slot] !== 0) this.auxWord[slot] = 0;
    this.count--;

    index[hole] = -1;
    let i = (hole + 1) & this.mask;
    for (;;) {
      const e = index[i];
      if (e === -1) break;
      const home = this.slotHash(e & this.slotMask) & this.mask;
      // Move entry i into the hole unless its home lies in (hole, i] cyclically.
      const between = hole <= i ? home > hole && home <= i : home > hole || home <= i;
      if (!between) {
        index[hole] = e;
        index[i] = -1;
        hole = i;
      }
      i = (i + 1) & this.mask;
    }
  }
}

function toDs(nowMs: number): number {
  return (nowMs / 100) >>> 0;
}
