/**
 * A small new-connection load generator for the `nat` scenario of
 * `npm run bench` (scripts/bench/scenario-nat.ts), and its trivial server. The bench
 * runs both inside network namespaces with `ip netns exec`; it needs nothing
 * but node.
 *
 *   node dist/scripts/nat-connrate.js server --bind IP --tcp-port P --udp-port Q
 *     TCP: reads one byte, answers one byte and closes (its FIN goes first, so
 *     the server, not the client, holds TIME_WAIT). UDP: echoes every datagram.
 *     Prints one JSON line {"listening": ...} once both sockets are bound, then
 *     serves until killed.
 *
 *   node dist/scripts/nat-connrate.js client --proto tcp|udp --host IP --port P
 *       [--total N] [--concurrency C] [--warmup W] [--src-port-first S]
 *       [--timeout-ms T] [--max-seconds M]
 *     Keeps C exchanges in flight until N have been done, and prints one JSON
 *     line with the result. A TCP exchange is a new connection: connect, send
 *     one byte, wait for the answer and the server's FIN, close. A UDP exchange
 *     is a new flow: a fresh socket, one datagram, wait for the echo, close.
 *     Exchange i (warmup included) uses source port S+i when S is given, so
 *     every one is a new 4-tuple; otherwise the kernel picks, and it reuses
 *     ports a closed connection left (which a NAT then sees as the old
 *     connection restarting, not a new one). W exchanges first are not
 *     counted (JIT and caches warm up); an exchange with no answer after T ms
 *     counts as failed.
 *
 * The rate is successful exchanges per second of wall time from the first
 * counted start to the last counted end. Nothing here allocates much per
 * exchange beyond the socket node itself needs, so on a small machine the
 * generator, the server and the switch in between all share the cores: the
 * same generator between two namespaces of a plain vsw network is the bench's
 * reference for what the NAT costs.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { intOption } from './bench-lib.js';

const ONE = Buffer.from([0x2a]);

export interface ConnRateResult {
  proto: 'tcp' | 'udp';
  /** Counted exchanges attempted (warmup not included). */
  total: number;
  ok: number;
  failed: number;
  /** Failures by error code (ETIMEDOUT for no answer in time, ECONNRESET, ECONNREFUSED, ...). */
  errors: Record<string, number>;
  warmup: number;
  /** The warmup's own outcome: failures there are not in `failed`, and a slow warmup says the path was not ready. */
  warmupSeconds: number;
  warmupFailed: number;
  warmupErrors: Record<string, number>;
  concurrency: number;
  seconds: number;
  /** ok / seconds. */
  perSecond: number;
  /**
   * TCP: counted connections whose source port an earlier connection of the
   * same run (warmup included) had used already. A NAT keeps such a 4-tuple's
   * translation (its connection restarts from TIME_WAIT) rather than making a
   * new one, so this explains "translations created" below the connections.
   */
  sourcePortsReused: number;
  /** Start of an exchange to its answer (TCP: connect + one byte each way), ms. */
  latencyMs: { p50: number; p90: number; p99: number; max: number } | null;
}

function fail(message: string): never {
  process.stderr.write(`nat-connrate: ${message}\n`);
  process.exit(2);
}

function intArg(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  try {
    return intOption(name, raw, dflt, min, max);
  } catch (err) {
    fail((err as Error).message);
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

// ---------------------------------------------------------------- server

function server(bind: string, tcpPort: number, udpPort: number): void {
  const tcp = net.createServer({ noDelay: true }, (s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.end(ONE));
  });
  // Many SYNs at once: the kernel caps this at net.core.somaxconn of the namespace.
  tcp.listen({ host: bind, port: tcpPort, backlog: 4096 });
  const udp = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
  udp.on('message', (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
  udp.on('error', (err) => fail(`udp server: ${err.message}`));
  tcp.on('error', (err) => fail(`tcp server: ${err.message}`));
  let bound = 0;
  const ready = (): void => {
    if (++bound === 2) process.stdout.write(`${JSON.stringify({ listening: { bind, tcpPort, udpPort } })}\n`);
  };
  tcp.once('listening', ready);
  udp.bind(udpPort, bind, ready);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

// ---------------------------------------------------------------- client

interface ClientOptions {
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  total: number;
  concurrency: number;
  warmup: number;
  srcPortFirst: number | null;
  timeoutMs: number;
  maxSeconds: number;
}

/** One exchange; calls done(null) on an answer, done(code) on a failure, exactly once. */
type Exchange = (index: number, done: (error: string | null) => void) => void;

/** Source ports seen in this run (TCP), and how many counted connections reused one (the kernel's choice, without S). */
const portSeen = new Uint8Array(65536);
let portsReused = 0;
let counting = false;

function tcpExchange(o: ClientOptions): Exchange {
  return (index, done) => {
    let answered = false;
    let error: string | null = null;
    const s = net.connect({ host: o.host, port: o.port, noDelay: true, ...(o.srcPortFirst === null ? {} : { localPort: o.srcPortFirst + index }) });
    s.setTimeout(o.timeoutMs, () => {
      error ??= 'ETIMEDOUT';
      s.destroy();
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      error ??= err.code ?? 'error';
    });
    s.once('connect', () => {
      const port = s.localPort ?? 0;
      if (portSeen[port] && counting) portsReused++;
      portSeen[port] = 1;
    });
    s.on('data', () => {
      answered = true;
    });
    s.on('close', () => done(answered ? null : (error ?? 'ENOANSWER')));
    s.write(ONE);
  };
}

function udpExchange(o: ClientOptions): Exchange {
  return (index, done) => {
    const s = dgram.createSocket('udp4');
    let finished = false;
    const finish = (error: string | null): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.close();
      done(error);
    };
    const timer = setTimeout(() => finish('ETIMEDOUT'), o.timeoutMs);
    s.on('message', () => finish(null));
    s.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'error'));
    const send = (): void => s.send(ONE, o.port, o.host, (err) => err && finish((err as NodeJS.ErrnoException).code ?? 'error'));
    if (o.srcPortFirst === null) send();
    else s.bind(o.srcPortFirst + index, send);
  };
}

/** Runs `count` exchanges, `concurrency` at a time; resolves with their outcomes. */
function drive(exchange: Exchange, first: number, count: number, concurrency: number, deadline: number, latency: Float64Array | null): Promise<{ ok: number; errors: Record<string, number>; started: number }> {
  return new Promise((resolve) => {
    let started = 0;
    let finished = 0;
    let ok = 0;
    const errors: Record<string, number> = {};
    if (count === 0) return resolve({ ok, errors, started });
    const next = (): void => {
      if (started >= count || performance.now() > deadline) {
        if (finished === started) resolve({ ok, errors, started });
        return;
      }
      const i = started++;
      const t0 = performance.now();
      exchange(first + i, (error) => {
        finished++;
        if (error === null) {
          if (latency) latency[ok] = performance.now() - t0;
          ok++;
        } else {
          errors[error] = (errors[error] ?? 0) + 1;
        }
        next();
      });
    };
    for (let k = 0; k < Math.min(concurrency, count); k++) next();
  });
}

async function client(o: ClientOptions): Promise<ConnRateResult> {
  const exchange = o.proto === 'tcp' ? tcpExchange(o) : udpExchange(o);
  const hardStop = performance.now() + o.maxSeconds * 1000;
  const w0 = performance.now();
  const w = await drive(exchange, 0, o.warmup, o.concurrency, hardStop, null);
  const warmupSeconds = (performance.now() - w0) / 1000;
  const latency = new Float64Array(o.total);
  counting = true;
  const t0 = performance.now();
  const r = await drive(exchange, o.warmup, o.total, o.concurrency, hardStop, latency);
  const seconds = (performance.now() - t0) / 1000;
  const lat = latency.subarray(0, r.ok).sort();
  const failed = r.started - r.ok;
  return {
    proto: o.proto,
    total: r.started,
    ok: r.ok,
    failed,
    errors: r.errors,
    sourcePortsReused: portsReused,
    warmup: o.warmup,
    warmupSeconds: round3(warmupSeconds),
    warmupFailed: w.started - w.ok,
    warmupErrors: w.errors,
    concurrency: o.concurrency,
    seconds: round3(seconds),
    perSecond: seconds > 0 ? Math.round(r.ok / seconds) : 0,
    latencyMs:
      lat.length === 0
        ? null
        : { p50: round3(percentile(lat, 50)), p90: round3(percentile(lat, 90)), p99: round3(percentile(lat, 99)), max: round3(lat[lat.length - 1]) },
  };
}

// ---------------------------------------------------------------- main

function main(): void {
  const [mode, ...rest] = process.argv.slice(2);
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      args: rest,
      strict: true,
      options: {
        bind: { type: 'string' },
        'tcp-port': { type: 'string' },
        'udp-port': { type: 'string' },
        proto: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        total: { type: 'string' },
        concurrency: { type: 'string' },
        warmup: { type: 'string' },
        'src-port-first': { type: 'string' },
        'timeout-ms': { type: 'string' },
        'max-seconds': { type: 'string' },
      },
    }).values as Record<string, string | undefined>;
  } catch (err) {
    fail((err as Error).message);
  }
  if (mode === 'server') {
    server(values.bind ?? '0.0.0.0', intArg('tcp-port', values['tcp-port'], 5301, 1, 65535), intArg('udp-port', values['udp-port'], 5301, 1, 65535));
    return;
  }
  if (mode !== 'client') fail('usage: nat-connrate.js server|client [options] (see the comment at the top of scripts/nat-connrate.ts).');
  const proto = values.proto ?? 'tcp';
  if (proto !== 'tcp' && proto !== 'udp') fail(`--proto takes tcp or udp, not "${proto}".`);
  if (!values.host) fail('client needs --host, the server address.');
  const o: ClientOptions = {
    proto,
    host: values.host,
    port: intArg('port', values.port, 5301, 1, 65535),
    total: intArg('total', values.total, 20_000, 1, 10_000_000),
    concurrency: intArg('concurrency', values.concurrency, 128, 1, 100_000),
    warmup: intArg('warmup', values.warmup, 0, 0, 10_000_000),
    srcPortFirst: values['src-port-first'] === undefined ? null : intArg('src-port-first', values['src-port-first'], 0, 1, 65535),
    timeoutMs: intArg('timeout-ms', values['timeout-ms'], 3000, 1, 600_000),
    maxSeconds: intArg('max-seconds', values['max-seconds'], 120, 1, 3600),
  };
  if (o.srcPortFirst !== null && o.srcPortFirst + o.warmup + o.total - 1 > 65535) {
    fail(`--src-port-first ${o.srcPortFirst} leaves too few ports for ${o.warmup + o.total} exchanges.`);
  }
  client(o).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    },
    (err: Error) => fail(err.message),
  );
}

main();
