import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  HostError,
  addressInUse,
  configureInterface,
  createNetns,
  deleteLink,
  deleteNetns,
  hasNetAdmin,
  ip,
  ipJson,
  linkExists,
  listLinks,
  listNetns,
  netnsExists,
  netnsPids,
  pickFreeIfName,
} from '../../src/host/index.js';

// Per-run prefix so parallel or interrupted runs never collide; scripts/cleanup.sh removes vswt* leftovers.
const P = `vswt${randomBytes(2).toString('hex')}-`;
const children = new Set<ChildProcess>();

const rootTest = hasNetAdmin() ? test.serial : test.serial.skip;

test.after.always('remove every namespace and link of this run', async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const ns of await listNetns()) if (ns.startsWith(P)) await deleteNetns(ns);
  for (const link of await listLinks()) if (link.startsWith(P)) await deleteLink(link);
});

function spawnIn(ns: string, command: string[]): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, ...command], { stdio: 'ignore' });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function waitForPids(ns: string): Promise<number[]> {
  for (let i = 0; i < 100; i++) {
    const pids = await netnsPids(ns);
    if (pids.length > 0) return pids;
    await sleep(20);
  }
  throw new Error(`no process appeared in ${ns}`);
}

rootTest('create, list, probe and delete a namespace', async (t) => {
  const ns = `${P}h1`;
  t.false(await netnsExists(ns));
  await createNetns(ns);
  t.true(await netnsExists(ns));
  t.true((await listNetns()).includes(ns));

  const [lo] = await ipJson<{ ifname: string; flags: string[] }[]>(['link', 'show', 'dev', 'lo'], ns);
  t.true(lo.flags.includes('UP'), 'loopback is up');

  const err = await t.throwsAsync(createNetns(ns), { instanceOf: HostError });
  t.is(err?.message, `network namespace "${ns}" already exists: delete it first or pick another name.`);

  await deleteNetns(ns);
  t.false(await netnsExists(ns));
  t.false((await listNetns()).includes(ns));
  await t.notThrowsAsync(deleteNetns(ns), 'deleting a missing namespace is a no-op');
});

rootTest('deleting a namespace terminates the processes left inside', async (t) => {
  const ns = `${P}h2`;
  await createNetns(ns);
  const child = spawnIn(ns, ['sleep', '1000']);
  const exited = once(child, 'exit');
  const [pid] = await waitForPids(ns);
  t.is(pid, child.pid ?? -1);

  await deleteNetns(ns);
  const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  t.is(code, null);
  t.is(signal, 'SIGTERM');
  t.false(await netnsExists(ns));
  t.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
});

rootTest('a process that ignores SIGTERM gets SIGKILL', async (t) => {
  const ns = `${P}h3`;
  await createNetns(ns);
  // SIG_IGN survives exec, so the sleep itself ignores SIGTERM.
  const child = spawnIn(ns, ['sh', '-c', 'trap "" TERM; exec sleep 1000']);
  const exited = once(child, 'exit');
  await waitForPids(ns);
  await sleep(100); // let the shell install the trap before exec

  const started = Date.now();
  await deleteNetns(ns);
  const [, signal] = (await exited) as [number | null, NodeJS.Signals | null];
  t.is(signal, 'SIGKILL');
  t.true(Date.now() - started < 5000);
  t.false(await netnsExists(ns));
});

rootTest('configureInterface sets MAC, MTU, address and default route on a veth', async (t) => {
  const ns = `${P}h4`;
  const a = `${P}a`;
  const b = `${P}b`;
  await createNetns(ns);
  await ip(['link', 'add', 'name', a, 'type', 'veth', 'peer', 'name', b]);
  await ip(['link', 'set', 'dev', a, 'netns', ns]);
  t.true(await linkExists(a, ns));
  t.false(await linkExists(a));
  t.true(await linkExists(b));

  const config = { netns: ns, ifname: a, mac: '02:76:0A:63:00:05', cidr: '10.99.0.5/24', gateway: '10.99.0.1', mtu: 1400 };
  await configureInterface(config);
  // A second run (daemon re-attaching) converges instead of failing.
  await configureInterface(config);

  type Addr = { ifname: string; address: string; mtu: number; flags: string[]; addr_info: { family: string; local: string; prefixlen: number }[] };
  const [link] = await ipJson<Addr[]>(['address', 'show', 'dev', a], ns);
  t.is(link.address, '02:76:0a:63:00:05');
  t.is(link.mtu, 1400);
  t.true(link.flags.includes('UP'));
  t.deepEqual(
    link.addr_info.filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`),
    ['10.99.0.5/24'],
  );

  const routes = await ipJson<{ dst: string; gateway?: string; dev: string }[]>(['route', 'show'], ns);
  t.deepEqual(
    routes.filter((r) => r.dst === 'default').map((r) => [r.gateway, r.dev]),
    [['10.99.0.1', a]],
  );

  t.true(await addressInUse('10.99.0.5', ns));
  t.false(await addressInUse('10.99.0.6', ns));
  t.false(await addressInUse('10.99.0.5'));
  t.true(await addressInUse('127.0.0.1', ns));

  t.is(await pickFreeIfName(ns), 'eth0');
  await ip(['link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1'], ns);
  t.is(await pickFreeIfName(ns), 'eth2');
  t.is(await pickFreeIfName(ns, 'tap'), 'tap0');

  await deleteLink(b);
  t.false(await linkExists(a, ns), 'deleting one end removes its peer');
  await t.notThrowsAsync(deleteLink(b), 'deleting a missing link is a no-op');

  await deleteNetns(ns);
});

rootTest('configureInterface refuses bad input before touching the system', async (t) => {
  const ns = `${P}h5`;
  const base = { netns: ns, ifname: 'eth0', mac: '02:76:0a:63:00:05', cidr: '10.99.0.5/24' };
  const missing = await t.throwsAsync(configureInterface(base), { instanceOf: HostError });
  t.is(missing?.message, `network namespace "${ns}" does not exist: create it first or check the name with "ip netns list".`);

  await createNetns(ns);
  await t.throwsAsync(configureInterface(base), {
    instanceOf: HostError,
    message: `interface "eth0" does not exist in network namespace "${ns}": create or move it there first.`,
  });
  await t.throwsAsync(configureInterface({ ...base, gateway: '10.98.0.1' }), { instanceOf: HostError, message: /^gateway 10\.98\.0\.1 is outside 10\.99\.0\.5\/24/ });
  await t.throwsAsync(configureInterface({ ...base, mac: '01:00:5e:00:00:01' }), { instanceOf: HostError, message: /cannot be given to an interface/ });
  await t.throwsAsync(configureInterface({ ...base, mac: 'nope' }), { instanceOf: HostError, message: /is not a MAC address/ });
  await t.throwsAsync(configureInterface({ ...base, mtu: 20 }), { instanceOf: HostError, message: /^MTU 20 is invalid/ });
  await t.throwsAsync(configureInterface({ ...base, cidr: '10.99.0.5' }), { instanceOf: HostError, message: /is not an address with a prefix/ });
  await deleteNetns(ns);
});

rootTest('errors for unknown namespaces and too-long names are one clear sentence', async (t) => {
  const ghost = `${P}ghost`;
  const err = await t.throwsAsync(ip(['link', 'show'], ghost), { instanceOf: HostError });
  t.is(err?.message, `network namespace "${ghost}" does not exist: create it first or check the name with "ip netns list".`);
  t.is(err?.command, `ip -n ${ghost} link show`);
  await t.throwsAsync(linkExists('eth0', ghost), { instanceOf: HostError, message: /does not exist: create it first/ });
  await t.throwsAsync(pickFreeIfName(ghost), { instanceOf: HostError, message: /does not exist: create it first/ });

  await t.throwsAsync(createNetns(`${P}${'x'.repeat(64)}`), { instanceOf: HostError, message: /is invalid: use letters, digits/ });
  await t.throwsAsync(linkExists(`${P}0123456789`), { instanceOf: HostError, message: /at most 15 \(IFNAMSIZ - 1\)/ });
  await t.throwsAsync(deleteLink(`${P}0123456789`), { instanceOf: HostError, message: /at most 15/ });

  // A name that passes our checks but that the kernel refuses still gets a sentence, not a raw dump.
  const dup = await t.throwsAsync(ip(['link', 'add', 'name', 'lo', 'type', 'veth', 'peer', 'name', `${P}z`]), { instanceOf: HostError });
  t.regex(dup?.message ?? '', /^an interface named "lo" \(or its peer\) already exists in the host network namespace/);
});
