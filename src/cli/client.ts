/**
 * HTTP to the daemon over its unix socket, with node:http alone: the CLI
 * starts fast and carries no HTTP client dependency.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { API_PREFIX, type ErrorBody } from '../service/api-types.js';
import { CliError, DaemonError, UnreachableError } from './errors.js';

/** Long enough for an endpoint create (namespace, TAP, addresses), short enough that a hung daemon is noticed. */
const REQUEST_TIMEOUT_MS = 60_000;

export class Client {
  constructor(readonly socketPath: string) {}

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  post<T>(path: string, body: object): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  put<T>(path: string, body: object): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  async delete(path: string): Promise<void> {
    await this.request<void>('DELETE', path);
  }

  private request<T>(method: string, path: string, body?: object): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    // A Content-Type without a body makes fastify refuse the request, so only send it with one.
    const headers: Record<string, string | number> =
      payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    return new Promise<T>((resolve, reject) => {
      const req = httpRequest({ socketPath: this.socketPath, method, path: `${API_PREFIX}${path}`, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        readJson(res).then((parsed) => settle(res, parsed, resolve as (v: unknown) => void, reject), reject);
      });
      req.on('timeout', () => req.destroy(new CliError(`the vsw daemon at ${this.socketPath} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s: check its log.`)));
      req.on('error', (err) => reject(err instanceof CliError ? err : connectionError(err as NodeJS.ErrnoException, this.socketPath)));
      req.end(payload);
    });
  }
}

function settle(res: IncomingMessage, parsed: unknown, resolve: (v: unknown) => void, reject: (e: Error) => void): void {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) {
    resolve(parsed);
    return;
  }
  const message = (parsed as Partial<ErrorBody> | undefined)?.error;
  reject(new DaemonError(typeof message === 'string' ? message : `the vsw daemon answered HTTP ${status} ${res.statusMessage ?? ''}`.trim() + '.', status));
}

function readJson(res: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('error', reject);
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.length === 0) return resolve(undefined);
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new CliError(`the vsw daemon sent a reply that is not JSON (HTTP ${res.statusCode}): check that --socket points at a vsw daemon.`));
      }
    });
  });
}

/** One sentence for a failure to talk to the daemon at all. */
export function connectionError(err: NodeJS.ErrnoException, socketPath: string): CliError {
  switch (err.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return new UnreachableError(`cannot reach the vsw daemon at ${socketPath}: start it with \`vsw daemon\` (or \`npm start\`) or pass --socket.`);
    case 'EACCES':
    case 'EPERM':
      return new UnreachableError(`permission denied on ${socketPath}: run vsw as root or with sudo -E.`);
    default:
      return new UnreachableError(`cannot talk to the vsw daemon at ${socketPath} (${err.code ?? err.message}): check that it is running, or pass --socket.`);
  }
}

/** A path segment with the user's text escaped. */
export function seg(text: string): string {
  return encodeURIComponent(text);
}
