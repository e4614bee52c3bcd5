/**
 * The capture recorder of one data-plane thread: the switch hands it frames
 * at three points no kernel tcpdump can see (a frame entering at a port after
 * header validation, a frame queued to a port after policy and rewrites,
 * before any encapsulation, and a frame dropped, with its reason), and it
 * copies them into one preallocated buffer that the worker drains between
 * batches (src/switch/capture-sessions.ts) and posts to the control plane,
 * which writes pcap or pcapng (src/capture/).
 *
 * Idle, it costs the switch one boolean per frame (`active`). Capturing, a
 * frame costs a lookup and a copy; nothing allocates: the copy runs word by
 * word in JavaScript, because every native way to copy a range between two
 * typed arrays (`set(subarray)`, `Buffer.copy`) makes a view per call.
 * Measured here: about 25 ns for a 64-byte frame, 0.25 us for 1500 bytes,
 * 9 us for a 64 KiB super-frame (7 GB/s). Copying into one buffer that is
 * drained on the same thread needs no ring and no locking: `record` appends,
 * `drain` takes everything and starts over, and what does not fit in between
 * is counted as lost, per session.
 *
 * Several sessions (at most CAPTURE_SESSIONS) may capture at once: each has a
 * slot, and every record carries the bits of the slots that wanted it, so the
 * control plane hands each session its own frames without asking again.
 */

export const CapturePoint = { INGRESS: 1, EGRESS: 2, DROP: 4 } as const;
export type CapturePointName = 'ingress' | 'egress' | 'drop';
export const CAPTURE_POINT_NAMES: readonly CapturePointName[] = ['ingress', 'egress', 'drop'];
export const ALL_CAPTURE_POINTS = CapturePoint.INGRESS | CapturePoint.EGRESS | CapturePoint.DROP;

/** Sessions at once: each is a bit of a byte in the records' session field. */
export const CAPTURE_SESSIONS = 8;
/** pcap's customary snapshot length: a whole TSO super-frame is 64 KiB. */
export const DEFAULT_SNAPLEN = 65_535;
/**
 * Between two drains (at most 50 ms apart, and at the end of a batch once
 * half full): 4 MiB holds 2,700 full-size frames, or 64 super-frames, which
 * a 64-frame batch of TSO traffic can fill on its own.
 */
export const CAPTURE_BUFFER_BYTES = 4 << 20;

/**
 * A record, 8-byte aligned: f64 wall-clock time in ms; u32 captured length,
 * original length, port id, and point | reason << 8 | sessions << 16; then
 * the captured bytes, padded to 8.
 */
export const RECORD_HEADER_BYTES = 24;
const W_CAPTURED = 2;
const W_ORIGINAL = 3;
const W_PORT = 4;
const W_INFO = 5;

export function captureRecordBytes(capturedLength: number): number {
  return RECORD_HEADER_BYTES + ((capturedLength + 7) & ~7);
}

/** Which of the points a mask names, in order (ingress, egress, drop). */
export function capturePointNames(points: number): CapturePointName[] {
  return CAPTURE_POINT_NAMES.filter((_, i) => (points & (1 << i)) !== 0);
}

/** What one drain took: the records, and the frames each session slot lost since the last drain. */
export interface CaptureDrain {
  records: ArrayBuffer;
  lost: number[];
}

export class CaptureRecorder {
  /** Per port id: the bits of CapturePoint being captured there (0: not captured). Sized maxPorts. The switch reads it only when `active` is true. */
  readonly mask: Uint8Array;
  /** True while any capture session is running; the switch checks this one boolean per frame/drop and nothing else when idle. */
  active = false;
  /** Bytes kept of each frame: the largest any running session asked for. */
  snaplen = DEFAULT_SNAPLEN;

  /** Per (port, point): the session slots capturing there, indexed (portId << 2) | (point >> 1). */
  private readonly sessionsAt: Uint8Array;
  private readonly bytes = new Uint8Array(CAPTURE_BUFFER_BYTES);
  private readonly words = new Int32Array(this.bytes.buffer);
  private readonly u32 = new Uint32Array(this.bytes.buffer);
  private readonly f64 = new Float64Array(this.bytes.buffer);
  private used = 0;
  private readonly lost = new Float64Array(CAPTURE_SESSIONS);
  private readonly snaplens = new Int32Array(CAPTURE_SESSIONS);
  private slotsInUse = 0;
  /** Added to the switch clock to make wall-clock time; taken when capturing starts. */
  private wallOffsetMs = 0;
  /** The source buffer as 32-bit words, made once per buffer (the switch always passes the same one). */
  private source: Uint8Array | null = null;
  private sourceWords: Int32Array<ArrayBufferLike> = new Int32Array(0);

  constructor(readonly maxPorts: number) {
    this.mask = new Uint8Array(maxPorts);
    this.sessionsAt = new Uint8Array(maxPorts * 4);
  }

  /** Copies the frame bytes buf[off, off+len) (no vnet header), truncated to the snaplen, with the point, port id, drop reason (0 unless DROP) and the switch clock's `now` (ms). */
  record(point: number, portId: number, reason: number, buf: Uint8Array, off: number, len: number, now: number): void {
    const sessions = this.sessionsAt[(portId << 2) | (point >> 1)] | 0;
    if (sessions === 0) return;
    const captured = len < this.snaplen ? len : this.snaplen;
    const at = this.used;
    const next = at + RECORD_HEADER_BYTES + ((captured + 7) & ~7);
    if (next > CAPTURE_BUFFER_BYTES) {
      this.countLost(sessions);
      return;
    }
    this.f64[at >> 3] = now + this.wallOffsetMs;
    const w = at >> 2;
    const u32 = this.u32;
    u32[w + W_CAPTURED] = captured;
    u32[w + W_ORIGINAL] = len;
    u32[w + W_PORT] = portId;
    u32[w + W_INFO] = point | (reason << 8) | (sessions << 16);
    this.copy(buf, off, at + RECORD_HEADER_BYTES, captured);
    this.used = next;
  }

  /** Bytes waiting to be drained. */
  get pending(): number {
    return this.used;
  }

  /** Takes the records so far (a copy, to be transferred) and the losses since the last drain; null when there is nothing to report. */
  drain(): CaptureDrain | null {
    let anyLost = false;
    for (let s = 0; s < CAPTURE_SESSIONS; s++) if (this.lost[s] > 0) anyLost = true;
    if (this.used === 0 && !anyLost) return null;
    const records = this.bytes.buffer.slice(0, this.used);
    const lost = Array.from(this.lost);
    this.lost.fill(0);
    this.used = 0;
    return { records, lost };
  }

  /** Takes a free session slot for a session keeping `snaplen` bytes per frame, or returns -1 when all are taken. `now` is the switch clock. */
  openSlot(snaplen: number, now: number): number {
    for (let s = 0; s < CAPTURE_SESSIONS; s++) {
      if ((this.slotsInUse & (1 << s)) !== 0) continue;
      if (this.slotsInUse === 0) {
        // A new base per start: the two clocks drift apart over days, and only a live session's timestamps need to agree.
        this.wallOffsetMs = Date.now() - now;
        this.used = 0;
      }
      this.slotsInUse |= 1 << s;
      this.active = true;
      this.snaplens[s] = snaplen;
      this.lost[s] = 0;
      this.updateSnaplen();
      return s;
    }
    return -1;
  }

  /** The slot captures `points` (CapturePoint bits; 0: nothing) at the port. */
  setPort(slot: number, portId: number, points: number): void {
    if (portId < 0 || portId >= this.maxPorts) return;
    const bit = 1 << slot;
    let mask = 0;
    for (let i = 0; i < 3; i++) {
      const at = (portId << 2) | i;
      if ((points & (1 << i)) !== 0) this.sessionsAt[at] |= bit;
      else this.sessionsAt[at] &= ~bit;
      if (this.sessionsAt[at] !== 0) mask |= 1 << i;
    }
    this.mask[portId] = mask;
    this.active = this.slotsInUse !== 0;
  }

  /** Frees the slot: none of its ports are captured for it any more. Drain first: records already taken carry its bit. */
  closeSlot(slot: number): void {
    const bit = 1 << slot;
    if ((this.slotsInUse & bit) === 0) return;
    for (let portId = 0; portId < this.maxPorts; portId++) {
      if ((this.sessionsAt[portId << 2] | this.sessionsAt[(portId << 2) | 1] | this.sessionsAt[(portId << 2) | 2]) & bit) this.setPort(slot, portId, 0);
    }
    this.slotsInUse &= ~bit;
    this.snaplens[slot] = 0;
    this.active = this.slotsInUse !== 0;
    this.updateSnaplen();
  }

  private updateSnaplen(): void {
    let max = 0;
    for (let s = 0; s < CAPTURE_SESSIONS; s++) if (this.snaplens[s] > max) max = this.snaplens[s];
    this.snaplen = max > 0 ? max : DEFAULT_SNAPLEN;
  }

  private countLost(sessions: number): void {
    for (let s = 0; s < CAPTURE_SESSIONS; s++) if ((sessions & (1 << s)) !== 0) this.lost[s]++;
  }

  /** bytes[to, to+n) = src[from, from+n); `to` is 8-aligned. */
  private copy(src: Uint8Array, from: number, to: number, n: number): void {
    const dst = this.bytes;
    const start = src.byteOffset + from;
    if ((start & 3) !== 0) {
      for (let i = 0; i < n; i++) dst[to + i] = src[from + i];
      return;
    }
    if (src !== this.source) {
      this.source = src;
      this.sourceWords = new Int32Array(src.buffer, 0, src.buffer.byteLength >> 2);
    }
    const words = this.sourceWords;
    const out = this.words;
    const count = n >> 2;
    const s = start >> 2;
    const d = to >> 2;
    for (let i = 0; i < count; i++) out[d + i] = words[s + i];
    for (let i = count << 2; i < n; i++) dst[to + i] = src[from + i];
  }
}

/** One record of a drained buffer, as CaptureRecords.next() leaves it. */
export interface CaptureRecord {
  /** Wall-clock time, ms since the epoch, with fractions. */
  timeMs: number;
  portId: number;
  /** One CapturePoint bit. */
  point: number;
  /** A DropReason code for DROP, else 0. */
  reason: number;
  /** The session slots the record is for. */
  sessions: number;
  /** Bytes of the frame in the record (at most the snaplen), and as long as it was. */
  capturedLength: number;
  originalLength: number;
  /** Where its bytes start in the drained buffer. */
  dataOffset: number;
}

/** Walks the records of a drained buffer (control plane). */
export class CaptureRecords {
  readonly bytes: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private at = 0;
  readonly current: CaptureRecord = { timeMs: 0, portId: 0, point: 0, reason: 0, sessions: 0, capturedLength: 0, originalLength: 0, dataOffset: 0 };

  constructor(records: ArrayBuffer) {
    this.bytes = new Uint8Array(records);
    this.u32 = new Uint32Array(records, 0, records.byteLength >> 2);
    this.f64 = new Float64Array(records, 0, records.byteLength >> 3);
  }

  /** Moves to the next record (in `current`); false at the end. */
  next(): boolean {
    const at = this.at;
    if (at + RECORD_HEADER_BYTES > this.bytes.length) return false;
    const w = at >> 2;
    const r = this.current;
    const info = this.u32[w + W_INFO];
    r.timeMs = this.f64[at >> 3];
    r.capturedLength = this.u32[w + W_CAPTURED];
    r.originalLength = this.u32[w + W_ORIGINAL];
    r.portId = this.u32[w + W_PORT];
    r.point = info & 0xff;
    r.reason = (info >>> 8) & 0xff;
    r.sessions = info >>> 16;
    r.dataOffset = at + RECORD_HEADER_BYTES;
    this.at = at + captureRecordBytes(r.capturedLength);
    return true;
  }

  /** The current record's bytes (a view). */
  data(): Uint8Array {
    const r = this.current;
    return this.bytes.subarray(r.dataOffset, r.dataOffset + r.capturedLength);
  }
}
