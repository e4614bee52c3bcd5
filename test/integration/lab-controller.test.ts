/**
 * `scripts/lab up --controller`, driven as a user drives it: a 3-member etcd
 * cluster and the network controller in the underlay namespace, three lab
 * hosts whose daemons are its agents, and the overlay network and the
 * containers' endpoints made through the controller. Every pair of
 * containers pings; etcdctl sees three members with one leader; the leader
 * killed with SIGKILL: a ping running across it loses nothing, and an
 * endpoint placed through the controller afterwards is applied on every host
 * (how long the first write and its application took is logged); `down`
 * leaves no namespace, process, file or etcd data directory of the lab.
 *
 * The lab is named with this file's vswtXXXX prefix, like lab.test.ts.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { processAlive } from './helpers/daemon.js';
import { addNetns, namespacesWithPrefix, ping, processesMentioning, removeEverything, runPrefix, sh, type CommandResult } from './helpers/env.js';

/** The checkout: this file runs from dist/test/integration/. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LAB = `${REPO}scripts/lab`;
const CLI = `${REPO}dist/src/cli/main.js`;
const LAB_DIR = '/run/vsw-lab';
const prefix = runPrefix();
const STATE = `${LAB_DIR}/${prefix}.json`;

interface LabContainer {
  id: string;
  name: string;
  host: string;
  netns: string;
  ip: string;
  mac: string;
}
interface LabHost {
  name: string;
  netns: string;
  underlayIp: string;
  socket: string;
  pid: number;
  containers: LabContainer[];
}
interface LabMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  pid: number;
}
interface LabJson {
  hosts: LabHost[];
  complete: boolean;
  network: { name: string };
  controller: { netns: string; ip: string; etcd: string; socket: string; pid: number; members: LabMember[] };
}
interface EndpointView {
  name: string;
  host: string;
  ip: string;
  mac?: string;
  status: Record<string, { state: string; reason?: string }>;
}
interface MemberStatus {
  Endpoint: string;
  Status: { header: { member_id: string }; leader: string; raftTerm: number };
}

let desc: LabJson;
let upOutput = '';

function lab(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return sh('bash', [LAB, ...args], { timeoutMs });
}

/** `vsw --controller SOCKET ...`, as the lab's summary tells a user to type it. */
function ctl(args: string[]): Promise<CommandResult> {
  return sh('node', [CLI, '--controller', desc.controller.socket, ...args]);
}

async function endpoints(): Promise<EndpointView[]> {
  const r = await ctl(['endpoint', 'ls', '--json']);
  return r.code === 0 ? (JSON.parse(r.stdout) as EndpointView[]) : [];
}

/** `etcdctl endpoint status -w json` in the underlay namespace; member ids kept as text (they are 64-bit). */
async function memberStatus(): Promise<MemberStatus[]> {
  const c = desc.controller;
  const r = await sh('ip', ['netns', 'exec', c.netns, 'etcdctl', '--endpoints', c.etcd, '--dial-timeout', '1s', '--command-timeout', '2s', 'endpoint', 'status', '-w', 'json']);
  try {
    return JSON.parse(r.stdout.replace(/:(\d{10,})/g, ':"$1"')) as MemberStatus[];
  } catch {
    return [];
  }
}

/** The MACs a host's daemon holds as remote endpoints of the lab's network. */
async function remoteMacs(h: LabHost): Promise<string[]> {
  const r = await sh('node', [CLI, '--socket', h.socket, 'overlay', 'ls', '--network', desc.network.name, '--json']);
  if (r.code !== 0) return [];
  const [state] = JSON.parse(r.stdout) as { remotes?: { mac: string }[] }[];
  return (state?.remotes ?? []).map((x) => x.mac);
}

/** Polls until `check` holds; returns how long it took. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000, everyMs = 50): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

const containers = (): LabContainer[] => desc.hosts.flatMap((h) => h.containers);

/** Every unordered pair of the containers, pinged at once; the pairs that got no answer. */
async function silentPairs(): Promise<string[]> {
  const all = containers();
  const pairs: [LabContainer, LabContainer][] = [];
  for (let i = 0; i < all.length; i++) for (let j = i + 1; j < all.length; j++) pairs.push([all[i], all[j]]);
  const ok = await Promise.all(pairs.map(([a, b]) => ping(a.netns, b.ip, 2)));
  return pairs.filter((_, k) => !ok[k]).map(([a, b]) => `${a.id} (${a.ip}) -> ${b.id} (${b.ip})`);
}

test.before(async () => {
  const r = await lab(['up', '--controller', '--hosts', '3', '--containers', '2', '--prefix', prefix]);
  if (r.code !== 0) throw new Error(`scripts/lab up --controller exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  upOutput = r.stdout;
  desc = JSON.parse(readFileSync(STATE, 'utf8')) as LabJson;
});

test.after.always(async () => {
  await lab(['down', '--prefix', prefix], 60_000);
  await removeEverything(prefix);
});

test.serial('up --controller: three etcd members and the controller in the underlay namespace, three agent hosts, and everything applied through the controller', async (t) => {
  t.true(desc.complete);
  const c = desc.controller;
  t.is(c.netns, `${prefix}-ul`);
  t.is(c.members.length, 3);
  t.deepEqual(c.etcd.split(','), c.members.map((m) => m.clientUrl));
  for (const m of c.members) {
    t.true(processAlive(m.pid), `etcd member ${m.name} (${m.pid}) is not running`);
    t.is((await sh('ip', ['netns', 'identify', String(m.pid)])).stdout.trim(), c.netns, `etcd member ${m.name} runs in the underlay namespace`);
    t.regex(m.clientUrl, new RegExp(`^http://${c.ip.replace(/\./g, '\\.')}:\\d+$`), 'clients on the bridge address');
    t.regex(m.peerUrl, /^http:\/\/127\.0\.0\.1:\d+$/, "peers on the underlay namespace's loopback");
    t.true(existsSync(m.dataDir) && m.dataDir.startsWith(`${LAB_DIR}/${prefix}-`), `data directory ${m.dataDir}`);
  }
  t.is(new Set(c.members.map((m) => m.clientUrl)).size, 3);
  t.true(processAlive(c.pid), 'the controller runs');
  for (const h of desc.hosts) {
    const cmdline = readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0');
    t.true(cmdline.includes('--agent'), `${h.name}'s daemon is an agent: ${cmdline.join(' ')}`);
    t.is(cmdline[cmdline.indexOf('--etcd') + 1], c.etcd, `${h.name}'s agent knows all three members`);
    t.is(cmdline[cmdline.indexOf('--vtep') + 1], h.underlayIp);
    t.is(h.containers.length, 2);
  }
  const members = await memberStatus();
  t.is(members.length, 3, 'etcdctl endpoint status shows three members');
  t.is(new Set(members.map((m) => m.Status.header.member_id)).size, 3);
  t.is(members.filter((m) => m.Status.header.member_id === m.Status.leader).length, 1, 'one of them leads');

  const eps = await endpoints();
  t.deepEqual(eps.map((e) => e.name).sort(), containers().map((x) => x.id).sort(), "the controller's endpoints are the lab's containers");
  for (const e of eps) {
    t.is(e.status[e.host]?.state, 'applied', `${e.name} on ${e.host}`);
    t.is(e.mac, containers().find((x) => x.id === e.name)!.mac);
  }
  t.regex(upOutput, /etcd: 3 members/);
  t.regex(upOutput, /ping answered/);
  const status = await lab(['status', '--prefix', prefix]);
  t.is(status.code, 0, status.stdout + status.stderr);
  t.regex(status.stdout, /controller .* answers, agents registered: h1, h2, h3/);
  t.is((status.stdout.match(/^etcd e\d .*(leader|follower), raft term/gm) ?? []).length, 3, status.stdout);
  t.is((status.stdout.match(/^etcd e\d .*leader,/gm) ?? []).length, 1);
  t.regex(status.stdout, /network blue: h1 applied, h2 applied, h3 applied/);
  t.is((status.stdout.match(/endpoint h\d-c\d .* applied$/gm) ?? []).length, 6, status.stdout);
});

test.serial('every pair of containers pings, across hosts and on one host', async (t) => {
  t.is(containers().length, 6);
  t.deepEqual(await silentPairs(), []);
});

test.serial('the etcd leader killed: a ping across it loses nothing, and an endpoint placed through the controller afterwards reaches every host', async (t) => {
  const c = desc.controller;
  const before = await memberStatus();
  const leaderStatus = before.find((m) => m.Status.header.member_id === m.Status.leader)!;
  t.truthy(leaderStatus, JSON.stringify(before));
  const leader = c.members.find((m) => m.clientUrl === leaderStatus.Endpoint)!;
  // For comparison, a write with all three members up (the CLI's own start is part of every number here).
  const base = `${prefix}-h1-c8`;
  await addNetns(base);
  const baseStart = Date.now();
  const created = await ctl(['endpoint', 'create', '--network', desc.network.name, '--host', 'h1', '--netns', base, '--name', 'h1-c8']);
  const baseWrote = Date.now() - baseStart;
  t.is(created.code, 0, created.stderr);
  t.is((await ctl(['endpoint', 'rm', 'h1-c8'])).code, 0);
  const remotesBefore = await Promise.all(desc.hosts.map(remoteMacs));
  const [a, b] = [desc.hosts[0].containers[0], desc.hosts[2].containers[0]];
  // 40 pings 0.1 s apart from h1-c1 to h3-c1; the leader dies about a second in.
  const pinger = spawn('ip', ['netns', 'exec', a.netns, 'ping', '-c', '40', '-i', '0.1', '-W', '1', b.ip], { stdio: ['ignore', 'pipe', 'ignore'] });
  let pingOut = '';
  pinger.stdout.on('data', (d: Buffer) => (pingOut += d.toString()));
  const pingDone = new Promise((r) => pinger.once('exit', r));
  await sleep(1000);
  process.kill(leader.pid, 'SIGKILL');
  const killedAt = Date.now();
  await until(`etcd member ${leader.name} gone`, async () => !processAlive(leader.pid), 5000, 10);

  // The first write through the controller after the kill: an endpoint placed on h2.
  const ns = `${prefix}-h2-c9`;
  await addNetns(ns);
  const writeStart = Date.now();
  let attempts = 0;
  let last: CommandResult | undefined;
  await until('the controller accepts an endpoint', async () => {
    attempts += 1;
    last = await ctl(['endpoint', 'create', '--network', desc.network.name, '--host', 'h2', '--netns', ns, '--name', 'h2-c9']);
    return last.code === 0;
  }, 30_000, 100);
  const wrote = Date.now() - writeStart;
  const applied = await until('h2-c9 applied and realized on h2', async () => (await endpoints()).some((e) => e.name === 'h2-c9' && e.status.h2?.state === 'applied' && e.mac !== undefined));
  const e9 = (await endpoints()).find((e) => e.name === 'h2-c9')!;
  const others = desc.hosts.filter((h) => h.name !== 'h2');
  const remotes = await until('h1 and h3 hold h2-c9 as a remote endpoint', async () => (await Promise.all(others.map(remoteMacs))).every((m) => m.includes(e9.mac!)));
  const reached = await until('h1-c1 and h3-c1 reach h2-c9', async () => (await Promise.all(others.map((h) => ping(h.containers[0].netns, e9.ip, 1)))).every((x) => x), 30_000, 0);
  const total = Date.now() - writeStart;
  t.log(`a write with three members up took ${baseWrote} ms`);
  t.log(`etcd leader ${leader.name} killed; the first write after it (vsw --controller endpoint create) took ${wrote} ms in ${attempts} attempt${attempts > 1 ? 's' : ''} (started ${writeStart - killedAt} ms after the kill)`);
  t.log(`then applied on h2 after ${applied} ms more, known to h1 and h3 ${remotes} ms after that, pinged from both ${reached} ms after that: ${total} ms from the write's start`);

  // A second write, now that the client knows: removing the endpoint.
  const rmStart = Date.now();
  const rm = await ctl(['endpoint', 'rm', 'h2-c9']);
  t.is(rm.code, 0, rm.stderr);
  const rmWrote = Date.now() - rmStart;
  const rmGone = await until('h1 and h3 withdrew h2-c9', async () => (await Promise.all(others.map(remoteMacs))).every((m) => !m.includes(e9.mac!)));
  t.log(`a second write (endpoint rm) took ${rmWrote} ms, withdrawn from h1 and h3 ${rmGone} ms later`);

  await pingDone;
  const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut);
  t.truthy(m, pingOut);
  t.log(`ping h1-c1 -> h3-c1 across the kill: ${m![2]} of ${m![1]} answered`);
  t.is(Number(m![2]), Number(m![1]), `pings were lost across the leader's death:\n${pingOut}`);
  t.deepEqual(await silentPairs(), [], 'every pair still pings');
  // Past the agents' 5 s lease: no agent lost its registration, so no host withdrew another's endpoints.
  await sleep(Math.max(0, killedAt + 6000 - Date.now()));
  t.deepEqual(await Promise.all(desc.hosts.map(remoteMacs)), remotesBefore, "every host still holds the others' endpoints");
  for (const h of desc.hosts) {
    const log = readFileSync(`${LAB_DIR}/${prefix}-${h.name}.log`, 'utf8');
    t.notRegex(log, /lease is lost|could not reach etcd/, `${h.name}'s agent lost etcd`);
  }

  const after = await memberStatus();
  t.is(after.length, 2, 'two members answer');
  const newLeader = after.filter((x) => x.Status.header.member_id === x.Status.leader);
  t.is(newLeader.length, 1, 'one of them leads');
  t.true(newLeader[0].Status.raftTerm > leaderStatus.Status.raftTerm, 'in a later term');
  const status = await lab(['status', '--prefix', prefix]);
  t.is(status.code, 1, 'status says something is wrong');
  t.regex(status.stdout, new RegExp(`^etcd ${leader.name} .*NOT running`, 'm'));
});

test.serial('scripts/lab down stops etcd, the controller and the daemons and leaves nothing of the lab', async (t) => {
  const r = await lab(['down', '--prefix', prefix], 60_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /removed lab/);
  t.notRegex(r.stdout, /SIGKILL/, 'everything stopped on SIGTERM');
  t.deepEqual(await namespacesWithPrefix(`${prefix}-`), []);
  t.deepEqual(processesMentioning(`${LAB_DIR}/${prefix}`), []);
  t.deepEqual(readdirSync(LAB_DIR).filter((f) => f.startsWith(prefix)), []);
  for (const m of desc.controller.members) {
    t.false(processAlive(m.pid), `etcd member ${m.name} still runs`);
    t.false(existsSync(m.dataDir), `${m.dataDir} is still there`);
  }
  t.false(processAlive(desc.controller.pid), 'the controller still runs');
  t.false(existsSync(desc.controller.socket));
  for (const h of desc.hosts) t.false(processAlive(h.pid), `${h.name}'s daemon still runs`);
  const again = await lab(['down', '--prefix', prefix]);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /nothing to remove/);
});
