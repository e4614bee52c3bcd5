/**
 * Restart under load, on a real daemon: two endpoints a and b on internal
 * network i (10.91.0.0/24) with an iperf3 TCP stream and a fast ping between
 * them, and a container c on nat network n (172.25.0.0/24) with two
 * long-lived TCP echo connections: one from c to an echo server in an
 * "outside" namespace (through the NAT, SNAT), and one from the outside to a
 * port c publishes, reached through the external address (the DNAT path in
 * the switch, not the host-side proxy). The outside namespace is routed
 * through the host by a veth pair (198.18.K.0/24).
 *
 * What it proves:
 * - SIGTERM + start: the daemon exits 0, both long-lived connections carry
 *   data afterwards on the same TCP connection (no reset, no reconnect), the
 *   SNAT translation keeps its external port, and the ping loss is bounded;
 *   the gap, the loss, what iperf3 saw and the time from the new daemon's
 *   socket to the first ping reply are reported with t.log.
 * - SIGKILL + start: endpoints, ACL rules, the QoS cap and published ports
 *   (host listener and external address) come back, and the first ping
 *   reply comes within 1 s of the socket answering. Established connections
 *   through the NAT may reset (nothing was saved); what they did is logged.
 */
import test, { type ExecutionContext } from 'ava';
import { type ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EndpointPolicy, Network } from '../../src/service/api-types.js';
import type { RestoreReport } from '../../src/service/restore.js';
import { addNetns, inNetns, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import {
  createEndpoint,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  type LineReader,
  readLines,
  restartDaemon,
  startDaemon,
  teardown,
} from './helpers/daemon.js';
import {
  addOutsideNamespace,
  echoCount,
  freeNet24,
  hostPortBase,
  natState,
  type Outside,
  prefixNumber,
  readIpForward,
  removeNatLeftovers,
  startEchoClient,
  startServer,
  tcpConnect,
} from './helpers/nat.js';
import { TCP_ECHO_SERVER } from './helpers/echo.js';

const prefix = runPrefix();
const netI = `${prefix}-i`;
/** A nat network's name is also its host interface's name: at most 15 characters. */
const netN = `${prefix}-n`;
const nsA = `${prefix}-a`;
const nsB = `${prefix}-b`;
const nsC = `${prefix}-c`;
/** c's echo server, published on the host as HOST_PORT. */
const C_PORT = 7000;
const HOST_PORT = hostPortBase(prefix) + 3;
/** The echo server in the outside namespace. */
const OUT_PORT = 7100;
/** A port on b nobody listens on; the ACL rule of test (b) blocks it. */
const BLOCKED_PORT = 9999;

let d: DaemonHandle;
let forwardBefore: string | undefined;
let outside: Outside;
let ext: string;
let a: EndpointJson;
let b: EndpointJson;
let c: EndpointJson;

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  // Another start offset than nat.test.ts's, so concurrent runs rarely even probe the same /24.
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', ((prefixNumber(prefix) + 97) % 254) + 1));
  [a, b] = await createNetworkWithEndpoints(d, netI, '10.91.0.0/24', [nsA, nsB]);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.25.0.0/24', netN]);
  const info = await d.vswJson<Network>(['network', 'inspect', netN]);
  if (!info.nat) throw new Error(`network inspect ${netN} has no nat section: ${JSON.stringify(info)}`);
  ext = info.nat.externalIp;
  await addNetns(nsC);
  c = await createEndpoint(d, netN, nsC, ['-p', `${HOST_PORT}:${C_PORT}`]);
});

test.after.always(async () => {
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

// ----------------------------------------------------------------- helpers

interface PingRun {
  /** Replies as they arrive: receive time (ms since the epoch, from ping -D) and sequence number. */
  replies(): { ts: number; seq: number }[];
  /** SIGINT, then the summary ping prints. */
  stop(): Promise<{ transmitted: number; received: number; replies: { ts: number; seq: number }[] }>;
}

/** A continuous ping with receive timestamps (-D), stopped with SIGINT for its summary. */
function startPing(ns: string, ip: string, intervalS: string): PingRun {
  const child = spawnInNetns(ns, 'ping', ['-D', '-n', '-i', intervalS, '-W', '1', ip]);
  const out = readLines(child);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const replies = (): { ts: number; seq: number }[] =>
    out.lines.flatMap((l) => {
      const m = /^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)/.exec(l);
      return m ? [{ ts: Number(m[1]) * 1000, seq: Number(m[2]) }] : [];
    });
  return {
    replies,
    async stop() {
      child.kill('SIGINT');
      await Promise.race([exited, sleep(5_000, undefined, { ref: false }).then(() => child.kill('SIGKILL'))]);
      await exited;
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out.lines.join('\n'));
      if (!m) throw new Error(`ping printed no summary: ${out.lines.slice(-3).join(' | ')} ${out.stderr()}`);
      return { transmitted: Number(m[1]), received: Number(m[2]), replies: replies() };
    },
  };
}

/** The largest gap between consecutive replies: where the restart was. `resumed` is the first reply after it. */
function largestGap(replies: { ts: number; seq: number }[]): { gapMs: number; before: number; resumed: number; seqsMissing: number } {
  let best = { gapMs: -1, before: 0, resumed: 0, seqsMissing: 0 };
  for (let i = 1; i < replies.length; i++) {
    const gap = replies[i].ts - replies[i - 1].ts;
    if (gap > best.gapMs) best = { gapMs: gap, before: replies[i - 1].ts, resumed: replies[i].ts, seqsMissing: replies[i].seq - replies[i - 1].seq - 1 };
  }
  return best;
}

/**
 * When the restarted daemon's API socket takes connections (ms since the epoch). Not the file's
 * existence: after a SIGKILL the dead daemon's socket file is still there until the new one replaces it.
 */
async function socketAnswers(path: string, d2: DaemonHandle, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ path });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return Date.now();
    if (d2.exited()) throw new Error(`the restarted daemon exited before its socket answered:\n${d2.log()}`);
    if (Date.now() > deadline) throw new Error(`the restarted daemon's socket did not answer within ${timeoutMs} ms:\n${d2.log()}`);
    await sleep(2);
  }
}

/** The daemon's pino line with this message, parsed (the last one). */
function logLine<T>(d2: DaemonHandle, msg: string): T & { msg: string } {
  const lines = d2
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string })
    .filter((l) => l.msg === msg);
  if (lines.length === 0) throw new Error(`the daemon did not log "${msg}":\n${d2.log().split('\n').slice(-10).join('\n')}`);
  return lines[lines.length - 1] as T & { msg: string };
}

/** One line through an echo server on a new TCP connection: prints what came back, or "failed ...". */
const ECHO_ONCE = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.sendall(b"hello\\n")
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
    print(data.decode().strip() or "failed: closed without an answer")
except OSError as e:
    print("failed %s: %s" % (type(e).__name__, e))
`;

async function echoOnce(ns: string | null, ip: string, port: number): Promise<string> {
  const r = ns === null ? await sh('python3', ['-c', ECHO_ONCE, ip, String(port)], { timeoutMs: 15_000 }) : await inNetns(ns, 'python3', ['-c', ECHO_ONCE, ip, String(port)], { timeoutMs: 15_000 });
  return r.stdout.trim() || `exit ${r.code}: ${r.stderr.trim()}`;
}

/** The echo client's numbers are consecutive from 0: one TCP connection, nothing lost or repeated. */
function assertOneStream(t: ExecutionContext, what: string, lines: LineReader): void {
  const numbers = lines.lines.filter((l) => l.startsWith('echo ')).map((l) => Number(l.slice(5)));
  t.true(
    numbers.every((n, i) => n === i),
    `${what}: the echoed numbers are not 0..${numbers.length - 1} in order: ${numbers.slice(0, 5).join(',')}...${numbers.slice(-5).join(',')}`,
  );
  const bad = lines.lines.filter((l) => l === 'eof' || l.startsWith('error') || l === 'connected');
  t.deepEqual(bad, ['connected'], `${what}: one "connected" and no eof or error: ${lines.lines.slice(-3).join(' | ')} ${lines.stderr()}`);
}

/** iperf3 -s for one test in `ns`, resolved once it listens. */
async function startIperfServer(t: ExecutionContext, ns: string, ip: string): Promise<void> {
  const server = spawnInNetns(ns, 'iperf3', ['-s', '-1', '-B', ip, '--forceflush']);
  t.teardown(() => {
    server.kill('SIGKILL');
  });
  await readLines(server).waitFor(/Server listening/, 1, 5_000);
}

interface IperfInterval {
  sum: { start: number; end: number; bytes: number; bits_per_second: number; retransmits?: number };
}

/** What an iperf3 -J client run saw, in one line for t.log; tolerant of a run that failed. */
function describeIperf(stdout: string, code: number | null): string {
  let report: { intervals?: IperfInterval[]; end?: { sum_sent?: { bytes: number; retransmits?: number } }; error?: string };
  try {
    report = JSON.parse(stdout) as typeof report;
  } catch {
    return `iperf3 exited ${code} without a JSON report: ${stdout.slice(0, 300)}`;
  }
  const intervals = report.intervals ?? [];
  const stalled = intervals.filter((i) => i.sum.bytes === 0).map((i) => `${i.sum.start.toFixed(1)}-${i.sum.end.toFixed(1)}`);
  const rates = intervals.map((i) => (i.sum.bits_per_second / 1e6).toFixed(0)).join(' ');
  return `iperf3 exit ${code}${report.error ? ` (${report.error})` : ''}: ${intervals.length} intervals, Mbit/s per 0.5 s: ${rates}; stalled intervals: ${stalled.join(', ') || 'none'}; retransmits ${report.end?.sum_sent?.retransmits ?? '?'}; ${((report.end?.sum_sent?.bytes ?? 0) / 1e6).toFixed(0)} MB sent`;
}

// ------------------------------------------------------------------- tests

test.serial('SIGTERM + start under load: both long-lived TCP connections through the NAT carry on, the translation keeps its port, and ping loss is bounded', async (t) => {
  // The two long-lived connections: c -> outside (SNAT), outside -> external address:HOST_PORT -> c (DNAT).
  const outServer = await startServer(t, outside.ns, TCP_ECHO_SERVER, OUT_PORT);
  const cServer = await startServer(t, nsC, TCP_ECHO_SERVER, C_PORT);
  const snat = await startEchoClient(t, nsC, outside.ip, OUT_PORT);
  const dnat = await startEchoClient(t, outside.ns, ext, HOST_PORT);
  await snat.waitFor(/^echo \d+$/, 3, 5_000);
  await dnat.waitFor(/^echo \d+$/, 3, 5_000);
  t.deepEqual(outServer.lines.filter((l) => l.startsWith('accepted ')), [`accepted ${ext}`], 'the outside server sees the external address');
  t.deepEqual(cServer.lines.filter((l) => l.startsWith('accepted ')), [`accepted ${outside.ip}`], 'c sees the outside client itself: the DNAT path, not the host proxy');
  const snatBefore = (await natState(d, netN)).translations.filter((x) => x.protocol === 'tcp' && x.remote === `${outside.ip}:${OUT_PORT}`);
  t.is(snatBefore.length, 1, JSON.stringify(snatBefore));
  t.regex(snatBefore[0]?.inside ?? '', new RegExp(`^${c.ip.replace(/\./g, '\\.')}:\\d+$`), 'the translation is c\'s');

  // The load: an iperf3 stream a -> b (paced, so the two cores keep room for the restart itself) and a ping a -> b every 50 ms.
  await startIperfServer(t, nsB, b.ip);
  const iperf: ChildProcess = spawnInNetns(nsA, 'iperf3', ['-c', b.ip, '-t', '12', '-i', '0.5', '-b', '2G', '-J']);
  t.teardown(() => {
    iperf.kill('SIGKILL');
  });
  const iperfOut = readLines(iperf);
  const iperfDone = new Promise<number | null>((resolve) => iperf.on('exit', (code) => resolve(code)));
  const ping = startPing(nsA, b.ip, '0.05');
  await sleep(2_500);
  t.true(ping.replies().length >= 20, `ping a -> b before the restart: ${ping.replies().length} replies`);

  const stopAt = Date.now();
  const code = await d.stop('SIGTERM');
  const stoppedAt = Date.now();
  t.is(code, 0, `SIGTERM exit code; the log ends:\n${d.log().split('\n').slice(-5).join('\n')}`);
  d = await restartDaemon(d, { noWait: true });
  const socketAt = await socketAnswers(d.socket, d);
  const counts = { snat: echoCount(snat), dnat: echoCount(dnat) };

  // The same connections carry data again: at least 10 more echoes each (a second's worth), no reconnect.
  await snat.waitFor(/^echo \d+$/, counts.snat + 10, 15_000);
  await dnat.waitFor(/^echo \d+$/, counts.dnat + 10, 15_000);
  assertOneStream(t, 'c -> outside (SNAT)', snat);
  assertOneStream(t, 'outside -> external address (DNAT)', dnat);
  t.is(outServer.lines.filter((l) => l.startsWith('accepted ')).length, 1, `the outside server accepted no second connection: ${outServer.lines.join(' | ')}`);
  t.is(cServer.lines.filter((l) => l.startsWith('accepted ')).length, 1, `c's server accepted no second connection: ${cServer.lines.join(' | ')}`);
  const snatAfter = (await natState(d, netN)).translations.filter((x) => x.protocol === 'tcp' && x.remote === `${outside.ip}:${OUT_PORT}`);
  t.deepEqual(
    snatAfter.map((x) => [x.inside, x.external]),
    snatBefore.map((x) => [x.inside, x.external]),
    'the SNAT translation has the same inside and external address and port',
  );

  const restored = logLine<RestoreReport>(d, 'state restored');
  t.truthy(restored.connections, `the start imported the connections of the clean stop: ${JSON.stringify(restored)}`);
  t.true((restored.connections?.translations ?? 0) >= 1, `translations imported: ${JSON.stringify(restored.connections)}`);

  // An unref'd timer: a pending one would keep the test process alive after the last test.
  const iperfCode = await Promise.race([iperfDone, sleep(40_000, undefined, { ref: false }).then(() => 'timeout')]);
  const p = await ping.stop();
  const gap = largestGap(p.replies);
  t.true(gap.before <= stopAt + 100 && gap.resumed >= stoppedAt, `the largest ping gap (${gap.before}..${gap.resumed}) spans the restart (stop at ${stopAt}, exited at ${stoppedAt})`);
  const lost = p.transmitted - p.received;
  // Bounded: what fits in the gap at 50 ms per ping, and the gap itself well under the 10 s a broken restart would take.
  t.true(gap.gapMs < 5_000, `ping gap ${gap.gapMs} ms`);
  t.true(lost <= Math.ceil(gap.gapMs / 50) + 5, `${lost} pings lost for a gap of ${gap.gapMs} ms`);
  t.log(`SIGTERM took ${stoppedAt - stopAt} ms to exit; the new daemon's socket answered ${socketAt - stoppedAt} ms after that`);
  t.log(`ping a -> b every 50 ms: ${p.transmitted} sent, ${p.received} received, ${lost} lost (${((100 * lost) / p.transmitted).toFixed(1)}%); gap ${gap.gapMs.toFixed(0)} ms (${gap.seqsMissing} sequence numbers)`);
  t.log(`first ping reply ${(gap.resumed - socketAt).toFixed(0)} ms after the socket answered (negative: forwarding resumed before the API was up)`);
  t.log(`long-lived connections: SNAT ${counts.snat} -> ${echoCount(snat)} echoes, DNAT ${counts.dnat} -> ${echoCount(dnat)}; external port kept: ${snatAfter[0]?.external}`);
  t.log(`imported: ${JSON.stringify(restored.connections)} in a start of ${(restored as { ms?: number }).ms} ms`);
  t.log(iperfCode === 'timeout' ? `iperf3 did not finish within 40 s of the restart: ${iperfOut.lines.slice(-3).join(' ')}` : describeIperf(iperfOut.lines.join('\n'), iperfCode as number | null));
});

test.serial('SIGKILL + start: endpoints, ACL rules, the QoS cap and published ports come back, and ping replies within 1 s of the socket answering', async (t) => {
  await d.vswOk(['policy', 'acl', 'add', b.id, '--action', 'block', '--direction', 'in', '--protocol', 'tcp', '--dst-ports', String(BLOCKED_PORT), '--priority', '100']);
  await d.vswOk(['policy', 'qos', 'set', a.id, '--max-egress', '800mbit']);
  const policyA = await d.vswJson<EndpointPolicy>(['policy', 'show', a.id, '--json']);
  const policyB = await d.vswJson<EndpointPolicy>(['policy', 'show', b.id, '--json']);
  const aclB = await d.vswJson<unknown[]>(['policy', 'acl', 'ls', b.id, '--json']);
  t.is(aclB.length, 1, JSON.stringify(aclB));
  t.truthy(policyA.qos, `policy show a has the cap: ${JSON.stringify(policyA)}`);
  // Blocked, the SYN is dropped and the connect times out; without the rule b's kernel would refuse it at once.
  t.regex(await tcpConnect(nsA, b.ip, BLOCKED_PORT, 1), /^failed (TimeoutError|timeout)/, 'the ACL rule is enforced before the kill');
  const endpointsBefore = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  const networksBefore = await d.vswJson<Network[]>(['network', 'ls', '--json']);

  await startServer(t, outside.ns, TCP_ECHO_SERVER, OUT_PORT);
  await startServer(t, nsC, TCP_ECHO_SERVER, C_PORT);
  t.is(await echoOnce(null, '127.0.0.1', HOST_PORT), 'hello', 'published port through the host listener before the kill');
  t.is(await echoOnce(outside.ns, ext, HOST_PORT), 'hello', 'published port through the external address before the kill');
  const snat = await startEchoClient(t, nsC, outside.ip, OUT_PORT);
  const dnat = await startEchoClient(t, outside.ns, ext, HOST_PORT);
  await snat.waitFor(/^echo \d+$/, 3, 5_000);
  await dnat.waitFor(/^echo \d+$/, 3, 5_000);

  const ping = startPing(nsA, b.ip, '0.02');
  await sleep(1_000);
  t.true(ping.replies().length >= 20, `ping a -> b before the kill: ${ping.replies().length} replies`);
  const killAt = Date.now();
  t.is(await d.stop('SIGKILL'), 137);
  const counts = { snat: echoCount(snat), dnat: echoCount(dnat) };
  d = await restartDaemon(d, { noWait: true });
  const socketAt = await socketAnswers(d.socket, d);
  // Wait (bounded) for replies after the kill; the assertion below is on the measured time of the first.
  const deadline = Date.now() + 5_000;
  while (ping.replies().filter((r) => r.ts > killAt + 50).length < 5 && Date.now() < deadline) await sleep(20);
  const p = await ping.stop();
  const gap = largestGap(p.replies);
  const firstPingMs = gap.resumed - socketAt;
  t.log(`SIGKILL at ${killAt}; the new daemon's socket answered ${socketAt - killAt} ms later; first ping reply ${firstPingMs.toFixed(0)} ms after the socket answered`);
  t.log(`ping a -> b every 20 ms: ${p.transmitted} sent, ${p.received} received, ${p.transmitted - p.received} lost; gap ${gap.gapMs.toFixed(0)} ms`);
  t.true(gap.before <= killAt + 50 && gap.resumed > killAt, `the largest ping gap (${gap.before}..${gap.resumed}) spans the kill at ${killAt}`);
  t.true(firstPingMs <= 1_000, `the first ping reply came ${firstPingMs.toFixed(0)} ms after the socket answered`);

  const restored = logLine<RestoreReport>(d, 'state restored');
  t.is(restored.connections, null, 'nothing was saved by a SIGKILL: no connections imported');
  const { adopted, repaired, recreated, down, removed } = restored.endpoints;
  t.deepEqual({ attached: adopted + repaired + recreated, down, removed }, { attached: 3, down: 0, removed: 0 }, JSON.stringify(restored.endpoints));
  t.log(`restore report: ${JSON.stringify(restored.endpoints)}, ${restored.networks} networks, start ${(restored as { ms?: number }).ms} ms`);

  const endpointsAfter = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  const key = (e: EndpointJson): unknown[] => [e.id, e.name, e.network, e.netns, e.ifname, e.ip, e.mac, e.publish ?? []];
  t.deepEqual(endpointsAfter.map(key).sort(), endpointsBefore.map(key).sort(), 'the same endpoints');
  t.deepEqual(endpointsAfter.map((e) => e.state), ['up', 'up', 'up']);
  t.deepEqual(
    (await d.vswJson<Network[]>(['network', 'ls', '--json'])).map((n) => [n.name, n.subnet, n.nat?.externalIp]).sort(),
    networksBefore.map((n) => [n.name, n.subnet, n.nat?.externalIp]).sort(),
    'the same networks',
  );
  t.deepEqual(await d.vswJson<EndpointPolicy>(['policy', 'show', a.id, '--json']), policyA, 'a\'s policy (the QoS cap)');
  t.deepEqual(await d.vswJson<EndpointPolicy>(['policy', 'show', b.id, '--json']), policyB, 'b\'s policy (the ACL rule)');
  t.deepEqual(await d.vswJson<unknown[]>(['policy', 'acl', 'ls', b.id, '--json']), aclB);
  t.regex(await tcpConnect(nsA, b.ip, BLOCKED_PORT, 1), /^failed (TimeoutError|timeout)/, 'the ACL rule is enforced after the restart');
  t.regex(await tcpConnect(nsA, b.ip, BLOCKED_PORT + 1, 2), /^failed ConnectionRefusedError/, 'and only that port: b\'s kernel refuses the next one itself');

  t.is(await echoOnce(null, '127.0.0.1', HOST_PORT), 'hello', 'published port through the host listener after the restart');
  t.is(await echoOnce(outside.ns, ext, HOST_PORT), 'hello', 'published port through the external address after the restart');

  // Established connections through the NAT: the translations were not saved, so they may reset. Reported, not asserted.
  await sleep(3_000);
  const fate = (what: string, r: LineReader, before: number): string => {
    const after = echoCount(r);
    const end = r.lines.find((l) => l === 'eof' || l.startsWith('error'));
    return `${what}: ${before} -> ${after} echoes${end ? `, then "${end}"` : after > before ? ', still carrying data' : ', stalled'}`;
  };
  t.log(`after SIGKILL: ${fate('c -> outside (SNAT)', snat, counts.snat)}; ${fate('outside -> external address (DNAT)', dnat, counts.dnat)}`);
});
