/**
 * The controller beyond overlays: networks of the per-host modes (internal,
 * nat: each host its own, allocating its own addresses), a transparent
 * network on each host's uplink to one LAN (the controller hands out
 * addresses unique across the hosts), and a load balancer on an overlay
 * across both hosts, its backends drained and removed through the
 * controller. A balancer of the same name made by hand on a host is never
 * touched. Etcd, the controller and two agent hosts on underlay
 * 192.168.95.0/24; the LAN is a namespace with a bridge.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync } from 'node:fs';
import type { Endpoint, LoadBalancer } from '../../src/service/api-types.js';
import { addNetns, inNetns, ping, runPrefix, spawnInNetns } from './helpers/env.js';
import { assertOneSentence, CLI, readLines, runCli, teardown } from './helpers/daemon.js';
import { controllerApi, controllerCli, startControllerRig, until, type ControllerRig } from './helpers/controller.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { HTTP_CLIENT, NAMED_HTTP_SERVER } from './helpers/http.js';

const prefix = runPrefix();
const dir = `/tmp/${prefix}/controller-modes`;
const ns = (n: string): string => `${prefix}-${n}`;
const INTERNAL = ns('in');
const NAT = ns('nat');
const LANNET = ns('tr');
const OVERLAY = ns('ov');
const UPLINK = `${prefix}u`;
const PORT = 8080;

let rig: ControllerRig | undefined;
const servers: ChildProcess[] = [];
let second: ChildProcess | undefined;

interface EndpointView {
  name: string;
  host: string;
  ip: string;
  status: Record<string, { state: string; reason?: string }>;
}
type LbView = { name: string; vip: string; status: Record<string, { state: string; reason?: string; revision: number }> };

const ctl = (args: string[]): Promise<string> => rig!.ctl(args);
const daemon = (h: string) => rig!.daemons.get(h)!;

async function endpoint(name: string): Promise<EndpointView> {
  return JSON.parse(await ctl(['endpoint', 'inspect', name])) as EndpointView;
}

/** Endpoints made through the controller, waited for until their hosts applied them. */
async function place(network: string, placements: [name: string, host: string, netns: string][]): Promise<EndpointView[]> {
  for (const [name, host, netns] of placements) await ctl(['endpoint', 'create', '--network', network, '--host', host, '--netns', netns, '--name', name]);
  await until(`${placements.map((p) => p[0]).join(', ')} applied`, async () => {
    for (const [name, host] of placements) if ((await endpoint(name)).status[host]?.state !== 'applied') return false;
    return true;
  });
  return Promise.all(placements.map(([name]) => endpoint(name)));
}

async function balancer(name: string): Promise<LbView> {
  return (await controllerApi(rig!.socket, 'GET', `/v1/loadbalancers/${name}`)).body as LbView;
}

/** The balancer as host h's daemon has it (undefined when it has none of that name). */
async function localBalancer(h: string, name: string): Promise<LoadBalancer | undefined> {
  return (await daemon(h).vswJson<LoadBalancer[]>(['lb', 'ls', '--json'])).find((l) => l.name === name);
}

/** n GETs to the VIP from `client`, each a new connection: which backend answered how often. */
async function spread(client: string, vip: string, n: number): Promise<Record<string, number>> {
  const r = await inNetns(ns(client), 'python3', ['-c', HTTP_CLIENT, vip, '80', String(n)], { timeoutMs: 60_000 });
  const out = JSON.parse(r.stdout) as { counts: Record<string, number>; failures: string[] };
  if (out.failures.length > 0) throw new Error(`${client}: ${out.failures.length} of ${n} requests failed: ${out.failures[0]}`);
  return out.counts;
}

test.before(async () => {
  for (const n of ['c1', 'c2', 's1', 's2', 'lan']) await addNetns(ns(n));
  await buildLan(ns('lan'));
  rig = await startControllerRig(prefix, {
    underlay: '192.168.95',
    hosts: 2,
    etcdPort: 23890,
    dir,
    // The same uplink name on both hosts, as a fleet's hosts have (eth1 on each), there when their agents register.
    beforeAgents: async (hosts) => {
      for (const [i, host] of hosts.entries()) await plugIntoLan(ns('lan'), `h${i + 1}`, { name: UPLINK, netns: host.ns });
    },
  });
});

test.after.always(async () => {
  for (const s of servers) s.kill('SIGKILL');
  second?.kill('SIGKILL');
  rig?.controller.kill('SIGTERM');
  rig?.etcd.kill('SIGTERM');
  await sleep(300);
  await teardown(prefix, ...(rig?.daemons.values() ?? []));
});

test.serial('internal and nat networks are made alike on each host, and each host hands out its own addresses', async (t) => {
  await ctl(['network', 'create', '-d', 'internal', '--subnet', '10.95.1.0/24', '--hosts', 'h1,h2', INTERNAL]);
  await ctl(['network', 'create', '-d', 'nat', '--subnet', '10.95.2.0/24', '--hosts', 'h1,h2', NAT]);
  const internal = await place(INTERNAL, [
    [ns('i1'), 'h1', ns('c1')],
    [ns('i2'), 'h2', ns('c2')],
  ]);
  const nat = await place(NAT, [
    [ns('n1'), 'h1', ns('c1')],
    [ns('n2'), 'h2', ns('c2')],
  ]);
  // Each host's first endpoint gets that host's first free address: the same on both, as two separate networks would.
  t.is(internal[0].ip, '10.95.1.2');
  t.is(internal[1].ip, '10.95.1.2');
  t.is(nat[0].ip, '10.95.2.2');
  t.is(nat[1].ip, '10.95.2.2');
  for (const h of ['h1', 'h2']) {
    const nets = await daemon(h).vswJson<{ name: string; driver: string; owner?: string }[]>(['network', 'ls', '--json']);
    t.deepEqual(
      nets.filter((n) => n.name === INTERNAL || n.name === NAT).map((n) => [n.name, n.driver, n.owner]).sort(),
      [
        [INTERNAL, 'internal', `controller:${INTERNAL}`],
        [NAT, 'nat', `controller:${NAT}`],
      ].sort(),
      `${h} has both networks, made by its agent`,
    );
  }
  // The nat network's gateway is each host's own interface.
  t.true(await ping(ns('c1'), '10.95.2.1'), 'c1 reaches its host\'s nat gateway');
  t.true(await ping(ns('c2'), '10.95.2.1'), 'c2 reaches its host\'s nat gateway');
  // Two separate networks: the same address on the other host is not reachable.
  t.false(await ping(ns('c1'), '10.95.1.3', 1), 'no path between the hosts\' internal networks');
  assertOneSentence(t, await runCli(['--controller', rig!.socket, 'network', 'create', '-d', 'l2tunnel', '--uplink', 'x', '--subnet', '10.95.9.0/24', '--hosts', 'h1', ns('bad')]), 'a mode the controller does not make');
  assertOneSentence(t, await runCli(['--controller', rig!.socket, 'network', 'create', '-d', 'transparent', '--subnet', '10.95.9.0/24', '--hosts', 'h1', ns('bad')]), 'transparent without --uplink');
  assertOneSentence(t, await runCli(['--controller', rig!.socket, 'network', 'create', '-d', 'internal', '--subnet', '10.95.9.0/24', '--vni', '7', '--hosts', 'h1', ns('bad')]), 'a VNI on an internal network');
});

test.serial('a VM endpoint placed through the controller: its host serves the socket, and removing it there takes the socket too', async (t) => {
  const socket = `${dir}/vm-h1.sock`;
  await ctl(['endpoint', 'create', '--network', INTERNAL, '--host', 'h1', '--vhost-user', socket, '--name', ns('vm1')]);
  await until(`${ns('vm1')} applied`, async () => (await endpoint(ns('vm1'))).status.h1?.state === 'applied');
  const onHost = (await daemon('h1').vswJson<Endpoint[]>(['endpoint', 'ls', '--json'])).find((e) => e.name === ns('vm1'));
  t.deepEqual(onHost?.vhostUser, { socket, mode: 'server' }, "h1's agent made a VM endpoint");
  t.is(onHost?.vhost?.state, 'waiting', 'no VMM yet');
  t.is((await endpoint(ns('vm1'))).ip, onHost!.ip, 'the controller shows the address h1 gave it');
  t.true(existsSync(socket), 'h1 serves the socket');
  assertOneSentence(t, await runCli(['--controller', rig!.socket, 'endpoint', 'create', '--network', INTERNAL, '--host', 'h1', '--vhost-user', 'relative.sock', '--name', ns('vm2')]), 'a relative socket path');
  await ctl(['endpoint', 'rm', ns('vm1')]);
  await until(`${ns('vm1')} gone from h1`, async () => !(await daemon('h1').vswJson<Endpoint[]>(['endpoint', 'ls', '--json'])).some((e) => e.name === ns('vm1')));
  t.false(existsSync(socket), 'the socket went with the endpoint');
});

test.serial("a transparent network on each host's uplink: addresses unique across the hosts, and the endpoints meet on the LAN", async (t) => {
  const hosts = (await controllerApi(rig!.socket, 'GET', '/v1/hosts')).body as { name: string; uplinks?: string[] }[];
  for (const h of hosts) t.true(h.uplinks?.includes(UPLINK), `${h.name} registered its interfaces, ${UPLINK} among them: ${JSON.stringify(h.uplinks)}`);
  assertOneSentence(t, await runCli(['--controller', rig!.socket, 'network', 'create', '-d', 'transparent', '--uplink', `${prefix}x`, '--subnet', '10.95.3.0/24', '--hosts', 'h1,h2', LANNET]), 'an uplink the hosts do not have');
  await ctl(['network', 'create', '-d', 'transparent', '--uplink', UPLINK, '--subnet', '10.95.3.0/24', '--hosts', 'h1,h2', LANNET]);
  const [t1, t2] = await place(LANNET, [
    [ns('t1'), 'h1', ns('c1')],
    [ns('t2'), 'h2', ns('c2')],
  ]);
  t.not(t1.ip, t2.ip, 'one segment: the controller gives each endpoint its own address');
  t.true(await ping(ns('c1'), t2.ip), `c1 reaches ${t2.ip} on the other host over the LAN`);
  t.true(await ping(ns('c2'), t1.ip), `c2 reaches ${t1.ip}`);
});

test.serial('a load balancer on an overlay across both hosts: balanced from either host, drained and removed through the controller', async (t) => {
  await ctl(['network', 'create', '-d', 'overlay', '--subnet', '10.95.4.0/24', '--vni', '4295', '--hosts', 'h1,h2', OVERLAY]);
  await place(OVERLAY, [
    [ns('s1'), 'h1', ns('s1')],
    [ns('s2'), 'h2', ns('s2')],
    [ns('o1'), 'h1', ns('c1')],
    [ns('o2'), 'h2', ns('c2')],
  ]);
  for (const n of ['s1', 's2']) {
    const child = spawnInNetns(ns(n), 'python3', ['-c', NAMED_HTTP_SERVER, String(PORT), n]);
    servers.push(child);
    await readLines(child).waitFor(/^listening$/);
  }
  const web = ns('web');
  await ctl(['lb', 'create', web, '--network', OVERLAY, '--port', '80', '--backend', `${ns('s1')}:${PORT}`, '--backend', `${ns('s2')}:${PORT}`]);
  await until('the balancer applied on both hosts', async () => Object.values((await balancer(web)).status).filter((s) => s.state === 'applied').length === 2);
  const { vip } = await balancer(web);
  for (const h of ['h1', 'h2']) {
    const local = await localBalancer(h, web);
    t.is(local?.vip, vip, `${h} balances the controller's VIP`);
    t.is(local?.backends.length, 2, `${h} has both backends, its own by name and the other host's by address`);
  }
  for (const client of ['c1', 'c2']) {
    const counts = await spread(client, vip, 30);
    t.deepEqual(Object.keys(counts).sort(), ['s1', 's2'], `${client}'s requests reach both backends: ${JSON.stringify(counts)}`);
  }

  await ctl(['lb', 'backend', 'drain', web, ns('s2')]);
  await until('s2 drained on both hosts', async () => {
    for (const h of ['h1', 'h2']) if (!(await localBalancer(h, web))?.backends.some((b) => b.draining)) return false;
    return true;
  });
  for (const client of ['c1', 'c2']) t.deepEqual(await spread(client, vip, 20), { s1: 20 }, `after the drain ${client}'s new connections go to s1 only`);

  await ctl(['lb', 'backend', 'rm', web, ns('s2')]);
  await until('s2 removed on both hosts', async () => (await localBalancer('h1', web))?.backends.length === 1 && (await localBalancer('h2', web))?.backends.length === 1);

  const r = await runCli(['--controller', rig!.socket, 'network', 'rm', OVERLAY]);
  t.not(r.code, 0, 'a network whose balancer remains cannot go');
  t.regex(r.stderr, /load balancers/);

  await ctl(['lb', 'rm', web]);
  await until('the balancer gone from both hosts', async () => (await localBalancer('h1', web)) === undefined && (await localBalancer('h2', web)) === undefined);
  // Its VIP is free again on the controller: an endpoint may take it.
  const taken = await runCli(['--controller', rig!.socket, 'endpoint', 'create', '--network', OVERLAY, '--host', 'h1', '--netns', ns('s1'), '--name', ns('o4'), '--ip', vip]);
  t.is(taken.code, 0, `the released VIP ${vip} can be an endpoint's address: ${taken.stderr}`);
});

test.serial('a balancer made by hand on a host is never touched by the controller: its own of that name fails there with the reason', async (t) => {
  const hand = ns('hand');
  await daemon('h1').vswOk(['lb', 'create', hand, '--network', OVERLAY, '--port', '81', '--backend', `${ns('s1')}:${PORT}`]);
  await ctl(['lb', 'create', hand, '--network', OVERLAY, '--port', '82', '--backend', `${ns('s1')}:${PORT}`]);
  await until("the controller's balancer applied on h2 and failed on h1", async () => {
    const s = (await balancer(hand)).status;
    return s.h2?.state === 'applied' && s.h1?.state === 'failed';
  }).catch(async (err: Error) => {
    throw new Error(`${err.message}: ${JSON.stringify((await balancer(hand)).status)}`);
  });
  t.regex((await balancer(hand)).status.h1.reason ?? '', /was not made by the controller/);
  t.is((await localBalancer('h1', hand))?.port, 81, "h1's own balancer is as it was");
  await ctl(['lb', 'rm', hand]);
  await until('gone from h2', async () => (await localBalancer('h2', hand)) === undefined);
  t.is((await localBalancer('h1', hand))?.port, 81, "removing the controller's leaves h1's own");
  await daemon('h1').vswOk(['lb', 'rm', hand]);
});

test.serial('two controllers side by side: endpoints created through both at once get distinct addresses; either one killed, the other serves and the hosts keep everything', async (t) => {
  const socket2 = `${dir}/controller2.sock`;
  second = spawn('ip', ['netns', 'exec', rig!.ul, 'node', CLI, 'controller', '--etcd', rig!.etcdUrl, '--socket', socket2], { stdio: 'ignore' });
  await until('the second controller answers', async () => (await runCli(['--controller', socket2, 'network', 'ls', '--json'])).code === 0);
  // Eight creates racing through the two controllers for the overlay's next free addresses.
  const names = Array.from({ length: 8 }, (_, i) => ns(`r${i}`));
  await Promise.all(
    names.map((name, i) => controllerCli(i % 2 === 0 ? rig!.socket : socket2, ['endpoint', 'create', '--network', OVERLAY, '--host', i % 4 < 2 ? 'h1' : 'h2', '--netns', ns(i % 4 < 2 ? 'c1' : 'c2'), '--name', name])),
  );
  await until('the raced endpoints applied', async () => {
    for (const name of names) if (Object.values((await endpoint(name)).status)[0]?.state !== 'applied') return false;
    return true;
  });
  const all = JSON.parse(await ctl(['endpoint', 'ls', '--json'])) as EndpointView[];
  const onOverlay = all.filter((e) => e.ip.startsWith('10.95.4.'));
  t.is(new Set(onOverlay.map((e) => e.ip)).size, onOverlay.length, `every overlay address is held once: ${onOverlay.map((e) => `${e.name}=${e.ip}`).join(' ')}`);
  second.kill('SIGKILL');
  await new Promise((resolve) => second!.once('exit', resolve));
  second = undefined;
  // The first serves on alone, and a kill removed nothing: the raced endpoints are still on their hosts.
  await ctl(['endpoint', 'rm', names[0]]);
  await until(`${names[0]} gone from h1`, async () => !(await daemon('h1').vswJson<{ name: string }[]>(['endpoint', 'ls', '--json'])).some((e) => e.name === names[0]));
  const left = new Set([...(await daemon('h1').vswJson<{ name: string }[]>(['endpoint', 'ls', '--json'])), ...(await daemon('h2').vswJson<{ name: string }[]>(['endpoint', 'ls', '--json']))].map((e) => e.name));
  t.deepEqual(names.slice(1).filter((n) => !left.has(n)), [], 'the other raced endpoints are still on their hosts');
});
