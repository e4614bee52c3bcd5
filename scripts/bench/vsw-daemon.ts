/**
 * The vsw daemon that `npm run bench` starts on its own socket, driven
 * through the CLI and the REST API as a user would, and the vsw side built on
 * it: an internal network with an endpoint in each of two namespaces.
 */
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';

import { BenchError, apiError, apiRequest, ifMtu, start, stop, waitFor, type CmdOptions, type CmdResult, type Prefix } from '../bench-lib.js';
import { logTail, netnsAdd, pickSubnet, sh, undo, type Cleanup, type Side } from './context.js';
import { CLI } from './runner.js';

export interface Endpoint {
  id: string;
  ip: string;
  ifname: string;
}

export class VswDaemon {
  readonly socket: string;
  readonly logPath: string;
  private child: ChildProcess | null = null;

  constructor(
    readonly prefix: string,
    readonly workDir: string,
    private readonly cleanup: Cleanup,
    /** Node options for the daemon (--cpu-prof ...), before the CLI path. */
    private readonly nodeArgs: string[] = [],
  ) {
    this.socket = path.join(workDir, 'vsw.sock');
    this.logPath = path.join(workDir, 'daemon.log');
  }

  /** The internal network of the vsw side (the nat scenario's path without NAT joins it too). */
  get network(): string {
    return `${this.prefix}-net`;
  }

  alive(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number {
    if (!this.child?.pid) throw new BenchError('the vsw daemon is not running.');
    return this.child.pid;
  }

  cli(args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
    const run = opts.cleanup ? undo : sh;
    return run(process.execPath, [CLI, '--socket', this.socket, ...args], { timeoutMs: 30_000, ...opts });
  }

  async died(): Promise<BenchError> {
    const tail = await logTail(this.logPath);
    const how = this.child?.signalCode ? `on ${this.child.signalCode}` : `with status ${this.child?.exitCode}`;
    return new BenchError(`the vsw daemon exited ${how}${tail ? `; the end of its log:\n${tail}` : '.'}`);
  }

  async start(): Promise<void> {
    const stateDir = path.join(this.workDir, 'state');
    this.cleanup.add('stop the vsw daemon and remove what it made', async () => {
      // A stopped daemon leaves its TAPs for the next one; `vsw system reset` removes them.
      if (this.child) await stop(this.child, 5000);
      await undo(process.execPath, [CLI, '--socket', this.socket, 'system', 'reset', '--state-dir', stateDir], { timeoutMs: 30_000 });
    });
    const logFd = openSync(this.logPath, 'a');
    try {
      this.child = start(process.execPath, [...this.nodeArgs, CLI, 'daemon', '--socket', this.socket, '--state-dir', stateDir], logFd);
      this.cleanup.spare(this.child);
    } finally {
      // The child holds its own copy of the descriptor.
      closeSync(logFd);
    }
    await waitFor('the vsw daemon answering on its socket', 20_000, async () => {
      if (!this.alive()) throw await this.died();
      const r = await this.cli(['network', 'ls'], { allowFail: true });
      return r.code === 0 ? true : undefined;
    }, 200);
  }

  /** Starts the daemon, and builds the vsw side: an internal network and two namespaces with an endpoint each. */
  async setup(taken: readonly Prefix[]): Promise<{ side: Side; prefix: Prefix }> {
    await this.start();
    const { cidr, prefix } = await pickSubnet(taken);
    const net = this.network;
    this.cleanup.add(`remove vsw network ${net}`, async () => {
      if (this.alive()) await this.cli(['network', 'rm', net], { cleanup: true, allowFail: true });
    });
    await this.cli(['network', 'create', '-d', 'internal', '--subnet', cidr, net]);

    const eps: Endpoint[] = [];
    for (const n of [1, 2]) {
      const ns = `${this.prefix}-v${n}`;
      await netnsAdd(this.cleanup, ns);
      eps.push(await this.addEndpoint(net, ns));
    }
    const side: Side = {
      name: 'vsw',
      subnet: cidr,
      clientNs: `${this.prefix}-v1`,
      serverNs: `${this.prefix}-v2`,
      clientIp: eps[0].ip,
      serverIp: eps[1].ip,
      mtu: await ifMtu(`${this.prefix}-v2`, eps[1].ifname),
      clientEndpoint: eps[0].id,
      serverEndpoint: eps[1].id,
    };
    return { side, prefix };
  }

  /** `vsw endpoint create --network net --netns ns`, with its removal registered for cleanup. */
  async addEndpoint(net: string, ns: string): Promise<Endpoint> {
    const created = await this.cli(['endpoint', 'create', '--network', net, '--netns', ns]);
    const id = /\b[0-9a-f]{12}\b/.exec(created.stdout)?.[0];
    this.cleanup.add(`remove the vsw endpoint in ${ns} on ${net}`, async () => {
      if (!this.alive()) return;
      const eid = id ?? (await this.findEndpoint(ns, true))?.id;
      if (eid) await this.cli(['endpoint', 'rm', eid], { cleanup: true, allowFail: true });
    });
    const ep = await this.findEndpoint(ns, false, id);
    if (!ep) throw new BenchError(`vsw endpoint ls does not list the endpoint just created in ${ns}.`);
    return ep;
  }

  /** A request to the daemon's REST API; throws a BenchError with the daemon's sentence on anything but 2xx. */
  async api(method: string, urlPath: string, body?: unknown, what = `${method} ${urlPath}`): Promise<unknown> {
    const r = await apiRequest(this.socket, method, urlPath, body, { timeoutMs: 120_000 });
    if (r.status >= 200 && r.status < 300) return r.body;
    if (!this.alive()) throw await this.died();
    throw new BenchError(`${what}: the daemon answered ${r.status}: ${apiError(r)}`);
  }

  /** A DELETE of what a scenario installed, as part of its teardown: a failure is reported, never thrown. */
  async remove(urlPath: string, what: string): Promise<void> {
    const r = await apiRequest(this.socket, 'DELETE', urlPath, undefined, { cleanup: true });
    if (r.status >= 300 && r.status !== 404) console.error(`bench: could not remove ${what}: ${apiError(r)}`);
  }

  /**
   * Refuses to start a scenario the daemon cannot serve: a daemon without the
   * policy routes answers 404 "no API route", which would otherwise show up as
   * a failure in the middle of the runs.
   */
  async checkPolicyApi(side: Side): Promise<void> {
    const r = await apiRequest(this.socket, 'GET', `/v1/endpoints/${side.clientEndpoint}/policy`);
    if (r.status === 404 && /no API route/i.test(apiError(r))) {
      throw new BenchError(`this vsw daemon has no policy API (GET /v1/endpoints/:id/policy answered: ${apiError(r)}): build a tree that has it.`);
    }
    if (r.status !== 200) throw new BenchError(`GET /v1/endpoints/${side.clientEndpoint}/policy answered ${r.status}: ${apiError(r)}`);
  }

  /** The endpoint by id, or else the one in namespace ns, from `endpoint ls --json`. */
  async findEndpoint(ns: string, forCleanup: boolean, id?: string): Promise<Endpoint | undefined> {
    const r = await this.cli(['endpoint', 'ls', '--json'], { cleanup: forCleanup, allowFail: forCleanup });
    if (r.code !== 0) return undefined;
    let list: unknown;
    try {
      list = JSON.parse(r.stdout);
    } catch {
      throw new BenchError(`vsw endpoint ls --json printed something that is not JSON: ${r.stdout.slice(0, 120)}`);
    }
    const arr = (Array.isArray(list) ? list : ((list as { endpoints?: unknown }).endpoints ?? [])) as Record<string, unknown>[];
    const ep = arr.find((e) => (id ? e.id === id : e.netns === ns));
    if (!ep || typeof ep.ip !== 'string') return undefined;
    return { id: String(ep.id), ip: ep.ip.split('/')[0], ifname: typeof ep.ifname === 'string' ? ep.ifname : 'eth0' };
  }
}
