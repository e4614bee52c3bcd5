/**
 * Several networks on one uplink, by VLAN (--vlan): two vsw hosts on one LAN
 * trunk, each in a namespace of the test's own with its uplink a veth into
 * the LAN bridge, carrying VLAN 100, VLAN 200 and an untagged network at
 * once. This kernel has no 802.1Q devices, bridge VLAN filtering or tc vlan
 * action, so the VLAN peers are vsw hosts; tcpdump on the LAN side decodes
 * the tags independently, and the untagged network talks to a plain kernel
 * host on the same wire.
 */
import test from 'ava';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertOneSentence, capture, createEndpoint, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { addNetns, inNetns, ping, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import type { StatsResponse } from '../../src/service/api-types.js';

const prefix = runPrefix();
const lan = `${prefix}-lan`;
const outside = `${prefix}-out`;
const hosts = [`${prefix}-ha`, `${prefix}-hb`];
const UPLINK = 'eth1';
const OUTSIDE_IP = '192.168.231.2';
const daemons: DaemonHandle[] = [];
/** Endpoints by host and network: ep[host][net]. */
const ep: Record<string, EndpointJson>[] = [{}, {}];

test.before(async () => {
  for (const ns of [lan, outside, ...hosts]) await addNetns(ns);
  await buildLan(lan, { netns: outside, ip: OUTSIDE_IP });
  for (const [i, h] of hosts.entries()) await plugIntoLan(lan, `to${i}`, { name: UPLINK, netns: h });
  for (const [i, h] of hosts.entries()) {
    const d = await startDaemon(prefix, { netns: h, name: `d${i}` });
    daemons.push(d);
    // The same subnet on both VLANs: only the tags keep them apart.
    const range = i === 0 ? '10.231.0.10-10.231.0.19' : '10.231.0.20-10.231.0.29';
    await d.vswOk(['network', 'create', 'v100', '-d', 'transparent', '--uplink', UPLINK, '--vlan', '100', '--subnet', '10.231.0.0/24', '--ip-range', range]);
    await d.vswOk(['network', 'create', 'v200', '-d', 'transparent', '--uplink', UPLINK, '--vlan', '200', '--subnet', '10.232.0.0/24', '--ip-range', range.replace(/231/g, '232')]);
    for (const n of ['v100', 'v200']) {
      const ns = `${prefix}-${'ab'[i]}${n}`;
      await addNetns(ns);
      ep[i][n] = await createEndpoint(d, n, ns);
    }
  }
  await daemons[0].vswOk(['network', 'create', 'flat', '-d', 'transparent', '--uplink', UPLINK, '--subnet', '192.168.231.0/24', '--ip-range', '192.168.231.128/25']);
  await addNetns(`${prefix}-aflat`);
  ep[0].flat = await createEndpoint(daemons[0], 'flat', `${prefix}-aflat`);
});

test.after.always(async () => {
  await teardown(prefix, ...daemons);
});

test.serial('containers on the same VLAN of two hosts reach each other, tagged on the wire; an untagged network shares the uplink with a kernel host', async (t) => {
  const pcap = path.join(daemons[0].dir, 'trunk.pcap');
  const cap = await capture(lan, 'to0', [], pcap);
  t.true(await ping(ep[0].v100.netns, ep[1].v100.ip, 3), 'host A VLAN 100 -> host B VLAN 100');
  t.true(await ping(ep[1].v200.netns, ep[0].v200.ip, 3), 'host B VLAN 200 -> host A VLAN 200');
  t.true(await ping(ep[0].flat.netns, OUTSIDE_IP, 3), 'the untagged network reaches the kernel host on the same uplink');
  const server = spawnInNetns(ep[1].v100.netns, 'iperf3', ['-s', '-1', '-p', '5201']);
  try {
    await sleep(300);
    const tcp = await inNetns(ep[0].v100.netns, 'iperf3', ['-c', ep[1].v100.ip, '-p', '5201', '-t', '1', '-J']);
    t.is(tcp.code, 0, `TCP over VLAN 100: ${tcp.stderr}`);
    t.true((JSON.parse(tcp.stdout) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes > 0);
  } finally {
    server.kill('SIGKILL');
  }
  await cap.stop();
  const lines = (await sh('tcpdump', ['-r', pcap, '-n', '-e'])).stdout.split('\n').filter(Boolean);
  const from = (mac: string): string[] => lines.filter((l) => l.toLowerCase().includes(`${mac.toLowerCase()} >`));
  for (const [net, vid] of [
    ['v100', 100],
    ['v200', 200],
  ] as const) {
    const own = from(ep[0][net].mac);
    t.true(own.length > 0, `host A's ${net} container was on the wire`);
    t.deepEqual(own.filter((l) => !l.includes(`vlan ${vid},`)), [], `every frame of its ${net} container carries VLAN ${vid}`);
  }
  const flat = from(ep[0].flat.mac);
  t.true(flat.length > 0 && flat.every((l) => !l.includes('vlan')), 'the untagged network\'s frames are untagged');
  const stats = await daemons[0].vswJson<StatsResponse>(['stats', '--json']);
  t.deepEqual(stats.uplinks.map((u) => u.vlan ?? 0).sort((a, b) => a - b), [0, 100, 200], 'vsw stats has a row per network on the uplink');
});

test.serial('one VLAN never sees another: a broadcast on VLAN 100 reaches VLAN 100 of the other host and not VLAN 200', async (t) => {
  const watch = async (e: EndpointJson) => capture(e.netns, e.ifname, ['arp'], path.join(daemons[1].dir, `${e.network}.pcap`));
  const on100 = await watch(ep[1].v100);
  const on200 = await watch(ep[1].v200);
  // ARP for an address nobody has: broadcast on VLAN 100, again and again.
  await inNetns(ep[0].v100.netns, 'ping', ['-c', '3', '-i', '0.3', '-W', '1', '10.231.0.99']);
  await sleep(300);
  const seen100 = await on100.stop();
  const seen200 = await on200.stop();
  t.true(seen100.some((l) => l.includes('who-has 10.231.0.99')), `host B's VLAN 100 container saw the broadcasts:\n${seen100.join('\n')}`);
  t.deepEqual(seen200, [], "host B's VLAN 200 container saw nothing of VLAN 100");
});

test.serial('bad VLANs are refused with one sentence and nothing is made', async (t) => {
  const d = daemons[0];
  const cases: [string, string[], RegExp][] = [
    ['VLAN 0', ['-d', 'transparent', '--uplink', UPLINK, '--vlan', '0', '--subnet', '10.240.0.0/24'], /VLAN 0 is out of range: pass --vlan with a whole number from 1 to 4094/],
    ['VLAN 4095', ['-d', 'l2bridge', '--uplink', UPLINK, '--vlan', '4095', '--subnet', '10.241.0.0/24'], /VLAN 4095 is out of range/],
    ['a VLAN the uplink carries already', ['-d', 'transparent', '--uplink', UPLINK, '--vlan', '100', '--subnet', '10.242.0.0/24'], /already carries network v100 on VLAN 100/],
    ['untagged twice', ['-d', 'l2bridge', '--uplink', UPLINK, '--subnet', '10.243.0.0/24'], /already carries network flat untagged/],
    ['a VLAN on an internal network', ['-d', 'internal', '--vlan', '300', '--subnet', '10.244.0.0/24'], /--uplink and --vlan belong to transparent, l2bridge and l2tunnel networks/],
  ];
  for (const [what, args, message] of cases) {
    const r = await d.vsw(['network', 'create', `${prefix}-bad`, ...args]);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, message, what);
  }
  const nets = await d.vswJson<{ name: string }[]>(['network', 'ls', '--json']);
  t.false(nets.some((n) => n.name === `${prefix}-bad`), 'no network was made');
});

test.serial('VLAN networks survive a restart of their daemon', async (t) => {
  t.is(await daemons[0].stop('SIGTERM'), 0);
  daemons[0] = await restartDaemon(daemons[0]);
  t.true(await ping(ep[1].v100.netns, ep[0].v100.ip, 5), 'VLAN 100 across the hosts again');
  const inspect = await daemons[0].vswJson<{ uplink: { vlan?: number } }>(['network', 'inspect', 'v200']);
  t.is(inspect.uplink.vlan, 200);
});
