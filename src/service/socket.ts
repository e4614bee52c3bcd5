/**
 * The daemon's unix socket: claiming its path (refusing when a daemon answers
 * there, removing one a dead daemon left) and asking whether one answers.
 */
import { lstat, mkdir, unlink } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { dirname } from 'node:path';
import { API_PREFIX } from './api-types.js';

const SOCKET_DIR_MODE = 0o755;
/** How long a daemon already on the socket gets to answer before the socket counts as stale. */
const PROBE_TIMEOUT_MS = 1000;

/**
 * Makes `path` free for a new socket: creates its directory, refuses when a
 * daemon answers there, and removes a stale socket left by one that died.
 */
export async function claimSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: SOCKET_DIR_MODE });
  const stat = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!stat) return;
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket: remove it or pass --socket.`);
  if (await daemonAnswers(path)) throw new Error(`another vsw daemon is already serving ${path}: stop it first or pass --socket.`);
  await unlink(path);
}

export function daemonAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest({ socketPath, path: `${API_PREFIX}/version`, method: 'GET', timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

export async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}
