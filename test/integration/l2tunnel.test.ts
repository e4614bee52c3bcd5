/**
 * l2tunnel, Azure's model: a container host whose l2tunnel network sends
 * every container frame to a fabric host, even between two of its own
 * containers, and a fabric host (a second vsw daemon with an l2bridge network
 * and a fabric port) where each container address has its own policy and the
 * rest of the network is reached. All three are namespaces of the test's own:
 * container host -> fabric host -> LAN (a bridge with an outside host).
 */
import test from 'ava';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertOneSentence, capture, createEndpoint, NFT, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { addNetns, inNetns, ping, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import { macsOnWire } from './helpers/pcap-macs.js';

const prefix = runPrefix();
const chost = `${prefix}-ch`;
const fhost = `${prefix}-fh`;
const lan = `${prefix}-lan`;
const outside = `${prefix}-out`;
const SUBNET = '192.168.241.0/24';
const RANGE = '192.168.241.10-192.168.241.19';
const OUTSIDE_IP = '192.168.241.2';
let c: DaemonHandle;
let f: DaemonHandle;
let hostMac = '';
const ep: EndpointJson[] = [];

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

test.before(async () => {
  for (const ns of [chost, fhost, lan, outside]) await addNetns(ns);
  await buildLan(lan, { netns: outside, ip: OUTSIDE_IP });
  await plugIntoLan(lan, 'tofab', { name: 'eth1', netns: fhost });
  // The container host's uplink is a cable to the fabric host's fabric port.
  await ip(['-n', chost, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth2', 'netns', fhost]);
  await ip(['-n', chost, 'link', 'set', 'eth1', 'up']);
  await ip(['-n', fhost, 'link', 'set', 'eth2', 'up']);
  await ip(['-n', fhost, 'addr', 'add', '192.168.241.3/24', 'dev', 'eth1']);
  await ip(['-n', chost, 'addr', 'add', '192.168.241.4/24', 'dev', 'eth1']);
  hostMac = (JSON.parse((await sh('ip', ['-n', chost, '-j', 'link', 'show', 'eth1'])).stdout) as { address: string }[])[0].address;

  c = await startDaemon(prefix, { netns: chost, name: 'container-host' });
  f = await startDaemon(prefix, { netns: fhost, name: 'fabric-host' });
  await c.vswOk(['network', 'create', 'tun', '-d', 'l2tunnel', '--uplink', 'eth1', '--subnet', SUBNET, '--ip-range', RANGE]);
  await f.vswOk(['network', 'create', 'fab', '-d', 'l2bridge', '--uplink', 'eth1', '--fabric', 'eth2', '--subnet', SUBNET, '--ip-range', RANGE]);
  for (const name of ['c1', 'c2']) {
    const ns = `${prefix}-${name}`;
    await addNetns(ns);
    const e = await createEndpoint(c, 'tun', ns, ['--name', name]);
    ep.push(e);
    // The fabric host knows each container address, at its container host's MAC, with a policy of its own.
    await f.vswOk(['fabric', 'add', 'fab', '--ip', e.ip, '--mac', hostMac, '--name', name]);
  }
});

test.after.always(async () => {
  await teardown(prefix, c, f);
});

test.serial("the LAN reaches the containers through the fabric host and back (ping, TCP), and sees one MAC for them, the fabric host's", async (t) => {
  const pcap = path.join(f.dir, 'lan.pcap');
  const cap = await capture(lan, 'tofab', [], pcap);
  for (const e of ep) await inNetns(e.netns, 'ip', ['neigh', 'flush', 'all']);
  t.true(await ping(outside, ep[0].ip, 3), 'the outside host pings c1');
  t.true(await ping(ep[1].netns, OUTSIDE_IP, 3), 'c2 pings the outside host');
  await sleep(300);
  await cap.stop();
  const macs = (await macsOnWire(pcap)).all;
  for (const e of ep) t.false(macs.has(e.mac), `${e.name}'s MAC never reached the LAN`);
  t.false(macs.has(hostMac), "nor the container host's: the fabric host is the one station the LAN sees");
  const fabricMac = (JSON.parse((await sh('ip', ['-n', fhost, '-j', 'link', 'show', 'eth1'])).stdout) as { address: string }[])[0].address;
  t.true(macs.has(fabricMac), "the fabric host's uplink MAC carried the containers' traffic");
  const server = spawnInNetns(ep[0].netns, 'iperf3', ['-s', '-1', '-p', '5201']);
  try {
    await sleep(300);
    const tcp = await inNetns(outside, 'iperf3', ['-c', ep[0].ip, '-p', '5201', '-t', '1', '-J']);
    t.is(tcp.code, 0, `TCP from the outside host to c1: ${tcp.stderr}`);
  } finally {
    server.kill('SIGKILL');
  }
});

test.serial("two containers of one container host talk through the fabric host: their frames are on the container host's uplink, with its MAC only", async (t) => {
  const pcap = path.join(c.dir, 'uplink.pcap');
  const cap = await capture(chost, 'eth1', [], pcap);
  t.true(await ping(ep[0].netns, ep[1].ip, 3), 'c1 pings c2');
  await sleep(300);
  const lines = await cap.stop();
  const echo = (from: string, to: string, what: string): boolean => lines.some((l) => l.includes(`${from} > ${to}: ICMP echo ${what}`));
  t.true(echo(ep[0].ip, ep[1].ip, 'request'), `the request c1 -> c2 crossed the uplink:\n${lines.join('\n')}`);
  t.true(echo(ep[1].ip, ep[0].ip, 'reply'), 'and the reply c2 -> c1');
  const onUplink = (await macsOnWire(pcap)).all;
  for (const e of ep) t.false(onUplink.has(e.mac), `${e.name}'s own MAC never crossed it`);
  const cstage = (await c.vswJson<{ stages: { name: string; counters: Record<string, number> }[] }>(['network', 'inspect', 'tun'])).stages.find((s) => s.name === 'l2bridge')!.counters;
  t.true(cstage.tunneled > 0, `the container host tunneled its containers' frames: ${JSON.stringify(cstage)}`);
  const fstage = (await f.vswJson<{ stages: { name: string; counters: Record<string, number> }[] }>(['network', 'inspect', 'fab'])).stages.find((s) => s.name === 'l2bridge')!.counters;
  t.true(fstage.hairpinned > 0, `the fabric host hairpinned them: ${JSON.stringify(fstage)}`);
});

test.serial("policy runs on the fabric host, per address: c2's own rule stops c1, and nothing else", async (t) => {
  await f.vswOk(['policy', 'acl', 'add', 'c2', '--action', 'block', '--priority', '10', '--direction', 'in', '--src-prefix', `${ep[0].ip}/32`]);
  t.false(await ping(ep[0].netns, ep[1].ip, 2), 'c1 no longer reaches c2, though they share a host');
  t.true(await ping(ep[0].netns, OUTSIDE_IP, 2), 'c1 still reaches the LAN');
  t.true(await ping(outside, ep[1].ip, 2), 'and the LAN still reaches c2');
  const stats = await f.vswJson<{ ports: { name: string; drops: Record<string, number> }[] }>(['stats', '--json']);
  const c2 = stats.ports.find((p) => p.name === 'c2');
  t.true((c2?.drops.policyBlock ?? 0) > 0, `the drops are c2's, on the fabric host: ${JSON.stringify(stats.ports)}`);
  const none = await c.vswJson<{ ports: { name: string; drops: Record<string, number> }[] }>(['stats', '--json']);
  t.is(none.ports.find((p) => p.name === 'c2')?.drops.policyBlock ?? 0, 0, 'the container host blocked nothing');
});

test.serial("the fabric host's own stack is kept off the container addresses on its fabric port too; a QoS cap is refused for a fabric endpoint", async (t) => {
  const guard = await inNetns(fhost, NFT, ['list', 'table', 'netdev', 'vsw_guard_eth2']);
  t.is(guard.code, 0, `the fabric port has a guard table: ${guard.stderr}`);
  for (const e of ep) t.true(guard.stdout.includes(e.ip), `it holds ${e.ip}`);
  const qos = await f.vsw(['policy', 'qos', 'set', 'c1', '--max-egress', '10mbit']);
  assertOneSentence(t, qos, 'QoS on a fabric endpoint');
  t.regex(qos.stderr, /fabric endpoint, with no device of its own to pause: cap it with a meter rule instead/);
});

test.serial('when the fabric port goes down its endpoints are down, and they come back with it', async (t) => {
  const states = async (): Promise<string[]> => (await f.vswJson<{ name: string; state: string }[]>(['endpoint', 'ls', '--json'])).map((e) => `${e.name}=${e.state}`).sort();
  const until = async (want: string[]): Promise<void> => {
    const deadline = Date.now() + 15_000;
    while (JSON.stringify(await states()) !== JSON.stringify(want)) {
      if (Date.now() > deadline) throw new Error(`endpoints: ${JSON.stringify(await states())}, wanted ${JSON.stringify(want)}`);
      await sleep(200);
    }
  };
  await ip(['-n', fhost, 'link', 'set', 'eth2', 'down']);
  await until(['c1=down', 'c2=down']);
  const refused = await f.vsw(['fabric', 'add', 'fab', '--ip', '192.168.241.15', '--mac', hostMac]);
  assertOneSentence(t, refused, 'fabric add while the port is down');
  t.regex(refused.stderr, /the fabric port eth2 of network fab is down/);
  await ip(['-n', fhost, 'link', 'set', 'eth2', 'up']);
  await until(['c1=up', 'c2=up']);
  t.true(await ping(outside, ep[0].ip, 5), 'the LAN reaches c1 again');
  const stats = await f.vswJson<{ uplinks: { interface: string; fabric?: boolean; rxFrames: number }[] }>(['stats', '--json']);
  t.truthy(stats.uplinks.find((u) => u.interface === 'eth2' && u.fabric === true), `vsw stats lists the fabric port: ${JSON.stringify(stats.uplinks)}`);
});

test.serial('the fabric host restarts with its fabric port and addresses; bad fabric requests are refused with one sentence; a removed address is no longer served', async (t) => {
  t.is(await f.stop('SIGTERM'), 0);
  f = await restartDaemon(f);
  t.true(await ping(outside, ep[0].ip, 5), 'the LAN reaches c1 again through the restarted fabric host');
  t.false(await ping(ep[0].netns, ep[1].ip, 2), "c2's policy came back with it");
  t.is(await c.stop('SIGTERM'), 0);
  c = await restartDaemon(c);
  t.true(await ping(ep[0].netns, OUTSIDE_IP, 5), 'after the container host restarts, c1 reaches the LAN');
  t.false(await ping(ep[0].netns, ep[1].ip, 2), 'and c1 -> c2 still goes through the fabric host, whose policy stops it (not switched on the container host)');
  const cases: [string, DaemonHandle, string[], RegExp][] = [
    ['fabric add on a network without a fabric port', c, ['fabric', 'add', 'tun', '--ip', '192.168.241.12', '--mac', hostMac], /network tun has no fabric port/],
    ['--fabric on a transparent network', f, ['network', 'create', 'x1', '-d', 'transparent', '--uplink', 'eth2', '--fabric', 'eth1', '--subnet', '10.241.0.0/24'], /--fabric belongs to l2bridge networks/],
    ['a fabric address twice', f, ['fabric', 'add', 'fab', '--ip', ep[0].ip, '--mac', hostMac], /already used by endpoint/],
  ];
  for (const [what, d, args, message] of cases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, message, what);
  }
  await f.vswOk(['endpoint', 'rm', 'c2']);
  t.false(await ping(outside, ep[1].ip, 2), 'with its fabric endpoint gone, c2 is no longer reached from the LAN');
  t.true(await ping(outside, ep[0].ip, 2), 'c1 still is');
});
