/**
 * Prometheus metrics of a real daemon (`vsw daemon --metrics 127.0.0.1:PORT`),
 * scraped by a real Prometheus server (Debian's `prometheus`, every second,
 * its configuration and TSDB under /tmp/PREFIX, its web API on loopback) and
 * read back through Prometheus's own query API: the values it stored must be
 * the ones `vsw stats --json`, `vsw nat ls` and the state directory say.
 * Also a plain GET of /metrics, GET /v1/nat?counters=only without the
 * translation listing, and the refusal of a bad --metrics value.
 *
 * Network i (internal, 10.93.0.0/24): m1 sends UDP datagrams to a sink in
 * m2 (one way, so rx and tx of a port differ and a swap would show). Network
 * n (nat, 172.27.0.0/24, a pool of 1000 ports): c1 holds a TCP connection
 * to an echo server in an "outside" namespace routed through the host by a
 * veth pair (198.18.K.0/24), for conntrack and a NAT translation.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NatNetworkState, Network } from '../../src/service/api-types.js';
import { addNetns, freeLoopbackPort, inNetns, runPrefix } from './helpers/env.js';
import {
  api,
  assertOneSentence,
  createEndpoint,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  portStats,
  type PortStatsJson,
  runCli,
  startDaemon,
  teardown,
} from './helpers/daemon.js';
import {
  addOutsideNamespace,
  freeNet24,
  type Outside,
  prefixNumber,
  readIpForward,
  removeNatLeftovers,
  startEchoClient,
  startServer,
} from './helpers/nat.js';
import { TCP_ECHO_SERVER } from './helpers/echo.js';

const prefix = runPrefix();
const netI = `${prefix}-i`;
/** A nat network's name is also its host interface's name: at most 15 characters. */
const netN = `${prefix}-n`;
const nsM = [`${prefix}-m1`, `${prefix}-m2`];
const nsC1 = `${prefix}-c1`;
const dir = `/tmp/${prefix}`;
const promDir = `${dir}/prometheus`;
/** The scrape job: Prometheus labels every series it scrapes with job="<this>". */
const JOB = `${prefix}-vsw`;
const DATAGRAMS = 200;
const SINK_PORT = 5000;
const OUT_PORT = 7200;
/** Not the defaults, so the metrics cannot match them by accident. */
const MAX_FLOWS = 65536;
const POOL = '30000-30999';

let d: DaemonHandle;
let forwardBefore: string | undefined;
let metricsPort: number;
let promPort: number;
let prometheus: ChildProcess | undefined;
let prometheusExit: Promise<void> | undefined;
let outside: Outside;
let m: EndpointJson[] = [];
let c1: EndpointJson;

/** A TCP port free on loopback right now (the kernel picks it; closed again before use). */
test.before(async () => {
  forwardBefore = readIpForward();
  metricsPort = await freeLoopbackPort();
  promPort = await freeLoopbackPort();
  d = await startDaemon(prefix, { extraArgs: ['--metrics', `127.0.0.1:${metricsPort}`, '--max-flows', String(MAX_FLOWS)] });
  m = await createNetworkWithEndpoints(d, netI, '10.93.0.0/24', nsM);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.27.0.0/24', '--nat-ports', POOL, netN]);
  await addNetns(nsC1);
  c1 = await createEndpoint(d, netN, nsC1);
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', ((prefixNumber(prefix) + 193) % 254) + 1));

  mkdirSync(promDir, { recursive: true });
  writeFileSync(
    `${promDir}/prometheus.yml`,
    [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      'scrape_configs:',
      `  - job_name: ${JOB}`,
      '    static_configs:',
      `      - targets: ['127.0.0.1:${metricsPort}']`,
      '',
    ].join('\n'),
  );
  const logFd = openSync(`${promDir}/prometheus.log`, 'a');
  prometheus = spawn(
    '/usr/bin/prometheus',
    [`--config.file=${promDir}/prometheus.yml`, `--storage.tsdb.path=${promDir}/data`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  const child = prometheus;
  prometheusExit = new Promise((resolve) => child.on('exit', () => resolve()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${promPort}/-/ready`).then((r) => r.ok, () => false);
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`prometheus did not become ready:\n${readFileSync(`${promDir}/prometheus.log`, 'utf8')}`);
    await sleep(200);
  }
});

test.after.always(async () => {
  try {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
      prometheus.kill('SIGTERM');
      await Promise.race([prometheusExit, sleep(10_000, undefined, { ref: false }).then(() => prometheus!.kill('SIGKILL'))]);
      await prometheusExit;
    }
    rmSync(promDir, { recursive: true, force: true });
  } finally {
    await teardown(prefix, d);
    await removeNatLeftovers(prefix, forwardBefore);
  }
});

interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** An instant query through Prometheus's HTTP API: the stored samples, as numbers. */
async function query(q: string): Promise<{ labels: Record<string, string>; value: number; at: number }[]> {
  const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await r.json()) as { status: string; error?: string; data?: { resultType: string; result: PromSample[] } };
  if (body.status !== 'success' || !body.data) throw new Error(`prometheus query ${q}: ${JSON.stringify(body)}`);
  return body.data.result.map((s) => ({ labels: s.metric, value: Number(s.value[1]), at: s.value[0] * 1000 }));
}

/** The single value of a query, polled until `ok` holds (Prometheus stores what the next scrape finds). */
async function queryUntil(q: string, ok: (v: number) => boolean, timeoutMs = 20_000): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  let last: number | undefined;
  for (;;) {
    const rows = await query(q);
    if (rows.length > 1) throw new Error(`prometheus query ${q} matched ${rows.length} series: ${JSON.stringify(rows.map((r) => r.labels))}`);
    last = rows[0]?.value;
    if (last !== undefined && ok(last)) return last;
    if (Date.now() > deadline) return last;
    await sleep(250);
  }
}

const sel = (labels: Record<string, string>): string => `{${Object.entries({ job: JOB, ...labels }).map(([k, v]) => `${k}="${v}"`).join(',')}}`;

/** A UDP sink: binds, prints "listening", reads and drops everything (no answers, no ICMP port unreachable). */
const UDP_SINK = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    s.recv(2048)
`;

/** Sends N datagrams, a little apart so none is dropped for a full queue. */
const UDP_SEND = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"x" * 100, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.001)
`;

test.serial('a real Prometheus server scrapes the daemon: port counters equal vsw stats, ports are up, and conntrack, NAT, API and state-write metrics hold real values', async (t) => {
  const up = await queryUntil(`up{job="${JOB}"}`, (v) => v === 1, 30_000);
  t.is(up, 1, `up{job="${JOB}"} (Prometheus's own record of a successful scrape); its log:\n${readFileSync(`${promDir}/prometheus.log`, 'utf8')}`);

  // Traffic: DATAGRAMS one way m1 -> m2, and a held TCP connection c1 -> outside through the NAT.
  await startServer(t, nsM[1], UDP_SINK, SINK_PORT);
  await startServer(t, outside.ns, TCP_ECHO_SERVER, OUT_PORT);
  const echo = await startEchoClient(t, nsC1, outside.ip, OUT_PORT);
  await echo.waitFor(/^echo \d+$/, 3, 5_000);
  const before = await portStats(d);
  const send = await inNetns(nsM[0], 'python3', ['-c', UDP_SEND, m[1].ip, String(SINK_PORT), String(DATAGRAMS)]);
  t.is(send.code, 0, send.stderr);

  // m1 and m2 are quiet now: what Prometheus stores must lie between two reads of vsw stats around its scrape.
  const s1 = await portStats(d);
  const got = { m1: s1.get(m[0].id)!, m2: s1.get(m[1].id)! };
  t.true(got.m1.rxFrames - before.get(m[0].id)!.rxFrames >= DATAGRAMS, `vsw stats: m1 sent ${got.m1.rxFrames - before.get(m[0].id)!.rxFrames} frames`);
  t.true(got.m2.txFrames - before.get(m[1].id)!.txFrames >= DATAGRAMS, `vsw stats: m2 got ${got.m2.txFrames - before.get(m[1].id)!.txFrames} frames`);
  const metricFor: [string, keyof PortStatsJson][] = [
    ['vsw_port_rx_frames_total', 'rxFrames'],
    ['vsw_port_tx_frames_total', 'txFrames'],
    ['vsw_port_rx_bytes_total', 'rxBytes'],
    ['vsw_port_tx_bytes_total', 'txBytes'],
  ];
  const stored: Record<string, number | undefined> = {};
  for (const ep of m) {
    for (const [metric, field] of metricFor) {
      const q = `${metric}${sel({ port: ep.name, kind: 'endpoint', network: netI })}`;
      stored[`${ep.name} ${metric}`] = await queryUntil(q, (v) => v >= (s1.get(ep.id)![field] as number));
    }
  }
  const s2 = await portStats(d);
  for (const ep of m) {
    for (const [metric, field] of metricFor) {
      const v = stored[`${ep.name} ${metric}`];
      const lo = s1.get(ep.id)![field] as number;
      const hi = s2.get(ep.id)![field] as number;
      t.true(v !== undefined && v >= lo && v <= hi, `${metric} of ${ep.name}: Prometheus has ${v}, vsw stats said ${lo} then ${hi}`);
    }
  }
  // One way: m1's rx is the datagrams, its tx only ARP; a swapped rx/tx would fail the bounds above.
  t.true(stored[`${m[0].name} vsw_port_rx_frames_total`]! >= DATAGRAMS);
  t.true(stored[`${m[0].name} vsw_port_tx_frames_total`]! < DATAGRAMS / 4);

  for (const [labels, what] of [
    [{ port: m[0].name, kind: 'endpoint', network: netI }, 'm1'],
    [{ port: m[1].name, kind: 'endpoint', network: netI }, 'm2'],
    [{ port: c1.name, kind: 'endpoint', network: netN }, 'c1'],
    [{ port: `host/${netN}`, kind: 'nat-host', network: netN }, 'the nat host port'],
  ] as [Record<string, string>, string][]) {
    t.is(await queryUntil(`vsw_port_up${sel(labels)}`, (v) => v === 1), 1, `vsw_port_up of ${what}`);
  }

  const stats = await d.vswJson<{ switch: { vfp: { flowCapacity: number; connections: { live: number } } } }>(['stats', '--json']);
  t.true(stats.switch.vfp.connections.live > 0, `vsw stats: ${stats.switch.vfp.connections.live} live connections`);
  const conntrack = await queryUntil(`vsw_conntrack_entries{job="${JOB}"}`, (v) => v > 0);
  t.true(conntrack !== undefined && conntrack > 0, `vsw_conntrack_entries with a TCP connection open: ${conntrack}`);
  t.is(await queryUntil(`vsw_flow_table_capacity{job="${JOB}"}`, (v) => v === MAX_FLOWS), MAX_FLOWS, 'vsw_flow_table_capacity is --max-flows');
  t.is(stats.switch.vfp.flowCapacity, MAX_FLOWS);
  t.is(await queryUntil(`vsw_nat_pool_size${sel({ network: netN })}`, (v) => v === 1000), 1000, `vsw_nat_pool_size of --nat-ports ${POOL}`);
  const nat = (await d.vswJson<NatNetworkState[]>(['nat', 'ls', '--network', netN, '--json']))[0];
  t.is(nat.counters.poolSize, 1000);
  t.true(nat.counters.active >= 1, JSON.stringify(nat.counters));
  const translations = await queryUntil(`vsw_nat_translations${sel({ network: netN })}`, (v) => v >= 1);
  t.true(translations !== undefined && translations >= 1, `vsw_nat_translations with the connection through the NAT open: ${translations}`);
  t.is(await queryUntil(`vsw_endpoints${sel({ network: netI })}`, (v) => v === 2), 2, 'vsw_endpoints of network i');
  t.is(await queryUntil(`vsw_endpoints${sel({ network: netN })}`, (v) => v === 1), 1, 'vsw_endpoints of network n');

  // The API: three endpoint creates answered 201 (m1, m2, c1); every request is observed.
  t.is(
    await queryUntil(`vsw_api_request_duration_seconds_count${sel({ method: 'POST', route: '/v1/endpoints', status: '201' })}`, (v) => v === 3),
    3,
    'vsw_api_request_duration_seconds_count of POST /v1/endpoints 201',
  );
  const apiAll = await queryUntil(`sum(vsw_api_request_duration_seconds_count{job="${JOB}"})`, (v) => v > 3);
  t.true(apiAll !== undefined && apiAll > 3, `all API requests: ${apiAll}`);
  // state.json: one write at the start, one per network and endpoint created at least; its size is the file's.
  const writes = await queryUntil(`vsw_state_write_duration_seconds_count{job="${JOB}"}`, (v) => v >= 6);
  t.true(writes !== undefined && writes >= 6, `vsw_state_write_duration_seconds_count: ${writes}`);
  const bytes = statSync(`${d.stateDir}/state.json`).size;
  t.is(await queryUntil(`vsw_state_file_bytes{job="${JOB}"}`, (v) => v === bytes), bytes, 'vsw_state_file_bytes is the size of state.json');
  t.log(`Prometheus: m1 rx ${stored[`${m[0].name} vsw_port_rx_frames_total`]} / tx ${stored[`${m[0].name} vsw_port_tx_frames_total`]} frames, conntrack ${conntrack}, NAT translations ${translations}, ${apiAll} API requests, ${writes} state writes of ${bytes} bytes`);
});

test.serial('a plain GET /metrics answers Prometheus text with the same counters, and nothing but GET /metrics is served there', async (t) => {
  const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  t.is(r.status, 200);
  t.regex(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await r.text();
  for (const name of ['vsw_port_rx_frames_total', 'vsw_port_drops_total', 'vsw_conntrack_entries', 'vsw_nat_translations', 'vsw_api_request_duration_seconds', 'vsw_state_write_duration_seconds']) {
    t.regex(text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'), `# TYPE of ${name}`);
  }
  const stats = await portStats(d);
  const line = new RegExp(`^vsw_port_rx_frames_total\\{port="${m[0].name}",kind="endpoint",network="${netI}"\\} (\\d+)$`, 'm').exec(text);
  t.truthy(line, `no rx frames line for ${m[0].name}`);
  t.is(Number(line?.[1]), stats.get(m[0].id)!.rxFrames, 'the same value as vsw stats (m1 is quiet)');
  t.regex(text, new RegExp(`^vsw_port_up\\{port="host/${netN}",kind="nat-host",network="${netN}"\\} 1$`, 'm'));

  const other = await fetch(`http://127.0.0.1:${metricsPort}/v1/networks`);
  t.is(other.status, 404);
  t.is(await other.text(), 'vsw serves only GET /metrics here.\n');
  const post = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { method: 'POST', body: '' });
  t.is(post.status, 404);
});

test.serial('GET /v1/nat?counters=only answers the counters without the translations, which the plain GET lists', async (t) => {
  const full = await api<NatNetworkState[]>(d, 'GET', `/v1/nat?network=${netN}`);
  t.is(full.status, 200, JSON.stringify(full.body));
  t.true(Array.isArray(full.body[0]?.translations) && full.body[0].translations.length >= 1, `the plain GET lists translations: ${JSON.stringify(full.body[0])}`);
  const only = await api<NatNetworkState[]>(d, 'GET', `/v1/nat?counters=only&network=${netN}`);
  t.is(only.status, 200, JSON.stringify(only.body));
  t.is(only.body.length, 1);
  t.false('translations' in only.body[0], `counters=only has a translations field: ${JSON.stringify(only.body[0])}`);
  t.is(only.body[0].counters.poolSize, 1000);
  t.is(only.body[0].network, netN);
  const all = await api<NatNetworkState[]>(d, 'GET', '/v1/nat?counters=only');
  t.true(all.body.every((s) => !('translations' in s)), JSON.stringify(all.body));
  const bad = await api<{ message?: string }>(d, 'GET', '/v1/nat?counters=some');
  t.is(bad.status, 400, `counters=some: ${JSON.stringify(bad.body)}`);
  const net = await d.vswJson<Network>(['network', 'inspect', netN]);
  t.is(only.body[0].externalIp, net.nat!.externalIp);
});

test.serial('`vsw daemon --metrics` with a bad value is refused with one sentence and a non-zero exit', async (t) => {
  for (const value of ['nonsense', '127.0.0.1:70000', 'example.org:9483', '127.0.0.1:']) {
    const r = await runCli(['daemon', '--socket', `${dir}/bad.sock`, '--state-dir', `${dir}/bad-state`, '--metrics', value], { timeoutMs: 20_000 });
    assertOneSentence(t, r, `--metrics ${value}`);
    t.true(r.stderr.includes(`--metrics ${value}`), `the sentence names the value: ${r.stderr}`);
  }
});

test.serial('a --metrics address another program holds is refused with one sentence, and the running daemon keeps serving it', async (t) => {
  const address = `127.0.0.1:${metricsPort}`;
  const r = await runCli(['daemon', '--socket', `${dir}/taken.sock`, '--state-dir', `${dir}/taken-state`, '--metrics', address], { timeoutMs: 20_000 });
  assertOneSentence(t, r, `--metrics ${address} while the first daemon serves it`);
  t.true(r.stderr.includes(address), `the sentence names the address: ${r.stderr}`);
  const still = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  t.is(still.status, 200, 'the first daemon still serves its metrics');
  await still.text();
});
