/**
 * Endpoints in namespaces known by path (what CNI runtimes and docker pass):
 * the path must be a network namespace that is not the daemon's own, and an
 * endpoint belongs to the namespace it was made in: when the path comes to
 * name another namespace (a bind mount replaced, a PID reused), vsw drops the
 * endpoint instead of putting a TAP into a stranger's namespace.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import test from 'ava';
import { addNetns, ping, runPrefix, sh } from './helpers/env.js';
import { assertOneSentence, type DaemonHandle, type EndpointJson, linksIn, restartDaemon, startDaemon, teardown } from './helpers/daemon.js';

const prefix = runPrefix();
const net = `${prefix}-n`;
const nsA = `${prefix}-a`;
const nsB = `${prefix}-b`;
const nsPeer = `${prefix}-p`;
const dir = `/tmp/${prefix}`;
const nsFile = `${dir}/netns-file`;

let d: DaemonHandle;

test.before(async () => {
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', '-d', 'internal', '--subnet', '10.233.9.0/24', '--gateway', '10.233.9.1', net]);
  for (const ns of [nsA, nsB, nsPeer]) await addNetns(ns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(nsFile, '');
});

test.after.always(async () => {
  await sh('umount', [nsFile]);
  await teardown(prefix, d);
});

test.serial('the daemon\'s own namespace and a namespace of another kind are refused with one sentence, and the host is untouched', async (t) => {
  const routeBefore = (await sh('ip', ['-4', 'route', 'show', 'default'])).stdout;
  // The daemon runs in this test's namespace, the host's as far as the test is concerned.
  const own = await d.vsw(['endpoint', 'create', '--network', net, '--netns', `/proc/${d.pid}/ns/net`]);
  assertOneSentence(t, own, 'the daemon\'s namespace');
  t.regex(own.stderr, /^vsw: network namespace \/proc\/\d+\/ns\/net is the daemon's own \(the host's\): give a container's namespace/);
  const mnt = await d.vsw(['endpoint', 'create', '--network', net, '--netns', `/proc/${d.pid}/ns/mnt`]);
  assertOneSentence(t, mnt, 'a mount namespace');
  t.regex(mnt.stderr, /the path is not a network namespace/);
  const missing = await d.vsw(['endpoint', 'create', '--network', net, '--netns', `${dir}/no-such-file`]);
  assertOneSentence(t, missing, 'a missing path');
  t.is((await sh('ip', ['-4', 'route', 'show', 'default'])).stdout, routeBefore, 'the host default route');
  t.deepEqual(await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']), []);
});

test.serial('an endpoint made by path keeps its namespace\'s inode; when the path names another namespace after a restart, the endpoint goes and nothing enters the stranger', async (t) => {
  const bind = await sh('mount', ['--bind', `/run/netns/${nsA}`, nsFile]);
  t.is(bind.code, 0, bind.stderr);
  const ep = await d.vswJson<EndpointJson>(['endpoint', 'inspect', (await d.vswOk(['endpoint', 'create', '--network', net, '--netns', nsFile, '--ip', '10.233.9.10'])).trim()]);
  t.is(ep.netns, nsFile);
  t.true(Number.isInteger(ep.netnsInode), `netnsInode: ${ep.netnsInode}`);
  await d.vswOk(['endpoint', 'create', '--network', net, '--netns', nsPeer, '--ip', '10.233.9.20']);
  t.true(await ping(nsA, '10.233.9.20'), 'the endpoint made by path reaches its peer');

  t.is(await d.stop('SIGTERM'), 0);
  // While the daemon is down, the path comes to name another namespace.
  t.is((await sh('umount', [nsFile])).code, 0);
  t.is((await sh('mount', ['--bind', `/run/netns/${nsB}`, nsFile])).code, 0);
  d = await restartDaemon(d);
  const left = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  t.deepEqual(left.map((e) => e.ip), ['10.233.9.20'], 'only the peer endpoint is left');
  t.deepEqual((await linksIn(nsB)).filter((l) => l !== 'lo'), [], 'a TAP was made in the namespace the path names now');
  t.true(d.log().includes('endpoint removed: its network namespace is gone'), 'the daemon says why the endpoint went');
});
