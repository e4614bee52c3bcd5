/**
 * The cleanup the docs promise, asserted: a stopped daemon leaves every TAP,
 * compartment, nat host TAP, nftables table and the ip_forward it set in
 * place, and `vsw system reset` removes exactly that, and the state, and
 * nothing of anybody else's.
 *
 * Daemon a runs inside a test namespace h (its "host", reaching the outside
 * namespace o over a veth with a default route), so that the test owns the
 * net.ipv4.ip_forward it checks: set to 0 first, turned on by vsw for nat
 * network n (10.87.0.0/24), back to 0 after the reset. Daemon b runs in the
 * host namespace and owns a compartment with a process in it (internal
 * network i, 172.28.0.0/24): a daemon started through `ip netns exec` makes
 * its compartments in the private mount namespace `ip netns exec` gives it,
 * where nobody else can enter them and from where they vanish with the
 * daemon, so compartments are tested on a daemon in the host namespace.
 *
 * The last test runs scripts/cleanup.sh with a prefix narrower than the
 * run's (PREFIX-k) over a killed daemon k in namespace hk (nat network kn,
 * 10.87.1.0/24): step 1b must reset it in hk, leaving the namespaces outside
 * that prefix in place. The veths between the host namespaces and the
 * outside ones use 10.89.0.0/24 and 10.89.1.0/24.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Compartment, Endpoint, Network } from '../../src/service/api-types.js';
import { addNetns, inNetns, must, namespacesWithPrefix, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import {
  api,
  assertOneSentence,
  CLI,
  type DaemonHandle,
  leftovers,
  linksIn,
  processAlive,
  savedObjects,
  startDaemon,
  systemReset,
  teardown,
  type SavedObjects,
} from './helpers/daemon.js';
import { NFT } from './helpers/nat.js';

const prefix = runPrefix();
const nsHost = `${prefix}-h`;
const nsOut = `${prefix}-o`;
const netN = `${prefix}-n`;
const netI = `${prefix}-i`;
const nsE = [`${prefix}-e1`, `${prefix}-e2`];
const nsB = `${prefix}-e3`;
const compartment = `${prefix}-c1`;
/** The daemon cleanup.sh is pointed at, under the narrower prefix PREFIX-k; its namespaces are outside it. */
const kPrefix = `${prefix}-k`;
const nsHostK = `${prefix}-hk`;
const nsOutK = `${prefix}-ok`;
const netK = `${prefix}-kn`;
const nsEK = `${prefix}-ek`;
const CLEANUP = fileURLToPath(new URL('../../../scripts/cleanup.sh', import.meta.url));

let a: DaemonHandle | undefined;
let b: DaemonHandle | undefined;
let k: DaemonHandle | undefined;
let sleeper: ChildProcess | undefined;
const epsA: Endpoint[] = [];
const epsB: Endpoint[] = [];
let natA: Network;
let objectsA: SavedObjects;
let objectsB: SavedObjects;

/** A namespace acting as a host: eth0 on a veth to `out`, a default route through it, ip_forward 0. */
async function addHostNamespace(host: string, out: string, net: string): Promise<void> {
  await addNetns(host);
  await addNetns(out);
  await must('ip', ['link', 'add', 'eth0', 'netns', host, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out]);
  for (const [ns, ip] of [[host, `${net}.1`], [out, `${net}.2`]]) {
    await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  await must('ip', ['-n', host, 'route', 'add', 'default', 'via', `${net}.2`]);
  await must('ip', ['netns', 'exec', host, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
}

async function ipForward(ns: string): Promise<string> {
  const r = await inNetns(ns, 'sysctl', ['-n', 'net.ipv4.ip_forward']);
  if (r.code !== 0) throw new Error(`sysctl in ${ns}: ${r.stderr}`);
  return r.stdout.trim();
}

async function nftTables(ns: string): Promise<string[]> {
  const r = await inNetns(ns, NFT, ['list', 'tables', 'ip']);
  if (r.code !== 0) throw new Error(`nft list tables in ${ns}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[2]);
}

async function addrOf(ns: string, ifname: string): Promise<string[]> {
  const r = await sh('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', ifname]);
  if (r.code !== 0) return [];
  const links = JSON.parse(r.stdout) as { address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  return links.flatMap((l) => [l.address, ...l.addr_info.filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`)]);
}

async function apiOk<T>(d: DaemonHandle, method: string, path: string, body?: unknown): Promise<T> {
  const r = await api<T>(d, method, path, body);
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

test.before(async () => {
  await addHostNamespace(nsHost, nsOut, '10.89.0');
  for (const ns of [...nsE, nsB]) await addNetns(ns);
  a = await startDaemon(prefix, { netns: nsHost, name: 'a' });
  b = await startDaemon(prefix, { name: 'b' });
});

test.after.always(async () => {
  sleeper?.kill('SIGKILL');
  try {
    await teardown(prefix, a, b, k);
  } finally {
    rmSync(`/tmp/${kPrefix}`, { recursive: true, force: true });
  }
});

test.serial('a nat network in the test host turns ip_forward from 0 to 1, installs its table and host TAP; a compartment gets its process', async (t) => {
  t.is(await ipForward(nsHost), '0', 'the precondition: ip_forward is 0 in the test host');
  natA = await apiOk<Network>(a!, 'POST', '/v1/networks', { name: netN, driver: 'nat', subnet: '10.87.0.0/24' });
  for (const ns of nsE) epsA.push(await apiOk<Endpoint>(a!, 'POST', '/v1/endpoints', { network: netN, netns: ns }));
  t.is(await ipForward(nsHost), '1', 'vsw turned ip_forward on');
  t.deepEqual(natA.nat?.masqueradeVia, ['eth0'], 'the nat network masquerades through the test host\'s default route');
  t.deepEqual(await nftTables(nsHost), [`vsw_nat_${netN.replace(/-/g, '_')}`]);
  t.true((await linksIn(nsHost)).includes(natA.nat!.hostInterface));

  await apiOk(b!, 'POST', '/v1/networks', { name: netI, driver: 'internal', subnet: '172.28.0.0/24' });
  await apiOk<Compartment>(b!, 'POST', '/v1/compartments', { name: compartment });
  epsB.push(await apiOk<Endpoint>(b!, 'POST', '/v1/endpoints', { network: netI, netns: compartment }));
  epsB.push(await apiOk<Endpoint>(b!, 'POST', '/v1/endpoints', { network: netI, netns: nsB }));
  sleeper = spawnInNetns(compartment, 'sleep', ['600']);
  // ip netns exec execs sleep in place: the pid is the sleeper's once it shows up in the namespace.
  const deadline = Date.now() + 5_000;
  while (!(await sh('ip', ['netns', 'pids', compartment])).stdout.split('\n').includes(String(sleeper.pid))) {
    if (Date.now() > deadline) throw new Error(`sleep did not start in ${compartment}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const ping = await inNetns(compartment, 'ping', ['-c', '1', '-W', '2', epsB[1].ip]);
  t.is(ping.code, 0, `the compartment reaches ${epsB[1].ip}: ${ping.stdout}`);
});

test.serial('vsw system reset refuses while the daemon runs, with one sentence, and removes nothing', async (t) => {
  objectsA = savedObjects(a!);
  objectsB = savedObjects(b!);
  t.is(objectsA.taps.length, 2);
  t.deepEqual(objectsB.compartments, [compartment]);
  for (const [d, objects] of [[a!, objectsA], [b!, objectsB]] as const) {
    const all = await leftovers(objects, d.netns);
    const r = await systemReset(d);
    assertOneSentence(t, r, `reset beside daemon ${d.pid}`);
    t.regex(r.stderr, new RegExp(`another vsw daemon \\(pid ${d.pid}\\) is using the state directory ${d.stateDir}`));
    t.is(r.stdout.trim(), '', 'nothing was reported removed');
    t.deepEqual(await leftovers(objects, d.netns), all, 'everything the state names is still there');
    t.true(existsSync(`${d.stateDir}/state.json`), 'the state is still there');
    t.false(d.exited(), 'the daemon is still running');
    t.is((await api(d, 'GET', '/v1/endpoints')).status, 200, 'and still answers');
  }
  t.is(await ipForward(nsHost), '1');
  t.true(processAlive(sleeper!.pid!), 'the compartment\'s process is alive');
});

test.serial('SIGTERM leaves the TAPs with their addresses, the compartment and its process, the host TAP, the table and ip_forward in place', async (t) => {
  t.is(await a!.stop('SIGTERM'), 0);
  t.is(await b!.stop('SIGTERM'), 0);
  for (const [ns, e] of [...nsE.map((ns, i) => [ns, epsA[i]] as const), [compartment, epsB[0]] as const, [nsB, epsB[1]] as const]) {
    t.deepEqual(await addrOf(ns, e.ifname), [e.mac, `${e.ip}/${e.prefixLength}`], `${ns}/${e.ifname} after the stop`);
  }
  t.true(processAlive(sleeper!.pid!), 'the compartment\'s process outlives the daemon');
  t.true((await namespacesWithPrefix(prefix)).includes(compartment));
  const hostIf = natA.nat!;
  t.deepEqual((await addrOf(nsHost, hostIf.hostInterface)).slice(1), [`${hostIf.hostIp}/${hostIf.transit.split('/')[1]}`], 'the host TAP keeps its address');
  t.deepEqual(await nftTables(nsHost), [`vsw_nat_${netN.replace(/-/g, '_')}`]);
  t.is(await ipForward(nsHost), '1');
  t.true(existsSync(`${a!.stateDir}/runtime.bin`), 'the clean stop saved its connections');
});

test.serial('vsw system reset must run in the namespace the state was saved in: elsewhere it refuses with one sentence and removes nothing', async (t) => {
  const all = await leftovers(objectsA, nsHost);
  const r = await sh('node', [CLI, 'system', 'reset', '--state-dir', a!.stateDir]);
  assertOneSentence(t, r, 'reset from the host namespace of a state saved in the test host');
  t.regex(r.stderr, /belongs to a daemon in network namespace net:\[\d+\], and this runs in net:\[\d+\]/);
  t.deepEqual(await leftovers(objectsA, nsHost), all, 'everything the state names is still there');
  t.true(existsSync(`${a!.stateDir}/state.json`));
  t.is(await ipForward(nsHost), '1');
});

test.serial('vsw system reset removes everything the state names, sets ip_forward back to 0 and removes the state; the test\'s namespaces stay', async (t) => {
  const ra = await systemReset(a!);
  t.is(ra.code, 0, ra.stderr);
  const rb = await systemReset(b!);
  t.is(rb.code, 0, rb.stderr);
  const table = `vsw_nat_${netN.replace(/-/g, '_')}`;
  t.deepEqual(
    ra.stdout.trim().split('\n'),
    [
      ...epsA.map((e) => `removed TAP ${e.ifname} in network namespace ${e.netns} (endpoint ${e.name})`),
      `removed host interface ${natA.nat!.hostInterface} (nat network ${netN})`,
      `removed nftables table ip ${table}`,
      'set net.ipv4.ip_forward back to 0 (vsw had turned it on for its nat networks)',
      `removed the saved state in ${a!.stateDir}`,
    ],
    'one line per thing removed',
  );
  t.deepEqual(
    rb.stdout.trim().split('\n'),
    [
      // The compartment's TAP first: a namespace something else keeps alive would keep a persistent TAP.
      ...epsB.map((e) => `removed TAP ${e.ifname} in network namespace ${e.netns} (endpoint ${e.name})`),
      `removed network namespace ${compartment} (a compartment vsw created) and the processes in it`,
      `removed the saved state in ${b!.stateDir}`,
    ],
  );
  t.deepEqual(await leftovers(objectsA, nsHost), [], 'nothing named by daemon a\'s state is left');
  t.deepEqual(await leftovers(objectsB), [], 'nothing named by daemon b\'s state is left');
  for (const ns of [...nsE, nsB]) t.deepEqual(await linksIn(ns), ['lo'], `${ns} after the reset`);
  t.false((await namespacesWithPrefix(prefix)).includes(compartment), 'the compartment is gone');
  t.false(processAlive(sleeper!.pid!), 'the compartment\'s process was ended');
  t.deepEqual((await linksIn(nsHost)).sort(), ['eth0', 'lo'], 'the test host has only its own links');
  t.deepEqual(await nftTables(nsHost), [], 'no nftables table is left in the test host');
  t.is(await ipForward(nsHost), '0', 'ip_forward is 0 again');
  for (const d of [a!, b!]) {
    const files = existsSync(d.stateDir) ? readdirSync(d.stateDir) : [];
    t.deepEqual(files, [], `${d.stateDir} holds no state.json, runtime.bin or lock`);
  }
  t.deepEqual((await namespacesWithPrefix(prefix)).sort(), [nsHost, nsOut, ...nsE, nsB].sort(), 'the namespaces the test made are all still there');
});

test.serial('a second vsw system reset finds nothing to remove and exits 0', async (t) => {
  for (const d of [a!, b!]) {
    const r = await systemReset(d);
    t.is(r.code, 0, r.stderr);
    t.is(r.stdout.trim(), `nothing to remove: ${d.stateDir} holds no saved state`);
    t.is(r.stderr, '');
  }
});

test.serial('scripts/cleanup.sh with a narrower prefix resets what a killed daemon of the run left, in the namespace it ran in, and touches nothing outside that prefix', async (t) => {
  await addHostNamespace(nsHostK, nsOutK, '10.89.1');
  await addNetns(nsEK);
  t.is(await ipForward(nsHostK), '0', 'the precondition: ip_forward is 0 in the test host');
  k = await startDaemon(kPrefix, { netns: nsHostK });
  const net = await apiOk<Network>(k, 'POST', '/v1/networks', { name: netK, driver: 'nat', subnet: '10.87.1.0/24' });
  const ep = await apiOk<Endpoint>(k, 'POST', '/v1/endpoints', { network: netK, netns: nsEK });
  t.is(await k.stop('SIGKILL'), 137);
  const table = `vsw_nat_${netK.replace(/-/g, '_')}`;
  t.deepEqual(await nftTables(nsHostK), [table], 'the killed daemon left its table');
  t.true((await linksIn(nsHostK)).includes(net.nat!.hostInterface), 'and its host TAP');
  t.deepEqual(await addrOf(nsEK, ep.ifname), [ep.mac, `${ep.ip}/${ep.prefixLength}`], 'and its endpoint TAP');
  t.is(await ipForward(nsHostK), '1', 'and ip_forward on');

  const r = await sh('bash', [CLEANUP, kPrefix]);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  const via = `(vsw system reset --state-dir ${k.stateDir})`;
  for (const line of [
    `removed TAP ${ep.ifname} in network namespace ${nsEK} (endpoint ${ep.name}) ${via}`,
    `removed host interface ${net.nat!.hostInterface} (nat network ${netK}) ${via}`,
    `removed nftables table ip ${table} ${via}`,
    `set net.ipv4.ip_forward back to 0 (vsw had turned it on for its nat networks) ${via}`,
  ]) {
    t.true(r.stdout.split('\n').includes(line), `cleanup.sh did not print "${line}":\n${r.stdout}`);
  }
  t.deepEqual(await linksIn(nsEK), ['lo'], 'the endpoint TAP is gone');
  t.deepEqual((await linksIn(nsHostK)).sort(), ['eth0', 'lo'], 'the host TAP is gone');
  t.deepEqual(await nftTables(nsHostK), [], 'the table is gone');
  t.is(await ipForward(nsHostK), '0', 'ip_forward is 0 again');
  t.false(existsSync(`/tmp/${kPrefix}`), 'the daemon\'s directory (state, stale socket, log) is gone');
  t.deepEqual((await namespacesWithPrefix(prefix)).sort(), [nsHost, nsOut, ...nsE, nsB, nsHostK, nsOutK, nsEK].sort(), 'no namespace outside the narrower prefix was touched');
});
