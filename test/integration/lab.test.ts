/**
 * scripts/lab, driven as a user drives it: two lab hosts (namespaces on an
 * underlay bridge, one vsw daemon each), two containers each, one overlay
 * network. Every pair of containers pings, iperf3 runs across hosts, and a
 * second overlay network with another VNI on the same hosts is isolated
 * from the first at L2. Also the refusals of bad input, and `down`.
 *
 * The lab is named with this file's vswtXXXX prefix (namespaces vswtXXXX-ul,
 * vswtXXXX-h1, vswtXXXX-h1-c1, ...; state in /run/vsw-lab/vswtXXXX*), so
 * `scripts/lab down` and removeEverything() find all of it.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assertOneSentence, processAlive } from './helpers/daemon.js';
import { addNetns, inNetns, namespacesWithPrefix, ping, removeEverything, runPrefix, sh, type CommandResult } from './helpers/env.js';

/** The checkout: this file runs from dist/test/integration/. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LAB = `${REPO}scripts/lab`;
const CLI = `${REPO}dist/src/cli/main.js`;
const prefix = runPrefix();
const STATE = `/run/vsw-lab/${prefix}.json`;

function lab(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return sh('bash', [LAB, ...args], { timeoutMs });
}

interface LabContainer {
  id: string;
  netns: string;
  ip: string;
  ifname: string;
}
interface LabHost {
  name: string;
  netns: string;
  underlayIp: string;
  socket: string;
  pid: number;
  containers: LabContainer[];
}
interface LabJson {
  hosts: LabHost[];
  complete: boolean;
}

let desc: LabJson | undefined;
let upOutput = '';

function vsw(host: LabHost, args: string[]): Promise<CommandResult> {
  return sh('node', [CLI, '--socket', host.socket, ...args]);
}

async function vswOk(host: LabHost, args: string[]): Promise<string> {
  const r = await vsw(host, args);
  if (r.code !== 0) throw new Error(`${host.name}: vsw ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

test.before(async () => {
  const r = await lab(['up', '--hosts', '2', '--containers', '2', '--prefix', prefix]);
  if (r.code !== 0) throw new Error(`scripts/lab up exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  upOutput = r.stdout;
  desc = JSON.parse(readFileSync(STATE, 'utf8')) as LabJson;
});

test.after.always(async () => {
  await lab(['down', '--prefix', prefix], 60_000);
  await removeEverything(prefix);
});

test.serial('scripts/lab up builds two hosts with a daemon each and two containers per host, and says how to reach them', async (t) => {
  const d = desc!;
  t.true(d.complete);
  t.deepEqual(d.hosts.map((h) => h.underlayIp), ['192.168.56.11', '192.168.56.12']);
  const names = await namespacesWithPrefix(prefix);
  for (const ns of [`${prefix}-ul`, `${prefix}-h1`, `${prefix}-h2`, `${prefix}-h1-c1`, `${prefix}-h1-c2`, `${prefix}-h2-c1`, `${prefix}-h2-c2`]) {
    t.true(names.includes(ns), `namespace ${ns} is missing`);
  }
  // The physical LAN is built only when asked for (--lan, lab-lan.test.ts).
  for (const ns of [`${prefix}-lan`, `${prefix}-rt`, `${prefix}-out`]) t.false(names.includes(ns), `namespace ${ns} exists without --lan`);
  t.notRegex(upOutput, /dnsmasq/);
  for (const h of d.hosts) {
    t.true(processAlive(h.pid), `${h.name}'s daemon ${h.pid} is not running`);
    // The daemon runs inside its host's namespace, where the underlay address is.
    const ownNs = await sh('ip', ['netns', 'identify', String(h.pid)]);
    t.is(ownNs.stdout.trim(), h.netns);
    t.true(upOutput.includes(h.socket), `the summary does not name ${h.socket}`);
    t.is(h.containers.length, 2);
    for (const c of h.containers) t.true(upOutput.includes(c.ip), `the summary does not show ${c.id}'s address ${c.ip}`);
  }
  const ips = d.hosts.flatMap((h) => h.containers.map((c) => c.ip));
  t.is(new Set(ips).size, 4, `addresses collide across hosts: ${ips.join(' ')}`);
  t.regex(upOutput, /scripts\/lab iperf/);
  t.regex(upOutput, /scripts\/lab down/);
  t.regex(upOutput, /ping answered/, 'the cross-host check ping of up did not get an answer');
  const status = await lab(['status', '--prefix', prefix]);
  t.is(status.code, 0, status.stdout + status.stderr);
});

test.serial('every pair of containers pings, across hosts and on one host', async (t) => {
  const all = desc!.hosts.flatMap((h) => h.containers);
  t.is(all.length, 4);
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const [a, b] = [all[i], all[j]];
      t.true(await ping(a.netns, b.ip, 3), `${a.id} (${a.ip}) cannot ping ${b.id} (${b.ip})`);
    }
  }
});

test.serial('scripts/lab iperf runs iperf3 across hosts and prints the rate', async (t) => {
  const r = await lab(['iperf', '--prefix', prefix, '--from', 'h1-c1', '--to', 'h2-c1', '--time', '2']);
  t.is(r.code, 0, r.stderr);
  const m = /([\d.]+) (Gbit|Mbit)\/s received, (\d+|\?) retransmits/.exec(r.stdout);
  t.truthy(m, `no rate in: ${r.stdout}`);
  t.true(Number(m![1]) > 0, r.stdout);
});

test.serial('a second overlay network with another VNI on the same hosts is isolated from the first', async (t) => {
  const [h1, h2] = desc!.hosts;
  for (const [h, peer] of [[h1, h2], [h2, h1]]) {
    await vswOk(h, ['network', 'create', '-d', 'overlay', '--subnet', '10.20.0.0/24', '--vni', '4097', '--vtep', h.underlayIp, '--peer', peer.underlayIp, 'red']);
  }
  const red: { ns: string; ip: string; ifname: string }[] = [];
  for (const h of [h1, h2]) {
    const ns = `${h.netns}-red`;
    await addNetns(ns);
    // No spoof guard: the test puts an address of the blue subnet on the red interface below.
    const id = (await vswOk(h, ['endpoint', 'create', '--network', 'red', '--netns', ns, '--name', 'red1', '--no-spoof-guard'])).trim();
    const ep = JSON.parse(await vswOk(h, ['endpoint', 'inspect', id])) as { ip: string; ifname: string };
    red.push({ ns, ip: ep.ip.split('/')[0], ifname: ep.ifname });
  }
  t.true(await ping(red[0].ns, red[1].ip, 3), `red on h1 (${red[0].ip}) cannot ping red on h2 (${red[1].ip})`);

  // Give both red interfaces an address in blue's subnet. Red to red in that subnet still works,
  // so an address of 10.10.0.0/24 is no obstacle on red; a blue container's address is, because
  // red's frames (and its ARP requests) never reach the blue segment, VNI 4096.
  const [redA, redB] = ['10.10.0.250', '10.10.0.251'];
  for (const [r, addr] of [[red[0], redA], [red[1], redB]] as const) {
    const add = await inNetns(r.ns, 'ip', ['addr', 'add', `${addr}/24`, 'dev', r.ifname]);
    t.is(add.code, 0, add.stderr);
  }
  t.true(await ping(red[0].ns, redB, 3), `red on h1 cannot reach red on h2 at ${redB}: the isolation check below would prove nothing`);
  const blue = desc!.hosts.flatMap((h) => h.containers);
  for (const b of blue) {
    t.false(await ping(red[0].ns, b.ip, 2), `red on h1 reaches blue ${b.id} at ${b.ip}`);
    t.false(await ping(b.netns, redA, 2), `blue ${b.id} reaches red on h1 at ${redA}`);
  }
  // Blue is as it was.
  t.true(await ping(blue[0].netns, blue[2].ip, 3), 'blue h1-c1 no longer reaches blue h2-c1');
});

test.serial('scripts/lab refuses bad input with one sentence, and a lab that exists already', async (t) => {
  for (const hosts of ['1', '99']) {
    const r = await lab(['up', '--hosts', hosts, '--prefix', `${prefix}x`]);
    assertOneSentence(t, r, `up --hosts ${hosts}`);
    t.regex(r.stderr, /--hosts/);
  }
  const again = await lab(['up', '--prefix', prefix]);
  assertOneSentence(t, again, 'up on an existing prefix');
  t.regex(again.stderr, /exists already/);
  // The refusal left the lab alone.
  t.true(existsSync(STATE));
  t.true(processAlive(desc!.hosts[0].pid));
  const none = await lab(['down', '--prefix', `${prefix}x`]);
  t.is(none.code, 0, none.stderr);
  t.regex(none.stdout, /nothing to remove/);
  const noLab = await lab(['iperf', '--prefix', `${prefix}x`]);
  assertOneSentence(t, noLab, 'iperf without a lab');
});

test.serial('scripts/lab down stops the daemons and removes every namespace and file of the lab', async (t) => {
  const r = await lab(['down', '--prefix', prefix], 60_000);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await namespacesWithPrefix(`${prefix}-`), []);
  t.false(existsSync(STATE));
  for (const h of desc!.hosts) {
    t.false(processAlive(h.pid), `${h.name}'s daemon ${h.pid} still runs`);
    t.false(existsSync(h.socket), `${h.socket} is still there`);
  }
  const again = await lab(['down', '--prefix', prefix]);
  t.is(again.code, 0, again.stderr);
});
