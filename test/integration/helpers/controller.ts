/**
 * The network controller's tests share this: an etcd member and the
 * controller in the underlay's namespace (at UNDERLAY.1), host namespaces on
 * the underlay each with a daemon that is an agent, the vsw CLI pointed at
 * the controller, and polling for what the agents apply.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { must, pollFor } from './env.js';
import { CLI, runCli, startDaemon, type DaemonHandle } from './daemon.js';
import { addUnderlay, type UnderlayHost } from './overlay.js';

/** Polls until `check` holds; how long it took. */
export async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<number> {
  const start = Date.now();
  await pollFor(what, timeoutMs, async () => ((await check()) ? true : undefined), 200);
  return Date.now() - start;
}

/** One etcd member in namespace `ns`, serving `clientUrl`, its peer port on loopback; `extra` for TLS flags. */
export function startEtcd(ns: string, dataDir: string, clientUrl: string, peerPort: number, extra: string[] = []): ChildProcess {
  const peer = `http://127.0.0.1:${peerPort}`;
  return spawn(
    'ip',
    ['netns', 'exec', ns, 'etcd', '--name', 'e1', '--data-dir', dataDir, '--listen-client-urls', clientUrl, '--advertise-client-urls', clientUrl, '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `e1=${peer}`, ...extra],
    { stdio: 'ignore' },
  );
}

/** `vsw --controller SOCKET ARGS`: its output, or an error with its sentence. */
export async function controllerCli(socket: string, args: string[]): Promise<string> {
  const r = await runCli(['--controller', socket, ...args]);
  if (r.code !== 0) throw new Error(`vsw --controller ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A request to the controller's API on its socket: the status and the parsed JSON (null when none, and status 0 when it did not answer). */
export function controllerApi(socket: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path, method, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        let parsed: unknown = null;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on('error', () => resolve({ status: 0, body: null }));
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

export interface ControllerRig {
  ul: string;
  hosts: UnderlayHost[];
  etcdUrl: string;
  socket: string;
  daemons: Map<string, DaemonHandle>;
  etcd: ChildProcess;
  controller: ChildProcess;
  ctl(args: string[]): Promise<string>;
}

/**
 * The underlay `UNDERLAY.0/24` with hosts h1..hN (daemons as agents), etcd at
 * UNDERLAY.1:`etcdPort` and the controller on `dir`/controller.sock;
 * `beforeAgents` readies the host namespaces before their daemons start. The
 * caller stops etcd and the controller and tears the daemons down.
 */
export async function startControllerRig(
  prefix: string,
  opts: { underlay: string; hosts: number; etcdPort: number; dir: string; beforeAgents?: (hosts: UnderlayHost[]) => Promise<void> },
): Promise<ControllerRig> {
  mkdirSync(opts.dir, { recursive: true });
  const hosts = await addUnderlay(prefix, opts.hosts, 1, opts.underlay);
  const ul = `${prefix}-ul`;
  await must('ip', ['-n', ul, 'addr', 'add', `${opts.underlay}.1/24`, 'dev', 'br0']);
  await must('ip', ['-n', ul, 'link', 'set', 'lo', 'up']);
  const etcdUrl = `http://${opts.underlay}.1:${opts.etcdPort}`;
  const etcd = startEtcd(ul, `${opts.dir}/etcd`, etcdUrl, opts.etcdPort + 10);
  const socket = `${opts.dir}/controller.sock`;
  const controller = spawn('ip', ['netns', 'exec', ul, 'node', CLI, 'controller', '--etcd', etcdUrl, '--socket', socket], { stdio: 'ignore' });
  await until('the controller answers', async () => (await runCli(['--controller', socket, 'network', 'ls', '--json'])).code === 0);
  // What the hosts must have when their agents register (their interfaces are part of the record).
  await opts.beforeAgents?.(hosts);
  const daemons = new Map<string, DaemonHandle>();
  for (const [i, host] of hosts.entries()) {
    const name = `h${i + 1}`;
    daemons.set(name, await startDaemon(prefix, { netns: host.ns, name, extraArgs: ['--agent', '--etcd', etcdUrl, '--host', name, '--vtep', host.ip] }));
  }
  const ctl = (args: string[]): Promise<string> => controllerCli(socket, args);
  await until(`${hosts.length} hosts registered`, async () => ((await controllerApi(socket, 'GET', '/v1/hosts')).body as unknown[] | null)?.length === hosts.length);
  return { ul, hosts, etcdUrl, socket, daemons, etcd, controller, ctl };
}
