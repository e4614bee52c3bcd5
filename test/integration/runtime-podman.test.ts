/**
 * podman 4.3 (CNI backend) on a vsw nat network through the vsw-cni plugin,
 * with real containers: an isolated podman (helpers/runtimes.ts podmanEnv,
 * everything under /tmp/PREFIX/podman) whose cni_plugin_dirs start with the
 * directory `vsw cni install --bin-dir` wrote the launcher to, and whose
 * network_config_dir holds the conflist `vsw cni install --conf-dir` wrote.
 * The nat network n (10.118.0.0/24) is made with the vsw CLI; a third
 * endpoint x lives in a namespace the test made (`vsw endpoint create`).
 *
 * What it proves:
 * - Two podman containers get vsw endpoints keyed `cni:<container id>/eth0`
 *   whose address is the one on their eth0 (a TAP in podman's namespace),
 *   and they reach each other and x.
 * - `podman run -p 18100:80` publishes through the kernel (publishVia
 *   "dnat", table `ip vsw_pub_<host interface>`): the container's httpd
 *   answers on 127.0.0.1 and on the host's own address; `podman rm` takes
 *   the endpoint, its TAP and the table away.
 * - The endpoints survive a daemon restart after SIGTERM and after SIGKILL:
 *   a ping between the containers keeps going across each, the endpoint ids
 *   stay, and `podman rm` afterwards removes the endpoint through the
 *   restarted daemon (CNI DEL, not the namespace health check).
 * - Bad input is refused with the plugin's one sentence and nothing made: a
 *   conflist naming an unknown vsw network, and the daemon stopped; with
 *   the daemon back, a new container works.
 *
 * Host ports 18100-18119 only (this file's range).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Network } from '../../src/service/api-types.js';
import { addNetns, inNetns, runPrefix, sh } from './helpers/env.js';
import { createEndpoint, type DaemonHandle, type EndpointJson, restartDaemon, startDaemon } from './helpers/daemon.js';
import { httpGet, NFT, nftIpTables, readIpForward, finishNatTest } from './helpers/nat.js';
import { podmanEnv, runtimeAvailable, type PodmanHandle } from './helpers/runtimes.js';

const prefix = runPrefix();
/** A nat network's name is its host interface's name too: at most 15 characters. */
const netN = `${prefix}-n`;
const SUBNET = '10.118.0.0/24';
const nsX = `${prefix}-x`;
/** Where `vsw cni install` writes the vsw-cni launcher; first in podman's cni_plugin_dirs. */
const BIN_DIR = `/tmp/${prefix}/cni-bin`;
const PUB_PORT = 18100;
const pubTable = `vsw_pub_${netN.replace(/[^A-Za-z0-9_]/g, '_')}`;

let d: DaemonHandle;
let p: PodmanHandle | undefined;
let image: string;
let forwardBefore: string | undefined;
let x: EndpointJson;
/** The two long-lived containers: name -> full container id. */
const ids = new Map<string, string>();
const c1 = `${prefix}-c1`;
const c2 = `${prefix}-c2`;

test.before(async () => {
  const missing = await runtimeAvailable('podman');
  if (missing !== null) throw new Error(`podman cannot run here: ${missing}`);
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', SUBNET, netN]);
  p = podmanEnv(prefix, { cniPluginDirs: [BIN_DIR, '/usr/lib/cni'] });
  const written = (await d.vswOk(['cni', 'install', '--network', netN, '--bin-dir', BIN_DIR, '--conf-dir', p.cniConfigDir])).trim().split('\n');
  if (written[0] !== join(BIN_DIR, 'vsw-cni') || written[1] !== join(p.cniConfigDir, `10-vsw-${netN}.conflist`)) {
    throw new Error(`vsw cni install printed ${JSON.stringify(written)}`);
  }
  image = await p.importBusyboxImage();
  await addNetns(nsX);
  x = await createEndpoint(d, netN, nsX);
  for (const name of [c1, c2]) ids.set(name, await podmanRunD(name, ['sleep', '3600']));
});

test.after.always(async () => {
  const problems: string[] = [];
  try {
    if (p) {
      // Containers first, while the daemon runs: their CNI DEL takes their endpoints away.
      const rm = await p.run(['rm', '-af', '-t', '0']);
      if (rm.code !== 0) problems.push(`podman rm -af: ${rm.stderr.trim()}`);
      try {
        await p.cleanup();
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    if (d && !d.exited()) {
      const left = (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).filter((e) => e.owner?.startsWith('cni:'));
      if (left.length > 0) problems.push(`endpoints of removed containers remain: ${left.map((e) => `${e.name} (${e.owner})`).join(', ')}`);
    }
    if ((await nftIpTables()).includes(pubTable)) {
      problems.push(`nftables table ${pubTable} remains with no published container`);
      await sh(NFT, ['delete', 'table', 'ip', pubTable]);
    }
  } finally {
    await finishNatTest(prefix, d, forwardBefore, problems);
  }
});

// ----------------------------------------------------------------- helpers

/** `podman run -d` on the vsw network; resolves to the container id. */
async function podmanRunD(name: string, cmd: string[], extra: string[] = []): Promise<string> {
  const id = (await p!.runOk(['run', '-d', '--name', name, '--network', netN, ...extra, image, ...cmd])).trim();
  if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`podman run -d ${name} printed ${JSON.stringify(id)}, not a container id`);
  return id;
}

/** The container's network namespace file (podman's /run/netns/netns-UUID). */
async function sandboxOf(name: string): Promise<string> {
  return (await p!.runOk(['inspect', '--format', '{{.NetworkSettings.SandboxKey}}', name])).trim();
}

async function endpoints(): Promise<EndpointJson[]> {
  return d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
}

async function endpointOf(id: string): Promise<EndpointJson | undefined> {
  return (await endpoints()).find((e) => e.owner === `cni:${id}/eth0`);
}

interface LinkJson {
  ifname: string;
  address?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { type?: string } };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** eth0 in a namespace file as `ip -d -j addr` shows it, or undefined when the file or the link is gone. */
async function eth0In(netnsPath: string): Promise<LinkJson | undefined> {
  if (!existsSync(netnsPath)) return undefined;
  const r = await sh('nsenter', [`--net=${netnsPath}`, 'ip', '-d', '-j', 'addr', 'show']);
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout) as LinkJson[]).find((l) => l.ifname === 'eth0');
}

async function podmanPing(name: string, ip: string, count = 3): Promise<{ ok: boolean; out: string }> {
  const r = await p!.run(['exec', name, 'ping', '-c', String(count), '-i', '0.2', '-W', '2', ip], { timeoutMs: 30_000 });
  return { ok: r.code === 0, out: (r.stdout + r.stderr).trim().split('\n').slice(-2).join(' | ') };
}

/** Polls `fn` until it returns true; throws after timeoutMs saying what was waited for. */
async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 15_000, everyMs = 200): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** The host's own non-loopback address: the one on the device of the default route. */
async function hostAddress(): Promise<string> {
  const routes = JSON.parse((await sh('ip', ['-4', '-j', 'route', 'show', 'default'])).stdout || '[]') as { dev?: string }[];
  const dev = routes.find((r) => r.dev)?.dev;
  if (!dev) throw new Error('the host has no IPv4 default route to find its own address by');
  const links = JSON.parse((await sh('ip', ['-4', '-j', 'addr', 'show', 'dev', dev])).stdout) as LinkJson[];
  const addr = links[0]?.addr_info?.find((a) => a.family === 'inet')?.local;
  if (!addr) throw new Error(`${dev} has no IPv4 address`);
  return addr;
}

/** `podman run -d` stderr, last line (podman prints warnings before its "Error: ..."). */
function errorLine(stderr: string): string {
  return (
    stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('Error: '))
      .pop() ?? stderr.trim()
  );
}

/** Namespaces podman made (`netns-UUID`) that hold a TAP now. */
async function podmanNetnsWithTap(): Promise<string[]> {
  const names = (await sh('ip', ['netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith('netns-'));
  const out: string[] = [];
  for (const n of names) {
    const r = await sh('ip', ['-n', n, '-d', '-j', 'link', 'show']);
    if (r.code !== 0) continue;
    if ((JSON.parse(r.stdout) as LinkJson[]).some((l) => l.linkinfo?.info_kind === 'tun')) out.push(n);
  }
  return out;
}

/** Runs the installed launcher as a runtime would, with `conf` on stdin; the parsed answer. */
async function pluginAdd(conf: object, containerId: string, netnsPath: string): Promise<{ code: number; answer: { code?: number; msg?: string } }> {
  const env = { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: containerId, CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0', CNI_PATH: BIN_DIR };
  const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
    const child = spawn(join(BIN_DIR, 'vsw-cni'), [], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.on('exit', (code) => resolve({ code: code ?? 1, stdout }));
    child.stdin.end(JSON.stringify(conf));
  });
  return { code: r.code, answer: JSON.parse(r.stdout) as { code?: number; msg?: string } };
}

function assertSentence(t: ExecutionContext, msg: string | undefined, what: string): void {
  t.truthy(msg, `${what}: no msg`);
  t.false(/\n/.test(msg ?? ''), `${what}: msg has more than one line: ${msg}`);
  t.regex(msg ?? '', /\.$/, `${what}: msg does not end with a period: ${msg}`);
  t.false(/\.\s+[A-Z]/.test(msg ?? ''), `${what}: msg has more than one sentence: ${msg}`);
}

/** Replies of a running busybox ping, with the time each arrived here. */
interface PingWatch {
  replies: { at: number; seq: number }[];
  child: ChildProcess;
  done: Promise<string>;
}

function watchPing(name: string, ip: string, seconds: number): PingWatch {
  const child = spawn('podman', ['exec', name, 'ping', '-i', '0.2', '-W', '1', '-w', String(seconds), ip], { env: p!.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const replies: { at: number; seq: number }[] = [];
  let all = '';
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    all += chunk.toString();
    partial += chunk.toString();
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) {
      const m = /bytes from .*seq=(\d+)/.exec(l);
      if (m) replies.push({ at: Date.now(), seq: Number(m[1]) });
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => (all += chunk.toString()));
  const done = new Promise<string>((resolve) => child.on('exit', () => resolve(all)));
  return { replies, child, done };
}

// ------------------------------------------------------------------- tests

test.serial('two podman containers on a vsw nat network get endpoints keyed by container, reach each other and a vsw endpoint', async (t) => {
  const all = await endpoints();
  const eps = new Map<string, EndpointJson>();
  for (const [name, id] of ids) {
    const ep = all.find((e) => e.owner === `cni:${id}/eth0`);
    if (!ep) return t.fail(`vsw endpoint ls --json has no endpoint with owner cni:${id}/eth0: ${JSON.stringify(all.map((e) => e.owner))}`);
    eps.set(name, ep);
    t.is(ep.network, netN);
    t.is(ep.ifname, 'eth0');
    t.is(ep.name, `cni-${id.slice(0, 12)}`);
    t.is(ep.state, 'up');
    const sandbox = await sandboxOf(name);
    t.regex(sandbox, /^\/run\/netns\/netns-[0-9a-f-]+$/);
    t.true(ep.netns === sandbox || `/run/netns/${ep.netns}` === sandbox, `${name}: vsw's netns ${ep.netns} is not podman's ${sandbox}`);
    const eth0 = await eth0In(sandbox);
    if (!eth0) return t.fail(`${name} has no eth0 in ${sandbox}`);
    t.is(eth0.linkinfo?.info_kind, 'tun', `${name}: eth0 is vsw's TAP`);
    t.is(eth0.linkinfo?.info_data?.type, 'tap');
    t.is(eth0.address, ep.mac, `${name}: eth0's MAC is the endpoint's`);
    t.deepEqual(
      eth0.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
      [`${ep.ip}/${ep.prefixLength}`],
      `${name}: eth0 has exactly the address vsw shows`,
    );
    t.true(ep.ip.startsWith('10.118.0.'), `${name}: ${ep.ip} is on ${SUBNET}`);
  }
  const a = eps.get(c1)!;
  const b = eps.get(c2)!;
  t.not(a.ip, b.ip);
  for (const [from, to] of [
    [c1, b.ip],
    [c2, a.ip],
    [c1, x.ip],
    [c2, x.ip],
  ] as const) {
    const r = await podmanPing(from, to);
    t.true(r.ok, `${from} -> ${to}: ${r.out}`);
  }
  const back = await inNetns(nsX, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', a.ip]);
  t.is(back.code, 0, `${nsX} -> ${a.ip}: ${back.stdout.trim().split('\n').pop()}`);
});

test.serial('podman run -p publishes through nftables DNAT, reachable on loopback and the host address; podman rm takes endpoint, TAP and table away', async (t) => {
  const content = `hello from podman on vsw ${prefix}`;
  const web = `${prefix}-web`;
  const id = await podmanRunD(web, ['sh', '-c', `echo '${content}' > /var/www/index.html && exec httpd -f -p 80 -h /var/www`], ['-p', `${PUB_PORT}:80`]);
  const sandbox = await sandboxOf(web);
  const ep = await endpointOf(id);
  if (!ep) return t.fail(`no endpoint with owner cni:${id}/eth0`);
  t.is(ep.publishVia, 'dnat');
  t.is(ep.publish?.length, 1, JSON.stringify(ep.publish));
  t.like(ep.publish?.[0], { protocol: 'tcp', hostPort: PUB_PORT, containerPort: 80 });
  t.true([undefined, '0.0.0.0'].includes(ep.publish?.[0]?.hostIp), `hostIp ${ep.publish?.[0]?.hostIp}`);
  const eth0 = await eth0In(sandbox);
  t.is(eth0?.linkinfo?.info_kind, 'tun', 'the container has vsw TAP as eth0');

  const ext = (await d.vswJson<Network>(['network', 'inspect', netN])).nat?.externalIp;
  if (!ext) return t.fail(`network inspect ${netN} has no nat.externalIp`);
  const table = await sh(NFT, ['list', 'table', 'ip', pubTable]);
  t.is(table.code, 0, `nft list table ip ${pubTable}: ${table.stderr.trim()}`);
  t.regex(table.stdout, new RegExp(`chain prerouting \\{[^}]*tcp dport ${PUB_PORT} dnat to ${ext.replace(/\./g, '\\.')}:${PUB_PORT}`), table.stdout);
  t.regex(table.stdout, new RegExp(`chain output \\{[^}]*tcp dport ${PUB_PORT} dnat to ${ext.replace(/\./g, '\\.')}:${PUB_PORT}`), table.stdout);

  // httpd starts a moment after podman run returns.
  let last = { ok: false, body: '' };
  await until(`http://127.0.0.1:${PUB_PORT}/ answering`, async () => {
    last = await httpGet(null, `http://127.0.0.1:${PUB_PORT}/`, 1);
    return last.ok;
  }).catch(() => undefined);
  t.true(last.ok, `127.0.0.1:${PUB_PORT}: ${last.body}`);
  t.is(last.body, content);
  const host = await hostAddress();
  t.not(host, '127.0.0.1');
  const viaHost = await httpGet(null, `http://${host}:${PUB_PORT}/`, 3);
  t.true(viaHost.ok, `${host}:${PUB_PORT}: ${viaHost.body}`);
  t.is(viaHost.body, content);

  await p!.runOk(['rm', '-f', '-t', '0', web]);
  const took = await until('the endpoint, its TAP and the vsw_pub table gone', async () => {
    const gone = (await endpointOf(id)) === undefined;
    const tap = await eth0In(sandbox);
    const tables = await nftIpTables();
    return gone && tap === undefined && !tables.includes(pubTable);
  }).catch((err: Error) => err);
  if (took instanceof Error) {
    t.is(await endpointOf(id), undefined, 'the endpoint is removed');
    t.is(await eth0In(sandbox), undefined, `the TAP in ${sandbox} is gone`);
    t.false((await nftIpTables()).includes(pubTable), `table ${pubTable} is removed`);
  } else {
    t.log(`endpoint, TAP and ${pubTable} gone ${took} ms after podman rm returned`);
  }
  t.false(existsSync(sandbox), `podman removed ${sandbox}`);
  t.false(
    (JSON.parse((await sh('ip', ['-j', 'link', 'show'])).stdout) as LinkJson[]).some((l) => l.address === ep.mac),
    `no link in the host namespace has the endpoint's MAC ${ep.mac}`,
  );
  const refused = await httpGet(null, `http://127.0.0.1:${PUB_PORT}/`, 1);
  t.false(refused.ok && refused.body === content, `127.0.0.1:${PUB_PORT} still serves the removed container: ${refused.body}`);
});

test.serial('endpoints made through podman survive daemon restarts (SIGTERM and SIGKILL) and are removed by podman rm afterwards', async (t) => {
  const before = new Map<string, EndpointJson>();
  for (const [name, id] of ids) {
    const ep = await endpointOf(id);
    if (!ep) return t.fail(`no endpoint for ${name}`);
    before.set(name, ep);
  }
  const ipB = before.get(c2)!.ip;
  const watch = watchPing(c1, ipB, 60);
  await until(`${c1} pinging ${ipB}`, async () => watch.replies.length >= 3, 10_000, 50);

  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const code = await d.stop(signal);
    t.is(code, signal === 'SIGTERM' ? 0 : 137, `the daemon's exit after ${signal}`);
    const stopped = Date.now();
    d = await restartDaemon(d);
    const answering = Date.now();
    const waited = await until(`a reply from ${ipB} after the ${signal} restart`, async () => watch.replies.some((r) => r.at > answering), 10_000, 50).catch((err: Error) => err);
    t.false(waited instanceof Error, `${c1} -> ${ipB}: no reply after the ${signal} restart`);
    const around = watch.replies.filter((r) => r.at > stopped - 2000);
    const gap = Math.max(0, ...around.slice(1).map((r, i) => r.at - around[i].at));
    t.log(`${signal}: daemon answering ${answering - stopped} ms after it stopped; first reply ${waited instanceof Error ? 'never' : `${waited} ms`} after that; largest gap between replies ${gap} ms`);
    for (const [name, id] of ids) {
      const ep = await endpointOf(id);
      t.is(ep?.id, before.get(name)!.id, `${name}: the same endpoint id after ${signal}`);
      t.is(ep?.state, 'up', `${name}: up after ${signal}`);
    }
    for (const [from, to] of [
      [c1, ipB],
      [c2, before.get(c1)!.ip],
      [c2, x.ip],
    ] as const) {
      const r = await podmanPing(from, to);
      t.true(r.ok, `after ${signal}: ${from} -> ${to}: ${r.out}`);
    }
  }
  await p!.run(['exec', c1, 'killall', 'ping']);
  await watch.done;

  // DEL through the restarted daemon: its log says "endpoint removed" (an API delete), not the health check's message.
  const gone = before.get(c2)!;
  const id2 = ids.get(c2)!;
  await p!.runOk(['rm', '-f', '-t', '0', c2]);
  ids.delete(c2);
  t.is(await endpointOf(id2), undefined, 'the endpoint is gone when podman rm returns');
  const removed = d
    .log()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg: string; endpoint?: string })
    .filter((l) => l.endpoint === gone.id && l.msg.startsWith('endpoint removed'));
  t.deepEqual(
    removed.map((l) => l.msg),
    ['endpoint removed'],
    'the restarted daemon removed it on the plugin\'s DEL',
  );
  const r = await podmanPing(c1, x.ip);
  t.true(r.ok, `${c1} -> x after removing ${c2}: ${r.out}`);
});

test.serial('bad input is refused with one sentence and nothing half-made: an unknown vsw network, the daemon stopped', async (t) => {
  const eps = (await endpoints()).map((e) => e.id).sort();
  const tapsBefore = await podmanNetnsWithTap();
  const installed = JSON.parse(readFileSync(join(p!.cniConfigDir, `10-vsw-${netN}.conflist`), 'utf8')) as { cniVersion: string; name: string; plugins: { network: string }[] };

  // 1. A conflist whose "network" names a vsw network that does not exist.
  const badName = `${prefix}-bad`;
  const unknown = `${prefix}-nope`;
  const bad = { ...installed, name: badName, plugins: [{ ...installed.plugins[0], network: unknown }] };
  writeFileSync(join(p!.cniConfigDir, `10-vsw-${badName}.conflist`), `${JSON.stringify(bad, null, 2)}\n`);
  const wantUnknown = `vsw network ${unknown} does not exist: create it with \`vsw network create ${unknown} ...\` or fix "network" in the conflist.`;
  const direct = await pluginAdd({ cniVersion: bad.cniVersion, name: badName, ...bad.plugins[0] }, `${prefix}direct`, `/run/netns/${nsX}`);
  t.is(direct.code, 1);
  t.is(direct.answer.code, 7, 'CNI error code 7 (invalid configuration)');
  t.is(direct.answer.msg, wantUnknown);
  assertSentence(t, direct.answer.msg, 'unknown network');
  const r1 = await p!.run(['run', '-d', '--name', `${prefix}-bad1`, '--network', badName, image, 'sleep', '60']);
  t.not(r1.code, 0, 'podman run on a conflist naming an unknown vsw network fails');
  t.true(errorLine(r1.stderr).includes(wantUnknown), `podman's error carries the plugin's sentence: ${errorLine(r1.stderr)}`);
  t.deepEqual((await endpoints()).map((e) => e.id).sort(), eps, 'no endpoint appeared');
  t.deepEqual(await podmanNetnsWithTap(), tapsBefore, 'no namespace of podman holds a new TAP');
  const state1 = (await p!.run(['inspect', '--format', '{{.State.Status}}', `${prefix}-bad1`])).stdout.trim();
  t.not(state1, 'running', 'the container did not start');

  // 2. The daemon stopped.
  t.is(await d.stop('SIGTERM'), 0);
  const wantDown = `the vsw daemon is not running at ${d.socket}: start it with \`vsw daemon\`, or set "socket" in the conflist to where it listens.`;
  const direct2 = await pluginAdd({ cniVersion: installed.cniVersion, name: installed.name, ...installed.plugins[0] }, `${prefix}direct`, `/run/netns/${nsX}`);
  t.is(direct2.answer.code, 11, 'CNI error code 11 (try again later)');
  t.is(direct2.answer.msg, wantDown);
  assertSentence(t, direct2.answer.msg, 'daemon not running');
  const r2 = await p!.run(['run', '-d', '--name', `${prefix}-off1`, '--network', netN, image, 'sleep', '60']);
  t.not(r2.code, 0, 'podman run with the daemon stopped fails');
  t.true(errorLine(r2.stderr).includes(wantDown), `podman's error carries the plugin's sentence: ${errorLine(r2.stderr)}`);
  t.deepEqual(await podmanNetnsWithTap(), tapsBefore, 'no namespace of podman holds a new TAP');
  const state2 = (await p!.run(['inspect', '--format', '{{.State.Status}}', `${prefix}-off1`])).stdout.trim();
  t.not(state2, 'running', 'the container did not start');

  d = await restartDaemon(d);
  t.deepEqual((await endpoints()).map((e) => e.id).sort(), eps, 'the restarted daemon has the same endpoints, no new one');
  await p!.runOk(['rm', '-f', '-t', '0', `${prefix}-bad1`, `${prefix}-off1`]);

  // 3. With the daemon back, a new container works.
  const c3 = `${prefix}-c3`;
  const id3 = await podmanRunD(c3, ['sleep', '3600']);
  const ep3 = await endpointOf(id3);
  t.truthy(ep3, `an endpoint with owner cni:${id3}/eth0`);
  for (const to of [x.ip, (await endpointOf(ids.get(c1)!))!.ip]) {
    const r = await podmanPing(c3, to);
    t.true(r.ok, `${c3} -> ${to}: ${r.out}`);
  }
  await p!.runOk(['rm', '-f', '-t', '0', c3]);
  t.is(await endpointOf(id3), undefined, `${c3}'s endpoint is removed with it`);
});
