/**
 * A transparent network on a physical uplink: containers appear on the LAN
 * with their own MACs. The LAN is a namespace of the test's own holding a
 * bridge, with an outside host on it and the host end of a veth as vsw's
 * uplink; tcpdump on the LAN side sees what goes over the wire.
 */
import test from 'ava';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertOneSentence, capture, NFT, createEndpoint, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { addNetns, inNetns, ping, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import type { StatsResponse } from '../../src/service/api-types.js';

const prefix = runPrefix();
const lan = `${prefix}-lan`;
const outside = `${prefix}-out`;
const nsC = [`${prefix}-c1`, `${prefix}-c2`];
const uplink = `${prefix}-up`;
const net = `${prefix}-t`;
const SUBNET = '192.168.215.0/24';
const OUTSIDE_IP = '192.168.215.2';
const UPLINK_MTU = 1400;
let d: DaemonHandle;
const ep: EndpointJson[] = [];

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

async function promiscuity(ifname: string): Promise<number> {
  const r = await sh('ip', ['-d', 'link', 'show', ifname]);
  return Number(/promiscuity (\d+)/.exec(r.stdout)?.[1] ?? NaN);
}

test.before(async () => {
  await addNetns(lan);
  await addNetns(outside);
  await buildLan(lan, { netns: outside, ip: OUTSIDE_IP });
  // An uplink below 1500 (a cloud VM's, PPPoE): the endpoints must follow it.
  await plugIntoLan(lan, 'tovsw', { name: uplink, mtu: UPLINK_MTU });
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', net, '-d', 'transparent', '--uplink', uplink, '--subnet', SUBNET, '--ip-range', '192.168.215.128/25']);
  for (const ns of nsC) {
    await addNetns(ns);
    ep.push(await createEndpoint(d, net, ns));
  }
});

test.after.always(async () => {
  await teardown(prefix, d);
});

test.serial('containers get addresses from --ip-range and appear on the LAN with their own MACs, both ways, ping and TCP', async (t) => {
  t.true(ep.every((e) => e.ip.startsWith('192.168.215.') && Number(e.ip.split('.')[3]) >= 128), `addresses from the range: ${ep.map((e) => e.ip).join(', ')}`);
  for (const [i, ns] of nsC.entries()) {
    const link = await inNetns(ns, 'ip', ['-j', 'link', 'show', ep[i].ifname]);
    t.is((JSON.parse(link.stdout) as { mtu: number }[])[0]?.mtu, UPLINK_MTU, `${ns}'s interface has the uplink's MTU`);
  }
  const pcap = path.join(d.dir, 'lan.pcap');
  const cap = await capture(lan, 'tovsw', ['icmp'], pcap);
  t.true(await ping(outside, ep[0].ip, 3), 'the LAN host pings container 1');
  t.true(await ping(nsC[1], OUTSIDE_IP, 3), 'container 2 pings the LAN host');
  const lines = await cap.stop();
  t.true(lines.length > 0, 'the LAN saw the pings');
  const macs = await inNetns(lan, 'tcpdump', ['-r', pcap, '-n', '-e']);
  for (const e of ep) t.true(macs.stdout.toLowerCase().includes(e.mac.toLowerCase()), `the LAN saw ${e.name}'s own MAC ${e.mac}:\n${macs.stdout}`);

  const server = spawnInNetns(nsC[0], 'iperf3', ['-s', '-1', '-p', '5201']);
  try {
    await sleep(300);
    const client = await inNetns(outside, 'iperf3', ['-c', ep[0].ip, '-p', '5201', '-t', '1', '-J']);
    t.is(client.code, 0, `iperf3 from the LAN host to container 1: ${client.stderr}`);
    const bps = (JSON.parse(client.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
    t.true(bps > 0, 'TCP data arrived');
  } finally {
    server.kill('SIGKILL');
  }
  t.true(await ping(nsC[0], ep[1].ip, 2), 'the two containers reach each other');
  t.is(await promiscuity(uplink), 1, 'the uplink is promiscuous while the network rides on it');
  const guard = await sh(NFT, ['list', 'table', 'netdev', `vsw_guard_${uplink.replace(/[^A-Za-z0-9_]/g, '_')}`]);
  for (const e of ep) t.true(guard.stdout.includes(e.ip), `the host's stack is kept off ${e.ip} on the uplink:\n${guard.stdout}`);
  const stats = await d.vswJson<StatsResponse>(['stats', '--json']);
  const up = stats.uplinks.find((u) => u.interface === uplink);
  t.truthy(up, `vsw stats lists the uplink: ${JSON.stringify(stats.uplinks)}`);
  t.true((up?.rxFrames ?? 0) > 0 && (up?.txFrames ?? 0) > 0, `the uplink counted frames both ways: ${JSON.stringify(up)}`);
});

test.serial('an uplink that cannot segment (TSO and GSO off) still carries TCP from the containers: the kernel segments what the socket hands it', async (t) => {
  const offloads = ['tso', 'gso'];
  const set = async (on: boolean): Promise<void> => {
    const r = await sh('ethtool', ['-K', uplink, ...offloads.flatMap((o) => [o, on ? 'on' : 'off'])]);
    if (r.code !== 0) throw new Error(`ethtool -K ${uplink}: ${r.stderr}`);
  };
  await set(false);
  try {
    const features = await sh('ethtool', ['-k', uplink]);
    t.regex(features.stdout, /tcp-segmentation-offload: off/, 'the precondition: the uplink cannot take TSO frames');
    const server = spawnInNetns(outside, 'iperf3', ['-s', '-1', '-p', '5202']);
    try {
      await sleep(300);
      const client = await inNetns(nsC[0], 'iperf3', ['-c', OUTSIDE_IP, '-p', '5202', '-t', '1', '-J']);
      t.is(client.code, 0, `iperf3 from container 1 to the LAN host: ${client.stderr}`);
      const end = (JSON.parse(client.stdout) as { end: { sum_received: { bytes: number } } }).end;
      t.true(end.sum_received.bytes > 1_000_000, `TCP data arrived: ${end.sum_received.bytes} bytes`);
    } finally {
      server.kill('SIGKILL');
    }
  } finally {
    await set(true);
  }
});

test.serial('bad uplinks are refused with one sentence and nothing is made', async (t) => {
  const cases: [string, string[], RegExp][] = [
    ['no uplink', ['-d', 'transparent', '--subnet', '192.168.216.0/24'], /pass --uplink IFNAME/],
    ['missing interface', ['-d', 'transparent', '--uplink', `${prefix}-no`, '--subnet', '192.168.216.0/24'], /does not exist on this host/],
    ['uplink already carrying a network', ['-d', 'transparent', '--uplink', uplink, '--subnet', '192.168.217.0/24'], /already carries network/],
    ['uplink on another driver', ['-d', 'internal', '--uplink', uplink, '--subnet', '192.168.218.0/24'], /--uplink and --vlan belong to transparent, l2bridge and l2tunnel networks/],
    ['not an Ethernet interface', ['-d', 'transparent', '--uplink', 'lo', '--subnet', '192.168.220.0/24'], /is not an Ethernet interface/],
  ];
  await ip(['link', 'add', `${prefix}-dn`, 'type', 'veth', 'peer', 'name', `${prefix}-dp`]); // created down
  cases.push(['interface down', ['-d', 'transparent', '--uplink', `${prefix}-dn`, '--subnet', '192.168.219.0/24'], /is down: bring it up/]);
  for (const [what, args, message] of cases) {
    const r = await d.vsw(['network', 'create', `${prefix}-bad`, ...args]);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, message, what);
  }
  const nets = await d.vswJson<{ name: string }[]>(['network', 'ls', '--json']);
  t.false(nets.some((n) => n.name === `${prefix}-bad`), 'no network was made');
});

test.serial('an uplink whose interface goes down is shown down, and comes back by itself when the interface is up again', async (t) => {
  const uplinkState = async (): Promise<string | undefined | null> => {
    const stats = await d.vswJson<StatsResponse>(['stats', '--json']);
    const up = stats.uplinks.find((u) => u.interface === uplink);
    return up === undefined ? null : up.down;
  };
  const until = async (what: string, ok: (down: string | undefined | null) => boolean): Promise<void> => {
    const deadline = Date.now() + 15_000;
    while (!ok(await uplinkState())) {
      if (Date.now() > deadline) throw new Error(`${what}: the uplink is ${JSON.stringify(await uplinkState())}`);
      await sleep(200);
    }
  };
  await ip(['link', 'set', uplink, 'down']);
  await until('taken down', (down) => typeof down === 'string');
  t.regex((await uplinkState()) ?? '', /down|ENETDOWN/i, 'the reason says why');
  await ip(['link', 'set', uplink, 'up']);
  await until('back', (down) => down === undefined);
  t.true(await ping(outside, ep[0].ip, 5), 'the LAN reaches the container again');
});

test.serial('the network survives a daemon restart with its uplink, and removing it lets go of the interface', async (t) => {
  t.is(await d.stop('SIGTERM'), 0, 'a clean stop');
  d = await restartDaemon(d);
  t.true(await ping(outside, ep[1].ip, 3), 'the LAN host reaches container 2 after the restart');
  for (const e of ep) await d.vswOk(['endpoint', 'rm', e.id]);
  await d.vswOk(['network', 'rm', net]);
  t.is(await promiscuity(uplink), 0, 'the uplink is no longer promiscuous');
  t.is((await sh('ip', ['link', 'show', uplink])).code, 0, 'and it is still there: it was never vsw\'s');
});
