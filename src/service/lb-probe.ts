/**
 * Health probes of load balancer backends: a TCP connect, or an HTTP GET
 * whose status must be 2xx or 3xx, every interval, each with a timeout. A
 * backend goes down after `unhealthyThreshold` failures in a row and comes
 * back after `healthyThreshold` successes; until its first verdict it counts
 * as up (a balancer created before its servers listen is not empty for the
 * first interval, and the threshold takes it out soon after if they never do).
 *
 * A probe connects from inside the backend's own network namespace to its
 * address (a socket keeps the namespace it was made in: tcpSocketIn), as a
 * container health check does: it tests the service whatever the network's
 * mode, including networks the host has no address on (internal, overlay).
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { LbBackendHealth } from './api-types.js';

export interface ProbeSpec {
  kind: 'tcp' | 'http';
  path?: string;
  intervalMs: number;
  timeoutMs: number;
  unhealthyThreshold: number;
  healthyThreshold: number;
}

export interface ProbeTarget {
  /** Names the probe: load balancer id and backend name. */
  key: string;
  netnsPath: string;
  ip: string;
  port: number;
  spec: ProbeSpec;
}

/** Makes a TCP socket in a network namespace (native tcpSocketIn); the prober owns the fd. */
export type SocketMaker = (netnsPath: string) => number;

class Probe {
  timer: NodeJS.Timeout | null = null;
  running: net.Socket | null = null;
  health: LbBackendHealth = { status: 'unknown', probes: 0, failures: 0 };
  successes = 0;
  failuresInRow = 0;
  stopped = false;
  constructor(public target: ProbeTarget) {}
}

export class LbProber {
  private readonly probes = new Map<string, Probe>();

  constructor(
    private readonly makeSocket: SocketMaker,
    /** A backend's verdict changed (up <-> down): the balancer's table must follow. */
    private readonly onChange: (key: string, up: boolean) => void,
    private readonly logger: Logger,
  ) {}

  /** Probes exactly these targets: new ones start, changed ones restart, missing ones stop. */
  set(targets: ProbeTarget[]): void {
    const wanted = new Map(targets.map((t) => [t.key, t]));
    for (const [key, probe] of this.probes) {
      const t = wanted.get(key);
      if (t === undefined || JSON.stringify(t) !== JSON.stringify(probe.target)) this.stop(key);
    }
    for (const [key, t] of wanted) {
      if (this.probes.has(key)) continue;
      const probe = new Probe(t);
      this.probes.set(key, probe);
      this.schedule(probe, 0);
    }
  }

  /** A backend with no probe (or not probed here) counts as up. */
  isUp(key: string): boolean {
    return this.probes.get(key)?.health.status !== 'down';
  }

  health(key: string): LbBackendHealth | undefined {
    const h = this.probes.get(key)?.health;
    return h === undefined ? undefined : { ...h };
  }

  stopAll(): void {
    for (const key of [...this.probes.keys()]) this.stop(key);
  }

  private stop(key: string): void {
    const probe = this.probes.get(key);
    if (probe === undefined) return;
    probe.stopped = true;
    if (probe.timer !== null) clearTimeout(probe.timer);
    probe.running?.destroy();
    this.probes.delete(key);
  }

  private schedule(probe: Probe, delayMs: number): void {
    probe.timer = setTimeout(() => {
      probe.timer = null;
      void this.run(probe);
    }, delayMs);
    probe.timer.unref();
  }

  private async run(probe: Probe): Promise<void> {
    const started = Date.now();
    const error = await this.once(probe);
    if (probe.stopped) return;
    this.record(probe, error);
    this.schedule(probe, Math.max(0, probe.target.spec.intervalMs - (Date.now() - started)));
  }

  private record(probe: Probe, error: string | null): void {
    const h = probe.health;
    const spec = probe.target.spec;
    h.probes++;
    const wasUp = h.status !== 'down';
    if (error === null) {
      probe.successes++;
      probe.failuresInRow = 0;
      delete h.lastError;
      if (h.status === 'unknown' || (h.status === 'down' && probe.successes >= spec.healthyThreshold)) this.turn(probe, 'up');
    } else {
      h.failures++;
      h.lastError = error;
      probe.failuresInRow++;
      probe.successes = 0;
      if (h.status !== 'down' && probe.failuresInRow >= spec.unhealthyThreshold) this.turn(probe, 'down');
    }
    const isUp = h.status !== 'down';
    if (wasUp !== isUp) {
      this.logger.info({ probe: probe.target.key, backend: `${probe.target.ip}:${probe.target.port}`, status: h.status, lastError: h.lastError }, isUp ? 'load balancer backend is up' : 'load balancer backend is down');
      this.onChange(probe.target.key, isUp);
    }
  }

  private turn(probe: Probe, status: 'up' | 'down'): void {
    probe.health.status = status;
    probe.health.since = new Date().toISOString();
  }

  /** One probe: null when it passed, else why it failed (one phrase). */
  private once(probe: Probe): Promise<string | null> {
    const { netnsPath, ip, port, spec } = probe.target;
    let fd: number;
    try {
      fd = this.makeSocket(netnsPath);
    } catch (err) {
      return Promise.resolve((err as Error).message);
    }
    return new Promise((resolve) => {
      const socket = new net.Socket({ fd, readable: true, writable: true });
      probe.running = socket;
      let settled = false;
      let head = '';
      const finish = (error: string | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        probe.running = null;
        socket.destroy();
        resolve(error);
      };
      const timer = setTimeout(() => finish(`no answer within ${spec.timeoutMs} ms`), spec.timeoutMs);
      socket.on('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNREFUSED' ? 'connection refused' : err.message));
      socket.on('close', () => finish(spec.kind === 'http' ? 'the connection closed before an HTTP status line' : null));
      socket.connect(port, ip, () => {
        if (spec.kind === 'tcp') {
          finish(null);
          return;
        }
        socket.write(`GET ${spec.path ?? '/'} HTTP/1.0\r\nHost: ${ip}\r\nUser-Agent: vsw-probe\r\n\r\n`);
      });
      socket.on('data', (chunk: Buffer) => {
        head += chunk.toString('latin1');
        const eol = head.indexOf('\r\n');
        if (eol < 0 && head.length < 1024) return;
        const m = /^HTTP\/\d\.\d (\d{3})/.exec(head);
        if (!m) finish('the answer is not HTTP');
        else finish(m[1][0] === '2' || m[1][0] === '3' ? null : `HTTP status ${m[1]}`);
      });
    });
  }
}
