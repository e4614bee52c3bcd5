/**
 * vsw as docker's network driver, end to end: a real dockerd (20.10, its own
 * data-root, exec-root, socket and containerd, from helpers/runtimes.ts)
 * talking to a real `vsw daemon --docker`, which serves the libnetwork remote
 * driver API on /run/docker/plugins/vsw.sock (the one path where dockerd
 * finds the driver `vsw`; ava runs test files one at a time, so only this
 * file uses it). Everything is driven through docker's own CLI
 * (/usr/bin/docker) and checked with `vsw ... --json`, `docker inspect`, the
 * host's `ip` and `nft` (inside a container's namespace through nsenter on
 * docker's sandbox path), and real traffic: ping between containers, HTTP
 * from the host to busybox httpd in a container through published ports.
 *
 * The networks, on subnets 10.240-10.245.0.0/24, are named with the run's
 * prefix (`-o vsw.name=PREFIX-a`), so their host interfaces and nftables
 * tables carry it too. Host ports: 18120-18139 only.
 *
 * 1. docker network create -d vsw -> a vsw network (subnet, gateway, nat, owner docker:ID);
 *    two containers ping each other; eth0 carries docker's address and the default route;
 *    vsw records each endpoint's netns (docker's sandbox) and ifname eth0.
 * 2. Published ports: -p 18121:80, -p 80 and -P --expose 8080 reach httpd from the host,
 *    the chosen host ports read from `vsw endpoint ls --json`. (2b: one container port on two
 *    host ports is refused with one sentence.)
 * 3. docker rm -f / docker network rm leave no endpoint, TAP, network, host interface or table.
 * 4. A vsw daemon restart with docker containers running: they keep their interfaces and
 *    ping each other; docker rm -f afterwards still cleans up.
 * 5. Bad input (unknown -o option, --ipv6, a subnet overlapping a vsw network) is refused
 *    with one sentence, and nothing is half-created.
 * 6. (Information) how long `docker run -d` takes on a vsw network and on --network none.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Network } from '../../src/service/api-types.js';
import { runPrefix, sh, type CommandResult } from './helpers/env.js';
import { type DaemonHandle, type EndpointJson, restartDaemon, startDaemon, teardown } from './helpers/daemon.js';
import { hostLinkExists, httpGet, nftIpTables, readIpForward, removeNatLeftovers } from './helpers/nat.js';
import { type DockerHandle, runtimeAvailable, startDockerd } from './helpers/runtimes.js';

const prefix = runPrefix();
/** Where dockerd looks for the driver named vsw; `vsw daemon --docker` serves it there. */
const DRIVER_SOCKET = '/run/docker/plugins/vsw.sock';
/** Test 1-3's network (docker's name and vsw's: at most 15 characters, it names the host interface). */
const netA = `${prefix}-a`;
const subnetA = '10.240.0.0/24';
/** Test 4's network. */
const netB = `${prefix}-b`;
const subnetB = '10.241.0.0/24';
/** Test 5: a network made with vsw's own CLI, which docker knows nothing of. */
const netV = `${prefix}-v`;
const subnetV = '10.242.0.0/24';
/** Test 1: a docker network without -o vsw.name (internal, so it has no host interface). */
const netI = `${prefix}-i`;
const subnetI = '10.244.0.0/24';
/** Test 6's network. */
const netT = `${prefix}-t`;
const subnetT = '10.245.0.0/24';
/** Published by test 2's first web container. */
const HOST_PORT = 18121;
/** What httpd serves (index.html in a directory bind-mounted into the containers). */
const PAGE = `hello from ${prefix}`;
const WWW = `/tmp/${prefix}/www`;
const WWW_MOUNT = ['-v', `${WWW}:/www:ro`];
const TAP_RE = /^vsw[0-9a-f]{12}$/;

let d: DaemonHandle | undefined;
let dk: DockerHandle | undefined;
let image: string;
let forwardBefore: string | undefined;

test.before(async () => {
  const missing = await runtimeAvailable('docker');
  if (missing !== null) throw new Error(`docker cannot run here: ${missing}`);
  if (existsSync(DRIVER_SOCKET)) throw new Error(`${DRIVER_SOCKET} exists already: another vsw daemon serves docker; this file needs that path for its own.`);
  forwardBefore = readIpForward();
  d = await startDaemon(prefix, { extraArgs: ['--docker'] });
  dk = await startDockerd(prefix);
  image = await dk.importBusyboxImage();
  mkdirSync(WWW, { recursive: true });
  writeFileSync(`${WWW}/index.html`, `${PAGE}\n`);
});

test.after.always(async () => {
  const problems: string[] = [];
  // dockerd first: its rm -f goes through the driver while the vsw daemon still answers.
  if (dk) await dk.stop().catch((err: Error) => problems.push(err.message));
  try {
    await teardown(prefix, d);
  } catch (err) {
    problems.push((err as Error).message);
  }
  await removeNatLeftovers(prefix, forwardBefore);
  if (d && existsSync(DRIVER_SOCKET)) problems.push(`${DRIVER_SOCKET} is still there after the daemon exited`);
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

// ----------------------------------------------------------------- helpers

function daemon(): DaemonHandle {
  if (!d) throw new Error('the vsw daemon did not start');
  return d;
}

function docker(): DockerHandle {
  if (!dk) throw new Error('dockerd did not start');
  return dk;
}

/** Calls `fn` until it returns something other than undefined; throws with `what` and the last value seen after timeoutMs. */
async function poll<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 10_000, last: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last() ? ` (last: ${last()})` : ''}`);
    await sleep(100);
  }
}

/** `docker network create -d vsw --subnet SUBNET -o vsw.name=NAME NAME`; resolves to docker's network id. */
async function createDockerNetwork(name: string, subnet: string): Promise<string> {
  const id = (await docker().dockerOk(['network', 'create', '-d', 'vsw', '--subnet', subnet, '-o', `vsw.name=${name}`, name])).trim();
  if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`docker network create printed ${JSON.stringify(id)}, not a network id`);
  return id;
}

/** `docker run -d --name NAME ...args`; resolves to the container id. */
async function run(name: string, args: string[]): Promise<string> {
  return (await docker().dockerOk(['run', '-d', '--name', name, ...args])).trim();
}

interface ContainerNet {
  sandbox: string;
  endpointId: string;
  ip: string;
  prefixLen: number;
  mac: string;
  gateway: string;
}

/** What docker says of a container's attachment to `network`. */
async function containerNet(container: string, network: string): Promise<ContainerNet> {
  const s = JSON.parse(await docker().dockerOk(['inspect', '--format', '{{json .NetworkSettings}}', container])) as {
    SandboxKey: string;
    Networks: Record<string, { EndpointID: string; IPAddress: string; IPPrefixLen: number; MacAddress: string; Gateway: string }>;
  };
  const n = s.Networks[network];
  if (!n) throw new Error(`docker inspect ${container}: not attached to ${network}: ${JSON.stringify(s.Networks)}`);
  return { sandbox: s.SandboxKey, endpointId: n.EndpointID, ip: n.IPAddress, prefixLen: n.IPPrefixLen, mac: n.MacAddress, gateway: n.Gateway };
}

/** The host's `ip -j ARGS` inside the namespace at `path` (a docker sandbox). */
async function ipIn<T>(path: string, args: string[]): Promise<T> {
  const r = await sh('nsenter', [`--net=${path}`, 'ip', '-j', ...args]);
  if (r.code !== 0) throw new Error(`nsenter --net=${path} ip -j ${args.join(' ')}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

interface Eth0 {
  ifindex: number;
  mac: string;
  addrs: string[];
  defaultVia: string[];
}

/** eth0 in a container's namespace: index, MAC, IPv4 addresses and default routes. */
async function eth0(sandbox: string): Promise<Eth0> {
  const [link] = await ipIn<{ ifindex: number; address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[]>(sandbox, ['addr', 'show', 'dev', 'eth0']);
  const routes = await ipIn<{ dst: string; gateway?: string; dev: string }[]>(sandbox, ['-4', 'route', 'show', 'default']);
  return {
    ifindex: link.ifindex,
    mac: link.address,
    addrs: link.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    defaultVia: routes.map((r) => `${r.gateway ?? '-'} dev ${r.dev}`),
  };
}

async function endpoints(): Promise<EndpointJson[]> {
  return daemon().vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
}

async function networks(): Promise<Network[]> {
  return daemon().vswJson<Network[]>(['network', 'ls', '--json']);
}

/** Polls `vsw endpoint ls --json` until docker endpoint `dockerEndpoint` is recorded in `sandbox` as eth0. */
async function placedEndpoint(dockerEndpoint: string, sandbox: string): Promise<EndpointJson> {
  let seen: EndpointJson | undefined;
  return poll(
    `vsw records endpoint docker:${dockerEndpoint.slice(0, 12)} in ${sandbox} as eth0`,
    async () => {
      seen = (await endpoints()).find((e) => e.owner === `docker:${dockerEndpoint}`);
      return seen && seen.netns === sandbox && seen.ifname === 'eth0' && !seen.unplaced ? seen : undefined;
    },
    15_000,
    () => JSON.stringify(seen ?? null),
  );
}

/** `docker exec FROM ping` to `ip`; true when a reply came. */
async function dockerPing(from: string, ip: string): Promise<CommandResult> {
  return docker().docker(['exec', from, 'ping', '-c', '2', '-W', '2', ip], { timeoutMs: 20_000 });
}

/** TAPs named like the driver's (vsw + 12 hex) in the host namespace: a docker endpoint not (or no longer) in a container. */
async function hostDriverTaps(): Promise<string[]> {
  const links = JSON.parse((await sh('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[];
  return links.map((l) => l.ifname).filter((n) => TAP_RE.test(n));
}

/** Removes the containers with docker and waits until vsw has no endpoint and the host no driver TAP left. */
async function removeContainersAndCheck(t: ExecutionContext, names: string[]): Promise<void> {
  const rm = await docker().docker(['rm', '-f', ...names], { timeoutMs: 60_000 });
  t.is(rm.code, 0, `docker rm -f: ${rm.stderr.trim()}`);
  const ps = (await docker().dockerOk(['ps', '-aq'])).trim();
  t.is(ps, '', 'docker still lists containers');
  let left: string[] = [];
  try {
    await poll(
      'no vsw endpoint and no driver TAP in the host namespace after docker rm -f',
      async () => {
        const eps = await endpoints();
        const taps = await hostDriverTaps();
        left = [...eps.map((e) => `endpoint ${e.name} (${e.owner ?? ''}) in ${e.netns}/${e.ifname}`), ...taps.map((n) => `TAP ${n}`)];
        return left.length === 0 ? true : undefined;
      },
      15_000,
    );
  } catch {
    // Asserted below with what was left.
  }
  t.deepEqual(left, [], 'left after docker rm -f');
}

/** Removes a docker network and checks that vsw's network, its host interface and nft table went with it. */
async function removeNetworkAndCheck(t: ExecutionContext, name: string): Promise<void> {
  const before = (await networks()).find((n) => n.name === name);
  t.truthy(before?.nat, `vsw network ${name} is not there (with its nat section) before docker network rm`);
  const table = before?.nat ? `vsw_nat_${before.nat.hostInterface.replace(/[^A-Za-z0-9_]/g, '_')}` : undefined;
  if (before?.nat && table) {
    t.true(await hostLinkExists(before.nat.hostInterface), `host interface ${before.nat.hostInterface} missing before docker network rm`);
    t.true((await nftIpTables()).includes(table), `nft table ${table} missing before docker network rm`);
  }
  const rm = await docker().docker(['network', 'rm', name]);
  t.is(rm.code, 0, `docker network rm ${name}: ${rm.stderr.trim()}`);
  t.false((await networks()).some((n) => n.name === name), `vsw network ${name} is still there after docker network rm`);
  t.false((await docker().dockerOk(['network', 'ls', '--format', '{{.Name}}'])).split('\n').includes(name), `docker still lists ${name}`);
  if (before?.nat && table) {
    t.false(await hostLinkExists(before.nat.hostInterface), `host interface ${before.nat.hostInterface} is still there after docker network rm`);
    t.false((await nftIpTables()).includes(table), `nft table ${table} is still there after docker network rm`);
  }
}

/** Networks A and T are made by the first test that needs them. */
const made = new Map<string, Promise<string>>();
function ensureNetwork(name: string, subnet: string): Promise<string> {
  let p = made.get(name);
  if (!p) {
    p = createDockerNetwork(name, subnet);
    made.set(name, p);
  }
  return p;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The host's own IPv4 address: the first one on the interface of its default route. */
async function hostAddress(): Promise<string> {
  const [route] = JSON.parse((await sh('ip', ['-j', '-4', 'route', 'show', 'default'])).stdout) as { dev: string }[];
  if (!route) throw new Error('the host has no IPv4 default route');
  const [link] = JSON.parse((await sh('ip', ['-j', '-4', 'addr', 'show', 'dev', route.dev])).stdout) as { addr_info: { local: string }[] }[];
  const addr = link?.addr_info[0]?.local;
  if (!addr) throw new Error(`${route.dev} has no IPv4 address`);
  return addr;
}

function ephemeralRange(): [number, number] {
  const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  return [lo, hi];
}

/** GET http://HOST:PORT/ from the host until it answers (httpd starts after docker run returns); the last result. */
async function fetchPage(host: string, port: number, timeoutMs = 10_000): Promise<{ ok: boolean; body: string }> {
  let r = { ok: false, body: '' };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    r = await httpGet(null, `http://${host}:${port}/`, 2);
    if (r.ok) return r;
    await sleep(200);
  }
  return r;
}

// ------------------------------------------------------------------- tests

test.serial('docker network create -d vsw makes a vsw network, and two containers on it reach each other', async (t) => {
  const id = await ensureNetwork(netA, subnetA);
  const net = (await networks()).find((n) => n.name === netA);
  t.truthy(net, `vsw network ls has no ${netA}`);
  t.like(net, { subnet: subnetA, gateway: '10.240.0.1', driver: 'nat', owner: `docker:${id}` });
  const [inspect] = JSON.parse(await docker().dockerOk(['network', 'inspect', netA])) as { Driver: string; IPAM: { Config: { Subnet: string }[] } }[];
  t.is(inspect.Driver, 'vsw');
  t.deepEqual(
    inspect.IPAM.Config.map((c) => c.Subnet),
    [subnetA],
  );

  const names = [`${prefix}-c1`, `${prefix}-c2`];
  for (const n of names) await run(n, ['--network', netA, image, 'sleep', '300']);
  const att = await Promise.all(names.map((n) => containerNet(n, netA)));
  const execNetns = `${docker().dir}/exec/netns/`;
  for (const [i, a] of att.entries()) {
    t.true(a.ip.startsWith('10.240.0.') && a.prefixLen === 24, `${names[i]}: docker gave ${a.ip}/${a.prefixLen}`);
    t.is(a.gateway, '10.240.0.1', `${names[i]}: docker's gateway`);
    const e = await eth0(a.sandbox);
    t.deepEqual(e.addrs, [`${a.ip}/24`], `${names[i]}: eth0's addresses`);
    t.is(e.mac, a.mac, `${names[i]}: eth0's MAC`);
    t.deepEqual(e.defaultVia, ['10.240.0.1 dev eth0'], `${names[i]}: default route`);
    const ep = await placedEndpoint(a.endpointId, a.sandbox);
    t.true(ep.netns.startsWith(execNetns), `${names[i]}: endpoint netns ${ep.netns} is not under ${execNetns}`);
    t.like(ep, { network: netA, ip: a.ip, mac: a.mac, name: `docker-${a.endpointId.slice(0, 12)}`, state: 'up' });
  }
  t.is((await endpoints()).filter((e) => e.network === netA).length, 2, 'vsw endpoint ls: one endpoint per container');

  const p12 = await dockerPing(names[0], att[1].ip);
  t.is(p12.code, 0, `ping c1 -> c2: ${p12.stdout.trim()} ${p12.stderr.trim()}`);
  const p21 = await dockerPing(names[1], att[0].ip);
  t.is(p21.code, 0, `ping c2 -> c1: ${p21.stdout.trim()} ${p21.stderr.trim()}`);

  // Without -o vsw.name the network is named after docker's id (internal: no host interface to name).
  const idI = (await docker().dockerOk(['network', 'create', '-d', 'vsw', '--internal', '--subnet', subnetI, netI])).trim();
  const netIVsw = (await networks()).find((n) => n.owner === `docker:${idI}`);
  t.like(netIVsw, { name: `docker-${idI.slice(0, 12)}`, driver: 'internal', subnet: subnetI });
  t.is(netIVsw?.nat, undefined);
  await docker().dockerOk(['network', 'rm', netI]);
  t.false((await networks()).some((n) => n.owner === `docker:${idI}`), 'the internal network is still in vsw after docker network rm');
});

test.serial('ports published with -p, -p 80 and -P reach httpd in the containers from the host', async (t) => {
  await ensureNetwork(netA, subnetA);
  const web = [`${prefix}-w1`, `${prefix}-w2`, `${prefix}-w3`];
  await run(web[0], ['--network', netA, '-p', `${HOST_PORT}:80`, ...WWW_MOUNT, image, 'httpd', '-f', '-p', '80', '-h', '/www']);
  await run(web[1], ['--network', netA, '-p', '80', ...WWW_MOUNT, image, 'httpd', '-f', '-p', '80', '-h', '/www']);
  await run(web[2], ['--network', netA, '-P', '--expose', '8080', ...WWW_MOUNT, image, 'httpd', '-f', '-p', '8080', '-h', '/www']);
  const eps: EndpointJson[] = [];
  for (const w of web) {
    const a = await containerNet(w, netA);
    eps.push(await placedEndpoint(a.endpointId, a.sandbox));
  }

  const [lo, hi] = ephemeralRange();
  const wanted = [
    { containerPort: 80, fixed: HOST_PORT, what: `-p ${HOST_PORT}:80` },
    { containerPort: 80, fixed: 0, what: '-p 80' },
    { containerPort: 8080, fixed: 0, what: '-P --expose 8080' },
  ];
  const hostPorts: number[] = [];
  for (const [i, w] of wanted.entries()) {
    const pub = eps[i].publish ?? [];
    t.is(pub.length, 1, `${w.what}: vsw endpoint ls --json publish ${JSON.stringify(pub)}`);
    t.like(pub[0], { protocol: 'tcp', containerPort: w.containerPort }, `${w.what}: the mapping`);
    const port = pub[0]?.hostPort ?? 0;
    if (w.fixed !== 0) t.is(port, w.fixed, `${w.what}: host port`);
    else t.true(port >= lo && port <= hi, `${w.what}: vsw chose host port ${port}, not in the ephemeral range ${lo}-${hi}`);
    hostPorts.push(port);
  }
  t.not(hostPorts[1], hostPorts[2], 'vsw chose the same host port twice');

  const host = await hostAddress();
  for (const [i, w] of wanted.entries()) {
    for (const addr of ['127.0.0.1', host]) {
      const r = await fetchPage(addr, hostPorts[i]);
      t.true(r.ok, `${w.what}: GET http://${addr}:${hostPorts[i]}/ failed: ${r.body}`);
      t.is(r.body, PAGE, `${w.what}: GET http://${addr}:${hostPorts[i]}/`);
    }
  }
});

// The gateway answers for a container port from one published port, so a second host port for
// the same container port is refused (one sentence through docker) instead of half-working.
test.serial('one container port published on two host ports is refused with one sentence, and no endpoint is made', async (t) => {
  await ensureNetwork(netA, subnetA);
  const name = `${prefix}-w4`;
  const before = (await endpoints()).map((e) => e.id).sort();
  const tapsBefore = await hostDriverTaps();
  const r = await docker().docker(['run', '-d', '--name', name, '--network', netA, '-p', `${HOST_PORT + 1}:80`, '-p', `${HOST_PORT + 2}:80`, image, 'sleep', '300']);
  try {
    t.not(r.code, 0, `docker run with -p A:80 -p B:80 succeeded: ${r.stdout.trim()}`);
    t.regex(r.stderr, /remote: container port 80\/tcp is published twice \(on host port \d+ and on host port \d+\): vsw publishes a container port on one host port; drop one mapping\./);
    t.deepEqual((await endpoints()).map((e) => e.id).sort(), before, 'an endpoint was left by the refused container');
    t.deepEqual(await hostDriverTaps(), tapsBefore, 'a TAP was left in the host namespace by the refused container');
  } finally {
    // docker keeps the container it could not start (Created): it is this test's to remove.
    await docker().docker(['rm', '-f', name]);
  }
});

test.serial('docker rm -f and docker network rm leave no endpoint, TAP, network, host interface or nft table', async (t) => {
  await ensureNetwork(netA, subnetA);
  const names = (await docker().dockerOk(['ps', '-a', '--format', '{{.Names}}'])).split('\n').filter(Boolean);
  t.true(names.length > 0, 'the tests before left no container to remove');
  await removeContainersAndCheck(t, names);
  const ss = await sh('ss', ['-Hltn', `sport = :${HOST_PORT}`]);
  t.is(ss.stdout.trim(), '', `host port ${HOST_PORT} is still listened on after its container was removed`);
  await removeNetworkAndCheck(t, netA);
  made.delete(netA);
});

test.serial('containers on a vsw network keep working across a vsw daemon restart, and are removed cleanly afterwards', async (t) => {
  await createDockerNetwork(netB, subnetB);
  const names = [`${prefix}-r1`, `${prefix}-r2`];
  for (const n of names) await run(n, ['--network', netB, image, 'sleep', '300']);
  const att = await Promise.all(names.map((n) => containerNet(n, netB)));
  const before: Eth0[] = [];
  for (const a of att) {
    await placedEndpoint(a.endpointId, a.sandbox);
    before.push(await eth0(a.sandbox));
  }
  t.is((await dockerPing(names[0], att[1].ip)).code, 0, 'ping before the restart');

  const code = await daemon().stop('SIGTERM');
  t.is(code, 0, `SIGTERM: exit ${code}`);
  t.false(existsSync(DRIVER_SOCKET), `${DRIVER_SOCKET} is still there after the daemon exited`);
  // The containers are untouched while vsw is down.
  for (const [i, a] of att.entries()) t.deepEqual(await eth0(a.sandbox), before[i], `${names[i]}: eth0 while vsw is down`);
  const started = Date.now();
  d = await restartDaemon(daemon());
  const answeredMs = Date.now() - started;
  t.true(existsSync(DRIVER_SOCKET), `${DRIVER_SOCKET} is not served again after the restart`);

  for (const [i, a] of att.entries()) {
    t.deepEqual(await eth0(a.sandbox), before[i], `${names[i]}: eth0 after the restart`);
    const ep = await placedEndpoint(a.endpointId, a.sandbox);
    t.like(ep, { network: netB, ip: a.ip, mac: a.mac, state: 'up' });
  }
  const pingStart = Date.now();
  let last: CommandResult | undefined;
  let attempts = 0;
  await poll(
    'ping between the containers after the restart',
    async () => {
      attempts++;
      last = await dockerPing(names[0], att[1].ip);
      return last.code === 0 ? true : undefined;
    },
    15_000,
  ).catch(() => undefined);
  t.is(last?.code, 0, `ping r1 -> r2 after the restart: ${last?.stdout.trim()} ${last?.stderr.trim()}`);
  const back = await dockerPing(names[1], att[0].ip);
  t.is(back.code, 0, `ping r2 -> r1 after the restart: ${back.stdout.trim()} ${back.stderr.trim()}`);
  t.log(`restart: the daemon answered ${answeredMs} ms after it was started; ping (2 echoes, 1 s apart) succeeded on attempt ${attempts}, ${Date.now() - pingStart} ms later`);

  await removeContainersAndCheck(t, names);
  await removeNetworkAndCheck(t, netB);
});

test.serial('bad docker network requests are refused with one sentence and create nothing', async (t) => {
  const assertRefused = async (r: CommandResult, what: string, sentence: RegExp): Promise<void> => {
    const err = r.stderr.trim();
    t.not(r.code, 0, `${what}: exit code (stdout ${r.stdout.trim()})`);
    t.false(err.includes('\n'), `${what}: more than one line: ${err}`);
    // docker prefixes what a remote driver says with "Error response from daemon: remote: ".
    const m = /^Error response from daemon: remote: (.*)$/.exec(err);
    t.truthy(m, `${what}: not the driver's refusal: ${err}`);
    t.regex(m?.[1] ?? '', sentence, `${what}: the sentence`);
    t.regex(err, /\.$/, `${what}: does not end with a period: ${err}`);
    t.false(/ at .*\.js/.test(err), `${what}: a stack trace: ${err}`);
  };
  const vswBefore = (await networks()).map((n) => n.name).sort();
  const dockerNets = async (): Promise<string[]> => (await docker().dockerOk(['network', 'ls', '--format', '{{.Name}}'])).split('\n').filter(Boolean).sort();
  const dockerBefore = await dockerNets();
  const netX = `${prefix}-x`;
  const nothingMade = async (what: string): Promise<void> => {
    t.deepEqual((await networks()).map((n) => n.name).sort(), vswBefore, `${what}: vsw networks changed`);
    t.deepEqual(await dockerNets(), dockerBefore, `${what}: docker networks changed`);
    t.false(await hostLinkExists(netX), `${what}: host interface ${netX} exists`);
  };

  const bogus = await docker().docker(['network', 'create', '-d', 'vsw', '--subnet', '10.243.0.0/24', '-o', `vsw.name=${netX}`, '-o', 'vsw.bogus=1', netX]);
  await assertRefused(bogus, '-o vsw.bogus=1', /^docker network option vsw\.bogus is not known to vsw: .+\.$/);
  await nothingMade('-o vsw.bogus=1');

  const v6 = await docker().docker(['network', 'create', '-d', 'vsw', '--ipv6', '--subnet', '10.243.0.0/24', '--subnet', 'fd00:243::/64', '-o', `vsw.name=${netX}`, netX]);
  await assertRefused(v6, '--ipv6', /IPv4 only/);
  await nothingMade('--ipv6');

  // Docker's IPAM refuses overlaps among its own networks itself; vsw refuses one with a network docker does not know.
  await daemon().vswOk(['network', 'create', '-d', 'internal', '--subnet', subnetV, netV]);
  const vswWithV = (await networks()).map((n) => n.name).sort();
  const overlap = await docker().docker(['network', 'create', '-d', 'vsw', '--subnet', '10.242.0.128/25', '-o', `vsw.name=${netX}`, netX]);
  await assertRefused(overlap, 'overlapping subnet', new RegExp(`^subnet 10\\.242\\.0\\.128/25 overlaps network ${netV} \\(${subnetV.replace(/\./g, '\\.')}\\): .+\\.$`));
  t.deepEqual((await networks()).map((n) => n.name).sort(), vswWithV, 'overlapping subnet: vsw networks changed');
  t.deepEqual(await dockerNets(), dockerBefore, 'overlapping subnet: docker networks changed');
  t.false(await hostLinkExists(netX), `overlapping subnet: host interface ${netX} exists`);
  await daemon().vswOk(['network', 'rm', netV]);
});

test.serial('docker run -d on a vsw network and on --network none (information)', async (t) => {
  await ensureNetwork(netT, subnetT);
  const times: Record<'vsw' | 'none', number[]> = { vsw: [], none: [] };
  const names: string[] = [];
  for (let i = 0; i < 5; i++) {
    for (const kind of ['vsw', 'none'] as const) {
      const name = `${prefix}-${kind}${i}`;
      const started = process.hrtime.bigint();
      await run(name, ['--network', kind === 'vsw' ? netT : 'none', image, 'sleep', '300']);
      times[kind].push(Number(process.hrtime.bigint() - started) / 1e6);
      names.push(name);
    }
  }
  const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(', ');
  t.log(`docker run -d, median of 5: vsw network ${median(times.vsw).toFixed(0)} ms (${fmt(times.vsw)}); --network none ${median(times.none).toFixed(0)} ms (${fmt(times.none)})`);
  t.is((await endpoints()).filter((e) => e.network === netT).length, 5, 'one vsw endpoint per container on the vsw network');
  await removeContainersAndCheck(t, names);
  await removeNetworkAndCheck(t, netT);
  made.delete(netT);
});
