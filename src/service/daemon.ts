/**
 * `vsw daemon`: the data plane, the network service and the REST API on a
 * unix socket, started and stopped as one. stop() leaves nothing behind: no
 * TAP, no namespace vsw created, no process inside one, no socket file.
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { dirname } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { requireNetAdmin } from '../host/index.js';
import { DataPlane } from '../switch/dataplane.js';
import type { DataPlaneVfpOptions } from '../switch/messages.js';
import { API_PREFIX } from './api-types.js';
import { buildApi } from './api.js';
import { NetworkService } from './service.js';
import { packageVersion } from './version.js';

export interface DaemonOptions {
  socketPath: string;
  logger: Logger;
  /** Create this internal network at start, so `vsw run --network NAME` works right away. */
  defaultNetwork?: { name: string; subnet: string };
  /** Sizes of the data plane's flow and connection tables. */
  dataPlane?: DataPlaneVfpOptions;
  /** Called when the data plane dies under the daemon; the default stops the daemon. */
  onFatal?: (err: Error, daemon: Daemon) => void;
}

const SOCKET_MODE = 0o660;
const SOCKET_DIR_MODE = 0o755;
/** How long a daemon already on the socket gets to answer before the socket counts as stale. */
const PROBE_TIMEOUT_MS = 1000;

export class Daemon {
  private stopping?: Promise<void>;

  private constructor(
    readonly socketPath: string,
    readonly version: string,
    readonly service: NetworkService,
    private readonly server: FastifyInstance,
    private readonly dataPlane: DataPlane,
    private readonly logger: Logger,
  ) {}

  static async start(opts: DaemonOptions): Promise<Daemon> {
    requireNetAdmin('vsw daemon');
    const { socketPath, logger } = opts;
    await claimSocketPath(socketPath);
    const version = packageVersion();
    const dataPlane = await DataPlane.start({ logger, vfp: opts.dataPlane });
    const service = new NetworkService(dataPlane, logger);
    const server = buildApi(service, logger, version);
    const daemon = new Daemon(socketPath, version, service, server, dataPlane, logger);
    // Listen for a crash before anything else can await: one during start-up must not go unnoticed.
    dataPlane.on('crash', (err: Error) => (opts.onFatal ?? ((_err, d) => void d.stop()))(err, daemon));
    try {
      await server.listen({ path: socketPath });
      await chmod(socketPath, SOCKET_MODE);
      logger.info({ socket: socketPath, version }, 'listening');
      if (opts.defaultNetwork) await daemon.createDefaultNetwork(opts.defaultNetwork);
    } catch (err) {
      await daemon.stop();
      throw err;
    }
    return daemon;
  }

  /** Idempotent: a second call waits for the first. */
  stop(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    this.logger.info('stopping');
    await this.step('close the API server', () => this.server.close());
    await this.step('remove endpoints and compartments', () => this.service.shutdown());
    await this.step('stop the data plane', () => this.dataPlane.stop());
    await this.step('remove the socket', () => unlinkIfPresent(this.socketPath));
    this.logger.info('stopped');
  }

  /** Runs one teardown step; a failure is logged and the next steps still run. */
  private async step(what: string, action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (err) {
      this.logger.error({ err }, `could not ${what}`);
    }
  }

  private async createDefaultNetwork(def: { name: string; subnet: string }): Promise<void> {
    await this.service.createNetwork({ name: def.name, driver: 'internal', subnet: def.subnet });
    this.logger.info(
      { next: [`vsw run --network ${def.name} -- ip addr`, `vsw network ls`, `vsw endpoint ls`, `vsw stats`] },
      `network ${def.name} (${def.subnet}) is ready; try: sudo -E vsw run --network ${def.name} -- ip addr`,
    );
  }
}

/**
 * Makes `path` free for a new socket: creates its directory, refuses when a
 * daemon answers there, and removes a stale socket left by one that died.
 */
async function claimSocketPath(path: string): Promise<void> {
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

function daemonAnswers(socketPath: string): Promise<boolean> {
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

async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}
