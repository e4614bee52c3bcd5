/**
 * `scripts/lab up --lan`, driven as a user drives it: besides the overlay
 * lab, a physical LAN (a namespace with bridge br0, dnsmasq serving DHCP on
 * it, a router with an outside host one hop behind it) and, on each of the
 * two lab hosts, the uplink eth1 (a veth into the LAN bridge) carrying a vsw
 * transparent network with one container. The outside host and the
 * containers reach each other both ways (ping, TCP with iperf3); a throwaway
 * DHCP client on the LAN gets a lease from dnsmasq, which shows up in the
 * lease file; `scripts/lab down` leaves no namespace, link or process of the
 * lab behind, checked before any cleanup helper runs.
 *
 * Everything is named with this file's vswtXXXX prefix: namespaces
 * vswtXXXX-lan, -rt, -out, -h1, -h1-l1, ...; dnsmasq's files
 * /run/vsw-lab/vswtXXXX-dnsmasq.*; the throwaway client vswtXXXX-dhcp.
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assertOneSentence, processAlive } from './helpers/daemon.js';
import { addNetns, inNetns, linksWithPrefix, namespacesWithPrefix, ping, processesMentioning, removeEverything, runPrefix, sh, type CommandResult } from './helpers/env.js';

/** The checkout: this file runs from dist/test/integration/. */
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LAB = `${REPO}scripts/lab`;
const CLI = `${REPO}dist/src/cli/main.js`;
const prefix = runPrefix();
const STATE = `/run/vsw-lab/${prefix}.json`;
const OUTSIDE_IP = '198.51.100.2';
const ROUTER_LAN_IP = '192.168.57.1';

function lab(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return sh('bash', [LAB, ...args], { timeoutMs });
}

interface LabContainer {
  id: string;
  host: string;
  netns: string;
  ip: string;
  ifname: string;
  mac: string;
}
interface LabHost {
  name: string;
  netns: string;
  socket: string;
  pid: number;
}
interface LabLan {
  netns: string;
  bridge: string;
  subnet: string;
  dhcp: { serverIp: string; rangeStart: string; rangeEnd: string; leaseFile: string; pidFile: string; log: string; pid: number };
  router: { netns: string; lanIp: string };
  outside: { netns: string; ip: string };
  network: { name: string; driver: string; gateway: string };
  uplinks: { host: string; ifname: string; bridgePort: string; ipRange: string }[];
  containers: LabContainer[];
}
interface LabJson {
  hosts: LabHost[];
  lan: LabLan | null;
  complete: boolean;
}

let desc: LabJson | undefined;
let upOutput = '';

const lan = (): LabLan => desc!.lan!;
const ipNum = (ip: string): number => ip.split('.').reduce((n, b) => n * 256 + Number(b), 0);
const inRange = (ip: string, cidr: string): boolean => {
  const [base, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return ipNum(ip) >= ipNum(base) && ipNum(ip) < ipNum(base) + size;
};

function vsw(host: LabHost, args: string[]): Promise<CommandResult> {
  return sh('node', [CLI, '--socket', host.socket, ...args]);
}

test.before(async () => {
  const r = await lab(['up', '--lan', '--hosts', '2', '--containers', '1', '--prefix', prefix]);
  if (r.code !== 0) throw new Error(`scripts/lab up --lan exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  upOutput = r.stdout;
  desc = JSON.parse(readFileSync(STATE, 'utf8')) as LabJson;
});

test.after.always(async () => {
  // What the down test already removed is "nothing to remove"; a failing down here is a failure, not a shrug.
  const down = await lab(['down', '--prefix', prefix], 60_000);
  await removeEverything(prefix);
  if (down.code !== 0) throw new Error(`scripts/lab down --prefix ${prefix} exited ${down.code}: ${down.stderr.trim()}`);
});

test.serial('up --lan builds the LAN, a router with an outside host, and a transparent network with a container on every host\'s uplink', async (t) => {
  const d = desc!;
  t.true(d.complete);
  t.truthy(d.lan, 'the state file describes the LAN');
  const l = lan();
  const names = await namespacesWithPrefix(`${prefix}-`);
  for (const ns of [l.netns, l.router.netns, l.outside.netns, `${prefix}-h1-l1`, `${prefix}-h2-l1`]) t.true(names.includes(ns), `namespace ${ns} is missing`);
  t.deepEqual(l.containers.map((c) => c.id), ['h1-l1', 'h2-l1']);

  // Each host's uplink: eth1 in the host's namespace (where its daemon runs), its peer a port of the LAN bridge.
  const ports = JSON.parse((await sh('ip', ['-n', l.netns, '-j', 'link', 'show', 'master', l.bridge])).stdout) as { ifname: string }[];
  t.deepEqual(ports.map((p) => p.ifname).sort(), ['h1', 'h2', 'rt'], 'the LAN bridge has the two uplinks and the router');
  for (const h of d.hosts) {
    const up = l.uplinks.find((u) => u.host === h.name)!;
    t.is(up.ifname, 'eth1');
    const addrs = JSON.parse((await sh('ip', ['-n', h.netns, '-j', 'addr', 'show', 'dev', up.ifname])).stdout) as { operstate: string; addr_info: { family: string }[] }[];
    t.is(addrs[0]?.operstate, 'UP', `${h.name}'s uplink is up`);
    t.false(addrs[0].addr_info.some((a) => a.family === 'inet'), `${h.name}'s uplink has no IPv4 address: the host takes no part in the LAN`);
    const net = await vsw(h, ['network', 'inspect', l.network.name]);
    t.is(net.code, 0, net.stderr);
    const n = JSON.parse(net.stdout) as { driver: string; gateway: string; uplink?: { interface: string } };
    t.is(n.driver, 'transparent');
    t.is(n.gateway, ROUTER_LAN_IP);
    t.is(n.uplink?.interface, 'eth1');
    const c = l.containers.find((x) => x.host === h.name)!;
    t.true(inRange(c.ip, up.ipRange), `${c.id}'s ${c.ip} is in its host's range ${up.ipRange}`);
    t.false(ipNum(c.ip) >= ipNum(l.dhcp.rangeStart) && ipNum(c.ip) <= ipNum(l.dhcp.rangeEnd), `${c.id}'s ${c.ip} is outside dnsmasq's pool`);
    t.true(upOutput.includes(c.ip), `the summary shows ${c.id}'s address`);
  }
  t.not(l.containers[0].ip, l.containers[1].ip);
  for (const c of l.containers) {
    t.regex(upOutput, new RegExp(`check: ${c.id} -> out ping answered`), `up's own check from ${c.id}`);
    t.regex(upOutput, new RegExp(`check: out -> ${c.id} ping answered`), `up's own check to ${c.id}`);
  }
  t.regex(upOutput, /dnsmasq pid \d+/);
  const status = await lab(['status', '--prefix', prefix]);
  t.is(status.code, 0, status.stdout + status.stderr);
  t.regex(status.stdout, /dnsmasq runs \(pid \d+\)/);
});

test.serial('the outside host and the LAN containers ping each other, one routed hop apart', async (t) => {
  const l = lan();
  for (const c of l.containers) {
    t.true(await ping(c.netns, OUTSIDE_IP, 3), `${c.id} (${c.ip}) cannot ping the outside host ${OUTSIDE_IP}`);
    t.true(await ping(l.outside.netns, c.ip, 3), `the outside host cannot ping ${c.id} (${c.ip})`);
    const route = await inNetns(c.netns, 'ip', ['-4', 'route', 'show', 'default']);
    t.regex(route.stdout, new RegExp(`default via ${ROUTER_LAN_IP.replace(/\./g, '\\.')} `), `${c.id}'s default route is the LAN's router`);
    // The router decrements the TTL: the answer comes from one hop away, not from the LAN itself.
    const one = await inNetns(c.netns, 'ping', ['-c', '1', '-W', '2', OUTSIDE_IP]);
    t.regex(one.stdout, /ttl=63 /, `the outside host is one hop away from ${c.id}:\n${one.stdout}`);
  }
});

test.serial('TCP crosses both ways between the outside host and the containers (scripts/lab iperf)', async (t) => {
  for (const [from, to] of [['out', 'h1-l1'], ['h2-l1', 'out']]) {
    const r = await lab(['iperf', '--prefix', prefix, '--from', from, '--to', to, '--time', '1']);
    t.is(r.code, 0, `iperf ${from} -> ${to}: ${r.stderr}`);
    const m = /([\d.]+) (Gbit|Mbit)\/s received/.exec(r.stdout);
    t.truthy(m, `no rate for ${from} -> ${to} in: ${r.stdout}`);
    t.true(Number(m![1]) > 0, r.stdout);
  }
});

test.serial('dnsmasq runs in the LAN namespace and hands a DHCP client on the LAN a lease, which its lease file records', async (t) => {
  const l = lan();
  const pid = l.dhcp.pid;
  t.true(processAlive(pid), `dnsmasq ${pid} is not running`);
  t.is((await sh('ip', ['netns', 'identify', String(pid)])).stdout.trim(), l.netns, 'dnsmasq runs in the LAN namespace');
  t.true(readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(prefix), 'its command line carries the prefix');
  t.true(l.dhcp.leaseFile.startsWith('/run/vsw-lab/') && l.dhcp.leaseFile.includes(prefix), `the lease file ${l.dhcp.leaseFile} is the lab's`);

  const client = `${prefix}-dhcp`;
  await addNetns(client);
  try {
    const add = await sh('ip', ['-n', l.netns, 'link', 'add', 'dhcp', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', client]);
    t.is(add.code, 0, add.stderr);
    await sh('ip', ['-n', l.netns, 'link', 'set', 'dhcp', 'master', l.bridge, 'up']);
    await sh('ip', ['-n', client, 'link', 'set', 'eth0', 'up']);
    const mac = (JSON.parse((await sh('ip', ['-n', client, '-j', 'link', 'show', 'eth0'])).stdout) as { address: string }[])[0].address;
    // -s /bin/true: take the lease without configuring anything; dnsmasq pings an address before offering it, hence the retries.
    const r = await inNetns(client, 'busybox', ['udhcpc', '-i', 'eth0', '-n', '-q', '-t', '8', '-T', '1', '-s', '/bin/true', '-x', `hostname:${client}`], { timeoutMs: 30_000 });
    t.is(r.code, 0, `udhcpc got no lease:\n${r.stdout}${r.stderr}`);
    const m = /lease of ([\d.]+) obtained from ([\d.]+)/.exec(r.stdout + r.stderr);
    t.truthy(m, `udhcpc did not say which lease it got:\n${r.stdout}${r.stderr}`);
    const [leased, server] = [m![1], m![2]];
    t.is(server, l.dhcp.serverIp);
    t.true(ipNum(leased) >= ipNum(l.dhcp.rangeStart) && ipNum(leased) <= ipNum(l.dhcp.rangeEnd), `${leased} is in dnsmasq's pool`);
    t.false(l.containers.some((c) => c.ip === leased), 'the lease is no container\'s address');
    const leases = readFileSync(l.dhcp.leaseFile, 'utf8');
    const line = leases.split('\n').find((x) => x.includes(mac));
    t.truthy(line, `the lease file has no lease for ${mac}:\n${leases}`);
    t.regex(line!, new RegExp(` ${leased.replace(/\./g, '\\.')} ${client} `), `the lease line names the address and the client: ${line}`);
    const status = await lab(['status', '--prefix', prefix]);
    t.regex(status.stdout, /dnsmasq runs \(pid \d+\), 1 lease /, status.stdout);
  } finally {
    await sh('ip', ['netns', 'delete', client]);
  }
});

test.serial('up --lan refuses an overlay subnet that overlaps the LAN, and an unknown --lan-mode, with one sentence', async (t) => {
  const r = await lab(['up', '--lan', '--subnet', '192.168.57.0/24', '--prefix', `${prefix}x`]);
  assertOneSentence(t, r, 'up --lan with the LAN\'s subnet');
  t.regex(r.stderr, /overlaps the lab's LAN 192\.168\.57\.0\/24/);
  const mode = await lab(['up', '--lan-mode', 'macvlan', '--prefix', `${prefix}x`]);
  assertOneSentence(t, mode, 'up --lan-mode macvlan');
  t.regex(mode.stderr, /--lan-mode takes transparent, l2bridge or l2tunnel, not "macvlan"/);
  t.deepEqual(await namespacesWithPrefix(`${prefix}x`), [], 'nothing was built');
});

test.serial('down removes the LAN with the rest: no namespace, link, dnsmasq or file of the lab is left', async (t) => {
  const l = lan();
  const r = await lab(['down', '--prefix', prefix], 60_000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /dnsmasq/, 'down says it stopped dnsmasq');
  // Checked here, before the after hook's removeEverything could hide a leftover.
  t.deepEqual(await namespacesWithPrefix(prefix), [], 'namespaces left');
  t.deepEqual(await linksWithPrefix(prefix), [], 'links left in the root namespace');
  t.false(processAlive(l.dhcp.pid), `dnsmasq ${l.dhcp.pid} still runs`);
  t.deepEqual(processesMentioning(prefix), [], 'processes of the lab left');
  for (const f of [STATE, l.dhcp.leaseFile, l.dhcp.pidFile, l.dhcp.log]) t.false(existsSync(f), `${f} is still there`);
  for (const h of desc!.hosts) t.false(processAlive(h.pid), `${h.name}'s daemon ${h.pid} still runs`);
  const again = await lab(['down', '--prefix', prefix]);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /nothing to remove/);
});
