/**
 * Bad input to a real daemon through the CLI: every refusal is a non-zero
 * exit and one sentence on stderr, nothing half-made stays behind, and the
 * running daemon keeps switching. Also malformed frames from inside a
 * namespace. Subnet 10.65.0.0/24 (network e).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildArpRequest, buildIcmp4Echo } from '../../src/packet/builders.js';
import { addNetns, injectFrames, namespacesWithPrefix, ping, runPrefix, sh } from './helpers/env.js';
import {
  assertOneSentence,
  CLI,
  createEndpoint,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  linksIn,
  portStats,
  startDaemon,
  teardown,
} from './helpers/daemon.js';

const prefix = runPrefix();
const netE = `${prefix}-e`;
const nsE = [`${prefix}-e1`, `${prefix}-e2`];
/** A namespace that bad endpoint requests point at: it must stay empty. */
const nsSpare = `${prefix}-e3`;
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

let d: DaemonHandle;
const e: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  e.push(...(await createNetworkWithEndpoints(d, netE, '10.65.0.0/24', nsE)));
  await addNetns(nsSpare);
});

test.after.always(async () => {
  await teardown(prefix, d);
});

interface Snapshot {
  networks: string[];
  endpoints: string[];
}

async function snapshot(): Promise<Snapshot> {
  const networks = (await d.vswJson<{ name: string; subnet: string }[]>(['network', 'ls', '--json'])).map((n) => `${n.name} ${n.subnet}`).sort();
  const endpoints = (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).map((x) => `${x.id} ${x.netns} ${x.ip} ${x.mac}`).sort();
  return { networks, endpoints };
}

test.serial('bad network requests are refused with one sentence and change nothing', async (t) => {
  const before = await snapshot();
  const cases: [string, string[], RegExp][] = [
    ['subnet with an octet of 300', ['network', 'create', `${prefix}-x1`, '--subnet', '10.1.2.300/24'], /10\.1\.2\.300\/24/],
    ['subnet "banana"', ['network', 'create', `${prefix}-x2`, '--subnet', 'banana'], /banana/],
    ['subnet inside another network', ['network', 'create', `${prefix}-x3`, '--subnet', '10.65.0.128/25'], new RegExp(`overlap.*${netE}|${netE}.*overlap`)],
    ['subnet containing another network', ['network', 'create', `${prefix}-x4`, '--subnet', '10.65.0.0/16'], new RegExp(`overlap.*${netE}|${netE}.*overlap`)],
    ['an l2tunnel network without its uplink', ['network', 'create', `${prefix}-x5`, '-d', 'l2tunnel', '--subnet', '10.69.251.0/24'], /an l2tunnel network rides on a host interface: pass --uplink IFNAME/],
    ['nat options on an internal network', ['network', 'create', `${prefix}-x7`, '--subnet', '10.69.249.0/24', '--nat-ports', '1-2'], /nat/],
    ['gateway outside the subnet', ['network', 'create', `${prefix}-x6`, '--subnet', '10.69.252.0/24', '--gateway', '10.70.0.1'], /10\.70\.0\.1/],
    ['network name taken', ['network', 'create', netE, '--subnet', '10.69.250.0/24'], /already exists/],
    ['rm of an unknown network', ['network', 'rm', `${prefix}-nonet`], /not found/],
    ['inspect of an unknown network', ['network', 'inspect', `${prefix}-nonet`], /not found/],
    ['rm of a network with endpoints', ['network', 'rm', netE], new RegExp(`${e[0].name}.*${e[1].name}|${e[1].name}.*${e[0].name}`)],
  ];
  for (const [what, args, mentions] of cases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, mentions, what);
  }
  t.deepEqual(await snapshot(), before);
});

test.serial('bad endpoint requests are refused with one sentence and leave no TAP behind', async (t) => {
  const before = await snapshot();
  const create = (...extra: string[]) => ['endpoint', 'create', '--network', netE, '--netns', nsSpare, ...extra];
  const cases: [string, string[], RegExp][] = [
    ['unknown netns', ['endpoint', 'create', '--network', netE, '--netns', `${prefix}-nope`], new RegExp(`${prefix}-nope`)],
    ['unknown network', ['endpoint', 'create', '--network', `${prefix}-nonet`, '--netns', nsSpare], new RegExp(`${prefix}-nonet`)],
    ['malformed MAC', create('--mac', '02:zz:00:00:00:01'), /02:zz:00:00:00:01/],
    ['multicast MAC', create('--mac', '01:00:5e:00:00:01'), /01:00:5e:00:00:01/],
    ['MAC of an existing endpoint', create('--mac', e[0].mac), /already used/],
    ['IP of an existing endpoint', create('--ip', e[0].ip), new RegExp(`${e[0].ip.replace(/\./g, '\\.')}.*already used`)],
    ['IP outside the subnet', create('--ip', '10.66.0.9'), /10\.66\.0\.9/],
    ['IP reserved for the gateway', create('--ip', '10.65.0.1'), /10\.65\.0\.1\b/],
    ['malformed IP', create('--ip', '10.65.0.300'), /10\.65\.0\.300/],
    ['ifname of 16 characters', create('--ifname', 'abcdefghijklmnop'), /15/],
    ['ifname with a slash', create('--ifname', 'eth/0'), /eth\/0/],
    ['rm of an unknown endpoint', ['endpoint', 'rm', 'ffffffffffff'], /ffffffffffff/],
    ['inspect of an unknown endpoint', ['endpoint', 'inspect', 'ffffffffffff'], /not found/],
  ];
  for (const [what, args, mentions] of cases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, mentions, what);
    t.deepEqual(await linksIn(nsSpare), ['lo'], `${what}: nothing was left in ${nsSpare}`);
  }
  t.deepEqual(await snapshot(), before);
  // The refused requests released what they had taken: a valid one right after gets the next address.
  const ok = await createEndpoint(d, netE, nsSpare);
  t.is(ok.ip, '10.65.0.4');
  t.is((await d.vsw(['endpoint', 'rm', ok.id])).code, 0);
  t.deepEqual(await linksIn(nsSpare), ['lo']);
});

test.serial('vsw run on an unknown network fails with one sentence and leaves no compartment', async (t) => {
  const name = `${prefix}-r9`;
  const r = await d.vsw(['run', '--network', `${prefix}-nonet`, '--name', name, '--', 'true'], { timeoutMs: 30_000 });
  assertOneSentence(t, r, 'run on an unknown network');
  t.regex(r.stderr, new RegExp(`${prefix}-nonet`));
  t.false((await namespacesWithPrefix(prefix)).includes(name), `namespace ${name} was left behind`);
});

test.serial('the daemon refuses to start without root privileges, with one sentence', async (t) => {
  const socket = `/tmp/${prefix}/u.sock`;
  const r = await sh('setpriv', [...NOBODY, 'node', CLI, 'daemon', '--socket', socket], { timeoutMs: 30_000 });
  assertOneSentence(t, r, 'unprivileged daemon');
  t.regex(r.stderr, /root|sudo/);
  t.false(existsSync(socket), 'no socket was created');
});

test.serial('the CLI of an unprivileged user is refused by the root daemon socket, with one sentence', async (t) => {
  const r = await sh('setpriv', [...NOBODY, 'node', CLI, '--socket', d.socket, 'network', 'ls'], { timeoutMs: 30_000 });
  assertOneSentence(t, r, 'unprivileged CLI');
  t.regex(r.stderr, /permission/i);
  t.regex(r.stderr, /root|sudo/);
  t.is(r.stdout, '', 'nothing was listed');
});

test.serial('malformed frames from a namespace are counted as drops, and forwarding goes on', async (t) => {
  t.true(await ping(e[0].netns, e[1].ip, 1));
  const before = (await portStats(d)).get(e[0].id)!;
  const good = buildIcmp4Echo({ srcMac: e[0].mac, dstMac: e[1].mac, srcIp: e[0].ip, dstIp: e[1].ip });
  const hugeTotalLength = Buffer.from(good);
  hugeTotalLength.writeUInt16BE(0xffff, 16);
  const ihl3 = Buffer.from(good);
  ihl3[14] = 0x43;
  const ipv4NoHeader = good.subarray(0, 14);
  const truncatedArp = buildArpRequest({ srcMac: e[0].mac }).subarray(0, 14 + 10);
  const multicastSrc = Buffer.from(good);
  multicastSrc[6] = 0x01;
  const cutVlan = Buffer.concat([good.subarray(0, 12), Buffer.from([0x81, 0x00, 0x00])]);
  const frames = [hugeTotalLength, ihl3, ipv4NoHeader, truncatedArp, multicastSrc, cutVlan].map((f) => f.toString('hex'));
  const sent = await injectFrames(e[0].netns, e[0].ifname, frames);
  t.deepEqual(sent, { sent: frames.length, refused: 0 });
  await sleep(300);
  const after = (await portStats(d)).get(e[0].id)!;
  const delta = (reason: string) => (after.drops[reason] ?? 0) - (before.drops[reason] ?? 0);
  t.is(delta('badIpv4'), 3, 'huge total length, IHL 3, and an IPv4 EtherType with no header');
  t.is(delta('badArp'), 1);
  t.is(delta('badSrcMac'), 1);
  t.is(delta('badVlan'), 1);
  t.is(after.dropsTotal - before.dropsTotal, frames.length);
  const stats = await d.vsw(['stats']);
  t.is(stats.code, 0, stats.stderr);
  t.regex(stats.stdout, /badIpv4=\d+/, 'the table shows drop reasons');
  t.true(await ping(e[0].netns, e[1].ip), 'the switch still forwards from the port that sent them');
});

test.serial('after all the refusals the daemon still works', async (t) => {
  t.true(await ping(nsE[0], e[1].ip), 'e1 -> e2');
  t.true(await ping(nsE[1], e[0].ip), 'e2 -> e1');
  const ls = await d.vsw(['network', 'ls']);
  t.is(ls.code, 0, ls.stderr);
  t.regex(ls.stdout, new RegExp(`${netE}\\s+internal\\s+10\\.65\\.0\\.0/24`));
  t.false(d.exited(), 'the daemon is running');
  t.false(/"level":(50|60)/.test(d.log()), 'the daemon logged no error or fatal line');
});
