/**
 * DNS in the switch through a real daemon: dig (UDP, TCP, PTR), getent and
 * Python's resolver inside `vsw run` compartments (their resolv.conf is
 * vsw's), names that follow endpoints and load balancers, a clash refused,
 * forwarding to an upstream (dnsmasq on loopback), a restart, and a fuzz run
 * of random bytes that leaves the resolver answering. Subnet 10.97.0.0/24,
 * resolver at its gateway 10.97.0.1.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Network } from '../../src/service/api-types.js';
import { addNetns, freeLoopbackPort, inNetns, runPrefix } from './helpers/env.js';
import { assertOneSentence, createEndpoint, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';

const prefix = runPrefix();
const net = `${prefix}-dns`;
const RESOLVER = '10.97.0.1';
const UPSTREAM_NAME = `upstream.${prefix}.test`;
const UPSTREAM_ADDR = '10.1.2.3';
const nsClient = `${prefix}-c`;
const nsWeb = `${prefix}-w`;
const webName = `${prefix}-web`;

let d: DaemonHandle;
let upstream: ChildProcess;
let web: EndpointJson;

async function dig(args: string[], ns = nsClient): Promise<string> {
  const r = await inNetns(ns, 'dig', [`@${RESOLVER}`, '+short', '+time=2', '+tries=1', ...args]);
  if (r.code !== 0) throw new Error(`dig ${args.join(' ')} failed: ${r.stdout}${r.stderr}`);
  return r.stdout.trim();
}

async function digStatus(name: string): Promise<string> {
  const r = await inNetns(nsClient, 'dig', [`@${RESOLVER}`, '+time=2', '+tries=1', name]);
  return /status: (\w+)/.exec(r.stdout)?.[1] ?? `no status: ${r.stdout}${r.stderr}`;
}

async function stageCounters(): Promise<Record<string, number>> {
  const n = await d.vswJson<Network & { stages: { name: string; counters: Record<string, number> }[] }>(['network', 'inspect', net]);
  return n.stages.find((s) => s.name === 'dns')!.counters;
}

test.before(async () => {
  const port = await freeLoopbackPort();
  upstream = spawn('dnsmasq', ['--no-daemon', '--conf-file=/dev/null', `--port=${port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--address=/${UPSTREAM_NAME}/${UPSTREAM_ADDR}`], { stdio: 'ignore' });
  d = await startDaemon(prefix, { extraArgs: ['--dns-upstream', `127.0.0.1:${port}`] });
  await d.vswOk(['network', 'create', net, '-d', 'internal', '--subnet', '10.97.0.0/24', '--gateway', RESOLVER]);
  await addNetns(nsClient);
  await addNetns(nsWeb);
  await createEndpoint(d, net, nsClient, ['--name', `${prefix}-client`]);
  web = await createEndpoint(d, net, nsWeb, ['--name', webName]);
});

test.after.always(async () => {
  upstream?.kill('SIGTERM');
  await teardown(prefix, d);
});

test.serial('dig gets endpoint names as NAME and NAME.NETWORK over UDP and TCP, their PTR, and NXDOMAIN for unknown names of the network', async (t) => {
  t.is((await inNetns(nsClient, 'ip', ['route', 'get', RESOLVER])).code, 0);
  t.is(await dig([webName]), web.ip);
  t.is(await dig([`${webName}.${net}`]), web.ip, 'with the network as suffix');
  t.is(await dig([webName.toUpperCase()]), web.ip, 'names are without case');
  t.is(await dig(['+tcp', webName]), web.ip, 'over TCP');
  t.is(await dig(['-x', web.ip]), `${webName}.${net}.`);
  t.is(await dig(['AAAA', webName]), '', 'no AAAA record: an empty answer');
  t.is(await digStatus(`nobody.${net}`), 'NXDOMAIN', 'the network answers for its own zone');
  const counters = await stageCounters();
  t.true(counters.queriesAnswered >= 5 && counters.tcpAnswered >= 1, JSON.stringify(counters));
});

test.serial('vsw run writes the compartment\'s resolv.conf: getent and Python resolve names there; other names are forwarded upstream', async (t) => {
  const getent = await d.vsw(['run', '--network', net, '--name', `${prefix}-r1`, '--', 'getent', 'hosts', webName]);
  t.is(getent.code, 0, getent.stderr);
  t.regex(getent.stdout, new RegExp(`^${web.ip.replace(/\./g, '\\.')}\\s+${webName}`));
  const py = await d.vsw(['run', '--network', net, '--name', `${prefix}-r2`, '--', 'python3', '-c', `import socket; print(socket.gethostbyname("${webName}"), socket.gethostbyname("${UPSTREAM_NAME}"))`]);
  t.is(py.code, 0, py.stderr);
  t.is(py.stdout.trim(), `${web.ip} ${UPSTREAM_ADDR}`, 'a local name, and one the upstream answers');
  t.false(existsSync(`/etc/netns/${prefix}-r1`), 'the compartment\'s resolv.conf went with it');
  t.is(await dig([UPSTREAM_NAME]), UPSTREAM_ADDR, 'dig: forwarded over UDP');
  t.is(await dig(['+tcp', UPSTREAM_NAME]), UPSTREAM_ADDR, 'and over TCP');
  t.true((await stageCounters()).forwarded >= 2);
});

test.serial('a load balancer name answers with its VIP; a name taken on the network is refused; names go with their owners', async (t) => {
  await d.vswOk(['lb', 'create', `${prefix}-api`, '--network', net, '--vip', '10.97.0.200', '--port', '80', '--backend', webName]);
  t.is(await dig([`${prefix}-api`]), '10.97.0.200');
  const clash = await d.vsw(['lb', 'create', webName, '--network', net, '--port', '81', '--backend', webName]);
  assertOneSentence(t, clash, 'a load balancer named like an endpoint of its network');
  const clash2 = await d.vsw(['endpoint', 'create', '--network', net, '--netns', nsClient, '--ifname', 'eth1', '--name', `${prefix}-api`]);
  assertOneSentence(t, clash2, 'an endpoint named like a load balancer of its network');
  await d.vswOk(['lb', 'rm', `${prefix}-api`]);
  t.is(await digStatus(`${prefix}-api.${net}`), 'NXDOMAIN', 'the balancer\'s name went with it');
  const extra = await createEndpoint(d, net, nsClient, ['--ifname', 'eth1', '--name', `${prefix}-extra`]);
  t.is(await dig([`${prefix}-extra`]), extra.ip);
  await d.vswOk(['endpoint', 'rm', extra.id]);
  t.is(await digStatus(`${prefix}-extra.${net}`), 'NXDOMAIN', "the endpoint's name went with it");
});

test.serial('names survive a restart', async (t) => {
  t.is(await d.stop('SIGTERM'), 0);
  d = await restartDaemon(d);
  for (let i = 0; i < 50; i++) {
    if ((await inNetns(nsClient, 'dig', [`@${RESOLVER}`, '+short', '+time=1', '+tries=1', webName])).stdout.trim() === web.ip) break;
    await sleep(100);
  }
  t.is(await dig([webName]), web.ip);
});

test.serial('random bytes and broken queries over UDP and TCP are dropped and counted; the resolver goes on answering and never answers with more than it got', async (t) => {
  const fuzz = `
import os, random, socket, struct
random.seed(7)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(0.002)
biggest = 0
sent = {}
valid = bytes.fromhex("1234010000010000000000000377656200000100 01".replace(" ", ""))
def drain():
    global biggest
    try:
        while True:
            got, _ = u.recvfrom(4096)
            # Answers come late (a mutated but valid query is forwarded upstream): matched to their query by id.
            asked = sent.get(got[:2], [])
            if asked and all(k != 1 for k, _ in asked):
                biggest = max(biggest, len(got) - max(n for _, n in asked))
    except socket.timeout:
        pass
for i in range(3000):
    kind = i % 3
    if kind == 0:
        data = os.urandom(random.randint(0, 600))
    elif kind == 1:
        b = bytearray(valid)
        for _ in range(random.randint(1, 4)):
            b[random.randrange(len(b))] = random.randrange(256)
        data = bytes(b)
    else:
        # A compression loop, and a header that claims thousands of records.
        data = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\\xc0\\x0c" + b"\\x00\\x01\\x00\\x01" if i % 2 else struct.pack(">HHHHHH", i, 0x0100, 65535, 65535, 65535, 65535)
    sent.setdefault(data[:2], []).append((kind, len(data)))
    u.sendto(data, ("${RESOLVER}", 53))
    drain()
u.settimeout(0.5)
drain()
for i in range(30):
    t = socket.create_connection(("${RESOLVER}", 53), timeout=2)
    t.sendall(os.urandom(random.randint(1, 300)))
    try:
        t.recv(4096)
    except OSError:
        pass
    t.close()
print(biggest)
`;
  const r = await inNetns(nsClient, 'python3', ['-c', fuzz], { timeoutMs: 120_000 });
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), '0', 'no answer to garbage was larger than what was sent');
  t.true((await stageCounters()).malformed > 100, 'the malformed ones were counted');
  t.is(await dig([webName]), web.ip, 'the resolver still answers');
  t.is(await dig(['+tcp', webName]), web.ip);
  t.false(d.exited());
});
