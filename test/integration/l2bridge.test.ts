/**
 * An l2bridge network on a physical uplink: one MAC on the wire. The daemon
 * runs in a host namespace of the test's own, whose uplink is a veth into a
 * LAN namespace holding a bridge and an outside host; tcpdump on the LAN side
 * sees what goes over the wire, and the raw capture must never contain a
 * container's MAC. The host namespace has ip_forward on, so the guard that
 * keeps its stack off container addresses is tested where it matters.
 */
import test from 'ava';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertOneSentence, capture, NFT, createEndpoint, restartDaemon, startDaemon, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { buildLan, plugIntoLan } from './helpers/lan.js';
import { macsOnWire, type WireMacs } from './helpers/pcap-macs.js';
import { addNetns, inNetns, ping, runPrefix, sh, spawnInNetns } from './helpers/env.js';
import type { StatsResponse } from '../../src/service/api-types.js';

const prefix = runPrefix();
const host = `${prefix}-h`;
const lan = `${prefix}-lan`;
const outside = `${prefix}-out`;
const nsC = [`${prefix}-c1`, `${prefix}-c2`];
const UPLINK = 'eth1';
const net = `${prefix}-b`;
const SUBNET = '192.168.221.0/24';
const OUTSIDE_IP = '192.168.221.2';
const HOST_IP = '192.168.221.3';
const GUARD = `vsw_guard_${UPLINK}`;
let d: DaemonHandle;
let uplinkMac = '';
const ep: EndpointJson[] = [];

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

async function inHost(cmd: string, args: string[]): Promise<string> {
  const r = await inNetns(host, cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${host}: ${r.stderr}`);
  return r.stdout;
}

/** Captures on the LAN side of the uplink while `during` runs; the MACs on the wire and tcpdump's lines. */
async function onTheWire(name: string, during: () => Promise<void>): Promise<{ macs: WireMacs; lines: string[] }> {
  const pcap = path.join(d.dir, `${name}.pcap`);
  const cap = await capture(lan, 'tovsw', [], pcap);
  try {
    await during();
  } finally {
    await sleep(300);
  }
  const lines = await cap.stop();
  return { macs: await macsOnWire(pcap), lines };
}

test.before(async () => {
  for (const ns of [host, lan, outside]) await addNetns(ns);
  await buildLan(lan, { netns: outside, ip: OUTSIDE_IP });
  await plugIntoLan(lan, 'tovsw', { name: UPLINK, netns: host });
  await ip(['-n', host, 'link', 'set', 'lo', 'up']);
  await ip(['-n', host, 'addr', 'add', `${HOST_IP}/24`, 'dev', UPLINK]);
  // A host that routes (a docker host does): what the guard must keep from forwarding container traffic.
  await inHost('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  uplinkMac = (JSON.parse(await inHost('ip', ['-j', 'link', 'show', UPLINK])) as { address: string }[])[0].address;
  d = await startDaemon(prefix, { netns: host });
  await d.vswOk(['network', 'create', net, '-d', 'l2bridge', '--uplink', UPLINK, '--subnet', SUBNET, '--ip-range', '192.168.221.3-192.168.221.6']);
  for (const ns of nsC) {
    await addNetns(ns);
    ep.push(await createEndpoint(d, net, ns));
  }
});

test.after.always(async () => {
  await teardown(prefix, d);
});

test.serial("the LAN reaches containers and back (ping, TCP, UDP), and no container MAC is ever on the wire: only the uplink's", async (t) => {
  t.deepEqual(
    ep.map((e) => e.ip),
    ['192.168.221.4', '192.168.221.5'],
    "addresses from the range, past the host's own .3, which vsw never hands out",
  );
  for (const ns of nsC) await inNetns(ns, 'ip', ['neigh', 'flush', 'all']);
  const wire = await onTheWire('both-ways', async () => {
    t.true(await ping(outside, ep[0].ip, 3), 'the LAN host pings container 1');
    t.true(await ping(nsC[1], OUTSIDE_IP, 3), 'container 2 pings the LAN host');
    const server = spawnInNetns(nsC[0], 'iperf3', ['-s', '-1', '-p', '5201']);
    try {
      await sleep(300);
      const tcp = await inNetns(outside, 'iperf3', ['-c', ep[0].ip, '-p', '5201', '-t', '1', '-J']);
      t.is(tcp.code, 0, `iperf3 TCP from the LAN host to container 1: ${tcp.stderr}`);
      t.true((JSON.parse(tcp.stdout) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes > 0, 'TCP data arrived');
    } finally {
      server.kill('SIGKILL');
    }
    const udpServer = spawnInNetns(nsC[1], 'iperf3', ['-s', '-1', '-p', '5202']);
    try {
      await sleep(300);
      const udp = await inNetns(outside, 'iperf3', ['-c', ep[1].ip, '-p', '5202', '-u', '-b', '10M', '-t', '1', '-J']);
      t.is(udp.code, 0, `iperf3 UDP from the LAN host to container 2: ${udp.stderr}`);
      const sum = (JSON.parse(udp.stdout) as { end: { sum: { packets: number; lost_packets: number } } }).end.sum;
      t.true(sum.packets > 0 && sum.lost_packets < sum.packets, `UDP datagrams arrived: ${JSON.stringify(sum)}`);
    } finally {
      udpServer.kill('SIGKILL');
    }
  });
  t.true(wire.lines.length > 0, 'the LAN saw the traffic');
  for (const e of ep) t.false(wire.macs.all.has(e.mac), `${e.name}'s MAC ${e.mac} appears nowhere in the LAN capture, not in an Ethernet header nor in ARP`);
  t.true(wire.macs.all.has(uplinkMac), "the uplink's MAC carried the containers' traffic");
  t.false(wire.macs.ipv6Sources.has(uplinkMac), 'and no IPv6 (whose neighbour discovery names MACs) left through it');
  const arp = await inNetns(outside, 'ip', ['-j', 'neigh', 'show', ep[0].ip]);
  t.is((JSON.parse(arp.stdout) as { lladdr?: string }[])[0]?.lladdr, uplinkMac, "the LAN host has container 1's address at the uplink's MAC");

  const stats = await d.vswJson<StatsResponse>(['stats', '--json']);
  const up = stats.uplinks.find((u) => u.interface === UPLINK);
  t.true((up?.rxFrames ?? 0) > 0 && (up?.txFrames ?? 0) > 0, `the uplink counted frames both ways: ${JSON.stringify(up)}`);
  const inspect = await d.vswJson<{ stages: { name: string; counters: Record<string, number> }[] }>(['network', 'inspect', net]);
  const stage = inspect.stages.find((s) => s.name === 'l2bridge');
  t.like(stage?.counters, { containers: 2 }, `vsw network inspect shows the stage: ${JSON.stringify(inspect.stages)}`);
  t.true((stage?.counters.arpAnswered ?? 0) > 0 && (stage?.counters.deliveredByIp ?? 0) > 0, 'it answered ARP for the containers and delivered by address');
  const hostOwn = await inNetns(host, 'ping', ['-c', '2', '-W', '1', OUTSIDE_IP]);
  t.is(hostOwn.code, 0, "the host's own traffic on the uplink keeps working beside the network");
  const promisc = await inHost('ip', ['-d', 'link', 'show', UPLINK]);
  t.regex(promisc, /promiscuity 0/, 'an l2bridge uplink is not promiscuous: the LAN sends to its own MAC');
});

test.serial('containers of the host reach each other locally, not over the LAN', async (t) => {
  const wire = await onTheWire('local', async () => {
    t.true(await ping(nsC[0], ep[1].ip, 3), 'container 1 pings container 2');
  });
  t.false(
    wire.lines.some((l) => l.includes('ICMP') && l.includes(ep[1].ip)),
    `no ICMP between the containers crossed the LAN:\n${wire.lines.join('\n')}`,
  );
});

test.serial('with ip_forward on, the host neither forwards nor redirects traffic for container addresses; without the guard it would', async (t) => {
  t.is((await inHost('sysctl', ['-n', 'net.ipv4.ip_forward'])).trim(), '1', 'the host namespace routes');
  t.regex(await inHost(NFT, ['list', 'table', 'netdev', GUARD]), new RegExp(ep[0].ip.replace(/\./g, '\\.')), 'the guard holds the container addresses');
  // What the host's stack would do with a container's frame: a redirect to the sender, or an ARP of its own for the address.
  const hostLeak = (lines: string[]): string[] =>
    lines.filter((l) => /ICMP redirect/i.test(l) || (l.includes(`tell ${HOST_IP}`) && ep.some((e) => l.includes(`who-has ${e.ip} `))));
  const guarded = await onTheWire('guarded', async () => {
    t.true(await ping(outside, ep[0].ip, 3));
  });
  t.deepEqual(hostLeak(guarded.lines), [], 'the host stayed out of it');

  // The control: the same traffic with the guard's table gone shows what it prevents (so this test can fail).
  await inHost(NFT, ['delete', 'table', 'netdev', GUARD]);
  const unguarded = await onTheWire('unguarded', async () => {
    await ping(outside, ep[0].ip, 3);
  });
  t.true(hostLeak(unguarded.lines).length > 0, `without the guard the host forwards: ${unguarded.lines.join('\n')}`);

  // An endpoint change puts the table back in line.
  const extra = `${prefix}-c3`;
  await addNetns(extra);
  const third = await createEndpoint(d, net, extra);
  t.regex(await inHost(NFT, ['list', 'table', 'netdev', GUARD]), new RegExp(third.ip.replace(/\./g, '\\.')), 'the guard is back, with the new address');
  await d.vswOk(['endpoint', 'rm', third.id]);
  t.notRegex(await inHost(NFT, ['list', 'table', 'netdev', GUARD]), new RegExp(`${third.ip.replace(/\./g, '\\.')}\\b`), 'and lets go of a removed one');
});

test.serial('bad l2bridge networks are refused with one sentence and nothing is made', async (t) => {
  await ip(['-n', host, 'link', 'add', 'eth2', 'type', 'veth', 'peer', 'name', 'eth2p']);
  await ip(['-n', host, 'link', 'set', 'eth2', 'up']);
  const cases: [string, string[], RegExp][] = [
    ['no uplink', ['-d', 'l2bridge', '--subnet', '192.168.222.0/24'], /pass --uplink IFNAME/],
    ['an uplink without a host address in the subnet', ['-d', 'l2bridge', '--uplink', 'eth2', '--subnet', '192.168.222.0/24'], /has no IPv4 address in 192\.168\.222\.0\/24/],
    ['an uplink carrying another network', ['-d', 'transparent', '--uplink', UPLINK, '--subnet', '192.168.223.0/24'], /already carries network/],
    ['a missing uplink', ['-d', 'l2bridge', '--uplink', 'eth9', '--subnet', '192.168.224.0/24'], /does not exist on this host/],
  ];
  for (const [what, args, message] of cases) {
    const r = await d.vsw(['network', 'create', `${prefix}-bad`, ...args]);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, message, what);
  }
  const nets = await d.vswJson<{ name: string }[]>(['network', 'ls', '--json']);
  t.false(nets.some((n) => n.name === `${prefix}-bad`), 'no network was made');
  t.is((await inNetns(host, NFT, ['list', 'table', 'netdev', 'vsw_guard_eth2'])).code, 1, 'and no guard for the refused uplink');
});

test.serial('the network survives a daemon restart, and removing it takes its guard and lets go of the interface', async (t) => {
  t.is(await d.stop('SIGTERM'), 0, 'a clean stop');
  d = await restartDaemon(d);
  t.true(await ping(outside, ep[1].ip, 3), 'the LAN host reaches container 2 after the restart');
  t.regex(await inHost(NFT, ['list', 'table', 'netdev', GUARD]), new RegExp(ep[1].ip.replace(/\./g, '\\.')), 'the guard is back with the addresses');
  for (const e of ep) await d.vswOk(['endpoint', 'rm', e.id]);
  await d.vswOk(['network', 'rm', net]);
  t.is((await inNetns(host, NFT, ['list', 'table', 'netdev', GUARD])).code, 1, 'the guard table is gone');
  t.is((await inNetns(host, 'ip', ['link', 'show', UPLINK])).code, 0, "the uplink is still there: it was never vsw's");
});
