/**
 * The life of vsw objects through the CLI of a real daemon: IPAM order,
 * `vsw run` compartments, removal of endpoints and networks, and a SIGTERM
 * that leaves the containers their interfaces until `vsw system reset`.
 * Subnets 10.63.0.0/24 (network l) and 10.64.0.0/24 (network m).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { addNetns, namespacesWithPrefix, ping, runPrefix, sh } from './helpers/env.js';
import {
  createEndpoint,
  linksIn,
  processAlive,
  startDaemon,
  systemReset,
  teardown,
  assertOneSentence,
  type DaemonHandle,
  type EndpointJson,
} from './helpers/daemon.js';

const prefix = runPrefix();
const netL = `${prefix}-l`;
const netM = `${prefix}-m`;
const nsL = [`${prefix}-l1`, `${prefix}-l2`, `${prefix}-l3`];
const nsM = `${prefix}-m1`;
const created = [...nsL, nsM];

let d: DaemonHandle;
const l: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', netL, '--subnet', '10.63.0.0/24']);
  for (const ns of created) await addNetns(ns);
});

test.after.always(async () => {
  await teardown(prefix, d);
});

async function netnsExists(name: string): Promise<boolean> {
  return (await namespacesWithPrefix(prefix)).includes(name);
}

test.serial('IPAM: endpoints without --ip get consecutive addresses starting at .2', async (t) => {
  for (const ns of nsL) l.push(await createEndpoint(d, netL, ns));
  t.deepEqual(
    l.map((e) => `${e.ip}/${e.prefixLength}`),
    ['10.63.0.2/24', '10.63.0.3/24', '10.63.0.4/24'],
  );
  for (const [i, ep] of l.entries()) {
    const addr = await sh('ip', ['-n', nsL[i], '-4', '-o', 'addr', 'show', 'dev', ep.ifname]);
    t.true(addr.stdout.includes(` ${ep.ip}/24 `), `${nsL[i]}: ${addr.stdout}`);
  }
  const net = await d.vswJson<{ endpoints: string[] }>(['network', 'inspect', netL]);
  t.deepEqual([...net.endpoints].sort(), l.map((e) => e.id).sort());
});

test.serial('vsw run pings an endpoint from a fresh compartment, which is gone afterwards', async (t) => {
  const name = `${prefix}-r1`;
  const r = await d.vsw(
    ['run', '--network', netL, '--name', name, '--', 'sh', '-c', `ip -4 -o addr show dev eth0 && ping -c 2 -i 0.2 -W 2 ${l[0].ip}`],
    { timeoutMs: 30_000 },
  );
  t.is(r.code, 0, r.stderr + r.stdout);
  t.regex(r.stdout, /\b10\.63\.0\.5\/24\b/, 'the compartment got the next free address');
  t.regex(r.stdout, /2 packets transmitted, 2 received/);
  t.false(await netnsExists(name), `namespace ${name} still exists`);
  const endpoints = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  t.deepEqual(
    endpoints.filter((e) => e.netns === name),
    [],
    'the compartment endpoint is gone from the daemon',
  );
  t.is(endpoints.length, l.length);
});

test.serial('vsw run exits with the exit code of its command', async (t) => {
  const name = `${prefix}-r2`;
  const r = await d.vsw(['run', '--network', netL, '--name', name, '--', 'sh', '-c', 'exit 3'], { timeoutMs: 30_000 });
  t.is(r.code, 3, r.stderr);
  t.false(await netnsExists(name), `namespace ${name} still exists`);
  const ok = await d.vsw(['run', '--network', netL, '--name', `${prefix}-r3`, '--', 'true'], { timeoutMs: 30_000 });
  t.is(ok.code, 0, ok.stderr);
});

test.serial('vsw endpoint rm removes the TAP from the namespace and frees the address', async (t) => {
  const victim = l[2];
  t.true(await ping(nsL[0], victim.ip, 1), 'reachable before');
  const r = await d.vsw(['endpoint', 'rm', victim.id]);
  t.is(r.code, 0, r.stderr);
  const link = await sh('ip', ['-n', nsL[2], 'link', 'show', victim.ifname]);
  t.not(link.code, 0, `${victim.ifname} is still in ${nsL[2]}: ${link.stdout}`);
  t.deepEqual(await linksIn(nsL[2]), ['lo']);
  const ids = (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).map((e) => e.id);
  t.false(ids.includes(victim.id));
  t.false(await ping(nsL[0], victim.ip, 1), 'unreachable after');
  const again = await createEndpoint(d, netL, nsL[2]);
  t.is(again.ip, victim.ip, 'the freed address is handed out again');
  l[2] = again;
});

test.serial('vsw network rm refuses a network with endpoints, naming them, and removes it once they are gone', async (t) => {
  await d.vswOk(['network', 'create', netM, '--subnet', '10.64.0.0/24']);
  const ep = await createEndpoint(d, netM, nsM);
  const refused = await d.vsw(['network', 'rm', netM]);
  assertOneSentence(t, refused, 'network rm with endpoints');
  t.true(refused.stderr.includes(ep.name) || refused.stderr.includes(ep.id), `stderr does not name ${ep.name}: ${refused.stderr}`);
  t.true((await d.vswJson<{ name: string }[]>(['network', 'ls', '--json'])).some((n) => n.name === netM), 'the network survived');
  t.deepEqual(await linksIn(nsM), ['lo', ep.ifname], 'the endpoint survived');

  t.is((await d.vsw(['endpoint', 'rm', ep.name])).code, 0);
  const removed = await d.vsw(['network', 'rm', netM]);
  t.is(removed.code, 0, removed.stderr);
  t.false((await d.vswJson<{ name: string }[]>(['network', 'ls', '--json'])).some((n) => n.name === netM));
  t.deepEqual(await linksIn(nsM), ['lo']);
});

test.serial('SIGTERM stops the daemon with exit 0 and leaves the containers their interfaces; vsw system reset removes them', async (t) => {
  for (const ns of nsL) t.true((await linksIn(ns)).includes('eth0'), `${ns} has its TAP before the stop`);
  t.true(existsSync(d.socket));
  const started = Date.now();
  const code = await d.stop('SIGTERM');
  const took = Date.now() - started;
  t.is(code, 0, d.log().split('\n').slice(-10).join('\n'));
  t.true(took < 5000, `the stop took ${took} ms`);
  for (const [i, ep] of l.entries()) {
    const addr = await sh('ip', ['-n', nsL[i], '-4', '-o', 'addr', 'show', 'dev', ep.ifname]);
    t.true(addr.stdout.includes(` ${ep.ip}/24 `), `${nsL[i]} keeps ${ep.ifname} with ${ep.ip} after the stop: ${addr.stdout}`);
  }
  t.false(existsSync(d.socket), 'the socket file is gone');
  t.false(processAlive(d.pid), `daemon process ${d.pid} is still alive`);
  const pgrep = await sh('pgrep', ['-f', `daemon --socket ${d.socket}`]);
  t.is(pgrep.stdout.trim(), '', 'no process names the socket');
  const after = await d.vsw(['network', 'ls']);
  assertOneSentence(t, after, 'network ls without a daemon');

  const reset = await systemReset(d);
  t.is(reset.code, 0, reset.stderr);
  for (const [i, ep] of l.entries()) t.true(reset.stdout.includes(`removed TAP ${ep.ifname} in network namespace ${nsL[i]}`), reset.stdout);
  for (const ns of nsL) t.deepEqual(await linksIn(ns), ['lo'], `${ns} after the reset`);
  t.deepEqual((await namespacesWithPrefix(prefix)).sort(), [...created].sort(), 'the reset removed no namespace vsw did not create');
  t.false(existsSync(`${d.stateDir}/state.json`), 'the saved state is gone');
});
