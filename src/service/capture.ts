/**
 * `vsw capture` on the daemon's side: a session on the data plane
 * (src/switch/capture-sessions.ts) for an endpoint or a whole network,
 * streamed to the client of POST /v1/captures (capture-routes.ts) as a pcap or
 * pcapng file (src/capture/) until it ends: after `count` frames, when the
 * client goes away (Ctrl-C), when the endpoint or network goes, or when the
 * daemon stops. How it ended travels in HTTP trailers (CAPTURE_TRAILERS),
 * since the body is the file itself.
 *
 * Up to CAPTURE_SESSIONS captures run at once (a further one is refused with
 * 409); each gets its own frames, at its own points, even on shared ports.
 * A client that reads more slowly than frames come loses the frames that
 * would queue past MAX_BUFFERED_BYTES, and is told how many.
 */
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { createCaptureWriter, type CaptureFormat, type CaptureWriter, type InterfaceDescription } from '../capture/index.js';
import { DROP_REASON_NAMES } from '../packet/drop-reasons.js';
import { CAPTURE_POINT_NAMES, CAPTURE_SESSIONS, CapturePoint, CaptureRecords, DEFAULT_SNAPLEN, capturePointNames } from '../switch/capture.js';
import type { CaptureEndReason, CaptureStart, CaptureTarget, DataPlane } from '../switch/dataplane.js';
import { CAPTURE_HEADERS, CAPTURE_TRAILERS, type CaptureEnd } from './capture-api.js';
import type { StartCaptureRequest } from './capture-routes.js';
import { conflict, notFound } from './errors.js';
import type { State } from './state.js';
import { packageVersion } from './version.js';

/** The part of DataPlane captures drive. */
export type CaptureDataPlane = Pick<DataPlane, 'startCapture' | 'stopCapture' | 'on'>;

/** Frames queued for a slow client beyond this are dropped and counted as lost. */
const MAX_BUFFERED_BYTES = 16 << 20;

const CONTENT_TYPES: Record<CaptureFormat, string> = { pcap: 'application/vnd.tcpdump.pcap', pcapng: 'application/x-pcapng' };

interface ResolvedTarget {
  target: CaptureTarget;
  /** "endpoint web1" or "network blue". */
  label: string;
}

/** One running capture: its slot on the data plane, its writer, and the response it streams into. */
class CaptureSession {
  frames = 0;
  lost = 0;
  /** How it ended, once it has. */
  private endedAs: { end: CaptureEnd; message: string | null } | null = null;
  private out: ServerResponse | null = null;
  private readonly early: Buffer[] = [];
  private readonly batch: Buffer[] = [];

  constructor(
    readonly slot: number,
    readonly resolved: ResolvedTarget,
    readonly points: number,
    readonly count: number,
    readonly writer: CaptureWriter,
  ) {
    this.early.push(writer.start());
  }

  attach(out: ServerResponse, onClose: () => void): void {
    this.out = out;
    out.writeHead(200, {
      'content-type': CONTENT_TYPES[this.writer.format],
      'cache-control': 'no-store',
      [CAPTURE_HEADERS.target]: this.resolved.label,
      [CAPTURE_HEADERS.points]: capturePointNames(this.points).join(','),
      trailer: Object.values(CAPTURE_TRAILERS).join(', '),
    });
    out.on('close', onClose);
    out.write(Buffer.concat(this.early.splice(0)));
    // Ended before there was a response to end (its endpoint went as it started): the client still gets a file and why.
    if (this.endedAs !== null) this.endResponse();
  }

  get ended(): boolean {
    return this.endedAs !== null;
  }

  /** Adds one record's frame; false once the session wants no more. */
  take(records: CaptureRecords, describePoint: (point: number, reason: number) => string): boolean {
    if (this.frames >= this.count) return false;
    if (this.out !== null && this.out.writableLength > MAX_BUFFERED_BYTES) {
      this.lost++;
      return true;
    }
    const r = records.current;
    this.batch.push(
      this.writer.frame({
        timeMs: r.timeMs,
        interfaceKey: r.portId,
        data: records.data(),
        originalLength: r.originalLength,
        comment: describePoint(r.point, r.reason),
        direction: r.point === CapturePoint.INGRESS ? 'inbound' : r.point === CapturePoint.EGRESS ? 'outbound' : undefined,
      }),
    );
    this.frames++;
    return this.frames < this.count;
  }

  /** Writes what take() gathered, in one write. */
  flush(): void {
    if (this.batch.length === 0) return;
    const chunk = Buffer.concat(this.batch.splice(0));
    if (this.out === null) this.early.push(chunk);
    else if (!this.out.destroyed) this.out.write(chunk);
  }

  finish(end: CaptureEnd, message: string | null): void {
    this.endedAs = { end, message };
    this.endResponse();
  }

  /** Ends the response with the trailers (nothing to end when the client is gone, or before attach). */
  private endResponse(): void {
    const out = this.out;
    const how = this.endedAs!;
    if (out === null || out.destroyed || out.writableEnded) return;
    out.addTrailers({
      [CAPTURE_TRAILERS.frames]: String(this.frames),
      [CAPTURE_TRAILERS.lost]: String(this.lost),
      [CAPTURE_TRAILERS.end]: how.end,
      ...(how.message === null ? {} : { [CAPTURE_TRAILERS.message]: how.message }),
    });
    out.end();
  }
}

export class CaptureService {
  /** Running sessions by data-plane slot, and how many are being started. */
  private readonly sessions = new Map<number, CaptureSession>();
  private starting = 0;
  /** pcapng's shb_userappl. */
  private readonly application = `vsw ${packageVersion()}`;

  private listening = false;

  constructor(
    private readonly state: State,
    private readonly dataPlane: CaptureDataPlane,
    private readonly logger: Logger,
  ) {}

  /**
   * Starts recording on the data plane; the session's stream begins with
   * attach(). Refusals (unknown target, an endpoint that is down, every slot
   * taken) are thrown as the API's 4xx errors before anything is recorded.
   */
  async start(req: StartCaptureRequest): Promise<CaptureSession> {
    const resolved = this.resolve(req.target);
    this.listen();
    const full = `${CAPTURE_SESSIONS} captures are running already, the most at once: end one (Ctrl-C its vsw capture) and try again.`;
    if (this.sessions.size + this.starting >= CAPTURE_SESSIONS) throw conflict(full);
    const points = (req.points ?? ['ingress', 'egress']).reduce((bits, name) => bits | (1 << CAPTURE_POINT_NAMES.indexOf(name)), 0);
    const snaplen = req.snaplen ?? DEFAULT_SNAPLEN;
    const format = req.format ?? 'pcap';
    const count = req.count ?? Number.POSITIVE_INFINITY;
    this.starting++;
    let started: CaptureStart;
    try {
      started = await this.dataPlane.startCapture(resolved.target, points, snaplen);
    } finally {
      this.starting--;
    }
    // The data plane's refusals come when the state changed under the request: a port just removed, a slot not yet freed.
    if ('refused' in started) {
      throw conflict(started.refused === 'full' ? full : `${resolved.label} left the switch as the capture started (removed, or down): check it with \`vsw endpoint ls\` and try again.`);
    }
    const slot = started.slot;
    const writer = createCaptureWriter(format, { snaplen, describeInterface: (portId) => this.describePort(portId), application: this.application });
    const session = new CaptureSession(slot, resolved, points, count, writer);
    this.sessions.set(slot, session);
    this.logger.info({ slot, target: resolved.label, points: capturePointNames(points), format, count: req.count, snaplen }, 'capture started');
    return session;
  }

  /** Streams the session into `out` until it ends; a client that goes away ends it. */
  attach(session: CaptureSession, out: ServerResponse): void {
    session.attach(out, () => {
      if (!session.ended) void this.end(session, 'client', null);
    });
  }

  /** Hears the data plane from the first capture on; a service that never captures never asks it. */
  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    this.dataPlane.on('captureRecords', (records: ArrayBuffer, lost: number[]) => this.deliver(records, lost));
    this.dataPlane.on('captureEnd', (slot: number, reason: CaptureEndReason) => this.endedByDataPlane(slot, reason));
  }

  /** Ends every session: the daemon is stopping. */
  async stopAll(): Promise<void> {
    await Promise.all([...this.sessions.values()].map((s) => this.end(s, 'daemon', 'the daemon is stopping.')));
  }

  private resolve(target: string): ResolvedTarget {
    const endpoint = this.state.findEndpoint(target);
    if (endpoint) {
      const name = endpoint.endpoint.name;
      if (endpoint.down !== null) {
        throw conflict(`endpoint ${name} is down (${endpoint.down.replace(/\.$/, '')}): capture it once it is up again (vsw endpoint inspect ${name} shows its state).`);
      }
      return { target: { portId: endpoint.endpoint.portId }, label: `endpoint ${name}` };
    }
    const network = this.state.networks.get(target);
    if (network) return { target: { networkId: network.network.id }, label: `network ${network.network.name}` };
    throw notFound(`no endpoint or network named ${target}: list them with \`vsw endpoint ls\` and \`vsw network ls\`.`);
  }

  /** The pcapng interface of a port: an endpoint, a nat network's host TAP, or an overlay's tunnel port. */
  private describePort(portId: number): InterfaceDescription {
    for (const { endpoint } of this.state.endpoints.values()) {
      if (endpoint.portId === portId) {
        const where = endpoint.vhostUser === undefined ? `${endpoint.ifname} in ${endpoint.netns}` : `a VM's NIC on vhost-user socket ${endpoint.vhostUser.socket}`;
        return { name: endpoint.name, description: `endpoint ${endpoint.id} on network ${endpoint.network}: ${where}` };
      }
    }
    for (const { network, nat, overlay } of this.state.networks.values()) {
      if (nat?.portId === portId) return { name: nat.info.hostInterface, description: `host interface of nat network ${network.name}` };
      if (overlay?.tunnelPortId === portId) {
        return { name: `vxlan${overlay.info.vni}`, description: `tunnel port of overlay network ${network.name}: inner frames, before encapsulation and after decapsulation` };
      }
    }
    return { name: `port${portId}` };
  }

  private deliver(records: ArrayBuffer, lost: number[]): void {
    for (const [slot, session] of this.sessions) session.lost += lost[slot] ?? 0;
    const reader = new CaptureRecords(records);
    const full: CaptureSession[] = [];
    while (reader.next()) {
      const sessions = reader.current.sessions;
      for (let slot = 0; slot < CAPTURE_SESSIONS; slot++) {
        if ((sessions & (1 << slot)) === 0) continue;
        const session = this.sessions.get(slot);
        if (session !== undefined && !session.ended && !session.take(reader, describePoint) && !full.includes(session)) full.push(session);
      }
    }
    for (const session of this.sessions.values()) session.flush();
    for (const session of full) void this.end(session, 'count', null);
  }

  private endedByDataPlane(slot: number, reason: CaptureEndReason): void {
    const session = this.sessions.get(slot);
    if (!session) return;
    let message: string;
    if (reason === 'portRemoved') {
      // A port leaves the switch when its endpoint is removed, or goes down (then the record says why first).
      const portId = 'portId' in session.resolved.target ? session.resolved.target.portId : -1;
      const record = [...this.state.endpoints.values()].find((r) => r.endpoint.portId === portId);
      message = record && record.down !== null ? `${session.resolved.label} went down (${record.down.replace(/\.$/, '')}).` : `${session.resolved.label} was removed.`;
    } else {
      message = `${session.resolved.label} was removed.`;
    }
    this.sessions.delete(slot);
    this.close(session, 'target', message);
  }

  private async end(session: CaptureSession, end: CaptureEnd, message: string | null): Promise<void> {
    if (session.ended) return;
    this.sessions.delete(session.slot);
    // Unmapped first: records still on their way for this slot belong to no one now.
    this.close(session, end, message);
    await this.dataPlane.stopCapture(session.slot).catch((err: unknown) => this.logger.warn({ err, slot: session.slot }, 'the data plane could not stop a capture'));
  }

  private close(session: CaptureSession, end: CaptureEnd, message: string | null): void {
    session.finish(end, message);
    this.logger.info({ slot: session.slot, target: session.resolved.label, frames: session.frames, lost: session.lost, end, ...(message === null ? {} : { reason: message }) }, 'capture ended');
  }
}

function describePoint(point: number, reason: number): string {
  if (point !== CapturePoint.DROP) return point === CapturePoint.INGRESS ? 'ingress' : 'egress';
  return `drop: ${DROP_REASON_NAMES[reason] ?? `reason ${reason}`}`;
}
