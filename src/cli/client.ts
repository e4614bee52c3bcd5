/**
 * HTTP to the daemon over its unix socket, with node:http alone: the CLI
 * starts fast and carries no HTTP client dependency.
 */
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
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

  /**
   * POSTs `body` and resolves with the response once a 2xx status arrives, its
   * body unread and without a timeout (it may stream for as long as the caller
   * reads: `vsw capture`); a refusal rejects with the daemon's sentence.
   */
  postStream(path: string, body: object): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      this.send('POST', path, JSON.stringify(body), reject, (res, req) => {
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          req.setTimeout(0);
          resolve(res);
          return;
        }
        readJson(res).then((parsed) => reject(refusal(res, parsed)), reject);
      });
    });
  }

  private request<T>(method: string, path: string, body?: object): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.send(method, path, body === undefined ? undefined : JSON.stringify(body), reject, (res) => {
        readJson(res).then((parsed) => settle(res, parsed, resolve as (v: unknown) => void, reject), reject);
      });
    });
  }

  private send(method: string, path: string, payload: string | undefined, reject: (e: Error) => void, onResponse: (res: IncomingMessage, req: ClientRequest) => void): void {
    // A Content-Type without a body makes fastify refuse the request, so only send it with one.
    const headers: Record<string, string | number> =
      payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    // A controller's TCP API (--controller http://HOST:PORT) wants its token; everything else is a unix socket.
    const where = this.socketPath.startsWith('http://') ? tcpTarget(this.socketPath, headers) : { socketPath: this.socketPath };
    const req = httpRequest({ ...where, method, path: `${API_PREFIX}${path}`, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => onResponse(res, req));
    req.on('timeout', () => req.destroy(new CliError(`the vsw daemon at ${this.socketPath} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s: check its log.`)));
    req.on('error', (err) => reject(err instanceof CliError ? err : connectionError(err as NodeJS.ErrnoException, this.socketPath)));
    req.end(payload);
  }
}

/** host and port of http://HOST:PORT, and the token from VSW_TOKEN as the Authorization header. */
function tcpTarget(url: string, headers: Record<string, string | number>): { host: string; port: number } {
  const u = new URL(url);
  const token = process.env.VSW_TOKEN;
  if (token !== undefined) headers.authorization = `Bearer ${token.trim()}`;
  return { host: u.hostname, port: Number(u.port || 80) };
}

function settle(res: IncomingMessage, parsed: unknown, resolve: (v: unknown) => void, reject: (e: Error) => void): void {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) resolve(parsed);
  else reject(refusal(res, parsed));
}

/** The daemon's {"error"} sentence of a refused request. */
function refusal(res: IncomingMessage, parsed: unknown): DaemonError {
  const status = res.statusCode ?? 0;
  const message = (parsed as Partial<ErrorBody> | undefined)?.error;
  return new DaemonError(typeof message === 'string' ? message : `the vsw daemon answered HTTP ${status} ${res.statusMessage ?? ''}`.trim() + '.', status);
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
