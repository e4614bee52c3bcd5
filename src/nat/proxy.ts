/**
 * The userland port proxy: makes a NAT port mapping reachable from the host
 * itself, as docker's userland proxy does.
 *
 * A mapping `-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/proto]` is translated by the
 * NAT gateway for traffic addressed to the network's external address. Traffic
 * from the host to 127.0.0.1:HOSTPORT (or to any of the host's own addresses)
 * never reaches that address, so the daemon listens on HOSTIP:HOSTPORT and
 * forwards every connection (TCP) or datagram flow (UDP) to
 * EXTERNALIP:HOSTPORT. The forwarded traffic enters the switch through the
 * host TAP like any other, so the mapping's translation and the network's
 * policies still apply.
 *
 *   client --> HOSTIP:HOSTPORT (this proxy) --> EXTERNALIP:HOSTPORT (host TAP) --> vsw NAT --> container
 *
 * TCP: one upstream connection per accepted connection, piped both ways with
 * backpressure; a half-close on one side is passed on to the other; a reset
 * or error on either side ends both. The client's socket is paused until the
 * upstream connection is up, so nothing is read that could not be delivered.
 *
 * UDP: one connected socket per client address and port (a "flow"); replies
 * from the target go back to that client through the listening socket. Flows
 * idle for longer than the idle timeout are closed by one periodic sweep; the
 * number of flows is bounded, and datagrams from new clients beyond the bound
 * are dropped and counted.
 *
 * Nothing a peer does can throw out of here: every socket has an error
 * handler, and errors are logged once per connection or flow.
 */

import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import { run } from '../host/exec.js';

export type ProxyProtocol = 'tcp' | 'udp';

export interface ProxySpec {
  protocol: ProxyProtocol;
  /** The host address to listen on; '0.0.0.0' (all IPv4 addresses) is the usual choice, '::' all addresses. */
  hostIp: string;
  hostPort: number;
  /** Where traffic goes: the NAT network's external address... */
  targetIp: string;
  /** ...and the published port on it (normally the same number as hostPort). */
  targetPort: number;
}

export interface ProxyOptions {
  /** TCP: give up on an upstream connection after this long (default 5 s); the client is then reset. */
  connectTimeoutMs?: number;
  /** UDP: close a flow after this long without a datagram either way (default 60 s). */
  udpIdleTimeoutMs?: number;
  /** UDP: at most this many flows (client address and port pairs) at once (default 4096). */
  udpMaxFlows?: number;
  /**
   * Find the program holding a port, for the EADDRINUSE message. Default:
   * ask ss(8). Tests and hosts without ss can replace it.
   */
  findHolder?: (protocol: ProxyProtocol, port: number, hostIp: string) => Promise<PortHolder | undefined>;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_UDP_IDLE_TIMEOUT_MS = 60_000;
export const DEFAULT_UDP_MAX_FLOWS = 4096;
/** Datagrams a new UDP flow queues while its socket connects; more are dropped. */
const MAX_PENDING_DATAGRAMS = 64;

export interface ProxyStats {
  protocol: ProxyProtocol;
  /** Open TCP connections, or live UDP flows. */
  active: number;
  /** TCP connections accepted, or UDP flows created, since start. */
  total: number;
  /** Payload bytes received from clients (and passed towards the target). */
  bytesToTarget: number;
  /** Payload bytes received from the target (and passed back to clients). */
  bytesToClient: number;
  /** TCP connections whose upstream connection failed or timed out; UDP flows ended by a socket error. */
  failed: number;
  /** UDP datagrams dropped: from new clients while the flow table was full, or queued beyond the connect backlog. Always 0 for TCP. */
  dropped: number;
}

/**
 * A failure to start a proxy. `code` is the system error code when there is
 * one (EADDRINUSE, EADDRNOTAVAIL, EACCES, EAFNOSUPPORT), EINVAL for a bad
 * spec, or EPROXY otherwise. The service answers EADDRINUSE with 409 and
 * the others with 400 (EPROXY: 500). The message is one sentence.
 */
export class ProxyError extends Error {
  override name = 'ProxyError';

  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A process holding a socket, as ss(8) reports it. */
export interface PortHolder {
  program: string;
  pid: number;
}

// ---------------------------------------------------------------------------
// Who holds a port: ss(8) output parsing

/** The address part of an ss local-address token, without brackets or %scope: '[::]:80' -> '::', '127.0.0.53%lo:53' -> '127.0.0.53'. */
function ssAddress(local: string): string {
  const host = local.slice(0, local.lastIndexOf(':'));
  return host.replace(/^\[/, '').replace(/\](%.*)?$/, '').replace(/%.*$/, '');
}

function isWildcard(addr: string): boolean {
  return addr === '*' || addr === '0.0.0.0' || addr === '::' || addr === '';
}

/** Would a socket bound to `held` stop a bind to `wanted` on the same port? */
function addressesClash(held: string, wanted: string): boolean {
  if (isWildcard(held) || isWildcard(wanted)) return true;
  const strip = (a: string) => a.replace(/^::ffff:/i, '').toLowerCase();
  return strip(held) === strip(wanted);
}

/**
 * The process holding `port` in the output of `ss -Hlntp` / `ss -Hanup`
 * (with or without a Netid column, with or without -H). Lines whose local
 * address could clash with `hostIp` are preferred; among the processes
 * sharing a socket (a server and its forked workers) the lowest pid wins.
 * Undefined when no line has the port, or the matching lines name no process
 * (ss without privileges, or a socket of another PID namespace).
 */
export function parsePortHolder(ssOutput: string, port: number, hostIp?: string): PortHolder | undefined {
  let fallback: PortHolder | undefined;
  for (const line of ssOutput.split('\n')) {
    const tokens = line.trim().split(/\s+/);
    // The first address:port token is the local address (the peer follows it).
    const local = tokens.find((t) => !t.startsWith('users:') && /:(\d+|\*)$/.test(t));
    if (local === undefined || local.slice(local.lastIndexOf(':') + 1) !== String(port)) continue;
    const users = line.match(/users:\(\((.*)\)\)/);
    if (users === null) continue;
    let best: PortHolder | undefined;
    for (const m of users[1].matchAll(/"((?:[^"\\]|\\.)*)",pid=(\d+)/g)) {
      const holder = { program: m[1], pid: Number(m[2]) };
      if (best === undefined || holder.pid < best.pid) best = holder;
    }
    if (best === undefined) continue;
    if (hostIp === undefined || addressesClash(ssAddress(local), hostIp)) return best;
    fallback ??= best;
  }
  return fallback;
}

/** Ask ss(8) who holds a port; undefined when ss is missing, fails or names nobody. Never throws. */
export async function findPortHolder(protocol: ProxyProtocol, port: number, hostIp?: string): Promise<PortHolder | undefined> {
  // TCP: only listeners clash (node binds with SO_REUSEADDR). UDP: any bound socket does.
  const flags = protocol === 'tcp' ? '-Hlntp' : '-Hanup';
  try {
    const { stdout } = await run('ss', [flags, 'sport', '=', `:${port}`], { timeoutMs: 2_000 });
    return parsePortHolder(stdout, port, hostIp);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------
// Start errors

function validateSpec(spec: ProxySpec): void {
  const port = (p: unknown) => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;
  if (spec.protocol !== 'tcp' && spec.protocol !== 'udp') {
    throw new ProxyError('EINVAL', `protocol "${String(spec.protocol)}" is not supported by the port proxy: use tcp or udp.`);
  }
  if (net.isIP(spec.hostIp) === 0) {
    throw new ProxyError('EINVAL', `host address "${String(spec.hostIp)}" is not an IP address: write it as 0.0.0.0, 127.0.0.1 or another address of this host.`);
  }
  if (!port(spec.hostPort)) {
    throw new ProxyError('EINVAL', `host port ${String(spec.hostPort)} is out of range: use a port from 1 to 65535.`);
  }
  if (net.isIP(spec.targetIp) === 0) {
    throw new ProxyError('EINVAL', `proxy target "${String(spec.targetIp)}" is not an IP address: it must be the network's external address.`);
  }
  if (!port(spec.targetPort)) {
    throw new ProxyError('EINVAL', `proxy target port ${String(spec.targetPort)} is out of range: use a port from 1 to 65535.`);
  }
}

async function startError(err: NodeJS.ErrnoException, spec: ProxySpec, opts: ProxyOptions): Promise<ProxyError> {
  const what = `host port ${spec.hostPort}/${spec.protocol}${isWildcard(spec.hostIp) ? '' : ` on ${spec.hostIp}`}`;
  switch (err.code) {
    case 'EADDRINUSE': {
      const find = opts.findHolder ?? findPortHolder;
      const holder = await find(spec.protocol, spec.hostPort, spec.hostIp).catch(() => undefined);
      const by = holder ? `${holder.program} (pid ${holder.pid})` : 'another program';
      return new ProxyError('EADDRINUSE', `${what} is in use by ${by}: pick another host port or stop that program.`, { cause: err });
    }
    case 'EADDRNOTAVAIL':
      return new ProxyError(
        'EADDRNOTAVAIL',
        `host address ${spec.hostIp} is not on this host: pick one of the addresses "ip -br addr" lists, or leave the host address out to listen on all of them.`,
        { cause: err },
      );
    case 'EACCES':
    case 'EPERM':
      return new ProxyError(
        'EACCES',
        `listening on ${what} was refused (permission denied): ports below 1024 need root or CAP_NET_BIND_SERVICE, so run the daemon as root or pick a host port of 1024 or more.`,
        { cause: err },
      );
    case 'EAFNOSUPPORT':
      return new ProxyError(
        'EAFNOSUPPORT',
        `host address ${spec.hostIp} cannot be used because its address family (IPv6?) is disabled on this host: pick an IPv4 address such as 0.0.0.0.`,
        { cause: err },
      );
    default:
      return new ProxyError('EPROXY', `cannot listen on ${what}: ${err.message}; check the host's network configuration and retry.`, { cause: err });
  }
}

// ---------------------------------------------------------------------------
// The proxy

/** Errors that peers cause in normal operation; logged at debug, not warn. */
const ROUTINE_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ETIMEDOUT']);

interface TcpConnection {
  client: net.Socket;
  upstream: net.Socket;
  connected: boolean;
  /** The first error was logged; later ones are noise from the teardown. */
  failed: boolean;
  closed: number;
}

interface UdpFlow {
  key: string;
  address: string;
  port: number;
  socket: dgram.Socket;
  connected: boolean;
  pending: Buffer[];
  lastActive: number;
  closed: boolean;
}

interface Counters {
  total: number;
  bytesToTarget: number;
  bytesToClient: number;
  failed: number;
  dropped: number;
}

export class PortProxy {
  private stopping: Promise<void> | undefined;
  private readonly counters: Counters = { total: 0, bytesToTarget: 0, bytesToClient: 0, failed: 0, dropped: 0 };
  private readonly connections = new Set<TcpConnection>();
  private readonly flows = new Map<string, UdpFlow>();
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Warned that the flow table is full; reset once it has room again. */
  private warnedFull = false;

  private constructor(
    readonly spec: Readonly<ProxySpec>,
    private readonly logger: Logger,
    private readonly opts: Required<Omit<ProxyOptions, 'findHolder'>>,
    private readonly server: net.Server | undefined,
    private readonly udp: dgram.Socket | undefined,
  ) {}

  /**
   * Listen on spec.hostIp:spec.hostPort and forward to spec.targetIp:spec.targetPort.
   * Rejects with a ProxyError when the spec is invalid or the port cannot be bound.
   */
  static async start(spec: ProxySpec, logger: Logger, options: ProxyOptions = {}): Promise<PortProxy> {
    validateSpec(spec);
    const opts = {
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      udpIdleTimeoutMs: options.udpIdleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS,
      udpMaxFlows: options.udpMaxFlows ?? DEFAULT_UDP_MAX_FLOWS,
    };
    const log = logger.child({
      component: 'port-proxy',
      listen: `${spec.hostIp}:${spec.hostPort}/${spec.protocol}`,
      target: `${spec.targetIp}:${spec.targetPort}`,
    });
    const frozen = Object.freeze({ ...spec });
    let proxy: PortProxy;
    try {
      proxy = spec.protocol === 'tcp' ? await PortProxy.startTcp(frozen, log, opts) : await PortProxy.startUdp(frozen, log, opts);
    } catch (err) {
      throw await startError(err as NodeJS.ErrnoException, spec, options);
    }
    log.info('port proxy listening');
    return proxy;
  }

  private static async startTcp(spec: ProxySpec, log: Logger, opts: PortProxy['opts']): Promise<PortProxy> {
    // pauseOnConnect: read nothing from a client until its upstream connection is up.
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const proxy = new PortProxy(spec, log, opts, server, undefined);
    server.on('connection', (client) => proxy.onTcpConnection(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: spec.hostIp, port: spec.hostPort, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // After listening, a server error (EMFILE on accept, say) must not crash the daemon.
    server.on('error', (err) => log.warn({ err }, 'port proxy listener error'));
    return proxy;
  }

  private static async startUdp(spec: ProxySpec, log: Logger, opts: PortProxy['opts']): Promise<PortProxy> {
    const socket = dgram.createSocket({ type: net.isIPv6(spec.hostIp) ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => {
        socket.close();
        reject(err);
      };
      socket.once('error', fail);
      socket.bind({ address: spec.hostIp, port: spec.hostPort, exclusive: true }, () => {
        socket.off('error', fail);
        resolve();
      });
    });
    const proxy = new PortProxy(spec, log, opts, undefined, socket);
    socket.on('error', (err) => log.warn({ err }, 'port proxy listener error'));
    socket.on('message', (msg, rinfo) => proxy.onDatagram(msg, rinfo));
    const sweepEvery = Math.max(10, Math.min(5_000, Math.floor(opts.udpIdleTimeoutMs / 4)));
    proxy.sweepTimer = setInterval(() => proxy.sweep(), sweepEvery).unref();
    return proxy;
  }

  /**
   * Stop listening and close every connection (with a reset, both sides) or
   * flow. Resolves once the listener is closed. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const stats = this.stats();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const closed: Promise<void>[] = [];
    if (this.server) {
      const server = this.server;
      closed.push(new Promise((resolve) => server.close(() => resolve())));
      // Reset, not a clean close: a client must not take the cut for the end of a reply.
      for (const c of this.connections) {
        c.failed = true;
        reset(c.client);
        reset(c.upstream);
      }
    }
    if (this.udp) {
      for (const flow of [...this.flows.values()]) this.closeFlow(flow);
      const udp = this.udp;
      closed.push(new Promise((resolve) => udp.close(() => resolve())));
    }
    await Promise.all(closed);
    this.logger.info({ stats }, 'port proxy stopped');
  }

  get stopped(): boolean {
    return this.stopping !== undefined;
  }

  stats(): ProxyStats {
    const c = this.counters;
    let bytesToTarget = c.bytesToTarget;
    let bytesToClient = c.bytesToClient;
    // TCP byte counts of open connections are read from the sockets, so the data path counts nothing per chunk.
    for (const conn of this.connections) {
      bytesToTarget += conn.client.bytesRead;
      bytesToClient += conn.upstream.bytesRead;
    }
    return {
      protocol: this.spec.protocol,
      active: this.server ? this.connections.size : this.flows.size,
      total: c.total,
      bytesToTarget,
      bytesToClient,
      failed: c.failed,
      dropped: c.dropped,
    };
  }

  // ---- TCP ----------------------------------------------------------------

  private onTcpConnection(client: net.Socket): void {
    if (this.stopping) {
      client.destroy();
      return;
    }
    this.counters.total++;
    const peer = `${client.remoteAddress}:${client.remotePort}`;
    const upstream = net.connect({ host: this.spec.targetIp, port: this.spec.targetPort, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
    const conn: TcpConnection = { client, upstream, connected: false, failed: false, closed: 0 };
    this.connections.add(conn);
    client.setNoDelay(true);
    client.setKeepAlive(true, 60_000);

    const timer = setTimeout(() => {
      if (conn.failed) return;
      conn.failed = true;
      this.counters.failed++;
      this.logger.warn({ client: peer, timeoutMs: this.opts.connectTimeoutMs }, 'port proxy: target did not accept the connection in time; resetting the client');
      upstream.destroy();
      reset(client);
    }, this.opts.connectTimeoutMs);
    timer.unref();

    upstream.once('connect', () => {
      clearTimeout(timer);
      conn.connected = true;
      // pipe() ends the destination when the source ends: that is the half-close,
      // and allowHalfOpen on both sockets keeps the other direction open.
      client.pipe(upstream);
      upstream.pipe(client);
    });

    const onError = (side: 'client' | 'target') => (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!conn.failed) {
        conn.failed = true;
        if (side === 'target' && !conn.connected) {
          this.counters.failed++;
          this.logger.warn({ client: peer, code: err.code }, `port proxy: cannot reach the target (${err.code ?? err.message}); resetting the client`);
        } else {
          const level = ROUTINE_ERRORS.has(err.code ?? '') ? 'debug' : 'warn';
          this.logger[level]({ client: peer, side, code: err.code, err }, `port proxy: ${side} connection failed`);
        }
      }
      // A reset on one side becomes a reset on the other, so neither peer mistakes it for a clean end.
      reset(side === 'client' ? upstream : client);
    };
    client.on('error', onError('client'));
    upstream.on('error', onError('target'));

    // A clean end closes both sockets on their own (each has ended both ways);
    // the error handlers above and stop() cover every other way out.
    const onClose = () => {
      if (++conn.closed < 2) return;
      clearTimeout(timer);
      this.counters.bytesToTarget += client.bytesRead;
      this.counters.bytesToClient += upstream.bytesRead;
      this.connections.delete(conn);
    };
    client.once('close', onClose);
    upstream.once('close', onClose);
  }

  // ---- UDP ----------------------------------------------------------------

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.stopping) return;
    const key = `${rinfo.address}|${rinfo.port}`;
    let flow = this.flows.get(key);
    if (flow === undefined) {
      if (this.flows.size >= this.opts.udpMaxFlows) {
        this.counters.dropped++;
        if (!this.warnedFull) {
          this.warnedFull = true;
          this.logger.warn({ maxFlows: this.opts.udpMaxFlows }, 'port proxy: UDP flow table is full; dropping datagrams from new clients');
        }
        return;
      }
      flow = this.openFlow(key, rinfo);
    }
    flow.lastActive = Date.now();
    this.counters.bytesToTarget += msg.length;
    if (flow.connected) this.sendToTarget(flow, msg);
    else if (flow.pending.length < MAX_PENDING_DATAGRAMS) flow.pending.push(msg);
    else this.counters.dropped++;
  }

  private openFlow(key: string, rinfo: dgram.RemoteInfo): UdpFlow {
    const socket = dgram.createSocket({ type: net.isIPv6(this.spec.targetIp) ? 'udp6' : 'udp4' });
    const flow: UdpFlow = { key, address: rinfo.address, port: rinfo.port, socket, connected: false, pending: [], lastActive: Date.now(), closed: false };
    this.flows.set(key, flow);
    this.counters.total++;
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (flow.closed) return;
      // ECONNREFUSED: the target answered a datagram with ICMP port unreachable.
      // The flow ends; the client's next datagram starts a new one.
      this.counters.failed++;
      const level = err.code === 'ECONNREFUSED' ? 'debug' : 'warn';
      this.logger[level]({ client: `${flow.address}:${flow.port}`, code: err.code, err }, 'port proxy: UDP flow failed');
      this.closeFlow(flow);
    });
    socket.on('message', (reply) => {
      flow.lastActive = Date.now();
      this.counters.bytesToClient += reply.length;
      if (!this.stopping) this.udp?.send(reply, flow.port, flow.address);
    });
    socket.connect(this.spec.targetPort, this.spec.targetIp, () => {
      if (flow.closed) return;
      flow.connected = true;
      for (const msg of flow.pending) this.sendToTarget(flow, msg);
      flow.pending.length = 0;
    });
    return flow;
  }

  private sendToTarget(flow: UdpFlow, msg: Buffer): void {
    flow.socket.send(msg, (err) => {
      if (err && !flow.closed) flow.socket.emit('error', err);
    });
  }

  private closeFlow(flow: UdpFlow): void {
    if (flow.closed) return;
    flow.closed = true;
    flow.pending.length = 0;
    this.flows.delete(flow.key);
    try {
      flow.socket.close();
    } catch {
      // Already closed.
    }
    if (this.flows.size < this.opts.udpMaxFlows) this.warnedFull = false;
  }

  /** Close the flows idle for longer than the idle timeout. */
  private sweep(): void {
    const cutoff = Date.now() - this.opts.udpIdleTimeoutMs;
    let expired = 0;
    for (const flow of this.flows.values()) {
      if (flow.lastActive <= cutoff) {
        this.closeFlow(flow);
        expired++;
      }
    }
    if (expired > 0) this.logger.debug({ expired, active: this.flows.size }, 'port proxy: idle UDP flows closed');
  }
}

/** Reset a TCP socket (RST) when it has a connected handle, else just destroy it. */
function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  try {
    if (socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}
