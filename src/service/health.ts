/**
 * Keeps the switch's ports attached to what they stand for. Two things end
 * a port on their own: its TAP vanishing (someone deleted the interface; the
 * kernel then fails every read with EBADFD) and a read() error; the data plane
 * reports both (DataPlane 'portDown'). And a container's namespace can go away
 * (the container exited) without a word to vsw.
 *
 * So: a port that stops is shown down with the reason (`vsw endpoint ls`,
 * the API, the metrics), and a check every interval brings it back when it
 * can (the TAP recreated as saved) and removes endpoints whose namespace is
 * gone. The check takes the service's mutex like any API call.
 */
import type { Logger } from 'pino';
import type { DataPlane } from '../switch/dataplane.js';
/** What the health check drives: the service's two entry points for it (kept as an interface, so this file does not import the service). */
export interface HealthTarget {
  portDown(portId: number, fd: number, errno: number): Promise<void>;
  /** A VM endpoint's vhost-user device came, went, started, stopped or was broken by its guest (VhostEvent codes). */
  vhostEvent(portId: number, socket: string, code: number, detail: string): void;
  checkHealth(): Promise<void>;
}

const CHECK_INTERVAL_MS = 1000;

/** The reason a port stopped, from the errno its read() failed with. */
export function readFailure(errno: number): string {
  if (errno === 77) return 'its TAP was deleted (read: EBADFD)';
  const names: Record<number, string> = { 5: 'EIO', 14: 'EFAULT', 22: 'EINVAL', 19: 'ENODEV', 100: 'ENETDOWN' };
  return `read() on its TAP failed (${names[errno] ?? `errno ${errno}`})`;
}

export class PortHealth {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly onPortDown = (portId: number, errno: number, fd: number): void => {
    this.service.portDown(portId, fd, errno).catch((err: unknown) => this.logger.error({ err, portId }, 'could not take a stopped port down'));
  };
  private readonly onVhost = (portId: number, socket: string, code: number, detail: string): void => this.service.vhostEvent(portId, socket, code, detail);

  /**
   * Listens to the data plane from now on, before the restore adds the first
   * port: a port that stops during the start is handled once the restore
   * releases the service's mutex, not lost.
   */
  constructor(
    private readonly service: HealthTarget,
    private readonly dataPlane: DataPlane,
    private readonly logger: Logger,
    private readonly intervalMs = CHECK_INTERVAL_MS,
  ) {
    this.dataPlane.on('portDown', this.onPortDown);
    this.dataPlane.on('vhost', this.onVhost);
  }

  /** Starts the periodic check. */
  start(): void {
    this.timer = setInterval(() => {
      // One check at a time: a slow one (recreating TAPs) is not stacked on.
      this.running ??= this.service
        .checkHealth()
        .catch((err: unknown) => this.logger.error({ err }, 'health check failed'))
        .finally(() => (this.running = undefined));
    }, this.intervalMs);
  }

  /** Stops checking; resolves once a check in progress has finished. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.dataPlane.off('portDown', this.onPortDown);
    this.dataPlane.off('vhost', this.onVhost);
    await this.running;
  }
}
