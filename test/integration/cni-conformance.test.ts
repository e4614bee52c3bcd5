/**
 * The vsw CNI plugin driven by libcni itself, as podman and containerd drive
 * it: test/fixtures/cnitool/main.go is built here with Debian's go against
 * Debian's libcni sources (golang-github-appc-cni-dev 1.1.2, the libcni
 * podman 4.3 and containerd 1.6 use) and calls AddNetworkList,
 * CheckNetworkList, DelNetworkList, GetVersionInfo and ValidateNetworkList.
 * So libcni's own checks, version handling, result parsing and result cache
 * (under /tmp/PREFIX, not the host's /var/lib/cni) are what the plugin meets.
 *
 * The plugin is installed with `vsw cni install` (launcher in /tmp/PREFIX/bin,
 * one conflist per cniVersion 0.3.1, 0.4.0 and 1.0.0 in /tmp/PREFIX/conf) for
 * an internal network with a gateway; a "peer" namespace has a plain vsw
 * endpoint to ping. Containers are namespaces from addNetns, passed as
 * /run/netns/NAME, and one is the namespace of an `unshare --net` process,
 * passed as /proc/PID/ns/net. Hand-made conflists for the bad-input cases
 * live in /tmp/PREFIX/lists, out of the conf dir.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, runPrefix, sh, type CommandResult } from './helpers/env.js';
import { createEndpoint, type DaemonHandle, type EndpointJson, linksIn, processAlive, runCli, startDaemon, teardown } from './helpers/daemon.js';
import { prefixNumber } from './helpers/nat.js';

const prefix = runPrefix();
const DIR = `/tmp/${prefix}`;
const BIN = `${DIR}/bin`;
const CONF = `${DIR}/conf`;
const LISTS = `${DIR}/lists`;
/** libcni's cache dir (it writes results/NETNAME-CONTAINERID-IFNAME there). */
const CACHE = `${DIR}/cnicache`;
const CNITOOL = `${DIR}/cnitool`;
const CNITOOL_SRC = fileURLToPath(new URL('../../../test/fixtures/cnitool/main.go', import.meta.url));
const NET = `${prefix}-n`;
const OCTET = (prefixNumber(prefix) % 200) + 20;
const SUBNET = `10.231.${OCTET}.0/24`;
const GATEWAY = `10.231.${OCTET}.1`;
const nsPeer = `${prefix}-peer`;
const VERSIONS = ['0.3.1', '0.4.0', '1.0.0'] as const;
type Version = (typeof VERSIONS)[number];
const SUPPORTED = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];

let d: DaemonHandle;
let peer: EndpointJson;
/** The conflist `vsw cni install` wrote per cniVersion, and its CNI network name. */
const installed = new Map<Version, { path: string; name: string }>();
/** unshare --net processes holding namespaces (killed at the end, also on failure). */
const holders: ChildProcess[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  // libcni, from Debian's sources, offline; the build cache stays in /tmp/PREFIX and goes right after.
  const gocache = `${DIR}/gocache`;
  const build = await sh('env', [
    'GOPATH=/usr/share/gocode',
    'GO111MODULE=off',
    `GOCACHE=${gocache}`,
    'GOENV=off',
    'GOFLAGS=',
    'CGO_ENABLED=0',
    'go',
    'build',
    '-o',
    CNITOOL,
    CNITOOL_SRC,
  ]);
  rmSync(gocache, { recursive: true, force: true });
  if (build.code !== 0) throw new Error(`go build of ${CNITOOL_SRC} against Debian's libcni failed (apt-get install golang-go golang-github-appc-cni-dev): ${build.stderr.trim()}`);
  await d.vswOk(['network', 'create', '-d', 'internal', '--subnet', SUBNET, '--gateway', GATEWAY, NET]);
  await addNetns(nsPeer);
  peer = await createEndpoint(d, NET, nsPeer);
  for (const v of VERSIONS) {
    const name = `${prefix}-cni-${v.replace(/\./g, '')}`;
    const out = await d.vswOk(['cni', 'install', '--network', NET, '--name', name, '--bin-dir', BIN, '--conf-dir', CONF, '--cni-version', v, '--socket', d.socket]);
    const path = `${CONF}/10-vsw-${name}.conflist`;
    if (out.split('\n').filter(Boolean).join(' ') !== `${BIN}/vsw-cni ${path}`) throw new Error(`vsw cni install printed ${JSON.stringify(out)}`);
    installed.set(v, { path, name });
  }
  mkdirSync(LISTS, { recursive: true });
});

test.after.always(async () => {
  for (const h of holders) if (h.exitCode === null && h.signalCode === null) h.kill('SIGKILL');
  await teardown(prefix, d);
});

// ------------------------------------------------------------------ helpers

/** What cnitool prints: one JSON object. */
interface ToolOut {
  ok: boolean;
  error?: string;
  code?: number;
  msg?: string;
  details?: string;
  resultVersion?: string;
  result?: CniResult;
  current?: CniResult;
  supportedVersions?: Record<string, string[]>;
  capabilities?: string[];
}

interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { version?: string; address: string; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
}

/** cnitool CMD CONFLIST BIN [CONTAINERID NETNS IFNAME]; its exit code must agree with "ok". */
async function cnitool(cmd: 'add' | 'check' | 'del' | 'version' | 'validate', conflist: string, id?: string, netns?: string, ifname = 'eth0'): Promise<ToolOut> {
  const args = ['-cache', CACHE, cmd, conflist, BIN, ...(id === undefined ? [] : [id, netns ?? '', ifname])];
  const r = await sh(CNITOOL, args, { timeoutMs: 30_000 });
  let out: ToolOut;
  try {
    out = JSON.parse(r.stdout) as ToolOut;
  } catch {
    throw new Error(`cnitool ${args.join(' ')} exited ${r.code} without JSON: ${r.stdout}${r.stderr}`);
  }
  if (r.code !== (out.ok ? 0 : 1)) throw new Error(`cnitool ${args.join(' ')} exited ${r.code} but printed ${r.stdout}`);
  return out;
}

/** A container's network namespace: how runtimes name it (CNI_NETNS) and how to run a command inside. */
interface Sandbox {
  path: string;
  exec(cmd: string, args: string[]): Promise<CommandResult>;
  /** Makes the namespace disappear (as a runtime does when the container is gone). */
  remove(): Promise<void>;
}

async function namedSandbox(name: string): Promise<Sandbox> {
  await addNetns(name);
  return {
    path: `/run/netns/${name}`,
    exec: (cmd, args) => sh('ip', ['netns', 'exec', name, cmd, ...args]),
    async remove() {
      const r = await sh('ip', ['netns', 'delete', name]);
      if (r.code !== 0) throw new Error(`ip netns delete ${name}: ${r.stderr}`);
    },
  };
}

/** The namespace of an `unshare --net` process (argv[0] carries the prefix), known only as /proc/PID/ns/net. */
async function processSandbox(tag: string): Promise<Sandbox> {
  const child = spawn('unshare', ['--net', 'bash', '-c', `exec -a ${prefix}-${tag} sleep 600`], { stdio: 'ignore' });
  holders.push(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid;
  if (pid === undefined) throw new Error('unshare did not start');
  const path = `/proc/${pid}/ns/net`;
  const self = await sh('readlink', ['/proc/self/ns/net']);
  for (let i = 0; ; i++) {
    // unshare and bash exec in place: once the pid runs sleep, it is in the new namespace.
    const link = await sh('readlink', [path]);
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(`${prefix}-${tag}`) && link.code === 0 && link.stdout !== self.stdout) break;
    if (i > 100) throw new Error(`unshare --net (pid ${pid}) did not get its own namespace`);
    await sleep(20);
  }
  const exec = (cmd: string, args: string[]): Promise<CommandResult> => sh('nsenter', [`--net=${path}`, cmd, ...args]);
  const sysctl = await exec('sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  if (sysctl.code !== 0) throw new Error(`sysctl in ${path}: ${sysctl.stderr}`);
  return {
    path,
    exec,
    async remove() {
      child.kill('SIGKILL');
      await exited;
      if (processAlive(pid) || existsSync(path)) throw new Error(`${path} still exists after SIGKILL`);
    },
  };
}

async function linkNames(sb: Sandbox): Promise<string[]> {
  const r = await sb.exec('ip', ['-j', 'link', 'show']);
  if (r.code !== 0) throw new Error(`ip link in ${sb.path}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname);
}

async function endpointsOf(owner: string): Promise<EndpointJson[]> {
  return (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).filter((e) => e.owner === owner);
}

async function allEndpointIds(): Promise<string[]> {
  return (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).map((e) => e.id).sort();
}

function cacheFile(netName: string, id: string, ifname = 'eth0'): string {
  return `${CACHE}/results/${netName}-${id}-${ifname}`;
}

async function pingFrom(sb: Sandbox, ip: string): Promise<CommandResult> {
  return sb.exec('ping', ['-c', '2', '-i', '0.2', '-W', '2', ip]);
}

/** A CNI error's msg is one sentence: one line, ends with a period, no second sentence, no stack trace. */
function assertOneSentence(t: ExecutionContext, msg: string | undefined, what: string): void {
  t.true(typeof msg === 'string' && msg.length > 0, `${what}: no msg`);
  const m = msg ?? '';
  t.false(m.includes('\n'), `${what}: msg has more than one line: ${m}`);
  t.regex(m, /\.$/, `${what}: msg does not end with a period: ${m}`);
  t.false(/[.!?]\s+[A-Z]/.test(m), `${what}: msg has more than one sentence: ${m}`);
  t.false(/at .*\.js/.test(m), `${what}: msg has a stack trace: ${m}`);
}

/** A copy of an installed conflist with the vsw plugin's keys (or the list's cniVersion) changed, in LISTS. */
function variant(from: Version, file: string, plugin: Record<string, unknown>, list: Record<string, unknown> = {}): string {
  const parsed = JSON.parse(readFileSync(installed.get(from)!.path, 'utf8')) as { plugins: Record<string, unknown>[] };
  const out = { ...parsed, ...list, plugins: [{ ...parsed.plugins[0], ...plugin }] };
  const path = `${LISTS}/${file}`;
  writeFileSync(path, JSON.stringify(out));
  return path;
}

// -------------------------------------------------------------------- tests

const lifecycle = test.macro({
  async exec(t, v: Version, kind: 'run' | 'proc') {
    const { path: conflist, name: netName } = installed.get(v)!;
    const tag = `${v.replace(/\./g, '')}${kind === 'proc' ? 'p' : ''}`;
    const sb = kind === 'run' ? await namedSandbox(`${prefix}-c${tag}`) : await processSandbox(`c${tag}`);
    const id = `${prefix}-ctr-${tag}`;
    const owner = `cni:${id}/eth0`;

    // ADD: libcni parses the result in the conflist's version (and converts it to 1.0.0, as containerd does).
    const add = await cnitool('add', conflist, id, sb.path);
    t.true(add.ok, `ADD: ${add.error}`);
    t.is(add.resultVersion, v, 'libcni parsed the result as the conflist version');
    const res = add.result!;
    t.is(res.cniVersion, v);
    const [ep] = await endpointsOf(owner);
    t.truthy(ep, `vsw endpoint ls has an endpoint owned by ${owner}`);
    t.is(ep.name, `cni-${id}`);
    t.is(ep.network, NET);
    t.deepEqual(res.interfaces, [{ name: 'eth0', mac: ep.mac, sandbox: sb.path }]);
    t.regex(ep.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const cidr = `${ep.ip}/24`;
    t.regex(ep.ip, new RegExp(`^10\\.231\\.${OCTET}\\.\\d+$`));
    t.deepEqual(res.ips, [{ ...(v === '1.0.0' ? {} : { version: '4' }), interface: 0, address: cidr, gateway: GATEWAY }], 'ips: the endpoint address and the gateway');
    t.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: GATEWAY }], 'a default route via the gateway');
    t.deepEqual(add.current?.ips, [{ interface: 0, address: cidr, gateway: GATEWAY }], 'the result converts to 1.0.0');
    t.true(existsSync(cacheFile(netName, id)), 'libcni cached the result');

    // The namespace really has it: the address on eth0 with the MAC, the default route, and traffic to a vsw endpoint.
    const addr = await sb.exec('ip', ['-j', 'address', 'show', 'dev', 'eth0']);
    const link = (JSON.parse(addr.stdout || '[]') as { address: string; flags: string[]; addr_info: { family: string; local: string; prefixlen: number }[] }[])[0];
    t.is(link?.address, ep.mac, `MAC in ${sb.path}`);
    t.true(link?.flags.includes('UP'), `eth0 is up in ${sb.path}`);
    t.deepEqual(
      link?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
      [cidr],
      `address in ${sb.path}`,
    );
    const route = await sb.exec('ip', ['-j', '-4', 'route', 'show', 'default']);
    t.deepEqual(JSON.parse(route.stdout || '[]').map((r: { gateway?: string; dev?: string }) => `${r.gateway} ${r.dev}`), [`${GATEWAY} eth0`], `default route in ${sb.path}`);
    const p = await pingFrom(sb, peer.ip);
    t.is(p.code, 0, `ping ${peer.ip} from ${sb.path}: ${p.stdout}${p.stderr}`);
    const back = await sh('ip', ['netns', 'exec', nsPeer, 'ping', '-c', '2', '-i', '0.2', '-W', '2', ep.ip]);
    t.is(back.code, 0, `ping ${ep.ip} from the peer: ${back.stdout}${back.stderr}`);

    // CHECK: libcni itself refuses it for 0.3.x without running the plugin; 0.4.0 and 1.0.0 pass.
    const check = await cnitool('check', conflist, id, sb.path);
    if (v === '0.3.1') {
      t.false(check.ok);
      t.is(check.error, `configuration version "${v}" does not support the CHECK command`);
      t.is(check.code, undefined, 'the refusal is libcni\'s, not a plugin error');
    } else {
      t.true(check.ok, `CHECK: ${check.error}`);
    }

    // A second ADD for the same container finds the same endpoint.
    const again = await cnitool('add', conflist, id, sb.path);
    t.true(again.ok, `second ADD: ${again.error}`);
    t.deepEqual(again.result, res, 'the second ADD returns the same result');
    t.deepEqual((await endpointsOf(owner)).map((e) => e.id), [ep.id], 'still one endpoint');

    // DEL removes the endpoint and its TAP; libcni drops its cache; a second DEL succeeds.
    const del = await cnitool('del', conflist, id, sb.path);
    t.true(del.ok, `DEL: ${del.error}`);
    t.deepEqual(await endpointsOf(owner), [], 'vsw endpoint ls has nothing for the owner after DEL');
    t.deepEqual(await linkNames(sb), ['lo'], `no TAP left in ${sb.path}`);
    t.false(existsSync(cacheFile(netName, id)), 'libcni removed its cached result');
    const del2 = await cnitool('del', conflist, id, sb.path);
    t.true(del2.ok, `second DEL: ${del2.error}`);

    // ADD again, then the namespace goes away (the container is gone): DEL still succeeds and removes the endpoint.
    const add3 = await cnitool('add', conflist, id, sb.path);
    t.true(add3.ok, `ADD after DEL: ${add3.error}`);
    t.is((await endpointsOf(owner)).length, 1);
    await sb.remove();
    const del3 = await cnitool('del', conflist, id, sb.path);
    t.true(del3.ok, `DEL after the namespace is gone: ${del3.error}`);
    t.deepEqual(await endpointsOf(owner), [], 'no endpoint for the owner after DEL of a vanished namespace');
    t.deepEqual(await allEndpointIds(), [peer.id], 'only the peer endpoint is left');
  },
  title: (_, v: Version, kind: 'run' | 'proc') =>
    `cniVersion ${v}, CNI_NETNS ${kind === 'run' ? '/run/netns/NAME' : '/proc/PID/ns/net'}: libcni ADD parses the result, the namespace has the address and route and reaches a vsw endpoint, CHECK as libcni allows it, repeated ADD same result, DEL removes, repeated DEL and DEL after the namespace went succeed`,
});

for (const v of VERSIONS) test.serial(lifecycle, v, 'run');
test.serial(lifecycle, '1.0.0', 'proc');

test.serial('CHECK fails with code 101 and one sentence when the default route is gone; a repeated ADD, or DEL and ADD, repair it', async (t) => {
  const { path: conflist } = installed.get('1.0.0')!;
  const sb = await namedSandbox(`${prefix}-chk`);
  const id = `${prefix}-ctr-chk`;
  const owner = `cni:${id}/eth0`;
  const add = await cnitool('add', conflist, id, sb.path);
  t.true(add.ok, `ADD: ${add.error}`);
  t.true((await cnitool('check', conflist, id, sb.path)).ok, 'CHECK passes right after ADD');

  const del = await sb.exec('ip', ['route', 'del', 'default']);
  t.is(del.code, 0, del.stderr);
  const broken = await cnitool('check', conflist, id, sb.path);
  t.false(broken.ok, 'CHECK fails without the default route');
  t.is(broken.code, 101, `CHECK error: ${broken.error}`);
  assertOneSentence(t, broken.msg, 'CHECK without a default route');
  t.true(broken.msg?.includes(`default route via ${GATEWAY}`), `the msg names the missing route: ${broken.msg}`);

  // A repeated ADD (no DEL) answers with the endpoint it made, and sets its interface right again.
  const readd = await cnitool('add', conflist, id, sb.path);
  t.true(readd.ok, `repeated ADD: ${readd.error}`);
  t.regex((await sb.exec('ip', ['-4', 'route', 'show', 'default'])).stdout, new RegExp(`^default via ${GATEWAY.replace(/\./g, '\\.')} dev eth0`), 'default route after a repeated ADD');
  const afterReadd = await cnitool('check', conflist, id, sb.path);
  t.true(afterReadd.ok, `CHECK after a repeated ADD: ${afterReadd.error}`);
  t.is((await sb.exec('ip', ['-4', 'route', 'del', 'default'])).code, 0, 'delete the default route again');

  // What the msg says to do: remove and add the network again.
  t.true((await cnitool('del', conflist, id, sb.path)).ok, 'DEL');
  const add2 = await cnitool('add', conflist, id, sb.path);
  t.true(add2.ok, `ADD after DEL: ${add2.error}`);
  const check2 = await cnitool('check', conflist, id, sb.path);
  t.true(check2.ok, `CHECK after DEL and ADD: ${check2.error}`);
  t.regex((await sb.exec('ip', ['-4', 'route', 'show', 'default'])).stdout, new RegExp(`^default via ${GATEWAY.replace(/\./g, '\\.')} dev eth0`));

  t.true((await cnitool('del', conflist, id, sb.path)).ok, 'final DEL');
  t.deepEqual(await endpointsOf(owner), []);
  t.deepEqual(await linkNames(sb), ['lo']);
  await sb.remove();
});

test.serial('version negotiation: libcni reads 0.3.0, 0.3.1, 0.4.0 and 1.0.0 from VERSION; a cniVersion 1.1.0 conflist is refused naming the version', async (t) => {
  for (const v of VERSIONS) {
    const { path, name } = installed.get(v)!;
    t.deepEqual(JSON.parse(readFileSync(path, 'utf8')), {
      cniVersion: v,
      name,
      plugins: [{ type: 'vsw-cni', network: NET, socket: d.socket, capabilities: { portMappings: true, ips: true } }],
    }, `the conflist vsw cni install wrote for ${v}`);
    const ver = await cnitool('version', path);
    t.true(ver.ok, `GetVersionInfo: ${ver.error}`);
    t.deepEqual(ver.supportedVersions, { 'vsw-cni': SUPPORTED }, `GetVersionInfo for the ${v} conflist`);
    const val = await cnitool('validate', path);
    t.true(val.ok, `ValidateNetworkList of the ${v} conflist: ${val.error}`);
    t.deepEqual(val.capabilities, ['ips', 'portMappings'], 'the capabilities the installed conflist declares');
  }

  // libcni's own check (what podman runs on every network load) refuses 1.1.0 after asking the plugin.
  const v11 = variant('1.0.0', 'v110.conflist', {}, { cniVersion: '1.1.0' });
  const val = await cnitool('validate', v11);
  t.false(val.ok);
  t.is(val.error, '[plugin vsw-cni does not support config version "1.1.0"]');

  // A runtime that goes ahead anyway: the plugin refuses ADD with code 1 and creates nothing.
  const sb = await namedSandbox(`${prefix}-v11`);
  const id = `${prefix}-ctr-v11`;
  const before = await allEndpointIds();
  const add = await cnitool('add', v11, id, sb.path);
  t.false(add.ok, 'ADD with cniVersion 1.1.0');
  t.is(add.code, 1, `ADD 1.1.0: ${add.error}`);
  assertOneSentence(t, add.msg, 'ADD with cniVersion 1.1.0');
  t.true(add.msg?.includes('"1.1.0"'), `the msg names the version: ${add.msg}`);
  t.deepEqual(await allEndpointIds(), before, 'no endpoint was created');
  t.deepEqual(await linkNames(sb), ['lo'], 'no TAP in the namespace');
  t.false(existsSync(cacheFile(`${prefix}-cni-100`, id)), 'libcni cached nothing');

  // `vsw cni install` does not write one.
  const inst = await runCli(['cni', 'install', '--network', NET, '--name', `${prefix}-v11`, '--bin-dir', `${DIR}/v11bin`, '--conf-dir', `${DIR}/v11conf`, '--cni-version', '1.1.0', '--socket', d.socket]);
  t.not(inst.code, 0, 'vsw cni install --cni-version 1.1.0 is refused');
  t.true(inst.stderr.includes('1.1.0'), `the refusal names the version: ${inst.stderr}`);
  t.false(existsSync(`${DIR}/v11conf`) && readdirSync(`${DIR}/v11conf`).length > 0, 'no conflist written');
  await sb.remove();
});

test.serial('bad input fails with one sentence and the right code, and nothing is half-created', async (t) => {
  const sb = await namedSandbox(`${prefix}-bad`);
  // A socket file nobody listens on (bound, never listening): connecting is refused, not "no such file".
  const stale = `${DIR}/stale.sock`;
  const bind = await sh('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`]);
  if (bind.code !== 0) throw new Error(`binding ${stale}: ${bind.stderr}`);
  const cases: { what: string; conflist: string; netns?: string; code: number; names: string; delOk: boolean }[] = [
    { what: 'a conflist naming an unknown vsw network', conflist: variant('1.0.0', 'nonet.conflist', { network: `${prefix}-nonet` }), code: 7, names: `${prefix}-nonet`, delOk: true },
    { what: 'a CNI_NETNS that does not exist', conflist: installed.get('1.0.0')!.path, netns: `/run/netns/${prefix}-gone`, code: 4, names: `/run/netns/${prefix}-gone`, delOk: true },
    { what: 'an address another endpoint has', conflist: variant('1.0.0', 'taken.conflist', { ip: peer.ip }), code: 100, names: peer.ip, delOk: true },
    { what: 'a daemon socket path that does not exist', conflist: variant('0.4.0', 'nodaemon.conflist', { socket: `${DIR}/nobody.sock` }), code: 11, names: `${DIR}/nobody.sock`, delOk: false },
    { what: 'a daemon socket nobody listens on', conflist: variant('1.0.0', 'stale.conflist', { socket: stale }), code: 11, names: stale, delOk: false },
  ];
  const before = await allEndpointIds();
  for (const [i, c] of cases.entries()) {
    const id = `${prefix}-ctr-bad${i}`;
    const netName = (JSON.parse(readFileSync(c.conflist, 'utf8')) as { name: string }).name;
    const add = await cnitool('add', c.conflist, id, c.netns ?? sb.path);
    t.false(add.ok, `${c.what}: ADD succeeded`);
    t.is(add.code, c.code, `${c.what}: ${add.error}`);
    assertOneSentence(t, add.msg, c.what);
    t.true(add.msg?.includes(c.names), `${c.what}: the msg names ${c.names}: ${add.msg}`);
    t.true(add.error?.startsWith('plugin type="vsw-cni" '), `${c.what}: libcni reports the plugin's error: ${add.error}`);
    t.deepEqual(await endpointsOf(`cni:${id}/eth0`), [], `${c.what}: no endpoint for the container`);
    t.deepEqual(await allEndpointIds(), before, `${c.what}: no endpoint at all was created`);
    t.deepEqual(await linkNames(sb), ['lo'], `${c.what}: no TAP in the namespace`);
    t.false(existsSync(cacheFile(netName, id)), `${c.what}: libcni cached no result`);
    // What podman does after a failed ADD: DEL. It succeeds unless the daemon cannot be asked.
    const del = await cnitool('del', c.conflist, id, c.netns ?? sb.path);
    if (c.delOk) t.true(del.ok, `${c.what}: DEL after the failed ADD: ${del.error}`);
    else {
      t.is(del.code, 11, `${c.what}: DEL without a daemon: ${del.error}`);
      assertOneSentence(t, del.msg, `${c.what}: DEL`);
    }
  }
  await sb.remove();
});

test.serial('vsw cni uninstall removes the launcher and the conflists it wrote, and nothing else', async (t) => {
  const bin = `${DIR}/u/bin`;
  const conf = `${DIR}/u/conf`;
  const net2 = `${prefix}-m`;
  await d.vswOk(['network', 'create', '-d', 'internal', '--subnet', `10.232.${OCTET}.0/24`, net2]);
  mkdirSync(bin, { recursive: true });
  mkdirSync(conf, { recursive: true });
  const unrelated: Record<string, string> = {
    [`${bin}/other-plugin`]: '#!/bin/sh\necho other\n',
    [`${bin}/vsw-cni.bak`]: 'not the launcher\n',
    [`${conf}/50-other.conflist`]: JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge', bridge: `${prefix}-nobr` }] }),
    [`${conf}/60-broken.conflist`]: '{ not json',
    [`${conf}/README`]: 'an unrelated file\n',
  };
  for (const [path, text] of Object.entries(unrelated)) writeFileSync(path, text, { mode: 0o755 });
  const launcher = `${bin}/vsw-cni`;
  const conf1 = `${conf}/10-vsw-${prefix}-u1.conflist`;
  const conf2 = `${conf}/10-vsw-${prefix}-u2.conflist`;
  await d.vswOk(['cni', 'install', '--network', NET, '--name', `${prefix}-u1`, '--bin-dir', bin, '--conf-dir', conf, '--socket', d.socket]);
  await d.vswOk(['cni', 'install', '--network', net2, '--name', `${prefix}-u2`, '--bin-dir', bin, '--conf-dir', conf, '--socket', d.socket]);
  t.true(existsSync(launcher) && existsSync(conf1) && existsSync(conf2), 'installed');

  // One network's conflist: the launcher stays, another conflist still needs it.
  const one = await runCli(['cni', 'uninstall', '--network', net2, '--bin-dir', bin, '--conf-dir', conf]);
  t.is(one.code, 0, one.stderr);
  t.deepEqual(one.stdout.split('\n').filter(Boolean), [conf2], 'uninstall --network prints what it removed');
  t.true(existsSync(launcher) && existsSync(conf1) && !existsSync(conf2));

  const all = await runCli(['cni', 'uninstall', '--bin-dir', bin, '--conf-dir', conf]);
  t.is(all.code, 0, all.stderr);
  t.deepEqual(all.stdout.split('\n').filter(Boolean), [conf1, launcher], 'uninstall prints what it removed');
  t.deepEqual(readdirSync(bin).sort(), ['other-plugin', 'vsw-cni.bak']);
  t.deepEqual(readdirSync(conf).sort(), ['50-other.conflist', '60-broken.conflist', 'README']);
  for (const [path, text] of Object.entries(unrelated)) t.is(readFileSync(path, 'utf8'), text, `${path} is untouched`);

  // Nothing of vsw left to remove: a second uninstall removes nothing and succeeds.
  const again = await runCli(['cni', 'uninstall', '--bin-dir', bin, '--conf-dir', conf]);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout.trim(), '');
  await d.vswOk(['network', 'rm', net2]);
});

test.serial('afterwards: only the peer endpoint is left, no TAP in any container namespace, no libcni result cached', async (t) => {
  t.deepEqual(await allEndpointIds(), [peer.id]);
  const results = existsSync(`${CACHE}/results`) ? readdirSync(`${CACHE}/results`) : [];
  t.deepEqual(results, [], 'libcni result cache is empty');
  const nsList = (await sh('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(prefix));
  t.deepEqual(nsList, [nsPeer], 'every container namespace went with its test');
  t.deepEqual((await linksIn(nsPeer)).sort(), ['eth0', 'lo']);
  for (const h of holders) t.false(h.pid !== undefined && processAlive(h.pid), `unshare process ${h.pid} is gone`);
});
