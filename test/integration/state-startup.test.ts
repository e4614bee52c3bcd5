/**
 * The daemon's start-up path, on real daemons: what it refuses and what it
 * takes over.
 * - A state.json it cannot read (not JSON, damaged, another format version)
 *   stops it with one sentence naming the file, and the file keeps its bytes
 *   and its mtime: it may be the only record of what vsw made on the host.
 * - `--default-network` (what `npm start` passes) creates `default` on the
 *   first start only; later starts restore it, with its endpoints, and a
 *   different `--default-subnet` does not change a saved network.
 * - A socket file left by a daemon killed with SIGKILL is replaced; any other
 *   file at the socket path is refused and left alone.
 * - A second daemon on the same state directory, or on the same socket, is
 *   refused with one sentence while the first keeps serving and switching.
 * Subnet 10.85.0.0/24 (network default); 10.86.0.0/24 is only ever asked for.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { Endpoint, Network } from '../../src/service/api-types.js';
import { addNetns, ping, runPrefix, sh, type CommandResult } from './helpers/env.js';
import { api, assertOneSentence, CLI, type DaemonHandle, linksIn, restartDaemon, startDaemon, teardown } from './helpers/daemon.js';

const prefix = runPrefix();
const SUBNET = '10.85.0.0/24';
const OTHER_SUBNET = '10.86.0.0/24';
const nsD = [`${prefix}-d1`, `${prefix}-d2`];

let d: DaemonHandle | undefined;
/** The daemon started once on a moved-away state file. */
let spare: DaemonHandle | undefined;
let defaultNet: Network;
const eps: Endpoint[] = [];

test.before(async () => {
  for (const ns of nsD) await addNetns(ns);
});

test.after.always(async () => {
  await teardown(prefix, d, spare);
});

/**
 * `vsw daemon` as a plain command with stdout (pino's log lines) and stderr apart: for starts that
 * must be refused. A start that is not refused is stopped by the timeout and leaves an empty stderr,
 * which the one-sentence check rejects.
 */
function daemonOnce(socket: string, stateDir: string, extra: string[] = []): Promise<CommandResult> {
  return sh('node', [CLI, 'daemon', '--socket', socket, '--state-dir', stateDir, ...extra], { timeoutMs: 15_000 });
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function apiOk<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await api<T>(d!, method, path, body);
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The first daemon still serves: it answers, lists its endpoints as before, and they reach each other. */
async function assertStillServing(t: ExecutionContext, what: string): Promise<void> {
  t.false(d!.exited(), `${what}: the first daemon is still running`);
  const listed = await apiOk<Endpoint[]>('GET', '/v1/endpoints');
  t.deepEqual(
    listed.map((e) => e.id).sort(),
    eps.map((e) => e.id).sort(),
    `${what}: the first daemon's endpoints`,
  );
  t.true(await ping(nsD[0], eps[1].ip), `${what}: ${nsD[0]} -> ${eps[1].ip} through the first daemon`);
}

test.serial('a state.json that is not JSON, damaged, or of another format version is refused with one sentence naming it, and keeps its bytes and mtime', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['not JSON', '{"version":1,"generation":7,"networks":[{"network":', /is not valid JSON/],
    ['empty', '', /is not valid JSON/],
    ['a future format version', JSON.stringify({ version: 99, generation: 3, networks: [], endpoints: [], compartments: [], host: { forwardingSetByVsw: false, nftTables: [] } }), /format version 99/],
    ['no version at all', JSON.stringify({ generation: 3, networks: [] }), /not a vsw state file/],
    ['damaged (endpoints is not a list)', JSON.stringify({ version: 1, generation: 3, written: '', networks: [], endpoints: 'x', compartments: [], host: { forwardingSetByVsw: false, nftTables: [] } }), /is damaged/],
  ];
  for (const [i, [what, text, re]] of cases.entries()) {
    const dir = `/tmp/${prefix}/bad${i}`;
    const stateDir = `${dir}/state`;
    const socket = `${dir}/vsw.sock`;
    mkdirSync(stateDir, { recursive: true });
    const file = `${stateDir}/state.json`;
    writeFileSync(file, text);
    const before = statSync(file);
    const r = await daemonOnce(socket, stateDir);
    assertOneSentence(t, r, `state.json ${what}`);
    t.regex(r.stderr, new RegExp(escape(file)), `state.json ${what}: the sentence names the file`);
    t.regex(r.stderr, re, `state.json ${what}`);
    t.is(readFileSync(file, 'utf8'), text, `state.json ${what}: its bytes`);
    const after = statSync(file);
    t.is(after.mtimeMs, before.mtimeMs, `state.json ${what}: its mtime`);
    t.is(after.ino, before.ino, `state.json ${what}: the same file, not a copy`);
    t.false(existsSync(socket), `state.json ${what}: the refused daemon left a socket`);
  }
  // The way out the sentence offers works: with the file moved away, the daemon starts empty.
  const stateDir = `/tmp/${prefix}/bad0/state`;
  const r = await sh('mv', [`${stateDir}/state.json`, `${stateDir}/state.json.bad`]);
  t.is(r.code, 0, r.stderr);
  spare = await startDaemon(prefix, { name: 'bad0' });
  t.deepEqual(await spare.vswJson<Network[]>(['network', 'ls', '--json']), []);
  t.is(await spare.stop('SIGTERM'), 0);
  t.is(readFileSync(`${stateDir}/state.json.bad`, 'utf8'), cases[0][1], 'the moved-away file is still as it was');
});

test.serial('--default-network creates default on the first start; a restart after SIGKILL restores it with its endpoints instead of making a second one', async (t) => {
  d = await startDaemon(prefix, { extraArgs: ['--default-network', '--default-subnet', SUBNET] });
  const first = await apiOk<Network[]>('GET', '/v1/networks');
  t.deepEqual(
    first.map((n) => [n.name, n.driver, n.subnet]),
    [['default', 'internal', SUBNET]],
  );
  defaultNet = first[0];
  for (const ns of nsD) eps.push(await apiOk<Endpoint>('POST', '/v1/endpoints', { network: 'default', netns: ns }));
  t.true(await ping(nsD[0], eps[1].ip), 'the endpoints on default reach each other');
  t.regex(d.log(), /network default \(10\.85\.0\.0\/24\) is ready/, 'the first start says it made the network');

  t.is(await d.stop('SIGKILL'), 137);
  const logBefore = d.log().length;
  d = await restartDaemon(d);
  const second = await apiOk<Network[]>('GET', '/v1/networks');
  t.deepEqual(second, [{ ...defaultNet, endpoints: eps.map((e) => e.id) }], 'one network default, as it was, with its endpoints');
  t.deepEqual(await apiOk<Endpoint[]>('GET', '/v1/endpoints'), eps, 'the endpoints, as they were');
  const log = d.log().slice(logBefore);
  t.notRegex(log, /is ready; try/, 'the second start did not create default again');
  t.regex(log, /"state restored"/);
  for (const [i, ns] of nsD.entries()) t.deepEqual(await linksIn(ns), ['lo', eps[i].ifname], `${ns} has one TAP, not two`);
  t.true(await ping(nsD[0], eps[1].ip), 'the endpoints on default reach each other after the restart');
});

test.serial('a later start with another --default-subnet keeps the saved default network as it is, and says so', async (t) => {
  t.is(await d!.stop('SIGTERM'), 0);
  const logBefore = d!.log().length;
  d = await restartDaemon(d!, { extraArgs: ['--default-network', '--default-subnet', OTHER_SUBNET] });
  const networks = await apiOk<Network[]>('GET', '/v1/networks');
  t.deepEqual(networks, [{ ...defaultNet, endpoints: eps.map((e) => e.id) }], 'default keeps its id and subnet, and stays alone');
  t.regex(d.log().slice(logBefore), /network default exists already with another subnet: kept as it is/);
  t.deepEqual(await apiOk<Endpoint[]>('GET', '/v1/endpoints'), eps);
  t.true(await ping(nsD[0], eps[1].ip));
});

test.serial('the socket file a daemon killed with SIGKILL leaves is replaced at start, and the new daemon serves on it', async (t) => {
  t.is(await d!.stop('SIGKILL'), 137);
  const stale = lstatSync(d!.socket);
  t.true(stale.isSocket(), 'the killed daemon left its socket file (the precondition)');
  const refused = await d!.vsw(['network', 'ls']);
  assertOneSentence(t, refused, 'the CLI on a stale socket');
  d = await restartDaemon(d!);
  const fresh = lstatSync(d.socket);
  t.true(fresh.isSocket());
  // The inode alone cannot tell: the stale socket's inode is freed by the unlink and may be reused at once.
  t.true(fresh.ino !== stale.ino || fresh.ctimeMs > stale.ctimeMs, `a new socket, not the stale one (inode ${stale.ino} -> ${fresh.ino}, ctime ${stale.ctimeMs} -> ${fresh.ctimeMs})`);
  await assertStillServing(t, 'after the stale socket was replaced');
});

test.serial('a file at the socket path that is not a socket is refused with one sentence naming it, and left in place', async (t) => {
  const dir = `/tmp/${prefix}/notsock`;
  mkdirSync(dir, { recursive: true });
  const socket = `${dir}/vsw.sock`;
  writeFileSync(socket, 'someone else\'s file\n');
  const r = await daemonOnce(socket, `${dir}/state`);
  assertOneSentence(t, r, 'a regular file at the socket path');
  t.regex(r.stderr, new RegExp(`${escape(socket)} exists and is not a socket`));
  t.is(readFileSync(socket, 'utf8'), 'someone else\'s file\n', 'the file is untouched');
  t.false(existsSync(`${dir}/state/state.json`), 'the refused daemon saved no state');
});

test.serial('a second daemon on the same state directory is refused with one sentence naming it, and the first keeps serving', async (t) => {
  const otherSocket = `/tmp/${prefix}/second/vsw.sock`;
  const stateBefore = readFileSync(`${d!.stateDir}/state.json`, 'utf8');
  const r = await daemonOnce(otherSocket, d!.stateDir);
  assertOneSentence(t, r, 'a second daemon on the same state directory');
  t.regex(r.stderr, new RegExp(`another vsw daemon \\(pid ${d!.pid}\\) is using the state directory ${escape(d!.stateDir)}`));
  t.false(existsSync(otherSocket), 'the refused daemon left no socket');
  t.is(readFileSync(`${d!.stateDir}/state.json`, 'utf8'), stateBefore, 'the refused daemon did not write the state');
  await assertStillServing(t, 'after a second daemon on the same state directory');
});

test.serial('a second daemon on the same socket with another state directory is refused with one sentence, and the first keeps serving', async (t) => {
  const socketBefore = lstatSync(d!.socket);
  const r = await daemonOnce(d!.socket, `/tmp/${prefix}/second/state`);
  assertOneSentence(t, r, 'a second daemon on the same socket');
  t.regex(r.stderr, new RegExp(`another vsw daemon is already serving ${escape(d!.socket)}`));
  t.is(lstatSync(d!.socket).ino, socketBefore.ino, 'the first daemon keeps its socket file');
  t.false(existsSync(`/tmp/${prefix}/second/state/state.json`), 'the refused daemon saved no state');
  await assertStillServing(t, 'after a second daemon on the same socket');
});
