/**
 * The network controller for real: etcd (Debian's etcd-server) and the
 * controller in the underlay's namespace, three hosts (namespaces on the
 * underlay) each with a daemon that is an agent (`vsw daemon --agent`), and
 * everything made through the controller with the vsw CLI (`--controller`).
 * An overlay network over the three hosts and an endpoint on each: all pairs
 * ping with no ARP flooded on the underlay (the agents pushed every remote
 * endpoint); status per host; an endpoint removed on one host leaves the
 * others' tables; an agent killed: its lease expires and the others withdraw
 * its endpoint, and it comes back with the agent; etcd stopped: forwarding
 * goes on, and changes resume when it is back. Underlay 192.168.97.0/24 (etcd
 * and the controller at .1), overlay 10.102.0.0/24.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OverlayNetworkState } from '../../src/service/api-types.js';
import { addNetns, inNetns, must, ping, runPrefix, sh } from './helpers/env.js';
import { assertOneSentence, capture, CLI, restartDaemon, runCli, startDaemon, teardown, type DaemonHandle } from './helpers/daemon.js';
import { addUnderlay, type UnderlayHost } from './helpers/overlay.js';
import { controllerApi, controllerCli, startEtcd as startEtcdIn, until } from './helpers/controller.js';

const prefix = runPrefix();
const NET = `${prefix}-cn`;
const UNDERLAY = '192.168.97';
const ETCD = `http://${UNDERLAY}.1:23790`;
const dir = `/tmp/${prefix}/controller`;
const socket = `${dir}/controller.sock`;
const hostNames = ['h1', 'h2', 'h3'] as const;
const TOKEN = 'vswt-controller-token-0123456789abcdef';
const TCP_PORT = 23799;

let ul: string;
let hosts: UnderlayHost[] = [];
const daemons = new Map<string, DaemonHandle>();
let etcd: ChildProcess | undefined;
let controller: ChildProcess | undefined;
const containers = new Map<string, { ns: string; name: string; ip?: string; mac?: string }>();

interface ControllerEndpointView {
  name: string;
  host: string;
  ip: string;
  mac?: string;
  status: Record<string, { state: string; reason?: string }>;
}

function startEtcd(): ChildProcess {
  return startEtcdIn(ul, `${dir}/etcd`, ETCD, 23800);
}

function ctl(args: string[]): Promise<string> {
  return controllerCli(socket, args);
}

async function endpoints(): Promise<ControllerEndpointView[]> {
  return JSON.parse(await ctl(['endpoint', 'ls', '--json'])) as ControllerEndpointView[];
}

/** The MACs host h knows as remote endpoints of the network. */
async function remoteMacs(h: string): Promise<string[]> {
  const [state] = await daemons.get(h)!.vswJson<OverlayNetworkState[]>(['overlay', 'ls', '--network', NET, '--json']);
  return (state?.remotes ?? []).map((r) => r.mac).sort();
}

test.before(async () => {
  mkdirSync(dir, { recursive: true });
  hosts = await addUnderlay(prefix, 3, 1, UNDERLAY);
  ul = `${prefix}-ul`;
  await must('ip', ['-n', ul, 'addr', 'add', `${UNDERLAY}.1/24`, 'dev', 'br0']);
  await must('ip', ['-n', ul, 'link', 'set', 'lo', 'up']);
  etcd = startEtcd();
  writeFileSync(`${dir}/token`, `${TOKEN}\n`);
  controller = spawn('ip', ['netns', 'exec', ul, 'node', CLI, 'controller', '--etcd', ETCD, '--socket', socket, '--listen', `127.0.0.1:${TCP_PORT}`, '--token-file', `${dir}/token`], { stdio: 'ignore' });
  await until('the controller answers', async () => (await runCli(['--controller', socket, 'network', 'ls', '--json'])).code === 0);
  for (const [i, h] of hostNames.entries()) {
    daemons.set(h, await startDaemon(prefix, { netns: hosts[i].ns, name: h, extraArgs: ['--agent', '--etcd', ETCD, '--host', h, '--vtep', hosts[i].ip] }));
    const ns = `${prefix}-c${i + 1}`;
    await addNetns(ns);
    containers.set(h, { ns, name: `${prefix}-e${i + 1}` });
  }
});

test.after.always(async () => {
  controller?.kill('SIGTERM');
  etcd?.kill('SIGTERM');
  await sleep(300);
  try {
    await teardown(prefix, ...daemons.values());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('bad flags and bad requests get one sentence and a non-zero exit', async (t) => {
  assertOneSentence(t, await runCli(['daemon', '--socket', `${dir}/x.sock`, '--state-dir', `${dir}/x`, '--etcd', ETCD]), '--etcd without --agent');
  assertOneSentence(t, await runCli(['daemon', '--socket', `${dir}/x.sock`, '--state-dir', `${dir}/x`, '--agent', '--etcd', ETCD, '--host', 'h9']), '--agent without --vtep');
  assertOneSentence(t, await runCli(['controller', '--etcd', 'localhost:2379', '--socket', `${dir}/y.sock`]), 'an etcd URL without a scheme');
  assertOneSentence(t, await runCli(['--controller', socket, 'network', 'create', '-d', 'overlay', '--subnet', '10.103.0.0/24', '--vni', '4203', `${prefix}-nohosts`]), 'a network without hosts');
  assertOneSentence(t, await runCli(['--controller', socket, 'endpoint', 'create', '--network', `${prefix}-none`, '--host', 'h1', '--netns', 'x', '--name', 'y']), 'an endpoint on a network that does not exist');
});

test.serial('the TCP API needs the token: without it one sentence and a refusal, with it the same answers as the socket', async (t) => {
  const url = `http://127.0.0.1:${TCP_PORT}`;
  const without = await inNetns(ul, 'node', [CLI, '--controller', url, 'network', 'ls', '--json']);
  t.not(without.code, 0);
  t.regex(without.stderr.trim(), /^vsw: this controller API needs its token: set VSW_TOKEN .*\.$/);
  const wrong = await inNetns(ul, 'env', [`VSW_TOKEN=${TOKEN}x`, 'node', CLI, '--controller', url, 'network', 'ls', '--json']);
  t.not(wrong.code, 0, 'a wrong token is refused too');
  const withToken = await inNetns(ul, 'env', [`VSW_TOKEN=${TOKEN}`, 'node', CLI, '--controller', url, 'network', 'ls', '--json']);
  t.is(withToken.code, 0, withToken.stderr);
  t.is(withToken.stdout.trim(), (await ctl(['network', 'ls', '--json'])).trim());
});

test.serial('the hosts register; an overlay network and an endpoint per host made through the controller are applied on each host', async (t) => {
  await until('three hosts registered', async () => (await hostsRegistered()) === 3);
  await ctl(['network', 'create', '-d', 'overlay', '--subnet', '10.102.0.0/24', '--vni', '4202', '--hosts', hostNames.join(','), NET]);
  for (const h of hostNames) {
    const c = containers.get(h)!;
    t.is((await ctl(['endpoint', 'create', '--network', NET, '--host', h, '--netns', c.ns, '--name', c.name])).trim(), c.name);
  }
  const took = await until('every endpoint applied and realized', async () => {
    const eps = await endpoints();
    return eps.length === 3 && eps.every((e) => e.status[e.host]?.state === 'applied' && e.mac !== undefined);
  });
  t.log(`applied on all hosts ${took} ms after the last create`);
  for (const e of await endpoints()) {
    const h = hostNames.find((x) => containers.get(x)!.name === e.name)!;
    Object.assign(containers.get(h)!, { ip: e.ip, mac: e.mac });
  }
  const table = await ctl(['endpoint', 'ls']);
  for (const c of containers.values()) t.regex(table, new RegExp(`${c.name}\\s.*\\s${c.ip!.replace(/\./g, '\\.')}/24\\s+${c.mac}\\s+up`), `the table shows ${c.name}: ${table}`);
    const net = JSON.parse(await ctl(['network', 'inspect', NET])) as { status: Record<string, { state: string }> };
  t.deepEqual(Object.values(net.status).map((s) => s.state), ['applied', 'applied', 'applied'], 'the network is applied on the three hosts');
  for (const h of hostNames) {
    const others = hostNames.filter((x) => x !== h).map((x) => containers.get(x)!.mac!).sort();
    await until(`${h} knows the other hosts' endpoints`, async () => JSON.stringify(await remoteMacs(h)) === JSON.stringify(others));
  }
});

/** One request to the controller's API: status and parsed body (null when none or not JSON). */
function ctlApi(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  return controllerApi(socket, method, path, body);
}

/** GET /v1/hosts of the controller: the hosts whose agents are registered now. */
async function hostsRegistered(): Promise<number> {
  const r = await ctlApi('GET', '/v1/hosts');
  return Array.isArray(r.body) ? r.body.length : 0;
}

test.serial('all pairs ping, and no ARP is flooded on the underlay: ARP suppression answers for every endpoint the agents pushed', async (t) => {
  for (const c of containers.values()) await inNetns(c.ns, 'ip', ['neigh', 'flush', 'all']);
  const cap = await capture(ul, 'br0', ['udp', 'port', '4789'], `${dir}/underlay.pcap`);
  for (const a of hostNames) {
    for (const b of hostNames) {
      if (a === b) continue;
      t.true(await ping(containers.get(a)!.ns, containers.get(b)!.ip!), `${a} -> ${b}`);
    }
  }
  // The control: an address nobody has is asked for by ARP, flooded to the peers, so the capture would show suppression failing.
  t.false(await ping(containers.get('h1')!.ns, '10.102.0.250', 1));
  await cap.stop();
  const arp = await sh('tshark', ['-r', `${dir}/underlay.pcap`, '-d', 'udp.port==4789,vxlan', '-Y', 'arp', '-T', 'fields', '-e', 'arp.dst.proto_ipv4']);
  const icmp = await sh('tshark', ['-r', `${dir}/underlay.pcap`, '-d', 'udp.port==4789,vxlan', '-Y', 'icmp', '-T', 'fields', '-e', 'ip.dst']);
  t.true(icmp.stdout.trim().split('\n').filter((l) => l).length >= 12, 'the pings crossed the underlay in VXLAN');
  const asked = arp.stdout.trim().split('\n').filter((l) => l);
  t.true(asked.includes('10.102.0.250'), `the control's ARP crossed the underlay: ${asked.join(' ')}`);
  t.deepEqual(asked.filter((ip) => ip !== '10.102.0.250'), [], `no ARP for a known endpoint crossed the underlay: ${asked.join(' ')}`);
});

const BLOCK_ICMP_IN = { priority: 100, rules: [{ priority: 10, direction: 'in', action: 'block', match: { protocol: 'icmp' } }] };

/** Whether every ordered pair of the three hosts' endpoints pings (true) or none does (false); null for a mix. */
async function allPairs(): Promise<boolean | null> {
  const results: boolean[] = [];
  for (const a of hostNames) for (const b of hostNames) if (a !== b) results.push(await ping(containers.get(a)!.ns, containers.get(b)!.ip!, 1));
  return results.every((x) => x) ? true : results.every((x) => !x) ? false : null;
}

test.serial('policy through the controller: a group set on one endpoint with the CLI, then a group for a whole prefix, reach their hosts and take effect', async (t) => {
  const e1 = containers.get('h1')!;
  const file = `${dir}/noping.json`;
  (await import('node:fs')).writeFileSync(file, JSON.stringify(BLOCK_ICMP_IN));
  await ctl(['policy', 'group', 'set', e1.name, 'ctl', 'noping', '--file', file]);
  await until('e1 no longer answers ping', async () => !(await ping(containers.get('h2')!.ns, e1.ip!, 1)), 10_000);
  t.true(await ping(containers.get('h2')!.ns, containers.get('h3')!.ip!), 'the others are untouched');
  const policy = (await ctlApi('GET', `/v1/policies/${e1.name}.ctl.noping`)).body as { status: Record<string, { state: string }> };
  t.like(policy.status, { [`h1/${e1.name}`]: { state: 'applied' } });
  await ctl(['policy', 'group', 'rm', e1.name, 'ctl', 'noping']);
  await until('e1 answers ping again', async () => ping(containers.get('h2')!.ns, e1.ip!, 1), 10_000);

  const posted = Date.now();
  const r = await ctlApi('POST', '/v1/policies', { name: `${prefix}-noping`, network: NET, prefix: '10.102.0.0/24', layer: 'ctl', group: 'noping', spec: BLOCK_ICMP_IN });
  t.is(r.status, 201, JSON.stringify(r.body));
  const applied = await until('applied on the three endpoints', async () => {
    const p = (await ctlApi('GET', `/v1/policies/${prefix}-noping`)).body as { status: Record<string, { state: string }> };
    return Object.values(p.status).filter((s) => s.state === 'applied').length === 3;
  });
  t.log(`a prefix policy applied on every host ${applied} ms after it was posted (${Date.now() - posted} ms to the check)`);
  await until('no pair pings', async () => (await allPairs()) === false, 10_000);
  const bad = await ctlApi('POST', '/v1/policies', { name: `${prefix}-bad`, network: NET, prefix: '10.102.0.0/24', layer: 'ctl', group: 'bad', spec: { rules: [{ priority: 1, action: 'explode' }] } });
  t.is(bad.status, 400, 'a rule no host could compile is refused by the controller');
  t.regex(String((bad.body as { error?: string }).error), /\.$/);
  t.is((await ctlApi('DELETE', `/v1/policies/${prefix}-noping`)).status, 204);
  await until('every pair pings again', async () => (await allPairs()) === true, 10_000);
});

test.serial('an endpoint removed through the controller goes from its host and from the other hosts\' tables', async (t) => {
  const c3 = containers.get('h3')!;
  await ctl(['endpoint', 'rm', c3.name]);
  await until('h1 and h2 withdrew it', async () => !(await remoteMacs('h1')).includes(c3.mac!) && !(await remoteMacs('h2')).includes(c3.mac!));
  await until('h3 removed it', async () => (await daemons.get('h3')!.vswJson<{ name: string }[]>(['endpoint', 'ls', '--json'])).every((e) => e.name !== c3.name));
  t.false(await ping(containers.get('h1')!.ns, c3.ip!, 1));
  // Back, for the next tests.
  await ctl(['endpoint', 'create', '--network', NET, '--host', 'h3', '--netns', c3.ns, '--name', c3.name, '--ip', c3.ip!]);
  await until('h3 is back everywhere', async () => (await endpoints()).every((e) => e.status[e.host]?.state === 'applied' && e.mac !== undefined) && (await remoteMacs('h1')).length === 2);
  const again = (await endpoints()).find((e) => e.name === c3.name)!;
  containers.get('h3')!.mac = again.mac;
  t.true(await ping(containers.get('h1')!.ns, c3.ip!));
});

/** The peer VTEPs host h's daemon has for the network, or null when it has no such network. */
async function peersOf(h: string): Promise<string[] | null> {
  const [state] = await daemons.get(h)!.vswJson<OverlayNetworkState[]>(['overlay', 'ls', '--json']);
  return state === undefined ? null : [...state.peers].sort();
}

test.serial('peers at run time: a host leaves the network (its endpoint first) and joins it again; every member\'s peers follow', async (t) => {
  const c3 = containers.get('h3')!;
  const refused = await ctlApi('PUT', `/v1/networks/${NET}/hosts`, { hosts: ['h1', 'h2'] });
  t.is(refused.status, 409, 'a host with an endpoint on the network cannot leave it');
  t.regex(String((refused.body as { error?: string }).error), new RegExp(`${c3.name}.*remove them first\\.$`));
  await ctl(['endpoint', 'rm', c3.name]);
  t.is((await ctlApi('PUT', `/v1/networks/${NET}/hosts`, { hosts: ['h1', 'h2'] })).status, 200);
  await until('h3 removed the network', async () => (await peersOf('h3')) === null);
  await until('h1 and h2 dropped h3 from their peers', async () => JSON.stringify(await peersOf('h1')) === JSON.stringify([hosts[1].ip]) && JSON.stringify(await peersOf('h2')) === JSON.stringify([hosts[0].ip]));
  t.is((await ctlApi('PUT', `/v1/networks/${NET}/hosts`, { hosts: [...hostNames] })).status, 200);
  await until('h3 has the network again with both peers', async () => JSON.stringify(await peersOf('h3')) === JSON.stringify([hosts[0].ip, hosts[1].ip].sort()));
  await until('h1 has h3 as a peer again', async () => (await peersOf('h1'))?.includes(hosts[2].ip) === true);
  await ctl(['endpoint', 'create', '--network', NET, '--host', 'h3', '--netns', c3.ns, '--name', c3.name, '--ip', c3.ip!]);
  await until('its endpoint is back on h1', async () => (await remoteMacs('h1')).includes(c3.mac!));
  t.true(await ping(containers.get('h1')!.ns, c3.ip!), 'h1 reaches h3 again');
});

test.serial("an agent killed: its lease expires and the others withdraw its endpoint; restarted, it comes back", async (t) => {
  const h2 = daemons.get('h2')!;
  const mac2 = containers.get('h2')!.mac!;
  await h2.stop('SIGKILL').catch(() => undefined);
  const withdrawn = await until('h1 and h3 withdrew h2\'s endpoint', async () => !(await remoteMacs('h1')).includes(mac2) && !(await remoteMacs('h3')).includes(mac2));
  t.log(`withdrawn ${withdrawn} ms after the kill (lease 5 s)`);
  t.true(await ping(containers.get('h1')!.ns, containers.get('h3')!.ip!), 'h1 and h3 still reach each other');
  daemons.set('h2', await restartDaemon(h2));
  await until('h2\'s endpoint is back on h1 and h3', async () => (await remoteMacs('h1')).includes(mac2) && (await remoteMacs('h3')).includes(mac2));
  t.true(await ping(containers.get('h1')!.ns, containers.get('h2')!.ip!), 'h1 reaches h2 again');
});

test.serial('etcd stopped: forwarding goes on with what the hosts have; when it is back, a change made then is applied', async (t) => {
  etcd!.kill('SIGTERM');
  await new Promise((r) => etcd!.once('exit', r));
  for (const a of hostNames) for (const b of hostNames) if (a !== b) t.true(await ping(containers.get(a)!.ns, containers.get(b)!.ip!), `${a} -> ${b} without etcd`);
  etcd = startEtcd();
  await until('the controller answers again', async () => (await runCli(['--controller', socket, 'endpoint', 'ls', '--json'])).code === 0);
  const ns4 = `${prefix}-c4`;
  await addNetns(ns4);
  await until('a new endpoint is accepted', async () => (await runCli(['--controller', socket, 'endpoint', 'create', '--network', NET, '--host', 'h1', '--netns', ns4, '--name', `${prefix}-e4`])).code === 0);
  await until('and applied', async () => (await endpoints()).some((e) => e.name === `${prefix}-e4` && e.status[e.host]?.state === 'applied'));
  const e4 = (await endpoints()).find((e) => e.name === `${prefix}-e4`)!;
  t.true(await ping(containers.get('h3')!.ns, e4.ip), 'h3 reaches the endpoint made after etcd came back');
});
