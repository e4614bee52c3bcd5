/**
 * containerd 1.6 (`ctr run --cni`) on a vsw nat network through the vsw-cni
 * plugin. ctr reads only the host's CNI places: the lexically first file in
 * /etc/cni/net.d and plugins in /opt/cni/bin. So this file installs, and
 * afterwards removes exactly, /opt/cni/bin/loopback (a symlink, installCniPlugins),
 * /opt/cni/bin/vsw-cni (`vsw cni install --bin-dir /opt/cni/bin --conf-dir
 * /tmp/PREFIX/conf`, removed by `vsw cni uninstall`) and
 * /etc/cni/net.d/00-PREFIX.conflist (a copy of the conflist vsw wrote,
 * installCniConf), and checks the host has none of them afterwards.
 * containerd itself runs with everything under /tmp/PREFIX/containerd
 * (startContainerd). A vsw endpoint x lives in a namespace the test made.
 *
 * What ctr 1.6 passes (measured here, and asserted): CNI_CONTAINERID is
 * `<containerd namespace>-<container id>` (ctr's FullID), so the endpoint's
 * owner is `cni:<namespace>-<id>/eth0`; CNI_NETNS is `/proc/<task pid>/ns/net`
 * (not a file under /run/netns); a foreground `--rm` container gets a DEL
 * (with an empty CNI_NETNS) after it exits; a detached one (`-d`) never
 * does, and vsw's health check removes its endpoint once the namespace is
 * gone (the process exited).
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, inNetns, runPrefix, sh } from './helpers/env.js';
import { createEndpoint, type DaemonHandle, type EndpointJson, startDaemon } from './helpers/daemon.js';
import { readIpForward, finishNatTest } from './helpers/nat.js';
import { type CniConfInstall, type CniPluginsInstall, type ContainerdHandle, installCniConf, installCniPlugins, runtimeAvailable, startContainerd } from './helpers/runtimes.js';

const prefix = runPrefix();
/** A nat network's name is its host interface's name too: at most 15 characters. */
const netN = `${prefix}-n`;
const SUBNET = '10.119.0.0/24';
const nsX = `${prefix}-x`;
const CONF_DIR = `/tmp/${prefix}/conf`;
const HOST_BIN = '/opt/cni/bin';
const HOST_CONF = '/etc/cni/net.d';
const LAUNCHER = join(HOST_BIN, 'vsw-cni');
const RESULTS = '/var/lib/cni/results';
const HEALTH_TIMEOUT_MS = 30_000;

let d: DaemonHandle;
let forwardBefore: string | undefined;
let c: ContainerdHandle | undefined;
let image: string;
let x: EndpointJson;
let plugins: CniPluginsInstall | undefined;
let conf: CniConfInstall | undefined;
let launcherWritten = false;
/** ctr passes CNI_CONTAINERID as `<namespace>-<id>`; vsw names the endpoint `cni-` and that whole. */
const D1 = `d1-${prefix}`;
/** /opt/cni and /opt/cni/bin as they were before this file: what must be gone again afterwards. */
const hostDirsAbsent = ['/opt/cni', HOST_BIN].filter((p) => !existsSync(p));

test.before(async () => {
  const missing = await runtimeAvailable('containerd');
  if (missing !== null) throw new Error(`containerd cannot run here: ${missing}`);
  if (!existsSync('/usr/lib/cni/loopback')) throw new Error('/usr/lib/cni/loopback is missing (package containernetworking-plugins): ctr run --cni needs it.');
  if (existsSync(LAUNCHER) || isSymlink(LAUNCHER)) throw new Error(`${LAUNCHER} exists already: it is not this run's to replace.`);
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', SUBNET, netN]);
  await addNetns(nsX);
  x = await createEndpoint(d, netN, nsX);
  // loopback first: installCniPlugins records /opt/cni and /opt/cni/bin as its own when it creates them.
  plugins = installCniPlugins(['loopback']);
  const written = (await d.vswOk(['cni', 'install', '--network', netN, '--bin-dir', HOST_BIN, '--conf-dir', CONF_DIR])).trim().split('\n');
  launcherWritten = true;
  const vswConf = join(CONF_DIR, `10-vsw-${netN}.conflist`);
  if (written[0] !== LAUNCHER || written[1] !== vswConf) throw new Error(`vsw cni install printed ${JSON.stringify(written)}`);
  conf = installCniConf(prefix, readFileSync(vswConf, 'utf8'));
  const first = cniConfFiles()[0];
  if (first !== conf.path) throw new Error(`ctr would read ${first}, not ${conf.path}: another run's conflist comes first in ${HOST_CONF}`);
  c = await startContainerd(prefix);
  image = await c.importBusyboxImage();
});

test.after.always(async () => {
  const problems: string[] = [];
  try {
    if (c) {
      try {
        await c.stop();
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    // Every container is gone: vsw must have no endpoint of one left (their namespaces went with their processes).
    if (d && !d.exited()) {
      const left = await waitNoCniEndpoints(HEALTH_TIMEOUT_MS);
      if (left.length > 0) problems.push(`endpoints of removed containers remain after ${HEALTH_TIMEOUT_MS} ms: ${left.map((e) => `${e.name} (${e.owner})`).join(', ')}`);
    }
    if (launcherWritten) {
      const r = await d.vsw(['cni', 'uninstall', '--bin-dir', HOST_BIN, '--conf-dir', CONF_DIR]);
      if (r.code !== 0) problems.push(`vsw cni uninstall exited ${r.code}: ${r.stderr.trim()}`);
      else if (!r.stdout.split('\n').includes(LAUNCHER)) problems.push(`vsw cni uninstall did not remove ${LAUNCHER}: it printed ${JSON.stringify(r.stdout.trim())}`);
    }
    const confPath = conf?.path;
    conf?.remove();
    plugins?.remove();
    // What this file put on the host is gone, and only that.
    if (existsSync(LAUNCHER) || isSymlink(LAUNCHER)) problems.push(`${LAUNCHER} remains`);
    if (plugins && plugins.paths.some((p) => existsSync(p) || isSymlink(p))) problems.push(`${plugins.paths.join(', ')} remain`);
    if (confPath && existsSync(confPath)) problems.push(`${confPath} remains`);
    for (const dir of hostDirsAbsent) if (existsSync(dir)) problems.push(`${dir} remains (it did not exist before this file ran)`);
    if (existsSync(RESULTS)) {
      const cached = readdirSync(RESULTS).filter((f) => f.startsWith(`${netN}-`));
      if (cached.length > 0) problems.push(`libcni results remain: ${cached.join(', ')}`);
    }
  } finally {
    await finishNatTest(prefix, d, forwardBefore, problems);
  }
});

// ----------------------------------------------------------------- helpers

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** The files libcni considers in /etc/cni/net.d, in the order it sorts them (ctr takes the first). */
function cniConfFiles(): string[] {
  return readdirSync(HOST_CONF)
    .filter((f) => f.endsWith('.conf') || f.endsWith('.conflist') || f.endsWith('.json'))
    .sort()
    .map((f) => join(HOST_CONF, f));
}

async function endpoints(): Promise<EndpointJson[]> {
  return d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
}

/** The owner ctr's CNI calls give an endpoint: CNI_CONTAINERID is `<namespace>-<id>`. */
function ownerOf(id: string): string {
  return `cni:${c!.namespace}-${id}/eth0`;
}

async function endpointOf(id: string): Promise<EndpointJson | undefined> {
  return (await endpoints()).find((e) => e.owner === ownerOf(id));
}

async function waitNoCniEndpoints(timeoutMs: number): Promise<EndpointJson[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = (await endpoints()).filter((e) => e.owner?.startsWith('cni:'));
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(250);
  }
}

/** Polls until `id`'s endpoint is gone; resolves to the ms it took, or null if it stayed for timeoutMs. */
async function waitEndpointGone(id: string, timeoutMs: number): Promise<number | null> {
  const started = Date.now();
  for (;;) {
    if ((await endpointOf(id)) === undefined) return Date.now() - started;
    if (Date.now() - started > timeoutMs) return null;
    await sleep(100);
  }
}

async function waitEndpoint(id: string, timeoutMs = 15_000): Promise<EndpointJson> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ep = await endpointOf(id);
    if (ep) return ep;
    if (Date.now() > deadline) throw new Error(`no endpoint with owner ${ownerOf(id)} within ${timeoutMs} ms: ${JSON.stringify((await endpoints()).map((e) => e.owner))}`);
    await sleep(100);
  }
}

/** The pid of a task (`ctr task ls`: TASK PID STATUS). */
async function taskPid(id: string): Promise<number> {
  const line = (await c!.ctrOk(['task', 'ls'])).split('\n').find((l) => l.split(/\s+/)[0] === id);
  const pid = Number(line?.split(/\s+/)[1]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`ctr task ls has no running task ${id}: ${JSON.stringify(line)}`);
  return pid;
}

interface LinkJson {
  ifname: string;
  address?: string;
  linkinfo?: { info_kind?: string; info_data?: { type?: string } };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function eth0In(netnsPath: string): Promise<LinkJson | undefined> {
  const r = await sh('nsenter', [`--net=${netnsPath}`, 'ip', '-d', '-j', 'addr', 'show']);
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout) as LinkJson[]).find((l) => l.ifname === 'eth0');
}

/** How the daemon removed endpoint `id`: "DEL" (an API delete, the plugin's), "health check" (namespace gone), or "not logged". */
function howRemoved(id: string): string {
  const msgs = d
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; endpoint?: string })
    .filter((l) => l.endpoint === id && l.msg.startsWith('endpoint removed'))
    .map((l) => l.msg);
  // detach() logs "endpoint removed" either way; the health check logs why before it.
  if (msgs.some((m) => m.includes('namespace is gone'))) return 'health check (namespace gone)';
  if (msgs.includes('endpoint removed')) return 'DEL (API delete)';
  return 'not logged';
}

function hostHasMac(mac: string): Promise<boolean> {
  return sh('ip', ['-j', 'link', 'show']).then((r) => (JSON.parse(r.stdout) as LinkJson[]).some((l) => l.address === mac));
}

// ------------------------------------------------------------------- tests

test.serial('ctr run --cni: a containerd container gets a vsw endpoint in its namespace and reaches a vsw endpoint', async (t) => {
  // Foreground --rm, the brief's command: ping x and exit.
  const p1 = `p1-${prefix}`;
  const r = await c!.ctr(['run', '--rm', '--cni', image, p1, 'ping', '-c', '3', '-W', '2', x.ip], { timeoutMs: 60_000 });
  t.is(r.code, 0, `ctr run --rm --cni ... ping -c 3 ${x.ip}: ${(r.stdout + r.stderr).trim().split('\n').slice(-3).join(' | ')}`);
  t.regex(r.stdout, /3 packets transmitted, 3 packets received/);

  // Detached, to look at it while it runs.
  const d1 = D1;
  await c!.ctrOk(['run', '-d', '--cni', image, d1, 'sleep', '600']);
  const pid = await taskPid(d1);
  const ep = await waitEndpoint(d1);
  t.is(ep.owner, `cni:${c!.namespace}-${d1}/eth0`, 'owner: ctr passes CNI_CONTAINERID as <namespace>-<id>');
  t.is(ep.name, `cni-${c!.namespace}-${d1}`);
  t.is(ep.network, netN);
  t.is(ep.ifname, 'eth0');
  t.is(ep.state, 'up');
  t.is(ep.netns, `/proc/${pid}/ns/net`, 'ctr passes CNI_NETNS as the task\'s /proc/PID/ns/net');
  const eth0 = await eth0In(ep.netns);
  if (!eth0) return t.fail(`no eth0 in ${ep.netns}`);
  t.is(eth0.linkinfo?.info_kind, 'tun');
  t.is(eth0.linkinfo?.info_data?.type, 'tap');
  t.is(eth0.address, ep.mac);
  t.deepEqual(
    eth0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    [`${ep.ip}/${ep.prefixLength}`],
  );
  const ex = await c!.ctr(['task', 'exec', '--exec-id', 'ping1', d1, 'ping', '-c', '3', '-W', '2', x.ip], { timeoutMs: 30_000 });
  t.is(ex.code, 0, `ctr task exec ${d1} ping ${x.ip}: ${(ex.stdout + ex.stderr).trim().split('\n').slice(-2).join(' | ')}`);
  const back = await inNetns(nsX, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', ep.ip]);
  t.is(back.code, 0, `${nsX} -> ${ep.ip}: ${back.stdout.trim().split('\n').pop()}`);
  // The --rm container's endpoint did not outlive it.
  const p1Gone = await waitEndpointGone(p1, HEALTH_TIMEOUT_MS);
  t.not(p1Gone, null, `${p1}'s endpoint is removed after ctr run --rm returned`);
});

test.serial('removed containers leave no endpoint: --rm gets DEL, -d is cleaned up by vsw once its namespace is gone', async (t) => {
  // A foreground --rm container, ended from outside while ctr waits on it.
  const fg = `fg-${prefix}`;
  const child = spawn('ctr', ['-a', c!.address, '-n', c!.namespace, 'run', '--runc-root', c!.runcRoot, '--fifo-dir', c!.fifoDir, '--rm', '--cni', image, fg, 'sleep', '600'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const fgEp = await Promise.race([
    waitEndpoint(fg),
    exited.then((code) => {
      throw new Error(`ctr run --rm --cni ${fg} exited ${String(code)} before its endpoint appeared: ${out.trim()}`);
    }),
  ]);
  t.is(fgEp.state, 'up');
  await c!.ctrOk(['task', 'kill', '-s', 'SIGKILL', fg]);
  const code = await Promise.race([exited, sleep(30_000, 'timeout' as const, { ref: false })]);
  t.not(code, 'timeout', `ctr run --rm did not return within 30 s of the task's kill: ${out}`);
  const fgGone = await waitEndpointGone(fg, HEALTH_TIMEOUT_MS);
  t.not(fgGone, null, `${fg}'s endpoint (${fgEp.id}) is still there ${HEALTH_TIMEOUT_MS} ms after ctr run --rm returned`);
  t.false(await hostHasMac(fgEp.mac), `no link in the host namespace has ${fgEp.mac}`);
  t.deepEqual((await c!.ctrOk(['containers', 'ls', '-q'])).split('\n').filter((l) => l === fg), [], 'ctr removed the container');
  t.log(`--rm: ctr returned ${String(code)}; endpoint gone ${fgGone} ms after; removed by ${howRemoved(fgEp.id)}`);

  // The detached container from the first test: ctr never sends DEL for it.
  const d1 = D1;
  const ep = await endpointOf(d1);
  if (!ep) return t.fail(`${d1} has no endpoint (the first test starts it)`);
  const cached = existsSync(RESULTS) ? readdirSync(RESULTS).filter((f) => f.startsWith(`${netN}-`) && f.includes(d1)) : [];
  await c!.ctrOk(['task', 'kill', '-s', 'SIGKILL', d1]);
  const deadline = Date.now() + 10_000;
  let rm = await c!.ctr(['task', 'rm', d1]);
  while (rm.code !== 0 && Date.now() < deadline) {
    await sleep(100);
    rm = await c!.ctr(['task', 'rm', d1]);
  }
  t.is(rm.code, 0, `ctr task rm ${d1}: ${rm.stderr.trim()}`);
  await c!.ctrOk(['containers', 'rm', d1]);
  const removedAt = Date.now();
  const gone = await waitEndpointGone(d1, HEALTH_TIMEOUT_MS);
  t.not(gone, null, `${d1}'s endpoint (${ep.id}) is still there ${HEALTH_TIMEOUT_MS} ms after its task and container were removed`);
  t.is(howRemoved(ep.id), 'health check (namespace gone)', 'no DEL came for the detached container: vsw noticed its namespace was gone');
  t.false(await hostHasMac(ep.mac), `no link in the host namespace has ${ep.mac}`);
  t.log(`-d: endpoint gone ${gone ?? 'never'} ms after ctr containers rm returned (${Date.now() - removedAt} ms polled); libcni cached results for it: ${cached.join(', ') || 'none'}`);
  t.deepEqual((await endpoints()).map((e) => e.id), [x.id], 'only x is left');
});
