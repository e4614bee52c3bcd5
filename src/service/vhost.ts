/**
 * VM endpoints: a virtio-net NIC over vhost-user instead of a TAP in a
 * namespace (native/src/vhost.rs does the protocol and the rings). Here: the
 * checks of a request's socket path before anything is made, and what the
 * API says about the device from the data plane's events and status.
 */
import { lstat, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname, isAbsolute } from 'node:path';
import { VhostEvent } from '../native/index.js';
import type { VhostPortStatus } from '../switch/dataplane.js';
import type { CreateEndpointRequest, Endpoint, VhostEndpointState } from './api-types.js';
import { badRequest, conflict } from './errors.js';
import type { State } from './state.js';

export type VhostUser = NonNullable<Endpoint['vhostUser']>;

/** How long the check for another process serving a socket waits for its answer. */
const SERVED_PROBE_MS = 500;

/** Whether something accepts connections on the unix socket at `path` now. */
function served(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const done = (yes: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(yes);
    };
    const timer = setTimeout(() => done(false), SERVED_PROBE_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * The request's vhost-user socket, checked: an absolute path that fits a
 * sockaddr_un, in a directory that exists, no other endpoint's, and (server
 * mode) not a file that is something else nor a socket another process
 * serves; vsw replaces only a stale socket there.
 */
export async function checkVhostUser(req: CreateEndpointRequest, state: State): Promise<VhostUser> {
  const { socket, mode = 'server' } = req.vhostUser!;
  const extra = (['netns', 'ifname', 'configure'] as const).filter((k) => req[k] !== undefined);
  if (extra.length > 0) throw badRequest(`a VM endpoint (--vhost-user) has no network namespace or interface of its own: leave out ${extra.join(', ')}.`);
  if (!isAbsolute(socket) || Buffer.byteLength(socket) > 107 || socket.includes('\0')) {
    throw badRequest(`--vhost-user ${socket} must be an absolute path of at most 107 bytes (a unix socket's limit), such as /run/vsw/vm1.sock.`);
  }
  const holder = [...state.endpoints.values()].find((r) => r.endpoint.vhostUser?.socket === socket);
  if (holder) throw conflict(`socket ${socket} is endpoint ${holder.endpoint.name}'s already: pick another path, or remove that endpoint first.`);
  const problem = await socketProblem({ socket, mode });
  if (problem !== null) throw problem.kind === 'directory' ? badRequest(`${problem.text}, or pick another path.`) : conflict(`${problem.text}, or pick another path (mode client connects to a socket the VMM serves).`);
  return { socket, mode };
}

/**
 * Why vsw cannot serve (or wait for) a VM endpoint's socket now, or null: its directory is missing,
 * or (server mode) the path is a file that is not a socket, or a socket another process serves. vsw
 * replaces only a stale socket. Checked at create, and again before a restart or a retry makes it.
 */
export async function socketProblem(v: VhostUser): Promise<{ kind: 'directory' | 'taken'; text: string } | null> {
  const dir = dirname(v.socket);
  // stat, not lstat: /var/run is a symlink to /run.
  const d = await stat(dir).catch(() => null);
  if (d === null || !d.isDirectory()) return { kind: 'directory', text: `directory ${dir} of socket ${v.socket} does not exist: create it (mkdir -p ${dir})` };
  if (v.mode === 'client') return null;
  const there = await lstat(v.socket).catch(() => null);
  if (there !== null && !there.isSocket()) return { kind: 'taken', text: `${v.socket} exists and is not a socket, which vsw will not replace: remove it` };
  if (there !== null && (await served(v.socket))) return { kind: 'taken', text: `another process serves ${v.socket}: stop it` };
  return null;
}

/** The device's state from a data-plane event (the counters stay as they were until the next status). */
export function vhostStateAfter(previous: VhostEndpointState | undefined, code: number, detail: string): VhostEndpointState {
  const base: VhostEndpointState = previous ?? { state: 'waiting', connections: 0, brokenCount: 0, rxNoBuffer: 0, rxUnfit: 0 };
  const { broken: _broken, ...rest } = base;
  switch (code) {
    case VhostEvent.CONNECTED:
      return { ...rest, state: 'connected', connections: base.connections + 1 };
    case VhostEvent.RUNNING:
      return { ...rest, state: 'running' };
    case VhostEvent.STOPPED:
      return { ...rest, state: 'connected' };
    case VhostEvent.BROKEN:
      return { ...rest, state: 'broken', broken: detail, brokenCount: base.brokenCount + 1 };
    default: {
      const { features: _features, memorySealed: _sealed, ...left } = rest;
      return { ...left, state: 'waiting' };
    }
  }
}

/** The device's state as the data plane reports it now. */
export function vhostStateOf(status: VhostPortStatus): VhostEndpointState {
  const state = status.broken !== null ? 'broken' : status.running ? 'running' : status.connected ? 'connected' : 'waiting';
  return {
    state,
    ...(status.connected ? { features: status.features } : {}),
    ...(status.connected && status.regions > 0 ? { memorySealed: status.memorySealed } : {}),
    ...(status.broken !== null ? { broken: status.broken } : {}),
    connections: status.connections,
    brokenCount: status.brokenCount,
    rxNoBuffer: status.rxNoBuffer,
    rxUnfit: status.rxUnfit,
  };
}

/** Why a VM endpoint's frames do not move, in one sentence; null while they do. */
export function vhostDownReason(vhostUser: VhostUser, device: VhostEndpointState | undefined): string | null {
  switch (device?.state ?? 'waiting') {
    case 'running':
      return null;
    case 'connected':
      return "its VMM is connected; the guest's virtio-net driver has not started its queues yet";
    case 'broken':
      return `the guest broke its ring (${device!.broken!.replace(/\.$/, '')}): its queues are stopped until the guest resets its NIC or the VMM reconnects`;
    default:
      return vhostUser.mode === 'server' ? `waiting for its VMM to connect to ${vhostUser.socket}` : `waiting for its VMM to serve ${vhostUser.socket}`;
  }
}
