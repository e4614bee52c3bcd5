/**
 * A transparent network with --ipam dhcp: every endpoint's address is a lease
 * from the LAN's DHCP server (Debian's dnsmasq on the LAN bridge, in a
 * namespace of the test's own), obtained by vsw with the endpoint's MAC and
 * client id, renewed at T1, released when the endpoint goes, asked for again
 * after a restart. The daemon runs in a host namespace whose uplink is a veth
 * into the LAN; dnsmasq's lease file is the judge.
 */
import test from 'ava';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { assertOneSentence, capture, createEndpoint, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { Dnsmasq } from './helpers/dnsmasq.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { addNetns, inNetns, ping, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const host = `${prefix}-h`;
const lan = `${prefix}-lan`;
const outside = `${prefix}-out`;
const quiet = `${prefix}-q`;
const net = 'dhcp';
const SERVER_IP = '192.168.233.1';
const OUTSIDE_IP = '192.168.233.2';
const T1_SECONDS = 5;
let d: DaemonHandle;
let dnsmasq: Dnsmasq;
const ep: EndpointJson[] = [];

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

const inRange = (address: string): boolean => /^192\.168\.233\.(5\d|6\d|7\d|8\d|9\d)$/.test(address);

test.before(async () => {
  for (const ns of [host, lan, outside, quiet]) await addNetns(ns);
  await buildLan(lan, { netns: outside, ip: OUTSIDE_IP });
  await ip(['-n', lan, 'addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0']);
  await plugIntoLan(lan, 'tovsw', { name: 'eth1', netns: host });
  // A second uplink into a LAN with no DHCP server at all.
  await ip(['-n', host, 'link', 'add', 'eth2', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', quiet]);
  await ip(['-n', host, 'link', 'set', 'eth2', 'up']);
  await ip(['-n', quiet, 'link', 'set', 'eth0', 'up']);
  d = await startDaemon(prefix, { netns: host });
  const dir = path.join(d.dir, 'dnsmasq');
  await mkdir(dir, { recursive: true });
  dnsmasq = await Dnsmasq.start({ netns: lan, ifname: 'br0', range: '192.168.233.50,192.168.233.99,255.255.255.0', leaseSeconds: 120, t1Seconds: T1_SECONDS, t2Seconds: 100, dir });
  await d.vswOk(['network', 'create', net, '-d', 'transparent', '--ipam', 'dhcp', '--uplink', 'eth1', '--subnet', '192.168.233.0/24']);
  for (const name of ['web', 'db']) {
    const ns = `${prefix}-${name}`;
    await addNetns(ns);
    ep.push(await createEndpoint(d, net, ns, ['--name', name]));
  }
});

test.after.always(async () => {
  dnsmasq?.stop();
  await teardown(prefix, d);
});

test.serial("endpoints get their addresses from the LAN's DHCP server, by their MAC and client id, with its router", async (t) => {
  for (const e of ep) {
    t.true(inRange(e.ip), `${e.name} has an address from dnsmasq's range: ${e.ip}`);
    t.is(e.dhcp?.server, SERVER_IP, 'the lease names the server');
    t.is(e.dhcp?.router, SERVER_IP, "and dnsmasq's router (itself by default)");
    const line = await dnsmasq.waitFor(`${e.name}'s lease in the lease file`, () => dnsmasq.leaseFor(e.mac), 5_000);
    t.is(line.ip, e.ip, 'dnsmasq leased that address to that MAC');
    t.is(line.clientId, `01:${e.mac}`, 'with the client id vsw sent (type 1 and the MAC)');
    t.is(line.hostname, e.name, 'and the endpoint name as host name');
    const addr = await inNetns(e.netns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', e.ifname]);
    t.regex(addr.stdout, new RegExp(`inet ${e.ip.replace(/\./g, '\\.')}/24`), 'the container has it');
    const route = await inNetns(e.netns, 'ip', ['-4', 'route', 'show', 'default']);
    t.regex(route.stdout, new RegExp(`default via ${SERVER_IP.replace(/\./g, '\\.')}`));
  }
  t.true(await ping(ep[0].netns, OUTSIDE_IP, 2), 'the container reaches the LAN');
  t.true(await ping(outside, ep[1].ip, 2), 'and the LAN reaches it');
});

test.serial('leases are renewed at T1 by vsw, and the containers never see the DHCP traffic', async (t) => {
  const before = (await dnsmasq.leaseFor(ep[0].mac))!.expiry;
  const pcap = path.join(d.dir, 'container-dhcp.pcap');
  const cap = await capture(ep[0].netns, ep[0].ifname, ['udp', 'port', '67', 'or', 'udp', 'port', '68'], pcap);
  const renewed = await dnsmasq.waitFor('a renewal moving the expiry', async () => {
    const line = await dnsmasq.leaseFor(ep[0].mac);
    return line !== null && line.expiry > before ? line : null;
  }, (T1_SECONDS + 10) * 1000);
  t.is(renewed.ip, ep[0].ip, 'the same address, extended');
  const seen = await cap.stop();
  t.deepEqual(seen.filter((l) => /\.67 > \S+\.68:/.test(l)), [], `no DHCP server reply reached the container:\n${seen.join('\n')}`);
  const inspect = await d.vswJson<{ stages: { name: string; counters: Record<string, number> }[] }>(['network', 'inspect', net]);
  t.true((inspect.stages.find((s) => s.name === 'dhcp')?.counters.repliesHanded ?? 0) >= 3, `the dhcp stage took the server's replies: ${JSON.stringify(inspect.stages)}`);
});

test.serial('after a restart, the endpoints ask for and keep their addresses; removal releases the lease', async (t) => {
  t.is(await d.stop('SIGTERM'), 0);
  d = await restartDaemon(d);
  const before = (await dnsmasq.leaseFor(ep[1].mac))!.expiry;
  const back = await dnsmasq.waitFor('the restarted daemon renewing the lease', async () => {
    const line = await dnsmasq.leaseFor(ep[1].mac);
    return line !== null && line.expiry > before ? line : null;
  }, (T1_SECONDS + 10) * 1000);
  t.is(back.ip, ep[1].ip, 'the same address');
  const again = await d.vswJson<EndpointJson>(['endpoint', 'inspect', ep[1].id]);
  t.is(again.ip, ep[1].ip);
  t.true(await ping(outside, ep[1].ip, 3));
  await d.vswOk(['endpoint', 'rm', ep[0].id]);
  await dnsmasq.waitFor('the released lease gone from the lease file', async () => (await dnsmasq.leaseFor(ep[0].mac)) === null, 5_000);
  t.pass();
});

test.serial('a LAN with no DHCP server: the endpoint create fails within the stated 15 s with one sentence, and nothing is left', async (t) => {
  await d.vswOk(['network', 'create', 'silent', '-d', 'transparent', '--ipam', 'dhcp', '--uplink', 'eth2', '--subnet', '192.168.234.0/24']);
  const ns = `${prefix}-nolease`;
  await addNetns(ns);
  const started = Date.now();
  const r = await d.vsw(['endpoint', 'create', '--network', 'silent', '--netns', ns]);
  const took = Date.now() - started;
  assertOneSentence(t, r, 'no DHCP server');
  t.regex(r.stderr, /no DHCP server answered on the LAN within 15 s/);
  t.true(took < 20_000, `it gave up in time: ${took} ms`);
  const eps = await d.vswJson<{ network: string }[]>(['endpoint', 'ls', '--json']);
  t.false(eps.some((e) => e.network === 'silent'), 'no endpoint was made');
  const links = await inNetns(ns, 'ip', ['-o', 'link', 'show']);
  t.deepEqual(links.stdout.trim().split('\n').filter((l) => !l.includes(': lo:')), [], 'and no interface is left in the namespace');
  await d.vswOk(['network', 'rm', 'silent']);
});

test.serial('bad DHCP requests are refused with one sentence', async (t) => {
  await ip(['-n', host, 'addr', 'add', '192.168.235.3/24', 'dev', 'eth2']);
  const cases: [string, string[], RegExp][] = [
    ['dhcp on l2bridge', ['network', 'create', 'x1', '-d', 'l2bridge', '--ipam', 'dhcp', '--uplink', 'eth2', '--subnet', '192.168.235.0/24'], /--ipam dhcp belongs to transparent networks/],
    ['dhcp on internal', ['network', 'create', 'x2', '--ipam', 'dhcp', '--subnet', '10.235.0.0/24'], /--ipam dhcp belongs to transparent networks/],
    ['dhcp with a range', ['network', 'create', 'x3', '-d', 'transparent', '--ipam', 'dhcp', '--uplink', 'eth2', '--subnet', '192.168.236.0/24', '--ip-range', '192.168.236.128/25'], /--ip-range does not go with --ipam dhcp/],
    ['an unknown ipam', ['network', 'create', 'x4', '-d', 'transparent', '--ipam', 'bogus', '--uplink', 'eth2', '--subnet', '192.168.237.0/24'], /ipam/],
    ['--ip on a dhcp network', ['endpoint', 'create', '--network', net, '--netns', ep[1].netns, '--ip', '192.168.233.77'], /--ip does not go with network dhcp/],
  ];
  for (const [what, args, message] of cases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, message, what);
  }
});
