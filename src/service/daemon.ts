/**
 * `vsw daemon`: the data plane, the network service and the REST API on a
 * unix socket, started and stopped as one, over a state directory.
 *
 * Start: lock the state directory, claim the socket, read the saved state
 * and rebuild everything it describes (src/service/restore.ts), then answer.
 * Stop (SIGTERM/SIGINT): stop answering, save the connections in flight,
 * and exit, leaving every TAP, compartment, host TAP, nftables table and
 * address in place for the next daemon; `vsw system reset` is what removes
 * them (src/service/reset.ts).
 */
import { chmod } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { requireNetAdmin } from '../host/index.js';
import { DataPlane } from '../switch/dataplane.js';
import { CT_EXPORT_WORDS } from '../vfp/conntrack.js';
import type { DataPlaneVfpOptions } from '../switch/messages.js';
import { DockerDriver } from '../docker/driver.js';
import { buildApi } from './api.js';
import { PortHealth } from './health.js';
import { Metrics, type MetricsAddress } from './metrics.js';
import { checkSaved } from './restore.js';
import { NetworkService } from './service.js';
import type { Upstream } from './dns.js';
import type { Etcd3 } from 'etcd3';
import type { Agent } from '../controller/agent.js';
import type { EtcdOptions } from '../controller/etcd.js';
import { claimSocketPath, unlinkIfPresent } from './socket.js';
import { StateStore } from './state-file.js';
import { packageVersion } from './version.js';

export interface DaemonOptions {
  socketPath: string;
  /** Where the state lives (state.json, runtime.bin, lock). */
  stateDir: string;
  logger: Logger;
  /** Create this internal network at start (unless the saved state has it), so `vsw run --network NAME` works right away. */
  defaultNetwork?: { name: string; subnet: string };
  /** Sizes of the data plane's flow and connection tables. */
  dataPlane?: DataPlaneVfpOptions;
  /** Serve Prometheus metrics here. */
  metrics?: MetricsAddress;
  /** Where the networks' resolvers forward other names; default the host's resolv.conf nameservers. */
  dnsUpstreams?: Upstream[];
  /** Serve the docker network driver API on this socket (vsw daemon --docker). */
  docker?: string;
  /** Be a host agent of the network controller (vsw daemon --agent): its etcd, this host's name and VTEP. */
  agent?: { etcd: EtcdOptions; host: string; vtep: string };
  /** Called when the data plane dies under the daemon; the default stops the daemon. */
  onFatal?: (err: Error, daemon: Daemon) => void;
}

const SOCKET_MODE = 0o660;

/** What a start opened, so a failed start can close exactly that and nothing on the host. */
interface Parts {
  store: StateStore;
  dataPlane?: DataPlane;
  service?: NetworkService;
  server?: FastifyInstance;
  health?: PortHealth;
  metrics?: Metrics;
  socketPath?: string;
  docker?: { driver: DockerDriver; socketPath: string };
  agent?: { agent: Agent; etcd: Etcd3 };
}

export class Daemon {
  private stopping?: Promise<void>;

  private constructor(
    readonly socketPath: string,
    readonly version: string,
    readonly service: NetworkService,
    private readonly parts: Required<Omit<Parts, 'metrics' | 'docker' | 'agent'>> & Pick<Parts, 'metrics' | 'docker' | 'agent'>,
    private readonly logger: Logger,
  ) {}

  static async start(opts: DaemonOptions): Promise<Daemon> {
    requireNetAdmin('vsw daemon');
    const { socketPath, logger } = opts;
    const started = performance.now();
    const parts: Parts = { store: await StateStore.open(opts.stateDir) };
    try {
      await claimSocketPath(socketPath);
      const saved = await parts.store.load();
      const version = packageVersion();
      const dataPlane = (parts.dataPlane = await DataPlane.start({ logger, vfp: opts.dataPlane }));
      // The whole file is checked before anything on the host is touched.
      const ipams = saved ? checkSaved(saved, parts.store.statePath, dataPlane.maxPorts) : undefined;
      const service = (parts.service = new NetworkService(dataPlane, logger, { save: (state) => parts.store.save(state), ...(opts.dnsUpstreams === undefined ? {} : { dnsUpstreams: opts.dnsUpstreams }) }));
      if (opts.metrics) {
        const metrics = (parts.metrics = new Metrics(service, logger));
        parts.store.onWrite((seconds, bytes) => metrics.observeStateWrite(seconds, bytes));
      }
      const server = (parts.server = buildApi(service, logger, version, parts.metrics));
      parts.health = new PortHealth(service, dataPlane, logger);
      const daemon = new Daemon(socketPath, version, service, parts as Daemon['parts'], logger);
      // Listen for a crash before anything else can await: one during start-up must not go unnoticed.
      dataPlane.on('crash', (err: Error) => (opts.onFatal ?? ((_err, d) => void d.stop()))(err, daemon));
      // Taken (and so deleted) at every start: a snapshot is good for the start right after its stop, or never.
      const runtime = await parts.store.takeRuntime(saved, (reason) => logger.warn({ reason }, 'the connections saved by the last stop were not restored'));
      if (saved && ipams) {
        const report = await service.restore(saved, ipams, runtime);
        logger.info({ ...report, stateFile: parts.store.statePath, ms: Math.round(performance.now() - started) }, 'state restored');
      } else {
        await service.commit();
        logger.info({ stateFile: parts.store.statePath }, 'no saved state: starting empty');
      }
      if (opts.defaultNetwork) await daemon.ensureDefaultNetwork(opts.defaultNetwork);
      // Metrics first: a port that is taken stops the start before the API ever answers.
      if (opts.metrics) await parts.metrics!.listen(opts.metrics);
      await server.listen({ path: socketPath });
      parts.socketPath = socketPath;
      await chmod(socketPath, SOCKET_MODE);
      if (opts.docker) {
        const driver = new DockerDriver(service, logger.child({ component: 'docker' }), version);
        await driver.listen(opts.docker);
        parts.docker = { driver, socketPath: opts.docker };
      }
      parts.health.start();
      if (opts.agent) {
        // After the restore: the agent reconciles what the daemon has with the controller's state, in the background.
        const { connectEtcd } = await import('../controller/etcd.js');
        const { Agent } = await import('../controller/agent.js');
        const { serviceHost } = await import('../controller/host.js');
        const etcd = connectEtcd(opts.agent.etcd);
        const agent = new Agent(etcd, serviceHost(service), { host: opts.agent.host, vtep: opts.agent.vtep }, logger.child({ component: 'agent' }));
        parts.agent = { agent, etcd };
        agent.start();
      }
      logger.info({ socket: socketPath, version, stateDir: opts.stateDir, endpoints: service.state.endpoints.size, ms: Math.round(performance.now() - started) }, 'listening');
      return daemon;
    } catch (err) {
      await abandon(parts, logger);
      throw err;
    }
  }

  /** Idempotent: a second call waits for the first. */
  stop(): Promise<void> {
    this.stopping ??= this.teardown();
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    const { server, health, metrics, dataPlane, service, store, docker } = this.parts;
    this.logger.info('stopping');
    const agent = this.parts.agent;
    if (agent) {
      await this.step('stop the agent', () => agent.agent.stop());
      agent.etcd.close();
    }
    if (docker) await this.step('close the docker driver', () => docker.driver.close(docker.socketPath));
    await this.step('close the API server', () => server.close());
    await this.step('stop the health check', () => health.stop());
    if (metrics) await this.step('close the metrics server', () => metrics.close());
    await this.step('save the connections in flight', async () => {
      const snapshot = await dataPlane.snapshot();
      const bytes = await store.saveRuntime(snapshot, service.state.id, service.state.generation);
      this.logger.info({ connections: snapshot.conntrack.length / CT_EXPORT_WORDS, bytes, file: store.runtimePath }, 'connections saved for the next daemon');
    });
    await this.step('let go of the ports', () => service.release());
    await this.step('stop the data plane', () => dataPlane.stop());
    await this.step('remove the socket', () => unlinkIfPresent(this.socketPath));
    await this.step('release the state directory', async () => store.close());
    const { endpoints, networks, compartments } = service.state;
    this.logger.info(
      { endpoints: endpoints.size, networks: networks.size, compartments: compartments.size },
      'stopped: endpoints, compartments and host changes stay in place for the next daemon (vsw system reset removes them)',
    );
  }

  /** Runs one teardown step; a failure is logged and the next steps still run. */
  private async step(what: string, action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (err) {
      this.logger.error({ err }, `could not ${what}`);
    }
  }

  private async ensureDefaultNetwork(def: { name: string; subnet: string }): Promise<void> {
    const existing = this.service.state.networks.get(def.name);
    if (existing) {
      if (existing.network.subnet !== def.subnet) {
        this.logger.warn({ network: def.name, subnet: existing.network.subnet, requested: def.subnet }, `network ${def.name} exists already with another subnet: kept as it is`);
      }
      return;
    }
    await this.service.createNetwork({ name: def.name, driver: 'internal', subnet: def.subnet });
    this.logger.info(
      { next: [`vsw run --network ${def.name} -- ip addr`, `vsw network ls`, `vsw endpoint ls`, `vsw stats`] },
      `network ${def.name} (${def.subnet}) is ready; try: sudo -E vsw run --network ${def.name} -- ip addr`,
    );
  }
}

/** A start that failed: closes what it opened, touches nothing on the host (the next start takes over from there). */
async function abandon(parts: Parts, logger: Logger): Promise<void> {
  const quietly = async (what: string, action: () => Promise<unknown>): Promise<void> => {
    try {
      await action();
    } catch (err) {
      logger.error({ err }, `could not ${what}`);
    }
  };
  if (parts.agent) {
    await quietly('stop the agent', () => parts.agent!.agent.stop());
    parts.agent.etcd.close();
  }
  if (parts.docker) await quietly('close the docker driver', () => parts.docker!.driver.close(parts.docker!.socketPath));
  if (parts.health) await quietly('stop the health check', () => parts.health!.stop());
  if (parts.metrics) await quietly('close the metrics server', () => parts.metrics!.close());
  if (parts.server) await quietly('close the API server', () => parts.server!.close());
  if (parts.socketPath) await quietly('remove the socket', () => unlinkIfPresent(parts.socketPath!));
  if (parts.dataPlane) await quietly('stop the data plane', () => parts.dataPlane!.stop());
  if (parts.service) await quietly('let go of the ports', () => parts.service!.release());
  parts.store.close();
}
